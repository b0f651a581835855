"""CalibCombineTask: combined pixels equal a direct per-pixel numpy computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.image import MASK_PLANES
from pipeline.image.statistics import IQR_TO_SIGMA, clipped_stats, stack_statistic
from pipeline.tasks.cp.combine import CalibCombineTask
from tests.cp._synth import SynthDetector, make_detector, make_exposure

BAD = 1 << MASK_PLANES["BAD"]
SAT = 1 << MASK_PLANES["SAT"]
CR = 1 << MASK_PLANES["CR"]
NO_DATA = 1 << MASK_PLANES["NO_DATA"]


def _stack(n, shape=(12, 14), seed=3):
    rng = np.random.default_rng(seed)
    imgs = rng.normal(100.0, 5.0, (n,) + shape)
    imgs[rng.random(imgs.shape) < 0.05] += 300.0          # outliers (cosmic rays)
    imgs[0, 0, 0] = np.nan
    var = rng.uniform(20, 30, imgs.shape)
    msk = np.zeros(imgs.shape, np.int32)
    msk[rng.random(imgs.shape) < 0.05] = SAT
    msk[:, 1, 1] = SAT                                     # nothing usable at (1, 1)
    msk[rng.random(imgs.shape) < 0.05] |= CR                # a non-excluded plane: ORed
    return imgs, var, msk


@pytest.mark.parametrize("n", [3, 4, 5, 9])
@pytest.mark.parametrize("statistic", ["MEANCLIP", "MEDIAN", "MEAN"])
def test_stack_statistic_equals_direct(n, statistic):
    imgs, var, msk = _stack(n)
    res = stack_statistic(imgs, var, msk, statistic=statistic, bad_bits=SAT, nsigma=3.0, niter=3,
                          no_data_bit=BAD)
    for y in range(imgs.shape[1]):
        for x in range(imgs.shape[2]):
            v, vv, m = imgs[:, y, x], var[:, y, x], msk[:, y, x]
            cand = np.isfinite(v) & ((m & SAT) == 0)
            if not cand.any():
                assert np.isnan(res.image[y, x]) and res.mask[y, x] & BAD
                continue
            if statistic == "MEANCLIP":
                mean, _, nn = clipped_stats(v, ~cand, 3.0, 3)
                # the used values: the engine's last selection
                c, h = np.median(v[cand]), 3.0 * IQR_TO_SIGMA * np.subtract(*np.percentile(v[cand], [75, 25]))
                for _ in range(3):
                    used = cand & (np.abs(v - c) <= h)
                    c = v[used].mean()
                    h = 3.0 * np.sqrt(v[used].var(ddof=1)) if used.sum() > 1 else 0.0
                expected = mean
                assert used.sum() == nn
            else:
                used = cand
                expected = np.median(v[used]) if statistic == "MEDIAN" else v[used].mean()
            assert res.image[y, x] == pytest.approx(expected, rel=1e-12, abs=1e-12)
            k = used.sum()
            if n < 5:
                exp_var = vv[used].sum() / k**2
            else:
                exp_var = v[used].var(ddof=1) / k if k > 1 else np.nan
                if statistic == "MEDIAN":
                    exp_var *= math.pi / 2
            if np.isnan(exp_var):
                assert np.isnan(res.variance[y, x])
            else:
                assert res.variance[y, x] == pytest.approx(exp_var, rel=1e-10)
            assert res.mask[y, x] == np.bitwise_or.reduce(m[cand])


def _exposures(n, scale_times=None, seed=7):
    truth = SynthDetector(gains=(1.0, 2.0), read_noise_e=(5.0, 5.0), ny=40, nx_amp=30)
    det = make_detector(truth)
    rng = np.random.default_rng(seed)
    exps = []
    for k in range(n):
        t = 1.0 if scale_times is None else scale_times[k]
        img = rng.normal(50.0 * t, 2.0, truth.shape)
        mask = np.zeros(truth.shape, np.int32)
        mask[5, 5] = SAT
        exps.append(make_exposure(img, det, 100 + k, t, mask=mask, variance=np.full(truth.shape, 4.0)))
    return det, exps


def test_combine_task_dark_time_scaling_and_header():
    times = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    det, exps = _exposures(6, times)
    task = CalibCombineTask()
    task.config.calibrationType = "dark"
    task.config.exposureScaling = "DarkTime"
    task.config.mask = ["SAT", "DETECTED", "INTRP", "CR"]
    out = task.run(inputExpHandles=exps).outputData
    direct = stack_statistic(np.array([e.image / t for e, t in zip(exps, times)]),
                             np.array([e.variance / t**2 for e, t in zip(exps, times)]),
                             np.array([e.mask for e in exps]), bad_bits=SAT | CR, no_data_bit=BAD)
    # every input is SAT at (5, 5) -> no usable input -> median fill + BAD
    fill = np.median(direct.image[np.isfinite(direct.image)])
    expected = np.where(np.isfinite(direct.image), direct.image, fill)
    np.testing.assert_allclose(out.image, expected.astype(np.float32), rtol=1e-6)
    assert out.image.mean() == pytest.approx(50.0, rel=0.01)          # ADU/s
    assert out.mask[5, 5] & BAD and out.mask.sum() == BAD               # other planes censored
    assert out.info.exposure_time == 1.0 and out.info.dark_time == 1.0
    h = out.metadata
    assert h["OBSTYPE"] == "dark"
    assert [h[f"CPP_INPUT_{i}"] for i in range(6)] == list(range(100, 106))
    assert h["CPP_INPUT_SCALE_2"] == 30.0 and h["CPP_INPUT_EXPT_5"] == 60.0
    assert "CALIB_CREATION_DATE" in h and "DATE-BEG" in h
    assert h["LSST CALIB C00 BADPIX-NUM"] == 1


def test_combine_bias_variance_rule_and_amp_scaling():
    det, exps = _exposures(3)
    task = CalibCombineTask()
    task.config.calibrationType = "bias"
    out = task.run(inputExpHandles=exps).outputData
    assert out.info.exposure_time == 0.0
    # 3 < 5 inputs: variance = sum(var)/n^2 = 4/3
    assert np.median(out.variance) == pytest.approx(4.0 / 3.0, rel=1e-6)
    task.config.exposureScaling = "MeanStats"
    task.config.scalingLevel = "AMP"
    out = task.run(inputExpHandles=exps).outputData
    for amp in det:
        assert np.median(out.image[amp.bbox.slices]) == pytest.approx(1.0, abs=0.02)


def test_combine_input_list_and_errors():
    det, exps = _exposures(4)
    task = CalibCombineTask()
    task.config.exposureScaling = "InputList"
    task.config.scalingLevel = "AMP"
    scales = [{"exposure": 100 + k, "expScale": 2.0 + k, "ampScale": {"0": {"C00": 10.0, "C01": 5.0}}}
              for k in range(4)]
    out = task.run(inputExpHandles=exps, inputScales=scales).outputData
    assert np.median(out.image[det["C00"].bbox.slices]) == pytest.approx(5.0, rel=0.01)
    assert np.median(out.image[det["C01"].bbox.slices]) == pytest.approx(10.0, rel=0.01)
    with pytest.raises(KeyError, match="exposure 103"):
        task.run(inputExpHandles=exps, inputScales=scales[:3])
    with pytest.raises(RuntimeError, match="No valid input"):
        CalibCombineTask().run(inputExpHandles=[])
    small = exps[0].subexposure(exps[0].bbox.__class__(0, 0, 10, 10))
    with pytest.raises(RuntimeError, match="Inconsistent dimensions"):
        CalibCombineTask().run(inputExpHandles=[exps[1], small])
    nd = exps[2].copy()
    nd.mask[:] = 0
    for e in exps:
        e.mask[3, 3] = NO_DATA
    with pytest.raises(RuntimeError, match="NO_DATA"):
        CalibCombineTask().run(inputExpHandles=exps)
    bad_time = _exposures(2, [0.0, 1.0])[1]
    t = CalibCombineTask()
    t.config.exposureScaling = "ExposureTime"
    with pytest.raises(RuntimeError, match="exposure time"):
        t.run(inputExpHandles=bad_time)
