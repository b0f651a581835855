"""`PhotonTransferCurveExtractTask`: measure flat pairs into partial PTC datasets (``cpPtcPartial``).

Quanta: one per detector with every ``postISRCCD`` flat of the selection (as cp_pipe's
``PhotonTransferCurveExtractTask``). Inside, exposures are paired (`pair_exposures`), each pair
is measured (`pipeline.tasks.cp.ptc_math.measure_pair`) and gives ONE ``cpPtcPartial`` with
points, written at the data ID of the pair's first exposure; the other exposure of the pair
(and any exposure left unpaired) gets a ``DUMMY`` partial with no points, so that every
predicted output exists and ``PhotonTransferCurveSolveTask`` can read them all. Exposures are
read one pair at a time (``deferLoad``), so memory holds two flats, not the whole sequence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

import pipeline.connection_types as cT
from pipeline.config import Field, model_validator
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask

from .ptc_dataset import PhotonTransferCurveDataset
from .ptc_math import measure_pair

__all__ = [
    "PhotonTransferCurveExtractConfig",
    "PhotonTransferCurveExtractConnections",
    "PhotonTransferCurveExtractTask",
    "amp_value",
    "pair_exposures",
]

#: Header keyword (followed by a space and the amp name) holding the overscan residual
#: standard deviation in ADU, written by IsrTask (the per-pair read noise, reference §3.3 step 2).
READ_NOISE_KEY = "LSST ISR OVERSCAN RESIDUAL SERIAL STDEV"


class PhotonTransferCurveExtractConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Connections: every ``postISRCCD`` flat of a detector in, one ``cpPtcPartial`` per flat out."""

    inputExp = cT.Input(
        name="postISRCCD", storageClass="Exposure", multiple=True, deferLoad=True,
        doc="ISR-processed flats of one detector (all exposures of the PTC sequence).",
        dimensions=("instrument", "exposure", "detector"),
    )
    outputCovariances = cT.Output(
        name="cpPtcPartial", storageClass="PhotonTransferCurveDataset", multiple=True,
        doc="Per-pair measurements (DUMMY for the second exposure of each pair).",
        dimensions=("instrument", "exposure", "detector"),
    )


class PhotonTransferCurveExtractConfig(PipelineTaskConfig,
                                       pipelineConnections=PhotonTransferCurveExtractConnections):
    """Configuration of `PhotonTransferCurveExtractTask` (cp_pipe names and defaults)."""

    matchExposuresType: Literal["TIME", "FLUX", "EXPID"] | None = Field(
        "TIME", description="Match input exposures by time, flux, or expId.")
    matchExposuresByFluxKeyword: str = Field(
        "CCOBFLUX", description="Header keyword for flux if matchExposuresType is FLUX.")
    matchExposuresTimeTolerance: float = Field(
        5e-3, description="ccdflow: exposure times equal within this tolerance (s) are a pair (TIME).")
    pairExtraExposures: bool = Field(
        False, description="ccdflow: when more than two exposures share a time (TIME) or flux (FLUX), "
                           "also pair the extra ones: (e0, e1), (e2, e3), ... and an odd last exposure "
                           "with its predecessor, so a triplet gives (e0, e1) and (e1, e2). False = "
                           "cp_pipe: the first two are used and the rest dropped with a warning.")
    maximumRangeCovariancesAstier: int = Field(
        8, ge=1, description="Maximum range of covariances as in Astier+19.")
    binSize: int = Field(1, ge=1, description="Bin the image by this factor in both dimensions.")
    minMeanSignal: dict[str, float] = Field(
        default_factory=lambda: {"ALL_AMPS": 0.0},
        description="Minimum values (inclusive) of mean signal (in ADU) per amp to use; "
                    "{'ALL_AMPS': value} applies to all amps.")
    maxMeanSignal: dict[str, float] = Field(
        default_factory=lambda: {"ALL_AMPS": 1e6},
        description="Maximum values (inclusive) of mean signal (in ADU) below which to consider, "
                    "per amp; {'ALL_AMPS': value} applies to all amps.")
    maskNameList: list[str] = Field(
        default_factory=lambda: ["SUSPECT", "BAD", "NO_DATA", "SAT"],
        description="Mask list to exclude from statistics calculations.")
    nSigmaClipPtc: float = Field(5.5, gt=0, description="Sigma cut for the clipped statistics.")
    nIterSigmaClipPtc: int = Field(3, ge=1, description="Number of sigma-clipping iterations.")
    minNumberGoodPixelsForCovariance: int = Field(
        10000, ge=1, description="Minimum number of acceptable good pixels per amp to calculate "
                                 "the covariances (via FFT or directly).")
    thresholdDiffAfwVarVsCov00: float = Field(
        1.0, description="If the absolute fractional difference (percent) between the clipped "
                         "variance and Cov00 of a difference image exceeds this, warn.")
    detectorMeasurementRegion: Literal["AMP", "FULL", "GRID"] | None = Field(
        "AMP", description="Region of each exposure where to perform the calculations: AMP "
                           "(amplifier), FULL (full image), GRID (ccdflow: each amp on a grid of "
                           "boxes of gridSize pixels, one PTC point per box).")
    gridSize: int | list[int] = Field(
        64,
        description="ccdflow GRID region: box size in pixels, one int (square boxes) or [nx, ny] "
                    "(<= 0: whole amp along that axis); the covariance pixel minimum becomes "
                    "min(minNumberGoodPixelsForCovariance, box area / 2).")
    numEdgeSuspect: int = Field(0, ge=0, description="Number of edge pixels to be flagged as untrustworthy.")
    edgeMaskLevel: Literal["DETECTOR", "AMP"] | None = Field(
        "DETECTOR", description="Mask edge pixels in which coordinate frame: DETECTOR or AMP?")
    doGain: bool = Field(True, description="Calculate a gain per input flat pair.")
    gainCorrectionType: Literal["NONE", "SIMPLE", "FULL"] | None = Field(
        "FULL", description="Correction type for the gain.")
    doGainFluxNormalization: bool = Field(
        True, description="ccdflow: compute the per-pair gain from the two flats scaled to their common "
                          "mean (removes the (dmu/mu)^2 mu/2 bias of a lamp drift between the exposures); "
                          "False = cp_pipe (raw images).")
    numThreads: int = Field(
        1, ge=1, description="ccdflow: amplifiers measured concurrently (threads) within one quantum; "
                             "keep 1 when running several processes (-j).")
    useNominalReadNoise: bool = Field(
        True, description="ccdflow: when the ISR overscan-residual header is absent, use the "
                          "amp's nominal read noise / gain (ADU) for the gain correction instead of NaN.")

    @model_validator(mode="after")
    def _check(self) -> PhotonTransferCurveExtractConfig:
        if not isinstance(self.gridSize, int) and len(self.gridSize) != 2:
            raise ValueError(f"gridSize must be an int or [nx, ny], got {self.gridSize}")
        return self


def amp_value(values: dict[str, float], amp: str, default: float) -> float:
    """Per-amp value from an ``{amp: v}`` / ``{"ALL_AMPS": v}`` config dict."""
    if amp in values:
        return float(values[amp])
    return float(values.get("ALL_AMPS", default))


def pair_exposures(
    exp_ids: Sequence[int],
    exp_times: Sequence[float],
    *,
    match_type: str = "TIME",
    fluxes: Sequence[float] | None = None,
    time_tolerance: float = 5e-3,
    pair_extra: bool = False,
) -> tuple[list[tuple[int, int]], list[str]]:
    """Form flat pairs.

    Parameters
    ----------
    exp_ids : sequence of `int`
        Exposure ids.
    exp_times : sequence of `float`
        Exposure times (s).
    match_type : {"TIME", "FLUX", "EXPID"}
        TIME: exposures whose times agree within ``time_tolerance`` form a group; FLUX: same
        with ``fluxes``; EXPID: consecutive exposures in id order, (0, 1), (2, 3), ...
    fluxes : sequence of `float`, optional
        Needed for FLUX (NaN = unknown).
    time_tolerance : `float`
        Tolerance for TIME/FLUX equality.
    pair_extra : `bool`
        ``pairExtraExposures``: in a group of more than two exposures (in id order) form the
        consecutive pairs ``(e0, e1), (e2, e3), ...``; an odd last exposure is paired with its
        predecessor (a triplet gives ``(e0, e1)`` and ``(e1, e2)``: two points that share
        ``e1``, so their noise is correlated at the ~50 % level, but no flat is wasted).
        Each pair still has a distinct first exposure, where its partial is written.

    Returns
    -------
    pairs : `list` of ``(i, j)``
        Indices into the inputs, ``exp_ids[i] < exp_ids[j]``, sorted by ``exp_ids[i]``.
    warnings : `list` of `str`
        Groups dropped (single, non-finite key) or truncated (more than two exposures without
        ``pair_extra``: the two lowest ids are used and the others dropped, as cp_pipe's
        ``PhotonTransferCurveExtractTask``, reference-algorithms §3.2).

    Raises
    ------
    ValueError
        For an unknown ``match_type`` or FLUX without ``fluxes``.
    """
    order = sorted(range(len(exp_ids)), key=lambda k: exp_ids[k])
    warnings: list[str] = []
    if match_type == "EXPID":
        pairs = [(order[k], order[k + 1]) for k in range(0, len(order) - 1, 2)]
        if len(order) % 2:
            warnings.append(f"exposure {exp_ids[order[-1]]} has no partner (EXPID pairing) and is dropped")
        return pairs, warnings
    if match_type == "TIME":
        keys = [float(t) for t in exp_times]
    elif match_type == "FLUX":
        if fluxes is None:
            raise ValueError("matchExposuresType FLUX needs the flux of each exposure")
        keys = [float(f) for f in fluxes]
    else:
        raise ValueError(f"matchExposuresType must be TIME, FLUX or EXPID, not {match_type!r}")
    groups: list[list[int]] = []
    for k in sorted(order, key=lambda k: (keys[k] if math.isfinite(keys[k]) else math.inf, exp_ids[k])):
        if not math.isfinite(keys[k]):
            warnings.append(f"exposure {exp_ids[k]} has no finite {match_type.lower()} and is dropped")
            continue
        if groups and abs(keys[groups[-1][0]] - keys[k]) <= time_tolerance:
            groups[-1].append(k)
        else:
            groups.append([k])
    pairs = []
    for g in groups:
        g = sorted(g, key=lambda k: exp_ids[k])
        if len(g) == 1:
            warnings.append(f"exposure {exp_ids[g[0]]} ({match_type.lower()} {keys[g[0]]}) has no "
                            "partner and is dropped")
            continue
        if len(g) > 2 and pair_extra:
            pairs.extend((g[k], g[k + 1]) for k in range(0, len(g) - 1, 2))
            if len(g) % 2:
                pairs.append((g[-2], g[-1]))
            continue
        if len(g) > 2:
            warnings.append(f"{len(g)} exposures share {match_type.lower()} {keys[g[0]]}: using "
                            f"{exp_ids[g[0]]} and {exp_ids[g[1]]}, dropping {[exp_ids[k] for k in g[2:]]} "
                            "(set pairExtraExposures to pair them too)")
        pairs.append((g[0], g[1]))
    pairs.sort(key=lambda p: exp_ids[p[0]])
    return pairs, warnings


def _bad_pixels(exp: Any, mask_names: Sequence[str]) -> np.ndarray | None:
    """Pixels of ``exp`` with any of the ``mask_names`` planes set (`None` when there are none).

    A bitwise-OR reduction over the mask (no temporary) finds the common case of a mask with
    none of these bits set anywhere, which then costs no boolean image.
    """
    mi = exp.masked_image
    bits = mi.get_plane_bitmask([n for n in mask_names if n in mi.mask_planes])
    mask = np.asarray(exp.mask)
    if not bits or not mask.size or not (int(np.bitwise_or.reduce(mask, axis=None)) & bits):
        return None
    return (mask & bits) != 0


def _load(obj: Any) -> Any:
    """Return an Exposure from either an Exposure or a deferred handle."""
    return obj.get() if hasattr(obj, "get") and not hasattr(obj, "masked_image") else obj


class PhotonTransferCurveExtractTask(PipelineTask):
    """Measure means, variances, covariances and gains of flat pairs (cp_pipe ``cpPtcExtract``).

    Notes
    -----
    See the module docstring for how quanta and outputs are formed and reference-algorithms §3
    for the measurement; the math is in `pipeline.tasks.cp.ptc_math`.
    """

    ConfigClass = PhotonTransferCurveExtractConfig
    _DefaultName = "cpPtcExtract"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Read the flats lazily, pair and measure them, write one partial per input exposure."""
        refs = list(inputRefs.inputExp)
        handles = butlerQC.get(refs)
        dims = [int(r.data_id["exposure"]) for r in refs]
        result = self.run(inputExp=handles, inputDims=dims)
        out_refs = list(outputRefs.outputCovariances)
        by_exp = {int(r.data_id["exposure"]): r for r in out_refs}
        objs = [result.outputCovariances[dims.index(e)] for e in by_exp]
        butlerQC.put(objs, [by_exp[e] for e in by_exp])

    def run(self, inputExp: Sequence[Any], inputDims: Sequence[int], taskMetadata: Any = None) -> Struct:
        """Pair and measure flats.

        Parameters
        ----------
        inputExp : sequence of `~pipeline.image.Exposure` (or deferred handles)
            ISR-processed flats of one detector, assembled and trimmed, in ADU.
        inputDims : sequence of `int`
            Exposure id of each input.
        taskMetadata : optional
            Unused (cp_pipe compatibility).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputCovariances``: one `PhotonTransferCurveDataset` per input, in input order
            (a ``PARTIAL`` one at the first exposure of each pair, ``DUMMY`` elsewhere).

        Raises
        ------
        ValueError
            If ``inputExp`` and ``inputDims`` differ in length, or the two flats of a pair
            have different shapes.
        """
        cfg = self.config
        if len(inputExp) != len(inputDims):
            raise ValueError(f"inputExp has {len(inputExp)} entries but inputDims {len(inputDims)}")
        # Exposure times / fluxes: from the handles' data ID records when possible (no pixel read)
        times, fluxes, headers = [], [], {}
        for k, obj in enumerate(inputExp):
            t, f = self._time_and_flux(obj, cfg.matchExposuresByFluxKeyword)
            if t is None or (cfg.matchExposuresType == "FLUX" and f is None):
                exp = _load(obj)
                if exp is obj:  # already in memory: keep it
                    headers[k] = exp
                # (a deferred handle is read again when its pair is measured: memory stays at
                # two flats instead of the whole sequence)
                t = float(exp.info.exposure_time)
                f = float(exp.metadata.get(cfg.matchExposuresByFluxKeyword, np.nan))
            times.append(float(t))
            fluxes.append(float(f) if f is not None else float("nan"))
        pairs, warnings = pair_exposures(
            list(inputDims), times, match_type=cfg.matchExposuresType or "TIME", fluxes=fluxes,
            time_tolerance=cfg.matchExposuresTimeTolerance, pair_extra=cfg.pairExtraExposures)
        for w in warnings:
            self.log.warning(w)
        outputs: list[PhotonTransferCurveDataset | None] = [None] * len(inputExp)
        for i, j in pairs:
            e1 = headers.pop(i) if i in headers else _load(inputExp[i])
            e2 = headers.pop(j) if j in headers else _load(inputExp[j])
            outputs[i] = self.measure(e1, e2, (int(inputDims[i]), int(inputDims[j])),
                                      (times[i], times[j]))
        measured = [o for o in outputs if o is not None]
        amp_names = measured[0].ampNames if measured else self._amp_names(inputExp, headers)
        for k in range(len(outputs)):
            if outputs[k] is None:
                outputs[k] = PhotonTransferCurveDataset.make_dummy(
                    amp_names, cfg.maximumRangeCovariancesAstier)
        return Struct(outputCovariances=outputs)

    @staticmethod
    def _time_and_flux(obj: Any, flux_key: str) -> tuple[float | None, float | None]:
        ref = getattr(obj, "ref", None)
        if ref is not None:
            try:
                rec = ref.data_id.records["exposure"]
                return float(rec.exposure_time), None
            except (AttributeError, KeyError, TypeError):
                return None, None
        if hasattr(obj, "info"):
            return float(obj.info.exposure_time), float(obj.metadata.get(flux_key, np.nan))
        return None, None

    def _amp_names(self, inputExp: Sequence[Any], loaded: dict) -> list[str]:
        for obj in list(loaded.values()) + list(inputExp):
            det = getattr(obj, "detector", None)
            if det is not None:
                return [a.name for a in det]
        return []

    @property
    def grid_size(self) -> tuple[int, int]:
        """``gridSize`` as ``(nx, ny)``."""
        gs = self.config.gridSize
        return (gs, gs) if isinstance(gs, int) else (int(gs[0]), int(gs[1]))

    def measure(self, exp1: Any, exp2: Any, exp_ids: tuple[int, int],
                exp_times: tuple[float, float]) -> PhotonTransferCurveDataset:
        """Measure one pair of flats into a partial PTC.

        Parameters
        ----------
        exp1, exp2 : `~pipeline.image.Exposure`
            The two flats (same detector, same shape), ADU.
        exp_ids : `tuple` of `int`
            Their exposure ids.
        exp_times : `tuple` of `float`
            Their exposure times (s).

        Returns
        -------
        partial : `PhotonTransferCurveDataset`
            ``ptcFitType="PARTIAL"``, per amp one point (AMP/FULL) or one per grid box (GRID).

        Raises
        ------
        ValueError
            If the shapes differ or the exposure has no detector.
        """
        cfg = self.config
        if exp1.detector is None:
            raise ValueError(f"exposure {exp_ids[0]} has no detector attached; cannot find the amplifiers")
        if exp1.image.shape != exp2.image.shape:
            raise ValueError(f"flats {exp_ids} have different shapes {exp1.image.shape} and "
                             f"{exp2.image.shape}")
        det = exp1.detector
        regions = {a.name: a.bbox.slices for a in det}
        bad = [_bad_pixels(e, cfg.maskNameList) for e in (exp1, exp2)]
        read_noise = {}
        for a in det:
            vals = []
            for e in (exp1, exp2):
                v = e.metadata.get(f"{READ_NOISE_KEY} {a.name}")
                vals.append(float(v) if v is not None else np.nan)
            rn = float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else float("nan")
            if not np.isfinite(rn) and cfg.useNominalReadNoise and a.gain > 0 and np.isfinite(a.read_noise):
                rn = a.read_noise / a.gain
            read_noise[a.name] = rn
        meas = measure_pair(
            np.asarray(exp1.image), np.asarray(exp2.image), bad[0], bad[1], regions,
            region=cfg.detectorMeasurementRegion or "AMP", grid_size=self.grid_size,
            read_noise_adu=read_noise, edge_level=cfg.edgeMaskLevel,
            num_edge_suspect=cfg.numEdgeSuspect, max_range=cfg.maximumRangeCovariancesAstier,
            nsigma=cfg.nSigmaClipPtc, niter=cfg.nIterSigmaClipPtc, bin_size=cfg.binSize,
            min_good_pixels=cfg.minNumberGoodPixelsForCovariance, do_gain=cfg.doGain,
            gain_correction=cfg.gainCorrectionType or "NONE", n_threads=cfg.numThreads,
            gain_flux_normalization=cfg.doGainFluxNormalization,
        )
        m = cfg.maximumRangeCovariancesAstier
        ptc = PhotonTransferCurveDataset([a.name for a in det], "PARTIAL", m)
        for amp, points in meas.items():
            lo = amp_value(cfg.minMeanSignal, amp, 0.0)
            hi = amp_value(cfg.maxMeanSignal, amp, 1e6)
            for p in points:
                measured = p.covariances.size and np.isfinite(p.covariances[0, 0])
                if p.valid and np.isfinite(p.raw_var) and measured:
                    c00 = p.covariances[0, 0]
                    diff = 100.0 * abs(1.0 - p.raw_var / c00) if c00 else np.inf
                    if diff >= cfg.thresholdDiffAfwVarVsCov00:
                        self.log.warning("amp %s pair %s: clipped variance and Cov00 differ by %.2f%%",
                                         amp, exp_ids, diff)
                elif not p.valid:
                    self.log.warning("amp %s pair %s: no measurement (%s)", amp, exp_ids, p.reason)
            ptc.append_points(
                amp,
                rawExpTimes=np.full(len(points), 0.5 * (exp_times[0] + exp_times[1])),
                rawMeans=np.array([p.mean for p in points]),
                rawVars=np.array([p.raw_var for p in points]),
                rawDeltas=np.array([p.mean2 - p.mean1 for p in points]),
                rowMeanVariance=np.array([p.row_mean_variance for p in points]),
                gainList=np.array([p.gain for p in points]),
                noiseList=np.full(len(points), read_noise[amp]),
                covariances=np.array([p.covariances for p in points]).reshape(-1, m, m),
                covariancesSqrtWeights=np.array([p.sqrt_weights for p in points]).reshape(-1, m, m),
                nPixelCovariances=np.array([p.npix_cov for p in points], float).reshape(-1, m, m),
                inputExpIdPairs=np.tile(np.array(exp_ids, np.int64), (len(points), 1)),
                expIdMask=np.array([p.valid and lo <= p.mean <= hi for p in points], bool),
            )
        ptc.metadata.update(detector=det.id, region=cfg.detectorMeasurementRegion, expIds=list(exp_ids))
        return ptc
