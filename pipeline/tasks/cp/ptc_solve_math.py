"""Photon transfer curve fits: pure numpy/scipy functions on per-amp arrays of PTC points.

Models (μ is the mean signal in ADU, g the gain in e⁻/ADU, variances in ADU²):

* EXPAPPROXIMATION (Astier et al. 2019, A&A 629, A36, eq. 16):
  ``C00(μ) = (exp(2 a00 g μ) - 1) / (2 a00 g²) + n00 / g²`` with ``n00`` in e⁻²;
* FULLCOVARIANCE (Astier+19 eq. 20), per lag ``(i, j)`` with ``b = g μ`` (e⁻):
  ``C_ij = (b/g²) [δ_i0 δ_j0 + a_ij b + ⅔ b² ((a⊗a)_ij + c_ij)
  + b³ (⅓ (a⊗a⊗a)_ij + ⅚ (a⊗c)_ij)] + n_ij / g²`` with ``c_ij = a_ij b_ij``;
  FULLCOVARIANCE_NO_B sets ``c = 0``; ``⊗`` is the 2-D convolution of the matrices
  symmetrized to four quadrants;
* POLYNOMIAL (cp_pipe ≤ 2024): ``C00 = Σ_k p_k μ^k``, ``g = 1/p1``, ``noise = sqrt(|p0|) g``.

Reference behaviour: cp_pipe ``PhotonTransferCurveSolveTask`` (reference-algorithms §3.4).
Decisions: the min/max mean cuts are exclusive (as the reference code, not its doc); the
full-covariance convolution is centred on the lag (0, 0) element by construction (the
reference re-crops at the largest ``|a|`` element, which assumes a00 dominates).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ExpApproxResult",
    "FullCovResult",
    "LMResult",
    "PolynomialResult",
    "exp_approx_model",
    "fit_exp_approximation",
    "fit_full_covariance",
    "fit_polynomial",
    "full_cov_model",
    "levenberg_marquardt",
    "symmetrize",
]


def exp_approx_model(params: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """EXPAPPROXIMATION variance model (Astier+19 eq. 16).

    Parameters
    ----------
    params : array-like, shape ``(3,)``
        ``(a00 [1/e⁻], gain [e⁻/ADU], n00 [e⁻²])``.
    mu : `numpy.ndarray`, shape ``(n,)``
        Mean signal (ADU).

    Returns
    -------
    var : `numpy.ndarray`, shape ``(n,)``
        Model variance (ADU²). For ``|a00| < 1e-12`` the ``a00 → 0`` limit ``μ/g + n00/g²``.
    """
    a00, g, n00 = params
    mu = np.asarray(mu, dtype=np.float64)
    if abs(a00) < 1e-12:
        return mu / g + n00 / g**2
    return np.expm1(2.0 * a00 * g * mu) / (2.0 * a00 * g**2) + n00 / g**2


@dataclass
class ExpApproxResult:
    """Result of `fit_exp_approximation` for one amplifier.

    Attributes
    ----------
    bad : `bool`
        Fewer than 2 good points remained (all values NaN).
    gain, gain_err : `float`
        e⁻/ADU.
    noise, noise_err : `float`
        Read noise (e⁻), ``sqrt(|n00|)``.
    a00, a00_err : `float`
        1/e⁻.
    params, params_err : `numpy.ndarray`, shape ``(3,)``
        ``(a00, gain, n00)`` and their errors (scaled by sqrt of the reduced χ²).
    mask : `numpy.ndarray` of `bool`, shape ``(n,)``
        Points used in the final fit (the PTC ``expIdMask``).
    turnoff, turnoff_sampling_err : `float`
        Largest good mean (ADU) and half the gap to the next point (ADU).
    model : `numpy.ndarray`, shape ``(n,)``
        Model variance at every point (ADU²).
    """

    bad: bool
    gain: float = float("nan")
    gain_err: float = float("nan")
    noise: float = float("nan")
    noise_err: float = float("nan")
    a00: float = float("nan")
    a00_err: float = float("nan")
    params: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    params_err: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    turnoff: float = float("nan")
    turnoff_sampling_err: float = float("nan")
    model: np.ndarray = field(default_factory=lambda: np.zeros(0))


def least_squares(fun: Any, x0: Any, **kwargs: Any) -> Any:
    """Call `scipy.optimize.least_squares` (scipy is imported here, on the first fit).

    Not at module level: the task classes import this module, and building a quantum graph
    imports every task class and fits nothing.
    """
    from scipy.optimize import least_squares as scipy_least_squares

    return scipy_least_squares(fun, x0, **kwargs)


def _param_errors(res, n_data: int) -> np.ndarray:
    """Parameter errors from a least_squares result, scaled by sqrt(reduced chi²).

    With no degree of freedom (as many parameters as points) the reduced chi² and so the
    errors are undefined: every error is NaN, not the ~1e-15 a residual of round-off gives.
    """
    jac = res.jac
    dof = n_data - jac.shape[1]
    if dof <= 0:
        return np.full(jac.shape[1], np.nan)
    chi2 = float(np.sum(res.fun**2)) / dof
    jtj = jac.T @ jac
    try:
        cov = np.linalg.inv(jtj) * chi2
    except np.linalg.LinAlgError:
        try:
            cov = np.linalg.pinv(jtj) * chi2
        except np.linalg.LinAlgError:
            return np.full(jac.shape[1], np.nan)
    return np.sqrt(np.abs(np.diag(cov)))


def fit_exp_approximation(
    means: np.ndarray,
    variances: np.ndarray,
    sqrt_weights: np.ndarray | None = None,
    good: np.ndarray | None = None,
    *,
    sigma_cut: float = 5.0,
    max_iterations: int = 2,
    max_signal_initial: float = 50000.0,
    max_delta_initial: float = 9000.0,
    scale_initial_by_gain: bool = True,
    bounded: bool = True,
) -> ExpApproxResult:
    """Fit the EXPAPPROXIMATION PTC of one amp with outlier rejection and turnoff.

    Parameters
    ----------
    means : `numpy.ndarray`, shape ``(n,)``
        Mean signal per point (ADU).
    variances : `numpy.ndarray`, shape ``(n,)``
        Variance per point (ADU²), i.e. ``C00``.
    sqrt_weights : `numpy.ndarray`, shape ``(n,)``, optional
        ``1/σ(C00)`` per point for the final fit (default: ``1/var``, the Poisson-like weight).
    good : `numpy.ndarray` of `bool`, shape ``(n,)``, optional
        Points allowed at all (after the mean-signal cuts); default all finite points.
    sigma_cut : `float`
        ``sigmaCutPtcOutliers``: rejection threshold on ``(var - model) / sqrt(var)``.
    max_iterations : `int`
        ``maxIterationsPtcOutliers``.
    max_signal_initial, max_delta_initial : `float`
        ``maxSignalInitialPtcOutlierFit`` and ``maxDeltaInitialPtcOutlierFit`` (e⁻ if
        ``scale_initial_by_gain``, else ADU): points used for the first fit, and the mean gap
        beyond which the curve is cut (turnoff detection).
    scale_initial_by_gain : `bool`
        Convert the two limits to ADU with the approximate gain ``median(μ/var)``.
    bounded : `bool`
        Bounds ``a00 ∈ [-1e-4, 0]``, ``g ∈ [0.1, 10]``, ``n00 ∈ [0, 2000]`` (unbounded when
        the data were binned, as the reference).

    Returns
    -------
    result : `ExpApproxResult`
        Per-point arrays are in the input order.

    Notes
    -----
    cp_pipe ``PhotonTransferCurveSolveTask.fitPtc`` (reference-algorithms §3.4 step 2). The
    first (unweighted) fit uses the good points with mean ≤ the initial limit (cp_pipe compares
    only the mean; reference-algorithms says mean and variance, which for gains < 1 e⁻/ADU left
    out good points and lost the top of the curve); every good point is then tested against the
    model; after each sigma cut, scanning upwards in mean, the first kept point that follows a
    rejected one with a mean gap ≥ ``max_delta_initial`` from the previous kept point is cut
    together with everything above it. The next fit uses the kept points; the loop stops when an
    iteration keeps the same points as the previous one (at first: all good points, so a first
    cut that rejects nothing ends it, as cp_pipe) or after ``max_iterations``.

    The initial limit must lie below the PTC turnoff (cp_pipe's config doc): with the default
    50000 e⁻ an amp of gain ~1 e⁻/ADU whose ADC or full well saturates below 50000 ADU has
    collapsed-variance points in the first fit, which then rejects good points at the top of
    the curve (cp_pipe does the same; its extract also masks such pairs with a KS test of the
    difference image, which this package does not compute). Lower
    ``maxSignalInitialPtcOutlierFit`` for such amps.
    """
    mu = np.asarray(means, dtype=np.float64)
    var = np.asarray(variances, dtype=np.float64)
    n = mu.size
    ok = np.isfinite(mu) & np.isfinite(var) & (var > 0)
    if good is not None:
        ok &= np.asarray(good, bool)
    if ok.sum() < 2:
        return ExpApproxResult(bad=True, mask=np.zeros(n, bool), model=np.full(n, np.nan))
    order = np.argsort(np.where(np.isfinite(mu), mu, np.inf), kind="stable")
    mu_s, var_s, ok_s = mu[order], var[order], ok[order]
    var_s = np.where(var_s == 0, 1e-9, var_s)
    if sqrt_weights is None:
        sw_s = np.where(ok_s, 1.0 / np.abs(var_s), 0.0)
    else:
        sw_s = np.asarray(sqrt_weights, dtype=np.float64)[order]
    approx_gain = float(np.nanmedian(mu_s[ok_s] / var_s[ok_s]))
    scale = approx_gain if scale_initial_by_gain and approx_gain > 0 else 1.0
    lim = max_signal_initial / scale
    max_delta = max_delta_initial / scale
    p0 = np.array([-2e-6, min(max(approx_gain, 0.11), 9.9), 25.0])
    if bounded:
        bounds = ([-1e-4, 0.1, 0.0], [0.0, 10.0, 2000.0])
    else:
        bounds = ([-np.inf] * 3, [np.inf] * 3)

    def resid(p, m, v, w):
        return (exp_approx_model(p, m) - v) * w

    # the first fit uses the points whose *mean* is below the limit (a signal; the variance, in
    # ADU², is not compared with it: for a gain < 1 e⁻/ADU that shrank the sample)
    fit_set = ok_s & (mu_s <= lim)
    if fit_set.sum() < 3:
        fit_set = ok_s.copy()
    mask = ok_s.copy()              # the previous iteration's result: all good points at first
    params = p0
    for _ in range(max_iterations):
        if fit_set.sum() < 2:
            break
        fit = least_squares(resid, params, bounds=bounds,
                            args=(mu_s[fit_set], var_s[fit_set], np.ones(fit_set.sum())),
                            x_scale=np.array([1e-6, 1.0, 10.0]))
        params = fit.x
        z = (var_s - exp_approx_model(params, mu_s)) / np.sqrt(np.abs(var_s))
        new_mask = ok_s & np.isfinite(z) & (np.abs(z) < sigma_cut)
        new_mask = _cut_at_gap(mu_s, new_mask, max_delta)
        converged = np.array_equal(new_mask, mask)
        mask = new_mask
        if converged:
            break
        fit_set = mask
    if mask.sum() < 2:
        return ExpApproxResult(bad=True, mask=np.zeros(n, bool), model=np.full(n, np.nan))
    w = sw_s[mask]
    if not np.all(np.isfinite(w)) or np.all(w == 0):
        w = 1.0 / np.abs(var_s[mask])
    fit = least_squares(resid, params, bounds=bounds, args=(mu_s[mask], var_s[mask], w),
                        x_scale=np.array([1e-6, 1.0, 10.0]))
    params = fit.x
    errs = _param_errors(fit, int(mask.sum()))
    a00, g, n00 = params
    noise = math.sqrt(abs(n00))
    noise_err = 0.5 * errs[2] / noise if noise > 0 else float("nan")
    good_mu = mu_s[mask]
    turnoff = float(good_mu.max())
    idx = int(np.nonzero(mask)[0].max())
    higher = mu_s[idx + 1:][np.isfinite(mu_s[idx + 1:])]
    if higher.size:
        sampling = 0.5 * float(higher.min() - turnoff)
    else:
        lower = good_mu[good_mu < turnoff]
        sampling = float(turnoff - lower.max()) if lower.size else float("nan")
    inv = np.empty_like(order)
    inv[order] = np.arange(n)
    return ExpApproxResult(
        bad=False, gain=float(g), gain_err=float(errs[1]), noise=noise, noise_err=noise_err,
        a00=float(a00), a00_err=float(errs[0]), params=params.copy(), params_err=errs,
        mask=mask[inv], turnoff=turnoff, turnoff_sampling_err=sampling,
        model=exp_approx_model(params, mu),
    )


def _cut_at_gap(mu_sorted: np.ndarray, mask: np.ndarray, max_delta: float) -> np.ndarray:
    """Cut the (sorted) curve at the first kept point after a rejection with a big gap."""
    mask = mask.copy()
    prev_kept_mu = None
    prev_rejected = False
    for k in range(mu_sorted.size):
        if not mask[k]:
            prev_rejected = True
            continue
        if prev_rejected and prev_kept_mu is not None and mu_sorted[k] - prev_kept_mu >= max_delta:
            mask[k:] = False
            break
        prev_kept_mu = mu_sorted[k]
        prev_rejected = False
    return mask


@dataclass
class PolynomialResult:
    """Result of `fit_polynomial`.

    ``coeffs`` (ascending powers), ``coeffs_err``, ``gain``, ``gain_err`` (e⁻/ADU), ``noise``,
    ``noise_err`` (e⁻), ``model`` (ADU², shape ``(n,)``).
    """

    coeffs: np.ndarray
    coeffs_err: np.ndarray
    gain: float
    gain_err: float
    noise: float
    noise_err: float
    model: np.ndarray


def fit_polynomial(
    means: np.ndarray, variances: np.ndarray, mask: np.ndarray, degree: int = 3,
    sqrt_weights: np.ndarray | None = None,
) -> PolynomialResult:
    """Weighted polynomial PTC ``var = Σ p_k μ^k`` (cp_pipe ≤ 2024 POLYNOMIAL).

    Parameters
    ----------
    means, variances : `numpy.ndarray`, shape ``(n,)``
        ADU and ADU².
    mask : `numpy.ndarray` of `bool`, shape ``(n,)``
        Points used.
    degree : `int`
        ``polynomialFitDegree`` (≥ 1).
    sqrt_weights : `numpy.ndarray`, shape ``(n,)``, optional
        ``1/σ(var)``; default ``1/var``.

    Returns
    -------
    result : `PolynomialResult`
        ``gain = 1/p1``, ``noise = sqrt(|p0|)·gain``.

    Raises
    ------
    ValueError
        If fewer than ``degree + 1`` points are usable.
    """
    mu = np.asarray(means, float)[mask]
    var = np.asarray(variances, float)[mask]
    if mu.size < degree + 1:
        raise ValueError(f"POLYNOMIAL fit of degree {degree} needs {degree + 1} points, got {mu.size}")
    w = (1.0 / np.abs(var)) if sqrt_weights is None else np.asarray(sqrt_weights, float)[mask]
    coeffs, cov = np.polynomial.polynomial.polyfit(mu, var, degree, w=w, full=False), None
    vander = np.polynomial.polynomial.polyvander(mu, degree) * w[:, None]
    resid = (np.polynomial.polynomial.polyval(mu, coeffs) - var) * w
    dof = mu.size - degree - 1
    if dof > 0:
        cov = np.linalg.pinv(vander.T @ vander) * float(resid @ resid) / dof
        errs = np.sqrt(np.abs(np.diag(cov)))
    else:                       # an exact fit: the errors are undefined, not zero
        errs = np.full(degree + 1, np.nan)
    gain = 1.0 / coeffs[1]
    noise = math.sqrt(abs(coeffs[0])) * gain
    gain_err = errs[1] / coeffs[1] ** 2
    noise_err = (0.5 * errs[0] / math.sqrt(abs(coeffs[0])) * abs(gain)) if coeffs[0] != 0 else float("nan")
    return PolynomialResult(coeffs, errs, float(gain), float(gain_err), float(noise),
                            float(noise_err),
                            np.polynomial.polynomial.polyval(np.asarray(means, float), coeffs))


def symmetrize(m: np.ndarray) -> np.ndarray:
    """Expand a first-quadrant ``(r, r)`` lag matrix to the full ``(2r-1, 2r-1)`` plane.

    Parameters
    ----------
    m : `numpy.ndarray`, shape ``(r, r)`` (or ``(..., r, r)``)
        ``m[i, j]`` for lags ``i, j ≥ 0``.

    Returns
    -------
    full : `numpy.ndarray`, shape ``(..., 2r-1, 2r-1)``
        ``full[r-1+i, r-1+j] = m[|i|, |j|]``.
    """
    m = np.asarray(m)
    r = m.shape[-1]
    idx = np.abs(np.arange(-(r - 1), r))
    return m[..., idx[:, None], idx[None, :]]


@functools.lru_cache(maxsize=16)
def _conv_indices(r: int) -> tuple[np.ndarray, np.ndarray]:
    """Gather indices for `_conv_quadrant` (cached per ``r``).

    ``win`` ``(r², (2r-1)²)``: flat index into ``[x.ravel(), 0]`` of ``X(i + K - (r-1),
    j + L - (r-1))`` (the zero slot where the lag is beyond ``r - 1``); ``sym`` ``((2r-1)²,)``:
    flat index into ``y.ravel()`` of the symmetrized ``Y(K - (r-1), L - (r-1))``.
    """
    lag = np.arange(2 * r - 1) - (r - 1)
    sym = (np.abs(lag)[:, None] * r + np.abs(lag)[None, :]).ravel()
    i = np.arange(r)[:, None, None, None]
    j = np.arange(r)[None, :, None, None]
    k = lag[None, None, :, None]
    l_ = lag[None, None, None, :]
    a, b = np.abs(i + k), np.abs(j + l_)
    win = np.where((a < r) & (b < r), np.minimum(a, r - 1) * r + np.minimum(b, r - 1), r * r)
    return win.reshape(r * r, -1), sym


def _conv_quadrant(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """First quadrant of the 2-D convolution of two symmetrized ``(r, r)`` matrices.

    ``out[i, j] = Σ_kl X(i - k, j - l) Y(k, l)`` over the four-quadrant planes ``X``, ``Y``
    (`symmetrize`), for lags ``0 ≤ i, j < r``. As ``Y`` is even in both axes this is
    ``Σ_kl X(i + k, j + l) Y(k, l)``: one gather with cached indices and one small matrix-vector
    product (r² × (2r-1)² terms), about 5× faster than an FFT convolution at r = 8.
    """
    r = x.shape[0]
    win, sym = _conv_indices(r)
    xe = np.append(np.asarray(x, dtype=np.float64).ravel(), 0.0)
    return (xe[win] @ np.asarray(y, dtype=np.float64).ravel()[sym]).reshape(r, r)


def full_cov_model(
    a: np.ndarray, c: np.ndarray, noise: np.ndarray, gain: float, mu: np.ndarray
) -> np.ndarray:
    """Astier+19 eq. 20 covariance model.

    Parameters
    ----------
    a : `numpy.ndarray`, shape ``(r, r)``
        ``a_ij`` (1/e⁻), first quadrant, ``[i, j]`` = lag ``(x, y)`` as the covariances.
    c : `numpy.ndarray`, shape ``(r, r)``
        ``c_ij = a_ij b_ij`` (1/e⁻²); zeros for FULLCOVARIANCE_NO_B.
    noise : `numpy.ndarray`, shape ``(r, r)``
        ``n_ij`` (e⁻²).
    gain : `float`
        e⁻/ADU.
    mu : `numpy.ndarray`, shape ``(n,)``
        Mean signal (ADU).

    Returns
    -------
    cov : `numpy.ndarray`, shape ``(n, r, r)``
        Model covariances (ADU²).
    """
    r = a.shape[0]
    aa = _conv_quadrant(a, a)
    aaa = _conv_quadrant(aa, a)
    ac = _conv_quadrant(a, c)
    b = (gain * np.asarray(mu, float))[:, None, None]
    delta = np.zeros((r, r))
    delta[0, 0] = 1.0
    bracket = (delta + a * b + (2.0 / 3.0) * b**2 * (aa + c)
               + b**3 * ((1.0 / 3.0) * aaa + (5.0 / 6.0) * ac))
    return b / gain**2 * bracket + noise / gain**2


@dataclass
class FullCovResult:
    """Result of `fit_full_covariance` for one amp.

    Attributes
    ----------
    a_matrix, b_matrix, noise_matrix : `numpy.ndarray`, shape ``(r, r)``
        ``a`` (1/e⁻), ``b = c/a`` (1/e⁻; NaN where a = 0; zeros for NO_B), ``n`` (e⁻²).
    a_matrix_err, b_matrix_err, noise_matrix_err : `numpy.ndarray`, shape ``(r, r)``
    gain, gain_err : `float`
        e⁻/ADU.
    noise, noise_err : `float`
        ``sqrt(|n00|)`` (e⁻).
    model : `numpy.ndarray`, shape ``(n, r, r)``
        Model covariances at every point (ADU²).
    mask : `numpy.ndarray` of `bool`, shape ``(n,)``
        Points used.
    """

    a_matrix: np.ndarray
    b_matrix: np.ndarray
    noise_matrix: np.ndarray
    a_matrix_err: np.ndarray
    b_matrix_err: np.ndarray
    noise_matrix_err: np.ndarray
    gain: float
    gain_err: float
    noise: float
    noise_err: float
    model: np.ndarray
    mask: np.ndarray


def fit_full_covariance(
    means: np.ndarray,
    covariances: np.ndarray,
    sqrt_weights: np.ndarray,
    mask: np.ndarray,
    fit_range: int,
    *,
    no_b: bool = False,
    sigma_cut: float = 5.0,
    n_sigma_iter: int = 3,
) -> FullCovResult:
    """Weighted least-squares fit of the Astier+19 eq. 20 model to all lags.

    Parameters
    ----------
    means : `numpy.ndarray`, shape ``(n,)``
        Mean signal per point (ADU).
    covariances : `numpy.ndarray`, shape ``(n, M, M)``
        Measured covariances ``[point, dx, dy]`` (ADU²).
    sqrt_weights : `numpy.ndarray`, shape ``(n, M, M)``
        ``1/σ`` of each covariance.
    mask : `numpy.ndarray` of `bool`, shape ``(n,)``
        Points to use (typically the EXPAPPROXIMATION mask).
    fit_range : `int`
        ``r``: lags ``0 .. r-1`` fitted (``maximumRangeCovariancesAstierFullCovFit``), ≤ M.
    no_b : `bool`
        FULLCOVARIANCE_NO_B: ``c = 0``.
    sigma_cut, n_sigma_iter : `float`, `int`
        Clipping of weighted residuals (all lags) and number of refits.

    Returns
    -------
    result : `FullCovResult`

    Raises
    ------
    ValueError
        If fewer than ``r`` points are usable (the amp is then BAD for the caller).

    Notes
    -----
    Same weighted least-squares problem as Astier+19 §6 / reference §3.4 step 3, solved in two
    stages: (1) at the gain of a quadratic fit of ``C00`` the model is linear in ``(a, n)`` once
    the convolution terms (second order in ``a``) are fixed, so each lag is a weighted linear
    fit, iterated until the convolution terms are self-consistent; (2) Levenberg-Marquardt
    (`levenberg_marquardt`, normal equations) on all parameters from there, with the analytic
    Jacobian (convolutions as linear operators; gain column by central difference). Elements
    with weighted residuals beyond ``sigma_cut`` standard deviations are dropped and the fit
    repeated (``n_sigma_iter``, stopping early when the rejection set does not change).
    16 amps × 50 points × 8×8 lags: ~2 s (MINPACK's QR-based LM took ~12 s).
    Errors: from the final Jacobian, scaled by the square root of the reduced χ².
    """
    mu_all = np.asarray(means, float)
    cov_all = np.asarray(covariances, float)
    sw_all = np.asarray(sqrt_weights, float)
    r = min(int(fit_range), cov_all.shape[1])
    use = np.asarray(mask, bool) & np.isfinite(mu_all)
    use &= np.all(np.isfinite(cov_all[:, :r, :r]), axis=(1, 2))
    if use.sum() < max(r, 3):
        raise ValueError(f"full-covariance fit needs at least {max(r, 3)} good points, got {int(use.sum())}")
    mu = mu_all[use]
    cv = cov_all[use, :r, :r]
    sw = np.where(np.isfinite(sw_all[use, :r, :r]), sw_all[use, :r, :r], 0.0)
    a, c, n, g, fit_w, errs = _fit_full_cov_vp(mu, cv, sw, r, no_b, sigma_cut, n_sigma_iter)
    nr = r * r
    ea = errs[:nr].reshape(r, r)
    ec = np.zeros((r, r)) if no_b else errs[nr:2 * nr].reshape(r, r)
    en = errs[-nr - 1:-1].reshape(r, r)
    eg = errs[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.zeros((r, r)) if no_b else c / a
        eb = np.zeros((r, r)) if no_b else np.abs(b) * np.hypot(ec / c, ea / a)
    noise = math.sqrt(abs(n[0, 0]))
    full_mask = np.zeros(mu_all.size, bool)
    full_mask[np.nonzero(use)[0]] = True
    return FullCovResult(
        a_matrix=a, b_matrix=b, noise_matrix=n, a_matrix_err=ea, b_matrix_err=eb,
        noise_matrix_err=en, gain=float(g), gain_err=float(eg), noise=noise,
        noise_err=float(0.5 * en[0, 0] / noise) if noise > 0 else float("nan"),
        model=full_cov_model(a, c, n, g, mu_all), mask=full_mask,
    )


def _design(mu: np.ndarray, g: float, no_b: bool) -> np.ndarray:
    """Per-point design columns of the linear part: a_ij, [c_ij], n_ij coefficients (n, k)."""
    b = g * mu
    cols = [b**2 / g**2]
    if not no_b:
        cols.append((2.0 / 3.0) * b**3 / g**2)
    cols.append(np.full_like(mu, 1.0 / g**2))
    return np.stack(cols, axis=1)


def _conv_terms(a: np.ndarray, c: np.ndarray, g: float, mu: np.ndarray) -> np.ndarray:
    """Model part that is not linear in (a, c, n): Poisson term and the convolution terms."""
    r = a.shape[0]
    aa = _conv_quadrant(a, a)
    aaa = _conv_quadrant(aa, a)
    ac = _conv_quadrant(a, c)
    b = (g * mu)[:, None, None]
    delta = np.zeros((r, r))
    delta[0, 0] = 1.0
    return b / g**2 * (delta + (2.0 / 3.0) * b**2 * aa + b**3 * ((1.0 / 3.0) * aaa + (5.0 / 6.0) * ac))


def _solve_linear(mu, cv, w, g, a, c, no_b):
    """Weighted per-lag linear fit of (a, [c], n) with the convolution terms of (a, c) fixed."""
    r = cv.shape[1]
    x = _design(mu, g, no_b)                                   # (n, k)
    y = cv - _conv_terms(a, c, g, mu)                           # (n, r, r)
    ww = w**2                                                   # (n, r, r)
    ata = np.einsum("nk,nl,nij->ijkl", x, x, ww)
    aty = np.einsum("nk,nij,nij->ijk", x, y, ww)
    ata = ata + np.eye(x.shape[1]) * 1e-30
    sol = np.linalg.solve(ata, aty[..., None])[..., 0]        # (r, r, k)
    a_new = sol[..., 0]
    c_new = np.zeros((r, r)) if no_b else sol[..., 1]
    n_new = sol[..., -1]
    return a_new, c_new, n_new


def _chi2(mu, cv, w, g, a, c, n):
    return float((((full_cov_model(a, c, n, g, mu) - cv) * w) ** 2).sum())


def _profile(mu, cv, w, g, no_b, a0, c0, n_iter=30):
    """Self-consistent linear solution at fixed gain; returns (a, c, n, chi2)."""
    a, c = a0.copy(), c0.copy()
    n = np.zeros_like(a)
    for _ in range(n_iter):
        a_new, c_new, n = _solve_linear(mu, cv, w, g, a, c, no_b)
        done = np.allclose(a_new, a, rtol=1e-9, atol=1e-14) and np.allclose(c_new, c, rtol=1e-9, atol=1e-20)
        a, c = a_new, c_new
        if done:
            break
    return a, c, n, _chi2(mu, cv, w, g, a, c, n)


def _conv_operator(x: np.ndarray) -> np.ndarray:
    """Matrix ``K[(i,j), (k,l)]`` of the linear map ``e -> (x ⊗ e)`` on first-quadrant matrices.

    ``(x ⊗ e)_ij = Σ_kl e_kl Σ_{s ∈ images(k,l)} x_full(i - s_x, j - s_y)``, with ``x_full`` the
    4-quadrant symmetrized ``x`` (zero beyond lag r-1) and ``images(k,l) = {(±k, ±l)}``.
    """
    r = x.shape[0]
    i = np.arange(r)[:, None, None, None]
    j = np.arange(r)[None, :, None, None]
    k = np.arange(r)[None, None, :, None]
    l_ = np.arange(r)[None, None, None, :]
    out = np.zeros((r, r, r, r))
    for sx_sign in (1, -1):
        for sy_sign in (1, -1):
            sx = sx_sign * k
            sy = sy_sign * l_
            dx = np.abs(i - sx)
            dy = np.abs(j - sy)
            ok = (dx < r) & (dy < r)
            val = np.where(ok, x[np.minimum(dx, r - 1), np.minimum(dy, r - 1)], 0.0)
            # count each distinct image once: (-0) duplicates (+0)
            dup = ((sx_sign == -1) & (k == 0)) | ((sy_sign == -1) & (l_ == 0))
            out += np.where(dup, 0.0, val)
    return out.reshape(r * r, r * r)


def _polish(mu, cv, w, r, no_b, a, c, n, g, max_iter=20):
    """Levenberg-Marquardt on all parameters with the analytic Jacobian (gain column numeric)."""
    nr = r * r

    def unpack(p):
        a_ = p[:nr].reshape(r, r)
        c_ = np.zeros((r, r)) if no_b else p[nr:2 * nr].reshape(r, r)
        n_ = p[-nr - 1:-1].reshape(r, r)
        return a_, c_, n_, p[-1]

    def fun(p):
        a_, c_, n_, g_ = unpack(p)
        return ((full_cov_model(a_, c_, n_, g_, mu) - cv) * w).ravel()

    npt = mu.size
    n_par = (2 if no_b else 3) * nr + 1
    diag = np.arange(nr)
    w3 = w.reshape(npt, nr, 1)

    def jac(p):
        # d model / d params per point and lag, written block by block into one array:
        # a: pref (b I + 4/3 b² K_a + b³ ((2 K_a K_a + K_aa)/3 + 5/6 K_c));
        # c: pref (2/3 b² I + 5/6 b³ K_a); n: I / g²; g: central difference. K_x is the linear
        # map e -> x ⊗ e (first quadrant); a⊗a⊗a = (a⊗a)⊗a with the inner product truncated
        # to r lags, hence d(a⊗a⊗a) = 2 K_a K_a da + K_aa da (= 3 K_aa da without truncation).
        a_, c_, n_, g_ = unpack(p)
        b = g_ * mu
        pref = b / g_**2
        aa = _conv_quadrant(a_, a_)
        k_a = _conv_operator(a_)
        k2 = (2.0 * (k_a @ k_a) + _conv_operator(aa)) / 3.0 + (5.0 / 6.0) * _conv_operator(c_)
        out = np.zeros((npt, nr, n_par))
        ja = out[:, :, :nr]
        np.multiply.outer((4.0 / 3.0) * pref * b**2, k_a, out=ja)
        ja += np.multiply.outer(pref * b**3, k2)
        ja[:, diag, diag] += (pref * b)[:, None]
        col = nr
        if not no_b:
            jc = out[:, :, nr:2 * nr]
            np.multiply.outer((5.0 / 6.0) * pref * b**3, k_a, out=jc)
            jc[:, diag, diag] += ((2.0 / 3.0) * pref * b**2)[:, None]
            col = 2 * nr
        out[:, diag, col + diag] = 1.0 / g_**2
        h = 1e-6 * g_
        dg = (full_cov_model(a_, c_, n_, g_ + h, mu) - full_cov_model(a_, c_, n_, g_ - h, mu)) / (2 * h)
        out[:, :, -1] = dg.reshape(npt, nr)
        out *= w3
        return out.reshape(npt * nr, n_par)

    p0 = np.concatenate([a.ravel()] + ([] if no_b else [c.ravel()]) + [n.ravel(), [g]])
    res = levenberg_marquardt(fun, jac, p0, max_iter=max_iter)
    a_, c_, n_, g_ = unpack(res.x)
    return a_, c_, n_, float(g_), res


@dataclass
class LMResult:
    """Result of `levenberg_marquardt`.

    ``x`` (P,), ``fun`` residuals (m,) and ``jac`` (m, P) at ``x``, ``cost`` (½ Σ fun²),
    ``nfev``/``njev`` evaluations, ``converged``.
    """

    x: np.ndarray
    fun: np.ndarray
    jac: np.ndarray
    cost: float
    nfev: int
    njev: int
    converged: bool


def levenberg_marquardt(fun, jac, p0: np.ndarray, *, max_iter: int = 20, ftol: float = 1e-8,
                        xtol: float = 1e-8) -> LMResult:
    """Levenberg-Marquardt on the normal equations, for many residuals and ~200 parameters.

    Parameters
    ----------
    fun : callable
        ``fun(p) -> (m,)`` weighted residuals.
    jac : callable
        ``jac(p) -> (m, P)`` their Jacobian.
    p0 : `numpy.ndarray`, shape ``(P,)``
        Starting parameters.
    max_iter : `int`
        Maximum number of Jacobian evaluations (outer iterations).
    ftol, xtol : `float`
        Stop when an accepted step lowers the cost by less than ``ftol`` (relative), when the
        predicted decrease of the next step is below ``ftol / 10`` of the cost, or when the
        step's scaled length is below ``xtol`` times the scaled parameter vector (the defaults
        are MINPACK's).

    Returns
    -------
    result : `LMResult`

    Notes
    -----
    Marquardt (1963) with the scaling of Moré (1978): the normal matrix ``JᵀJ`` is scaled to
    unit diagonal, and the damped system ``(Â + λ I) y = -ĝ`` solved by Cholesky. Forming
    ``JᵀJ`` costs one BLAS matrix product per iteration, far less than MINPACK's unblocked QR
    of the ``(m, P)`` Jacobian (``scipy.optimize.least_squares(method="lm")``) for the
    FULLCOVARIANCE problem (m ≈ 3000, P ≈ 200); the squared condition number is harmless after
    scaling for this well-posed linear-dominated fit. Same minimum (to ~1e-9 relative).
    """
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    p = np.asarray(p0, dtype=np.float64).copy()
    r = fun(p)
    cost = 0.5 * float(r @ r)
    j = jac(p)
    nfev, njev = 1, 1
    lam = 1e-3
    converged = False
    eye = None
    for _ in range(max_iter):
        jtj = j.T @ j
        grad = j.T @ r
        d = np.sqrt(np.diag(jtj))
        d[d == 0] = 1.0
        a_s = jtj / np.outer(d, d)
        g_s = grad / d
        if eye is None:
            eye = np.eye(p.size)
        accepted = False
        while lam < 1e16:
            try:
                y = cho_solve(cho_factor(a_s + lam * eye), -g_s)
            except LinAlgError:
                lam *= 10.0
                continue
            # predicted cost decrease of the damped Gauss-Newton step; none left: converged
            pred = -float(g_s @ y) - 0.5 * float(y @ (a_s @ y))
            if pred <= 0.1 * ftol * cost:
                break
            p_new = p + y / d
            r_new = fun(p_new)
            nfev += 1
            cost_new = 0.5 * float(r_new @ r_new)
            if np.isfinite(cost_new) and cost_new <= cost:
                accepted = True
                break
            lam *= 10.0
        if not accepted:
            converged = True            # no descent possible: at the minimum (to precision)
            break
        small_step = np.linalg.norm(y) <= xtol * (np.linalg.norm(p * d) + xtol)
        small_gain = cost - cost_new <= ftol * cost
        p, r, cost = p_new, r_new, cost_new
        lam = max(lam / 10.0, 1e-12)
        j = jac(p)
        njev += 1
        if small_step or small_gain:
            converged = True
            break
    return LMResult(x=p, fun=r, jac=j, cost=cost, nfev=nfev, njev=njev, converged=converged)


def _fit_full_cov_vp(mu, cv, sw, r, no_b, sigma_cut, n_sigma_iter):
    """Fit eq. 20 in stages, with sigma clipping.

    Start: at the gain of a quadratic fit of C00, the model is linear in (a, n) once the
    (second-order) convolution terms are fixed, so every lag is a weighted linear fit, iterated
    to self-consistency (NO_B form); then Levenberg-Marquardt on all parameters with the
    analytic Jacobian (`_polish`); then sigma clipping of the residuals and refit.
    """
    lin = np.polynomial.polynomial.polyfit(mu, cv[:, 0, 0], 2, w=sw[:, 0, 0] if np.any(sw[:, 0, 0]) else None)
    g0 = 1.0 / lin[1] if lin[1] > 0 else float(np.median(mu / cv[:, 0, 0]))
    fit_w = np.ones_like(sw)
    a = np.zeros((r, r))
    c = np.zeros((r, r))
    g = g0
    lm = None
    for _ in range(max(n_sigma_iter, 1)):
        w = sw * fit_w

        a, c, n, _ = _profile(mu, cv, w, g, True, a, np.zeros((r, r)))
        a, c, n, g, lm = _polish(mu, cv, w, r, no_b, a, c, n, g)
        resid = (full_cov_model(a, c, n, g, mu) - cv) * sw
        sd = np.std(resid[fit_w > 0])
        new_fw = np.where(np.abs(resid) > sigma_cut * sd, 0.0, 1.0)
        if np.array_equal(new_fw, fit_w):
            break
        fit_w = new_fw
    n_data = int(np.count_nonzero(sw * fit_w))
    return a, c, n, g, fit_w, _param_errors(lm, n_data)
