"""How the registry writes values into its rows, without SQLAlchemy: times and SQLite encodings.

The registry writes through SQLAlchemy, whose SQLite dialect turns Python values into what the
``sqlite3`` module stores: a `uuid.UUID` into its 32 hex digits (``CHAR(32)``), a naive UTC
`datetime.datetime` into ``YYYY-MM-DD HH:MM:SS.ffffff`` text, a `bool` into 0/1, a ``float``
column value into a `float`. `SQLITE_ENCODERS` holds those conversions by the column type names
of ``registry_schema/tables.yaml``; both writers on the raw ``sqlite3`` cursor use them: the
registry's precompiled statements (`butler.registry.sqlite.SqliteDatabase`) and the
SQLAlchemy-free run writer of ``pipetask run`` (`butler.registry._sqlite_run_writer`).
``tests/butler/test_sqlite_run_writer.py`` checks them against SQLAlchemy's bind processors.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["SQLITE_ENCODERS", "now_utc", "sqlite_datetime", "sqlite_uuid", "time_to_ns_now"]


def now_utc() -> datetime.datetime:
    """Return the current UTC time as a naive `datetime.datetime` (the registry's ``ingest_date``)."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def time_to_ns_now() -> int:
    """Return the current time in TAI ns (TAI-UTC taken as 37 s, exact since 2017)."""
    return time.time_ns() + 37_000_000_000


def sqlite_uuid(value: uuid.UUID) -> str:
    """Return a UUID as SQLAlchemy's ``Uuid`` stores it on SQLite: 32 lower-case hex digits."""
    return value.hex


def sqlite_datetime(value: datetime.datetime) -> str:
    """Return a naive datetime as SQLAlchemy's SQLite ``DATETIME`` stores it (microseconds always).

    Raises
    ------
    TypeError
        For anything but a `datetime.datetime` (as SQLAlchemy).
    """
    if not isinstance(value, datetime.datetime):
        raise TypeError(f"SQLite DateTime type only accepts Python datetime objects as input, not {value!r}")
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )


#: Column type name (``tables.yaml``) -> conversion of a non-NULL value for ``sqlite3``; the
#: types that are not here (strings, integers) are stored as given.
SQLITE_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "uuid": sqlite_uuid,
    "datetime": sqlite_datetime,
    "bool": int,
    "float": float,
}
