"""Every config field of the CTI measure/solve tasks changes the output (behaviour sweep).

Same sweep as `test_config_behaviour_cp` (`tests/tasks/_behaviour.py`). Inputs: flats of the
test camera ``tests/cp/data/xtcam.yaml`` (24 serial-overscan columns) at ten levels with a known
serial CTI (global CTI and one trap), overscan-corrected, untrimmed; their statistics feed the
solve sweep.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.instruments import get_instrument
from pipeline.instruments.sim_crosstalk_cti import SerialCti
from pipeline.instruments.simulate import make_truth, simulate_exposures
from pipeline.tasks.cp.cti import CpCtiMeasureTask, CpCtiSolveTask
from pipeline.tasks.isr import IsrTask, IsrTaskConfig

from ._behaviour import Sweep, sweep_tests

CAMERA = Path(__file__).resolve().parents[1] / "cp" / "data" / "xtcam.yaml"
LEVELS = np.geomspace(300, 140000, 10)  # e-; the brightest above maxImageMean variants


@functools.cache
def _flats() -> list[Any]:
    inst = get_instrument(str(CAMERA))
    truth = make_truth(inst, seed=12)
    truth.effects.append(
        SerialCti(global_cti=4e-6, trap_size=25.0, trap_emission_time=1.0, trap_scaling=0.05)
    )
    specs = [{"observation_type": "flat", "exposure_time": 1.0, "level": float(v)} for v in LEVELS]
    exps, _ = simulate_exposures(inst, specs, seed=12, truth=truth)
    cfg = IsrTaskConfig(
        doBias=False, doDark=False, doFlat=False, doDefect=False, doAssembleCcd=False,
        doInterpolate=False, doSetBadRegions=False, overscan={"leadingColumnsToSkip": 4},
    )  # fmt: skip
    out = []
    for raw in exps:
        exp = IsrTask(config=cfg).run(raw).exposure
        for a in exp.detector:  # ISR gains differing from the camera's (useIsrGains)
            exp.metadata[f"HIERARCH LSST ISR GAIN {a.name}"] = a.gain * 1.05
        out.append(exp)
    return out


MEASURE = Sweep(CpCtiMeasureTask, lambda: {"inputExp": _flats()[4].copy()})


@functools.cache
def _measurements() -> list[Any]:
    return [CpCtiMeasureTask().run(inputExp=e.copy()).outputStatistics for e in _flats()]


TURNOFF_TEST = "tests/tasks/test_config_behaviour_cti.py::test_turnoff_finder_settings"

SOLVE = Sweep(
    CpCtiSolveTask,
    lambda: {"inputMeasurements": _measurements()},
    cases={
        "maxImageMean": [(30000.0, "main")],
        # the fit reads the union of the three column ranges (capped at the overscan width)
        "localOffsetColumnRange": [([3, 20], "main")],
        "maxSignalForCti": [(2000.0, "main")],
        "serialCtiRange": [([-1e-7, 1e-7], "main")],
        "globalCtiColumnRange": [([1, 5], "main")],
        "trapColumnRange": [([1, 20], "main")],
        "fitError": [(1.0, "main")],
        "minTrapSize": [(1e4, "main")],
    },
    named={"turnoffFinderSigmaClip": TURNOFF_TEST, "turnoffFinderSigmaClipMaxIters": TURNOFF_TEST},
)


def test_turnoff_finder_settings(monkeypatch):
    """The turnoff clip settings reach the turnoff finder and move the turnoff of a blooming EPER.

    The simulated flats have no turnoff (the EPER stays on its trend), so the sweep cannot show
    these two fields; on an EPER that blooms from the 12th of 15 levels, sigma 1 with one
    iteration, sigma 3 with one iteration and the default (1, 5) give three different turnoffs.
    """
    import pipeline.tasks.cp.cti as cti
    from pipeline.tasks.cp.cti_math import cti_turnoff

    seen = []

    def spy(signals, eper, cti_range, sigma, max_iter):
        seen.append((sigma, max_iter))
        return cti_turnoff(signals, eper, cti_range, sigma, max_iter)

    monkeypatch.setattr(cti, "cti_turnoff", spy)
    cfg = SOLVE.config("main", {"turnoffFinderSigmaClip": 3, "turnoffFinderSigmaClipMaxIters": 2})
    CpCtiSolveTask(config=cfg).run(inputMeasurements=_measurements())
    assert seen and set(seen) == {(3, 2)}
    signals = np.geomspace(1000, 100000, 15)
    eper = np.full(15, 3e-6)
    eper[11:] = [4e-6, 1e-5, 5e-5, 2e-4]
    turnoffs = {
        (s, n): cti_turnoff(signals, eper, (1e-8, 1e-3), s, n)[0] for s, n in ((1, 5), (1, 1), (3, 1))
    }
    assert turnoffs[(1, 5)] == pytest.approx(signals[9])
    assert turnoffs[(1, 1)] == pytest.approx(signals[12])
    assert turnoffs[(3, 1)] == pytest.approx(signals[13])


SWEEPS = [MEASURE, SOLVE]


test_every_field_is_accounted_for, test_field_changes_the_output = sweep_tests(SWEEPS)
