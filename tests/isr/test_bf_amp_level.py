"""AMP-level brighter-fatter correction (per-amp kernels and gains)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.instruments.simulate import simulate_exposures
from pipeline.tasks.isr import BrighterFatterKernel, IsrCalibFormatter, IsrTask, IsrTaskConfig


@pytest.fixture(scope="module")
def starry_raw():
    """Make a 16-amp testcam raw (flipped amps) with bright stars spread over the detector."""
    exps, _ = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 10.0, "flux": 100.0}],
        seed=7,
        detectors=[2],
    )
    raw = exps[0]
    img = raw.image.astype(np.float64)
    yy, xx = np.mgrid[-4:5, -4:5]
    star = np.exp(-(xx**2 + yy**2) / (2 * 1.2**2))
    for amp in raw.detector:
        d = amp.raw_data_bbox
        for cy, cx in ((d.y0 + 12, d.x0 + 20), (d.y0 + 30, d.x0 + 45), (d.y0 + 5, d.x0 + 5)):
            img[cy - 4 : cy + 5, cx - 4 : cx + 5] += 25000.0 * star
    raw.masked_image.image[...] = np.clip(np.rint(img), 0, 65535).astype(raw.image.dtype)
    return raw


def _kernel(amplitude: float) -> np.ndarray:
    yy, xx = np.mgrid[-3:4, -3:4]
    k = -amplitude / (1.0 + xx**2 + yy**2)
    k[3, 3] = 0.0
    k[3, 3] = -k.sum()  # zero-sum kernel
    return k


def _cfg(**kw) -> IsrTaskConfig:
    base = dict(
        doBias=False,
        doDark=False,
        doFlat=False,
        doDefect=False,
        doBrighterFatter=True,
        brighterFatterMaxIter=4,
        brighterFatterThreshold=0.0,  # same number of iterations at both levels
    )
    base.update(kw)
    return IsrTaskConfig(**base)


def test_amp_level_identical_kernels_equals_detector_level(starry_raw):
    """Check identical per-amp kernels reproduce the DETECTOR-level result (rtol 1e-6).

    Also next to the amp boundaries; the correction itself is far larger than that.
    """
    k = _kernel(2e-6)
    raw = starry_raw
    none = IsrTask(config=_cfg(doBrighterFatter=False)).run(raw.copy()).exposure.image
    det = IsrTask(config=_cfg()).run(raw.copy(), bfKernel=k).exposure.image
    amp_kernels = {a.name: k.copy() for a in raw.detector}
    bfk = BrighterFatterKernel(None, ampKernels=amp_kernels)
    amp = IsrTask(config=_cfg(brighterFatterLevel="AMP")).run(raw.copy(), bfKernel=bfk).exposure.image
    assert np.abs(det - none).max() > 5.0  # the BF correction is visible
    np.testing.assert_allclose(amp, det, rtol=1e-6, atol=1e-3)


def test_amp_level_different_kernels_act_per_amp(starry_raw, tmp_path):
    """Check a kernel on one amp only acts on that amp only.

    That amp equals the DETECTOR-level correction with its kernel, every other amp is
    untouched; per-amp gains scale the correction amp by amp.
    """
    raw = starry_raw
    names = [a.name for a in raw.detector]
    target = names[5]
    k = _kernel(2e-6)
    zero = np.zeros_like(k)
    bfk = BrighterFatterKernel(None, ampKernels={n: (k if n == target else zero) for n in names})
    bfk = IsrCalibFormatter().read(_write(bfk, tmp_path / "bfk.fits"))  # round trip of amp kernels
    assert bfk.level == "AMP" and np.array_equal(bfk.ampKernels[target], k)
    none = IsrTask(config=_cfg(doBrighterFatter=False)).run(raw.copy()).exposure
    det = IsrTask(config=_cfg()).run(raw.copy(), bfKernel=k).exposure.image
    out = IsrTask(config=_cfg(brighterFatterLevel="AMP")).run(raw.copy(), bfKernel=bfk).exposure
    edge = 3 + 1  # detector-edge pixels that neither level corrects (kernel radius + 1)
    inner = np.zeros(out.shape, bool)
    inner[edge:-edge, edge:-edge] = True
    for amp in out.detector:
        sl = amp.bbox.slices
        m = inner[sl]
        want = det[sl] if amp.name == target else none.image[sl]
        np.testing.assert_allclose(out.image[sl][m], want[m], rtol=1e-6, atol=1e-3, err_msg=amp.name)
    # Per-amp gains: doubling the target amp's BF gain changes only that amp.
    gains = {a.name: a.gain for a in raw.detector}
    gains2 = dict(gains, **{target: 2 * gains[target]})
    a1 = IsrTask(config=_cfg(brighterFatterLevel="AMP")).run(raw.copy(), bfKernel=bfk, bfGains=gains).exposure
    a2 = (
        IsrTask(config=_cfg(brighterFatterLevel="AMP")).run(raw.copy(), bfKernel=bfk, bfGains=gains2).exposure
    )
    diff = np.abs(a2.image - a1.image)
    tb = next(a.bbox for a in raw.detector if a.name == target)
    assert diff[tb.slices].max() > 1.0
    outside = diff.copy()
    outside[tb.slices] = 0
    assert outside.max() == 0.0


def test_amp_level_errors(starry_raw):
    """A missing amp kernel, or per-amp kernels at DETECTOR level, raise naming the fix."""
    raw = starry_raw
    k = _kernel(1e-6)
    partial = {raw.detector[0].name: k}
    with pytest.raises(RuntimeError, match="no kernel for amp"):
        IsrTask(config=_cfg(brighterFatterLevel="AMP")).run(raw.copy(), bfKernel=partial)
    with pytest.raises(RuntimeError, match="brighterFatterLevel='AMP'"):
        IsrTask(config=_cfg()).run(raw.copy(), bfKernel={a.name: k for a in raw.detector})
    with pytest.raises(ValueError, match="odd sizes"):
        BrighterFatterKernel(np.ones((4, 4)))


def _write(calib, path):
    IsrCalibFormatter().write(calib, path)
    return path
