"""The syntax tree of a query expression: small frozen dataclasses.

Every node carries ``pos``, the 0-based offset of its first character in the expression
(used for carets in error messages). ``pos`` is excluded from equality so trees can be compared
with hand-written ones in tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal as _Lit

__all__ = [
    "BinaryOp",
    "BindName",
    "FunctionCall",
    "Identifier",
    "IsIn",
    "Literal",
    "Node",
    "RangeLiteral",
    "TupleNode",
    "UnaryOp",
    "referenced_identifiers",
    "walk",
]

LiteralKind = _Lit["int", "float", "str", "uuid", "time"]


@dataclass(frozen=True)
class Node:
    """Base class of all expression nodes."""

    def children(self) -> tuple[Node, ...]:
        """Return the direct sub-nodes, in source order."""
        return ()


@dataclass(frozen=True)
class Literal(Node):
    """A literal value.

    Attributes
    ----------
    value : `int`, `float`, `str` or `uuid.UUID`
        The value; for ``kind == "time"`` an `int` of TAI nanoseconds since
        1970-01-01T00:00:00 TAI.
    kind : `str`
        ``"int"``, ``"float"``, ``"str"``, ``"uuid"`` or ``"time"``.
    """

    value: int | float | str | uuid.UUID
    kind: LiteralKind
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Identifier(Node):
    """A dimension (``exposure``), ``element.field`` or ``datasetType.field`` name."""

    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class BindName(Node):
    """A ``:name`` placeholder whose value comes from the ``bind`` mapping (name without ``:``)."""

    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class RangeLiteral(Node):
    """An inclusive integer range ``start..stop[:stride]`` (only inside ``IN (...)``)."""

    start: int
    stop: int
    stride: int = 1
    pos: int = field(default=0, compare=False)

    def __contains__(self, value: int) -> bool:
        return self.start <= value <= self.stop and (value - self.start) % self.stride == 0


@dataclass(frozen=True)
class TupleNode(Node):
    """A parenthesised 2-tuple ``(a, b)``: a time interval ``[a, b)``."""

    items: tuple[Node, Node]
    pos: int = field(default=0, compare=False)

    def children(self) -> tuple[Node, ...]:  # noqa: D102
        return self.items


@dataclass(frozen=True)
class UnaryOp(Node):
    """``NOT x``, ``-x`` or ``+x`` (``op`` is ``"NOT"``, ``"-"`` or ``"+"``)."""

    op: str
    operand: Node
    pos: int = field(default=0, compare=False)

    def children(self) -> tuple[Node, ...]:  # noqa: D102
        return (self.operand,)


@dataclass(frozen=True)
class BinaryOp(Node):
    """A binary operation.

    ``op`` is one of ``OR AND = != < <= > >= OVERLAPS + - * / %`` (keywords upper-cased;
    ``<>`` is normalised to ``!=``). ``op_pos`` is the offset of the operator itself.
    """

    op: str
    lhs: Node
    rhs: Node
    pos: int = field(default=0, compare=False)
    op_pos: int = field(default=0, compare=False)

    def children(self) -> tuple[Node, ...]:  # noqa: D102
        return (self.lhs, self.rhs)


@dataclass(frozen=True)
class IsIn(Node):
    """``lhs IN (values...)`` or, with ``negated``, ``lhs NOT IN (values...)``."""

    lhs: Node
    values: tuple[Node, ...]
    negated: bool = False
    pos: int = field(default=0, compare=False)

    def children(self) -> tuple[Node, ...]:  # noqa: D102
        return (self.lhs, *self.values)


@dataclass(frozen=True)
class FunctionCall(Node):
    """A function call; only ``GLOB(field, pattern)`` survives parsing (``UUID`` is folded)."""

    name: str
    args: tuple[Node, ...]
    pos: int = field(default=0, compare=False)

    def children(self) -> tuple[Node, ...]:  # noqa: D102
        return self.args


def walk(node: Node) -> Iterator[Node]:
    """Yield ``node`` and all its descendants, depth first, in source order.

    Iterative, so machine-generated expressions (thousands of ``OR`` terms) do not hit the
    recursion limit.
    """
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children()))


def referenced_identifiers(node: Node | None) -> list[str]:
    """Return the distinct identifiers of an expression tree, in order of first appearance.

    The registry can call this before compiling, to know which dimension elements and dataset
    types it has to join.

    Parameters
    ----------
    node : `Node` or `None`
        A tree from :func:`~butler.registry.queries.parse_expression` (``None`` = empty).

    Returns
    -------
    names : `list` [`str`]
        E.g. ``["instrument", "exposure.observation_type", "detector"]``.
    """
    if node is None:
        return []
    seen: dict[str, None] = {}
    for sub in walk(node):
        if isinstance(sub, Identifier):
            seen.setdefault(sub.name, None)
    return list(seen)
