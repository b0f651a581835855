"""Storage classes and lazily imported formatters (``registry_schema/storage_classes.yaml``)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ._errors import ButlerError
from ._yaml import load_yaml_file
from .formatter import Formatter

__all__ = ["StorageClass", "get_formatter", "get_storage_class", "storage_classes"]


@dataclass(frozen=True)
class StorageClass:
    """A storage class: the Python type a dataset is read as and its default formatter."""

    name: str
    pytype: str
    formatter: str
    doc: str = ""


@lru_cache(maxsize=1)
def storage_classes() -> dict[str, StorageClass]:
    """Return all storage classes of ``registry_schema/storage_classes.yaml`` by name."""
    import registry_schema

    cfg = load_yaml_file(Path(registry_schema.__file__).parent / "storage_classes.yaml")
    return {
        name: StorageClass(name, spec["pytype"], spec["formatter"], spec.get("doc", ""))
        for name, spec in cfg["storage_classes"].items()
    }


def get_storage_class(name: str) -> StorageClass:
    """Return a storage class by name.

    Raises
    ------
    ButlerError
        If the name is unknown; the message lists the known ones.
    """
    try:
        return storage_classes()[name]
    except KeyError:
        raise ButlerError(
            f"unknown storage class {name!r}; known: {', '.join(sorted(storage_classes()))}"
        ) from None


@lru_cache(maxsize=64)
def get_formatter(dotted: str) -> Formatter:
    """Import and instantiate a formatter class from its dotted path (cached).

    Raises
    ------
    ButlerError
        If the module or class cannot be imported, or is not a `Formatter`.
    """
    module, _, cls = dotted.rpartition(".")
    try:
        formatter_class = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise ButlerError(f"cannot import formatter {dotted!r}: {exc}") from exc
    if not (isinstance(formatter_class, type) and issubclass(formatter_class, Formatter)):
        raise ButlerError(f"formatter {dotted!r} is not a subclass of butler.Formatter")
    return formatter_class()
