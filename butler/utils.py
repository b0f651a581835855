"""Utilities for packages built on the butler: lazy package attributes (PEP 562)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, where: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return a package's ``__getattr__`` and ``__dir__`` importing names from submodules on use.

    Parameters
    ----------
    package : `str`
        The package's ``__name__``.
    where : mapping [`str`, `str`]
        Attribute name → submodule, relative to ``package`` (``"combine"`` or ``".combine"``).
    namespace : `dict`
        The package's ``globals()``; an imported attribute is cached there, so the submodule is
        looked up once.

    Returns
    -------
    getattr, dir : callable
        Assign them to the package's ``__getattr__`` and ``__dir__`` (PEP 562).

    Raises
    ------
    AttributeError
        From ``getattr``, for a name that is neither in ``where`` nor defined in the package.
    """

    def get(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        relative = module if module.startswith(".") else f".{module}"
        value = getattr(importlib.import_module(relative, package), name)
        namespace[name] = value
        return value

    def names() -> list[str]:
        return sorted(set(namespace) | set(where))

    return get, names
