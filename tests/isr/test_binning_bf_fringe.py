"""Binning (§2.14, §8 check 8), brighter-fatter delta kernel (§2.9) and fringe fit (§2.10)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tasks.isr.binning import bin_image, bin_planes
from pipeline.tasks.isr.brighter_fatter import brighter_fatter_correction
from pipeline.tasks.isr.fringe import correct_fringes, measure_fringes, solve_fringes, subtract_fringes


def test_binning_floor_mean_or_variance():
    """Check binning floor mean or variance."""
    img = np.arange(7 * 9, dtype=np.float32).reshape(7, 9)
    mask = np.zeros((7, 9), np.int32)
    mask[1, 1] = 4
    mask[0, 2] = 1
    var = np.full((7, 9), 2.0, np.float32)
    bi, bm, bv = bin_planes(img, mask, var, 2)
    assert bi.shape == (3, 4)
    assert bi[0, 0] == pytest.approx(np.mean([0, 1, 9, 10]))
    assert bm[0, 0] == 4 and bm[0, 1] == 1 and bm[1, 1] == 0
    assert np.all(bv == pytest.approx(2.0 * 4 / 4))
    assert np.all(bin_image(np.full((64, 64), 100.0, np.float32), 8) == 100.0)
    with pytest.raises(TypeError, match="binFactor must be an int"):
        bin_image(img, 2.5)


def test_bf_delta_kernel_leaves_flat_image():
    """Check bf delta kernel leaves flat image."""
    img = np.full((100, 100), 1000.0, np.float32)
    k = np.zeros((5, 5))
    k[2, 2] = 1.0
    out, diff, n = brighter_fatter_correction(img, k, 10, 1000.0)
    np.testing.assert_allclose(out, img)
    assert n == 2  # converged at the first possible comparison
    with pytest.raises(ValueError):
        brighter_fatter_correction(img, k, 0)


def test_fringe_amplitude_recovered():
    """Check fringe amplitude recovered."""
    rng = np.random.default_rng(2)
    ny, nx = 200, 200
    y, x = np.mgrid[:ny, :nx]
    fringe = np.sin(x / 7.0) * np.cos(y / 11.0)
    sci = (500 + 12.5 * fringe + rng.normal(0, 0.5, (ny, nx))).astype(np.float32)
    bad = np.zeros((ny, nx), bool)
    xs = rng.integers(30, nx - 30, 300)
    ys = rng.integers(30, ny - 30, 300)
    s = measure_fringes(sci, bad, xs, ys, 3, 30)
    f = measure_fringes(fringe, bad, xs, ys, 3, 30)
    amp = solve_fringes(s, f[:, None])
    assert amp[0] == pytest.approx(12.5, rel=0.03)
    subtract_fringes(sci, None, [fringe], amp)
    assert np.std(sci) < 0.6


def test_fringe_all_nan_image_gives_zero_amplitudes(caplog):
    """An all-NaN image: amplitudes 0, nothing subtracted, one warning (ip_isr "no good pixels").

    Was an IndexError from the clipping of an empty measurement list.
    """
    from pipeline.image import MaskedImage

    ny, nx = 120, 140
    y, x = np.mgrid[0:ny, 0:nx]
    fringe = (np.sin(x / 7.0) * np.cos(y / 11.0)).astype(np.float32)
    mi = MaskedImage(np.full((ny, nx), np.nan, np.float32), None, np.ones((ny, nx), np.float32))
    with caplog.at_level("WARNING", logger="pipeline.tasks.isr.fringe"):
        amps = correct_fringes(
            mi, [(fringe, None, None), (fringe**2, None, None)], 3,
            num=200, small=3, large=30, pedestal=True, iterations=20, clip=3.0,
        )  # fmt: skip
    np.testing.assert_array_equal(amps, [0.0, 0.0])
    assert np.isnan(mi.image).all() and np.all(mi.variance == 1.0)
    assert "no good pixels (no finite measurement)" in caplog.text
    # finite science but NaN templates: no usable measurement either
    np.testing.assert_array_equal(solve_fringes(np.ones(50), np.full((50, 3), np.nan)), [0.0, 0.0, 0.0])


def test_bf_single_iteration_quirk_defined():
    """Check bf single iteration quirk defined."""
    # Reference QUIRK: maxIter = 1 leaves the difference undefined; we return 0.0 and 1 iteration.
    rng = np.random.default_rng(0)
    img = (1000 + rng.normal(0, 30, (40, 40))).astype(np.float32)
    k = np.full((3, 3), 1e-4)
    out, diff, n = brighter_fatter_correction(img, k, 1, 1000.0)
    assert n == 1 and diff == 0.0
    assert not np.array_equal(out, img)
    np.testing.assert_array_equal(out[:2], img[:2])  # border untouched
