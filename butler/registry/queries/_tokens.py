"""The terminals of the query grammar as one regular expression (no lark import here)."""

from __future__ import annotations

import re

__all__ = ["KEYWORDS", "LexError", "TOKEN_RE"]


class LexError(Exception):
    """No token starts at ``pos`` (the parser turns it into an ExpressionError with a caret)."""

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.pos = pos


# One regular expression for every terminal of _GRAMMAR, in priority order (RANGE before
# FLOAT before INT, TIME before IDENT). Keywords are IDENT matches whose upper-cased text is
# a keyword. Whitespace is skipped.
TOKEN_RE = re.compile(
    r"""
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
    """,
    re.VERBOSE,
)
KEYWORDS = {"OR": "OR", "AND": "AND", "NOT": "NOT", "IN": "IN", "OVERLAPS": "OVERLAPS"}
