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

from .isr_functions import _check_same_shape, _row_blocks
from .linearize import apply_linearity

__all__ = ["BiasVarianceLinearityResult", "bias_variance_linearity"]


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
    (pixel-wise) linearity correction.
    """
    _check_same_shape(image, bias, "bias")
    lin = linearizer
    n_out = 0
    vmin = np.inf
    total = 0.0
    for name, box in amp_boxes.items():
        sl = box.slices
        img, var, b = image[sl], variance[sl], bias[sl]
        g = np.float32(gains[name])
        rn2 = np.float32((noises[name] / gains[name]) ** 2)
        ltype = lin.linearity_type.get(name, "None") if lin is not None else "None"
        coeffs = lin.linearity_coeffs.get(name, ()) if lin is not None else ()
        active_lin = ltype not in ("None", "Proportional", "", None)
        for rows in _row_blocks(img.shape):
            blk, vb = img[rows], var[rows]
            blk -= b[rows]
            np.divide(blk, g, out=vb)
            vb += rn2
            if vb.size:
                vmin = min(vmin, float(vb.min()))
            if lin is not None:
                n_out += apply_linearity(blk, ltype, coeffs, lin.table)
            # finite sums <=> no NaN/inf in the block (checked while it is in the cache); the
            # variance (image / gain + const) carries any non-finite pre-linearity pixel
            total += float(np.add.reduce(vb, axis=None))
            if active_lin:
                total += float(np.add.reduce(blk, axis=None))
    return BiasVarianceLinearityResult(math.isfinite(total), vmin, n_out)
