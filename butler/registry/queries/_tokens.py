"""The terminals of the query grammar as one regular expression (no lark import here)."""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["KEYWORDS", "LexError", "TOKEN_PATTERN", "make_query_lexer"]


class LexError(Exception):
    """No token starts at ``pos`` (the parser turns it into an ExpressionError with a caret)."""

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.pos = pos


# One regular expression (verbose) for every terminal of _GRAMMAR, in priority order (RANGE before
# FLOAT before INT, TIME before IDENT). Keywords are IDENT matches whose upper-cased text is
# a keyword. Whitespace is skipped.
TOKEN_PATTERN = r"""
    (?P<WS>\s+)
  | (?P<RANGE>[0-9]+\.\.[0-9]+(?::[0-9]+)?)
  | (?P<TIME>[Tt]'[^']*')
  | (?P<FLOAT>(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)
  | (?P<INT>[0-9]+)
  | (?P<STRING>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<IDENT>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<BIND>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<CMP_OP><=|>=|!=|<>|=|<|>)
  | (?P<ADD_OP>[-+])
  | (?P<MUL_OP>[*/%])
  | (?P<LPAR>\()
  | (?P<RPAR>\))
  | (?P<COMMA>,)
    """
KEYWORDS = {"OR": "OR", "AND": "AND", "NOT": "NOT", "IN": "IN", "OVERLAPS": "OVERLAPS"}


def make_query_lexer(lexer_base: type, token_class: type) -> type:
    """Return the query lexer: a lark custom lexer class that tokenises with `TOKEN_PATTERN`.

    One regex scan (about 3x faster than lark's generic lexer here). Token types are the
    terminal names of the grammar in ``_parser``; identifiers whose upper-cased text is a keyword
    become that keyword. Whitespace is skipped. The lark classes are parameters, so this module
    does not import lark: the parser passes its own (`butler.registry.queries._lalr`),
    the tests those of lark itself.

    Parameters
    ----------
    lexer_base : `type`
        lark's ``Lexer`` class.
    token_class : `type`
        lark's ``Token`` class.

    Returns
    -------
    lexer : `type`
        A subclass of ``lexer_base``; its ``lex(text)`` raises `LexError` at the first position
        where no token starts.
    """
    token_re = re.compile(TOKEN_PATTERN, re.VERBOSE)  # here, not at import: ~2 ms

    class QueryLexer(lexer_base):
        def __init__(self, lexer_conf: object) -> None:
            pass

        def lex(self, data: str) -> Iterator[object]:
            """Yield the tokens of ``data``."""
            match = token_re.match
            keywords = KEYWORDS
            pos, n = 0, len(data)
            while pos < n:
                m = match(data, pos)
                if m is None:
                    raise LexError(pos)
                kind = m.lastgroup or ""
                end = m.end()
                if kind != "WS":
                    value = m.group()
                    if kind == "IDENT":
                        kind = keywords.get(value.upper(), "IDENT")
                    yield token_class(kind, value, pos, 1, pos + 1, 1, end + 1, end)
                pos = end

    return QueryLexer
