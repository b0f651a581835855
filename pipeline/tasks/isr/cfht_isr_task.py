"""`CfhtIsrTask`: IsrTask for CFHT MegaCam (obs_cfht ``cfhtIsrTask.py``, reference-algorithms §6.2).

Differences from `IsrTask`:

* the saturation level is estimated from the pixels (the header ``SATURATE`` is unreliable): if
  the raw maximum exceeds 60000 ADU the raw values in ``[60000, max + 1]`` are histogrammed in
  100 bins and the level is ``int(safe × left edge of the most populated bin)``; otherwise the
  header ``SATURATE`` (65535 if absent). The level is applied to both amplifiers;
* per-amp gain from ``GAINA``/``GAINB`` and read noise from ``RDNOISEA``/``RDNOISEB`` (replaced by
  ``RDNOISE`` when above 60000, as old files store 65535);
* a brighter-fatter kernel is refused (ValueError).

MegaCam's config overrides live in ``pipeline/instruments/megacam/isr.yaml``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.config import Field
from pipeline.struct import Struct

from ._header import _hset
from .isr_task import IsrTask, IsrTaskConfig

__all__ = ["CfhtIsrTask", "CfhtIsrTaskConfig", "estimate_saturation"]

_HIST_LOW = 60000.0


class CfhtIsrTaskConfig(IsrTaskConfig):
    """`IsrTaskConfig` plus ``safe``."""

    safe: float = Field(0.95, description="Safety factor applied to the histogram saturation estimate.")


def estimate_saturation(image: np.ndarray, header_saturate: float = 65535.0, safe: float = 0.95) -> float:
    """Saturation level of a MegaCam raw from its pixel histogram.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Raw pixels (ADU).
    header_saturate : `float`
        Header ``SATURATE`` used when no pixel exceeds 60000 ADU.
    safe : `float`
        Safety factor.

    Returns
    -------
    saturation : `float`
        ``int(safe × left edge of the most populated of 100 bins over [60000, max + 1])`` if
        ``max > 60000``, else ``header_saturate`` (ADU).
    """
    vmax = float(np.max(image))
    if vmax <= _HIST_LOW:
        return float(header_saturate)
    vals = image[image >= _HIST_LOW]
    counts, edges = np.histogram(vals, bins=100, range=(_HIST_LOW, vmax + 1))
    return float(int(safe * edges[int(np.argmax(counts))]))


class CfhtIsrTask(IsrTask):
    """Instrument signature removal for MegaCam (2 amplifiers A, B per CCD)."""

    ConfigClass = CfhtIsrTaskConfig
    _DefaultName = "isr"

    def run(self, ccdExposure: Any, **kwargs: Any) -> Struct:
        """Rebuild the detector from the header and pixels, then run `IsrTask.run`.

        Parameters
        ----------
        ccdExposure : `pipeline.image.Exposure`
            MegaCam raw CCD (2 amps named A and B) with its header.
        **kwargs
            As `IsrTask.run`.

        Returns
        -------
        result : `pipeline.struct.Struct`
            As `IsrTask.run`.

        Raises
        ------
        ValueError
            If a brighter-fatter kernel is given or an amplifier is not named A or B.
        """
        if kwargs.get("bfKernel") is not None:
            raise ValueError(
                "CfhtIsrTask does not support a brighter-fatter kernel; set "
                "doBrighterFatter=False and pass no bfKernel"
            )
        exp = self.ensureExposure(ccdExposure, kwargs.get("camera"), kwargs.get("detectorNum"))
        md = exp.metadata
        det = exp.detector
        sat = estimate_saturation(exp.image, float(md.get("SATURATE", 65535.0)), self.config.safe)
        amps = []
        for amp in det:
            if amp.name not in ("A", "B"):
                raise ValueError(
                    f"MegaCam amplifiers must be named A and B, got {amp.name!r}; "
                    "use IsrTask for other cameras"
                )
            changes: dict[str, float] = {"saturation": sat}
            if f"GAIN{amp.name}" in md:
                changes["gain"] = float(md[f"GAIN{amp.name}"])
            if f"RDNOISE{amp.name}" in md:
                rn = float(md[f"RDNOISE{amp.name}"])
                if rn > 60000 and "RDNOISE" in md:
                    rn = float(md["RDNOISE"])
                changes["read_noise"] = rn
            amps.append(amp.replace(**changes))
        exp.detector = det.replace(amplifiers=tuple(amps))
        _hset(md, "LSST ISR CFHT SATURATION", sat)
        return super().run(exp, **kwargs)
