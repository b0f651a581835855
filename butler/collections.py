"""Collection types and glob patterns over names."""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

from ._errors import ConflictingDefinitionError

__all__ = ["CollectionType", "chain_members", "flatten_chains", "has_glob", "glob_filter", "glob_regex"]

MAX_CHAIN_DEPTH = 100


def flatten_chains(
    names: Iterable[str],
    is_chain: Callable[[str], bool],
    children: Callable[[str], Sequence[str]],
    too_deep: Callable[[str], Exception],
    *,
    keep_chains: bool = False,
) -> list[str]:
    """Expand CHAINED collections into the search path of their children (depth first, in order).

    Parameters
    ----------
    names : iterable of `str`
        Collections in search order.
    is_chain : callable
        ``name -> bool``: whether a collection is CHAINED (may raise for an unknown name).
    children : callable
        ``name -> sequence of str``: a chain's children in order.
    too_deep : callable
        ``name -> Exception`` raised when chains nest deeper than 100 (a cycle).
    keep_chains : `bool`
        Also list each chain itself, before its children.

    Returns
    -------
    names : `list` [`str`]
        Each collection once, at its first position.
    """
    # An explicit stack, not a recursive closure: a nested function that calls itself is a
    # reference cycle, left to the cyclic garbage collector on every call (every dataset lookup).
    out: list[str] = []
    seen: set[str] = set()
    stack = [(n, 0) for n in reversed(list(names))]
    while stack:
        n, depth = stack.pop()
        if depth > MAX_CHAIN_DEPTH:
            raise too_deep(n)
        if is_chain(n):
            if keep_chains and n not in seen:
                seen.add(n)
                out.append(n)
            stack.extend([(c, depth + 1) for c in reversed(children(n))])
        elif n not in seen:
            seen.add(n)
            out.append(n)
    return out


class CollectionType(enum.IntEnum):
    """Kinds of collection (values as in daf_butler)."""

    RUN = 1
    """Owns datasets; every dataset is in exactly one RUN."""
    TAGGED = 2
    """A hand-picked set of datasets (at most one per dataset type and data ID)."""
    CHAINED = 3
    """An ordered search path of other collections (find-first)."""
    CALIBRATION = 4
    """Datasets certified with a validity timespan, looked up by time."""

    @classmethod
    def from_name(cls, name: str | int | CollectionType) -> CollectionType:
        """Parse ``"RUN"``/``"run"``/1.

        Raises
        ------
        ValueError
            On an unknown name; the message lists the valid ones.
        """
        if isinstance(name, CollectionType):
            return name
        if isinstance(name, int):
            return cls(name)
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(
                f"unknown collection type {name!r}; use one of RUN, TAGGED, CHAINED, CALIBRATION"
            ) from None



def chain_members(
    parent: str,
    children: str | Sequence[str],
    find: Callable[[str], Any],
    flatten: Callable[..., list[str]],
    *,
    flatten_children: bool = False,
) -> list[Any]:
    """Return the records of the new children of CHAINED ``parent``: checked, in order, each once.

    The rules of `Registry.set_collection_chain`, shared by the registry and the SQLite run
    writer: with ``flatten_children`` chains among the children are replaced by their members;
    a child that is ``parent`` or a chain that reaches it is refused; repeats are dropped.

    Parameters
    ----------
    parent : `str`
        The CHAINED collection.
    children : `str` or sequence of `str`
        Its new children, in search order.
    find : callable
        ``name -> record`` with ``name``, ``type`` (`CollectionType`) and ``id``; raises for an
        unknown name.
    flatten : callable
        ``(names, keep_chains=bool) -> list of str``, as `flatten_chains` over the same records.
    flatten_children : `bool`
        Store the flattened search path instead of the chains.

    Returns
    -------
    records : `list`
        The children's records, in order, each once.

    Raises
    ------
    ConflictingDefinitionError
        If a child would make a cycle.
    """
    if isinstance(children, str):
        children = [children]
    kids = [find(c) for c in children]
    if flatten_children:
        kids = [find(n) for n in flatten([c.name for c in kids])]
    for k in kids:
        if k.name == parent or (
            k.type is CollectionType.CHAINED and parent in flatten([k.name], keep_chains=True)
        ):
            raise ConflictingDefinitionError(
                f"chain {parent!r} cannot contain {k.name!r}: that would be a cycle"
            )
    seen: set[Any] = set()
    out = []
    for k in kids:
        if k.id not in seen:
            seen.add(k.id)
            out.append(k)
    return out


def has_glob(pattern: str) -> bool:
    """Whether a name contains shell glob characters (``* ? [``)."""
    return any(c in pattern for c in "*?[")


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a shell glob (``*``, ``?``, ``[abc]``; case-sensitive) to a regular expression."""
    return re.compile(fnmatch.translate(pattern))


def glob_filter(patterns: str | Iterable[str], names: Iterable[str]) -> list[str]:
    """Names matching any of the glob patterns, in the order of ``names``."""
    if isinstance(patterns, str):
        patterns = [patterns]
    regs = [glob_regex(p) for p in patterns]
    return [n for n in names if any(r.match(n) for r in regs)]
