"""SQLite backend: WAL journal, busy timeout, foreign keys, ``BEGIN IMMEDIATE`` only for writes.

Unlike daf_butler (rollback journal, every transaction ``BEGIN IMMEDIATE``, middleware-reference
§1.5 and §9.4), readers never wait for a writer (WAL) and only write transactions take the lock.
A writer that cannot get the lock within the busy timeout gets `RepositoryLockedError`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from .._errors import RepositoryLockedError
from .database import Database

__all__ = ["SqliteDatabase"]


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

    def __init__(self, engine: sa.Engine, *, writeable: bool = True, busy_timeout: float = 60.0) -> None:
        self.busy_timeout = busy_timeout
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
            conn.exec_driver_sql("BEGIN IMMEDIATE" if self._write else "BEGIN")

    @classmethod
    def from_url(cls, url: str, *, writeable: bool = True, busy_timeout: float = 60.0) -> SqliteDatabase:
        """Open an SQLite database from a ``sqlite:///path`` URL."""
        engine = sa.create_engine(
            url, connect_args={"timeout": busy_timeout, "check_same_thread": False}, poolclass=sa.pool.NullPool
        )
        return cls(engine, writeable=writeable, busy_timeout=busy_timeout)

    def translate_error(self, exc: sa.exc.DBAPIError) -> Exception:
        """Turn "database is locked" into `RepositoryLockedError`."""
        msg = str(exc.orig)
        if isinstance(exc, sa.exc.OperationalError) and ("locked" in msg or "busy" in msg):
            return RepositoryLockedError(
                f"the registry {self.engine.url.database} is locked by another writer and stayed locked for "
                f"{self.busy_timeout:g} s; wait for the other process to finish (or raise registry.busy_timeout "
                "in butler.yaml) and retry"
            )
        return exc
