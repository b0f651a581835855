"""cpDefects tasks: measure defects on exposures or combined calibrations, merge them into ``defects``.

cp_pipe ``cpDefects.py`` names: `MeasureDefectsTask` (one ISR-processed exposure →
``cpDefectsIndividualPartial``), `MeasureDefectsCombinedTask` (a combined ``bias`` or ``dark`` →
``cpDefectsFromBias`` / ``cpDefectsFromDark``), `MeasureDefectsCombinedWithFilterTask` (a combined
``flat`` → ``cpDefectsFromFlat``), `MergeDefectsTask` (per-exposure lists → ``defects``) and
`MergeDefectsCombinedTask` (the three combined-calibration lists → ``defects``). The math is in
`pipeline.tasks.cp.defects_math`; the output is the ip_isr `Defects` calibration (boxes ``x0, y0,
width, height`` in assembled detector pixels) that IsrTask's ``doDefect`` applies.

Which defects each input can reveal: darks → hot pixels and columns (dark current); flats → cold
pixels and columns (low response) and, with ``thresholdType='STDEV'``, hot ones too; biases → only
with ``thresholdType='VALUE'``: pixels ``biasThreshold`` ADU above the bias level (bias-hot pixels).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np

import pipeline.connection_types as cT
from pipeline.config import Field, model_validator
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask
from pipeline.tasks.isr.calibs import Defects

from .defects_math import (
    fill_bad_columns,
    fill_blinking_columns,
    find_amp_defects,
    mask_to_boxes,
    merge_masks,
)

__all__ = [
    "MeasureDefectsCombinedConfig",
    "MeasureDefectsCombinedTask",
    "MeasureDefectsCombinedWithFilterConfig",
    "MeasureDefectsCombinedWithFilterTask",
    "MeasureDefectsConfig",
    "MeasureDefectsTask",
    "MergeDefectsCombinedConfig",
    "MergeDefectsCombinedTask",
    "MergeDefectsConfig",
    "MergeDefectsTask",
    "measure_defects",
]

#: Metadata keys of a defect list: the detector shape (so the merge needs no camera) and the
#: image type it was measured on (cp_pipe ``cpDefectGenImageType``).
SHAPE_KEYS = ("LSST CP DEFECTS NY", "LSST CP DEFECTS NX")
IMAGE_TYPE_KEY = "cpDefectGenImageType"
#: Number of exposures combined into the measured calibration (0 for a single exposure).
N_INPUTS_KEY = "LSST CP DEFECTS CALIB INPUTS"


class MeasureDefectsConnections(PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    """One ISR-processed exposure in, its defect list out."""

    inputExp = cT.Input(name="defectExps", storageClass="Exposure", doc="ISR-processed exposure.",
                        dimensions=("instrument", "exposure", "detector"))
    outputDefects = cT.Output(name="singleExpDefects", storageClass="IsrCalib",
                              doc="Defects measured on this exposure.",
                              dimensions=("instrument", "exposure", "detector"))


class MeasureDefectsConfig(PipelineTaskConfig, pipelineConnections=MeasureDefectsConnections):
    """Configuration of `MeasureDefectsTask` (cp_pipe ``MeasureDefectsTaskConfig`` names and defaults)."""

    thresholdType: Literal["STDEV", "VALUE"] = Field(
        "STDEV", description="STDEV: thresholds in clipped standard deviations (darks: hot; flats: hot "
                             "and cold; biases: none). VALUE: darks by dark current, biases by level, "
                             "flats by fraction of the mean (cold only).")
    darkCurrentThreshold: float = Field(
        5.0, description="VALUE: dark current (e-/s) above which a dark pixel is hot.")
    biasThreshold: float = Field(1000.0, description="VALUE: ADU above the bias level for a hot bias pixel.")
    fracThresholdFlat: float = Field(
        0.8, gt=0, lt=1, description="VALUE: flat pixels below this fraction of the amp mean are cold.")
    nSigmaBright: float = Field(4.8, ge=0, description="STDEV: sigma above the mean for hot pixels.")
    nSigmaDark: float = Field(-5.0, le=0,
                              description="STDEV: sigma below the mean for cold pixels (negative).")
    nPixBorderUpDown: int = Field(0, ge=0, description="Rows at the top and bottom of each amp not searched.")
    nPixBorderLeftRight: int = Field(0, ge=0,
                                     description="Columns at the left and right of each amp not searched.")
    badOnAndOffPixelColumnThreshold: int = Field(
        50, ge=1, description="A column with at least this many bad pixels is filled between them "
                              "(except across goodPixelColumnGapThreshold good pixels).")
    goodPixelColumnGapThreshold: int = Field(
        30, ge=1, description="Consecutive good pixels that stop the filling of an on-and-off column.")
    badPixelsToFillColumnThreshold: float = Field(
        -1.0, description="An amplifier column with at least this many bad pixels becomes bad entirely "
                          "(<= 0: off).")
    saturatedColumnMask: str = Field("SAT", description="Mask plane of saturated pixels.")
    saturatedPixelsToFillColumnThreshold: int = Field(
        -1, description="An amplifier column with at least this many saturated pixels becomes bad "
                        "(<= 0: off).")


def _amp_regions(exposure: Any) -> list[tuple[Any, tuple[slice, slice], float]]:
    det = exposure.detector
    if det is None:
        ny, nx = exposure.image.shape
        return [(None, (slice(0, ny), slice(0, nx)), 1.0)]
    return [(a, a.bbox.slices, float(a.gain) if np.isfinite(a.gain) and a.gain > 0 else 1.0) for a in det]


def _image_type(exposure: Any) -> str:
    t = exposure.info.observation_type if exposure.info is not None else None
    if not t:
        t = str(exposure.metadata.get("IMGTYPE", "UNKNOWN")) if exposure.metadata is not None else "UNKNOWN"
    return str(t).lower()


def measure_defects(exposure: Any, config: MeasureDefectsConfig, image_type: str | None = None,
                    log: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Defect mask of one exposure (ISR-processed or combined).

    Parameters
    ----------
    exposure : `~pipeline.image.Exposure`
        Assembled image (ADU; a combined dark in ADU/s has ``exposure_time`` 1) with its detector.
    config : `MeasureDefectsConfig`
    image_type : `str`, optional
        ``bias``, ``dark``, ``flat`` (default: the exposure's observation type).
    log : `logging.Logger`, optional

    Returns
    -------
    mask : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
    counts : `dict`
        ``hot``/``cold`` pixel counts per amp, ``columns`` filled, ``imageType``.
    """
    c = config
    kind = image_type or _image_type(exposure)
    img = exposure.image
    shape = img.shape
    mi = exposure.masked_image
    nodata = mi.get_plane_bitmask("NO_DATA") if "NO_DATA" in mi.mask_planes else 0
    usable = (exposure.mask & nodata) == 0 if nodata else np.ones(shape, bool)
    exptime = float(exposure.info.exposure_time) if exposure.info is not None else float("nan")
    if not np.isfinite(exptime) or exptime <= 0:
        exptime = 1.0
    mask = np.zeros(shape, bool)
    hot_n: dict[str, int] = {}
    cold_n: dict[str, int] = {}
    amp_slices = []
    for amp, (sy, sx), gain in _amp_regions(exposure):
        name = amp.name if amp is not None else "ALL"
        amp_slices.append((sy, sx))
        good = usable[sy, sx].copy()
        b_ud, b_lr = c.nPixBorderUpDown, c.nPixBorderLeftRight
        if b_lr:
            if sx.start == 0:
                good[:, :b_lr] = False
            else:
                good[:, -b_lr:] = False
        if b_ud:
            if sy.start == 0:
                good[:b_ud, :] = False
            else:
                good[-b_ud:, :] = False
        hot, cold, info = find_amp_defects(
            img[sy, sx], good, image_type=kind, threshold_type=c.thresholdType,
            n_sigma_bright=c.nSigmaBright, n_sigma_dark=c.nSigmaDark,
            dark_current_threshold=c.darkCurrentThreshold, bias_threshold=c.biasThreshold,
            frac_threshold_flat=c.fracThresholdFlat, exposure_time=exptime, gain=gain)
        mask[sy, sx] |= hot | cold
        hot_n[name], cold_n[name] = int(hot.sum()), int(cold.sum())
        if log is not None:
            log.debug("%s amp %s: mean %.4g, sigma %.4g, hot > %.4g, cold < -%.4g: %d hot, %d cold",
                      kind, name, info["mean"], info["stdev"], info["hotThreshold"],
                      info["coldThreshold"], hot_n[name], cold_n[name])
    mask = fill_blinking_columns(mask, c.badOnAndOffPixelColumnThreshold, c.goodPixelColumnGapThreshold)
    mask, n_cols = fill_bad_columns(mask, amp_slices, c.badPixelsToFillColumnThreshold)
    if c.saturatedPixelsToFillColumnThreshold > 0 and c.saturatedColumnMask in mi.mask_planes:
        sat = (exposure.mask & mi.get_plane_bitmask(c.saturatedColumnMask)) != 0
        sat_cols, n_sat = fill_bad_columns(sat, amp_slices, c.saturatedPixelsToFillColumnThreshold)
        mask |= sat_cols
        n_cols += n_sat
    return mask, {"hot": hot_n, "cold": cold_n, "columns": n_cols, "imageType": kind}


def _defects_from_mask(mask: np.ndarray, exposure: Any, image_type: str) -> Defects:
    det = exposure.detector
    md = {IMAGE_TYPE_KEY: image_type, SHAPE_KEYS[0]: int(mask.shape[0]), SHAPE_KEYS[1]: int(mask.shape[1]),
          "CALIBDATE": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if exposure.info is not None and exposure.info.instrument:
        md["INSTRUME"] = exposure.info.instrument
    if exposure.metadata is not None:   # combined calibrations list their inputs (CPP_INPUT_<i>)
        n_in = sum(1 for k in exposure.metadata.keys() if str(k).rsplit("_", 1)[0].endswith("CPP_INPUT"))
        md[N_INPUTS_KEY] = int(n_in)
    return Defects(mask_to_boxes(mask), metadata=md,
                   detector_name=None if det is None else det.name,
                   detector_id=None if det is None else det.id)


class MeasureDefectsTask(PipelineTask):
    """Measure the defects of one exposure (cp_pipe ``MeasureDefectsTask``)."""

    ConfigClass = MeasureDefectsConfig
    _DefaultName = "cpDefectMeasure"

    def run(self, inputExp: Any, camera: Any = None) -> Struct:
        """Find hot and cold pixels (see `measure_defects`).

        Parameters
        ----------
        inputExp : `~pipeline.image.Exposure`
            ISR-processed exposure (or combined calibration) with its detector.
        camera : optional
            Unused (cp_pipe signature).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputDefects``: `Defects`, with the image type and detector shape in its metadata.
        """
        mask, counts = measure_defects(inputExp, self.config, log=self.log)
        defects = _defects_from_mask(mask, inputExp, counts["imageType"])
        self.metadata["hotPixels"] = int(sum(counts["hot"].values()))
        self.metadata["coldPixels"] = int(sum(counts["cold"].values()))
        self.metadata["badColumns"] = counts["columns"]
        self.log.info("Found %d defects containing %d pixels in %s", len(defects), int(mask.sum()),
                      counts["imageType"])
        return Struct(outputDefects=defects)


class MeasureDefectsCombinedConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """A combined calibration (``dark`` by default, ``bias`` in the pipeline) in, its defects out."""

    inputExp = cT.Input(name="dark", storageClass="Exposure", isCalibration=True,
                        doc="Combined calibration to measure.", dimensions=("instrument", "detector"))
    outputDefects = cT.Output(name="cpDefectsFromDark", storageClass="IsrCalib",
                              doc="Defects measured on the combined calibration.",
                              dimensions=("instrument", "detector"))


class MeasureDefectsCombinedConfig(MeasureDefectsConfig,
                                   pipelineConnections=MeasureDefectsCombinedConnections):
    """Configuration of `MeasureDefectsCombinedTask` (same fields as `MeasureDefectsConfig`)."""


class MeasureDefectsCombinedTask(MeasureDefectsTask):
    """Measure the defects of a combined bias or dark (cp_pipe ``MeasureDefectsCombinedTask``).

    A combined dark is in ADU/s (exposure time 1 s), so ``darkCurrentThreshold`` applies directly.
    """

    ConfigClass = MeasureDefectsCombinedConfig
    _DefaultName = "cpDefectMeasureCombined"


class MeasureDefectsCombinedWithFilterConnections(PipelineTaskConnections,
                                                  dimensions=("instrument", "detector", "physical_filter")):
    """A combined flat in, its defects out."""

    inputExp = cT.Input(name="flat", storageClass="Exposure", isCalibration=True,
                        doc="Combined flat to measure.",
                        dimensions=("instrument", "detector", "physical_filter"))
    outputDefects = cT.Output(name="cpDefectsFromFlat", storageClass="IsrCalib",
                              doc="Defects measured on the combined flat.",
                              dimensions=("instrument", "detector", "physical_filter"))


class MeasureDefectsCombinedWithFilterConfig(MeasureDefectsConfig,
                                             pipelineConnections=MeasureDefectsCombinedWithFilterConnections):
    """Configuration of `MeasureDefectsCombinedWithFilterTask`."""


class MeasureDefectsCombinedWithFilterTask(MeasureDefectsTask):
    """Measure the defects of a combined flat (cp_pipe ``MeasureDefectsCombinedWithFilterTask``)."""

    ConfigClass = MeasureDefectsCombinedWithFilterConfig
    _DefaultName = "cpDefectMeasureWithFilterCombined"


class MergeDefectsConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Every per-exposure defect list of a detector in, the ``defects`` calibration out."""

    inputDefects = cT.Input(name="singleExpDefects", storageClass="IsrCalib", multiple=True,
                            doc="Measured defect lists.", dimensions=("instrument", "exposure", "detector"))
    mergedDefects = cT.Output(name="defects", storageClass="IsrCalib", isCalibration=True,
                              doc="Final merged defects.", dimensions=("instrument", "detector"))


class MergeDefectsConfig(PipelineTaskConfig, pipelineConnections=MergeDefectsConnections):
    """Configuration of `MergeDefectsTask` (cp_pipe ``MergeDefectsTaskConfig`` names and defaults)."""

    combinationMode: Literal["AND", "OR", "FRACTION"] = Field(
        "FRACTION", description="Per image type: AND (flagged in every exposure), OR (in any), FRACTION "
                                "(in more than combinationFraction of them). Image types are then ORed.")
    combinationFraction: float = Field(
        0.7, ge=0, le=1, description="FRACTION: fraction of exposures (exclusive) that must flag a pixel.")
    edgesAsDefects: bool = Field(False, description="Mark the detector edges (nPixBorder*) as defects.")
    nPixBorderUpDown: int = Field(5, ge=0, description="Edge rows marked when edgesAsDefects.")
    nPixBorderLeftRight: int = Field(5, ge=0, description="Edge columns marked when edgesAsDefects.")


def merge_defect_lists(inputs: Sequence[Defects],
                       config: MergeDefectsConfig) -> tuple[np.ndarray, dict[str, int]]:
    """Merge defect lists: per image type by ``combinationMode``, then OR over the types.

    Parameters
    ----------
    inputs : sequence of `Defects`
        Lists with the detector shape in their metadata (`MeasureDefectsTask` output).
    config : `MergeDefectsConfig`

    Returns
    -------
    mask : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
    per_type : `dict`
        Defect pixels found per image type.

    Raises
    ------
    ValueError
        If there is no input or the inputs lack, or disagree on, the detector shape.
    """
    if not inputs:
        raise ValueError("MergeDefectsTask: no defect lists to merge")
    shapes = {(int(d.metadata.get(SHAPE_KEYS[0], -1)), int(d.metadata.get(SHAPE_KEYS[1], -1)))
              for d in inputs}
    if len(shapes) != 1 or min(next(iter(shapes))) <= 0:
        raise ValueError(f"defect lists have missing or different detector shapes {sorted(shapes)}; "
                         "measure them with MeasureDefectsTask")
    shape = next(iter(shapes))
    by_type: dict[str, list[np.ndarray]] = {}
    for d in inputs:
        by_type.setdefault(str(d.metadata.get(IMAGE_TYPE_KEY, "UNKNOWN")), []).append(d.to_mask(shape))
    final = np.zeros(shape, bool)
    per_type = {}
    for kind, masks in sorted(by_type.items()):
        m = merge_masks(masks, config.combinationMode, config.combinationFraction)
        per_type[kind] = int(m.sum())
        final |= m
    if config.edgesAsDefects:
        if config.nPixBorderLeftRight:
            final[:, :config.nPixBorderLeftRight] = True
            final[:, -config.nPixBorderLeftRight:] = True
        if config.nPixBorderUpDown:
            final[:config.nPixBorderUpDown, :] = True
            final[-config.nPixBorderUpDown:, :] = True
    return final, per_type


class MergeDefectsTask(PipelineTask):
    """Merge per-exposure defect lists into the ``defects`` calibration (cp_pipe ``MergeDefectsTask``)."""

    ConfigClass = MergeDefectsConfig
    _DefaultName = "cpDefectMerge"

    def run(self, inputDefects: Sequence[Defects], camera: Any = None) -> Struct:
        """Merge (see `merge_defect_lists`).

        Parameters
        ----------
        inputDefects : sequence of `Defects`
        camera : optional
            Unused (cp_pipe signature).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``mergedDefects``: `Defects`, boxes from a run-length merge of the final mask.
        """
        mask, per_type = merge_defect_lists(list(inputDefects), self.config)
        first = inputDefects[0].metadata
        md = {k: first[k] for k in ("INSTRUME", "DETECTOR", "DETECTOR_NAME", *SHAPE_KEYS) if k in first}
        md["CALIBDATE"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        md["LSST CP DEFECTS INPUTS"] = len(inputDefects)
        merged = Defects(mask_to_boxes(mask), metadata=md)
        for kind, n in per_type.items():
            self.metadata[f"{kind}Pixels"] = n
        self.metadata["defectPixels"] = int(mask.sum())
        self.metadata["defectBoxes"] = len(merged)
        self.log.info("Merged %d defect lists (%s): %d boxes, %d pixels", len(inputDefects),
                      ", ".join(f"{k} {v} px" for k, v in per_type.items()), len(merged), int(mask.sum()))
        return Struct(mergedDefects=merged)


class MergeDefectsCombinedConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """The defect lists of the combined bias, dark and flat(s) in, ``defects`` out."""

    inputDarkDefects = cT.Input(name="cpDefectsFromDark", storageClass="IsrCalib", multiple=True,
                                doc="Defects of the combined dark.", dimensions=("instrument", "detector"))
    inputBiasDefects = cT.Input(name="cpDefectsFromBias", storageClass="IsrCalib", multiple=True,
                                doc="Defects of the combined bias.", dimensions=("instrument", "detector"))
    inputFlatDefects = cT.Input(name="cpDefectsFromFlat", storageClass="IsrCalib", multiple=True,
                                doc="Defects of the combined flat(s).",
                                dimensions=("instrument", "detector", "physical_filter"))
    mergedDefects = cT.Output(name="defects", storageClass="IsrCalib", isCalibration=True,
                              doc="Final merged defects.", dimensions=("instrument", "detector"))

    def __init__(self, *, config: Any = None) -> None:
        super().__init__(config=config)
        drop = []
        for source, name in (("bias", "inputBiasDefects"), ("dark", "inputDarkDefects"),
                             ("flat", "inputFlatDefects")):
            if config is not None and source not in config.defectSources:
                drop.append(("inputs", name))
        for kind, name in drop:
            getattr(self, kind).discard(name)


class MergeDefectsCombinedConfig(MergeDefectsConfig, pipelineConnections=MergeDefectsCombinedConnections):
    """Configuration of `MergeDefectsCombinedTask`: ``combinationMode`` must be OR (as cp_pipe)."""

    noOpFields: ClassVar[dict[str, str]] = {
        "combinationFraction": "combinationMode is always OR here (each combined calibration is one list)",
    }

    combinationMode: Literal["AND", "OR", "FRACTION"] = Field(
        "OR", description="Must be OR: each combined calibration is one list.")
    defectSources: list[Literal["bias", "dark", "flat"]] = Field(
        default_factory=lambda: ["bias", "dark", "flat"],
        description="Combined calibrations whose defects are merged (ccdflow; cp_pipe always needs all "
                    "three). Drop 'dark' for a camera without darks (EFOSC2).")

    @model_validator(mode="after")
    def _check(self) -> MergeDefectsCombinedConfig:
        """Raise `ValueError` unless ``combinationMode`` is OR and some source is given."""
        if self.combinationMode != "OR":
            raise ValueError("MergeDefectsCombinedTask: combinationMode must be 'OR'")
        if not self.defectSources:
            raise ValueError("MergeDefectsCombinedTask: defectSources is empty; give bias, dark and/or flat")
        return self


class MergeDefectsCombinedTask(MergeDefectsTask):
    """Merge the defects of the combined calibrations (cp_pipe ``MergeDefectsCombinedTask``).

    With several flats (filters) the one made from the most exposures is used, as cp_pipe.
    """

    ConfigClass = MergeDefectsCombinedConfig
    _DefaultName = "cpMergeDefectsCombined"

    @staticmethod
    def chooseBest(inputs: Sequence[Defects]) -> Defects | None:
        """Return the list measured on the calibration with the most inputs (the first on ties)."""
        if not inputs:
            return None
        return max(inputs, key=lambda d: int(d.metadata.get(N_INPUTS_KEY, 0)))

    def run(self, inputDarkDefects: Sequence[Defects] = (), inputBiasDefects: Sequence[Defects] = (),
            inputFlatDefects: Sequence[Defects] = (), camera: Any = None) -> Struct:  # type: ignore[override]
        """Merge the chosen list of each calibration type (OR).

        Parameters
        ----------
        inputDarkDefects, inputBiasDefects, inputFlatDefects : sequence of `Defects`
        camera : optional
            Unused.

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``mergedDefects``: `Defects`.
        """
        chosen = [d for d in (self.chooseBest(inputFlatDefects), self.chooseBest(inputDarkDefects),
                              self.chooseBest(inputBiasDefects)) if d is not None]
        return super().run(chosen)
