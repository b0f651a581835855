"""Exposure-level masking and interpolation steps of ISR (pure functions over a `MaskedImage`).

Each function works in place on the planes of one `pipeline.image.MaskedImage` and returns
what it computed (a count, a level, the pixels touched); none keeps state. The pixel kernels
are in `isr_functions` (reference-algorithms §2.5-§2.11, ip_isr ``isrFunctions.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.image import Box, MaskedImage

from . import isr_functions as F  # noqa: N812

__all__ = [
    "AmpMaskResult",
    "box_maxima",
    "grow_planes",
    "InterpolationResult",
    "interpolate_planes",
    "mask_amplifier",
    "mask_bad_flat",
    "mask_defects",
    "mask_nan",
    "mask_negative_variance",
    "mask_parallel_bleeds",
    "mask_vignette",
    "threshold_mask",
    "widen_saturation_mask",
    "widen_saturation_mask_inventory",
]


@dataclass(frozen=True)
class AmpMaskResult:
    """Result of `mask_amplifier`.

    Attributes
    ----------
    bad : `bool`
        The whole amplifier is unusable (covered by defects, or every data pixel flagged).
    saturation : `float` or `None`
        Saturation level used (ADU); `None` when saturation masking is off or the amp is
        covered by defects.
    """

    bad: bool
    saturation: float | None


#: Row and column step of the sample tested before a whole amp (`mask_amplifier`).
_SAMPLE_STEP = 64


def mask_amplifier(
    mi: MaskedImage,
    amp: Any,
    defects: Any,
    *,
    saturation: float | None,
    saturated_plane: str,
    suspect_plane: str | None,
    data_max: float | None = None,
) -> AmpMaskResult:
    """Mask saturated and suspect pixels in the amp's raw box (reference §2.1 step 5a).

    Parameters
    ----------
    mi : `pipeline.image.MaskedImage`
        Raw (untrimmed) planes; the mask is updated in place.
    amp : `pipeline.image.Amplifier`
        Raw boxes, ``suspect_level`` (ADU).
    defects : `Defects` or `None`
        An amp covered by defects is masked BAD and reported bad.
    saturation : `float` or `None`
        Saturation level (ADU; ``inf`` = none); `None` = no saturation masking.
    saturated_plane, suspect_plane : `str`
        Mask planes; ``suspect_plane=None`` = no suspect masking.
    data_max : `float`, optional
        NaN-ignoring maximum of the amp's raw box (ADU) when already known (`box_maxima`);
        computed here otherwise.

    Returns
    -------
    result : `AmpMaskResult`
    """
    if defects is not None and defects.covers(amp.bbox):
        mi.mask[amp.raw_bbox.slices] |= np.int32(mi.get_plane_bitmask("BAD"))
        return AmpMaskResult(True, None)
    data = mi.image[amp.raw_bbox.slices]
    mask = mi.mask[amp.raw_bbox.slices]
    flagged = np.int32(0)
    levels = []
    if saturation is not None and math.isfinite(saturation):
        levels.append((saturation, saturated_plane))
    if suspect_plane is not None and math.isfinite(amp.suspect_level):
        levels.append((amp.suspect_level, suspect_plane))
    # One reduction (NaN-ignoring maximum) decides whether any pixel reaches a level
    # (usually none) before building the full selection.
    if data_max is None:
        data_max = float(np.fmax.reduce(data, axis=None)) if data.size and levels else float("nan")
    dmax = data_max
    # an integer raw (kept so by IsrTask until the assembly) is compared as its float32 values
    as_float = np.issubdtype(data.dtype, np.integer)
    for level, plane in levels:
        sel = None
        if dmax >= level:
            if as_float and data.dtype.itemsize <= 2:
                # exact in float32: converted inside the comparison loop (no float32 copy of
                # the amp) to the dtype that float32 and ``level`` promote to, as in
                # ``data.astype(np.float32) >= level``
                dt = np.result_type(np.float32, level)
                sel = np.greater_equal(data, level, signature=(dt, dt, np.bool_))
            else:
                sel = (data.astype(np.float32) if as_float else data) >= level
        if sel is not None and sel.any():
            bit = np.int32(mi.get_plane_bitmask(plane, add=True))
            mask[sel] |= bit
            flagged |= bit
        else:
            mi.add_mask_plane(plane)
    if flagged:
        dmask = mi.mask[amp.raw_data_bbox.slices]
        # a sparse sample first: an amp is rarely flagged everywhere, and one unflagged
        # pixel of the sample already answers (the full test only when the sample passes)
        if np.all(dmask[::_SAMPLE_STEP, ::_SAMPLE_STEP] & flagged) and np.all(dmask & flagged):
            mi.mask[amp.raw_bbox.slices] |= np.int32(mi.get_plane_bitmask("BAD"))
            return AmpMaskResult(True, saturation)
    return AmpMaskResult(False, saturation)


def box_maxima(image: np.ndarray, boxes: Mapping[str, Box]) -> dict[str, float]:
    """NaN-ignoring maximum of ``image`` in each box (``numpy.fmax`` reduction; NaN if all NaN).

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Plane (e.g. the raw image, ADU).
    boxes : mapping [`str`, `pipeline.image.Box`]
        Regions inside ``image`` (e.g. each amp's raw box).

    Returns
    -------
    maxima : `dict` [`str`, `float`]
        Per box, the same value as ``numpy.fmax.reduce(image[box.slices], axis=None)``
        (NaN for an empty box).

    Notes
    -----
    Boxes sharing their rows are reduced together: one column-wise maximum over whole rows
    of the band, then the maximum of each box's columns. A reduction over an amp's view pays
    numpy's per-row overhead on every one of its short rows; the maximum is exact either way.
    """
    bands: dict[tuple[int, int], list[tuple[str, Box]]] = {}
    for name, box in boxes.items():
        bands.setdefault((box.y0, box.y1), []).append((name, box))
    out: dict[str, float] = {}
    for (y0, y1), members in bands.items():
        x0 = min(b.x0 for _, b in members)
        x1 = max(b.x1 for _, b in members)
        if y1 <= y0 or x1 <= x0:
            cols = None
        else:
            cols = np.fmax.reduce(image[y0:y1, x0:x1], axis=0)
        for name, b in members:
            if cols is None or b.nx == 0:
                out[name] = float("nan")
            else:
                out[name] = float(np.fmax.reduce(cols[b.x0 - x0 : b.x1 - x0]))
    return out


def threshold_mask(mi: MaskedImage, box: Box, level: float, plane: str) -> int:
    """OR ``plane`` onto pixels ``>= level`` inside ``box``; return how many (0 for a NaN level)."""
    bit = np.int32(mi.get_plane_bitmask(plane, add=True))
    if not math.isfinite(level):
        return 0
    sel = F.make_threshold_mask(mi.image[box.slices], level)
    mi.mask[box.slices][sel] |= bit
    return int(np.count_nonzero(sel))


def mask_parallel_bleeds(mi: MaskedImage, detector: Any, threshold: float, grow: int) -> None:
    """OR SAT onto every amp's parallel overscan where any amp's overscan reaches ``threshold``.

    The union of the thresholded (and ``grow``-grown) parallel overscans of all amps is used,
    as in LSST ``maskParallelOverscanAmp``; amps with differently shaped overscans are skipped.
    """
    sat_bit = np.int32(mi.get_plane_bitmask("SAT"))
    union = None
    boxes = [a.raw_parallel_overscan_bbox for a in detector if not a.raw_parallel_overscan_bbox.is_empty]
    if not boxes or len({b.shape for b in boxes}) != 1:
        return
    for b in boxes:
        sel = F.make_threshold_mask(mi.image[b.slices], threshold, grow)
        union = sel if union is None else (union | sel)
    if union is not None and union.any():
        for b in boxes:
            mi.mask[b.slices][union] |= sat_bit


def mask_nan(mi: MaskedImage) -> int:
    """OR UNMASKEDNAN onto every non-finite image or variance pixel; return the count."""
    bad = F.mask_nans(mi.image, mi.variance)
    n = int(np.count_nonzero(bad))
    if n:
        bit = np.int32(mi.get_plane_bitmask("UNMASKEDNAN", add=True))
        np.bitwise_or(mi.mask, bit, out=mi.mask, where=bad)
    else:
        mi.add_mask_plane("UNMASKEDNAN")
    return n


def mask_negative_variance(mi: MaskedImage, plane: str) -> None:
    """OR ``plane`` onto pixels whose variance is <= 0 (or NaN)."""
    bad = F.mask_negative_variance(mi.variance)
    bit = np.int32(mi.get_plane_bitmask(plane, add=True))
    if np.count_nonzero(bad):
        np.bitwise_or(mi.mask, bit, out=mi.mask, where=bad)


def mask_defects(mi: MaskedImage, defects: Any) -> None:
    """OR BAD onto the defect boxes (assembled detector coordinates)."""
    boxes = defects.boxes if hasattr(defects, "boxes") else list(defects)
    F.mask_boxes(mi.mask, boxes, mi.get_plane_bitmask("BAD"))


def mask_bad_flat(mi: MaskedImage, flat: np.ndarray) -> None:
    """OR BAD where the flat is not positive and finite (then set/interpolated as defects)."""
    # Two SIMD reductions instead of two full boolean temporaries when the flat is clean
    # (the usual case); NaN makes the comparison False and takes the masking path.
    if flat.size and flat.min() > 0 and flat.max() < np.inf:
        return
    good = flat > 0
    good &= flat < np.inf
    if not good.all():
        bit = np.int32(mi.get_plane_bitmask("BAD"))
        np.bitwise_or(mi.mask, bit, out=mi.mask, where=~good)


def widen_saturation_mask(mi: MaskedImage, plane: str) -> None:
    """Widen saturation trails along rows (`isr_functions.widen_saturation_trails`) in place."""
    if plane not in mi.mask_planes:
        return
    bit = np.int32(mi.get_plane_bitmask(plane))
    sy = F.rows_with_bits(mi.mask, bit)  # rows holding SAT pixels
    if sy.size:
        # Widening acts along rows only: process the band of rows holding SAT pixels.
        band = slice(int(sy[0]), int(sy[-1]) + 1)
        wide = F.widen_saturation_trails((mi.mask[band] & bit) != 0)
        np.bitwise_or(mi.mask[band], bit, out=mi.mask[band], where=wide)


def widen_saturation_mask_inventory(
    mi: MaskedImage, plane: str, bits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`widen_saturation_mask`, returning the flagged-pixel inventory of the result from one scan.

    Parameters
    ----------
    mi : `pipeline.image.MaskedImage`
        Planes; the mask is widened in place exactly as `widen_saturation_mask` does.
    plane : `str`
        Saturation mask plane.
    bits : `int`
        Bits of the inventory (e.g. BAD | SAT | INTRP and the planes to interpolate).

    Returns
    -------
    ys, xs, values : `numpy.ndarray`
        ``isr_functions.flagged_pixels(mi.mask, bits)`` of the widened mask (row-major
        order; values ``mask & bits``, int32).

    Notes
    -----
    One `isr_functions.flagged_pixels` scan of the mask for ``bits`` and the saturation bit
    gives the saturated rows (what `isr_functions.rows_with_bits` finds); the widened pixels
    are merged into it, so a caller that would scan the mask again for ``bits`` (the
    flagged-pixel inventory of the bad-region, interpolation and statistics steps) reads
    the plane once instead of twice when nothing changes the mask in between.
    """
    nx = mi.mask.shape[1]
    sat = np.int32(mi.get_plane_bitmask(plane)) if plane in mi.mask_planes else np.int32(0)
    ys, xs, vals = F.flagged_pixels(mi.mask, int(bits) | int(sat))
    if sat:
        sat_rows = ys[(vals & sat) != 0]
        if sat_rows.size:
            band = slice(int(sat_rows[0]), int(sat_rows[-1]) + 1)  # row-major: sorted rows
            wide = F.widen_saturation_trails((mi.mask[band] & sat) != 0)
            np.bitwise_or(mi.mask[band], sat, out=mi.mask[band], where=wide)
            idx = np.union1d(ys * nx + xs, np.flatnonzero(wide) + band.start * nx)
            ys, xs = np.divmod(idx, nx)
    b = np.int32(bits)
    vals = mi.mask[ys, xs] & b
    keep = vals != 0
    if not keep.all():
        ys, xs, vals = ys[keep], xs[keep], vals[keep]
    return ys, xs, vals


def mask_vignette(
    mi: MaskedImage, x_center: float, y_center: float, radius: float, do_mask: bool, value: float
) -> None:
    """Mask (VIGNETTED, NO_DATA) and/or set to ``value`` the pixels outside a circle (pixels)."""
    ny, nx = mi.shape
    yy, xx = np.ogrid[:ny, :nx]
    outside = (xx - x_center) ** 2 + (yy - y_center) ** 2 > radius**2
    if do_mask and outside.any():
        mi.mask[outside] |= np.int32(mi.get_plane_bitmask(["VIGNETTED", "NO_DATA"]))
    if math.isfinite(value):
        mi.image[outside] = np.float32(value)


@dataclass(frozen=True)
class InterpolationResult:
    """Result of `interpolate_planes`: count and coordinates of the interpolated pixels."""

    n: int
    ys: np.ndarray
    xs: np.ndarray


def interpolate_planes(
    mi: MaskedImage,
    planes: Iterable[str],
    *,
    saturated_plane: str,
    grow_saturation: int,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> InterpolationResult:
    """Interpolate over ``planes`` (``saturated_plane`` grown first) and set INTRP.

    Parameters
    ----------
    mi : `pipeline.image.MaskedImage`
        Assembled planes, changed in place.
    planes : iterable of `str`
        Mask planes to interpolate over (absent ones are ignored).
    saturated_plane : `str`
        The saturation plane, grown by ``grow_saturation`` pixels before interpolation.
    grow_saturation : `int`
        Growth radius (pixels).
    coords : tuple of `numpy.ndarray`, optional
        ``(ys, xs, values)`` from `isr_functions.flagged_pixels` with a superset of the
        planes' bits: avoids a scan of the mask. Works on sparse coordinates and the mask plane
        itself (no full-image temporaries).

    Returns
    -------
    result : `InterpolationResult`
    """
    empty = np.empty(0, np.intp)
    planes = [p for p in planes if p in mi.mask_planes]
    if not planes:
        return InterpolationResult(0, empty, empty)
    bits = np.int32(mi.get_plane_bitmask(planes))
    if coords is None:
        ys, xs, _ = F.flagged_pixels(mi.mask, bits)
    else:
        sel = (coords[2] & bits) != 0
        ys, xs = coords[0][sel], coords[1][sel]
    if ys.size == 0:
        return InterpolationResult(0, empty, empty)
    grow = grow_saturation
    if saturated_plane in planes and grow > 0:
        sat_bit = np.int32(mi.get_plane_bitmask(saturated_plane))
        is_sat = (mi.mask[ys, xs] & sat_bit) != 0
        if is_sat.any():
            sy, sx = ys[is_sat], xs[is_sat]
            ny, nx = mi.shape
            win = (
                slice(max(int(sy.min()) - grow, 0), min(int(sy.max()) + 1 + grow, ny)),
                slice(max(int(sx.min()) - grow, 0), min(int(sx.max()) + 1 + grow, nx)),
            )
            mwin = mi.mask[win]
            sat = (mwin & sat_bit) != 0
            new = F.grow_mask(sat, grow) & ~sat
            was_flagged = (mwin[new] & bits) != 0
            mwin[new] |= sat_bit
            wy, wx = np.nonzero(new)
            keep = ~was_flagged
            if keep.any():
                ys = np.concatenate([ys, wy[keep] + win[0].start])
                xs = np.concatenate([xs, wx[keep] + win[1].start])
                order = np.lexsort((xs, ys))
                ys, xs = ys[order], xs[order]
    n = F.interpolate_from_mask(mi.image, mi.mask, coords=(ys, xs), bits=int(bits))
    if n:
        mi.mask[ys, xs] |= np.int32(mi.get_plane_bitmask("INTRP"))
    return InterpolationResult(n, ys, xs)


def grow_planes(mi: MaskedImage, planes: Sequence[str], radius: int) -> None:
    """Grow each of ``planes`` by ``radius`` pixels (diamond, reference §1.4) in place."""
    for plane in planes:
        if plane not in mi.mask_planes:
            continue
        bit = np.int32(mi.get_plane_bitmask(plane))
        sel = (mi.mask & bit) != 0
        if sel.any():
            grown = F.grow_mask(sel, radius)
            np.bitwise_or(mi.mask, bit, out=mi.mask, where=grown)
