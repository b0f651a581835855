"""The query parser's runtime: lark's LALR(1) parse tables driven by a small loop (no lark import).

lark builds the parse tables of the grammar (its own LALR analysis, ``Lark(grammar,
parser="lalr")``); `tables` keeps them as plain data (states, rules and how lark's tree builder
calls the transformer for each rule) in the per-user cache directory (``$XDG_CACHE_HOME/ccdflow/``
or ``~/.cache/ccdflow/``, mode 0700, not world-writable /tmp) and afterwards loads them in well
under a millisecond without importing lark. `LalrParser` is lark's LALR parse loop
(``lark.parsers.lalr_parser_state.ParserState.feed_token``) with lark's tree-builder semantics for
``maybe_placeholders=False`` (``lark.parse_tree_builder``): tokens of anonymous terminals are
dropped, children of rules whose name starts with ``_`` are spliced into their parent, a ``?rule``
without an alias returns its only child, and each rule calls the transformer method named by its
alias or its name (lark's ``Transformer.__default__``, a plain tree, when there is none).

``import lark`` costs ~20 ms and executing lark's generated standalone parser module (its whole
runtime: logging, pickle, regular expressions, ~100 classes) ~8 ms, most of the first query of a
process; the tables and this loop cost ~0.3 ms. The tables are lark's, so every parse is the one
lark gives (``tests/butler/queries/test_query_parser.py`` checks trees and errors against lark).
"""

from __future__ import annotations

import marshal
import os
import sys
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from ..._user_cache import user_cache_dir

__all__ = ["LalrParser", "Token", "Tree", "UnexpectedInput", "UnexpectedToken", "tables"]

#: Version of the table layout below; part of the cache key.
_LAYOUT = "lalr-tables-1"

_TABLES: dict[str, dict[str, Any]] = {}


class Token(str):
    """A token: its text, with lark's ``Token`` attributes (``type``, ``start_pos``, ``end_pos`` ...).

    The constructor takes lark's ``Token`` arguments, so one lexer serves both.
    """

    type: str
    value: str
    start_pos: int | None
    line: int | None
    column: int | None
    end_line: int | None
    end_column: int | None
    end_pos: int | None

    def __new__(
        cls,
        type: str,  # noqa: A002 - lark's name
        value: str,
        start_pos: int | None = None,
        line: int | None = None,
        column: int | None = None,
        end_line: int | None = None,
        end_column: int | None = None,
        end_pos: int | None = None,
    ) -> Token:
        self = super().__new__(cls, value)
        self.type = type
        self.value = value
        self.start_pos = start_pos
        self.line = line
        self.column = column
        self.end_line = end_line
        self.end_column = end_column
        self.end_pos = end_pos
        return self

    def __repr__(self) -> str:
        return f"Token({self.type!r}, {self.value!r})"

    def __reduce__(self) -> tuple:
        return (Token, (self.type, self.value, self.start_pos, self.line, self.column, self.end_line,
                        self.end_column, self.end_pos))


class Tree:
    """A rule result no transformer method handles (lark's ``Tree``: ``data`` and ``children``)."""

    __slots__ = ("children", "data")

    def __init__(self, data: str, children: list[Any]) -> None:
        self.data = data
        self.children = children

    def __repr__(self) -> str:
        return f"Tree({self.data!r}, {self.children!r})"


class TransformerBase:
    """Base of a transformer for `LalrParser` (lark's ``Transformer`` interface, as far as it is used)."""

    def __init__(self, visit_tokens: bool = False) -> None:
        pass

    def __default__(self, data: str, children: list[Any], meta: Any) -> Any:
        """Return a `Tree` for a rule without a method (lark's default)."""
        return Tree(data, children)


class UnexpectedInput(Exception):  # noqa: N818 - lark's name
    """Base of the parse errors (lark's name)."""


class UnexpectedToken(UnexpectedInput):
    """A token the grammar does not allow where it stands (lark's ``UnexpectedToken``).

    Parameters
    ----------
    token : `Token`
        The token (type ``$END`` at the end of the text).
    expected : `set` [`str`]
        The terminals the parser could have accepted there.
    """

    def __init__(self, token: Token, expected: set[str]) -> None:
        super().__init__(f"unexpected token {token!r}; expected one of {sorted(expected)}")
        self.token = token
        self.expected = expected


class UnexpectedEOF(UnexpectedInput):
    """Never raised by `LalrParser` (lark's LALR parser reports the end as an `UnexpectedToken`)."""

    expected: set[str] = set()


class UnexpectedCharacters(UnexpectedInput):
    """Never raised by `LalrParser` (the query lexer raises its own error for a bad character)."""

    pos_in_stream: int | None = None


def _generate(grammar: str) -> dict[str, Any]:
    """Build the parse tables of ``grammar`` with lark (imports lark) as plain data.

    Returns
    -------
    tables : `dict`
        ``states``: state -> {symbol: action}, an action being ``state`` (shift; goto for a
        rule's name) or ``-1 - rule`` (reduce by rule ``rule``); ``rules``: per rule
        ``(origin, size, callback name, expand single child, children kept)``, where children
        kept is `None` (all, as they are) or ``((index, splice), ...)``; ``start`` and ``end``:
        the initial and accepting states.
    """
    from lark import Lark

    lark_parser = Lark(grammar, parser="lalr", lexer="basic", maybe_placeholders=False)
    table = lark_parser.parser.parser._parse_table
    rule_index: dict[Any, int] = {}
    rules: list[tuple[str, int, str, bool, tuple[tuple[int, bool], ...] | None]] = []
    states: dict[int, dict[str, int]] = {}
    for state, actions in table.states.items():
        row: dict[str, int] = {}
        for symbol, (action, arg) in actions.items():
            if action.name == "Shift":
                row[str(symbol)] = int(arg)
                continue
            if arg not in rule_index:
                rule_index[arg] = len(rules)
                opts = arg.options
                if opts.empty_indices:
                    raise ValueError("placeholders ([x] with maybe_placeholders) are not supported")
                keep = [
                    (i, not sym.is_term and sym.name.startswith("_"))
                    for i, sym in enumerate(arg.expansion)
                    if opts.keep_all_tokens or not (sym.is_term and sym.filter_out)
                ]
                # lark's maybe_create_child_filter: a filter only when something is dropped or spliced
                needs_filter = len(keep) < len(arg.expansion) or any(s for _, s in keep)
                rules.append(
                    (
                        str(arg.origin.name),
                        len(arg.expansion),
                        str(arg.alias or opts.template_source or arg.origin.name),
                        bool(opts.expand1 and not arg.alias),
                        tuple(keep) if needs_filter else None,
                    )
                )
            row[str(symbol)] = -1 - rule_index[arg]
        states[state] = row
    return {"states": states, "rules": rules, "start": int(table.start_states["start"]),
            "end": int(table.end_states["start"])}


def _cache_file(key: str) -> str | None:
    directory = user_cache_dir()
    if directory is None:
        return None
    raw = key.encode()
    digest = f"{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}"  # no hashlib: the key is checked on load
    return os.path.join(directory, f"query-tables-{digest}.{sys.implementation.cache_tag}.marshal")


def tables(grammar: str, tag: str) -> dict[str, Any]:
    """Return the LALR tables of a grammar (built by lark once per user, then loaded from the cache).

    Parameters
    ----------
    grammar : `str`
        The lark grammar (LALR, basic lexer terminals, start rule ``start``).
    tag : `str`
        Changes the cache file when anything else about the parser changes.

    Returns
    -------
    tables : `dict`
        See `_generate`; plain data (dicts, tuples, ints, strings), as marshal stores it.
    """
    key = f"{_LAYOUT}\n{tag}\n{grammar}"
    found = _TABLES.get(key)
    if found is not None:
        return found
    path = _cache_file(key)
    data = None
    if path is not None:
        try:
            with open(path, "rb") as f:
                stored = marshal.loads(f.read())
            if isinstance(stored, tuple) and len(stored) == 2 and stored[0] == key:
                data = stored[1] if isinstance(stored[1], dict) else None
        except (OSError, EOFError, ValueError, TypeError):
            data = None
    if data is None:
        data = _generate(grammar)
        if path is not None:
            tmp = f"{path}.{os.getpid()}.tmp"
            try:
                with open(tmp, "wb") as f:
                    marshal.dump((key, data), f)
                os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
            except OSError:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    _TABLES[key] = data
    return data


def _splicer(keep: tuple[tuple[int, bool], ...], f: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
    """Keep some children and splice ``_rule`` results (lark's ``ChildFilterLALR_NoPlaceholders``)."""

    def call(children: list[Any]) -> Any:
        filtered: list[Any] = []
        for i, splice in keep:
            if splice:
                filtered += children[i].children
            else:
                filtered.append(children[i])
        return f(filtered)

    return call


def _single(f: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
    """Make a ``?rule`` with one child that child (lark's ``ExpandSingleChild``)."""

    def call(children: list[Any]) -> Any:
        return children[0] if len(children) == 1 else f(children)

    return call


class LalrParser:
    """Parse token streams with lark's LALR tables, calling a transformer as lark's tree builder does.

    Parameters
    ----------
    data : `dict`
        The tables (`tables`).
    lexer : callable
        ``lexer(text)`` -> iterable of `Token`.
    transformer : `object`
        Has a method per rule alias or name (``or_op(children)`` ...); ``__default__`` for the rest.
    """

    def __init__(
        self, data: dict[str, Any], lexer: Callable[[str], Iterable[Token]], transformer: Any
    ) -> None:
        self.states: dict[int, dict[str, int]] = data["states"]
        self.start: int = data["start"]
        self.end: int = data["end"]
        self.lexer = lexer
        self.rules: list[tuple[str, int, Callable[[list[Any]], Any]]] = []
        for origin, size, name, single, keep in data["rules"]:
            f = getattr(transformer, name, None)
            if f is None:
                default = transformer.__default__

                def f(children: list[Any], _name: str = name, _default: Any = default) -> Any:
                    return _default(_name, children, None)

            if single:
                f = _single(f)
            if keep is not None:
                f = _splicer(keep, f)
            self.rules.append((origin, size, f))

    def parse(self, text: str) -> Any:
        """Parse ``text`` and return the transformer's result for the start rule.

        Raises
        ------
        UnexpectedToken
            At the first token (or the end, type ``$END``) the grammar does not allow.
        """
        states, rules = self.states, self.rules
        state_stack = [self.start]
        value_stack: list[Any] = []
        token = None
        for token in self.lexer(text):
            self._feed(token, state_stack, value_stack, states, rules)
        if token is None:
            end = Token("$END", "", 0, 1, 1)
        else:
            end = Token("$END", "", token.start_pos, token.line, token.column, token.end_line,
                        token.end_column, token.end_pos)
        return self._feed(end, state_stack, value_stack, states, rules)

    def _feed(
        self,
        token: Token,
        state_stack: list[int],
        value_stack: list[Any],
        states: dict[int, dict[str, int]],
        rules: list[tuple[str, int, Callable[[list[Any]], Any]]],
    ) -> Any:
        kind = token.type
        while True:
            actions = states[state_stack[-1]]
            action = actions.get(kind)
            if action is None:
                raise UnexpectedToken(token, {s for s in actions if s.isupper()})
            if action >= 0:  # shift
                state_stack.append(action)
                value_stack.append(token)
                return None
            origin, size, f = rules[-1 - action]
            if size:
                children = value_stack[-size:]
                del state_stack[-size:]
                del value_stack[-size:]
            else:
                children = []
            value = f(children)
            state_stack.append(states[state_stack[-1]][origin])
            value_stack.append(value)
            if kind == "$END" and state_stack[-1] == self.end:
                return value_stack[-1]
