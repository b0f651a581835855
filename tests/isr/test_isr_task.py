"""End-to-end IsrTask tests on simulated raws with known truth (issue 5 "Proof")."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.image import Box, Exposure, ExposureInfo, MaskedImage
from pipeline.instruments.simulate import simulate_exposures
from pipeline.tasks.isr import Defects, IsrTask, IsrTaskConfig

DET = 2  # testcam detector with 16 amplifiers (flips, prescans, parallel overscans)
LEVEL = 20000.0  # e- at flat = 1


@pytest.fixture(scope="module")
def sim():
    """Build the sim test input."""
    specs = [{"observation_type": "bias"}] * 8 + [
        {"observation_type": "science", "exposure_time": 10.0, "flux": LEVEL / 10.0}
    ] * 4
    exps, truth = simulate_exposures("testcam", specs, seed=11, detectors=[DET], flat_rms=0.03)
    return exps, truth


def _plain_config(**kw) -> IsrTaskConfig:
    base = dict(doBias=False, doDark=False, doFlat=False, doDefect=False)
    base.update(kw)
    return IsrTaskConfig(**base)


def _master_bias(bias_raws) -> Exposure:
    task = IsrTask(config=_plain_config(doInterpolate=False, doSetBadRegions=False))
    stack = np.stack([task.run(b.copy()).exposure.image for b in bias_raws])
    img = stack.mean(axis=0).astype(np.float32)
    var = (stack.var(axis=0, ddof=1) / len(stack)).astype(np.float32)
    return Exposure(MaskedImage(img, None, var))


def test_full_isr_recovers_sky_and_variance(sim):
    """Check full isr recovers sky and variance."""
    exps, truth = sim
    bias = _master_bias(exps[:8])
    raw = exps[8].copy()
    flat_img = truth.flat[DET].astype(np.float32)
    flat = Exposure(MaskedImage(flat_img, None, np.zeros_like(flat_img)))
    dark = Exposure(
        MaskedImage(np.zeros_like(flat_img), None, np.zeros_like(flat_img)), info=ExposureInfo(dark_time=1.0)
    )
    defects = Defects([Box(20, 10, 1, 30), Box(100, 60, 3, 3)])
    # A saturated star in raw amp 0 (no flip): raw data box starts at x=3.
    amp0 = raw.detector.amplifiers[0]
    x0, y0 = amp0.raw_data_bbox.x0 + 30, amp0.raw_data_bbox.y0 + 20
    raw.image[y0 : y0 + 3, x0 : x0 + 3] = 65000
    cfg = IsrTaskConfig(doDefect=True, saturation=60000.0, doCalculateStatistics=True)
    res = IsrTask(config=cfg).run(raw, bias=bias, dark=dark, flat=flat, defects=defects)
    others = [
        IsrTask(config=IsrTaskConfig(doDefect=False)).run(e.copy(), bias=bias, dark=dark, flat=flat).exposure
        for e in exps[9:]
    ]
    out = res.exposure
    mi = out.masked_image
    assert out.shape == out.detector.bbox.shape
    bad = mi.get_plane_bitmask(["BAD", "SAT", "INTRP"])
    sat = mi.get_plane_bitmask("SAT")
    for amp in out.detector:
        sl = amp.bbox.slices
        good = (mi.mask[sl] & bad) == 0
        expected = LEVEL / truth.gain(DET, amp.name)
        rn_adu = truth.amps[DET][amp.name].read_noise / truth.gain(DET, amp.name)
        pooled, planes = [], []
        for o in [out, *others]:
            img = o.image[sl][good].astype(np.float64)
            # Noise of the amp mean: pixel noise plus the constant overscan median (8 x 48 pixels).
            tol = 5 * np.sqrt(img.var() / img.size + 1.57 * rn_adu**2 / (8 * 48))
            assert abs(img.mean() - expected) < tol, amp.name
            pooled.append(img - img.mean())
            planes.append(o.variance[sl][good])
        # 4 x ~3000 pixels: the sample variance is known to ~1.3%; 5% is a 4-sigma test.
        var_pix = np.concatenate(pooled).var(ddof=len(pooled))
        var_plane = np.mean(np.concatenate(planes))
        assert var_plane == pytest.approx(var_pix, rel=0.05), amp.name
    # saturated star: SAT and interpolated (assembled coords equal raw data coords - 3 for amp 0)
    ax, ay = amp0.bbox.x0 + 30, amp0.bbox.y0 + 20
    assert np.all(mi.mask[ay : ay + 3, ax : ax + 3] & sat)
    assert np.all(mi.mask[ay : ay + 3, ax : ax + 3] & mi.get_plane_bitmask("INTRP"))
    assert mi.mask[ay - 1, ax + 1] & sat and not mi.mask[ay - 1, ax - 1] & sat  # diamond growth
    expected0 = LEVEL / truth.gain(DET, amp0.name)
    assert abs(np.median(mi.image[ay : ay + 3, ax : ax + 3]) - expected0) < 0.05 * expected0
    # defects: BAD + INTRP, values interpolated to the sky level
    badbit, intrp = mi.get_plane_bitmask("BAD"), mi.get_plane_bitmask("INTRP")
    assert np.all(mi.mask[10:40, 20] & badbit) and np.all(mi.mask[10:40, 20] & intrp)
    assert np.all(mi.mask[60:63, 100:103] & badbit)
    assert not np.any(mi.mask[10:40, 22] & badbit)
    # header keys: overscan level and read noise per amp
    md = out.metadata
    for amp in out.detector:
        assert md[f"LSST ISR OVERSCAN SERIAL MEDIAN {amp.name}"] == pytest.approx(
            truth.amps[DET][amp.name].bias_level, abs=3.0
        )
        assert md[f"LSST ISR READNOISE {amp.name}"] == pytest.approx(truth.amps[DET][amp.name].read_noise)
        rn_adu = truth.amps[DET][amp.name].read_noise / truth.gain(DET, amp.name)
        # 8 x 48 overscan pixels, plus the +-2 ADU row pattern a constant fit leaves in
        assert md[f"LSST ISR OVERSCAN RESIDUAL SERIAL STDEV {amp.name}"] == pytest.approx(
            np.sqrt(rn_adu**2 + 2.0), rel=0.2
        )
    assert md["LSST ISR FLAT APPLIED"] and md["LSST ISR BIAS APPLIED"] and md["LSST ISR DEFECT APPLIED"]
    stats = res.outputStatistics
    assert set(stats) == {a.name for a in out.detector}
    assert stats[amp0.name]["NSAT"] >= 9
    for amp in out.detector:
        sub = mi.mask[amp.bbox.slices]
        assert stats[amp.name]["NSAT"] == int(np.count_nonzero(sub & sat))
        assert stats[amp.name]["NBAD"] == int(np.count_nonzero(sub & badbit))
    assert res.ossThumb.shape == (out.shape[0] // 4, out.shape[1] // 4)
    assert out.photo_calib["fluxMag0"] == pytest.approx(10 ** (0.4 * 28) * 10.0)


def test_empirical_read_noise_and_ptc_gains(sim):
    """Check empirical read noise and ptc gains."""
    exps, truth = sim
    raw = exps[0].copy()

    class FakePtc:
        gain = {a.name: 2.0 for a in raw.detector}
        noise = {a.name: 4.0 for a in raw.detector}

    res = IsrTask(config=_plain_config(doEmpiricalReadNoise=True, usePtcGains=True)).run(raw, ptc=FakePtc())
    md = res.exposure.metadata
    for amp in res.exposure.detector:
        assert md[f"LSST ISR GAIN {amp.name}"] == 2.0
        rn_adu = truth.amps[DET][amp.name].read_noise / truth.gain(DET, amp.name)
        assert md[f"LSST ISR READNOISE {amp.name}"] == pytest.approx(rn_adu * 2.0, rel=0.2)
    assert md["LSST ISR NOISE SOURCE"] == "OVERSCAN" and md["LSST ISR GAIN SOURCE"] == "PTC"
    raw = exps[0].copy()
    res = IsrTask(config=_plain_config(usePtcReadNoise=True)).run(raw, ptc=FakePtc())
    assert res.exposure.metadata[f"LSST ISR READNOISE {raw.detector[0].name}"] == 4.0


def test_empirical_read_noise_of_a_saturated_amp_falls_back_to_the_camera(sim, caplog):
    """An amp saturated in its data and overscan has an overscan of one value (stdev 0): its read
    noise is the camera's, not 0 e-; the other amps keep their overscan noise."""
    exps, truth = sim
    raw = exps[0].copy()
    amp0 = raw.detector[0]
    raw.image[amp0.raw_bbox.slices] = 65535
    res = IsrTask(config=_plain_config(doEmpiricalReadNoise=True)).run(raw)
    md = res.exposure.metadata
    assert md[f"LSST ISR READNOISE {amp0.name}"] == pytest.approx(amp0.read_noise)
    assert amp0.read_noise > 0 and "overscan has no noise" in caplog.text
    for amp in list(raw.detector)[1:]:
        rn_adu = truth.amps[DET][amp.name].read_noise / truth.gain(DET, amp.name)
        assert md[f"LSST ISR READNOISE {amp.name}"] == pytest.approx(rn_adu * amp.gain, rel=0.2)


@pytest.mark.parametrize(
    "switch,calib",
    [
        ("doBias", "bias"),
        ("doDark", "dark"),
        ("doFlat", "flat"),
        ("doDefect", "defects"),
        ("usePtcGains", "ptc"),
        ("doBrighterFatter", "bfKernel"),
    ],
)
def test_switch_without_calibration_raises(sim, switch, calib):
    """Check switch without calibration raises."""
    exps, _ = sim
    cfg = _plain_config(**{switch: True})
    with pytest.raises(RuntimeError, match=calib):
        IsrTask(config=cfg).run(exps[0].copy())


def test_config_validation_and_connections():
    """Check config validation and connections."""
    with pytest.raises(Exception, match="doApplyGains"):
        IsrTaskConfig(doApplyGains=True)
    cfg = IsrTaskConfig()
    conns = cfg.make_connections()
    assert {"bias", "dark", "flat", "defects", "linearizer"} <= conns.prerequisiteInputs
    assert "ptc" not in conns.prerequisiteInputs and "outputStatistics" not in conns.outputs
    conns = IsrTaskConfig(
        doBias=False, doDark=False, usePtcGains=True, doCalculateStatistics=True
    ).make_connections()
    assert "bias" not in conns.prerequisiteInputs and "ptc" in conns.prerequisiteInputs
    assert "outputStatistics" in conns.outputs
    assert conns.outputExposure.name == "postISRCCD"
    assert cfg.interpolation_planes() == ["SAT", "BAD", "UNMASKEDNAN"]


def test_no_detector_and_bad_input():
    """Check no detector and bad input."""
    task = IsrTask(config=_plain_config())
    with pytest.raises(RuntimeError, match="no detector"):
        task.run(Exposure(np.zeros((4, 4), np.uint16)))
    with pytest.raises(TypeError, match="Exposure"):
        task.run("raw.fits")


def test_crosstalk_in_task_uses_detector_matrix():
    """Check crosstalk in task uses detector matrix."""
    exps, truth = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 1.0, "flux": 100.0}],
        seed=3,
        detectors=[0],
        crosstalk=True,
    )
    raw = exps[0]
    amp = raw.detector.amplifiers[0]
    # a bright block in amp 0 must leave crosstalk ghosts that the correction removes
    raw.image[
        amp.raw_data_bbox.y0 + 5 : amp.raw_data_bbox.y0 + 15,
        amp.raw_data_bbox.x0 + 5 : amp.raw_data_bbox.x0 + 15,
    ] = 50000
    off = IsrTask(config=_plain_config(doInterpolate=False, doSaturation=False)).run(raw.copy()).exposure
    on = (
        IsrTask(
            config=_plain_config(
                doCrosstalk=True, doInterpolate=False, doSaturation=False, crosstalk={"minPixelToMask": 10000}
            )
        )
        .run(raw.copy())
        .exposure
    )
    xt = raw.detector.crosstalk
    assert xt is not None
    mi = on.masked_image
    assert "CROSSTALK" in mi.mask_planes and (mi.mask & mi.get_plane_bitmask("CROSSTALK")).any()
    for t, tgt in enumerate(on.detector.amplifiers[1:], start=1):
        if xt[0, t] == 0:
            continue
        # ghost amplitude removed: the difference between off and on is c * source
        diff = off.image[tgt.bbox.slices] - on.image[tgt.bbox.slices]
        source = 50000 - truth.amps[0][amp.name].bias_level
        assert diff.max() == pytest.approx(xt[0, t] * source, rel=0.02)
