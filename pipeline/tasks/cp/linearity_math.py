"""Linearity fit from PTC means (pure numpy): the math of `LinearitySolveTask`.

cp_pipe ``cpLinearitySolve.py`` (read, not copied), Astier et al. 2020 (arXiv:2003.05978) eq. 37:
per amplifier, the linear flux proxy ``L = k0' + k1'·t`` is fitted (robustly) to the flat-pair means
``m`` (ADU) against exposure time ``t`` in ``[minLinearAdu, maxLinearAdu]``; the measured means are
then fitted as a polynomial of ``L``, ``m = Σ_j k_j L^j``, and the correction coefficients are
``c_{j-2} = -k_j / k_1^j`` (ip_isr ``Polynomial``: ``v ← v + Σ_i c_i v^(i+2)``). ``Squared`` keeps
``c_0``; ``LookupTable`` tabulates ``L(v) - v`` at every integer ``v``; ``Spline`` gives Akima nodes
over the measured range with values ``v - L(v)`` (ip_isr ``Spline`` subtracts the spline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.tasks.isr.linearize import apply_linearity

__all__ = [
    "LinearityFit",
    "fit_linearity",
    "irls_polynomial",
    "linearity_residuals",
]


def irls_polynomial(x: np.ndarray, y: np.ndarray, order: int, n_iter: int = 10) -> np.ndarray:
    """Robust polynomial fit ``y ≈ Σ_j p_j x^j`` by iteratively reweighted least squares.

    Bisquare (Tukey, c = 4.685) weights of the residuals scaled by their MAD (cp_pipe ``irlsFit``
    uses the same idea).

    Parameters
    ----------
    x, y : `numpy.ndarray`, shape ``(n,)``
    order : `int`
        Polynomial degree (``n > order`` points needed).
    n_iter : `int`
        Reweighting iterations.

    Returns
    -------
    p : `numpy.ndarray`, shape ``(order + 1,)``
        Coefficients, lowest power first.

    Raises
    ------
    ValueError
        If there are not more points than coefficients.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.size <= order:
        raise ValueError(f"{x.size} points cannot fit a polynomial of degree {order}")
    scale = max(float(np.max(np.abs(x))), 1e-300)
    a = np.vander(x / scale, order + 1, increasing=True)
    w = np.ones_like(y)
    p = np.zeros(order + 1)
    for _ in range(n_iter):
        sw = np.sqrt(w)
        p, *_ = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)
        r = y - a @ p
        mad = 1.4826 * np.median(np.abs(r[w > 0])) if np.any(w > 0) else 0.0
        if mad <= 0:
            break
        u = r / (4.685 * mad)
        w_new = np.where(np.abs(u) < 1, (1 - u**2) ** 2, 0.0)
        if np.count_nonzero(w_new) <= order:
            break
        w = w_new
    return p / scale ** np.arange(order + 1)


@dataclass
class LinearityFit:
    """Result of `fit_linearity` for one amplifier.

    Attributes
    ----------
    linearity_type : `str`
    coeffs : `numpy.ndarray`
        ip_isr coefficients of the type (Polynomial: ``[c2, c3, ...]`` 1/ADU...; Squared: ``[c2]``;
        LookupTable: ``[row, 0]``; Spline: ``[nodes..., values...]`` ADU).
    table_row : `numpy.ndarray` or None
        LookupTable row (ADU corrections indexed by the measured ADU).
    poly : `numpy.ndarray`
        ``k_j`` of ``m = Σ k_j L^j`` (ADU).
    linear : `numpy.ndarray`
        ``(k0', k1')`` of ``L = k0' + k1' t`` (ADU, ADU/s).
    mask : `numpy.ndarray` of `bool`
        Points used in the polynomial fit.
    residuals : `numpy.ndarray`
        Fractional residual of the linearized means from ``L`` (NaN where unused).
    """

    linearity_type: str
    coeffs: np.ndarray
    table_row: np.ndarray | None
    poly: np.ndarray
    linear: np.ndarray
    mask: np.ndarray
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _invert(poly: np.ndarray, v: np.ndarray, l_max: float) -> np.ndarray:
    """``L`` such that ``Σ k_j L^j = v`` (monotonic branch on ``[-l_max/4, 2 l_max]``)."""
    grid = np.linspace(-0.25 * l_max, 2.0 * l_max, 20001)
    m = np.polynomial.polynomial.polyval(grid, poly)
    if np.any(np.diff(m) <= 0):
        good = np.concatenate([[True], np.cumsum(np.diff(m) <= 0) == 0])
        grid, m = grid[good], m[good]
    return np.interp(v, m, grid)


def fit_linearity(
    exp_times: np.ndarray,
    means: np.ndarray,
    use: np.ndarray,
    *,
    linearity_type: str = "Squared",
    polynomial_order: int = 3,
    spline_knots: int = 10,
    min_linear_adu: float = 30.0,
    max_linear_adu: float = 20000.0,
    n_sigma_clip_linear: float = 5.0,
    max_lookup_table_adu: int = 2**18,
    table_row_index: int = 0,
) -> LinearityFit:
    """Fit the non-linearity of one amplifier from its PTC points.

    Parameters
    ----------
    exp_times : `numpy.ndarray`, shape ``(n,)``
        Exposure time of each flat pair (s; or photodiode charge).
    means : `numpy.ndarray`, shape ``(n,)``
        Mean signal of each pair (ADU).
    use : `numpy.ndarray` of `bool`, shape ``(n,)``
        Points the PTC kept (``expIdMask``).
    linearity_type : `str`
        ``Polynomial``, ``Squared``, ``LookupTable``, ``Spline`` or ``None``.
    polynomial_order : `int`
        Degree of ``m(L)`` (>= 2).
    spline_knots : `int`
        Spline nodes.
    min_linear_adu, max_linear_adu : `float`
        Mean range (exclusive) of the linear-term fit; points at or below ``min_linear_adu`` are
        not used at all.
    n_sigma_clip_linear : `float`
        Points whose polynomial-fit residual exceeds this many ``sqrt(mean)`` are rejected.
    max_lookup_table_adu : `int`
        Length of a LookupTable row.
    table_row_index : `int`
        Row of this amp in the LookupTable.

    Returns
    -------
    fit : `LinearityFit`

    Raises
    ------
    ValueError
        If fewer than 2 points lie in the linear range, or too few remain for the polynomial.

    Notes
    -----
    cp_pipe fits the polynomial only below ``maxLinearAdu`` and clips points farther than
    ``nSigmaClipLinear·sqrt(m)`` from the *linear* fit, which removes the non-linear points it is
    meant to measure (a ``-1e-6``/ADU quadratic is 1600 ADU off at 40000 ADU, 8 × the clip). Here
    the linear range only sets ``L``, and the clipping is done on the polynomial residuals.
    """
    t = np.asarray(exp_times, np.float64)
    m = np.asarray(means, np.float64)
    ok = np.asarray(use, bool) & np.isfinite(t) & np.isfinite(m) & (m > min_linear_adu)
    lin_sel = ok & (m < max_linear_adu)
    if lin_sel.sum() < 2:
        raise ValueError(f"{int(lin_sel.sum())} point(s) between minLinearAdu={min_linear_adu} and "
                         f"maxLinearAdu={max_linear_adu} ADU; need 2 for the linear term")
    linear = irls_polynomial(t[lin_sel], m[lin_sel], 1)
    lin = linear[0] + linear[1] * t
    order = 2 if linear_type_is_squared(linearity_type) else max(2, polynomial_order)
    mask = ok.copy()
    poly = np.zeros(order + 1)
    for _ in range(5):
        if mask.sum() <= order:
            raise ValueError(f"{int(mask.sum())} point(s) left for a degree-{order} linearity fit")
        poly = irls_polynomial(lin[mask], m[mask], order)
        resid = m - np.polynomial.polynomial.polyval(lin, poly)
        new = ok & (np.abs(resid) < n_sigma_clip_linear * np.sqrt(np.abs(m)))
        if np.array_equal(new, mask):
            break
        mask = new
    k1 = poly[1]
    corr = np.array([-poly[j] / k1**j for j in range(2, order + 1)])
    table_row = None
    l_max = float(np.max(lin[mask])) if mask.any() else float(np.max(m))
    if linearity_type == "Polynomial":
        coeffs = corr
    elif linearity_type == "Squared":
        coeffs = corr[:1]
    elif linearity_type == "LookupTable":
        v = np.arange(max_lookup_table_adu, dtype=np.float64)
        # the ideal signal k0 + k1 L(v): what the Polynomial coefficients aim at, exactly inverted
        table_row = (poly[0] + k1 * _invert(poly, v, l_max) - v).astype(np.float32)
        coeffs = np.array([float(table_row_index), 0.0])
    elif linearity_type == "Spline":
        nodes = np.linspace(0.0, float(np.max(m[mask])) * 1.05 + 1.0, spline_knots)
        values = nodes - (poly[0] + k1 * _invert(poly, nodes, l_max))
        coeffs = np.concatenate([nodes, values])
    elif linearity_type == "None":
        coeffs = np.zeros(1)
    else:
        raise ValueError(f"unknown linearityType {linearity_type!r}")
    fit = LinearityFit(linearity_type, np.asarray(coeffs, np.float64), table_row, poly, linear, mask)
    # a LookupTable amp's residuals use its row alone: row index 0 of a one-row table
    res_coeffs = fit.coeffs if table_row is None else np.array([0.0, fit.coeffs[1]])
    fit.residuals = linearity_residuals(t, m, mask, linearity_type, res_coeffs,
                                        None if table_row is None else table_row[None, :])[0]
    return fit


def linear_type_is_squared(linearity_type: str) -> bool:
    """Whether the type keeps only the quadratic term (fit with degree 2)."""
    return linearity_type == "Squared"


def linearity_residuals(
    exp_times: np.ndarray,
    means: np.ndarray,
    mask: np.ndarray,
    linearity_type: str,
    coeffs: Sequence[float],
    table: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional residuals of the linearized means from a straight line in exposure time.

    Parameters
    ----------
    exp_times, means : `numpy.ndarray`, shape ``(n,)``
        s, ADU.
    mask : `numpy.ndarray` of `bool`
        Points to fit the line to (others get NaN residuals).
    linearity_type, coeffs, table
        The linearizer of the amp (see `pipeline.tasks.isr.linearize.apply_linearity`).

    Returns
    -------
    residuals : `numpy.ndarray`, shape ``(n,)``
        ``corrected / (a + b t) - 1`` with ``(a, b)`` fitted to the corrected masked points
        (weights ``1 / corrected``, i.e. least squares on the fractional residuals).
    corrected : `numpy.ndarray`, shape ``(n,)``
        Linearized means (ADU).
    """
    t = np.asarray(exp_times, np.float64)
    corrected = np.asarray(means, np.float64).copy()[None, :]
    apply_linearity(corrected, linearity_type, coeffs, table)
    corrected = corrected[0]
    mask = np.asarray(mask, bool) & np.isfinite(corrected)
    res = np.full(t.shape, np.nan)
    if mask.sum() >= 2:
        # relative residuals: weight 1 / signal
        b, a = np.polyfit(t[mask], corrected[mask], 1, w=1.0 / np.abs(corrected[mask]))
        res[mask] = corrected[mask] / (a + b * t[mask]) - 1.0
    return res, corrected
