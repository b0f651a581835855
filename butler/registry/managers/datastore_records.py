"""Datastore records: the ``file_datastore_records`` table (dataset id -> file path, formatter, ...)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from ...datastore.records import StoredFileInfo
from ..database import Database

__all__ = ["DatastoreRecordManager"]


class DatastoreRecordManager:
    """Owner of the ``file_datastore_records`` table.

    Parameters
    ----------
    db : `Database`
        The opened database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._table = db.registry_schema.tables["file_datastore_records"]

    @property
    def table(self) -> sa.Table:
        """The records table (for the find-by-data-ID query, which returns a dataset with its file)."""
        return self._table

    def insert(self, items: Sequence[tuple[uuid.UUID, StoredFileInfo]]) -> None:
        """Insert records (inside the caller's transaction)."""
        if not items:
            return
        rows = [
            {
                "dataset_id": i,
                "path": f.path,
                "formatter": f.formatter,
                "storage_class": f.storage_class,
                "checksum": f.checksum,
                "file_size": f.file_size,
            }
            for i, f in items
        ]
        self.db.execute_many("insert_file", self._table, rows)

    def get(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredFileInfo]:
        """Return the records of datasets (missing ids are absent from the result)."""
        t = self._table
        out: dict[uuid.UUID, StoredFileInfo] = {}
        if len(ids) == 1:
            rows = self.db.fast_fetch(
                "file_record",
                lambda: sa.select(t).where(t.c.dataset_id == sa.bindparam("id")),
                {"id": ids[0]},
            )
            if rows is not None:
                for _, path, formatter, sc, checksum, size in rows:
                    out[ids[0]] = StoredFileInfo(path, formatter, sc, checksum, size)
                return out
        for i in range(0, len(ids), 5000):
            for r in self.db.fetchall(sa.select(t).where(t.c.dataset_id.in_(list(ids[i : i + 5000])))):
                out[r.dataset_id] = StoredFileInfo(
                    r.path, r.formatter, r.storage_class, r.checksum, r.file_size
                )
        return out

    def remove(self, ids: Sequence[uuid.UUID]) -> None:
        """Delete the records of datasets (inside the caller's transaction); the files are the caller's."""
        t = self._table
        for i in range(0, len(ids), 5000):
            self.db.execute(sa.delete(t).where(t.c.dataset_id.in_(list(ids[i : i + 5000]))))

    def count_references(self, paths: Iterable[str]) -> dict[str, int]:
        """Return how many datasets use each path."""
        t = self._table
        paths = list(paths)
        out = dict.fromkeys(paths, 0)
        for i in range(0, len(paths), 5000):
            stmt = (
                sa.select(t.c.path, sa.func.count())
                .where(t.c.path.in_(paths[i : i + 5000]))
                .group_by(t.c.path)
            )
            for p, n in self.db.fetchall(stmt):
                out[p] = n
        return out

    def paths_of(self, dataset_ids: Any) -> list[str]:
        """Return the paths of the datasets a subquery or list of ids selects (files of a RUN to delete)."""
        t = self._table
        return [r.path for r in self.db.execute(sa.select(t.c.path).where(t.c.dataset_id.in_(dataset_ids)))]
