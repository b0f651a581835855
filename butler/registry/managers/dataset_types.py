"""Dataset types: the ``dataset_type`` table and its cache (definitions are immutable once registered)."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from ..._errors import (
    ConflictingDefinitionError,
    MissingDatasetTypeError,
    dataset_type_conflict,
    missing_dataset_type,
)
from ...collections import glob_filter
from ...datasets import DatasetType
from ...dimensions import DimensionUniverse
from ..database import Database

__all__ = ["DatasetTypeManager"]


class DatasetTypeManager:
    """Owner of the ``dataset_type`` table.

    Parameters
    ----------
    db : `Database`
        The opened database.
    universe : `DimensionUniverse`
        The dimension universe of the definitions.
    """

    def __init__(self, db: Database, universe: DimensionUniverse) -> None:
        self.db = db
        self.universe = universe
        self._table = db.registry_schema.tables["dataset_type"]
        self._by_name: dict[str, tuple[int, DatasetType]] = {}
        self._by_id: dict[int, DatasetType] = {}

    def clear_caches(self) -> None:
        """Forget the cached definitions."""
        self._by_name.clear()
        self._by_id.clear()

    def _from_row(self, row: sa.Row) -> DatasetType:
        dims = [d for d in row.dimensions.split(",") if d]
        return DatasetType(
            row.name, dims, row.storage_class, bool(row.is_calibration), universe=self.universe
        )

    def entry(self, name: str | DatasetType) -> tuple[int, DatasetType]:
        """Return ``(id, definition)`` of a registered dataset type.

        Raises
        ------
        MissingDatasetTypeError
            If it is not registered (the message suggests a close name).
        ConflictingDefinitionError
            If a `DatasetType` is given that differs from the registered one.
        """
        key = name.name if isinstance(name, DatasetType) else name
        entry = self._by_name.get(key)
        if entry is None:
            t = self._table
            rows = self.db.fetchall(sa.select(t).where(t.c.name == key))
            if not rows:
                names = self.db.fetchall(sa.select(t.c.name))
                raise missing_dataset_type(key, [r.name for r in names])
            entry = (rows[0].dataset_type_id, self._from_row(rows[0]))
            self._by_name[key] = entry
            self._by_id[entry[0]] = entry[1]
        if isinstance(name, DatasetType) and name != entry[1]:
            raise ConflictingDefinitionError(f"dataset type {name} does not match the registered {entry[1]}")
        return entry

    def by_id(self, dataset_type_id: int) -> DatasetType:
        """Return the definition of a dataset type id."""
        dt = self._by_id.get(dataset_type_id)
        if dt is None:
            t = self._table
            row = self.db.fetchall(sa.select(t).where(t.c.dataset_type_id == dataset_type_id))[0]
            dt = self._from_row(row)
            self._by_name[dt.name] = (dataset_type_id, dt)
            self._by_id[dataset_type_id] = dt
        return dt

    def register(self, dataset_type: DatasetType) -> bool:
        """Insert a definition (see `Registry.register_dataset_type`); return whether it was new."""
        try:
            existing = self.entry(dataset_type.name)[1]
        except MissingDatasetTypeError:
            existing = None
        if existing is not None:
            if existing != dataset_type:
                raise dataset_type_conflict(existing, dataset_type)
            return False
        try:
            with self.db.transaction(savepoint=True):
                self.db.execute(
                    sa.insert(self._table).values(
                        name=dataset_type.name,
                        dimensions=",".join(dataset_type.dimensions),
                        storage_class=dataset_type.storage_class,
                        is_calibration=dataset_type.is_calibration,
                    )
                )
        except sa.exc.IntegrityError:
            self._by_name.clear()
            if self.entry(dataset_type.name)[1] != dataset_type:
                raise ConflictingDefinitionError(
                    f"dataset type {dataset_type.name!r} was registered concurrently with another definition"
                ) from None
            return False
        return True

    def query(self, pattern: str | Iterable[str] = "*") -> list[DatasetType]:
        """Return the definitions whose names match glob pattern(s), sorted by name."""
        t = self._table
        rows = self.db.fetchall(sa.select(t).order_by(t.c.name))
        keep = set(glob_filter(pattern, [r.name for r in rows]))
        return [self._from_row(r) for r in rows if r.name in keep]

    def remove(self, name: str, dataset_type_id: int) -> None:
        """Delete a definition (inside the caller's transaction; the caller checks it has no datasets)."""
        t = self._table
        self.db.execute(sa.delete(t).where(t.c.dataset_type_id == dataset_type_id))
        self._by_name.pop(name, None)
        self._by_id.pop(dataset_type_id, None)
