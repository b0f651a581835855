"""The registry: SQLAlchemy Core schema, database backends and the `Registry` class."""

from __future__ import annotations

from .database import Database, make_database
from .registry import CalibrationLookupError, CollectionRecord, Registry

__all__ = ["CalibrationLookupError", "CollectionRecord", "Database", "Registry", "make_database"]
