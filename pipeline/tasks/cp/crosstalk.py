"""cpCrosstalk: `CrosstalkExtractTask` (pixel ratios per exposure) and `CrosstalkSolveTask`.

cp_pipe ``measureCrosstalk.py`` task, connection, dataset-type and config names; the math is in
`pipeline.tasks.cp.crosstalk_math`. The product is a ``crosstalk`` calibration
(`MeasuredCrosstalkCalib`, a `pipeline.tasks.isr.calibs.CrosstalkCalib` with the per-coefficient
error, count and validity of ip_isr's ``CrosstalkCalib``), indexed ``coeffs[source, target]``, in
ADU, that IsrTask's ``doCrosstalk`` applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import pipeline.connection_types as cT  # noqa: N812 (contract spelling)
from pipeline.config import Field, model_validator
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask
from pipeline.tasks.isr.calibs import CrosstalkCalib

from .crosstalk_math import extract_ratios, solve_coefficients

__all__ = [
    "CrosstalkExtractConfig",
    "CrosstalkExtractConnections",
    "CrosstalkExtractTask",
    "CrosstalkSolveConfig",
    "CrosstalkSolveConnections",
    "CrosstalkSolveTask",
    "MeasuredCrosstalkCalib",
]


class MeasuredCrosstalkCalib(CrosstalkCalib):
    """A measured crosstalk matrix with ip_isr's ``coeffErr``, ``coeffNum`` and ``coeffValid``.

    Parameters
    ----------
    coeffErr, coeffNum, coeffValid : `numpy.ndarray`, shape ``(n_amp, n_amp)``, optional
        Standard deviation of the clipped ratios, number of ratios, significance flag; all
        ``[source, target]``.
    *args, **kwargs
        See `CrosstalkCalib`.
    """

    def __init__(
        self,
        *args: Any,
        coeffErr: np.ndarray | None = None,
        coeffNum: np.ndarray | None = None,
        coeffValid: np.ndarray | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        n = self.nAmp
        self.coeffErr = np.full((n, n), np.nan) if coeffErr is None else np.asarray(coeffErr, float)
        self.coeffNum = np.zeros((n, n), np.int64) if coeffNum is None else np.asarray(coeffNum, np.int64)
        self.coeffValid = np.zeros((n, n), bool) if coeffValid is None else np.asarray(coeffValid, bool)

    def to_table(self) -> list[Any]:
        """`CrosstalkCalib.to_table` plus ``COEFF_ERR``, ``COEFF_NUM``, ``COEFF_VALID`` columns."""
        tables = super().to_table()
        t = tables[0]
        t["COEFF_ERR"] = self.coeffErr
        t["COEFF_NUM"] = self.coeffNum
        t["COEFF_VALID"] = self.coeffValid
        return tables

    @classmethod
    def from_table(cls, tables: Sequence[Any]) -> MeasuredCrosstalkCalib:
        """Inverse of `to_table`."""
        base = CrosstalkCalib.from_table(tables)
        t = tables[0]
        get = lambda name: np.asarray(t[name]) if name in t.colnames else None  # noqa: E731
        return cls(
            base.coeffs,
            base.coeffs_sqr,
            base.amp_names,
            base.units,
            interChip=base.interChip,
            metadata=base.metadata,
            coeffErr=get("COEFF_ERR"),
            coeffNum=get("COEFF_NUM"),
            coeffValid=get("COEFF_VALID"),
        )


# ------------------------------------------------------------------------------------- extract
class CrosstalkExtractConnections(PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    """One ISR-processed exposure in, its pixel ratios and source fluxes out."""

    inputExp = cT.Input(
        name="cpCrosstalkIsrExp",
        storageClass="Exposure",
        doc="Input post-ISR processed exposure to measure crosstalk from (crosstalk not corrected).",
        dimensions=("instrument", "exposure", "detector"),
    )
    outputRatios = cT.Output(
        name="cpCrosstalkRatio",
        storageClass="StructuredDataDict",
        doc="Extracted crosstalk pixel ratios: [targetChip][sourceChip][targetAmp][sourceAmp].",
        dimensions=("instrument", "exposure", "detector"),
    )
    outputFluxes = cT.Output(
        name="cpCrosstalkFlux",
        storageClass="StructuredDataDict",
        doc="Source pixel fluxes used in the ratios: [sourceChip][sourceAmp].",
        dimensions=("instrument", "exposure", "detector"),
    )


class CrosstalkExtractConfig(PipelineTaskConfig, pipelineConnections=CrosstalkExtractConnections):
    """Configuration of `CrosstalkExtractTask` (cp_pipe names and defaults)."""

    doMeasureInterchip: bool = Field(
        False, description="Measure inter-chip crosstalk as well? (not supported: must stay False)."
    )
    threshold: float = Field(
        30000.0, description="Minimum level of source pixels (ADU) for which to measure crosstalk."
    )
    ignoreSaturatedPixels: bool = Field(False, description="Should saturated pixels be ignored?")
    badMask: list[str] = Field(
        default_factory=lambda: ["BAD", "INTRP"],
        description="Mask planes to ignore when identifying source pixels (+SAT if ignoreSaturatedPixels).",
    )
    isTrimmed: bool = Field(True, description="Is the input exposure trimmed?")

    @model_validator(mode="after")
    def _check(self) -> CrosstalkExtractConfig:
        """Refuse inter-chip measurement (cp_pipe leaves it unimplemented too)."""
        if self.doMeasureInterchip:
            raise ValueError(
                "doMeasureInterchip=True is not supported; measure intra-chip crosstalk "
                "(doMeasureInterchip=False)"
            )
        return self

    def bad_planes(self) -> list[str]:
        """``badMask`` with SAT added or removed according to ``ignoreSaturatedPixels``."""
        planes = [p for p in self.badMask if p != "SAT"]
        return planes + ["SAT"] if self.ignoreSaturatedPixels else planes


class CrosstalkExtractTask(PipelineTask):
    """Measure pixel ratios between the amplifiers of one exposure (cp_pipe ``CrosstalkExtractTask``)."""

    ConfigClass = CrosstalkExtractConfig
    _DefaultName = "cpCrosstalkExtract"

    def run(self, inputExp: Any) -> Struct:
        """Extract crosstalk ratios.

        Parameters
        ----------
        inputExp : `pipeline.image.Exposure`
            ISR-processed exposure (ADU, crosstalk not corrected) with its detector.

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputRatios``: ``{chip: {chip: {targetAmp: {sourceAmp: [ratio, ...]}}}}``;
            ``outputFluxes``: ``{chip: {sourceAmp: [ADU, ...]}}`` (the detector name as chip).

        Raises
        ------
        ValueError
            If the exposure has no detector, amplifier regions of unequal size, or is trimmed
            while ``isTrimmed=False`` (or untrimmed while ``isTrimmed=True``).
        """
        det = inputExp.detector
        if det is None:
            raise ValueError(f"exposure {inputExp.info.id} has no detector; cannot extract crosstalk")
        mi = inputExp.masked_image
        planes = [p for p in self.config.bad_planes() if p in mi.mask_planes]
        bad = (mi.mask & mi.get_plane_bitmask(planes)) != 0 if planes else np.zeros(mi.shape, bool)
        amps = list(det)
        boxes = [a.bbox if self.config.isTrimmed else a.raw_data_bbox for a in amps]
        _check_trimmed(mi.shape, det, boxes, self.config.isTrimmed, inputExp.info.id)
        res = extract_ratios(np.asarray(mi.image), bad, amps, boxes, self.config.threshold)
        for src, n in res.nPixels.items():
            self.log.info("source amp %s: %d pixels above %g ADU", src, n, self.config.threshold)
        self.log.info("backgrounds (ADU): %s", {k: round(v, 3) for k, v in res.background.items()})
        chip = det.name
        return Struct(
            outputRatios={chip: {chip: res.ratios}},
            outputFluxes={chip: res.fluxes},
        )


def _check_trimmed(
    shape: tuple[int, int], det: Any, boxes: Sequence[Any], is_trimmed: bool, exp_id: Any
) -> None:
    """Refuse an exposure whose trimming disagrees with ``isTrimmed`` (one error naming the fix).

    Parameters
    ----------
    shape : `tuple` [`int`, `int`]
        The exposure's image shape ``(ny, nx)``, pixels.
    det : `pipeline.image.geometry.Detector`
        Its detector (``bbox``: trimmed; ``raw_bbox``: untrimmed).
    boxes : sequence of `pipeline.image.geometry.Box`
        The amplifier data regions ``isTrimmed`` selects.
    is_trimmed : `bool`
        ``CrosstalkExtractConfig.isTrimmed``.
    exp_id : `object`
        The exposure id, for the message.

    Raises
    ------
    ValueError
        If an amplifier region lies outside the image, or the image has the other trimming's shape.
    """
    trimmed, untrimmed = tuple(det.bbox.shape), tuple(det.raw_bbox.shape)
    shape = tuple(shape)
    outside = any(b.x1 > shape[1] or b.y1 > shape[0] for b in boxes)
    if is_trimmed and (outside or (shape == untrimmed != trimmed)):
        raise ValueError(
            f"CrosstalkExtractTask: exposure {exp_id} has shape {shape}, the detector's untrimmed "
            f"shape {untrimmed} (trimmed: {trimmed}), but isTrimmed=True; set isTrimmed=False for "
            "exposures keeping the overscans (assembleCcd.doTrim=False)"
        )
    if not is_trimmed and (outside or (shape == trimmed != untrimmed)):
        raise ValueError(
            f"CrosstalkExtractTask: exposure {exp_id} has shape {shape}, the detector's trimmed "
            f"shape {trimmed} (untrimmed: {untrimmed}), but isTrimmed=False; set isTrimmed=True "
            "(the default) for trimmed ISR output"
        )


# --------------------------------------------------------------------------------------- solve
class CrosstalkSolveConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Every exposure's ratios (and fluxes) of a detector in, its ``crosstalk`` calibration out."""

    inputRatios = cT.Input(
        name="cpCrosstalkRatio",
        storageClass="StructuredDataDict",
        multiple=True,
        doc="Ratios measured for an input exposure.",
        dimensions=("instrument", "exposure", "detector"),
    )
    inputFluxes = cT.Input(
        name="cpCrosstalkFlux",
        storageClass="StructuredDataDict",
        multiple=True,
        doc="Fluxes of crosstalk source pixels, for non-linear fits.",
        dimensions=("instrument", "exposure", "detector"),
    )
    outputCrosstalk = cT.Output(
        name="crosstalk",
        storageClass="IsrCalib",
        isCalibration=True,
        doc="Output proposed crosstalk calibration.",
        dimensions=("instrument", "detector"),
    )

    def __init__(self, *, config: Any = None) -> None:
        super().__init__(config=config)
        if config is not None and config.fluxOrder == 0:
            self.inputs.discard("inputFluxes")


class CrosstalkSolveConfig(PipelineTaskConfig, pipelineConnections=CrosstalkSolveConnections):
    """Configuration of `CrosstalkSolveTask` (cp_pipe names and defaults)."""

    rejIter: int = Field(
        3, ge=0, description="Number of rejection iterations for final coefficient calculation."
    )
    rejSigma: float = Field(
        2.0, gt=0, description="Rejection threshold (sigma) for final coefficient calculation."
    )
    fluxOrder: int = Field(
        0,
        ge=0,
        le=1,
        description="Polynomial order in source flux to fit crosstalk (0: linear crosstalk; 1: adds "
        "the quadratic term coeffsSqr, ccdflow only).",
    )
    significanceLimit: float = Field(
        3.0, description="Sigma significance level to use in marking a coefficient valid."
    )
    doSignificanceScaling: bool = Field(
        True, description="Scale error by 1/sqrt(N) in calculating significant coefficients?"
    )
    doFiltering: bool = Field(
        False, description="Filter generated crosstalk to remove marginal measurements (invalid -> 0)?"
    )


class CrosstalkSolveTask(PipelineTask):
    """Combine the pixel ratios of all exposures into crosstalk coefficients (cp_pipe names)."""

    ConfigClass = CrosstalkSolveConfig
    _DefaultName = "cpCrosstalkSolve"

    def run(
        self,
        inputRatios: Sequence[Mapping[str, Any]],
        inputFluxes: Sequence[Mapping[str, Any]] | None = None,
        camera: Any = None,
    ) -> Struct:
        """Solve for the coefficients.

        Parameters
        ----------
        inputRatios : sequence of `dict`
            ``cpCrosstalkRatio`` of each exposure of one detector.
        inputFluxes : sequence of `dict`, optional
            Matching ``cpCrosstalkFlux`` (``fluxOrder = 1``).
        camera : optional
            Unused (cp_pipe compatibility).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputCrosstalk``: a `MeasuredCrosstalkCalib` in ADU.

        Raises
        ------
        RuntimeError
            If the inputs hold several target detectors, or no ratio at all.
        """
        if not inputRatios:
            raise RuntimeError(
                "CrosstalkSolveTask: no cpCrosstalkRatio input; run CrosstalkExtractTask first"
            )
        chips = {chip for r in inputRatios for chip in r}
        if len(chips) != 1:
            raise RuntimeError(
                f"CrosstalkSolveTask: inputs hold ratios of several target detectors {sorted(chips)}"
            )
        chip = chips.pop()
        per_exp = [r[chip].get(chip, {}) for r in inputRatios]
        amp_names = list(per_exp[0])
        fluxes = None
        if self.config.fluxOrder > 0:
            if not inputFluxes:
                raise RuntimeError("CrosstalkSolveTask: fluxOrder=1 needs the cpCrosstalkFlux inputs")
            fluxes = [f.get(chip, {}) for f in inputFluxes]
        c = self.config
        res = solve_coefficients(
            per_exp,
            fluxes,
            amp_names,
            rej_iter=c.rejIter,
            rej_sigma=c.rejSigma,
            flux_order=c.fluxOrder,
            significance_limit=c.significanceLimit,
            significance_scaling=c.doSignificanceScaling,
        )
        coeffs = np.where(np.isfinite(res.coeffs), res.coeffs, 0.0)
        sqr = res.coeffsSqr if c.fluxOrder > 0 else None
        if c.doFiltering:
            coeffs = np.where(res.coeffValid, coeffs, 0.0)
            if sqr is not None:
                sqr = np.where(res.coeffValid, sqr, 0.0)
        for i, s in enumerate(amp_names):
            for j, t in enumerate(amp_names):
                if i != j:
                    self.log.info(
                        "%s -> %s: %.4e +- %.2e (N=%d, valid=%s)",
                        s,
                        t,
                        res.coeffs[i, j],
                        res.coeffErr[i, j] / max(np.sqrt(res.coeffNum[i, j]), 1),
                        res.coeffNum[i, j],
                        bool(res.coeffValid[i, j]),
                    )
        self.log.info("number of valid coefficients: %d", int(res.coeffValid.sum()))
        calib = MeasuredCrosstalkCalib(
            coeffs,
            sqr,
            amp_names,
            "adu",
            coeffErr=res.coeffErr,
            coeffNum=res.coeffNum,
            coeffValid=res.coeffValid,
            metadata={"OBSTYPE": "crosstalk", "DETECTOR_NAME": chip, "NEXPOSURES": len(inputRatios)},
        )
        return Struct(outputCrosstalk=calib)
