"""Parse query expressions (``--where`` / ``-d``) into a syntax tree with a lark LALR grammar.

The grammar follows the LSST data query language (middleware-reference §8); operator
precedence from loosest to tightest::

    OR  <  AND  <  NOT  <  comparison (= != <> < <= > >= OVERLAPS IN, NOT IN)  <  + -  <  * / %  <  unary + -

Keywords (``AND OR NOT IN OVERLAPS``) and function names (``GLOB``, ``UUID``) are
case-insensitive; identifiers are case-sensitive.

Time literals ``T'...'``
-----------------------
``T'[format/]value[/scale]'``. ``format`` is one of ``isot``, ``iso``, ``fits``, ``mjd``, ``jd``,
``unix``, ``unix_tai`` (guessed from the value when absent: ISO dates and date-times, or a bare
number = MJD). ``scale`` is one of ``tai``, ``utc``, ``tt``, ``ut1``, ``tcg``, ``tcb``, ``tdb``.

**The default scale is TAI**, not UTC as in LSST (where it is a known 37-second gotcha,
middleware-reference §8): calibration validity ranges (``certify-calibrations --begin-date``) and
exposure timespans are TAI, so a bare ``T'2022-01-26T19:00:00'`` means the same instant as
``--begin-date 2022-01-26T19:00:00``. Write ``T'2022-01-26T19:00:00/utc'`` for UTC. A bare
number compared with a time or timespan is an MJD in TAI, as in LSST.

Time literals are converted at parse time to integer TAI nanoseconds since
1970-01-01T00:00:00 TAI (the stored timespan unit).
"""

from __future__ import annotations

import builtins
import functools
import re
import threading
import uuid
from collections.abc import Iterable
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
)
from ._errors import ExpressionError
from ._time import TimeLiteralError, parse_time_literal
from ._tokens import LexError as _LexError
from ._tokens import make_query_lexer

__all__ = ["MAX_NESTING", "nesting_error", "parse_expression"]

# The terminals below define the parse tables; tokenising is done by the equivalent one-regex
# lexer in _tokens.py (faster). tests/butler/queries/test_query_parser.py checks they agree.
_GRAMMAR = r"""
?start: expr

?expr: and_expr
     | expr OR and_expr                  -> or_op

?and_expr: not_expr
         | and_expr AND not_expr         -> and_op

?not_expr: predicate
         | NOT not_expr                  -> not_op

?predicate: sum
          | sum CMP_OP sum               -> compare
          | sum OVERLAPS sum             -> overlaps
          | sum IN LPAR items RPAR       -> in_op
          | sum NOT IN LPAR items RPAR   -> not_in_op

?sum: product
    | sum ADD_OP product                 -> arith

?product: unary
        | product MUL_OP unary           -> arith

?unary: atom
      | ADD_OP unary                     -> unary_op

?atom: INT                               -> int_lit
     | FLOAT                             -> float_lit
     | STRING                            -> string_lit
     | TIME                              -> time_lit
     | IDENT                             -> identifier
     | BIND                              -> bind
     | IDENT LPAR args RPAR              -> call
     | LPAR expr RPAR                    -> parens
     | LPAR expr "," expr RPAR           -> tuple

args: (arg ("," arg)*)?
?arg: expr

items: item ("," item)*
?item: sum
     | RANGE                             -> range_lit

OR: "OR"i
AND: "AND"i
NOT: "NOT"i
IN: "IN"i
OVERLAPS: "OVERLAPS"i
CMP_OP: "<=" | ">=" | "!=" | "<>" | "=" | "<" | ">"
ADD_OP: "+" | "-"
MUL_OP: "*" | "/" | "%"
LPAR: "("
RPAR: ")"
RANGE.4: /[0-9]+\.\.[0-9]+(:[0-9]+)?/
TIME.3: /[Tt]'[^']*'/
FLOAT.2: /([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+/
INT: /[0-9]+/
STRING: /'(?:[^']|'')*'/ | /"(?:[^"]|"")*"/
IDENT: /[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*/
BIND: /:[A-Za-z_][A-Za-z0-9_]*/

%import common.WS
%ignore WS
"""

# Human names for the terminals lark reports as "expected".
_TERMINAL_NAMES = {
    "OR": "OR",
    "AND": "AND",
    "NOT": "NOT",
    "IN": "IN",
    "OVERLAPS": "OVERLAPS",
    "CMP_OP": "a comparison (= != < <= > >=)",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '/' or '%'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "RANGE": "a range (1..5)",
    "TIME": "a time (T'...')",
    "FLOAT": "a number",
    "INT": "a number",
    "STRING": "a string",
    "IDENT": "a name",
    "BIND": "a bind name (:name)",
    "$END": "end of expression",
}

_OPERATOR_CHARS = re.compile(r"[=<>!~&|^@#$?;{}\[\]\\`]+")

_PARSE_LOCK = threading.Lock()

_IDENT_CHAR = re.compile(r"[A-Za-z0-9_.]")

_KNOWN_FUNCTIONS = ("GLOB", "UUID")

_SURROGATE = "[\ud800-\udfff]"  # compiled on first use (re's cache)


def _make_transformer_class(transformer_base: type) -> type:
    class _ToAst(transformer_base):
        """lark Transformer building :mod:`._ast` nodes; ``self.text`` is the source."""

        def __init__(self) -> None:
            super().__init__(visit_tokens=False)
            self.text = ""

        def _err(self, reason: str, pos: int) -> ExpressionError:
            return ExpressionError(reason, self.text, pos)

        # literals
        def int_lit(self, c: list[Any]) -> Node:
            tok = c[0]
            return Literal(int(tok), "int", tok.start_pos)

        def float_lit(self, c: list[Any]) -> Node:
            tok = c[0]
            return Literal(float(tok), "float", tok.start_pos)

        def string_lit(self, c: list[Any]) -> Node:
            tok = c[0]
            quote = tok[0]
            if "\x00" in tok:
                raise self._err(
                    "a string literal contains a NUL character, which no database stores", tok.start_pos
                )
            bad = re.search(_SURROGATE, tok)
            if bad is not None:
                raise self._err(
                    f"a string literal contains {bad.group()!r}, half of a UTF-16 pair (not valid "
                    "Unicode text, e.g. undecodable bytes), which no database stores",
                    tok.start_pos + bad.start(),
                )
            return Literal(tok[1:-1].replace(quote * 2, quote), "str", tok.start_pos)

        def time_lit(self, c: list[Any]) -> Node:
            tok = c[0]
            try:
                ns = parse_time_literal(tok[2:-1])
            except TimeLiteralError as exc:
                raise self._err(f"bad time literal {str(tok)}: {exc}", tok.start_pos) from None
            return Literal(ns, "time", tok.start_pos)

        def identifier(self, c: list[Any]) -> Node:
            tok = c[0]
            return Identifier(str(tok), tok.start_pos)

        def bind(self, c: list[Any]) -> Node:
            tok = c[0]
            return BindName(str(tok)[1:], tok.start_pos)

        def range_lit(self, c: list[Any]) -> Node:
            tok = c[0]
            bounds, _, stride = str(tok).partition(":")
            start, stop = (int(v) for v in bounds.split(".."))
            step = int(stride) if stride else 1
            if step < 1:
                raise self._err(f"range stride must be a positive integer, got {step}", tok.start_pos)
            if stop < start:
                raise self._err(f"empty range {str(tok)}: the stop is below the start", tok.start_pos)
            return RangeLiteral(start, stop, step, tok.start_pos)

        # compound
        def parens(self, c: list[Any]) -> Node:
            return c[1]

        def tuple(self, c: list[Any]) -> Node:
            return TupleNode((c[1], c[2]), c[0].start_pos)

        def call(self, c: list[Any]) -> Node:
            name_tok, _lpar, args, _rpar = c
            name = str(name_tok).upper()
            if name not in _KNOWN_FUNCTIONS:
                raise self._err(
                    f"unknown function {str(name_tok)!r}; expected one of {', '.join(_KNOWN_FUNCTIONS)}",
                    name_tok.start_pos,
                )
            if name == "UUID":
                if len(args) != 1 or not (isinstance(args[0], Literal) and args[0].kind == "str"):
                    raise self._err("UUID(...) takes one string, e.g. UUID('3f2a...')", name_tok.start_pos)
                try:
                    value = uuid.UUID(str(args[0].value))
                except ValueError:
                    raise self._err(f"bad UUID {args[0].value!r}", args[0].pos) from None
                return Literal(value, "uuid", name_tok.start_pos)
            if len(args) != 2:
                raise self._err(
                    f"GLOB takes two arguments, GLOB(field, 'pattern*'), got {len(args)}", name_tok.start_pos
                )
            return FunctionCall("GLOB", tuple(args), name_tok.start_pos)

        def args(self, c: list[Any]) -> list[Node]:
            return list(c)

        def items(self, c: list[Any]) -> builtins.tuple[Node, ...]:
            return tuple(c)

        def or_op(self, c: list[Any]) -> Node:
            return BinaryOp("OR", c[0], c[2], c[0].pos, c[1].start_pos)

        def and_op(self, c: list[Any]) -> Node:
            return BinaryOp("AND", c[0], c[2], c[0].pos, c[1].start_pos)

        def not_op(self, c: list[Any]) -> Node:
            return UnaryOp("NOT", c[1], c[0].start_pos)

        def compare(self, c: list[Any]) -> Node:
            op = str(c[1])
            if op == "<>":
                op = "!="
            return BinaryOp(op, c[0], c[2], c[0].pos, c[1].start_pos)

        def overlaps(self, c: list[Any]) -> Node:
            return BinaryOp("OVERLAPS", c[0], c[2], c[0].pos, c[1].start_pos)

        def arith(self, c: list[Any]) -> Node:
            return BinaryOp(str(c[1]), c[0], c[2], c[0].pos, c[1].start_pos)

        def unary_op(self, c: list[Any]) -> Node:
            op, operand = str(c[0]), c[1]
            # Fold signs into numeric literals so "-5" stays a literal.
            if isinstance(operand, Literal) and operand.kind in ("int", "float"):
                number: Any = operand.value
                value = -number if op == "-" else number
                return Literal(value, operand.kind, c[0].start_pos)
            return UnaryOp(op, operand, c[0].start_pos)

        def in_op(self, c: list[Any]) -> Node:
            return IsIn(c[0], c[3], False, c[0].pos)

        def not_in_op(self, c: list[Any]) -> Node:
            return IsIn(c[0], c[4], True, c[0].pos)

    return _ToAst


# Bump when the lexer or parser options change, so a stale cached parser is never loaded.
_CACHE_TAG = "ccdflow-query-parser-2"


def _runtime() -> Any:
    """Return the LALR runtime module (`._lalr`: parse loop, tokens, errors; no lark import)."""
    from . import _lalr

    return _lalr


@functools.cache
def _parser() -> Any:
    """Build the LALR parser once, from lark's parse tables (see `._lalr`).

    The tables are lark's (built once per user and grammar, then loaded in well under a
    millisecond without importing lark); tokens come from the one-regex lexer of `._tokens`.
    """
    rt = _runtime()
    transformer = _make_transformer_class(rt.TransformerBase)()
    lexer = make_query_lexer(object, rt.Token)(None)
    return rt.LalrParser(rt.tables(_GRAMMAR, _CACHE_TAG), lexer.lex, transformer), transformer


_EXPECTED_ORDER = (
    "CMP_OP",
    "IN",
    "NOT",
    "OVERLAPS",
    "AND",
    "OR",
    "ADD_OP",
    "MUL_OP",
    "IDENT",
    "INT",
    "FLOAT",
    "STRING",
    "TIME",
    "BIND",
    "RANGE",
    "LPAR",
    "COMMA",
    "RPAR",
    "$END",
)


def _describe_expected(expected: Iterable[str], text: str = "", pos: int = 0) -> str:
    """Human list of what the parser could accept; ')' and ',' only inside parentheses."""
    depth = text.count("(", 0, pos) - text.count(")", 0, pos)
    names: list[str] = []
    for term in sorted(expected, key=lambda t: (_EXPECTED_ORDER.index(t) if t in _EXPECTED_ORDER else 99, t)):
        if (depth <= 0 and term in ("RPAR", "COMMA")) or (depth > 0 and term == "$END"):
            continue
        name = _TERMINAL_NAMES.get(term, term)
        if name not in names:
            names.append(name)
    return ", ".join(names)


def _character_error(text: str, pos: int) -> ExpressionError:
    """Build the error for a character that starts no token."""
    char = text[pos]
    if (
        char == "'"
        and pos > 0
        and text[pos - 1] in "Tt"
        and (pos < 2 or not _IDENT_CHAR.match(text[pos - 2]))
    ):
        return ExpressionError("unterminated time literal: no closing ' for T'...", text, pos - 1)
    if char in "'\"":
        return ExpressionError(f"unterminated string: no closing {char} for the quote opened here", text, pos)
    if char in "[]{}":
        return ExpressionError(
            f"unexpected {char!r}: lists are written in parentheses, e.g. detector IN (1, 2)", text, pos
        )
    if char == ";":
        return ExpressionError(
            "unexpected ';': a query is one expression; combine conditions with AND", text, pos
        )
    if _OPERATOR_CHARS.match(text, pos):
        start = pos
        while start > 0 and _OPERATOR_CHARS.match(text[start - 1]):
            start -= 1
        found = _OPERATOR_CHARS.match(text, start)
        op = found.group() if found is not None else text[start]
        return ExpressionError(_unknown_operator(op), text, start)
    if char == ":":
        return ExpressionError("a bind name needs a name after ':', e.g. :exposures", text, pos)
    return ExpressionError(f"unexpected character {char!r}", text, pos)


def _syntax_error(text: str, exc: Exception) -> ExpressionError:
    """Translate a parse error into an ExpressionError with a caret and what was expected.

    ``exc`` is an error of `._lalr` (lark's classes and attributes: ``token``, ``expected``) or
    the query lexer's `LexError`.
    """
    rt = _runtime()
    UnexpectedCharacters, UnexpectedEOF, UnexpectedToken = (  # noqa: N806 - lark's class names
        rt.UnexpectedCharacters,
        rt.UnexpectedEOF,
        rt.UnexpectedToken,
    )

    if isinstance(exc, UnexpectedEOF):
        pos = len(text)
        expected: set[str] = {str(t) for t in exc.expected}
        if "RPAR" in expected:
            return ExpressionError("unbalanced parentheses: expected ')' before the end", text, pos)
        return ExpressionError(
            f"unexpected end of expression; expected {_describe_expected(expected, text, pos)}", text, pos
        )
    if isinstance(exc, _LexError):
        return _character_error(text, exc.pos)
    if isinstance(exc, UnexpectedCharacters):
        return _character_error(text, int(exc.pos_in_stream or 0))
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        pos = tok.start_pos if tok.start_pos is not None else len(text)
        expected = {str(t) for t in exc.expected}
        if tok.type == "$END":
            pos = len(text)
            if "RPAR" in expected:
                return ExpressionError("unbalanced parentheses: expected ')' before the end", text, pos)
            return ExpressionError(
                f"unexpected end of expression; expected {_describe_expected(expected, text, pos)}", text, pos
            )
        if tok.type == "RPAR" and "RPAR" not in expected:
            opened = text.count("(", 0, pos) - text.count(")", 0, pos)
            if opened <= 0:
                return ExpressionError("unbalanced parentheses: ')' without a matching '('", text, pos)
        if tok.type == "CMP_OP":
            # "a == b", "a =< b": the operator before this one was also a comparison
            start = pos
            while start > 0 and text[start - 1] in "=<>!":
                start -= 1
            end = pos
            while end < len(text) and text[end] in "=<>!":
                end += 1
            if start < pos:
                return ExpressionError(_unknown_operator(text[start:end]), text, start)
            return ExpressionError(
                f"unexpected {str(tok)!r}; comparisons cannot be chained, use AND. "
                f"Expected {_describe_expected(expected, text, pos)}",
                text,
                pos,
            )
        if tok.type == "MUL_OP" and "MUL_OP" not in expected and text[pos : pos + 2] == "**":
            return ExpressionError(_unknown_operator("**"), text, pos)
        if tok.type == "RANGE":
            return ExpressionError("a range (1..5) is only allowed inside IN (...)", text, pos)
        what = f"name {str(tok)!r}" if tok.type == "IDENT" else repr(str(tok))
        if "CMP_OP" in expected and tok.type in ("IDENT", "INT", "FLOAT", "STRING", "TIME", "BIND"):
            return ExpressionError(
                f"unexpected {what} after a complete operand; expected an operator: "
                f"{_describe_expected(expected, text, pos)}",
                text,
                pos,
            )
        return ExpressionError(
            f"unexpected {what}; expected {_describe_expected(expected, text, pos)}", text, pos
        )
    return ExpressionError(str(exc), text, 0)


def _unknown_operator(op: str) -> str:
    hints = {
        "==": " (use '=')",
        "&&": " (use AND)",
        "||": " (use OR)",
        "!": " (use NOT or '!=')",
        "=<": " (use '<=')",
        "=>": " (use '>=')",
        "**": "",
    }
    return f"unknown operator {op!r}{hints.get(op, '')}; expected one of = != < <= > >= OVERLAPS IN"


@functools.lru_cache(maxsize=512)
def _parse_cached(text: str) -> Node | None:
    if not text.strip():
        return None
    parser, transformer = _parser()
    UnexpectedInput = _runtime().UnexpectedInput  # noqa: N806 - lark's class name
    try:
        with _PARSE_LOCK:  # the transformer holds the text being parsed (for error carets)
            transformer.text = text
            tree = parser.parse(text)
    except ExpressionError:
        raise
    except (UnexpectedInput, _LexError) as exc:
        raise _syntax_error(text, exc) from None
    except Exception as exc:  # errors raised inside transformer callbacks are wrapped by lark
        inner = getattr(exc, "orig_exc", None)
        if isinstance(inner, ExpressionError):
            raise inner from None
        raise
    return _check_nesting(tree, text)


MAX_NESTING = 16
"""The deepest nesting of operators an expression may have (see `nesting_error`).

Chains of one operator (``a OR b OR c ...``, ``a AND b AND ...``) count as one level, so a
machine-generated list of thousands of terms is fine; every other operator, function call,
``IN`` and ``NOT`` inside another adds a level. Both backends run expressions of this depth (SQLite
parses SQL with a bounded stack: deeper expressions failed there with "parser stack overflow").
"""


def nesting_error(tree: Node, text: str, limit: int = MAX_NESTING) -> ExpressionError | None:
    """Return the "nested too deeply" error of a tree deeper than ``limit`` (`None` if it is not).

    Parameters
    ----------
    tree : `Node`
        A parsed expression.
    text : `str`
        Its source (for the caret).
    limit : `int`
        The deepest nesting allowed (`MAX_NESTING`).

    Returns
    -------
    error : `ExpressionError` or `None`
        With a caret at the outermost sub-expression past the limit.
    """
    stack: list[tuple[Node, int, str | None]] = [(tree, 0, None)]
    while stack:
        node, level, parent_op = stack.pop()
        children = node.children()
        if not children:
            continue
        op = node.op if isinstance(node, BinaryOp) else None
        if not (op in ("AND", "OR") and op == parent_op):
            level += 1
        if level > limit:
            return ExpressionError(
                f"expression is nested too deeply (more than {limit} operators, NOT, IN or "
                "functions inside one another); write long alternatives as IN (...) or as flat "
                "chains a OR b OR c, and drop needless NOTs",
                text,
                getattr(node, "pos", 0),
            )
        stack.extend((child, level, op) for child in children)
    return None


def parse_expression(text: str) -> Node | None:
    """Parse a query expression into a syntax tree.

    Parameters
    ----------
    text : `str`
        The expression, e.g. ``"instrument = 'kast_blue' AND exposure IN (1..20:2)"``.
        Blank or whitespace-only means no constraint.

    Returns
    -------
    tree : `Node` or `None`
        The root node, or `None` for a blank expression. Trees are immutable and cached, so
        re-parsing the same text is a dictionary lookup.

    Raises
    ------
    ExpressionError
        For a syntax error (unbalanced parentheses, unknown operator, unterminated string,
        unknown function, misplaced range) or a bad time or UUID literal; the message shows the
        expression with a caret at the position and says what was expected.

    Notes
    -----
    Grammar: middleware-reference §8 (the LSST daf_butler expression language), with the
    TAI default scale for time literals described in this module's docstring.
    """
    if not isinstance(text, str):
        raise TypeError(f"a query expression must be a str, got {type(text).__name__}")
    return _parse_cached(text)


def _check_nesting(tree: Node | None, text: str) -> Node | None:
    if tree is not None:
        error = nesting_error(tree, text)
        if error is not None:
            raise error
    return tree
