"""The registry: SQLAlchemy Core schema, database backends and the `Registry` class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .database import Database, make_database
    from .registry import CalibrationLookupError, CollectionRecord, Registry

_LAZY = {
    "Database": ".database",
    "make_database": ".database",
    "CalibrationLookupError": ".registry",
    "CollectionRecord": ".registry",
    "Registry": ".registry",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): ``butler.registry.queries`` and the sqlite3 fast path import no SQLAlchemy.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value

__all__ = ["CalibrationLookupError", "CollectionRecord", "Database", "Registry", "make_database"]
