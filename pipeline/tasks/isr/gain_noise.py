"""Per-amplifier gains and read noise used by ISR, and the conversion to electrons.

The gain (e⁻/ADU) and read noise (e⁻) of each amplifier come from the camera, the PTC
(``usePtcGains`` / ``usePtcReadNoise``) or the overscan of the exposure itself
(``doEmpiricalReadNoise``), with the fallbacks of `isr_functions.effective_gain_noise`
(reference-algorithms §2.1 step 6).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.image import Box

from . import isr_functions as F  # noqa: N812

__all__ = ["PTC_NOISE_MIN_FRACTION", "GainNoise", "apply_amp_gains", "effective_gains_noises", "ptc_value"]

_log = logging.getLogger(__name__)

#: A PTC read noise below this fraction of the overscan noise measured in the exposure is treated
#: as a failed PTC fit (the overscan noise contains the read noise).
PTC_NOISE_MIN_FRACTION = 0.5


@dataclass(frozen=True)
class GainNoise:
    """Gains and read noise per amplifier, and where they came from.

    Attributes
    ----------
    gains : `dict` [`str`, `float`]
        e⁻/ADU per amp name.
    noises : `dict` [`str`, `float`]
        Read noise (e⁻) per amp name.
    gain_source, noise_source : `str`
        ``CAMERA``, ``PTC`` or ``OVERSCAN``.
    """

    gains: dict[str, float]
    noises: dict[str, float]
    gain_source: str
    noise_source: str


def ptc_value(ptc: Any, attr: str, amp: Any) -> float:
    """PTC ``gain`` / ``noise`` of one amp; an amp missing from the PTC gets the camera value.

    Raises
    ------
    RuntimeError
        If the PTC has no such attribute.
    """
    values = getattr(ptc, attr, None)
    if values is None:
        raise RuntimeError(f"the PTC has no {attr!r} attribute; provide a PhotonTransferCurveDataset")
    if amp.name not in values:
        fallback = amp.gain if attr == "gain" else amp.read_noise
        _log.warning("PTC has no %s for amp %s; using the camera value %g", attr, amp.name, fallback)
        return float(fallback)
    return float(values[amp.name])


def effective_gains_noises(
    detector: Any,
    ptc: Any,
    overscan_sigmas: Mapping[str, float],
    *,
    use_ptc_gains: bool,
    use_ptc_read_noise: bool,
    empirical_read_noise: bool,
) -> GainNoise:
    """Gain and read noise of every amplifier of ``detector``.

    Parameters
    ----------
    detector : `pipeline.image.Detector`
        Camera gains and read noise.
    ptc : `PhotonTransferCurveDataset` or `None`
        Per-amp ``gain`` / ``noise``.
    overscan_sigmas : mapping [`str`, `float`]
        Clipped stdev of each amp's corrected serial overscan (ADU).
    use_ptc_gains, use_ptc_read_noise, empirical_read_noise : `bool`
        The IsrTask switches (``empirical`` = overscan stdev × gain).

    Returns
    -------
    result : `GainNoise`

    Raises
    ------
    RuntimeError
        ``empirical_read_noise`` but an amp has no overscan result.

    Notes
    -----
    A PTC read noise that is not positive, or far below the noise measured in this very
    exposure's overscan (which contains the read noise), is a failed PTC fit, not a noiseless
    amp: the overscan value is used, else the camera's (reference QUIRK: it substitutes an
    arbitrary 1 e⁻ for a noise <= 0 and keeps tiny values). Likewise an empirical read noise of
    0 (an overscan of one constant value: saturated, or a dead amp) is no measurement: the
    camera's read noise is used.
    """
    gains: dict[str, float] = {}
    noises: dict[str, float] = {}
    gsrc = "PTC" if use_ptc_gains else "CAMERA"
    nsrc = "OVERSCAN" if empirical_read_noise else ("PTC" if use_ptc_read_noise else "CAMERA")
    for amp in detector:
        g = ptc_value(ptc, "gain", amp) if use_ptc_gains else amp.gain
        if empirical_read_noise:
            sigma = overscan_sigmas.get(amp.name)
            if sigma is None:
                raise RuntimeError(
                    f"doEmpiricalReadNoise needs the overscan of amp {amp.name!r}; enable doOverscan"
                )
            n = float(sigma) * (g if g > 0 else 1.0)
            if not n > 0:
                _log.warning(
                    "amp %s: its overscan has no noise (%.3g ADU: saturated or dead); using the "
                    "camera read noise %.3g e-",
                    amp.name,
                    float(sigma),
                    amp.read_noise,
                )
                n = amp.read_noise
        elif use_ptc_read_noise:
            n = ptc_value(ptc, "noise", amp)
            sigma = overscan_sigmas.get(amp.name)
            empirical = float(sigma) * (g if g > 0 else 1.0) if sigma is not None else float("nan")
            if not n > 0 or (empirical > 0 and n < PTC_NOISE_MIN_FRACTION * empirical):
                fb = empirical if empirical > 0 else amp.read_noise
                _log.warning(
                    "amp %s: PTC read noise %.3g e- is implausible (overscan noise %.3g e-); using %s "
                    "value %.3g e-",
                    amp.name,
                    n,
                    empirical,
                    "the overscan" if empirical > 0 else "the camera",
                    fb,
                )
                n = fb
        else:
            n = amp.read_noise
        gains[amp.name], noises[amp.name] = F.effective_gain_noise(g, n, amp.name)
    return GainNoise(gains, noises, gsrc, nsrc)


def apply_amp_gains(
    image: np.ndarray,
    variance: np.ndarray,
    gains: Mapping[str, float],
    amp_boxes: Mapping[str, Box],
    normalize: bool = False,
) -> None:
    """Convert each amp region to electrons (``doApplyGains``), optionally equalising the amps.

    Parameters
    ----------
    image, variance : `numpy.ndarray`, shape ``(ny, nx)``
        Assembled planes (ADU, ADU²), changed in place to e⁻, e⁻².
    gains : mapping [`str`, `float`]
        e⁻/ADU per amp.
    amp_boxes : mapping [`str`, `pipeline.image.Box`]
        Each amp's region in ``image``.
    normalize : `bool`
        ``normalizeGains``: scale each amp's image so that its median (of the finite pixels of
        every 4th row and column) equals the median of the amp medians (the variance is not
        rescaled); amps without a finite, non-zero median are left unscaled.
    """
    for name, box in amp_boxes.items():
        F.apply_gains(image[box.slices], variance[box.slices], gains[name])
    if normalize:
        # NaN pixels (not yet interpolated) and amps without a finite median are left out
        meds = {name: _finite_median(image[box.slices][::4, ::4]) for name, box in amp_boxes.items()}
        good = [m for m in meds.values() if np.isfinite(m) and m != 0]
        if not good:
            return
        ref = float(np.median(good))
        for name, box in amp_boxes.items():
            if np.isfinite(meds[name]) and meds[name] != 0:
                image[box.slices] *= np.float32(ref / meds[name])


def _finite_median(values: np.ndarray) -> float:
    """Median of the finite values (NaN when there are none)."""
    v = values[np.isfinite(values)]
    return float(np.median(v)) if v.size else float("nan")
