"""Helpers for the managers' error messages."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest of ``candidates`` to a mistyped ``name``.

    Uses `difflib.get_close_matches` (ratio >= 0.75); returns ``""`` when nothing is close.
    """
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""
