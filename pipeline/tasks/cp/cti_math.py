"""Serial CTI measurement (pure numpy/scipy): overscan statistics, EPER, model fit.

cp_pipe ``cpCtiSolve.py`` and ip_isr ``isrStatistics.measureCti``, written from their
description (Snyder et al. 2021, JATIS 7, 048002; the model of
`pipeline.tasks.isr.deferred_charge`):

* per exposure and amplifier (`measure_cti_statistics`): the mean of the imaging region, of its
  first and last column, and of every serial-overscan column and parallel-overscan row, in
  readout order, in electrons;
* `serial_eper`: the extended pixel edge response ``(o1 + o2) / (N · S)`` of the first two
  overscan columns (``N`` serial transfers, ``S`` the image mean), and `cti_turnoff` (the signal
  where the EPER leaves ``serialCtiRange``, cp_pipe ``calcCtiTurnoff``);
* `fit_serial_cti`: a least-squares fit of the overscan column means against the image mean over
  all exposures, with the forward model of `pipeline.tasks.isr.deferred_charge.simulate_serial_cti`
  applied to a flat row (prescan empty, ``S`` in every imaging pixel, empty overscan): global CTI
  ``ε``, one linear serial trap (size, emission time, capture scaling) and the local electronic
  offset (drift scale, decay time) fitted together. cp_pipe fits them in three stages (local
  offset on columns 3-13 with no trap, global CTI on columns 1-15 below ``maxSignalForCti``, a
  piecewise-linear "spline" trap from the residual of the first columns); ccdflow fits the one
  model jointly because its correction knows linear and logistic traps only, and a trap whose
  emission time is near one pixel leaks into columns 3-13, which the staged fit reads as a
  local offset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.struct import Struct
from pipeline.tasks.isr.deferred_charge import SerialTrap, readout_slices, simulate_serial_cti

__all__ = ["cti_turnoff", "fit_serial_cti", "measure_cti_statistics", "model_overscan", "serial_eper"]


def measure_cti_statistics(image: np.ndarray, amp: Any, gain: float) -> dict[str, Any]:
    """Overscan statistics of one amplifier of an overscan-corrected, untrimmed exposure.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Untrimmed image (ADU) after overscan subtraction (overscan regions subtracted too).
    amp : `pipeline.image.Amplifier`
        Raw geometry (``raw_data_bbox``, ``raw_serial_overscan_bbox``,
        ``raw_parallel_overscan_bbox``, prescan) of the amplifier.
    gain : `float`
        e⁻/ADU used to convert every value to electrons (``INPUT_GAIN``).

    Returns
    -------
    stats : `dict`
        ``IMAGE_MEAN``, ``FIRST_COLUMN_MEAN``, ``LAST_COLUMN_MEAN`` (first / last column read),
        ``SERIAL_OVERSCAN_COLUMNS`` / ``SERIAL_OVERSCAN_VALUES`` (column means over the imaging
        rows, the first read first), ``PARALLEL_OVERSCAN_ROWS`` / ``PARALLEL_OVERSCAN_VALUES``
        (row means over the imaging columns, the row next to the imaging region first),
        ``INPUT_GAIN``, ``N_SERIAL_SHIFTS`` (prescan + imaging columns); all in e⁻.
    """
    img = np.asarray(image, dtype=np.float64)
    data = amp.raw_data_bbox
    _, _, from_right = readout_slices(amp)
    block = img[data.slices]
    if from_right:
        block = block[:, ::-1]
    out: dict[str, Any] = {
        "IMAGE_MEAN": float(np.nanmean(block)) * gain,
        "FIRST_COLUMN_MEAN": float(np.nanmean(block[:, 0])) * gain,
        "LAST_COLUMN_MEAN": float(np.nanmean(block[:, -1])) * gain,
        "INPUT_GAIN": float(gain),
        "N_SERIAL_SHIFTS": int(data.nx + amp.raw_serial_prescan_bbox.nx),
    }
    over = amp.raw_serial_overscan_bbox
    if not over.is_empty:
        cols = img[data.y0 : data.y1, over.x0 : over.x1]
        if from_right:
            cols = cols[:, ::-1]
        out["SERIAL_OVERSCAN_COLUMNS"] = list(range(over.nx))
        out["SERIAL_OVERSCAN_VALUES"] = (np.nanmean(cols, axis=0) * gain).tolist()
    else:
        out["SERIAL_OVERSCAN_COLUMNS"], out["SERIAL_OVERSCAN_VALUES"] = [], []
    par = amp.raw_parallel_overscan_bbox
    if not par.is_empty:
        rows = img[par.y0 : par.y1, data.x0 : data.x1]
        if par.y1 <= data.y0:  # below the data: the row next to it is the last one
            rows = rows[::-1]
        out["PARALLEL_OVERSCAN_ROWS"] = list(range(par.ny))
        out["PARALLEL_OVERSCAN_VALUES"] = (np.nanmean(rows, axis=1) * gain).tolist()
    else:
        out["PARALLEL_OVERSCAN_ROWS"], out["PARALLEL_OVERSCAN_VALUES"] = [], []
    return out


def serial_eper(signals: np.ndarray, overscans: np.ndarray, n_shifts: int, start: int = 0) -> np.ndarray:
    """EPER estimate of the CTI: ``(o[start] + o[start + 1]) / (n_shifts · S)`` per exposure.

    Parameters
    ----------
    signals : `numpy.ndarray`, shape ``(n_exp,)``
        Image means (e⁻).
    overscans : `numpy.ndarray`, shape ``(n_exp, n_columns)``
        Overscan column means (e⁻), first read first.
    n_shifts : `int`
        Serial transfers of the last imaging pixel (prescan + imaging columns).
    start : `int`
        First overscan column used (0-based).
    """
    s = np.asarray(signals, float)
    o = np.asarray(overscans, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (o[:, start] + o[:, start + 1]) / (n_shifts * s)


def cti_turnoff(
    signals: np.ndarray, eper: np.ndarray, cti_range: Sequence[float], sigma: float = 1.0, max_iter: int = 5
) -> tuple[float, float]:
    """Signal above which the EPER stops following the low-signal trend (cp_pipe ``calcCtiTurnoff``).

    Parameters
    ----------
    signals : `numpy.ndarray`
        Image means (e⁻), sorted ascending.
    eper : `numpy.ndarray`
        EPER of each signal.
    cti_range : pair of `float`
        Values outside are dropped first (``serialCtiRange``).
    sigma, max_iter : `float`, `int`
        Clipping of the gradient of the EPER (``turnoffFinderSigmaClip``, ``...MaxIters``).

    Returns
    -------
    turnoff, sampling_error : `float`
        e⁻; ``(0, 0)`` with no point in range, the largest signal with one point.
    """
    from astropy.stats import sigma_clip

    s = np.asarray(signals, float)
    d = np.asarray(eper, float)
    keep = np.isfinite(d) & (d >= cti_range[0]) & (d <= cti_range[1])
    s, d = s[keep], d[keep]
    if d.size == 0:
        return 0.0, 0.0
    if d.size < 2:
        return float(s[-1]), float(s[-1])
    clipped = sigma_clip(
        np.gradient(d), sigma=sigma, maxiters=max_iter, cenfunc=np.nanmedian, stdfunc=np.nanstd, masked=True
    )
    good = ~np.ma.getmaskarray(clipped)
    if not good.any():
        return 0.0, 0.0
    idx = int(np.flatnonzero(good)[-1])
    if idx == len(s) - 1:
        err = s[idx] - s[idx - 1]
    elif idx == 0:
        err = s[0]
    else:
        err = (s[idx + 1] - s[idx - 1]) / 2.0
    return float(s[idx]), float(abs(err))


def model_overscan(
    signals: np.ndarray,
    n_prescan: int,
    n_data: int,
    columns: Sequence[int],
    *,
    global_cti: float,
    trap_size: float,
    emission_time: float,
    scaling: float,
    drift_scale: float,
    decay_time: float,
) -> np.ndarray:
    """Predicted overscan column means for flat rows of the given signals (forward model).

    Parameters
    ----------
    signals : `numpy.ndarray`, shape ``(n_exp,)``
        Flat level of the imaging pixels (e⁻).
    n_prescan, n_data : `int`
        Serial prescan and imaging pixels (read in that order).
    columns : sequence of `int`
        Overscan columns wanted (0 = first read).
    global_cti, trap_size, emission_time, scaling, drift_scale, decay_time : `float`
        Model parameters (`pipeline.tasks.isr.deferred_charge`); a trap of size 0 is absent.

    Returns
    -------
    values : `numpy.ndarray`, shape ``(n_exp, len(columns))``, e⁻
    """
    cols = np.asarray(columns, int)
    n_over = int(cols.max()) + 1
    s = np.asarray(signals, float)
    rows = np.zeros((s.size, n_prescan + n_data + n_over))
    rows[:, n_prescan : n_prescan + n_data] = s[:, None]
    traps = []
    if trap_size > 0:
        traps = [SerialTrap(trap_size, emission_time, 0, "linear", [scaling])]
    out = simulate_serial_cti(
        rows, drift_scale=drift_scale, decay_time=decay_time, global_cti=global_cti, traps=traps
    )
    return out[:, n_prescan + n_data + cols]


def fit_serial_cti(
    signals: np.ndarray,
    overscans: np.ndarray,
    n_prescan: int,
    n_data: int,
    columns: Sequence[int],
    *,
    fit_error: float = 1.0,
    fit_trap: bool = True,
    fit_local_offset: bool = True,
) -> Struct:
    """Fit global CTI, one linear trap and the local offset to overscan column means.

    Parameters
    ----------
    signals : `numpy.ndarray`, shape ``(n_exp,)``
        Image means (e⁻).
    overscans : `numpy.ndarray`, shape ``(n_exp, len(columns))``
        Measured means of the overscan ``columns`` (e⁻).
    n_prescan, n_data : `int`
        Serial geometry of the amplifier.
    columns : sequence of `int`
        0-based overscan columns measured.
    fit_error : `float`
        Error of one column mean (e⁻; cp_pipe ``fitError``), for the reported chi-square.
    fit_trap, fit_local_offset : `bool`
        Free the trap / local-offset parameters (else fixed at 0).

    Returns
    -------
    result : `~pipeline.struct.Struct`
        ``globalCti``, ``trapSize`` (e⁻), ``emissionTime`` (transfers), ``scaling``,
        ``driftScale``, ``decayTime`` (pixels), ``chi2`` (reduced), ``success``.

    Raises
    ------
    ValueError
        If there are fewer exposures than free parameters.
    """
    from scipy.optimize import least_squares

    s = np.asarray(signals, float)
    o = np.asarray(overscans, float)
    # parameters: log10 cti, trap size, log10 emission time, log10 scaling, drift scale x1e4, log10 decay
    x0 = np.array([-6.0, 5.0, 0.0, -1.0, 1.0, math.log10(2.4)])
    lo = np.array([-12.0, 0.0, -1.0, -4.0, 0.0, -1.0])
    hi = np.array([-3.0, 1e4, 1.0, 0.0, 10.0, math.log10(4.0)])
    free = np.array([True, fit_trap, fit_trap, fit_trap, fit_local_offset, fit_local_offset])
    if not fit_trap:
        x0[1] = 0.0
    if not fit_local_offset:
        x0[4] = 0.0
    if s.size * o.shape[1] <= free.sum():
        raise ValueError(
            f"{s.size} exposure(s) x {o.shape[1]} column(s) cannot constrain {int(free.sum())} parameters"
        )

    def unpack(p: np.ndarray) -> dict[str, float]:
        full = x0.copy()
        full[free] = p
        return {
            "global_cti": 10.0 ** full[0],
            "trap_size": float(full[1]),
            "emission_time": 10.0 ** full[2],
            "scaling": 10.0 ** full[3],
            "drift_scale": full[4] * 1e-4,
            "decay_time": 10.0 ** full[5],
        }

    def resid(p: np.ndarray) -> np.ndarray:
        model = model_overscan(s, n_prescan, n_data, columns, **unpack(p))
        return ((model - o) / fit_error).ravel()

    # a coarse start for the CTI from the first column (EPER), the trap from the second
    eper = np.nanmedian(o[:, 0] / (max(n_prescan + n_data, 1) * np.where(s > 0, s, np.nan)))
    if np.isfinite(eper) and eper > 0:
        x0[0] = float(np.clip(math.log10(eper), lo[0], hi[0]))
    best = None
    for size0 in (5.0, 50.0) if fit_trap else (0.0,):
        start = x0.copy()
        start[1] = size0
        p0 = start[free]
        r = least_squares(resid, p0, bounds=(lo[free], hi[free]), x_scale="jac", max_nfev=400)
        if best is None or r.cost < best.cost:
            best = r
    assert best is not None
    pars = unpack(best.x)
    dof = max(o.size - int(free.sum()), 1)
    return Struct(
        globalCti=pars["global_cti"],
        trapSize=pars["trap_size"],
        emissionTime=pars["emission_time"],
        scaling=pars["scaling"],
        driftScale=pars["drift_scale"],
        decayTime=pars["decay_time"],
        chi2=float(2.0 * best.cost / dof),
        success=bool(best.success),
    )
