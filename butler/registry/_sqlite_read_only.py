"""A read-only butler over a SQLite registry with ``sqlite3``: what building a quantum graph reads.

Building a quantum graph only reads the registry (collections, dataset types, one data-ID or
dataset query per subgraph, calibration validity ranges, datastore records), but opening a
`butler.Butler` imports SQLAlchemy, about a third of ``pipetask qgraph``'s run time. A
`SqliteReadOnlyButler` answers those reads with the stdlib ``sqlite3`` module, through the SQL of
`butler.registry._sqlite_fast` (the same `DatasetQueryShape` and expression compiler as the
registry, rendered as SQL text), and returns what the registry returns: `DatasetRef` objects
with expanded `DataCoordinate` data IDs whose dimension records are attached lazily, the
`StoredFileInfo` of each dataset, ``(ref, Timespan)`` certifications.

It is the butler *and* its registry (``butler.registry is butler``): the graph builder calls
``butler.query_datasets`` and ``butler.registry.query_datasets`` alike.

Whatever it does not answer exactly as the registry would (a ``bind`` or ``data_id`` argument,
an unknown collection or dataset type, an expression it cannot compile here, an ambiguous
calibration, ``find_dataset`` ...) raises `FastPathUnavailableError` and is remembered in
`SqliteReadOnlyButler.unavailable`, so that a caller that catches exceptions on the way (the
graph builder does, for fallbacks of its own) still learns that the result must be recomputed
with a `butler.Butler`. Opened through `butler.registry.backends.open_read_only_butler`.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import (
    FastPathUnavailableError,
    MissingCollectionError,
    MissingDatasetTypeError,
    missing_collection,
    missing_dataset_type,
)
from ..collections import CollectionType, has_glob
from ..datasets import DatasetRef, DatasetType
from ..datastore.records import FileRecordColumns, StoredFileInfo, file_record_columns
from ..dimensions import DataCoordinate, DimensionRecord, DimensionUniverse
from ..timespan import Timespan
from ..utils import RecordKeyGetter, tuple_getter
from ._sqlite_fast import SqliteFastRegistry, data_id_rows, dataset_rows

__all__ = ["SqliteReadOnlyButler"]


#: Ids per ``IN (...)`` list, as the registry's managers chunk them; above it, the datastore
#: records of many datasets are joined with a temporary table (``BULK_THRESHOLD`` of
#: ``butler.registry.managers.datastore_records``).
_CHUNK = 5000


def _no_extras(**kwargs: Any) -> None:
    """Raise `FastPathUnavailableError` if any of the arguments is given (not `None` or empty)."""
    given = [k for k, v in kwargs.items() if v]
    if given:
        raise FastPathUnavailableError(f"{', '.join(given)} not handled by the read-only path")


class SqliteReadOnlyButler:
    """The registry reads of quantum-graph building on a SQLite repository, without SQLAlchemy.

    Parameters
    ----------
    registry : `butler.registry._sqlite_fast.SqliteFastRegistry`
        The open read-only ``sqlite3`` registry (closed by `close`).

    Attributes
    ----------
    root : `pathlib.Path`
        Repository root.
    universe : `butler.DimensionUniverse`
        The dimension universe.
    unavailable : `str` or `None`
        Why a call raised `FastPathUnavailableError` (the first reason), or `None`: while it is
        `None` every answer was the registry's.
    """

    def __init__(self, registry: SqliteFastRegistry) -> None:
        self._r = registry
        self.root: Path = registry.root
        self.universe: DimensionUniverse = registry.universe
        self.unavailable: str | None = None
        self._types: dict[str, tuple[int, DatasetType]] | None = None
        self._types_by_id: dict[int, DatasetType] = {}
        self._records: dict[str, dict[tuple[Any, ...], DimensionRecord]] = {}

    # ------------------------------------------------------------------ the butler surface
    @property
    def registry(self) -> SqliteReadOnlyButler:
        """Return this object (it is its own registry)."""
        return self

    def close(self) -> None:
        """Close the ``sqlite3`` connection."""
        self._r.close()

    def __enter__(self) -> SqliteReadOnlyButler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _guard(self, call: Callable[[], Any]) -> Any:
        """Run ``call``; remember why it could not be answered here, and re-raise."""
        try:
            return call()
        except FastPathUnavailableError as exc:
            if self.unavailable is None:
                self.unavailable = str(exc) or type(exc).__name__
            raise
        except sqlite3.Error as exc:
            if self.unavailable is None:
                self.unavailable = f"sqlite3: {exc}"
            raise FastPathUnavailableError(str(exc)) from None

    # ------------------------------------------------------------------ collections
    def get_collection_type(self, name: str) -> CollectionType:
        """As `Registry.get_collection_type` (`MissingCollectionError` for an unknown name)."""
        rec = self._r.collections.get(name)
        if rec is None:
            raise self._missing_collection(name)
        return rec.type

    def _missing_collection(self, name: str) -> MissingCollectionError:
        """Return the registry's error for an unknown collection (``CollectionManager.find``)."""
        return missing_collection(name, self._r.collections)

    def get_collection_chain(self, parent: str) -> tuple[str, ...]:
        """As `Registry.get_collection_chain` (of a CHAINED collection)."""
        return self._guard(lambda: self._r.get_collection_chain(parent))

    def resolve_collections(self, collections: str | Iterable[str], *, flatten: bool = True) -> list[Any]:
        """As `Registry.resolve_collections`: the flattened search path (``id``, ``name``, ``type``).

        Raises
        ------
        MissingCollectionError
            For an unknown name (the registry's error).
        FastPathUnavailableError
            Without ``flatten`` or collections, or for a chain that is too deep.
        """

        def run() -> list[Any]:
            if not flatten or collections is None:
                raise FastPathUnavailableError("unflattened or missing collections")
            names = [collections] if isinstance(collections, str) else list(collections)
            for name in names:  # the registry's error for the first unknown name, in order
                if not has_glob(name) and name not in self._r.collections:
                    raise self._missing_collection(name)
            return self._r.resolve_collections(names)

        return self._guard(run)

    # ------------------------------------------------------------------ dataset types
    def _registered(self, name: Any) -> bool:
        """Whether ``name`` (a plain name) is a registered dataset type."""
        if not isinstance(name, str) or has_glob(name):
            raise FastPathUnavailableError("dataset type given as an object or a pattern")
        try:
            self._entry(name)
        except FastPathUnavailableError:
            return False
        return True

    def _missing_type(self, name: str) -> MissingDatasetTypeError:
        """Return the registry's error for an unregistered dataset type (``DatasetTypeManager.entry``)."""
        return missing_dataset_type(name, self._definitions())

    def _definitions(self) -> dict[str, tuple[int, DatasetType]]:
        """Return ``name -> (id, definition)`` of every registered dataset type (read once)."""
        if self._types is None:
            types: dict[str, tuple[int, DatasetType]] = {}
            for row in self._r._dataset_type_rows():
                dt = self._r._dataset_type(row)
                types[dt.name] = (row[0], dt)
                self._types_by_id[row[0]] = dt
            self._types = types
        return self._types

    def _entry(self, name: Any) -> tuple[int, DatasetType]:
        if not isinstance(name, str) or has_glob(name):
            raise FastPathUnavailableError("dataset type given as an object or a pattern")
        entry = self._definitions().get(name)
        if entry is None:
            raise FastPathUnavailableError(f"no dataset type {name!r}")
        return entry

    def _type_by_id(self, dataset_type_id: int) -> DatasetType:
        self._definitions()
        return self._types_by_id[dataset_type_id]

    # ------------------------------------------------------------------ dimension records
    def _element_records(
        self, element: str, keys: Iterable[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], DimensionRecord]:
        """Return the records of ``element`` with these keys (required values, then its own), cached."""
        cache = self._records.setdefault(element, {})
        missing = {k for k in keys if k not in cache}
        if not missing:
            return cache
        el = self.universe[element]
        fields = [f for f in el.record_fields if f != "timespan"]
        select = [f'"{c}"' for c in fields] + (["timespan_begin", "timespan_end"] if el.temporal else [])
        pk = el.primary_key.name
        by_prefix: dict[tuple[Any, ...], list[Any]] = {}
        for k in missing:
            by_prefix.setdefault(k[:-1], []).append(k[-1])
        n = len(fields)
        for prefix, ids in by_prefix.items():
            cond = "".join(f' AND "{r}" = ?' for r in el.requires)
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                sql = (
                    f'SELECT {", ".join(select)} FROM "{element}" '
                    f'WHERE "{pk}" IN ({", ".join("?" * len(chunk))}){cond}'
                )
                for row in self._r.conn.execute(sql, [*chunk, *prefix]):
                    values = dict(zip(fields, row[:n]))
                    if el.temporal:
                        b, e = row[n], row[n + 1]
                        values["timespan"] = None if b is None and e is None else Timespan.from_ns(b, e)
                    rec = DimensionRecord(el, values)
                    cache[prefix + (rec.data_id_value,)] = rec
        return cache

    def _lazy_coordinates(
        self, dims: tuple[str, ...], rows: Sequence[Sequence[Any]], position: Mapping[str, int]
    ) -> tuple[RecordKeyGetter, tuple[tuple[str, dict[tuple, DimensionRecord], RecordKeyGetter], ...]]:
        """Fetch the records ``rows`` need; return the getters of `DataCoordinate._expanded_lazily`.

        As the registry's ``DimensionRecordManager.lazy_coordinates``: one ``(dimension, records
        by key, row -> key)`` per dimension of ``dims``, and ``row -> values of dims``.
        """
        u = self.universe
        getters = []
        for d in dims:
            get_key = tuple_getter([position[q] for q in u[d].requires] + [position[d]])
            records = self._element_records(d, {k for k in map(get_key, rows) if k[-1] is not None})
            getters.append((d, records, get_key))
        return tuple_getter([position[d] for d in dims]), tuple(getters)

    def _refs(
        self, rows: Sequence[Sequence[Any]], keys: Sequence[str], dataset_type: DatasetType | None = None
    ) -> list[DatasetRef]:
        """Build expanded refs from rows of dataset id, type id, RUN id and dimensions (``rows_to_refs``)."""
        if not rows:
            return []
        pos = {k: i for i, k in enumerate(keys)}
        i_id = pos["dataset_id"] if "dataset_id" in pos else pos["id"]
        i_type, i_run = pos["dataset_type_id"], pos["run_id"]
        getters: dict[int, tuple[DatasetType, tuple[str, ...], Any, Any]] = {}
        for tid in dict.fromkeys(r[i_type] for r in rows):
            dt = dataset_type if dataset_type is not None else self._type_by_id(tid)
            dims = dt.dimensions + dt.implied
            get_values, rec_getters = self._lazy_coordinates(dims, rows, pos)
            getters[tid] = (dt, dims, get_values, rec_getters)
        by_id = self._r.by_id
        runs = {rid: by_id[rid].name for rid in {r[i_run] for r in rows}}
        u = self.universe
        lazy = DataCoordinate._expanded_lazily
        new = object.__new__
        setattr_ = object.__setattr__
        unknown = uuid.SafeUUID.unknown
        out: list[DatasetRef] = []
        for r in rows:
            dt, dims, get_values, rec_getters = getters[r[i_type]]
            did = new(uuid.UUID)
            setattr_(did, "int", int(r[i_id], 16))
            setattr_(did, "is_safe", unknown)
            ref = new(DatasetRef)
            d = ref.__dict__
            d["dataset_type"] = dt
            d["data_id"] = lazy(u, dt.dimensions, dims, get_values, rec_getters, r)
            d["run"] = runs[r[i_run]]
            d["id"] = did
            out.append(ref)
        return out

    # ------------------------------------------------------------------ queries
    def query_datasets(
        self,
        dataset_type: Any,
        *,
        collections: str | Iterable[str] | None = None,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        find_first: bool = True,
        limit: int | None = None,
        order_by: str | Sequence[str] | None = None,
        timespan: Timespan | None = None,
        **dims: Any,
    ) -> list[DatasetRef]:
        """As `Registry.query_datasets`, for one dataset type name in given collections.

        Raises
        ------
        MissingDatasetTypeError
            If the dataset type is not registered (the registry's error).
        FastPathUnavailableError
            For a pattern or several types, no collections, a ``bind``, ``data_id``, ``limit``,
            ``order_by``, ``timespan`` or dimension keyword, and whatever `dataset_rows` refuses.
        """

        def run() -> list[DatasetRef]:
            _no_extras(
                bind=bind, data_id=data_id, limit=limit, order_by=order_by, timespan=timespan, dims=dims
            )
            if not self._registered(dataset_type):
                raise self._missing_type(dataset_type)  # the registry's answer (before the collections)
            if collections is None:
                raise FastPathUnavailableError("no collections")
            dt_id, dt = self._entry(dataset_type)
            search = self.resolve_collections(collections)
            rows, keys = dataset_rows(self._r, dt_id, dt, search, where, find_first)
            return self._refs(rows, keys, dt)

        return self._guard(run)

    def query_data_ids(
        self,
        dimensions: str | Iterable[str],
        *,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        datasets: Any = None,
        collections: str | Iterable[str] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        **dims: Any,
    ) -> list[DataCoordinate]:
        """As `Registry.query_data_ids`: expanded data IDs, records attached lazily.

        Raises
        ------
        FastPathUnavailableError
            For a ``bind``, ``data_id``, ``order_by`` or dimension keyword, and whatever
            `SqliteFastRegistry.query_data_ids` refuses.
        """

        def run() -> list[DataCoordinate]:
            _no_extras(bind=bind, data_id=data_id, order_by=order_by, dims=dims)
            names = [dimensions] if isinstance(dimensions, str) else list(dimensions)
            types = (
                None if datasets is None else ([datasets] if isinstance(datasets, str) else list(datasets))
            )
            colls = (
                None
                if collections is None
                else ([collections] if isinstance(collections, str) else list(collections))
            )
            if types is not None and not all(isinstance(t, str) for t in types):
                raise FastPathUnavailableError("dataset types given as objects")
            rows, required, implied = data_id_rows(self._r, names, where, types, colls, limit)
            all_dims = required + implied
            get_values, rec_getters = self._lazy_coordinates(
                all_dims, rows, {d: i for i, d in enumerate(all_dims)}
            )
            lazy = DataCoordinate._expanded_lazily
            u = self.universe
            return [lazy(u, required, all_dims, get_values, rec_getters, r) for r in rows]

        return self._guard(run)

    def query_dimension_records(
        self,
        element: str,
        *,
        where: str = "",
        bind: Mapping[str, Any] | None = None,
        data_id: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        **dims: Any,
    ) -> list[DimensionRecord]:
        """As `Registry.query_dimension_records` (no ``bind``, ``data_id``, ``order_by`` or keywords)."""

        def run() -> list[DimensionRecord]:
            _no_extras(bind=bind, data_id=data_id, order_by=order_by, dims=dims)
            return self._r.query_dimension_records(element, where=where, limit=limit)

        return self._guard(run)

    def query_calibration_validity(
        self, collection: str, dataset_type: str
    ) -> list[tuple[DatasetRef, Timespan]]:
        """As `Registry.query_calibration_validity`: the certifications of a type in a collection."""

        def run() -> list[tuple[DatasetRef, Timespan]]:
            rec = self._r.collections.get(collection)
            if rec is None:
                raise FastPathUnavailableError(f"no collection {collection!r}")
            if not self._registered(dataset_type):
                raise self._missing_type(dataset_type)  # the registry's answer, not a refusal
            dt_id = self._entry(dataset_type)[0]
            certs = [
                (uuid.UUID(hex=i), Timespan.from_ns(b, e))
                for i, b, e in self._r.conn.execute(
                    "SELECT dataset_id, validity_begin, validity_end FROM dataset_calibs "
                    "WHERE collection_id = ? AND dataset_type_id = ? ORDER BY validity_begin",
                    (rec.id, dt_id),
                )
            ]
            refs = {r.id: r for r in self._refs_from_ids(list({i for i, _ in certs}))}
            return [(refs[i], ts) for i, ts in certs]

        return self._guard(run)

    def _refs_from_ids(self, ids: Sequence[uuid.UUID]) -> list[DatasetRef]:
        """Return the refs of registered ids, in the order given (``DatasetManager.refs_from_ids``)."""
        rows: list[tuple[Any, ...]] = []
        keys: list[str] = []
        for i in range(0, len(ids), _CHUNK):
            chunk = [x.hex for x in ids[i : i + _CHUNK]]
            cur = self._r.conn.execute(
                f"SELECT * FROM dataset WHERE id IN ({', '.join('?' * len(chunk))})", chunk
            )
            keys = [c[0] for c in cur.description]
            rows += cur.fetchall()
        order = {x.hex: i for i, x in enumerate(ids)}
        i_id = keys.index("id") if rows else 0
        rows.sort(key=lambda r: order[r[i_id]])
        return self._refs(rows, keys)

    def get_file_records(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredFileInfo]:
        """As `Registry.get_file_records`: the datastore records of datasets (missing ids are absent)."""

        def run() -> dict[uuid.UUID, StoredFileInfo]:
            out: dict[uuid.UUID, StoredFileInfo] = {}
            for i in range(0, len(ids), _CHUNK):
                chunk = [x.hex for x in ids[i : i + _CHUNK]]
                for did, path, formatter, sc, checksum, size in self._r.conn.execute(
                    "SELECT dataset_id, path, formatter, storage_class, checksum, file_size "
                    f"FROM file_datastore_records WHERE dataset_id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ):
                    out[uuid.UUID(hex=did)] = StoredFileInfo(path, formatter, sc, checksum, size)
            return out

        return self._guard(run)

    def get_file_record_columns(self, ids: Sequence[uuid.UUID]) -> FileRecordColumns:
        """As `Registry.get_file_record_columns`: the datastore records of many datasets as columns.

        The same SQL as ``DatastoreRecordManager.get_columns``, so the rows come in the same
        order: `get_file_records` up to ``BULK_THRESHOLD`` ids, else a join with a temporary table
        of ``(dataset id, position)`` clustered on the id (SQLite allows temporary tables on a
        read-only connection).
        """

        def run() -> FileRecordColumns:
            if not ids:
                return file_record_columns([])
            if len(ids) <= _CHUNK:
                pos = {u: i for i, u in enumerate(ids)}
                found = self.get_file_records(ids)
                return file_record_columns(
                    [
                        (pos[u], f.path, f.formatter, f.storage_class, f.checksum, f.file_size)
                        for u, f in found.items()
                    ]
                )
            conn = self._r.conn
            tmp, t = "ccdflow_tmp_record_ids", "file_datastore_records"
            conn.execute(
                f"CREATE TEMPORARY TABLE {tmp} (dataset_id CHAR(32) NOT NULL, pos BIGINT NOT NULL, "
                "PRIMARY KEY (dataset_id)) WITHOUT ROWID"
            )
            try:
                values = [(u.hex, i) for i, u in enumerate(ids)]
                conn.executemany(f"INSERT INTO {tmp} (dataset_id, pos) VALUES (?, ?)", values)
                rows = conn.execute(
                    f"SELECT {tmp}.pos, {t}.path, {t}.formatter, {t}.storage_class, {t}.checksum, "
                    f"{t}.file_size "
                    f"FROM {tmp} JOIN {t} ON {t}.dataset_id = {tmp}.dataset_id"
                ).fetchall()
            finally:
                conn.execute(f"DROP TABLE {tmp}")
                conn.commit()
            return file_record_columns(rows)

        return self._guard(run)

    def find_dataset(
        self,
        dataset_type: Any,
        data_id: Mapping[str, Any] | None = None,
        *,
        collections: str | Iterable[str] | None = None,
        timespan: Timespan | None = None,
        **dims: Any,
    ) -> DatasetRef | None:
        """As `Registry.find_dataset`, only for a dataset type that is not registered.

        Raises
        ------
        MissingDatasetTypeError
            If ``dataset_type`` is not registered (as the registry; after the collections are
            resolved, as the registry does).
        FastPathUnavailableError
            Otherwise: the registry finds datasets.
        """

        def run() -> None:
            if collections is None:
                raise FastPathUnavailableError("no collections")
            self.resolve_collections(collections)
            if not self._registered(dataset_type):
                raise self._missing_type(dataset_type)
            raise FastPathUnavailableError("find_dataset is not answered by the read-only path")

        return self._guard(run)
