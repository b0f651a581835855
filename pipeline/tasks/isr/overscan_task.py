"""`OverscanCorrectionTask`: the overscan subtask of `IsrTask` (glue over `overscan.correct_overscan`)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from pipeline.config import Config, Field, model_validator
from pipeline.image import Box, Exposure
from pipeline.struct import Struct
from pipeline.task import Task

from .overscan import correct_overscan

__all__ = ["FitType", "OverscanCorrectionTask", "OverscanCorrectionTaskConfig"]

FitType = Literal[
    "MEDIAN",
    "MEAN",
    "MEANCLIP",
    "MEDIAN_PER_ROW",
    "MEAN_PER_ROW",
    "POLY",
    "CHEB",
    "LEG",
    "NATURAL_SPLINE",
    "CUBIC_SPLINE",
    "AKIMA_SPLINE",
]


# ============================================================================================
# Overscan subtask
# ============================================================================================
class OverscanCorrectionTaskConfig(Config):
    """Overscan correction configuration (LSST ``OverscanCorrectionTaskConfig``, reference §2.3)."""

    fitType: FitType = Field(
        "MEDIAN",
        description="Overscan model: constant (MEDIAN, MEAN, MEANCLIP), "
        "per row (MEDIAN_PER_ROW, MEAN_PER_ROW), polynomial (POLY, CHEB, LEG) or "
        "spline (NATURAL_SPLINE, CUBIC_SPLINE, AKIMA_SPLINE).",
    )
    order: int = Field(
        1,
        description="Polynomial order, or number of spline bins (splines need >= 5, "
        "fewer degrade to a constant).",
    )
    numSigmaClip: float = Field(
        3.0, description="Rejection threshold (sigma) for MEANCLIP and the per-line outlier rejection."
    )
    maskPlanes: list[str] = Field(
        default_factory=lambda: ["BAD", "SAT"], description="Mask planes excluded from the overscan fit."
    )
    overscanIsInt: bool = Field(
        True,
        description="Treat the overscan as integer data (truncate, "
        "tie-aware integer median) for the per-row fits.",
    )
    maxDeviation: float = Field(
        1000.0,
        description="Overscan pixels deviating from the overscan median "
        "by more than this (ADU) are masked BAD.",
    )
    doAbsoluteMaxDeviation: bool = Field(
        True, description="Apply maxDeviation to |deviation| (else only to positive deviations)."
    )
    doParallelOverscan: bool = Field(False, description="Also fit and subtract the parallel overscan.")
    parallelOverscanMaskThreshold: int = Field(
        100000, description="Parallel-overscan pixels at or above this (ADU) are masked SAT (bleeds)."
    )
    parallelOverscanMaskGrowSize: int = Field(7, description="Diamond growth of the parallel bleed mask.")
    leadingColumnsToSkip: int = Field(0, description="Serial-overscan columns next to the data to ignore.")
    trailingColumnsToSkip: int = Field(0, description="Serial-overscan columns away from the data to ignore.")
    leadingRowsToSkip: int = Field(0, description="Parallel-overscan rows next to the data to ignore.")
    trailingRowsToSkip: int = Field(0, description="Parallel-overscan rows away from the data to ignore.")

    @model_validator(mode="after")
    def _check(self) -> OverscanCorrectionTaskConfig:
        if not self.maxDeviation > 0:
            raise ValueError("overscan.maxDeviation must be > 0")
        if self.fitType in ("NATURAL_SPLINE", "CUBIC_SPLINE", "AKIMA_SPLINE") and self.order < 5:
            # Reference QUIRK (§2.3, §9): a spline with fewer than 5 bins silently became a
            # constant. Intended behaviour: refuse the configuration.
            raise ValueError(
                f"overscan.fitType={self.fitType} needs overscan.order >= 5 spline bins "
                f"(got {self.order}); fewer bins would degrade to a constant"
            )
        for name in (
            "leadingColumnsToSkip",
            "trailingColumnsToSkip",
            "leadingRowsToSkip",
            "trailingRowsToSkip",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"overscan.{name} must be >= 0")
        return self


class OverscanCorrectionTask(Task):
    """Fit and subtract the serial (and optionally parallel) overscan of one amplifier."""

    ConfigClass = OverscanCorrectionTaskConfig
    _DefaultName = "overscan"

    def run(
        self, exposure: Exposure, amp: Any, isTransposed: bool = False, deferImage: bool = False
    ) -> Struct:
        """Correct one amplifier of an untrimmed raw exposure in place.

        Parameters
        ----------
        exposure : `pipeline.image.Exposure`
            Raw exposure (ADU). An integer image is only read when the data correction is
            deferred; otherwise it is first converted to float32 in place.
        amp : `pipeline.image.Amplifier`
            Amplifier geometry (raw boxes).
        isTransposed : `bool`
            The amplifier is read along y (swap serial and parallel).
        deferImage : `bool`
            Leave the data region uncorrected (``imageDeferred`` True in the result): the
            caller subtracts ``imageFit`` itself (IsrTask does it while assembling). Ignored
            with the parallel overscan, which needs the serially corrected data.

        Returns
        -------
        result : `pipeline.struct.Struct`
            ``imageFit`` (level subtracted from the data, scalar or per-row array),
            ``overscanMean``, ``overscanMedian``, ``overscanSigma`` (of the model),
            ``residualMean``, ``residualMedian``, ``residualSigma`` (of the corrected
            overscan; ADU), ``parallel`` (a `Struct` of the same for the parallel overscan or
            `None`), ``nBadLines``, ``imageDeferred``.

        Raises
        ------
        RuntimeError
            If the amplifier has no serial overscan.
        """
        c = self.config
        mi = exposure.masked_image
        exclude = mi.get_plane_bitmask([p for p in c.maskPlanes if p in mi.mask_planes])
        bad = mi.get_plane_bitmask("BAD")
        data = amp.raw_data_bbox
        serial = amp.raw_serial_overscan_bbox
        if serial.is_empty:
            raise RuntimeError(
                f"amplifier {amp.name!r} has no serial overscan box; set doOverscan=False "
                "or fix the camera description"
            )
        par = amp.raw_parallel_overscan_bbox
        do_parallel = c.doParallelOverscan and not par.is_empty
        img_box = data
        defer = deferImage and not do_parallel
        if not defer and np.issubdtype(mi.image.dtype, np.integer):
            # an integer raw kept by IsrTask for its assembly: the in-place subtraction needs
            # float pixels (the conversion IsrTask would have made)
            mi.image = mi.image.astype(np.float32)
        if do_parallel:
            img_box = data.union(par)
            serial = Box(serial.x0, img_box.y0, serial.nx, img_box.ny)
        common = dict(
            fit_type=c.fitType,
            order=c.order,
            nsigma=c.numSigmaClip,
            is_int=c.overscanIsInt,
            max_deviation=c.maxDeviation,
            absolute_max_deviation=c.doAbsoluteMaxDeviation,
            exclude_bits=exclude,
            bad_bit=bad,
        )
        res = correct_overscan(
            mi.image,
            mi.mask,
            img_box.slices,
            serial.slices,
            leading_to_skip=c.leadingColumnsToSkip,
            trailing_to_skip=c.trailingColumnsToSkip,
            transpose=isTransposed,
            subtract_image=not defer,
            **common,
        )
        parallel = None
        if do_parallel:
            common.update(absolute_max_deviation=False)
            pres = correct_overscan(
                mi.image,
                mi.mask,
                data.slices,
                par.slices,
                leading_to_skip=c.leadingRowsToSkip,
                trailing_to_skip=c.trailingRowsToSkip,
                transpose=not isTransposed,
                **common,
            )
            parallel = Struct(
                overscanMean=pres.mean,
                overscanMedian=pres.median,
                overscanSigma=pres.sigma,
                residualMean=pres.residual_mean,
                residualMedian=pres.residual_median,
                residualSigma=pres.residual_sigma,
                imageFit=pres.image_model,
            )
        return Struct(
            imageFit=res.image_model,
            overscanFit=res.model,
            overscanMean=res.mean,
            overscanMedian=res.median,
            overscanSigma=res.sigma,
            residualMean=res.residual_mean,
            residualMedian=res.residual_median,
            residualSigma=res.residual_sigma,
            parallel=parallel,
            nBadLines=res.n_bad_lines,
            skipped=res.skipped,
            imageDeferred=bool(defer and not res.skipped),
        )
