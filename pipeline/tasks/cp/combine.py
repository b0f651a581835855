"""`CalibCombineTask`: combine processed bias/dark/flat exposures into a master calibration.

cp_pipe ``cpCombine.py`` behaviour (reference-algorithms §4.4):

1. inputs must share one shape (``RuntimeError("Inconsistent dimensions ...")``), at least one
   (``RuntimeError("No valid input data")``);
2. each input is divided by its scale: Unity, ExposureTime, DarkTime (from the exposure info),
   MeanStats (clipped mean of the image, or per amp at AMP level) or InputList (the
   ``cpFlatExpScales`` of the flat normalization); variance / s²;
3. per pixel, MEANCLIP (default) / MEDIAN / MEAN over the inputs not masked by ``mask`` planes,
   vectorised along the stack axis (`pipeline.image.statistics.stack_statistic`), in row
   blocks of ``subregionSize`` so memory stays bounded; variance from the input variances with
   fewer than ``maxVisitsToCalcErrorFromInputVariance`` inputs, else from the scatter;
4. pixels with no usable input are BAD; an output pixel with NO_DATA raises (``checkNoData``);
   all planes but BAD are then cleared (``censorMaskPlanes``); NaN pixels become the median
   (variance: median variance) and BAD;
5. header: OBSTYPE, CALIB_CREATION_DATE/TIME, ``CPP_INPUT_i`` (exposure id),
   ``CPP_INPUT_DATE_i``, ``CPP_INPUT_EXPT_i``, ``CPP_INPUT_SCALE_i``, DATE-BEG/DATE-END, per-amp
   percentiles and BAD counts; the output exposure time and dark time are 1.0 s (0.0 for a
   bias), so a master dark is in ADU/s.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

import pipeline.connection_types as cT
from pipeline.config import Field
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.image import Exposure, ExposureInfo, MaskedImage
from pipeline.image.statistics import clipped_stats, stack_statistic
from pipeline.struct import Struct
from pipeline.task import PipelineTask

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = [
    "CalibCombineByFilterConfig",
    "CalibCombineByFilterConnections",
    "CalibCombineByFilterTask",
    "CalibCombineConfig",
    "CalibCombineConnections",
    "CalibCombineTask",
    "input_scales",
]

#: Keep inputs in memory when their total size stays below this (bytes); otherwise re-read
#: each row block from disk through the deferred handles.
MEMORY_BUDGET = 1_500_000_000


class CalibCombineConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Inputs and output of `CalibCombineTask`: the processed frames of one detector, one combined calib."""

    inputExpHandles = cT.Input(
        name="cpInputs", storageClass="Exposure", multiple=True, deferLoad=True,
        doc="Processed input exposures to combine.",
        dimensions=("instrument", "exposure", "detector"),
    )
    inputScales = cT.Input(
        name="cpFlatExpScales", storageClass="StructuredDataDict", multiple=True,
        doc="Per-exposure scales from CpFlatNormalizationTask (exposureScaling=InputList).",
        dimensions=("instrument", "exposure"),
    )
    outputData = cT.Output(
        name="cpProposal", storageClass="Exposure", isCalibration=True,
        doc="Combined calibration.", dimensions=("instrument", "detector"),
    )

    def __init__(self, *, config: Any = None) -> None:
        super().__init__(config=config)
        if config is not None and config.exposureScaling != "InputList":
            del self.inputScales


class CalibCombineConfig(PipelineTaskConfig, pipelineConnections=CalibCombineConnections):
    """Configuration of `CalibCombineTask` (cp_pipe names and defaults)."""

    calibrationType: str = Field("calibration", description="Name of calibration to be generated (OBSTYPE).")
    exposureScaling: Literal["Unity", "ExposureTime", "DarkTime", "MeanStats", "InputList"] = Field(
        "Unity", description="Scaling to be applied to each input exposure.")
    scalingLevel: Literal["DETECTOR", "AMP"] = Field(
        "DETECTOR", description="Region to scale: whole detector or each amplifier.")
    maxVisitsToCalcErrorFromInputVariance: int = Field(
        5, description="Maximum number of inputs for which the error is computed from the input "
                       "variance planes (more inputs: from the scatter).")
    subregionSize: list[int] = Field(
        default_factory=lambda: [10000, 200],
        description="Processing tile [nx, ny] (pixels); affects memory only, not the result.")
    mask: list[str] = Field(
        default_factory=lambda: ["SAT", "DETECTED", "INTRP"],
        description="Mask planes whose pixels are excluded from the combination.")
    combine: Literal["MEANCLIP", "MEDIAN", "MEAN"] = Field(
        "MEANCLIP", description="Statistic used to combine.")
    clip: float = Field(3.0, gt=0, description="Clipping threshold for the combination (sigma).")
    nIter: int = Field(3, ge=1, description="Clipping iterations for the combination.")
    noGoodPixelsMask: str = Field("BAD", description="Mask bit for pixels with no usable input.")
    checkNoData: bool = Field(True, description="Raise if any output pixel carries NO_DATA.")
    censorMaskPlanes: bool = Field(True, description="Clear every mask plane but BAD in the output.")
    stat: Literal["MEANCLIP", "MEDIAN", "MEAN"] = Field(
        "MEANCLIP", description="Statistic for MeanStats scaling.")
    statNSigma: float = Field(3.0, description="Clipping for the MeanStats statistic (sigma).")
    statNIter: int = Field(3, ge=1, description="Clipping iterations for the MeanStats statistic.")
    statMask: list[str] = Field(
        default_factory=lambda: ["DETECTED", "BAD", "NO_DATA"],
        description="Mask planes excluded from the MeanStats statistic.")
    distributionPercentiles: list[float] = Field(
        default_factory=lambda: [0, 5, 16, 50, 84, 95, 100],
        description="Percentiles of each amp written to the header (QA).")


class CalibCombineByFilterConnections(CalibCombineConnections,
                                      dimensions=("instrument", "detector", "physical_filter")):
    """`CalibCombineConnections` per physical filter (flats): one combined calib per filter."""

    outputData = cT.Output(
        name="cpFilterProposal", storageClass="Exposure", isCalibration=True,
        doc="Combined calibration for one physical filter.",
        dimensions=("instrument", "detector", "physical_filter"),
    )


class CalibCombineByFilterConfig(CalibCombineConfig, pipelineConnections=CalibCombineByFilterConnections):
    """`CalibCombineConfig` with per-filter outputs (flats)."""


def _hset(hdr: fits.Header, key: str, value: Any) -> None:
    """Set a header card, as HIERARCH (without a warning) when the key is not a FITS keyword."""
    if len(key) > 8 or not re.fullmatch(r"[A-Z0-9_-]*", key):
        key = "HIERARCH " + key
    hdr[key] = value


def _load(obj: Any, box: Any = None) -> Exposure:
    if isinstance(obj, Exposure):
        return obj if box is None else obj.subexposure(box)
    if box is None:
        return obj.get()
    return obj.get(parameters={"bbox": box})


def _lookup_scale(scales: Mapping[str, Any], exp_id: int, det_id: int | None, amp: str | None) -> float:
    """Scale of one exposure (and amp) from cpFlatExpScales dicts."""
    entry = scales.get(exp_id) or scales.get(str(exp_id))
    if entry is None:
        raise KeyError(f"no cpFlatExpScales entry for exposure {exp_id}; run CpFlatNormalizationTask "
                       "on the same exposures")
    if amp is not None:
        per_det = entry.get("ampScale", {}).get(str(det_id)) or entry.get("ampScale", {}).get(det_id)
        if per_det and amp in per_det:
            return float(per_det[amp])
    return float(entry["expScale"])


def input_scales(exposure: Exposure, config: CalibCombineConfig,
                 scale_dicts: Mapping[Any, Any] | None = None) -> dict[str | None, float]:
    """Scale(s) of one input: ``{None: s}`` at DETECTOR level or ``{amp: s}`` at AMP level.

    Parameters
    ----------
    exposure : `~pipeline.image.Exposure`
        The input (full image).
    config : `CalibCombineConfig`
        ``exposureScaling``, ``scalingLevel``, ``stat*``.
    scale_dicts : mapping, optional
        Exposure id → cpFlatExpScales content (InputList).

    Returns
    -------
    scales : `dict`
        Dividing factor(s) (unit of the input per unit of the output).

    Raises
    ------
    RuntimeError
        If the needed exposure time / dark time is missing or a scale is not positive/finite.
    KeyError
        If InputList scales are missing for the exposure.
    """
    how = config.exposureScaling
    det = exposure.detector
    amps = [a.name for a in det] if (det is not None and config.scalingLevel == "AMP") else [None]
    out: dict[str | None, float] = {}
    for amp in amps:
        if how == "Unity":
            s = 1.0
        elif how in ("ExposureTime", "DarkTime"):
            s = exposure.info.exposure_time if how == "ExposureTime" else exposure.info.dark_time
        elif how == "MeanStats":
            im = exposure.masked_image if amp is None else exposure.masked_image.subimage(det[amp].bbox)
            bits = im.get_plane_bitmask([p for p in config.statMask if p in im.mask_planes])
            bad = (im.mask & bits) != 0
            if config.stat == "MEDIAN":
                vals = im.image[~bad & np.isfinite(im.image)]
                s = float(np.median(vals)) if vals.size else float("nan")
            elif config.stat == "MEAN":
                vals = im.image[~bad & np.isfinite(im.image)]
                s = float(vals.mean()) if vals.size else float("nan")
            else:
                s = clipped_stats(im.image, bad, config.statNSigma, config.statNIter)[0]
        else:  # InputList
            if scale_dicts is None:
                raise KeyError("exposureScaling=InputList needs the inputScales (cpFlatExpScales)")
            s = _lookup_scale(scale_dicts, int(exposure.info.id), None if det is None else det.id, amp)
        if s is None or not np.isfinite(s) or s <= 0:
            what = {"DarkTime": "dark time", "ExposureTime": "exposure time"}.get(how, "statistics")
            raise RuntimeError(
                f"exposure {exposure.info.id}: {how} scale is {s!r}; it must be finite and positive "
                f"(check the exposure's {what})")
        out[amp] = float(s)
    return out


class CalibCombineTask(PipelineTask):
    """Combine processed exposures into a master calibration (cp_pipe ``CalibCombineTask``).

    Notes
    -----
    See the module docstring; the statistic is `pipeline.image.statistics.stack_statistic`.
    """

    ConfigClass = CalibCombineConfig
    _DefaultName = "cpCombine"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Read handles (deferred) and scales, combine, write."""
        inputs = butlerQC.get(inputRefs)
        scales = inputs.get("inputScales")
        dims = [int(r.data_id["exposure"]) for r in inputRefs.inputExpHandles]
        result = self.run(inputExpHandles=inputs["inputExpHandles"], inputScales=scales, inputDims=dims)
        butlerQC.put(result, outputRefs)

    def run(self, inputExpHandles: Sequence[Any], inputScales: Sequence[Mapping] | None = None,
            inputDims: Sequence[int] | None = None) -> Struct:
        """Combine the inputs.

        Parameters
        ----------
        inputExpHandles : sequence of `~pipeline.image.Exposure` or deferred handles
            Processed exposures of one detector, same shape.
        inputScales : sequence of `dict`, optional
            cpFlatExpScales contents (InputList), each with an ``exposure`` key.
        inputDims : sequence of `int`, optional
            Exposure ids of the inputs (default: from each exposure's info).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputData``: the combined `~pipeline.image.Exposure` (float32 image/variance).

        Raises
        ------
        RuntimeError
            No input, inconsistent dimensions, a non-positive scale, or NO_DATA in the output.
        KeyError
            InputList scales missing for an input.
        """
        cfg = self.config
        if not inputExpHandles:
            raise RuntimeError("No valid input data: CalibCombineTask got no input exposures")
        scale_dicts = None
        if cfg.exposureScaling == "InputList":
            if not inputScales:
                raise KeyError("exposureScaling=InputList needs inputScales (cpFlatExpScales datasets)")
            scale_dicts = {int(d["exposure"]): d for d in inputScales}
        n = len(inputExpHandles)
        first = _load(inputExpHandles[0])
        shape = first.shape
        keep = n * first.image.size * 12 <= MEMORY_BUDGET
        infos, headers, scales, kept = [], [], [], []
        for k, h in enumerate(inputExpHandles):
            exp = first if k == 0 else _load(h)
            if exp.shape != shape:
                raise RuntimeError(
                    f"Inconsistent dimensions: input {k} (exposure {exp.info.id}) is {exp.shape}, "
                    f"input 0 is {shape}; combine only exposures of one detector with the same ISR trimming")
            infos.append(exp.info)
            headers.append(exp.metadata)
            scales.append(input_scales(exp, cfg, scale_dicts))
            kept.append(exp if keep else None)
        detector = first.detector
        mask_planes = dict(first.masked_image.mask_planes)
        probe = MaskedImage(np.zeros((1, 1), np.float32), mask_planes=dict(mask_planes))
        bad_bits = probe.get_plane_bitmask(cfg.mask, add=True)
        no_good = probe.get_plane_bitmask(cfg.noGoodPixelsMask, add=True)
        mask_planes = dict(probe.mask_planes)
        ny, nx = shape
        out_img = np.empty(shape, np.float64)
        out_var = np.empty(shape, np.float64)
        out_msk = np.empty(shape, np.int32)
        step_y = max(1, int(cfg.subregionSize[1]))
        from pipeline.image import Box

        for y0 in range(0, ny, step_y):
            box = Box(0, y0, nx, min(step_y, ny - y0))
            imgs = np.empty((n, box.ny, nx))
            vars_ = np.empty((n, box.ny, nx))
            msks = np.empty((n, box.ny, nx), np.int32)
            for k in range(n):
                sub = _load(kept[k] if kept[k] is not None else inputExpHandles[k], box)
                im = np.asarray(sub.image, np.float64)
                va = np.asarray(sub.variance, np.float64)
                sc = self._scale_image(scales[k], detector, box)
                imgs[k] = im / sc
                vars_[k] = va / sc**2
                msks[k] = sub.mask
            res = stack_statistic(
                imgs, vars_, msks, statistic=cfg.combine, bad_bits=bad_bits, nsigma=cfg.clip,
                niter=cfg.nIter, n_var_switch=cfg.maxVisitsToCalcErrorFromInputVariance,
                no_data_bit=no_good)
            out_img[box.slices] = res.image
            out_var[box.slices] = res.variance
            out_msk[box.slices] = res.mask
        if cfg.checkNoData and "NO_DATA" in mask_planes:
            nd = 1 << mask_planes["NO_DATA"]
            if np.any(out_msk & nd):
                raise RuntimeError(
                    f"{int(np.count_nonzero(out_msk & nd))} combined pixels carry NO_DATA; the inputs "
                    "must not have NO_DATA pixels (check the ISR vignetting / bad-region settings)")
        if cfg.censorMaskPlanes:
            out_msk &= no_good
        bad_pix = ~np.isfinite(out_img) | ~np.isfinite(out_var)
        if bad_pix.any():
            good_img = out_img[np.isfinite(out_img)]
            good_var = out_var[np.isfinite(out_var)]
            out_img[~np.isfinite(out_img)] = np.median(good_img) if good_img.size else 0.0
            out_var[~np.isfinite(out_var)] = np.median(good_var) if good_var.size else 0.0
            out_msk[bad_pix] |= no_good
        combined = MaskedImage(out_img.astype(np.float32), out_msk, out_var.astype(np.float32),
                               mask_planes=mask_planes)
        header = self._header(infos, headers, scales, combined, detector)
        calib_time = 0.0 if cfg.calibrationType.lower() == "bias" else 1.0
        begins = [i.begin for i in infos if i.begin is not None]
        ends = [i.end for i in infos if i.end is not None]
        info = ExposureInfo(
            id=None, instrument=infos[0].instrument, exposure_time=calib_time, dark_time=calib_time,
            observation_type=cfg.calibrationType, physical_filter=infos[0].physical_filter,
            begin=min(begins) if begins else None, end=max(ends) if ends else None,
            detector=infos[0].detector,
        )
        return Struct(outputData=Exposure(combined, metadata=header, detector=detector, info=info))

    @staticmethod
    def _scale_image(scale: dict[str | None, float], detector: Any, box: Any) -> np.ndarray | float:
        if None in scale:
            return scale[None]
        out = np.ones(box.shape)
        for amp in detector:
            inter = amp.bbox.intersection(box)
            if inter.is_empty:
                continue
            out[inter.shifted(-box.x0, -box.y0).slices] = scale[amp.name]
        return out

    def _header(self, infos: list[ExposureInfo], headers: list[fits.Header],
                scales: list[dict], combined: MaskedImage, detector: Any) -> fits.Header:
        cfg = self.config
        from astropy.io import fits  # here, not with the task class (graph building imports it)

        hdr = fits.Header()
        # keys common to every input with the same value
        common = None
        for h in headers:
            items = {k: v for k, v in h.items() if k not in ("COMMENT", "HISTORY", "")}
            common = items if common is None else {k: v for k, v in common.items()
                                                     if k in items and items[k] == v}
        for k, v in (common or {}).items():
            try:
                _hset(hdr, k, v)
            except (ValueError, KeyError):
                pass
        now = datetime.datetime.now(datetime.timezone.utc)
        _hset(hdr, "OBSTYPE", cfg.calibrationType)
        _hset(hdr, "CALIB_CREATION_DATE", now.strftime("%Y-%m-%d"))
        _hset(hdr, "CALIB_CREATION_TIME", now.strftime("%H:%M:%S"))
        for i, (info, sc) in enumerate(zip(infos, scales)):
            _hset(hdr, f"CPP_INPUT_{i}", int(info.id) if info.id is not None else -1)
            _hset(hdr, f"CPP_INPUT_DATE_{i}", info.begin.tai.isot if info.begin is not None else "")
            _hset(hdr, f"CPP_INPUT_EXPT_{i}", float(info.exposure_time))
            vals = list(sc.values())
            _hset(hdr, f"CPP_INPUT_SCALE_{i}", float(np.mean(vals)))
        begins = [i.begin for i in infos if i.begin is not None]
        ends = [i.end for i in infos if i.end is not None]
        if begins:
            _hset(hdr, "DATE-BEG", min(begins).tai.isot)
        if ends:
            _hset(hdr, "DATE-END", max(ends).tai.isot)
        bad_bit = combined.get_plane_bitmask(cfg.noGoodPixelsMask)
        regions = [(a.name, a.bbox) for a in detector] if detector is not None else []
        for name, box in regions:
            sub = combined.image[box.slices]
            if sub.size == 0:
                continue
            pct = np.percentile(sub, cfg.distributionPercentiles)
            for p, v in zip(cfg.distributionPercentiles, pct):
                _hset(hdr, f"LSST CALIB {name} DISTRIBUTION {p:g}-PCT", float(v))
            n_bad = int(np.count_nonzero(combined.mask[box.slices] & bad_bit))
            _hset(hdr, f"LSST CALIB {name} BADPIX-NUM", n_bad)
        return hdr


class CalibCombineByFilterTask(CalibCombineTask):
    """`CalibCombineTask` with one quantum per detector and physical filter (flats)."""

    ConfigClass = CalibCombineByFilterConfig
    _DefaultName = "cpFilterCombine"
