"""FITS persistence of `Exposure` (multi-extension file) and the butler formatter.

File layout (one file per exposure)::

    HDU 0  PRIMARY   no data; the exposure's metadata (`PropertyList`) as header cards
    HDU 1  IMAGE     the image plane (its dtype: float32, or the raw integer type)
    HDU 2  MASK      int32 bit planes; header cards ``MP_<NAME> = bit`` (HIERARCH for long names)
    HDU 3  VARIANCE  float32, ADU²
    HDU 4  ARCHIVE   binary table, one row: JSON of the detector, exposure info, photo-calib and
                     transmission curve

Every image extension carries ``LTV1 = -x0``, ``LTV2 = -y0`` (IRAF convention) for the origin
``xy0``. Sub-image reads use astropy's ``ImageHDU.section`` so only the rows of the requested
box are read from disk.

This is the only module that turns the in-memory metadata (`~pipeline.image.metadata.PropertyList`)
into FITS cards (`header_from_metadata`) and back (`metadata_from_header`).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from butler import Formatter

from .exposure import Exposure, ExposureInfo, MaskedImage
from .geometry import Box, Detector
from .metadata import PropertyList

__all__ = [
    "write_exposure",
    "read_exposure",
    "ExposureFormatter",
    "bbox_parameter",
    "clean_header",
    "header_from_metadata",
    "metadata_from_header",
    "metadata_from_header_text",
    "ExposureFitsError",
]

_STRUCTURAL = {
    "SIMPLE",
    "XTENSION",
    "BITPIX",
    "EXTEND",
    "PCOUNT",
    "GCOUNT",
    "BZERO",
    "BSCALE",
    "BLANK",
    "EXTNAME",
    "EXTVER",
    "CHECKSUM",
    "DATASUM",
    "TFIELDS",
    "ZIMAGE",
    "ZBITPIX",
    "ZCMPTYPE",
    "ZSIMPLE",
    "ZEXTEND",
    "ZBLOCKED",
    "ZTENSION",
    "ZPCOUNT",
    "ZGCOUNT",
    "ZHECKSUM",
    "ZDATASUM",
    "ZQUANTIZ",
    "ZDITHER0",
    "ZBLANK",
    "ZTILELEN",
    "INHERIT",
    "LTV1",
    "LTV2",
}
_STRUCTURAL_PREFIXES = (
    "NAXIS",
    "ZNAXIS",
    "ZTILE",
    "ZNAME",
    "ZVAL",
    "TTYPE",
    "TFORM",
    "TUNIT",
    "TDIM",
    "TNULL",
    "TSCAL",
    "TZERO",
    "TDISP",
    "MP_",
)


class ExposureFitsError(ValueError):
    """A file is not a readable ccdflow Exposure FITS file."""


def clean_header(header: fits.Header) -> fits.Header:
    """Copy of ``header`` without structural/compression keywords (NAXIS, BZERO, EXTNAME...).

    Parameters
    ----------
    header : astropy.io.fits.Header
        Any FITS header.

    Returns
    -------
    astropy.io.fits.Header
        The descriptive cards only, safe to put on another HDU.
    """
    out = fits.Header()
    for card in header.cards:
        if _is_structural(card.keyword):
            continue
        try:
            out.append(card, end=True)
        except (ValueError, fits.VerifyError):  # unparseable card: skip it, keep the rest
            continue
    return out


def _is_structural(key: str) -> bool:
    return key in _STRUCTURAL or key.startswith(_STRUCTURAL_PREFIXES) or key == "END"


_STANDARD_KEYWORD = re.compile(r"[A-Z0-9_-]{0,8}")


def header_from_metadata(metadata: PropertyList | Mapping[str, Any]) -> fits.Header:
    """FITS header holding the descriptive keywords of ``metadata``.

    Parameters
    ----------
    metadata : PropertyList or mapping
        Exposure metadata. Keywords that are not standard FITS keywords (longer than 8
        characters, blanks or other characters) become ``HIERARCH`` cards.

    Returns
    -------
    astropy.io.fits.Header
        One card per keyword (one per line of ``COMMENT`` / ``HISTORY``), in order. Structural
        keywords (NAXIS, BZERO, EXTNAME...) and values FITS cannot hold (NaN, containers) are
        left out, as `clean_header` does for a header.
    """
    return fits.Header(_metadata_cards(metadata, own=True))


def _metadata_cards(metadata: PropertyList | Mapping[str, Any], *, own: bool) -> list[fits.Card]:
    """Return the cards of `header_from_metadata`.

    With ``own=False`` the cards may be the shared templates of `_card`: only for a header that
    astropy copies card by card before anything can edit it (``PrimaryHDU(header=...)`` and
    ``ImageHDU(header=...)`` do), which saves one copy per card.
    """
    md = metadata if isinstance(metadata, PropertyList) else PropertyList(metadata)
    cards = []
    for key, value, comment in md.entries():
        if _is_structural(key):
            continue
        name = key if _STANDARD_KEYWORD.fullmatch(key) else f"HIERARCH {key}"
        try:
            card = _card(name, value, comment, own=own)
        except (ValueError, TypeError, fits.VerifyError):
            continue
        cards.append(card)
    return cards


#: Formatted card per ``(keyword, value type, value, comment)``: `_card` copies these.
_CARD_CACHE: dict[tuple[Any, ...], fits.Card] = {}
_CARD_CACHE_MAX = 50_000
#: 80-character card images that passed ``Card.verify("exception")`` (see `_verify_cards`).
_VERIFIED_IMAGES: set[str] = set()


def _card(name: str, value: Any, comment: str | None = None, *, own: bool = True) -> fits.Card:
    """Return a new ``fits.Card(name, value, comment)`` whose 80-character image is formatted.

    astropy formats a card's image once per card, reading its configuration for the value and
    the comment each time (tens of microseconds a card); exposures written by one job repeat
    the same cards. The first card of each ``(name, value type, value, comment)`` is made and
    formatted by astropy and kept; later calls return a shallow copy (same image, own object,
    so editing one header never changes another).

    Parameters
    ----------
    name : str
        Card keyword (``HIERARCH`` prefix included when needed).
    value : Any
        Card value.
    comment : str, optional
        Card comment.
    own : bool, optional
        `False`: return the cached template itself (never to be edited; see
        `_metadata_cards`) instead of a copy.

    Returns
    -------
    astropy.io.fits.Card

    Raises
    ------
    ValueError, TypeError, astropy.io.fits.VerifyError
        As ``fits.Card`` does for a value FITS cannot hold.
    """
    # the value's type is part of the key (True == 1 == 1.0 format differently), and floats
    # are keyed by repr (-0.0 == 0.0 format differently; NaN never equals itself)
    key = (name, type(value), repr(value) if isinstance(value, float) else value, comment)
    try:
        template = _CARD_CACHE.get(key)
    except TypeError:  # unhashable value: astropy decides (usually refuses it)
        return fits.Card(name, value, comment)
    if template is None:
        template = fits.Card(name, value, comment)
        try:
            template.image  # noqa: B018  (format once, while the template is private)
        except (ValueError, fits.VerifyError):
            return template  # not cached: astropy raises again when the file is written
        if len(_CARD_CACHE) >= _CARD_CACHE_MAX:
            _CARD_CACHE.clear()
        _CARD_CACHE[key] = template
    return copy.copy(template) if own else template


def _verify_cards(hdus: list[Any]) -> None:
    """Check every card of ``hdus`` as ``writeto(output_verify="exception")`` does.

    Each distinct card image is verified by astropy once per process; the file is then written
    with ``output_verify="ignore"``, which skips astropy's per-card re-verification (it reads the
    configuration several times per card). ``"exception"`` never changes a card, so the bytes
    written are the same.

    Raises
    ------
    astropy.io.fits.VerifyError
        If a card is not valid FITS (the error ``writeto`` would raise).
    """
    for hdu in hdus:
        for card in hdu.header.cards:
            image = card.image
            if image not in _VERIFIED_IMAGES:
                card.verify("exception")
                if len(_VERIFIED_IMAGES) >= _CARD_CACHE_MAX:
                    _VERIFIED_IMAGES.clear()
                _VERIFIED_IMAGES.add(image)


def metadata_from_header(header: fits.Header) -> PropertyList:
    """`PropertyList` of the descriptive cards of a FITS header (the inverse of `header_from_metadata`).

    Parameters
    ----------
    header : astropy.io.fits.Header
        Any FITS header; structural keywords and cards that cannot be parsed are left out.

    Returns
    -------
    PropertyList
    """
    entries = []
    for card in header.cards:
        try:
            key = card.keyword
            if _is_structural(key):
                continue
            entries.append((key, card.value, card.comment))
        except (ValueError, fits.VerifyError):
            continue
    return PropertyList(entries)


#: The value field (column 11 on) of a card this module reads without astropy: a closed
#: string, a logical, an integer or a plain decimal number, then an optional ``/ comment``.
_PLAIN_VALUE = re.compile(
    r" *(?:'(?P<str>(?:[ -&(-~]|'')*)'|(?P<bool>[TF])|"
    r"(?P<num>[+-]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:E[+-]?[0-9]+)?))"
    r" *(?:/ *(?P<comment>[ -~]*))?"
)
#: A standard keyword (columns 1-8) with a value indicator (columns 9-10).
_PLAIN_KEY = re.compile(r"[A-Z0-9_-]{1,8} *")
#: Keywords astropy reads by their own rules whatever follows them.
_SPECIAL_KEYS = frozenset({"COMMENT", "HISTORY", "HIERARCH", "CONTINUE", "END"})
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _header_entries(text: str) -> list[tuple[str, Any, str]]:
    """``(keyword, value, comment)`` of each card of a header, read as astropy reads them.

    Cards with a standard keyword and a value matching ``_PLAIN_VALUE`` (not continued on
    ``CONTINUE`` cards) are parsed here: astropy reads its configuration several times per card
    (tens of microseconds a card).
    Every other card (commentary, ``HIERARCH``, long strings, complex or ``D``-exponent numbers)
    is given to ``astropy.io.fits.Card.fromstring``; cards astropy cannot parse are left out.

    Parameters
    ----------
    text : str
        The header: 80-character cards, up to (not including) ``END``.

    Returns
    -------
    list of tuple
        One entry per card (a long string and its ``CONTINUE`` cards are one entry).
    """
    images = [text[i : i + 80] for i in range(0, len(text), 80)]
    entries: list[tuple[str, Any, str]] = []
    i, n = 0, len(images)
    while i < n:
        image = images[i]
        j = i + 1
        while j < n and images[j].startswith("CONTINUE"):
            j += 1
        m = None
        if j == i + 1 and image[8:10] == "= " and _PLAIN_KEY.fullmatch(image[:8]):
            key = image[:8].rstrip()
            if key not in _SPECIAL_KEYS:
                m = _PLAIN_VALUE.fullmatch(image, 10)
        if m is not None:
            value: Any
            if m.group("str") is not None:
                value = m.group("str").replace("''", "'").rstrip()
            elif m.group("bool") is not None:
                value = m.group("bool") == "T"
            else:
                num = m.group("num")
                value = int(num) if _INTEGER.fullmatch(num) else float(num)
            entries.append((key, value, (m.group("comment") or "").rstrip()))
        else:
            try:
                card = fits.Card.fromstring("".join(images[i:j]))
                entries.append((card.keyword, card.value, card.comment))
            except (ValueError, fits.VerifyError):
                pass
        i = j
    return entries


def metadata_from_header_text(text: str) -> PropertyList:
    """`metadata_from_header` of ``fits.Header.fromstring(text)``, without astropy for plain cards.

    Plain cards (most of a raw or exposure header) are parsed here, the others by astropy (see
    `_header_entries`); the result equals astropy's reading, about ten times quicker.

    Parameters
    ----------
    text : str
        The header: 80-character cards, up to (not including) ``END``.

    Returns
    -------
    PropertyList
    """
    return PropertyList([e for e in _header_entries(text) if not _is_structural(e[0])])


def _primary_header_text(fh: Any) -> str:
    """Cards of the primary header of an open binary FITS file, up to (not including) ``END``.

    Raises
    ------
    ExposureFitsError
        If the file ends before an ``END`` card.
    """
    cards: list[str] = []
    while True:
        block = fh.read(2880)
        if len(block) < 2880:
            raise ExposureFitsError("FITS header without an END card")
        text = block.decode("ascii", errors="replace")
        for i in range(0, 2880, 80):
            card = text[i : i + 80]
            if card.startswith("END") and not card[3:].strip():
                cards.append(text[:i])
                return "".join(cards)
        cards.append(text)


def _mask_header(mask_planes: Mapping[str, int]) -> fits.Header:
    cards = []
    for name, bit in sorted(mask_planes.items(), key=lambda kv: kv[1]):
        key = f"MP_{name}"
        cards.append(_card(f"HIERARCH {key}" if len(key) > 8 else key, int(bit), own=False))
    return fits.Header(cards)


def _mask_planes_from_header(hdr: fits.Header) -> dict[str, int]:
    planes: dict[str, int] = {}
    for card in hdr.cards:
        if card.keyword.startswith("MP_"):
            planes[card.keyword[3:]] = int(card.value)
    return planes


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in an Exposure FITS file (not JSON-able)")


def write_exposure(exposure: Exposure, path: str | os.PathLike[str]) -> None:
    """Write an exposure to a multi-extension FITS file (layout in the module docstring).

    Parameters
    ----------
    exposure : Exposure
        The exposure; the image keeps its dtype, mask is int32 and variance float32.
    path : str or path-like
        Output file; overwritten if it exists.

    Raises
    ------
    TypeError
        If ``photo_calib`` or ``transmission_curve`` are not JSON-able.
    """
    mi = exposure.masked_image
    x0, y0 = mi.xy0
    # the HDUs copy the cards of the headers given (templates of `_card`, not copied here)
    primary = fits.PrimaryHDU(header=fits.Header(_metadata_cards(exposure.metadata, own=False)))
    hdus: list[Any] = [primary]
    for name, data in (("IMAGE", mi.image), ("MASK", mi.mask), ("VARIANCE", mi.variance)):
        hdr = _mask_header(mi.mask_planes) if name == "MASK" else fits.Header()
        hdr.extend([_card("LTV1", -x0, own=False), _card("LTV2", -y0, own=False)])
        hdu = fits.ImageHDU(data=np.ascontiguousarray(data), header=hdr, name=name)
        hdus.append(hdu)
    archive = {
        "detector": None if exposure.detector is None else exposure.detector.to_dict(),
        "info": exposure.info.to_dict(),
        "photo_calib": exposure.photo_calib,
        "transmission_curve": exposure.transmission_curve,
    }
    text = json.dumps(archive, default=_json_default, allow_nan=True)
    # ASCII bytes (json.dumps escapes the rest): a str column would be encoded and blank-stripped
    # by astropy one character position at a time on every write
    data = np.array([text.encode("ascii")])
    col = fits.Column(name="JSON", format=f"{max(len(text), 1)}A", array=data)
    hdus.append(fits.BinTableHDU.from_columns([col], name="ARCHIVE"))
    _verify_cards(hdus)
    fits.HDUList(hdus).writeto(os.fspath(path), overwrite=True, output_verify="ignore")


def read_exposure(path: str | os.PathLike[str], bbox: Box | None = None) -> Exposure:
    """Read an exposure written by `write_exposure`.

    Parameters
    ----------
    path : str or path-like
        The FITS file.
    bbox : Box, optional
        Read only this region (parent coordinates, i.e. including the stored origin); only the
        needed rows are read from disk. The returned exposure has ``xy0 = (bbox.x0, bbox.y0)``.

    Returns
    -------
    Exposure

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ExposureFitsError
        If the file lacks the IMAGE extension or ``bbox`` is outside the image.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such Exposure file: {path}")
    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        try:
            img_hdu = hdul["IMAGE"]
        except KeyError:
            raise ExposureFitsError(
                f"{path} is not a ccdflow Exposure file (no IMAGE extension); raw files are read "
                "with pipeline.instruments.raw.RawFormatter"
            ) from None
        ihdr = img_hdu.header
        x0 = -int(ihdr.get("LTV1", 0))
        y0 = -int(ihdr.get("LTV2", 0))
        full = Box(x0, y0, int(ihdr["NAXIS1"]), int(ihdr["NAXIS2"]))
        if bbox is None:
            box = full
        else:
            box = Box.coerce(bbox)
            if not full.contains(box):
                raise ExposureFitsError(f"requested {box} is outside the image {full} of {path}")
        local = box.shifted(-x0, -y0).slices

        def _get(name: str) -> np.ndarray | None:
            try:
                hdu = hdul[name]
            except KeyError:
                return None
            if bbox is None:
                return np.array(hdu.data)
            return np.array(hdu.section[local])

        image = _get("IMAGE")
        mask = _get("MASK")
        variance = _get("VARIANCE")
        planes = _mask_planes_from_header(hdul["MASK"].header) if mask is not None else None
        if image is not None and image.dtype.byteorder not in ("=", "|"):
            image = image.astype(image.dtype.newbyteorder("="))
        with open(path, "rb") as fh:
            metadata = metadata_from_header_text(_primary_header_text(fh))
        archive: dict[str, Any] = {}
        try:
            table = hdul["ARCHIVE"].data
            archive = json.loads(table["JSON"][0])
        except KeyError:
            pass
    mi = MaskedImage(image, mask, variance, mask_planes=planes or None, xy0=(box.x0, box.y0))
    det = archive.get("detector")
    info = archive.get("info")
    return Exposure(
        mi,
        metadata=metadata,
        detector=None if det is None else Detector.from_dict(det),
        info=ExposureInfo() if info is None else ExposureInfo.from_dict(info),
        photo_calib=archive.get("photo_calib"),
        transmission_curve=archive.get("transmission_curve"),
    )


def bbox_parameter(parameters: Mapping[str, Any] | None, what: str) -> Any:
    """Return the ``bbox`` of an image formatter's read parameters (`None` when not given).

    Parameters
    ----------
    parameters : `~collections.abc.Mapping` or `None`
        The butler read parameters.
    what : `str`
        What is read (``"Exposure"``, ``"raw"``), for the error message.

    Returns
    -------
    bbox : `object` or `None`
        ``parameters["bbox"]`` as given (a `Box` or ``(x0, y0, nx, ny)``).

    Raises
    ------
    ValueError
        If ``parameters`` holds a key other than ``bbox``.
    """
    unknown = sorted(k for k in (parameters or {}) if k != "bbox")
    if unknown:
        raise ValueError(f"unknown read parameters for {what}: {unknown}; known: ['bbox']")
    return (parameters or {}).get("bbox")


class ExposureFormatter(Formatter):
    """Butler formatter for the ``Exposure`` storage class (multi-extension FITS).

    Read parameters: ``bbox`` (a `Box`, or ``(x0, y0, nx, ny)``) reads a sub-image.
    """

    extension = ".fits"

    def read(
        self,
        path: str | os.PathLike[str],
        ref: Any = None,
        parameters: Mapping[str, Any] | None = None,
        repo_root: str | os.PathLike[str] | None = None,
    ) -> Exposure:
        """Read the exposure at ``path`` (``parameters['bbox']`` selects a sub-image).

        Raises
        ------
        ValueError
            If ``parameters`` holds a key other than ``bbox``.
        """
        bbox = bbox_parameter(parameters, "Exposure")
        return read_exposure(path, bbox=None if bbox is None else Box.coerce(bbox))

    def write(self, obj: Exposure, path: str | os.PathLike[str], ref: Any = None) -> None:
        """Write ``obj`` to ``path``.

        Raises
        ------
        TypeError
            If ``obj`` is not an `Exposure`.
        """
        if not isinstance(obj, Exposure):
            raise TypeError(f"ExposureFormatter writes Exposure objects, got {type(obj).__name__}")
        write_exposure(obj, path)
