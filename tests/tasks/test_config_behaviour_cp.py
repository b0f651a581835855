"""Every config field of the cp tasks changes the output or the graph (behaviour sweep).

Table-driven over each task's pure ``run`` on small synthetic inputs (`tests/tasks/_behaviour.py`
`Sweep`): the baseline config and, for each field, the baseline with that field changed (bools
flip, ``Literal`` fields take every other value, other types an explicit meaningful value); the
outputs (exposures, calibrations, statistics dicts, task metadata) or the connections must
differ. Fields whose effect needs another baseline use a named variant (config and inputs);
effects no single run shows are mapped to named tests; documented no-ops warn when set.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pipeline.image import MASK_PLANES
from pipeline.tasks.cp import (
    CpFlatMeasureTask,
    CpFlatNormalizationTask,
    MergeDefectsTask,
)
from pipeline.tasks.cp.combine import CalibCombineTask
from pipeline.tasks.cp.dark import CpDarkTask
from pipeline.tasks.cp.defects import MeasureDefectsTask, MergeDefectsCombinedTask
from tests.cp._synth import SynthDetector, make_detector, make_exposure

from ._behaviour import Sweep, sweep_tests

BIT = {name: 1 << b for name, b in MASK_PLANES.items()}
SYNTH = SynthDetector(gains=(1.0, 2.0), read_noise_e=(5.0, 5.0), ny=40, nx_amp=30)


# ============================================================================================
# CalibCombineTask
# ============================================================================================
@functools.cache
def _combine_frames() -> tuple[Any, list[tuple[np.ndarray, np.ndarray, np.ndarray, float, float]]]:
    det = make_detector(SYNTH)
    rng = np.random.default_rng(7)
    frames = []
    for k in range(6):
        t, dt = 10.0 * (k + 1), 10.0 * (k + 1) + 3.0
        img = rng.normal(50.0 * t, 5.0 + k, SYNTH.shape)
        img[:, 30:] *= 1.0 + 0.05 * k  # the second amp's level drifts (AMP scaling)
        img[rng.random(SYNTH.shape) < 0.03] += 2000.0  # cosmic rays
        mask = np.zeros(SYNTH.shape, np.int32)
        mask[5, 5] = BIT["SAT"]  # no usable input at (5, 5)
        mask[10:14, 10:14] = BIT["DETECTED"]
        img[10:14, 10:14] += 5000.0
        mask[20, 20 + k] = BIT["INTRP"]
        mask[30, 40] = BIT["CR"] if k == 0 else 0
        if k == 0:
            mask[33, 3] |= BIT["NO_DATA"]
        var = np.full(SYNTH.shape, (5.0 + k) ** 2 * (1.0 + 0.2 * k))
        frames.append((img, mask, var, t, dt))
    return det, frames


def _combine_inputs() -> dict[str, Any]:
    det, frames = _combine_frames()
    exps = [
        # copies: the frames are cached and a run must not change the next one's input
        make_exposure(img.copy(), det, 100 + k, t, mask=mask.copy(), variance=var.copy(), dark_time=dt)
        for k, (img, mask, var, t, dt) in enumerate(frames)
    ]
    scales = [
        {"exposure": 100 + k, "expScale": 500.0 * (k + 1),
         "ampScale": {"0": {"C00": 500.0 * (k + 1), "C01": 520.0 * (k + 1)}}}
        for k in range(6)
    ]  # fmt: skip
    return {"inputExpHandles": exps, "inputScales": scales}


COMBINE = Sweep(
    CalibCombineTask,
    _combine_inputs,
    base={"exposureScaling": "MeanStats", "checkNoData": False},
    # lowclip: with 6 inputs no value can lie 3 sigma off after the first clip, so nIter acts
    # only below about 2 sigma
    variants={"inputlist": {"exposureScaling": "InputList"}, "lowclip": {"clip": 1.5}},
    cases={
        "calibrationType": [("bias", "main")],
        "scalingLevel": [("AMP", "main"), ("AMP", "inputlist")],
        "maxVisitsToCalcErrorFromInputVariance": [(10, "main")],
        "mask": [(["SAT"], "main")],
        "clip": [(1.5, "main")],
        "nIter": [(1, "lowclip")],
        "noGoodPixelsMask": [("SUSPECT", "main")],
        "statNSigma": [(1.0, "main")],
        "statNIter": [(1, "main")],
        "statMask": [([], "main")],
        "distributionPercentiles": [([50.0], "main")],
    },
    named={
        "subregionSize": "tests/tasks/test_config_behaviour_cp.py::test_combine_subregion_size_tiles_rows"
    },
    expect_raise={"checkNoData": RuntimeError},  # the NO_DATA pixel of input 0 reaches the output
)


def test_combine_subregion_size_tiles_rows(monkeypatch):
    """SubregionSize sets the row blocks read per input (memory); the result does not change."""
    import pipeline.tasks.cp.combine as combine

    blocks: list[int] = []
    load = combine._load

    def spy(obj, box=None):
        if box is not None:
            blocks.append(box.ny)
        return load(obj, box)

    monkeypatch.setattr(combine, "_load", spy)
    cfg = COMBINE.config("main")
    whole = CalibCombineTask(config=cfg).run(**_combine_inputs()).outputData
    assert set(blocks) == {40}  # one block: 200 rows by default
    blocks.clear()
    tiled = (
        CalibCombineTask(config=COMBINE.config("main", {"subregionSize": [10000, 7]}))
        .run(**_combine_inputs())
        .outputData
    )
    assert blocks == [7] * 6 * 5 + [5] * 6  # 40 rows: 5 blocks of 7 and one of 5, per input
    np.testing.assert_array_equal(tiled.image, whole.image)
    np.testing.assert_array_equal(tiled.variance, whole.variance)
    np.testing.assert_array_equal(tiled.mask, whole.mask)


# ============================================================================================
# CpDarkTask
# ============================================================================================
def _dark_inputs() -> dict[str, Any]:
    det = make_detector(SYNTH)
    rng = np.random.default_rng(11)
    img = rng.normal(100.0, 6.0, SYNTH.shape)
    mask = np.zeros(SYNTH.shape, np.int32)
    for y, x, amp in ((5, 5, 400.0), (12, 40, 90.0), (25, 15, 60.0), (33, 50, 45.0)):
        img[y, x] += amp  # cosmic rays of several strengths
    img[18, 20:23] += 70.0  # a short track
    yy, xx = np.mgrid[:40, :60]
    img += 300.0 * np.exp(-((yy - 30) ** 2 + (xx - 8) ** 2) / (2 * 1.2**2))  # a compact star
    mask[2, 2] = BIT["BAD"]
    mask[3, 3] = BIT["SAT"]
    return {"inputExp": make_exposure(img, det, 1, 100.0, mask=mask, obs_type="dark")}


DARK = Sweep(
    CpDarkTask,
    _dark_inputs,
    cases={
        "sigClip": [(8.0, "main")],
        "sigFrac": [(0.9, "main")],
        "objLim": [(0.5, "main")],  # the compact star counts as a cosmic ray
        "crGrow": [(0, "main")],
        "maskListToClear": [(["BAD", "SAT"], "main")],
    },
)


# ============================================================================================
# CpFlatMeasureTask / CpFlatNormalizationTask
# ============================================================================================
def _flat_exposure(exp_id: int, level: float, det_id: int = 0, seed: int = 0) -> Any:
    det = make_detector(SYNTH, det_id)
    rng = np.random.default_rng(seed + exp_id)
    img = rng.normal(level, 0.02 * level, SYNTH.shape)
    mask = np.zeros(SYNTH.shape, np.int32)
    for plane, (y, x) in (("BAD", (2, 2)), ("NO_DATA", (4, 4)), ("DETECTED", (6, 6)), ("VIGNETTED", (8, 8))):
        mask[y : y + 3, x : x + 40] = BIT[plane]
        img[y : y + 3, x : x + 40] = 0.96 * level  # 2 sigma low: kept by the clip, moves the mean
    img[20, 5:40] = 1.15 * level  # a 7-sigma streak: clipped or not
    return make_exposure(img, det, exp_id, 1.0, mask=mask)


FLAT_MEASURE = Sweep(
    CpFlatMeasureTask,
    lambda: {"inputExp": _flat_exposure(5, 1000.0)},
    cases={
        "maskNameList": [(["BAD"], "main")],
        "numSigmaClip": [(6.0, "main")],
        "clipMaxIter": [(1, "main")],
    },
)


@functools.cache
def _flat_stats() -> tuple[list[dict], list[dict]]:
    mds, dims = [], []
    for e in range(3):
        for d in range(2):
            exp = _flat_exposure(10 + e, 1000.0 * (1 + e) * (1 + 0.1 * d), det_id=d, seed=d * 31)
            exp.image[:, 30:] *= 1.0 + 0.03 * (e + d)  # amp-dependent illumination
            mds.append(CpFlatMeasureTask().run(inputExp=exp).outputStats)
            dims.append({"exposure": 10 + e, "detector": d})
    return mds, dims


FLAT_NORM = Sweep(
    CpFlatNormalizationTask,
    lambda: {"inputMDs": [dict(m) for m in _flat_stats()[0]], "inputDims": _flat_stats()[1]},
    cases={"scaleMaxIter": [(1, "main")]},
)


# ============================================================================================
# MeasureDefectsTask
# ============================================================================================
def _defect_exposure(kind: str) -> Any:
    det = make_detector(SynthDetector(gains=(1.0, 2.0), read_noise_e=(5.0, 5.0), ny=120, nx_amp=40))
    shape = (120, 80)
    rng = np.random.default_rng({"flat": 1, "dark": 2, "bias": 3}[kind])
    level = {"flat": 10000.0, "dark": 200.0, "bias": 1000.0}[kind]
    img = rng.normal(level, 0.01 * level if kind == "flat" else 5.0, shape)
    mask = np.zeros(shape, np.int32)
    step = 0.01 * level if kind == "flat" else 5.0
    img[30, 10] += 6.0 * step  # hot (> 4.8 sigma, < 8 sigma)
    img[31, 12] += 20.0 * step
    img[40, 20] -= 6.0 * step  # cold (flats)
    img[41, 22] -= 0.25 * level  # 0.75 of the mean (VALUE flats)
    img[0, 5] += 30.0 * step  # in the amp border rows
    img[60, 0] += 30.0 * step  # in the amp border columns
    img[1:119:2, 25] += 30.0 * step  # on-and-off column: 59 bad pixels with gaps of 1
    img[10:100:12, 55] += 30.0 * step  # column with 8 bad pixels, gaps of 11
    img[5:65, 65] += 30.0 * step  # 60 bad pixels in one run
    rows = np.arange(120)
    img[rows[rows % 15 < 8], 45] += 30.0 * step  # 64 bad pixels in runs of 8, gaps of 7
    mask[50:56, 70] = BIT["SAT"]  # a saturated column stretch
    mask[80, 35] = BIT["SUSPECT"]
    if kind == "dark":
        img[70, 30] += 800.0  # 8 e-/s over 100 s (VALUE: > 5 e-/s)
    if kind == "bias":
        img[70, 30] += 1500.0  # > 1000 ADU above the level (VALUE)
    return make_exposure(img, det, 3, 100.0 if kind == "dark" else 1.0, mask=mask, obs_type=kind)


MEASURE_DEFECTS = Sweep(
    MeasureDefectsTask,
    lambda: {"inputExp": _defect_exposure("flat")},
    variants={
        "dark": ({"thresholdType": "VALUE"}, lambda: {"inputExp": _defect_exposure("dark")}),
        "bias": ({"thresholdType": "VALUE"}, lambda: {"inputExp": _defect_exposure("bias")}),
        "flatvalue": {"thresholdType": "VALUE"},
        "satcol": {"saturatedPixelsToFillColumnThreshold": 3},
    },
    cases={
        "darkCurrentThreshold": [(10.0, "dark")],
        "biasThreshold": [(2000.0, "bias")],
        "fracThresholdFlat": [(0.7, "flatvalue")],
        "nSigmaBright": [(8.0, "main")],
        "nSigmaDark": [(-8.0, "main")],
        "nPixBorderUpDown": [(2, "main")],
        "nPixBorderLeftRight": [(2, "main")],
        "badOnAndOffPixelColumnThreshold": [(100, "main")],
        "goodPixelColumnGapThreshold": [(5, "main")],
        "badPixelsToFillColumnThreshold": [(5.0, "main")],
        "saturatedColumnMask": [("SUSPECT", "satcol")],
        "saturatedPixelsToFillColumnThreshold": [(3, "main")],
    },
)


# ============================================================================================
# MergeDefectsTask / MergeDefectsCombinedTask
# ============================================================================================
@functools.cache
def _defect_lists() -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for kind in ("flat", "dark", "bias"):
        lists = []
        for k in range(4):
            exp = _defect_exposure(kind)
            exp.image[90 + k, 5] += 1e4  # a pixel flagged in one exposure of four
            if k >= 2:
                exp.image[100, 5] += 1e4  # in two of four
            if k >= 1:
                exp.image[95, 5] += 1e4  # in three of four
            lists.append(MeasureDefectsTask().run(inputExp=exp).outputDefects)
        out[kind] = lists
    return out


MERGE_DEFECTS = Sweep(
    MergeDefectsTask,
    lambda: {"inputDefects": _defect_lists()["flat"] + _defect_lists()["dark"]},
    variants={"edges": {"edgesAsDefects": True}},
    cases={
        "combinationFraction": [(0.3, "main")],
        "nPixBorderUpDown": [(2, "edges")],
        "nPixBorderLeftRight": [(2, "edges")],
    },
)

MERGE_COMBINED = Sweep(
    MergeDefectsCombinedTask,
    lambda: {
        "inputFlatDefects": _defect_lists()["flat"][:1],
        "inputDarkDefects": _defect_lists()["dark"][:1],
        "inputBiasDefects": _defect_lists()["bias"][:1],
    },
    variants={"edges": {"edgesAsDefects": True}},
    cases={
        "defectSources": [(["bias", "dark"], "main")],
        "nPixBorderUpDown": [(2, "edges")],
        "nPixBorderLeftRight": [(2, "edges")],
    },
    expect_raise={"combinationMode": ValueError},  # must be OR: one list per calibration type
)


SWEEPS = [COMBINE, DARK, FLAT_MEASURE, FLAT_NORM, MEASURE_DEFECTS, MERGE_DEFECTS, MERGE_COMBINED]


test_every_field_is_accounted_for, test_field_changes_the_output = sweep_tests(SWEEPS)
