"""Detector-less input (config gain/readNoise) and brighterFatterMaskGrowSize."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tasks.isr import IsrTask, IsrTaskConfig

PLAIN = dict(doBias=False, doDark=False, doFlat=False, doDefect=False)


def test_detectorless_array_uses_config_gain_and_read_noise():
    """Check a bare 2-D array is processed as one amplifier with the config gain/noise.

    Variance = image/gain + (noise/gain)², saturation from config.saturation; without
    config.gain it raises naming the options.
    """
    rng = np.random.default_rng(1)
    img = rng.poisson(1000.0, (40, 50)).astype(np.uint16)
    img[5, 5] = 60000
    cfg = IsrTaskConfig(gain=2.0, readNoise=5.0, saturation=50000.0, doInterpolate=False, **PLAIN)
    out = IsrTask(config=cfg).run(img).exposure
    np.testing.assert_allclose(out.variance, out.image / 2.0 + 6.25, rtol=1e-6)
    assert out.metadata["LSST ISR GAIN A"] == 2.0 and out.metadata["LSST ISR READNOISE A"] == 5.0
    sat = out.masked_image.get_plane_bitmask("SAT")
    assert out.mask[5, 5] & sat and np.count_nonzero(out.mask & sat) == 1
    with pytest.raises(RuntimeError, match="config.gain"):
        IsrTask(config=IsrTaskConfig(**PLAIN)).run(img)


def test_brighter_fatter_mask_grow_size():
    """After BF, the interpolated planes grow by a diamond of brighterFatterMaskGrowSize."""
    img = np.full((40, 40), 1000.0, np.float32)
    k = np.zeros((3, 3))
    k[1, 1] = 1e-9
    base = dict(gain=1.0, doBrighterFatter=True, doInterpolate=False, doSetBadRegions=False, **PLAIN)
    from pipeline.image import Exposure, MaskedImage

    def run(grow):
        mi = MaskedImage(img.copy())
        mi.mask[20, 20] = mi.get_plane_bitmask("BAD", add=True)
        cfg = IsrTaskConfig(brighterFatterMaskGrowSize=grow, **base)
        return IsrTask(config=cfg).run(Exposure(mi), bfKernel=k).exposure

    bad0 = run(0)
    bad2 = run(2)
    bit = bad2.masked_image.get_plane_bitmask("BAD")
    assert np.count_nonzero(bad0.mask & bit) == 1
    sel = (bad2.mask & bit) != 0
    assert np.count_nonzero(sel) == 13  # |dx| + |dy| <= 2
    assert sel[18, 20] and sel[20, 22] and sel[19, 21] and not sel[18, 21]


def test_trim_to_match_calib_keeps_amp_boxes_inside_the_image():
    """Check doTrimToMatchCalib clips the amp boxes to the trimmed image.

    The variance of the border amps is computed on their own pixels (no wrapped slices).
    """
    from pipeline.instruments.simulate import simulate_exposures

    exps, _ = simulate_exposures("testcam", [{"observation_type": "bias"}], seed=3, detectors=[0])
    raw = exps[0]
    ny, nx = raw.detector.bbox.shape
    bias = np.zeros((ny - 4, nx - 4), np.float32)
    cfg = IsrTaskConfig(doTrimToMatchCalib=True, doDark=False, doFlat=False, doDefect=False)
    out = IsrTask(config=cfg).run(raw, bias=bias).exposure
    assert out.shape == (ny - 4, nx - 4)
    for amp in out.detector:
        b = amp.bbox
        assert b.x0 >= 0 and b.y0 >= 0 and b.x1 <= nx - 4 and b.y1 <= ny - 4
        g, rn = amp.gain, amp.read_noise
        np.testing.assert_allclose(
            out.variance[b.slices], out.image[b.slices] / g + (rn / g) ** 2, rtol=1e-5, atol=1e-3
        )
