"""Datasets: the ``dataset`` table (one row per dataset, in its RUN) and ``dataset_tags`` (TAGGED members).

Also builds `DatasetRef` objects from query rows in bulk and runs the find-by-data-ID lookup
(RUN, TAGGED and CALIBRATION members with their datastore record, one query per collection kind).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..._errors import ConflictingDefinitionError, dataset_insert_conflict
from ...collections import CollectionType
from ...datasets import DatasetRef, DatasetType
from ...dimensions import DataCoordinate
from ..database import Database
from .collections import CollectionManager, CollectionRecord, now_utc
from .dataset_types import DatasetTypeManager
from .dimensions import DimensionRecordManager

__all__ = ["DatasetManager"]


class DatasetManager:
    """Owner of the ``dataset`` and ``dataset_tags`` tables.

    Parameters
    ----------
    db : `Database`
        The opened database.
    dimensions : `DimensionRecordManager`
        Records for the data IDs of the refs it builds.
    dataset_types : `DatasetTypeManager`
        Definitions by id.
    collections : `CollectionManager`
        RUN names by id.
    """

    def __init__(
        self,
        db: Database,
        dimensions: DimensionRecordManager,
        dataset_types: DatasetTypeManager,
        collections: CollectionManager,
    ) -> None:
        self.db = db
        self.dimensions = dimensions
        self.dataset_types = dataset_types
        self.collections = collections
        self.universe = dimensions.universe
        tables = db.registry_schema.tables
        self._dataset = tables["dataset"]
        self._tags = tables["dataset_tags"]
        self._find_stmts: dict[tuple, sa.Select] = {}

    @property
    def table(self) -> sa.Table:
        """The ``dataset`` table (for the query builders)."""
        return self._dataset

    @property
    def tags_table(self) -> sa.Table:
        """The ``dataset_tags`` table (for the query builders)."""
        return self._tags

    # -- inserting --------------------------------------------------------------------------------
    def _rows(self, dt_id: int, refs: Sequence[DatasetRef], run_id: int) -> list[dict[str, Any]]:
        now = now_utc()
        names = self.universe.names
        rows = []
        for ref in refs:
            row: dict[str, Any] = dict.fromkeys(names)
            row.update(ref.data_id.to_simple())
            row["id"] = ref.id
            row["dataset_type_id"] = dt_id
            row["run_id"] = run_id
            row["ingest_date"] = now
            row["data_id_key"] = ref.data_id.key
            rows.append(row)
        return rows

    def insert(self, refs: Sequence[DatasetRef]) -> None:
        """Insert refs with expanded data IDs into their RUNs (inside the caller's transaction).

        Raises
        ------
        ConflictingDefinitionError
            If a (dataset type, data ID) is already in the RUN, or an id exists.
        """
        by_type_run: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(refs):
            by_type_run.setdefault((r.dataset_type.name, r.run), []).append(i)
        for (dt_name, run), idx in by_type_run.items():
            dt_id, _ = self.dataset_types.entry(dt_name)
            run_id = self.collections.run(run).id
            rows = self._rows(dt_id, [refs[i] for i in idx], run_id)
            try:
                # A savepoint for several rows on every backend: SQLite's executemany keeps the
                # rows before the failing one, and the diagnosis must see only what was registered
                # before. One row (a put) needs none where a failed statement changes nothing.
                with self.db.transaction(savepoint=len(rows) > 1 or not self.db.statement_atomic):
                    self.db.execute_many("insert_dataset", self._dataset, rows)
            except sa.exc.IntegrityError as exc:
                raise self._diagnose_conflict(
                    dt_name, dt_id, run, run_id, [refs[i] for i in idx], exc
                ) from None
            self.db.note_inserts(self._dataset, len(rows))

    def _diagnose_conflict(
        self, dt_name: str, dt_id: int, run: str, run_id: int, refs: Sequence[DatasetRef], exc: Exception
    ) -> Exception:
        d = self._dataset
        keys = [r.data_id.key for r in refs]
        dup = self.db.execute(
            sa.select(d.c.data_id_key).where(
                d.c.dataset_type_id == dt_id, d.c.run_id == run_id, d.c.data_id_key.in_(keys[:5000])
            )
        ).fetchall()
        ids = [] if dup else self.db.execute(
            sa.select(d.c.id).where(d.c.id.in_([r.id for r in refs][:5000]))
        ).fetchall()
        return dataset_insert_conflict(
            dt_name,
            run,
            [(r.data_id.key, r.data_id.required) for r in refs],
            [row[0] for row in dup],
            ids[0][0] if ids else None,
            exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc,
        )

    def existing(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[int, int, str]]:
        """Return ``id -> (dataset_type_id, run_id, data_id_key)`` of the ids that are registered."""
        d = self._dataset
        out = {}
        for i in range(0, len(ids), 5000):
            for row in self.db.execute(
                sa.select(d.c.id, d.c.dataset_type_id, d.c.run_id, d.c.data_id_key).where(
                    d.c.id.in_(ids[i : i + 5000])
                )
            ):
                out[row.id] = (row.dataset_type_id, row.run_id, row.data_id_key)
        return out

    def expanded(self, refs: Sequence[DatasetRef]) -> list[DatasetRef]:
        """Return the refs with their data IDs expanded (full values and records; as given when they are)."""
        return [
            r
            if r.data_id.has_full() and r.data_id.has_records()
            else r.replace(data_id=self.dimensions.expand_for(r.dataset_type, r.data_id))
            for r in refs
        ]

    def new_refs(self, refs: Sequence[DatasetRef], *, skip_existing: bool) -> list[DatasetRef]:
        """Return the refs whose ids are not registered yet, data IDs expanded (`Registry.import_datasets`).

        Without ``skip_existing`` every ref is returned and no query looks for the ids: the
        insert's unique constraints then refuse a registered id (the driver registers every
        quantum's outputs so).

        Raises
        ------
        ConflictingDefinitionError
            With ``skip_existing``, if an id is registered with another definition.
        """
        refs = self.expanded(refs)
        if not skip_existing:
            return refs
        type_ids = {r.dataset_type.name: self.dataset_types.entry(r.dataset_type)[0] for r in refs}
        existing = self.existing([r.id for r in refs])
        new = []
        for r in refs:
            old = existing.get(r.id)
            if old is None:
                new.append(r)
                continue
            same = old == (type_ids[r.dataset_type.name], self.collections.find(r.run).id, r.data_id.key)
            if not same:
                raise ConflictingDefinitionError(
                    f"dataset id {r.id} already exists with another definition than {r}"
                )
        return new

    # -- reading ----------------------------------------------------------------------------------
    def refs_from_ids(self, ids: Sequence[uuid.UUID]) -> list[DatasetRef]:
        """Return the refs of registered ids, in the order given (unknown ids are skipped)."""
        d = self._dataset
        rows: list[sa.Row] = []
        for i in range(0, len(ids), 5000):
            rows += self.db.fetchall(sa.select(d).where(d.c.id.in_(ids[i : i + 5000])))
        order = {x: i for i, x in enumerate(ids)}
        rows.sort(key=lambda r: order[r.id])
        return self.rows_to_refs(rows)

    def rows_to_refs(
        self,
        rows: Sequence[Any],
        dataset_type: DatasetType | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[DatasetRef]:
        """Build expanded refs from rows of dataset_id (or id), dataset_type_id, run_id and dimensions.

        ``rows`` are SQLAlchemy rows, or plain tuples with their column names in ``keys``.
        """
        if not rows:
            return []
        if keys is None:
            keys = list(rows[0]._mapping.keys())
            rows = [tuple(r) for r in rows]
        pos = {k: i for i, k in enumerate(keys)}
        u = self.universe
        i_id = pos["dataset_id"] if "dataset_id" in pos else pos["id"]
        i_type, i_run = pos["dataset_type_id"], pos["run_id"]
        types: dict[int, DatasetType] = {}
        for r in rows:
            tid = r[i_type]
            if tid not in types:
                types[tid] = dataset_type if dataset_type is not None else self.dataset_types.by_id(tid)
        # Per dataset type: its dimensions, a value getter and the record getters of its data IDs.
        getters = {}
        for tid, dt in types.items():
            dims = dt.dimensions + dt.implied
            get_values, rec_getters = self.dimensions.lazy_coordinates(dt.dimensions, dims, rows, pos)
            getters[tid] = (dt, dims, get_values, rec_getters)
        runs = {rid: self.collections.by_id(rid).name for rid in {r[i_run] for r in rows}}
        # The loop builds DataCoordinate (lazy records), UUID and DatasetRef objects directly:
        # the values come from the registry's own rows, so the constructors' checks are skipped
        # (~3 us per ref instead of ~15; see DataCoordinate._expanded_lazily; a DatasetRef's
        # fields are put in its __dict__ like a frozen dataclass's __init__ does).
        UUID = uuid.UUID
        new = object.__new__
        setattr_ = object.__setattr__
        unknown = uuid.SafeUUID.unknown
        lazy = DataCoordinate._expanded_lazily
        out: list[DatasetRef] = []
        append = out.append
        for r in rows:
            dt, dims, get_values, rec_getters = getters[r[i_type]]
            coord = lazy(u, dt.dimensions, dims, get_values, rec_getters, r)
            did = r[i_id]
            if not isinstance(did, UUID):  # SQLite: 32 hex digits
                hex_id = did
                did = new(UUID)
                setattr_(did, "int", int(hex_id, 16))
                setattr_(did, "is_safe", unknown)
            ref = new(DatasetRef)
            d = ref.__dict__
            d["dataset_type"] = dt
            d["data_id"] = coord
            d["run"] = runs[r[i_run]]
            d["id"] = did
            append(ref)
        return out

    def count_of_type(self, dataset_type_id: int) -> int:
        """Return the number of datasets of a type."""
        d = self._dataset
        n = self.db.execute(
            sa.select(sa.func.count()).select_from(d).where(d.c.dataset_type_id == dataset_type_id)
        ).scalar()
        return int(n or 0)

    def ids_in_run(self, run_id: int) -> sa.Select:
        """Return a SELECT of the ids of a RUN's datasets (to use inside another manager's query)."""
        d = self._dataset
        return sa.select(d.c.id).where(d.c.run_id == run_id)

    def count_in_run(self, run_id: int) -> int:
        """Return the number of datasets in a RUN."""
        d = self._dataset
        return int(
            self.db.execute(sa.select(sa.func.count()).select_from(d).where(d.c.run_id == run_id)).scalar()
            or 0
        )

    # -- removing ---------------------------------------------------------------------------------
    def remove(self, ids: Sequence[uuid.UUID]) -> None:
        """Delete datasets (their tag, calibration and file records go with them by foreign key)."""
        d = self._dataset
        for i in range(0, len(ids), 5000):
            self.db.execute(sa.delete(d).where(d.c.id.in_(ids[i : i + 5000])))

    def remove_run(self, run_id: int) -> None:
        """Delete every dataset of a RUN (inside the caller's transaction)."""
        d = self._dataset
        self.db.execute(sa.delete(d).where(d.c.run_id == run_id))

    # -- TAGGED collections -----------------------------------------------------------------------
    def associate(self, tag: CollectionRecord, refs: Iterable[DatasetRef]) -> None:
        """Add datasets to a TAGGED collection (see `Registry.associate`; inside a transaction)."""
        t = self._tags
        existing = {}
        for row in self.db.execute(
            sa.select(t.c.dataset_id, t.c.dataset_type_id, t.c.data_id_key).where(t.c.collection_id == tag.id)
        ):
            existing[(row.dataset_type_id, row.data_id_key)] = row.dataset_id
        rows = []
        for r in refs:
            dt_id, _ = self.dataset_types.entry(r.dataset_type)
            k = (dt_id, r.data_id.key)
            if k in existing:
                if existing[k] != r.id:
                    raise ConflictingDefinitionError(
                        f"TAGGED collection {tag.name!r} already holds another {r.dataset_type.name} "
                        f"for {r.data_id.required}"
                    )
                continue
            existing[k] = r.id
            rows.append(
                {
                    "collection_id": tag.id,
                    "dataset_id": r.id,
                    "dataset_type_id": dt_id,
                    "data_id_key": r.data_id.key,
                }
            )
        if rows:
            self.db.execute(sa.insert(t), rows)

    def disassociate(self, tag: CollectionRecord, ids: Sequence[uuid.UUID]) -> None:
        """Remove datasets from a TAGGED collection (inside a transaction)."""
        t = self._tags
        self.db.execute(sa.delete(t).where(t.c.collection_id == tag.id, t.c.dataset_id.in_(ids)))

    # -- find by data ID --------------------------------------------------------------------------
    def _find_stmt(self, kind: CollectionType, n: int, calibs: sa.Table, files: sa.Table) -> sa.Select:
        """Return the find-by-data-ID query for ``n`` collections of one kind (built once per shape)."""
        key = (kind, n)
        stmt = self._find_stmts.get(key)
        if stmt is not None:
            return stmt
        d = self._dataset
        f = files
        cids: list[sa.BindParameter[Any]] = [sa.bindparam(f"c{i}") for i in range(n)]
        cols = [d.c.id, d.c.run_id, f.c.path, f.c.formatter, f.c.storage_class, f.c.checksum, f.c.file_size]
        if kind is CollectionType.RUN:
            stmt = (
                sa.select(d.c.run_id.label("collection_id"), *cols)
                .select_from(d.outerjoin(f, f.c.dataset_id == d.c.id))
                .where(
                    d.c.dataset_type_id == sa.bindparam("dt"),
                    d.c.data_id_key == sa.bindparam("key"),
                    d.c.run_id.in_(cids),
                )
            )
        elif kind is CollectionType.TAGGED:
            t = self._tags
            stmt = (
                sa.select(t.c.collection_id, *cols)
                .select_from(t.join(d, d.c.id == t.c.dataset_id).outerjoin(f, f.c.dataset_id == d.c.id))
                .where(
                    t.c.dataset_type_id == sa.bindparam("dt"),
                    t.c.data_id_key == sa.bindparam("key"),
                    t.c.collection_id.in_(cids),
                )
            )
        else:
            t = calibs
            stmt = (
                sa.select(t.c.collection_id, *cols, t.c.validity_begin, t.c.validity_end)
                .select_from(t.join(d, d.c.id == t.c.dataset_id).outerjoin(f, f.c.dataset_id == d.c.id))
                .where(
                    t.c.dataset_type_id == sa.bindparam("dt"),
                    t.c.data_id_key == sa.bindparam("key"),
                    t.c.collection_id.in_(cids),
                    t.c.validity_begin < sa.bindparam("end"),
                    sa.bindparam("begin") < t.c.validity_end,
                )
            )
        self._find_stmts[key] = stmt
        return stmt

    def find_rows(
        self,
        kind: CollectionType,
        params: Mapping[str, Any],
        collection_ids: Sequence[int],
        *,
        calibs: sa.Table,
        files: sa.Table,
    ) -> list[tuple]:
        """Run the find query for the collections of one kind.

        Returns rows ``(collection_id, id, run_id, path, formatter, storage_class, checksum,
        file_size[, validity_begin, validity_end])``; the file columns are NULL for a dataset
        without a datastore record.
        """
        n = len(collection_ids)
        values = dict(params)
        for i, c in enumerate(collection_ids):
            values[f"c{i}"] = c
        rows = self.db.fast_fetch(("find", kind, n), lambda: self._find_stmt(kind, n, calibs, files), values)
        if rows is None:
            rows = [tuple(r) for r in self.db.fetchall(self._find_stmt(kind, n, calibs, files), values)]
        return rows
