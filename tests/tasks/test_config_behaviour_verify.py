"""Every config field of the cp_verify tasks changes the output, or is a listed gap (behaviour sweep).

Same sweep as `test_config_behaviour_cp` (`tests/tasks/_behaviour.py`) over the pure ``run`` of
each verification task, with the inputs of `tests/cp/test_verify_tasks.py` (a dark residual with
cosmic rays, a flat with defects, a spectral flat, a PTC). Each per-exposure task has its own
config class holding only the fields it reads, so every field is swept (no gaps).
"""

from __future__ import annotations

import functools
from typing import Any

from pipeline.tasks.isr.calibs import Defects
from pipeline.tasks.verify import (
    CpVerifyBiasTask,
    CpVerifyCalibMergeTask,
    CpVerifyDarkTask,
    CpVerifyDefectsTask,
    CpVerifyFlatTask,
    CpVerifyPtcTask,
    CpVerifyRunMergeTask,
)
from tests.cp import test_verify_tasks as vt

from ._behaviour import Sweep, sweep_tests

STATS_CASES = {
    "maskNameList": [([], "main")],
    "numSigmaClip": [(1.5, "main")],
}
AMP_STATS_CASES = {
    **STATS_CASES,
    "clipMaxIter": [(1, "main")],
    "crSigma": [(3.0, "main")],
    "noiseThreshold": [(0.001, "main")],
}


@functools.cache
def _dark() -> Any:
    exp = vt._dark_residual(3, 64, n_cr=6)  # a passing dark: the thresholds can make it fail
    exp.mask[50:53, 50:53] = exp.masked_image.get_plane_bitmask("BAD")
    exp.image[50:53, 50:53] += 500.0
    return exp


DARK = Sweep(
    CpVerifyDarkTask,
    lambda: {"inputExp": _dark().copy()},
    variants={
        "tight": {"noiseThreshold": 0.001},  # NOISE fails on two amps: the read noise matters
        "crs3": {"crSigma": 3.0},  # CR_NOISE differs from NOISE by about 1e-4
    },
    cases={
        **AMP_STATS_CASES,
        "crNoiseThreshold": [(1e-5, "crs3")],
        "useReadNoise": [(False, "tight")],
    },
)
BIAS = Sweep(
    CpVerifyBiasTask,
    lambda: {"inputExp": _dark().copy()},
    variants={k: v[0] for k, v in DARK.variants.items() if k != "main"},
    cases=DARK.cases,
)


@functools.cache
def _flat() -> Any:
    exp = vt._spectral_flat_verification(5)
    exp.masked_image.variance[...] *= 0.97  # NOISE_RATIO about 1.01: passes 5 %, fails 0.1 %
    exp.image[20, 20:40] *= 1.3
    exp.mask[30:33, 30:33] = exp.masked_image.get_plane_bitmask("SAT")
    return exp


FLAT = Sweep(
    CpVerifyFlatTask,
    lambda: {"inputExp": _flat().copy()},
    cases={
        **AMP_STATS_CASES,
        "flatScatterThreshold": [(1e-5, "main")],
        "useFlatVariance": [(False, "main")],
    },
)


@functools.cache
def _defect_flat() -> Any:
    exp = vt._flat_with_defects(2)
    exp.image[100, 300] *= 1.1  # an unmasked outlier
    exp.image[150:152, 400:402] *= 1.5  # masked outliers (maskNameList)
    exp.mask[150:152, 400:402] = exp.masked_image.get_plane_bitmask("BAD")
    return exp


DEFECTS = Sweep(
    CpVerifyDefectsTask,
    lambda: {"inputExp": _defect_flat().copy(), "inputDefects": Defects(vt.TRUE_DEFECTS[:3])},
    cases={
        **STATS_CASES,
        "useDefects": [(True, "main")],  # adds the defects prerequisite input
        "maxDefectFraction": [(0.0001, "main")],
        "maxOutliers": [(0, "main")],
        "outlierSigma": [(3.0, "main")],
    },
)


@functools.cache
def _ptcs() -> tuple[Any, Any, Any]:
    good, det = vt._ptc(1)
    previous, _ = vt._ptc(2, gains=tuple(g * 1.03 for g in vt.PTC_DET.gains))
    return good, previous, det


PTC = Sweep(
    CpVerifyPtcTask,
    lambda: {"inputPtc": _ptcs()[0], "inputReferencePtc": _ptcs()[1], "detector": _ptcs()[2]},
    cases={
        "gainThreshold": [(1.0, "main")],
        "noiseThreshold": [(0.5, "main")],
        "turnoffThreshold": [(1e6, "main")],
    },
)


@functools.cache
def _stats() -> list[Any]:
    return [CpVerifyDarkTask().run(inputExp=vt._dark_residual(s, 4, n_cr=2)).outputStats for s in (4, 5)]


@functools.cache
def _flat_stats() -> list[Any]:
    """Flat verifications of one exposure on two detectors 2 % apart (as runQuantum tags them)."""
    out = []
    for det, scale in ((0, 1.0), (1, 1.02)):
        exp = _flat().copy()
        exp.image[...] *= scale
        out.append(dict(CpVerifyFlatTask().run(inputExp=exp).outputStats, detector=det))
    return out


RUN_MERGE = Sweep(
    CpVerifyRunMergeTask,
    lambda: {"inputStats": _stats()},
    variants={"flats": ({"calibType": "flat"}, lambda: {"inputStats": _flat_stats()})},
    cases={"calibType": [("flat", "main")], "exposureScatterThreshold": [(0.001, "flats")]},
)
CALIB_MERGE = Sweep(
    CpVerifyCalibMergeTask,
    lambda: {"inputStats": _stats()},
    cases={"calibType": [("dark", "main")]},
)

SWEEPS = [DARK, BIAS, FLAT, DEFECTS, PTC, RUN_MERGE, CALIB_MERGE]


test_every_field_is_accounted_for, test_field_changes_the_output = sweep_tests(SWEEPS)
