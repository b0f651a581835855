"""Brighter-fatter kernel from PTC covariances (pure numpy): the math of `BrighterFatterKernelSolveTask`.

cp_pipe ``cpBfk.py`` (read, not copied); Coulton et al. 2018 (arXiv:1711.06273) eq. 22-29; Astier
et al. 2019 eq. 20. Per amplifier and flat pair, the covariances (ADU², ``[dx, dy]``, halved by the
PTC) become ``q = 2·cov·g²`` (e⁻²); ``q00 -= 2μ`` removes the Poisson term; ``-q/2`` is the
brighter-fatter correlation ``≈ -a μ²`` and ``-q/(2μ²)`` its flux-scaled form ``≈ -a``. The
"pre-kernel" is their clipped mean over pairs, or the slope of a fit against ``μ²``
(``correlationQuadraticFit``), or ``-a`` from the PTC fit (``useAmatrix``), mirrored into four
quadrants; ``forceZeroSum`` moves the sum into the centre. The kernel ``K`` solves ``∇²K =
pre-kernel`` (zero boundary; cp_pipe iterates successive over-relaxation, solved directly
here), in ``[y, x]`` order for IsrTask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.image.statistics import clipped_stats

__all__ = [
    "average_correlations",
    "flux_scaled_correlations",
    "force_zero_sum",
    "quadratic_correlations",
    "successive_over_relax",
    "tile_quadrant",
]


def tile_quadrant(quadrant: np.ndarray) -> np.ndarray:
    """Mirror a first-quadrant ``(n, n)`` array ``[i, j]`` into ``(2n-1, 2n-1)`` (centre = ``[0, 0]``).

    ``out[n-1 ± i, n-1 ± j] = quadrant[i, j]`` (cp_pipe ``_tileArray``); index order is kept.
    """
    q = np.asarray(quadrant, np.float64)
    n = q.shape[0]
    if q.ndim != 2 or q.shape[1] != n:
        raise ValueError(f"quadrant must be square, got shape {q.shape}")
    full = np.zeros((2 * n - 1, 2 * n - 1))
    for si in (-1, 1):
        for sj in (-1, 1):
            full[n - 1 + si * np.arange(n)[:, None], n - 1 + sj * np.arange(n)[None, :]] = q
    return full


def flux_scaled_correlations(
    covariances: np.ndarray, means: np.ndarray, gain: float, check_level: float = 2.0,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Brighter-fatter correlations of each flat pair (Coulton et al. 2018 eq. 29).

    Parameters
    ----------
    covariances : `numpy.ndarray`, shape ``(n, M, M)``
        PTC covariances ``[pair, dx, dy]`` (ADU², halved: the covariance of one image).
    means : `numpy.ndarray`, shape ``(n,)``
        Pair means (ADU).
    gain : `float`
        e⁻/ADU.
    check_level : `float`
        ``xcorrCheckRejectLevel``: a pair whose ``|Σ scaled| / Σ |scaled|`` exceeds it is dropped.

    Returns
    -------
    scaled : `list` of `numpy.ndarray`, each ``(2M-1, 2M-1)``
        ``-(q - 2μ δ)/(2 μ²)`` tiled (≈ ``-a``; dimensionless per e⁻).
    unscaled : `list` of `numpy.ndarray`, each ``(2M-1, 2M-1)``
        ``-(q - 2μ δ)/2`` tiled (≈ ``-a μ²``, e⁻²).
    fluxes : `numpy.ndarray`
        Means (e⁻) of the kept pairs.

    Notes
    -----
    A pair whose Poisson-subtracted variance is positive (``q00 - 2μ > 0``: no brighter-fatter
    deficit, e.g. noise at low flux) is skipped, as cp_pipe.
    """
    scaled, unscaled, fluxes = [], [], []
    for cov, mu_adu in zip(np.asarray(covariances, float), np.asarray(means, float)):
        if not np.isfinite(mu_adu) or mu_adu <= 0 or not np.all(np.isfinite(cov)):
            continue
        mu = mu_adu * gain
        q = 2.0 * cov * gain * gain
        q[0, 0] -= 2.0 * mu
        if q[0, 0] > 0:
            continue
        q /= -2.0
        un = tile_quadrant(q)
        sc = un / mu**2
        den = np.sum(np.abs(sc))
        if den == 0 or not np.isfinite(den) or abs(np.sum(sc)) / den > check_level:
            continue
        scaled.append(sc)
        unscaled.append(un)
        fluxes.append(mu)
    return scaled, unscaled, np.asarray(fluxes)


def average_correlations(xcorrs: Sequence[np.ndarray], n_sigma_clip: float = 5.0) -> np.ndarray:
    """Per-element clipped mean (afw MEANCLIP) of correlations, padded by one zero on each side."""
    stack = np.asarray(xcorrs, float)
    out = np.zeros(stack.shape[1:])
    for idx in np.ndindex(out.shape):
        out[idx] = clipped_stats(stack[(slice(None), *idx)], nsigma=n_sigma_clip, niter=3)[0]
    return np.pad(out, 1)


def quadratic_correlations(xcorrs: Sequence[np.ndarray], fluxes: np.ndarray) -> np.ndarray:
    """Per-element slope of ``corr = c0 + c1·μ²`` (unscaled correlations), padded by one zero.

    Parameters
    ----------
    xcorrs : sequence of `numpy.ndarray`
        *Unscaled* correlations (e⁻², ≈ ``-a μ²``).
    fluxes : `numpy.ndarray`
        Means (e⁻).

    Returns
    -------
    pre_kernel : `numpy.ndarray`
        ``c1`` (≈ ``-a``), padded.

    Raises
    ------
    ValueError
        With fewer than two pairs.
    """
    stack = np.asarray(xcorrs, float)
    f2 = np.asarray(fluxes, float) ** 2
    if stack.shape[0] < 2:
        raise ValueError(f"a quadratic correlation fit needs >= 2 flat pairs, got {stack.shape[0]}")
    a = np.vstack([np.ones_like(f2), f2]).T
    w = 1.0 / np.maximum(f2, 1.0)   # equal relative weights: the noise of a covariance grows with μ²
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(a * sw[:, None], stack.reshape(len(f2), -1) * sw[:, None], rcond=None)
    return np.pad(coef[1].reshape(stack.shape[1:]), 1)


def force_zero_sum(pre_kernel: np.ndarray, model_radius: int = 100,
                   model_slope: float = -1.35) -> tuple[np.ndarray, float]:
    """Subtract the sum of a pre-kernel from its centre (cp_pipe ``forceZeroSum``).

    If the kernel is wider than ``correlationModelRadius`` the flux beyond it is modelled as
    ``-preFactor · r^(2 slope)`` and included in the sum.

    Returns
    -------
    pre_kernel : `numpy.ndarray`
        Copy with zero sum (up to the modelled tail).
    total : `float`
        The sum removed.
    """
    k = np.array(pre_kernel, float)
    c = (k.shape[0] - 1) // 2
    total = float(k.sum())
    if model_radius < c:
        pre = np.sqrt(abs(k[c, c + 1] * k[c + 1, c]))
        s = 2.0 * abs(model_slope)
        total += 2.0 * np.pi * (pre / (s * (c + 0.5)) ** s)
    k[c, c] -= total
    return k, total


def successive_over_relax(source: np.ndarray, max_iter: int = 10000, e_level: float = 5.0e-14) -> np.ndarray:
    """Solve ``∇²f = source`` (5-point Laplacian) on a square grid with ``f = 0`` outside.

    cp_pipe iterates red-black successive over-relaxation towards this solution until the summed
    residual falls below ``e_level`` × the initial one; the grids are small (``(2M+1)²`` unknowns),
    so the same linear system is solved directly here (the limit of the iteration, to rounding).

    Parameters
    ----------
    source : `numpy.ndarray`, shape ``(n, n)``
    max_iter, e_level
        ``maxIterSuccessiveOverRelaxation`` / ``eLevelSuccessiveOverRelaxation`` (kept for the
        config; the direct solve needs neither).

    Returns
    -------
    f : `numpy.ndarray`, shape ``(n, n)``

    Raises
    ------
    ValueError
        If ``source`` is not square.
    """
    src = np.asarray(source, float)
    n = src.shape[0]
    if src.ndim != 2 or src.shape[1] != n:
        raise ValueError(f"SOR source must be square, got shape {src.shape}")
    one = np.diag(np.full(n, -2.0)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    lap = np.kron(one, np.eye(n)) + np.kron(np.eye(n), one)
    return np.linalg.solve(lap, src.ravel()).reshape(n, n)
