"""SQLite backend: WAL journal, busy timeout, foreign keys, ``BEGIN IMMEDIATE`` only for writes.

Unlike daf_butler (rollback journal, every transaction ``BEGIN IMMEDIATE``, middleware-reference
§1.5 and §9.4), readers never wait for a writer (WAL) and only write transactions take the lock.
A writer that cannot get the lock within the busy timeout gets `RepositoryLockedError`.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event

from .._errors import RepositoryError, RepositoryLockedError, storage_error
from ._row_values import SQLITE_ENCODERS
from ._sqlite_uri import sqlite_read_only_uri
from .database import Database

__all__ = ["SqliteDatabase", "bind_encoders"]

#: SQLAlchemy column types whose values `SQLITE_ENCODERS` converts (by ``tables.yaml`` type name).
_ENCODED_TYPES: tuple[tuple[type[sa.types.TypeEngine[Any]], str], ...] = (
    (sa.Uuid, "uuid"),
    (sa.DateTime, "datetime"),
    (sa.Boolean, "bool"),
    (sa.Float, "float"),
)


def bind_encoders(compiled: Any) -> dict[str, Any]:
    """Return bind name -> value conversion of a compiled statement, for the raw ``sqlite3`` cursor.

    The conversions of `butler.registry._row_values.SQLITE_ENCODERS` (the ones the
    SQLAlchemy-free run writer uses too) for UUID, datetime, boolean and float parameters;
    SQLAlchemy's bind processor for a parameter of any other type that has one.

    Parameters
    ----------
    compiled : `sqlalchemy.sql.compiler.SQLCompiler`
        A statement compiled for the SQLite dialect.

    Returns
    -------
    encoders : `dict` [`str`, callable]
        Only the parameters whose values are converted.
    """
    out = {}
    for name, proc in compiled._bind_processors.items():
        bind = compiled.binds.get(name)
        kind = None
        if bind is not None:
            kind = next((k for cls, k in _ENCODED_TYPES if isinstance(bind.type, cls)), None)
        out[name] = SQLITE_ENCODERS[kind] if kind is not None else proc
    return out


class SqliteDatabase(Database):
    """`Database` on an SQLite file.

    Parameters
    ----------
    engine : `sqlalchemy.engine.Engine`
    writeable : `bool`
    busy_timeout : `float`
        Seconds a writer waits for another writer's lock.
    """

    dialect_name = "sqlite"
    statement_atomic = True

    def __init__(self, engine: sa.Engine, *, writeable: bool = True, busy_timeout: float = 60.0) -> None:
        self.busy_timeout = busy_timeout
        self._compiled: dict[Any, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
        self._pending_rows: dict[str, int] = {}
        self._analyzed_rows: dict[str, int] = {}
        super().__init__(engine, schema=None, writeable=writeable)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if writeable:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            # On the raw sqlite3 connection: one put pays one BEGIN, not SQLAlchemy's statement
            # machinery; a lock timeout still surfaces as sa.exc.OperationalError.
            sql = "BEGIN IMMEDIATE" if self._write else "BEGIN"
            try:
                cast(sqlite3.Connection, conn.connection.dbapi_connection).execute(sql)
            except sqlite3.OperationalError as exc:
                raise sa.exc.OperationalError(sql, None, exc) from exc

    # -- precompiled statements on the raw sqlite3 cursor -----------------------------------------
    def _compile(self, key: Any, factory: Any) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        entry = self._compiled.get(key)
        if entry is None:
            c = factory().compile(dialect=self.engine.dialect)
            entry = (str(c), tuple(c.positiontup or ()), bind_encoders(c))
            self._compiled[key] = entry
        return entry

    def _raw_cursor(self) -> sqlite3.Cursor:
        return cast(sqlite3.Connection, self.connection.connection.dbapi_connection).cursor()

    def _convert(self, names: tuple[str, ...], procs: dict[str, Any], params: dict[str, Any]) -> list[Any]:
        out = []
        for n in names:
            v = params[n]
            p = procs.get(n)
            out.append(p(v) if p is not None and v is not None else v)
        return out

    def fast_fetch(self, key: Any, factory: Any, params: dict[str, Any]) -> list[tuple] | None:
        """Run a precompiled query on the raw sqlite3 cursor.

        Outside a transaction it runs in autocommit mode: WAL gives the statement a consistent snapshot.
        """
        sql, names, procs = self._compile(key, factory)
        try:
            cur = self._raw_cursor()
            cur.execute(sql, self._convert(names, procs, params))
            return cur.fetchall()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise self.translate_error(sa.exc.OperationalError(sql, None, exc)) from exc
            raise

    def note_inserts(self, table: sa.Table, n: int) -> None:
        """Run ``ANALYZE`` on a table once it has grown by a quarter (at least 1000 rows).

        Without statistics SQLite prefers the (dataset_type_id, run_id, ...) unique index for
        ``WHERE exposure = ?`` and scans a whole run; with them it uses the dimension indexes.
        """
        pending = self._pending_rows.get(table.name, 0) + n
        if pending < max(1000, self._analyzed_rows.get(table.name, 0) // 4):
            self._pending_rows[table.name] = pending
            return
        prep = self.engine.dialect.identifier_preparer
        self._raw_cursor().execute(f"ANALYZE {prep.format_table(table)}")
        self._analyzed_rows[table.name] = self._analyzed_rows.get(table.name, 0) + pending
        self._pending_rows[table.name] = 0

    def fetch_tuples(self, stmt: Any) -> tuple[list[tuple], list[str]]:
        """Compile once and run on the raw sqlite3 cursor (UUIDs come back as 32-char hex)."""
        c = stmt.compile(dialect=self.engine.dialect, compile_kwargs={"render_postcompile": True})
        params = c.construct_params()
        procs = bind_encoders(c)
        values = []
        for n in c.positiontup or ():
            v = params[n]
            p = procs.get(n)
            values.append(p(v) if p is not None and v is not None else v)
        cur = self._raw_cursor()
        try:
            cur.execute(str(c), values)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise self.translate_error(sa.exc.OperationalError(str(c), None, exc)) from exc
            raise
        return cur.fetchall(), [d[0] for d in cur.description]

    def fast_executemany(self, key: Any, factory: Any, rows: list[dict[str, Any]]) -> bool:
        """Precompiled INSERT/UPDATE for many rows on the raw cursor (must be inside `transaction`)."""
        if not self._depth:
            raise RuntimeError("fast_executemany needs an open transaction")
        sql, names, procs = self._compile(key, factory)
        try:
            self._raw_cursor().executemany(sql, [self._convert(names, procs, r) for r in rows])
        except sqlite3.IntegrityError as exc:
            raise sa.exc.IntegrityError(sql, None, exc) from exc
        return True

    @classmethod
    def from_url(
        cls, url: str, *, writeable: bool = True, busy_timeout: float = 60.0, must_exist: bool = False
    ) -> SqliteDatabase:
        """Open an SQLite database from a ``sqlite:///path`` URL.

        Raises
        ------
        RepositoryError
            If ``must_exist`` and the file does not exist (nothing is created then).
        """
        path = sa.engine.make_url(url).database
        if must_exist and path and path != ":memory:" and not os.path.exists(path):
            raise RepositoryError(
                f"the registry database {path} is missing; the repository is incomplete "
                "(restore registry.sqlite3 or create a new repository)"
            )
        connect_args: dict[str, Any] = {"timeout": busy_timeout, "check_same_thread": False}
        if not writeable and path and path != ":memory:" and os.path.exists(path):
            # Read-only: ``mode=ro`` (``immutable=1`` in a directory we cannot write, where the
            # WAL files cannot be made), so that a read-only repository can still be queried.
            read_only_uri = sqlite_read_only_uri(path)
            engine = sa.create_engine(
                "sqlite://",
                creator=lambda: sqlite3.connect(read_only_uri, uri=True, **connect_args),
                poolclass=sa.pool.NullPool,
            )
        else:
            engine = sa.create_engine(url, connect_args=connect_args, poolclass=sa.pool.NullPool)
        return cls(engine, writeable=writeable, busy_timeout=busy_timeout)

    def translate_error(self, exc: sa.exc.DBAPIError) -> Exception:
        """Turn SQLite errors into butler errors: one line naming the database file, no SQL.

        "database is locked" becomes `RepositoryLockedError`, a full disk
        `butler.StorageFullError` and a read-only file `butler.RepositoryReadOnlyError`.
        """
        msg = str(exc.orig)
        storage = storage_error(exc, self.engine.url.database)
        if storage is not None:
            return storage
        if isinstance(exc, sa.exc.OperationalError) and ("locked" in msg or "busy" in msg):
            return RepositoryLockedError(
                f"the registry {self.engine.url.database} is locked by another writer and stayed locked for "
                f"{self.busy_timeout:g} s; wait for the other process to finish (or raise "
                "registry.busy_timeout "
                "in butler.yaml) and retry"
            )
        return exc
