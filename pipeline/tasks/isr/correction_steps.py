"""The optional corrections of `IsrTask.run`, as a mixin of the task.

Dark and flat fused into the first pass, crosstalk, brighter-fatter and fringe.

Each method turns the task's config into one call of the pure function that does the work
(`calib_apply`, `crosstalk`, `brighter_fatter`, `fringe`) and records what it did in the run's
`IsrRunState` and the exposure's metadata. Algorithms: ip_isr ``isrTask.py`` (step numbers of
`IsrTask.run`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.image import Exposure

from . import isr_functions as F  # noqa: N812
from ._header import _hset
from .bias_variance import amp_runs
from .binning import PassThumbnails
from .brighter_fatter import amp_kernels, brighter_fatter_delta
from .calib_apply import calib_planes, conformed_mask
from .crosstalk import correct_exposure_crosstalk, crosstalk_coefficients
from .fringe import correct_fringes
from .masking import grow_planes, mask_bad_flat
from .run_state import IsrCalibs, IsrRunState

__all__ = ["IsrCorrectionSteps"]


class IsrCorrectionSteps:
    """Dark/flat fusion, crosstalk, brighter-fatter and fringe steps of `IsrTask.run`.

    Needs ``config`` (`IsrTaskConfig`), ``log`` and the `IsrStepMethods` ``flatContext`` and
    ``_interpolate`` of the task it is mixed into.
    """

    config: Any
    log: Any

    def _dark_flat_fused(self, ccd: Exposure, k: IsrCalibs) -> bool:
        """Dark and flat run together, nothing between them (step 19 with 22)."""
        c = self.config
        do_fringe = c.doFringe and ccd.info.physical_filter in c.fringe.filters and k.fringes is not None
        return c.doDark and c.doFlat and not c.doStrayLight and not (do_fringe and not c.fringeAfterFlat)

    def _dark_flat_in_pass(self, state: IsrRunState, k: IsrCalibs) -> Any:
        """Dark and flat planes for the bias/variance/linearity pass, or `None`.

        They join that pass (one read and write of the image and variance less) when dark
        and flat run together and nothing between steps 12 and 19 changes pixel values: no
        crosstalk, no brighter-fatter (defects, edges, saturation trails only set mask bits;
        the NaN and negative-variance pixels are found in the pass before the dark).
        """
        c = self.config
        ccd = state.exposure
        if not self._dark_flat_fused(ccd, k) or c.doCrosstalk or c.doBrighterFatter:
            return None
        if c.doTrimToMatchCalib or ccd.masked_image.image.shape != calib_planes(k.dark)[0].shape:
            return None  # (shape errors are raised by the separate step, as before)
        di, _, dv = calib_planes(k.dark)
        fi, _, fv = calib_planes(k.flat)
        if fi.shape != di.shape:
            return None
        dscale = F._dark_scale(ccd.info.dark_time, getattr(getattr(k.dark, "info", None), "dark_time", None))
        fscale = F.flat_scale(fi, c.flatScalingType, c.flatUserScale)
        return (di, dv, dscale), (fi, fv, fscale)

    def _fused_pass(self, state: IsrRunState) -> bool:
        """Bias, variance and linearity run as one pass (`bias_variance.bias_variance_linearity`)."""
        c = self.config
        return bool(c.doBias and not c.doBiasBeforeOverscan and c.doVariance and state.variance_replaced)

    def _plan_thumbnails(self, state: IsrRunState, k: IsrCalibs) -> PassThumbnails | None:
        """QA thumbnails to sum inside the bias/variance/linearity pass, or `None`.

        The post-overscan thumbnail is the image as assembled, which the pass reads first
        (not with ``doTrimToMatchCalib``, which trims in between); the flattened one is the
        image after the pass when the dark and flat run in it and nothing after the flat
        changes pixel values (no gains, fringe after flat, vignetting or illumination
        correction; the masking steps only set bits). Needs ``state.dark_flat``.
        """
        c = self.config
        if not self._fused_pass(state) or c.doTrimToMatchCalib:
            return None
        ccd = state.exposure
        filt = ccd.info.physical_filter
        do_fringe = c.doFringe and filt in c.fringe.filters and k.fringes is not None
        final = state.dark_flat is not None and not (
            c.doApplyGains
            or (do_fringe and c.fringeAfterFlat)
            or c.doVignette
            or (c.doIlluminationCorrection and filt in c.illumFilters)
        )
        runs = [run[:4] for run in amp_runs(state.amp_boxes)]
        qa = c.qa
        return PassThumbnails.plan(
            ccd.masked_image.shape, runs, qa.thumbnailBinning, qa.doThumbnailOss,
            qa.doThumbnailFlattened and final,
        )  # fmt: skip

    def _finish_dark_flat(self, ccd: Exposure, k: IsrCalibs, flat_ok: bool) -> None:
        """Apply the mask side of the dark and flat of the fused pass (as `apply_dark_and_flat`)."""
        for calib in (k.dark, k.flat):
            m = conformed_mask(ccd, calib, calib_planes(calib)[1])
            if m is not None:
                ccd.mask |= m
        if not flat_ok:
            mask_bad_flat(ccd.masked_image, calib_planes(k.flat)[0])

    def _crosstalk(self, ccd: Exposure, calib: Any, trimmed: bool) -> None:
        """Intra-detector crosstalk with the config's, the calibration's or the camera's coefficients."""
        c = self.config.crosstalk
        config_values = (
            np.asarray(c.crosstalkValues, float).reshape(c.crosstalkShape)
            if c.useConfigCoefficients
            else None
        )
        coeffs, sqr = crosstalk_coefficients(
            calib, ccd.detector, config_values, c.doQuadraticCrosstalkCorrection
        )
        correct_exposure_crosstalk(
            ccd.masked_image,
            ccd.detector,
            coeffs,
            sqr,
            trimmed=trimmed,
            background=c.crosstalkBackgroundMethod,
            min_pixel_to_mask=c.minPixelToMask,
            mask_plane=c.crosstalkMaskPlane,
        )
        _hset(ccd.metadata, "LSST ISR CROSSTALK APPLIED", True)

    def _brighter_fatter(self, state: IsrRunState, k: IsrCalibs) -> None:
        """Step 18 at ``brighterFatterLevel`` (`brighter_fatter.brighter_fatter_delta`).

        The correction is computed on a copy with the dark and flat applied and the
        ``brighterFatterMaskListToInterpolate`` planes interpolated.
        """
        c = self.config
        ccd = state.exposure
        kernels = amp_kernels(k.bfKernel, c.brighterFatterLevel, [a.name for a in ccd.detector])
        work = ccd.copy()
        with self.flatContext(work, k.flat, k.dark):
            planes = work.masked_image.mask_planes
            self._interpolate(work, [p for p in c.brighterFatterMaskListToInterpolate if p in planes])
        img = work.image.astype(np.float64)
        del work
        res = brighter_fatter_delta(
            img,
            k.bfKernel,
            kernels,
            state.amp_boxes,
            {**state.gains, **(k.bfGains or {})},
            apply_gain=c.brighterFatterApplyGain,
            max_iter=c.brighterFatterMaxIter,
            threshold=c.brighterFatterThreshold,
        )
        for name, n_amp in res.amp_iterations.items():
            state.task_metadata[f"BRIGHTER_FATTER_ITERATIONS {name}"] = n_amp
        if res.iterations >= c.brighterFatterMaxIter:
            self.log.warning(
                "brighter-fatter correction did not converge (final difference %g)", res.difference
            )
        ccd.image += res.delta.astype(np.float32)
        F.mask_edges(ccd.mask, res.border, ccd.masked_image.get_plane_bitmask("EDGE"))
        if c.brighterFatterMaskGrowSize > 0:  # the correction is a convolution: grow (§1.4)
            grow_planes(ccd.masked_image, c.brighterFatterMaskListToInterpolate, c.brighterFatterMaskGrowSize)
        state.task_metadata["BRIGHTER_FATTER_ITERATIONS"] = res.iterations
        state.task_metadata["BRIGHTER_FATTER_DIFFERENCE"] = res.difference

    def _fringe(self, state: IsrRunState, fringes: Any) -> None:
        """Step 20 or 24: fit and subtract the fringe frames (`fringe.correct_fringes`)."""
        fc = self.config.fringe
        ccd = state.exposure
        frames = fringes if isinstance(fringes, (list, tuple)) else [fringes]
        amps = correct_fringes(
            ccd.masked_image,
            [calib_planes(fr) for fr in frames],
            (fc.rngSeedOffset + int(ccd.info.id or 0)) % (2**32),
            num=fc.num,
            small=fc.small,
            large=fc.large,
            pedestal=fc.pedestal,
            iterations=fc.iterations,
            clip=fc.clip,
        )
        state.task_metadata["FRINGE_AMPLITUDES"] = [float(a) for a in amps]
        _hset(ccd.metadata, "LSST ISR FRINGE APPLIED", True)
