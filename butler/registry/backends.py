"""Choose the `Database` backend of a registry URL (``sqlite:///...``, ``postgresql+psycopg://...``).

This module is the only place that maps URL schemes to backend classes; the backends
themselves (`butler.registry.sqlite`, `butler.registry.postgresql`) import only the abstract
`butler.registry.database.Database`. Importing it imports no SQLAlchemy: the backend module is
imported when a database is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import RepositoryError

if TYPE_CHECKING:
    from .database import Database

__all__ = ["make_database"]


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
        from .sqlite import SqliteDatabase

        return SqliteDatabase.from_url(
            url, writeable=writeable, busy_timeout=busy_timeout, must_exist=must_exist
        )
    if url.startswith("postgresql"):
        from .postgresql import PostgresqlDatabase

        return PostgresqlDatabase.from_url(url, schema=schema, writeable=writeable, create=create)
    raise RepositoryError(
        f"unsupported registry database URL {url!r}: use sqlite:///... or postgresql+psycopg://..."
    )
