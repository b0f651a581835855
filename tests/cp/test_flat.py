"""Flat measurement and normalization (E x G decomposition) against known truth."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.image import MASK_PLANES
from pipeline.tasks.cp.flat import CpFlatMeasureTask, CpFlatNormalizationTask, measure_scales
from tests.cp._synth import SynthDetector, make_detector, make_exposure

N_DET, N_EXP = 40, 10


def _truth(seed=1):
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.7, 1.3, N_DET)
    counts = rng.integers(900_000, 1_100_000, (N_DET, N_EXP)).astype(float)
    counts[:] = counts[:, :1]          # a detector has the same good-pixel count in every exposure
    det_counts = counts.sum(axis=1)
    g /= (g * det_counts).sum() / det_counts.sum()     # count-weighted mean of G = 1
    e = rng.uniform(5000, 30000, N_EXP)
    return g, e, counts


def test_measure_scales_exact_on_outer_product():
    g, e, counts = _truth()
    res = CpFlatNormalizationTask().measureScales(np.outer(g, e), counts, iterations=10)
    np.testing.assert_allclose(res.vectorG, g, rtol=1e-12)
    np.testing.assert_allclose(res.vectorE, e, rtol=1e-12)
    np.testing.assert_allclose(res.bgModel, np.outer(g, e), rtol=1e-12)
    # unit weights: G normalized to plain mean 1
    g1 = g / g.mean()
    res1 = measure_scales(np.outer(g1, e))
    np.testing.assert_allclose(res1.vectorG, g1, rtol=1e-12)
    np.testing.assert_allclose(res1.vectorE, e, rtol=1e-12)


def test_measure_scales_single_detector_and_missing_entries():
    b = np.array([[100.0, 250.0, 80.0]])
    res = measure_scales(b)
    np.testing.assert_allclose(res.vectorG, [1.0])
    np.testing.assert_allclose(res.vectorE, b[0])
    g, e, counts = _truth(2)
    bg = np.outer(g, e)
    bg[3, 4] = np.nan          # a failed measurement is ignored, not counted
    bg[7, 1] = -5.0
    res = measure_scales(bg, counts)
    # counts of the ignored entries are dropped from the normalization, so compare shapes:
    np.testing.assert_allclose(res.vectorG / res.vectorG[0], g / g[0], rtol=1e-10)
    np.testing.assert_allclose(res.vectorE / res.vectorE[0], e / e[0], rtol=1e-10)
    with pytest.raises(ValueError, match="no finite"):
        measure_scales(np.full((2, 2), np.nan))


def test_measure_scales_an_unusable_exposure_poisons_nothing_else():
    """One NaN or <= 0 level of a single-detector camera (a whole exposure column unusable).

    Issue reproduction: before the fix, the NaN of that exposure's weighted mean leaked through
    ``NaN * 0`` into every detector scale and then into every exposure level.
    """
    b = np.array([[100.0, np.nan, 300.0, 400.0]])
    res = measure_scales(b)
    np.testing.assert_allclose(res.vectorG, [1.0])
    np.testing.assert_allclose(res.vectorE, [100.0, np.nan, 300.0, 400.0])
    g = np.array([1.0, 2.0]) / 1.5
    e = np.array([150.0, 300.0, 450.0])
    bg = np.outer(g, e)
    bg[:, 1] = 0.0                       # a dark exposure on every detector
    res = measure_scales(bg)
    np.testing.assert_allclose(res.vectorG, g, rtol=1e-12)
    np.testing.assert_allclose(res.vectorE[[0, 2]], e[[0, 2]], rtol=1e-12)
    assert np.isnan(res.vectorE[1])


def test_measure_scales_with_one_percent_noise():
    """1 % noise per entry: each E averages 40 entries (σ ≈ 0.16 %), each G 10 (σ ≈ 0.32 %).

    The decomposition is unbiased: the normalization and the mean scale ratios are recovered to
    better than 0.1 %, every element within 4σ of its expected statistical error, and the model
    is closer to the noiseless truth than the input (it averages the noise).
    """
    g, e, counts = _truth(3)
    rng = np.random.default_rng(4)
    truth = np.outer(g, e)
    noisy = truth * (1 + 0.01 * rng.standard_normal(truth.shape))
    res = measure_scales(noisy, counts)
    rel_e = res.vectorE / e - 1
    rel_g = res.vectorG / g - 1
    assert abs(np.mean(rel_e)) < 1e-3 and abs(np.mean(rel_g)) < 1e-3
    assert np.all(np.abs(rel_e) < 4 * 0.01 / np.sqrt(N_DET))
    assert np.all(np.abs(rel_g) < 4 * 0.01 / np.sqrt(N_EXP))
    model_err = np.std(res.bgModel / truth - 1)
    assert model_err < 0.5 * np.std(noisy / truth - 1)


def _flat(det, level, exp_id, rng, det_gain=1.0):
    truth = SynthDetector(gains=(1.0, 1.0), read_noise_e=(0.0, 0.0), ny=60, nx_amp=50)
    img = rng.normal(level * det_gain, 0.01 * level, truth.shape)
    img[0, 0] = 1e7                                       # clipped away
    mask = np.zeros(truth.shape, np.int32)
    mask[10:12, :] = 1 << MASK_PLANES["BAD"]
    img[10:12, :] = -1e6                                  # excluded by the mask
    return make_exposure(img, det, exp_id, 1.0, mask=mask)


def test_measure_task_and_normalization_task():
    truth = SynthDetector(gains=(1.0, 1.0), read_noise_e=(0.0, 0.0), ny=60, nx_amp=50)
    rng = np.random.default_rng(5)
    det_gains = {0: 0.9, 1: 1.1, 2: 1.0}
    levels = {10: 1000.0, 11: 2000.0, 12: 4000.0, 13: 3000.0}
    mds, dims = [], []
    for d, dg in det_gains.items():
        det = make_detector(truth, det_id=d)
        for e, lev in levels.items():
            st = CpFlatMeasureTask().run(inputExp=_flat(det, lev, e, rng, dg)).outputStats
            assert st["DETECTOR_MEDIAN"] == pytest.approx(lev * dg, rel=1e-3)
            # masked rows and the outlier excluded; a 3σ clip drops ~0.3 % of Gaussian pixels
            assert 0.99 * 5799 < st["DETECTOR_N"] < 5799
            assert st["AMP_NAME_1"] == "C01" and 0.99 * 2900 < st["AMP_N_0"] <= 2900
            assert st["DETECTOR_SIGMA"] == pytest.approx(0.01 * lev, rel=0.05)
            mds.append(st)
            dims.append({"instrument": "synth", "detector": d, "exposure": e})
    task = CpFlatNormalizationTask()
    out = task.run(inputMDs=mds, inputDims=dims, camera=None)
    g_true = np.array([0.9, 1.1, 1.0])
    g_true /= g_true.mean()           # equal pixel counts per detector
    for d, gt in zip(det_gains, g_true):
        assert out.outputScales["detScale"][str(d)] == pytest.approx(gt, rel=1e-3)
    per_exp = {s["exposure"]: s for s in out.outputExpScales}
    assert sorted(per_exp) == sorted(levels)
    for e, lev in levels.items():
        assert per_exp[e]["expScale"] == pytest.approx(lev * np.mean([0.9, 1.1, 1.0]), rel=1e-3)
        assert per_exp[e]["ampScale"]["1"]["C00"] == per_exp[e]["expScale"]
        assert out.outputScales["expScale"]["2"]["C01"][str(e)] == per_exp[e]["expScale"]
    task.config.level = "AMP"
    amp = task.run(inputMDs=mds, inputDims=dims, camera=None).outputScales
    assert set(amp["ampDetScale"]["0"]) == {"C00", "C01"}
    assert amp["ampDetScale"]["1"]["C00"] / amp["ampDetScale"]["0"]["C01"] == pytest.approx(1.1 / 0.9, rel=1e-3)
    with pytest.raises(KeyError, match="lack 'exposure'"):
        CpFlatNormalizationTask().run(inputMDs=mds[:1], inputDims=[{"detector": 0}], camera=None)
    broken = dict(mds[0])
    del broken["DETECTOR_MEDIAN"]
    with pytest.raises(KeyError, match="DETECTOR_MEDIAN"):
        CpFlatNormalizationTask().run(inputMDs=[broken], inputDims=dims[:1], camera=None)
    del broken["AMP_MEDIAN_1"]
    t = CpFlatNormalizationTask()
    t.config.level = "AMP"
    with pytest.raises(KeyError, match="AMP_MEDIAN_1"):
        t.run(inputMDs=[broken], inputDims=dims[:1], camera=None)
