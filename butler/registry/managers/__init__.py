"""The registry's managers: each owns its tables; the `Registry` facade only combines them.

=========================  =====================================================================
`AttributesManager`        ``butler_attributes`` (schema versions)
`DimensionRecordManager`   dimension element tables, record caches, data ID expansion
`DatasetTypeManager`       ``dataset_type``
`CollectionManager`        ``collection``, ``run``, ``collection_chain``
`DatasetManager`           ``dataset``, ``dataset_tags`` (TAGGED members), find by data ID
`CalibrationManager`       ``dataset_calibs`` (validity ranges in CALIBRATION collections)
`DatastoreRecordManager`   ``file_datastore_records``
=========================  =====================================================================

The query builders (`butler.registry._query`) take the tables they join from the managers'
``table`` properties and never name a table themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...dimensions import DimensionUniverse
from ..database import Database
from .attributes import AttributesManager
from .calibrations import CalibrationManager
from .collections import CollectionManager, CollectionRecord
from .dataset_types import DatasetTypeManager
from .datasets import DatasetManager
from .datastore_records import DatastoreRecordManager
from .dimensions import SMALL_ELEMENTS, DimensionRecordManager

__all__ = [
    "SMALL_ELEMENTS",
    "AttributesManager",
    "CalibrationManager",
    "CollectionManager",
    "CollectionRecord",
    "DatasetManager",
    "DatasetTypeManager",
    "DatastoreRecordManager",
    "DimensionRecordManager",
    "RegistryManagers",
]


@dataclass(frozen=True)
class RegistryManagers:
    """The managers of one registry, built together on one `Database`."""

    db: Database
    attributes: AttributesManager
    dimensions: DimensionRecordManager
    dataset_types: DatasetTypeManager
    collections: CollectionManager
    datasets: DatasetManager
    calibrations: CalibrationManager
    datastore_records: DatastoreRecordManager

    @classmethod
    def build(cls, db: Database, universe: DimensionUniverse) -> RegistryManagers:
        """Build every manager on ``db``."""
        dimensions = DimensionRecordManager(db, universe)
        dataset_types = DatasetTypeManager(db, universe)
        collections = CollectionManager(db)
        return cls(
            db=db,
            attributes=AttributesManager(db),
            dimensions=dimensions,
            dataset_types=dataset_types,
            collections=collections,
            datasets=DatasetManager(db, dimensions, dataset_types, collections),
            calibrations=CalibrationManager(db, dataset_types),
            datastore_records=DatastoreRecordManager(db),
        )

    def clear_caches(self) -> None:
        """Forget every cached definition and record (after a rolled-back transaction)."""
        self.dimensions.clear_caches()
        self.dataset_types.clear_caches()
        self.collections.clear_caches()
