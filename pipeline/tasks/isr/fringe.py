"""Fringe template amplitude fit and subtraction (reference-algorithms §2.10, ip_isr ``fringe.py``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.image.statistics import clipped_stats, iqr_sigma

__all__ = ["correct_fringes", "measure_fringes", "solve_fringes", "subtract_fringes"]

_log = logging.getLogger(__name__)


def _box_stat(image: np.ndarray, bad: np.ndarray, x: int, y: int, half: int) -> float:
    sl = (slice(max(y - half, 0), y + half), slice(max(x - half, 0), x + half))
    return clipped_stats(image[sl], bad[sl], 3.0, 3)[0]


def measure_fringes(
    image: np.ndarray, bad: np.ndarray, xs: np.ndarray, ys: np.ndarray, small: int = 3, large: int = 30
) -> np.ndarray:
    """Fringe amplitude at each position: stat(small box) − stat(large box).

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
    bad : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
        Excluded pixels (SAT...).
    xs, ys : `numpy.ndarray` of `int`
        Positions.
    small, large : `int`
        Half sizes of the boxes (``fringe.small``, ``fringe.large``).

    Returns
    -------
    values : `numpy.ndarray`, shape ``(n,)``
    """
    return np.array(
        [_box_stat(image, bad, x, y, small) - _box_stat(image, bad, x, y, large) for x, y in zip(xs, ys)]
    )


def solve_fringes(
    science: np.ndarray, fringes: np.ndarray, iterations: int = 20, clip: float = 3.0
) -> np.ndarray:
    """Least-squares fringe amplitudes with iterative clipping.

    Parameters
    ----------
    science : `numpy.ndarray`, shape ``(n,)``
        Science measurements.
    fringes : `numpy.ndarray`, shape ``(n, n_fringe)``
        Template measurements.
    iterations : `int`
    clip : `float`

    Returns
    -------
    amplitudes : `numpy.ndarray`, shape ``(n_fringe,)``
        Zeros (nothing subtracted, a warning logged) when no measurement is finite or none
        survives the initial rejection, as ip_isr's ``FringeTask.solve`` ("no good pixels").

    Raises
    ------
    RuntimeError
        If the array lengths differ.
    """
    science = np.asarray(science, float)
    fringes = np.asarray(fringes, float).reshape(science.size, -1) if fringes.size else fringes
    if fringes.shape[0] != science.size:
        raise RuntimeError(f"fringe measurements differ in length: {science.size} vs {fringes.shape[0]}")
    good = np.isfinite(science) & np.all(np.isfinite(fringes), axis=1)
    s, f = science[good], fringes[good]
    if s.size == 0:
        _log.warning("Unable to solve for fringes: no good pixels (no finite measurement); not subtracted")
        return np.zeros(fringes.shape[1])

    def robust_keep(v: np.ndarray) -> np.ndarray:
        centre, sigma = iqr_sigma(v)
        return np.abs(v - centre) <= clip * sigma if sigma > 0 else np.ones(v.size, bool)

    keep = robust_keep(s)
    for j in range(f.shape[1]):
        keep &= robust_keep(f[:, j])
    s, f = s[keep], f[keep]
    if s.size == 0:
        _log.warning("Unable to solve for fringes: no good pixels after initial rejection; not subtracted")
        return np.zeros(fringes.shape[1])
    n_prev = -1
    amp = np.zeros(f.shape[1])
    for _ in range(iterations):
        amp = np.linalg.lstsq(f, s, rcond=None)[0]
        resid = s - f @ amp
        rms = iqr_sigma(resid)[1]
        ok = np.abs(resid) <= clip * rms if rms > 0 else np.ones(s.size, bool)
        if ok.sum() == n_prev or ok.sum() < f.shape[1]:
            break
        n_prev = int(ok.sum())
        s, f = s[ok], f[ok]
    return np.linalg.lstsq(f, s, rcond=None)[0] if s.size >= f.shape[1] else amp


def subtract_fringes(
    image: np.ndarray,
    variance: np.ndarray | None,
    fringes: Sequence[np.ndarray],
    amplitudes: Sequence[float],
    fringe_variances: Sequence[np.ndarray] | None = None,
) -> None:
    """``image -= sum_i s_i fringe_i``; ``variance += s_i² var_i`` (in place)."""
    for i, (fr, s) in enumerate(zip(fringes, amplitudes)):
        image -= np.float32(s) * np.nan_to_num(fr).astype(np.float32, copy=False)
        if variance is not None and fringe_variances is not None:
            variance += np.float32(s * s) * fringe_variances[i]


def correct_fringes(
    mi: Any,
    templates: Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]],
    seed: int,
    *,
    num: int,
    small: int,
    large: int,
    pedestal: bool,
    iterations: int,
    clip: float,
) -> np.ndarray:
    """Fit the fringe templates to an exposure at random positions and subtract them.

    Parameters
    ----------
    mi : `pipeline.image.MaskedImage`
        Exposure planes (ADU); image, variance and mask (templates' masks ORed) changed in place.
    templates : sequence of ``(image, mask, variance)``
        Fringe frames (mask and variance may be `None`); not modified.
    seed : `int`
        Seed of the measurement positions (``rngSeedOffset`` + exposure id, mod 2³²).
    num, small, large : `int`
        Number of positions and the half-sizes of the measuring boxes (pixels).
    pedestal : `bool`
        Subtract each template's clipped mean first.
    iterations : `int`
        Rejection iterations of the amplitude fit.
    clip : `float`
        Rejection threshold (sigma).

    Returns
    -------
    amplitudes : `numpy.ndarray`
        Fitted amplitude of each template.
    """
    bad = (
        mi.mask & mi.get_plane_bitmask([p for p in ("SAT", "BAD", "UNMASKEDNAN") if p in mi.mask_planes])
    ) != 0
    rng = np.random.RandomState(seed)
    ny, nx = mi.shape
    xs = rng.randint(large, nx - large, num)
    ys = rng.randint(large, ny - large, num)
    sci = measure_fringes(mi.image, bad, xs, ys, small, large)
    templ, tvars = [], []
    for fi, fm, fv in templates:
        fi = fi.astype(np.float32, copy=True)
        if pedestal:
            fi -= np.float32(clipped_stats(fi)[0])
        templ.append(fi)
        tvars.append(fv)
        if fm is not None:
            mi.mask |= fm
    fmeas = np.stack([measure_fringes(t, bad, xs, ys, small, large) for t in templ], axis=1)
    amps = solve_fringes(sci, fmeas, iterations, clip)
    subtract_fringes(mi.image, mi.variance, templ, amps, tvars if all(v is not None for v in tvars) else None)
    return amps
