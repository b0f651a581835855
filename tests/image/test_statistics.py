"""Tests of the afw-compatible statistics engine (reference-algorithms §1.5, §8 check 2)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.image.statistics import (
    CORE_RIM_MIN_SIZE,
    IQR_TO_SIGMA,
    clipped_stats,
    clipped_stats_finite,
    clipped_stats_per_row,
    compute_statistic,
    integer_median,
    integer_median_per_row,
    mean_per_row,
    median,
    median_per_row,
    quartiles,
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


# ----------------------------------------------------------------- the methods agree


def test_quartiles_equal_numpy_percentile_bit_for_bit():
    """One partition + numpy's interpolation formula: numpy.percentile's values exactly."""
    rng = np.random.default_rng(17)
    for k in range(400):
        n = int(rng.integers(1, 3000))
        x = rng.normal(size=n) * rng.uniform(0.1, 1e4) + rng.uniform(-1e4, 1e4)
        x = x.astype(np.float32 if k % 2 else np.float64)
        assert quartiles(x) == tuple(float(q) for q in np.percentile(x, [25.0, 50.0, 75.0]))


def _image(dist: str, dtype: type, shape: tuple[int, int] = (700, 400)) -> np.ndarray:
    rng = np.random.default_rng(21)
    if dist == "normal":  # a flat: shot noise at 20k ADU, cosmic-ray-like outliers in the rim
        img = rng.normal(2e4, 140.0, shape)
        img.flat[::997] = 9e4
    elif dist == "difference":  # a flat-pair difference: centred on 0 (float32 rounding of x - c)
        img = rng.normal(0.02, 200.0, shape)
        img.flat[::1013] = -5e3
    elif dist == "uniform":  # narrower than its IQR-based window: the core never moves
        img = rng.uniform(0.0, 100.0, shape)
    else:  # bimodal: a window cuts into the core, the remaining iterations are the plain ones
        img = np.where(rng.random(shape) < 0.5, rng.normal(0, 1, shape), rng.normal(30, 1, shape))
        img.flat[::5000] = 500.0
    big = np.zeros((shape[0], shape[1] + 50), dtype)
    big[:, 20 : 20 + shape[1]] = img
    return big[:, 20 : 20 + shape[1]]  # a non-contiguous view, like an amp of a detector


@pytest.mark.parametrize("dist", ["normal", "difference", "uniform", "bimodal"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nsigma", [3.0, 5.5])
def test_histogram_method_equals_exact_on_float_images(dist, dtype, nsigma):
    """Core / rim: the same selections as the plain computation; moments to 1e-9 relative."""
    view = _image(dist, dtype)
    assert not view.flags.c_contiguous and view.size > CORE_RIM_MIN_SIZE
    m1, v1, n1 = clipped_stats(view, None, nsigma, 3, method="exact")
    for got in (clipped_stats(view, None, nsigma, 3, method="histogram"),
                clipped_stats_finite(view, nsigma, 3),          # "auto" picks the core / rim
                clipped_stats(view, None, nsigma, 3, _with_median=True, method="histogram")):
        m2, v2, n2 = got[:3]
        assert n2 == n1
        assert abs(m2 - m1) <= 1e-9 * np.sqrt(v1)
        assert v2 == pytest.approx(v1, rel=1e-9)
    assert got[3] == np.median(view)
    if dist == "normal" and nsigma == 5.5:  # (at 3 sigma the clipped sigma is ~1.5 % low)
        assert m1 == pytest.approx(2e4, abs=1.0) and np.sqrt(v1) == pytest.approx(140.0, rel=0.01)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_core_rim_on_a_contiguous_difference_image_equals_exact(dtype):
    """A contiguous image centred on 0 (c0 = 0) is used without the copy of its deviations."""
    img = np.ascontiguousarray(_image("difference", dtype))
    before = img.copy()
    m1, v1, n1 = clipped_stats(img, None, 5.5, 3, method="exact")
    m2, v2, n2 = clipped_stats_finite(img, 5.5, 3, method="histogram")
    assert n2 == n1 and abs(m2 - m1) <= 1e-9 * np.sqrt(v1) and v2 == pytest.approx(v1, rel=1e-9)
    np.testing.assert_array_equal(img, before)  # the input is only read


def test_histogram_method_with_mask_and_nan_equals_exact():
    """Masked and NaN pixels are out of every method's input set."""
    rng = np.random.default_rng(4)
    img = rng.normal(1000.0, 30.0, (500, 300)).astype(np.float32)
    img[::7, ::11] = np.nan
    bad = rng.random(img.shape) < 0.05
    img[bad] = 1e6                      # masked values would dominate if they were used
    exact = clipped_stats(img, bad, 3.0, 3, method="exact")
    hist = clipped_stats(img, bad, 3.0, 3, method="histogram")
    assert hist[2] == exact[2] and hist[0] == pytest.approx(exact[0], rel=1e-12)
    assert hist[1] == pytest.approx(exact[1], rel=1e-9)


def test_four_megapixel_meanclip_first_window_is_the_exact_one():
    """The 4-Mpixel MEANCLIP disagreement: the fast path started from subsample quartiles.

    afw takes the first window from the quartiles of the whole set. A window from the quartiles
    of a 16k subsample (the former fast path of the PTC) is off by ~1 % of sigma and, at 3
    sigma, keeps a few pixels more or less than the exact computation; the core / rim method
    brackets the quartiles and keeps exactly the exact selection.
    """
    rng = np.random.default_rng(1)
    img = (rng.standard_normal((2000, 2000)) * np.sqrt(20000 / 1.5 + 16) + 20000).astype(np.float32)
    m1, v1, n1 = clipped_stats(img, None, 3.0, 3, method="exact")
    m2, v2, n2 = clipped_stats(img, None, 3.0, 3, method="histogram")
    assert n2 == n1
    assert abs(m2 - m1) <= 1e-9 * np.sqrt(v1) and v2 == pytest.approx(v1, rel=1e-9)
    # the former start: quartiles of every 244th value
    x = img.ravel().astype(np.float64)
    q25, q50, q75 = np.percentile(x[:: x.size // (1 << 14)], [25, 50, 75])
    centre, half = q50, 3.0 * IQR_TO_SIGMA * (q75 - q25)
    for _ in range(3):
        sel = x[np.abs(x - centre) <= half]
        centre, half = sel.mean(), 3.0 * sel.std(ddof=1)
    assert sel.size != n1  # what the issue measured: two MEANCLIPs of one image that disagree


def test_histogram_method_on_integer_data_equals_exact():
    """Integer data: one bin per value; equal to the float computation of the same values."""
    rng = np.random.default_rng(8)
    x = np.rint(rng.normal(1000, 12.0, (400, 300))).astype(np.int32)
    x[::50, ::7] += 30_000
    exact = clipped_stats(x, None, 3.0, 3, _with_median=True, method="exact")
    hist = clipped_stats(x, None, 3.0, 3, _with_median=True, method="histogram")
    assert hist[2] == exact[2] and hist[3] == exact[3]
    np.testing.assert_allclose(hist[:2], exact[:2], rtol=1e-12)
    assert median(x, method="histogram") == median(x, method="exact") == float(np.median(x))


def test_subsample_method_within_its_documented_bound():
    """``"subsample"`` of m values: mean within 5 sigma / sqrt(m), sigma within 5 / sqrt(2 m)."""
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[0:2000, 0:2100]
    img = (rng.normal(5000.0, 40.0, yy.shape) + 0.01 * xx - 0.005 * yy).astype(np.float32)
    img.flat[::3001] = 6e4
    m_e, v_e, _ = clipped_stats(img, None, 3.0, 3, method="exact")
    for m in (1 << 12, 1 << 16):
        m_s, v_s, n_s = clipped_stats(img, None, 3.0, 3, method="subsample", max_samples=m)
        assert 0.9 * m < n_s <= 1.01 * m
        sigma = np.sqrt(v_e)
        assert abs(m_s - m_e) <= 5 * sigma / np.sqrt(m)
        assert abs(np.sqrt(v_s) / sigma - 1) <= 5 / np.sqrt(2 * m)
        med_s = median(img, method="subsample", max_samples=m)
        assert abs(med_s - np.median(img)) <= 5 * 1.2533 * sigma / np.sqrt(m)
        assert compute_statistic(img, "STDEVCLIP", method="subsample") == pytest.approx(
            np.sqrt(clipped_stats(img, None, 3.0, 3, method="subsample")[1]))


def test_unknown_method_is_refused():
    """A misspelt method names the accepted ones."""
    with pytest.raises(ValueError, match="exact, histogram, subsample"):
        clipped_stats(np.ones(4), method="fast")


def test_iqr_to_sigma_is_written_in_one_place():
    """No library module restates afw's IQR-to-sigma factor: they import IQR_TO_SIGMA."""
    from pathlib import Path

    import pipeline

    root = Path(pipeline.__file__).parent
    stats = root / "image" / "statistics.py"
    offenders = [p.relative_to(root) for p in root.rglob("*.py")
                 if p != stats and ("0.7413" in p.read_text() or "IQR_TO_SIGMA =" in p.read_text())]
    assert offenders == []


@pytest.mark.parametrize("n", [1, 2, 7, 1000, (1 << 17) + 1, 600_000])
def test_order_statistics_equal_numpy_partition(n):
    """`order_statistics` returns the values numpy's partition puts at the ranks (ties, NaN)."""
    from pipeline.image.statistics import order_statistics

    rng = np.random.default_rng(n)
    x = rng.normal(0, 10, n).astype(np.float32)
    if n > 10:
        x[::7] = np.round(x[::7])  # ties
        x[5] = np.nan
    for fractions in ([0.5], [0.25, 0.5, 0.75], [0.0, 0.001, 0.999, 1.0]):
        idx = np.array(fractions) * (n - 1)
        lo = np.floor(idx).astype(np.intp)
        ranks = np.unique(np.concatenate([lo, np.minimum(lo + 1, n - 1)]))
        got = order_statistics(x, ranks)
        want = np.partition(x, ranks)[ranks]
        np.testing.assert_array_equal(got, want)
        assert got.dtype == x.dtype
    before = x.copy()
    order_statistics(x, np.array([0, n // 2]))
    np.testing.assert_array_equal(x, before)  # input untouched


def test_work_array_reused_per_name_dtype_and_thread():
    """Scratch arrays come back for the same name and dtype, never shared across threads."""
    import threading

    from pipeline.image.statistics import WORK_ARRAY_MAX_SIZE, work_array

    a = work_array("t_a", (10, 20), np.float32)
    assert a.shape == (10, 20) and a.flags.c_contiguous
    b = work_array("t_a", (5, 4), np.float32)
    assert np.shares_memory(a, b)  # same slot: reused
    assert not np.shares_memory(a, work_array("t_b", (10, 20), np.float32))
    assert not np.shares_memory(a, work_array("t_a", (10, 20), np.float64))
    other = []
    t = threading.Thread(target=lambda: other.append(work_array("t_a", (10, 20), np.float32)))
    t.start()
    t.join()
    assert not np.shares_memory(a, other[0])
    big1 = work_array("t_big", (WORK_ARRAY_MAX_SIZE + 1,), np.uint8)
    big2 = work_array("t_big", (WORK_ARRAY_MAX_SIZE + 1,), np.uint8)
    assert not np.shares_memory(big1, big2)  # too large to keep


@pytest.mark.parametrize("layout", ["contiguous", "view", "zero_offset", "float64"])
def test_core_rim_blocked_passes_equal_whole_array_expressions(layout):
    """The cache-blocked passes of the core/rim method give the whole-array numbers bit for bit.

    Counts, rim indices and values, and the float64 sums of ``d`` and ``d²`` (numpy's
    buffered float32 -> float64 sum continued block by block with ``initial=``).
    """
    from pipeline.image.statistics import _bracket_bands, _core_rim_passes

    rng = np.random.default_rng(21)
    dtype = np.float64 if layout == "float64" else np.float32
    # values over eight decades: float64 sums of them depend on the order of the additions
    shape = (1013, 611)
    full = rng.normal(0.0, 120.0, shape) * 10.0 ** rng.uniform(-6.0, 2.0, shape)
    full = (full + (0.0 if layout == "zero_offset" else 0.37)).astype(dtype)
    values = full[:, 7:520] if layout == "view" else full
    c0 = dtype(0.0 if layout == "zero_offset" else 0.37)
    lo_d = np.array([-3.0, -1e-3, 2.0], dtype)
    hi_d = np.array([-2.0, 2e-3, 3.0], dtype)
    r = dtype(500.0)
    d = (values - c0).astype(dtype).reshape(-1)
    sq = (d * d).astype(dtype)
    rim = np.flatnonzero(np.abs(d) > r)
    want = (
        np.array([np.count_nonzero(d < t) for t in lo_d]),
        np.array([np.count_nonzero(d <= t) for t in hi_d]),
        rim, float(d.sum(dtype=np.float64)), d[rim].astype(np.float64),
        float(sq.sum(dtype=np.float64)), sq[rim].astype(np.float64),
    )
    for block in (8192, 3 * 8192, None, values.size):
        for keep_dev in (True, False):
            got = _core_rim_passes(values, c0, lo_d, hi_d, r, block=block, keep_dev=keep_dev)
            if keep_dev or got[0] is not None:
                np.testing.assert_array_equal(got[0], d)
            for g, w in zip(got[1:], want):
                np.testing.assert_array_equal(g, w)
                assert np.asarray(g).dtype == np.asarray(w).dtype
        # deviations formed block by block only when they need a pass of their own
        dropped = got[0] is None
        assert dropped == (layout in ("contiguous", "view") and (block or 8192) < values.size)
    assert want[2].size > 0 and want[0][1] > 0  # the checks are not vacuous
    for band, lo, hi in zip(_bracket_bands(d, lo_d, hi_d), lo_d, hi_d):
        np.testing.assert_array_equal(band, d[(d >= lo) & (d <= hi)])
        assert band.size > 100
    # totals of separately summed blocks differ from the whole-array sum of squares here
    naive = 0.0
    for i in range(0, sq.size, 65536):
        naive += float(sq[i:i + 65536].sum(dtype=np.float64))
    assert layout != "contiguous" or naive != want[5]
    with pytest.raises(ValueError, match="multiple"):
        _core_rim_passes(values.astype(np.float32), np.float32(c0), lo_d.astype(np.float32),
                         hi_d.astype(np.float32), np.float32(r), block=1000)


@pytest.mark.parametrize("view", [False, True])
def test_core_rim_statistics_equal_with_and_without_whole_deviation_array(monkeypatch, view):
    """Block-only deviations (formed again for the exact quartiles) give the same statistics.

    Flats on a level (the deviations need a subtraction) with outliers near the first window
    edge, so the exact quartiles are needed: the deviations are then formed a second time.
    """
    import pipeline.image.statistics as st

    rng = np.random.default_rng(23)
    full = (20000.0 + rng.normal(0.0, 115.0, (900, 700))).astype(np.float32)
    full[::97, ::89] = 20000.0 + 5.5 * 115.0 * 0.9894  # near 5.5 sigma: inside the uncertain band
    values = full[:, 13:613] if view else full
    calls = []
    real = st._deviations
    monkeypatch.setattr(st, "_deviations", lambda *a: calls.append(1) or real(*a))
    got = st.clipped_stats_finite(values, 5.5, 3)
    assert calls  # the deviations were formed again for the exact quartiles
    monkeypatch.setattr(st, "CORE_RIM_BLOCK_BUFFERS", values.size)  # one block: the whole array kept
    whole = st.clipped_stats_finite(values, 5.5, 3)
    assert got == whole
    x = values.astype(np.float64).reshape(-1)
    assert got[0] == pytest.approx(x.mean(), rel=1e-9) and got[2] == x.size


def test_clipping_stops_at_a_repeated_selection_with_the_full_result():
    """`_iterate` stops when a selection repeats; the result equals all niter re-selections."""
    from pipeline.image.statistics import _iterate

    def plain(x, centre, half, nsigma, niter):
        result, selections = (float("nan"), float("nan"), 0), []
        for _ in range(niter):
            keep = np.abs(x - centre) <= half
            selections.append(keep)
            sel = x[keep]
            n = sel.size
            mean = float(sel.sum()) / n
            dev = sel - mean
            var = float((dev * dev).sum()) / (n - 1)
            result = (mean, var, n)
            centre, half = mean, nsigma * np.sqrt(var)
        repeated = any(np.array_equal(a, b) for a, b in zip(selections, selections[1:]))
        return result, repeated

    rng = np.random.default_rng(17)
    repeats = {True: 0, False: 0}
    for k in range(40):
        x = rng.normal(100.0, 5.0, 3000)
        x[: k % 9] += rng.uniform(20, 60, k % 9)           # a few outliers in some cases
        centre, half = float(np.median(x)), float(rng.uniform(8.0, 30.0))
        for niter in (1, 2, 3, 5):
            want, repeated = plain(x, centre, half, 3.0, niter)
            assert _iterate(x, centre, half, 3.0, niter) == want
            repeats[repeated] += 1
    assert repeats[True] > 10 and repeats[False] > 10  # stopped early, and not
