"""Calibration verification statistics and tests (pure numpy): cp_verify's measurements.

Written from cp_verify's ``verifyStats.py``, ``verifyBias.py``, ``verifyDark.py``,
``verifyFlat.py``, ``verifyDefects.py`` and ``verifyPtc.py`` (DMTN-101 test numbers in the
docstrings). Every test returns `True` (pass) or `False` (fail); a group's ``SUCCESS`` is the
logical AND of its tests.

Decisions where ccdflow differs (each has a test):

* the bias/dark ``NOISE`` test compares with the read noise **in ADU** (the ISR's effective read
  noise divided by its gain); cp_verify compares the ADU noise with the camera's read noise in
  electrons;
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


def verify_flat_amp(stats: Mapping[str, float]) -> dict[str, bool]:
    """cp_verify flat amp test (DMTN-101 10.X): ``NOISE <= sqrt(MEAN)`` (scatter is Poissonian)."""
    mean, noise = stats["MEAN"], stats["NOISE"]
    out = {"NOISE": bool(mean > 0 and noise <= np.sqrt(mean))}
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


def verify_ptc_amp(
    gain: float,
    noise: float,
    turnoff: float,
    ref_gain: float,
    ref_noise: float,
    *,
    gain_threshold: float = 0.05,
    noise_threshold: float = 0.05,
    turnoff_threshold: float = 0.0,
) -> dict[str, bool]:
    """cp_verify PTC tests of one amplifier.

    Parameters
    ----------
    gain, noise, turnoff : `float`
        PTC gain (e⁻/ADU), read noise (e⁻), turnoff (ADU).
    ref_gain, ref_noise : `float`
        Reference values (previous calibration or the amplifier's independent measurement).
    gain_threshold, noise_threshold : `float`
        Allowed relative differences.
    turnoff_threshold : `float`
        Minimum turnoff (ADU).

    Returns
    -------
    tests : `dict`
        ``PTC_GAIN``, ``PTC_NOISE``, ``PTC_TURNOFF``, ``SUCCESS``.
    """
    out = {
        "PTC_GAIN": bool(ref_gain > 0 and abs(gain - ref_gain) / ref_gain <= gain_threshold),
        "PTC_NOISE": bool(ref_noise > 0 and abs(noise - ref_noise) / ref_noise <= noise_threshold),
        "PTC_TURNOFF": bool(turnoff == turnoff and turnoff >= turnoff_threshold),
    }
    out["SUCCESS"] = success(out)
    return out
