"""The per-step methods of LSST's ``IsrTask`` (ip_isr ``isrTask.py``), as a mixin of `IsrTask`.

Each method applies one step to an exposure through the pure function that implements it
(`masking`, `calib_apply`, `assembly`, `gain_noise`, `amp_statistics`, `binning`), for callers
that run single steps (cp_pipe tasks, notebooks) with LSST's names and signatures.
`IsrTask.run` orchestrates the same functions.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

from pipeline.image import Amplifier, Box, Detector, Exposure, MaskedImage
from pipeline.image.statistics import clipped_stats
from pipeline.struct import Struct

from . import isr_functions as F  # noqa: N812
from ._header import _hset
from .amp_statistics import background_levels
from .assembly import convert_int_to_float, writable_variance
from .binning import bin_planes
from .calib_apply import apply_dark, apply_flat, calib_metadata
from .calibs import Defects
from .gain_noise import ptc_value
from .masking import (
    interpolate_planes,
    mask_amplifier,
    mask_defects,
    mask_nan,
    mask_negative_variance,
    threshold_mask,
)

__all__ = ["IsrStepMethods"]


class IsrStepMethods:
    """LSST ``IsrTask`` step methods; needs ``config`` (`IsrTaskConfig`), ``log`` and ``metadata``.

    Methods that write task metadata (`maskNan`, `measureBackground`) do so for the caller;
    `IsrTask.run` keeps a run's items in its run state instead.
    """

    config: Any
    log: Any
    metadata: Any
    overscan: Any

    def ensureExposure(self, inputExp: Any, camera: Any = None, detectorNum: int | None = None) -> Exposure:
        """Wrap an array / MaskedImage into an Exposure and attach its detector.

        Without a detector (and no camera) the input is one amplifier without overscan with
        ``config.gain`` / ``readNoise`` / ``saturation`` (LSST: "to use if no Detector is present").

        Raises
        ------
        TypeError
            If the input cannot be turned into an exposure.
        RuntimeError
            If no detector is attached and ``camera``/``detectorNum`` cannot supply one.
        """
        if isinstance(inputExp, Exposure):
            exp = inputExp
        elif isinstance(inputExp, MaskedImage):
            exp = Exposure(inputExp)
        elif isinstance(inputExp, np.ndarray) and inputExp.ndim == 2:
            exp = Exposure(MaskedImage(inputExp))
        else:
            raise TypeError(
                f"IsrTask input must be an Exposure, MaskedImage or 2-D array, got {type(inputExp).__name__}"
            )
        if exp.detector is None:
            c = self.config
            if camera is not None and detectorNum is not None:
                exp.detector = camera[detectorNum]
            elif math.isfinite(c.gain):
                ny, nx = exp.masked_image.shape
                box = Box(0, 0, nx, ny)
                sat = c.saturation if math.isfinite(c.saturation) else float("inf")
                amp = Amplifier(
                    "A", gain=float(c.gain), read_noise=float(c.readNoise), saturation=sat,
                    bbox=box, raw_bbox=box, raw_data_bbox=box,
                )  # fmt: skip
                exp.detector = Detector(0, "detector", bbox=box, amplifiers=(amp,), raw_shape=(ny, nx))
            else:
                raise RuntimeError(
                    "The raw exposure has no detector; pass camera= and detectorNum= to "
                    "IsrTask.run (or read it with the instrument's RawFormatter), or set "
                    "config.gain (and readNoise) to process it as one amplifier without overscan"
                )
        return exp

    def convertIntToFloat(self, exposure: Exposure) -> Exposure:
        """Integer raw → float32 with variance 1 and mask 0 (`assembly.convert_int_to_float`)."""
        exposure.masked_image = convert_int_to_float(exposure.masked_image)[0]
        return exposure

    def compareCameraKeywords(self, exposureMetadata: Mapping[str, Any], calib: Any, calibName: str) -> None:
        """Compare ``cameraKeywordsToCompare`` between the exposure and a calibration.

        As ip_isr's ``isrFunctions.compareCameraKeywords``: a keyword is compared only when both
        headers have it; one missing from the exposure is skipped (debug log), those missing from
        the calibration are listed in one info log line ("not checked"), never as a mismatch.

        Raises
        ------
        RuntimeError
            On a mismatch when ``doRaiseOnCalibMismatch``; otherwise a warning and the header key
            ``LSST ISR <CALIB> SEQUENCER MISMATCH`` = True.
        """
        md = calib_metadata(calib)
        missing = []
        for key in self.config.cameraKeywordsToCompare:
            ev, cv = exposureMetadata.get(key), md.get(key)
            if ev is None:
                self.log.debug("camera keyword %s not in the exposure header; not checked", key)
                continue
            if cv is None:
                missing.append(key)
                continue
            if ev != cv:
                msg = (
                    f"{calibName} keyword {key}={cv!r} differs from the exposure's {key}={ev!r}; "
                    "use a calibration taken in the same camera state"
                )
                if self.config.doRaiseOnCalibMismatch:
                    raise RuntimeError(msg)
                self.log.warning(msg)
                if isinstance(exposureMetadata, MutableMapping):
                    _hset(exposureMetadata, f"LSST ISR {calibName.upper()} SEQUENCER MISMATCH", True)
        if missing:
            self.log.info("%s has no camera keyword(s) %s; not checked", calibName, ",".join(missing))

    @staticmethod
    def extractCalibDate(calib: Any) -> str:
        """Calibration date string from ``CALIBDATE`` / ``CALIB_CREATION_DATE`` ("Unknown" if absent)."""
        md = calib_metadata(calib)
        for key in ("CALIBDATE", "CALIB_CREATION_DATE", "CALIB_CREATE_DATE", "DATE"):
            if key in md and md[key]:
                val = str(md[key])
                if key == "CALIB_CREATION_DATE" and md.get("CALIB_CREATION_TIME"):
                    val += "T" + str(md["CALIB_CREATION_TIME"])
                return val
        return "Unknown"

    def doLinearize(self, detector: Any) -> bool:
        """Whether to linearize: ``config.doLinearize`` and amp 0's linearity type is not "None"."""
        return bool(
            self.config.doLinearize
            and detector is not None
            and len(detector)
            and detector[0].linearity_type not in ("None", "")
        )

    def _saturation(self, amp: Any) -> float:
        return self.config.saturation if math.isfinite(self.config.saturation) else amp.saturation

    def maskAmplifier(
        self, ccdExposure: Exposure, amp: Any, defects: Defects | None, dataMax: float | None = None
    ) -> bool:
        """Mask SAT/SUSPECT in the amp's raw box; return True if the amp is bad (§2.1 step 5a).

        ``dataMax`` is the NaN-ignoring maximum of the raw box (ADU) when already known
        (`masking.box_maxima`).
        """
        c = self.config
        res = mask_amplifier(
            ccdExposure.masked_image,
            amp,
            defects,
            saturation=self._saturation(amp) if c.doSaturation else None,
            saturated_plane=c.saturatedMaskName,
            suspect_plane=c.suspectMaskName if c.doSuspect else None,
            data_max=dataMax,
        )
        if res.saturation is not None:
            _hset(ccdExposure.metadata, f"LSST ISR SATURATION LEVEL {amp.name}", res.saturation)
        return res.bad

    def saturationDetection(self, exposure: Exposure, amp: Any) -> int:
        """Mask pixels ``>=`` the saturation level in ``amp.raw_data_bbox``; return the count."""
        box, plane = amp.raw_data_bbox, self.config.saturatedMaskName
        return threshold_mask(exposure.masked_image, box, self._saturation(amp), plane)

    def suspectDetection(self, exposure: Exposure, amp: Any) -> int:
        """Mask pixels ``>=`` ``amp.suspect_level`` (none if NaN) in the data box; return the count."""
        box, plane = amp.raw_data_bbox, self.config.suspectMaskName
        return threshold_mask(exposure.masked_image, box, amp.suspect_level, plane)

    def updateVariance(
        self, ampExposure: Exposure, amp: Any, overscanImage: Any = None, ptcDataset: Any = None
    ) -> None:
        """Set the variance (ADU²) of one amplifier's exposure from its gain and read noise.

        The read noise is the overscan's clipped stdev × gain with ``doEmpiricalReadNoise``,
        the PTC's with ``usePtcReadNoise``, else the amp's; the gain the PTC's with
        ``usePtcGains``, else the amp's.

        Raises
        ------
        RuntimeError
            If ``usePtcGains`` or ``usePtcReadNoise`` is set without ``ptcDataset``, or
            ``doEmpiricalReadNoise`` without ``overscanImage``.
        """
        c = self.config
        if (c.usePtcGains or c.usePtcReadNoise) and ptcDataset is None:
            raise RuntimeError("usePtcGains/usePtcReadNoise need ptcDataset; pass the PTC or set both False")
        gain = ptc_value(ptcDataset, "gain", amp) if c.usePtcGains else amp.gain
        if c.doEmpiricalReadNoise:
            if overscanImage is None:
                raise RuntimeError("doEmpiricalReadNoise needs overscanImage (the corrected overscan)")
            data = (
                overscanImage.image if isinstance(overscanImage, MaskedImage) else np.asarray(overscanImage)
            )
            noise = float(np.sqrt(clipped_stats(data)[1])) * (gain if gain > 0 else 1.0)
        elif c.usePtcReadNoise:
            noise = ptc_value(ptcDataset, "noise", amp)
        else:
            noise = amp.read_noise
        gain, noise = F.effective_gain_noise(gain, noise, amp.name)
        mi = ampExposure.masked_image
        F.update_variance(mi.image, writable_variance(mi), gain, noise)

    def debugView(self, exposure: Exposure, stepname: str) -> None:
        """Log the state of the exposure at a processing step (no display backend here)."""
        self.log.debug("ISR step %s: exposure %s", stepname, exposure)

    def overscanCorrection(self, ccdExposure: Exposure, amp: Any) -> Struct:
        """Apply overscan correction in place (delegates to the ``overscan`` subtask)."""
        return self.overscan.run(ccdExposure, amp)

    def darkCorrection(self, exposure: Exposure, darkExposure: Any, invert: bool = False) -> None:
        """Subtract the dark scaled by the dark-time ratio (`calib_apply.apply_dark`)."""
        apply_dark(exposure, darkExposure, invert)

    def flatCorrection(self, exposure: Exposure, flatExposure: Any, invert: bool = False) -> None:
        """Divide by the flat; non-positive / non-finite flat pixels get BAD (`calib_apply.apply_flat`)."""
        apply_flat(exposure, flatExposure, self.config.flatScalingType, self.config.flatUserScale, invert)

    @contextlib.contextmanager
    def flatContext(self, exp: Exposure, flat: Any, dark: Any = None) -> Iterator[Exposure]:
        """Temporarily apply dark and flat (if configured), undoing them on exit."""
        if self.config.doDark and dark is not None:
            self.darkCorrection(exp, dark)
        if self.config.doFlat and flat is not None:
            self.flatCorrection(exp, flat)
        try:
            yield exp
        finally:
            if self.config.doFlat and flat is not None:
                self.flatCorrection(exp, flat, invert=True)
            if self.config.doDark and dark is not None:
                self.darkCorrection(exp, dark, invert=True)

    def maskNan(self, exposure: Exposure) -> int:
        """OR UNMASKEDNAN onto every non-finite image or variance pixel; return the count."""
        n = mask_nan(exposure.masked_image)
        self.metadata["NUMNANS"] = n
        return n

    def maskDefect(self, exposure: Exposure, defectBaseList: Any) -> None:
        """OR BAD onto the defect boxes (assembled detector coordinates)."""
        mask_defects(exposure.masked_image, defectBaseList)

    def maskEdges(
        self, exposure: Exposure, numEdgePixels: int = 0, maskPlane: str = "SUSPECT", level: str = "DETECTOR"
    ) -> None:
        """Mask pixels within ``numEdgePixels`` of the detector (or each amp) border."""
        if numEdgePixels <= 0:
            return
        bit = exposure.masked_image.get_plane_bitmask(maskPlane, add=True)
        boxes = None if level == "DETECTOR" else [a.bbox for a in exposure.detector]
        F.mask_edges(exposure.mask, numEdgePixels, bit, boxes)

    def maskNegativeVariance(self, exposure: Exposure) -> None:
        """OR ``negativeVarianceMaskName`` onto pixels with variance <= 0."""
        mask_negative_variance(exposure.masked_image, self.config.negativeVarianceMaskName)

    def saturationInterpolation(self, exposure: Exposure) -> None:
        """Interpolate over SAT (grown by growSaturationFootprintSize)."""
        self._interpolate(exposure, [self.config.saturatedMaskName])

    def maskAndInterpolateDefects(self, exposure: Exposure, defectBaseList: Any) -> None:
        """Mask defects BAD and interpolate over them."""
        self.maskDefect(exposure, defectBaseList)
        self._interpolate(exposure, ["BAD"])

    def maskAndInterpolateNan(self, exposure: Exposure) -> None:
        """Mask non-finite pixels UNMASKEDNAN and interpolate over them."""
        self.maskNan(exposure)
        self._interpolate(exposure, ["UNMASKEDNAN"])

    def _interpolate(self, exposure: Exposure, planes: list[str], coords: Any = None) -> Any:
        c = self.config
        return interpolate_planes(
            exposure.masked_image,
            planes,
            saturated_plane=c.saturatedMaskName,
            grow_saturation=c.growSaturationFootprintSize,
            coords=coords,
        )

    def roughZeroPoint(self, exposure: Exposure) -> None:
        """Attach ``photo_calib = {"fluxMag0": fluxMag0T1[filter] * exposure_time}`` (§2.1 step 29)."""
        exp_time = exposure.info.exposure_time
        if exp_time is None or not (exp_time > 0):
            self.log.info("exposure time is %r; no rough zero point", exp_time)
            return
        filt = exposure.info.physical_filter or self.config.fallbackFilterName
        f0 = self.config.fluxMag0T1.get(filt, self.config.defaultFluxMag0T1)
        exposure.photo_calib = {"fluxMag0": float(f0 * exp_time), "filter": filt}

    def measureBackground(self, exposure: Exposure, IsrQaConfig: Any = None) -> dict[str, float]:
        """Clipped background on a grid of ``qa.flatnessMesh{X,Y}`` cells (QA).

        Returns
        -------
        stats : `dict`
            ``BGMEAN`` and ``BGVAR`` of the cell levels (`amp_statistics.background_levels`),
            also written to the task metadata when ``qa.saveStats``.
        """
        qa = IsrQaConfig or self.config.qa
        stats = background_levels(
            exposure.masked_image, qa.flatnessMeshX, qa.flatnessMeshY, qa.flatnessClipSigma, qa.flatnessNIter
        )
        if qa.saveStats:
            self.metadata.update(stats)
        return stats

    def makeBinnedImages(self, exposure: Exposure) -> tuple[Exposure, Exposure]:
        """Exposures binned by ``binFactor1`` and ``binFactor2`` (mean, mask OR, var/b²)."""
        out = []
        for b in (self.config.binFactor1, self.config.binFactor2):
            i, m, v = bin_planes(exposure.image, exposure.mask, exposure.variance, b)
            out.append(
                Exposure(
                    MaskedImage(i, m, v, dict(exposure.masked_image.mask_planes), exposure.xy0),
                    metadata=exposure.metadata.copy(),
                    info=exposure.info,
                )
            )
        return out[0], out[1]
