"""Serial deferred-charge (CTI) model, correction, calibration I/O and the IsrTask step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.instruments.simulate import simulate_exposures
from pipeline.tasks.isr import IsrCalibFormatter, IsrTask, IsrTaskConfig
from pipeline.tasks.isr.deferred_charge import (
    DeferredChargeCalib,
    SerialTrap,
    correct_serial_cti,
    decayed_running_max,
    local_offset,
    readout_slices,
    simulate_serial_cti,
    trap_occupancy,
)

TRAPS = [
    SerialTrap(size=150.0, emission_time=0.6, pixel=2, trap_type="linear", coeffs=[0.05]),
    SerialTrap(size=60.0, emission_time=2.5, pixel=0, trap_type="logistic", coeffs=[3000.0, 0.002]),
]
PARAMS = dict(drift_scale=2.4e-4, decay_time=2.4, global_cti=4e-7, traps=TRAPS)


def test_capture_functions_known_values():
    """Linear capture is min(size, a s); logistic is size / (1 + exp(-k (s - s0))); both <= s."""
    lin = SerialTrap(100.0, 1.0, 0, "linear", [0.1])
    np.testing.assert_allclose(lin.capture(np.array([0.0, 50.0, 500.0, 5000.0])), [0.0, 5.0, 50.0, 100.0])
    log = SerialTrap(80.0, 1.0, 0, "logistic", [1000.0, 0.01])
    np.testing.assert_allclose(log.capture(np.array([1000.0])), [40.0])
    np.testing.assert_allclose(log.capture(np.array([3000.0])), [80.0 / (1 + math.exp(-20.0))])
    np.testing.assert_allclose(log.capture(np.array([10.0, -5.0])), [80.0 / (1 + math.exp(9.9)), 0.0])
    with pytest.raises(ValueError, match="coefficient"):
        SerialTrap(1.0, 1.0, 0, "logistic", [1.0])
    with pytest.raises(ValueError, match="unknown"):
        SerialTrap(1.0, 1.0, 0, "spline", [1.0])


def test_running_max_window_and_recursion():
    """The windowed max equals the exact recursion once the window covers the history."""
    rng = np.random.default_rng(0)
    v = rng.uniform(0, 100, (3, 40))
    exact = decayed_running_max(v, 0.5, None)
    np.testing.assert_allclose(decayed_running_max(v, 0.5, 40), exact)
    # every window length equals the brute-force max over the shifted copies
    for n in range(1, 25):
        want = v.copy()
        for k in range(1, n):
            want[:, k:] = np.maximum(want[:, k:], v[:, :-k] * 0.5**k)
        np.testing.assert_allclose(decayed_running_max(v, 0.5, n), want, rtol=1e-14)
    # by hand for one pixel with a window of 3
    x = 10
    want = max(v[1, x], 0.5 * v[1, x - 1], 0.25 * v[1, x - 2])
    assert decayed_running_max(v, 0.5, 3)[1, x] == pytest.approx(want)


def test_trap_trail_shape_and_charge_conservation():
    """A single bright pixel: the trap takes f(s) from it and re-emits r^k (1-r) f(s) after."""
    trap = SerialTrap(100.0, 2.0, 0, "linear", [1.0])
    s = np.zeros((1, 30))
    s[0, 5] = 1000.0
    obs = simulate_serial_cti(s, traps=[trap])
    r = math.exp(-0.5)
    assert obs[0, 5] == pytest.approx(900.0)
    for k in range(1, 10):
        assert obs[0, 5 + k] == pytest.approx(100.0 * r ** (k - 1) * (1 - r))
    # charge is conserved except what is still trapped at the end of the row
    assert obs.sum() + 100.0 * r ** (30 - 6) == pytest.approx(1000.0)
    occ = trap_occupancy(s, trap)
    assert occ[0, 4] == 0 and occ[0, 5] == 100.0 and occ[0, 7] == pytest.approx(100.0 * r * r)


def test_local_offset_known_values():
    """L_x = max_k d max(0, s_{x-k}) q^k."""
    s = np.zeros((1, 10))
    s[0, 2] = 1e4
    s[0, 3] = 2e3
    off = local_offset(s, 1e-3, 1.0, n=15)
    q = math.exp(-1.0)
    assert off[0, 2] == pytest.approx(10.0)
    assert off[0, 3] == pytest.approx(max(2.0, 10.0 * q))
    assert off[0, 6] == pytest.approx(10.0 * q**4)


def test_simulate_then_correct_recovers_truth_within_noise():
    """Check forward model then correction recovers a noisy scene with bright columns.

    Residual << noise and the deferred charge (EPER trail into the overscan) is removed.
    """
    rng = np.random.default_rng(5)
    ny, nx, nover = 200, 400, 40
    truth = np.zeros((ny, nx + nover))
    sky = 800.0
    truth[:, :nx] = rng.poisson(sky, (ny, nx))
    truth[:, 150:160] += rng.poisson(40000.0, (ny, 10))
    truth[50:53, 300:303] += 60000.0
    truth[:, nx - 20 : nx] += 20000.0  # bright edge: trails into the overscan
    obs = simulate_serial_cti(truth, **PARAMS)
    deferred = obs - truth
    assert np.abs(deferred).max() > 100.0  # a strong effect, far above the sky noise
    corr = correct_serial_cti(obs, n_offset=15, n_trap=6, **PARAMS)
    resid = corr - truth
    noise = np.sqrt(np.maximum(truth, sky))
    assert np.all(np.abs(resid) < noise), np.abs(resid / noise).max()
    assert np.sqrt(np.mean(resid**2)) < 0.05 * np.sqrt(np.mean(deferred**2))
    # the overscan trail (EPER) is gone: mean of the first overscan columns ~ 0
    assert abs(obs[:, nx : nx + 5].mean()) > 20.0
    assert abs(corr[:, nx : nx + 5].mean()) < 0.5


def test_calib_round_trip_table_fits_and_yaml(tmp_path):
    """DeferredChargeCalib survives FITS (IsrCalibFormatter) and YAML round trips."""
    calib = DeferredChargeCalib(
        driftScale={"A": 2e-4, "B": 0.0},
        decayTime={"A": 2.4, "B": 1.0},
        globalCti={"A": 1e-6, "B": 3e-7},
        serialTraps={"A": TRAPS, "B": None},
        metadata={"CALIBDATE": "2026-01-01", "DETECTOR": 3},
    )
    for obj in (
        IsrCalibFormatter().read(_write(calib, tmp_path / "cti.fits")),
        DeferredChargeCalib.read_yaml(_write_yaml(calib, tmp_path / "cti.yaml")),
    ):
        assert isinstance(obj, DeferredChargeCalib)
        assert obj.ampNames == ["A", "B"]
        assert obj.driftScale == {"A": 2e-4, "B": 0.0}
        assert obj.globalCti["B"] == 3e-7 and obj.decayTime["A"] == 2.4
        assert [t.to_dict() for t in obj.serialTraps["A"]] == [t.to_dict() for t in TRAPS]
        assert obj.serialTraps.get("B", []) == []
        assert obj.metadata["CALIBDATE"] == "2026-01-01"
    with pytest.raises(ValueError, match="amplifiers"):
        DeferredChargeCalib.from_dict({"units": "adu"})


def _write(calib, path):
    IsrCalibFormatter().write(calib, path)
    return path


def _write_yaml(calib, path):
    calib.write_yaml(path)
    return path


@pytest.fixture(scope="module")
def cti_raws():
    """Make a testcam 16-amp raw (flips, prescans) without and with injected serial CTI."""
    exps, truth = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 10.0, "flux": 300.0}],
        seed=21,
        detectors=[2],
    )
    clean = exps[0]
    img = clean.image.astype(np.float64)
    gains = {}
    amps = list(clean.detector)
    for i, amp in enumerate(amps):
        gains[amp.name] = amp.gain
        d = amp.raw_data_bbox
        img[d.y0 + 5 : d.y0 + 9, d.x0 + 10 : d.x0 + 14] += 30000.0 / amp.gain  # a bright star
    img = np.clip(np.rint(img), 0, 65535)
    calib = DeferredChargeCalib(
        driftScale={a.name: 2.4e-4 for a in amps},
        decayTime={a.name: 2.4 for a in amps},
        globalCti={a.name: 5e-6 for a in amps},
        serialTraps={a.name: [TRAPS[0]] for a in amps},
    )
    cti = img.copy()
    for amp in amps:
        ys, xs, from_right = readout_slices(amp)
        ped = np.median(img[amp.raw_serial_overscan_bbox.slices])
        seg = cti[ys, xs] - ped
        seg = seg[:, ::-1] if from_right else seg
        out = simulate_serial_cti(seg * amp.gain, **calib.parameters(amp.name)) / amp.gain
        cti[ys, xs] = (out[:, ::-1] if from_right else out) + ped
    star_clean = clean.copy()
    star_clean.masked_image.image[...] = img.astype(star_clean.image.dtype)
    star_cti = clean.copy()
    star_cti.masked_image.image[...] = np.clip(np.rint(cti), 0, 65535).astype(star_cti.image.dtype)
    return star_clean, star_cti, calib


def test_isr_deferred_charge_step(cti_raws):
    """Check IsrTask with doDeferredCharge on a CTI raw matches ISR of the CTI-free raw.

    Within a fraction of the noise; without it the trails differ by far more. All four
    readout corners (flipped amps) are exercised.
    """
    clean, cti, calib = cti_raws
    # The EPER trail lands in the first serial-overscan columns: leave them out of the level,
    # as one does on a real CTI-affected sensor (leadingColumnsToSkip).
    base = dict(
        doBias=False, doDark=False, doFlat=False, doDefect=False, overscan={"leadingColumnsToSkip": 4}
    )
    ref = IsrTask(config=IsrTaskConfig(**base)).run(clean.copy()).exposure.image
    off = IsrTask(config=IsrTaskConfig(**base)).run(cti.copy()).exposure.image
    # The prescan is not overscan-corrected: zero it (zeroUnusedPixels) so that the traps see
    # no charge before the first data column, as in the simulation.
    cti_cfg = {"useGains": True, "zeroUnusedPixels": True}
    cfg = IsrTaskConfig(doDeferredCharge=True, deferredChargeCorrection=cti_cfg, **base)
    res = IsrTask(config=cfg).run(cti.copy(), deferredChargeCalib=calib)
    on = res.exposure.image
    assert res.exposure.metadata["LSST ISR DEFERREDCHARGE APPLIED"] is True
    assert np.abs(off - ref).max() > 30.0
    # Residual: second order (traps estimated from the observed, trap-depleted first columns),
    # well inside the pixel noise (sky ~3000 e-: ~55 e- ~ 20 ADU).
    noise_adu = np.sqrt(np.maximum(ref, 1.0) / 2.0)
    assert np.all(np.abs(on - ref) < 0.5 * noise_adu)
    # (the CTI raw was rounded to integers again: ±0.5 ADU quantisation, mean |d| ~ 0.25)
    assert np.abs(on - ref).mean() < 0.6
    assert np.abs(off - ref).mean() > 3 * np.abs(on - ref).mean()


def test_isr_deferred_charge_needs_calib():
    """DoDeferredCharge without a calibration raises naming it; the connection is removed when off."""
    from pipeline.tasks.isr import IsrTaskConnections

    cfg = IsrTaskConfig(doDeferredCharge=True, doBias=False, doDark=False, doFlat=False, doDefect=False)
    exps, _ = simulate_exposures("testcam", [{"observation_type": "bias"}], seed=1, detectors=[2])
    with pytest.raises(RuntimeError, match="deferredChargeCalib"):
        IsrTask(config=cfg).run(exps[0])
    assert "deferredChargeCalib" in IsrTaskConnections(config=cfg).prerequisiteInputs
    assert "deferredChargeCalib" not in IsrTaskConnections(config=IsrTaskConfig()).prerequisiteInputs


def test_task_row_blocks_equal_whole_amp_correction():
    """DeferredChargeTask works in blocks of rows; the result equals one call on the amp."""
    from pipeline.image import Amplifier, Box, Detector, Exposure, MaskedImage
    from pipeline.tasks.isr import DeferredChargeTask

    ny, nx = 5000, 40  # several row blocks
    amp = Amplifier(
        "A",
        gain=1.7,
        bbox=Box(0, 0, 30, ny),
        raw_bbox=Box(0, 0, nx, ny),
        raw_data_bbox=Box(0, 0, 30, ny),
        raw_serial_overscan_bbox=Box(30, 0, 10, ny),
    )
    det = Detector(0, "D", bbox=Box(0, 0, 30, ny), amplifiers=(amp,), raw_shape=(ny, nx))
    rng = np.random.default_rng(8)
    img = rng.normal(5000.0, 50.0, (ny, nx)).astype(np.float32)
    img[:, 30:] = rng.normal(0.0, 3.0, (ny, 10))
    calib = DeferredChargeCalib({"A": 2e-4}, {"A": 2.0}, {"A": 3e-6}, {"A": TRAPS})
    exp = Exposure(MaskedImage(img.copy()), detector=det)
    DeferredChargeTask(config=DeferredChargeTask.ConfigClass(useGains=True)).run(exp, calib)
    want = correct_serial_cti(img * np.float32(1.7), n_offset=15, n_trap=6, **calib.parameters("A"))
    want /= np.float32(1.7)
    np.testing.assert_array_equal(exp.image, want.astype(np.float32))
    assert np.abs(exp.image - img).max() > 1.0
