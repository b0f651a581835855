"""One database interface for the registry: engine, the `transaction` context manager, savepoints.

Backends live in ``_sqlite.py`` and ``_postgresql.py``; they configure the engine (pragmas,
``BEGIN IMMEDIATE``, schemas) and translate backend errors. Everything the registry does goes
through `Database.transaction` (one connection per `Database`, nested calls join the outer
transaction, ``savepoint=True`` opens a SAVEPOINT so a failed inner block can be undone alone).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from .._errors import RepositoryError
from .schema import RegistrySchema, build_schema

__all__ = ["Database", "make_database"]


class Database:
    """An SQLAlchemy engine with one connection and one transaction context manager.

    Parameters
    ----------
    engine : `sqlalchemy.engine.Engine`
        The engine (configured by the backend).
    schema : `str`, optional
        Database schema (namespace) holding the tables.
    writeable : `bool`
        Whether write transactions are allowed.
    """

    dialect_name = "generic"
    statement_atomic = False
    """Whether a failed statement leaves the transaction usable (SQLite: yes; PostgreSQL: no)."""

    def __init__(self, engine: sa.Engine, *, schema: str | None = None, writeable: bool = True) -> None:
        self.engine = engine
        self.schema = schema
        self.writeable = writeable
        self._conn: sa.Connection | None = None
        self._depth = 0
        self._write = False
        self.registry_schema: RegistrySchema = build_schema(schema=schema)

    # -- connection and transactions --------------------------------------------------------------
    @property
    def connection(self) -> sa.Connection:
        """The connection used by every statement (opened on first use)."""
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    @property
    def in_transaction(self) -> bool:
        """Whether a `transaction` block is open."""
        return self._depth > 0

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True, savepoint: bool = False) -> Iterator[sa.Connection]:
        """Open (or join) a transaction; commit on success, roll back on any exception.

        Parameters
        ----------
        write : `bool`
            Whether the block writes (SQLite takes the write lock up front with
            ``BEGIN IMMEDIATE``; reads use a plain ``BEGIN``). Ignored for a nested block.
        savepoint : `bool`
            For a nested block, open a SAVEPOINT so an exception rolls back only this block.

        Yields
        ------
        connection : `sqlalchemy.engine.Connection`

        Raises
        ------
        RepositoryError
            If ``write`` is requested on a read-only repository.
        RepositoryLockedError
            (SQLite) if another process held the write lock past the busy timeout.
        """
        if write and not self.writeable:
            raise RepositoryError(
                "the repository was opened read-only; open it with writeable=True to change it"
            )
        conn = self.connection
        if self._depth == 0:
            self._write = write
            try:
                trans = conn.begin()
            except sa.exc.DBAPIError as exc:
                conn.rollback() if conn.in_transaction() else None
                raise self.translate_error(exc) from exc
            self._depth = 1
            try:
                yield conn
                trans.commit()
            except BaseException as exc:
                if trans.is_active:
                    trans.rollback()
                if isinstance(exc, sa.exc.DBAPIError):
                    raise self.translate_error(exc) from exc
                raise
            finally:
                self._depth = 0
                self._write = False
        else:
            self._depth += 1
            try:
                if savepoint:
                    with conn.begin_nested():
                        yield conn
                else:
                    yield conn
            finally:
                self._depth -= 1

    def translate_error(self, exc: sa.exc.DBAPIError) -> Exception:
        """Turn a backend error into a butler error where one applies (backends override)."""
        return exc

    # -- helpers ----------------------------------------------------------------------------------
    def execute(self, stmt: Any, params: Any = None) -> sa.CursorResult:
        """Execute a statement inside the current transaction (must be inside `transaction`)."""
        return self.connection.execute(stmt, params) if params is not None else self.connection.execute(stmt)

    def fetchall(self, stmt: Any, params: Any = None) -> Sequence[sa.Row]:
        """Run a query in the current transaction, or in a short read transaction; return all rows."""
        if self._depth:
            return self.execute(stmt, params).fetchall()
        with self.transaction(write=False):
            return self.execute(stmt, params).fetchall()

    def fetch_tuples(self, stmt: Any) -> tuple[list[tuple], list[str]]:
        """Run a SELECT and return plain tuples and the column names (bulk query results).

        Type conversions of the backend's driver apply; UUID columns may come back as hex
        strings on SQLite (see `as_uuid`).
        """
        if self._depth:
            res = self.execute(stmt)
            return [tuple(r) for r in res.fetchall()], list(res.keys())
        with self.transaction(write=False):
            res = self.execute(stmt)
            return [tuple(r) for r in res.fetchall()], list(res.keys())

    def fast_fetch(self, key: Any, factory: Any, params: dict[str, Any]) -> list[tuple] | None:
        """Run a cached, precompiled query on the raw DBAPI cursor (SQLite fast path).

        Parameters
        ----------
        key : hashable
            Cache key of the statement shape.
        factory : callable
            ``factory() -> Select``; called once per key.
        params : `dict`
            Values of the statement's bind parameters.

        Returns
        -------
        rows : `list` of `tuple` or `None`
            Raw rows (no type conversion), or `None` when the backend has no fast path and the
            caller must use SQLAlchemy.
        """
        return None

    def fast_executemany(self, key: Any, factory: Any, rows: list[dict[str, Any]]) -> bool:
        """Execute a cached, precompiled statement for many parameter sets (inside a transaction).

        Returns `False` (doing nothing) when the backend has no fast path.
        """
        return False

    def note_inserts(self, table: sa.Table, n: int) -> None:
        """Record that ``n`` rows were inserted into ``table`` (backends may refresh planner statistics)."""

    def create_tables(self) -> None:
        """Create every registry table (and the schema, where the backend has them)."""
        with self.transaction() as conn:
            self.registry_schema.metadata.create_all(conn)

    def table_names(self) -> set[str]:
        """Names of the tables that exist in the database (in the schema, if any)."""
        with self.transaction(write=False) as conn:
            return set(sa.inspect(conn).get_table_names(schema=self.schema))

    def lock_tables(self, *tables: sa.Table) -> None:
        """Take an exclusive lock on tables for the rest of the transaction (no-op by default)."""

    def close(self) -> None:
        """Close the connection and dispose of the engine."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()


def make_database(
    url: str,
    *,
    schema: str | None = None,
    writeable: bool = True,
    busy_timeout: float = 60.0,
    create: bool = False,
    must_exist: bool = False,
) -> Database:
    """Open the database of a repository, choosing the backend from the URL.

    Parameters
    ----------
    url : `str`
        SQLAlchemy URL: ``sqlite:///path`` or ``postgresql+psycopg://user@host:port/db``.
    schema : `str`, optional
        PostgreSQL schema holding the repository's tables.
    writeable : `bool`
        Allow write transactions.
    busy_timeout : `float`
        SQLite: seconds to wait for another writer's lock before `RepositoryLockedError`.
    create : `bool`
        Create the schema (namespace) if missing (PostgreSQL).
    must_exist : `bool`
        SQLite: refuse to create a missing database file (opening an existing repository).

    Raises
    ------
    RepositoryError
        If the URL names an unsupported backend or the server cannot be reached.
    """
    if url.startswith("sqlite"):
        from ._sqlite import SqliteDatabase

        return SqliteDatabase.from_url(
            url, writeable=writeable, busy_timeout=busy_timeout, must_exist=must_exist
        )
    if url.startswith("postgresql"):
        from ._postgresql import PostgresqlDatabase

        return PostgresqlDatabase.from_url(url, schema=schema, writeable=writeable, create=create)
    raise RepositoryError(
        f"unsupported registry database URL {url!r}: use sqlite:///... or postgresql+psycopg://..."
    )
