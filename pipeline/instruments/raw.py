"""Reading raw files: `read_raw` and the butler's `RawFormatter` for the ``raw`` dataset type.

A raw `Exposure` holds the *untrimmed integer* image of one detector exactly as stored (int16 with
BZERO 32768 comes out as uint16 0..65535), an empty mask, zero variance, the detector geometry
with per-file header overrides applied (e.g. MegaCam GAINA/GAINB, RDNOISEA/RDNOISEB), the
translated exposure info and, as metadata, the primary header merged with the detector's HDU header.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from butler import Formatter
from pipeline.image.exposure import Exposure, MaskedImage
from pipeline.image.fits import bbox_parameter, clean_header, metadata_from_header_text
from pipeline.image.geometry import Box

from .headers import FastHeader, MergedHeader, RawFileError, merge_headers, read_headers
from .instrument import BUILTIN_INSTRUMENTS, Instrument, get_instrument, instrument_for_headers
from .translator import TranslationError

__all__ = ["RawFormatter", "read_raw"]


def _find_instrument(headers: list[fits.Header], source: str) -> Instrument:
    inst = instrument_for_headers(headers[0], [get_instrument(n) for n in BUILTIN_INSTRUMENTS])
    if inst is None:
        raise TranslationError(
            f"{source}: no built-in instrument matches this file (INSTRUME={headers[0].get('INSTRUME')!r}); "
            "pass instrument= a camera description"
        )
    return inst


def read_raw(
    path: str | os.PathLike[str],
    instrument: Instrument | str | None = None,
    detector: int | None = None,
    *,
    bbox: Box | None = None,
    repo_root: str | os.PathLike[str] | None = None,
) -> Exposure:
    """Read one detector of a raw file as an untrimmed integer `Exposure`.

    Parameters
    ----------
    path : str or path-like
        Plain, gzipped or tile-compressed FITS raw.
    instrument : Instrument or str, optional
        The instrument (or its name / camera YAML path); found from the header when omitted.
    detector : int, optional
        Detector id; required for multi-detector files unless the file holds one detector.
    bbox : Box, optional
        Read only this region of the raw detector image (raw coordinates).
    repo_root : str or path-like, optional
        Repository whose registered instruments may be named.

    Returns
    -------
    Exposure
        Image shape ``(ny, nx)`` = the detector's ``raw_shape`` (or ``bbox.shape``), integer dtype.

    Raises
    ------
    RawFileError
        If the file is not readable FITS.
    TranslationError
        If the headers cannot be translated or the detector is not in the file.
    """
    source = os.fspath(path)
    headers = read_headers(path, fast=True)  # keyword lookups only; 2 headers are fully parsed below
    if instrument is None:
        inst = _find_instrument(headers, source)
    elif isinstance(instrument, Instrument):
        inst = instrument
    else:
        inst = get_instrument(instrument, repo_root=repo_root)
    pairs = inst.translator.detectors_in_headers(headers, source)
    if detector is None:
        if len(pairs) != 1:
            raise TranslationError(
                f"{source} holds {len(pairs)} detectors of {inst.name}; pass detector= one of "
                f"{[d for d, _ in pairs][:10]}..."
            )
        det_id, hdu = pairs[0]
    else:
        found = [h for d, h in pairs if d == int(detector)]
        if not found:
            raise TranslationError(f"{source} holds no pixels of {inst.name} detector {detector}")
        det_id, hdu = int(detector), found[0]
    ext_header = headers[hdu] if hdu else None
    view = MergedHeader(headers[0], ext_header)
    info = inst.translate(view, hdu, detector=det_id, source=source).to_exposure_info()
    det = inst.detector_for_raw(det_id, ext_header if ext_header is not None else headers[0])
    if ext_header is None and isinstance(headers[0], FastHeader):
        # one header: its cards as they are, plain cards read without astropy's per-card lookups
        metadata: Any = metadata_from_header_text(headers[0].text)
    else:
        merged = merge_headers(headers[0].to_header(), None if ext_header is None else ext_header.to_header())
        metadata = clean_header(merged)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                hdu_obj = hdul[hdu]
                if bbox is None:
                    data = np.asarray(hdu_obj.data)
                else:
                    data = np.asarray(hdu_obj.section[Box.coerce(bbox).slices])
    except Exception as exc:  # noqa: BLE001 - astropy's errors for truncated data vary
        raise RawFileError(
            f"{source}: cannot read the pixels of HDU {hdu} ({type(exc).__name__}: {exc})"
        ) from None
    if data.ndim != 2:
        raise RawFileError(f"{source}: HDU {hdu} holds a {data.ndim}-D array, expected a 2-D image")
    if bbox is None and det.raw_shape != (0, 0) and data.shape != det.raw_shape:
        raise RawFileError(
            f"{source}: HDU {hdu} image is {data.shape} (ny, nx) but the {inst.name} camera description says "
            f"detector {det.name} raw_shape is {det.raw_shape}; fix raw_shape in the camera YAML"
        )
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    xy0 = (0, 0) if bbox is None else (Box.coerce(bbox).x0, Box.coerce(bbox).y0)
    mi = MaskedImage(data, xy0=xy0)
    return Exposure(mi, metadata=metadata, detector=det, info=info)


class RawFormatter(Formatter):
    """Butler formatter for ingested raws (storage class ``Exposure``, read only).

    ``read`` uses the ref's data ID (instrument, detector) to find the detector's HDU.
    Read parameters: ``bbox`` (raw coordinates).
    """

    extension = ".fits"

    def read(
        self,
        path: str | os.PathLike[str],
        ref: Any = None,
        parameters: Mapping[str, Any] | None = None,
        repo_root: str | os.PathLike[str] | None = None,
    ) -> Exposure:
        """Read the raw of ``ref``'s detector from ``path``.

        Raises
        ------
        ValueError
            On unknown read parameters.
        RawFileError, TranslationError
            See `read_raw`.
        """
        bbox = bbox_parameter(parameters, "raw")
        instrument = None
        detector = None
        if ref is not None:
            data_id = ref.data_id
            instrument = data_id["instrument"]
            detector = data_id["detector"]
        return read_raw(Path(path), instrument, detector, bbox=bbox, repo_root=repo_root)

    def write(self, obj: Any, path: str | os.PathLike[str], ref: Any = None) -> None:
        """Raws are ingested, never written by the butler.

        Raises
        ------
        TypeError
            Always.
        """
        raise TypeError("raw datasets are read-only: ingest raw files with ingest_raws (butler ingest-raws)")
