"""PTC measurement math against known truth: FFT vs direct covariances, pair gains, clipping."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tasks.cp.ptc_math import (
    clip_correction_factor,
    covariance_arrays,
    covariances_direct,
    covariances_fft,
    grid_boxes,
    measure_pair,
    measure_pair_region,
    pair_gain,
)
from tests.cp._synth import SynthDetector, make_flat


@pytest.mark.parametrize("frac_masked", [0.0, 0.01, 0.4])
@pytest.mark.parametrize("shape", [(61, 83), (128, 40)])
def test_fft_covariances_equal_direct_sum(frac_masked, shape):
    rng = np.random.default_rng(11)
    d = rng.normal(0.0, 7.0, shape)
    # correlated field so the covariances are not ~0, on a large offset (precision check)
    d[:, 1:] += 0.3 * d[:, :-1]
    d += 5000.0
    w = rng.random(shape) >= frac_masked
    d[~w] = np.nan  # NaNs under zero weight must not poison the FFT (reference quirk)
    c_fft, n_fft = covariances_fft(d, w, 8)
    c_dir, n_dir = covariances_direct(d, w, 8)
    np.testing.assert_array_equal(n_fft, n_dir)
    np.testing.assert_allclose(c_fft, c_dir, rtol=0, atol=1e-10)
    # single precision FFT: tiny relative error
    c32, _ = covariances_fft(d, w, 8, single_precision=True)
    np.testing.assert_allclose(c32, c_dir, rtol=0, atol=1e-5 * c_dir[0, 0])
    # the injected x-correlation shows at lag dx=1 only: 0.3 / (1 + 0.09) of the variance
    assert c_fft[1, 0] / c_fft[0, 0] == pytest.approx(0.3 / 1.09, abs=0.06)
    assert abs(c_fft[0, 1] / c_fft[0, 0]) < 0.03


def test_covariance_counts_and_orientation():
    d = np.zeros((10, 12))
    w = np.ones_like(d)
    _, n = covariances_fft(d, w, 3)
    # lag (dx, dy) pairs: (12-dx)(10-dy), two orientations when both non-zero
    assert n[0, 0] == 120
    assert n[2, 0] == 10 * 10
    assert n[0, 2] == 12 * 8
    assert n[1, 1] == 2 * 11 * 9


def test_covariance_arrays_halves_and_weights():
    cov = np.array([[4.0, 0.4, 0.1], [0.2, 0.05, 0.0], [0.1, 0.0, 0.0]])
    npix = np.full((3, 3), 100)
    out, sw, n = covariance_arrays(cov, npix, 2, clip_factor=1.0)
    np.testing.assert_allclose(out, 0.5 * cov[:2, :2])
    # V = (C00/2)^2 / npix, doubled at (0, 0)
    assert sw[1, 0] == pytest.approx(1.0 / np.sqrt(4.0 / 100))
    assert sw[0, 0] == pytest.approx(1.0 / np.sqrt(2 * 4.0 / 100))
    f = clip_correction_factor(5.5)
    assert f - 1 == pytest.approx(1.2e-6, rel=0.2)
    out_f, _, _ = covariance_arrays(cov, npix, 2, clip_factor=2.0)
    assert out_f[0, 0] == pytest.approx(2.0 * 2.0) and out_f[1, 0] == pytest.approx(0.1 * 4)


@pytest.mark.parametrize("correction", ["NONE", "SIMPLE", "FULL"])
def test_pair_gain_within_one_percent(correction):
    det = SynthDetector(gains=(0.75, 3.0), read_noise_e=(5.0, 9.0), ny=250, nx_amp=400)
    rng = np.random.default_rng(1984)
    for signal in (2000.0, 20000.0):
        i1, i2 = make_flat(det, signal, rng), make_flat(det, signal, rng)
        rn = {a: det.read_noise_e[k] / det.gains[k] for k, a in enumerate(det.names)}
        meas = measure_pair(i1, i2, None, None, det.amp_regions(), read_noise_adu=rn,
                            gain_correction=correction, max_range=3)
        for k, a in enumerate(det.names):
            m = meas[a][0]
            assert m.valid
            assert m.mean == pytest.approx(signal / det.gains[k], rel=2e-3)
            expected_var = (signal + det.read_noise_e[k] ** 2) / det.gains[k] ** 2
            assert m.raw_var == pytest.approx(expected_var, rel=0.02)
            tol = 0.06 if correction == "NONE" and signal == 2000.0 else 0.01
            assert m.gain == pytest.approx(det.gains[k], rel=tol), (a, signal)


def test_pair_gain_formulas():
    g, mu, s = 2.0, 1000.0, 3.0
    c = 1 / g + s**2 / mu - 1 / (2 * g**2 * mu)
    assert pair_gain(c, mu, s, "FULL") == pytest.approx(g, rel=1e-12)
    assert pair_gain(0.5, mu, np.nan, "FULL") == pytest.approx(2.0)
    c_simple = 1 / g + (s**2 - 1 / (2 * g**2)) / mu
    # intended SIMPLE: 1/(2 g0²) = c²/2 (not the reference's g0²/2 precedence slip)
    expected = 1 / (c_simple - (s**2 - c_simple**2 / 2) / mu)
    assert pair_gain(c_simple, mu, s, "SIMPLE") == pytest.approx(expected)
    with pytest.raises(ValueError, match="gainCorrectionType"):
        pair_gain(0.5, mu, s, "BOGUS")


def test_invalid_regions():
    z = np.zeros((120, 120))
    m = measure_pair_region(z, z, max_range=4)
    assert not m.valid and "mean" in m.reason
    rng = np.random.default_rng(2)
    a = rng.normal(1000, 30, (50, 50))
    b = rng.normal(1000, 30, (50, 50))
    m = measure_pair_region(a, b, max_range=4, min_good_pixels=10000)
    assert not m.valid and "good pixels" in m.reason
    assert m.mean == pytest.approx(1000, abs=3)
    nan = np.full((50, 50), np.nan)
    assert not measure_pair_region(nan, nan).valid


def test_binning_and_mask_exclusion():
    det = SynthDetector(gains=(1.0,), read_noise_e=(0.0,), ny=200, nx_amp=200)
    rng = np.random.default_rng(4)
    i1, i2 = make_flat(det, 10000, rng), make_flat(det, 10000, rng)
    bad = np.zeros(i1.shape, bool)
    bad[:, :20] = True
    i1[:, :20] = 1e6  # garbage under the mask must not matter
    m = measure_pair_region(i1, i2, bad, bad, max_range=3, min_good_pixels=1000)
    assert m.mean == pytest.approx(10000, rel=2e-3)
    assert m.raw_var == pytest.approx(10000, rel=0.03)
    mb = measure_pair_region(i1, i2, bad, bad, max_range=3, bin_size=2, min_good_pixels=1000)
    # binning 2x2 averages 4 independent pixels: variance / 4
    assert mb.raw_var == pytest.approx(10000 / 4, rel=0.05)


def test_grid_region_gives_one_point_per_box():
    det = SynthDetector(gains=(1.2, 1.2), read_noise_e=(3.5, 3.5), ny=100, nx_amp=512)
    x = np.linspace(0.05, 1.0, det.shape[1])
    pattern = np.broadcast_to(x, det.shape)
    rng = np.random.default_rng(6)
    i1 = make_flat(det, 20000, rng, pattern)
    i2 = make_flat(det, 20000, rng, pattern)
    meas = measure_pair(i1, i2, None, None, det.amp_regions(), region="GRID", grid_size=(64, 0),
                        max_range=3, min_good_pixels=5000)
    for a in det.names:
        pts = meas[a]
        assert len(pts) == 8
        mu = np.array([p.mean for p in pts])
        var = np.array([p.raw_var for p in pts])
        assert np.all(np.diff(mu) > 0)
        slope = np.polyfit(mu, var, 1)[0]
        assert 1 / slope == pytest.approx(1.2, rel=0.03)
    assert len(grid_boxes(100, 512, (64, 0))) == 8
    assert len(grid_boxes(100, 512, (100, 30))) == 5 * 3
    full = measure_pair(i1, i2, None, None, det.amp_regions(), region="FULL", max_range=3)
    assert full["C00"][0].mean == full["C01"][0].mean
    with pytest.raises(ValueError, match="detectorMeasurementRegion"):
        measure_pair(i1, i2, None, None, det.amp_regions(), region="BOX")


def test_full_cov_model_series_by_hand():
    from pipeline.tasks.cp.ptc_solve_math import exp_approx_model, full_cov_model

    a00, a01, g, n00 = -2e-6, 5e-7, 1.6, 30.0
    a = np.array([[a00, a01, 0.0], [a01, 0.0, 0.0], [0.0, 0.0, 0.0]])
    c = np.zeros((3, 3))
    c[0, 0] = 3e-12
    noise = np.zeros((3, 3))
    noise[0, 0] = n00
    mu = np.array([1000.0, 40000.0])
    model = full_cov_model(a, c, noise, g, mu)
    b = g * mu
    aa00 = a00**2 + 4 * a01**2                       # (a⊗a)(0,0) over the 4-quadrant plane
    aaa00 = a00**3 + 12 * a00 * a01**2               # (a⊗a⊗a)(0,0)
    ac00 = a00 * c[0, 0]
    c00 = b / g**2 * (1 + a00 * b + 2 / 3 * b**2 * (aa00 + c[0, 0])
                      + b**3 * (aaa00 / 3 + 5 / 6 * ac00)) + n00 / g**2
    np.testing.assert_allclose(model[:, 0, 0], c00, rtol=1e-12)
    aa01 = 2 * a00 * a01                            # (a⊗a)(0,1)
    # (a⊗a⊗a)(0,1): q=(0,1) 2a00²a01; q=(0,0) (a00²+4a01²)a01; q=(±1,1) 2·2a01³; q=(0,2) a01³
    aaa01 = 3 * a00**2 * a01 + 9 * a01**3
    c01 = b / g**2 * (a01 * b + 2 / 3 * b**2 * aa01 + b**3 * (aaa01 / 3 + 5 / 6 * a01 * c[0, 0]))
    np.testing.assert_allclose(model[:, 0, 1], c01, rtol=1e-10)
    np.testing.assert_allclose(model[:, 1, 0], model[:, 0, 1], rtol=1e-12)
    # EXPAPPROXIMATION is the a00-only, c = 0 limit of eq. 20 to second order
    lin = exp_approx_model((a00, g, n00), mu)
    a_only = full_cov_model(np.diag([a00, 0, 0]), np.zeros((3, 3)), noise, g, mu)[:, 0, 0]
    np.testing.assert_allclose(lin, a_only, rtol=2e-3)


def test_fft_box_sum_path_equals_direct_sum_on_large_region():
    """Regions >= SMALL_REGION pixels use one FFT + summed-area corrections: same numbers."""
    from pipeline.tasks.cp.ptc_math import SMALL_REGION

    rng = np.random.default_rng(12)
    shape = (260, 256)
    assert shape[0] * shape[1] >= SMALL_REGION
    d = rng.normal(0.0, 10.0, shape)
    d[1:, :] += 0.2 * d[:-1, :]
    d += 3000.0
    w = rng.random(shape) >= 0.02
    w[:, 0] = False
    d[~w] = np.nan
    c_fft, n_fft = covariances_fft(d, w, 5)
    c_dir, n_dir = covariances_direct(d, w, 5)
    np.testing.assert_array_equal(n_fft, n_dir)
    np.testing.assert_allclose(c_fft, c_dir, rtol=0, atol=1e-10)
    assert c_fft[0, 1] / c_fft[0, 0] == pytest.approx(0.2 / 1.04, abs=0.02)


def test_threaded_measurement_is_identical():
    det = SynthDetector(gains=(1.0, 2.0, 3.0), read_noise_e=(4.0, 4.0, 4.0), ny=120, nx_amp=110)
    rng = np.random.default_rng(8)
    i1, i2 = make_flat(det, 5000, rng), make_flat(det, 5000, rng)
    kw = dict(max_range=3, min_good_pixels=1000)
    one = measure_pair(i1, i2, None, None, det.amp_regions(), **kw)
    two = measure_pair(i1, i2, None, None, det.amp_regions(), n_threads=2, **kw)
    for a in det.names:
        assert one[a][0].raw_var == two[a][0].raw_var and one[a][0].gain == two[a][0].gain
        np.testing.assert_array_equal(one[a][0].covariances, two[a][0].covariances)


def test_fft_weight_path_with_many_masked_pixels_equals_direct_sum():
    """Above SPARSE_MAX_ZEROS masked pixels the counts come from FFTs of the weights."""
    from pipeline.tasks.cp.ptc_math import SMALL_REGION, SPARSE_MAX_ZEROS

    rng = np.random.default_rng(13)
    shape = (300, 240)
    d = rng.normal(0.0, 10.0, shape).astype(np.float32)
    d[:, 1:] += 0.25 * d[:, :-1]
    w = rng.random(shape) >= 0.05
    assert (~w).sum() > SPARSE_MAX_ZEROS and w.size >= SMALL_REGION
    c_fft, n_fft = covariances_fft(d, w, 4, single_precision=True)
    c_dir, n_dir = covariances_direct(d, w, 4)
    np.testing.assert_array_equal(n_fft, n_dir)
    np.testing.assert_allclose(c_fft, c_dir, rtol=0, atol=1e-10)
    assert c_fft[1, 0] / c_fft[0, 0] == pytest.approx(0.25 / 1.0625, abs=0.02)


def test_levenberg_marquardt_finds_the_least_squares_minimum():
    from scipy.optimize import least_squares

    from pipeline.tasks.cp.ptc_solve_math import levenberg_marquardt

    t = np.linspace(0.0, 10.0, 400)
    truth = np.array([5.0, 0.7, 1e-3, 2.0])          # wildly different parameter scales

    def model(p):
        return p[0] * np.exp(-p[1] * t) + p[2] * t**2 + p[3]

    def jac(p):
        e = np.exp(-p[1] * t)
        return np.stack([e, -p[0] * t * e, t**2, np.ones_like(t)], axis=1)

    exact = model(truth)
    res = levenberg_marquardt(lambda p: model(p) - exact, jac, np.array([1.0, 0.1, 0.0, 0.0]), max_iter=50)
    assert res.converged
    np.testing.assert_allclose(res.x, truth, rtol=1e-6)
    noisy = exact + np.random.default_rng(3).normal(0.0, 0.05, t.size)
    res = levenberg_marquardt(lambda p: model(p) - noisy, jac, np.array([1.0, 0.1, 0.0, 0.0]), max_iter=50)
    ref = least_squares(lambda p: model(p) - noisy, np.array([1.0, 0.1, 0.0, 0.0]), jac=jac, method="lm",
                        xtol=1e-12, ftol=1e-12)
    assert 2 * res.cost == pytest.approx(float(ref.fun @ ref.fun), rel=1e-8)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(res.jac, jac(res.x))


def test_pair_gain_flux_normalization_removes_lamp_drift_bias():
    """A 1 % flux drift between the two flats biases the raw (cp_pipe) pair gain by ~ε²μg/2."""
    det = SynthDetector(gains=(1.5,), read_noise_e=(5.0,), ny=400, nx_amp=400)
    rng = np.random.default_rng(31)
    signal = 45000.0                                   # e-, 30 000 ADU
    i1 = make_flat(det, signal, rng)
    i2 = make_flat(det, signal * 1.01, rng)            # lamp 1 % brighter
    rn = 5.0 / 1.5
    norm = measure_pair_region(i1, i2, read_noise_adu=rn, max_range=2)
    raw = measure_pair_region(i1, i2, read_noise_adu=rn, max_range=2, gain_flux_normalization=False)
    assert norm.gain == pytest.approx(1.5, rel=0.01)
    mu, eps = norm.mean, 0.01
    # raw: c = 1/g + ε² μ / 2 (to first order in the corrections)
    expected_raw = 1.0 / (1.0 / 1.5 + eps**2 * mu / 2)
    assert raw.gain == pytest.approx(expected_raw, rel=0.02)
    assert raw.gain < 0.85 * 1.5


@pytest.mark.parametrize("r", [1, 2, 3, 8, 10])
def test_conv_quadrant_equals_full_2d_convolution(r):
    """The gather/mat-vec first-quadrant convolution equals scipy's full 2-D convolution."""
    from scipy.signal import convolve2d

    from pipeline.tasks.cp.ptc_solve_math import _conv_quadrant, symmetrize

    rng = np.random.default_rng(r)
    x, y = rng.normal(size=(r, r)), rng.normal(size=(r, r))
    full = convolve2d(symmetrize(x), symmetrize(y), mode="full")
    c = 2 * (r - 1)
    np.testing.assert_allclose(_conv_quadrant(x, y), full[c:c + r, c:c + r], rtol=0, atol=1e-12)


@pytest.mark.parametrize("no_b", [False, True])
def test_full_covariance_analytic_jacobian_matches_finite_differences(monkeypatch, no_b):
    import pipeline.tasks.cp.ptc_solve_math as sm

    r = 3
    a = np.zeros((r, r))
    a[0, 1] = a[1, 0] = 4e-7
    a[0, 0] = -2e-6
    c = np.zeros((r, r))
    c[0, 0] = -1e-12
    noise = np.zeros((r, r))
    noise[0, 0] = 30.0
    mu = np.geomspace(200, 60000, 25)
    cov = sm.full_cov_model(a, c, noise, 1.4, mu)
    sw = 1.0 / (0.01 * cov[:, :1, :1] + 1.0) * np.ones((1, r, r))
    seen = {}

    def capture(fun, jac, p0, **kw):
        seen.update(fun=fun, jac=jac, p0=p0)
        return sm.LMResult(x=p0, fun=fun(p0), jac=jac(p0), cost=0.0, nfev=1, njev=1, converged=True)

    monkeypatch.setattr(sm, "levenberg_marquardt", capture)
    sm._polish(mu, cov * (1 + 1e-3), sw, r, no_b, a, c, noise, 1.4)
    nr = r * r
    rng = np.random.default_rng(2)
    # a point away from the truth; steps sized to each block's scale (a ~1e-6, c ~1e-12 /e-)
    steps = np.concatenate([np.full(nr, 1e-10)] + ([] if no_b else [np.full(nr, 1e-15)])
                           + [np.full(nr, 1e-2), [1e-7]])
    p0 = seen["p0"] + steps * 1e3 * rng.standard_normal(seen["p0"].size)
    jac = seen["jac"](p0)
    num = np.empty_like(jac)
    for k in range(p0.size):
        h = steps[k]
        up, dn = p0.copy(), p0.copy()
        up[k] += h
        dn[k] -= h
        num[:, k] = (seen["fun"](up) - seen["fun"](dn)) / (2 * h)
    scale = np.abs(num).max(axis=0) + 1e-300
    np.testing.assert_allclose(jac / scale, num / scale, rtol=0, atol=1e-5)


def test_zero_degrees_of_freedom_give_nan_errors_not_round_off():
    """A fit with as many parameters as points has undefined errors: NaN, not ~1e-15.

    Issue reproduction: ``dof = max(n - p, 1)`` turned a round-off residual into errors of
    ~1e-15 for a POLYNOMIAL fit through exactly ``degree + 1`` points and an EXPAPPROXIMATION
    fit through exactly three.
    """
    from pipeline.tasks.cp.ptc_plots import _err_text
    from pipeline.tasks.cp.ptc_solve_math import exp_approx_model, fit_exp_approximation, fit_polynomial

    gain, noise_adu2 = 1.2, 9.0
    mu = np.array([1000.0, 5000.0, 20000.0])
    var = noise_adu2 + mu / gain
    res = fit_polynomial(mu, var, np.ones(3, bool), 2)
    assert res.gain == pytest.approx(gain, rel=1e-9)
    assert np.all(np.isnan(res.coeffs_err)) and np.isnan(res.gain_err) and np.isnan(res.noise_err)
    res4 = fit_polynomial(np.append(mu, 30000.0), np.append(var, noise_adu2 + 30000.0 / gain + 3.0),
                          np.ones(4, bool), 2)
    assert np.all(np.isfinite(res4.coeffs_err)) and res4.gain_err > 0
    params = np.array([-1.5e-6, gain, noise_adu2 * gain**2])
    exact = exp_approx_model(params, mu)
    fit = fit_exp_approximation(mu, exact, max_iterations=0)
    assert not fit.bad and fit.gain == pytest.approx(gain, rel=1e-4)
    assert np.all(np.isnan(fit.params_err)) and np.isnan(fit.gain_err)
    assert _err_text(float("nan"), 3) == "±n/a" and _err_text(0.004, 3) == "±0.004"


@pytest.mark.parametrize("flux_normalization", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_difference_and_gain_ratio_equal_whole_array_computation(flux_normalization, dtype):
    """The cache-blocked difference image and gain ratio equal the whole-array expressions.

    Flats whose level spans four decades make the float64 sum of the ratios depend on the
    order of the additions: the blocked sum continues numpy's own buffered sum, bit for bit.
    """
    from pipeline.tasks.cp.ptc_math import _difference_and_ratio_mean, _ratio_mean_plain

    rng = np.random.default_rng(35)
    shape = (700, 509)
    level = 10.0 ** rng.uniform(1.0, 5.0, shape)
    d1 = (level + rng.normal(0.0, 1.0, shape) * np.sqrt(level)).astype(dtype)
    d2 = (1.01 * level + rng.normal(0.0, 1.0, shape) * np.sqrt(level)).astype(dtype)
    mu1, mu2 = 1234.5, 1240.25
    mu = 0.5 * (mu1 + mu2)
    want_diff = d1 * dtype(mu2 / mu) - d2 * dtype(mu1 / mu)
    if flux_normalization:
        a, b = d1 * dtype(mu / mu1), d2 * dtype(mu / mu2)
    else:
        a, b = d1, d2
    ratio = ((a - b) * (a - b)) / (a + b)
    assert ratio.dtype == dtype
    total = float(ratio.sum(dtype=np.float64))
    want_c = total / ratio.size
    naive = 0.0
    for i in range(0, ratio.size, 65536):
        naive += float(ratio.reshape(-1)[i:i + 65536].sum(dtype=np.float64))
    assert dtype is np.float64 or naive != total  # the order of the additions matters here
    want_sum = float(want_diff.sum(dtype=np.float64))
    want_rows = want_diff.sum(axis=1, dtype=np.float64)
    # the flats as amp views of wider images (read row block by row block), and contiguous
    wide1 = np.zeros((shape[0], shape[1] + 40), dtype)
    wide2 = np.zeros_like(wide1)
    wide1[:, 17:17 + shape[1]], wide2[:, 17:17 + shape[1]] = d1, d2
    v1, v2 = wide1[:, 17:17 + shape[1]], wide2[:, 17:17 + shape[1]]
    for block in (8192, 2 * 8192, None, d1.size):
        for a1, a2 in ((d1, d2), (v1, v2)):
            pair = _difference_and_ratio_mean(a1, a2, mu1, mu2, None, block=block,
                                              flux_normalization=flux_normalization, row_sums=True)
            np.testing.assert_array_equal(pair.diff, want_diff)
            assert pair.ratio_mean == want_c
            assert pair.diff_sum == want_sum
            np.testing.assert_array_equal(pair.row_sums, want_rows)
    assert _difference_and_ratio_mean(d1, d2, mu1, mu2, None).row_sums is None
    # a difference image over nine decades of both signs: its float64 sum depends on the order
    e1 = (rng.choice([-1.0, 1.0], shape) * 10.0 ** rng.uniform(-6.0, 3.0, shape)).astype(dtype)
    e2 = np.zeros(shape, dtype)
    e_diff = e1 * dtype(mu2 / mu) - e2 * dtype(mu1 / mu)
    e_sum = float(e_diff.sum(dtype=np.float64))
    naive = 0.0
    for i in range(0, e_diff.size, 65536):
        naive += float(e_diff.reshape(-1)[i:i + 65536].sum(dtype=np.float64))
    assert dtype is np.float64 or naive != e_sum
    for block in (8192, None):
        pair = _difference_and_ratio_mean(e1, e2, mu1, mu2, None, block=block, do_gain=False, row_sums=True)
        assert pair.diff_sum == e_sum
        np.testing.assert_array_equal(pair.row_sums, e_diff.sum(axis=1, dtype=np.float64))
    assert _ratio_mean_plain(d1, d2, mu1, mu2, None, flux_normalization) == want_c
    # a pixel with I1 + I2 <= 0, or unusable pixels: the plain masked mean
    d1[3, 4] = d2[3, 4] = -5.0
    good = np.ones(shape, bool)
    good[10, :] = False
    for g in (None, good):
        for a1, a2 in ((d1, d2), (v1, v2)):
            a1[3, 4] = a2[3, 4] = -5.0
            c = _difference_and_ratio_mean(a1, a2, mu1, mu2, g, block=8192,
                                           flux_normalization=flux_normalization).ratio_mean
            assert c == _ratio_mean_plain(d1, d2, mu1, mu2, g, flux_normalization)
    ok = good & ((a + b) > 0)
    ok[3, 4] = False
    assert c == pytest.approx(float(ratio[ok].mean(dtype=np.float64)), rel=1e-6)
    assert np.isnan(_difference_and_ratio_mean(d1, d2, mu1, mu2, None, do_gain=False).ratio_mean)


def test_difference_pass_of_mixed_dtypes_works_in_float64():
    """A float32 flat with a float64 one (or integers) is differenced in float64, as whole arrays."""
    from pipeline.tasks.cp.ptc_math import _difference_and_ratio_mean

    rng = np.random.default_rng(36)
    d1 = rng.normal(3000.0, 50.0, (300, 257)).astype(np.float32)
    d2 = rng.normal(3010.0, 50.0, (300, 257))
    mu1, mu2 = 3000.5, 3009.75
    mu = 0.5 * (mu1 + mu2)
    a, b = d1.astype(np.float64), d2
    want = a * (mu2 / mu) - b * (mu1 / mu)
    x, y = a * (mu / mu1), b * (mu / mu2)
    want_c = float((((x - y) * (x - y)) / (x + y)).sum()) / want.size
    for pair in (_difference_and_ratio_mean(d1, d2, mu1, mu2, None, row_sums=True),
                 _difference_and_ratio_mean(d1[:, :], np.asfortranarray(d2), mu1, mu2, None, row_sums=True)):
        assert pair.diff.dtype == np.float64
        np.testing.assert_array_equal(pair.diff, want)
        assert pair.ratio_mean == want_c and pair.diff_sum == float(want.sum())
        np.testing.assert_array_equal(pair.row_sums, want.sum(axis=1))
    n1, n2 = np.rint(d1).astype(np.int32), np.rint(d2).astype(np.int32)
    ints = _difference_and_ratio_mean(n1, n2, mu1, mu2, None)
    assert ints.diff.dtype == np.float64 and np.isfinite(ints.ratio_mean)


def test_abs_cut_and_scratch_spectrum_equal_the_plain_expressions():
    """Blocked |D| <= cut, the FFT into a scratch array and the in-place power: same values."""
    import scipy.fft

    from pipeline.tasks.cp.ptc_math import _abs_at_most, _power, _power_inplace, _rfft2_scratch

    rng = np.random.default_rng(37)
    d = rng.normal(0.0, 100.0, (333, 517)).astype(np.float32)
    cut = np.float32(150.0)
    out = np.empty(d.shape, bool)
    for block in (8192, d.size):
        out = np.empty(d.shape, bool)
        np.testing.assert_array_equal(_abs_at_most(d, cut, out, block=block), np.abs(d) <= cut)
        assert 0 < np.count_nonzero(out) < out.size
    for dtype in (np.float32, np.float64):
        buf = np.zeros((340, 540), dtype)
        buf[:333, :517] = d
        want = scipy.fft.rfft2(buf)
        got = _rfft2_scratch(buf)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
        plain = _power(want).copy()  # (both write the same scratch array)
        np.testing.assert_array_equal(_power_inplace(got), plain)
        assert plain.dtype == np.float64 and plain.max() > 0


def test_unit_weight_spectrum_is_the_spectrum_of_the_weights():
    """The cached all-one weight spectrum and pair counts are the freshly computed ones, exactly."""
    import scipy.fft

    from pipeline.tasks.cp.ptc_math import _fft_shape, _lags, _power, _unit_weight_spectrum

    ny, nx, m = 64, 61, 9
    shape = _fft_shape(ny, nx, m - 1)
    y_pm, x_p = tuple(range(-(m - 1), m)), tuple(range(m))
    fw, p_cnt = _unit_weight_spectrum(ny, nx, shape, y_pm, x_p)
    fresh = scipy.fft.rfft2(np.ones((ny, nx), bool).astype(np.float64), s=shape)
    np.testing.assert_array_equal(fw, fresh)
    np.testing.assert_array_equal(p_cnt, np.rint(_lags(_power(fresh), shape, y_pm, x_p)))
    assert p_cnt[m - 1, 0] == ny * nx and p_cnt[m - 1 + 2, 3] == (ny - 2) * (nx - 3)
    assert not fw.flags.writeable and not p_cnt.flags.writeable
    # a clean box (every weight 1) through the cache equals the direct sum
    rng = np.random.default_rng(5)
    d = rng.normal(0.0, 30.0, (ny, nx)).astype(np.float32) + 2000.0
    d[:, 1:] += 0.2 * d[:, :-1]
    w = np.ones((ny, nx), bool)
    c_fft, n_fft = covariances_fft(d, w, m - 1)
    c_dir, n_dir = covariances_direct(d, w, m - 1)
    np.testing.assert_array_equal(n_fft, n_dir)
    np.testing.assert_allclose(c_fft, c_dir, rtol=0, atol=1e-9 * c_dir[0, 0])


def _same_measurement(a, b):
    """Field-by-field equality of two `RegionMeasurement` (NaN equal to NaN, arrays exactly)."""
    import dataclasses

    for f, x in dataclasses.asdict(a).items():
        y = getattr(b, f)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f)
        elif isinstance(x, float) and np.isnan(x):
            assert np.isnan(y), f
        else:
            assert x == y, f


@pytest.mark.parametrize("shape", [(420, 300), (60, 50)])
@pytest.mark.parametrize("case", ["finite", "nan_inf", "half_nan", "negative"])
def test_unmasked_flats_measured_first_and_checked_after_equal_the_masked_path(monkeypatch, case, shape):
    """Flats without bad pixels skip the finiteness images; NaN/inf found later: redone masked.

    Whatever the flats hold, the result equals the path that selects the usable pixels
    first (forced here), and so do the warnings (none from the values measured unchecked).
    Small boxes (below SMALL_REGION pixels) always take that path, from contiguous copies.
    """
    import warnings

    import pipeline.tasks.cp.ptc_math as pm

    rng = np.random.default_rng(38)
    wide1 = rng.normal(8000.0, 75.0, (shape[0], shape[1] + 20)).astype(np.float32)
    wide2 = rng.normal(8050.0, 75.0, (shape[0], shape[1] + 20)).astype(np.float32)
    i1, i2 = wide1[:, 10:-10], wide2[:, 10:-10]  # amp views
    if case == "nan_inf":
        i1[5, 5], i2[7, 9], i1[40, 40], i2[40, 40] = np.nan, np.inf, -np.inf, np.inf
    elif case == "half_nan":
        i1[: shape[0] * 3 // 5] = np.nan
    elif case == "negative":
        i2[:] = -3.0
    kw = dict(read_noise_adu=4.0, max_range=4, min_good_pixels=500)

    def measured(*bad):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            out = measure_pair_region(i1, i2, *bad, **kw)
        return out, sorted(str(w.message) for w in seen)

    fast, fast_warnings = measured()
    masked, _ = measured(~np.isfinite(i1), ~np.isfinite(i2))
    monkeypatch.setattr(pm, "_any_set", lambda bad: True)  # always select the usable pixels first
    plain, plain_warnings = measured()
    assert fast_warnings == plain_warnings
    assert (case == "nan_inf") == bool(plain_warnings)  # inf - inf in the gain's I1 + I2
    _same_measurement(fast, plain)
    _same_measurement(masked, plain)
    assert fast.valid == (case != "negative")
    if fast.valid:
        finite = np.isfinite(i1)
        assert fast.n_pix == pytest.approx(finite.sum(), rel=1e-3)
        assert fast.mean1 == pytest.approx(float(i1[finite].mean()), rel=1e-4)
