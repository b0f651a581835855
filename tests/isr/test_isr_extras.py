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
