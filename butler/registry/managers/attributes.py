"""Repository attributes: the ``butler_attributes`` table (schema and dimension versions, creation time)."""

from __future__ import annotations

import sqlalchemy as sa

from ..._errors import RepositoryError, RepositoryReadOnlyError
from ...dimensions import DimensionUniverse
from ..database import Database
from ..schema import schema_version
from .collections import now_utc

__all__ = ["AttributesManager"]


class AttributesManager:
    """Owner of the ``butler_attributes`` table.

    Parameters
    ----------
    db : `Database`
        The opened database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._table = db.registry_schema.tables["butler_attributes"]

    @staticmethod
    def create_tables(db: Database) -> None:
        """Create every registry table in an empty database.

        Raises
        ------
        RepositoryError
            If the database already holds a registry.
        """
        if "butler_attributes" in db.table_names():
            raise RepositoryError(
                f"the database {db.engine.url!r} (schema {db.schema}) already holds a registry; "
                "use another database/schema or remove it first"
            )
        db.create_tables()

    def initialize(self, universe: DimensionUniverse) -> None:
        """Record the schema and dimension versions of a new registry (inside a transaction)."""
        attrs = {
            "schema_version": str(schema_version()),
            "dimensions_version": str(universe.version),
            "dimensions_namespace": universe.namespace,
            "created": now_utc().isoformat(),
        }
        self.db.execute(sa.insert(self._table), [{"name": k, "value": v} for k, v in attrs.items()])

    def check(self, universe: DimensionUniverse) -> None:
        """Check that the registry's versions are the ones this code reads.

        Raises
        ------
        RepositoryError
            If the database holds no registry, or one with an incompatible schema version.
        """
        try:
            rows = self.db.fetchall(sa.select(self._table))
        except sa.exc.DBAPIError as exc:
            readonly = _unwritable_sqlite_directory(self.db.engine.url.database, exc)
            if readonly is not None:
                raise readonly from None
            raise RepositoryError(
                f"the database {self.db.engine.url!r} holds no ccdflow registry (or cannot be read): "
                f"{exc.orig}"
            ) from None
        attrs = {r.name: r.value for r in rows}
        want = {"schema_version": str(schema_version()), "dimensions_version": str(universe.version)}
        for k, v in want.items():
            if attrs.get(k) != v:
                raise RepositoryError(
                    f"the repository's registry has {k} {attrs.get(k)!r} but this ccdflow needs {v!r}; "
                    "open it with the ccdflow version that created it, or migrate it"
                )

    def set(self, name: str, value: str) -> None:
        """Change one attribute (inside a transaction; tests use it to fake another schema version)."""
        t = self._table
        self.db.execute(sa.update(t).where(t.c.name == name).values(value=value))


def _unwritable_sqlite_directory(database: str | None, exc: Exception) -> RepositoryReadOnlyError | None:
    """Return the error for an SQLite registry whose directory cannot be written, else `None`.

    A writeable SQLite registry (WAL journal) needs to create ``NAME-wal`` and ``NAME-shm`` beside
    the file; in a read-only directory that fails with "unable to open database file".
    """
    import os
    import tempfile

    if not database or "unable to open database file" not in str(getattr(exc, "orig", exc)):
        return None
    directory = os.path.dirname(os.path.abspath(database))
    if not os.path.exists(database):
        return None
    try:
        fd, name = tempfile.mkstemp(prefix=".ccdflow-write-probe.", dir=directory)
    except OSError as err:
        return RepositoryReadOnlyError(
            f"the repository directory {directory} is read-only ({err.strerror}): the registry "
            f"{os.path.basename(database)} (WAL journal) cannot be opened there for writing; make the "
            "directory writable, or use a repository you can write to (reading works: the butler "
            "query commands, and Butler(REPO, writeable=False), open it read-only)"
        )
    os.close(fd)
    os.unlink(name)
    return None
