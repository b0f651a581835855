"""The registry's database backends, chosen from the URL (``sqlite:///...``, ``postgresql+psycopg://...``).

This module is the only place that maps URL schemes to backends. A `DatabaseBackend` is the light
description of one kind of database: `DatabaseBackend.open` makes its `Database` (the backend
module, and SQLAlchemy, are imported only then), and `DatabaseBackend.open_read_only_fast` opens
its read-only fast path for the ``butler`` CLI's listing and dataset queries, which must not
import SQLAlchemy (about 0.3 s of a 0.4 s command). SQLite has one (``sqlite3`` on the file,
`butler.registry._sqlite_fast`); PostgreSQL has none. `DatabaseBackend.open_read_only_butler`
opens the read-only butler ``pipetask qgraph`` builds graphs with (SQLite:
`butler.registry._sqlite_read_only`), `DatabaseBackend.open_run_writer` the writer ``pipetask run``
registers a new output RUN with (SQLite: `butler.registry._sqlite_run_writer`). Importing this module imports no SQLAlchemy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from .._errors import FastPathUnavailableError, RepositoryError

if TYPE_CHECKING:
    from ._sqlite_fast import SqliteFastRegistry
    from ._sqlite_read_only import SqliteReadOnlyButler
    from ._sqlite_run_writer import SqliteRunWriter
    from .database import Database

__all__ = [
    "BACKENDS",
    "DatabaseBackend",
    "FastPathUnavailableError",
    "OpenOptions",
    "PostgresqlBackend",
    "SqliteBackend",
    "backend_for_url",
    "fast_path_enabled",
    "make_database",
    "open_read_only_butler",
    "open_read_only_fast",
    "open_run_writer",
]


class OpenOptions(NamedTuple):
    """How to open a registry database (see `make_database`); each backend uses those that apply."""

    schema: str | None
    writeable: bool
    busy_timeout: float
    create: bool
    must_exist: bool


class DatabaseBackend:
    """One kind of registry database: how to open it, and its read-only fast path (if any)."""

    #: URL scheme prefix (``sqlite``, ``postgresql``).
    scheme: ClassVar[str] = ""

    def matches(self, url: str) -> bool:
        """Whether a registry URL names this backend."""
        return url.startswith(self.scheme)

    def open(self, url: str, options: OpenOptions) -> Database:
        """Open the database at ``url`` (`make_database` describes the options)."""
        raise NotImplementedError

    def open_read_only_fast(self, root: Path, url: str) -> SqliteFastRegistry:
        """Open the read-only fast path of the repository at ``root`` (registry ``url``).

        Raises
        ------
        FastPathUnavailableError
            When this backend has no fast path or cannot take this repository through it; the
            caller then opens the repository with `butler.Butler`, which reports any error.
        """
        raise FastPathUnavailableError(f"no read-only fast path for {self.scheme} registries")

    def open_read_only_butler(self, root: Path, url: str) -> SqliteReadOnlyButler:
        """Open the read-only butler of the repository at ``root`` (what graph building reads).

        Raises
        ------
        FastPathUnavailableError
            When this backend has none or cannot take this repository; the caller then opens
            the repository with `butler.Butler`.
        """
        raise FastPathUnavailableError(f"no read-only butler for {self.scheme} registries")

    def open_run_writer(self, root: Path, url: str, config: dict[str, Any]) -> SqliteRunWriter:
        """Open the SQLAlchemy-free writer of ``pipetask run`` (a new output RUN) on the repository.

        Raises
        ------
        FastPathUnavailableError
            When this backend has none or cannot take this repository; the caller then opens
            the repository with `butler.Butler`.
        """
        raise FastPathUnavailableError(f"no run writer for {self.scheme} registries")


class SqliteBackend(DatabaseBackend):
    """SQLite files (`butler.registry.sqlite.SqliteDatabase`); fast path with ``sqlite3``."""

    scheme = "sqlite"

    def open(self, url: str, options: OpenOptions) -> Database:
        """Open an SQLite registry (``schema`` and ``create`` do not apply)."""
        from .sqlite import SqliteDatabase

        return SqliteDatabase.from_url(
            url, writeable=options.writeable, busy_timeout=options.busy_timeout, must_exist=options.must_exist
        )

    def open_read_only_fast(self, root: Path, url: str) -> SqliteFastRegistry:
        """Open the registry file read-only with ``sqlite3`` (`butler.registry._sqlite_fast`)."""
        from ._sqlite_fast import SqliteFastRegistry

        return SqliteFastRegistry(root, url)

    def open_read_only_butler(self, root: Path, url: str) -> SqliteReadOnlyButler:
        """Open a `butler.registry._sqlite_read_only.SqliteReadOnlyButler` on the registry file."""
        from ._sqlite_read_only import SqliteReadOnlyButler

        return SqliteReadOnlyButler(self.open_read_only_fast(root, url))

    def open_run_writer(self, root: Path, url: str, config: dict[str, Any]) -> SqliteRunWriter:
        """Open a `butler.registry._sqlite_run_writer.SqliteRunWriter` on the registry file."""
        from ._sqlite_run_writer import SqliteRunWriter

        return SqliteRunWriter(root, url, config)


class PostgresqlBackend(DatabaseBackend):
    """PostgreSQL servers (`butler.registry.postgresql.PostgresqlDatabase`); no fast path."""

    scheme = "postgresql"

    def open(self, url: str, options: OpenOptions) -> Database:
        """Open a PostgreSQL registry (``busy_timeout`` and ``must_exist`` do not apply)."""
        from .postgresql import PostgresqlDatabase

        return PostgresqlDatabase.from_url(
            url, schema=options.schema, writeable=options.writeable, create=options.create
        )


#: The backends, tried in order.
BACKENDS: tuple[DatabaseBackend, ...] = (SqliteBackend(), PostgresqlBackend())


def backend_for_url(url: str) -> DatabaseBackend:
    """Return the backend of a registry URL.

    Raises
    ------
    RepositoryError
        If the URL names an unsupported backend.
    """
    for backend in BACKENDS:
        if backend.matches(url):
            return backend
    raise RepositoryError(
        f"unsupported registry database URL {url!r}: use sqlite:///... or postgresql+psycopg://..."
    )


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
    options = OpenOptions(
        schema=schema, writeable=writeable, busy_timeout=busy_timeout, create=create, must_exist=must_exist
    )
    return backend_for_url(url).open(url, options)


def fast_path_enabled() -> bool:
    """Whether the read-only fast path may be tried (``BUTLER_CLI_FAST`` is not ``0``)."""
    return os.environ.get("BUTLER_CLI_FAST", "1") not in ("0", "false", "no", "")


def _backend_of(repo: str | os.PathLike[str]) -> tuple[DatabaseBackend, Path, str, dict[str, Any]]:
    """Return the backend, root, registry URL and ``butler.yaml`` of a repository.

    Raises `FastPathUnavailableError` when there is none.
    """
    from .._config import load_config, repo_root

    try:
        root = repo_root(repo)
        config = load_config(root)
        url = str(config["registry"].get("db", ""))
        backend = backend_for_url(url)
    except Exception as exc:  # noqa: BLE001 - the registry path reports it
        raise FastPathUnavailableError(str(exc)) from None
    return backend, Path(root), url, config


def open_read_only_butler(repo: str | os.PathLike[str]) -> SqliteReadOnlyButler:
    """Open a repository's read-only butler for quantum-graph building, without SQLAlchemy.

    The result answers the registry reads of `pipeline.graph.builder` with the registry's results
    (`butler.registry._sqlite_read_only`); its ``unavailable`` attribute tells whether a call had
    to be refused; ``close()`` closes it.

    Raises
    ------
    FastPathUnavailableError
        When the repository must be opened with `butler.Butler` (no repository, a backend without
        a read-only path, another schema version ...); the `butler.Butler` then reports any error.
    """
    backend, root, url, _ = _backend_of(repo)
    return backend.open_read_only_butler(root, url)


def open_read_only_fast(repo: str | os.PathLike[str]) -> SqliteFastRegistry:
    """Open a repository's registry through its backend's read-only fast path.

    The result lists collections and dataset types and answers ``query_datasets`` with the
    registry's results; ``close()`` closes it.

    Raises
    ------
    FastPathUnavailableError
        When the repository must be opened with `butler.Butler` (no repository, a backend without
        a fast path, another schema version ...); the `butler.Butler` then reports any error.
    """
    backend, root, url, _ = _backend_of(repo)
    return backend.open_read_only_fast(root, url)


def open_run_writer(repo: str | os.PathLike[str]) -> SqliteRunWriter:
    """Open a repository's SQLAlchemy-free writer of ``pipetask run`` (`butler.registry._sqlite_run_writer`).

    The writer registers dataset types, the output RUN and CHAINED collections, the run-level
    init-outputs and the outputs of quanta as the registry would; ``close()`` closes it. The
    caller uses it only for a new output RUN, and decides before anything is written.

    Raises
    ------
    FastPathUnavailableError
        When the repository must be opened with `butler.Butler` (``BUTLER_CLI_FAST=0``, a backend
        without a run writer, another schema version ...).
    """
    if not fast_path_enabled():
        raise FastPathUnavailableError("BUTLER_CLI_FAST=0")
    backend, root, url, config = _backend_of(repo)
    return backend.open_run_writer(root, url, config)
