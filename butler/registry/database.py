"""One database interface for the registry: engine, the `transaction` context manager, savepoints.

Backends live in ``sqlite.py`` and ``postgresql.py`` (`butler.registry.backends.make_database`
picks one from the URL); they configure the engine (pragmas, ``BEGIN IMMEDIATE``, schemas),
translate backend errors and implement what differs between servers (precompiled statements on
the raw cursor, planner statistics, table locks, the inter-process `Database.exclusive_lock`).
Everything the registry does goes through `Database.transaction` (one connection per
`Database`, nested calls join the outer transaction, ``savepoint=True`` opens a SAVEPOINT so a
failed inner block can be undone alone).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .._errors import RepositoryError
from ._locks import flock_lock, lock_holder_info, lock_key
from .schema import RegistrySchema, build_schema

__all__ = ["Database", "lock_holder_info", "lock_key"]


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

    def fast_fetch(
        self, key: Any, factory: Callable[[], sa.Executable], params: dict[str, Any]
    ) -> list[tuple] | None:
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

    def fast_executemany(
        self, key: Any, factory: Callable[[], sa.Executable], rows: list[dict[str, Any]]
    ) -> bool:
        """Execute a cached, precompiled statement for many parameter sets (inside a transaction).

        Returns `False` (doing nothing) when the backend has no fast path.
        """
        return False

    def execute_many(self, key: str, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """INSERT rows with a precompiled statement (raw cursor where the backend has one).

        Parameters
        ----------
        key : `str`
            Cache key of the statement (with the column names of ``rows[0]``).
        table : `sqlalchemy.Table`
            The table.
        rows : `list` [`dict`]
            Column -> value, every row with the same columns.
        """
        cols = list(rows[0])
        factory = lambda: sa.insert(table).values({c: sa.bindparam(c) for c in cols})  # noqa: E731
        if not self.fast_executemany((key, tuple(cols)), factory, rows):
            self.execute(sa.insert(table), rows)

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

    def drop_schema(self) -> None:
        """Drop the repository's schema and everything in it (backends with schemas override)."""

    @contextlib.contextmanager
    def exclusive_lock(self, name: str, *, root: Path) -> Iterator[None]:
        """Hold an inter-process lock named ``name`` for the duration of the block.

        The default (one host): ``flock`` on ``root/.ccdflow/locks/run-<key>.lock``
        (`butler.registry._locks.flock_lock`, shared with the SQLAlchemy-free run writer); the
        kernel releases it when the process dies. The file holds the holder's host, pid and start time
        for the message. Backends shared between hosts override it (PostgreSQL: an advisory lock).

        Parameters
        ----------
        name : `str`
            The lock's name (an output RUN collection).
        root : `pathlib.Path`
            The repository root.

        Raises
        ------
        LockHeldError
            If another process holds it (``holder`` says who).
        """
        with flock_lock(name, root=root):
            yield

    def close(self) -> None:
        """Close the connection and dispose of the engine."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()
