"""`butler.storage_error`: a full disk or a read-only path, whatever layer noticed it, is one line."""

from __future__ import annotations

import errno
import sqlite3

import sqlalchemy as sa

from butler import DatastoreError, RepositoryReadOnlyError, StorageFullError
from butler._errors import storage_error


class _PgError(Exception):
    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def test_os_errors() -> None:
    tmp = "/r/u/.x.0123456789ab.tmp.npy"
    full = storage_error(OSError(errno.ENOSPC, "No space left on device", tmp))
    assert isinstance(full, StorageFullError) and tmp in str(full)
    assert isinstance(storage_error(OSError(errno.EDQUOT, "Disk quota exceeded", "/r/x")), StorageFullError)
    ro = storage_error(PermissionError(errno.EACCES, "Permission denied", "/r/u"))
    assert isinstance(ro, RepositoryReadOnlyError) and "/r/u cannot be written" in str(ro)
    rofs = storage_error(OSError(errno.EROFS, "Read-only file system", "/r/u"))
    assert "read-only file system" in str(rofs)
    assert storage_error(FileNotFoundError(errno.ENOENT, "No such file", "/r/x")) is None
    assert storage_error(ValueError("something else")) is None


def test_wrapped_errors_are_found_through_the_cause_chain() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/r/u/f")
        except OSError as exc:
            raise DatastoreError("cannot write f") from exc
    except DatastoreError as outer:
        assert isinstance(storage_error(outer), StorageFullError)


def test_database_errors_carry_no_sql() -> None:
    stmt = "INSERT INTO dataset (id, run_id) VALUES (?, ?)"
    full = storage_error(
        sa.exc.OperationalError(stmt, (1, 2), sqlite3.OperationalError("database or disk is full")),
        "/r/registry.sqlite3")
    assert isinstance(full, StorageFullError) and "/r/registry.sqlite3" in str(full)
    assert "INSERT" not in str(full)
    readonly = sqlite3.OperationalError("attempt to write a readonly database")
    ro = storage_error(sa.exc.OperationalError(stmt, (1, 2), readonly))
    assert isinstance(ro, RepositoryReadOnlyError) and "INSERT" not in str(ro)
    pg_full = storage_error(sa.exc.OperationalError(stmt, {}, _PgError("could not extend file", "53100")))
    assert isinstance(pg_full, StorageFullError) and "PostgreSQL" in str(pg_full)
    pg_ro = storage_error(sa.exc.InternalError(stmt, {}, _PgError("read-only transaction", "25006")))
    assert isinstance(pg_ro, RepositoryReadOnlyError)
    other = sa.exc.OperationalError(stmt, {}, sqlite3.OperationalError("no such table: x"))
    assert storage_error(other) is None
