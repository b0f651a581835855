"""Intra-detector crosstalk correction (pure numpy).

Reference-algorithms §2.8 (ip_isr ``crosstalk.py``). The coefficient matrix is indexed
``coeffs[source, target]``: the fraction of the source amplifier's signal that appears in
the target amplifier. (**QUIRK**, §9: the reference docstring says the opposite, its code and
tests use ``[source, target]``; we adopt ``[source, target]`` everywhere, including the
``Detector.crosstalk`` attribute.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.image import Exposure
from pipeline.image.statistics import median

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.image import Amplifier, Box

__all__ = [
    "correct_exposure_crosstalk",
    "correct_interchip_sources",
    "crosstalk_correct",
    "crosstalk_correct_interchip",
    "crosstalk_coefficients",
    "flip_to",
    "needs_flip",
]

_RIGHT = ("LR", "UR")
_UPPER = ("UL", "UR")


def needs_flip(source_corner: str, target_corner: str) -> tuple[bool, bool]:
    """Whether a source amp must be mirrored in x / y to match the target's readout corner.

    Parameters
    ----------
    source_corner, target_corner : `str`
        ``"LL"``, ``"LR"``, ``"UL"`` or ``"UR"``.

    Returns
    -------
    flip_x, flip_y : `bool`
        x-flip iff exactly one corner is on the right (LR/UR); y-flip iff exactly one is upper.
    """
    s, t = str(source_corner), str(target_corner)
    return (s in _RIGHT) != (t in _RIGHT), (s in _UPPER) != (t in _UPPER)


def flip_to(
    data: np.ndarray, source_corner: str, target_corner: str, extra: tuple[bool, bool] = (False, False)
) -> np.ndarray:
    """Return ``data`` (a source amp, ``(ny, nx)``) re-oriented to the target's readout corner.

    ``extra`` XORs additional x/y flips (regions stored in a raw frame that is itself flipped
    with respect to the assembled one).
    """
    fx, fy = needs_flip(source_corner, target_corner)
    fx, fy = fx != extra[0], fy != extra[1]
    if fy:
        data = data[::-1, :]
    if fx:
        data = data[:, ::-1]
    return data


def _background_method(background: str | None) -> str:
    """Return the validated ``crosstalkBackgroundMethod`` (empty or `None` → ``"None"``)."""
    bg = background if background else "None"
    if bg not in ("None", "AMP", "DETECTOR"):
        raise RuntimeError(f"Unknown crosstalk background method {background!r}; use None, AMP or DETECTOR")
    return bg


def crosstalk_correct(
    image: np.ndarray,
    mask: np.ndarray | None,
    variance: np.ndarray | None,
    amps: "list[Amplifier]",
    coeffs: np.ndarray,
    *,
    boxes: "list[Box] | None" = None,
    coeffs_sqr: np.ndarray | None = None,
    background: str = "None",
    min_pixel_to_mask: float = 45000.0,
    crosstalk_bit: int = 0,
    bad_bit: int = 1,
    raw_flips: "list[tuple[bool, bool]] | None" = None,
) -> int:
    """Subtract crosstalk from every target amplifier, single pass, in place.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Image (ADU), corrected in place.
    mask : `numpy.ndarray` of int32, optional
        Mask; target pixels fed by a bright source pixel get ``crosstalk_bit``.
    variance : `numpy.ndarray`, optional
        Variance; ``+= sum_s c_st² var_s``.
    amps : list of `pipeline.image.Amplifier`
        Amplifiers (their ``readout_corner``; ``bbox`` unless ``boxes`` is given).
    coeffs : `numpy.ndarray`, shape ``(n_amp, n_amp)``
        ``coeffs[source, target]``; non-finite entries and the diagonal are ignored.
    boxes : list of `pipeline.image.Box`, optional
        Region of each amp in ``image`` (default ``amp.bbox``; pass ``raw_data_bbox`` for an
        untrimmed image).
    coeffs_sqr : `numpy.ndarray`, optional
        Quadratic coefficients (``c2[source, target]``) applied to ``flip(S)²``.
    background : {"None", "AMP", "DETECTOR"}
        Background subtracted from each source before scaling.
    min_pixel_to_mask : `float`
        Source pixels ``>= min_pixel_to_mask + median(source)`` flag the target pixels.
    crosstalk_bit : `int`
        Value of the CROSSTALK mask bit (0 disables masking).
    bad_bit : `int`
        Excluded from the source medians.
    raw_flips : list of ``(flip_x, flip_y)``, optional
        For regions in an untrimmed raw frame: each amp's ``(raw_flip_x, raw_flip_y)``. The
        readout-corner flip rule holds in the assembled frame; in the raw frame the source is
        additionally flipped by ``raw_flip_s XOR raw_flip_t``.

    Returns
    -------
    n_masked : `int`
        Number of target pixels given the CROSSTALK bit.

    Raises
    ------
    RuntimeError
        If the matrix is not ``(n_amp, n_amp)``, amp regions differ in shape, or the
        background type is unknown.

    Notes
    -----
    ``T_t -= sum_s [c_st flip_{s->t}(S_s - b_s) + c2_st flip_{s->t}(S_s)²]`` using the
    uncorrected image for every source (reference §2.8).
    """
    n = len(amps)
    c = np.array(coeffs, dtype=np.float64)
    if c.shape != (n, n):
        raise RuntimeError(f"crosstalk matrix has shape {c.shape} but the detector has {n} amplifiers")
    c[~np.isfinite(c)] = 0.0
    np.fill_diagonal(c, 0.0)
    c2 = None
    if coeffs_sqr is not None:
        c2 = np.array(coeffs_sqr, dtype=np.float64)
        c2[~np.isfinite(c2)] = 0.0
        np.fill_diagonal(c2, 0.0)
    boxes = [a.bbox for a in amps] if boxes is None else list(boxes)
    shapes = {b.shape for b in boxes}
    if len(shapes) != 1:
        raise RuntimeError(f"crosstalk correction needs equal-size amplifier regions, got {sorted(shapes)}")
    bg = _background_method(background)
    sources = [image[b.slices].astype(np.float32, copy=True) for b in boxes]
    src_mask = None if mask is None else [(mask[b.slices] & bad_bit) != 0 for b in boxes]
    src_var = None if variance is None else [variance[b.slices].copy() for b in boxes]
    meds = [
        median(s, None if src_mask is None else m)
        for s, m in zip(sources, src_mask if src_mask is not None else [None] * n)
    ]
    if bg == "DETECTOR":
        det_med = median(image)
        bkg = [det_med] * n
    elif bg == "AMP":
        bkg = meds
    else:
        bkg = [0.0] * n
    bright = None
    if mask is not None and crosstalk_bit:
        bright = [s >= (min_pixel_to_mask + (m if m == m else 0.0)) for s, m in zip(sources, meds)]
    n_masked = 0
    for t, (amp_t, box_t) in enumerate(zip(amps, boxes)):
        tgt = image[box_t.slices]
        corner_t = str(amp_t.readout_corner)
        flag = None
        for s, amp_s in enumerate(amps):
            cst = c[s, t]
            c2st = 0.0 if c2 is None else c2[s, t]
            if cst == 0 and c2st == 0:
                continue
            corner_s = str(amp_s.readout_corner)
            ex = (False, False)
            if raw_flips is not None:
                ex = (raw_flips[s][0] != raw_flips[t][0], raw_flips[s][1] != raw_flips[t][1])
            src = flip_to(sources[s], corner_s, corner_t, ex)
            if cst != 0:
                if bkg[s]:
                    tgt -= np.float32(cst) * (src - np.float32(bkg[s]))
                else:
                    tgt -= np.float32(cst) * src
                if src_var is not None:
                    variance[box_t.slices] += np.float32(cst * cst) * flip_to(
                        src_var[s], corner_s, corner_t, ex
                    )
            if c2st != 0:
                tgt -= np.float32(c2st) * src * src
            if bright is not None:
                fb = flip_to(bright[s], corner_s, corner_t, ex)
                flag = fb if flag is None else (flag | fb)
        if flag is not None and flag.any():
            mask[box_t.slices][flag] |= np.int32(crosstalk_bit)
            n_masked += int(flag.sum())
    return n_masked


def crosstalk_correct_interchip(
    image: np.ndarray,
    variance: np.ndarray | None,
    amps: "list[Amplifier]",
    source_image: np.ndarray,
    source_amps: "list[Amplifier]",
    coeffs: np.ndarray,
    *,
    source_variance: np.ndarray | None = None,
    background: str = "None",
    bad_mask: np.ndarray | None = None,
) -> None:
    """Subtract crosstalk from another detector's amplifiers (inter-chip), in place.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Assembled target image (ADU), corrected in place; amps at ``amp.bbox``.
    variance : `numpy.ndarray`, optional
        Target variance; ``+= c² var_s`` when ``source_variance`` is given.
    amps : list of `pipeline.image.Amplifier`
        Target amplifiers (``bbox``, ``readout_corner``).
    source_image : `numpy.ndarray`
        Assembled image of the source detector (ADU), amps at ``source_amp.bbox``.
    source_amps : list of `pipeline.image.Amplifier`
        Source amplifiers.
    coeffs : `numpy.ndarray`, shape ``(n_source_amp, n_target_amp)``
        ``coeffs[source, target]``; non-finite entries are ignored.
    source_variance : `numpy.ndarray`, optional
    background : {"None", "AMP", "DETECTOR"}
        Background (median) removed from each source amp first.
    bad_mask : `numpy.ndarray` of `bool`, optional
        Source pixels excluded from the medians.

    Raises
    ------
    RuntimeError
        Matrix shape mismatch, unequal amp sizes, or an unknown background method.

    Notes
    -----
    LSST ``CrosstalkTask`` inter-chip correction (``CrosstalkCalib.interChip``): the same
    ``T_t -= c_st flip_{s->t}(S_s - b_s)`` as intra-chip (reference §2.8), with the sources
    taken from the other detector's image.
    """
    c = np.array(coeffs, dtype=np.float64)
    if c.shape != (len(source_amps), len(amps)):
        raise RuntimeError(
            f"inter-chip crosstalk matrix has shape {c.shape}; expected (source amps, target amps) = "
            f"({len(source_amps)}, {len(amps)})"
        )
    c[~np.isfinite(c)] = 0.0
    bg = _background_method(background)
    shapes = {a.bbox.shape for a in amps} | {a.bbox.shape for a in source_amps}
    if len(shapes) != 1:
        raise RuntimeError(f"inter-chip crosstalk needs equal-size amplifier regions, got {sorted(shapes)}")
    if bg == "DETECTOR":
        det_med = median(source_image, bad_mask)
    for s, amp_s in enumerate(source_amps):
        if not np.any(c[s]):
            continue
        src = source_image[amp_s.bbox.slices].astype(np.float32)
        if bg == "AMP":
            b = median(src, None if bad_mask is None else bad_mask[amp_s.bbox.slices])
        else:
            b = det_med if bg == "DETECTOR" else 0.0
        if b and b == b:
            src -= np.float32(b)
        for t, amp_t in enumerate(amps):
            cst = c[s, t]
            if cst == 0:
                continue
            corner_s, corner_t = str(amp_s.readout_corner), str(amp_t.readout_corner)
            image[amp_t.bbox.slices] -= np.float32(cst) * flip_to(src, corner_s, corner_t)
            if variance is not None and source_variance is not None:
                sv = source_variance[amp_s.bbox.slices]
                variance[amp_t.bbox.slices] += np.float32(cst * cst) * flip_to(sv, corner_s, corner_t)


def correct_exposure_crosstalk(
    mi: Any,
    detector: Any,
    coeffs: np.ndarray,
    coeffs_sqr: np.ndarray | None,
    *,
    trimmed: bool,
    background: str,
    min_pixel_to_mask: float,
    mask_plane: str,
) -> int:
    """Intra-detector crosstalk of a raw (untrimmed) or assembled exposure, in place.

    Parameters
    ----------
    mi : `pipeline.image.MaskedImage`
        Exposure planes (ADU).
    detector : `pipeline.image.Detector`
        Amplifiers (raw data boxes and flips when not ``trimmed``).
    coeffs, coeffs_sqr : `numpy.ndarray`, shape ``(n_amp, n_amp)``
        Linear and (optional) quadratic coefficients ``[source, target]``.
    trimmed : `bool`
        The exposure is assembled and trimmed (amp ``bbox``) rather than raw.
    background, min_pixel_to_mask, mask_plane
        ``crosstalkBackgroundMethod``, ``minPixelToMask`` (ADU), ``crosstalkMaskPlane``.

    Returns
    -------
    n : `int`
        As `crosstalk_correct`.
    """
    amps = list(detector)
    return crosstalk_correct(
        mi.image,
        mi.mask,
        mi.variance,
        amps,
        coeffs,
        boxes=[a.bbox if trimmed else a.raw_data_bbox for a in amps],
        raw_flips=None if trimmed else [(a.raw_flip_x, a.raw_flip_y) for a in amps],
        coeffs_sqr=coeffs_sqr,
        background=background,
        min_pixel_to_mask=min_pixel_to_mask,
        crosstalk_bit=mi.get_plane_bitmask(mask_plane, add=True),
        bad_bit=mi.get_plane_bitmask("BAD"),
    )


def correct_interchip_sources(
    mi: Any,
    detector: Any,
    inter: Mapping[str, np.ndarray],
    sources: Iterable[Any],
    background: str,
) -> list[str]:
    """Subtract the inter-chip crosstalk of each source detector, in place.

    Parameters
    ----------
    mi : `pipeline.image.MaskedImage`
        Assembled, trimmed planes of the target detector (ADU).
    detector : `pipeline.image.Detector`
        The target detector.
    inter : mapping [`str`, `numpy.ndarray`]
        Coefficients per source detector name (``CrosstalkCalib.interChip``).
    sources : iterable of `pipeline.image.Exposure` (or deferred handles with ``get()``)
        Overscan-corrected, assembled, trimmed exposures of other detectors.
    background : `str`
        ``crosstalkBackgroundMethod``.

    Returns
    -------
    names : `list` [`str`]
        Source detectors applied.

    Raises
    ------
    RuntimeError
        A source is not an assembled, trimmed exposure with its detector.
    """
    done = []
    for src in sources:
        src = src.get() if hasattr(src, "get") and not isinstance(src, Exposure) else src
        det = getattr(src, "detector", None)
        if not isinstance(src, Exposure) or det is None:
            raise RuntimeError(
                "each crosstalkSources entry must be an Exposure of another detector with its "
                f"detector attached (got {type(src).__name__})"
            )
        if det.name == detector.name or det.name not in inter:
            continue
        if src.shape != det.bbox.shape:
            raise RuntimeError(
                f"crosstalk source {det.name!r} has shape {src.shape}, not its assembled, trimmed "
                f"shape {det.bbox.shape}; pass overscan-corrected, assembled source exposures"
            )
        bad = None
        if "BAD" in src.masked_image.mask_planes:
            bad = (src.mask & src.masked_image.get_plane_bitmask("BAD")) != 0
        crosstalk_correct_interchip(
            mi.image,
            mi.variance,
            list(detector),
            src.image,
            list(det),
            inter[det.name],
            source_variance=src.variance,
            background=background,
            bad_mask=bad,
        )
        done.append(det.name)
    return done


def crosstalk_coefficients(
    calib: Any, detector: Any, config_values: np.ndarray | None = None, quadratic: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Choose the coefficients: the config's, else the calibration's, else the camera's.

    Parameters
    ----------
    calib : `CrosstalkCalib` or `None`
        Calibration (``coeffs``, ``coeffs_sqr``).
    detector : `pipeline.image.Detector`
        Its ``crosstalk`` matrix is the last resort.
    config_values : `numpy.ndarray`, optional
        ``crosstalkValues`` reshaped, when ``useConfigCoefficients``.
    quadratic : `bool`
        ``doQuadraticCrosstalkCorrection``.

    Returns
    -------
    coeffs : `numpy.ndarray`
        Linear coefficients ``[source, target]``.
    coeffs_sqr : `numpy.ndarray` or `None`
        Quadratic coefficients when ``quadratic``.

    Raises
    ------
    RuntimeError
        ``quadratic`` without quadratic coefficients in the calibration.
    """
    sqr = None
    if config_values is not None:
        coeffs = config_values
    elif calib is not None:
        coeffs, sqr = calib.coeffs, calib.coeffs_sqr
    else:
        coeffs = detector.crosstalk
    if quadratic and sqr is None:
        raise RuntimeError(
            "doQuadraticCrosstalkCorrection needs quadratic coefficients (coeffs_sqr) in the "
            "crosstalk calibration"
        )
    return coeffs, sqr if quadratic else None
