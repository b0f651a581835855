"""Glob patterns of the query language (``GLOB 'r*'``) translated for each SQL dialect."""

from __future__ import annotations

import re

__all__ = ["glob_to_like", "glob_to_regex", "glob_to_sqlite"]


def glob_to_like(pattern: str) -> str:
    r"""Translate a glob (``*``, ``?``) into a SQL LIKE pattern escaped with backslash.

    Parameters
    ----------
    pattern : `str`
        Shell-style glob; ``[...]`` classes are taken literally.

    Returns
    -------
    like : `str`
        ``%``/``_`` wildcards; literal ``%``, ``_`` and ``\\`` escaped with ``\\``.
    """
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def glob_to_regex(pattern: str) -> str:
    """Translate a glob into an anchored POSIX regular expression (PostgreSQL ``~``).

    Parameters
    ----------
    pattern : `str`
        Shell-style glob with ``*``, ``?`` and ``[...]`` / ``[!...]`` classes.

    Returns
    -------
    regex : `str`
        ``^...$`` with every other non-alphanumeric character backslash-escaped.
    """
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            k = pattern.find("]", j)
            if k < 0:
                out.append("\\[")
            else:
                body = pattern[i + 1 : k]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = k
        elif ch.isalnum():
            out.append(ch)
        else:
            out.append("\\" + ch)
        i += 1
    out.append("$")
    return "".join(out)


def glob_to_sqlite(pattern: str) -> str:
    """Translate a shell glob for SQLite's ``GLOB`` (which negates a class with ``^``, not ``!``)."""
    return re.sub(r"\[!", "[^", pattern)
