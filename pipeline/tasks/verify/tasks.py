"""cp_verify tasks: per-exposure statistics and tests, and the per-run merge.

Each ``Verify<Calib>.yaml`` pipeline runs IsrTask with the candidate calibration on exposures of
the same kind (``verify<Calib>Proc``), then a ``CpVerify<Calib>Task`` per exposure and detector
(``verify<Calib>DetStats``: statistics, tests and ``SUCCESS``), then `CpVerifyRunMergeTask`
(``verify<Calib>Stats``: every input; ``verify<Calib>Results``: pass/fail per test and amp, the
failures listed). `CpVerifyPtcTask` tests a ``ptc`` per detector and `CpVerifyCalibMergeTask`
merges those. The statistics and tests are in `pipeline.tasks.verify.verify_stats`.

Layout of a ``...DetStats`` dataset (a `dict`)::

    {"exposure": id, "detector": id, "calibType": "bias",
     "AMP": {amp: {"MEAN": ..., "NOISE": ..., ...}}, "DET": {...},
     "VERIFY": {"AMP": {amp: {"MEAN": True, ..., "SUCCESS": True}}, "DET": {...}},
     "SUCCESS": True}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import pipeline.connection_types as cT  # noqa: N812 (contract spelling)
from pipeline.config import Field
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask

from .verify_stats import (
    amp_statistics,
    defect_statistics,
    normalized_noise,
    ptc_noise_scatter,
    success,
    verify_bias_amp,
    verify_defects_amp,
    verify_flat_amp,
    verify_flat_detector,
    verify_flat_exposure,
    verify_ptc_amp,
)

__all__ = [
    "CpVerifyBiasConfig",
    "CpVerifyBiasTask",
    "CpVerifyCalibMergeTask",
    "CpVerifyDarkConfig",
    "CpVerifyDarkTask",
    "CpVerifyDefectsConfig",
    "CpVerifyDefectsTask",
    "CpVerifyFlatConfig",
    "CpVerifyFlatTask",
    "CpVerifyPtcTask",
    "CpVerifyRunMergeTask",
    "CpVerifyStatsConfig",
    "CpVerifyStatsTask",
    "collect_failures",
    "previous_certified_ptc",
]


def _header_float(md: Any, key: str) -> float | None:
    if md is None or key not in md:
        return None
    try:
        v = float(md[key])
    except (TypeError, ValueError):
        return None
    return v if v == v else None


# ------------------------------------------------------------------------- per exposure
class CpVerifyStatsConnections(PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    """One ISR-processed exposure in, its statistics and tests out."""

    inputExp = cT.Input(
        name="verifyBiasProc",
        storageClass="Exposure",
        doc="Exposure processed with the candidate calibration.",
        dimensions=("instrument", "exposure", "detector"),
    )
    outputStats = cT.Output(
        name="verifyBiasDetStats",
        storageClass="StructuredDataDict",
        doc="Statistics, tests and SUCCESS of this exposure and detector.",
        dimensions=("instrument", "exposure", "detector"),
    )


class CpVerifyDefectsConnections(CpVerifyStatsConnections):
    """`CpVerifyStatsConnections` plus the candidate ``defects`` (read when ``useDefects``)."""

    inputDefects = cT.PrerequisiteInput(
        name="defects",
        storageClass="IsrCalib",
        doc="Candidate defects.",
        dimensions=("instrument", "detector"),
        isCalibration=True,
        minimum=0,
    )

    def __init__(self, *, config: Any = None) -> None:
        super().__init__(config=config)
        if config is not None and not config.useDefects:
            self.prerequisiteInputs.discard("inputDefects")


class CpVerifyStatsConfig(PipelineTaskConfig, pipelineConnections=CpVerifyStatsConnections):
    """Fields common to the per-exposure verification tasks (cp_verify ``CpVerifyStatsConfig``).

    Each task has its own subclass holding only the fields it reads: `CpVerifyBiasConfig`,
    `CpVerifyDarkConfig`, `CpVerifyFlatConfig`, `CpVerifyDefectsConfig`.
    """

    maskNameList: list[str] = Field(
        default_factory=lambda: ["BAD", "SAT", "NO_DATA", "UNMASKEDNAN", "INTRP"],
        description="Mask planes excluded from the statistics.",
    )
    numSigmaClip: float = Field(3.0, gt=0, description="Sigma for the clipped statistics.")


class _CpVerifyAmpStatsConfig(CpVerifyStatsConfig):
    """Fields of the iterated, clipped per-amp statistics (bias, dark, flat)."""

    clipMaxIter: int = Field(3, ge=1, description="Iterations of the clipped statistics.")
    crSigma: float = Field(5.0, gt=0, description="Cosmic-ray detection threshold (sigma above the mean).")
    noiseThreshold: float = Field(
        0.05, gt=0, description="Allowed relative excess of the noise (DMTN-101 4.3; flat: 10.X)."
    )


class CpVerifyBiasConfig(_CpVerifyAmpStatsConfig):
    """Configuration of `CpVerifyBiasTask` (DMTN-101 tests 4.2-4.4)."""

    useReadNoise: bool = Field(True, description="Compare the noise against the read noise (NOISE test).")
    crNoiseThreshold: float = Field(0.05, gt=0, description="Allowed NOISE / CR_NOISE difference (4.4).")


class CpVerifyDarkConfig(CpVerifyBiasConfig):
    """Configuration of `CpVerifyDarkTask` (the bias tests on the dark residual)."""


class CpVerifyFlatConfig(_CpVerifyAmpStatsConfig):
    """Configuration of `CpVerifyFlatTask` (DMTN-101 10.X, 10.Y)."""

    useFlatVariance: bool = Field(
        True,
        description="Flat NOISE test against the ISR variance plane (NOISE_RATIO <= 1 + noiseThreshold; "
        "ccdflow); False: cp_verify's NOISE <= sqrt(MEAN), which fails good flats of non-uniform "
        "illumination (spectral dome flats).",
    )
    flatScatterThreshold: float = Field(0.05, gt=0, description="Allowed amp-to-amp std / mean (10.Y).")


class CpVerifyDefectsConfig(CpVerifyStatsConfig, pipelineConnections=CpVerifyDefectsConnections):
    """Configuration of `CpVerifyDefectsTask`."""

    useDefects: bool = Field(
        False, description="Read the candidate defects (False: verify against no defects)."
    )
    maxDefectFraction: float = Field(0.05, gt=0, description="Largest defect fraction of an amp.")
    maxOutliers: int = Field(10, ge=0, description="Most unmasked >outlierSigma pixels allowed per amp.")
    outlierSigma: float = Field(5.0, gt=0, description="Outlier threshold (sigma) of VerifyDefects.")


class CpVerifyStatsTask(PipelineTask):
    """Base of the per-exposure verification tasks: per-amp statistics, then `verify_amps`."""

    ConfigClass = CpVerifyStatsConfig
    _DefaultName = "cpVerifyStats"
    calibType = "generic"

    def run(self, inputExp: Any, inputDefects: Any = None) -> Struct:
        """Measure and test one exposure.

        Parameters
        ----------
        inputExp : `pipeline.image.Exposure`
            Exposure processed with the candidate calibration (ADU), with its detector.
        inputDefects : `pipeline.tasks.isr.calibs.Defects`, optional
            Candidate defects (VerifyDefects).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputStats``: the dictionary of the module docstring.

        Raises
        ------
        ValueError
            If the exposure has no detector.
        """
        det = inputExp.detector
        if det is None:
            raise ValueError(f"exposure {inputExp.info.id} has no detector; cannot verify per amp")
        mi = inputExp.masked_image
        planes = [p for p in self.config.maskNameList if p in mi.mask_planes]
        bad = (mi.mask & mi.get_plane_bitmask(planes)) != 0 if planes else np.zeros(mi.shape, bool)
        image = np.asarray(mi.image)
        out: dict[str, Any] = {
            "exposure": inputExp.info.id,
            "detector": det.id,
            "calibType": self.calibType,
            "AMP": {},
            "DET": {},
            "METADATA": {},
            "VERIFY": {"AMP": {}, "DET": {}},
        }
        self.measure(inputExp, image, bad, inputDefects, out)
        groups = [out["VERIFY"]["AMP"][a] for a in out["VERIFY"]["AMP"]]
        if out["VERIFY"]["DET"]:
            groups.append(out["VERIFY"]["DET"])
        out["SUCCESS"] = bool(all(g.get("SUCCESS", success(g)) for g in groups))
        if not out["SUCCESS"]:
            failed = [
                f"{a}:{t}"
                for a, g in out["VERIFY"]["AMP"].items()
                for t, ok in g.items()
                if t not in INFORMATIONAL_TESTS and not ok
            ]
            failed += [f"DET:{t}" for t, ok in out["VERIFY"]["DET"].items() if t != "SUCCESS" and not ok]
            self.log.warning(
                "%s verification of exposure %s detector %s failed: %s",
                self.calibType,
                out["exposure"],
                out["detector"],
                ", ".join(failed),
            )
        return Struct(outputStats=out)

    def measure(self, exp: Any, image: np.ndarray, bad: np.ndarray, defects: Any, out: dict) -> None:
        """Fill ``out`` (AMP, DET, METADATA, VERIFY); subclasses implement."""
        raise NotImplementedError

    def _amp_stats(self, image: np.ndarray, bad: np.ndarray, amp: Any) -> dict[str, float]:
        sl = amp.bbox.slices
        c = self.config
        return amp_statistics(
            image[sl], bad[sl], nsigma=c.numSigmaClip, niter=c.clipMaxIter, cr_sigma=c.crSigma
        )


class CpVerifyBiasTask(CpVerifyStatsTask):
    """Verify a bias on other biases (cp_verify ``CpVerifyBiasTask``; DMTN-101 tests 4.2-4.4).

    The read noise is the ISR's effective one (header ``LSST ISR READNOISE <amp>``, e⁻, divided
    by ``LSST ISR GAIN <amp>``), else the camera's; ``READ_NOISE_CONSISTENT`` compares it with the
    residual overscan noise (``LSST ISR OVERSCAN RESIDUAL SERIAL STDEV <amp>``).
    """

    ConfigClass = CpVerifyBiasConfig
    _DefaultName = "cpVerifyBias"
    calibType = "bias"

    def measure(self, exp: Any, image: np.ndarray, bad: np.ndarray, defects: Any, out: dict) -> None:
        """Per-amp residual statistics and the bias tests."""
        md = exp.metadata
        c = self.config
        for amp in exp.detector:
            stats = self._amp_stats(image, bad, amp)
            gain = _header_float(md, f"LSST ISR GAIN {amp.name}") or float(amp.gain)
            rn_e = _header_float(md, f"LSST ISR READNOISE {amp.name}")
            rn = (rn_e if rn_e is not None else float(amp.read_noise)) / gain
            over = _header_float(md, f"LSST ISR OVERSCAN RESIDUAL SERIAL STDEV {amp.name}")
            stats["READ_NOISE"] = rn
            out["AMP"][amp.name] = stats
            if over is not None:
                out["METADATA"].setdefault("RESIDUAL STDEV", {})[amp.name] = over
            tests = verify_bias_amp(
                stats,
                rn if c.useReadNoise else stats["NOISE"],
                noise_threshold=c.noiseThreshold,
                cr_noise_threshold=c.crNoiseThreshold,
                overscan_noise=over,
            )
            out["VERIFY"]["AMP"][amp.name] = tests


class CpVerifyDarkTask(CpVerifyBiasTask):
    """Verify a dark on other darks (cp_verify ``CpVerifyDarkTask``: the bias tests on the residual)."""

    ConfigClass = CpVerifyDarkConfig
    _DefaultName = "cpVerifyDark"
    calibType = "dark"


class CpVerifyFlatTask(CpVerifyStatsTask):
    """Verify a flat on other flats (cp_verify ``CpVerifyFlatTask``; DMTN-101 10.X, 10.Y).

    ``NOISE`` per amp: the clipped noise over the noise the ISR propagated into the variance
    plane (``NOISE_RATIO``, 1 for shot + read noise + the candidate flat's noise) must not
    exceed ``1 + noiseThreshold``; with ``useFlatVariance=False``, cp_verify's ``NOISE <=
    sqrt(MEAN)`` (see `pipeline.tasks.verify.verify_stats.verify_flat_amp`).
    """

    ConfigClass = CpVerifyFlatConfig
    _DefaultName = "cpVerifyFlat"
    calibType = "flat"

    def measure(self, exp: Any, image: np.ndarray, bad: np.ndarray, defects: Any, out: dict) -> None:
        """Per-amp level and noise (Poisson test), amp-to-amp scatter of the levels."""
        c = self.config
        variance = np.asarray(exp.masked_image.variance) if c.useFlatVariance else None
        for amp in exp.detector:
            stats = self._amp_stats(image, bad, amp)
            if variance is not None:
                sl = amp.bbox.slices
                stats["NOISE_RATIO"] = normalized_noise(
                    image[sl], variance[sl], bad[sl], nsigma=c.numSigmaClip, niter=c.clipMaxIter
                )
            out["AMP"][amp.name] = stats
            out["VERIFY"]["AMP"][amp.name] = verify_flat_amp(stats, c.noiseThreshold)
        det_stats, det_tests = verify_flat_detector(
            [s["MEAN"] for s in out["AMP"].values()], self.config.flatScatterThreshold
        )
        out["DET"] = det_stats
        out["VERIFY"]["DET"] = det_tests


class CpVerifyDefectsTask(CpVerifyStatsTask):
    """Verify defects on exposures processed with them (cp_verify ``CpVerifyDefectsTask``).

    Per amp: the defect fraction (``FRACTION``) and the pixels beyond ``outlierSigma`` left
    outside the defects (``OUTLIERS``). Reads the ``defects`` dataset as IsrTask does.
    """

    ConfigClass = CpVerifyDefectsConfig
    _DefaultName = "cpVerifyDefects"
    calibType = "defects"

    def measure(self, exp: Any, image: np.ndarray, bad: np.ndarray, defects: Any, out: dict) -> None:
        """Defect statistics and tests per amp."""
        from pipeline.tasks.isr.calibs import Defects

        c = self.config
        if defects is None:
            defects = Defects()
        elif not isinstance(defects, Defects):
            defects = Defects(defects)
        dmask = defects.to_mask(image.shape)
        # the defect pixels are interpolated by the ISR (INTRP): count them as defects, not as bad
        bad_only = bad & ~dmask
        for amp in exp.detector:
            sl = amp.bbox.slices
            stats = defect_statistics(
                image[sl], dmask[sl], bad_only[sl], nsigma=c.numSigmaClip, outlier_sigma=c.outlierSigma
            )
            out["AMP"][amp.name] = stats
            out["VERIFY"]["AMP"][amp.name] = verify_defects_amp(
                stats, max_fraction=c.maxDefectFraction, max_outliers=c.maxOutliers
            )


# ------------------------------------------------------------------------------------ PTC
def previous_certified_ptc(dataset_type: Any, registry: Any, data_id: Any, collections: Any) -> list[Any]:
    """Lookup function of `CpVerifyPtcConnections.inputReferencePtc`: the previous certified PTC.

    Along the input collections, the candidate is the first ``ptc`` of the detector found in a
    RUN or TAGGED collection (where ``cpPtc`` writes it); the reference is, among the ``ptc``
    datasets of the detector certified in the CALIBRATION collections of the path, the one other
    than the candidate whose validity range begins last (the most recent certification).

    Parameters
    ----------
    dataset_type : `butler.DatasetType`
        ``ptc``.
    registry : `butler.registry.Registry`
    data_id : mapping
        The quantum's ``instrument`` and ``detector``.
    collections : sequence of `str`
        The input collections.

    Returns
    -------
    refs : `list` of `butler.DatasetRef`
        The reference, or empty (no earlier certified PTC: the camera's values are used).
    """
    from butler import CollectionType

    keys = ("instrument", "detector")
    want = tuple(data_id[k] for k in keys)
    name = getattr(dataset_type, "name", str(dataset_type))
    candidate_id = None
    certified: list[tuple[int, Any]] = []
    for rec in registry.resolve_collections(list(collections)):
        if rec.type == CollectionType.CALIBRATION:
            for ref, ts in registry.query_calibration_validity(rec.name, name):
                if tuple(ref.data_id[k] for k in keys) == want:
                    certified.append((int(ts.begin_ns), ref))
        elif candidate_id is None and rec.type in (CollectionType.RUN, CollectionType.TAGGED):
            for ref in registry.query_datasets(name, collections=[rec.name], find_first=True):
                if tuple(ref.data_id[k] for k in keys) == want:
                    candidate_id = ref.id
                    break
    others = [(b, r) for b, r in certified if r.id != candidate_id]
    if not others:
        return []
    return [max(others, key=lambda br: br[0])[1]]


class CpVerifyPtcConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """The candidate ``ptc`` and the previous certified one in, its tests out."""

    inputPtc = cT.Input(
        name="ptc",
        storageClass="PhotonTransferCurveDataset",
        doc="Candidate photon transfer curve (the first ptc of the input collections).",
        dimensions=("instrument", "detector"),
        isCalibration=True,
    )
    inputReferencePtc = cT.PrerequisiteInput(
        name="ptc",
        storageClass="PhotonTransferCurveDataset",
        doc="Previous certified photon transfer curve (the reference); without one the camera's "
        "nominal gain and read noise are the reference, as in cp_verify.",
        dimensions=("instrument", "detector"),
        isCalibration=True,
        minimum=0,
        lookupFunction=previous_certified_ptc,
    )
    outputStats = cT.Output(
        name="verifyPtcDetStats",
        storageClass="StructuredDataDict",
        doc="PTC statistics, tests and SUCCESS of this detector.",
        dimensions=("instrument", "detector"),
    )


class CpVerifyPtcConfig(PipelineTaskConfig, pipelineConnections=CpVerifyPtcConnections):
    """Configuration of `CpVerifyPtcTask` (cp_verify names, units and defaults)."""

    gainThreshold: float = Field(
        5.0, gt=0, description="Maximum percentage difference between PTC gain and the reference gain."
    )
    noiseThreshold: float = Field(
        5.0,
        gt=0,
        description="Maximum percentage difference between PTC readout noise and the reference "
        "readout noise.",
    )
    turnoffThreshold: float = Field(
        90000.0,
        ge=0,
        description="Minimum full well requirement (electron), compared with the PTC turnoff x gain.",
    )


class CpVerifyPtcTask(PipelineTask):
    """Verify a PTC (cp_verify ``CpVerifyPtcTask``; DMTN-101 16.1-16.3) against the previous one.

    Per amp: ``PTC_GAIN`` and ``PTC_NOISE`` (within ``gainThreshold`` / ``noiseThreshold`` percent
    of the reference), ``NOISE_SIGNAL_INDEPENDENCE`` (the per-pair overscan noise does not move
    with the signal) and ``PTC_TURNOFF`` (turnoff above ``turnoffThreshold`` e⁻). The reference
    is the previous certified ``ptc`` of the detector (`previous_certified_ptc`); without one,
    the camera's nominal amp gain and read noise (cp_verify's reference). ``REF_SOURCE`` in the
    statistics says which was used.
    """

    ConfigClass = CpVerifyPtcConfig
    _DefaultName = "cpVerifyPtc"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Read the candidate, the reference (if any) and the camera's detector; test; write."""
        cand = butlerQC.get(inputRefs.inputPtc)
        cand = cand[0] if isinstance(cand, list) else cand
        found = getattr(inputRefs, "inputReferencePtc", None)
        ref_refs = list(found) if isinstance(found, (list, tuple)) else ([] if found is None else [found])
        reference = butlerQC.get(ref_refs[0]) if ref_refs else None
        detector = None
        try:
            from pipeline.instruments import get_instrument

            did = outputRefs.outputStats.data_id
            detector = get_instrument(str(did["instrument"])).camera[int(did["detector"])]
        except Exception:  # noqa: BLE001 - a camera not registered by name: the PTC reference only
            detector = None
        res = self.run(cand, inputReferencePtc=reference, detector=detector)
        if ref_refs:
            res.outputStats["REFERENCE"] = {"run": ref_refs[0].run, "id": str(ref_refs[0].id)}
        butlerQC.put(res.outputStats, outputRefs.outputStats)

    def run(self, inputPtc: Any, inputReferencePtc: Any = None, detector: Any = None) -> Struct:
        """Test every amp of one PTC.

        Parameters
        ----------
        inputPtc : `~pipeline.tasks.cp.ptc_dataset.PhotonTransferCurveDataset`
            Candidate (gain e⁻/ADU, noise e⁻, turnoff ADU, per-pair ``noiseList`` ADU).
        inputReferencePtc : `~pipeline.tasks.cp.ptc_dataset.PhotonTransferCurveDataset`, optional
            Previous certified PTC: the reference gain and noise.
        detector : `pipeline.image.Detector`, optional
            Camera detector: the nominal amp gain and read noise (reference without a previous
            PTC, or for an amp the previous PTC lacks).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputStats``: ``{"calibType": "ptc", "AMP": {amp: stats}, "VERIFY": {"AMP":
            {amp: tests}}, "SUCCESS"}``; the stats hold ``PTC_GAIN``, ``PTC_NOISE``,
            ``PTC_TURNOFF``, ``NOISE_SIGNAL_INDEPENDENCE`` (per-pair noise scatter, ADU),
            ``REF_GAIN``, ``REF_NOISE``, ``REF_SOURCE`` (``"ptc"``, ``"camera"`` or ``"none"``).
        """
        c = self.config
        nominal = {a.name: a for a in detector} if detector is not None else {}
        out: dict[str, Any] = {"calibType": "ptc", "AMP": {}, "VERIFY": {"AMP": {}, "DET": {}}}
        for amp in inputPtc.ampNames:
            gain = float(inputPtc.gain.get(amp, np.nan))
            noise = float(inputPtc.noise.get(amp, np.nan))
            turnoff = float(inputPtc.ptcTurnoff.get(amp, np.nan))
            nl = np.asarray(inputPtc.noiseList.get(amp, []), float)
            mask = np.asarray(inputPtc.expIdMask.get(amp, np.ones(nl.shape, bool)), bool)
            scatter = ptc_noise_scatter(nl[mask] if mask.shape == nl.shape else nl)
            ref_gain = ref_noise = float("nan")
            source = "none"
            if inputReferencePtc is not None and amp in inputReferencePtc.ampNames:
                ref_gain = float(inputReferencePtc.gain.get(amp, np.nan))
                ref_noise = float(inputReferencePtc.noise.get(amp, np.nan))
                source = "ptc"
            if not (ref_gain > 0 and ref_noise > 0) and amp in nominal:
                ref_gain, ref_noise = float(nominal[amp].gain), float(nominal[amp].read_noise)
                source = "camera"
            if source == "none":
                self.log.warning("amp %s: no previous ptc and no camera values; PTC_GAIN/PTC_NOISE fail", amp)
            out["AMP"][amp] = {
                "PTC_GAIN": gain,
                "PTC_NOISE": noise,
                "PTC_TURNOFF": turnoff,
                "NOISE_SIGNAL_INDEPENDENCE": scatter,
                "REF_GAIN": ref_gain,
                "REF_NOISE": ref_noise,
                "REF_SOURCE": source,
            }
            out["VERIFY"]["AMP"][amp] = verify_ptc_amp(
                gain,
                noise,
                turnoff,
                ref_gain,
                ref_noise,
                noise_scatter=scatter if scatter == scatter else None,
                gain_threshold=c.gainThreshold,
                noise_threshold=c.noiseThreshold,
                turnoff_threshold=c.turnoffThreshold,
            )
        out["SUCCESS"] = bool(all(t["SUCCESS"] for t in out["VERIFY"]["AMP"].values()))
        return Struct(outputStats=out)


# ------------------------------------------------------------------------------- merging
#: Tests recorded but not part of a group's SUCCESS (nor counted as failures).
INFORMATIONAL_TESTS = frozenset({"SUCCESS", "READ_NOISE_CONSISTENT"})


def collect_failures(stats: Sequence[Mapping[str, Any]]) -> tuple[dict[str, dict[str, int]], list[dict]]:
    """Count tests and list failures over many ``...DetStats`` dictionaries.

    Returns
    -------
    counts : `dict`
        ``{test: {"n": tests run, "failed": failures}}`` (``SUCCESS`` excluded).
    failures : `list` of `dict`
        One ``{"exposure", "detector", "amp", "test", "value"}`` per failed test (``amp`` is
        ``"DET"`` / ``"EXP"`` for detector / exposure tests; ``value`` the main statistic).
    """
    counts: dict[str, dict[str, int]] = {}
    failures: list[dict] = []
    for s in stats:
        verify = s.get("VERIFY", {})
        groups = [(a, t) for a, t in verify.get("AMP", {}).items()]
        for level in ("DET", "EXP"):
            if verify.get(level):
                groups.append((level, verify[level]))
        for amp, tests in groups:
            source = s.get("AMP", {}).get(amp, {}) if amp not in ("DET", "EXP") else s.get(amp, {})
            for test, ok in tests.items():
                if test in INFORMATIONAL_TESTS:
                    continue
                cnt = counts.setdefault(test, {"n": 0, "failed": 0})
                cnt["n"] += 1
                if not ok:
                    cnt["failed"] += 1
                    value = source.get(test, source.get("MEAN"))
                    failures.append(
                        {
                            "exposure": s.get("exposure"),
                            "detector": s.get("detector"),
                            "amp": amp,
                            "test": test,
                            "value": None if value is None else float(value),
                        }
                    )
    return counts, failures


class CpVerifyRunMergeConnections(PipelineTaskConnections, dimensions=("instrument",)):
    """Every per-exposure verification of the run in, the run's statistics and results out."""

    inputStats = cT.Input(
        name="verifyBiasDetStats",
        storageClass="StructuredDataDict",
        multiple=True,
        doc="Per exposure and detector statistics and tests.",
        dimensions=("instrument", "exposure", "detector"),
    )
    outputStats = cT.Output(
        name="verifyBiasStats",
        storageClass="StructuredDataDict",
        doc="Every input, keyed 'exposure/detector', plus exposure-level statistics.",
        dimensions=("instrument",),
    )
    outputResults = cT.Output(
        name="verifyBiasResults",
        storageClass="StructuredDataDict",
        doc="Run verdict: SUCCESS, per-test counts, the list of failures.",
        dimensions=("instrument",),
    )


class CpVerifyRunMergeConfig(PipelineTaskConfig, pipelineConnections=CpVerifyRunMergeConnections):
    """Configuration of `CpVerifyRunMergeTask`."""

    calibType: str = Field("bias", description="Calibration verified (bias, dark, flat, defects, ptc).")
    exposureScatterThreshold: float = Field(
        0.0,
        ge=0,
        description="If > 0, test detector-to-detector flatness per exposure (std / mean of the "
        "detector means <= threshold; DMTN-101 10.Z, flats).",
    )


class CpVerifyRunMergeTask(PipelineTask):
    """Merge a run's per-exposure verifications (cp_verify ``CpVerifyExpMergeTask`` + ``RunMerge``)."""

    ConfigClass = CpVerifyRunMergeConfig
    _DefaultName = "cpVerifyRunMerge"

    def run(self, inputStats: Sequence[Mapping[str, Any]]) -> Struct:
        """Merge.

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputStats`` (``{"DETECTORS": {"exp/det": stats}, "EXPOSURES": {exp: {...}}}``),
            ``outputResults`` (``{"calibType", "SUCCESS", "N_INPUTS", "TESTS": counts,
            "FAILURES": [...]}``).
        """
        stats = list(inputStats)
        merged: dict[str, Any] = {"DETECTORS": {}, "EXPOSURES": {}}
        for s in stats:
            merged["DETECTORS"][f"{s.get('exposure')}/{s.get('detector')}"] = dict(s)
        extra = []
        thr = self.config.exposureScatterThreshold
        if thr > 0:
            by_exp: dict[Any, list[float]] = {}
            for s in stats:
                if "MEAN" in s.get("DET", {}):
                    by_exp.setdefault(s.get("exposure"), []).append(float(s["DET"]["MEAN"]))
            for exp, means in sorted(by_exp.items(), key=lambda kv: str(kv[0])):
                st, tests = verify_flat_exposure(means, thr)
                merged["EXPOSURES"][str(exp)] = {"EXP": st, "VERIFY": {"EXP": tests}}
                extra.append({"exposure": exp, "detector": None, "EXP": st, "VERIFY": {"EXP": tests}})
        counts, failures = collect_failures(stats + extra)
        ok = not failures
        results = {
            "calibType": self.config.calibType,
            "SUCCESS": ok,
            "N_INPUTS": len(stats),
            "TESTS": counts,
            "FAILURES": failures,
        }
        self.log.info(
            "%s verification: %s (%d input(s), %d failed test(s))",
            self.config.calibType,
            "PASSED" if ok else "FAILED",
            len(stats),
            len(failures),
        )
        return Struct(outputStats=merged, outputResults=results)


class CpVerifyCalibMergeConnections(PipelineTaskConnections, dimensions=("instrument",)):
    """Every per-detector verification (of a calibration itself, e.g. a PTC) in, results out."""

    inputStats = cT.Input(
        name="verifyPtcDetStats",
        storageClass="StructuredDataDict",
        multiple=True,
        doc="Per-detector statistics and tests.",
        dimensions=("instrument", "detector"),
    )
    outputStats = cT.Output(
        name="verifyPtcStats",
        storageClass="StructuredDataDict",
        doc="Every input, keyed by detector.",
        dimensions=("instrument",),
    )
    outputResults = cT.Output(
        name="verifyPtcResults",
        storageClass="StructuredDataDict",
        doc="Run verdict: SUCCESS, per-test counts, the list of failures.",
        dimensions=("instrument",),
    )


class CpVerifyCalibMergeConfig(PipelineTaskConfig, pipelineConnections=CpVerifyCalibMergeConnections):
    """Configuration of `CpVerifyCalibMergeTask`."""

    calibType: str = Field("ptc", description="Calibration verified.")


class CpVerifyCalibMergeTask(PipelineTask):
    """Merge per-detector calibration verifications (cp_verify ``CpVerifyCalibMergeTask``)."""

    ConfigClass = CpVerifyCalibMergeConfig
    _DefaultName = "cpVerifyCalibMerge"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Read the inputs, tag each with its detector, merge, write."""
        refs = list(inputRefs.inputStats)
        stats = [dict(s, detector=r.data_id["detector"]) for s, r in zip(butlerQC.get(refs), refs)]
        res = self.run(stats)
        butlerQC.put(res.outputStats, outputRefs.outputStats)
        butlerQC.put(res.outputResults, outputRefs.outputResults)

    def run(self, inputStats: Sequence[Mapping[str, Any]]) -> Struct:
        """Merge (see `CpVerifyRunMergeTask.run`)."""
        stats = list(inputStats)
        counts, failures = collect_failures(stats)
        merged = {"DETECTORS": {str(s.get("detector")): dict(s) for s in stats}}
        results = {
            "calibType": self.config.calibType,
            "SUCCESS": not failures,
            "N_INPUTS": len(stats),
            "TESTS": counts,
            "FAILURES": failures,
        }
        return Struct(outputStats=merged, outputResults=results)
