"""PostgreSQL backend: one schema (namespace) per repository, table locks for certification."""

from __future__ import annotations

import sqlalchemy as sa

from .._errors import RepositoryError
from .database import Database

__all__ = ["PostgresqlDatabase"]


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

    def lock_tables(self, *tables: sa.Table) -> None:
        """``LOCK TABLE ... IN EXCLUSIVE MODE`` (readers continue, other writers wait)."""
        prep = self.engine.dialect.identifier_preparer
        for t in tables:
            self.execute(sa.text(f"LOCK TABLE {prep.format_table(t)} IN EXCLUSIVE MODE"))

    def drop_schema(self) -> None:
        """Drop the repository's schema and everything in it (tests use a fresh schema each)."""
        if self.schema:
            with self.transaction() as conn:
                conn.execute(sa.schema.DropSchema(self.schema, cascade=True, if_exists=True))
