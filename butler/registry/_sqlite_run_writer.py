"""The registry writes of ``pipetask run`` on a SQLite repository, with ``sqlite3`` (no SQLAlchemy).

``pipetask run`` builds its graph with the read-only butler (`butler.registry._sqlite_read_only`);
what it then writes is small and always the same: the pipeline's dataset types, the output RUN,
the CHAINED output collection, the run-level init-outputs (``<label>_config``, ``packages``) and,
in batches as quanta finish, the outputs' ``dataset`` and ``file_datastore_records`` rows. A
`SqliteRunWriter` does exactly those writes, as the registry does them (the same rows, values
encoded by `butler.registry._row_values.SQLITE_ENCODERS` as SQLAlchemy encodes them, ``BEGIN
IMMEDIATE`` transactions with the registry's pragmas and busy timeout, savepoints, errors and
messages), so that a run does not import SQLAlchemy (about 0.13 s of a 0.7 s run of 100 quanta).

It offers just the methods the driver calls (`pipeline.execution.runner.pre_exec_init`,
``run_graph``, ``run_lock``, ``cleanup``): like the read-only butler it is its own registry
(``writer.registry is writer``) and its own database for the run lock (``writer.db``). Anything
else is the registry's: the caller chooses this writer only for a new output RUN, before
anything is written (`butler.registry.backends.open_run_writer`).
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config import DEFAULT_BUSY_TIMEOUT, ROOT_TOKEN
from .._errors import (
    CollectionTypeError,
    ConflictingDefinitionError,
    FastPathUnavailableError,
    MissingCollectionError,
    MissingDatasetTypeError,
    RepositoryLockedError,
    dataset_insert_conflict,
    dataset_type_conflict,
    missing_collection,
    missing_dataset_type,
    storage_error,
)
from ..collections import CollectionType, chain_members, flatten_chains, glob_filter, has_glob
from ..datasets import DatasetRef, DatasetType
from ..datastore.file_datastore import FileDatastore
from ..datastore.records import StoredFileInfo
from ..dimensions import DimensionUniverse, default_universe
from ._locks import flock_lock
from ._row_values import SQLITE_ENCODERS, now_utc, time_to_ns_now
from ._schema_version import _tables_config, schema_version

__all__ = ["SqliteRunWriter"]

#: Ids per ``IN (...)`` list in the conflict diagnosis (as `DatasetManager._diagnose_conflict`).
_CHUNK = 5000


@dataclass(frozen=True)
class _Collection:
    id: int
    name: str
    type: CollectionType


def column_encoders(table: str, universe: DimensionUniverse) -> dict[str, Callable[[Any], Any]]:
    """Return column -> value conversion of a registry table, from ``registry_schema/tables.yaml``.

    Parameters
    ----------
    table : `str`
        A static table of ``tables.yaml``.
    universe : `butler.DimensionUniverse`
        Types the dimension columns (``{dimensions: true}``) by their dimension's key type.

    Returns
    -------
    encoders : `dict` [`str`, callable]
        Only the columns whose non-NULL values are converted for ``sqlite3``.
    """
    out: dict[str, Callable[[Any], Any]] = {}
    for col in _tables_config()["tables"][table]["columns"]:
        if col.get("dimensions"):
            for dim in universe.names:
                fn = SQLITE_ENCODERS.get(universe[dim].primary_key.type)
                if fn is not None:
                    out[dim] = fn
            continue
        fn = SQLITE_ENCODERS.get(col["type"])
        if fn is not None:
            out[col["name"]] = fn
    return out


class _InsertStatement:
    """An ``INSERT`` of fixed columns into a registry table, values converted as SQLAlchemy does."""

    def __init__(self, table: str, columns: Sequence[str], universe: DimensionUniverse) -> None:
        encoders = column_encoders(table, universe)
        self.columns = tuple(columns)
        quoted = ", ".join(f'"{c}"' for c in self.columns)
        self.sql = f"INSERT INTO {table} ({quoted}) VALUES ({', '.join('?' * len(self.columns))})"
        self._encoders = [(i, encoders[c]) for i, c in enumerate(self.columns) if c in encoders]

    def values(self, row: Sequence[Any]) -> list[Any]:
        """Return ``row`` (one value per column) with the values converted for ``sqlite3``."""
        out = list(row)
        for i, fn in self._encoders:
            if out[i] is not None:
                out[i] = fn(out[i])
        return out


class SqliteRunWriter:
    """The registry writes of ``pipetask run`` into a new output RUN, on a SQLite registry.

    Parameters
    ----------
    root : `pathlib.Path`
        Repository root.
    url : `str`
        The registry URL of its ``butler.yaml``.
    config : `dict`
        Its ``butler.yaml`` (``registry.busy_timeout``, the ``datastore`` section).

    Raises
    ------
    FastPathUnavailableError
        For a URL with options, a missing registry file or another schema version: the caller
        opens a `butler.Butler`, which reports any error.
    """

    def __init__(self, root: Path, url: str, config: dict[str, Any]) -> None:
        self.root = root
        prefix = "sqlite:///"
        if not url.startswith(prefix) or "?" in url:
            raise FastPathUnavailableError("not a plain SQLite registry")
        self.path = url[len(prefix) :].replace(ROOT_TOKEN, str(root))
        if not Path(self.path).is_file():
            raise FastPathUnavailableError(f"no registry file {self.path}")
        reg_cfg = config.get("registry") or {}
        self.busy_timeout = float(reg_cfg.get("busy_timeout", DEFAULT_BUSY_TIMEOUT))
        self.universe: DimensionUniverse = default_universe()
        self.datastore = FileDatastore(root, config.get("datastore") or {})  # checks the templates
        try:
            # As `butler.registry.sqlite.SqliteDatabase` sets up its connections.
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False)
            conn.isolation_level = None
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            attrs = dict(conn.execute("SELECT name, value FROM butler_attributes").fetchall())
        except sqlite3.Error as exc:
            raise FastPathUnavailableError(str(exc)) from None
        self._conn = conn
        if attrs.get("schema_version") != str(schema_version()) or attrs.get("dimensions_version") != str(
            self.universe.version
        ):
            conn.close()
            raise FastPathUnavailableError("schema version mismatch")
        self._depth = 0
        self._savepoints = 0
        self._types: dict[str, tuple[int, DatasetType]] = {}
        self._collections: dict[str, _Collection] = {}
        self._pending_rows = 0
        self._analyzed_rows = 0
        names = tuple(self.universe.names)
        self._insert_dataset = _InsertStatement(
            "dataset",
            (*names, "id", "dataset_type_id", "run_id", "ingest_date", "data_id_key"),
            self.universe,
        )
        self._insert_file = _InsertStatement(
            "file_datastore_records",
            ("dataset_id", "path", "formatter", "storage_class", "checksum", "file_size"),
            self.universe,
        )

    # ------------------------------------------------------------------ the butler surface
    @property
    def registry(self) -> SqliteRunWriter:
        """Return this object (it is its own registry)."""
        return self

    @property
    def db(self) -> SqliteRunWriter:
        """Return this object (it takes the run lock, `exclusive_lock`, as a registry database)."""
        return self

    def close(self) -> None:
        """Close the ``sqlite3`` connection."""
        self._conn.close()

    def __enter__(self) -> SqliteRunWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def exclusive_lock(self, name: str, *, root: Path) -> contextlib.AbstractContextManager[None]:
        """Hold the run lock ``name`` (`butler.registry._locks.flock_lock`, as SQLite's `Database`).

        Raises
        ------
        LockHeldError
            If another process holds it.
        """
        return flock_lock(name, root=root)

    # ------------------------------------------------------------------ transactions
    def _translate(self, exc: sqlite3.Error) -> Exception:
        """Return the registry's error for a ``sqlite3`` error (`SqliteDatabase.translate_error`)."""
        storage = storage_error(exc, self.path)
        if storage is not None:
            return storage
        msg = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg):
            return RepositoryLockedError(
                f"the registry {self.path} is locked by another writer and stayed locked for "
                f"{self.busy_timeout:g} s; wait for the other process to finish (or raise "
                "registry.busy_timeout "
                "in butler.yaml) and retry"
            )
        return exc

    @contextlib.contextmanager
    def transaction(self, *, savepoint: bool = False) -> Iterator[None]:
        """Open (or join) one write transaction, as `Registry.transaction` on SQLite.

        The outermost block runs ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception,
        which also forgets the cached definitions); a nested block joins it, or with
        ``savepoint`` opens a SAVEPOINT that an exception rolls back alone.

        Raises
        ------
        RepositoryLockedError
            If another writer held the lock past the busy timeout.
        """
        conn = self._conn
        if self._depth == 0:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            self._depth = 1
            try:
                yield
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._types.clear()
                self._collections.clear()
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc) from exc
                raise
            finally:
                self._depth = 0
            return
        self._depth += 1
        try:
            if not savepoint:
                yield
                return
            self._savepoints += 1
            name = f"ccdflow_sp_{self._savepoints}"
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                conn.execute(f"RELEASE SAVEPOINT {name}")
                raise
            conn.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            self._depth -= 1

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query (in the open transaction, or alone in autocommit mode)."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            if self._depth:
                raise
            raise self._translate(exc) from exc

    # ------------------------------------------------------------------ dataset types
    def _type_entry(self, name: str) -> tuple[int, DatasetType]:
        """Return ``(id, definition)`` of a registered type (`DatasetTypeManager.entry`)."""
        entry = self._types.get(name)
        if entry is None:
            rows = self._read(
                "SELECT dataset_type_id, name, dimensions, storage_class, is_calibration FROM dataset_type "
                "WHERE name = ?",
                (name,),
            )
            if not rows:
                names = [r[0] for r in self._read("SELECT name FROM dataset_type")]
                raise missing_dataset_type(name, names)
            tid, tname, dims, storage_class, is_calib = rows[0]
            dt = DatasetType(
                tname,
                [d for d in dims.split(",") if d],
                storage_class,
                bool(is_calib),
                universe=self.universe,
            )
            entry = (tid, dt)
            self._types[name] = entry
        return entry

    def get_dataset_type(self, name: str | DatasetType) -> DatasetType:
        """As `Registry.get_dataset_type`.

        Raises
        ------
        MissingDatasetTypeError
            If it is not registered.
        ConflictingDefinitionError
            If a `DatasetType` is given that differs from the registered one.
        """
        key = name.name if isinstance(name, DatasetType) else name
        existing = self._type_entry(key)[1]
        if isinstance(name, DatasetType) and name != existing:
            raise ConflictingDefinitionError(f"dataset type {name} does not match the registered {existing}")
        return existing

    def register_dataset_type(self, dataset_type: DatasetType) -> bool:
        """As `Registry.register_dataset_type`: insert a definition; return whether it was new.

        Raises
        ------
        ConflictingDefinitionError
            If it is registered with another definition.
        """
        try:
            existing: DatasetType | None = self._type_entry(dataset_type.name)[1]
        except MissingDatasetTypeError:
            existing = None
        if existing is not None:
            if existing != dataset_type:
                raise dataset_type_conflict(existing, dataset_type)
            return False
        with self.transaction():
            self._conn.execute(
                "INSERT INTO dataset_type (name, dimensions, storage_class, is_calibration) "
                "VALUES (?, ?, ?, ?)",
                (
                    dataset_type.name,
                    ",".join(dataset_type.dimensions),
                    dataset_type.storage_class,
                    SQLITE_ENCODERS["bool"](dataset_type.is_calibration),
                ),
            )
        return True

    # ------------------------------------------------------------------ collections
    def _find(self, name: str) -> _Collection:
        """Return a collection's record (`CollectionManager.find`).

        Raises
        ------
        MissingCollectionError
            If it does not exist (the registry's message).
        """
        rec = self._collections.get(name)
        if rec is None:
            rows = self._read("SELECT collection_id, name, type FROM collection WHERE name = ?", (name,))
            if not rows:
                names = [r[0] for r in self._read("SELECT name FROM collection")]
                raise missing_collection(name, names)
            rec = _Collection(rows[0][0], rows[0][1], CollectionType(rows[0][2]))
            self._collections[name] = rec
        return rec

    def get_collection_type(self, name: str) -> CollectionType:
        """As `Registry.get_collection_type` (`MissingCollectionError` if it does not exist)."""
        return self._find(name).type

    def query_collections(
        self, pattern: str | Iterable[str] = "*", types: Iterable[CollectionType | str] | None = None
    ) -> list[str]:
        """As `Registry.query_collections` without ``flatten_chains``: matching names, sorted."""
        rows = self._read("SELECT name, type FROM collection ORDER BY name")
        kinds = dict(rows)
        want = set(CollectionType) if types is None else {CollectionType.from_name(t) for t in types}
        return [n for n in glob_filter(pattern, [r[0] for r in rows]) if CollectionType(kinds[n]) in want]

    def register_collection(
        self, name: str, type: CollectionType | str = CollectionType.TAGGED, doc: str = ""
    ) -> bool:
        """As `Registry.register_collection`: return whether it was created.

        Raises
        ------
        ConflictingDefinitionError
            If it exists with another type.
        ValueError
            For an empty name or one with a glob character or surrounding spaces.
        """
        ctype = CollectionType.from_name(type)
        if not name or has_glob(name) or name != name.strip():
            raise ValueError(
                f"invalid collection name {name!r}: it must be non-empty, without *?[ or surrounding spaces"
            )
        try:
            existing: _Collection | None = self._find(name)
        except MissingCollectionError:
            existing = None
        if existing is not None:
            if existing.type != ctype:
                raise ConflictingDefinitionError(
                    f"collection {name!r} already exists as {existing.type.name}, not {ctype.name}"
                )
            return False
        with self.transaction():
            cur = self._conn.execute(
                "INSERT INTO collection (name, type, doc) VALUES (?, ?, ?)", (name, int(ctype), doc or None)
            )
            if ctype is CollectionType.RUN:
                self._conn.execute(
                    "INSERT INTO run (collection_id, host, timespan_begin, timespan_end) VALUES (?, ?, ?, ?)",
                    (cur.lastrowid, socket.gethostname()[:128], time_to_ns_now(), None),
                )
        return True

    def register_run(self, name: str, doc: str = "") -> bool:
        """As `Registry.register_run`: register a RUN collection; return whether it was created."""
        return self.register_collection(name, CollectionType.RUN, doc)

    def _chain(self, parent: _Collection) -> list[str]:
        rows = self._read(
            "SELECT c.name FROM collection_chain AS k JOIN collection AS c ON c.collection_id = k.child "
            "WHERE k.parent = ? ORDER BY k.position",
            (parent.id,),
        )
        return [r[0] for r in rows]

    def _flatten(self, names: Iterable[str], *, keep_chains: bool = False) -> list[str]:
        """As `CollectionManager.flatten`."""
        return flatten_chains(
            names,
            lambda n: self._find(n).type is CollectionType.CHAINED,
            lambda n: self._chain(self._find(n)),
            lambda n: ConflictingDefinitionError(f"collection chain through {n!r} is too deep (a cycle?)"),
            keep_chains=keep_chains,
        )

    def set_collection_chain(self, parent: str, children: Sequence[str], *, flatten: bool = False) -> None:
        """As `Registry.set_collection_chain`: define the children of a CHAINED collection (created).

        Raises
        ------
        MissingCollectionError
            For a missing child.
        ConflictingDefinitionError
            For a cycle.
        """
        self.register_collection(parent, CollectionType.CHAINED)
        with self.transaction():
            rec = self._find(parent)
            if rec.type is not CollectionType.CHAINED:
                raise CollectionTypeError(f"collection {parent!r} is {rec.type.name}, not CHAINED")
            kids = chain_members(parent, children, self._find, self._flatten, flatten_children=flatten)
            self._conn.execute("DELETE FROM collection_chain WHERE parent = ?", (rec.id,))
            if kids:
                self._conn.executemany(
                    "INSERT INTO collection_chain (parent, position, child) VALUES (?, ?, ?)",
                    [(rec.id, i, k.id) for i, k in enumerate(kids)],
                )

    def _run_record(self, name: str) -> _Collection:
        """Return the record of a RUN collection (`CollectionManager.run`)."""
        rec = self._find(name)
        if rec.type is not CollectionType.RUN:
            raise CollectionTypeError(
                f"collection {name!r} is {rec.type.name}; datasets can only be put into a RUN collection"
            )
        return rec

    def _ensure_run(self, run: str) -> None:
        """Register a missing RUN (`Butler._ensure_run`)."""
        try:
            ctype = self._find(run).type
        except MissingCollectionError:
            self.register_run(run)
            return
        if ctype is not CollectionType.RUN:
            raise CollectionTypeError(
                f"collection {run!r} is {ctype.name}; datasets can only be put into a RUN collection"
            )

    # ------------------------------------------------------------------ datasets
    def _insert_refs(self, refs: Sequence[DatasetRef]) -> None:
        """Insert refs with full data IDs into their RUNs (`DatasetManager.insert`; in a transaction).

        Raises
        ------
        ConflictingDefinitionError
            If a (dataset type, data ID) is already in the RUN, or an id exists (the registry's
            messages).
        """
        by_type_run: dict[tuple[str, str], list[DatasetRef]] = {}
        for r in refs:
            by_type_run.setdefault((r.dataset_type.name, r.run), []).append(r)
        names = self.universe.names
        stmt = self._insert_dataset
        for (dt_name, run), group in by_type_run.items():
            dt_id = self._type_entry(dt_name)[0]
            run_id = self._run_record(run).id
            now = now_utc()
            rows = []
            for ref in group:
                values = ref.data_id.to_simple()
                dims = [values.get(n) for n in names]
                rows.append(stmt.values([*dims, ref.id, dt_id, run_id, now, ref.data_id.key]))
            try:
                with self.transaction(savepoint=len(rows) > 1):
                    self._conn.executemany(stmt.sql, rows)
            except sqlite3.IntegrityError as exc:
                raise self._diagnose_conflict(dt_name, dt_id, run, run_id, group, exc) from None
            self._note_inserts(len(rows))

    def _diagnose_conflict(
        self, dt_name: str, dt_id: int, run: str, run_id: int, refs: Sequence[DatasetRef], exc: Exception
    ) -> Exception:
        """Return the registry's error for a failed dataset insert (`DatasetManager._diagnose_conflict`)."""
        keys = [r.data_id.key for r in refs]
        chunk = keys[:_CHUNK]
        dup = self._read(
            "SELECT data_id_key FROM dataset WHERE dataset_type_id = ? AND run_id = ? "
            f"AND data_id_key IN ({', '.join('?' * len(chunk))})",
            (dt_id, run_id, *chunk),
        )
        found: list[tuple[Any, ...]] = []
        if not dup:
            ids = [r.id.hex for r in refs][:_CHUNK]
            found = self._read(f"SELECT id FROM dataset WHERE id IN ({', '.join('?' * len(ids))})", ids)
        return dataset_insert_conflict(
            dt_name,
            run,
            [(r.data_id.key, r.data_id.required) for r in refs],
            [row[0] for row in dup],
            uuid.UUID(hex=found[0][0]) if found else None,
            exc,
        )

    def _note_inserts(self, n: int) -> None:
        """``ANALYZE dataset`` once it has grown by a quarter, as `SqliteDatabase.note_inserts`."""
        self._pending_rows += n
        if self._pending_rows < max(1000, self._analyzed_rows // 4):
            return
        self._conn.execute("ANALYZE dataset")
        self._analyzed_rows += self._pending_rows
        self._pending_rows = 0

    def _insert_file_records(self, items: Sequence[tuple[uuid.UUID, StoredFileInfo]]) -> None:
        """Insert datastore records (`DatastoreRecordManager.insert`; in a transaction)."""
        stmt = self._insert_file
        self._conn.executemany(
            stmt.sql,
            [
                stmt.values([i, f.path, f.formatter, f.storage_class, f.checksum, f.file_size])
                for i, f in items
            ],
        )

    def put(self, obj: Any, ref: DatasetRef) -> DatasetRef:
        """As `butler.Butler.put` of a resolved ref without dimensions (an init-output).

        Writes the file atomically and registers it in one transaction (the RUN is created if
        missing); a failure leaves neither.

        Raises
        ------
        FastPathUnavailableError
            For a dataset type with dimensions (before anything is written).
        ConflictingDefinitionError
            If the dataset type differs from the registered one, or the RUN already holds it.
        """
        dt = self.get_dataset_type(ref.dataset_type)
        if dt.dimensions or ref.data_id.dimensions:
            raise FastPathUnavailableError("the run writer puts only datasets without dimensions")
        ref = DatasetRef(dt, ref.data_id, ref.run, ref.id)
        with self.datastore.staged_write(obj, ref) as (info, commit):
            with self.transaction():
                self._ensure_run(ref.run)
                self._insert_refs([ref])
                self._insert_file_records([(ref.id, info)])
                commit()
        return ref

    def register_outputs(self, items: Sequence[tuple[DatasetRef, StoredFileInfo]]) -> None:
        """As `butler.Butler.register_outputs`: register written files, one transaction.

        The refs must have full data IDs (those of a quantum graph: their values are written as
        they are; the registry would not expand them either).

        Raises
        ------
        ConflictingDefinitionError
            If a dataset ID or (dataset type, data ID) is already in its RUN; nothing is registered.
        """
        if not items:
            return
        with self.transaction():
            refs = [r for r, _ in items]
            for run in {r.run for r in refs}:
                self._ensure_run(run)
            self._insert_refs(refs)
            self._insert_file_records([(r.id, info) for r, info in items])
