"""Flat-field levels: `CpFlatMeasureTask` (statistics per exposure and detector) and
`CpFlatNormalizationTask` (the exposure × detector decomposition of those levels).

cp_pipe ``cpFlatMeasure.py`` (reference-algorithms §4.2, §4.3). Decisions on the reference
quirks (§9):

* the statistic stored as ``DETECTOR_MEDIAN`` / ``AMP_MEDIAN_i`` is a 3σ clipped mean (MEANCLIP),
  as in cp_pipe; the names are kept so LSST users' tools read them;
* `measure_scales` excludes masked (non-finite) entries from the weighted averages entirely (the
  reference's masked ``np.average`` still adds their weight to the denominator);
* a non-finite level gets weight 0 (the reference gives it level 1 at AMP level);
* ``bgModel`` is the model of the input matrix, ``G[d]·E[e]`` (the reference returns ``E/G``);
* at AMP level every (detector, amp) is one row of the decomposition, indexed
  ``detector_index·n_amp + amp_index`` (the reference uses ``detIdx + ampIdx``).

``G`` is normalized so that its mean weighted by each row's total pixel count is 1; ``E`` then
carries the absolute level of each exposure (ADU), and dividing each flat by its ``E`` before
combining keeps the relative response of the detectors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

import pipeline.connection_types as cT
from pipeline.config import Field
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask
from pipeline.image.statistics import clipped_stats

__all__ = [
    "CpFlatMeasureConfig",
    "CpFlatMeasureTask",
    "CpFlatNormalizationConfig",
    "CpFlatNormalizationTask",
    "measure_flat_statistics",
    "measure_scales",
]


def measure_scales(bg_matrix: np.ndarray, bg_counts: np.ndarray | None = None,
                   iterations: int = 10) -> Struct:
    """Decompose flat levels ``B[d, e] ≈ G[d]·E[e]`` in log space.

    Parameters
    ----------
    bg_matrix : `numpy.ndarray`, shape ``(nDetectors, nExposures)``
        Measured levels (ADU); non-finite or ≤ 0 entries are ignored (an exposure none of
        whose entries is usable gets ``vectorE`` NaN; a detector with none gets the mean scale).
    bg_counts : `numpy.ndarray`, shape ``(nDetectors, nExposures)``, optional
        Pixel counts behind each level (weights); default 1.
    iterations : `int`
        Number of alternating updates (cp_pipe ``scaleMaxIter``, default 10).

    Returns
    -------
    result : `~pipeline.struct.Struct`
        ``vectorE`` (nExposures,): exposure levels (ADU); ``vectorG`` (nDetectors,): detector
        scales, count-weighted mean 1; ``bgModel`` (nDetectors, nExposures): ``G[d]·E[e]``.

    Raises
    ------
    ValueError
        If shapes differ or no entry is usable.

    Notes
    -----
    Iterative decomposition from pipe_drivers ``constructCalibs.py`` after E. Magnier
    (Pan-STARRS), reference-algorithms §4.3: ``lnE[e]`` = weighted mean over d of
    ``L[d, e] - lnG[d]``; ``lnG[d]`` = weighted mean over e of ``L[d, e] - lnE[e]`` (a detector
    with no data gets the mean of the others); then ``G`` is divided by its count-weighted mean.
    A single detector gives ``G = 1`` and ``E = B``; an exact outer product is recovered exactly.
    """
    b = np.asarray(bg_matrix, dtype=np.float64)
    if b.ndim != 2:
        raise ValueError(f"bgMatrix must be 2-D (nDetectors, nExposures), got shape {b.shape}")
    w = np.ones_like(b) if bg_counts is None else np.asarray(bg_counts, dtype=np.float64)
    if w.shape != b.shape:
        raise ValueError(f"bgCounts shape {w.shape} differs from bgMatrix shape {b.shape}")
    valid = np.isfinite(b) & (b > 0) & np.isfinite(w) & (w > 0)
    if not valid.any():
        raise ValueError("bgMatrix has no finite, positive entry to decompose")
    w = np.where(valid, w, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_b = np.where(valid, np.log(np.where(valid, b, 1.0)), 0.0)

    def avg(values: np.ndarray, axis: int) -> np.ndarray:
        # Ignored entries carry weight 0 and must not carry a NaN (NaN * 0 is NaN): a level
        # with no usable entry (a whole exposure or detector ignored) is NaN only itself.
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(valid, values * w, 0.0).sum(axis=axis) / w.sum(axis=axis)

    ln_g = np.zeros(b.shape[0])
    ln_e = avg(log_b - ln_g[:, None], 0)
    det_counts = w.sum(axis=1)
    for _ in range(max(int(iterations), 1)):
        ln_g = avg(log_b - ln_e[None, :], 1)
        if np.any(~np.isfinite(ln_g)):
            ln_g[~np.isfinite(ln_g)] = np.mean(ln_g[np.isfinite(ln_g)])
        ln_e_tmp = avg(log_b - ln_g[:, None], 0)
        ln_e = np.where(np.isfinite(ln_e_tmp), ln_e_tmp, ln_e)
        flux = float((np.exp(ln_g) * det_counts).sum() / det_counts.sum())
        ln_g -= np.log(flux)
    ln_e_final = avg(log_b - ln_g[:, None], 0)
    vector_e = np.exp(ln_e_final)
    vector_g = np.exp(ln_g)
    return Struct(vectorE=vector_e, vectorG=vector_g, bgModel=np.outer(vector_g, vector_e))


def measure_flat_statistics(image: np.ndarray, mask: np.ndarray, bad_bits: int,
                            amp_regions: Mapping[str, tuple[slice, slice]], nsigma: float = 3.0,
                            niter: int = 3) -> dict[str, Any]:
    """Clipped statistics of a flat, whole detector and per amp (cp_pipe ``CpFlatMeasureTask``).

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        ISR-processed flat (ADU).
    mask : `numpy.ndarray` of int, shape ``(ny, nx)``
        Its mask plane.
    bad_bits : `int`
        Mask bits excluded (``maskNameList``).
    amp_regions : mapping `str` → ``(slice_y, slice_x)``
        Amp regions in ``image``.
    nsigma, niter : `float`, `int`
        Clipping.

    Returns
    -------
    stats : `dict`
        ``DETECTOR_MEDIAN`` (the MEANCLIP, ADU), ``DETECTOR_SIGMA`` (STDEVCLIP, ADU),
        ``DETECTOR_N``; for each amp ``i``: ``AMP_NAME_i``, ``AMP_MEDIAN_i``, ``AMP_SIGMA_i``,
        ``AMP_N_i``.
    """
    bad = (np.asarray(mask) & bad_bits) != 0
    mean, var, n = clipped_stats(image, bad, nsigma, niter)
    out: dict[str, Any] = {"DETECTOR_MEDIAN": float(mean), "DETECTOR_SIGMA": float(np.sqrt(var)),
                           "DETECTOR_N": int(n)}
    for i, (name, sl) in enumerate(amp_regions.items()):
        m, v, k = clipped_stats(image[sl], bad[sl], nsigma, niter)
        out[f"AMP_NAME_{i}"] = name
        out[f"AMP_MEDIAN_{i}"] = float(m)
        out[f"AMP_SIGMA_{i}"] = float(np.sqrt(v))
        out[f"AMP_N_{i}"] = int(k)
    return out


class CpFlatMeasureConnections(PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    inputExp = cT.Input(name="cpFlatProc", storageClass="Exposure", doc="ISR-processed flat.",
                        dimensions=("instrument", "exposure", "detector"))
    outputStats = cT.Output(name="cpFlatStatistics", storageClass="StructuredDataDict",
                            doc="Clipped statistics of the flat, detector and amps.",
                            dimensions=("instrument", "exposure", "detector"))


class CpFlatMeasureConfig(PipelineTaskConfig, pipelineConnections=CpFlatMeasureConnections):
    """Configuration of `CpFlatMeasureTask` (cp_pipe names and defaults)."""

    maskNameList: list[str] = Field(default_factory=lambda: ["BAD", "NO_DATA", "DETECTED", "VIGNETTED"],
                                    description="Mask planes to exclude from the statistics.")
    doVignette: bool = Field(True, description="Exclude VIGNETTED pixels (ccdflow: the mask plane "
                                               "stands for the reference's valid polygon).")
    numSigmaClip: float = Field(3.0, gt=0, description="Sigma for the clipped statistics.")
    clipMaxIter: int = Field(3, ge=1, description="Iterations of the clipped statistics.")


class CpFlatMeasureTask(PipelineTask):
    """Measure the clipped level of a flat per detector and per amp (`measure_flat_statistics`)."""

    ConfigClass = CpFlatMeasureConfig
    _DefaultName = "cpFlatMeasure"

    def run(self, inputExp: Any) -> Struct:
        """Measure one flat.

        Parameters
        ----------
        inputExp : `~pipeline.image.Exposure`
            ISR-processed flat with a detector attached.

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputStats``: the statistics `dict` (see `measure_flat_statistics`).

        Raises
        ------
        ValueError
            If the exposure has no detector.
        """
        if inputExp.detector is None:
            raise ValueError(f"exposure {inputExp.info.id} has no detector; cannot measure per amp")
        names = [n for n in self.config.maskNameList if n in inputExp.masked_image.mask_planes]
        if not self.config.doVignette:
            names = [n for n in names if n != "VIGNETTED"]
        bits = inputExp.masked_image.get_plane_bitmask(names)
        regions = {a.name: a.bbox.slices for a in inputExp.detector}
        stats = measure_flat_statistics(np.asarray(inputExp.image), inputExp.mask, bits, regions,
                                        self.config.numSigmaClip, self.config.clipMaxIter)
        stats["exposure"] = inputExp.info.id
        stats["detector"] = inputExp.detector.id
        return Struct(outputStats=stats)


class CpFlatNormalizationConnections(PipelineTaskConnections, dimensions=("instrument", "physical_filter")):
    inputMDs = cT.Input(name="cpFlatStatistics", storageClass="StructuredDataDict", multiple=True,
                        doc="Flat statistics of every exposure and detector of the filter.",
                        dimensions=("instrument", "exposure", "detector"))
    outputScales = cT.Output(name="cpFlatNormScales", storageClass="StructuredDataDict",
                             doc="All scales of the filter: expScale[det][amp][exp], detScale[det].",
                             dimensions=("instrument", "physical_filter"))
    outputExpScales = cT.Output(name="cpFlatExpScales", storageClass="StructuredDataDict", multiple=True,
                                doc="The scales of one exposure (read by the per-detector combine).",
                                dimensions=("instrument", "exposure"))


class CpFlatNormalizationConfig(PipelineTaskConfig, pipelineConnections=CpFlatNormalizationConnections):
    """Configuration of `CpFlatNormalizationTask` (cp_pipe names and defaults)."""

    level: Literal["DETECTOR", "AMP"] = Field("DETECTOR", description="Which level to apply normalizations.")
    scaleMaxIter: int = Field(10, ge=1, description="Max number of iterations to use in scale solver.")


class CpFlatNormalizationTask(PipelineTask):
    """Rescale merged flat frames to remove unequal screen illumination (cp_pipe names).

    One quantum per physical filter gathers the statistics of every exposure × detector.
    """

    ConfigClass = CpFlatNormalizationConfig
    _DefaultName = "cpFlatNorm"

    def measureScales(self, bgMatrix: np.ndarray, bgCounts: np.ndarray | None = None,
                      iterations: int = 10) -> Struct:
        """Convert backgrounds to exposure and detector components (see `measure_scales`)."""
        return measure_scales(bgMatrix, bgCounts, iterations)

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Read every statistic, decompose, write the filter's scales and one per exposure."""
        mds = butlerQC.get(list(inputRefs.inputMDs))
        dims = [dict(r.data_id.required) if hasattr(r.data_id, "required") else dict(r.data_id)
                for r in inputRefs.inputMDs]
        result = self.run(inputMDs=mds, inputDims=dims, camera=None)
        butlerQC.put(result.outputScales, outputRefs.outputScales)
        by_exp = {int(s["exposure"]): s for s in result.outputExpScales}
        refs = list(outputRefs.outputExpScales)
        butlerQC.put([by_exp[int(r.data_id["exposure"])] for r in refs], refs)

    def run(self, inputMDs: Sequence[Mapping[str, Any]], inputDims: Sequence[Mapping[str, Any]],
            camera: Any = None) -> Struct:
        """Normalize FLAT exposures to a consistent level.

        Parameters
        ----------
        inputMDs : sequence of `dict`
            ``cpFlatStatistics`` of each exposure × detector.
        inputDims : sequence of `dict`
            Their data IDs (must hold ``exposure`` and ``detector``).
        camera : optional
            Unused; amp names come from the statistics (cp_pipe compatibility).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputScales``: ``{"expScale": {det: {amp: {exp: E}}}, "detScale": {det: G},
            "ampDetScale": {det: {amp: G}} (AMP level), "exposures": [...], "detectors": [...]}``;
            ``outputExpScales``: one dict per exposure ``{"exposure", "expScale": E,
            "detScale": {det: G}, "ampScale": {det: {amp: E}}}`` (keys as strings).

        Raises
        ------
        KeyError
            If an input's dimensions lack ``detector`` or ``exposure``, or its statistics lack
            ``DETECTOR_MEDIAN`` (DETECTOR level) / ``AMP_MEDIAN_i`` (AMP level).
        ValueError
            If inputs and dimensions differ in length or nothing is usable.
        """
        if len(inputMDs) != len(inputDims):
            raise ValueError(f"{len(inputMDs)} inputMDs but {len(inputDims)} inputDims")
        exposures: list[int] = []
        detectors: list[int] = []
        for dims in inputDims:
            for key in ("detector", "exposure"):
                if key not in dims:
                    raise KeyError(f"input dimensions {dict(dims)} lack {key!r}; cpFlatStatistics must "
                                   "have exposure and detector dimensions")
            if int(dims["exposure"]) not in exposures:
                exposures.append(int(dims["exposure"]))
            if int(dims["detector"]) not in detectors:
                detectors.append(int(dims["detector"]))
        exposures.sort()
        detectors.sort()
        e_index = {e: i for i, e in enumerate(exposures)}
        amp_names: dict[int, list[str]] = {}
        for md, dims in zip(inputMDs, inputDims):
            names = []
            i = 0
            while f"AMP_NAME_{i}" in md:
                names.append(str(md[f"AMP_NAME_{i}"]))
                i += 1
            amp_names.setdefault(int(dims["detector"]), names)
        if self.config.level == "DETECTOR":
            rows = [(d, None) for d in detectors]
        else:
            rows = [(d, a) for d in detectors for a in amp_names[d]]
        r_index = {r: i for i, r in enumerate(rows)}
        bg = np.full((len(rows), len(exposures)), np.nan)
        counts = np.zeros_like(bg)
        for md, dims in zip(inputMDs, inputDims):
            d, e = int(dims["detector"]), int(dims["exposure"])
            if self.config.level == "DETECTOR":
                if "DETECTOR_MEDIAN" not in md:
                    raise KeyError(f"cpFlatStatistics of exposure {e} detector {d} has no DETECTOR_MEDIAN; "
                                   "run CpFlatMeasureTask first")
                bg[r_index[(d, None)], e_index[e]] = float(md["DETECTOR_MEDIAN"])
                counts[r_index[(d, None)], e_index[e]] = float(md.get("DETECTOR_N", 1))
            else:
                for i, a in enumerate(amp_names[d]):
                    if f"AMP_MEDIAN_{i}" not in md:
                        raise KeyError(f"cpFlatStatistics of exposure {e} detector {d} has no AMP_MEDIAN_{i}")
                    bg[r_index[(d, a)], e_index[e]] = float(md[f"AMP_MEDIAN_{i}"])
                    counts[r_index[(d, a)], e_index[e]] = float(md.get(f"AMP_N_{i}", 1))
        res = self.measureScales(bg, counts, self.config.scaleMaxIter)
        self.log.info("flat normalization: %d exposures x %d rows; E = %s", len(exposures), len(rows),
                      np.array2string(res.vectorE, precision=4))
        exp_scale: dict[str, dict[str, dict[str, float]]] = {}
        det_scale: dict[str, float] = {}
        amp_det_scale: dict[str, dict[str, float]] = {}
        for (d, a), i in r_index.items():
            if a is None:
                det_scale[str(d)] = float(res.vectorG[i])
            else:
                amp_det_scale.setdefault(str(d), {})[a] = float(res.vectorG[i])
        for d in detectors:
            if str(d) not in det_scale:
                det_scale[str(d)] = float(np.mean(list(amp_det_scale[str(d)].values())))
            exp_scale[str(d)] = {a: {str(e): float(res.vectorE[e_index[e]]) for e in exposures}
                                 for a in amp_names[d]}
        per_exposure = []
        for e in exposures:
            per_exposure.append({
                "exposure": e,
                "expScale": float(res.vectorE[e_index[e]]),
                "detScale": dict(det_scale),
                "ampScale": {str(d): {a: float(res.vectorE[e_index[e]]) for a in amp_names[d]}
                             for d in detectors},
            })
        full = {"expScale": exp_scale, "detScale": det_scale, "exposures": exposures,
                "detectors": detectors, "level": self.config.level,
                "bgMatrix": bg.tolist(), "bgModel": res.bgModel.tolist()}
        if amp_det_scale:
            full["ampDetScale"] = amp_det_scale
        return Struct(outputScales=full, outputExpScales=per_exposure)
