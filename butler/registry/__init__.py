"""The registry: SQLAlchemy Core schema, database backends and the `Registry` class."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

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


# Lazy (PEP 562): ``butler.registry.queries`` and the sqlite3 fast path import no SQLAlchemy.
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = ["CalibrationLookupError", "CollectionRecord", "Database", "Registry", "make_database"]
