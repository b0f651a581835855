"""`IsrTask`: instrument signature removal (classic LSST ``IsrTask``), thin glue over pure functions.

The steps run in the reference order (reference-algorithms §2.1), each behind its LSST config
switch with the LSST default. This module is the orchestration only: every numerical step is
a pure function in `overscan`, `assembly`, `masking`, `calib_apply`, `gain_noise`,
`bias_variance`, `linearize`, `crosstalk`, `brighter_fatter`, `fringe`, `amp_statistics`,
`binning` or `isr_functions`; the state of a run is an `IsrRunState` passed from step to step,
so one task instance can run several exposures at once. LSST's per-step methods
(``maskAmplifier``, ``flatCorrection`` ...) come from `step_methods.IsrStepMethods`. The header
is the exposure's `~pipeline.image.metadata.PropertyList` (FITS cards only when written).

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
``LSST ISR NSAT <amp>``                        SAT pixel count
``LSST ISR NBAD <amp>``                        BAD pixel count
                                               (LEVEL, FINAL, NSAT, NBAD: ``doStandardStatistics``)
``LSST CALIB DATE <CALIB>``                    calibration dates (``extractCalibDate``)
=============================================  ====================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.image import Box, Exposure
from pipeline.struct import Struct
from pipeline.task import PipelineTask

from . import isr_functions as F  # noqa: N812
from ._header import _hset
from .amp_statistics import amp_statistics, background_levels, flagged_after_interpolation
from .assembly import assemble_exposure, convert_int_to_float, trim_to_match, writable_variance
from .bias_variance import bias_variance_linearity
from .binning import bin_image
from .calib_apply import apply_bias, apply_dark_and_flat, calib_planes, conformed_mask
from .calibs import BrighterFatterKernel, Defects, Linearizer
from .correction_steps import IsrCorrectionSteps
from .crosstalk import correct_interchip_sources
from .gain_noise import apply_amp_gains, effective_gains_noises
from .isr_config import (
    AssembleCcdConfig,
    CrosstalkConfig,
    FringeConfig,
    IsrQaConfig,
    IsrTaskConfig,
    IsrTaskConnections,
    VignetteConfig,
)
from .linearize import linearize_amps
from .masking import (
    box_maxima,
    mask_defects,
    mask_nan,
    mask_parallel_bleeds,
    mask_vignette,
    widen_saturation_mask,
    widen_saturation_mask_inventory,
)
from .overscan_task import OverscanCorrectionTask, OverscanCorrectionTaskConfig
from .run_state import IsrCalibs, IsrRunState, check_inputs
from .step_methods import IsrStepMethods

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
]

#: Steps whose ``LSST ISR <STEP> APPLIED`` keyword every run writes (False until done).
_STEPS = (
    "OVERSCAN ASSEMBLECCD BIAS VARIANCE LINEARIZE CROSSTALK DEFECT DARK FLAT FRINGE BF STRAYLIGHT "
    "APPLYGAINS DEFERREDCHARGE"
).split()
#: Header keyword and `amp_statistics` name of each per-amp statistic.
_STAT_KEYS = (("NSAT", "NSAT"), ("NBAD", "NBAD"), ("FINAL MEAN", "MEAN"), ("FINAL MEDIAN", "MEDIAN"),
              ("FINAL STDEV", "STDEV"), ("LEVEL", "LEVEL"))  # fmt: skip
#: Header keyword and overscan-result attribute suffix of each overscan statistic.
_OVERSCAN_KEYS = (("MEAN", "Mean"), ("MEDIAN", "Median"), ("STDEV", "Sigma"))


class IsrTask(IsrStepMethods, IsrCorrectionSteps, PipelineTask):
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
    pass per amp and block of rows; dark and flat run in one blocked pass (in the same pass
    when nothing runs between them), and so do the QA thumbnails; the float32 raw buffer
    becomes the variance plane; the mask is assembled sparsely; one sparse inventory of
    flagged pixels serves setBadRegions, interpolation and the statistics; integer overscan
    statistics use exact histograms.
    """

    ConfigClass = IsrTaskConfig
    _DefaultName = "isr"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.makeSubtask("overscan")
        self.makeSubtask("ampOffset")
        self.makeSubtask("deferredChargeCorrection")

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
        calibs = IsrCalibs(
            bias=bias, linearizer=linearizer, crosstalk=crosstalk, crosstalkSources=crosstalkSources,
            dark=dark, flat=flat, ptc=ptc, bfKernel=bfKernel, bfGains=bfGains, defects=defects,
            fringes=fringes, opticsTransmission=opticsTransmission,
            filterTransmission=filterTransmission, sensorTransmission=sensorTransmission,
            atmosphereTransmission=atmosphereTransmission, strayLightData=strayLightData,
            illumMaskedImage=illumMaskedImage, deferredChargeCalib=deferredChargeCalib,
        )  # fmt: skip
        state = IsrRunState(ccd)
        self._prepare(state, calibs)
        self._raw_steps(state, calibs)
        oss_thumb, flattened_thumb = self._assembled_steps(state, calibs)
        result = self._final_steps(state, oss_thumb, flattened_thumb)
        self.metadata.update(state.task_metadata)
        return result

    def _prepare(self, state: IsrRunState, k: IsrCalibs) -> None:
        """Resolve the calibration forms, check them, write the calibration and step keywords."""
        c = self.config
        if isinstance(k.bfKernel, BrighterFatterKernel):
            kernel = k.bfKernel
            k.bfGains = k.bfGains or kernel.gains or None
            use_det = c.brighterFatterLevel == "DETECTOR" or not kernel.ampKernels
            k.bfKernel = kernel.detector_kernel() if use_det else kernel.ampKernels
        if isinstance(k.fringes, Struct):
            k.fringes = getattr(k.fringes, "fringes", None)
        check_inputs(c, state.exposure, k, self.doLinearize(state.exposure.detector))
        if k.defects is not None and not isinstance(k.defects, Defects):
            k.defects = Defects(k.defects)
        md = state.exposure.metadata
        for name in ("bias", "dark", "flat", "defects", "linearizer", "crosstalk", "ptc"):
            calib = getattr(k, name)
            if calib is not None:
                self.compareCameraKeywords(md, calib, name)
                _hset(md, f"LSST CALIB DATE {name.upper()}", self.extractCalibDate(calib))
        _hset(md, "LSST ISR UNITS", "adu")
        for step in _STEPS:
            _hset(md, f"LSST ISR {step} APPLIED", False)

    def _raw_steps(self, state: IsrRunState, k: IsrCalibs) -> None:
        """Run steps 2-9 on the raw (untrimmed) exposure, ending with the assembly."""
        c = self.config
        ccd = state.exposure
        md = ccd.metadata
        # 5. per amp: saturation/suspect, overscan. The overscan level is subtracted from the
        # data while assembling (one pass less) when nothing reads the raw data in between.
        defer = bool(
            c.doAssembleCcd
            and c.assembleCcd.doTrim
            and not c.doDeferredCharge
            and not (c.doCrosstalk and c.doCrosstalkBeforeAssemble)
        )
        if c.doConvertIntToFloat:  # 2. an integer raw that no step writes to before the
            # assembly stays integer: the assembly converts the data sections while copying
            keep_int = defer and not (
                (c.doBias and c.doBiasBeforeOverscan) or (c.doOverscan and c.overscan.doParallelOverscan)
            )
            ccd.masked_image, state.owned_raw = convert_int_to_float(ccd.masked_image, keep_int)
        elif not np.issubdtype(ccd.image.dtype, np.floating):
            raise RuntimeError(
                f"the raw pixels are {ccd.image.dtype} and doConvertIntToFloat=False; IsrTask works "
                "on floating-point pixels: set doConvertIntToFloat=True or pass a float raw"
            )
        mi = ccd.masked_image
        for name in ("SAT", "SUSPECT", "BAD", "INTRP", "UNMASKEDNAN"):
            mi.add_mask_plane(name)
        if c.doBias and c.doBiasBeforeOverscan:  # 3. bias before overscan (untrimmed bias)
            writable_variance(mi)
            apply_bias(ccd, k.bias, conform=False)
            _hset(md, "LSST ISR BIAS APPLIED", True)
        if c.doOverscan and c.overscan.doParallelOverscan:  # 4. parallel-overscan bleeds
            oc = c.overscan
            mask_parallel_bleeds(
                mi, ccd.detector, oc.parallelOverscanMaskThreshold, oc.parallelOverscanMaskGrowSize
            )
        deferred: dict[str, Any] = {}
        for amp in ccd.detector:
            if amp.raw_bbox.y1 > mi.shape[0] or amp.raw_bbox.x1 > mi.shape[1]:
                raise RuntimeError(
                    f"amplifier {amp.name!r} raw box {amp.raw_bbox} is outside the raw image "
                    f"{mi.shape}; the detector geometry does not match the raw"
                )
        # raw maxima of all amps at once (whole rows) decide where saturation is looked for
        maxima = (
            box_maxima(mi.image, {a.name: a.raw_bbox for a in ccd.detector})
            if c.doSaturation or c.doSuspect
            else {}
        )
        for amp in ccd.detector:
            if self.maskAmplifier(ccd, amp, k.defects, maxima.get(amp.name)) or not c.doOverscan:
                continue
            if amp.raw_serial_overscan_bbox.is_empty:
                self.log.info("amp %s has no serial overscan; skipping overscan correction", amp.name)
                continue
            res = self.overscan.run(ccd, amp, deferImage=defer)
            state.overscans[amp.name] = res
            if res.imageDeferred:
                deferred[amp.name] = res.imageFit
            self._overscan_keywords(state, amp.name, res)
        if c.doOverscan and state.overscans:
            _hset(md, "LSST ISR OVERSCAN APPLIED", True)
        # 6. effective gains / noise
        gn = effective_gains_noises(
            ccd.detector,
            k.ptc,
            {name: res.residualSigma for name, res in state.overscans.items()},
            use_ptc_gains=c.usePtcGains,
            use_ptc_read_noise=c.usePtcReadNoise,
            empirical_read_noise=c.doEmpiricalReadNoise,
        )
        state.gains, state.noises = gn.gains, gn.noises
        for amp in ccd.detector:
            for key, values in (("GAIN", gn.gains), ("READNOISE", gn.noises)):
                _hset(md, f"LSST ISR {key} {amp.name}", values[amp.name])
                state.task_metadata[f"LSST ISR {key} {amp.name}"] = values[amp.name]
        _hset(md, "LSST ISR GAIN SOURCE", gn.gain_source)
        _hset(md, "LSST ISR NOISE SOURCE", gn.noise_source)
        if c.doDeferredCharge:  # 7. deferred charge (CTI), raw amp segments in readout order
            self.deferredChargeCorrection.run(ccd, k.deferredChargeCalib, gains=state.gains)
            _hset(md, "LSST ISR DEFERREDCHARGE APPLIED", True)
        if c.doCrosstalk and c.doCrosstalkBeforeAssemble:  # 8. crosstalk before assembly
            writable_variance(mi)
            self._crosstalk(ccd, k.crosstalk, trimmed=False)
        if c.doAssembleCcd:  # 9. assembly
            del mi  # the raw planes must be freeable while assembling (peak memory)
            self._assemble(state, deferred)
            _hset(md, "LSST ISR ASSEMBLECCD APPLIED", True)
        writable_variance(ccd.masked_image)

    def _overscan_keywords(self, state: IsrRunState, amp: str, res: Struct) -> None:
        md = state.exposure.metadata
        for kind, src in (("SERIAL", res), ("PARALLEL", res.parallel)):
            if src is None:
                continue
            for prefix, attr in (("", "overscan"), ("RESIDUAL ", "residual")):
                for key, suffix in _OVERSCAN_KEYS:
                    name, value = f"LSST ISR OVERSCAN {prefix}{kind} {key} {amp}", getattr(src, attr + suffix)
                    _hset(md, name, value)
                    if kind == "SERIAL":  # the task metadata holds the serial values only
                        state.task_metadata[name] = float(value)

    def _assemble(self, state: IsrRunState, levels: Mapping[str, Any]) -> None:
        """Step 9: assemble the amplifiers (`assembly.assemble_exposure`)."""
        c = self.config
        ccd = state.exposure
        state.variance_replaced = assemble_exposure(
            ccd,
            trim=c.assembleCcd.doTrim,
            levels=levels,
            spare=state.owned_raw,
            replace_variance=c.doVariance,
        )
        state.owned_raw = None
        for key in ["DATASEC", "BIASSEC", "TRIMSEC", "GAIN", *c.assembleCcd.keysToRemove]:
            ccd.metadata.remove(key, ignore_missing=True, remove_all=True)

    def _amp_boxes(self, ccd: Exposure) -> dict[str, Box]:
        trimmed = self.config.doAssembleCcd and self.config.assembleCcd.doTrim
        return {a.name: (a.bbox if trimmed else a.raw_data_bbox) for a in ccd.detector}

    def _assembled_steps(self, state: IsrRunState, k: IsrCalibs) -> tuple[Any, Any]:
        """Run steps 10-25 on the assembled exposure; return the two QA thumbnails."""
        c = self.config
        ccd = state.exposure
        md = ccd.metadata
        mi = ccd.masked_image
        trimmed = c.doAssembleCcd and c.assembleCcd.doTrim
        state.amp_boxes = self._amp_boxes(ccd)
        state.dark_flat = self._dark_flat_in_pass(state, k) if self._fused_pass(state) else None
        thumbs = state.thumbnails = self._plan_thumbnails(state, k)  # QA thumbnails in the pass
        oss_in_pass = thumbs is not None and thumbs.before is not None
        oss_thumb = None
        if c.qa.doThumbnailOss and not oss_in_pass:
            oss_thumb = bin_image(mi.image, c.qa.thumbnailBinning, np.float32)
        if c.doTrimToMatchCalib:
            ref = k.bias if k.bias is not None else (k.dark if k.dark is not None else k.flat)
            if ref is not None:
                trim_to_match(ccd, calib_planes(ref)[0].shape)
                mi = ccd.masked_image
                state.amp_boxes = self._amp_boxes(ccd)
        self._bias_variance_linearity(state, k)
        if thumbs is not None:
            thumbs.finish()
            oss_thumb = thumbs.before if oss_in_pass else oss_thumb
        if c.doCrosstalk and not c.doCrosstalkBeforeAssemble:  # 13. crosstalk
            self._crosstalk(ccd, k.crosstalk, trimmed=trimmed)
        if k.crosstalkSources:
            if c.doCrosstalk and not c.doCrosstalkBeforeAssemble and trimmed:
                inter = getattr(k.crosstalk, "interChip", None) or {}
                if inter:
                    done = correct_interchip_sources(
                        mi, ccd.detector, inter, k.crosstalkSources, c.crosstalk.crosstalkBackgroundMethod
                    )
                    state.task_metadata["CROSSTALK INTERCHIP SOURCES"] = done
                else:
                    self.log.warning(
                        "the crosstalk calibration has no interChip coefficients; crosstalkSources ignored"
                    )
            else:
                self.log.warning(
                    "inter-chip crosstalk is applied to the assembled, trimmed image with "
                    "doCrosstalk=True and doCrosstalkBeforeAssemble=False; crosstalkSources ignored"
                )
        if c.doDefect:  # 14. defects + edges
            mask_defects(mi, k.defects)
            _hset(md, "LSST ISR DEFECT APPLIED", True)
        if c.numEdgeSuspect > 0:
            self.maskEdges(ccd, c.numEdgeSuspect, c.suspectMaskName, c.edgeMaskLevel)
        # 15. NaN masking (skipped when the fused steps 10-12 saw only finite planes and
        # nothing changed the image since)
        if c.doNanMasking:
            if state.nan_free and not c.doCrosstalk:
                mi.add_mask_plane("UNMASKEDNAN")
                state.task_metadata["NUMNANS"] = 0
            elif state.nonfinite is not None:  # found by the fused pass before the dark
                bit = np.int32(mi.get_plane_bitmask("UNMASKEDNAN", add=True))
                mi.mask.reshape(-1)[state.nonfinite] |= bit
                state.task_metadata["NUMNANS"] = int(state.nonfinite.size)
            else:
                state.task_metadata["NUMNANS"] = mask_nan(mi)
        filt = ccd.info.physical_filter
        do_fringe = c.doFringe and filt in c.fringe.filters and k.fringes is not None
        if c.doWidenSaturationTrails:  # 16. saturation trails
            if self._mask_final_after_widening(state, do_fringe, filt):
                # the flagged-pixel inventory of steps 27-28 comes from the same mask scan
                bits = self._inventory_bits(mi)
                state.inventory = (bits, widen_saturation_mask_inventory(mi, c.saturatedMaskName, bits))
            else:
                widen_saturation_mask(mi, c.saturatedMaskName)
        if c.doBrighterFatter:  # 18. brighter-fatter
            self._brighter_fatter(state, k)
            _hset(md, "LSST ISR BF APPLIED", True)
        # 19. dark (fused with 22. flat when nothing runs between them)
        fused = c.doDark and c.doFlat and not c.doStrayLight and not (do_fringe and not c.fringeAfterFlat)
        if state.dark_flat_done:
            pass  # applied in the bias/variance/linearity pass
        elif fused:
            apply_dark_and_flat(ccd, k.dark, k.flat, c.flatScalingType, c.flatUserScale)
        elif c.doDark:
            self.darkCorrection(ccd, k.dark)
        if c.doDark:
            _hset(md, "LSST ISR DARK APPLIED", True)
        if do_fringe and not c.fringeAfterFlat:  # 20. fringe before flat
            self._fringe(state, k.fringes)
        if c.doStrayLight:  # 21. stray light
            mi.image -= calib_planes(k.strayLightData)[0].astype(np.float32, copy=False)
            _hset(md, "LSST ISR STRAYLIGHT APPLIED", True)
        if c.doFlat:  # 22. flat
            if not fused:
                self.flatCorrection(ccd, k.flat)
            _hset(md, "LSST ISR FLAT APPLIED", True)
        if c.doApplyGains:  # 23. gains
            apply_amp_gains(mi.image, mi.variance, state.gains, state.amp_boxes, c.normalizeGains)
            _hset(md, "LSST ISR UNITS", "electron")
            _hset(md, "LSST ISR APPLYGAINS APPLIED", True)
        if do_fringe and c.fringeAfterFlat:  # 24. fringe after flat
            self._fringe(state, k.fringes)
        if c.doVignette:  # 25. vignette, transmission, illumination
            v = c.vignette
            mask_vignette(mi, v.xCenter, v.yCenter, v.radius, c.doMaskVignettePolygon, c.vignetteValue)
        if c.doAttachTransmissionCurve:
            curves = {
                name: curve
                for name, curve, use in (
                    ("optics", k.opticsTransmission, c.doUseOpticsTransmission),
                    ("filter", k.filterTransmission, c.doUseFilterTransmission),
                    ("sensor", k.sensorTransmission, c.doUseSensorTransmission),
                    ("atmosphere", k.atmosphereTransmission, c.doUseAtmosphereTransmission),
                )
                if use and curve is not None
            }
            ccd.transmission_curve = curves or None
        if c.doIlluminationCorrection and filt in c.illumFilters:
            ii, im_, iv = calib_planes(k.illumMaskedImage)
            F.flat_correction(mi.image, mi.mask, mi.variance, ii, im_, iv, "USER", c.illumScale)
        flat_thumb = thumbs.after if thumbs is not None else None
        if c.qa.doThumbnailFlattened and flat_thumb is None:
            flat_thumb = bin_image(mi.image, c.qa.thumbnailBinning, np.float32)
        return oss_thumb, flat_thumb

    def _inventory_bits(self, mi: Any) -> int:
        """Mask bits of the flagged-pixel inventory (BAD, SAT, INTRP, the planes to interpolate)."""
        c = self.config
        planes = [p for p in ("BAD", "SAT", "INTRP", *c.interpolation_planes()) if p in mi.mask_planes]
        return int(mi.get_plane_bitmask(planes))

    def _mask_final_after_widening(self, state: IsrRunState, do_fringe: bool, filt: Any) -> bool:
        """Whether no step between the saturation-trail widening and the bad-region,
        interpolation and statistics steps can change the mask (and those steps run)."""
        c = self.config
        return bool(
            (c.doSetBadRegions or c.doInterpolate or c.doStandardStatistics or c.doCalculateStatistics)
            and state.dark_flat_done
            and not (c.doBrighterFatter or do_fringe or c.doStrayLight or c.doApplyGains or c.doVignette)
            and not (c.doIlluminationCorrection and filt in c.illumFilters)
        )

    def _bias_variance_linearity(self, state: IsrRunState, k: IsrCalibs) -> None:
        """Run steps 10-12: bias, variance, linearity; fused in one pass when the variance is replaced."""
        c = self.config
        ccd = state.exposure
        md = ccd.metadata
        mi = ccd.masked_image
        do_bias = c.doBias and not c.doBiasBeforeOverscan
        do_lin = bool(self.doLinearize(ccd.detector) or (c.doLinearize and k.linearizer is not None))
        lin = None
        if do_lin:
            lin = k.linearizer if k.linearizer is not None else Linearizer.from_detector(ccd.detector)
        if self._fused_pass(state):
            bi, bm, _ = calib_planes(k.bias)
            dark_flat = state.dark_flat
            res = bias_variance_linearity(
                mi.image, mi.variance, bi, state.gains, state.noises, state.amp_boxes, lin, dark_flat,
                state.thumbnails,
            )  # fmt: skip
            bm = conformed_mask(ccd, k.bias, bm)
            if bm is not None:
                mi.mask |= bm
            state.nan_free = res.finite
            if dark_flat is not None:
                state.dark_flat_done = True
                state.nonfinite = res.nonfinite
                self._finish_dark_flat(ccd, k, res.flat_ok)
            if c.maskNegativeVariance:
                if res.min_variance > 0:  # every variance positive (a NaN makes this False)
                    mi.add_mask_plane(c.negativeVarianceMaskName)
                elif dark_flat is not None:  # the pixels found before the dark changed them
                    bit = np.int32(mi.get_plane_bitmask(c.negativeVarianceMaskName, add=True))
                    mi.mask.reshape(-1)[res.nonpositive_variance] |= bit
                else:
                    self.maskNegativeVariance(ccd)
            if lin is not None:
                state.task_metadata["LINEARITY OUT OF RANGE"] = res.n_out_of_range
                _hset(md, "LSST ISR LINEARIZE APPLIED", True)
            _hset(md, "LSST ISR BIAS APPLIED", True)
            _hset(md, "LSST ISR VARIANCE APPLIED", True)
            return
        if do_bias:  # 10. bias (its variance unused when the next step replaces the plane, §2.6)
            apply_bias(ccd, k.bias, use_variance=not (c.doVariance and state.variance_replaced))
            _hset(md, "LSST ISR BIAS APPLIED", True)
        if c.doVariance:  # 11. variance
            for amp in ccd.detector:
                sl = state.amp_boxes[amp.name].slices
                F.update_variance(
                    mi.image[sl], mi.variance[sl], state.gains[amp.name], state.noises[amp.name]
                )
            _hset(md, "LSST ISR VARIANCE APPLIED", True)
            if c.maskNegativeVariance:
                self.maskNegativeVariance(ccd)
        if lin is not None:  # 12. linearity
            state.task_metadata["LINEARITY OUT OF RANGE"] = linearize_amps(mi.image, lin, state.amp_boxes)
            _hset(md, "LSST ISR LINEARIZE APPLIED", True)

    def _final_steps(self, state: IsrRunState, oss_thumb: Any, flattened_thumb: Any) -> Struct:
        """Run steps 26-30: bad regions, interpolation, zero point, amp offset, statistics, binning."""
        c = self.config
        ccd = state.exposure
        mi = ccd.masked_image
        pre_interp = ccd.copy() if c.doSaveInterpPixels else None  # 26.
        # 27-28 (and the statistics): one sparse inventory of the flagged pixels instead of a
        # scan of the mask plane per step. Nothing between here and the statistics sets
        # SAT/BAD except the SAT growth of the interpolation, whose pixels are returned.
        do_stats = c.doStandardStatistics or c.doCalculateStatistics
        inventory = None
        if c.doSetBadRegions or c.doInterpolate or do_stats:
            bits = self._inventory_bits(mi)
            if state.inventory is not None and state.inventory[0] == bits:
                inventory = state.inventory[1]  # found while widening the saturation trails
            else:
                inventory = F.flagged_pixels(mi.mask, bits)
        if c.doSetBadRegions:  # 27.
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
        interpolated = None
        if c.doInterpolate:  # 28.
            interp = self._interpolate(ccd, c.interpolation_planes(), coords=inventory)
            interpolated = (interp.ys, interp.xs)
        self.roughZeroPoint(ccd)  # 29.
        if c.doAmpOffset:  # 30.
            self.ampOffset.run(ccd)
        if c.doMeasureBackground:
            qa = c.qa
            bg = background_levels(
                mi, qa.flatnessMeshX, qa.flatnessMeshY, qa.flatnessClipSigma, qa.flatnessNIter
            )
            if qa.saveStats:
                state.task_metadata.update(bg)
        stats = None
        if do_stats:
            flagged = flagged_after_interpolation(mi.mask, inventory, interpolated)
            medians = {name: res.overscanMedian for name, res in state.overscans.items()}
            stats = amp_statistics(mi, state.amp_boxes, medians, flagged)
            if c.doStandardStatistics:  # the header keys (LSST); isrStatistics is doCalculateStatistics
                for amp, values in stats.items():
                    for key, name in _STAT_KEYS:
                        _hset(ccd.metadata, f"LSST ISR {key} {amp}", values[name])
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
