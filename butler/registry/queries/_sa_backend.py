"""The SQLAlchemy Core backend of the expression compiler (the registry's API, PostgreSQL).

The compiler builds clauses only through a backend object (`SQLAlchemyBackend` here,
`butler.registry.queries._text_backend.SQLiteTextBackend` for the CLI's ``sqlite3`` fast path)
plus Python operators on the columns the resolver hands it, so one compiler serves both.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement

from ._glob import glob_to_like, glob_to_regex, glob_to_sqlite

__all__ = ["SQLALCHEMY", "SQLAlchemyBackend"]


class _GlobMatch(ColumnElement):
    """``column GLOB pattern`` with a per-dialect, case-sensitive translation."""

    inherit_cache = False
    type = sa.Boolean()
    _is_implicitly_boolean = True  # a predicate: SQLAlchemy must not append "= 1" on SQLite

    def __init__(self, column: ColumnElement, pattern: str) -> None:
        self.column = column
        self.pattern = pattern

    @property
    def _from_objects(self) -> list[Any]:  # so SELECT infers the FROM of the column
        return self.column._from_objects

    def get_children(self, **kw: Any) -> tuple[Any, ...]:  # noqa: D102
        return (self.column,)


class _Parens(ColumnElement):
    """A parenthesised boolean clause that SQLAlchemy will not flatten into its parent."""

    inherit_cache = False
    type = sa.Boolean()
    _is_implicitly_boolean = True

    def __init__(self, clause: ColumnElement) -> None:
        self.clause = clause

    @property
    def _from_objects(self) -> list[Any]:
        return self.clause._from_objects

    def get_children(self, **kw: Any) -> tuple[Any, ...]:  # noqa: D102
        return (self.clause,)


@compiles(_Parens)
def _parens_default(element: _Parens, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.clause, **kw)})"


@compiles(_GlobMatch)
def _glob_default(element: _GlobMatch, compiler: Any, **kw: Any) -> str:
    col = compiler.process(element.column, **kw)
    pat = compiler.process(sa.literal(glob_to_like(element.pattern), sa.String()), **kw)
    return f"({col} LIKE {pat} ESCAPE '\\')"


@compiles(_GlobMatch, "sqlite")
def _glob_sqlite(element: _GlobMatch, compiler: Any, **kw: Any) -> str:
    col = compiler.process(element.column, **kw)
    pat = compiler.process(sa.literal(glob_to_sqlite(element.pattern), sa.String()), **kw)
    return f"({col} GLOB {pat})"


@compiles(_GlobMatch, "postgresql")
def _glob_postgresql(element: _GlobMatch, compiler: Any, **kw: Any) -> str:
    col = compiler.process(element.column, **kw)
    pat = compiler.process(sa.literal(glob_to_regex(element.pattern), sa.String()), **kw)
    return f"({col} ~ {pat})"


class SQLAlchemyBackend:
    """Clause constructors of SQLAlchemy Core, as the compiler calls them."""

    name = "sqlalchemy"

    @staticmethod
    def true() -> Any:
        """Return ``TRUE``."""
        return sa.true()

    @staticmethod
    def false() -> Any:
        """Return ``FALSE``."""
        return sa.false()

    @staticmethod
    def and_(*clauses: Any) -> Any:
        """Return the conjunction."""
        return sa.and_(*clauses)

    @staticmethod
    def or_(*clauses: Any) -> Any:
        """Return the disjunction."""
        return sa.or_(*clauses)

    @staticmethod
    def not_(clause: Any) -> Any:
        """Return the negation."""
        return sa.not_(clause)

    @staticmethod
    def literal(value: Any, like: Any = None) -> Any:
        """Return a bound parameter (typed like the column ``like`` when given, else by its value).

        Integers are ``BIGINT`` and floats ``DOUBLE PRECISION`` parameters: SQLAlchemy's default
        ``INTEGER`` cast would make PostgreSQL refuse 2**31 and above.
        """
        if like is not None:
            return sa.literal(value, like.type)
        if isinstance(value, bool):
            return sa.literal(value)
        if isinstance(value, int):
            return sa.literal(value, sa.BigInteger())
        if isinstance(value, float):
            return sa.literal(value, sa.Float())
        return sa.literal(value)

    @staticmethod
    def true_divide(a: Any, b: Any) -> Any:
        """Return ``a / b`` in double precision; NULL where ``b`` is 0 (as SQLite gives).

        PostgreSQL would raise for a zero divisor and divide integers as NUMERIC; both
        backends now compute the same IEEE quotient.
        """
        num = sa.cast(a, sa.Float()) if isinstance(a, sa.ColumnElement) else sa.literal(float(a), sa.Float())
        den: Any
        if isinstance(b, sa.ColumnElement):
            den = sa.func.nullif(sa.cast(b, sa.Float()), 0.0, type_=sa.Float())
        else:
            den = sa.literal(float(b), sa.Float())
        return num / den

    @staticmethod
    def nullif_zero(value: Any) -> Any:
        """Return ``NULLIF(value, 0)`` (a zero divisor gives NULL instead of an error)."""
        return sa.func.nullif(value, 0, type_=value.type)

    @staticmethod
    def glob(column: Any, pattern: str) -> Any:
        """Match a string column with a case-sensitive glob."""
        return _GlobMatch(column, pattern)

    @staticmethod
    def parens(clause: Any) -> Any:
        """Keep a clause in parentheses."""
        return _Parens(clause)

    @staticmethod
    def is_sql(value: Any) -> bool:
        """Tell whether ``value`` is a SQL expression (not a Python value)."""
        return isinstance(value, sa.ColumnElement)


SQLALCHEMY = SQLAlchemyBackend()
