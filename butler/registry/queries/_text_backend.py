"""A SQL-text backend of the expression compiler for the stdlib ``sqlite3`` module.

The CLI's read-only fast path (`butler.registry._sqlite_fast`) queries SQLite repositories
without importing SQLAlchemy (whose import alone costs ~0.3 s). The same compiler
(`compile_expression`) builds its clauses from `SqlText` columns: SQL text with ``?``
placeholders and a parameter tuple. User values only ever travel as parameters; the only text
put into SQL is the resolver's column names and the operators.

Values are converted like SQLAlchemy's SQLite types store them: UUIDs as 32 hex digits
(``sa.Uuid``), datetimes as ``YYYY-MM-DD HH:MM:SS.ffffff`` (``sa.DateTime``), booleans as 0/1.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from ._glob import glob_to_sqlite

__all__ = ["SQLITE_TEXT", "SQLiteTextBackend", "SqlText"]


def _param(value: Any, kind: str | None) -> Any:
    """Convert a Python value for a column of ``kind`` the way SQLAlchemy's SQLite types do."""
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    if kind == "uuid" and isinstance(value, str):
        return uuid.UUID(value).hex
    return value


class SqlText:
    """A SQL expression as text with ``?`` placeholders and their parameters, in order.

    Parameters
    ----------
    sql : `str`
        The SQL text (column names and operators only; values are ``?``).
    params : `tuple`
        The parameter values, in placeholder order.
    kind : `str`, optional
        Value kind of a column (``uuid``, ``datetime`` ...): how Python values compared with it
        are converted.
    """

    __slots__ = ("sql", "params", "kind")
    __hash__ = object.__hash__  # identity, like SQLAlchemy columns (== builds SQL)

    def __init__(self, sql: str, params: tuple = (), kind: str | None = None) -> None:
        self.sql = sql
        self.params = tuple(params)
        self.kind = kind

    def __repr__(self) -> str:
        return f"SqlText({self.sql!r}, {self.params!r})"

    def _operand(self, other: Any) -> tuple[str, tuple]:
        if isinstance(other, SqlText):
            return other.sql, other.params
        return "?", (_param(other, self.kind),)

    def _binary(self, op: str, other: Any, reflected: bool = False) -> SqlText:
        o_sql, o_params = self._operand(other)
        if reflected:
            return SqlText(f"({o_sql} {op} {self.sql})", o_params + self.params)
        return SqlText(f"({self.sql} {op} {o_sql})", self.params + o_params)

    # comparisons
    def __eq__(self, other: Any) -> SqlText:  # type: ignore[override]
        return self._binary("=", other)

    def __ne__(self, other: Any) -> SqlText:  # type: ignore[override]
        return self._binary("!=", other)

    def __lt__(self, other: Any) -> SqlText:
        return self._binary("<", other)

    def __le__(self, other: Any) -> SqlText:
        return self._binary("<=", other)

    def __gt__(self, other: Any) -> SqlText:
        return self._binary(">", other)

    def __ge__(self, other: Any) -> SqlText:
        return self._binary(">=", other)

    # arithmetic (``/`` is true division, as SQLAlchemy 2 renders it on SQLite)
    def __add__(self, other: Any) -> SqlText:
        return self._binary("+", other)

    def __radd__(self, other: Any) -> SqlText:
        return self._binary("+", other, True)

    def __sub__(self, other: Any) -> SqlText:
        return self._binary("-", other)

    def __rsub__(self, other: Any) -> SqlText:
        return self._binary("-", other, True)

    def __mul__(self, other: Any) -> SqlText:
        return self._binary("*", other)

    def __rmul__(self, other: Any) -> SqlText:
        return self._binary("*", other, True)

    def __truediv__(self, other: Any) -> SqlText:
        o_sql, o_params = self._operand(other)
        return SqlText(f"({self.sql} / ({o_sql} + 0.0))", self.params + o_params)

    def __rtruediv__(self, other: Any) -> SqlText:
        o_sql, o_params = self._operand(other)
        return SqlText(f"({o_sql} / ({self.sql} + 0.0))", o_params + self.params)

    def __mod__(self, other: Any) -> SqlText:
        return self._binary("%", other)

    def __rmod__(self, other: Any) -> SqlText:
        return self._binary("%", other, True)

    def __neg__(self) -> SqlText:
        return SqlText(f"(-{self.sql})", self.params, self.kind)

    # predicates
    def in_(self, values: Any) -> SqlText:
        """``self IN (?, ?, ...)``."""
        values = list(values)
        if not values:
            return SqlText("(1 = 0)")
        marks = ", ".join("?" * len(values))
        params = self.params + tuple(_param(v, self.kind) for v in values)
        return SqlText(f"({self.sql} IN ({marks}))", params)

    def between(self, low: Any, high: Any) -> SqlText:
        """``self BETWEEN ? AND ?``."""
        lo_sql, lo_params = self._operand(low)
        hi_sql, hi_params = self._operand(high)
        return SqlText(f"({self.sql} BETWEEN {lo_sql} AND {hi_sql})", self.params + lo_params + hi_params)


def _join(op: str, clauses: tuple[SqlText, ...]) -> SqlText:
    if len(clauses) == 1:
        return clauses[0]
    params: tuple = ()
    for c in clauses:
        params += c.params
    return SqlText("(" + f" {op} ".join(c.sql for c in clauses) + ")", params)


class SQLiteTextBackend:
    """Clause constructors producing `SqlText` for SQLite (no SQLAlchemy import)."""

    name = "sqlite-text"

    @staticmethod
    def true() -> SqlText:
        """Return ``1``."""
        return SqlText("1")

    @staticmethod
    def false() -> SqlText:
        """Return ``0``."""
        return SqlText("0")

    @staticmethod
    def and_(*clauses: SqlText) -> SqlText:
        """Return the conjunction."""
        return _join("AND", clauses) if clauses else SqlText("1")

    @staticmethod
    def or_(*clauses: SqlText) -> SqlText:
        """Return the disjunction."""
        return _join("OR", clauses) if clauses else SqlText("0")

    @staticmethod
    def not_(clause: SqlText) -> SqlText:
        """Return the negation."""
        return SqlText(f"(NOT {clause.sql})", clause.params)

    @staticmethod
    def literal(value: Any, like: Any = None) -> SqlText:
        """Return a parameter (converted like the column ``like`` when given)."""
        return SqlText("?", (_param(value, getattr(like, "kind", None)),), getattr(like, "kind", None))

    @staticmethod
    def true_divide(a: Any, b: Any) -> SqlText:
        """Return ``a / b`` as a REAL quotient; NULL where ``b`` is 0."""
        a_sql, a_params = (a.sql, a.params) if isinstance(a, SqlText) else ("?", (_param(a, None),))
        if isinstance(b, SqlText):
            b_sql, b_params = f"NULLIF({b.sql}, 0)", b.params
        else:
            b_sql, b_params = "?", (_param(b, None),)
        return SqlText(f"(({a_sql} + 0.0) / ({b_sql} + 0.0))", a_params + b_params)

    @staticmethod
    def nullif_zero(value: SqlText) -> SqlText:
        """Return ``NULLIF(value, 0)``."""
        return SqlText(f"NULLIF({value.sql}, 0)", value.params, value.kind)

    @staticmethod
    def glob(column: SqlText, pattern: str) -> SqlText:
        """Match a string column with a case-sensitive ``GLOB``."""
        return SqlText(f"({column.sql} GLOB ?)", column.params + (glob_to_sqlite(pattern),))

    @staticmethod
    def parens(clause: SqlText) -> SqlText:
        """Keep a clause in parentheses."""
        return SqlText(f"({clause.sql})", clause.params)

    @staticmethod
    def is_sql(value: Any) -> bool:
        """Tell whether ``value`` is a SQL expression (not a Python value)."""
        return isinstance(value, SqlText)


SQLITE_TEXT = SQLiteTextBackend()
