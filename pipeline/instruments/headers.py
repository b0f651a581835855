"""Reading FITS headers without pixels, and loading header dumps (text and PropertyList YAML).

`read_headers` opens plain, gzipped (``.gz``) and tile-compressed (``.fz``) FITS files and returns
the header of every HDU without reading any pixel data (astropy reads lazily). For a
tile-compressed image HDU the header returned is the *image* header (ZNAXIS → NAXIS, BZERO ...).
"""

from __future__ import annotations

import bz2
import gzip
import os
import re
import warnings
from pathlib import Path
from typing import Any

import yaml
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

__all__ = [
    "RawFileError",
    "read_headers",
    "merge_headers",
    "MergedHeader",
    "FastHeader",
    "headers_from_text",
    "header_from_propertylist_yaml",
    "load_header_dump",
    "FITS_SUFFIXES",
]

#: File name endings ingest treats as FITS.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz", ".fits.bz2")


class RawFileError(ValueError):
    """A raw file cannot be read (not FITS, truncated, empty)."""


def read_headers(path: str | os.PathLike[str], *, fast: bool = False) -> list[Any]:
    """Return the header of every HDU of a FITS file, reading no pixel data.

    Parameters
    ----------
    path : str or path-like
        A plain, gzipped or tile-compressed FITS file.

    fast : bool
        Return `FastHeader` objects (keyword lookup only, ~10x quicker to build) instead of
        astropy headers; ingest uses this.

    Returns
    -------
    list of astropy.io.fits.Header (or FastHeader)
        ``headers[i]`` is the header of HDU ``i``. A tile-compressed image HDU gives its binary
        table header (``ZIMAGE = T``, ``ZNAXISn``... plus the image's own cards).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    RawFileError
        If the file is not FITS or its first header is truncated.

    Notes
    -----
    The 2880-byte header blocks are read directly and parsed lazily by astropy; data units are
    skipped by their size from NAXISn/BITPIX/PCOUNT/GCOUNT (FITS standard 4.0, section 4.4.1),
    so a single-HDU ``.fits.gz`` costs one small decompression (astropy's ``fits.open`` would
    decompress the whole file to look for a next HDU).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with open(path, "rb") as raw:
            magic = raw.read(3)
        opener: Any = gzip.open if magic[:2] == b"\x1f\x8b" else (bz2.open if magic == b"BZh" else open)
        headers: list[fits.Header] = []
        with opener(path, "rb") as fh:
            while True:
                text = _read_header_blocks(fh, first=not headers, source=path)
                if text is None:
                    break
                if fast:
                    header = FastHeader(text)
                else:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", VerifyWarning)
                        header = fits.Header.fromstring(text)
                headers.append(header)
                if len(headers) == 1 and not header.get("EXTEND", False) and int(header.get("NAXIS", 0)) > 0:
                    break
                size = _data_size(header)
                if size:
                    fh.seek(size, 1)
    except (OSError, EOFError, ValueError, KeyError) as exc:
        if isinstance(exc, RawFileError):
            raise
        raise RawFileError(f"{path} is not a readable FITS file ({type(exc).__name__}: {exc})") from None
    if not headers:
        raise RawFileError(f"{path} has no HDU (empty or truncated FITS file)")
    return headers


_BLOCK = 2880


def _read_header_blocks(fh: Any, *, first: bool, source: Path) -> str | None:
    chunks: list[bytes] = []
    while True:
        block = fh.read(_BLOCK)
        if not block:
            if first and not chunks:
                raise RawFileError(f"{source} is empty (not a FITS file)")
            if chunks:
                raise RawFileError(f"{source}: truncated FITS header (no END card)")
            return None
        if len(block) < _BLOCK:
            if first or chunks:
                raise RawFileError(f"{source}: truncated FITS file (a {len(block)}-byte partial block)")
            return None
        if first and not chunks and not block.startswith(b"SIMPLE  ="):
            raise RawFileError(f"{source} is not a readable FITS file (it does not start with SIMPLE =)")
        if not first and not chunks and not block.startswith(b"XTENSION="):
            return None  # trailing junk after the last HDU: ignore
        chunks.append(block)
        for i in range(0, _BLOCK, 80):
            if block[i : i + 8] == b"END     ":
                text = b"".join(chunks)
                end = (len(chunks) - 1) * _BLOCK + i
                return text[:end].decode("ascii", errors="replace")


def _data_size(header: fits.Header) -> int:
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    n = 1
    for i in range(1, naxis + 1):
        n *= int(header.get(f"NAXIS{i}", 0))
    bits = abs(int(header.get("BITPIX", 8)))
    size = bits // 8 * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + n)
    return (size + _BLOCK - 1) // _BLOCK * _BLOCK


def merge_headers(primary: fits.Header, extension: fits.Header | None) -> fits.Header:
    """Primary header updated with the extension's cards (extension wins), as a new header.

    Parameters
    ----------
    primary : astropy.io.fits.Header
        The primary (HDU 0) header.
    extension : astropy.io.fits.Header or None
        The header of the HDU holding the detector's pixels, or None.

    Returns
    -------
    astropy.io.fits.Header
        Extension cards (COMMENT/HISTORY of the primary kept) then the primary's other cards.

    Notes
    -----
    Built from the cards' 80-character images, so no card value is parsed (a MegaCam primary +
    extension merge costs ~2 ms instead of ~0.3 s with ``Header.update``).
    """
    if extension is None or extension is primary:
        return primary.copy()
    ext_keys = set()
    images = []
    for card in extension.cards:
        key = card.keyword
        if key in ("COMMENT", "HISTORY", "") or key in _SKIP_MERGE:
            continue
        ext_keys.add(key)
        images.append(card.image)
    for card in primary.cards:
        key = card.keyword
        if key in ext_keys and key not in ("COMMENT", "HISTORY", ""):
            continue
        images.append(card.image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        return fits.Header.fromstring("".join(images))


_SKIP_MERGE = {"XTENSION", "SIMPLE", "END"}


_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eEdD][+-]?\d+)?$")


class FastHeader:
    """A read-only FITS header for keyword lookups, parsed lazily from the 80-character cards.

    Supports ``key in h``, ``h[key]``, ``h.get(key, default)`` and ``h.to_header()``; the first
    card of a keyword wins (as in astropy). ``HIERARCH`` keywords are looked up without the
    prefix (``h["ESO DPR TYPE"]``). Values: strings (quotes removed, trailing blanks stripped,
    ``''`` → ``'``), ``T``/``F`` → bool, integers, floats (``D`` exponents accepted).

    A card this reader does not fully read is handed over to astropy: its keyword is answered
    from ``astropy.io.fits.Header.fromstring`` of the whole header (parsed once, on the first
    such lookup). Those cards are: a string continued on ``CONTINUE`` cards (long-string
    convention, FITS standard 4.0 section 4.2.1.2), a ``HIERARCH`` card that is not
    ``HIERARCH KEY WORDS = value`` with upper-case words, a keyword with lower-case letters, a
    value indicator without its blank (``KEY     =value``) and a value that is neither a
    string, a logical, a number nor empty (e.g. a complex number). Values are classified when
    they are looked up (a header of 150 cards is built for the ~30 keywords an ingest reads).
    """

    __slots__ = ("_text", "_cards", "_cache", "_handed_over", "_hierarch", "_astropy")

    def __init__(self, text: str) -> None:
        self._text = text
        cards: dict[str, str] = {}
        handed_over: set[str] = set()  # known at build time: CONTINUE, odd HIERARCH, '=' without blank
        hierarch: set[str] = set()  # keywords of plain HIERARCH cards
        previous: str | None = None  # keyword a CONTINUE card would continue
        for i in range(0, len(text), 80):
            card = text[i : i + 80]
            head = card[:8]
            if card[8:10] == "= ":
                key = head.rstrip()
                rest = card[10:]
                kind = 0  # keyword checked at lookup (_KEY_RE)
            elif head == "CONTINUE":
                if previous is not None:  # a long string of the keyword before
                    handed_over.add(previous)
                continue
            elif card.startswith("HIERARCH "):
                key, sep, rest = card[9:].partition("=")
                key = key.strip()
                if not sep or not key:
                    previous = None
                    continue
                kind = 1 if _HIERARCH_RE.match(card) is not None else 2
            elif card[8:9] == "=" and head.strip():  # value indicator without its blank
                key, rest, kind = head.rstrip(), card[9:], 2
            else:
                previous = None
                continue
            if key in cards:
                previous = None
                continue
            previous = key
            cards[key] = rest
            if kind == 2:
                handed_over.add(key)
            elif kind == 1:
                hierarch.add(key)
        self._cards = cards
        self._handed_over = handed_over
        self._hierarch = hierarch
        self._cache: dict[str, Any] = {}
        self._astropy: fits.Header | None = None

    def _reads(self, key: str, rest: str) -> bool:
        """Whether this reader reads the card of ``key`` exactly as astropy does."""
        if key in self._handed_over:
            return False
        if key not in self._hierarch and _KEY_RE.match(key) is None:
            return False
        return _plain_value(rest)

    def __contains__(self, key: object) -> bool:
        return key in self._cards

    def __getitem__(self, key: str) -> Any:
        if key in self._cache:
            return self._cache[key]
        rest = self._cards[key]
        if key in self._handed_over or (key not in self._hierarch and _KEY_RE.match(key) is None):
            plain, value = False, None
        else:
            plain, value = _read_plain(rest)
        if not plain:
            if self._astropy is None:  # parsed once, for every handed-over keyword
                self._astropy = self.to_header()
            value = self._astropy[key]
        self._cache[key] = value
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """Value of ``key`` or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    @property
    def text(self) -> str:
        """The header's 80-character cards, up to (not including) ``END``."""
        return self._text

    def keys(self) -> list[str]:
        """Keywords in card order (first occurrences)."""
        return list(self._cards)

    def handed_over(self) -> frozenset[str]:
        """Keywords whose values are read by astropy (cards this reader does not fully read)."""
        return frozenset(k for k, rest in self._cards.items() if not self._reads(k, rest))

    def to_header(self) -> fits.Header:
        """Return the same cards as a new astropy header."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            return fits.Header.fromstring(self._text)


#: A keyword this reader takes as it is (FITS standard 4.0 section 4.1.2.1).
_KEY_RE = re.compile(r"^[A-Z0-9_-]{1,8}$")
#: ``HIERARCH`` + upper-case words separated by single blanks + `` = `` + value.
_HIERARCH_RE = re.compile(r"^HIERARCH (?:[A-Z0-9_-]+ )*[A-Z0-9_-]+ ?= ")


def _plain_value(rest: str) -> bool:
    """Whether `_parse_value` reads this value field exactly as astropy does."""
    text = rest.lstrip()
    if text.startswith("'"):
        # a closed string that is not the start of a long (CONTINUE) string
        value, closed = _parse_string(text)
        return closed and not value.endswith("&")
    value = text.split("/", 1)[0].strip()
    return value in ("", "T", "F") or _NUMBER_RE.match(value) is not None


def _read_plain(rest: str) -> tuple[bool, Any]:
    """Return ``(_plain_value(rest), _parse_value(rest))`` in one reading (the value is None if not plain)."""
    text = rest.strip()
    if text.startswith("'"):
        value, closed = _parse_string(text)
        if closed and not value.endswith("&"):
            return True, value
        return False, None
    value = text.split("/", 1)[0].strip()
    if value == "T":
        return True, True
    if value == "F":
        return True, False
    if not value:
        return True, None
    if _NUMBER_RE.match(value) is None:
        return False, None
    if "." in value or "e" in value.lower() or "d" in value.lower():
        return True, float(value.replace("D", "E").replace("d", "e"))
    return True, int(value)


def _parse_string(text: str) -> tuple[str, bool]:
    """Return the string value starting at the quote ``text[0]`` and whether it is closed.

    A doubled quote ``''`` inside the string is one quote; trailing blanks are stripped.
    """
    out = []
    i = 1
    while True:
        j = text.find("'", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out).rstrip(), False
        out.append(text[i:j])
        if text[j + 1 : j + 2] == "'":
            out.append("'")
            i = j + 2
            continue
        return "".join(out).rstrip(), True


def _parse_value(rest: str) -> Any:
    text = rest.strip()
    if text.startswith("'"):
        return _parse_string(text)[0]
    value = text.split("/", 1)[0].strip()
    if value == "T":
        return True
    if value == "F":
        return False
    if _NUMBER_RE.match(value):
        if "." in value or "e" in value.lower() or "d" in value.lower():
            return float(value.replace("D", "E").replace("d", "e"))
        return int(value)
    return value or None


class MergedHeader:
    """Read-only view of a primary header overlaid by an extension header (extension wins).

    Supports ``key in h``, ``h[key]`` and ``h.get(key, default)`` without copying or parsing
    any card, which is what header translation needs; use `merge_headers` for a real header.
    """

    __slots__ = ("primary", "extension")

    def __init__(self, primary: fits.Header, extension: fits.Header | None) -> None:
        self.primary = primary
        self.extension = extension

    def __contains__(self, key: object) -> bool:
        return (self.extension is not None and key in self.extension) or key in self.primary

    def __getitem__(self, key: str) -> Any:
        if self.extension is not None and key in self.extension:
            return self.extension[key]
        return self.primary[key]

    def get(self, key: str, default: Any = None) -> Any:
        """Value of ``key`` (extension first) or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default


_END_RE = re.compile(r"^END\s*$", re.M)


def headers_from_text(text: str) -> list[fits.Header]:
    """Parse a text dump of FITS headers (80-column cards, one ``END`` per HDU).

    Lines starting with ``#`` (e.g. ``# HDU 1 in file.fits:``) and blank lines are ignored.

    Returns
    -------
    list of astropy.io.fits.Header
        One header per ``END``-terminated block.
    """
    blocks = _END_RE.split(text)
    headers: list[fits.Header] = []
    for block in blocks:
        lines = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
        if not lines:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            headers.append(fits.Header.fromstring("\n".join(lines), sep="\n"))
    return headers


def _add_card(header: fits.Header, key: str, value: Any, comment: str = "") -> None:
    if key in ("COMMENT", "HISTORY"):
        values = value if isinstance(value, list) else [value]
        for v in values:
            header.add_comment(str(v)) if key == "COMMENT" else header.add_history(str(v))
        return
    if len(key) > 8 or " " in key:
        key = f"HIERARCH {key}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        try:
            header.append(fits.Card(key, value, str(comment or "")[:40]), end=True)
        except ValueError:
            header.append(fits.Card(key, str(value)), end=True)


class _PropertyListLoader(yaml.SafeLoader):
    pass


def _construct_propertylist(loader: yaml.SafeLoader, node: yaml.Node) -> list[Any]:
    return loader.construct_sequence(node, deep=True)


_PropertyListLoader.add_constructor("!<lsst.daf.base.PropertyList>", _construct_propertylist)
_PropertyListLoader.add_constructor("tag:yaml.org,2002:lsst.daf.base.PropertyList", _construct_propertylist)
_PropertyListLoader.add_constructor("lsst.daf.base.PropertyList", _construct_propertylist)


def header_from_propertylist_yaml(text: str) -> fits.Header:
    """Parse an LSST ``PropertyList`` YAML dump (or a plain ``key: value`` YAML mapping).

    Returns
    -------
    astropy.io.fits.Header

    Raises
    ------
    ValueError
        If the YAML is neither a PropertyList list of ``[key, type, value, comment]`` nor a mapping.
    """
    data = yaml.load(text, Loader=_PropertyListLoader)  # noqa: S506 - SafeLoader subclass
    header = fits.Header()
    if isinstance(data, dict):
        for key, value in data.items():
            _add_card(header, str(key), value)
        return header
    if not isinstance(data, list):
        raise ValueError("header YAML must be a PropertyList list or a key: value mapping")
    for entry in data:
        if not isinstance(entry, (list, tuple)) or len(entry) < 3:
            continue
        key, _type, value = entry[0], entry[1], entry[2]
        comment = entry[3] if len(entry) > 3 else ""
        _add_card(header, str(key), value, comment)
    return header


def load_header_dump(path: str | os.PathLike[str]) -> list[fits.Header]:
    """Load a header dump file: ``*.header`` text (all HDUs) or PropertyList/plain YAML (one).

    Parameters
    ----------
    path : str or path-like
        ``.yaml``/``.yml`` files are parsed with `header_from_propertylist_yaml`, anything else
        with `headers_from_text`.

    Returns
    -------
    list of astropy.io.fits.Header
    """
    path = Path(path)
    text = path.read_text(errors="replace")
    if path.suffix in (".yaml", ".yml"):
        return [header_from_propertylist_yaml(text)]
    return headers_from_text(text)
