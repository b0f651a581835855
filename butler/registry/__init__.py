"""The registry: SQLAlchemy Core schema, database backends and the `Registry` class."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils import lazy_exports

if TYPE_CHECKING:
    from .._errors import CalibrationLookupError
    from .backends import make_database
    from .database import Database
    from .managers import CollectionRecord
    from .registry import Registry

_LAZY = {
    "Database": ".database",
    "make_database": ".backends",
    "CalibrationLookupError": ".registry",
    "CollectionRecord": ".managers",
    "Registry": ".registry",
}


# Lazy (PEP 562): ``butler.registry.queries`` and the sqlite3 fast path import no SQLAlchemy.
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = ["CalibrationLookupError", "CollectionRecord", "Database", "Registry", "make_database"]
