"""PostgreSQL backend: one schema (namespace) per repository, table locks for certification.

`PostgresqlDatabase.exclusive_lock` is a session-level advisory lock (``pg_try_advisory_lock``)
on a dedicated connection, keyed by a 64-bit hash of (database/schema, name): the server
releases it when the connection ends, so a driver killed with ``kill -9`` or a lost node never
leaves a stale lock, and drivers on different hosts see each other's locks.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .._errors import InvalidQueryError, LockHeldError, RepositoryError, storage_error
from .database import Database, lock_holder_info, lock_key

__all__ = ["PostgresqlDatabase"]

_APP_PREFIX = "ccdflow-lock "
_APP_NAME_MAX = 63  # PostgreSQL's NAMEDATALEN - 1 (bytes)


def _truncate_utf8(text: str, limit: int = _APP_NAME_MAX) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes without splitting a character."""
    return text.encode()[:limit].decode(errors="ignore")


def _describe_holder(row: Any) -> str:
    """Name the lock holder from its ``(application_name, backend_start)`` (`None`: unknown)."""
    if row is None:
        return "another driver"
    parts = row[0][len(_APP_PREFIX) :].split(" ", 2)
    pid = parts[1] if len(parts) > 1 else "?"
    host = parts[2] if len(parts) > 2 else "?"
    start = row[1]
    if isinstance(start, datetime.datetime):
        if start.tzinfo is not None:
            start = start.astimezone(datetime.UTC)
        since = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        since = "?"
    return f"the driver {host}:{pid} (started {since})"


class PostgresqlDatabase(Database):
    """`Database` on a PostgreSQL server (driver psycopg 3, the ``postgres`` extra)."""

    dialect_name = "postgresql"

    @classmethod
    def from_url(
        cls, url: str, *, schema: str | None = None, writeable: bool = True, create: bool = False
    ) -> PostgresqlDatabase:
        """Open a PostgreSQL database; ``create=True`` creates ``schema`` if it is missing.

        Raises
        ------
        RepositoryError
            If the driver is missing or the server cannot be reached.
        """
        try:
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            db = cls(engine, schema=schema, writeable=writeable)
            if create and schema:
                with db.transaction() as conn:
                    conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
            else:
                db.connection
        except ImportError as exc:
            raise RepositoryError(
                f"cannot use {url!r}: the PostgreSQL driver is missing; pip install "
                f"'ccdflow[postgres]' ({exc})"
            ) from None
        except sa.exc.OperationalError as exc:
            raise RepositoryError(f"cannot connect to the registry database {url!r}: {exc.orig}") from None
        return db

    def translate_error(self, exc: sa.exc.DBAPIError) -> Exception:
        """Turn a value PostgreSQL refuses in a query (overflow, division by zero) into one line.

        The query compiler refuses such expressions before they run (on every backend alike);
        this is the safety net that keeps SQL text out of the message.
        """
        if isinstance(exc, sa.exc.DataError) and str(exc.statement or "").lstrip().upper().startswith(
            ("SELECT", "WITH")
        ):
            diag = getattr(exc.orig, "diag", None)
            reason = getattr(diag, "message_primary", None) or str(exc.orig).splitlines()[0]
            return InvalidQueryError(
                f"PostgreSQL could not evaluate the query: {reason}; simplify the --where expression"
            )
        # A full disk on the server or a read-only connection: one line (butler.storage_error).
        return storage_error(exc) or exc

    def lock_tables(self, *tables: sa.Table) -> None:
        """``LOCK TABLE ... IN EXCLUSIVE MODE`` (readers continue, other writers wait)."""
        prep = self.engine.dialect.identifier_preparer
        for t in tables:
            self.execute(sa.text(f"LOCK TABLE {prep.format_table(t)} IN EXCLUSIVE MODE"))

    @contextlib.contextmanager
    def exclusive_lock(self, name: str, *, root: Path) -> Iterator[None]:
        """Hold the advisory lock ``name`` of this database/schema (see the module docstring).

        ``root`` is unused: the lock lives in the server, shared by every host.

        Raises
        ------
        LockHeldError
            If another session holds it (``holder`` names the driver from its ``application_name``).
        """
        namespace = f"{self.engine.url.database}/{self.schema or 'public'}"
        key = lock_key(namespace, name)
        info = lock_holder_info(name)
        # application_name (at most 63 bytes) lets the refused driver say who holds the lock
        # (pg_stat_activity): the key and the pid first, the host last so a long host name is
        # what gets cut. The start time is the session's backend_start (the lock is taken as
        # soon as the session opens), so it is never truncated.
        app_name = _truncate_utf8(
            f"{_APP_PREFIX}{key & 0xFFFFFFFFFFFFFFFF:016x} {info['pid']} {info['host']}"
        )
        conn = self.engine.connect()
        try:
            conn.execute(sa.text("SELECT set_config('application_name', :n, false)"), {"n": app_name})
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            conn.commit()
            if not got:
                holder = conn.execute(
                    sa.text(
                        "SELECT a.application_name, a.backend_start FROM pg_locks l "
                        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                        "AND l.granted AND a.application_name LIKE :pat LIMIT 1"
                    ),
                    {"pat": f"{_APP_PREFIX}{key & 0xFFFFFFFFFFFFFFFF:016x} %"},
                ).first()
                conn.commit()
                raise LockHeldError(_describe_holder(holder))
            try:
                yield
            finally:
                try:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
                except Exception:  # noqa: BLE001 - closing the session releases it anyway
                    pass
        finally:
            conn.close()

    def drop_schema(self) -> None:
        """Drop the repository's schema and everything in it (tests use a fresh schema each)."""
        if self.schema:
            with self.transaction() as conn:
                conn.execute(sa.schema.DropSchema(self.schema, cascade=True, if_exists=True))
