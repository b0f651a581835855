"""The butler data query language: ``--where`` / ``-d`` expressions → SQLAlchemy Core.

Usage by the registry::

    from butler.registry.queries import parse_expression, compile_expression

    tree = parse_expression(where)                    # Node | None, cached
    names = referenced_identifiers(tree)             # decide which tables to join
    clause = compile_expression(tree, resolver, bind=bind, text=where)

``resolver`` implements :class:`ColumnResolver` (identifier → :class:`ResolvedColumn`).
Every user value ends up in a bound parameter; nothing is pasted into SQL text. Bad
expressions raise :class:`ExpressionError` (a `ValueError`) showing a caret at the position.
Importing this package does not import lark; the parser is built on first use.
"""

from __future__ import annotations

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
    referenced_identifiers,
)
from ._compiler import compile_expression
from ._errors import ExpressionError
from ._parser import MAX_NESTING, nesting_error, parse_expression
from ._resolver import (
    DIMENSION_KIND,
    TIMESPAN_MAX,
    TIMESPAN_MIN,
    ColumnKind,
    ColumnResolver,
    DimensionColumnResolver,
    ResolvedColumn,
)
from ._text_backend import SQLITE_TEXT, SqlText

__all__ = [
    "BinaryOp",
    "BindName",
    "ColumnKind",
    "ColumnResolver",
    "DIMENSION_KIND",
    "DimensionColumnResolver",
    "ExpressionError",
    "FunctionCall",
    "Identifier",
    "IsIn",
    "Literal",
    "MAX_NESTING",
    "Node",
    "RangeLiteral",
    "ResolvedColumn",
    "SQLITE_TEXT",
    "SqlText",
    "TIMESPAN_MAX",
    "TIMESPAN_MIN",
    "TupleNode",
    "UnaryOp",
    "compile_expression",
    "nesting_error",
    "parse_expression",
    "referenced_identifiers",
]
