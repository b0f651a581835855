"""`PropertyList`: the one metadata type of the image model (LSST ``daf_base.PropertyList``).

An exposure's header lives in memory as a `PropertyList`: an ordered, dict-like mapping of
keyword → value with an optional comment per keyword. It is turned into a FITS header (and
back) only in `pipeline.image.fits`, so code that reads or writes metadata never deals with
astropy cards, ``HIERARCH`` prefixes or card lengths.

Keywords follow FITS rules: case-insensitive (stored upper case) and a leading ``"HIERARCH "``
is ignored, so ``md["HIERARCH LSST ISR UNITS"]`` and ``md["lsst isr units"]`` are the same
entry. The commentary keywords ``COMMENT``, ``HISTORY`` and ``""`` hold a list of strings;
assigning to one appends (as astropy's ``Header`` does).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

__all__ = ["COMMENTARY_KEYS", "PropertyList", "normalize_key"]

#: Keywords that hold any number of free-text entries (a list value).
COMMENTARY_KEYS = frozenset({"COMMENT", "HISTORY", ""})

_HIERARCH = "HIERARCH "


def normalize_key(key: str) -> str:
    """Return the canonical form of a metadata keyword.

    Parameters
    ----------
    key : `str`
        Keyword, with or without a leading ``"HIERARCH "``, any case.

    Returns
    -------
    key : `str`
        Upper-case keyword without the ``HIERARCH`` prefix and surrounding blanks.

    Raises
    ------
    TypeError
        If ``key`` is not a string.
    """
    if not isinstance(key, str):
        raise TypeError(f"metadata keywords are strings, got {type(key).__name__} {key!r}")
    key = key.strip().upper()
    if key.startswith(_HIERARCH):
        key = key[len(_HIERARCH) :].lstrip()
    return key


class PropertyList(MutableMapping[str, Any]):
    """Ordered, dict-like exposure metadata with a comment per keyword.

    Parameters
    ----------
    items : mapping, iterable of pairs or triples, or header-like, optional
        Initial entries: a mapping (``keyword → value``), an iterable of ``(keyword, value)`` or
        ``(keyword, value, comment)``, or any object with a ``cards`` attribute whose elements
        have ``keyword``, ``value`` and ``comment`` (an astropy ``Header``). A keyword that
        appears twice keeps its first value (as a FITS header lookup does), except the
        commentary keywords, which collect every entry.

    Notes
    -----
    Insertion order is kept; setting an existing keyword keeps its position. ``len`` counts
    keywords (a ``COMMENT`` list counts once).
    """

    __slots__ = ("_values", "_comments")

    def __init__(self, items: Any = None) -> None:
        self._values: dict[str, Any] = {}
        self._comments: dict[str, str] = {}
        if items is None:
            return
        if isinstance(items, PropertyList):
            self._values = {k: (list(v) if k in COMMENTARY_KEYS else v) for k, v in items._values.items()}
            self._comments = dict(items._comments)
            return
        cards = getattr(items, "cards", None)
        if cards is not None:
            entries: Iterable[Any] = ((c.keyword, c.value, c.comment) for c in cards)
        elif isinstance(items, Mapping):
            entries = items.items()
        else:
            entries = items
        for entry in entries:
            key, value, comment = entry if len(entry) == 3 else (*entry, "")
            k = normalize_key(key)
            if k in COMMENTARY_KEYS:
                self._values.setdefault(k, []).append(value)
            elif k not in self._values:
                self._values[k] = value
                if comment:
                    self._comments[k] = comment

    # ------------------------------------------------------------------- mapping protocol
    def __getitem__(self, key: str) -> Any:
        return self._values[normalize_key(key)]

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        k = normalize_key(key)
        del self._values[k]
        self._comments.pop(k, None)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and normalize_key(key) in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PropertyList):
            return self._values == other._values and self._comments == other._comments
        if isinstance(other, Mapping):
            return self._values == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PropertyList({self._values!r})"

    # ----------------------------------------------------------------- LSST-style methods
    def set(self, key: str, value: Any, comment: str | None = None) -> None:
        """Set ``key`` to ``value`` (appending for a commentary keyword).

        Parameters
        ----------
        key : `str`
            Keyword (see `normalize_key`).
        value : object
            Value; stored as given.
        comment : `str`, optional
            Comment of the keyword (kept if omitted).
        """
        k = normalize_key(key)
        if k in COMMENTARY_KEYS:
            self._values.setdefault(k, []).append(value)
            return
        self._values[k] = value
        if comment is not None:
            self._comments[k] = comment

    def add(self, key: str, value: Any) -> None:
        """Append ``value`` to a commentary keyword (``COMMENT``, ``HISTORY``).

        Raises
        ------
        ValueError
            If ``key`` is not a commentary keyword (use ``md[key] = value``).
        """
        k = normalize_key(key)
        if k not in COMMENTARY_KEYS:
            raise ValueError(f"add() appends to COMMENT/HISTORY only; set {key!r} with md[{key!r}] = value")
        self._values.setdefault(k, []).append(value)

    def getComment(self, key: str) -> str:  # noqa: N802 (LSST name)
        """Comment of ``key`` (empty string if none).

        Raises
        ------
        KeyError
            If ``key`` is not present.
        """
        k = normalize_key(key)
        if k not in self._values:
            raise KeyError(key)
        return self._comments.get(k, "")

    def names(self) -> list[str]:
        """Keywords in order (LSST ``PropertyList.names``)."""
        return list(self._values)

    def remove(self, key: str, ignore_missing: bool = False, remove_all: bool = False) -> None:
        """Remove ``key``.

        Parameters
        ----------
        key : `str`
            Keyword.
        ignore_missing : `bool`
            Do not raise if absent.
        remove_all : `bool`
            Accepted for compatibility with astropy's ``Header.remove`` (a keyword is unique
            here, so removing it removes every entry).

        Raises
        ------
        KeyError
            If ``key`` is absent and not ``ignore_missing``.
        """
        k = normalize_key(key)
        if k in self._values:
            del self._values[k]
            self._comments.pop(k, None)
        elif not ignore_missing:
            raise KeyError(f"metadata keyword {key!r} not found")

    def entries(self) -> Iterator[tuple[str, Any, str]]:
        """Yield ``(keyword, value, comment)`` in order; one entry per commentary line."""
        for k, v in self._values.items():
            if k in COMMENTARY_KEYS:
                for line in v:
                    yield k, line, ""
            else:
                yield k, v, self._comments.get(k, "")

    def copy(self) -> PropertyList:
        """Independent copy (values are shared, containers are not)."""
        return PropertyList(self)
