"""Bias, variance and linearity in one pass per amplifier and block of rows (ISR steps 10-12).

The same arithmetic, in the same order, as `isr_functions.bias_correction`, then
`isr_functions.update_variance` (the plane replaced), then `linearize.apply_linearity`;
``tests/isr/test_fast_paths.py`` checks that the results are identical. While a block is in
the cache the pass also records whether every value was finite and the smallest variance,
so the task can skip the full-image NaN and negative-variance scans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.image import Box

from .binning import PassThumbnails
from .isr_functions import _block_rows, _check_same_shape, _dark_block, _flat_block
from .linearize import apply_linearity

__all__ = ["BiasVarianceLinearityResult", "amp_runs", "bias_variance_linearity"]


@dataclass(frozen=True)
class BiasVarianceLinearityResult:
    """What the fused pass measured.

    Attributes
    ----------
    finite : `bool`
        Every image and variance value of the amp regions is finite afterwards.
    min_variance : `float`
        Smallest variance (ADU²; NaN-sensitive: ``inf`` if no pixel, NaN propagates as not > 0).
    n_out_of_range : `int`
        Lookup-table linearity clamps.
    flat_ok : `bool`
        With ``dark_flat``: every flat pixel is positive and finite (else the caller masks
        the offending ones, `masking.mask_bad_flat`).
    nonfinite, nonpositive_variance : `numpy.ndarray` of `int` or `None`
        With ``dark_flat``: flat indices into the image of the pixels whose image or variance
        was not finite, and of those whose variance was ``<= 0``, after the linearity and
        before the dark (what NaN and negative-variance masking would find there).
    """

    finite: bool
    min_variance: float
    n_out_of_range: int
    flat_ok: bool = True
    nonfinite: np.ndarray | None = None
    nonpositive_variance: np.ndarray | None = None


def bias_variance_linearity(
    image: np.ndarray,
    variance: np.ndarray,
    bias: np.ndarray,
    gains: Mapping[str, float],
    noises: Mapping[str, float],
    amp_boxes: Mapping[str, Box],
    linearizer: Any = None,
    dark_flat: tuple[tuple[Any, Any, float], tuple[Any, Any, float]] | None = None,
    thumbnails: PassThumbnails | None = None,
) -> BiasVarianceLinearityResult:
    """Subtract the bias, replace the variance and linearize, amp by amp (then dark and flat).

    Parameters
    ----------
    image, variance : `numpy.ndarray`, shape ``(ny, nx)``
        Assembled planes (ADU, ADU²) changed in place; every pixel of ``variance`` inside the
        amp boxes is replaced (the bias variance is not used, reference §2.6).
    bias : `numpy.ndarray`, shape ``(ny, nx)``
        Bias image (ADU). Its mask is not handled here.
    gains, noises : mapping [`str`, `float`]
        Gain (e⁻/ADU) and read noise (e⁻) per amp.
    amp_boxes : mapping [`str`, `pipeline.image.Box`]
        Each amp's region.
    linearizer : `Linearizer`, optional
        Per-amp linearity; `None` = no linearity correction.
    dark_flat : `tuple`, optional
        ``((dark image, dark variance or None, dark scale), (flat image, flat variance or
        None, flat scale))``, planes of the image's shape: the dark (ADU, scaled) is
        subtracted and the image divided by ``flat / scale`` in the same pass, exactly as
        `isr_functions.dark_flat_correction` (masks are the caller's). Only valid when the amp
        boxes cover the image and nothing between the linearity and the dark changes pixel
        values; the NaN and negative-variance pixels before the dark are returned.
    thumbnails : `binning.PassThumbnails`, optional
        Thumbnails planned for ``amp_runs(amp_boxes)``: ``before`` gets each block before
        the bias, ``after`` after the last operation of the pass (the caller calls
        ``finish``).

    Returns
    -------
    result : `BiasVarianceLinearityResult`

    Raises
    ------
    RuntimeError
        If the bias shape differs from the image's.

    Notes
    -----
    ``image -= bias``; ``variance = image / gain + (noise / gain)²``; then the amp's
    (pixel-wise) linearity correction. Amps side by side (`amp_runs`) are processed together,
    in blocks of whole rows, with the gain, ``(noise / gain)²`` and a Squared linearity
    coefficient as one float32 value per column: each pixel sees the same float32 operations
    as in the per-amp computation, so the planes are bit for bit the same.
    """
    _check_same_shape(image, bias, "bias")
    lin = linearizer
    n_out = 0
    vmin = np.inf
    finite = True
    flat_ok = True
    bad_nan: list[np.ndarray] = []
    bad_var: list[np.ndarray] = []
    if dark_flat is not None:
        (di, dv, dscale), (fi, fv, fscale) = dark_flat
        _check_same_shape(image, di, "dark")
        _check_same_shape(image, fi, "flat")
        s_d, s_d2 = np.float32(dscale), np.float32(dscale * dscale)
        inv = np.float32(1.0 / fscale)
    nx_img = image.shape[1]
    for y0, y1, x0, x1, members in amp_runs(amp_boxes):
        width = x1 - x0
        g = np.empty(width, np.float32)
        rn2 = np.empty(width, np.float32)
        c_sq = np.empty(width, np.float32)
        per_amp = []  # (name, a0, a1, type, coeffs) of amps with a linearity to apply
        for name, a0, a1 in members:
            g[a0:a1] = np.float32(gains[name])
            rn2[a0:a1] = np.float32((noises[name] / gains[name]) ** 2)
            ltype = lin.linearity_type.get(name, "None") if lin is not None else "None"
            coeffs = lin.linearity_coeffs.get(name, ()) if lin is not None else ()
            if ltype not in ("None", "Proportional", "", None):
                per_amp.append((name, a0, a1, ltype, coeffs))
                c0 = float(coeffs[0]) if ltype == "Squared" and len(coeffs) else 0.0
                c_sq[a0:a1] = np.float32(c0)
        # one vectorised Squared correction when every amp of the run has an active one
        # (an amp without correction must keep its non-finite pixels unchanged)
        squared = len(per_amp) == len(members) and all(
            t == "Squared" and float(c_sq[a0]) != 0 and c_sq[a0] == c_sq[a0] for _, a0, _, t, _ in per_amp
        )
        cols = slice(x0, x1)
        block = _block_rows((width,))
        if thumbnails is not None:  # whole thumbnail cells per block
            block = max(block - block % thumbnails.factor, thumbnails.factor)
        # scratch blocks: the Squared linearity and the dark share the first (fewer blocks
        # live in the cache at once)
        ta = np.empty((min(block, y1 - y0), width), np.float32) if squared or dark_flat else None
        if dark_flat is not None:
            tb = np.empty_like(ta)
        for r0 in range(y0, y1, block):
            rows = slice(r0, min(r0 + block, y1))
            blk, vb = image[rows, cols], variance[rows, cols]
            if thumbnails is not None:
                thumbnails.add("before", blk, r0)
            blk -= bias[rows, cols]
            np.divide(blk, g, out=vb)
            vb += rn2
            bmin = float(vb.min()) if vb.size else np.inf
            # np.minimum: a NaN propagates (Python's min would drop it or keep it depending
            # on the order)
            vmin = float(np.minimum(vmin, bmin))
            # every value finite <=> -inf < min and max < inf (a NaN propagates through both
            # reductions and fails the comparisons); checked while the block is in the cache
            block_finite = _finite_range(bmin, vb)
            if squared:
                t = ta[: rows.stop - rows.start]
                np.multiply(c_sq, blk, out=t)  # as linearize_squared: v *= 1 + c0 v
                np.add(1, t, out=t)
                blk *= t
            else:
                for _, a0, a1, ltype, coeffs in per_amp:
                    n_out += apply_linearity(blk[:, a0:a1], ltype, coeffs, lin.table)
            # the variance (image / gain + const) carries any non-finite pre-linearity pixel
            if per_amp and block_finite and blk.size:
                block_finite = _finite_range(float(blk.min()), blk)
            finite = finite and block_finite
            if dark_flat is None:
                if thumbnails is not None:
                    thumbnails.add("after", blk, r0)
                continue
            n = rows.stop - rows.start
            if not block_finite:  # what NaN masking would find before the dark
                bad = ~np.isfinite(blk)
                bad |= ~np.isfinite(vb)
                bad_nan.append(_image_index(np.flatnonzero(bad), r0, x0, width, nx_img))
            if not bmin > 0:  # what negative-variance masking would find
                bad_var.append(_image_index(np.flatnonzero(vb <= 0), r0, x0, width, nx_img))
            with np.errstate(divide="ignore", invalid="ignore"):
                dvb = None if dv is None else dv[rows, cols]
                _dark_block(blk, vb, di[rows, cols], dvb, s_d, s_d2, ta[:n])
                fb = fi[rows, cols]
                if flat_ok and fb.size:
                    flat_ok = bool(fb.min() > 0 and fb.max() < np.inf)  # NaN -> False
                fvb = None if fv is None else fv[rows, cols]
                _flat_block(blk, vb, fb, fvb, fscale, inv, ta[:n], tb[:n])
            if thumbnails is not None:
                thumbnails.add("after", blk, r0)
    if dark_flat is None:
        return BiasVarianceLinearityResult(finite, vmin, n_out)
    empty = np.empty(0, np.intp)
    return BiasVarianceLinearityResult(
        finite,
        vmin,
        n_out,
        flat_ok,
        np.concatenate(bad_nan) if bad_nan else empty,
        np.concatenate(bad_var) if bad_var else empty,
    )


def _finite_range(lo: float, block: np.ndarray) -> bool:
    """Whether every value of ``block`` is finite, given its minimum ``lo`` (NaN-propagating)."""
    return bool(-np.inf < lo and float(block.max()) < np.inf) if block.size else True


def _image_index(local: np.ndarray, r0: int, x0: int, width: int, nx: int) -> np.ndarray:
    """Flat indices into an image of ``nx`` columns of flat indices ``local`` into a block."""
    ly, lx = np.divmod(local, width)
    return (ly + r0) * nx + (lx + x0)


def amp_runs(amp_boxes: Mapping[str, Box]) -> list[tuple[int, int, int, int, list[tuple[str, int, int]]]]:
    """Group amplifier boxes into runs side by side: same rows, adjacent columns.

    Parameters
    ----------
    amp_boxes : mapping [`str`, `pipeline.image.Box`]
        Each amp's region (pixels).

    Returns
    -------
    runs : `list` of ``(y0, y1, x0, x1, members)``
        Rows ``[y0, y1)`` and columns ``[x0, x1)`` of each run; ``members`` lists
        ``(amp name, first column, end column)`` relative to ``x0``, left to right. Every
        non-empty box belongs to exactly one run; a box with no neighbour is a run of one.

    Notes
    -----
    A run of amps is processed as full rows of ``x1 - x0`` contiguous pixels with one
    parameter per column (a 16-amp LSST detector: two runs of 4072 columns), which numpy
    streams about twice as fast as the ``x1 - x0``/8-pixel rows of one amp's view.
    """
    bands: dict[tuple[int, int], list[tuple[int, int, str]]] = {}
    for name, box in amp_boxes.items():
        if box.nx and box.ny:
            bands.setdefault((box.y0, box.y1), []).append((box.x0, box.x1, name))
    if any(
        m[k][0] < m[k - 1][1] for m in (sorted(v) for v in bands.values()) for k in range(1, len(m))
    ):  # overlapping boxes: one run per amp, in the given order (later amps see earlier ones)
        return [(b.y0, b.y1, b.x0, b.x1, [(n, 0, b.nx)]) for n, b in amp_boxes.items() if b.nx and b.ny]
    runs = []
    for (y0, y1), members in sorted(bands.items()):
        members.sort()
        start = 0
        for k in range(1, len(members) + 1):
            if k == len(members) or members[k][0] != members[k - 1][1]:
                x0, x1 = members[start][0], members[k - 1][1]
                runs.append((y0, y1, x0, x1, [(n, a - x0, b - x0) for a, b, n in members[start:k]]))
                start = k
    return runs
