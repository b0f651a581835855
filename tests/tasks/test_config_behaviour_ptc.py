"""Every config field of PTC extract/solve, linearity and BFK solve changes the output (behaviour).

Same sweep as `test_config_behaviour_cp` (see `tests/tasks/_behaviour.py`): small synthetic flat
pairs (two 64 x 64 amplifiers, brighter-fatter correlations, a slightly non-linear response) go
through `PhotonTransferCurveExtractTask`; its output feeds the solve sweep, whose solved PTC feeds
the linearity and BFK sweeps. Log warnings count as output (``thresholdDiffAfwVarVsCov00``).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import pytest

from pipeline.image import MASK_PLANES
from pipeline.tasks.cp.bfk import BrighterFatterKernelSolveTask
from pipeline.tasks.cp.linearity import LinearitySolveTask
from pipeline.tasks.cp.ptc_extract import PhotonTransferCurveExtractTask
from pipeline.tasks.cp.ptc_solve import PhotonTransferCurveSolveTask
from tests.cp._synth import SynthDetector, make_detector, make_exposure, make_flat

from ._behaviour import Sweep, sweep_tests

TRUTH = SynthDetector(gains=(1.0, 2.0), read_noise_e=(4.0, 6.0), ny=64, nx_amp=64, alpha=1.25e-7)
SIGNALS = np.geomspace(300, 1.5e5, 12)  # e-
NONLINEAR = 2e-7  # relative response loss per e-


@functools.cache
def _flat_arrays() -> tuple[list[tuple[int, float, np.ndarray, np.ndarray, float]], Any]:
    """(exposure id, time, image, mask, flux keyword) of every flat (a pair per level, plus extras)."""
    rng = np.random.default_rng(42)
    out = []
    exp_id = 1000
    for k, s in enumerate(SIGNALS):
        t = float(s) / 1000.0
        n = 3 if k == 5 else 2  # a triplet at one level (pairExtraExposures)
        for j in range(n):
            img = make_flat(TRUTH, s * (1 - NONLINEAR * s), rng)
            mask = np.zeros(TRUTH.shape, np.int32)
            mask[10, 10 + j] = 1 << MASK_PLANES["SUSPECT"]
            img[10, 10 + j] += 5000.0
            # times of the second flat of level 3 differ by 10 ms (matchExposuresTimeTolerance)
            tj = t + (0.01 if (k == 3 and j == 1) else 0.0)
            out.append((exp_id, tj, img, mask, float(s) * (1.0 + 0.001 * (j % 2))))
            exp_id += 1
    return out, make_detector(TRUTH)


def _extract_inputs() -> dict[str, Any]:
    flats, det = _flat_arrays()
    exps, dims = [], []
    for exp_id, t, img, mask, flux in flats:
        exp = make_exposure(img, det, exp_id, t, mask=mask)
        exp.metadata["CCOBFLUX"] = round(flux, 6)
        exp.metadata["CCOBFLUX2"] = round(flux * (1.0 + 0.01 * (exp_id % 3)), 6)
        exps.append(exp)
        dims.append(exp_id)
    return {"inputExp": exps, "inputDims": dims}


EXTRACT_BASE = {"minNumberGoodPixelsForCovariance": 500, "maximumRangeCovariancesAstier": 4}

EXTRACT = Sweep(
    PhotonTransferCurveExtractTask,
    _extract_inputs,
    base=EXTRACT_BASE,
    variants={
        "flux": {"matchExposuresType": "FLUX", "matchExposuresTimeTolerance": 0.5},
        "grid": {"detectorMeasurementRegion": "GRID", "gridSize": 32},
        "edges": {"numEdgeSuspect": 3},
        "tightclip": {"nSigmaClipPtc": 2.0},  # clipping iterations matter
    },
    cases={
        "matchExposuresType": [("FLUX", "main"), ("EXPID", "main")],
        "matchExposuresByFluxKeyword": [("CCOBFLUX2", "flux")],
        "matchExposuresTimeTolerance": [(0.05, "main")],
        "maximumRangeCovariancesAstier": [(3, "main")],
        "binSize": [(2, "main")],
        "minMeanSignal": [({"ALL_AMPS": 200.0}, "main")],
        "maxMeanSignal": [({"ALL_AMPS": 20000.0}, "main")],
        "maskNameList": [(["BAD"], "main")],
        "nSigmaClipPtc": [(2.0, "main")],
        "nIterSigmaClipPtc": [(1, "tightclip")],
        "minNumberGoodPixelsForCovariance": [(100000, "main")],
        "thresholdDiffAfwVarVsCov00": [(1e-4, "main")],
        "detectorMeasurementRegion": [("FULL", "main"), ("GRID", "main")],
        "gridSize": [(16, "grid")],
        "numEdgeSuspect": [(3, "main")],
        "edgeMaskLevel": [("AMP", "edges")],
        "gainCorrectionType": [("NONE", "main"), ("SIMPLE", "main")],
    },
    named={"numThreads": "tests/tasks/test_config_behaviour_ptc.py::test_extract_num_threads"},
)


def test_extract_num_threads(monkeypatch):
    """NumThreads measures the amplifiers on that many threads; the result does not change."""
    import concurrent.futures

    workers: list[int] = []
    pool = concurrent.futures.ThreadPoolExecutor

    def spy(max_workers=None, **kw):
        workers.append(max_workers)
        return pool(max_workers=max_workers, **kw)

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", spy)
    one = EXTRACT.fingerprint(EXTRACT.config("main"))
    assert workers == []
    two = EXTRACT.fingerprint(EXTRACT.config("main", {"numThreads": 2}))
    assert workers and set(workers) == {2}
    from ._behaviour import differing

    assert differing(one, two) == []


@functools.cache
def _partials() -> list[Any]:
    task = PhotonTransferCurveExtractTask(config=EXTRACT.config("main"))
    return task.run(**_extract_inputs()).outputCovariances


SOLVE = Sweep(
    PhotonTransferCurveSolveTask,
    lambda: {"inputCovariances": _partials()},
    variants={
        "fullcov": {"ptcFitType": "FULLCOVARIANCE"},
        "poly": {"ptcFitType": "POLYNOMIAL"},
        "fullclip": {"ptcFitType": "FULLCOVARIANCE", "sigmaClipFullFitCovariancesAstier": 1.0},
        "tight": {"sigmaCutPtcOutliers": 1.5},  # points rejected mid-curve: the gap cut matters
    },
    cases={
        "minMeanSignal": [({"ALL_AMPS": 2000.0}, "main")],
        "maxMeanSignal": [({"ALL_AMPS": 20000.0}, "main")],
        "maximumRangeCovariancesAstierFullCovFit": [(2, "fullcov")],
        "polynomialFitDegree": [(2, "poly")],
        "sigmaCutPtcOutliers": [(1.0, "main")],
        "maxIterationsPtcOutliers": [(1, "main")],
        "maxSignalInitialPtcOutlierFit": [(5000.0, "main")],
        "maxDeltaInitialPtcOutlierFit": [(100.0, "tight")],
        "sigmaClipFullFitCovariancesAstier": [(1.0, "fullcov")],
        "maxIterFullFitCovariancesAstier": [(1, "fullclip")],
        "binSize": [(2, "main")],
    },
)


@functools.cache
def _solved(fit_type: str = "FULLCOVARIANCE") -> Any:
    task = PhotonTransferCurveSolveTask(config=SOLVE.config("main", {"ptcFitType": fit_type}))
    return task.run(inputCovariances=_partials()).outputPtcDataset


def _with_photocharges() -> dict[str, Any]:
    ptc = copy.deepcopy(_solved())
    rng = np.random.default_rng(5)
    for amp, times in ptc.rawExpTimes.items():
        ptc.photoCharges[amp] = np.asarray(times) * (1.0 + 0.01 * rng.standard_normal(len(times)))
    return {"inputPtc": ptc}


def _with_outlier() -> dict[str, Any]:
    """Return the solved PTC with one mean 3 sqrt(mean) high in each amp."""
    ptc = copy.deepcopy(_solved())
    for amp in ptc.ampNames:
        means = np.array(ptc.rawMeans[amp], float)
        k = len(means) // 2
        means[k] += 3.0 * np.sqrt(means[k])
        ptc.rawMeans[amp] = means
    return {"inputPtc": ptc}


LINEARITY = Sweep(
    LinearitySolveTask,
    lambda: {"inputPtc": _solved()},
    variants={
        "poly": {"linearityType": "Polynomial"},
        "spline": {"linearityType": "Spline"},
        "lut": {"linearityType": "LookupTable"},
        "photodiode": ({}, _with_photocharges),
        "outlier": ({}, _with_outlier),
    },
    cases={
        "polynomialOrder": [(4, "poly")],
        "splineKnots": [(5, "spline")],
        "maxLookupTableAdu": [(2**17, "lut")],
        "maxLinearAdu": [(2000.0, "main")],
        "minLinearAdu": [(500.0, "main")],
        "nSigmaClipLinear": [(2.0, "outlier")],
        "usePhotodiode": [(True, "photodiode")],
    },
)

BFK = Sweep(
    BrighterFatterKernelSolveTask,
    lambda: {"inputPtc": _solved()},
    variants={
        "detector": {"level": "DETECTOR"},
        "model": {"correlationModelRadius": 2},
    },
    cases={
        "ignoreAmpsForAveraging": [(["C00"], "detector")],
        "xcorrCheckRejectLevel": [(0.01, "main")],
        "nSigmaClip": [(1.0, "main")],
        "correlationModelRadius": [(2, "main")],
        "correlationModelSlope": [(-2.5, "model")],
    },
)

SWEEPS = [EXTRACT, SOLVE, LINEARITY, BFK]


test_every_field_is_accounted_for, test_field_changes_the_output = sweep_tests(SWEEPS)


def test_lookup_table_fit_of_every_amp():
    """LookupTable: each amp gets its own table row and small residuals.

    The second amp used to raise: its residuals were computed with its row index into a one-row
    table.
    """
    import json

    lin = LinearitySolveTask(config=LINEARITY.config("lut")).run(inputPtc=_solved()).outputLinearizer
    assert lin.table.shape == (2, 2**18)
    assert [float(lin.linearity_coeffs[a][0]) for a in TRUTH.names] == [0.0, 1.0]
    params = json.loads(lin.metadata["FIT_PARAMS"])
    poly = LinearitySolveTask(config=LINEARITY.config("poly")).run(inputPtc=_solved()).outputLinearizer
    poly_params = json.loads(poly.metadata["FIT_PARAMS"])
    for amp in TRUTH.names:
        # the table inverts the same polynomial: the same residuals up to its integer steps
        assert params[amp]["maxResidual"] == pytest.approx(poly_params[amp]["maxResidual"], abs=5e-5)
        assert params[amp]["maxResidual"] < 5e-3
