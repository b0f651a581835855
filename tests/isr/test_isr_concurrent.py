"""One `IsrTask` instance processes two exposures at once (a run's state is not kept on the task)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pipeline.image import Box, Exposure, ExposureInfo, MaskedImage
from pipeline.instruments.simulate import simulate_exposures
from pipeline.tasks.isr import Defects, IsrTask, IsrTaskConfig

DET = 2  # testcam detector with 16 amplifiers (flips, prescans, parallel overscans)
FLUX = (1500.0, 2500.0)  # e-/s of the two science exposures (10 s each)


@pytest.fixture(scope="module")
def inputs():
    """Two science raws of different levels, and bias, dark, flat and defects for them."""
    specs = [{"observation_type": "science", "exposure_time": 10.0, "flux": f} for f in FLUX]
    exps, truth = simulate_exposures("testcam", specs, seed=21, detectors=[DET], flat_rms=0.03)
    shape = exps[0].detector.bbox.shape
    zeros = np.zeros(shape, np.float32)
    flat_img = truth.flat[DET].astype(np.float32)
    calibs = dict(
        bias=Exposure(MaskedImage(zeros.copy(), None, zeros.copy())),
        dark=Exposure(MaskedImage(zeros.copy(), None, zeros.copy()), info=ExposureInfo(dark_time=1.0)),
        flat=Exposure(MaskedImage(flat_img, None, zeros.copy())),
        defects=Defects([Box(20, 10, 1, 30), Box(100, 60, 3, 3)]),
    )
    # a saturated star in each raw (amp 0, no flip)
    for e in exps:
        d = e.detector.amplifiers[0].raw_data_bbox
        e.image[d.y0 + 20 : d.y0 + 23, d.x0 + 30 : d.x0 + 33] = 65000
    return exps, truth, calibs


def _assert_same(a: Exposure, b: Exposure) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.variance, b.variance)
    assert a.masked_image.mask_planes == b.masked_image.mask_planes
    assert a.metadata == b.metadata
    assert list(a.metadata) == list(b.metadata)
    assert a.detector == b.detector and a.photo_calib == b.photo_calib


def test_one_task_two_threads_equals_two_serial_runs(inputs):
    """Check two concurrent runs of one task instance equal two serial runs, and the truth."""
    exps, truth, calibs = inputs
    cfg = IsrTaskConfig(
        doDefect=True, saturation=60000.0, doCalculateStatistics=True, doSaveInterpPixels=True
    )
    serial_task = IsrTask(config=cfg)
    serial = [serial_task.run(e.copy(), **calibs) for e in exps]
    task = IsrTask(config=cfg)
    for _ in range(3):  # a few rounds: the two runs interleave differently each time
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(task.run, e.copy(), **calibs) for e in exps]
            threaded = [f.result() for f in futures]
        for s, t in zip(serial, threaded):
            _assert_same(s.exposure, t.exposure)
            _assert_same(s.preInterpExposure, t.preInterpExposure)
            assert s.outputStatistics == t.outputStatistics
            np.testing.assert_array_equal(s.ossThumb, t.ossThumb)
    # the outputs are right, not only equal: sky level per amp (e-/gain in ADU) and the star
    for res, flux in zip(serial, FLUX):
        out = res.exposure
        good_bits = out.masked_image.get_plane_bitmask(["BAD", "SAT", "INTRP"])
        for amp in out.detector:
            sl = amp.bbox.slices
            good = (out.mask[sl] & good_bits) == 0
            expected = flux * 10.0 / truth.gain(DET, amp.name)
            assert np.median(out.image[sl][good]) == pytest.approx(expected, rel=0.01), amp.name
        ax, ay = out.detector[0].bbox.x0 + 30, out.detector[0].bbox.y0 + 20
        assert np.all(out.mask[ay : ay + 3, ax : ax + 3] & out.masked_image.get_plane_bitmask("SAT"))
        assert out.metadata["LSST ISR FLAT APPLIED"] is True
