"""Crosstalk measurement (pure numpy): pixel ratios per amplifier pair, clipped coefficients.

cp_pipe ``measureCrosstalk.py`` (``CrosstalkExtractTask.run``,
``CrosstalkSolveTask.measureCrosstalkCoefficients``), written from its description:

* **extract**: in an ISR-processed exposure (crosstalk not corrected, ADU), every pixel of a
  source amplifier at or above ``threshold`` that carries no bad mask bit is a crosstalk source;
  the target amplifier, re-oriented to the source's readout corner, gives one ratio
  ``(target - background) / source`` per such pixel and per target amp. The background is the
  3σ-clipped mean of the *target amplifier* without the bad and bright pixels and without the
  ghost positions of the other amplifiers' bright pixels (the ghosts below the clip raised it:
  coefficients came out 0.8e-6 low with 4 % of each amp in sources, 3.4e-6 low with 9 %);
  cp_pipe takes one median of the whole detector, which biases every ratio by the amp-to-amp
  level difference divided by the source level: 1e-4 for 5 ADU at 50k ADU when the amps have
  different gains).
* **solve**: the ratios of all exposures of a pair are combined: values with ``|r| >= 1``
  dropped, ``rejIter`` rounds of clipping at ``rejSigma`` around the median with
  ``sigma = 0.741 IQR`` (with ``fluxOrder = 1`` around the line through the medians of flux
  bins), the coefficient is the mean, its error the standard deviation times the
  clipped-normal correction, and it is significant when ``|c| > significanceLimit · err``
  (``/ sqrt(N)`` with ``doSignificanceScaling``).
  With ``fluxOrder = 1`` the ratio is fitted as ``c + c2 · S`` (``target = c S + c2 S²``), giving
  the quadratic coefficients IsrTask applies with ``doQuadraticCrosstalkCorrection`` (cp_pipe
  raises NotImplementedError there).

Indexing: the result is ``coeffs[source, target]`` as ip_isr's ``CrosstalkCalib`` and
`pipeline.tasks.isr.crosstalk` use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.image.statistics import clipped_stats
from pipeline.struct import Struct
from pipeline.tasks.isr.crosstalk import flip_to

__all__ = ["clipped_coefficient", "extract_ratios", "solve_coefficients", "std_clip_correction"]


def std_clip_correction(nsigma: float) -> float:
    """Factor that turns the standard deviation of a ``±nsigma``-clipped normal sample into sigma.

    ``1 / sqrt(1 - 2 n φ(n) / (Φ(n) - Φ(-n)))`` (cp_pipe ``sigmaClipCorrection``); 1 for
    ``nsigma <= 0`` or infinite.
    """
    n = float(nsigma)
    if not (n > 0) or math.isinf(n):
        return 1.0
    pdf = math.exp(-0.5 * n * n) / math.sqrt(2.0 * math.pi)
    frac = math.erf(n / math.sqrt(2.0))
    return 1.0 / math.sqrt(1.0 - 2.0 * n * pdf / frac)


def extract_ratios(
    image: np.ndarray,
    bad: np.ndarray,
    amps: Sequence[Any],
    boxes: Sequence[Any],
    threshold: float,
) -> Struct:
    """Pixel ratios of every target amplifier to every bright source-amplifier pixel.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        ISR-processed image (ADU), crosstalk not corrected.
    bad : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
        Pixels never used as sources nor in the background (``badMask`` planes).
    amps : sequence of `pipeline.image.Amplifier`
        Amplifiers (``name``, ``readout_corner``).
    boxes : sequence of `pipeline.image.Box`
        Each amplifier's region in ``image`` (equal shapes).
    threshold : `float`
        Minimum source pixel value (ADU).

    Returns
    -------
    result : `~pipeline.struct.Struct`
        ``ratios``: ``{target: {source: list of float}}`` (an empty list for target == source);
        ``fluxes``: ``{source: list of float}`` (the source pixel values, ADU, in the order of the
        ratios); ``background``: ``{amp: clipped mean}`` (ADU); ``nPixels``: ``{source: int}``.

    Raises
    ------
    ValueError
        If the amplifier regions differ in shape.
    """
    shapes = {tuple(b.shape) for b in boxes}
    if len(shapes) != 1:
        raise ValueError(f"crosstalk extraction needs equal-size amplifier regions, got {sorted(shapes)}")
    img = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(img)
    bright = (img >= threshold) & finite
    quiet = finite & ~bad & ~bright
    backgrounds = {}
    for amp, box in zip(amps, boxes):
        q = quiet[box.slices].copy()
        # leave out the ghost positions of every other amplifier's bright pixels: a ghost
        # fainter than the 3-sigma clip would otherwise raise the background of every ratio
        for s_amp, s_box in zip(amps, boxes):
            if s_amp.name != amp.name:
                q &= ~flip_to(bright[s_box.slices], str(s_amp.readout_corner), str(amp.readout_corner))
        mean = clipped_stats(img[box.slices], ~q, 3.0, 3)[0] if q.any() else 0.0
        backgrounds[amp.name] = float(mean) if mean == mean else 0.0
    ratios: dict[str, dict[str, list[float]]] = {a.name: {} for a in amps}
    fluxes: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for s_amp, s_box in zip(amps, boxes):
        src = img[s_box.slices]
        select = bright[s_box.slices] & ~bad[s_box.slices]
        flux = src[select]
        fluxes[s_amp.name] = flux.tolist()
        counts[s_amp.name] = int(select.sum())
        for t_amp, t_box in zip(amps, boxes):
            if t_amp.name == s_amp.name:
                ratios[t_amp.name][s_amp.name] = []
                continue
            tgt = flip_to(img[t_box.slices], str(t_amp.readout_corner), str(s_amp.readout_corner))
            bg = backgrounds[t_amp.name]
            ratios[t_amp.name][s_amp.name] = ((tgt[select] - bg) / flux).tolist()
    return Struct(ratios=ratios, fluxes=fluxes, background=backgrounds, nPixels=counts)


def _binned_median_line(flux: np.ndarray, values: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Robust line ``values ≈ a + b · flux``: a fit through the medians of ``n_bins`` flux-quantile bins.

    Parameters
    ----------
    flux, values : `numpy.ndarray`, shape ``(N,)``
        Source fluxes (ADU) and ratios, ``N >= n_bins``.

    Returns
    -------
    line : `numpy.ndarray`, shape ``(N,)``
        The line evaluated at ``flux``.
    """
    order = np.argsort(flux)
    bins = np.array_split(order, n_bins)
    fm = np.array([np.median(flux[b]) for b in bins])
    vm = np.array([np.median(values[b]) for b in bins])
    slope, icpt = np.polyfit(fm, vm, 1)
    return icpt + slope * flux


def clipped_coefficient(
    values: np.ndarray,
    fluxes: np.ndarray | None,
    *,
    rej_iter: int = 3,
    rej_sigma: float = 2.0,
    flux_order: int = 0,
    significance_limit: float = 3.0,
    significance_scaling: bool = True,
) -> Struct:
    """One crosstalk coefficient from its pixel ratios (cp_pipe ``measureCrosstalkCoefficients``).

    Parameters
    ----------
    values : `numpy.ndarray`, shape ``(N,)``
        Ratios target / source.
    fluxes : `numpy.ndarray`, shape ``(N,)``, optional
        Source pixel values (ADU); needed for ``flux_order = 1``.
    rej_iter, rej_sigma : `int`, `float`
        Clipping rounds and half-width (IQR-based sigma).
    flux_order : {0, 1}
        0: constant ratio; 1: ratio ``= c + c2 · flux``.
    significance_limit : `float`
        A coefficient is valid if ``|c| > significance_limit · err`` (``/ sqrt(N)`` with
        ``significance_scaling``).
    significance_scaling : `bool`
        Use the error of the mean.

    Returns
    -------
    result : `~pipeline.struct.Struct`
        ``coeff``, ``coeffSqr`` (0 unless ``flux_order = 1``; 1/ADU), ``err`` (standard deviation
        of the clipped ratios, corrected for the clipping), ``n``, ``valid``.

    Raises
    ------
    ValueError
        If ``flux_order`` is not 0 or 1, or 1 without fluxes of the same length.
    """
    v = np.asarray(values, dtype=np.float64)
    f = None if fluxes is None else np.asarray(fluxes, dtype=np.float64)
    if flux_order not in (0, 1):
        raise ValueError(f"fluxOrder must be 0 or 1, got {flux_order}")
    if flux_order == 1 and (f is None or f.shape != v.shape):
        raise ValueError("fluxOrder=1 needs the source fluxes (crosstalkFluxes) of every ratio")
    keep = np.isfinite(v) & (np.abs(v) < 1.0)
    v = v[keep]
    f = None if f is None else f[keep]
    for _ in range(max(int(rej_iter), 0)):
        if v.size == 0:
            break
        # clip around the median; with flux_order = 1 around the line through the medians of
        # flux bins: around one median the clip would cut the two ends of a sloped,
        # heteroscedastic ratio unevenly and bias the slope
        centre: Any = np.median(v)
        if flux_order == 1 and f is not None and v.size >= 20 and np.ptp(f) > 0:
            centre = _binned_median_line(f, v)
        r = v - centre
        lo, med, hi = np.percentile(r, [25.0, 50.0, 75.0])
        good = np.abs(r - med) < rej_sigma * 0.741 * (hi - lo)
        if good.all() or not good.any():
            break
        v = v[good]
        f = None if f is None else f[good]
    n = int(v.size)
    if n == 0:
        return Struct(coeff=float("nan"), coeffSqr=0.0, err=float("nan"), n=0, valid=False)
    c2 = 0.0
    if flux_order == 1 and n > 2 and f is not None and np.ptp(f) > 0:
        c2, c = np.polyfit(f, v, 1)
        resid = v - (c + c2 * f)
    else:
        c = float(np.mean(v))
        resid = v - c
    if n == 1:
        return Struct(coeff=float(c), coeffSqr=float(c2), err=float("nan"), n=1, valid=False)
    err = float(np.std(resid)) * std_clip_correction(rej_sigma)
    limit = significance_limit * err / (math.sqrt(n) if significance_scaling else 1.0)
    return Struct(coeff=float(c), coeffSqr=float(c2), err=err, n=n, valid=bool(abs(c) > limit))


def solve_coefficients(
    ratios: Sequence[Mapping[str, Mapping[str, Sequence[float]]]],
    fluxes: Sequence[Mapping[str, Sequence[float]]] | None,
    amp_names: Sequence[str],
    **kwargs: Any,
) -> Struct:
    """Combine the per-exposure ratios of one detector into the coefficient matrices.

    Parameters
    ----------
    ratios : sequence of ``{target: {source: ratios}}``
        One mapping per exposure (`extract_ratios` ``ratios``).
    fluxes : sequence of ``{source: fluxes}``, optional
        Matching source pixel values (needed for ``flux_order = 1``).
    amp_names : sequence of `str`
        Matrix order.
    **kwargs
        `clipped_coefficient` options.

    Returns
    -------
    result : `~pipeline.struct.Struct`
        ``coeffs``, ``coeffsSqr``, ``coeffErr``, ``coeffNum``, ``coeffValid``: arrays
        ``(n_amp, n_amp)`` indexed ``[source, target]`` (diagonal 0 / invalid).
    """
    n = len(amp_names)
    out = {k: np.zeros((n, n)) for k in ("coeffs", "coeffsSqr", "coeffErr")}
    num = np.zeros((n, n), dtype=np.int64)
    valid = np.zeros((n, n), dtype=bool)
    for i, src in enumerate(amp_names):
        for j, tgt in enumerate(amp_names):
            if i == j:
                continue
            vals: list[float] = []
            flx: list[float] = []
            for k, r in enumerate(ratios):
                part = list(r.get(tgt, {}).get(src, []))
                vals.extend(part)
                if fluxes is not None:
                    flx.extend(list(fluxes[k].get(src, []))[: len(part)])
            res = clipped_coefficient(
                np.asarray(vals), np.asarray(flx) if fluxes is not None else None, **kwargs
            )
            out["coeffs"][i, j] = res.coeff
            out["coeffsSqr"][i, j] = res.coeffSqr
            out["coeffErr"][i, j] = res.err
            num[i, j] = res.n
            valid[i, j] = res.valid
    return Struct(
        coeffs=out["coeffs"],
        coeffsSqr=out["coeffsSqr"],
        coeffErr=out["coeffErr"],
        coeffNum=num,
        coeffValid=valid,
    )
