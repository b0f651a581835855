"""The ccdflow data butler: registry, datastore and collections.

Public API::

    from butler import Butler, DatasetType, DatasetRef, DataCoordinate, CollectionType

A short tour::

    butler = Butler.create("repo")                     # SQLite registry, files under repo/
    butler.registry.insert_dimension_data("instrument", {"name": "cam"})
    butler.registry.insert_dimension_data("detector", {"instrument": "cam", "id": 0, "full_name": "S00"})
    bias_type = DatasetType("bias", ["detector"], "NumpyArray", is_calibration=True)
    butler.registry.register_dataset_type(bias_type)
    ref = butler.put(array, "bias", instrument="cam", detector=0, run="cam/calib/run1")
    butler.registry.register_collection("cam/calib", CollectionType.CALIBRATION)
    butler.registry.certify("cam/calib", [ref], Timespan(begin, None))
    # With exposure records registered, an exposure's time picks the calibration:
    bias = butler.get("bias", instrument="cam", detector=0, exposure=42, collections="cam/calib")
    refs = butler.query_datasets("bias", collections="cam/*", where="detector IN (0..3)")

Names are imported on first use (PEP 562), so ``import butler`` and the ``butler`` CLI start
fast; errors are imported eagerly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import (
    ButlerError,
    CalibrationLookupError,
    CollectionTypeError,
    ConflictingDefinitionError,
    DataIdError,
    DatasetNotFoundError,
    DatastoreError,
    InvalidQueryError,
    LockHeldError,
    MissingCollectionError,
    MissingDatasetTypeError,
    RepositoryError,
    RepositoryLockedError,
    RepositoryReadOnlyError,
    StorageFullError,
)
from .utils import lazy_exports

if TYPE_CHECKING:
    from ._butler import Butler
    from ._quantum_backed import QuantumBackedButler
    from .collections import CollectionType
    from .datasets import DatasetRef, DatasetType, FileDataset
    from .datastore.records import StoredFileInfo
    from .dimensions import DataCoordinate, DimensionRecord, DimensionUniverse
    from .formatter import Formatter
    from .timespan import Timespan

_LAZY = {
    "Butler": "._butler",
    "QuantumBackedButler": "._quantum_backed",
    "CollectionType": ".collections",
    "DatasetRef": ".datasets",
    "DatasetType": ".datasets",
    "FileDataset": ".datasets",
    "Formatter": ".formatter",
    "StoredFileInfo": ".datastore.records",
    "DataCoordinate": ".dimensions",
    "DimensionRecord": ".dimensions",
    "DimensionUniverse": ".dimensions",
    "Timespan": ".timespan",
}

__all__ = [
    "Butler",
    "ButlerError",
    "CalibrationLookupError",
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
    "Formatter",
    "InvalidQueryError",
    "LockHeldError",
    "MissingCollectionError",
    "MissingDatasetTypeError",
    "QuantumBackedButler",
    "RepositoryError",
    "RepositoryLockedError",
    "RepositoryReadOnlyError",
    "StorageFullError",
    "StoredFileInfo",
    "Timespan",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
