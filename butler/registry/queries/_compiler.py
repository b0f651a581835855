r"""Type-check a query-expression tree and compile it to a SQLAlchemy Core boolean clause.

Every value from the user — literals in the expression and values from ``bind`` — becomes a
bound parameter; no user text is ever pasted into SQL. Identifiers are turned into columns by
a :class:`~._resolver.ColumnResolver` supplied by the registry.

Semantics
---------
- Numbers compare with ``int``/``float`` columns, strings with ``str`` columns, ``UUID('...')``
  (or a string holding a UUID) with ``uuid`` columns; anything else is a type mismatch.
- Time values are integer TAI ns (see :mod:`._time`); a bare number compared with a time or
  timespan is an MJD in TAI.
- ``a OVERLAPS b``: each side may be a timespan column, a time (a point, ``[t, t + 1 ns)``) or
  an interval ``(begin, end)``; half-open overlap ``a.begin < b.end AND b.begin < a.end``.
- ``timespan < t`` means the span ends at or before ``t``; ``timespan > t`` means it begins
  after ``t`` (LSST semantics); ``timespan = other`` compares both bounds.
- ``IN (...)`` accepts values, bind names (a list/tuple/set bind value is expanded) and
  inclusive ranges ``start..stop[:stride]`` (integer columns only).
- ``GLOB(field, 'pat*')`` is case-sensitive on every backend: SQLite ``GLOB``, PostgreSQL
  ``~`` with an anchored regular expression, ``LIKE ... ESCAPE '\\'`` elsewhere.
"""

from __future__ import annotations

import datetime
import math
import numbers
import re
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._ast import (
    BinaryOp,
    BindName,
    FunctionCall,
    Identifier,
    IsIn,
    Literal,
    Node,
    RangeLiteral,
    TupleNode,
    UnaryOp,
    walk,
)
from ._errors import ExpressionError, caret_display
from ._parser import parse_expression
from ._resolver import ColumnResolver, ResolvedColumn
from ._time import mjd_tai_to_ns, tai_ns_to_utc_datetime

ColumnElement = Any  # a SQL expression of the backend in use (SQLAlchemy, or SQL text)

__all__ = ["compile_expression"]

_NUMERIC = ("int", "float")
_COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
_ARITHMETIC = ("+", "-", "*", "/", "%")


@dataclass
class _Value:
    """A typed intermediate value.

    ``kind`` is one of int, float, str, uuid, time, datetime, timespan, bool, list. ``sql`` is
    a ColumnElement, a Python value (when ``literal``), a ``(begin, end)`` pair for timespans
    (each element SQL or ``int``), or a list of `_Value` for ``list``.
    """

    kind: str
    sql: Any
    literal: bool
    pos: int
    text: str  # how to name it in messages
    raw: Any = None  # the original datetime.datetime of a bind value (for datetime columns)
    ident: str | None = None  # the identifier of a column value (for its bounds)
    bounds: tuple[Any, Any, float] | None = None  # (min, max, smallest nonzero |x|) of numbers

    def describe(self) -> str:
        article = "an" if self.kind == "int" else "a"
        what = "value" if self.literal else "column"
        return f"{self.text} ({article} {self.kind} {what})"


def _node_text(node: Node, depth: int = 0) -> str:
    """Render a node briefly for messages (sub-expressions deeper than 3 levels are elided)."""
    if depth > 3:
        return "..."
    if isinstance(node, Literal):
        if node.kind == "str":
            return repr(node.value)
        if node.kind == "uuid":
            return f"UUID('{node.value}')"
        if node.kind == "time":
            return "time literal"
        return str(node.value)
    if isinstance(node, Identifier):
        return node.name
    if isinstance(node, BindName):
        return f":{node.name}"
    if isinstance(node, BinaryOp):
        return f"{_node_text(node.lhs, depth + 1)} {node.op} {_node_text(node.rhs, depth + 1)}"
    if isinstance(node, UnaryOp):
        return f"{node.op} {_node_text(node.operand, depth + 1)}"
    if isinstance(node, FunctionCall):
        return f"{node.name}(...)"
    if isinstance(node, TupleNode):
        return "(..., ...)"
    return type(node).__name__


class _Compiler:
    def __init__(self, text: str, resolver: ColumnResolver, bind: Mapping[str, Any], sql: Any = None) -> None:
        self.sql = sql if sql is not None else sql_backend(resolver)
        self.text = text
        self.resolver = resolver
        self.bind = bind
        self._resolved: dict[str, ResolvedColumn] = {}
        self.used_bounds = False  # the clause depends on the data's value ranges: do not cache it

    # --- errors ----------------------------------------------------------------------------
    def error(self, reason: str, pos: int) -> ExpressionError:
        return ExpressionError(reason, self.text, pos)

    # --- leaves ------------------------------------------------------------------------------
    def _resolve(self, name: str, pos: int) -> ResolvedColumn:
        cached = self._resolved.get(name)
        if cached is not None:
            return cached
        try:
            resolved = self._resolve_uncached(name)
        except ExpressionError:
            raise
        except Exception as exc:
            if hasattr(exc, "add_note"):
                exc.add_note(f"in the query expression:\n{caret_display(self.text, pos)}")
                if "." not in name:
                    exc.add_note(
                        f"(if {name} is meant as a value rather than a dimension, quote it: '{name}')"
                    )
            raise
        if not isinstance(resolved, ResolvedColumn):
            raise TypeError(f"ColumnResolver.resolve({name!r}) returned {resolved!r}, not a ResolvedColumn")
        self._resolved[name] = resolved
        return resolved

    def _resolve_uncached(self, name: str) -> ResolvedColumn:
        head, dot, tail = name.rpartition(".")
        if dot and tail in ("begin", "end") and "." in head:
            # element.timespan.begin / .end: one bound of a timespan
            try:
                span = self.resolver.resolve(head)
            except Exception:
                span = None
            if span is not None and span.kind == "timespan":
                assert span.timespan is not None
                column = span.timespan[0] if tail == "begin" else span.timespan[1]
                return ResolvedColumn("time", span.element, column=column)
        return self.resolver.resolve(name)

    def identifier(self, node: Identifier) -> _Value:
        rc = self._resolve(node.name, node.pos)
        if rc.kind == "timespan":
            return _Value("timespan", rc.timespan, False, node.pos, node.name)
        return _Value(rc.kind, rc.column, False, node.pos, node.name, ident=node.name)

    def bind_value(self, node: BindName) -> _Value:
        if node.name not in self.bind:
            known = ", ".join(f":{k}" for k in sorted(self.bind)) or "none"
            raise self.error(
                f"unknown bind name ':{node.name}'; pass it in bind={{'{node.name}': ...}} "
                f"(bound names: {known})",
                node.pos,
            )
        return self.python_value(self.bind[node.name], node.pos, f":{node.name}")

    def python_value(self, value: Any, pos: int, text: str) -> _Value:
        if isinstance(value, bool):
            return _Value("int", int(value), True, pos, text)
        if isinstance(value, numbers.Integral):
            return self.checked(_Value("int", int(value), True, pos, text))
        if isinstance(value, numbers.Real):
            return self.checked(_Value("float", float(value), True, pos, text))
        if isinstance(value, str):
            if "\x00" in value:
                raise self.error(f"bind value {text} contains a NUL character, which no database stores", pos)
            if any("\ud800" <= c <= "\udfff" for c in value):
                raise self.error(
                    f"bind value {text} contains half of a UTF-16 pair (not valid Unicode text), which no "
                    "database stores",
                    pos,
                )
            return _Value("str", value, True, pos, text)
        if isinstance(value, uuid.UUID):
            return _Value("uuid", value, True, pos, text)
        if isinstance(value, datetime.datetime):
            # Naive datetimes are TAI, like time literals; aware ones are converted via astropy.
            if value.tzinfo is not None:
                from astropy.time import Time

                from ...timespan import time_to_ns

                utc = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
                return _Value("time", time_to_ns(Time(utc, scale="utc")), True, pos, text, raw=utc)
            delta = value - datetime.datetime(1970, 1, 1)
            ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
            return _Value("time", ns, True, pos, text, raw=value)
        time_mod = sys.modules.get("astropy.time")
        if time_mod is not None and isinstance(value, time_mod.Time):
            from ...timespan import time_to_ns

            try:
                return _Value("time", time_to_ns(value), True, pos, text)
            except TypeError:
                raise self.error(f"bind value {text} must be a scalar astropy Time", pos) from None
        if hasattr(value, "begin_ns") and hasattr(value, "end_ns"):  # butler.timespan.Timespan
            return _Value("timespan", (int(value.begin_ns), int(value.end_ns)), True, pos, text)
        if isinstance(value, (list, tuple, set, frozenset, range)):
            items = [self.python_value(v, pos, text) for v in value]
            return _Value("list", items, True, pos, text)
        np_mod = sys.modules.get("numpy")
        if np_mod is not None and isinstance(value, (np_mod.ndarray, np_mod.generic)):
            return self.python_value(value.tolist(), pos, text)
        raise self.error(
            f"bind value {text} has unsupported type {type(value).__name__}; use int, float, str, "
            "uuid.UUID, astropy Time, Timespan, or a list of those",
            pos,
        )

    def literal(self, node: Literal) -> _Value:
        return self.checked(_Value(node.kind, node.value, True, node.pos, _node_text(node)))

    def checked(self, v: _Value, what: str = "") -> _Value:
        """Refuse a number no backend stores: an integer outside 64 bits, a float that is not finite."""
        if v.kind == "int" and not _INT64_MIN <= v.sql <= _INT64_MAX:
            raise self.error(
                f"integer {what}{v.sql} is outside the 64-bit range the database stores "
                f"(-2**63 to 2**63 - 1); use a smaller number",
                v.pos,
            )
        if v.kind == "float" and not math.isfinite(v.sql):
            raise self.error(
                f"number {what or v.text + ' '}is not a finite double (the largest is about "
                f"1.8e308); use a smaller number",
                v.pos,
            )
        return v

    # --- dispatch ----------------------------------------------------------------------------
    def value(self, node: Node) -> _Value:
        if isinstance(node, Literal):
            return self.literal(node)
        if isinstance(node, Identifier):
            return self.identifier(node)
        if isinstance(node, BindName):
            return self.bind_value(node)
        if isinstance(node, BinaryOp):
            if node.op in ("AND", "OR"):
                return self.boolean(node)
            if node.op in _COMPARISONS:
                return self.compare(node)
            if node.op == "OVERLAPS":
                return self.overlaps(node)
            return self.arithmetic(node)
        if isinstance(node, UnaryOp):
            return self.unary(node)
        if isinstance(node, IsIn):
            return self.is_in(node)
        if isinstance(node, FunctionCall):
            return self.glob(node)
        if isinstance(node, TupleNode):
            begin, end = (self.time_point(item) for item in node.items)
            literal = _begin_end_literal(begin, end)
            if literal and end < begin:
                raise self.error("interval (begin, end) ends before it begins; swap the two times", node.pos)
            return _Value("timespan", (begin, end), literal, node.pos, "(..., ...)")
        if isinstance(node, RangeLiteral):
            raise self.error("a range (1..5) is only allowed inside IN (...)", node.pos)
        raise self.error(f"unsupported expression node {type(node).__name__}", getattr(node, "pos", 0))

    def condition(self, node: Node) -> ColumnElement:
        v = self.value(node)
        if v.kind != "bool":
            raise self.error(
                f"expected a condition (e.g. exposure.exposure_time > 10), got {v.describe()}", v.pos
            )
        if v.literal:
            return self.sql.true() if v.sql else self.sql.false()
        return v.sql

    # --- boolean -----------------------------------------------------------------------------
    def boolean(self, node: BinaryOp) -> _Value:
        # Flatten chains of the same operator into one and_/or_ call (cheaper, flatter SQL).
        operands: list[Node] = []
        stack: list[Node] = [node]
        while stack:
            sub = stack.pop()
            if isinstance(sub, BinaryOp) and sub.op == node.op:
                stack.append(sub.rhs)
                stack.append(sub.lhs)
            else:
                operands.append(sub)
        clauses = [self.condition(sub) for sub in operands]
        combine = self.sql.and_ if node.op == "AND" else self.sql.or_
        sql = _balanced(self.sql, combine, clauses)
        return _Value("bool", sql, False, node.pos, _node_text(node))

    def unary(self, node: UnaryOp) -> _Value:
        if node.op == "NOT":
            negated = self.sql.not_(self.condition(node.operand))
            return _Value("bool", negated, False, node.pos, _node_text(node))
        v = self.value(node.operand)
        if v.kind not in _NUMERIC:
            raise self.error(f"unary {node.op!r} needs a number, got {v.describe()}", node.pos)
        if node.op == "+":
            return v
        text = f"-{v.text}"
        if v.literal:
            return self.checked(_Value(v.kind, -v.sql, True, node.pos, text), f"{text} = ")
        bounds = self.bounds(v)
        if bounds is not None:
            bounds = self.check_bounds(v.kind, (-bounds[1], -bounds[0], bounds[2]), text, node.pos, [v])
        return _Value(v.kind, -v.sql, False, node.pos, text, bounds=bounds)

    # --- arithmetic --------------------------------------------------------------------------
    def arithmetic(self, node: BinaryOp) -> _Value:
        lhs, rhs = self.value(node.lhs), self.value(node.rhs)
        for v in (lhs, rhs):
            if v.kind not in _NUMERIC:
                raise self.error(f"operator {node.op!r} needs numbers, got {v.describe()}", v.pos)
            if node.op == "%" and v.kind != "int":
                raise self.error(f"operator '%' needs integers, got {v.describe()}", v.pos)
        kind = "int" if lhs.kind == rhs.kind == "int" and node.op != "/" else "float"
        text = f"{lhs.text} {node.op} {rhs.text}"
        if node.op in ("/", "%") and rhs.literal and rhs.sql == 0:
            raise self.error("division by zero", rhs.pos)
        if lhs.literal and rhs.literal:
            folded = _Value(kind, _fold(node.op, lhs.sql, rhs.sql), True, node.pos, text)
            return self.checked(folded, f"{text} = ")
        bounds = self.arithmetic_bounds(node, lhs, rhs, kind, text)
        # Python numbers become parameters typed by their own value (a float next to an integer
        # column must not be cast to BIGINT on PostgreSQL).
        a = lhs.sql if not lhs.literal else self.sql.literal(lhs.sql)
        b = rhs.sql if not rhs.literal else self.sql.literal(rhs.sql)
        if node.op == "/":
            sql = self.sql.true_divide(a, b)
        elif node.op == "%":
            # x % 0 is NULL on every backend (PostgreSQL would raise): the row does not match
            sql = a % (b if rhs.literal else self.sql.nullif_zero(b))
        else:
            sql = _ARITH_SQL[node.op](a, b)
        return _Value(kind, sql, False, node.pos, text, bounds=bounds)

    # --- value ranges (overflow) ---------------------------------------------------------------
    def bounds(self, v: _Value) -> tuple[Any, Any, float] | None:
        """Return ``(min, max, smallest nonzero |x|)`` of a numeric value, `None` if unknown.

        Columns ask the resolver (``numeric_bounds``: the values stored in the repository);
        resolvers without it (tests' fakes) give `None` and no overflow check is made.
        """
        if v.bounds is not None:
            return v.bounds
        if v.literal and v.kind in _NUMERIC:
            x = v.sql
            return (x, x, abs(x) if x else math.inf)
        lookup = getattr(self.resolver, "numeric_bounds", None)
        if v.ident is None or lookup is None:
            return None
        found = lookup(v.ident)
        self.used_bounds = True
        if found is None:
            return None
        lo, hi, tiny = found
        if lo is None or hi is None:  # no rows: no value at all
            return (0, 0, math.inf)
        return (lo, hi, math.inf if tiny is None else tiny)

    def arithmetic_bounds(
        self, node: BinaryOp, lhs: _Value, rhs: _Value, kind: str, text: str
    ) -> tuple[Any, Any, float] | None:
        """Bounds of ``lhs op rhs`` (interval arithmetic); raise if the result can overflow.

        SQLite turns an integer overflow into a float and a float overflow into infinity, where
        PostgreSQL raises an error: an expression that can overflow for the values stored in the
        repository is refused on every backend instead, so both give the same answer.
        """
        a, b = self.bounds(lhs), self.bounds(rhs)
        if a is None or b is None:
            return None
        op = node.op
        if kind == "float":
            a = (float(a[0]), float(a[1]), float(a[2]))
            b = (float(b[0]), float(b[1]), float(b[2]))
        lo: Any
        hi: Any
        if op in ("+", "-"):
            if op == "+":
                lo, hi = a[0] + b[0], a[1] + b[1]
            else:
                lo, hi = a[0] - b[1], a[1] - b[0]
            if kind == "int":
                tiny: float = 1
            elif lo > 0:
                tiny = lo
            elif hi < 0:
                tiny = -hi
            else:
                tiny = math.inf if lo == hi == 0 else 0.0
        elif op == "*":
            corners = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
            lo, hi = min(corners), max(corners)
            tiny = a[2] * b[2]
        elif op == "/":
            top = max(abs(a[0]), abs(a[1]))
            if b[2] == math.inf or top == 0:  # the divisor is always 0 (NULL) or the dividend is
                return (0.0, 0.0, math.inf)
            if b[2] == 0:
                raise self.error(
                    f"{text} cannot be bounded: {rhs.text} can come arbitrarily close to 0 (without "
                    "being 0), and the quotient can then overflow; divide by a column or a number",
                    node.op_pos,
                )
            big = top / b[2]
            lo, hi = -big, big
            tiny = a[2] / max(abs(b[0]), abs(b[1]))
        else:  # "%": integers only; |a % b| < |b| and the sign follows a
            limit = max(abs(b[0]), abs(b[1])) - 1
            if limit < 0:
                return (0, 0, math.inf)
            lo, hi, tiny = max(-limit, min(a[0], 0)), min(limit, max(a[1], 0)), 1
        return self.check_bounds(kind, (lo, hi, tiny), text, node.op_pos, [lhs, rhs])

    def check_bounds(
        self, kind: str, bounds: tuple[Any, Any, float], text: str, pos: int, operands: list[_Value]
    ) -> tuple[Any, Any, float]:
        """Raise the overflow error if ``bounds`` leave what the result's type holds."""
        lo, hi, _ = bounds
        if kind == "int":
            ok = _INT64_MIN <= lo and hi <= _INT64_MAX
            limit = "the 64-bit integer range (-2**63 to 2**63 - 1)"
        else:
            ok = math.isfinite(lo) and math.isfinite(hi) and -_FLOAT_MAX <= lo and hi <= _FLOAT_MAX
            limit = "the range of a double (about 1.8e308)"
        if ok:
            return bounds
        ranges = "; ".join(
            f"{v.text} goes from {_short(self.bounds(v)[0])} to {_short(self.bounds(v)[1])}"  # type: ignore[index]
            for v in operands
            if not v.literal and self.bounds(v) is not None
        )
        raise self.error(
            f"arithmetic overflow: {text} can leave {limit} for the values in this repository"
            f"{' (' + ranges + ')' if ranges else ''}; use smaller numbers",
            pos,
        )

    # --- comparisons -------------------------------------------------------------------------
    def coerce_pair(self, lhs: _Value, rhs: _Value, op_text: str) -> tuple[_Value, _Value]:
        """Bring two scalar values to comparable kinds, or raise a type-mismatch error."""
        if lhs.kind in _NUMERIC and rhs.kind in _NUMERIC:
            return lhs, rhs
        if lhs.kind == rhs.kind and lhs.kind in ("str", "uuid", "time", "datetime"):
            return lhs, rhs
        # uuid vs string literal holding a UUID
        for a, b, swap in ((lhs, rhs, False), (rhs, lhs, True)):
            if a.kind == "uuid" and b.kind == "str" and b.literal:
                try:
                    nb = _Value("uuid", uuid.UUID(b.sql), True, b.pos, b.text)
                except ValueError:
                    raise self.error(
                        f"type mismatch: {a.text} is a UUID but {b.text} is not a valid UUID", b.pos
                    ) from None
                return (nb, a) if swap else (a, nb)
            # time vs bare number = MJD TAI
            if a.kind in ("time", "timespan", "datetime") and b.kind in _NUMERIC and b.literal:
                nb = _Value("time", mjd_tai_to_ns(b.sql), True, b.pos, f"MJD {b.text}")
                if a.kind == "datetime":
                    nb = _Value("datetime", tai_ns_to_utc_datetime(nb.sql), True, b.pos, nb.text)
                return (nb, a) if swap else (a, nb)
            # datetime column (naive UTC) vs time literal/bind; a datetime bind is used as given
            if a.kind == "datetime" and b.kind == "time" and b.literal:
                value = b.raw if b.raw is not None else tai_ns_to_utc_datetime(b.sql)
                nb = _Value("datetime", value, True, b.pos, b.text)
                return (nb, a) if swap else (a, nb)
        culprit = rhs if rhs.literal or not lhs.literal else lhs
        hint = ""
        if {lhs.kind, rhs.kind} == {"str", "int"} or {lhs.kind, rhs.kind} == {"str", "float"}:
            hint = "; quote strings ('...') and leave numbers bare"
        elif "timespan" in (lhs.kind, rhs.kind):
            hint = "; use OVERLAPS, or < / > with a time"
        raise self.error(
            f"type mismatch: cannot compare {lhs.describe()} {op_text} {rhs.describe()}{hint}",
            culprit.pos,
        )

    def compare(self, node: BinaryOp) -> _Value:
        lhs, rhs = self.value(node.lhs), self.value(node.rhs)
        for v in (lhs, rhs):
            if v.kind in ("bool", "list"):
                raise self.error(
                    f"cannot use {v.describe()} in a comparison; expected a column or a value", v.pos
                )
        text = f"{lhs.text} {node.op} {rhs.text}"
        if lhs.kind == "timespan" or rhs.kind == "timespan":
            return _Value("bool", self.compare_timespan(node, lhs, rhs), False, node.pos, text)
        lhs, rhs = self.coerce_pair(lhs, rhs, node.op)
        if lhs.literal and rhs.literal:
            return _Value("bool", _py_compare(node.op, lhs.sql, rhs.sql), True, node.pos, text)
        # A value is typed like the column it meets only when their kinds agree: 1.5 compared
        # with an integer column stays 1.5 (PostgreSQL would cast it to BIGINT, i.e. 2).
        same = lhs.kind == rhs.kind
        a = lhs.sql if not lhs.literal else self.sql.literal(lhs.sql, rhs.sql if same else None)
        b = rhs.sql if not rhs.literal or same else self.sql.literal(rhs.sql)
        return _Value("bool", _sql_compare(node.op, a, b), False, node.pos, text)

    def compare_timespan(self, node: BinaryOp, lhs: _Value, rhs: _Value) -> ColumnElement:
        op = node.op
        if lhs.kind != "timespan":  # put the timespan on the left, mirroring the operator
            lhs, rhs = rhs, lhs
            op = {"<": ">", ">": "<", "=": "=", "!=": "!=", "<=": ">=", ">=": "<="}[op]
        if rhs.kind in _NUMERIC and rhs.literal:
            rhs = _Value("time", mjd_tai_to_ns(rhs.sql), True, rhs.pos, f"MJD {rhs.text}")
        lb, le = lhs.sql
        if rhs.kind == "timespan":
            rb, re_ = rhs.sql
            if op == "<":
                return self._bool(le <= rb)
            if op == ">":
                return self._bool(lb >= re_)
            if op == "=":
                return self.sql.and_(self._bool(lb == rb), self._bool(le == re_))
            if op == "!=":
                return self.sql.or_(self._bool(lb != rb), self._bool(le != re_))
        elif rhs.kind == "time":
            t = rhs.sql
            if op == "<":
                return self._bool(le <= t)
            if op == ">":
                return self._bool(lb > t)
        else:
            raise self.error(
                f"type mismatch: cannot compare {lhs.describe()} {node.op} {rhs.describe()}; "
                f"a timespan compares with a time, a number (MJD TAI) or another timespan{_time_hint(rhs)}",
                rhs.pos,
            )
        raise self.error(
            f"operator {node.op!r} is not defined for timespans; use OVERLAPS, or '<' / '>'", node.op_pos
        )

    def _bool(self, v: Any) -> Any:
        if isinstance(v, bool):
            return self.sql.true() if v else self.sql.false()
        return v

    def _lt(self, a: Any, b: Any) -> Any:
        a_sql, b_sql = self.sql.is_sql(a), self.sql.is_sql(b)
        if not a_sql and not b_sql:
            return a < b
        if not a_sql:
            return b > a
        return a < b

    # --- OVERLAPS ----------------------------------------------------------------------------
    def time_point(self, node: Node) -> Any:
        """Return a time-valued node as int TAI ns or a SQL column (inside an interval tuple)."""
        v = self.value(node)
        if v.kind == "time":
            return v.sql
        if v.kind in _NUMERIC and v.literal:
            return mjd_tai_to_ns(v.sql)
        raise self.error(
            f"an interval (begin, end) needs two times (T'...' or an MJD number), got {v.describe()}", v.pos
        )

    def interval(self, v: _Value) -> tuple[Any, Any]:
        if v.kind == "timespan":
            return v.sql
        if v.kind == "time":
            return (v.sql, v.sql + 1)
        if v.kind in _NUMERIC and v.literal:
            t = mjd_tai_to_ns(v.sql)
            return (t, t + 1)
        if v.kind == "list" and len(v.sql) == 2:
            return tuple(self.interval_bound(item) for item in v.sql)  # type: ignore[return-value]
        raise self.error(
            f"OVERLAPS needs a timespan, a time or a (begin, end) interval on each side, "
            f"got {v.describe()}{_time_hint(v)}",
            v.pos,
        )

    def interval_bound(self, v: _Value) -> int:
        if v.kind == "time":
            return v.sql
        if v.kind in _NUMERIC:
            return mjd_tai_to_ns(v.sql)
        raise self.error(f"an interval bound must be a time, got {v.describe()}", v.pos)

    def overlaps(self, node: BinaryOp) -> _Value:
        lhs, rhs = self.value(node.lhs), self.value(node.rhs)
        a_begin, a_end = self.interval(lhs)
        b_begin, b_end = self.interval(rhs)
        first = self._lt(a_begin, b_end)
        second = self._lt(b_begin, a_end)
        text = f"{lhs.text} OVERLAPS {rhs.text}"
        if isinstance(first, bool) and isinstance(second, bool):
            return _Value("bool", first and second, True, node.pos, text)
        clause = self.sql.and_(self._bool(first), self._bool(second))
        return _Value("bool", clause, False, node.pos, text)

    # --- IN ----------------------------------------------------------------------------------
    def is_in(self, node: IsIn) -> _Value:
        lhs = self.value(node.lhs)
        if lhs.kind in ("bool", "list", "timespan"):
            raise self.error(f"IN needs a column or value on its left, got {lhs.describe()}", lhs.pos)
        literals: list[Any] = []
        clauses: list[Any] = []
        lhs_sql: ColumnElement = lhs.sql if not lhs.literal else None  # None: never used then

        def add(v: _Value) -> None:
            if v.kind == "list":
                for item in v.sql:
                    add(item)
                return
            if v.kind in ("bool", "timespan"):
                raise self.error(f"IN (...) takes values, got {v.describe()}", v.pos)
            a, b = self.coerce_pair(lhs, v, "IN")
            if b.literal and a.kind == "int" and b.kind == "float":
                # an integer equals a float only when the float is integral (kept exact: never
                # bound as BIGINT, which PostgreSQL would round)
                if b.sql.is_integer() and _INT64_MIN <= b.sql <= _INT64_MAX:
                    literals.append(int(b.sql))
                return
            if b.literal:
                literals.append(b.sql)
            else:
                left = a.sql if not a.literal else self.sql.literal(a.sql, b.sql)
                clauses.append(left == b.sql)

        for item in node.values:
            if isinstance(item, RangeLiteral):
                if lhs.kind != "int":
                    raise self.error(
                        f"a range needs an integer on the left of IN, got {lhs.describe()}", item.pos
                    )
                if lhs.literal:
                    clauses.append(self.sql.true() if lhs.sql in item else self.sql.false())
                    continue
                count = (item.stop - item.start) // item.stride + 1
                if count <= _EXPAND_RANGE:  # small ranges join the IN list (one parameter)
                    literals.extend(range(item.start, item.stop + 1, item.stride))
                    continue
                rng = lhs_sql.between(item.start, item.stop)
                if item.stride > 1:
                    rng = self.sql.and_(rng, ((lhs_sql - item.start) % item.stride) == 0)
                clauses.append(rng)
            else:
                fast = self.fast_list(lhs, item)
                if fast is not None:
                    literals.extend(fast)
                else:
                    add(self.value(item))
        if literals:
            if lhs.literal:
                clauses.append(self.sql.true() if lhs.sql in literals else self.sql.false())
            elif len(literals) == 1:
                clauses.append(lhs_sql == literals[0])
            else:
                clauses.append(lhs_sql.in_(literals))
        if not clauses:  # e.g. an empty list bound to :name
            sql: Any = self.sql.false()
        else:
            sql = clauses[0] if len(clauses) == 1 else self.sql.or_(*clauses)
        if node.negated:
            sql = self.sql.not_(sql)
        return _Value("bool", sql, False, node.pos, "IN (...)")

    def fast_list(self, lhs: _Value, item: Node) -> list[Any] | None:
        """Return a homogeneous bound list's values directly (big ``IN (:ids)``), else `None`."""
        if not isinstance(item, BindName) or lhs.literal:
            return None
        raw = self.bind.get(item.name)
        if not isinstance(raw, (list, tuple, set, frozenset, range)):
            return None
        values = list(raw)
        if lhs.kind == "int":
            ok = all(type(v) is int and _INT64_MIN <= v <= _INT64_MAX for v in values)
        elif lhs.kind == "float":
            ok = all(type(v) is int or type(v) is float for v in values)
        elif lhs.kind == "str":
            ok = all(type(v) is str and "\x00" not in v and v.isprintable() for v in values)
        elif lhs.kind == "uuid":
            ok = all(type(v) is uuid.UUID for v in values)
        else:
            ok = False
        return values if ok else None

    # --- GLOB --------------------------------------------------------------------------------
    def glob(self, node: FunctionCall) -> _Value:
        field, pattern = (self.value(arg) for arg in node.args)
        if field.kind != "str" or field.literal:
            raise self.error(f"GLOB needs a string column first, got {field.describe()}", field.pos)
        if pattern.kind != "str" or not pattern.literal:
            raise self.error(f"GLOB needs a string pattern second, got {pattern.describe()}", pattern.pos)
        match = self.sql.glob(field.sql, pattern.sql)
        return _Value("bool", match, False, node.pos, f"GLOB({field.text}, ...)")


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_FLOAT_MAX = sys.float_info.max


def _short(x: Any) -> str:
    """Format a bound for a message."""
    return f"{x:.6g}" if isinstance(x, float) else str(x)


_CHUNK = 64
_EXPAND_RANGE = 100  # ranges with at most this many values become IN-list values

_ARITH_SQL = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,  # SQLAlchemy 2: true division on every backend
    "%": lambda a, b: a % b,
}


def _fold(op: str, a: int | float, b: int | float) -> int | float:
    """Evaluate constant arithmetic with SQL semantics (true ``/``, truncating ``%``)."""
    if op == "/":
        return a / b
    if op == "%":
        remainder = abs(a) % abs(b)  # SQLite and PostgreSQL: the sign follows the dividend
        return remainder if a >= 0 else -remainder
    return _ARITH_SQL[op](a, b)


_LOOKS_LIKE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _time_hint(v: _Value) -> str:
    """Suggest the time-literal syntax when a string literal looks like a date."""
    if v.kind == "str" and v.literal and _LOOKS_LIKE_DATE.match(v.sql):
        return f"; write times as T'{v.sql}'"
    return ""


def _balanced(sql: Any, combine: Any, clauses: list[Any]) -> Any:
    """Combine many clauses as a tree of parenthesised groups of at most `_CHUNK` terms.

    SQLite parses ``a OR b OR c ...`` into a left-deep tree and refuses more than 1000 levels;
    grouping keeps the depth logarithmic for machine-generated expressions.
    """
    while len(clauses) > _CHUNK:
        clauses = [sql.parens(combine(*clauses[i : i + _CHUNK])) for i in range(0, len(clauses), _CHUNK)]
    return combine(*clauses)


def _begin_end_literal(begin: Any, end: Any) -> bool:
    return isinstance(begin, int) and isinstance(end, int)


def sql_backend(resolver: Any) -> Any:
    """Return the SQL backend a resolver's columns belong to (its ``sql_backend``, else SQLAlchemy)."""
    backend = getattr(resolver, "sql_backend", None)
    if backend is None:
        from ._sa_backend import SQLALCHEMY

        backend = SQLALCHEMY
    return backend


def _py_compare(op: str, a: Any, b: Any) -> bool:
    return {
        "=": a == b,
        "!=": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op]


def _sql_compare(op: str, a: Any, b: Any) -> Any:
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def compile_expression(
    expression: str | Node | None,
    resolver: ColumnResolver,
    *,
    bind: Mapping[str, Any] | None = None,
    text: str | None = None,
) -> ColumnElement:
    """Compile a query expression into a SQLAlchemy Core boolean clause.

    Parameters
    ----------
    expression : `str`, `Node` or `None`
        The expression text, or a tree from :func:`parse_expression`. Blank or `None` means
        no constraint.
    resolver : `ColumnResolver`
        Turns identifiers into columns (implemented by the registry). Called once per distinct
        identifier, in order of first appearance.
    bind : `Mapping` [`str`, `Any`], optional
        Values for ``:name`` placeholders: int, float, str, `uuid.UUID`, astropy `Time`,
        naive `datetime.datetime` (taken as TAI), `butler.Timespan`, or a list/tuple/set of
        those (expanded inside ``IN (...)``; a 2-sequence of times is an interval for
        ``OVERLAPS``).
    text : `str`, optional
        The source text when ``expression`` is a tree (for the caret in error messages).

    Returns
    -------
    clause : `sqlalchemy.sql.ColumnElement` [`bool`] (or the resolver's backend's clause)
        A boolean clause using only bound parameters for user values; ``sqlalchemy.true()``
        for a blank expression. A resolver with a ``sql_backend`` attribute (e.g.
        `butler.registry.queries.SQLITE_TEXT`) gets that backend's clauses instead: SQL text
        with ``?`` placeholders, for the stdlib ``sqlite3`` fast path of the CLI.

    Raises
    ------
    ExpressionError
        Syntax errors (see :func:`parse_expression`), unknown bind names, type mismatches
        (string vs number column, OVERLAPS on a non-time, range on a non-integer, a value
        where a condition is expected), division by zero in constants.
    Exception
        Whatever the resolver raises for an unknown identifier, with a note showing the caret.

    Notes
    -----
    Semantics are described in this module's docstring; grammar and LSST behaviour in
    middleware-reference §8.
    """
    sql = sql_backend(resolver)
    if expression is None:
        return sql.true()
    if isinstance(expression, str):
        text = expression
        tree = parse_expression(expression)
        if tree is None:
            return sql.true()
    else:
        tree = expression
        if text is None:
            text = _node_text(tree)
    bind = bind or {}
    compiler = _Compiler(text, resolver, bind, sql)
    # Resolve every identifier first (in order of appearance), then reuse a previous result
    # when the same tree is compiled again against the same columns and bind values.
    for sub in walk(tree):
        if isinstance(sub, Identifier):
            compiler._resolve(sub.name, sub.pos)
    key = _cache_key(sql.name, tree, text, compiler._resolved, bind)
    if key is not None:
        with _CLAUSE_CACHE_LOCK:
            cached = _CLAUSE_CACHE.get(key)
            if cached is not None:
                _CLAUSE_CACHE.move_to_end(key)
                return cached
    try:
        clause = compiler.condition(tree)
    except RecursionError:
        raise ExpressionError(
            "expression is nested too deeply; use IN (...) instead of long chains, fewer parentheses",
            text,
            0,
        ) from None
    if key is not None and not compiler.used_bounds:
        with _CLAUSE_CACHE_LOCK:
            _CLAUSE_CACHE[key] = clause
            if len(_CLAUSE_CACHE) > _CLAUSE_CACHE_SIZE:
                _CLAUSE_CACHE.popitem(last=False)
    return clause


_CLAUSE_CACHE: OrderedDict[tuple, ColumnElement] = OrderedDict()
_CLAUSE_CACHE_SIZE = 256
_CLAUSE_CACHE_LOCK = threading.Lock()


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple, set, frozenset, range)):
        items = tuple(_freeze(v) for v in value)
        return (
            type(value).__name__,
            tuple(sorted(items, key=repr)) if isinstance(value, (set, frozenset)) else items,
        )
    if isinstance(value, (str, int, float, uuid.UUID, datetime.datetime)) or hasattr(value, "begin_ns"):
        return (type(value).__name__, value)
    raise TypeError("not cacheable")


def _cache_key(
    backend: str, tree: Node, text: str, resolved: Mapping[str, ResolvedColumn], bind: Mapping[str, Any]
) -> tuple | None:
    """Key for the compiled-clause cache; `None` when a bind value is not safely hashable.

    The backend's name is part of the key: an expression without identifiers (``1 = 1``)
    compiles to a SQLAlchemy clause for one backend and to SQL text for the other. Resolved
    columns enter the key by identity (a registry that builds fresh aliases per query simply
    never hits the cache).
    """
    try:
        columns = tuple(
            (
                name,
                rc.kind,
                id(rc.column),
                id(rc.timespan[0]) if rc.timespan else 0,
                id(rc.timespan[1]) if rc.timespan else 0,
            )
            for name, rc in resolved.items()
        )
        frozen_bind = tuple(sorted((name, _freeze(value)) for name, value in bind.items()))
        key = (backend, tree, text, columns, frozen_bind)
        hash(key)
    except (TypeError, RecursionError):  # unhashable bind value, or a very deep tree
        return None
    # keep the columns alive while cached so ids cannot be reused by new objects
    return key + (tuple(resolved.values()),)
