"""Every config field of the crosstalk extract/solve tasks changes the output (behaviour sweep).

Same sweep as `test_config_behaviour_cp` (`tests/tasks/_behaviour.py`). Inputs: testcam detector
0 (four amplifiers) raws with the simulator's crosstalk and bright spots (some saturated, some
under BAD / INTRP masks), ISR-processed without crosstalk correction; the extract output of three
such exposures feeds the solve sweep.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

from pipeline.instruments.simulate import simulate_exposures
from pipeline.tasks.cp.crosstalk import CrosstalkExtractTask, CrosstalkSolveTask
from pipeline.tasks.isr import IsrTask, IsrTaskConfig

from ._behaviour import Sweep, sweep_tests


@functools.cache
def _post_isr() -> list[Any]:
    exps, _ = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 10.0, "flux": 50.0}] * 3,
        seed=9,
        detectors=[0],
        crosstalk=3e-3,
    )
    cfg = IsrTaskConfig(
        doBias=False, doDark=False, doFlat=False, doDefect=False, doInterpolate=False,
        doSetBadRegions=False, saturation=60000.0, doWidenSaturationTrails=False,
    )  # fmt: skip
    out = []
    rng = np.random.default_rng(4)
    for k, raw in enumerate(exps):
        amps = list(raw.detector)
        img = raw.image.astype(np.float64)
        for i, a in enumerate(amps):
            d = a.raw_data_bbox
            for j in range(4):  # bright spots in every amp, one saturated, levels differ
                y, x = d.y0 + 8 + 20 * (j % 2) + k, d.x0 + 10 + 25 * (j // 2) + i
                level = 65000.0 if j == 0 else rng.uniform(32000.0, 50000.0)
                img[y : y + 3, x : x + 3] = level
        # crosstalk of the bright pixels into every other amp (source -> target, mirrored)
        raw.masked_image.image[...] = np.clip(np.rint(img), 0, 65535).astype(raw.image.dtype)
        res = IsrTask(config=cfg).run(raw).exposure
        mi = res.masked_image
        a0 = res.detector[0].bbox
        mi.mask[a0.y0 + 28 + k, a0.x0 + 35] |= mi.get_plane_bitmask("BAD")  # a masked source
        mi.mask[a0.y0 + 8 + k, a0.x0 + 35] |= mi.get_plane_bitmask("INTRP")
        out.append(res)
    return out


EXTRACT = Sweep(
    CrosstalkExtractTask,
    lambda: {"inputExp": _post_isr()[0].copy()},
    cases={
        "threshold": [(45000.0, "main")],
        "badMask": [([], "main")],
    },
    named={"isTrimmed": "tests/tasks/test_config_behaviour_xtalk.py::test_extract_is_trimmed"},
    expect_raise={"doMeasureInterchip": ValueError},  # refused: not implemented (as cp_pipe)
)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}/{k}"))
        else:
            out[f"{prefix}/{k}"] = v
    return out


def test_extract_is_trimmed():
    """IsTrimmed=False reads the amp regions of an untrimmed exposure (raw boxes, overscans kept).

    The ratios measured on the untrimmed ISR output with isTrimmed=False equal those of the
    trimmed output with the default; an exposure of the other trimming is refused, naming the fix.
    """
    exps, _ = simulate_exposures(
        "testcam", [{"observation_type": "science", "exposure_time": 10.0, "flux": 50.0}],
        seed=9, detectors=[0], crosstalk=3e-3,
    )  # fmt: skip
    raw = exps[0]
    for i, a in enumerate(raw.detector):
        d = a.raw_data_bbox
        raw.image[d.y0 + 10 : d.y0 + 13, d.x0 + 10 + i : d.x0 + 13 + i] = 40000
    base = dict(
        doBias=False, doDark=False, doFlat=False, doDefect=False, doInterpolate=False,
        doSetBadRegions=False,
    )  # fmt: skip
    trimmed = IsrTask(config=IsrTaskConfig(**base)).run(raw.copy()).exposure
    untrimmed = IsrTask(config=IsrTaskConfig(assembleCcd={"doTrim": False}, **base)).run(raw.copy()).exposure
    assert untrimmed.shape != trimmed.shape
    want = _flatten(CrosstalkExtractTask().run(inputExp=trimmed).outputRatios)
    cfg = CrosstalkExtractTask.ConfigClass(isTrimmed=False)
    got = _flatten(CrosstalkExtractTask(config=cfg).run(inputExp=untrimmed).outputRatios)
    assert want.keys() == got.keys() and sum(len(v) for v in want.values()) >= 12
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    # the other trimming is refused with one error naming the field and its fix (was: wrong
    # ratios from the untrimmed exposure; a numpy broadcast error from the trimmed one)
    with pytest.raises(ValueError, match=r"\(106, 150\).*but isTrimmed=True; set isTrimmed=False"):
        CrosstalkExtractTask().run(inputExp=untrimmed)
    with pytest.raises(ValueError, match=r"\(96, 128\).*but isTrimmed=False; set isTrimmed=True"):
        CrosstalkExtractTask(config=cfg).run(inputExp=trimmed)


@functools.cache
def _ratios() -> tuple[list[Any], list[Any]]:
    ratios, fluxes = [], []
    for exp in _post_isr():
        res = CrosstalkExtractTask().run(inputExp=exp.copy())
        ratios.append(res.outputRatios)
        fluxes.append(res.outputFluxes)
    return ratios, fluxes


SOLVE = Sweep(
    CrosstalkSolveTask,
    lambda: {"inputRatios": _ratios()[0], "inputFluxes": _ratios()[1]},
    cases={
        "rejIter": [(0, "main")],
        "rejSigma": [(0.5, "main")],
        "fluxOrder": [(1, "main")],
        "significanceLimit": [(50.0, "main")],
    },
)

SWEEPS = [EXTRACT, SOLVE]


test_every_field_is_accounted_for, test_field_changes_the_output = sweep_tests(SWEEPS)
