"""Calibrations: the ``dataset_calibs`` table (datasets certified in CALIBRATION collections)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from ..._errors import CollectionTypeError, ConflictingDefinitionError
from ...datasets import DatasetRef
from ...timespan import Timespan
from ..database import Database
from .collections import CollectionRecord
from .dataset_types import DatasetTypeManager

__all__ = ["CalibrationManager", "Certification"]

Certification = tuple[uuid.UUID, Timespan]
"""A certified dataset id and its validity range."""


class CalibrationManager:
    """Owner of the ``dataset_calibs`` table.

    Parameters
    ----------
    db : `Database`
        The opened database.
    dataset_types : `DatasetTypeManager`
        Definitions (only calibration types may be certified).
    """

    def __init__(self, db: Database, dataset_types: DatasetTypeManager) -> None:
        self.db = db
        self.dataset_types = dataset_types
        self._table = db.registry_schema.tables["dataset_calibs"]

    @property
    def table(self) -> sa.Table:
        """The ``dataset_calibs`` table (for the query builders)."""
        return self._table

    def certify(self, collection: CollectionRecord, refs: Iterable[DatasetRef], timespan: Timespan) -> None:
        """Certify datasets for a validity range (see `Registry.certify`; inside a transaction)."""
        t = self._table
        b, e = timespan.begin_ns, timespan.end_ns
        self.db.lock_tables(t)
        rows = []
        seen: set[tuple[int, str]] = set()
        for r in refs:
            dt_id, dt = self.dataset_types.entry(r.dataset_type)
            if not dt.is_calibration:
                raise CollectionTypeError(
                    f"dataset type {dt.name!r} is not a calibration type; register it with "
                    "is_calibration=True"
                )
            k = (dt_id, r.data_id.key)
            if k in seen:
                raise ConflictingDefinitionError(
                    f"two {dt.name} datasets for {r.data_id.required} certified for the same range"
                )
            seen.add(k)
            rows.append(
                {
                    "collection_id": collection.id,
                    "dataset_id": r.id,
                    "dataset_type_id": dt_id,
                    "data_id_key": r.data_id.key,
                    "validity_begin": b,
                    "validity_end": e,
                }
            )
        conflicts: list[sa.Row] = []
        for type_id in {r["dataset_type_id"] for r in rows}:
            keys = [r["data_id_key"] for r in rows if r["dataset_type_id"] == type_id]
            for i in range(0, len(keys), 5000):
                conflicts += self.db.execute(
                    sa.select(t.c.data_id_key, t.c.validity_begin, t.c.validity_end).where(
                        t.c.collection_id == collection.id,
                        t.c.dataset_type_id == type_id,
                        t.c.data_id_key.in_(keys[i : i + 5000]),
                        t.c.validity_begin < e,
                        sa.literal(b) < t.c.validity_end,
                    )
                ).fetchall()
        if conflicts:
            c = conflicts[0]
            raise ConflictingDefinitionError(
                f"{len(conflicts)} validity range conflict(s) in {collection.name!r}: e.g. data ID "
                f"{c.data_id_key} is "
                f"already certified for {Timespan.from_ns(c.validity_begin, c.validity_end)}, "
                f"which overlaps {timespan}; "
                "decertify the old range first"
            )
        if rows:
            self.db.execute(sa.insert(t), rows)

    def decertify(
        self,
        collection: CollectionRecord,
        dataset_type_id: int,
        timespan: Timespan,
        data_id_keys: Sequence[str] | None,
    ) -> int:
        """Remove a time range from certifications, trimming or splitting ranges (inside a transaction).

        Returns
        -------
        n : `int`
            Number of validity ranges that were changed or removed; 0 for an empty ``timespan``
            (begin = end), which covers no instant and so changes nothing.
        """
        if timespan.end_ns <= timespan.begin_ns:
            return 0
        t = self._table
        conds = [
            t.c.collection_id == collection.id,
            t.c.dataset_type_id == dataset_type_id,
            t.c.validity_begin < timespan.end_ns,
            sa.literal(timespan.begin_ns) < t.c.validity_end,
        ]
        if data_id_keys is not None:
            conds.append(t.c.data_id_key.in_(list(data_id_keys)))
        self.db.lock_tables(t)
        rows = self.db.execute(sa.select(t).where(*conds)).fetchall()
        new = []
        for r in rows:
            for part in Timespan.from_ns(r.validity_begin, r.validity_end).difference(timespan):
                new.append(
                    {
                        "collection_id": r.collection_id,
                        "dataset_id": r.dataset_id,
                        "dataset_type_id": r.dataset_type_id,
                        "data_id_key": r.data_id_key,
                        "validity_begin": part.begin_ns,
                        "validity_end": part.end_ns,
                    }
                )
        if rows:
            self.db.execute(sa.delete(t).where(t.c.calib_id.in_([r.calib_id for r in rows])))
        if new:
            self.db.execute(sa.insert(t), new)
        return len(rows)

    def certifications(self, collection: CollectionRecord, dataset_type_id: int) -> list[Certification]:
        """Return every ``(dataset id, validity range)`` of a dataset type in a collection, by begin time."""
        t = self._table
        rows = self.db.fetchall(
            sa.select(t)
            .where(t.c.collection_id == collection.id, t.c.dataset_type_id == dataset_type_id)
            .order_by(t.c.validity_begin)
        )
        return [(r.dataset_id, Timespan.from_ns(r.validity_begin, r.validity_end)) for r in rows]
