"""Seeded synthetic data with known truth, shared by the test suites.

Everything here wraps `pipeline.instruments.simulate` (the raw simulator), so a test gets raws
that look like a real instrument's (untrimmed uint16 with overscans, detector geometry, exposure
info) together with the injected values (`SimulationTruth`: gains, read noises, bias levels,
flat pattern, dark current, crosstalk, non-linearity ...).

Examples
--------
>>> pairs, truth = make_flat_pair_sequence("testcam", gains=1.5, read_noises=5.0,
...                                        exposure_times=[1, 2, 4], seed=3)
>>> exp1, exp2 = pairs[0]            # raw Exposures (uint16), detector 0 of testcam (4 amps)
>>> truth.gain(0, "C00")
1.5
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.image import Detector, Exposure, ExposureInfo, MaskedImage
from pipeline.instruments import Instrument, get_instrument
from pipeline.instruments.simulate import (
    ExposureSpec,
    SimulationResult,
    SimulationTruth,
    make_truth,
    simulate_exposures,
    simulate_raws,
)

__all__ = [
    "make_raw_exposure",
    "make_flat_pair_sequence",
    "make_bias_set",
    "make_dark_set",
    "write_raw_set",
    "make_exposure",
    "simulated_flow",
    "run_simulated_flow",
    "testcam",
    "SimulationTruth",
    "ExposureSpec",
]


def testcam() -> Instrument:
    """The synthetic ``testcam`` instrument (detectors 0, 1, 2 with 4, 8, 16 amplifiers)."""
    return get_instrument("testcam")


def _inst(camera: Instrument | str) -> Instrument:
    return camera if isinstance(camera, Instrument) else get_instrument(camera)


def make_raw_exposure(
    camera: Instrument | str = "testcam",
    *,
    detector: int = 0,
    observation_type: str = "flat",
    exposure_time: float = 1.0,
    flux: float = 1000.0,
    seed: int = 0,
    truth: SimulationTruth | None = None,
    **truth_params: Any,
) -> tuple[Exposure, SimulationTruth]:
    """One simulated raw `Exposure` (uint16, untrimmed) of one detector, and its truth.

    ``truth_params`` go to `pipeline.instruments.simulate.make_truth` (gains, read_noises,
    bias_level, dark_current, nonlinearity, crosstalk, bf_strength, hot_columns, flat_rms ...).
    """
    exps, truth = simulate_exposures(
        _inst(camera),
        [ExposureSpec(observation_type, exposure_time, flux=flux)],
        seed=seed,
        truth=truth,
        detectors=[detector],
        **truth_params,
    )
    return exps[0], truth


def make_flat_pair_sequence(
    camera: Instrument | str = "testcam",
    gains: Any = None,
    read_noises: Any = None,
    exposure_times: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
    seed: int = 0,
    *,
    detector: int = 0,
    flux: float = 1000.0,
    **truth_params: Any,
) -> tuple[list[tuple[Exposure, Exposure]], SimulationTruth]:
    """Pairs of flats at each exposure time (a PTC sequence), as raw Exposures, and the truth.

    Parameters
    ----------
    camera : Instrument or str
        Default ``testcam``.
    gains, read_noises : float, dict or None
        Injected e⁻/ADU and e⁻ (scalar, or per amp name / ``(det, amp)``); None = camera values.
    exposure_times : sequence of float
        Seconds; two flats each.
    seed : int
    detector : int
    flux : float
        e⁻/s/pixel at flat = 1 (mean signal ``flux · t`` e⁻).
    **truth_params
        More `make_truth` parameters (e.g. ``bf_strength``, ``nonlinearity``, ``flat_rms``).

    Returns
    -------
    pairs : list of (Exposure, Exposure)
    truth : SimulationTruth
    """
    specs = []
    for t in exposure_times:
        specs += [ExposureSpec("flat", float(t), flux=flux)] * 2
    exps, truth = simulate_exposures(
        _inst(camera),
        specs,
        seed=seed,
        detectors=[detector],
        gains=gains,
        read_noises=read_noises,
        **truth_params,
    )
    return [(exps[i], exps[i + 1]) for i in range(0, len(exps), 2)], truth


def make_bias_set(
    camera: Instrument | str = "testcam",
    n: int = 5,
    seed: int = 0,
    *,
    detector: int = 0,
    truth: SimulationTruth | None = None,
    **truth_params: Any,
) -> tuple[list[Exposure], SimulationTruth]:
    """``n`` simulated raw biases of one detector and the truth."""
    return simulate_exposures(
        _inst(camera),
        [ExposureSpec("bias")] * n,
        seed=seed,
        truth=truth,
        detectors=[detector],
        **truth_params,
    )


def make_dark_set(
    camera: Instrument | str = "testcam",
    n: int = 3,
    exposure_time: float = 100.0,
    seed: int = 0,
    *,
    detector: int = 0,
    dark_current: float = 0.5,
    truth: SimulationTruth | None = None,
    **truth_params: Any,
) -> tuple[list[Exposure], SimulationTruth]:
    """``n`` simulated raw darks (``dark_current`` e⁻/s/pixel) of one detector and the truth."""
    if truth is None:
        truth = make_truth(
            _inst(camera), seed=seed, detectors=[detector], dark_current=dark_current, **truth_params
        )
    return simulate_exposures(
        _inst(camera), [ExposureSpec("dark", exposure_time)] * n, seed=seed, truth=truth, detectors=[detector]
    )


def write_raw_set(
    out_dir: str | Path,
    camera: Instrument | str = "testcam",
    exposures: Sequence[Any] = ("bias",) * 3,
    *,
    seed: int = 0,
    detectors: Iterable[int] | None = None,
    **kwargs: Any,
) -> SimulationResult:
    """Write simulated raw files (see `simulate_raws`); returns the paths with ``.truth``."""
    return simulate_raws(
        _inst(camera), out_dir, exposures=list(exposures), seed=seed, detectors=detectors, **kwargs
    )


def make_exposure(
    shape: tuple[int, int] = (20, 30),
    value: float = 0.0,
    variance: float = 0.0,
    *,
    noise: float = 0.0,
    seed: int = 0,
    detector: Detector | None = None,
    exposure_time: float = 1.0,
    dark_time: float | None = None,
    observation_type: str = "science",
) -> Exposure:
    """Return a float32 `Exposure` of constant ``value`` (+ Gaussian ``noise``) and variance."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, value, dtype=np.float32)
    if noise:
        image += rng.normal(0.0, noise, size=shape).astype(np.float32)
    mi = MaskedImage(image, None, np.full(shape, variance, dtype=np.float32))
    info = ExposureInfo(
        id=1,
        obs_id="synthetic",
        exposure_time=exposure_time,
        dark_time=exposure_time if dark_time is None else dark_time,
        observation_type=observation_type,
    )
    return Exposure(mi, detector=detector, info=info)


def simulated_flow(instrument: str, **fields: Any) -> Any:
    """Return a main-job `~pipeline.main_job.Flow` over simulated raws of ``instrument``.

    The raws lie in one directory and each step picks its raws by observation type; the end of
    validity, the nominal gain and read noise and the PTC grid are left unset. ``fields`` gives
    the rest (``calib_begin``, ``gain_tolerance``, ...) and may replace any of these defaults.
    """
    from pipeline.main_job import Flow

    defaults: dict[str, Any] = {
        "raw_subdir": "",
        "bias_where": "exposure.observation_type = 'bias'",
        "flat_where": "exposure.observation_type = 'flat'",
        "ptc_where": "exposure.observation_type = 'flat'",
        "science_where": "exposure.observation_type = 'science'",
        "calib_end": None,
        "nominal_gain": None,
        "nominal_read_noise": None,
        "ptc_grid_size": None,
    }
    return Flow(instrument=instrument, **{**defaults, **fields})


def run_simulated_flow(flow: Any, raws: Path, repo: Path) -> None:
    """Create the repository ``repo`` and run the main job's ``flow`` on ``raws`` in one process.

    The directory of this Python's executable comes first on ``PATH`` meanwhile, for the
    ``butler`` and ``pipetask`` commands the flow runs.
    """
    from pipeline.main_job import prepare_repo, run_flow

    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env_path}"
    try:
        prepare_repo(repo)
        run_flow(flow, raws, repo, processes=1, progress=False)
    finally:
        os.environ["PATH"] = env_path
