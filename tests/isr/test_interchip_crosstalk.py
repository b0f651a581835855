"""Inter-chip crosstalk (crosstalkSources + CrosstalkCalib.interChip)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.instruments.simulate import simulate_exposures
from pipeline.tasks.isr import CrosstalkCalib, IsrCalibFormatter, IsrTask, IsrTaskConfig

PLAIN = dict(doBias=False, doDark=False, doFlat=False, doDefect=False, doInterpolate=False)


def _orient(a: np.ndarray, src: str, tgt: str) -> np.ndarray:
    """Mirror ``a`` so that the source readout corner lands on the target's (by hand)."""
    if (src[0] == "U") != (tgt[0] == "U"):
        a = a[::-1]
    if (src[1] == "R") != (tgt[1] == "R"):
        a = a[:, ::-1]
    return a


@pytest.fixture(scope="module")
def two_detectors():
    """Make an S00 source (4 amps, all corners) with bright stars and an S01 target (8 amps)."""
    exps, _ = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 10.0, "flux": 50.0}],
        seed=9,
        detectors=[0, 1],
    )
    src_raw = next(e for e in exps if e.detector.name == "S00")
    tgt_raw = next(e for e in exps if e.detector.name == "S01")
    img = src_raw.image.astype(np.float64)
    for k, amp in enumerate(src_raw.detector):
        d = amp.raw_data_bbox
        img[d.y0 + 10 + 5 * k : d.y0 + 14 + 5 * k, d.x0 + 7 : d.x0 + 12] += 30000.0
    src_raw.masked_image.image[...] = np.clip(img, 0, 65535).astype(src_raw.image.dtype)
    source = IsrTask(config=IsrTaskConfig(**PLAIN)).run(src_raw).exposure  # overscan-corrected, assembled
    return source, tgt_raw


def test_interchip_crosstalk_subtracts_oriented_sources(two_detectors, tmp_path):
    """Target amp t loses sum_s c[s, t] x (source amp s mirrored to t's readout corner)."""
    source, tgt_raw = two_detectors
    rng = np.random.default_rng(0)
    n_s, n_t = len(source.detector), len(tgt_raw.detector)
    coeffs = rng.uniform(5e-4, 1e-3, (n_s, n_t)) * rng.choice([-1.0, 1.0], (n_s, n_t))
    calib = CrosstalkCalib(np.zeros((n_t, n_t)), interChip={"S00": coeffs})
    calib = IsrCalibFormatter().read(_write(calib, tmp_path / "xtalk.fits"))  # round trip
    np.testing.assert_array_equal(calib.interChip["S00"], coeffs)
    cfg = IsrTaskConfig(doCrosstalk=True, **PLAIN)
    ref = IsrTask(config=cfg).run(tgt_raw.copy(), crosstalk=calib).exposure
    task = IsrTask(config=cfg)
    out = task.run(tgt_raw.copy(), crosstalk=calib, crosstalkSources=[source]).exposure
    assert task.metadata["CROSSTALK INTERCHIP SOURCES"] == ["S00"]
    for t, amp_t in enumerate(out.detector):
        want = np.zeros(amp_t.bbox.shape)
        for s, amp_s in enumerate(source.detector):
            sa = source.image[amp_s.bbox.slices].astype(np.float64)
            want -= coeffs[s, t] * _orient(sa, str(amp_s.readout_corner), str(amp_t.readout_corner))
        got = (out.image[amp_t.bbox.slices] - ref.image[amp_t.bbox.slices]).astype(np.float64)
        np.testing.assert_allclose(got, want, atol=2e-2)
        assert np.abs(want).max() > 3.0  # the stars' crosstalk is well above the tolerance


def test_interchip_crosstalk_errors_and_skips(two_detectors):
    """Wrong matrix shape raises; unknown source detectors and calibs without interChip are skipped."""
    source, tgt_raw = two_detectors
    n_t = len(tgt_raw.detector)
    cfg = IsrTaskConfig(doCrosstalk=True, **PLAIN)
    bad = CrosstalkCalib(np.zeros((n_t, n_t)), interChip={"S00": np.zeros((3, 3))})
    with pytest.raises(RuntimeError, match="inter-chip crosstalk matrix"):
        IsrTask(config=cfg).run(tgt_raw.copy(), crosstalk=bad, crosstalkSources=[source])
    plain = CrosstalkCalib(np.zeros((n_t, n_t)))
    ref = IsrTask(config=cfg).run(tgt_raw.copy(), crosstalk=plain).exposure
    out = IsrTask(config=cfg).run(tgt_raw.copy(), crosstalk=plain, crosstalkSources=[source]).exposure
    np.testing.assert_array_equal(out.image, ref.image)
    other = CrosstalkCalib(np.zeros((n_t, n_t)), interChip={"S02": np.ones((16, n_t))})
    out = IsrTask(config=cfg).run(tgt_raw.copy(), crosstalk=other, crosstalkSources=[source]).exposure
    np.testing.assert_array_equal(out.image, ref.image)


def _write(calib, path):
    IsrCalibFormatter().write(calib, path)
    return path
