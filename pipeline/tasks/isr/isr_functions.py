"""Pure numpy ISR steps: masking, bias/dark/flat, variance, defects, interpolation, edges.

Every function works on ``(ny, nx)`` numpy planes in place (image float32 ADU, mask int32
bit planes, variance float32 ADU²) and is described in reference-algorithms §1.3-§1.4 and
§2.5-§2.15 (ip_isr ``isrFunctions.py``, meas_algorithms ``Interp.cc``). Reference quirks
(§9) and the behaviour chosen here are stated in each docstring.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from pipeline.image.footprints import grow_mask
from pipeline.image.statistics import clipped_stats, compute_statistic, sample_for_statistics

__all__ = [
    "apply_gains",
    "bias_correction",
    "dark_correction",
    "dark_flat_correction",
    "effective_gain_noise",
    "flat_correction",
    "flat_scale",
    "flagged_pixels",
    "grow_mask",
    "interpolate_from_mask",
    "make_threshold_mask",
    "mask_edges",
    "mask_nans",
    "mask_negative_variance",
    "mask_boxes",
    "sample_for_statistics",
    "set_bad_regions",
    "rows_with_bits",
    "sparse_nonzero",
    "update_variance",
    "widen_saturation_trails",
    "LEGACY_SINGLE_PIXEL_WEIGHTS",
]

_log = logging.getLogger(__name__)

#: Linear-prediction weights of meas_algorithms' legacy interpolator for one bad pixel with
#: two good pixels on each side: (x[-2], x[-1], x[+1], x[+2]) (reference §2.11).
LEGACY_SINGLE_PIXEL_WEIGHTS = (-0.2737, 0.7737, 0.7737, -0.2737)

#: Edge runs longer than this are filled with the fallback value beyond this distance.
_EDGE_RUN = 6


#: Pixels per block of the blocked plane arithmetic: a few float32 planes of one block stay
#: in the L2 cache between the operations applied to it.
_BLOCK_PIXELS = 1 << 16


def _block_rows(shape: tuple[int, ...]) -> int:
    return max(1, _BLOCK_PIXELS // max(int(shape[-1]), 1))


def _row_blocks(shape: tuple[int, ...]):
    """Yield row slices of about `_BLOCK_PIXELS` pixels (bounds full-image temporaries)."""
    ny, block = int(shape[0]), _block_rows(shape)
    for y in range(0, ny, block):
        yield slice(y, min(y + block, ny))


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """Return a reusable float32 buffer of one `_row_blocks` block (no page faults per block)."""
    return np.empty((min(_block_rows(shape), int(shape[0])), int(shape[1])), np.float32)


def sparse_nonzero(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D array in row-major order, several times faster for sparse data.

    Uses a 1-D ``flatnonzero`` of a boolean view and ``divmod`` (2-D ``np.nonzero`` of a large
    int32 array costs ~8× more).
    """
    idx = np.flatnonzero((array != 0).ravel())
    return np.divmod(idx, array.shape[1])


def flagged_pixels(
    mask: np.ndarray, bits: int, block: int = 128
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates and masked values of the pixels with any of ``bits`` set, row-major order.

    Parameters
    ----------
    mask : `numpy.ndarray` of int32, shape ``(ny, nx)``
        Mask plane.
    bits : `int`
        Bit values to look for.
    block : `int`
        Rows processed at a time (a small reused scratch buffer instead of full-image
        temporaries).

    Returns
    -------
    ys, xs : `numpy.ndarray` of `int`
        Row and column of each flagged pixel.
    values : `numpy.ndarray` of int32
        ``mask[ys, xs] & bits``, i.e. ``np.nonzero(mask & bits)`` and its values.

    Notes
    -----
    Each block of rows is first reduced to one OR per column (a read-only pass that numpy
    vectorises across the row); only the columns carrying ``bits`` are looked at pixel by
    pixel (bad columns, defects and stars touch few columns). A block where more than
    1/8 of the columns carry a bit is scanned whole.
    """
    ny, nx = mask.shape
    b = np.int32(bits)
    scratch = hit = None
    parts = []
    for y0 in range(0, ny, block):
        y1 = min(y0 + block, ny)
        rows = mask[y0:y1]
        cols = np.flatnonzero(np.bitwise_or.reduce(rows, axis=0) & b)
        if cols.size == 0:
            continue
        if cols.size * 8 <= nx:  # few columns: gather them (row-major within the block)
            sub = rows[:, cols]
            sub &= b
            ly, lk = np.divmod(np.flatnonzero(sub), cols.size)
            parts.append((ly + y0) * nx + cols[lk])
            continue
        if scratch is None:
            scratch = np.empty((min(block, ny), nx), np.int32)
            hit = np.empty((min(block, ny), nx), bool)
        s = scratch[: y1 - y0]
        np.bitwise_and(rows, b, out=s)
        h = hit[: y1 - y0]
        np.not_equal(s, 0, out=h)
        parts.append(np.flatnonzero(h) + y0 * nx)  # nonzero has a fast path for bool only
    idx = np.concatenate(parts) if parts else np.empty(0, np.intp)
    ys, xs = np.divmod(idx, nx)
    return ys, xs, mask[ys, xs] & b


def rows_with_bits(mask: np.ndarray, bits: int, block: int = 128) -> np.ndarray:
    """Return the indices of the rows of ``mask`` holding a pixel with any of ``bits`` set.

    Parameters
    ----------
    mask : `numpy.ndarray` of int32, shape ``(ny, nx)``
        Mask plane.
    bits : `int`
        Bit values to look for.
    block : `int`
        Rows reduced at a time.

    Returns
    -------
    rows : `numpy.ndarray` of `int`
        Increasing row indices, ``np.flatnonzero(np.bitwise_or.reduce(mask, axis=1) & bits)``.

    Notes
    -----
    A block of rows is first reduced to one OR per column (vectorised across the row, unlike
    the per-row reduction); only the blocks carrying ``bits`` are reduced row by row.
    """
    ny = mask.shape[0]
    b = np.int32(bits)
    parts = []
    for y0 in range(0, ny, block):
        rows = mask[y0 : min(y0 + block, ny)]
        if not rows.size or not (np.bitwise_or.reduce(np.bitwise_or.reduce(rows, axis=0)) & b):
            continue
        parts.append(np.flatnonzero(np.bitwise_or.reduce(rows, axis=1) & b) + y0)
    return np.concatenate(parts) if parts else np.empty(0, np.intp)


# --------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------
def make_threshold_mask(image: np.ndarray, threshold: float, grow: int = 0) -> np.ndarray:
    """Select pixels ``>= threshold`` (NaN never selected), optionally grown by a diamond.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Pixel values (ADU).
    threshold : `float`
        Level (ADU); NaN selects nothing.
    grow : `int`, optional
        Diamond growth radius (pixels).

    Returns
    -------
    selected : `numpy.ndarray` of `bool`, shape ``(ny, nx)``

    Notes
    -----
    afw threshold semantics (reference-algorithms §1.4, ip_isr ``makeThresholdMask``).
    """
    if threshold != threshold:
        return np.zeros(image.shape, bool)
    with np.errstate(invalid="ignore"):
        sel = image >= threshold
    return grow_mask(sel, grow) if grow > 0 else sel


def mask_boxes(mask: np.ndarray, boxes: Iterable, bit_value: int) -> int:
    """OR ``bit_value`` into the union of boxes (clipped to the image).

    Parameters
    ----------
    mask : `numpy.ndarray` of int32, shape ``(ny, nx)``
        Mask plane, modified in place.
    boxes : iterable of `pipeline.image.Box` or ``(x0, y0, nx, ny)`` tuples
        Regions, in the mask's (local) coordinates.
    bit_value : `int`
        Value to OR (e.g. ``1 << BAD``).

    Returns
    -------
    n : `int`
        Number of boxes applied (those overlapping the image).
    """
    ny, nx = mask.shape
    n = 0
    v = np.int32(bit_value)
    for b in boxes:
        x0, y0, bw, bh = (b.x0, b.y0, b.nx, b.ny) if hasattr(b, "x0") else tuple(b)
        xa, xb = max(int(x0), 0), min(int(x0 + bw), nx)
        ya, yb = max(int(y0), 0), min(int(y0 + bh), ny)
        if xa < xb and ya < yb:
            mask[ya:yb, xa:xb] |= v
            n += 1
    return n


def widen_saturation_trails(sat: np.ndarray) -> np.ndarray:
    """Widen horizontal spans of saturated pixels (bleed trails).

    Parameters
    ----------
    sat : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
        Saturated pixels.

    Returns
    -------
    widened : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
        Each row span of width ``w`` is extended on both sides (clipped to the image) by
        0 for ``w <= 5``, 1 for ``w`` 6-7, 3 for 8-9 and 4 for ``w >= 10``.

    Notes
    -----
    ip_isr ``widenSaturationTrails`` (reference-algorithms §2.13); vectorised over spans.
    """
    out = sat.copy()
    rows = np.flatnonzero(sat.any(axis=1))
    if rows.size == 0:
        return out
    sub = sat[rows]
    nx = sat.shape[1]
    pad = np.zeros((sub.shape[0], nx + 2), np.int8)
    pad[:, 1:-1] = sub
    d = np.diff(pad, axis=1)
    sr, sc = np.nonzero(d == 1)
    er, ec = np.nonzero(d == -1)  # exclusive ends; same ordering as starts
    w = ec - sc
    extra = np.select([w >= 10, w >= 8, w >= 6], [4, 3, 1], 0)
    for r, a, b, e in zip(sr[extra > 0], sc[extra > 0], ec[extra > 0], extra[extra > 0]):
        out[rows[r], max(a - e, 0) : min(b + e, nx)] = True
    return out


def mask_nans(image: np.ndarray, variance: np.ndarray | None = None) -> np.ndarray:
    """Select every pixel whose image or variance is not finite.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
    variance : `numpy.ndarray`, shape ``(ny, nx)``, optional

    Returns
    -------
    selected : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
        To be ORed with UNMASKEDNAN regardless of other bits (reference §2.12).
    """
    # Fast path: a float32 sum is finite iff every value is (barring a harmless overflow,
    # which only sends us to the exact test).
    clean = bool(np.isfinite(np.add.reduce(image, axis=None)))
    if clean and variance is not None:
        clean = bool(np.isfinite(np.add.reduce(variance, axis=None)))
    if clean:
        return np.zeros(image.shape, bool)
    bad = ~np.isfinite(image)
    if variance is not None:
        bad |= ~np.isfinite(variance)
    return bad


def mask_negative_variance(variance: np.ndarray) -> np.ndarray:
    """Select pixels with variance ``<= 0`` (also exactly 0), reference §2.6.

    Parameters
    ----------
    variance : `numpy.ndarray`, shape ``(ny, nx)``, ADU²

    Returns
    -------
    selected : `numpy.ndarray` of `bool`
    """
    if variance.size and variance.min() > 0:  # usual case; NaN compares False → exact test
        return np.zeros(variance.shape, bool)
    return variance <= 0


def mask_edges(mask: np.ndarray, n: int, bit_value: int, boxes: Sequence | None = None) -> None:
    """OR ``bit_value`` into pixels closer than ``n`` to the border of each box.

    Parameters
    ----------
    mask : `numpy.ndarray` of int32, shape ``(ny, nx)``
        Mask, modified in place.
    n : `int`
        Border width in pixels; 0 does nothing.
    bit_value : `int`
        Value to OR (e.g. ``1 << SUSPECT``).
    boxes : sequence of `pipeline.image.Box`, optional
        Boxes (AMP level: each amp bbox); `None` = the whole image (DETECTOR level).

    Notes
    -----
    ip_isr ``maskEdges`` (reference-algorithms §2.15).
    """
    if n <= 0:
        return
    v = np.int32(bit_value)
    regions = [mask] if boxes is None else [mask[b.slices] for b in boxes]
    for m in regions:
        m[:n, :] |= v
        m[-n:, :] |= v
        m[:, :n] |= v
        m[:, -n:] |= v


# --------------------------------------------------------------------------------------------
# calibration arithmetic (reference §1.3, §2.5)
# --------------------------------------------------------------------------------------------
def _check_same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise RuntimeError(
            f"{what} has shape {b.shape} but the exposure has shape {a.shape}; use a {what} "
            "made for this detector (same assembled, trimmed geometry)"
        )


def bias_correction(
    image: np.ndarray,
    mask: np.ndarray,
    variance: np.ndarray,
    bias_image: np.ndarray,
    bias_mask: np.ndarray | None = None,
    bias_variance: np.ndarray | None = None,
) -> None:
    """Subtract a bias frame in place with MaskedImage semantics.

    Parameters
    ----------
    image, mask, variance : `numpy.ndarray`, shape ``(ny, nx)``
        Exposure planes (ADU, bits, ADU²), modified in place.
    bias_image, bias_mask, bias_variance : `numpy.ndarray`, shape ``(ny, nx)``
        Bias planes; mask ORed, variance added.

    Raises
    ------
    RuntimeError
        If the shapes differ.
    """
    _check_same_shape(image, bias_image, "bias")
    image -= bias_image
    if bias_variance is not None:
        variance += bias_variance
    if bias_mask is not None:
        mask |= bias_mask


def dark_correction(
    image: np.ndarray,
    mask: np.ndarray,
    variance: np.ndarray,
    dark_image: np.ndarray,
    dark_mask: np.ndarray | None,
    dark_variance: np.ndarray | None,
    exp_dark_time: float,
    dark_dark_time: float | None,
    invert: bool = False,
) -> float:
    """Subtract (or re-add) a dark scaled by the dark-time ratio, in place.

    Parameters
    ----------
    image, mask, variance : `numpy.ndarray`, shape ``(ny, nx)``
        Exposure planes.
    dark_image, dark_mask, dark_variance : `numpy.ndarray`, shape ``(ny, nx)``
        Dark planes (ADU for the dark's own dark time).
    exp_dark_time : `float`
        The exposure's dark time, s.
    dark_dark_time : `float` or `None`
        The dark's dark time, s; `None`/NaN → 1.0 with a warning (reference behaviour).
    invert : `bool`
        Re-add the dark (undo).

    Returns
    -------
    scale : `float`
        ``exp_dark_time / dark_dark_time`` used.

    Raises
    ------
    RuntimeError
        If ``exp_dark_time`` is NaN/None ("Exposure darktime is NaN") or the shapes differ.

    Notes
    -----
    ``image -= dark * s``; ``variance += s² var_dark``; mask OR (reference §2.5).
    """
    scale = _dark_scale(exp_dark_time, dark_dark_time)
    _check_same_shape(image, dark_image, "dark")
    s = np.float32(-scale if invert else scale)
    s2 = np.float32(scale * scale)
    tmp = _scratch(image.shape)
    for rows in _row_blocks(image.shape):
        t = tmp[: rows.stop - rows.start]
        _dark_block(image[rows], variance[rows], dark_image[rows], _rows(dark_variance, rows), s, s2, t)
    if dark_mask is not None:
        mask |= dark_mask
    return scale


def _rows(plane: np.ndarray | None, rows: slice) -> np.ndarray | None:
    return None if plane is None else plane[rows]


def _dark_block(
    img: np.ndarray,
    var: np.ndarray,
    dark: np.ndarray,
    dark_var: np.ndarray | None,
    s: np.float32,
    s2: np.float32,
    t: np.ndarray,
) -> None:
    """``img -= s·dark``, ``var += s²·var_dark`` on one block (``t`` is scratch)."""
    np.multiply(dark, s, out=t, casting="unsafe")
    img -= t
    if dark_var is not None:
        np.multiply(dark_var, s2, out=t, casting="unsafe")
        var += t


def _flat_block(
    img: np.ndarray,
    var: np.ndarray,
    flat: np.ndarray,
    flat_var: np.ndarray | None,
    scale: float,
    inv: np.float32,
    r: np.ndarray,
    r2: np.ndarray,
) -> None:
    """Divide one block by ``flat / scale`` with quotient variance (``r``, ``r2`` scratch)."""
    # var_out = (A² vB + B² vA)/B⁴ = r² (vA + out² vB), with r = 1/B, out = A r
    np.divide(np.float32(scale), flat, out=r, casting="unsafe")
    img *= r
    if flat_var is not None:
        np.multiply(img, img, out=r2)
        r2 *= flat_var
        if inv != 1:
            r2 *= inv * inv
        var += r2
    r *= r
    var *= r


def _dark_scale(exp_dark_time: float, dark_dark_time: float | None) -> float:
    if exp_dark_time is None or exp_dark_time != exp_dark_time:
        raise RuntimeError("Exposure darktime is NaN; the raw's exposure info needs a dark_time")
    if dark_dark_time is None or dark_dark_time != dark_dark_time:
        _log.warning("Dark has no dark time (NaN); using darkScale = 1.0")
        dark_dark_time = 1.0
    return float(exp_dark_time) / float(dark_dark_time)


def dark_flat_correction(
    image: np.ndarray,
    mask: np.ndarray,
    variance: np.ndarray,
    dark: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
    exp_dark_time: float,
    dark_dark_time: float | None,
    flat: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
    scaling_type: str = "USER",
    user_scale: float = 1.0,
) -> tuple[float, float, bool]:
    """`dark_correction` then `flat_correction` in one pass over the planes (same result).

    Parameters
    ----------
    image, mask, variance : `numpy.ndarray`, shape ``(ny, nx)``
        Exposure planes (ADU, bits, ADU²), modified in place.
    dark, flat : `tuple` of `numpy.ndarray`
        ``(image, mask, variance)`` of the dark (ADU for its dark time) and the flat; mask
        and variance may be `None`.
    exp_dark_time, dark_dark_time : `float`
        Dark times (s), as `dark_correction`.
    scaling_type, user_scale
        As `flat_correction`.

    Returns
    -------
    dark_scale, flat_scale : `float`
    flat_ok : `bool`
        Every flat pixel is positive and finite (found block by block while in the cache; when
        False the caller masks the offending pixels).

    Raises
    ------
    RuntimeError
        As `dark_correction` and `flat_correction`.

    Notes
    -----
    Each block of rows is dark-subtracted and flat-divided while it is in the cache
    (reference §2.5 arithmetic, unchanged).
    """
    di, dm, dv = dark
    fi, fm, fv = flat
    dscale = _dark_scale(exp_dark_time, dark_dark_time)
    _check_same_shape(image, di, "dark")
    _check_same_shape(image, fi, "flat")
    fscale = flat_scale(fi, scaling_type, user_scale)
    s, s2 = np.float32(dscale), np.float32(dscale * dscale)
    inv = np.float32(1.0 / fscale)
    ta, tb = _scratch(image.shape), _scratch(image.shape)
    flat_ok = True
    with np.errstate(divide="ignore", invalid="ignore"):
        for rows in _row_blocks(image.shape):
            n = rows.stop - rows.start
            img, var = image[rows], variance[rows]
            _dark_block(img, var, di[rows], _rows(dv, rows), s, s2, ta[:n])
            fb = fi[rows]
            if flat_ok and fb.size:
                flat_ok = bool(fb.min() > 0 and fb.max() < np.inf)  # NaN -> False
            _flat_block(img, var, fb, _rows(fv, rows), fscale, inv, ta[:n], tb[:n])
    for m in (dm, fm):
        if m is not None:
            mask |= m
    return dscale, fscale, flat_ok


def flat_scale(flat_image: np.ndarray, scaling_type: str, user_scale: float = 1.0) -> float:
    """Normalisation of a flat (reference §2.5 ``flatScalingType``).

    Parameters
    ----------
    flat_image : `numpy.ndarray`, shape ``(ny, nx)``
        Flat image plane (mask ignored, as the reference).
    scaling_type : {"USER", "MEAN", "MEDIAN"}
    user_scale : `float`
        Scale for USER.

    Returns
    -------
    scale : `float`

    Raises
    ------
    RuntimeError
        For any other scaling type.
    """
    st = scaling_type.upper()
    if st == "USER":
        return float(user_scale)
    if st == "MEAN":
        return compute_statistic(flat_image, "MEAN")
    if st == "MEDIAN":
        return compute_statistic(flat_image, "MEDIAN")
    raise RuntimeError(f"Unknown flatScalingType {scaling_type!r}; use USER, MEAN or MEDIAN")


def flat_correction(
    image: np.ndarray,
    mask: np.ndarray,
    variance: np.ndarray,
    flat_image: np.ndarray,
    flat_mask: np.ndarray | None,
    flat_variance: np.ndarray | None,
    scaling_type: str = "USER",
    user_scale: float = 1.0,
    invert: bool = False,
) -> float:
    """Divide (or multiply back) by ``flat / scale`` in place with quotient variance.

    Parameters
    ----------
    image, mask, variance : `numpy.ndarray`, shape ``(ny, nx)``
        Exposure planes.
    flat_image, flat_mask, flat_variance : `numpy.ndarray`, shape ``(ny, nx)``
        Flat planes (dimensionless).
    scaling_type, user_scale : see `flat_scale`.
    invert : `bool`
        Multiply instead (undo).

    Returns
    -------
    scale : `float`

    Raises
    ------
    RuntimeError
        Shape mismatch or unknown scaling type.

    Notes
    -----
    ``var = (A² var_B + B² var_A) / B⁴`` with ``B = flat/scale`` (reference §1.3).
    """
    _check_same_shape(image, flat_image, "flat")
    scale = flat_scale(flat_image, scaling_type, user_scale)
    inv = np.float32(1.0 / scale)
    tmp_r, tmp_r2 = _scratch(image.shape), _scratch(image.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        for rows in _row_blocks(image.shape):
            img, var = image[rows], variance[rows]
            n = rows.stop - rows.start
            r, r2 = tmp_r[:n], tmp_r2[:n]
            if not invert:
                _flat_block(img, var, flat_image[rows], _rows(flat_variance, rows), scale, inv, r, r2)
            else:
                # Undo: exact inverse of the image operation; the flat's own variance added
                # on the way in is not removed (it is not recoverable from the output).
                np.multiply(flat_image[rows], inv, out=r, casting="unsafe")
                img *= r
                r *= r
                var *= r
    if flat_mask is not None:
        mask |= flat_mask
    return scale


def effective_gain_noise(gain: float, read_noise: float, amp_name: str = "?") -> tuple[float, float]:
    """Apply the gain / read-noise fallbacks used to build the variance plane.

    Parameters
    ----------
    gain : `float`
        Gain, e⁻/ADU.
    read_noise : `float`
        Read noise, e⁻.
    amp_name : `str`
        For log messages.

    Returns
    -------
    gain, read_noise : `float`
        Gain NaN or ``<= 0`` → 1.0 (warning). Read noise NaN or ``< 0`` → 1.0 e⁻ (warning).

    Notes
    -----
    **QUIRK** (reference §2.1 step 6, §9): the reference PTC validator also turns a read
    noise of exactly 0 into 1 e⁻. We implement the intended behaviour: a read noise of 0 from
    the camera description is a valid value (noise-free simulations) and is kept; a PTC read
    noise that is not positive is a failed fit, and `IsrTask` replaces it by the empirical
    overscan noise (or the camera value) before calling this function.
    """
    g = float(gain)
    if not (g > 0):
        _log.warning("amp %s: gain %r is not positive/finite; using 1.0", amp_name, gain)
        g = 1.0
    rn = float(read_noise)
    if not (rn >= 0):
        _log.warning("amp %s: read noise %r is negative/NaN; using 1.0 e-", amp_name, read_noise)
        rn = 1.0
    return g, rn


def update_variance(
    image: np.ndarray, variance: np.ndarray, gain: float, read_noise: float, replace: bool = True
) -> None:
    """Set (or accumulate) the variance from Poisson + read noise, in place.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Image in ADU.
    variance : `numpy.ndarray`, shape ``(ny, nx)``
        Variance plane (ADU²), modified in place.
    gain : `float`
        e⁻/ADU (already validated, see `effective_gain_noise`).
    read_noise : `float`
        e⁻.
    replace : `bool`
        Replace the plane (IsrTask) or add to it (IsrTaskLSST).

    Notes
    -----
    ``v = image / gain + (read_noise / gain)²`` (reference §2.6). Negative image values give
    negative variance; they are masked later by `mask_negative_variance`.
    """
    g = np.float32(gain)
    rn2 = np.float32((read_noise / gain) ** 2)
    tmp = None if replace else _scratch(image.shape)
    for rows in _row_blocks(image.shape):  # both passes of a block while it is in cache
        v = variance[rows]
        if replace:
            np.divide(image[rows], g, out=v)
        else:
            t = tmp[: rows.stop - rows.start]
            np.divide(image[rows], g, out=t)
            v += t
        v += rn2


def apply_gains(image: np.ndarray, variance: np.ndarray, gain: float) -> None:
    """Multiply an amp region by its gain (ADU → e⁻); variance × gain² (reference §2.1 step 23)."""
    g = np.float32(gain)
    image *= g
    variance *= g * g


# --------------------------------------------------------------------------------------------
# statistics on big images
# --------------------------------------------------------------------------------------------
def set_bad_regions(
    image: np.ndarray,
    mask: np.ndarray,
    bad_value: int,
    intrp_value: int,
    statistic: str = "MEANCLIP",
    coords: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[int, float]:
    """Set BAD, not-yet-interpolated pixels to a robust level of the good pixels.

    Parameters
    ----------
    image, mask : `numpy.ndarray`, shape ``(ny, nx)``
        Planes, image modified in place.
    bad_value, intrp_value : `int`
        Values of the BAD and INTRP bits.
    statistic : {"MEANCLIP", "MEDIAN"}
        ``badStatistic``.
    coords : `tuple` of `numpy.ndarray`, optional
        ``(ys, xs, values)`` of flagged pixels from `flagged_pixels`, including every BAD
        pixel, with at least the BAD and INTRP bits in ``values`` (saves a mask scan).

    Returns
    -------
    n, value : `int`, `float`
        Number of pixels set and the value used.

    Notes
    -----
    **QUIRK** (reference §2.1 step 27, §9): the reference ignores ``badStatistic`` and always
    uses MEDIAN. We honour the configured statistic (default MEANCLIP). The statistic is
    computed on a deterministic ≈65k-pixel strided subsample of the non-BAD pixels for speed.
    """
    ys, xs, vals = flagged_pixels(mask, bad_value | intrp_value) if coords is None else coords
    sel = (vals & np.int32(bad_value | intrp_value)) == bad_value
    n = int(np.count_nonzero(sel))
    if n == 0:
        return 0, float("nan")
    ys, xs = ys[sel], xs[sel]
    sample = sample_for_statistics(image, max_samples=1 << 16, mask=mask, exclude_bits=bad_value)
    if statistic.upper() == "MEDIAN":
        value = float(np.median(sample)) if sample.size else 0.0
    else:
        value = clipped_stats(sample)[0] if sample.size else 0.0
    image[ys, xs] = value
    return n, value


# --------------------------------------------------------------------------------------------
# interpolation (reference §2.11)
# --------------------------------------------------------------------------------------------
def interpolate_from_mask(
    image: np.ndarray,
    bad: np.ndarray,
    fallback: float | None = None,
    coords: tuple[np.ndarray, np.ndarray] | None = None,
    bits: int | None = None,
) -> int:
    """Replace bad pixels by row-wise (along x) interpolation, in place.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Image (ADU), modified in place.
    bad : `numpy.ndarray` of `bool` or int, shape ``(ny, nx)``
        Pixels to replace (non-zero = bad).
    fallback : `float`, optional
        Value for pixels far from good data; default = MEANCLIP of the good pixels
        (computed on a subsample, and only when needed).
    coords : `tuple` of `numpy.ndarray`, optional
        ``np.nonzero(bad)`` if already computed (row-major order).
    bits : `int`, optional
        If given, ``bad`` is a mask plane and a pixel is bad when ``bad & bits`` is non-zero
        (no full-image selection plane is built).

    Returns
    -------
    n : `int`
        Number of pixels replaced (the caller ORs INTRP onto ``bad``).

    Notes
    -----
    Follows the legacy meas_algorithms interpolator (reference §2.11) row by row:

    * a single bad pixel with two good pixels on each side gets the linear-prediction
      weights ``(-0.2737, 0.7737, 0.7737, -0.2737)``;
    * any other interior run is linearly interpolated between the nearest good pixels on
      each side (weights sum to 1; constants and linear gradients are preserved). The
      reference uses tabulated prediction weights for longer runs; this is a documented
      simplification;
    * runs touching an image edge: if longer than 6 pixels, all but the 6 pixels nearest the
      good data get the fallback and those 6 are linearly interpolated between the fallback
      and the nearest good pixel; shorter edge runs take the nearest good value;
    * a run spanning a whole row gets the fallback.

    Fully vectorised over the bad pixels (no per-run Python loop, no full-image temporaries):
    runs are found from the row-major list of bad pixels, whose neighbours just outside each
    run are by construction good (or outside the image).
    """
    if coords is not None:
        r_i, x_i = coords
    elif bits is not None:
        r_i, x_i, _ = flagged_pixels(bad, bits)
    else:
        r_i, x_i = sparse_nonzero(bad)
    if r_i.size == 0:
        return 0
    bitv = None if bits is None else np.int32(bits)

    def is_good(v: np.ndarray) -> np.ndarray:
        return v == 0 if bitv is None else (v & bitv) == 0

    ny, nx = bad.shape
    new_run = np.ones(r_i.size, bool)
    new_run[1:] = (r_i[1:] != r_i[:-1]) | (x_i[1:] != x_i[:-1] + 1)
    starts = np.flatnonzero(new_run)
    run_id = np.cumsum(new_run) - 1
    ends = np.append(starts[1:], r_i.size) - 1
    run_row = r_i[starts]
    L = (x_i[starts] - 1)[run_id]  # good pixel left of the run (or -1)
    R = (x_i[ends] + 1)[run_id]  # good pixel right of the run (or nx)
    rows = r_i
    vals = np.empty(r_i.size, dtype=np.float64)
    interior = (L >= 0) & (R < nx)
    if interior.any():
        ri, li, rr_ = rows[interior], L[interior], R[interior]
        vl = image[ri, li].astype(np.float64)
        vr = image[ri, rr_].astype(np.float64)
        t = (x_i[interior] - li) / (rr_ - li)
        v_int = vl + (vr - vl) * t
        single = (rr_ - li == 2) & (li >= 1) & (rr_ + 1 < nx)
        if single.any():
            rs, a, b = ri[single], li[single], rr_[single]
            ok = is_good(bad[rs, a - 1]) & is_good(bad[rs, b + 1])
            w = LEGACY_SINGLE_PIXEL_WEIGHTS
            pred = (
                w[0] * image[rs, a - 1].astype(np.float64)
                + w[1] * image[rs, a].astype(np.float64)
                + w[2] * image[rs, b].astype(np.float64)
                + w[3] * image[rs, b + 1].astype(np.float64)
            )
            tmp = v_int[single]
            tmp[ok] = pred[ok]
            v_int[single] = tmp
        vals[interior] = v_int
    edge = ~interior
    if edge.any():
        Le, Re, xe, re = L[edge], R[edge], x_i[edge], rows[edge]
        whole = (Le < 0) & (Re >= nx)
        left_edge = (Le < 0) & (Re < nx)  # run touches x = 0, good data on the right
        run_len = np.where(left_edge, Re, nx - 1 - Le)
        dist = np.where(left_edge, Re - xe, xe - Le)  # distance to the good pixel (>= 1)
        good_idx = np.clip(np.where(left_edge, Re, Le), 0, nx - 1)
        gv = image[re, good_idx].astype(np.float64)
        long_run = run_len > _EDGE_RUN
        if (whole.any() or long_run.any()) and fallback is None:
            sample = (
                sample_for_statistics(image, bad == 0)
                if bitv is None
                else sample_for_statistics(image, mask=bad, exclude_bits=int(bitv))
            )
            fallback = clipped_stats(sample)[0] if sample.size else 0.0
            if fallback != fallback:
                fallback = 0.0
        fb = 0.0 if fallback is None else float(fallback)
        ev = gv.copy()
        far = long_run & (dist > _EDGE_RUN)
        ev[far] = fb
        near = long_run & (dist <= _EDGE_RUN)
        # linear between the fallback (at distance 7) and the good pixel (distance 0)
        tt = dist[near] / (_EDGE_RUN + 1)
        ev[near] = gv[near] + (fb - gv[near]) * tt
        ev[whole] = fb
        vals[edge] = ev
    del run_row
    image[r_i, x_i] = vals.astype(image.dtype, copy=False)
    return int(r_i.size)
