"""Tests of the afw-compatible statistics engine (reference-algorithms §1.5, §8 check 2)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.image.statistics import (
    IQR_TO_SIGMA,
    clipped_stats,
    clipped_stats_per_row,
    compute_statistic,
    integer_median,
    integer_median_per_row,
    mean_per_row,
    median,
    median_per_row,
)


def test_integer_median_tie_aware():
    """Check integer median tie aware."""
    assert integer_median(np.array([1, 2, 2, 2])) == pytest.approx(1.8333333333333333, abs=1e-12)
    # All ties: exactly the value.
    assert integer_median(np.array([2, 2, 2, 2, 2])) == 2.0
    # Distinct odd count: v - 0.5 + (n/2 - L)/1 = 3 - 0.5 + (2.5 - 2) = 3.0
    assert integer_median(np.array([1, 2, 3, 4, 5])) == 3.0
    assert np.isnan(integer_median(np.array([], dtype=int)))


def test_integer_median_per_row_matches_scalar():
    """Check integer median per row matches scalar."""
    rng = np.random.default_rng(42)
    arr = rng.integers(0, 5, size=(50, 9))
    mask = rng.random((50, 9)) < 0.2
    got = integer_median_per_row(arr, mask)
    want = np.array([integer_median(arr[i], mask[i]) for i in range(50)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert integer_median_per_row(np.array([[1, 2, 2, 2]]))[0] == pytest.approx(11 / 6)


def test_median_linear_interpolation():
    """Check median linear interpolation."""
    assert median(np.array([1.0, 2.0, 3.0, 10.0])) == 2.5
    assert median(np.array([1.0, np.nan, 3.0])) == 2.0
    assert median(np.array([1.0, 5.0, 3.0]), mask=np.array([False, True, False])) == 2.0


def test_clipped_stats_reselects_from_full_set():
    """Check clipped stats reselects from full set."""
    rng = np.random.default_rng(7)
    x = rng.normal(100.0, 5.0, 10000)
    x[:50] = 1e4  # outliers
    mean, var, n = clipped_stats(x)
    # Direct re-implementation of the rule: every iteration selects from the full set.
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    c, h = q50, 3 * IQR_TO_SIGMA * (q75 - q25)
    for _ in range(3):
        sel = x[np.abs(x - c) <= h]
        c, v = sel.mean(), sel.var(ddof=1)
        h = 3 * np.sqrt(v)
    assert mean == pytest.approx(c, rel=1e-12)
    assert var == pytest.approx(v, rel=1e-12)
    assert n == sel.size
    assert abs(mean - 100.0) < 0.2
    assert var == pytest.approx(25.0, rel=0.05)


def test_clipped_stats_reselection_differs_from_survivor_clipping():
    """Check clipped stats reselection differs from survivor clipping."""
    # Value 1.4 is rejected at iteration 0 (IQR-based) but re-admitted later because each
    # iteration re-selects from the full set.
    x = np.array([0.3, -0.3, -0.8, 1.4, -0.5, -0.3, -1.8, -0.1, 0.2])
    mean, var, n = clipped_stats(x, nsigma=3.0, niter=3)
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    h0 = 3 * IQR_TO_SIGMA * (q75 - q25)
    assert abs(1.4 - q50) > h0  # rejected at first
    assert n == 9  # re-admitted
    assert mean == pytest.approx(x.mean())
    assert var == pytest.approx(x.var(ddof=1))


def test_clipped_stats_mask_and_nan():
    """Check clipped stats mask and nan."""
    x = np.array([1.0, 2.0, 3.0, np.nan, 100.0])
    mean, var, n = clipped_stats(x, mask=np.array([False, False, False, False, True]))
    assert (mean, n) == (2.0, 3)
    assert var == pytest.approx(1.0)
    assert np.isnan(clipped_stats(np.array([np.nan]))[0])


def test_per_row_variants():
    """Check per row variants."""
    rng = np.random.default_rng(3)
    arr = rng.normal(0, 1, (20, 31)).astype(np.float32)
    mask = rng.random(arr.shape) < 0.1
    np.testing.assert_allclose(
        median_per_row(arr, mask), [np.median(arr[i][~mask[i]]) for i in range(20)], rtol=1e-6
    )
    np.testing.assert_allclose(
        mean_per_row(arr, mask), [arr[i][~mask[i]].astype(float).mean() for i in range(20)], rtol=1e-6
    )
    m, v, n = clipped_stats_per_row(arr, mask)
    for i in range(20):
        mi, vi, ni = clipped_stats(arr[i], mask[i])
        assert m[i] == pytest.approx(mi, rel=1e-9, abs=1e-12)
        assert v[i] == pytest.approx(vi, rel=1e-9)
        assert n[i] == ni


def test_compute_statistic_names():
    """Check compute statistic names."""
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert compute_statistic(x, "MEAN") == 2.5
    assert compute_statistic(x, "VARIANCE") == pytest.approx(x.var(ddof=1))
    assert compute_statistic(np.array([1, 2, 2, 2]), "MEDIAN", is_int=True) == pytest.approx(11 / 6)
    with pytest.raises(ValueError, match="Unknown statistic"):
        compute_statistic(x, "MODE")
