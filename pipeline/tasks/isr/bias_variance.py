"""Bias, variance and linearity in one pass per amplifier and block of rows (ISR steps 10-12).

The same arithmetic, in the same order, as `isr_functions.bias_correction`, then
`isr_functions.update_variance` (the plane replaced), then `linearize.apply_linearity`;
``tests/isr/test_fast_paths.py`` checks that the results are identical. While a block is in
the cache the pass also records whether every value was finite and the smallest variance,
so the task can skip the full-image NaN and negative-variance scans.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.image import Box

from .isr_functions import _block_rows, _check_same_shape
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
    """

    finite: bool
    min_variance: float
    n_out_of_range: int


def bias_variance_linearity(
    image: np.ndarray,
    variance: np.ndarray,
    bias: np.ndarray,
    gains: Mapping[str, float],
    noises: Mapping[str, float],
    amp_boxes: Mapping[str, Box],
    linearizer: Any = None,
) -> BiasVarianceLinearityResult:
    """Subtract the bias, replace the variance and linearize, amp by amp.

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
    total = 0.0
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
        scratch = np.empty((min(block, y1 - y0), width), np.float32) if squared else None
        for r0 in range(y0, y1, block):
            rows = slice(r0, min(r0 + block, y1))
            blk, vb = image[rows, cols], variance[rows, cols]
            blk -= bias[rows, cols]
            np.divide(blk, g, out=vb)
            vb += rn2
            if vb.size:  # np.minimum: a NaN propagates (Python's min would drop it or keep it
                vmin = float(np.minimum(vmin, vb.min()))  # depending on the order)
            if squared:
                t = scratch[: rows.stop - rows.start]
                np.multiply(c_sq, blk, out=t)  # as linearize_squared: v *= 1 + c0 v
                np.add(1, t, out=t)
                blk *= t
            else:
                for _, a0, a1, ltype, coeffs in per_amp:
                    n_out += apply_linearity(blk[:, a0:a1], ltype, coeffs, lin.table)
            # finite sums <=> no NaN/inf in the block (checked while it is in the cache); the
            # variance (image / gain + const) carries any non-finite pre-linearity pixel
            total += float(np.add.reduce(vb, axis=None))
            if per_amp:
                total += float(np.add.reduce(blk, axis=None))
    return BiasVarianceLinearityResult(math.isfinite(total), vmin, n_out)


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
