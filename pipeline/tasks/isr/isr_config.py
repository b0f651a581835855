"""Configuration and connections of `IsrTask` (every classic LSST switch with its LSST default)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pipeline.connection_types as cT  # noqa: N812 (contract spelling)
from pipeline.config import Config, ConfigurableField, Field, model_validator
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.tasks.amp_offset import AmpOffsetConfig, AmpOffsetTask

from .deferred_charge_task import DeferredChargeConfig, DeferredChargeTask
from .overscan_task import OverscanCorrectionTask, OverscanCorrectionTaskConfig

__all__ = [
    "AssembleCcdConfig",
    "CrosstalkConfig",
    "FringeConfig",
    "IsrQaConfig",
    "IsrTaskConfig",
    "IsrTaskConnections",
    "VignetteConfig",
]


# ============================================================================================
# Small sub-configs
# ============================================================================================
class AssembleCcdConfig(Config):
    """CCD assembly configuration (LSST ``AssembleCcdConfig``, reference §2.4)."""

    doTrim: bool = Field(True, description="Trim prescan/overscan (assemble amp.bbox from rawDataBBox).")
    keysToRemove: list[str] = Field(
        default_factory=list,
        description="Header keys removed after assembly "
        "(DATASEC, BIASSEC, TRIMSEC and GAIN are always removed).",
    )


class CrosstalkConfig(Config):
    """Crosstalk configuration (LSST ``CrosstalkConfig``, reference §2.8)."""

    minPixelToMask: float = Field(
        45000.0,
        description="Source pixels this far above the source median (ADU) flag the target pixels they feed.",
    )
    crosstalkMaskPlane: str = Field("CROSSTALK", description="Mask plane for crosstalk-affected pixels.")
    crosstalkBackgroundMethod: Literal["None", "AMP", "DETECTOR"] = Field(
        "None", description="Background removed from each source before scaling."
    )
    useConfigCoefficients: bool = Field(False, description="Use crosstalkValues instead of a calibration.")
    crosstalkValues: list[float] = Field(
        default_factory=lambda: [0.0],
        description="Flattened [source, target] coefficient matrix (useConfigCoefficients).",
    )
    crosstalkShape: list[int] = Field(default_factory=lambda: [1], description="Shape of crosstalkValues.")
    doQuadraticCrosstalkCorrection: bool = Field(False, description="Apply the quadratic coefficients.")


class FringeConfig(Config):
    """Fringe configuration (LSST ``FringeConfig``, reference §2.10)."""

    filters: list[str] = Field(default_factory=list, description="Physical filters needing fringe removal.")
    num: int = Field(30000, description="Number of fringe measurement positions.")
    small: int = Field(3, description="Half-size of the small measurement box (pixels).")
    large: int = Field(30, description="Half-size of the large background box (pixels).")
    iterations: int = Field(20, description="Maximum clipping iterations of the fit.")
    clip: float = Field(3.0, description="Clipping threshold (sigma).")
    pedestal: bool = Field(False, description="Subtract the clipped median of each fringe frame first.")
    rngSeedOffset: int = Field(0, description="Offset added to the exposure id for the RNG seed.")


class VignetteConfig(Config):
    """Circular vignetting in detector pixel coordinates (simplified LSST ``VignetteConfig``)."""

    xCenter: float = Field(0.0, description="Centre x (detector pixels).")
    yCenter: float = Field(0.0, description="Centre y (detector pixels).")
    radius: float = Field(1e9, description="Unvignetted radius (pixels).")


class IsrQaConfig(Config):
    """QA configuration (LSST ``IsrQaConfig``): thumbnails and background flatness grid."""

    saveStats: bool = Field(True, description="Record the flatness statistics in the metadata.")
    doThumbnailOss: bool = Field(True, description="Make a binned thumbnail after overscan + assembly.")
    doThumbnailFlattened: bool = Field(True, description="Make a binned thumbnail after flat-fielding.")
    thumbnailBinning: int = Field(4, description="Binning factor of the thumbnails.")
    flatnessMeshX: int = Field(256, description="Background grid cell width (pixels).")
    flatnessMeshY: int = Field(256, description="Background grid cell height (pixels).")
    flatnessClipSigma: float = Field(3.0, description="Clipping sigma of the cell statistics.")
    flatnessNIter: int = Field(3, description="Clipping iterations of the cell statistics.")


def _calibration_input(name: str, storage_class: str, doc: str,
                       dimensions: tuple[str, ...] = ("instrument", "detector")) -> Any:
    """Return an optional calibration prerequisite of `IsrTask`.

    As ip_isr's: ``isCalibration=True``, ``minimum=0``; the connection is dropped when its
    ``do*`` switch is off.
    """
    return cT.PrerequisiteInput(name=name, storageClass=storage_class, doc=doc, dimensions=dimensions,
                                isCalibration=True, minimum=0)


# ============================================================================================
# Connections and config
# ============================================================================================
class IsrTaskConnections(
    PipelineTaskConnections, dimensions=("instrument", "exposure", "detector"), defaultTemplates={}
):
    """Connections of `IsrTask`; calibration inputs are removed when their switch is off."""

    ccdExposure = cT.Input(
        name="raw",
        storageClass="Exposure",
        doc="Input raw exposure (untrimmed).",
        dimensions=("instrument", "exposure", "detector"),
    )
    bias = _calibration_input("bias", "Exposure", "Combined bias.")
    dark = _calibration_input("dark", "Exposure", "Combined dark.")
    flat = _calibration_input("flat", "Exposure", "Combined flat.",
                              ("instrument", "physical_filter", "detector"))
    ptc = _calibration_input("ptc", "PhotonTransferCurveDataset",
                             "Photon transfer curve (gains, read noise).")
    linearizer = _calibration_input("linearizer", "IsrCalib", "Linearity model.")
    crosstalk = _calibration_input("crosstalk", "IsrCalib", "Crosstalk coefficients.")
    defects = _calibration_input("defects", "IsrCalib", "Defect list.")
    bfKernel = _calibration_input("bfk", "IsrCalib", "Brighter-fatter kernel.")
    deferredChargeCalib = _calibration_input(
        "cpCtiCalib", "IsrCalib", "Deferred charge (CTI) calibration (DeferredChargeCalib).")
    fringes = _calibration_input("fringe", "Exposure", "Fringe template.",
                                 ("instrument", "physical_filter", "detector"))
    outputExposure = cT.Output(
        name="postISRCCD",
        storageClass="Exposure",
        doc="ISR-corrected exposure.",
        dimensions=("instrument", "exposure", "detector"),
    )
    preInterpExposure = cT.Output(
        name="postISRCCD_uninterpolated",
        storageClass="Exposure",
        doc="Exposure before interpolation (doSaveInterpPixels).",
        dimensions=("instrument", "exposure", "detector"),
    )
    ossThumb = cT.Output(
        name="OssThumb",
        storageClass="NumpyArray",
        doc="Binned image after overscan.",
        dimensions=("instrument", "exposure", "detector"),
    )
    flattenedThumb = cT.Output(
        name="FlattenedThumb",
        storageClass="NumpyArray",
        doc="Binned image after flat-fielding.",
        dimensions=("instrument", "exposure", "detector"),
    )
    outputStatistics = cT.Output(
        name="isrStatistics",
        storageClass="StructuredDataDict",
        doc="Per-amp statistics (doCalculateStatistics).",
        dimensions=("instrument", "exposure", "detector"),
    )
    outputBin1Exposure = cT.Output(
        name="postISRCCDBin1",
        storageClass="Exposure",
        doc="Binned by binFactor1.",
        dimensions=("instrument", "exposure", "detector"),
    )
    outputBin2Exposure = cT.Output(
        name="postISRCCDBin2",
        storageClass="Exposure",
        doc="Binned by binFactor2.",
        dimensions=("instrument", "exposure", "detector"),
    )

    def __init__(self, *, config: Any = None) -> None:
        super().__init__(config=config)
        c = config
        drop: list[tuple[str, str]] = []
        if not c.doBias:
            drop.append(("prerequisiteInputs", "bias"))
        if not c.doDark:
            drop.append(("prerequisiteInputs", "dark"))
        if not c.doFlat:
            drop.append(("prerequisiteInputs", "flat"))
        if not (c.usePtcGains or c.usePtcReadNoise):
            drop.append(("prerequisiteInputs", "ptc"))
        if not c.doLinearize:
            drop.append(("prerequisiteInputs", "linearizer"))
        if not c.doCrosstalk:
            drop.append(("prerequisiteInputs", "crosstalk"))
        if not c.doDefect:
            drop.append(("prerequisiteInputs", "defects"))
        if not c.doBrighterFatter:
            drop.append(("prerequisiteInputs", "bfKernel"))
        if not c.doDeferredCharge:
            drop.append(("prerequisiteInputs", "deferredChargeCalib"))
        if not (c.doFringe and c.fringe.filters):
            drop.append(("prerequisiteInputs", "fringes"))
        if not c.doSaveInterpPixels:
            drop.append(("outputs", "preInterpExposure"))
        if not c.qa.doThumbnailOss:
            drop.append(("outputs", "ossThumb"))
        if not c.qa.doThumbnailFlattened:
            drop.append(("outputs", "flattenedThumb"))
        if not c.doCalculateStatistics:
            drop.append(("outputs", "outputStatistics"))
        if not c.doBinnedExposures:
            drop.append(("outputs", "outputBin1Exposure"))
            drop.append(("outputs", "outputBin2Exposure"))
        if not c.doWrite:  # as LSST: no postISRCCD output connection at all
            drop.append(("outputs", "outputExposure"))
        for kind, name in drop:
            getattr(self, kind).discard(name)
        # The LSST *DataProductName / datasetType fields name the dataset types of the raw and
        # calibration connections (an explicit config.connections.<name> wins).
        renames = c.connections.to_dict() if getattr(c, "connections", None) is not None else {}
        decls = type(self)._connection_decls
        explicit = {n for n, v in renames.items() if n in decls and v != decls[n].name}
        for conn_name, field_name, default in (
            ("ccdExposure", "datasetType", "raw"),
            ("bias", "biasDataProductName", "bias"),
            ("dark", "darkDataProductName", "dark"),
            ("flat", "flatDataProductName", "flat"),
        ):
            value = getattr(c, field_name)
            if value != default and conn_name not in explicit:
                setattr(self, conn_name, getattr(self, conn_name).replace(name=value))


_DEFAULT_FLUXMAG0 = 10 ** (0.4 * 28.0)


class IsrTaskConfig(PipelineTaskConfig, pipelineConnections=IsrTaskConnections):
    """Configuration of `IsrTask`: every classic LSST switch with its LSST default."""

    noOpFields: ClassVar[dict[str, str]] = {
        "useFallbackDate": "calibration dates come from the calibration collections' validity ranges",
        "expectWcs": "ISR does no WCS handling",
        "fwhm": "ISR measures no PSF",
        "doAssembleIsrExposures": "calibrations are detector-level exposures here",
        "doCameraSpecificMasking": "no camera has specific masking; defects are the masking input",
        "doTweakFlat": "LSST never implemented it either",
        "illuminationCorrectionDataProductName": "IsrTask has no illumination-correction connection; "
        "pass illumMaskedImage to IsrTask.run",
    }

    # --- generic -------------------------------------------------------------------------
    datasetType: str = Field("raw", description="Dataset type of the input raw.")
    fallbackFilterName: str = Field("unknown", description="Filter name used when none is known.")
    useFallbackDate: bool = Field(
        False,
        description="Accepted for LSST compatibility (calibration dates come from CALIBDATE); no effect.",
    )
    expectWcs: bool = Field(
        True, description="Accepted for LSST compatibility (no WCS handling here); no effect."
    )
    fwhm: float = Field(
        1.0, description="Accepted for LSST compatibility (FWHM of the PSF, arcsec); no effect."
    )
    doConvertIntToFloat: bool = Field(
        True,
        description="Convert integer raws to float32 (variance 1, mask 0); "
        "False requires a floating-point raw (an integer raw is refused).",
    )
    # --- saturation / suspect --------------------------------------------------------------
    doSaturation: bool = Field(True, description="Mask saturated pixels (>= saturation level) as SAT.")
    saturatedMaskName: str = Field("SAT", description="Mask plane for saturated pixels.")
    saturation: float = Field(
        float("nan"), description="Saturation level (ADU) overriding the camera's when finite."
    )
    growSaturationFootprintSize: int = Field(1, description="Diamond growth of SAT before interpolation.")
    doSuspect: bool = Field(False, description="Mask pixels above the amp suspect level as SUSPECT.")
    suspectMaskName: str = Field("SUSPECT", description="Mask plane for suspect pixels.")
    numEdgeSuspect: int = Field(0, description="Pixels at the image/amp edges to mask as SUSPECT.")
    edgeMaskLevel: Literal["DETECTOR", "AMP"] = Field(
        "DETECTOR", description="Edge masking per detector or per amplifier."
    )
    doSetBadRegions: bool = Field(True, description="Set BAD, non-interpolated pixels to badStatistic.")
    badStatistic: Literal["MEANCLIP", "MEDIAN"] = Field(
        "MEANCLIP", description="Statistic for doSetBadRegions (honoured; see set_bad_regions)."
    )
    # --- overscan / assembly ----------------------------------------------------------------
    doOverscan: bool = Field(True, description="Do overscan subtraction?")
    overscan: OverscanCorrectionTaskConfig = ConfigurableField(
        OverscanCorrectionTask, description="Overscan subtask."
    )
    doAssembleCcd: bool = Field(True, description="Assemble the amplifiers into a CCD image.")
    assembleCcd: AssembleCcdConfig = Field(default_factory=AssembleCcdConfig, description="CCD assembly.")
    doAssembleIsrExposures: bool = Field(
        False,
        description="Assemble amp-level calibration exposures "
        "(unused: calibrations are detector-level here).",
    )
    doTrimToMatchCalib: bool = Field(False, description="Trim the raw symmetrically to the calibration size.")
    # --- bias / CTI ----------------------------------------------------------------------
    doBias: bool = Field(True, description="Apply bias frame correction?")
    biasDataProductName: str = Field("bias", description="Name of the bias data product.")
    doBiasBeforeOverscan: bool = Field(
        False, description="Subtract the bias before overscan (untrimmed bias)."
    )
    doDeferredCharge: bool = Field(False, description="Apply the serial deferred charge (CTI) correction.")
    deferredChargeCorrection: DeferredChargeConfig = ConfigurableField(
        DeferredChargeTask, description="Deferred charge (CTI) correction subtask."
    )
    # --- variance ----------------------------------------------------------------------
    doVariance: bool = Field(True, description="Compute the variance plane.")
    gain: float = Field(float("nan"), description="Gain (e-/ADU) for detector-less exposures.")
    readNoise: float = Field(0.0, description="Read noise (e-) for detector-less exposures.")
    doEmpiricalReadNoise: bool = Field(False, description="Read noise from the overscan residual stdev.")
    usePtcReadNoise: bool = Field(False, description="Read noise from the PTC.")
    maskNegativeVariance: bool = Field(True, description="Mask pixels with variance <= 0.")
    negativeVarianceMaskName: str = Field("BAD", description="Plane for non-positive variance pixels.")
    # --- linearity / crosstalk ------------------------------------------------------------
    doLinearize: bool = Field(True, description="Correct for non-linearity (if the camera declares a type).")
    doCrosstalk: bool = Field(False, description="Apply intra-detector crosstalk correction.")
    doCrosstalkBeforeAssemble: bool = Field(False, description="Apply crosstalk before assembly.")
    crosstalk: CrosstalkConfig = Field(default_factory=CrosstalkConfig, description="Crosstalk options.")
    # --- defects / NaN ------------------------------------------------------------------
    doDefect: bool = Field(True, description="Mask defects BAD (and interpolate them).")
    doNanMasking: bool = Field(True, description="Mask non-finite pixels as UNMASKEDNAN.")
    doWidenSaturationTrails: bool = Field(True, description="Widen horizontal saturated spans.")
    doCameraSpecificMasking: bool = Field(False, description="Camera-specific masking (no-op base).")
    # --- brighter-fatter ------------------------------------------------------------------
    doBrighterFatter: bool = Field(False, description="Apply the brighter-fatter correction.")
    brighterFatterLevel: Literal["DETECTOR", "AMP"] = Field("DETECTOR", description="Kernel level.")
    brighterFatterMaxIter: int = Field(10, description="Maximum BF iterations.")
    brighterFatterThreshold: float = Field(1000.0, description="BF convergence threshold (e-).")
    brighterFatterApplyGain: bool = Field(True, description="Convert to electrons for the BF correction.")
    brighterFatterMaskListToInterpolate: list[str] = Field(
        default_factory=lambda: ["SAT", "BAD", "NO_DATA", "UNMASKEDNAN"],
        description="Planes interpolated on the BF working copy.",
    )
    brighterFatterMaskGrowSize: int = Field(0, description="Growth of the masks after BF.")
    # --- dark / stray light / flat ------------------------------------------------------
    doDark: bool = Field(True, description="Apply dark frame correction (scaled by dark time).")
    darkDataProductName: str = Field("dark", description="Name of the dark data product.")
    doStrayLight: bool = Field(False, description="Subtract a provided stray-light model.")
    doFlat: bool = Field(True, description="Apply flat field correction?")
    flatDataProductName: str = Field("flat", description="Name of the flat data product.")
    flatScalingType: Literal["USER", "MEAN", "MEDIAN"] = Field("USER", description="Flat normalisation.")
    flatUserScale: float = Field(1.0, description="Flat scale for flatScalingType USER.")
    doTweakFlat: bool = Field(False, description="Unused (kept for LSST compatibility).")
    doApplyGains: bool = Field(False, description="Multiply by the gains (ADU -> e-); exclusive with doFlat.")
    usePtcGains: bool = Field(False, description="Use the PTC gains.")
    normalizeGains: bool = Field(False, description="Normalise amp levels after applying gains.")
    # --- fringe ---------------------------------------------------------------------------
    doFringe: bool = Field(True, description="Apply fringe correction (only for fringe.filters).")
    fringe: FringeConfig = Field(default_factory=FringeConfig, description="Fringe options.")
    fringeAfterFlat: bool = Field(True, description="Fringe correction after (True) or before the flat.")
    # --- amp offset / background / stats --------------------------------------------------
    doAmpOffset: bool = Field(False, description="Measure (and optionally apply) amp offsets.")
    ampOffset: AmpOffsetConfig = ConfigurableField(AmpOffsetTask, description="Amp offset subtask.")
    doMeasureBackground: bool = Field(False, description="Measure background statistics on a grid (QA).")
    qa: IsrQaConfig = Field(default_factory=IsrQaConfig, description="QA options.")
    doStandardStatistics: bool = Field(
        True, description="Write the per-amp SAT/BAD counts and final statistics to the header."
    )
    doCalculateStatistics: bool = Field(False, description="Output per-amp statistics (isrStatistics).")
    # --- interpolation -------------------------------------------------------------------
    doInterpolate: bool = Field(True, description="Interpolate over maskListToInterpolate.")
    doSaturationInterpolation: bool = Field(True, description="Interpolate over saturated pixels.")
    doNanInterpolation: bool = Field(True, description="Interpolate over UNMASKEDNAN pixels.")
    maskListToInterpolate: list[str] = Field(
        default_factory=lambda: ["SAT", "BAD"],
        description="Planes to interpolate (SAT/UNMASKEDNAN follow the "
        "doSaturationInterpolation/doNanInterpolation switches).",
    )
    doSaveInterpPixels: bool = Field(False, description="Output a copy before interpolation.")
    # --- zero point / vignette / transmission / illumination -------------------------------
    fluxMag0T1: dict[str, float] = Field(
        default_factory=lambda: {"Unknown": _DEFAULT_FLUXMAG0},
        description="Flux of a zero-magnitude source in 1 s, per filter.",
    )
    defaultFluxMag0T1: float = Field(_DEFAULT_FLUXMAG0, description="fluxMag0T1 of other filters.")
    doVignette: bool = Field(False, description="Mask the vignetted region (VIGNETTED + NO_DATA).")
    doMaskVignettePolygon: bool = Field(True, description="Set the vignetted pixels' mask bits.")
    vignetteValue: float = Field(float("nan"), description="Image value of vignetted pixels (NaN: keep).")
    vignette: VignetteConfig = Field(default_factory=VignetteConfig, description="Vignetting geometry.")
    doAttachTransmissionCurve: bool = Field(False, description="Attach the transmission curves.")
    doUseOpticsTransmission: bool = Field(True, description="Use the optics transmission.")
    doUseFilterTransmission: bool = Field(True, description="Use the filter transmission.")
    doUseSensorTransmission: bool = Field(True, description="Use the sensor transmission.")
    doUseAtmosphereTransmission: bool = Field(True, description="Use the atmosphere transmission.")
    doIlluminationCorrection: bool = Field(False, description="Divide by an illumination correction.")
    illuminationCorrectionDataProductName: str = Field("illumcor", description="Illumination product.")
    illumScale: float = Field(1.0, description="Illumination scale.")
    illumFilters: list[str] = Field(
        default_factory=list, description="Filters needing illumination correction."
    )
    # --- binned outputs / calib checks ----------------------------------------------------
    doBinnedExposures: bool = Field(False, description="Output binned exposures.")
    binFactor1: int = Field(8, description="First binning factor.")
    binFactor2: int = Field(64, description="Second binning factor.")
    cameraKeywordsToCompare: list[str] = Field(
        default_factory=list,
        description="Header keywords that must agree between the exposure and each calibration.",
    )
    doRaiseOnCalibMismatch: bool = Field(False, description="Raise (else warn) on a keyword mismatch.")
    doWrite: bool = Field(
        True, description="Persist postISRCCD (False removes the outputExposure connection)."
    )

    @model_validator(mode="after")
    def _check(self) -> IsrTaskConfig:
        if self.doFlat and self.doApplyGains:
            raise ValueError("doFlat and doApplyGains are mutually exclusive; set one to False")
        if self.doBiasBeforeOverscan and self.doTrimToMatchCalib:
            raise ValueError("doBiasBeforeOverscan and doTrimToMatchCalib are mutually exclusive")
        if self.ampOffset.doApplyAmpOffset and not self.doAmpOffset:
            raise ValueError("ampOffset.doApplyAmpOffset requires doAmpOffset=True")
        for name in ("binFactor1", "binFactor2"):
            if getattr(self, name) <= 1:
                raise ValueError(f"{name} must be > 1")
        return self

    def interpolation_planes(self) -> list[str]:
        """Effective list of planes to interpolate (reference §2.1 step 28)."""
        planes = list(self.maskListToInterpolate)
        if self.doSaturationInterpolation and self.saturatedMaskName not in planes:
            planes.append(self.saturatedMaskName)
        if not self.doSaturationInterpolation and self.saturatedMaskName in planes:
            planes.remove(self.saturatedMaskName)
        if self.doNanInterpolation and "UNMASKEDNAN" not in planes:
            planes.append("UNMASKEDNAN")
        return planes
