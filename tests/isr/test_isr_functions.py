"""Known-value tests of the pure ISR functions (reference-algorithms §2.5-§2.15, §8)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.image import Amplifier, Box, Detector
from pipeline.tasks.isr.assembly import assemble_plane, assembled_detector
from pipeline.tasks.isr.isr_functions import (
    LEGACY_SINGLE_PIXEL_WEIGHTS,
    bias_correction,
    dark_correction,
    effective_gain_noise,
    flat_correction,
    grow_mask,
    interpolate_from_mask,
    make_threshold_mask,
    mask_boxes,
    mask_edges,
    mask_nans,
    mask_negative_variance,
    set_bad_regions,
    update_variance,
    widen_saturation_trails,
)


def planes(value=10.0, shape=(8, 8), var=1.0):
    """Build the planes test input."""
    return (np.full(shape, value, np.float32), np.zeros(shape, np.int32), np.full(shape, var, np.float32))


def test_bias_exact_and_mask_or_var_add():
    """Check bias exact and mask or var add."""
    img, msk, var = planes()
    bi, bm, bv = planes(1.0, var=0.5)
    bm[2, 3] = 1
    bias_correction(img, msk, var, bi, bm, bv)
    assert np.all(img == 9.0)
    assert msk[2, 3] == 1 and msk.sum() == 1
    assert np.all(var == 1.5)
    with pytest.raises(RuntimeError, match="bias has shape"):
        bias_correction(img, msk, var, np.zeros((3, 3), np.float32))


def test_dark_scaling_and_variance():
    """Check dark scaling and variance."""
    img, msk, var = planes(1.0, var=1.0)
    di, dm, dv = planes(1.0 / 128, var=0.0)
    s = dark_correction(img, msk, var, di, dm, dv, 128.0, 1.0)
    assert s == 128.0
    np.testing.assert_allclose(img, 0.0, atol=1e-6)
    assert np.all(var == 1.0) and not msk.any()
    img, msk, var = planes(10.0)
    di, dm, dv = planes(1.0, var=2.0)
    dark_correction(img, msk, var, di, dm, dv, 1.0, 4.0)
    np.testing.assert_allclose(img, 10 - 1 / 4, rtol=1e-6)
    np.testing.assert_allclose(var, 1.0 + 2.0 / 16)  # + s² var_dark
    dark_correction(img, msk, var, di, dm, dv, 1.0, 4.0, invert=True)
    np.testing.assert_allclose(img, 10.0, atol=1e-3)
    with pytest.raises(RuntimeError, match="darktime is NaN"):
        dark_correction(img, msk, var, di, dm, dv, float("nan"), 1.0)
    img, msk, var = planes(10.0)
    assert dark_correction(img, msk, var, di, dm, dv, 3.0, float("nan")) == 3.0  # darkScale -> 1


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_flat_user_scale_and_quotient_variance(scale):
    """Check flat user scale and quotient variance."""
    img, msk, var = planes(10.0, var=4.0)
    fi, fm, fv = planes(2.0, var=0.01)
    flat_correction(img, msk, var, fi, fm, fv, "USER", scale)
    b = 2.0 / scale
    np.testing.assert_allclose(img, 10.0 / b, rtol=1e-6)
    np.testing.assert_allclose(var, (100 * 0.01 / scale**2 + b * b * 4.0) / b**4, rtol=1e-5)
    flat_correction(img, msk, var, fi, fm, fv, "USER", scale, invert=True)
    np.testing.assert_allclose(img, 10.0, atol=1e-3)


def test_flat_mean_median_and_unknown():
    """Check flat mean median and unknown."""
    img, msk, var = planes(10.0)
    fi = np.ones((8, 8), np.float32)
    fi[:4] = 3.0
    assert flat_correction(img.copy(), msk, var.copy(), fi, None, None, "MEAN") == pytest.approx(2.0)
    assert flat_correction(img.copy(), msk, var.copy(), fi, None, None, "MEDIAN") == pytest.approx(2.0)
    with pytest.raises(RuntimeError, match="Unknown flatScalingType"):
        flat_correction(img, msk, var, fi, None, None, "MODE")


@pytest.mark.parametrize("gain", [-1.0, 0.0, 0.1, 1.0, float("nan")])
def test_variance_formula_and_gain_fallback(gain):
    """Check variance formula and gain fallback."""
    level, rn = 1000.0, 1.5
    g, n = effective_gain_noise(gain, rn)
    img = np.full((4, 4), level, np.float32)
    var = np.zeros_like(img)
    update_variance(img, var, g, n)
    want = level / g + (rn / g) ** 2
    assert g == (gain if gain > 0 else 1.0)
    np.testing.assert_allclose(var, want, rtol=1e-6)


def test_read_noise_zero_is_kept_quirk():
    """Check read noise zero is kept quirk."""
    # Reference QUIRK: noise 0 -> 1 e-. Intended behaviour: 0 stays 0; NaN/negative -> 1.
    assert effective_gain_noise(2.0, 0.0) == (2.0, 0.0)
    assert effective_gain_noise(2.0, float("nan")) == (2.0, 1.0)
    assert effective_gain_noise(2.0, -3.0) == (2.0, 1.0)


def test_negative_variance_and_nans():
    """Check negative variance and nans."""
    v = np.array([[1.0, 0.0], [-1.0, 2.0]], np.float32)
    assert mask_negative_variance(v).tolist() == [[False, True], [True, False]]
    img = np.array([[1.0, np.nan], [np.inf, 2.0]], np.float32)
    var = np.array([[np.nan, 1.0], [1.0, 1.0]], np.float32)
    assert mask_nans(img, var).sum() == 3


def test_saturation_diamond_growth_and_interpolation():
    """Check saturation diamond growth and interpolation."""
    # reference test_saturationCorrection: 20x20 image of 100, column x=9 y=5..15 = 1000
    img = np.full((20, 20), 100.0, np.float32)
    img[5:16, 9] = 1000.0
    sat = make_threshold_mask(img, 1000.0)
    assert sat.sum() == 11
    grown = grow_mask(sat, 1)
    assert grown[5:16, 8].all() and grown[5:16, 10].all() and grown[4, 9] and grown[16, 9]
    for y, x in [(4, 8), (4, 10), (16, 8), (16, 10)]:
        assert not grown[y, x]  # diamond, not square
    assert grown.sum() == 11 * 3 + 2
    n = interpolate_from_mask(img, grown)
    assert n == grown.sum()
    assert np.all(img == 100.0)
    assert not make_threshold_mask(np.array([[np.nan]]), 0.0).any()
    assert make_threshold_mask(img, float("nan")).sum() == 0


def test_interpolation_weights_linear_and_edges():
    """Check interpolation weights linear and edges."""
    row = np.array([[1.0, 2.0, 4.0, 100.0, 5.0, 7.0, 8.0]], np.float32)
    bad = np.zeros(row.shape, bool)
    bad[0, 3] = True
    interpolate_from_mask(row, bad)
    w = LEGACY_SINGLE_PIXEL_WEIGHTS
    assert row[0, 3] == pytest.approx(w[0] * 2 + w[1] * 4 + w[2] * 5 + w[3] * 7, rel=1e-6)
    ramp = np.arange(20, dtype=np.float32)[None, :].repeat(3, 0)
    bad = np.zeros(ramp.shape, bool)
    bad[:, 5:9] = True
    r2 = ramp.copy()
    interpolate_from_mask(r2, bad)
    np.testing.assert_allclose(r2, ramp, atol=1e-5)  # linear gradient preserved
    # Long edge run: beyond 6 pixels of good data -> fallback
    img = np.full((2, 30), 10.0, np.float32)
    bad = np.zeros(img.shape, bool)
    bad[0, :15] = True
    interpolate_from_mask(img, bad, fallback=4.0)
    assert np.all(img[0, :8] == 4.0)
    assert img[0, 14] == pytest.approx(10 + (4 - 10) / 7)
    bad = np.zeros(img.shape, bool)
    bad[1] = True
    interpolate_from_mask(img, bad, fallback=-1.0)
    assert np.all(img[1] == -1.0)


def test_widen_saturation_trails():
    """Check widen saturation trails."""
    sat = np.zeros((4, 40), bool)
    sat[0, 10:15] = True  # w=5 -> 0
    sat[1, 10:16] = True  # w=6 -> 1
    sat[2, 10:18] = True  # w=8 -> 3
    sat[3, 2:14] = True  # w=12 -> 4, clipped at 0
    out = widen_saturation_trails(sat)
    assert out[0].sum() == 5
    assert np.flatnonzero(out[1]).tolist() == list(range(9, 17))
    assert np.flatnonzero(out[2]).tolist() == list(range(7, 21))
    assert np.flatnonzero(out[3]).tolist() == list(range(0, 18))


def test_mask_edges_and_boxes():
    """Check mask edges and boxes."""
    m = np.zeros((10, 12), np.int32)
    mask_edges(m, 2, 128)
    assert (m == 128).sum() == 10 * 12 - 6 * 8
    m = np.zeros((10, 12), np.int32)
    mask_edges(m, 1, 128, [Box(0, 0, 6, 10), Box(6, 0, 6, 10)])
    assert (m[:, 5] == 128).all() and (m[:, 6] == 128).all() and m[5, 3] == 0
    m = np.zeros((10, 12), np.int32)
    assert mask_boxes(m, [Box(10, 8, 5, 5), (-2, -2, 3, 3), (50, 50, 1, 1)], 1) == 2
    assert m.sum() == 4 + 1


def test_set_bad_regions_uses_configured_statistic():
    """Check set bad regions uses configured statistic."""
    # Reference QUIRK ignores badStatistic (always MEDIAN); we honour it.
    img = np.concatenate([np.zeros(60), np.full(40, 10.0), [1e6]]).astype(np.float32)[None, :]
    mask = np.zeros(img.shape, np.int32)
    mask[0, 0] = 1  # BAD
    mask[0, 1] = 1 | 4  # BAD + INTRP: untouched
    n, v = set_bad_regions(img.copy(), mask, 1, 4, "MEDIAN")
    assert n == 1 and v == 0.0
    im2 = img.copy()
    n, v = set_bad_regions(im2, mask, 1, 4, "MEANCLIP")
    good = img[0, 2:]
    assert v == pytest.approx(good[good < 1e5].mean(), rel=1e-6)
    assert im2[0, 0] == pytest.approx(v) and im2[0, 1] == 0.0


def _two_amp_detector(flip_b: bool) -> Detector:
    # MegaCam-like: A serial overscan on the low-x side, B on the high-x side.
    a = Amplifier(
        "A",
        bbox=Box(0, 0, 4, 3),
        raw_bbox=Box(0, 0, 6, 4),
        raw_data_bbox=Box(2, 0, 4, 3),
        raw_serial_overscan_bbox=Box(0, 0, 2, 3),
        readout_corner="LL",
    )
    b = Amplifier(
        "B",
        bbox=Box(4, 0, 4, 3),
        raw_bbox=Box(6, 0, 6, 4),
        raw_data_bbox=Box(6, 0, 4, 3),
        raw_serial_overscan_bbox=Box(10, 0, 2, 3),
        readout_corner="LR",
        raw_flip_x=flip_b,
    )
    return Detector(0, "ccd", bbox=Box(0, 0, 8, 3), amplifiers=(a, b), raw_shape=(4, 12))


@pytest.mark.parametrize("flip", [False, True])
def test_assembly_trimmed_and_untrimmed(flip):
    """Check assembly trimmed and untrimmed."""
    det = _two_amp_detector(flip)
    raw = np.arange(48, dtype=np.float32).reshape(4, 12)
    out = assemble_plane(raw, det)
    assert out.shape == (3, 8)
    np.testing.assert_array_equal(out[:, :4], raw[0:3, 2:6])
    want_b = raw[0:3, 6:10][:, ::-1] if flip else raw[0:3, 6:10]
    np.testing.assert_array_equal(out[:, 4:], want_b)
    full = assemble_plane(raw, det, trim=False)
    assert full.shape == (4, 12)
    want = raw[:, 6:12][:, ::-1] if flip else raw[:, 6:12]
    np.testing.assert_array_equal(full[:, 6:], want)
    d2 = assembled_detector(det, trim=False)
    ab = d2["B"]
    assert not ab.raw_flip_x
    # after an untrimmed flip, B's data box is mirrored to the high-x side of its raw box
    assert ab.raw_data_bbox == (Box(8, 0, 4, 3) if flip else Box(6, 0, 4, 3))
    np.testing.assert_array_equal(full[ab.raw_data_bbox.slices], out[:, 4:])
