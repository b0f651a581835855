"""Photon transfer curve measurement: pure numpy functions on pairs of flat-field images.

Everything here works on plain arrays indexed ``[y, x]`` in ADU, with boolean "bad" arrays
(`True` = excluded pixel) of the same shape. The task classes in ``ptc_extract.py`` turn
exposures and their mask planes into these arrays.

What is computed for one region (an amplifier, the full image, or one box of a grid) of one
pair of flats follows cp_pipe ``PhotonTransferCurveExtractTask`` (reference-algorithms §3.3)
and Astier et al. 2019 (A&A 629, A36, "The shape of the photon transfer curve of CCD
sensors", appendix A for the FFT covariance estimator):

1. clipped means ``mu1``, ``mu2`` (5.5 sigma, 3 iterations, afw MEANCLIP);
2. the normalized difference ``D = (mu2 I1 - mu1 I2) / mu``, ``mu = (mu1 + mu2) / 2``, whose
   variance is twice the variance of one flat at the level ``mu``;
3. ``varDiff = VARIANCECLIP(D) / 2``, corrected for the clipping truncation;
4. covariances of ``D`` up to ``maxRange`` lags by FFT with pixel counts (``covariances_fft``,
   checked against the direct sum ``covariances_direct``);
5. per-pair gain from ``(I1 - I2)^2 / (I1 + I2)`` with NONE / SIMPLE / FULL corrections,
   by default on the two flats scaled to their common mean (``doGainFluxNormalization``).

Decisions on the reference quirks (reference-algorithms §9):

* validity of a region is ``mu1 > 0 and mu2 > 0`` (finite), not the reference's
  ``mu1 + mu2 / 2 <= 0`` precedence slip;
* pixels with zero weight are set to 0 before the FFT, so NaNs never poison it;
* SIMPLE gain uses the intended ``1 / (2 g0^2)`` term (not ``g0^2 / 2``): the correction is
  the Poisson-noise bias of the ratio estimator, see `pair_gain`;
* the per-pair gain is flux-normalised by default (ccdflow ``doGainFluxNormalization``; the
  reference uses the raw flats, whose lamp drift biases it by ``ε² μ g / 2``, see
  `measure_pair_region`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

from pipeline.image.statistics import clipped_stats_finite, work_array

__all__ = [
    "GainCorrectionType",
    "RegionMeasurement",
    "bin_image",
    "clip_correction_factor",
    "covariance_arrays",
    "covariances_direct",
    "covariances_fft",
    "edge_mask",
    "grid_boxes",
    "measure_pair",
    "measure_pair_region",
    "pair_gain",
]

GainCorrectionType = Literal["NONE", "SIMPLE", "FULL"]


#: Regions smaller than this (pixels) use the plain five-FFT covariance path.
SMALL_REGION = 1 << 16


def clip_correction_factor(nsigma: float) -> float:
    """Variance correction for a Gaussian truncated at ``±nsigma``.

    Parameters
    ----------
    nsigma : `float`
        Clipping half-width in sigma.

    Returns
    -------
    factor : `float`
        ``1 / (1 - 2 n phi(n) / (Phi(n) - Phi(-n)))`` (dimensionless, ≥ 1); ≈ 1 + 1.2e-6 at
        5.5 sigma.

    Notes
    -----
    Variance of a truncated normal distribution; reference-algorithms §3.3 step 10.
    """
    n = float(nsigma)
    pdf = math.exp(-0.5 * n * n) / math.sqrt(2.0 * math.pi)
    return 1.0 / (1.0 - 2.0 * n * pdf / math.erf(n / math.sqrt(2.0)))


def _fft_shape(ny: int, nx: int, max_range: int) -> tuple[int, int]:
    """Return the padded FFT shape: ≥ ``n + maxRange + 1`` per axis, a fast length, even along x."""
    import scipy.fft  # here, not with the task classes (graph building imports those)

    sy = scipy.fft.next_fast_len(ny + max_range + 1, real=True)
    sx = scipy.fft.next_fast_len(nx + max_range + 1, real=True)
    if sx % 2:
        sx = scipy.fft.next_fast_len(sx + 1, real=True)
    return sy, sx


@functools.lru_cache(maxsize=64)
def _lag_dft(shape: tuple[int, int], y_lags: tuple[int, ...],
             x_lags: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse-DFT matrices evaluating an ``irfft2`` of shape ``shape`` at a few lags only.

    Returns ``(ex_re, ex_im, ey)``: ``ex`` ``(sx // 2 + 1, nxl)`` holds the Hermitian weights
    (1 for the zero and Nyquist columns, 2 elsewhere) times ``exp(2πi kx x / sx)``; ``ey``
    ``(nyl, sy)`` is ``exp(2πi ky y / sy)``; the 1/(sy sx) normalisation is folded into ``ey``.
    """
    sy, sx = shape
    kx = np.arange(sx // 2 + 1)
    cx = np.full(kx.size, 2.0)
    cx[0] = 1.0
    if sx % 2 == 0:
        cx[-1] = 1.0
    # exact integer phases (mod n) before scaling: full float64 accuracy for any lag
    ang_x = 2.0 * np.pi * ((kx[:, None] * np.asarray(x_lags)[None, :]) % sx) / sx
    ky = np.arange(sy)
    ang_y = 2.0 * np.pi * ((np.asarray(y_lags)[:, None] * ky[None, :]) % sy) / sy
    ex = cx[:, None] * np.exp(1j * ang_x)
    ey = np.exp(1j * ang_y) / (sy * sx)
    return np.ascontiguousarray(ex.real), np.ascontiguousarray(ex.imag), ey


def _lags(spec: np.ndarray, shape: tuple[int, int], y_lags: tuple[int, ...],
          x_lags: tuple[int, ...]) -> np.ndarray:
    """``irfft2(spec, s=shape)[y, x]`` for the listed lags only, as two small matrix products.

    ``spec`` is a half spectrum ``(sy, sx // 2 + 1)`` of a real correlation (real for an
    auto-correlation, complex for a cross-correlation); the result ``(len(y_lags),
    len(x_lags))`` equals the inverse FFT at those lags (float64 accumulation) at a fraction of
    its cost: only ``(2M-1) × M`` of the ``sy × sx`` lags are needed (Astier+19 app. A).
    """
    ex_re, ex_im, ey = _lag_dft(shape, tuple(y_lags), tuple(x_lags))
    if np.iscomplexobj(spec):
        a = spec.astype(np.complex128, copy=False) @ (ex_re + 1j * ex_im)
    else:
        s = spec
        if s.dtype != np.float64:
            s = work_array("ptc_lags_spec", spec.shape, np.float64)
            np.copyto(s, spec)
        nxl = ex_re.shape[1]
        both = s @ np.concatenate([ex_re, ex_im], axis=1)
        a = both[:, :nxl] + 1j * both[:, nxl:]
    return (ey @ a).real


@functools.lru_cache(maxsize=16)
def _unit_weight_spectrum(ny: int, nx: int, shape: tuple[int, int], y_lags: tuple[int, ...],
                          x_lags: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``W = rfft2(ones((ny, nx)), s=shape)`` and the pair counts ``rint(IFFT(|W|²))`` at the lags.

    What `covariances_fft` computes from all-one weights, computed once per region shape
    (read-only arrays; the same numbers as computing them again).
    """
    import scipy.fft

    fw = scipy.fft.rfft2(np.ones((ny, nx)), s=shape)
    p_cnt = np.rint(_lags(_power(fw), shape, y_lags, x_lags))
    fw.flags.writeable = False
    p_cnt.flags.writeable = False
    return fw, p_cnt


def _power(f: np.ndarray) -> np.ndarray:
    """``|f|²`` of a complex array without a square root (a scratch array: use it at once).

    Computed in the precision of ``f`` (``re² + im²``, each rounded to it) and stored as
    float64, the type `_lags` multiplies in: the values of a float32 sum converted afterwards,
    without a separate conversion pass.
    """
    dt = f.real.dtype
    re2 = np.square(f.real, out=work_array("ptc_power", f.shape, dt))
    im2 = np.square(f.imag, out=work_array("ptc_power_im", f.shape, dt))
    return np.add(re2, im2, out=work_array("ptc_power64", f.shape, np.float64), dtype=dt,
                  casting="unsafe")


def _rfft2_scratch(buf: np.ndarray) -> np.ndarray:
    """``scipy.fft.rfft2(buf)`` written into the scratch array ``"ptc_fft_out"``.

    The same transform (pocketfft's ``r2c`` over both axes, last axis first, as ``rfft2``
    calls it) without a fresh multi-megabyte output array per call; plain ``rfft2`` when
    this SciPy has no such entry point. Valid until the next call in the thread.
    """
    import scipy.fft

    try:
        from scipy.fft._pocketfft import pypocketfft
    except ImportError:  # pragma: no cover - SciPy without the bundled pocketfft module
        return scipy.fft.rfft2(buf)
    ctype = np.complex64 if buf.dtype == np.float32 else np.complex128
    out = work_array("ptc_fft_out", (buf.shape[0], buf.shape[1] // 2 + 1), ctype)
    try:
        return pypocketfft.r2c(buf, (0, 1), True, 0, out, 1)
    except TypeError:  # pragma: no cover - another signature of the private entry point
        return scipy.fft.rfft2(buf)


def _power_inplace(f: np.ndarray) -> np.ndarray:
    """`_power` of a scratch spectrum ``f``, squaring its real and imaginary parts in place.

    One contiguous squaring pass over ``f`` viewed as reals instead of two strided ones;
    ``re² + im²`` is then added in the precision of ``f`` as in `_power`: the same values.
    ``f`` is overwritten.
    """
    dt = f.real.dtype
    v = f.view(dt)
    np.square(v, out=v)
    return np.add(v[:, 0::2], v[:, 1::2], out=work_array("ptc_power64", f.shape, np.float64), dtype=dt,
                  casting="unsafe")


def _collapsed_sat(a: np.ndarray, m: int) -> np.ndarray:
    """Summed-area table (float64) of ``a`` with its middle rows/columns collapsed.

    Exact sums over boxes whose edges lie within ``m`` pixels of the image edges; shape
    ``(2m + 2, 2m + 2)``; index with `_sat_index`.
    """
    ny, nx = a.shape
    rows = np.concatenate([a[:m].astype(np.float64),
                           a[m:ny - m].sum(axis=0, dtype=np.float64, keepdims=True),
                           a[ny - m:].astype(np.float64)])
    col = np.concatenate([rows[:, :m], rows[:, m:nx - m].sum(axis=1, keepdims=True),
                          rows[:, nx - m:]], axis=1)
    sat = np.zeros((col.shape[0] + 1, col.shape[1] + 1))
    sat[1:, 1:] = col.cumsum(axis=0).cumsum(axis=1)
    return sat


def _sat_index(y: np.ndarray, n: int, m: int) -> np.ndarray:
    """Row (or column) boundary ``y`` of the full image → index into `_collapsed_sat`."""
    return np.where(y <= m, y, y - (n - m) + m + 1)


def _box_sums(sat: np.ndarray, shape: tuple[int, int], m: int, y0: np.ndarray, y1: np.ndarray,
              x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Sum over the half-open boxes ``[y0, y1) × [x0, x1)`` (arrays) from `_collapsed_sat`."""
    ny, nx = shape
    a0, a1 = _sat_index(y0, ny, m), _sat_index(y1, ny, m)
    b0, b1 = _sat_index(x0, nx, m), _sat_index(x1, nx, m)
    return sat[a1, b1] - sat[a0, b1] - sat[a1, b0] + sat[a0, b0]


#: Above this many zero-weight pixels the covariance pixel counts come from FFTs of the
#: weights instead of box sums with per-pixel corrections.
SPARSE_MAX_ZEROS = 2048


def covariances_fft(
    diff: np.ndarray, weights: np.ndarray, max_range: int, *, single_precision: bool = False,
    diff_sum: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Covariances of a weighted image at lags ``0..max_range`` by FFT (Astier+19 app. A).

    Parameters
    ----------
    diff : `numpy.ndarray`, shape ``(ny, nx)``
        Image (ADU); values where ``weights == 0`` are ignored (even if NaN).
    weights : `numpy.ndarray`, shape ``(ny, nx)``
        0/1 weights (bool or numeric).
    max_range : `int`
        Largest lag computed along each axis (pixels).
    single_precision : `bool`, optional
        Do the one large FFT in float32 (about 2× faster; the covariances then carry a
        relative error ~1e-7 of ``C00``, far below their statistical error). Only used on the
        box-sum path (few zero-weight pixels); the pixel-count FFTs are always float64.
        Default float64.
    diff_sum : `float`, optional
        ``float(diff.sum(dtype=numpy.float64))`` when the caller has it already (saves a pass
        over ``diff``); it only sets the offset removed before the FFT.

    Returns
    -------
    cov : `numpy.ndarray`, shape ``(max_range + 1, max_range + 1)``
        ``cov[dx, dy]``: covariance (ADU²) of pixel pairs separated by ``(dx, dy)``, each member
        centred on the mean of its own subset; for ``dx, dy > 0`` the average of the
        ``(dx, dy)`` and ``(dx, -dy)`` estimates. NaN where no pair exists.
    npix : `numpy.ndarray` of `int`, shape ``(max_range + 1, max_range + 1)``
        Number of pixel pairs used (summed over the two orientations when averaged).

    Notes
    -----
    Astier+19 (appendix A) and the reference (reference-algorithms §3.3 step 8) compute, with
    ``X = FFT(D w)`` and ``W = FFT(w)``, ``Pcov = IFFT(X X*)``, ``Pmean = IFFT(X W*)``,
    ``Pcnt = IFFT(W W*)`` and ``C = Pcov[δ]/N - Pmean[δ] Pmean[-δ] / N²`` with ``N = Pcnt[δ]``.
    Only ``(2M - 1) × M`` lags of the inverse transforms are used, so they are evaluated as
    two small matrix products of the spectrum (`_lags`), not as full inverse FFTs. When at
    most `SPARSE_MAX_ZEROS` pixels (set ``Z``) have zero weight (the usual amp), only ``X`` is
    transformed: the pair count and the two member sums at each lag are box sums of a
    summed-area table minus corrections over ``Z`` — the same numbers, exactly. Otherwise
    ``X`` and ``W`` are transformed in float64. The padded size is a fast FFT length
    ≥ ``n + max_range + 1`` per axis, so nothing wraps around.
    """
    import scipy.fft

    w = np.asarray(weights)
    w = w if w.dtype == bool else w != 0
    diff = np.asarray(diff)
    ny, nx = w.shape
    m = max_range + 1
    n_good = int(np.count_nonzero(w))
    n_zero = w.size - n_good
    sparse = (n_zero <= SPARSE_MAX_ZEROS and w.size >= SMALL_REGION
              and ny > 2 * m + 1 and nx > 2 * m + 1)
    ftype = np.float32 if (single_precision and sparse) else np.float64
    zy = zx = None
    if n_zero:
        zy, zx = np.divmod(np.flatnonzero(~w), nx)
    # covariances are invariant under a constant offset: centre for precision
    mean = 0.0
    if n_good:
        total = float(diff.sum(dtype=np.float64)) if diff_sum is None else float(diff_sum)
        if n_zero and math.isfinite(total):
            total -= float(diff[zy, zx].sum(dtype=np.float64))
        elif n_zero:                          # NaN/inf under zero weight
            total = float(np.sum(diff, where=w, dtype=np.float64))
        mean = total / n_good
    shape = _fft_shape(ny, nx, max_range)
    # centred image written straight into the zero-padded FFT buffer
    buf = work_array("cov_fft_buf", shape, ftype)
    buf[ny:] = 0.0
    buf[:ny, nx:] = 0.0
    d = buf[:ny, :nx]
    np.subtract(diff, mean, out=d, dtype=ftype, casting="unsafe")
    if n_zero:
        d[zy, zx] = 0.0
    y_pm = tuple(range(-(m - 1), m))           # lags -max_range .. max_range
    x_p = tuple(range(m))                     # lags 0 .. max_range
    dy_g = np.arange(m)[:, None]
    dx_g = np.arange(m)[None, :]
    if sparse:
        # every lag (dy, dx) and its mirror (-dy, dx): B = first member's box, A = B + δ.
        # Pair counts and member sums from box sums and the zero-weight pixels (before the
        # FFT, which overwrites the buffer)
        ly = np.concatenate([np.broadcast_to(dy_g, (m, m)).ravel(), -np.broadcast_to(dy_g, (m, m)).ravel()])
        lx = np.concatenate([np.broadcast_to(dx_g, (m, m)).ravel()] * 2)
        by0 = np.where(ly >= 0, 0, -ly)
        by1 = np.where(ly >= 0, ny - ly, ny)
        bx0 = np.zeros_like(lx)
        bx1 = nx - lx
        ay0, ay1, ax0, ax1 = by0 + ly, by1 + ly, bx0 + lx, bx1 + lx
        sat = _collapsed_sat(d, m)
        n = ((by1 - by0) * (bx1 - bx0)).astype(np.float64)
        s_b = _box_sums(sat, (ny, nx), m, by0, by1, bx0, bx1)
        s_a = _box_sums(sat, (ny, nx), m, ay0, ay1, ax0, ax1)
        if n_zero:
            zy2, zx2 = zy[None, :], zx[None, :]
            in_b = ((zy2 >= by0[:, None]) & (zy2 < by1[:, None])
                    & (zx2 >= bx0[:, None]) & (zx2 < bx1[:, None]))
            in_a = ((zy2 >= ay0[:, None]) & (zy2 < ay1[:, None])
                    & (zx2 >= ax0[:, None]) & (zx2 < ax1[:, None]))
            # partner p + δ of z in B, p - δ of z in A (clipped where not in the box: masked)
            fy = np.clip(zy2 + ly[:, None], 0, ny - 1)
            fx_ = np.clip(zx2 + lx[:, None], 0, nx - 1)
            gy = np.clip(zy2 - ly[:, None], 0, ny - 1)
            gx = np.clip(zx2 - lx[:, None], 0, nx - 1)
            both = np.count_nonzero(in_b & ~w[fy, fx_], axis=1)
            n -= in_b.sum(axis=1) + in_a.sum(axis=1) - both
            s_a -= np.where(in_b, d[fy, fx_], 0.0).sum(axis=1, dtype=np.float64)
            s_b -= np.where(in_a, d[gy, gx], 0.0).sum(axis=1, dtype=np.float64)
        n = np.where((by1 > by0) & (bx1 > bx0), n, 0.0)
    if sparse:
        # only |X|² is needed: transform into a scratch array and square it in place
        fx = _rfft2_scratch(buf)
        del buf, d
        p_cov = _lags(_power_inplace(fx), shape, y_pm, x_p)     # [dy + m - 1, dx]
    else:
        fx = scipy.fft.rfft2(buf, overwrite_x=True)
        del buf, d
        p_cov = _lags(_power(fx), shape, y_pm, x_p)             # [dy + m - 1, dx]
    if not sparse:
        if n_zero == 0 and w.size < SMALL_REGION:
            # every pixel weighted (a clean grid box): the same weight spectrum every time
            fw, p_cnt = _unit_weight_spectrum(ny, nx, shape, y_pm, x_p)
        else:
            fw = scipy.fft.rfft2(w.astype(np.float64), s=shape)
            p_cnt = np.rint(_lags(_power(fw), shape, y_pm, x_p))
        x_pm = tuple(range(-(m - 1), m))
        p_mean = _lags(fx * np.conj(fw), shape, y_pm, x_pm)    # [dy + m - 1, dx + m - 1]
        del fx, fw
        c0 = m - 1

        def lag(sgn: int) -> tuple[np.ndarray, np.ndarray]:
            yy = sgn * dy_g
            n = p_cnt[yy + c0, dx_g]
            with np.errstate(invalid="ignore", divide="ignore"):
                c = (p_cov[yy + c0, dx_g] / n
                     - p_mean[yy + c0, dx_g + c0] * p_mean[-yy + c0, -dx_g + c0] / n**2)
            return np.where(n > 0, c, np.nan), n

        c1, n1 = lag(1)
        c2, n2 = lag(-1)
    else:
        del fx
        sab = p_cov[ly + m - 1, lx]
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.where(n > 0, sab / n - s_a * s_b / n**2, np.nan)
        c1, n1 = c[: m * m].reshape(m, m), n[: m * m].reshape(m, m)
        c2, n2 = c[m * m:].reshape(m, m), n[m * m:].reshape(m, m)
    both_nz = (dy_g > 0) & (dx_g > 0)
    cov_yx = np.where(both_nz, 0.5 * (c1 + c2), c1)
    n_yx = np.where(both_nz, n1 + n2, n1)
    return cov_yx.T.copy(), np.rint(n_yx.T).astype(np.int64)


def _direct_one(d: np.ndarray, w: np.ndarray, dx: int, dy: int) -> tuple[float, int]:
    ny, nx = d.shape
    if dy >= 0:
        a, wa = d[dy:, dx:], w[dy:, dx:]
        b, wb = d[: ny - dy, : nx - dx], w[: ny - dy, : nx - dx]
    else:
        a, wa = d[: ny + dy, dx:], w[: ny + dy, dx:]
        b, wb = d[-dy:, : nx - dx], w[-dy:, : nx - dx]
    wab = wa * wb
    n = float(wab.sum())
    if n == 0:
        return float("nan"), 0
    cov = float((a * b * wab).sum() / n - ((a * wab).sum() / n) * ((b * wab).sum() / n))
    return cov, int(round(n))


def covariances_direct(
    diff: np.ndarray, weights: np.ndarray, max_range: int
) -> tuple[np.ndarray, np.ndarray]:
    """Real-space sum giving the same covariances as `covariances_fft` (slow; for checks).

    Parameters
    ----------
    diff, weights : `numpy.ndarray`, shape ``(ny, nx)``
        Image (ADU) and 0/1 weights.
    max_range : `int`
        Largest lag (pixels).

    Returns
    -------
    cov, npix : `numpy.ndarray`, shape ``(max_range + 1, max_range + 1)``
        As `covariances_fft`.

    Notes
    -----
    Reference ``computeCovDirect`` (cp_pipe before 312e0aee), reference-algorithms §3.3 step 8.
    """
    w = np.asarray(weights, dtype=np.float64)
    d = np.where(w != 0, np.asarray(diff, dtype=np.float64), 0.0)
    if w.sum() > 0:
        d = np.where(w != 0, d - (d * w).sum() / w.sum(), 0.0)  # offset-invariant; precision
    m = max_range + 1
    cov = np.full((m, m), np.nan)
    npix = np.zeros((m, m), dtype=np.int64)
    for dy in range(m):
        for dx in range(m):
            c1, n1 = _direct_one(d, w, dx, dy)
            if dx == 0 or dy == 0:
                cov[dx, dy], npix[dx, dy] = c1, n1
                continue
            c2, n2 = _direct_one(d, w, dx, -dy)
            cov[dx, dy] = 0.5 * (c1 + c2)
            npix[dx, dy] = n1 + n2
    return cov, npix


def covariance_arrays(
    cov: np.ndarray, npix: np.ndarray, max_range: int, clip_factor: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn difference-image covariances into per-flat covariances and their fit weights.

    Parameters
    ----------
    cov, npix : `numpy.ndarray`, shape ``(max_range + 1, max_range + 1)``
        Output of `covariances_fft` for the difference image (ADU²), indexed ``[dx, dy]``.
    max_range : `int`
        ``maximumRangeCovariancesAstier``; lags ``0 .. max_range - 1`` are kept.
    clip_factor : `float`, optional
        `clip_correction_factor` of the clipping used (``cov[0, 0]`` × f, the others × f²,
        as the reference).

    Returns
    -------
    covariances : `numpy.ndarray`, shape ``(max_range, max_range)``
        ``½ C[dx, dy]`` (ADU²): the covariance of one flat.
    sqrt_weights : `numpy.ndarray`, shape ``(max_range, max_range)``
        ``1 / sqrt(V)`` with ``V = (½ C00)² / npix`` (``V00`` doubled), 0 where undefined.
    npix_out : `numpy.ndarray`, shape ``(max_range, max_range)``
        Pixel-pair counts.

    Notes
    -----
    Reference-algorithms §3.3 step 11; Astier+19 §4 for the variance of a covariance estimate.
    """
    m = max_range
    out = 0.5 * np.asarray(cov, dtype=np.float64)[:m, :m].copy()
    out *= clip_factor**2
    out[0, 0] /= clip_factor
    n = np.asarray(npix)[:m, :m].astype(np.float64)
    c00 = 0.5 * cov[0, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        var = c00**2 / n
        var[0, 0] *= 2.0
        sw = 1.0 / np.sqrt(var)
    sw[~np.isfinite(sw)] = 0.0
    return out, sw, np.asarray(npix)[:m, :m].copy()


def pair_gain(
    ratio_mean: float, mu: float, read_noise_adu: float, correction: GainCorrectionType = "FULL"
) -> float:
    """Gain (e⁻/ADU) of one flat pair from ``c = mean((I1 - I2)² / (I1 + I2))``.

    Parameters
    ----------
    ratio_mean : `float`
        ``c`` (ADU): the plain mean over good pixels of ``(I1 - I2)² / (I1 + I2)``.
    mu : `float`
        Mean signal of the pair (ADU).
    read_noise_adu : `float`
        Read noise σ (ADU); NaN makes SIMPLE and FULL fall back to NONE.
    correction : {"NONE", "SIMPLE", "FULL"}
        NONE: ``g = 1/c``. SIMPLE: ``g = 1 / (c - (σ² - 1/(2 g0²)) / μ)`` with ``g0 = 1/c``.
        FULL: ``g = (μ + sqrt(μ² - 2μc + 2σ²)) / (2cμ - 2σ²)``.

    Returns
    -------
    gain : `float`
        e⁻/ADU (NaN if the expression is undefined).

    Raises
    ------
    ValueError
        For an unknown ``correction``.

    Notes
    -----
    For Poisson-distributed electrons ``E[(N1 - N2)² / (N1 + N2)] = 1`` exactly, so ``c`` is
    ``1/g`` plus the read-noise term ``σ²/μ``; FULL inverts ``c = 1/g + σ²/μ - 1/(2 g² μ)``
    for ``1/g`` (cp_pipe ``getGainFromFlatPair``, reference-algorithms §3.3 step 12). The
    SIMPLE correction keeps the first order; we use the intended ``1/(2 g0²)`` term (the
    reference's code computes ``g0²/2``, a precedence slip — §9).
    """
    c, mu, s = float(ratio_mean), float(mu), float(read_noise_adu)
    if correction not in ("NONE", "SIMPLE", "FULL"):
        raise ValueError(f"gainCorrectionType must be NONE, SIMPLE or FULL, not {correction!r}")
    if not np.isfinite(c) or c <= 0:
        return float("nan")
    if correction == "NONE" or not np.isfinite(s):
        return 1.0 / c
    if correction == "SIMPLE":
        g0 = 1.0 / c
        return 1.0 / (c - (s**2 - 1.0 / (2.0 * g0**2)) / mu)
    disc = mu**2 - 2.0 * mu * c + 2.0 * s**2
    den = 2.0 * c * mu - 2.0 * s**2
    if disc < 0 or den == 0:
        return float("nan")
    return (mu + math.sqrt(disc)) / den


def bin_image(image: np.ndarray, bad: np.ndarray, bin_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin an image by ``bin_size`` in both axes: mean of good pixels, bad if all are bad.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Image (ADU).
    bad : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
        Excluded pixels.
    bin_size : `int`
        Factor (≥ 1); trailing rows/columns that do not fill a bin are dropped.

    Returns
    -------
    binned, binned_bad : `numpy.ndarray`, shape ``(ny // b, nx // b)``

    Notes
    -----
    afw ``binImage`` averages and ORs the mask; here a bin is bad when any member is bad
    (the OR), and its value is the plain mean (reference-algorithms §2.14).
    """
    b = int(bin_size)
    if b <= 1:
        return image, bad
    ny, nx = (image.shape[0] // b) * b, (image.shape[1] // b) * b
    im = image[:ny, :nx].reshape(ny // b, b, nx // b, b).mean(axis=(1, 3))
    bd = bad[:ny, :nx].reshape(ny // b, b, nx // b, b).any(axis=(1, 3))
    return im, bd


def edge_mask(shape: tuple[int, int], n_edge: int) -> np.ndarray:
    """Boolean array `True` on the ``n_edge`` outermost rows and columns (SUSPECT edges).

    Parameters
    ----------
    shape : `tuple` of `int`
        ``(ny, nx)``.
    n_edge : `int`
        Width of the border (pixels); 0 gives an all-`False` array.

    Returns
    -------
    edges : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
    """
    out = np.zeros(shape, dtype=bool)
    if n_edge > 0:
        out[:n_edge, :] = True
        out[-n_edge:, :] = True
        out[:, :n_edge] = True
        out[:, -n_edge:] = True
    return out


def grid_boxes(ny: int, nx: int, grid_size: tuple[int, int]) -> list[tuple[slice, slice]]:
    """Split an ``(ny, nx)`` region into a grid of boxes (the GRID measurement region).

    Parameters
    ----------
    ny, nx : `int`
        Region shape (pixels).
    grid_size : `tuple` of `int`
        ``(box_nx, box_ny)``: box size in pixels (x, y). A value ≤ 0 or larger than the region
        means the full extent along that axis. Remainders are spread over the boxes, so the
        boxes tile the region completely.

    Returns
    -------
    boxes : `list` of ``(slice_y, slice_x)``
        In row-major order (y outer).
    """
    bx, by = int(grid_size[0]), int(grid_size[1])
    nbx = max(1, nx // bx) if 0 < bx < nx else 1
    nby = max(1, ny // by) if 0 < by < ny else 1
    xe = np.linspace(0, nx, nbx + 1).round().astype(int)
    ye = np.linspace(0, ny, nby + 1).round().astype(int)
    return [
        (slice(int(ye[j]), int(ye[j + 1])), slice(int(xe[i]), int(xe[i + 1])))
        for j in range(nby)
        for i in range(nbx)
    ]


@dataclass
class RegionMeasurement:
    """Measurements of one region (amp, full image or grid box) of one flat pair.

    Attributes
    ----------
    valid : `bool`
        The region gave a usable point (``expIdMask``).
    mean1, mean2, mean : `float`
        Clipped means of each flat and their average (ADU).
    raw_var : `float`
        Half the clipped variance of the normalized difference, clip-corrected (ADU²).
    row_mean_variance : `float`
        Clipped variance of the per-row means of the difference image (ADU²).
    covariances, sqrt_weights, npix_cov : `numpy.ndarray`, shape ``(M, M)``
        See `covariance_arrays`; NaN / 0 when not measured.
    gain : `float`
        Per-pair gain (e⁻/ADU), NaN when not computed.
    n_pix : `int`
        Good pixels in the region.
    reason : `str`
        Why the region is invalid ("" when valid).
    """

    valid: bool
    mean1: float = float("nan")
    mean2: float = float("nan")
    mean: float = float("nan")
    raw_var: float = float("nan")
    row_mean_variance: float = float("nan")
    covariances: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    sqrt_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    npix_cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    gain: float = float("nan")
    n_pix: int = 0
    reason: str = ""


def _empty(max_range: int, reason: str, **kw: float) -> RegionMeasurement:
    m = max_range
    return RegionMeasurement(
        valid=False,
        covariances=np.full((m, m), np.nan),
        sqrt_weights=np.zeros((m, m)),
        npix_cov=np.zeros((m, m), dtype=np.int64),
        reason=reason,
        **kw,
    )


def measure_pair_region(
    im1: np.ndarray,
    im2: np.ndarray,
    bad1: np.ndarray | None = None,
    bad2: np.ndarray | None = None,
    *,
    read_noise_adu: float = float("nan"),
    max_range: int = 8,
    nsigma: float = 5.5,
    niter: int = 3,
    bin_size: int = 1,
    min_good_pixels: int = 10000,
    do_gain: bool = True,
    gain_correction: GainCorrectionType = "FULL",
    gain_flux_normalization: bool = True,
    do_covariances: bool = True,
) -> RegionMeasurement:
    """Mean, variance, covariances and gain of one region of a pair of flats.

    Parameters
    ----------
    im1, im2 : `numpy.ndarray`, shape ``(ny, nx)``
        The two flats (ADU, bias/overscan subtracted).
    bad1, bad2 : `numpy.ndarray` of `bool`, shape ``(ny, nx)``, optional
        Excluded pixels of each flat (mask planes in ``maskNameList``, edges); non-finite
        pixels are always excluded. The difference image uses their OR.
    read_noise_adu : `float`, optional
        Read noise of the pair (ADU) for the SIMPLE/FULL gain; NaN → NONE.
    max_range : `int`, optional
        ``maximumRangeCovariancesAstier``: covariance lags ``0 .. max_range - 1`` returned.
    nsigma, niter : `float`, `int`, optional
        ``nSigmaClipPtc``, ``nIterSigmaClipPtc``.
    bin_size : `int`, optional
        ``binSize``: the difference image is binned before the variance/covariances.
    min_good_pixels : `int`, optional
        ``minNumberGoodPixelsForCovariance`` (divided by ``bin_size²``).
    do_gain : `bool`, optional
        Compute the per-pair gain.
    gain_correction : {"NONE", "SIMPLE", "FULL"}
        ``gainCorrectionType``.
    gain_flux_normalization : `bool`, optional
        ``doGainFluxNormalization`` (ccdflow, default `True`): the per-pair gain uses the two
        flats scaled to their common mean, ``I1 μ/μ1`` and ``I2 μ/μ2``. Without it (cp_pipe),
        a flux mismatch ``ε = (μ2 - μ1)/μ`` between the exposures (lamp drift) adds
        ``ε² μ / 2`` to ``c = <(I1 - I2)² / (I1 + I2)>``: at 30 000 ADU a 0.6 % drift (Kast
        dome flats) lowers the per-pair gain by 40 %. The scaling changes the shot noise by
        ``O(ε²)`` only.
    do_covariances : `bool`, optional
        Skip the FFT when `False` (covariances NaN beyond ``[0, 0]`` = raw variance).

    Returns
    -------
    measurement : `RegionMeasurement`
        ``valid`` is `False` (with ``reason``) when a mean is not finite or ≤ 0, or too few
        good pixels remain for the covariances.

    Raises
    ------
    ValueError
        If the two images do not have the same shape.

    Notes
    -----
    cp_pipe ``measureMeanVarCov`` / ``_extractOneFlatPair`` (reference-algorithms §3.3),
    covariances after Astier et al. 2019 appendix A.
    """
    im1 = np.asarray(im1)
    im2 = np.asarray(im2)
    if im1.shape != im2.shape:
        raise ValueError(f"flat pair shapes differ: {im1.shape} vs {im2.shape}")
    # float32 flats (post-ISR images) are differenced in float32: the rounding error
    # (~1e-7 x level) is far below the shot noise; other inputs in float64
    work = np.float32 if (im1.dtype == np.float32 and im2.dtype == np.float32) else np.float64
    # Large regions (amps) of flats without masked pixels are measured as they are, assuming
    # every value finite, and checked by the difference pass (a NaN or infinity in either flat
    # makes the sum of the difference image non-finite): no boolean images are built in the
    # usual case. Otherwise (small boxes: the test costs less than the bookkeeping), or when
    # the check fails, the usable pixels are selected first.
    got = None
    if im1.size >= SMALL_REGION and not (_any_set(bad1) or _any_set(bad2)):
        got = _means_and_difference(im1, im2, None, None, nsigma, niter, True, do_gain,
                                    gain_flux_normalization, bin_size)
    if got is None:
        got = _means_and_difference(im1, im2, bad1, bad2, nsigma, niter, False, do_gain,
                                    gain_flux_normalization, bin_size)
    mu1, mu2, n1, good, pair = got
    if pair is None:
        return _empty(max_range, "non-positive or non-finite mean", mean1=mu1, mean2=mu2)
    mu = 0.5 * (mu1 + mu2)
    diff, ratio_mean = pair.diff, pair.ratio_mean
    if bin_size > 1:
        diff, bad_b = bin_image(diff, np.zeros(diff.shape, bool) if good is None else ~good, bin_size)
        good_b = ~bad_b & np.isfinite(diff)
        if good_b.all():
            good_b = None
    else:
        good_b = good
    mean_d, var_d, _ = clipped_stats_finite(diff if good_b is None else diff[good_b], nsigma, niter)
    f = clip_correction_factor(nsigma)
    var_diff = 0.5 * var_d
    # rowMeanVariance: per-row mean of good pixels, rows 0 .. ny-1 (we keep the last row).
    with np.errstate(invalid="ignore", divide="ignore"):
        if good_b is None:
            row_means = (pair.row_sums if pair.row_sums is not None
                         else diff.sum(axis=1, dtype=np.float64)) / diff.shape[1]
        else:
            row_means = (np.where(good_b, diff, 0.0).sum(axis=1, dtype=np.float64)
                         / good_b.sum(axis=1))
    _, row_var, _ = clipped_stats_finite(row_means[np.isfinite(row_means)], nsigma, niter)

    gain = float("nan")
    if do_gain:
        gain = pair_gain(ratio_mean, mu, read_noise_adu, gain_correction)

    m = max_range
    res = RegionMeasurement(
        valid=True, mean1=mu1, mean2=mu2, mean=mu, raw_var=var_diff * f,
        row_mean_variance=row_var, gain=gain, n_pix=int(n1),
    )
    if not do_covariances:
        cov = np.full((m, m), np.nan)
        cov[0, 0] = var_diff * f
        res.covariances, res.sqrt_weights = cov, np.zeros((m, m))
        res.npix_cov = np.zeros((m, m), dtype=np.int64)
        return res
    # covariance weights: |D| <= MEANCLIP(D) + nsigma sqrt(VARIANCECLIP(D)) on good pixels
    cut = mean_d + nsigma * math.sqrt(var_d) if np.isfinite(var_d) else np.inf
    w = work_array("ptc_w", diff.shape, bool)
    if np.isfinite(cut):
        _abs_at_most(diff, work(cut), w)
    else:
        np.isfinite(diff, out=w)
    if good_b is not None:
        w &= good_b
    if np.count_nonzero(w) < min_good_pixels / bin_size**2:
        out = _empty(m, f"fewer than {min_good_pixels} good pixels for the covariances")
        out.mean1, out.mean2, out.mean, out.raw_var = mu1, mu2, mu, var_diff * f
        out.gain, out.n_pix, out.row_mean_variance = gain, int(n1), row_var
        return out
    cov, npix = covariances_fft(diff, w, m, single_precision=diff.size > SMALL_REGION,
                                diff_sum=pair.diff_sum if bin_size == 1 else None)
    res.covariances, res.sqrt_weights, res.npix_cov = covariance_arrays(cov, npix, m, f)
    return res


#: Values per block of `_difference_and_ratio_mean` (float32 flats): 8 numpy buffers of
#: 8192 values, so that the block's temporaries stay in the L2 cache.
PAIR_BLOCK = 8 * 8192


def _ratio_mean_plain(d1: np.ndarray, d2: np.ndarray, mu1: float, mu2: float,
                      good: np.ndarray | None, flux_normalization: bool) -> float:
    """``c = mean((I1 - I2)² / (I1 + I2))`` over good pixels with ``I1 + I2 > 0`` (whole arrays).

    With ``flux_normalization`` the flats are first scaled to their common mean,
    ``I1 μ/μ1`` and ``I2 μ/μ2``. NaN when no pixel qualifies.
    """
    work = d1.dtype.type
    mu = 0.5 * (mu1 + mu2)
    if flux_normalization:
        s1, s2 = work(mu / mu1), work(mu / mu2)
        dd = np.multiply(d1, s1, out=work_array("ptc_dd", d1.shape, work))
        t2 = np.multiply(d2, s2, out=work_array("ptc_tmp", d1.shape, work))
        den = np.add(dd, t2, out=work_array("ptc_den", d1.shape, work))
        dd -= t2
        del t2
    else:
        dd = np.subtract(d1, d2, out=work_array("ptc_dd", d1.shape, work))
        den = np.add(d1, d2, out=work_array("ptc_den", d1.shape, work))
    dd *= dd
    if good is None and den.size and float(den.min()) > 0:
        dd /= den
        return float(dd.sum(dtype=np.float64)) / dd.size
    ok = den > 0
    if good is not None:
        ok &= good
    n_ok = int(np.count_nonzero(ok))
    if not n_ok:
        return float("nan")
    np.divide(dd, den, out=dd, where=ok)
    return float(np.sum(dd, where=ok, dtype=np.float64)) / n_ok


class PairPass(NamedTuple):
    """Outputs of `_difference_and_ratio_mean` (one pass over a flat pair)."""

    #: ``D = (μ2 I1 - μ1 I2) / μ``, shape ``(ny, nx)``, in the working dtype (the scratch
    #: array ``"ptc_diff"``: valid until the next call in the thread).
    diff: np.ndarray
    #: ``c = mean((I1 - I2)² / (I1 + I2))`` (ADU), NaN when not computed or undefined.
    ratio_mean: float
    #: ``diff.sum(dtype=float64)`` (ADU), bit for bit.
    diff_sum: float
    #: ``diff.sum(axis=1, dtype=float64)``, shape ``(ny,)`` (ADU), bit for bit; `None` unless asked.
    row_sums: np.ndarray | None


def _difference_and_ratio_mean(
    d1: np.ndarray, d2: np.ndarray, mu1: float, mu2: float, good: np.ndarray | None, *,
    do_gain: bool = True, flux_normalization: bool = True, block: int | None = None,
    row_sums: bool = False,
) -> PairPass:
    """Difference image ``D = (μ2 I1 - μ1 I2) / μ``, its sums and the gain's ``c``, in one pass.

    Parameters
    ----------
    d1, d2 : `numpy.ndarray`, shape ``(ny, nx)``
        The two flats (ADU), any layout (amp views of a detector image are read row block by
        row block) and dtype; the work is done in float32 when both are float32, else float64.
    mu1, mu2 : `float`
        Their clipped means (ADU).
    good : `numpy.ndarray` of `bool`, shape ``(ny, nx)``, or `None`
        Usable pixels (`None`: all).
    do_gain : `bool`
        Also compute ``c`` (else NaN).
    flux_normalization : `bool`
        ``c`` of the flats scaled to their common mean (see `_ratio_mean_plain`).
    block : `int`, optional
        Values per block, a multiple of ``numpy.getbufsize()``; default `PAIR_BLOCK` for
        float32 flats, the whole array for float64 ones.
    row_sums : `bool`
        Also return the per-row sums of ``D``.

    Returns
    -------
    result : `PairPass`
        ``diff``, ``ratio_mean``, ``diff_sum`` and ``row_sums``.

    Raises
    ------
    ValueError
        If ``block`` is not a multiple of numpy's buffer size (float32 flats).

    Notes
    -----
    The same element-wise operations as `_ratio_mean_plain` and the plain difference, block
    by block while the block is in the cache; the float64 sums of float32 values continue
    numpy's buffered sum from block to block (``initial=``), and each row sum is one
    reduction of a whole row, so every value equals the whole-array computation bit for bit.
    Flats that are not C-contiguous in the work dtype are copied block by block (the rows
    covering the block) into a small scratch array instead of whole. When some pixel is
    unusable or ``I1 + I2 <= 0`` somewhere, ``c`` comes from `_ratio_mean_plain`.
    """
    work = np.float32 if (d1.dtype == np.float32 and d2.dtype == np.float32) else np.float64
    ny, nx = d1.shape
    n = d1.size
    mu = 0.5 * (mu1 + mu2)
    a2, a1 = work(mu2 / mu), work(mu1 / mu)
    s1, s2 = work(mu / mu1), work(mu / mu2)
    if block is None:
        block = PAIR_BLOCK if work is np.float32 else n
    if work is not np.float32:
        block = n  # float64 sums are one pairwise sum over the whole array
    elif block < n and block % np.getbufsize():
        raise ValueError(f"block {block} is not a multiple of numpy's buffer size {np.getbufsize()}")
    block = max(1, min(block, n))
    diff = work_array("ptc_diff", d1.shape, work)
    f1 = _flat_values(d1, work, block, "ptc_src1")
    f2 = _flat_values(d2, work, block, "ptc_src2")
    rows_scratch = None
    if f1 is None or f2 is None:
        rows_scratch = (work_array("ptc_src1", (block + 2 * nx,), work),
                        work_array("ptc_src2", (block + 2 * nx,), work))
    fd = diff.reshape(-1)
    rows = np.empty(ny) if row_sums else None
    rows_done = 0
    fused = do_gain and good is None and n > 0
    tmp = work_array("ptc_blk_tmp", (block,), work)
    x = work_array("ptc_blk_x", (block,), work)
    den = work_array("ptc_blk_den", (block,), work)
    acc: np.floating | None = None
    dsum: np.floating | None = None
    positive = True
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in range(0, n, block):
            e = min(s + block, n)
            a = f1[s:e] if f1 is not None else _row_block(d1, s, e, rows_scratch[0])
            b = f2[s:e] if f2 is not None else _row_block(d2, s, e, rows_scratch[1])
            t, dblk = tmp[: e - s], fd[s:e]
            np.multiply(a, a2, out=dblk)
            dblk -= np.multiply(b, a1, out=t)
            dsum = (np.add.reduce(dblk, dtype=np.float64) if dsum is None
                    else np.add.reduce(dblk, dtype=np.float64, initial=dsum))
            if rows is not None and (done := (e // nx if e < n else ny)) > rows_done:
                np.add.reduce(diff[rows_done:done], axis=1, dtype=np.float64, out=rows[rows_done:done])
                rows_done = done
            if not fused:
                continue
            xb, db = x[: e - s], den[: e - s]
            if flux_normalization:
                np.multiply(a, s1, out=xb)
                np.multiply(b, s2, out=t)
                np.add(xb, t, out=db)
                xb -= t
            else:
                np.subtract(a, b, out=xb)
                np.add(a, b, out=db)
            xb *= xb
            if positive and not float(db.min()) > 0:
                positive = False
            if positive:
                xb /= db
                acc = (np.add.reduce(xb, dtype=np.float64) if acc is None
                       else np.add.reduce(xb, dtype=np.float64, initial=acc))
    diff_sum = float(dsum) if dsum is not None else 0.0
    if not do_gain:
        c = float("nan")
    elif fused and positive:
        c = float(acc) / n
    else:
        c = _ratio_mean_plain(d1.astype(work, copy=False), d2.astype(work, copy=False), mu1, mu2,
                              good, flux_normalization)
    return PairPass(diff, c, diff_sum, rows)


def _flat_values(im: np.ndarray, work: type, block: int, slot: str) -> np.ndarray | None:
    """``im`` as flat values of dtype ``work`` when that costs no image-sized copy, else `None`.

    A C-contiguous ``im`` of that dtype is its own flat view; an image of one block (a grid
    box) is copied whole into the scratch array ``slot``; otherwise `None`: read the blocks
    with `_row_block`.
    """
    if im.dtype == work and im.flags.c_contiguous:
        return im.reshape(-1)
    if im.size <= block:
        flat = work_array(slot, (im.size,), work)
        np.copyto(flat.reshape(im.shape), im, casting="unsafe")
        return flat
    return None


def _row_block(im: np.ndarray, s: int, e: int, scratch: np.ndarray) -> np.ndarray:
    """Flat values ``[s, e)`` of the 2-D ``im``: the rows covering them copied into ``scratch``."""
    nx = im.shape[1]
    r0, r1 = s // nx, -(-e // nx)
    np.copyto(scratch[: (r1 - r0) * nx].reshape(r1 - r0, nx), im[r0:r1], casting="unsafe")
    return scratch[s - r0 * nx: e - r0 * nx]


def _abs_at_most(x: np.ndarray, limit: np.floating, out: np.ndarray, block: int = PAIR_BLOCK) -> np.ndarray:
    """``numpy.less_equal(numpy.abs(x), limit, out=out)`` block by block (no image-sized temporary).

    ``out`` is a C-contiguous bool array of the shape of ``x``; the same comparisons, so the
    same values.
    """
    if x.size <= block or not x.flags.c_contiguous:
        return np.less_equal(np.abs(x, out=work_array("ptc_tmp", x.shape, x.dtype)), limit, out=out)
    fx, fo = x.reshape(-1), out.reshape(-1)
    tmp = work_array("ptc_abs_blk", (min(block, fx.size),), x.dtype)
    for s in range(0, fx.size, block):
        e = min(s + block, fx.size)
        np.less_equal(np.abs(fx[s:e], out=tmp[: e - s]), limit, out=fo[s:e])
    return out


def _usable(im: np.ndarray, bad: np.ndarray | None, slot: str) -> np.ndarray | None:
    """Finite and not-bad pixels of ``im`` as a bool array, or `None` when all are usable.

    The array is the scratch array ``slot`` (`work_array`): valid until the next call with it.
    """
    good = np.isfinite(im, out=work_array(slot, im.shape, bool))
    if bad is not None:
        bad = np.asarray(bad, bool)
        if bad.any():
            good &= ~bad
    return None if good.all() else good


def _any_set(bad: np.ndarray | None) -> bool:
    """Whether a "bad" array marks any pixel (`None`: no)."""
    return bad is not None and bool(np.asarray(bad, bool).any())


def _means_and_difference(
    im1: np.ndarray, im2: np.ndarray, bad1: np.ndarray | None, bad2: np.ndarray | None,
    nsigma: float, niter: int, assume_finite: bool, do_gain: bool, flux_normalization: bool,
    bin_size: int,
) -> tuple[float, float, int, np.ndarray | None, PairPass | None] | None:
    """Clipped means of two flats, then the pass forming their difference image.

    Returns ``(mu1, mu2, n1, good, pair)``: the means (ADU), the number of pixels behind
    ``mu1``, the usable pixels (`None`: all) and the `PairPass`, which is `None` when a mean
    is not finite or not positive. With ``assume_finite`` (only for flats without bad
    pixels) no finiteness test precedes the statistics; `None` is returned instead when
    either flat turns out to hold a NaN or an infinity (then call again without it: the
    results with it are those of that call whenever it returns them).
    """
    if assume_finite:
        pair = None
        try:
            with np.errstate(invalid="ignore"):  # NaN/inf values may be there: checked below
                mu1, _, n1 = clipped_stats_finite(im1, nsigma, niter)
                mu2, _, _ = clipped_stats_finite(im2, nsigma, niter)
                if _usable_means(mu1, mu2):
                    pair = _difference_and_ratio_mean(im1, im2, mu1, mu2, None, do_gain=do_gain,
                                                      flux_normalization=flux_normalization,
                                                      row_sums=bin_size == 1)
        except (ArithmeticError, ValueError):
            return None
        if pair is None:  # a NaN or an infinity may be the cause
            if _usable(im1, None, "ptc_good1") is not None or _usable(im2, None, "ptc_good2") is not None:
                return None
        elif not math.isfinite(pair.diff_sum):
            return None
        return mu1, mu2, int(n1), None, pair
    src1, src2 = im1, im2  # what the difference pass reads
    if im1.size <= PAIR_BLOCK:
        # a small box: contiguous working copies first; the finiteness test and the
        # difference pass then run over contiguous arrays
        work = np.float32 if (im1.dtype == np.float32 and im2.dtype == np.float32) else np.float64
        src1 = work_array("ptc_d1", im1.shape, work)
        src2 = work_array("ptc_d2", im2.shape, work)
        np.copyto(src1, im1, casting="unsafe")
        np.copyto(src2, im2, casting="unsafe")
    good1 = _usable(src1 if src1.dtype == im1.dtype else im1, bad1, "ptc_good1")
    good2 = _usable(src2 if src2.dtype == im2.dtype else im2, bad2, "ptc_good2")
    mu1, _, n1 = clipped_stats_finite(im1 if good1 is None else im1[good1], nsigma, niter)
    mu2, _, _ = clipped_stats_finite(im2 if good2 is None else im2[good2], nsigma, niter)
    if good1 is None:
        good = good2
    elif good2 is None:
        good = good1
    else:
        good = good1 & good2
    if not _usable_means(mu1, mu2):
        return mu1, mu2, int(n1), good, None
    # D = (mu2 I1 - mu1 I2) / mu, its sums and the gain's c, in one cache-blocked pass over the
    # flats (amp views are copied block by block)
    pair = _difference_and_ratio_mean(src1, src2, mu1, mu2, good, do_gain=do_gain,
                                      flux_normalization=flux_normalization,
                                      row_sums=good is None and bin_size == 1)
    return mu1, mu2, int(n1), good, pair


def _usable_means(mu1: float, mu2: float) -> bool:
    """Whether both clipped means are finite and positive (a measurable pair)."""
    return bool(np.isfinite(mu1) and np.isfinite(mu2)) and mu1 > 0 and mu2 > 0


def measure_pair(
    im1: np.ndarray,
    im2: np.ndarray,
    bad1: np.ndarray | None,
    bad2: np.ndarray | None,
    amp_regions: dict[str, tuple[slice, slice]],
    *,
    region: Literal["AMP", "FULL", "GRID"] = "AMP",
    grid_size: tuple[int, int] = (64, 0),
    read_noise_adu: dict[str, float] | None = None,
    edge_level: Literal["DETECTOR", "AMP"] | None = "DETECTOR",
    num_edge_suspect: int = 0,
    n_threads: int = 1,
    **kwargs,
) -> dict[str, list[RegionMeasurement]]:
    """Measure every amp of a flat pair (AMP, FULL or GRID regions).

    Parameters
    ----------
    im1, im2 : `numpy.ndarray`, shape ``(ny, nx)``
        Assembled, overscan/bias-corrected flats (ADU).
    bad1, bad2 : `numpy.ndarray` of `bool`, shape ``(ny, nx)``, or `None`
        Excluded pixels of each flat.
    amp_regions : `dict` [`str`, ``(slice_y, slice_x)``]
        Each amp's region in the image.
    region : {"AMP", "FULL", "GRID"}
        ``detectorMeasurementRegion``. AMP: one point per amp; FULL: the whole image measured
        once and reported for every amp; GRID (ccdflow extension): each amp split into boxes of
        ``grid_size`` pixels, one point per box; the minimum number of good pixels for the
        covariances is then ``min(min_good_pixels, box area / 2)``. Boxes should be small
        enough for the illumination to be nearly uniform inside (64 × 64 for spectral flats):
        the clipped mean of a strongly non-uniform box is not the mean of the pixels whose
        variance is measured.
    grid_size : `tuple` of `int`
        ``(box_nx, box_ny)`` for GRID (≤ 0: the whole amp along that axis).
    read_noise_adu : `dict` [`str`, `float`], optional
        Read noise per amp (ADU); missing → NaN.
    edge_level : {"DETECTOR", "AMP"} or `None`
        ``edgeMaskLevel``: where the ``num_edge_suspect`` border is excluded.
    num_edge_suspect : `int`
        ``numEdgeSuspect`` (pixels).
    n_threads : `int`
        Measure this many amps concurrently (threads; results are identical).
    **kwargs
        Passed to `measure_pair_region` (``max_range``, ``nsigma``, ...).

    Returns
    -------
    measurements : `dict` [`str`, `list` [`RegionMeasurement`]]
        Per amp, one measurement (AMP/FULL) or one per grid box.

    Raises
    ------
    ValueError
        For an unknown ``region`` or mismatched shapes.
    """
    if im1.shape != im2.shape:
        raise ValueError(f"flat pair shapes differ: {im1.shape} vs {im2.shape}")
    shape = im1.shape
    if num_edge_suspect > 0 and edge_level in ("AMP", "DETECTOR"):
        if edge_level == "AMP":
            edges = np.zeros(shape, bool)
            for sl in amp_regions.values():
                edges[sl] = edge_mask(edges[sl].shape, num_edge_suspect)
        else:
            edges = edge_mask(shape, num_edge_suspect)
        bad1 = edges.copy() if bad1 is None else (bad1 | edges)
        bad2 = edges if bad2 is None else (bad2 | edges)
    rn = read_noise_adu or {}
    out: dict[str, list[RegionMeasurement]] = {}
    if region == "FULL":
        noise = float(np.nanmean([rn.get(a, np.nan) for a in amp_regions])) if rn else float("nan")
        meas = measure_pair_region(im1, im2, bad1, bad2, read_noise_adu=noise, **kwargs)
        return {a: [meas] for a in amp_regions}
    if region not in ("AMP", "GRID"):
        raise ValueError(f"detectorMeasurementRegion must be AMP, FULL or GRID, not {region!r}")
    def one_amp(amp: str) -> list[RegionMeasurement]:
        sy, sx = amp_regions[amp]
        a1, a2 = im1[sy, sx], im2[sy, sx]
        b1 = None if bad1 is None else bad1[sy, sx]
        b2 = None if bad2 is None else bad2[sy, sx]
        noise = float(rn.get(amp, np.nan))
        if region == "AMP":
            return [measure_pair_region(a1, a2, b1, b2, read_noise_adu=noise, **kwargs)]
        boxes = grid_boxes(a1.shape[0], a1.shape[1], grid_size)
        kw = dict(kwargs)
        area = min((by.stop - by.start) * (bx.stop - bx.start) for by, bx in boxes)
        kw["min_good_pixels"] = min(kw.get("min_good_pixels", 10000), area // 2)
        return [measure_pair_region(a1[by, bx], a2[by, bx], None if b1 is None else b1[by, bx],
                                    None if b2 is None else b2[by, bx],
                                    read_noise_adu=noise, **kw) for by, bx in boxes]

    if n_threads > 1 and len(amp_regions) > 1:
        # numpy and pocketfft release the GIL on large arrays: amps run concurrently
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            results = list(pool.map(one_amp, list(amp_regions)))
        out = dict(zip(amp_regions, results))
    else:
        out = {amp: one_amp(amp) for amp in amp_regions}
    return out
