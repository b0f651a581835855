"""afw-compatible robust statistics: the one statistics module of ccdflow.

ISR, overscan fitting, calibration combination, flat measurement, PTC, fringe and amp offset
all use these functions. They reproduce afw ``Statistics.cc`` / ``statisticsStack`` as
described in ``reference-algorithms.md`` section 1.5:

* the input set ``S`` is the finite values whose mask is not set;
* ``MEDIAN`` / quartiles of float data interpolate linearly between order statistics at
  index ``f (n - 1)`` (``numpy.percentile(..., method="linear")``);
* ``MEDIAN`` of integer data is *tie-aware*: with ``v = sorted[int(f (n - 1))]``,
  ``L = #(x < v)``, ``M = #(x == v)`` it is ``v - 0.5 + (f n - L) / M``
  (``[1, 2, 2, 2] -> 1.8333``);
* ``VARIANCE`` is unbiased (``ddof=1``);
* ``MEANCLIP``: iteration 0 clips around the median with half-width
  ``nsigma * IQR_TO_SIGMA * IQR``; iterations ``k >= 1`` clip around the previous
  clipped mean with half-width ``nsigma * sqrt(previous variance)``. Every iteration
  re-selects from the full set ``S`` (``|x - centre| <= h``, inclusive); exactly ``niter``
  selections are made; the result is the mean and ``ddof=1`` variance of the last selection.

Three ways to compute the same statistic (``method=``), in the manner of one model with
several renderers:

``"exact"``
    The plain computation: quartiles by one partition, then ``niter`` full re-selections.
    The reference every other method is tested against.
``"histogram"``
    Re-selects whole bins instead of values. Integer-valued data: one bin per integer (the
    sums of a selection are sums over bins, O(n) + O(range)). Float data: one *core* bin
    (``|x - median| <= 0.8 h0``, its sums computed once) and the individual values outside it
    (the *rim*); the quartiles are bracketed from a subsample and the brackets verified by
    counting, so the first window is the exact one. Selections equal ``"exact"``; the moments
    equal it to float rounding (relative 1e-9 for the mean and variance of float32 data,
    whose deviations are squared in float32), see `clipped_stats`.
``"subsample"``
    The exact statistic of a deterministic strided subsample of about ``max_samples`` values
    (`sample_for_statistics`). Not equal: for data without structure on the stride scale the
    clipped mean is within ``5 sigma / sqrt(m)`` and the clipped standard deviation within a
    fraction ``5 / sqrt(2 m)`` of the exact values (``m`` values sampled), a bound
    ``tests/image/test_statistics.py`` checks.

``"auto"`` (the default) picks ``"histogram"`` where it is faster and equal (integer data of
more than 1,024 values, float data of more than `CORE_RIM_MIN_SIZE` values), else ``"exact"``.

All functions are pure numpy and accept any array shape; the ``*_per_row`` variants work on
``(ny, nx)`` arrays and return one value per row (shape ``(ny,)``), vectorised over rows, and
`stack_statistic` combines an ``(n, ny, nx)`` stack pixel by pixel.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "CORE_RIM_MIN_SIZE",
    "IQR_TO_SIGMA",
    "Method",
    "StackResult",
    "StatsResult",
    "clipped_stats",
    "clipped_stats_finite",
    "clipped_stats_per_row",
    "compute_statistic",
    "integer_median",
    "integer_median_per_row",
    "iqr_sigma",
    "mean_per_row",
    "median",
    "median_per_row",
    "order_statistics",
    "quartiles",
    "sample_for_statistics",
    "select_finite",
    "stack_quantile",
    "stack_statistic",
    "work_array",
]

#: Factor converting an inter-quartile range to a Gaussian sigma (afw's value).
IQR_TO_SIGMA = 0.741301109252802

StatsResult = tuple[float, float, int]

#: How a statistic is computed (see the module docstring).
Method = Literal["auto", "exact", "histogram", "subsample"]
_METHODS = ("auto", "exact", "histogram", "subsample")

#: Float data of more than this many values use the core / rim ``"histogram"`` method under
#: ``"auto"``; below it the plain computation is as fast.
CORE_RIM_MIN_SIZE = 1 << 16
#: Size of the subsample that brackets the quartiles of the core / rim method.
_BRACKET_SAMPLE_SIZE = 1 << 15
#: Integer data of more than this many values use the per-value histogram under ``"auto"``.
_INT_HISTOGRAM_MIN_SIZE = 1024
#: Default number of values of the ``"subsample"`` method.
SUBSAMPLE_SIZE = 1 << 16


#: Per-thread scratch arrays of `work_array`.
_WORK = threading.local()
#: Scratch arrays up to this many elements are kept between calls (larger ones are allocated
#: each time, so memory held stays bounded: a few arrays of one amplifier).
WORK_ARRAY_MAX_SIZE = 1 << 22


def work_array(name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """Return a reusable, uninitialised scratch array, one per name, dtype and thread.

    Parameters
    ----------
    name : `str`
        Slot name, unique to one use inside one function (two live arrays need two names).
    shape : `tuple` of `int`
        Shape wanted.
    dtype : numpy dtype
        Element type.

    Returns
    -------
    array : `numpy.ndarray`
        C-contiguous, contents undefined; valid until the next call with the same name and
        dtype in the same thread, so it must not escape the function that asked for it.

    Notes
    -----
    A fresh multi-megabyte numpy array is mapped from the kernel and zeroed page by page on
    first touch; the kernels that make a dozen per-amplifier temporaries per region (PTC
    extraction: about 60 MB per amp) spent ~15 % of their time in those page faults. Arrays
    larger than `WORK_ARRAY_MAX_SIZE` elements are not kept.
    """
    dt = np.dtype(dtype)
    n = math.prod(shape)
    if n > WORK_ARRAY_MAX_SIZE:
        return np.empty(shape, dt)
    cache = getattr(_WORK, "arrays", None)
    if cache is None:
        cache = _WORK.arrays = {}
    buf = cache.get((name, dt))
    if buf is None or buf.size < n:
        buf = np.empty(n, dt)
        cache[(name, dt)] = buf
    return buf[:n].reshape(shape)


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"unknown statistics method {method!r}; use one of {', '.join(_METHODS)}")


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


#: Up to this many values `order_statistics` sorts (numpy's single-pass sort beats its
#: partition at several ranks); above it, one single-rank partition per rank.
_SORT_MAX_SIZE = 1 << 17


def order_statistics(values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Values at the given ranks of the sorted data: ``numpy.partition(values, ranks)[ranks]``.

    Parameters
    ----------
    values : `numpy.ndarray`, shape ``(n,)``
        1-D data (not modified; any real dtype, NaN sorts last as in numpy).
    ranks : `numpy.ndarray` of `int`, shape ``(k,)``
        Ranks ``0 <= r < n``, ascending and unique.

    Returns
    -------
    stats : `numpy.ndarray`, shape ``(k,)``
        The order statistics, same dtype as ``values``; exactly the values numpy's
        partition or sort puts at those positions.

    Notes
    -----
    numpy's partition at several ranks is several times slower than at one rank (which is
    SIMD-accelerated) and even than a full sort. Small inputs are sorted; larger ones are
    partitioned at one rank at a time, recursing into the part holding the remaining ranks,
    and a rank directly after a partitioned one is the minimum of the part above it.
    """
    x = np.asarray(values).reshape(-1)
    r = np.asarray(ranks, dtype=np.intp).reshape(-1)
    if x.size <= _SORT_MAX_SIZE or r.size == 1:
        if r.size == 1:
            return np.partition(x, int(r[0]))[r]
        return np.sort(x)[r]
    work = x.copy()
    out = np.empty(r.size, x.dtype)
    todo = [(0, x.size, 0, r.size)]  # part [lo, hi) of work holding ranks r[i0:i1]
    while todo:
        lo, hi, i0, i1 = todo.pop()
        if i0 >= i1:
            continue
        part = work[lo:hi]
        if part.size <= _SORT_MAX_SIZE // 8:
            part.sort()
            out[i0:i1] = work[r[i0:i1]]
            continue
        im = (i0 + i1) // 2
        k = int(r[im])
        part.partition(k - lo)
        out[im] = work[k]
        j = im + 1
        if j < i1 and r[j] == k + 1:  # the next rank: smallest value above k
            out[j] = work[k + 1 : hi].min()
            j += 1
        todo.append((lo, k, i0, im))
        todo.append((k + 1, hi, j, i1))
    return out


def quartiles(values: np.ndarray) -> tuple[float, float, float]:
    """Afw quartiles (25, 50, 75 %) of a 1-D array of finite values, linear interpolation.

    Parameters
    ----------
    values : `numpy.ndarray`, shape ``(n,)``
        Finite values, ``n >= 1`` (any real dtype; not modified).

    Returns
    -------
    q25, q50, q75 : `float`
        Bit for bit ``numpy.percentile(values, [25, 50, 75], method="linear")``.

    Notes
    -----
    The (up to six) order statistics involved (`order_statistics`) and numpy's own interpolation
    formula (``a + (b - a) t``, or ``b - (b - a)(1 - t)`` for ``t >= 0.5``): half the Python
    overhead of ``numpy.percentile``, which matters for thousands of 64 x 64 boxes.
    """
    x = np.asarray(values).reshape(-1)
    n = x.size
    idx = np.array([0.25, 0.5, 0.75]) * (n - 1)
    lo = np.floor(idx).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    if n <= _SORT_MAX_SIZE:
        s = np.sort(x)  # what order_statistics does for a small input (e.g. a 64 x 64 grid box)
        q = _lerp(s[lo], s[hi], idx - lo)
    else:
        ranks = np.unique(np.concatenate([lo, hi]))
        part = order_statistics(x, ranks)
        q = _lerp(part[np.searchsorted(ranks, lo)], part[np.searchsorted(ranks, hi)], idx - lo)
    return float(q[0]), float(q[1]), float(q[2])


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Interpolate as ``numpy.percentile`` does between order statistics ``a <= b`` at ``t``.

    ``b - a`` is formed in the data's float dtype (as numpy does), integers in float64.
    """
    if not np.issubdtype(np.asarray(a).dtype, np.floating):
        a, b = np.float64(a), np.float64(b)
    d = b - a
    return np.where(t >= 0.5, b - d * (1 - t), a + d * t)


def iqr_sigma(values: np.ndarray) -> tuple[float, float]:
    """Median and robust sigma ``IQR_TO_SIGMA * IQR`` of finite values.

    Parameters
    ----------
    values : `numpy.ndarray`
        Finite values of any shape, at least one.

    Returns
    -------
    median, sigma : `float`
        The linear-interpolation median and ``0.741301109252802 * (q75 - q25)``.
    """
    q25, q50, q75 = quartiles(values)
    return q50, IQR_TO_SIGMA * (q75 - q25)


def sample_for_statistics(
    values: np.ndarray,
    good: np.ndarray | None = None,
    max_samples: int = SUBSAMPLE_SIZE,
    mask: np.ndarray | None = None,
    exclude_bits: int = 0,
) -> np.ndarray:
    """Deterministic strided subsample of the good values of a large image.

    Parameters
    ----------
    values : `numpy.ndarray`
        Image of any shape.
    good : `numpy.ndarray` of `bool`, optional
        Values to use.
    max_samples : `int`
        At most about this many values are returned.
    mask : `numpy.ndarray` of int, optional
        Mask plane; values with any of ``exclude_bits`` are dropped (evaluated on the
        subsample only, so no full-image temporary is made).
    exclude_bits : `int`
        Bits excluded via ``mask``.

    Returns
    -------
    sample : `numpy.ndarray`, 1-D
        Finite selected values: every ``k``-th pixel of the flattened image (contiguous
        input), or every ``sy``-th row and ``sx``-th column with ``sy·sx ≈ k`` (2-D views).
    """
    step = max(1, values.size // max_samples)
    if values.ndim == 2 and not values.flags.c_contiguous:
        # A view (e.g. one amplifier of a detector): a 2-D stride of about ``step`` pixels
        # per sample, so that no full copy of the view is made by ``reshape(-1)``.
        sx = max(1, min(int(np.sqrt(step)), values.shape[1]))
        sy = max(1, step // sx)

        def pick(a: np.ndarray) -> np.ndarray:
            return a[::sy, ::sx].reshape(-1)

    else:

        def pick(a: np.ndarray) -> np.ndarray:
            return a.reshape(-1)[::step]

    s = pick(values)
    keep = np.isfinite(s)
    if good is not None:
        keep &= pick(good)
    if mask is not None and exclude_bits:
        keep &= (pick(mask) & exclude_bits) == 0
    return s[keep]


def median(
    values: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    method: Method = "auto",
    max_samples: int = SUBSAMPLE_SIZE,
) -> float:
    """Afw MEDIAN of float data: linear interpolation between order statistics.

    Parameters
    ----------
    values : `numpy.ndarray`
        Values of any shape.
    mask : `numpy.ndarray` of `bool`, optional
        `True` excludes a value.
    method : {"auto", "exact", "histogram", "subsample"}, optional
        ``"histogram"`` (integer data: from the cumulative counts) equals ``"exact"``;
        ``"subsample"`` is the median of `sample_for_statistics` (``max_samples`` values).
    max_samples : `int`, optional
        Subsample size of ``"subsample"``.

    Returns
    -------
    median : `float`
        The median, NaN when no value is selected.

    Raises
    ------
    ValueError
        For an unknown ``method``.

    Notes
    -----
    Reference: afw ``Statistics.cc`` (reference-algorithms §1.5); same as
    ``numpy.percentile(S, 50, method="linear")``.
    """
    _check_method(method)
    if method == "subsample":
        good = None if mask is None else ~np.asarray(mask, dtype=bool)
        s = sample_for_statistics(np.asarray(values), good, max_samples)
        return float(np.median(s)) if s.size else float("nan")
    s = select_finite(values, mask)
    if s.size == 0:
        return float("nan")
    integer = np.issubdtype(s.dtype, np.integer)
    if integer and (method == "histogram" or (method == "auto" and s.size > _INT_HISTOGRAM_MIN_SIZE)):
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
    *,
    method: Method = "auto",
    max_samples: int = SUBSAMPLE_SIZE,
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
    _with_median : `bool`, optional
        Also return the median of the selected set (a fourth value).
    method : {"auto", "exact", "histogram", "subsample"}, optional
        How to compute it (module docstring): ``"histogram"`` equals ``"exact"`` (same
        selections, moments to float rounding); ``"subsample"`` is the statistic of a
        ``max_samples``-value subsample (bounded difference).
    max_samples : `int`, optional
        Subsample size of ``"subsample"``.

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
        If ``niter < 1``, the mask shape is wrong or ``method`` is unknown.

    Notes
    -----
    Reference: afw ``Statistics.cc`` (reference-algorithms §1.5). Iteration 0 clips around
    the median with ``h = nsigma * 0.741301109252802 * IQR``; later iterations clip around
    the previous clipped mean with ``h = nsigma * sqrt(var)``; each iteration re-selects from
    the full finite, unmasked set (not from the previous survivors), inclusive bounds.
    Accumulation is in float64.
    """
    _check_method(method)
    if method == "subsample":
        good = None if mask is None else ~np.asarray(mask, dtype=bool)
        sample = sample_for_statistics(np.asarray(values), good, max_samples)
        return clipped_stats_finite(sample, nsigma, niter, _with_median=_with_median)
    return clipped_stats_finite(select_finite(values, mask), nsigma, niter, method=method,
                                _with_median=_with_median)


def clipped_stats_finite(
    values: np.ndarray,
    nsigma: float = 3.0,
    niter: int = 3,
    *,
    method: Method = "auto",
    max_samples: int = SUBSAMPLE_SIZE,
    _with_median: bool = False,
) -> StatsResult:
    """`clipped_stats` of values already known to be finite and unmasked.

    Parameters
    ----------
    values : `numpy.ndarray`
        Finite values of any shape; a 2-D view (one amplifier of an image) is used as it is,
        without the copy `select_finite` would make.
    nsigma, niter, method, max_samples, _with_median
        As for `clipped_stats`.

    Returns
    -------
    mean, variance, n : `float`, `float`, `int`
        As for `clipped_stats` (and the median with ``_with_median``).

    Raises
    ------
    ValueError
        If ``niter < 1`` or ``method`` is unknown.
    """
    if niter < 1:
        raise ValueError(f"clipped_stats: niter must be >= 1, got {niter}")
    _check_method(method)
    values = np.asarray(values)
    if method == "subsample":
        values, method = sample_for_statistics(values, None, max_samples), "auto"
    nan3: StatsResult = (float("nan"), float("nan"), 0)
    if values.size == 0:
        return (*nan3, float("nan")) if _with_median else nan3  # type: ignore[return-value]
    integer = np.issubdtype(values.dtype, np.integer)
    if method == "histogram" or (
        method == "auto" and values.size > (_INT_HISTOGRAM_MIN_SIZE if integer else CORE_RIM_MIN_SIZE)
    ):
        binned: tuple[float, float, int, float] | None = None
        if integer:
            binned = _clipped_stats_histogram(values, nsigma, niter)
        elif values.dtype in (np.float32, np.float64) and values.size > 1:
            binned = _clipped_core_rim(values, nsigma, niter, _with_median)
        if binned is not None:
            return binned if _with_median else binned[:3]  # type: ignore[return-value]
    x = values.reshape(-1)
    q25, q50, q75 = quartiles(x)
    result = _iterate(x.astype(np.float64, copy=False), q50, nsigma * IQR_TO_SIGMA * (q75 - q25),
                      nsigma, niter)
    return (*result, q50) if _with_median else result  # type: ignore[return-value]


def _iterate(x: np.ndarray, centre: float, half: float, nsigma: float, niter: int) -> StatsResult:
    """``niter`` full re-selections of the float64 values ``x`` from the window ``centre ± half``.

    A selection equal to the previous one gives the same mean and variance, hence the same
    next window: the iterations stop there with the same result.
    """
    result: StatsResult = (float("nan"), float("nan"), 0)
    previous = None
    for _ in range(niter):
        if math.isfinite(half):
            keep = np.abs(x - centre) <= half
            if previous is not None and np.array_equal(keep, previous):
                break
            previous = keep
            sel = x[keep]
        else:
            previous = None
            sel = x
        n = int(sel.size)
        if n == 0:
            return (float("nan"), float("nan"), 0)
        mean = float(sel.sum()) / n
        if n > 1:
            dev = sel - mean
            var = float((dev * dev).sum()) / (n - 1)
        else:
            var = float("nan")
        result = (mean, var, n)
        centre = mean
        half = nsigma * math.sqrt(var) if n > 1 else 0.0
    return result


def _clipped_core_rim(
    values: np.ndarray, nsigma: float, niter: int, with_median: bool
) -> tuple[float, float, int, float] | None:
    """Compute the ``"histogram"`` method for float data: one core bin plus the rim values.

    1. The six order statistics behind the quartiles are bracketed from a regular subsample of
       `_BRACKET_SAMPLE_SIZE` values (± 4 binomial sigma in rank) and every bracket is checked
       by counting the full data, so the exact median ``c`` and half-width ``h0`` lie in known
       intervals.
    2. Deviations ``d = x - c0`` are formed once in the data's dtype, with ``c0`` the bracketed
       median when every value within ``r`` of it is within a factor 2 of it (then ``d`` is
       exact there, Sterbenz), else ``c0 = 0`` (no rounding at all). The *core* ``|d| <= r``
       (``r ≈ 0.8 h0``) has its float64 sums of ``d`` and ``d²`` computed once; the *rim*
       (every other value) is kept value by value, in float64. Rounding is monotonic, so
       comparisons of ``d`` with thresholds inside the core count exactly as on ``x``.
    3. The first selection is known without the exact quartiles when no rim value lies in the
       band where the bracketed windows disagree; otherwise (and for the median) the exact
       quartiles are found by partitioning the values inside the brackets only.
    4. While the core lies inside a window, a selection re-selects the rim values only, with
       the same comparison ``|x - centre| <= half`` as the exact method. When a window cuts
       into the core the remaining iterations are the plain ones.

    Returns `None` (use the plain computation) when a bracket fails its check or the data are
    degenerate (zero spread, brackets outside the core). The squares ``d²`` of float32 data
    are rounded to float32: the moments equal the plain computation's to about 1e-9 relative.
    """
    n_all = values.size
    dt = values.dtype.type
    # 1. quartile brackets from a regular subsample (2-D stride for a view: no copy of it)
    step = max(1, n_all // _BRACKET_SAMPLE_SIZE)
    if values.ndim == 2 and not values.flags.c_contiguous:
        ky = max(1, int(round(math.sqrt(step))))
        sub = values[::ky, :: max(1, step // ky)].reshape(-1)
    else:
        sub = values.reshape(-1)[::step]
    m = sub.size
    fr = np.array([0.25, 0.5, 0.75])
    margin = np.ceil(4.0 * np.sqrt(m * fr * (1.0 - fr))).astype(np.intp) + 1
    rank = fr * (m - 1)
    lo_r = np.maximum(np.floor(rank).astype(np.intp) - margin, 0)
    hi_r = np.minimum(np.ceil(rank).astype(np.intp) + margin, m - 1)
    ranks = np.unique(np.concatenate([lo_r, hi_r]))
    part = order_statistics(sub, ranks)
    lo_v, hi_v = part[np.searchsorted(ranks, lo_r)], part[np.searchsorted(ranks, hi_r)]
    lo64, hi64 = lo_v.astype(np.float64), hi_v.astype(np.float64)
    k_sig = nsigma * IQR_TO_SIGMA
    c_lo, c_hi = float(lo64[1]), float(hi64[1])
    h_lo = k_sig * max(float(lo64[2] - hi64[0]), 0.0)
    h_hi = k_sig * float(hi64[2] - lo64[0])
    tol = 1e-12 * (abs(c_lo) + abs(c_hi) + h_hi)  # rounding of c ± h and of |x - c|
    h_lo, h_hi = h_lo - tol, h_hi + tol
    if not (h_lo > 0 and math.isfinite(h_hi)):
        return None
    # 2. deviations, core and rim
    c_mid = 0.5 * (c_lo + c_hi)
    c0 = float(dt(c_mid))
    if not 0.8 * h_lo < 0.5 * abs(c0):
        c0 = 0.0
    r = float(dt(0.8 * h_lo - abs(c_mid - c0)))
    if r > 0.8 * h_lo - abs(c_mid - c0):
        r = float(np.nextafter(dt(r), dt(0)))
    if not (r > 0 and lo64.min() - c0 > -r and hi64.max() - c0 < r):
        return None  # the brackets must lie inside the core
    r_out = r * (1.0 + 2.0 * float(np.finfo(dt).eps))  # |x - c0| of a core value is at most this
    core_lo, core_hi = c0 - r_out, c0 + r_out
    if not (c_hi - h_lo <= core_lo and core_hi <= c_lo + h_lo):
        return None
    idx = fr * (n_all - 1)
    k0 = np.floor(idx).astype(np.intp)
    k1 = np.minimum(k0 + 1, n_all - 1)
    lo_d, hi_d = (lo_v - dt(c0)).astype(dt), (hi_v - dt(c0)).astype(dt)  # exact: inside the core
    dev, below, upto, rim, s1_all, rim_d, s2_all, rim_d2 = _core_rim_passes(
        values, dt(c0), lo_d, hi_d, dt(r), keep_dev=with_median)
    if not (np.all(below <= k0) and np.all(k1 < upto)):
        return None
    s1_core = s1_all - float(rim_d.sum())
    s2_core = s2_all - float(rim_d2.sum())
    if not (math.isfinite(s1_core) and math.isfinite(s2_core)):
        return None
    n_core = n_all - rim.size
    rim_x = values[np.unravel_index(rim, values.shape)].astype(np.float64)
    # 3. the first selection
    q50 = float("nan")
    definitely = (rim_x >= c_hi - h_lo) & (rim_x <= c_lo + h_lo)
    possibly = (rim_x >= c_lo - h_hi) & (rim_x <= c_hi + h_hi)
    if with_median or np.any(possibly & ~definitely):
        q = []
        if dev is None:  # the deviations were formed block by block only: form them again
            dev = _deviations(values, dt(c0))
        for i, band_d in enumerate(_bracket_bands(dev, lo_d, hi_d)):
            # the values inside the bracket are core values: x = c0 + d exactly
            band = (band_d.astype(np.float64) + c0).astype(dt)
            j0, j1 = int(k0[i] - below[i]), int(k1[i] - below[i])
            ranks = np.unique([j0, j1])
            p = order_statistics(band, ranks)
            q.append(float(_lerp(p[0], p[-1], np.float64(idx[i] - k0[i]))))
        q25, q50, q75 = q
        centre, half = q50, k_sig * (q75 - q25)
        if not (centre - half + tol <= core_lo and core_hi + tol <= centre + half):
            return None
        sel = np.abs(rim_x - centre) <= half
    else:
        sel = definitely
    del dev
    # 4. iterations
    mean, var, n = float("nan"), float("nan"), 0
    for it in range(niter):
        if it > 0:
            tol = 1e-12 * (abs(centre) + half)
            if not (centre - half + tol <= core_lo and core_hi + tol <= centre + half):
                res = _iterate(values.reshape(-1).astype(np.float64), centre, half, nsigma, niter - it)
                return (*res, q50)
            sel = np.abs(rim_x - centre) <= half
        n = n_core + int(np.count_nonzero(sel))
        m1 = (s1_core + float(rim_d[sel].sum())) / n
        var = (s2_core + float(rim_d2[sel].sum()) - n * m1 * m1) / (n - 1)
        if not var > 0:
            return None
        mean = c0 + m1
        centre, half = mean, nsigma * math.sqrt(var)
    return mean, var, n, q50


#: Values per block of `_core_rim_passes` (float32 data), in units of numpy's buffer size.
#: 8 x 8192 float32 values (256 kB, with their bool and square blocks) stay in the L2 cache.
CORE_RIM_BLOCK_BUFFERS = 8


def _core_rim_passes(
    values: np.ndarray, c0: np.floating, lo_d: np.ndarray, hi_d: np.ndarray, r: np.floating,
    block: int | None = None, keep_dev: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray, float, np.ndarray, float, np.ndarray]:
    """Run the full-data passes of `_clipped_core_rim`, block by block (cache-sized blocks).

    Parameters
    ----------
    values : `numpy.ndarray`
        The data (float32 or float64, any shape; a 2-D view is read row block by row block).
    c0 : numpy float scalar
        Offset of the deviations ``d = x - c0`` (data dtype).
    lo_d, hi_d : `numpy.ndarray`, shape ``(3,)``
        Lower / upper quartile bracket edges, as deviations (data dtype).
    r : numpy float scalar
        Core half-width (data dtype).
    block : `int`, optional
        Values per block (a multiple of ``numpy.getbufsize()``); default
        `CORE_RIM_BLOCK_BUFFERS` buffers for float32 data and the whole array for float64.
    keep_dev : `bool`, optional
        Keep the whole array of deviations (default). `False`: form them block by block in
        a block-sized scratch array (no image-sized array written when ``c0`` is not 0 or
        ``values`` is a view; `_deviations` forms them again if they are needed later).

    Returns
    -------
    dev : `numpy.ndarray`, shape ``(n,)``, or `None`
        The deviations (a scratch array, or ``values`` itself when ``c0`` is 0 and ``values``
        contiguous); `None` when ``keep_dev`` is `False` and they were not kept.
    below, upto : `numpy.ndarray` of `int`, shape ``(3,)``
        ``#(d < lo_d[i])`` and ``#(d <= hi_d[i])``.
    rim : `numpy.ndarray` of `int`
        Flat indices of the rim, ``|d| > r``, ascending.
    s1_all : `float`
        ``d.sum(dtype=float64)``.
    rim_d : `numpy.ndarray`
        ``d[rim]`` in float64.
    s2_all : `float`
        ``(d * d).sum(dtype=float64)``, the squares rounded to the data dtype.
    rim_d2 : `numpy.ndarray`
        ``(d * d)[rim]`` in float64.

    Notes
    -----
    Every output equals, bit for bit, the same expressions evaluated on the whole array: the
    counts, comparisons and element-wise operations do not depend on the blocking, and
    numpy sums float32 data into float64 through its cast buffer (``numpy.getbufsize()``
    values), adding each buffer's pairwise sum to the running total in turn, which is what
    ``numpy.add.reduce(block, initial=total)`` continues when the blocks are whole buffers.
    float64 data are summed without a buffer (one pairwise sum over everything), so they are
    processed as one block. Blocking keeps the ~14 passes (6 bracket counts, rim, two sums
    of powers) in the L2 cache instead of streaming 4-byte arrays from memory each time.
    """
    dt = values.dtype.type
    n = values.size
    bufsize = np.getbufsize()
    if block is None:
        block = n if dt is np.float64 else CORE_RIM_BLOCK_BUFFERS * bufsize
    if dt is np.float64:
        block = n
    elif block < n and block % bufsize:
        raise ValueError(f"block {block} is not a multiple of numpy's buffer size {bufsize}")
    block = max(1, min(block, n))
    flat_in = values.flags.c_contiguous
    dev: np.ndarray | None
    if c0 == 0 and flat_in:
        dev = values.reshape(-1)  # x - 0 is x: no copy
        fill = None
    elif not keep_dev and block < n and (flat_in or values.ndim == 2):
        # deviations of each block only, in a block-sized scratch array (rows of a view)
        dev = None
        nx = n if flat_in else values.shape[1]
        blk = work_array("core_rim_dev_blk", (block if flat_in else block + 2 * nx,), dt)
        rows = values.reshape(1, -1) if flat_in else values

        def fill(s: int, e: int) -> np.ndarray:
            if flat_in:
                return np.subtract(rows[0, s:e], c0, out=blk[: e - s], dtype=dt)
            r0, r1 = s // nx, -(-e // nx)
            np.subtract(rows[r0:r1], c0, out=blk[: (r1 - r0) * nx].reshape(r1 - r0, nx), dtype=dt)
            return blk[s - r0 * nx: e - r0 * nx]
    else:
        dev2 = work_array("core_rim_dev", values.shape, dt)
        dev = dev2.reshape(-1)
        if flat_in:
            src = values.reshape(-1)

            def fill(s: int, e: int) -> None:
                np.subtract(src[s:e], c0, out=dev[s:e], dtype=dt)
        elif values.ndim == 2:
            nx = values.shape[1]
            done = [0]  # rows of the deviations written so far

            def fill(s: int, e: int) -> None:
                r1 = min(-(-e // nx), values.shape[0])
                if r1 > done[0]:
                    np.subtract(values[done[0]:r1], c0, out=dev2[done[0]:r1], dtype=dt)
                    done[0] = r1
        else:
            np.subtract(values, c0, out=dev2, dtype=dt)
            fill = None
    hit = work_array("core_rim_hit", (block,), bool)
    sq = work_array("core_rim_sq", (block,), dt)
    counts = np.zeros(6, np.intp)
    s1: np.floating | None = None
    s2: np.floating | None = None
    rims, rds, rd2s = [], [], []
    for s in range(0, n, block):
        e = min(s + block, n)
        if dev is None:
            d = fill(s, e)
        else:
            if fill is not None:
                fill(s, e)
            d = dev[s:e]
        h, q = hit[: e - s], sq[: e - s]
        for i in range(3):
            counts[i] += np.count_nonzero(np.less(d, lo_d[i], out=h))
            counts[3 + i] += np.count_nonzero(np.less_equal(d, hi_d[i], out=h))
        np.abs(d, out=q)
        k = np.flatnonzero(np.greater(q, r, out=h))
        s1 = (np.add.reduce(d, dtype=np.float64) if s1 is None
              else np.add.reduce(d, dtype=np.float64, initial=s1))
        rds.append(d[k])
        np.multiply(d, d, out=q)
        s2 = (np.add.reduce(q, dtype=np.float64) if s2 is None
              else np.add.reduce(q, dtype=np.float64, initial=s2))
        rd2s.append(q[k])
        k += s
        rims.append(k)
    rim = rims[0] if len(rims) == 1 else np.concatenate(rims)
    rim_d = (rds[0] if len(rds) == 1 else np.concatenate(rds)).astype(np.float64)
    rim_d2 = (rd2s[0] if len(rd2s) == 1 else np.concatenate(rd2s)).astype(np.float64)
    return dev, counts[:3], counts[3:], rim, float(s1), rim_d, float(s2), rim_d2


def _deviations(values: np.ndarray, c0: np.floating) -> np.ndarray:
    """``values - c0`` in the data dtype, flat (the ``dev`` of `_core_rim_passes`, same values)."""
    dev = work_array("core_rim_dev", values.shape, values.dtype)
    np.subtract(values, c0, out=dev, dtype=values.dtype)
    return dev.reshape(-1)


def _bracket_bands(dev: np.ndarray, lo_d: np.ndarray, hi_d: np.ndarray) -> list[np.ndarray]:
    """Gather the values of ``dev`` (1-D) inside each bracket ``[lo_d[i], hi_d[i]]``, in order.

    Equal to ``dev[(dev >= lo_d[i]) & (dev <= hi_d[i])]`` for each ``i``, gathered block by
    block (`CORE_RIM_BLOCK_BUFFERS` buffers) so that the comparisons stay in the cache.
    """
    block = max(1, CORE_RIM_BLOCK_BUFFERS * np.getbufsize())
    n = dev.size
    h1 = work_array("core_rim_hit", (min(block, n),), bool)
    h2 = work_array("core_rim_hit2", (min(block, n),), bool)
    parts: list[list[np.ndarray]] = [[], [], []]
    for s in range(0, n, block):
        d = dev[s:s + block]
        a, b = h1[: d.size], h2[: d.size]
        for i in range(len(lo_d)):
            np.greater_equal(d, lo_d[i], out=a)
            a &= np.less_equal(d, hi_d[i], out=b)
            parts[i].append(d[a])
    return [p[0] if len(p) == 1 else np.concatenate(p) for p in parts[: len(lo_d)]]


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
    *,
    method: Method = "auto",
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
    method : {"auto", "exact", "histogram", "subsample"}, optional
        How to compute it (module docstring); the tie-aware integer median is always exact.

    Returns
    -------
    value : `float`
        The statistic (NaN if undefined).

    Raises
    ------
    ValueError
        For an unknown statistic name or method.
    """
    _check_method(method)
    name = statistic.upper()
    if name == "MEDIAN":
        return integer_median(values, mask) if is_int else median(values, mask, method=method)
    if name in ("MEAN", "STDEV", "VARIANCE"):
        if method == "subsample":
            good = None if mask is None else ~np.asarray(mask, dtype=bool)
            s = sample_for_statistics(np.asarray(values), good).astype(np.float64, copy=False)
        else:
            s = select_finite(values, mask).astype(np.float64, copy=False)
        if name == "MEAN":
            return float(s.mean()) if s.size else float("nan")
        var = float(s.var(ddof=1)) if s.size > 1 else float("nan")
        return var if name == "VARIANCE" else float(np.sqrt(var))
    if name in ("MEANCLIP", "STDEVCLIP", "VARIANCECLIP"):
        mean, var, _ = clipped_stats(values, mask, nsigma, niter, method=method)
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
    count = np.count_nonzero(valid, axis=1)
    has = count > 0
    if has.any():
        # np.nanmedian(data[has], axis=1) from one sort per row (excluded pixels, NaN, sort
        # last): the mean of the two middle values (a + b) / 2, for an odd count numpy's
        # (x + x) / 2 on rows shorter than 600 values and x itself on longer ones
        srt = np.sort(data[has], axis=1)
        c = count[has]
        h = c // 2
        odd = c % 2 == 1
        rows = np.arange(srt.shape[0])
        high = srt[rows, h]
        low = srt[rows, np.where(odd, h, h - 1)]
        med = (low + high) / 2.0
        if data.shape[1] >= 600:
            med[odd] = high[odd]
        out[has] = med
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


# ----------------------------------------------------------------------------- stacks
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
        ``numpy.percentile(..., method="linear")`` of the valid values, bit for bit (the same
        interpolation formula as `quartiles`); NaN where none.
    """
    pos = fraction * np.maximum(n_valid - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n_valid - 1, 0))
    v_lo = np.take_along_axis(sorted_stack, lo[None], axis=0)[0]
    v_hi = np.take_along_axis(sorted_stack, hi[None], axis=0)[0]
    q = _lerp(v_lo, v_hi, pos - lo)
    return np.where(n_valid > 0, q, np.nan)


@dataclass
class StackResult:
    """Output of `stack_statistic`.

    ``image``, ``variance`` (float64, ``(ny, nx)``), ``mask`` (int32), ``n_used`` (int, values
    used per pixel).
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
    """Combine a stack of images pixel by pixel (afw ``statisticsStack``), vectorised.

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

    Notes
    -----
    Reference-algorithms §1.5 and §4.4 step 3, per pixel along the stack axis (no loop over
    pixels):

    * the candidate set of a pixel is the inputs whose value is finite and whose mask has none
      of the ``bad_bits``;
    * MEANCLIP: the selections of `clipped_stats` (iteration 0 around the median with
      half-width ``nsigma * IQR_TO_SIGMA * IQR``, later ones around the previous clipped mean
      with ``nsigma * sqrt(var)``, each re-selecting from the full candidate set, inclusive);
      the result is the mean of the last selection;
    * MEDIAN: linear-interpolation median of the candidates; MEAN: plain mean of the candidates;
    * variance of the result: if the stack has fewer than ``n_var_switch`` inputs (cp_pipe
      ``maxVisitsToCalcErrorFromInputVariance`` = 5), ``Σ var_i / n²`` over the used values
      (error from the input variance planes); otherwise the ddof=1 variance of the used values
      ``/ n`` (× π/2 for MEDIAN);
    * mask: OR of the masks of the candidate inputs; no candidate → value NaN and
      ``no_data_bit``.
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
