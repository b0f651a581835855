"""Per-pixel statistics over a stack of images (calibration combination), vectorised.

The statistic is computed for every pixel along the stack axis at once — no Python loop over
pixels — with exactly the afw ``statisticsStack`` semantics of reference-algorithms §1.5 and
§4.4 step 3:

* the candidate set of a pixel is the inputs whose value is finite and whose mask has none of
  the ``bad_bits``;
* MEANCLIP: iteration 0 clips around the median with half-width ``nsigma·0.741301109252802·IQR``
  (quartiles by linear interpolation between order statistics), iterations ``k ≥ 1`` around the
  previous clipped mean with ``nsigma·sqrt(var)``; every iteration re-selects from the full
  candidate set, inclusive bounds, exactly ``niter`` selections; result = mean of the last
  selection;
* MEDIAN: linear-interpolation median of the candidates; MEAN: plain mean of the candidates;
* variance of the result: if the stack has fewer than ``n_var_switch`` inputs (cp_pipe
  ``maxVisitsToCalcErrorFromInputVariance`` = 5), ``Σ var_i / n²`` over the used values (error
  from the input variance planes); otherwise the ddof=1 variance of the used values ``/ n``
  (× π/2 for MEDIAN);
* mask: OR of the masks of the candidate inputs; no candidate → value NaN and ``no_data_bit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["StackResult", "stack_quantile", "stack_statistic"]

IQR_TO_SIGMA = 0.741301109252802


def stack_quantile(sorted_stack: np.ndarray, n_valid: np.ndarray, fraction: float) -> np.ndarray:
    """Linear-interpolation quantile per pixel of a stack sorted along axis 0 (NaNs last).

    Parameters
    ----------
    sorted_stack : `numpy.ndarray`, shape ``(n, ny, nx)``
        Values sorted along axis 0 with invalid entries as NaN (at the end).
    n_valid : `numpy.ndarray` of `int`, shape ``(ny, nx)``
        Number of valid values per pixel.
    fraction : `float`
        Quantile in [0, 1].

    Returns
    -------
    q : `numpy.ndarray`, shape ``(ny, nx)``
        ``numpy.percentile(..., method="linear")`` of the valid values; NaN where none.
    """
    pos = fraction * np.maximum(n_valid - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n_valid - 1, 0))
    frac = pos - lo
    v_lo = np.take_along_axis(sorted_stack, lo[None], axis=0)[0]
    v_hi = np.take_along_axis(sorted_stack, hi[None], axis=0)[0]
    q = v_lo + (v_hi - v_lo) * frac
    return np.where(n_valid > 0, q, np.nan)


@dataclass
class StackResult:
    """Output of `stack_statistic`: ``image``, ``variance`` (float64, ``(ny, nx)``), ``mask``
    (int32), ``n_used`` (int, values used per pixel).
    """

    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    n_used: np.ndarray


def stack_statistic(
    images: np.ndarray,
    variances: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    *,
    statistic: Literal["MEANCLIP", "MEDIAN", "MEAN"] = "MEANCLIP",
    bad_bits: int = 0,
    nsigma: float = 3.0,
    niter: int = 3,
    n_var_switch: int = 5,
    no_data_bit: int = 1,
) -> StackResult:
    """Combine a stack of images pixel by pixel.

    Parameters
    ----------
    images : `numpy.ndarray`, shape ``(n, ny, nx)``
        Input images (already scaled), any unit.
    variances : `numpy.ndarray`, shape ``(n, ny, nx)``, optional
        Their variance planes (unit²); zeros if omitted.
    masks : `numpy.ndarray` of int, shape ``(n, ny, nx)``, optional
        Their mask planes.
    statistic : {"MEANCLIP", "MEDIAN", "MEAN"}
        Per-pixel statistic.
    bad_bits : `int`
        Mask bits that exclude an input pixel.
    nsigma, niter : `float`, `int`
        Clipping parameters (MEANCLIP).
    n_var_switch : `int`
        With fewer inputs than this the variance comes from the input variances.
    no_data_bit : `int`
        Mask value set where no input is usable (BAD).

    Returns
    -------
    result : `StackResult`

    Raises
    ------
    ValueError
        For an unknown statistic, mismatched shapes or an empty stack.
    """
    data = np.asarray(images, dtype=np.float64)
    if data.ndim != 3 or data.shape[0] == 0:
        raise ValueError(f"stack must have shape (n, ny, nx) with n >= 1, got {data.shape}")
    n_in = data.shape[0]
    var = np.zeros_like(data) if variances is None else np.asarray(variances, dtype=np.float64)
    msk = np.zeros(data.shape, np.int32) if masks is None else np.asarray(masks)
    if var.shape != data.shape or msk.shape != data.shape:
        raise ValueError(f"variance {var.shape} / mask {msk.shape} stacks differ from images {data.shape}")
    if statistic not in ("MEANCLIP", "MEDIAN", "MEAN"):
        raise ValueError(f"combine statistic must be MEANCLIP, MEDIAN or MEAN, not {statistic!r}")
    cand = np.isfinite(data)
    if bad_bits:
        cand &= (msk & bad_bits) == 0
    n_cand = cand.sum(axis=0)
    out_mask = np.bitwise_or.reduce(np.where(cand, msk, 0), axis=0).astype(np.int32)
    if statistic == "MEAN":
        sel = cand
    else:
        vals = np.where(cand, data, np.nan)
        srt = np.sort(vals, axis=0)
        med = stack_quantile(srt, n_cand, 0.5)
        if statistic == "MEDIAN":
            sel = cand
        else:
            iqr = stack_quantile(srt, n_cand, 0.75) - stack_quantile(srt, n_cand, 0.25)
            centre, half = med, nsigma * IQR_TO_SIGMA * iqr
            for _ in range(niter):
                sel = cand & (np.abs(data - centre[None]) <= half[None])
                n = sel.sum(axis=0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = np.where(sel, data, 0.0).sum(axis=0) / n
                    dev = np.where(sel, data - mean[None], 0.0)
                    v = (dev * dev).sum(axis=0) / (n - 1)
                centre = mean
                half = np.where(n > 1, nsigma * np.sqrt(v), 0.0)
    n_used = sel.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(sel, data, 0.0).sum(axis=0) / n_used
        dev = np.where(sel, data - mean[None], 0.0)
        sample_var = (dev * dev).sum(axis=0) / (n_used - 1)
        input_var = np.where(sel, var, 0.0).sum(axis=0) / n_used**2
        if statistic == "MEDIAN":
            value = med
            err = input_var if n_in < n_var_switch else (math.pi / 2) * sample_var / n_used
        else:
            value = mean
            err = input_var if n_in < n_var_switch else sample_var / n_used
    none = n_used == 0
    value = np.where(none, np.nan, value)
    err = np.where(none, np.nan, err)
    out_mask = np.where(none, out_mask | no_data_bit, out_mask).astype(np.int32)
    return StackResult(image=value, variance=err, mask=out_mask, n_used=n_used)
