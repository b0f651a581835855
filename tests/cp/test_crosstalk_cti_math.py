"""Pure functions of cpCrosstalk (`crosstalk_math`) and cpCti (`cti_math`) against injected truth.

No butler, no pipetask: images are built in memory with a known crosstalk matrix (ghosts of bright
spots, some saturated) or known serial-CTI parameters (the forward model of
`pipeline.tasks.isr.deferred_charge.simulate_serial_cti` plus read noise), and the measuring
functions must give the truth back. Edge cases: saturated source pixels left out through the bad
mask (and the bias they cause when they are not), no source pixel at all (NaN coefficient,
``n = 0``, not valid: cp_pipe's behaviour), too few flats for the CTI fit (ValueError).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.image import Amplifier, Box
from pipeline.tasks.cp.crosstalk_math import (
    clipped_coefficient,
    extract_ratios,
    solve_coefficients,
    std_clip_correction,
)
from pipeline.tasks.cp.cti_math import (
    cti_turnoff,
    fit_serial_cti,
    measure_cti_statistics,
    model_overscan,
    serial_eper,
)
from pipeline.tasks.isr.crosstalk import flip_to
from pipeline.tasks.isr.deferred_charge import SerialTrap, simulate_serial_cti

# ------------------------------------------------------------------------------------ crosstalk
NY, NX = 240, 200  # one amplifier, rows x columns
CORNERS = ("LL", "LR", "UL", "UR")
NAMES = ("C00", "C01", "C10", "C11")
#: coeffs[source, target] (ADU / ADU); zeros are pairs with no crosstalk
TRUE_XT = np.array(
    [
        [0.0, 8.0e-4, 2.0e-4, 0.0],
        [5.0e-4, 0.0, 0.0, 1.0e-4],
        [3.0e-4, 0.0, 0.0, 6.0e-4],
        [0.0, 1.5e-4, 9.0e-4, 0.0],
    ]
)
BACKGROUND = (0.0, 3.0, -2.0, 5.0)  # ADU, per amp (after overscan)
READ_NOISE = 2.0  # ADU


def _amps() -> tuple[list[Amplifier], list[Box]]:
    boxes = [Box(0, 0, NX, NY), Box(NX, 0, NX, NY), Box(0, NY, NX, NY), Box(NX, NY, NX, NY)]
    amps = [Amplifier(name=n, readout_corner=c, bbox=b) for n, c, b in zip(NAMES, CORNERS, boxes)]
    return amps, boxes


def _spots(
    rng: np.random.Generator, amp_index: int, n_spots: int, level: tuple[float, float], size: int = 6
) -> np.ndarray:
    """True signal of one amplifier in *readout* order (row 0, column 0 read first), ADU.

    Spots of amp ``k`` sit in their own vertical band of the readout frame, so that no ghost of
    one amplifier falls on the spots of another (each ratio is then pure crosstalk + noise).
    The spots are sparse (0.6 % of an amp): the faint ghosts (< 3 sigma) that the clipped
    background keeps then bias it by < 0.03 ADU, < 1e-6 of a coefficient (with 4 % of the amp
    in spots the bias reached 5e-6).
    """
    sig = np.zeros((NY, NX))
    band = NX // 4
    for _ in range(n_spots):
        r = rng.integers(4, NY - 10)
        c = amp_index * band + rng.integers(1, band - size - 1)
        sig[r : r + size, c : c + size] = rng.uniform(*level)
    return sig


def _crosstalk_image(
    seed: int,
    *,
    saturated_amp: int | None = None,
    saturation: float = 60000.0,
    n_spots: int = 8,
    size: int = 6,
) -> tuple[np.ndarray, np.ndarray]:
    """Assembled image (ADU) with crosstalk ghosts from ``TRUE_XT``, and its SAT mask.

    The ghost in a target is ``coeff × (true source charge)`` at the same readout position;
    spots of ``saturated_amp`` are 1.5 × ``saturation`` and recorded at ``saturation``.
    """
    rng = np.random.default_rng(seed)
    amps, boxes = _amps()
    true_ro = []
    for k in range(4):
        lev = (1.5 * saturation, 1.5 * saturation) if k == saturated_amp else (40000.0, 55000.0)
        true_ro.append(_spots(rng, k, n_spots, lev, size))
    image = np.zeros((2 * NY, 2 * NX))
    sat = np.zeros(image.shape, bool)
    for t, (t_amp, t_box) in enumerate(zip(amps, boxes)):
        ro = np.minimum(true_ro[t], saturation) + BACKGROUND[t]
        for s in range(4):
            ro = ro + TRUE_XT[s, t] * true_ro[s]
        ro = ro + rng.normal(0.0, READ_NOISE, ro.shape)
        image[t_box.slices] = flip_to(ro, "LL", CORNERS[t])
        sat[t_box.slices] = flip_to(true_ro[t] >= saturation, "LL", CORNERS[t])
    return image, sat


def _solve(images: list[tuple[np.ndarray, np.ndarray]], use_sat: bool, threshold: float = 20000.0):
    amps, boxes = _amps()
    ratios, fluxes = [], []
    for img, sat in images:
        bad = sat if use_sat else np.zeros(img.shape, bool)
        res = extract_ratios(img, bad, amps, boxes, threshold)
        ratios.append(res.ratios)
        fluxes.append(res.fluxes)
    return solve_coefficients(ratios, fluxes, list(NAMES)), res


def test_extract_and_solve_recover_the_injected_matrix():
    """Six exposures: every coefficient within 5 % (or 2e-6), the zeros below 1e-5 and not
    significant, the per-amp backgrounds found, the diagonal empty.
    """
    images = [_crosstalk_image(seed) for seed in range(6)]
    sol, last = _solve(images, use_sat=True)
    off = ~np.eye(4, dtype=bool)
    tol = np.maximum(0.05 * TRUE_XT, 2e-6)
    err = np.abs(sol.coeffs - TRUE_XT)
    assert np.all(err[off] <= tol[off]), (sol.coeffs, TRUE_XT)
    assert np.all(np.abs(sol.coeffs[off & (TRUE_XT == 0)]) < 1e-5)
    assert sol.coeffValid[off & (TRUE_XT > 0)].all()
    assert not sol.coeffValid[off & (TRUE_XT == 0)].any()
    assert np.all(np.diag(sol.coeffNum) == 0) and np.all(np.diag(sol.coeffs) == 0)
    assert sol.coeffNum[off].min() > 1000
    # background: per-amp clipped mean of the quiet pixels (ghosts are < 1 ADU of noise)
    for name, bg in zip(NAMES, BACKGROUND):
        assert last.background[name] == pytest.approx(bg, abs=0.1)
    # errors are the (clip-corrected) scatter of single ratios: ~READ_NOISE / source level
    assert 2e-5 < float(np.median(sol.coeffErr[off])) < 2e-4


def test_background_leaves_out_faint_ghosts():
    """Dense sources (30 spots of 12 x 12 per amp, 9 % of it): the ghosts fainter than the 3-sigma
    clip sit where other amps are bright and are left out of the background, so the 12
    coefficients are unbiased: their mean error over 3 sets of 4 exposures is below 3e-7 (with
    those ghosts in the background the mean error was -3.4e-6)."""
    errs = []
    for rep in range(3):
        images = [_crosstalk_image(100 * rep + s, n_spots=30, size=12) for s in range(4)]
        sol, _ = _solve(images, use_sat=True)
        errs.append(sol.coeffs - TRUE_XT)
    off = ~np.eye(4, dtype=bool)
    mean_err = float(np.mean(np.array(errs).mean(axis=0)[off]))
    assert abs(mean_err) < 3e-7, mean_err


def test_coefficient_errors_are_honest():
    """The spread of the error-normalised residuals (c - truth) / (err / sqrt(N)) is about 1."""
    images = [_crosstalk_image(seed) for seed in range(10, 14)]
    sol, _ = _solve(images, use_sat=True)
    off = ~np.eye(4, dtype=bool)
    pulls = (sol.coeffs - TRUE_XT)[off] / (sol.coeffErr[off] / np.sqrt(sol.coeffNum[off]))
    assert 0.4 < float(np.std(pulls)) < 2.0, pulls


def test_saturated_sources_are_ignored_through_the_bad_mask():
    """Amp C10's spots are 1.5 x saturation: recorded at 60000 ADU, their ghosts are those of
    90000 ADU. With SAT in the bad mask (ignoreSaturatedPixels) C10's row is empty (NaN, not
    valid) and the other rows stay right; without it C10's coefficients come out 1.5 x too high.
    """
    images = [_crosstalk_image(seed, saturated_amp=2) for seed in range(6)]
    masked, res = _solve(images, use_sat=True)
    assert res.nPixels["C10"] == 0 and res.nPixels["C00"] > 0
    assert np.all(np.isnan(masked.coeffs[2, [0, 1, 3]])) and not masked.coeffValid[2].any()
    assert np.all(masked.coeffNum[2] == 0)
    for s in (0, 1, 3):
        for t in range(4):
            if s != t:
                assert abs(masked.coeffs[s, t] - TRUE_XT[s, t]) <= max(0.05 * TRUE_XT[s, t], 2e-6)
    biased, _ = _solve(images, use_sat=False)
    for t in (0, 3):  # C10 -> C00 (3e-4), C10 -> C11 (6e-4)
        assert biased.coeffs[2, t] == pytest.approx(1.5 * TRUE_XT[2, t], rel=0.05)


def test_no_source_pixel_gives_nan_not_zero():
    """A threshold above every pixel: no ratio; the solve reports NaN, N = 0, not valid (cp_pipe)."""
    images = [_crosstalk_image(0)]
    sol, res = _solve(images, use_sat=True, threshold=1e6)
    assert sum(res.nPixels.values()) == 0
    off = ~np.eye(4, dtype=bool)
    assert np.all(np.isnan(sol.coeffs[off])) and not sol.coeffValid.any() and np.all(sol.coeffNum == 0)
    one = clipped_coefficient(np.array([]), None)
    assert math.isnan(one.coeff) and one.n == 0 and not one.valid


def test_extract_refuses_amplifiers_of_different_sizes():
    amps, boxes = _amps()
    boxes = [boxes[0], Box(NX, 0, NX - 1, NY), boxes[2], boxes[3]]
    with pytest.raises(ValueError, match="equal-size"):
        extract_ratios(np.zeros((2 * NY, 2 * NX)), np.zeros((2 * NY, 2 * NX), bool), amps, boxes, 1.0)


def test_clipped_coefficient_rejects_outliers_and_fits_the_quadratic_term():
    rng = np.random.default_rng(5)
    flux = rng.uniform(20000, 60000, 4000)
    c, c2 = 4.0e-4, 2.0e-9  # target = c S + c2 S^2 (ADU)
    ratio = c + c2 * flux + rng.normal(0, 0.5, flux.size) / flux
    ratio[:200] = 0.05  # a bright object of the target's own under 5 % of the sources
    lin = clipped_coefficient(ratio, flux, flux_order=1)
    assert lin.coeff == pytest.approx(c, rel=0.02) and lin.coeffSqr == pytest.approx(c2, rel=0.05)
    assert lin.valid and lin.n < 3900  # the 200 outliers are clipped
    const = clipped_coefficient(ratio, flux, flux_order=0)
    assert const.coeffSqr == 0.0
    assert const.coeff == pytest.approx(c + c2 * float(np.mean(flux[200:])), rel=0.02)
    with pytest.raises(ValueError, match="fluxOrder"):
        clipped_coefficient(ratio, None, flux_order=1)
    with pytest.raises(ValueError, match="fluxOrder must be 0 or 1"):
        clipped_coefficient(ratio, flux, flux_order=2)


def test_std_clip_correction_matches_a_clipped_normal_sample():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, 2_000_000)
    for n in (1.0, 2.0, 3.0):
        kept = x[np.abs(x) < n]
        assert float(np.std(kept)) * std_clip_correction(n) == pytest.approx(1.0, rel=3e-3)
    assert std_clip_correction(0.0) == 1.0 and std_clip_correction(math.inf) == 1.0


# ------------------------------------------------------------------------------------------ CTI
N_PRE, N_DATA, N_OVER = 3, 160, 24
CTI_TRUE = {"global_cti": 4e-6, "trap_size": 25.0, "emission_time": 1.0, "scaling": 0.05}
LOCAL = {"drift_scale": 2.0e-4, "decay_time": 2.4}


def _cti_rows(
    signal_e: float, rng: np.random.Generator, ny: int = 400, rn: float = 5.0, **pars
) -> np.ndarray:
    """Raw rows in readout order (prescan, data at ``signal_e`` with Poisson noise, overscan), e⁻."""
    rows = np.zeros((ny, N_PRE + N_DATA + N_OVER))
    rows[:, N_PRE : N_PRE + N_DATA] = rng.poisson(signal_e, (ny, N_DATA))
    traps = [SerialTrap(pars["trap_size"], pars["emission_time"], 0, "linear", [pars["scaling"]])]
    out = simulate_serial_cti(
        rows,
        drift_scale=pars.get("drift_scale", 0.0),
        decay_time=pars.get("decay_time", 1.0),
        global_cti=pars["global_cti"],
        traps=traps,
    )
    return out + rng.normal(0.0, rn, out.shape)


def _cti_measurements(seed: int, **pars) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signals = np.geomspace(200, 45000, 12)
    means, overs = [], []
    for s in signals:
        rows = _cti_rows(s, rng, **pars)
        means.append(float(rows[:, N_PRE : N_PRE + N_DATA].mean()))
        overs.append(rows[:, N_PRE + N_DATA :].mean(axis=0))
    return np.array(means), np.array(overs)


def test_fit_serial_cti_recovers_global_cti_and_trap():
    """Flats of 200-45000 e- through the forward model (+ 5 e- read noise): global CTI within
    10 %, trap size within 20 % (the issue's truth tolerances), local offset off.
    """
    sig, over = _cti_measurements(3, **CTI_TRUE)
    cols = list(range(0, 15))
    fit = fit_serial_cti(sig, over[:, cols], 0, N_PRE + N_DATA, cols, fit_error=5.0 / math.sqrt(400))
    assert fit.success
    assert fit.globalCti == pytest.approx(CTI_TRUE["global_cti"], rel=0.10)
    assert fit.trapSize == pytest.approx(CTI_TRUE["trap_size"], rel=0.20)
    assert fit.chi2 < 3.0


def test_fit_serial_cti_with_local_offset():
    """The local electronic offset (drift 2e-4, decay 2.4 px) fitted jointly with the CTI and trap."""
    sig, over = _cti_measurements(4, **CTI_TRUE, **LOCAL)
    cols = list(range(0, 15))
    fit = fit_serial_cti(sig, over[:, cols], 0, N_PRE + N_DATA, cols, fit_error=5.0 / math.sqrt(400))
    assert fit.globalCti == pytest.approx(CTI_TRUE["global_cti"], rel=0.10)
    assert fit.trapSize == pytest.approx(CTI_TRUE["trap_size"], rel=0.20)
    assert fit.driftScale == pytest.approx(LOCAL["drift_scale"], rel=0.25)


def test_fit_without_cti_finds_none():
    """No deferred charge injected (a 1e-12 CTI and a 1e-3 e- trap): the fit reports < 2e-7."""
    sig, over = _cti_measurements(6, global_cti=1e-12, trap_size=1e-3, emission_time=1.0, scaling=0.05)
    cols = list(range(0, 15))
    fit = fit_serial_cti(sig, over[:, cols], 0, N_PRE + N_DATA, cols, fit_error=5.0 / math.sqrt(400))
    assert fit.globalCti < 2e-7
    assert fit.trapSize < 2.0


def test_model_overscan_is_the_forward_model_of_a_flat_row():
    vals = model_overscan(
        np.array([1000.0, 30000.0]), N_PRE, N_DATA, [0, 1, 5], drift_scale=0.0, decay_time=1.0, **CTI_TRUE
    )
    rows = np.zeros((2, N_PRE + N_DATA + 6))
    rows[0, N_PRE : N_PRE + N_DATA] = 1000.0
    rows[1, N_PRE : N_PRE + N_DATA] = 30000.0
    trap = SerialTrap(CTI_TRUE["trap_size"], CTI_TRUE["emission_time"], 0, "linear", [CTI_TRUE["scaling"]])
    full = simulate_serial_cti(rows, global_cti=CTI_TRUE["global_cti"], traps=[trap])
    np.testing.assert_allclose(vals, full[:, N_PRE + N_DATA + np.array([0, 1, 5])], rtol=1e-12)
    # a trap of 25 e- fills at 500 e- (scaling 0.05): the first column holds its release + CTI
    assert vals[1, 0] > vals[0, 0] > 0


def test_serial_eper_estimates_the_global_cti():
    """No trap: the EPER of the first two overscan columns is the CTI within 5 % (N eps S of
    deferred charge, almost all of it in the first two columns for eps N << 1).
    """
    eps = 5e-6
    sig = np.array([5000.0, 20000.0, 40000.0])
    over = model_overscan(
        sig, 0, N_PRE + N_DATA, range(4), global_cti=eps, trap_size=0.0, emission_time=1.0,
        scaling=0.1, drift_scale=0.0, decay_time=1.0,
    )  # fmt: skip
    eper = serial_eper(sig, over, N_PRE + N_DATA)
    np.testing.assert_allclose(eper, eps, rtol=0.05)
    with np.errstate(all="ignore"):
        assert not np.isfinite(serial_eper(np.array([0.0]), np.ones((1, 2)), 100)[0])


def test_cti_turnoff_finds_where_the_eper_leaves_its_trend():
    signals = np.geomspace(1000, 100000, 15)
    eper = np.full(signals.size, 3e-6)
    eper[11:] = [4e-6, 1e-5, 5e-5, 2e-4]  # blooming from the 12th point on
    turnoff, err = cti_turnoff(signals, eper, (1e-8, 1e-3))
    # the central gradient of the 11th point already sees the 12th: the 10th is the last flat one
    assert turnoff == pytest.approx(signals[9]) and err == pytest.approx((signals[10] - signals[8]) / 2)
    assert cti_turnoff(signals, eper, (1.0, 2.0)) == (0.0, 0.0)  # nothing in range


def test_measure_cti_statistics_in_readout_order():
    """An amp read from the right (prescan right of the data): the overscan columns come back
    first-read first, in electrons, and the image mean / first / last columns are right.
    """
    gain = 1.5
    amp = Amplifier(
        name="R",
        gain=gain,
        raw_bbox=Box(0, 0, 30, 12),
        raw_data_bbox=Box(6, 0, 20, 10),
        raw_serial_prescan_bbox=Box(26, 0, 4, 10),
        raw_serial_overscan_bbox=Box(0, 0, 6, 10),
        raw_parallel_overscan_bbox=Box(6, 10, 20, 2),
    )
    img = np.zeros((12, 30))
    data = np.tile(np.linspace(100.0, 200.0, 20), (10, 1))  # x increasing; read from the right
    img[0:10, 6:26] = data
    img[0:10, 0:6] = np.arange(6)[None, ::-1] + 10.0  # first-read overscan column (x=5) = 10
    img[10:12, 6:26] = [[7.0], [3.0]]  # parallel overscan rows: next to the data first
    st = measure_cti_statistics(img, amp, gain)
    assert st["IMAGE_MEAN"] == pytest.approx(150.0 * gain)
    assert st["FIRST_COLUMN_MEAN"] == pytest.approx(200.0 * gain)  # x = 25 is read first
    assert st["LAST_COLUMN_MEAN"] == pytest.approx(100.0 * gain)
    np.testing.assert_allclose(st["SERIAL_OVERSCAN_VALUES"], (np.arange(6) + 10.0) * gain)
    np.testing.assert_allclose(st["PARALLEL_OVERSCAN_VALUES"], [7.0 * gain, 3.0 * gain])
    assert st["N_SERIAL_SHIFTS"] == 24


def test_fit_refuses_too_few_measurements():
    with pytest.raises(ValueError, match="cannot constrain"):
        fit_serial_cti(np.array([1000.0]), np.ones((1, 2)), 0, 100, [0, 1])
