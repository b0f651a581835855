"""The ccdflow data butler: registry, datastore and collections.

Public API::

    from butler import Butler, DatasetType, DatasetRef, DataCoordinate, CollectionType

Names are imported on first use (PEP 562), so ``import butler`` and the ``butler`` CLI start
fast; errors are imported eagerly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    ButlerError,
    CollectionTypeError,
    ConflictingDefinitionError,
    DataIdError,
    DatasetNotFoundError,
    DatastoreError,
    InvalidQueryError,
    MissingCollectionError,
    MissingDatasetTypeError,
    RepositoryError,
    RepositoryLockedError,
)

if TYPE_CHECKING:
    from ._butler import Butler
    from ._quantum_backed import QuantumBackedButler
    from .collections import CollectionType
    from .datasets import DatasetRef, DatasetType, FileDataset
    from .datastore.records import StoredFileInfo
    from .dimensions import DataCoordinate, DimensionRecord, DimensionUniverse
    from .timespan import Timespan

_LAZY = {
    "Butler": "._butler",
    "QuantumBackedButler": "._quantum_backed",
    "CollectionType": ".collections",
    "DatasetRef": ".datasets",
    "DatasetType": ".datasets",
    "FileDataset": ".datasets",
    "StoredFileInfo": ".datastore.records",
    "DataCoordinate": ".dimensions",
    "DimensionRecord": ".dimensions",
    "DimensionUniverse": ".dimensions",
    "Timespan": ".timespan",
}

__all__ = [
    "Butler",
    "ButlerError",
    "CollectionType",
    "CollectionTypeError",
    "ConflictingDefinitionError",
    "DataCoordinate",
    "DataIdError",
    "DatasetNotFoundError",
    "DatasetRef",
    "DatasetType",
    "DatastoreError",
    "DimensionRecord",
    "DimensionUniverse",
    "FileDataset",
    "InvalidQueryError",
    "MissingCollectionError",
    "MissingDatasetTypeError",
    "QuantumBackedButler",
    "RepositoryError",
    "RepositoryLockedError",
    "StoredFileInfo",
    "Timespan",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'butler' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
