"""afw-compatible robust statistics: clipped mean, tie-aware integer median, per-row variants.

This is the statistics engine shared by ISR, overscan fitting, calibration combination and
PTC. It reproduces the behaviour of afw ``Statistics.cc`` described in
``reference-algorithms.md`` section 1.5:

* the input set ``S`` is the finite values whose mask is not set;
* ``MEDIAN`` / quartiles of float data interpolate linearly between order statistics at
  index ``f (n - 1)`` (``numpy.percentile(..., method="linear")``);
* ``MEDIAN`` of integer data is *tie-aware*: with ``v = sorted[int(f (n - 1))]``,
  ``L = #(x < v)``, ``M = #(x == v)`` it is ``v - 0.5 + (f n - L) / M``
  (``[1, 2, 2, 2] -> 1.8333``);
* ``VARIANCE`` is unbiased (``ddof=1``);
* ``MEANCLIP``: iteration 0 clips around the median with half-width
  ``nsigma * 0.741301109252802 * IQR``; iterations ``k >= 1`` clip around the previous
  clipped mean with half-width ``nsigma * sqrt(previous variance)``. Every iteration
  re-selects from the full set ``S`` (``|x - centre| <= h``, inclusive); exactly ``niter``
  selections are made; the result is the mean and ``ddof=1`` variance of the last selection.

All functions are pure numpy and accept any array shape; the ``*_per_row`` variants work on
``(ny, nx)`` arrays and return one value per row (shape ``(ny,)``), vectorised over rows.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

__all__ = [
    "IQR_TO_SIGMA",
    "StatsResult",
    "clipped_stats",
    "clipped_stats_per_row",
    "compute_statistic",
    "integer_median",
    "integer_median_per_row",
    "mean_per_row",
    "median",
    "median_per_row",
    "select_finite",
]

#: Factor converting an inter-quartile range to a Gaussian sigma (afw's value).
IQR_TO_SIGMA = 0.741301109252802

StatsResult = tuple[float, float, int]


def select_finite(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Return the 1-D set ``S`` of finite, unmasked values.

    Parameters
    ----------
    values : `numpy.ndarray`
        Values of any shape (ADU or any unit).
    mask : `numpy.ndarray` of `bool`, optional
        Same shape as ``values``; `True` marks a value to *exclude* (afw ``andMask`` hit).

    Returns
    -------
    selected : `numpy.ndarray`
        1-D array of the retained values (dtype preserved).

    Raises
    ------
    ValueError
        If ``mask`` does not have the shape of ``values``.
    """
    values = np.asarray(values)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != values.shape:
            raise ValueError(f"mask shape {mask.shape} differs from values shape {values.shape}")
    if np.issubdtype(values.dtype, np.floating):
        good = np.isfinite(values)
        if mask is not None:
            good &= ~mask
        if good.all():
            return values.ravel()  # no copy when every value is selected
        return values[good]
    if mask is not None:
        return values[~mask]
    return values.ravel()


def median(values: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Afw MEDIAN of float data: linear interpolation between order statistics.

    Parameters
    ----------
    values : `numpy.ndarray`
        Values of any shape.
    mask : `numpy.ndarray` of `bool`, optional
        `True` excludes a value.

    Returns
    -------
    median : `float`
        The median, NaN when no value is selected.

    Notes
    -----
    Reference: afw ``Statistics.cc`` (reference-algorithms §1.5); same as
    ``numpy.percentile(S, 50, method="linear")``.
    """
    s = select_finite(values, mask)
    if s.size == 0:
        return float("nan")
    if np.issubdtype(s.dtype, np.integer) and s.size > 1024:
        hist = _histogram(s)
        if hist is not None:  # same linear-interpolated value from the cumulative counts
            _, vals, cum = hist
            return _hist_percentile(vals, cum, 50.0)
    return float(np.median(s))


def integer_median(values: np.ndarray, mask: np.ndarray | None = None, fraction: float = 0.5) -> float:
    """Tie-aware quantile of integer-valued data (afw MEDIAN for integer images).

    Parameters
    ----------
    values : `numpy.ndarray`
        Integer-valued data of any shape (integer dtype, or float holding integers).
    mask : `numpy.ndarray` of `bool`, optional
        `True` excludes a value.
    fraction : `float`, optional
        Quantile ``f`` (0.5 for the median).

    Returns
    -------
    quantile : `float`
        ``v - 0.5 + (f n - L) / M`` with ``v = sorted[int(f (n - 1))]``, ``L`` the number of
        values below ``v`` and ``M`` the number equal to ``v``; NaN if nothing is selected.

    Notes
    -----
    Reference: afw ``Statistics.cc`` integer percentile (reference-algorithms §1.5, §9 first
    bullet). This treats each integer as a uniform bin ``[v - 0.5, v + 0.5)`` and is the
    convention we adopt for ``overscanIsInt=True``. ``[1, 2, 2, 2] -> 1.8333``.
    """
    s = select_finite(values, mask)
    n = s.size
    if n == 0:
        return float("nan")
    s = np.sort(s)
    v = s[int(fraction * (n - 1))]
    lower = int(np.searchsorted(s, v, side="left"))
    equal = int(np.searchsorted(s, v, side="right")) - lower
    return float(v) - 0.5 + (fraction * n - lower) / equal


def clipped_stats(
    values: np.ndarray,
    mask: np.ndarray | None = None,
    nsigma: float = 3.0,
    niter: int = 3,
    _with_median: bool = False,
) -> StatsResult:
    """Afw MEANCLIP / VARIANCECLIP: iterated sigma-clipped mean and unbiased variance.

    Parameters
    ----------
    values : `numpy.ndarray`
        Values of any shape (e.g. an ``(ny, nx)`` image in ADU).
    mask : `numpy.ndarray` of `bool`, optional
        Same shape; `True` excludes a value (the afw ``andMask`` hit). Non-finite values
        are always excluded.
    nsigma : `float`, optional
        Clipping half-width in units of sigma (afw ``numSigmaClip``, default 3).
    niter : `int`, optional
        Number of selections made (afw ``numIter``, default 3); at least 1.

    Returns
    -------
    mean : `float`
        Mean of the last selection (NaN if empty).
    variance : `float`
        ``ddof=1`` variance of the last selection (NaN if fewer than 2 values).
    n : `int`
        Number of values in the last selection.

    Raises
    ------
    ValueError
        If ``niter < 1`` or the mask shape is wrong.

    Notes
    -----
    Reference: afw ``Statistics.cc`` (reference-algorithms §1.5). Iteration 0 clips around
    the median with ``h = nsigma * 0.741301109252802 * IQR``; later iterations clip around
    the previous clipped mean with ``h = nsigma * sqrt(var)``; each iteration re-selects from
    the full finite, unmasked set (not from the previous survivors), inclusive bounds.
    Accumulation is in float64.
    """
    if niter < 1:
        raise ValueError(f"clipped_stats: niter must be >= 1, got {niter}")
    raw = select_finite(values, mask)
    nan3 = (float("nan"), float("nan"), 0)
    if raw.size == 0:
        return (*nan3, float("nan")) if _with_median else nan3
    if np.issubdtype(raw.dtype, np.integer) and raw.size > 1024:
        hist = _clipped_stats_histogram(raw, nsigma, niter)
        if hist is not None:
            return hist if _with_median else hist[:3]
    # Quartiles on the native dtype (one partition, no float64 copy); sums in float64.
    q25, q50, q75 = (float(q) for q in np.percentile(raw, [25.0, 50.0, 75.0]))
    s = raw.astype(np.float64, copy=False)
    centre = q50
    half = nsigma * IQR_TO_SIGMA * (q75 - q25)
    result = nan3
    for _ in range(niter):
        sel = s if not np.isfinite(half) else s[np.abs(s - centre) <= half]
        n = int(sel.size)
        if n == 0:
            result = nan3
            break
        mean = float(sel.mean())
        var = float(sel.var(ddof=1)) if n > 1 else float("nan")
        result = (mean, var, n)
        centre = mean
        half = nsigma * np.sqrt(var) if n > 1 else 0.0
    return (*result, q50) if _with_median else result


def _histogram(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Return ``(counts, values, cumulative counts)`` of integer data; `None` if too wide a range."""
    lo, hi = int(raw.min()), int(raw.max())
    if hi - lo > 4 * raw.size + 65536:
        return None
    counts = np.bincount((raw - lo).astype(np.intp, copy=False).ravel(), minlength=hi - lo + 1)
    return counts, np.arange(lo, hi + 1, dtype=np.float64), np.cumsum(counts)


def _hist_percentile(vals: np.ndarray, cum: np.ndarray, q: float) -> float:
    """Numpy ``percentile(method="linear")`` from a histogram of integer data."""
    n = int(cum[-1])
    h = (n - 1) * q / 100.0
    i = int(np.floor(h))
    t = h - i
    a = float(vals[np.searchsorted(cum, i, side="right")])
    b = float(vals[np.searchsorted(cum, min(i + 1, n - 1), side="right")])
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1.0 - t)


def _clipped_stats_histogram(
    raw: np.ndarray, nsigma: float, niter: int
) -> tuple[float, float, int, float] | None:
    """`clipped_stats` of integer data from its histogram (same selections, O(n) + O(range)).

    Every selection ``|x − centre| <= h`` of integer data is a set of histogram bins, so the
    quartiles (numpy ``linear`` percentiles from the cumulative counts), the clipped means and
    ``ddof=1`` variances are exact sums over the bins. Returns `None` (use the sorting path)
    when the value range is much larger than the number of values.
    """
    hist = _histogram(raw)
    if hist is None:
        return None
    counts, vals, cum = hist
    q25, q50, q75 = (_hist_percentile(vals, cum, q) for q in (25.0, 50.0, 75.0))
    centre = q50
    half = nsigma * IQR_TO_SIGMA * (q75 - q25)
    cw = counts.astype(np.float64)
    result: tuple[float, float, int] = (float("nan"), float("nan"), 0)
    for _ in range(niter):
        w = cw if not np.isfinite(half) else np.where(np.abs(vals - centre) <= half, cw, 0.0)
        m = int(w.sum())
        if m == 0:
            result = (float("nan"), float("nan"), 0)
            break
        mean = float(np.dot(w, vals) / m)
        var = float(np.dot(w, (vals - mean) ** 2) / (m - 1)) if m > 1 else float("nan")
        result = (mean, var, m)
        centre = mean
        half = nsigma * np.sqrt(var) if m > 1 else 0.0
    return (*result, q50)


Statistic = Literal["MEAN", "MEDIAN", "MEANCLIP", "STDEV", "STDEVCLIP", "VARIANCE", "VARIANCECLIP"]


def compute_statistic(
    values: np.ndarray,
    statistic: str,
    mask: np.ndarray | None = None,
    nsigma: float = 3.0,
    niter: int = 3,
    is_int: bool = False,
) -> float:
    """Compute one named afw statistic.

    Parameters
    ----------
    values : `numpy.ndarray`
        Values of any shape.
    statistic : `str`
        One of ``MEAN``, ``MEDIAN``, ``MEANCLIP``, ``STDEV``, ``STDEVCLIP``, ``VARIANCE``,
        ``VARIANCECLIP``.
    mask : `numpy.ndarray` of `bool`, optional
        `True` excludes a value.
    nsigma, niter : `float`, `int`
        Clipping parameters for the ``*CLIP`` statistics.
    is_int : `bool`, optional
        Use the tie-aware integer median for ``MEDIAN``.

    Returns
    -------
    value : `float`
        The statistic (NaN if undefined).

    Raises
    ------
    ValueError
        For an unknown statistic name.
    """
    name = statistic.upper()
    if name == "MEDIAN":
        return integer_median(values, mask) if is_int else median(values, mask)
    if name in ("MEAN", "STDEV", "VARIANCE"):
        s = select_finite(values, mask).astype(np.float64, copy=False)
        if name == "MEAN":
            return float(s.mean()) if s.size else float("nan")
        var = float(s.var(ddof=1)) if s.size > 1 else float("nan")
        return var if name == "VARIANCE" else float(np.sqrt(var))
    if name in ("MEANCLIP", "STDEVCLIP", "VARIANCECLIP"):
        mean, var, _ = clipped_stats(values, mask, nsigma, niter)
        if name == "MEANCLIP":
            return mean
        return var if name == "VARIANCECLIP" else float(np.sqrt(var))
    raise ValueError(
        f"Unknown statistic {statistic!r}; use MEAN, MEDIAN, MEANCLIP, STDEV, STDEVCLIP, "
        "VARIANCE or VARIANCECLIP"
    )


def _row_valid(array: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"per-row statistics need a 2-D (ny, nx) array, got shape {array.shape}")
    valid = np.isfinite(array) if np.issubdtype(array.dtype, np.floating) else np.ones(array.shape, bool)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != array.shape:
            raise ValueError(f"mask shape {mask.shape} differs from array shape {array.shape}")
        valid &= ~mask
    return valid


def median_per_row(array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Afw MEDIAN (linear interpolation) of every row.

    Parameters
    ----------
    array : `numpy.ndarray`, shape ``(ny, nx)``
        Values.
    mask : `numpy.ndarray` of `bool`, shape ``(ny, nx)``, optional
        `True` excludes a pixel.

    Returns
    -------
    medians : `numpy.ndarray`, shape ``(ny,)``, float64
        NaN for rows with no selected pixel.
    """
    valid = _row_valid(array, mask)
    data = np.where(valid, array, np.nan).astype(np.float64, copy=False)
    out = np.full(data.shape[0], np.nan)
    has = valid.any(axis=1)
    if has.any():
        out[has] = np.nanmedian(data[has], axis=1)
    return out


def mean_per_row(array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Plain mean (afw MEAN) of every row's selected pixels.

    Parameters
    ----------
    array : `numpy.ndarray`, shape ``(ny, nx)``
        Values.
    mask : `numpy.ndarray` of `bool`, shape ``(ny, nx)``, optional
        `True` excludes a pixel.

    Returns
    -------
    means : `numpy.ndarray`, shape ``(ny,)``, float64
        NaN for rows with no selected pixel.
    """
    valid = _row_valid(array, mask)
    data = np.where(valid, array, 0.0).astype(np.float64, copy=False)
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, data.sum(axis=1) / np.maximum(count, 1), np.nan)


def integer_median_per_row(
    array: np.ndarray, mask: np.ndarray | None = None, fraction: float = 0.5
) -> np.ndarray:
    """Tie-aware integer median of every row, vectorised (see `integer_median`).

    Parameters
    ----------
    array : `numpy.ndarray`, shape ``(ny, nx)``
        Integer-valued data (integer dtype or floats holding integers).
    mask : `numpy.ndarray` of `bool`, shape ``(ny, nx)``, optional
        `True` excludes a pixel.
    fraction : `float`, optional
        Quantile (0.5 = median).

    Returns
    -------
    medians : `numpy.ndarray`, shape ``(ny,)``, float64
        NaN for rows with no selected pixel.
    """
    valid = _row_valid(array, mask)
    data = np.where(valid, array, np.inf).astype(np.float64, copy=False)
    data.sort(axis=1)
    n = valid.sum(axis=1)
    idx = np.floor(fraction * np.maximum(n - 1, 0)).astype(np.intp)
    v = np.take_along_axis(data, idx[:, None], axis=1)
    lower = ((data < v) & np.isfinite(data)).sum(axis=1)
    equal = (data == v).sum(axis=1)
    v = v[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = v - 0.5 + (fraction * n - lower) / equal
    out[n == 0] = np.nan
    return out


def clipped_stats_per_row(
    array: np.ndarray,
    mask: np.ndarray | None = None,
    nsigma: float = 3.0,
    niter: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`clipped_stats` of every row, vectorised over rows.

    Parameters
    ----------
    array : `numpy.ndarray`, shape ``(ny, nx)``
        Values.
    mask : `numpy.ndarray` of `bool`, shape ``(ny, nx)``, optional
        `True` excludes a pixel.
    nsigma : `float`, optional
        Clipping half-width in sigma.
    niter : `int`, optional
        Number of selections.

    Returns
    -------
    mean, variance : `numpy.ndarray`, shape ``(ny,)``
        Clipped mean and ``ddof=1`` variance per row (NaN where undefined).
    n : `numpy.ndarray` of `int`, shape ``(ny,)``
        Number of pixels in each row's last selection.

    Raises
    ------
    ValueError
        If ``niter < 1``.
    """
    if niter < 1:
        raise ValueError(f"clipped_stats_per_row: niter must be >= 1, got {niter}")
    valid = _row_valid(array, mask)
    data = np.where(valid, array, np.nan).astype(np.float64, copy=False)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q25, q50, q75 = np.nanpercentile(data, [25.0, 50.0, 75.0], axis=1)
        centre = q50
        half = nsigma * IQR_TO_SIGMA * (q75 - q25)
        mean = np.full(data.shape[0], np.nan)
        var = np.full(data.shape[0], np.nan)
        n = np.zeros(data.shape[0], dtype=np.int64)
        for _ in range(niter):
            sel = valid & (np.abs(data - centre[:, None]) <= half[:, None])
            n = sel.sum(axis=1)
            x = np.where(sel, data, 0.0)
            mean = x.sum(axis=1) / n
            dev = np.where(sel, data - mean[:, None], 0.0)
            var = (dev * dev).sum(axis=1) / (n - 1)
            var[n < 2] = np.nan
            centre = mean
            half = np.where(n > 1, nsigma * np.sqrt(np.where(n > 1, var, 0.0)), 0.0)
        mean[n == 0] = np.nan
    return mean, var, n
