"""`IsrTask`: instrument signature removal (classic LSST ``IsrTask``), thin glue over pure functions.

The steps run in the reference order (reference-algorithms §2.1), each behind its LSST config
switch with the LSST default. The math lives in `overscan`, `assembly`, `isr_functions`,
`linearize`, `crosstalk`, `brighter_fatter`, `fringe`, `binning` and `statistics`.

Header keywords written to the output exposure (all ``HIERARCH``; ``<amp>`` = amp name):

=============================================  ====================================================
``LSST ISR UNITS``                             ``adu`` (``electron`` after ``doApplyGains``)
``LSST ISR <STEP> APPLIED``                    `True`/`False` per step (OVERSCAN, ASSEMBLECCD, BIAS,
                                               VARIANCE, LINEARIZE, CROSSTALK, DEFECT, DARK, FLAT …)
``LSST ISR OVERSCAN SERIAL MEDIAN <amp>``      serial overscan level subtracted (ADU; also MEAN,
                                               STDEV of the fitted model)
``LSST ISR OVERSCAN RESIDUAL SERIAL STDEV``    clipped stdev of the overscan after subtraction
``<amp>``                                      (ADU; also MEAN, MEDIAN) = empirical read noise
``LSST ISR OVERSCAN PARALLEL ... <amp>``       the same for the parallel overscan when run
``LSST ISR GAIN <amp>``                        gain used (e⁻/ADU)
``LSST ISR READNOISE <amp>``                   read noise used (e⁻)
``LSST ISR GAIN SOURCE`` / ``NOISE SOURCE``    CAMERA, PTC or OVERSCAN
``LSST ISR SATURATION LEVEL <amp>``            saturation level used (ADU)
``LSST ISR LEVEL <amp>``                       final median − serial overscan median
``LSST ISR FINAL MEDIAN|MEAN|STDEV <amp>``     statistics of the processed amp (ADU)
``LSST ISR NSAT <amp>``, ``LSST ISR NBAD <amp>``  SAT / BAD pixel counts
``LSST CALIB DATE <CALIB>``                    calibration dates (``extractCalibDate``)
=============================================  ====================================================
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from astropy.io import fits

from pipeline.image import Box, Exposure, MaskedImage
from pipeline.struct import Struct
from pipeline.task import PipelineTask

from . import isr_functions as F  # noqa: N812
from ._header import _HeaderBuffer, _hset
from .assembly import assemble_plane, assemble_sparse_plane, assembled_detector
from .binning import bin_image, bin_planes
from .brighter_fatter import brighter_fatter_correction
from .calibs import BrighterFatterKernel, CrosstalkCalib, Defects, Linearizer
from .crosstalk import crosstalk_correct, crosstalk_correct_interchip
from .fringe import measure_fringes, solve_fringes, subtract_fringes
from .isr_config import (
    AssembleCcdConfig,
    CrosstalkConfig,
    FringeConfig,
    IsrQaConfig,
    IsrTaskConfig,
    IsrTaskConnections,
    VignetteConfig,
)
from .linearize import apply_linearity
from .overscan_task import OverscanCorrectionTask, OverscanCorrectionTaskConfig
from pipeline.image.statistics import clipped_stats

__all__ = [
    "AssembleCcdConfig",
    "CrosstalkConfig",
    "FringeConfig",
    "IsrQaConfig",
    "IsrTask",
    "IsrTaskConfig",
    "IsrTaskConnections",
    "OverscanCorrectionTask",
    "OverscanCorrectionTaskConfig",
    "VignetteConfig",
    "_hset",
]


# ============================================================================================
# The task
# ============================================================================================
#: A PTC read noise below this fraction of the overscan noise measured in the exposure is treated
#: as a failed PTC fit (the overscan noise contains the read noise).
PTC_NOISE_MIN_FRACTION = 0.5


def _calib_planes(calib: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    if isinstance(calib, Exposure):
        return calib.image, calib.mask, calib.variance
    if isinstance(calib, MaskedImage):
        return calib.image, calib.mask, calib.variance
    arr = np.asarray(calib, dtype=np.float32)
    return arr, None, None


def _calib_metadata(calib: Any) -> Mapping[str, Any]:
    md = getattr(calib, "metadata", None)
    return md if md is not None else {}


class IsrTask(PipelineTask):
    """Apply common instrument signature correction algorithms to a raw frame.

    See the module docstring for the header keywords written. Steps and order follow
    reference-algorithms §2.1; each reference QUIRK (§9) and the behaviour chosen is documented
    in the function implementing the step.

    Notes
    -----
    Reference quirks and the intended behaviour implemented here (each has a test):

    * ``overscanIsInt=True`` per-row fits use the afw tie-aware integer median
      (`statistics.integer_median`), not numpy's median.
    * Crosstalk coefficients are ``coeffs[source, target]`` (`crosstalk.crosstalk_correct`).
    * ``setBadRegions`` honours ``badStatistic`` (default MEANCLIP); the reference always used
      MEDIAN (`isr_functions.set_bad_regions`).
    * A read noise of 0 from the camera stays 0 (the reference turned it into 1 e⁻); NaN or
      negative values become 1 e⁻ (`isr_functions.effective_gain_noise`). A PTC read noise ≤ 0
      or below half the exposure's overscan noise is treated as a failed PTC fit and replaced
      by the overscan noise.
    * A spline overscan fit with ``order < 5`` bins is refused by the config instead of silently
      becoming a constant (`overscan.fit_overscan`).
    * A lookup-table row index equal to the number of rows raises a clear RuntimeError
      (`linearize.linearize_lookup_table`); ``brighterFatterMaxIter=1`` returns a defined
      difference of 0 (`brighter_fatter.brighter_fatter_correction`).

    Deviations and additions:

    * Deferred charge (``doDeferredCharge``, subtask ``deferredChargeCorrection``,
      `deferred_charge_task.DeferredChargeTask`): the serial CTI model of Snyder et al. 2021
      (local offset drift, global CTI, linear/logistic serial traps) is removed per amp in
      readout order from the overscan-corrected raw, estimated from the observed image with
      ``nPixelOffsetCorrection`` / ``nPixelTrapCorrection`` pixels (LSST approach). The
      calibration is a `deferred_charge.DeferredChargeCalib` (dataset ``cpCtiCalib``). The
      serial prescan is not overscan-corrected: use ``zeroUnusedPixels`` when it holds the
      pedestal, otherwise the traps see it as charge.
    * ``brighterFatterLevel='AMP'`` (LSST raises NotImplementedError): per-amp kernels
      (`BrighterFatterKernel.ampKernels` or a mapping amp → kernel) and per-amp gains, each
      amp corrected on its region plus a margin, so identical kernels give the DETECTOR
      result; the convergence threshold is scaled by the amp's share of the detector area.
      At DETECTOR level a calibration with only amp kernels uses their mean.
    * Inter-chip crosstalk (``crosstalkSources``, ``CrosstalkCalib.interChip``) is applied in
      the assembled frame only (not with ``doCrosstalkBeforeAssemble``); vignetting is a
      circle in detector pixels.
    * Without a detector (and no camera) the input is one amplifier with ``config.gain`` /
      ``config.readNoise`` (the LSST meaning of those fields).
    * Per-amp ``FINAL MEAN/MEDIAN/STDEV`` are computed on a deterministic strided subsample
      (about 8k good pixels per amp, SAT/BAD/NO_DATA/UNMASKEDNAN excluded); LSST uses every
      pixel of the amp. SAT/BAD counts are exact.

    Performance (same numbers as the step-by-step computation, each checked by a test in
    ``tests/isr/test_fast_paths.py``): the overscan level is subtracted while assembling;
    bias, variance, negative-variance and NaN checks and the pixel-wise linearity run in one
    pass per amp and block of rows; dark and flat run in one blocked pass; the float32 raw
    buffer becomes the variance plane; the mask is assembled sparsely; one sparse inventory of
    flagged pixels serves setBadRegions, interpolation and the statistics; integer overscan
    statistics use exact histograms.
    """

    ConfigClass = IsrTaskConfig
    _DefaultName = "isr"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._variance_replaced = False
        self._owned_raw: np.ndarray | None = None
        self._nan_free = False
        self.makeSubtask("overscan")
        self.makeSubtask("ampOffset")
        self.makeSubtask("deferredChargeCorrection")

    # -------------------------------------------------------------------- helpers (LSST names)
    def ensureExposure(self, inputExp: Any, camera: Any = None, detectorNum: int | None = None) -> Exposure:
        """Wrap an array / MaskedImage into an Exposure and attach its detector.

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
            if camera is not None and detectorNum is not None:
                exp.detector = camera[detectorNum]
            elif math.isfinite(self.config.gain):
                exp.detector = self._single_amp_detector(exp.masked_image.shape)
            else:
                raise RuntimeError(
                    "The raw exposure has no detector; pass camera= and detectorNum= to "
                    "IsrTask.run (or read it with the instrument's RawFormatter), or set "
                    "config.gain (and readNoise) to process it as one amplifier without overscan"
                )
        return exp

    def _single_amp_detector(self, shape: tuple[int, int]) -> Any:
        """One amplifier covering the image (no overscan), gain/read noise from the config.

        LSST ``IsrTaskConfig.gain`` / ``readNoise``: "to use if no Detector is present".
        Saturation masking uses ``config.saturation`` (none if NaN).
        """
        from pipeline.image import Amplifier, Detector

        ny, nx = shape
        box = Box(0, 0, nx, ny)
        sat = self.config.saturation if math.isfinite(self.config.saturation) else float("inf")
        amp = Amplifier(
            "A",
            gain=float(self.config.gain),
            read_noise=float(self.config.readNoise),
            saturation=sat,
            bbox=box,
            raw_bbox=box,
            raw_data_bbox=box,
        )
        return Detector(0, "detector", bbox=box, amplifiers=(amp,), raw_shape=(ny, nx))

    def convertIntToFloat(self, exposure: Exposure) -> Exposure:
        """Integer raw → float32 with variance 1 and mask 0 (no-op for float input)."""
        mi = exposure.masked_image
        if np.issubdtype(mi.image.dtype, np.floating):
            if mi.image.dtype != np.float32:
                exposure.masked_image = MaskedImage(
                    mi.image.astype(np.float32), mi.mask, mi.variance, mi.mask_planes, mi.xy0
                )
            return exposure
        if not np.issubdtype(mi.image.dtype, np.integer):
            raise RuntimeError(f"cannot convert raw pixels of dtype {mi.image.dtype} to float")
        img = mi.image.astype(np.float32)
        self._owned_raw = img  # ours: its memory may be reused after assembly (`_assemble`)
        # Variance 1 everywhere: a read-only broadcast until a step writes to the raw variance
        # (see `_writable_variance`); assembly creates the real plane. Saves one full-size plane.
        exposure.masked_image = MaskedImage(
            img,
            np.zeros(img.shape, np.int32),
            np.broadcast_to(np.float32(1.0), img.shape),
            mi.mask_planes,
            mi.xy0,
        )
        return exposure

    @staticmethod
    def _writable_variance(exposure: Exposure) -> np.ndarray:
        """Materialise a broadcast (read-only) variance plane before writing to it."""
        mi = exposure.masked_image
        if not mi.variance.flags.writeable:
            mi.variance = np.array(mi.variance, dtype=np.float32)
        return mi.variance

    def compareCameraKeywords(self, exposureMetadata: Mapping[str, Any], calib: Any, calibName: str) -> None:
        """Compare ``cameraKeywordsToCompare`` between the exposure and a calibration.

        Raises
        ------
        RuntimeError
            On a mismatch when ``doRaiseOnCalibMismatch``; otherwise a warning and the header key
            ``LSST ISR <CALIB> SEQUENCER MISMATCH`` = True.
        """
        md = _calib_metadata(calib)
        for key in self.config.cameraKeywordsToCompare:
            ev, cv = exposureMetadata.get(key), md.get(key)
            if ev != cv:
                msg = (
                    f"{calibName} keyword {key}={cv!r} differs from the exposure's {key}={ev!r}; "
                    "use a calibration taken in the same camera state"
                )
                if self.config.doRaiseOnCalibMismatch:
                    raise RuntimeError(msg)
                self.log.warning(msg)
                if isinstance(exposureMetadata, (fits.Header, _HeaderBuffer)):
                    _hset(exposureMetadata, f"LSST ISR {calibName.upper()} SEQUENCER MISMATCH", True)

    @staticmethod
    def extractCalibDate(calib: Any) -> str:
        """Calibration date string from ``CALIBDATE`` / ``CALIB_CREATION_DATE`` ("Unknown" if absent)."""
        md = _calib_metadata(calib)
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

    def maskAmplifier(self, ccdExposure: Exposure, amp: Any, defects: Defects | None) -> bool:
        """Mask SAT/SUSPECT in the amp's raw box; return True if the amp is bad (see §2.1 step 5a)."""
        c = self.config
        mi = ccdExposure.masked_image
        if defects is not None and defects.covers(amp.bbox):
            mi.mask[amp.raw_bbox.slices] |= np.int32(mi.get_plane_bitmask("BAD"))
            return True
        data = mi.image[amp.raw_bbox.slices]
        mask = mi.mask[amp.raw_bbox.slices]
        flagged = np.int32(0)
        levels = []
        if c.doSaturation:
            level = c.saturation if math.isfinite(c.saturation) else amp.saturation
            _hset(ccdExposure.metadata, f"LSST ISR SATURATION LEVEL {amp.name}", level)
            if math.isfinite(level):
                levels.append((level, c.saturatedMaskName))
        if c.doSuspect and math.isfinite(amp.suspect_level):
            levels.append((amp.suspect_level, c.suspectMaskName))
        # One reduction (NaN-ignoring maximum) decides whether any pixel reaches a level
        # (usually none) before building the full selection.
        dmax = float(np.fmax.reduce(data, axis=None)) if data.size and levels else float("nan")
        for level, plane in levels:
            sel = data >= level if dmax >= level else None
            if sel is not None and sel.any():
                bit = np.int32(mi.get_plane_bitmask(plane, add=True))
                mask[sel] |= bit
                flagged |= bit
            else:
                mi.add_mask_plane(plane)
        if flagged:
            dmask = mi.mask[amp.raw_data_bbox.slices]
            if np.all(dmask & flagged):
                mi.mask[amp.raw_bbox.slices] |= np.int32(mi.get_plane_bitmask("BAD"))
                return True
        return False

    def saturationDetection(self, exposure: Exposure, amp: Any) -> int:
        """Mask pixels ``>=`` the saturation level in the amp's data box as ``saturatedMaskName``.

        Parameters
        ----------
        exposure : `pipeline.image.Exposure`
            Raw (untrimmed) exposure; only ``amp.raw_data_bbox`` is processed.
        amp : `pipeline.image.Amplifier`
            Amplifier (``saturation``, overridden by ``config.saturation`` when finite).

        Returns
        -------
        n : `int`
            Number of pixels flagged.
        """
        level = self.config.saturation if math.isfinite(self.config.saturation) else amp.saturation
        return self._threshold_mask(exposure, amp.raw_data_bbox, level, self.config.saturatedMaskName)

    def suspectDetection(self, exposure: Exposure, amp: Any) -> int:
        """Mask pixels ``>=`` ``amp.suspect_level`` in the amp's data box as ``suspectMaskName``.

        A NaN suspect level masks nothing.

        Returns
        -------
        n : `int`
            Number of pixels flagged.
        """
        return self._threshold_mask(
            exposure, amp.raw_data_bbox, amp.suspect_level, self.config.suspectMaskName
        )

    @staticmethod
    def _threshold_mask(exposure: Exposure, box: Box, level: float, plane: str) -> int:
        mi = exposure.masked_image
        bit = np.int32(mi.get_plane_bitmask(plane, add=True))
        if not math.isfinite(level):
            return 0
        sel = F.make_threshold_mask(mi.image[box.slices], level)
        mi.mask[box.slices][sel] |= bit
        return int(np.count_nonzero(sel))

    def updateVariance(
        self, ampExposure: Exposure, amp: Any, overscanImage: Any = None, ptcDataset: Any = None
    ) -> None:
        """Set the variance plane of one amplifier's exposure from its gain and read noise.

        Parameters
        ----------
        ampExposure : `pipeline.image.Exposure`
            The amplifier's (trimmed) exposure in ADU; its variance is replaced (ADU²).
        amp : `pipeline.image.Amplifier`
            Gain (e⁻/ADU) and read noise (e⁻) unless taken from the PTC.
        overscanImage : `pipeline.image.MaskedImage` or `numpy.ndarray`, optional
            Overscan after correction; its clipped stdev × gain is the read noise when
            ``doEmpiricalReadNoise``.
        ptcDataset : `PhotonTransferCurveDataset`, optional
            Gains / read noise when ``usePtcGains`` / ``usePtcReadNoise``.

        Raises
        ------
        RuntimeError
            If ``usePtcGains`` or ``usePtcReadNoise`` is set without ``ptcDataset``, or
            ``doEmpiricalReadNoise`` without ``overscanImage``.
        """
        c = self.config
        if (c.usePtcGains or c.usePtcReadNoise) and ptcDataset is None:
            raise RuntimeError("usePtcGains/usePtcReadNoise need ptcDataset; pass the PTC or set both False")
        gain = self._ptc_value(ptcDataset, "gain", amp) if c.usePtcGains else amp.gain
        if c.doEmpiricalReadNoise:
            if overscanImage is None:
                raise RuntimeError("doEmpiricalReadNoise needs overscanImage (the corrected overscan)")
            data = (
                overscanImage.image if isinstance(overscanImage, MaskedImage) else np.asarray(overscanImage)
            )
            noise = float(np.sqrt(clipped_stats(data)[1])) * (gain if gain > 0 else 1.0)
        elif c.usePtcReadNoise:
            noise = self._ptc_value(ptcDataset, "noise", amp)
        else:
            noise = amp.read_noise
        gain, noise = F.effective_gain_noise(gain, noise, amp.name)
        mi = ampExposure.masked_image
        if not mi.variance.flags.writeable:
            mi.variance = np.array(mi.variance, dtype=np.float32)
        F.update_variance(mi.image, mi.variance, gain, noise)

    def debugView(self, exposure: Exposure, stepname: str) -> None:
        """Log the state of the exposure at a processing step (no display backend here)."""
        self.log.debug("ISR step %s: exposure %s", stepname, exposure)

    def overscanCorrection(self, ccdExposure: Exposure, amp: Any) -> Struct:
        """Apply overscan correction in place (delegates to the ``overscan`` subtask)."""
        return self.overscan.run(ccdExposure, amp)

    def darkCorrection(self, exposure: Exposure, darkExposure: Any, invert: bool = False) -> None:
        """Subtract the dark scaled by the dark-time ratio (see `isr_functions.dark_correction`)."""
        di, dm, dv = _calib_planes(darkExposure)
        dark_time = getattr(getattr(darkExposure, "info", None), "dark_time", None)
        F.dark_correction(
            exposure.image,
            exposure.mask,
            exposure.variance,
            di,
            self._conform(exposure, darkExposure, dm),
            dv,
            exposure.info.dark_time,
            dark_time,
            invert,
        )

    def _mask_bad_flat(self, exposure: Exposure, fi: np.ndarray) -> None:
        """OR BAD where the flat is not positive and finite (then set/interpolated as defects)."""
        # Two SIMD reductions instead of two full boolean temporaries when the flat is clean
        # (the usual case); NaN makes the comparison False and takes the masking path.
        if fi.size and fi.min() > 0 and fi.max() < np.inf:
            return
        good = fi > 0
        good &= fi < np.inf
        if not good.all():
            bit = np.int32(exposure.masked_image.get_plane_bitmask("BAD"))
            np.bitwise_or(exposure.mask, bit, out=exposure.mask, where=~good)

    def _dark_and_flat(self, exposure: Exposure, darkExposure: Any, flatExposure: Any) -> None:
        """`darkCorrection` then `flatCorrection` in one pass (`isr_functions.dark_flat_correction`)."""
        di, dm, dv = _calib_planes(darkExposure)
        fi, fm, fv = _calib_planes(flatExposure)
        _, _, flat_ok = F.dark_flat_correction(
            exposure.image,
            exposure.mask,
            exposure.variance,
            (di, self._conform(exposure, darkExposure, dm), dv),
            exposure.info.dark_time,
            getattr(getattr(darkExposure, "info", None), "dark_time", None),
            (fi, self._conform(exposure, flatExposure, fm), fv),
            self.config.flatScalingType,
            self.config.flatUserScale,
        )
        if not flat_ok:  # masking is independent of the arithmetic: done after, only if needed
            self._mask_bad_flat(exposure, fi)

    def flatCorrection(self, exposure: Exposure, flatExposure: Any, invert: bool = False) -> None:
        """Divide by the flat (see `isr_functions.flat_correction`).

        Pixels where the flat is not positive and finite get BAD (they are then set and
        interpolated like defects instead of leaving inf/NaN in the output).
        """
        fi, fm, fv = _calib_planes(flatExposure)
        if not invert:
            self._mask_bad_flat(exposure, fi)
        F.flat_correction(
            exposure.image,
            exposure.mask,
            exposure.variance,
            fi,
            self._conform(exposure, flatExposure, fm),
            fv,
            self.config.flatScalingType,
            self.config.flatUserScale,
            invert,
        )

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
        bad = F.mask_nans(exposure.image, exposure.variance)
        n = int(np.count_nonzero(bad))
        if n:
            bit = np.int32(exposure.masked_image.get_plane_bitmask("UNMASKEDNAN", add=True))
            np.bitwise_or(exposure.mask, bit, out=exposure.mask, where=bad)
        else:
            exposure.masked_image.add_mask_plane("UNMASKEDNAN")
        self.metadata["NUMNANS"] = n
        return n

    def maskDefect(self, exposure: Exposure, defectBaseList: Any) -> None:
        """OR BAD onto the defect boxes (assembled detector coordinates)."""
        boxes = defectBaseList.boxes if isinstance(defectBaseList, Defects) else list(defectBaseList)
        F.mask_boxes(exposure.mask, boxes, exposure.masked_image.get_plane_bitmask("BAD"))

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
        bad = F.mask_negative_variance(exposure.variance)
        bit = np.int32(
            exposure.masked_image.get_plane_bitmask(self.config.negativeVarianceMaskName, add=True)
        )
        if np.count_nonzero(bad):
            np.bitwise_or(exposure.mask, bit, out=exposure.mask, where=bad)

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
        """Clipped median background on a grid of ``qa.flatnessMesh{X,Y}`` cells (QA).

        Returns
        -------
        stats : `dict`
            ``BGMEAN`` and ``BGVAR`` of the cell levels, also written to the metadata.
        """
        qa = IsrQaConfig or self.config.qa
        img = exposure.image
        good = (
            exposure.mask
            & exposure.masked_image.get_plane_bitmask(
                [
                    p
                    for p in ("BAD", "SAT", "NO_DATA", "UNMASKEDNAN")
                    if p in exposure.masked_image.mask_planes
                ]
            )
        ) == 0
        levels = []
        for y in range(0, img.shape[0] - qa.flatnessMeshY + 1, qa.flatnessMeshY):
            for x in range(0, img.shape[1] - qa.flatnessMeshX + 1, qa.flatnessMeshX):
                sl = (slice(y, y + qa.flatnessMeshY), slice(x, x + qa.flatnessMeshX))
                levels.append(clipped_stats(img[sl], ~good[sl], qa.flatnessClipSigma, qa.flatnessNIter)[0])
        arr = np.array(levels, float)
        arr = arr[np.isfinite(arr)]
        stats = {
            "BGMEAN": float(arr.mean()) if arr.size else float("nan"),
            "BGVAR": float(arr.var()) if arr.size else float("nan"),
        }
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

    # ----------------------------------------------------------------------------- internals
    @staticmethod
    def _conform(exposure: Exposure, calib: Any, mask: np.ndarray | None) -> np.ndarray | None:
        # A calibration mask without any bit set is dropped: the read-only count is cheaper
        # than OR-ing a full plane of zeros into the exposure's mask.
        if mask is None or not np.count_nonzero(mask):
            return None
        if not isinstance(calib, (Exposure, MaskedImage)):
            return mask
        mi = calib.masked_image if isinstance(calib, Exposure) else calib
        return (
            exposure.masked_image._conformed_mask(mi)
            if mi.mask_planes != exposure.masked_image.mask_planes
            else mask
        )

    def _interpolate(
        self,
        exposure: Exposure,
        planes: list[str],
        coords: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> int:
        n, _, _ = self._interpolate_sparse(exposure, planes, coords)
        return n

    def _interpolate_sparse(
        self,
        exposure: Exposure,
        planes: list[str],
        coords: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """Interpolate over ``planes`` (SAT grown first); return the count and the pixels.

        ``coords`` = ``(ys, xs, values)`` from `isr_functions.flagged_pixels` with a superset
        of the planes' bits avoids a scan of the mask. Works on sparse coordinates and the
        mask plane itself (no full-image temporaries).
        """
        mi = exposure.masked_image
        empty = np.empty(0, np.intp)
        planes = [p for p in planes if p in mi.mask_planes]
        if not planes:
            return 0, empty, empty
        bits = np.int32(mi.get_plane_bitmask(planes))
        if coords is None:
            ys, xs, _ = F.flagged_pixels(mi.mask, bits)
        else:
            sel = (coords[2] & bits) != 0
            ys, xs = coords[0][sel], coords[1][sel]
        if ys.size == 0:
            return 0, empty, empty
        sat_name = self.config.saturatedMaskName
        grow = self.config.growSaturationFootprintSize
        if sat_name in planes and grow > 0:
            sat_bit = np.int32(mi.get_plane_bitmask(sat_name))
            is_sat = (mi.mask[ys, xs] & sat_bit) != 0
            if is_sat.any():
                sy, sx = ys[is_sat], xs[is_sat]
                ny, nx = mi.shape
                win = (
                    slice(max(int(sy.min()) - grow, 0), min(int(sy.max()) + 1 + grow, ny)),
                    slice(max(int(sx.min()) - grow, 0), min(int(sx.max()) + 1 + grow, nx)),
                )
                mwin = mi.mask[win]
                sat = (mwin & sat_bit) != 0
                new = F.grow_mask(sat, grow) & ~sat
                was_flagged = (mwin[new] & bits) != 0
                mwin[new] |= sat_bit
                wy, wx = np.nonzero(new)
                keep = ~was_flagged
                if keep.any():
                    ys = np.concatenate([ys, wy[keep] + win[0].start])
                    xs = np.concatenate([xs, wx[keep] + win[1].start])
                    order = np.lexsort((xs, ys))
                    ys, xs = ys[order], xs[order]
        n = F.interpolate_from_mask(mi.image, mi.mask, coords=(ys, xs), bits=int(bits))
        if n:
            mi.mask[ys, xs] |= np.int32(mi.get_plane_bitmask("INTRP"))
        return n, ys, xs

    def _effective_gain_noise(
        self, detector: Any, ptc: Any, overscans: dict[str, Struct]
    ) -> tuple[dict[str, float], dict[str, float], str, str]:
        c = self.config
        gains: dict[str, float] = {}
        noises: dict[str, float] = {}
        gsrc = "PTC" if c.usePtcGains else "CAMERA"
        nsrc = "OVERSCAN" if c.doEmpiricalReadNoise else ("PTC" if c.usePtcReadNoise else "CAMERA")
        for amp in detector:
            g = self._ptc_value(ptc, "gain", amp) if c.usePtcGains else amp.gain
            if c.doEmpiricalReadNoise:
                os = overscans.get(amp.name)
                if os is None:
                    raise RuntimeError(
                        f"doEmpiricalReadNoise needs the overscan of amp {amp.name!r}; enable doOverscan"
                    )
                g_ok = g if g > 0 else 1.0
                n = float(os.residualSigma) * g_ok
            elif c.usePtcReadNoise:
                n = self._ptc_value(ptc, "noise", amp)
                os = overscans.get(amp.name)
                g_ok = g if g > 0 else 1.0
                empirical = float(os.residualSigma) * g_ok if os is not None else float("nan")
                # A PTC noise that is not positive, or far below the noise measured in this very
                # exposure's overscan (which contains the read noise), is a failed PTC fit, not a
                # noiseless amp: use the overscan value, else the camera's (reference QUIRK: it
                # substitutes an arbitrary 1 e- for a noise <= 0 and keeps tiny values).
                if not n > 0 or (empirical > 0 and n < PTC_NOISE_MIN_FRACTION * empirical):
                    fb = empirical if empirical > 0 else amp.read_noise
                    self.log.warning(
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
        return gains, noises, gsrc, nsrc

    def _ptc_value(self, ptc: Any, attr: str, amp: Any) -> float:
        """PTC gain/noise of one amp; an amp missing from the PTC falls back to the camera value."""
        values = getattr(ptc, attr, None)
        if values is None:
            raise RuntimeError(f"the PTC has no {attr!r} attribute; provide a PhotonTransferCurveDataset")
        if amp.name not in values:
            fallback = amp.gain if attr == "gain" else amp.read_noise
            self.log.warning("PTC has no %s for amp %s; using the camera value %g", attr, amp.name, fallback)
            return float(fallback)
        return float(values[amp.name])

    def _validate_inputs(
        self,
        ccd: Exposure,
        *,
        bias: Any,
        dark: Any,
        flat: Any,
        defects: Any,
        linearizer: Any,
        bfKernel: Any,
        ptc: Any,
        crosstalk: Any,
        fringes: Any,
        strayLightData: Any,
        illumMaskedImage: Any,
        deferredChargeCalib: Any,
    ) -> None:
        c = self.config
        filt = ccd.info.physical_filter
        need = [
            (c.doBias, bias, "bias", "doBias"),
            (c.doDark, dark, "dark", "doDark"),
            (c.doFlat, flat, "flat", "doFlat"),
            (c.doDefect, defects, "defects", "doDefect"),
            (c.doBrighterFatter, bfKernel, "bfKernel (brighter-fatter kernel)", "doBrighterFatter"),
            (
                c.usePtcGains or c.usePtcReadNoise,
                ptc,
                "ptc (photon transfer curve)",
                "usePtcGains/usePtcReadNoise",
            ),
            (c.doStrayLight, strayLightData, "strayLightData", "doStrayLight"),
            (c.doDeferredCharge, deferredChargeCalib, "deferredChargeCalib", "doDeferredCharge"),
        ]
        if self.doLinearize(ccd.detector) and ccd.detector[0].linearity_type == "LookupTable":
            need.append((True, linearizer, "linearizer (lookup table)", "doLinearize"))
        if c.doCrosstalk and not c.crosstalk.useConfigCoefficients and ccd.detector.crosstalk is None:
            need.append((True, crosstalk, "crosstalk", "doCrosstalk"))
        if c.doFringe and filt in c.fringe.filters:
            need.append((True, fringes, "fringes", "doFringe"))
        if c.doIlluminationCorrection and filt in c.illumFilters:
            need.append((True, illumMaskedImage, "illumMaskedImage", "doIlluminationCorrection"))
        for on, value, what, switch in need:
            if on and value is None:
                raise RuntimeError(
                    f"IsrTask: {switch} is True but no {what} calibration was provided or "
                    f"found; certify one in an input CALIBRATION collection (butler "
                    f"certify-calibrations) / pass it to run(), or set {switch}=False"
                )

    # ----------------------------------------------------------------------------------- run
    def run(
        self,
        ccdExposure: Any,
        *,
        camera: Any = None,
        bias: Any = None,
        linearizer: Any = None,
        crosstalk: Any = None,
        crosstalkSources: Any = None,
        dark: Any = None,
        flat: Any = None,
        ptc: Any = None,
        bfKernel: Any = None,
        bfGains: Any = None,
        defects: Any = None,
        fringes: Any = None,
        opticsTransmission: Any = None,
        filterTransmission: Any = None,
        sensorTransmission: Any = None,
        atmosphereTransmission: Any = None,
        detectorNum: int | None = None,
        strayLightData: Any = None,
        illumMaskedImage: Any = None,
        deferredChargeCalib: Any = None,
    ) -> Struct:
        """Perform instrument signature removal on an exposure.

        Parameters
        ----------
        ccdExposure : `pipeline.image.Exposure`
            Raw, untrimmed exposure of one detector (integer or float pixels, ADU) with its
            ``detector`` attached; modified in place and returned.
        camera : `pipeline.image.Camera`, optional
            Used only when the exposure has no detector (with ``detectorNum``).
        bias, dark, flat : `pipeline.image.Exposure`, optional
            Assembled, trimmed calibration frames (ADU; dark for its ``info.dark_time``).
        linearizer : `Linearizer`, optional
            Overrides the camera's per-amp linearity (needed for LookupTable).
        crosstalk : `CrosstalkCalib`, optional
            Coefficients ``[source, target]`` (else ``detector.crosstalk``).
        crosstalkSources : list of `pipeline.image.Exposure`, optional
            Other detectors' overscan-corrected, assembled exposures; subtracted with
            ``crosstalk.interChip[source detector name]`` after the intra-chip correction.
        ptc : `PhotonTransferCurveDataset`, optional
            Per-amp ``gain`` / ``noise`` dicts (usePtcGains / usePtcReadNoise).
        bfKernel : `BrighterFatterKernel`, `numpy.ndarray` or mapping, optional
            Kernel ``[y, x]``; per-amp kernels (``BrighterFatterKernel.ampKernels`` or a mapping
            amp name → kernel) with ``brighterFatterLevel='AMP'``.
        bfGains : `dict`, optional
            Per-amp gains (e⁻/ADU) for the BF correction (default: the kernel's gains, else
            the effective gains).
        defects : `Defects` or list of boxes, optional
            Defects in assembled coordinates.
        fringes : `pipeline.struct.Struct` (``fringes``, ``seed``), `Exposure` or list, optional
            Fringe template(s).
        opticsTransmission, filterTransmission, sensorTransmission, atmosphereTransmission : optional
            Attached as ``exposure.transmission_curve`` (a dict) when doAttachTransmissionCurve.
        detectorNum : `int`, optional
            Detector id in ``camera``.
        strayLightData : `numpy.ndarray` or `Exposure`, optional
            Stray-light model subtracted when doStrayLight.
        illumMaskedImage : `MaskedImage`, optional
            Illumination correction.
        deferredChargeCalib : `DeferredChargeCalib`, optional
            Serial CTI parameters per amp (doDeferredCharge).

        Returns
        -------
        result : `pipeline.struct.Struct`
            ``exposure``/``outputExposure`` (the corrected exposure), ``ossThumb``,
            ``flattenedThumb`` (binned `numpy.ndarray` or `None`), ``outputStatistics`` (dict or
            `None`), ``preInterpExposure``, ``outputBin1Exposure``, ``outputBin2Exposure``.

        Raises
        ------
        RuntimeError
            A switch is on but its calibration is missing; calibration size mismatch; no
            detector; exposure dark time NaN with doDark.
        TypeError
            Input is not an exposure-like object.
        """
        ccd = self.ensureExposure(ccdExposure, camera, detectorNum)
        header = ccd.metadata
        buffer = _HeaderBuffer(header)
        ccd.metadata = buffer
        try:
            result = self._run(
                ccd,
                camera=camera,
                bias=bias,
                linearizer=linearizer,
                crosstalk=crosstalk,
                crosstalkSources=crosstalkSources,
                dark=dark,
                flat=flat,
                ptc=ptc,
                bfKernel=bfKernel,
                bfGains=bfGains,
                defects=defects,
                fringes=fringes,
                opticsTransmission=opticsTransmission,
                filterTransmission=filterTransmission,
                sensorTransmission=sensorTransmission,
                atmosphereTransmission=atmosphereTransmission,
                strayLightData=strayLightData,
                illumMaskedImage=illumMaskedImage,
                deferredChargeCalib=deferredChargeCalib,
            )
        finally:
            ccd.metadata = buffer.flush()
        for name in ("preInterpExposure", "outputBin1Exposure", "outputBin2Exposure"):
            other = getattr(result, name)
            if other is not None and isinstance(other.metadata, _HeaderBuffer):
                other.metadata = other.metadata.copy()
        return result

    def _run(
        self,
        ccd: Exposure,
        *,
        camera: Any,
        bias: Any,
        linearizer: Any,
        crosstalk: Any,
        crosstalkSources: Any,
        dark: Any,
        flat: Any,
        ptc: Any,
        bfKernel: Any,
        bfGains: Any,
        defects: Any,
        fringes: Any,
        opticsTransmission: Any,
        filterTransmission: Any,
        sensorTransmission: Any,
        atmosphereTransmission: Any,
        strayLightData: Any,
        illumMaskedImage: Any,
        deferredChargeCalib: Any,
    ) -> Struct:
        c = self.config
        det = ccd.detector
        self._variance_replaced = False
        self._owned_raw = None
        self._nan_free = False
        if isinstance(bfKernel, BrighterFatterKernel):
            bfGains = bfGains or bfKernel.gains or None
            if c.brighterFatterLevel == "DETECTOR" or not bfKernel.ampKernels:
                bfKernel = bfKernel.detector_kernel()
            else:
                bfKernel = bfKernel.ampKernels
        if isinstance(fringes, Struct):
            fringes = getattr(fringes, "fringes", None)
        self._validate_inputs(
            ccd,
            bias=bias,
            dark=dark,
            flat=flat,
            defects=defects,
            linearizer=linearizer,
            bfKernel=bfKernel,
            ptc=ptc,
            crosstalk=crosstalk,
            fringes=fringes,
            strayLightData=strayLightData,
            illumMaskedImage=illumMaskedImage,
            deferredChargeCalib=deferredChargeCalib,
        )
        if defects is not None and not isinstance(defects, Defects):
            defects = Defects(defects)
        md = ccd.metadata
        for name, calib in (
            ("bias", bias),
            ("dark", dark),
            ("flat", flat),
            ("defects", defects),
            ("linearizer", linearizer),
            ("crosstalk", crosstalk),
            ("ptc", ptc),
        ):
            if calib is not None:
                self.compareCameraKeywords(md, calib, name)
                _hset(md, f"LSST CALIB DATE {name.upper()}", self.extractCalibDate(calib))
        _hset(md, "LSST ISR UNITS", "adu")
        for step in (
            "OVERSCAN",
            "ASSEMBLECCD",
            "BIAS",
            "VARIANCE",
            "LINEARIZE",
            "CROSSTALK",
            "DEFECT",
            "DARK",
            "FLAT",
            "FRINGE",
            "BF",
            "STRAYLIGHT",
            "APPLYGAINS",
            "DEFERREDCHARGE",
        ):
            _hset(md, f"LSST ISR {step} APPLIED", False)

        # 2. int -> float
        if c.doConvertIntToFloat:
            self.convertIntToFloat(ccd)
        mi = ccd.masked_image
        for name in ("SAT", "SUSPECT", "BAD", "INTRP", "UNMASKEDNAN"):
            mi.add_mask_plane(name)
        # 3. bias before overscan (untrimmed bias)
        if c.doBias and c.doBiasBeforeOverscan:
            self._writable_variance(ccd)
            bi, bm, bv = _calib_planes(bias)
            F.bias_correction(mi.image, mi.mask, mi.variance, bi, bm, bv)
            _hset(md, "LSST ISR BIAS APPLIED", True)
        # 4. parallel-overscan bleed masking
        if c.doOverscan and c.overscan.doParallelOverscan:
            self._mask_parallel_bleeds(ccd)
        # 5. per amp: saturation/suspect, overscan
        overscans: dict[str, Struct] = {}
        bad_amps: list[str] = []
        # The overscan level is subtracted from the data while assembling (one pass less)
        # when nothing reads the raw data region in between.
        defer = bool(
            c.doAssembleCcd
            and c.assembleCcd.doTrim
            and not c.doDeferredCharge
            and not (c.doCrosstalk and c.doCrosstalkBeforeAssemble)
        )
        deferred: dict[str, Any] = {}
        for amp in det:
            if amp.raw_bbox.y1 > mi.shape[0] or amp.raw_bbox.x1 > mi.shape[1]:
                raise RuntimeError(
                    f"amplifier {amp.name!r} raw box {amp.raw_bbox} is outside the raw image "
                    f"{mi.shape}; the detector geometry does not match the raw"
                )
            if self.maskAmplifier(ccd, amp, defects):
                bad_amps.append(amp.name)
                continue
            if c.doOverscan:
                if amp.raw_serial_overscan_bbox.is_empty:
                    self.log.info("amp %s has no serial overscan; skipping overscan correction", amp.name)
                    continue
                res = self.overscan.run(ccd, amp, deferImage=defer)
                overscans[amp.name] = res
                if res.imageDeferred:
                    deferred[amp.name] = res.imageFit
                for key, val in (
                    ("SERIAL MEAN", res.overscanMean),
                    ("SERIAL MEDIAN", res.overscanMedian),
                    ("SERIAL STDEV", res.overscanSigma),
                    ("RESIDUAL SERIAL MEAN", res.residualMean),
                    ("RESIDUAL SERIAL MEDIAN", res.residualMedian),
                    ("RESIDUAL SERIAL STDEV", res.residualSigma),
                ):
                    _hset(md, f"LSST ISR OVERSCAN {key} {amp.name}", val)
                    self.metadata[f"LSST ISR OVERSCAN {key} {amp.name}"] = float(val)
                if res.parallel is not None:
                    p = res.parallel
                    for key, val in (
                        ("PARALLEL MEAN", p.overscanMean),
                        ("PARALLEL MEDIAN", p.overscanMedian),
                        ("PARALLEL STDEV", p.overscanSigma),
                        ("RESIDUAL PARALLEL MEAN", p.residualMean),
                        ("RESIDUAL PARALLEL MEDIAN", p.residualMedian),
                        ("RESIDUAL PARALLEL STDEV", p.residualSigma),
                    ):
                        _hset(md, f"LSST ISR OVERSCAN {key} {amp.name}", val)
        if c.doOverscan and overscans:
            _hset(md, "LSST ISR OVERSCAN APPLIED", True)
        # 6. effective gains / noise
        gains, noises, gsrc, nsrc = self._effective_gain_noise(det, ptc, overscans)
        for amp in det:
            _hset(md, f"LSST ISR GAIN {amp.name}", gains[amp.name])
            _hset(md, f"LSST ISR READNOISE {amp.name}", noises[amp.name])
            self.metadata[f"LSST ISR GAIN {amp.name}"] = gains[amp.name]
            self.metadata[f"LSST ISR READNOISE {amp.name}"] = noises[amp.name]
        _hset(md, "LSST ISR GAIN SOURCE", gsrc)
        _hset(md, "LSST ISR NOISE SOURCE", nsrc)
        # 7. deferred charge (CTI), raw amp segments in readout order
        if c.doDeferredCharge:
            self.deferredChargeCorrection.run(ccd, deferredChargeCalib, gains=gains)
            _hset(md, "LSST ISR DEFERREDCHARGE APPLIED", True)
        # 8. crosstalk before assembly
        if c.doCrosstalk and c.doCrosstalkBeforeAssemble:
            self._writable_variance(ccd)
            self._crosstalk(ccd, crosstalk, trimmed=False)
        # 9. assembly
        if c.doAssembleCcd:
            self._assemble(ccd, deferred)
            _hset(md, "LSST ISR ASSEMBLECCD APPLIED", True)
        self._writable_variance(ccd)
        mi = ccd.masked_image
        trimmed = c.doAssembleCcd and c.assembleCcd.doTrim
        amp_boxes = {a.name: (a.bbox if trimmed else a.raw_data_bbox) for a in ccd.detector}
        oss_thumb = bin_image(mi.image, c.qa.thumbnailBinning, np.float32) if c.qa.doThumbnailOss else None
        if c.doTrimToMatchCalib:
            ref = bias if bias is not None else (dark if dark is not None else flat)
            if ref is not None:
                self._trim_to_match(ccd, _calib_planes(ref)[0].shape)
                mi = ccd.masked_image
                amp_boxes = {a.name: (a.bbox if trimmed else a.raw_data_bbox) for a in ccd.detector}
        do_bias = c.doBias and not c.doBiasBeforeOverscan
        do_lin = bool(self.doLinearize(ccd.detector) or (c.doLinearize and linearizer is not None))
        if do_bias and c.doVariance and self._variance_replaced:
            # 10-12 fused: bias, variance (replaced) and linearity per amp and block of rows.
            self._bias_variance_linearity(
                ccd, bias, gains, noises, amp_boxes, linearizer if do_lin else False
            )
            _hset(md, "LSST ISR BIAS APPLIED", True)
            _hset(md, "LSST ISR VARIANCE APPLIED", True)
        else:
            # 10. bias
            if do_bias:
                bi, bm, bv = _calib_planes(bias)
                if c.doVariance and self._variance_replaced:
                    bv = None  # the variance plane is replaced in the next step (reference §2.6)
                F.bias_correction(mi.image, mi.mask, mi.variance, bi, self._conform(ccd, bias, bm), bv)
                _hset(md, "LSST ISR BIAS APPLIED", True)
            # 11. variance
            if c.doVariance:
                for amp in ccd.detector:
                    sl = amp_boxes[amp.name].slices
                    F.update_variance(mi.image[sl], mi.variance[sl], gains[amp.name], noises[amp.name])
                _hset(md, "LSST ISR VARIANCE APPLIED", True)
                if c.maskNegativeVariance:
                    self.maskNegativeVariance(ccd)
            # 12. linearity
            if do_lin:
                self._linearize(ccd, linearizer, amp_boxes)
        # 13. crosstalk
        if c.doCrosstalk and not c.doCrosstalkBeforeAssemble:
            self._crosstalk(ccd, crosstalk, trimmed=trimmed)
        if crosstalkSources:
            if c.doCrosstalk and not c.doCrosstalkBeforeAssemble and trimmed:
                self._interchip_crosstalk(ccd, crosstalk, crosstalkSources)
            else:
                self.log.warning(
                    "inter-chip crosstalk is applied to the assembled, trimmed image with "
                    "doCrosstalk=True and doCrosstalkBeforeAssemble=False; crosstalkSources ignored"
                )
        # 14. defects + edges
        if c.doDefect:
            self.maskDefect(ccd, defects)
            _hset(md, "LSST ISR DEFECT APPLIED", True)
        if c.numEdgeSuspect > 0:
            self.maskEdges(ccd, c.numEdgeSuspect, c.suspectMaskName, c.edgeMaskLevel)
        # 15. NaN masking (skipped when the fused steps 10-12 saw only finite planes and
        # nothing changed the image since)
        if c.doNanMasking:
            if self._nan_free and not c.doCrosstalk:
                mi.add_mask_plane("UNMASKEDNAN")
                self.metadata["NUMNANS"] = 0
            else:
                self.maskNan(ccd)
        # 16. saturation trails
        if c.doWidenSaturationTrails and c.saturatedMaskName in mi.mask_planes:
            bit = np.int32(mi.get_plane_bitmask(c.saturatedMaskName))
            sy = F.flagged_pixels(mi.mask, bit)[0]
            if sy.size:
                # Widening acts along rows only: process the band of rows holding SAT pixels.
                band = slice(int(sy[0]), int(sy[-1]) + 1)
                wide = F.widen_saturation_trails((mi.mask[band] & bit) != 0)
                np.bitwise_or(mi.mask[band], bit, out=mi.mask[band], where=wide)
        # 18. brighter-fatter
        if c.doBrighterFatter:
            self._brighter_fatter(ccd, bfKernel, {**gains, **(bfGains or {})}, dark, flat, amp_boxes)
            _hset(md, "LSST ISR BF APPLIED", True)
        # 19. dark (fused with 22. flat when nothing runs between them)
        filt = ccd.info.physical_filter
        do_fringe = c.doFringe and filt in c.fringe.filters and fringes is not None
        fused = c.doDark and c.doFlat and not c.doStrayLight and not (do_fringe and not c.fringeAfterFlat)
        if fused:
            self._dark_and_flat(ccd, dark, flat)
            _hset(md, "LSST ISR DARK APPLIED", True)
        elif c.doDark:
            self.darkCorrection(ccd, dark)
            _hset(md, "LSST ISR DARK APPLIED", True)
        # 20. fringe before flat
        if do_fringe and not c.fringeAfterFlat:
            self._fringe(ccd, fringes)
        # 21. stray light
        if c.doStrayLight:
            sl_img = _calib_planes(strayLightData)[0]
            mi.image -= sl_img.astype(np.float32, copy=False)
            _hset(md, "LSST ISR STRAYLIGHT APPLIED", True)
        # 22. flat
        if c.doFlat:
            if not fused:
                self.flatCorrection(ccd, flat)
            _hset(md, "LSST ISR FLAT APPLIED", True)
        # 23. gains
        if c.doApplyGains:
            for amp in ccd.detector:
                sl = amp_boxes[amp.name].slices
                F.apply_gains(mi.image[sl], mi.variance[sl], gains[amp.name])
            if c.normalizeGains:
                meds = {
                    a.name: float(np.median(mi.image[amp_boxes[a.name].slices][::4, ::4]))
                    for a in ccd.detector
                }
                ref = float(np.median(list(meds.values())))
                for amp in ccd.detector:
                    if meds[amp.name]:
                        mi.image[amp_boxes[amp.name].slices] *= np.float32(ref / meds[amp.name])
            _hset(md, "LSST ISR UNITS", "electron")
            _hset(md, "LSST ISR APPLYGAINS APPLIED", True)
        # 24. fringe after flat
        if do_fringe and c.fringeAfterFlat:
            self._fringe(ccd, fringes)
        # 25. vignette, transmission, illumination
        if c.doVignette:
            self._vignette(ccd)
        if c.doAttachTransmissionCurve:
            curves = {
                k: v
                for k, v, use in (
                    ("optics", opticsTransmission, c.doUseOpticsTransmission),
                    ("filter", filterTransmission, c.doUseFilterTransmission),
                    ("sensor", sensorTransmission, c.doUseSensorTransmission),
                    ("atmosphere", atmosphereTransmission, c.doUseAtmosphereTransmission),
                )
                if use and v is not None
            }
            ccd.transmission_curve = curves or None
        if c.doIlluminationCorrection and filt in c.illumFilters:
            ii, im_, iv = _calib_planes(illumMaskedImage)
            F.flat_correction(mi.image, mi.mask, mi.variance, ii, im_, iv, "USER", c.illumScale)
        flattened_thumb = (
            bin_image(mi.image, c.qa.thumbnailBinning, np.float32) if c.qa.doThumbnailFlattened else None
        )
        # 26. pre-interpolation copy
        pre_interp = ccd.copy() if c.doSaveInterpPixels else None
        # 27-28 (and the statistics): one sparse inventory of the flagged pixels instead of a
        # scan of the mask plane per step. Nothing between here and the statistics sets
        # SAT/BAD except the SAT growth of the interpolation, whose pixels are returned.
        do_stats = c.doStandardStatistics or c.doCalculateStatistics
        inventory = None
        if c.doSetBadRegions or c.doInterpolate or do_stats:
            planes = [p for p in ("BAD", "SAT", "INTRP", *c.interpolation_planes()) if p in mi.mask_planes]
            inventory = F.flagged_pixels(mi.mask, mi.get_plane_bitmask(planes))
        # 27. bad regions
        if c.doSetBadRegions:
            n, value = F.set_bad_regions(
                mi.image,
                mi.mask,
                mi.get_plane_bitmask("BAD"),
                mi.get_plane_bitmask("INTRP"),
                c.badStatistic,
                coords=inventory,
            )
            if n:
                self.log.info("set %d BAD pixels to %s = %g", n, c.badStatistic, value)
        # 28. interpolation
        interpolated = None
        if c.doInterpolate:
            _, iy, ix = self._interpolate_sparse(ccd, c.interpolation_planes(), coords=inventory)
            interpolated = (iy, ix)
        # 29. rough zero point
        self.roughZeroPoint(ccd)
        # 30. amp offset, background, statistics, binning
        if c.doAmpOffset:
            self.ampOffset.run(ccd)
        if c.doMeasureBackground:
            self.measureBackground(ccd)
        stats = None
        if do_stats:
            flagged = None
            if inventory is not None:
                nx = mi.shape[1]
                idx = inventory[0] * nx + inventory[1]
                if interpolated is not None and interpolated[0].size:
                    idx = np.union1d(idx, interpolated[0] * nx + interpolated[1])
                fy, fx = np.divmod(idx, nx)
                flagged = (fy, fx, mi.mask[fy, fx])
            stats = self._statistics(ccd, overscans, amp_boxes, flagged)
        bin1 = bin2 = None
        if c.doBinnedExposures:
            bin1, bin2 = self.makeBinnedImages(ccd)
        return Struct(
            exposure=ccd,
            outputExposure=ccd,
            ossThumb=oss_thumb,
            flattenedThumb=flattened_thumb,
            outputStatistics=stats if c.doCalculateStatistics else None,
            preInterpExposure=pre_interp,
            outputBin1Exposure=bin1,
            outputBin2Exposure=bin2,
        )

    # ------------------------------------------------------------------------- step helpers
    def _mask_parallel_bleeds(self, ccd: Exposure) -> None:
        oc = self.config.overscan
        mi = ccd.masked_image
        sat_bit = np.int32(mi.get_plane_bitmask("SAT"))
        union = None
        boxes = [
            a.raw_parallel_overscan_bbox for a in ccd.detector if not a.raw_parallel_overscan_bbox.is_empty
        ]
        if not boxes or len({b.shape for b in boxes}) != 1:
            return
        for b in boxes:
            sel = F.make_threshold_mask(
                mi.image[b.slices], oc.parallelOverscanMaskThreshold, oc.parallelOverscanMaskGrowSize
            )
            union = sel if union is None else (union | sel)
        if union is not None and union.any():
            for b in boxes:
                mi.mask[b.slices][union] |= sat_bit

    def _assemble(self, ccd: Exposure, levels: Mapping[str, Any] | None = None) -> None:
        c = self.config
        det = ccd.detector
        mi = ccd.masked_image
        trim = c.assembleCcd.doTrim
        planes = dict(mi.mask_planes)
        xy0 = mi.xy0
        img = assemble_plane(mi.image, det, trim=trim, dtype=np.float32, subtract=levels or None)
        raw_mask, raw_var = mi.mask, mi.variance
        # The float32 raw made by convertIntToFloat is ours and no longer needed: its memory
        # becomes the variance plane (a fresh plane costs more in page faults than the
        # arithmetic that fills it).
        spare = mi.image if mi.image is self._owned_raw else None
        self._owned_raw = None
        if spare is not None and not (spare.flags.c_contiguous and spare.size >= img.size):
            spare = None
        ccd.masked_image = None  # free the raw image plane before assembling the others
        del mi
        mask = assemble_sparse_plane(raw_mask, det, trim=trim, dtype=np.int32)
        del raw_mask
        covered = trim and sum(a.bbox.area for a in det) == det.bbox.area
        self._variance_replaced = bool(c.doVariance and covered)
        if self._variance_replaced:
            # Every pixel's variance is (re)computed by updateVariance right after bias
            # subtraction, so the assembled plane needs no initial values.
            var = (
                spare.reshape(-1)[: img.size].reshape(img.shape)
                if spare is not None
                else np.empty(img.shape, np.float32)
            )
        elif not raw_var.flags.writeable:  # untouched broadcast of 1.0 from convertIntToFloat
            if spare is not None:
                var = spare.reshape(-1)[: img.size].reshape(img.shape)
                var.fill(1.0)
            else:
                var = np.ones(img.shape, np.float32)
        else:
            var = assemble_plane(raw_var, det, trim=trim, dtype=np.float32, fill=1.0)
        del raw_var
        ccd.masked_image = MaskedImage(img, mask, var, planes, xy0)
        ccd.detector = assembled_detector(det, trim=trim)
        for key in ["DATASEC", "BIASSEC", "TRIMSEC", "GAIN", *c.assembleCcd.keysToRemove]:
            ccd.metadata.remove(key, ignore_missing=True, remove_all=True)

    def _trim_to_match(self, ccd: Exposure, shape: tuple[int, int]) -> None:
        ny, nx = ccd.shape
        dy, dx = ny - shape[0], nx - shape[1]
        if dy == 0 and dx == 0:
            return
        if dy != dx or dy % 2 or dy < 0:
            raise RuntimeError(
                f"cannot trim the raw {ccd.shape} symmetrically to the calibration {shape}; "
                "the size differences must be equal, even and non-negative"
            )
        n = dy // 2
        mi = ccd.masked_image
        sl = (slice(n, ny - n), slice(n, nx - n))
        ccd.masked_image = MaskedImage(
            mi.image[sl].copy(), mi.mask[sl].copy(), mi.variance[sl].copy(), mi.mask_planes, mi.xy0
        )
        ccd.mask[:1, :] |= np.int32(ccd.masked_image.get_plane_bitmask("EDGE"))
        ccd.mask[-1:, :] |= np.int32(ccd.masked_image.get_plane_bitmask("EDGE"))
        ccd.mask[:, :1] |= np.int32(ccd.masked_image.get_plane_bitmask("EDGE"))
        ccd.mask[:, -1:] |= np.int32(ccd.masked_image.get_plane_bitmask("EDGE"))
        # amp boxes shifted into the trimmed frame and clipped to it (no negative offsets)
        frame = Box(0, 0, nx - 2 * n, ny - 2 * n)
        amps = [a.replace(bbox=a.bbox.shifted(-n, -n).intersection(frame)) for a in ccd.detector]
        ccd.detector = ccd.detector.replace(amplifiers=tuple(amps), bbox=Box(0, 0, nx - 2 * n, ny - 2 * n))

    def _bias_variance_linearity(
        self,
        ccd: Exposure,
        bias: Any,
        gains: Mapping[str, float],
        noises: Mapping[str, float],
        amp_boxes: dict[str, Box],
        linearizer: Linearizer | None | bool,
    ) -> None:
        """Run steps 10-12 in one pass per amp and block of rows (same arithmetic and order).

        ``image -= bias``; ``variance = image / gain + (noise / gain)²`` (replacing the plane,
        so the bias variance is not used, reference §2.6); negative-variance masking; then the
        amp's (pixel-wise) linearity correction, if ``linearizer`` is not `False`.
        """
        c = self.config
        mi = ccd.masked_image
        bi, bm, _ = _calib_planes(bias)
        F._check_same_shape(mi.image, bi, "bias")
        bm = self._conform(ccd, bias, bm)
        if bm is not None:
            mi.mask |= bm
        lin = None
        if linearizer is not False:
            lin = linearizer if linearizer is not None else Linearizer.from_detector(ccd.detector)
        n_out = 0
        vmin = np.inf
        total = 0.0
        for amp in ccd.detector:
            sl = amp_boxes[amp.name].slices
            img, var, b = mi.image[sl], mi.variance[sl], bi[sl]
            g = np.float32(gains[amp.name])
            rn2 = np.float32((noises[amp.name] / gains[amp.name]) ** 2)
            ltype = lin.linearity_type.get(amp.name, "None") if lin is not None else "None"
            coeffs = lin.linearity_coeffs.get(amp.name, ()) if lin is not None else ()
            active_lin = ltype not in ("None", "Proportional", "", None)
            for rows in F._row_blocks(img.shape):
                blk, vb = img[rows], var[rows]
                blk -= b[rows]
                np.divide(blk, g, out=vb)
                vb += rn2
                if vb.size:
                    vmin = min(vmin, float(vb.min()))
                if lin is not None:
                    n_out += apply_linearity(blk, ltype, coeffs, lin.table)
                # finite sums <=> no NaN/inf in the block (checked while it is in the cache); the
                # variance (image / gain + const) carries any non-finite pre-linearity pixel
                total += float(np.add.reduce(vb, axis=None))
                if active_lin:
                    total += float(np.add.reduce(blk, axis=None))
        self._nan_free = math.isfinite(total)
        if c.maskNegativeVariance:
            if vmin > 0:  # every variance positive (a NaN makes this False)
                mi.add_mask_plane(c.negativeVarianceMaskName)
            else:
                self.maskNegativeVariance(ccd)
        if lin is not None:
            self.metadata["LINEARITY OUT OF RANGE"] = n_out
            _hset(ccd.metadata, "LSST ISR LINEARIZE APPLIED", True)

    def _linearize(self, ccd: Exposure, linearizer: Linearizer | None, amp_boxes: dict[str, Box]) -> None:
        lin = linearizer if linearizer is not None else Linearizer.from_detector(ccd.detector)
        n_out = 0
        for amp in ccd.detector:
            ltype = lin.linearity_type.get(amp.name, "None")
            coeffs = lin.linearity_coeffs.get(amp.name, ())
            n_out += apply_linearity(ccd.image[amp_boxes[amp.name].slices], ltype, coeffs, lin.table)
        self.metadata["LINEARITY OUT OF RANGE"] = n_out
        _hset(ccd.metadata, "LSST ISR LINEARIZE APPLIED", True)

    def _crosstalk(self, ccd: Exposure, calib: CrosstalkCalib | None, trimmed: bool) -> None:
        c = self.config.crosstalk
        det = ccd.detector
        sqr = None
        if c.useConfigCoefficients:
            coeffs = np.asarray(c.crosstalkValues, float).reshape(c.crosstalkShape)
        elif calib is not None:
            coeffs = calib.coeffs
            sqr = calib.coeffs_sqr
        else:
            coeffs = det.crosstalk
        if c.doQuadraticCrosstalkCorrection and sqr is None:
            raise RuntimeError(
                "doQuadraticCrosstalkCorrection needs quadratic coefficients (coeffs_sqr) in "
                "the crosstalk calibration"
            )
        mi = ccd.masked_image
        bit = mi.get_plane_bitmask(c.crosstalkMaskPlane, add=True)
        boxes = [a.bbox if trimmed else a.raw_data_bbox for a in det]
        crosstalk_correct(
            mi.image,
            mi.mask,
            mi.variance,
            list(det),
            coeffs,
            boxes=boxes,
            raw_flips=None if trimmed else [(a.raw_flip_x, a.raw_flip_y) for a in det],
            coeffs_sqr=sqr if c.doQuadraticCrosstalkCorrection else None,
            background=c.crosstalkBackgroundMethod,
            min_pixel_to_mask=c.minPixelToMask,
            crosstalk_bit=bit,
            bad_bit=mi.get_plane_bitmask("BAD"),
        )
        _hset(ccd.metadata, "LSST ISR CROSSTALK APPLIED", True)

    def _interchip_crosstalk(self, ccd: Exposure, calib: Any, sources: Any) -> None:
        """Subtract inter-chip crosstalk from each source detector (``calib.interChip``).

        Raises
        ------
        RuntimeError
            A source is not an assembled, trimmed exposure with its detector.
        """
        c = self.config.crosstalk
        inter = getattr(calib, "interChip", None) or {}
        if not inter:
            self.log.warning(
                "the crosstalk calibration has no interChip coefficients; crosstalkSources ignored"
            )
            return
        mi = ccd.masked_image
        done = []
        for src in sources:
            src = src.get() if hasattr(src, "get") and not isinstance(src, Exposure) else src
            det = getattr(src, "detector", None)
            if not isinstance(src, Exposure) or det is None:
                raise RuntimeError(
                    "each crosstalkSources entry must be an Exposure of another detector with its "
                    f"detector attached (got {type(src).__name__})"
                )
            if det.name == ccd.detector.name or det.name not in inter:
                continue
            if src.shape != det.bbox.shape:
                raise RuntimeError(
                    f"crosstalk source {det.name!r} has shape {src.shape}, not its assembled, trimmed "
                    f"shape {det.bbox.shape}; pass overscan-corrected, assembled source exposures"
                )
            bad = None
            if "BAD" in src.masked_image.mask_planes:
                bad = (src.mask & src.masked_image.get_plane_bitmask("BAD")) != 0
            crosstalk_correct_interchip(
                mi.image,
                mi.variance,
                list(ccd.detector),
                src.image,
                list(det),
                inter[det.name],
                source_variance=src.variance,
                background=c.crosstalkBackgroundMethod,
                bad_mask=bad,
            )
            done.append(det.name)
        self.metadata["CROSSTALK INTERCHIP SOURCES"] = done

    def _brighter_fatter(
        self,
        ccd: Exposure,
        kernel: Any,
        gains: Mapping[str, float],
        dark: Any,
        flat: Any,
        amp_boxes: dict[str, Box],
    ) -> None:
        """Brighter-fatter correction at ``brighterFatterLevel`` (DETECTOR or AMP).

        AMP level: each amplifier is corrected with its own kernel (``kernel`` a mapping amp →
        kernel; one array = the same kernel for every amp) and its own gain. The correction of
        an amp is computed on its region grown by ``(brighterFatterMaxIter + 1) × (radius + 2)``
        pixels of the (gain-scaled) detector image (each iteration reaches ``radius + 2``
        pixels further), so that it equals the DETECTOR-level
        result away from amp boundaries when the kernels are identical; the convergence
        threshold is scaled by the amp's share of the detector area.
        """
        c = self.config
        det = ccd.detector
        if c.brighterFatterLevel == "AMP":
            if isinstance(kernel, Mapping):
                missing = [a.name for a in det if a.name not in kernel]
                if missing:
                    raise RuntimeError(
                        f"brighterFatterLevel='AMP' but the brighter-fatter kernel has no kernel for "
                        f"amp(s) {missing}; provide ampKernels for every amp or use 'DETECTOR'"
                    )
                kernels = {a.name: np.asarray(kernel[a.name], float) for a in det}
            else:
                kernels = {a.name: np.asarray(kernel, float) for a in det}
        else:
            if isinstance(kernel, Mapping):
                raise RuntimeError(
                    "per-amp brighter-fatter kernels need brighterFatterLevel='AMP' (or pass one "
                    "detector kernel)"
                )
            kernels = None
        work = ccd.copy()
        with self.flatContext(work, flat, dark):
            self._interpolate(
                work, [p for p in c.brighterFatterMaskListToInterpolate if p in work.masked_image.mask_planes]
            )
        img = work.image.astype(np.float64)
        del work
        if c.brighterFatterApplyGain:
            for amp in det:
                img[amp_boxes[amp.name].slices] *= gains.get(amp.name, 1.0)
        if kernels is None:
            k = np.asarray(kernel, float)
            corrected, diff, n = brighter_fatter_correction(
                img, k, c.brighterFatterMaxIter, c.brighterFatterThreshold
            )
            delta = corrected - img
            del corrected
            b = max(k.shape) // 2
        else:
            delta = np.zeros_like(img)
            ny, nx = img.shape
            diff, n, b = 0.0, 0, 0
            for amp in det:
                k = kernels[amp.name]
                r = max(k.shape) // 2
                b = max(b, r)
                box = amp_boxes[amp.name]
                grow = (c.brighterFatterMaxIter + 1) * (r + 2)
                ys = slice(max(box.y0 - grow, 0), min(box.y1 + grow, ny))
                xs = slice(max(box.x0 - grow, 0), min(box.x1 + grow, nx))
                sub = img[ys, xs]
                thresh = c.brighterFatterThreshold * sub.size / img.size
                corr, d_amp, n_amp = brighter_fatter_correction(sub, k, c.brighterFatterMaxIter, thresh)
                inner = (
                    slice(box.y0 - ys.start, box.y1 - ys.start),
                    slice(box.x0 - xs.start, box.x1 - xs.start),
                )
                delta[box.slices] = corr[inner] - sub[inner]
                diff, n = max(diff, d_amp), max(n, n_amp)
                self.metadata[f"BRIGHTER_FATTER_ITERATIONS {amp.name}"] = n_amp
        if c.brighterFatterApplyGain:
            for amp in det:
                delta[amp_boxes[amp.name].slices] /= gains.get(amp.name, 1.0)
        if n >= c.brighterFatterMaxIter:
            self.log.warning("brighter-fatter correction did not converge (final difference %g)", diff)
        ccd.image += delta.astype(np.float32)
        F.mask_edges(ccd.mask, b, ccd.masked_image.get_plane_bitmask("EDGE"))
        if c.brighterFatterMaskGrowSize > 0:
            # The correction is a convolution: grow the interpolated planes (diamond, §1.4).
            mi = ccd.masked_image
            for plane in c.brighterFatterMaskListToInterpolate:
                if plane not in mi.mask_planes:
                    continue
                bit = np.int32(mi.get_plane_bitmask(plane))
                sel = (mi.mask & bit) != 0
                if sel.any():
                    grown = F.grow_mask(sel, c.brighterFatterMaskGrowSize)
                    np.bitwise_or(mi.mask, bit, out=mi.mask, where=grown)
        self.metadata["BRIGHTER_FATTER_ITERATIONS"] = n
        self.metadata["BRIGHTER_FATTER_DIFFERENCE"] = diff

    def _fringe(self, ccd: Exposure, fringes: Any) -> None:
        c = self.config.fringe
        frames = fringes if isinstance(fringes, (list, tuple)) else [fringes]
        mi = ccd.masked_image
        bad = (
            mi.mask & mi.get_plane_bitmask([p for p in ("SAT", "BAD", "UNMASKEDNAN") if p in mi.mask_planes])
        ) != 0
        seed = (c.rngSeedOffset + int(ccd.info.id or 0)) % (2**32)
        rng = np.random.RandomState(seed)
        ny, nx = mi.shape
        xs = rng.randint(c.large, nx - c.large, c.num)
        ys = rng.randint(c.large, ny - c.large, c.num)
        sci = measure_fringes(mi.image, bad, xs, ys, c.small, c.large)
        templ, tvars = [], []
        for fr in frames:
            fi, fm, fv = _calib_planes(fr)
            fi = fi.astype(np.float32, copy=True)
            if c.pedestal:
                fi -= np.float32(clipped_stats(fi)[0])
            templ.append(fi)
            tvars.append(fv)
            if fm is not None:
                mi.mask |= fm
        fmeas = np.stack([measure_fringes(t, bad, xs, ys, c.small, c.large) for t in templ], axis=1)
        amps = solve_fringes(sci, fmeas, c.iterations, c.clip)
        subtract_fringes(
            mi.image, mi.variance, templ, amps, tvars if all(v is not None for v in tvars) else None
        )
        self.metadata["FRINGE_AMPLITUDES"] = [float(a) for a in amps]
        _hset(ccd.metadata, "LSST ISR FRINGE APPLIED", True)

    def _vignette(self, ccd: Exposure) -> None:
        v = self.config.vignette
        ny, nx = ccd.shape
        yy, xx = np.ogrid[:ny, :nx]
        outside = (xx - v.xCenter) ** 2 + (yy - v.yCenter) ** 2 > v.radius**2
        if self.config.doMaskVignettePolygon and outside.any():
            ccd.mask[outside] |= np.int32(ccd.masked_image.get_plane_bitmask(["VIGNETTED", "NO_DATA"]))
        if math.isfinite(self.config.vignetteValue):
            ccd.image[outside] = np.float32(self.config.vignetteValue)

    def _statistics(
        self,
        ccd: Exposure,
        overscans: dict[str, Struct],
        amp_boxes: dict[str, Box],
        flagged: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        mi = ccd.masked_image
        sat_bit = mi.get_plane_bitmask("SAT")
        bad_bit = mi.get_plane_bitmask("BAD")
        excl = mi.get_plane_bitmask(
            [p for p in ("BAD", "SAT", "NO_DATA", "UNMASKEDNAN") if p in mi.mask_planes]
        )
        out: dict[str, Any] = {}
        # SAT/BAD counts from the (sparse) flagged-pixel coordinates: two full-image passes
        # instead of four per amplifier.
        fy, fx, fv = F.flagged_pixels(mi.mask, sat_bit | bad_bit) if flagged is None else flagged
        for amp in ccd.detector:
            box = amp_boxes[amp.name]
            sl = box.slices
            img, msk = mi.image[sl], mi.mask[sl]
            inside = (fy >= box.y0) & (fy < box.y1) & (fx >= box.x0) & (fx < box.x1)
            vals = fv[inside]
            nsat = int(np.count_nonzero(vals & sat_bit))
            nbad = int(np.count_nonzero(vals & bad_bit))
            sample = F.sample_for_statistics(img, None, 1 << 13, mask=msk, exclude_bits=excl)
            # clipped_stats computes the (linear) median of the sample anyway (all NaN if empty)
            mean, var, _, med = clipped_stats(sample, _with_median=True)
            stdev = float(np.sqrt(var)) if var == var else float("nan")
            level = med - overscans[amp.name].overscanMedian if amp.name in overscans else float("nan")
            md = ccd.metadata
            for key, val in (
                ("NSAT", nsat),
                ("NBAD", nbad),
                ("FINAL MEAN", mean),
                ("FINAL MEDIAN", med),
                ("FINAL STDEV", stdev),
                ("LEVEL", level),
            ):
                _hset(md, f"LSST ISR {key} {amp.name}", val)
            out[amp.name] = {
                "NSAT": nsat,
                "NBAD": nbad,
                "MEAN": mean,
                "MEDIAN": med,
                "STDEV": stdev,
                "LEVEL": level,
            }
        return out
