"""Calibration verification statistics and tests (pure numpy): cp_verify's measurements.

Written from cp_verify's ``verifyStats.py``, ``verifyBias.py``, ``verifyDark.py``,
``verifyFlat.py``, ``verifyDefects.py`` and ``verifyPtc.py`` (DMTN-101 test numbers in the
docstrings). Every test returns `True` (pass) or `False` (fail); a group's ``SUCCESS`` is the
logical AND of its tests.

Decisions where ccdflow differs (each has a test):

* the bias/dark ``NOISE`` test compares with the read noise **in ADU** (the ISR's effective read
  noise divided by its gain); cp_verify compares the ADU noise with the camera's read noise in
  electrons;
* the flat ``NOISE`` test compares the noise with the ISR's propagated noise (the variance
  plane): ``NOISE_RATIO <= 1 + noiseThreshold`` (`verify_flat_amp`); cp_verify's
  ``NOISE <= sqrt(MEAN)`` fails good spectral flats and is loose by ``sqrt(gain)`` in ADU;
* the exposure-level flat ``SCATTER`` (detector-to-detector) is relative (std / mean of the
  detector means), as the per-detector one; cp_verify compares the absolute std (ADU) with 0.05.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.image.statistics import clipped_stats

__all__ = [
    "amp_statistics",
    "defect_statistics",
    "normalized_noise",
    "ptc_noise_scatter",
    "success",
    "verify_bias_amp",
    "verify_flat_amp",
    "verify_flat_detector",
    "verify_flat_exposure",
    "verify_defects_amp",
    "verify_ptc_amp",
]


def amp_statistics(
    image: np.ndarray,
    bad: np.ndarray | None = None,
    *,
    nsigma: float = 3.0,
    niter: int = 3,
    cr_sigma: float = 5.0,
) -> dict[str, float]:
    """Clipped level and noise of one amplifier, before and after cosmic-ray masking.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        The amplifier's ISR-processed pixels (ADU).
    bad : `numpy.ndarray` of `bool`, optional
        Excluded pixels (masked planes).
    nsigma, niter : `float`, `int`
        Clipping of the MEANCLIP / STDEVCLIP statistics.
    cr_sigma : `float`
        A pixel above ``mean + cr_sigma · noise`` is a cosmic-ray pixel (grown by one pixel).

    Returns
    -------
    stats : `dict`
        ``MEAN``, ``NOISE`` (clipped, ADU), ``CR_NOISE`` (clipped noise without the cosmic-ray
        pixels), ``N_CR`` (number of cosmic rays: connected groups of CR pixels), ``N_PIXELS``.
    """
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float64)
    excl = np.zeros(img.shape, bool) if bad is None else np.asarray(bad, bool)
    mean, var, n = clipped_stats(img, excl, nsigma, niter)
    noise = float(np.sqrt(var)) if var == var else float("nan")
    crs = np.zeros(img.shape, bool)
    if noise > 0:
        crs = (img > mean + cr_sigma * noise) & ~excl & np.isfinite(img)
    n_cr = int(ndimage.label(crs)[1]) if crs.any() else 0
    grown = ndimage.binary_dilation(crs, iterations=1) if crs.any() else crs
    _, cr_var, _ = clipped_stats(img, excl | grown, nsigma, niter)
    return {
        "MEAN": float(mean),
        "NOISE": noise,
        "CR_NOISE": float(np.sqrt(cr_var)) if cr_var == cr_var else float("nan"),
        "N_CR": n_cr,
        "N_PIXELS": int(n),
    }


def success(tests: Mapping[str, Any]) -> bool:
    """Logical AND of the boolean tests (``SUCCESS`` itself excluded)."""
    return bool(all(bool(v) for k, v in tests.items() if k != "SUCCESS"))


def verify_bias_amp(
    stats: Mapping[str, float],
    read_noise: float,
    *,
    noise_threshold: float = 0.05,
    cr_noise_threshold: float = 0.05,
    overscan_noise: float | None = None,
) -> dict[str, bool]:
    """cp_verify bias (and dark) tests of one amplifier.

    Parameters
    ----------
    stats : mapping
        `amp_statistics` of the residual (ADU).
    read_noise : `float`
        Read noise in ADU.
    noise_threshold, cr_noise_threshold : `float`
        Allowed relative excess of ``NOISE`` over the read noise, and relative difference of
        ``NOISE`` and ``CR_NOISE``.
    overscan_noise : `float`, optional
        Residual overscan noise (ADU) for ``READ_NOISE_CONSISTENT``.

    Returns
    -------
    tests : `dict`
        ``MEAN`` (DMTN-101 4.2: ``|MEAN| < NOISE``), ``NOISE`` (4.3:
        ``(NOISE - rn) / rn <= noise_threshold``), ``CR_NOISE`` (4.4:
        ``|NOISE - CR_NOISE| / CR_NOISE <= cr_noise_threshold``), ``READ_NOISE_CONSISTENT``
        (overscan noise within ``noise_threshold`` above the read noise; with ``overscan_noise``;
        informational: not in ``SUCCESS``, as in cp_verify), ``SUCCESS``.
    """
    mean, noise, cr_noise = stats["MEAN"], stats["NOISE"], stats["CR_NOISE"]
    out = {
        "MEAN": bool(abs(mean) < noise),
        "NOISE": bool(read_noise > 0 and (noise - read_noise) / read_noise <= noise_threshold),
        "CR_NOISE": bool(cr_noise > 0 and abs(noise - cr_noise) / cr_noise <= cr_noise_threshold),
    }
    out["SUCCESS"] = success(out)
    if overscan_noise is not None and overscan_noise == overscan_noise and read_noise > 0:
        # informational, not part of SUCCESS (as in cp_verify): a consistently failing value
        # means the nominal read noise needs re-measuring
        out["READ_NOISE_CONSISTENT"] = bool((overscan_noise - read_noise) / read_noise <= noise_threshold)
    return out


def normalized_noise(
    image: np.ndarray,
    variance: np.ndarray,
    bad: np.ndarray | None = None,
    *,
    nsigma: float = 3.0,
    niter: int = 3,
) -> float:
    """Noise of an amplifier in units of its propagated noise: clipped std of ``(x - mean) / sqrt(var)``.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        ISR-processed pixels (ADU).
    variance : `numpy.ndarray`, shape ``(ny, nx)``
        Their variance plane (ADU²: Poisson + read noise, divided by the flat with the flat's
        own variance added, as IsrTask's ``doVariance`` propagates it).
    bad : `numpy.ndarray` of `bool`, optional
        Excluded pixels.
    nsigma, niter : `float`, `int`
        Clipping of the mean and of the ratio's standard deviation.

    Returns
    -------
    ratio : `float`
        1 for pure propagated noise (0.987 after a 3σ clip); NaN without a usable variance.
    """
    img = np.asarray(image, dtype=np.float64)
    var = np.asarray(variance, dtype=np.float64)
    excl = np.zeros(img.shape, bool) if bad is None else np.asarray(bad, bool)
    excl = excl | ~(np.isfinite(var) & (var > 0)) | ~np.isfinite(img)
    if excl.all():
        return float("nan")
    mean, _, _ = clipped_stats(img, excl, nsigma, niter)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (img - mean) / np.sqrt(np.where(excl, 1.0, var))
    _, zvar, _ = clipped_stats(z, excl, nsigma, niter)
    return float(np.sqrt(zvar)) if zvar == zvar else float("nan")


def verify_flat_amp(stats: Mapping[str, float], noise_threshold: float = 0.05) -> dict[str, bool]:
    """cp_verify flat amp test (DMTN-101 10.X): the per-amp scatter is Poissonian.

    With ``NOISE_RATIO`` in ``stats`` (`normalized_noise`, ccdflow): ``NOISE_RATIO <= 1 +
    noise_threshold``; without it, cp_verify's ``NOISE <= sqrt(MEAN)``.

    cp_verify's ``sqrt(MEAN)`` (ADU) is the shot noise only under uniform illumination, and in
    electrons: in ADU it allows ``sqrt(gain)`` times the shot noise; and when the illumination
    varies across the amp (a spectrograph's dome flat: Kast blue amp A goes from ~400 to
    ~11000 ADU along the dispersion) the flat-fielded pixels all sit at the same level but keep
    the noise of their raw signal, far above ``sqrt(MEAN)`` although the flat is right. The ISR
    variance plane knows each pixel's expected noise, including the candidate flat's.

    Parameters
    ----------
    stats : mapping
        ``MEAN``, ``NOISE`` (ADU) and optionally ``NOISE_RATIO``.
    noise_threshold : `float`
        Allowed relative excess of ``NOISE_RATIO`` over 1.

    Returns
    -------
    tests : `dict`
        ``NOISE``, ``SUCCESS``.
    """
    ratio = stats.get("NOISE_RATIO")
    if ratio is not None and ratio == ratio:
        ok = ratio <= 1.0 + noise_threshold
    else:
        mean, noise = stats["MEAN"], stats["NOISE"]
        ok = mean > 0 and noise <= np.sqrt(mean)
    out = {"NOISE": bool(ok)}
    out["SUCCESS"] = success(out)
    return out


def verify_flat_detector(amp_means: Sequence[float], scatter_threshold: float = 0.05) -> tuple[dict, dict]:
    """Amp-to-amp flatness of one flat-fielded exposure (DMTN-101 10.Y).

    Returns
    -------
    stats : `dict`
        ``MEAN`` (mean of the amp means), ``SCATTER`` (their standard deviation), ADU.
    tests : `dict`
        ``SCATTER``: ``SCATTER / MEAN <= scatter_threshold``; ``SUCCESS``.
    """
    m = np.asarray(amp_means, float)
    m = m[np.isfinite(m)]
    mean = float(m.mean()) if m.size else float("nan")
    scatter = float(m.std()) if m.size else float("nan")
    tests = {"SCATTER": bool(mean > 0 and scatter / mean <= scatter_threshold)}
    tests["SUCCESS"] = success(tests)
    return {"MEAN": mean, "SCATTER": scatter}, tests


def verify_flat_exposure(det_means: Sequence[float], scatter_threshold: float = 0.05) -> tuple[dict, dict]:
    """Detector-to-detector flatness of one exposure (DMTN-101 10.Z), relative (module docstring)."""
    return verify_flat_detector(det_means, scatter_threshold)


def defect_statistics(
    image: np.ndarray,
    defect_mask: np.ndarray,
    bad: np.ndarray | None = None,
    *,
    nsigma: float = 3.0,
    outlier_sigma: float = 5.0,
) -> dict[str, float]:
    """Defect fraction and unmasked outliers of one amplifier (cp_verify ``verifyDefects``).

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        ISR-processed pixels (ADU) with the candidate defects applied.
    defect_mask : `numpy.ndarray` of `bool`
        Pixels covered by the defects.
    bad : `numpy.ndarray` of `bool`, optional
        Other excluded pixels.
    nsigma : `float`
        Clipping of the reference statistics.
    outlier_sigma : `float`
        ``|pixel - mean| > outlier_sigma · noise`` outside the defects is an outlier (cp_verify
        uses the pixels whose normal probability is below ``1 / N``; ``5σ`` is that for
        ``N ≈ 3.5e6``).

    Returns
    -------
    stats : `dict`
        ``DEFECT_PIXELS``, ``FRAC`` (defect pixels / amp pixels), ``STAT_OUTLIERS``,
        ``MEAN``, ``NOISE``.
    """
    img = np.asarray(image, dtype=np.float64)
    d = np.asarray(defect_mask, bool)
    excl = d if bad is None else (d | np.asarray(bad, bool))
    mean, var, _ = clipped_stats(img, excl, nsigma, 3)
    noise = float(np.sqrt(var)) if var == var else float("nan")
    outliers = (
        (np.abs(img - mean) > outlier_sigma * noise) & ~excl & np.isfinite(img)
        if noise > 0
        else ~excl & False
    )
    return {
        "DEFECT_PIXELS": int(d.sum()),
        "FRAC": float(d.sum()) / max(d.size, 1),
        "STAT_OUTLIERS": int(outliers.sum()),
        "MEAN": float(mean),
        "NOISE": noise,
    }


def verify_defects_amp(
    stats: Mapping[str, float], *, max_fraction: float = 0.05, max_outliers: int = 10
) -> dict[str, bool]:
    """Defect tests of one amplifier.

    ``FRACTION``: ``FRAC <= max_fraction`` (a reasonable share of the amp is masked);
    ``OUTLIERS``: ``STAT_OUTLIERS <= max_outliers`` (no bad pixel left unmasked); ``SUCCESS``.
    """
    out = {
        "FRACTION": bool(stats["FRAC"] <= max_fraction),
        "OUTLIERS": bool(stats["STAT_OUTLIERS"] <= max_outliers),
    }
    out["SUCCESS"] = success(out)
    return out


#: cp_verify's limit on the scatter of the per-pair overscan noise (``NOISE_SIGNAL_INDEPENDENCE``).
NOISE_SIGNAL_INDEPENDENCE_LIMIT = 1.25


def ptc_noise_scatter(noise_list: Sequence[float] | np.ndarray) -> float:
    """Scatter of a PTC's per-pair read noise (cp_verify's ``NOISE_SIGNAL_INDEPENDENCE`` statistic).

    cp_verify computes ``Σ (n_i - n̄)² / std(n) / N``, which is ``std(n)`` itself; it is computed
    here as that standard deviation.

    Parameters
    ----------
    noise_list : array-like, shape ``(n_pairs,)``
        Overscan read noise of each flat pair used in the fit (ADU; ``noiseList[expIdMask]``).

    Returns
    -------
    scatter : `float`
        ADU; NaN with fewer than two finite values.
    """
    n = np.asarray(noise_list, dtype=np.float64)
    n = n[np.isfinite(n)]
    return float(np.std(n)) if n.size >= 2 else float("nan")


def verify_ptc_amp(
    gain: float,
    noise: float,
    turnoff: float,
    ref_gain: float,
    ref_noise: float,
    *,
    noise_scatter: float | None = None,
    gain_threshold: float = 5.0,
    noise_threshold: float = 5.0,
    turnoff_threshold: float = 90000.0,
) -> dict[str, bool]:
    """cp_verify PTC tests of one amplifier (DMTN-101 16.1-16.3).

    Parameters
    ----------
    gain, noise, turnoff : `float`
        Candidate PTC gain (e⁻/ADU), read noise (e⁻) and turnoff (ADU).
    ref_gain, ref_noise : `float`
        Reference gain (e⁻/ADU) and read noise (e⁻): the previous certified calibration, else
        the camera's nominal values (cp_verify compares with the camera's, which LSST keeps at
        the last certified values).
    noise_scatter : `float`, optional
        `ptc_noise_scatter` of the per-pair noise (ADU); adds ``NOISE_SIGNAL_INDEPENDENCE``.
    gain_threshold, noise_threshold : `float`
        Largest relative difference, **percent** (cp_verify ``gainThreshold`` /
        ``noiseThreshold``, 5).
    turnoff_threshold : `float`
        Smallest turnoff, **e⁻** (cp_verify ``turnoffThreshold``, LSST's full-well requirement
        of 90000 e⁻); compared with ``turnoff · gain``.

    Returns
    -------
    tests : `dict`
        ``PTC_GAIN`` (``100 |gain - ref| / ref < gain_threshold``), ``PTC_NOISE`` (same for the
        noise), ``NOISE_SIGNAL_INDEPENDENCE`` (``noise_scatter < 1.25`` ADU; with
        ``noise_scatter``), ``PTC_TURNOFF`` (``turnoff · gain > turnoff_threshold``),
        ``SUCCESS``. A NaN value or reference fails its test.
    """

    def rel_pct(value: float, ref: float) -> float:
        return 100.0 * abs(value - ref) / ref if ref > 0 else float("nan")

    out = {
        "PTC_GAIN": bool(rel_pct(gain, ref_gain) < gain_threshold),
        "PTC_NOISE": bool(rel_pct(noise, ref_noise) < noise_threshold),
    }
    if noise_scatter is not None:
        out["NOISE_SIGNAL_INDEPENDENCE"] = bool(noise_scatter < NOISE_SIGNAL_INDEPENDENCE_LIMIT)
    out["PTC_TURNOFF"] = bool(turnoff * gain > turnoff_threshold)
    out["SUCCESS"] = success(out)
    return out
