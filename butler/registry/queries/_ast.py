"""The syntax tree of a query expression: small immutable node classes.

Every node carries ``pos``, the 0-based offset of its first character in the expression
(used for carets in error messages). ``pos`` (and ``op_pos``) are excluded from equality and
hashing so trees can be compared with hand-written ones in tests.

The nodes behave as frozen dataclasses (same constructor, ``repr``, equality, hash and
`dataclasses.FrozenInstanceError` on assignment) but are plain ``__slots__`` classes over one
generic base: a dataclass compiles six methods per class with ``exec`` when it is created,
which made importing this module cost ~15 ms of every command that parses a ``--where``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from typing import Any, ClassVar
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

_POSITIONS = frozenset({"pos", "op_pos"})
_NO_DEFAULT = object()


class Node:
    """Base class of all expression nodes: immutable, compared and hashed by their fields but positions.

    A subclass lists its fields in ``__slots__`` (constructor order) and their defaults in
    ``_defaults``.
    """

    __slots__: tuple[str, ...] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self.__slots__
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments, got {len(args)}")
        for name, value in zip(fields, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
            object.__setattr__(self, name, value)
        for name in fields[len(args) :]:
            value = kwargs.pop(name, _NO_DEFAULT)
            if value is _NO_DEFAULT:
                value = self._defaults.get(name, _NO_DEFAULT)
                if value is _NO_DEFAULT:
                    raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
            object.__setattr__(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got an unexpected argument {next(iter(kwargs))!r}")

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self.__slots__ if f not in _POSITIONS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"{type(self).__qualname__}({args})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(getattr(self, f) for f in self.__slots__))

    def children(self) -> tuple[Node, ...]:
        """Return the direct sub-nodes, in source order."""
        return ()


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

    __slots__ = ("value", "kind", "pos")
    _defaults: ClassVar[dict[str, Any]] = {"pos": 0}

    value: int | float | str | uuid.UUID
    kind: LiteralKind
    pos: int


class Identifier(Node):
    """A dimension (``exposure``), ``element.field`` or ``datasetType.field`` name."""

    __slots__ = ("name", "pos")
    _defaults: ClassVar[dict[str, Any]] = {"pos": 0}

    name: str
    pos: int


class BindName(Node):
    """A ``:name`` placeholder whose value comes from the ``bind`` mapping (name without ``:``)."""

    __slots__ = ("name", "pos")
    _defaults: ClassVar[dict[str, Any]] = {"pos": 0}

    name: str
    pos: int


class RangeLiteral(Node):
    """An inclusive integer range ``start..stop[:stride]`` (only inside ``IN (...)``)."""

    __slots__ = ("start", "stop", "stride", "pos")
    _defaults: ClassVar[dict[str, Any]] = {"stride": 1, "pos": 0}

    start: int
    stop: int
    stride: int
    pos: int

    def __contains__(self, value: int) -> bool:
        return self.start <= value <= self.stop and (value - self.start) % self.stride == 0


class TupleNode(Node):
    """A parenthesised 2-tuple ``(a, b)``: a time interval ``[a, b)``."""

    __slots__ = ("items", "pos")
    _defaults: ClassVar[dict[str, Any]] = {"pos": 0}

    items: tuple[Node, Node]
    pos: int

    def children(self) -> tuple[Node, ...]:  # noqa: D102
        return self.items


class UnaryOp(Node):
    """``NOT x``, ``-x`` or ``+x`` (``op`` is ``"NOT"``, ``"-"`` or ``"+"``)."""

    __slots__ = ("op", "operand", "pos")
    _defaults: ClassVar[dict[str, Any]] = {"pos": 0}

    op: str
    operand: Node
    pos: int

    def children(self) -> tuple[Node, ...]:  # noqa: D102
        return (self.operand,)


class BinaryOp(Node):
    """A binary operation.

    ``op`` is one of ``OR AND = != < <= > >= OVERLAPS + - * / %`` (keywords upper-cased;
    ``<>`` is normalised to ``!=``). ``op_pos`` is the offset of the operator itself.
    """

    __slots__ = ("op", "lhs", "rhs", "pos", "op_pos")
    _defaults: ClassVar[dict[str, Any]] = {"pos": 0, "op_pos": 0}

    op: str
    lhs: Node
    rhs: Node
    pos: int
    op_pos: int

    def children(self) -> tuple[Node, ...]:  # noqa: D102
        return (self.lhs, self.rhs)


class IsIn(Node):
    """``lhs IN (values...)`` or, with ``negated``, ``lhs NOT IN (values...)``."""

    __slots__ = ("lhs", "values", "negated", "pos")
    _defaults: ClassVar[dict[str, Any]] = {"negated": False, "pos": 0}

    lhs: Node
    values: tuple[Node, ...]
    negated: bool
    pos: int

    def children(self) -> tuple[Node, ...]:  # noqa: D102
        return (self.lhs, *self.values)


class FunctionCall(Node):
    """A function call; only ``GLOB(field, pattern)`` survives parsing (``UUID`` is folded)."""

    __slots__ = ("name", "args", "pos")
    _defaults: ClassVar[dict[str, Any]] = {"pos": 0}

    name: str
    args: tuple[Node, ...]
    pos: int

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
