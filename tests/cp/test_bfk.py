"""cpBfk: the kernel math, and the truth test through the CLI.

The raw simulator integrates flat pairs of ptccam with a charge-dependent pixel area
(`BrighterFatterEffect`, ``a00 = -3e-6``/e⁻, zero-sum coupling); cpPtc (FULLCOVARIANCE_NO_B) must
measure ``a00`` within 10 %; cpBfk turns the PTC into kernels; ISR with ``doBrighterFatter`` and
the certified kernel must remove at least 80 % of the PTC's quadratic term.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.instruments.sim_effects import BrighterFatterEffect
from pipeline.tasks.cp import BrighterFatterKernelSolveConfig
from pipeline.tasks.cp.bfk import solve_bfk
from pipeline.tasks.cp.bfk_math import (
    average_correlations,
    flux_scaled_correlations,
    force_zero_sum,
    quadratic_correlations,
    successive_over_relax,
    tile_quadrant,
)
from pipeline.tasks.cp.ptc_dataset import PhotonTransferCurveDataset
from pipeline.tasks.cp.ptc_solve_math import fit_polynomial

from ._cpcli import CAMERA, certify, make_repo, run_pipeline

A = np.array([[-3.0e-6, 6.0e-7, 0.0], [6.0e-7, 1.5e-7, 0.0], [0.0, 0.0, 0.0]])


def test_tile_and_laplacian_solve():
    q = np.arange(9.0).reshape(3, 3)
    t = tile_quadrant(q)
    assert t.shape == (5, 5) and t[2, 2] == 0 and t[0, 0] == t[4, 4] == t[0, 4] == 8 and t[2, 4] == 2
    src = np.zeros((9, 9))
    src[4, 4] = -1.0
    f = successive_over_relax(src)
    lap = f[3, 4] + f[5, 4] + f[4, 3] + f[4, 5] - 4 * f[4, 4]
    assert lap == pytest.approx(-1.0) and np.allclose(f, f.T) and f[4, 4] == f.max()
    k, total = force_zero_sum(t)
    assert total == pytest.approx(t.sum()) and k.sum() == pytest.approx(0.0, abs=1e-12)


def _synthetic_ptc(gain=1.5, n=12):
    """Covariances exactly C = μ δ + a μ² (e⁻²), as the PTC stores them (ADU², halved)."""
    mu_e = np.linspace(5000, 60000, n)
    cov = np.zeros((n, 4, 4))
    cov[:, :3, :3] = A[None] * mu_e[:, None, None] ** 2
    cov[:, 0, 0] += mu_e
    ptc = PhotonTransferCurveDataset(["A", "B"], ptcFitType="FULLCOVARIANCE", covMatrixSide=4)
    for amp in ptc.ampNames:
        ptc.rawMeans[amp] = mu_e / gain
        ptc.covariances[amp] = cov / gain**2
        ptc.expIdMask[amp] = np.ones(n, bool)
        ptc.gain[amp] = gain
        am = np.zeros((4, 4))
        am[:3, :3] = A
        ptc.aMatrix[amp] = am
    return ptc


def test_correlations_give_minus_a():
    ptc = _synthetic_ptc()
    scaled, unscaled, flux = flux_scaled_correlations(ptc.covariances["A"], ptc.rawMeans["A"], 1.5)
    assert len(scaled) == 12
    pre = average_correlations(scaled)
    assert pre.shape == (9, 9) and pre[4, 4] == pytest.approx(3e-6) and pre[4, 5] == pytest.approx(-6e-7)
    quad = quadratic_correlations(unscaled, flux)
    assert np.allclose(quad, pre, atol=1e-12)


@pytest.mark.parametrize("options", [{}, {"useAmatrix": True}, {"correlationQuadraticFit": True},
                                     {"level": "DETECTOR", "correlationQuadraticFit": True,
                                      "ignoreAmpsForAveraging": ["B"]}])
def test_solve_bfk_levels(options):
    cfg = BrighterFatterKernelSolveConfig(**options)
    bfk = solve_bfk(_synthetic_ptc(), cfg)
    assert set(bfk.ampKernels) == {"A", "B"} and bfk.ampKernels["A"].shape == (9, 9)
    assert bfk.metadata["A00_A"] == pytest.approx(-3e-6, rel=1e-6)
    k = bfk.ampKernels["A"]
    assert k[4, 4] == k.min() < 0 and np.allclose(k, k[::-1, ::-1])
    if options.get("level") == "DETECTOR":
        # cp_pipe fits the flux-scaled correlations here (kernel ≈ 0); ours equals the amp kernel
        assert bfk.metadata["A00_DETECTOR"] == pytest.approx(-3e-6, rel=1e-6)
        assert np.allclose(bfk.kernel, k)
    else:
        assert bfk.kernel is None and bfk.level == "AMP"


def test_solve_bfk_needs_full_covariance():
    ptc = _synthetic_ptc()
    ptc.ptcFitType = "EXPAPPROXIMATION"
    with pytest.raises(ValueError, match="FULLCOVARIANCE"):
        solve_bfk(ptc, BrighterFatterKernelSolveConfig())


# --- truth through the CLI --------------------------------------------------------------------


def _quadratic(ptc: PhotonTransferCurveDataset) -> dict[str, float]:
    """Quadratic coefficient of a degree-2 polynomial PTC per amp (ADU⁻¹)."""
    out = {}
    for amp in ptc.ampNames:
        mu, var = np.asarray(ptc.rawMeans[amp]), np.asarray(ptc.rawVars[amp])
        out[amp] = float(fit_polynomial(mu, var, np.isfinite(mu) & np.isfinite(var), 2).coeffs[2])
    return out


@pytest.mark.slow
def test_bfk_truth_via_cli(tmp_path):
    from butler import Butler
    from pipeline.instruments import get_instrument
    from pipeline.instruments.simulate import make_truth, simulate_raws

    bf = BrighterFatterEffect()
    times = np.linspace(1.0, 40.0, 12)
    exposures = [{"type": "flat", "exposure_time": float(t), "flux": 2000.0} for t in times for _ in range(2)]
    truth = make_truth(get_instrument(str(CAMERA)), seed=5, gains=1.5, read_noises=3.0, flat_rms=0.01)
    truth.effects.append(bf)
    simulate_raws(str(CAMERA), tmp_path / "raw", exposures=exposures, seed=5, truth=truth)
    assert truth.to_dict()["effects"]["BrighterFatterEffect"]["a00"] == pytest.approx(-3e-6)
    repo = tmp_path / "repo"
    make_repo(repo, tmp_path / "raw")
    raws, calib = "ptccam/raw/all", "ptccam/calib"
    flats = "exposure.observation_type='flat'"
    run_pipeline(repo, "cpPtc.yaml", raws, "u/ptc", flats, "ptcIsr:doBias=False",
                 "ptcSolve:ptcFitType=FULLCOVARIANCE_NO_B",
                 "ptcSolve:maximumRangeCovariancesAstierFullCovFit=4")
    b = Butler(repo)
    ptc = b.get("ptc", instrument="ptccam", detector=0, collections=["u/ptc"])
    a00 = [ptc.aMatrix[a][0, 0] for a in ptc.ampNames]
    assert np.mean(a00) == pytest.approx(bf.a00, rel=0.10), a00
    for v in a00:
        assert v == pytest.approx(bf.a00, rel=0.10)
    certify(repo, "u/ptc", calib, "ptc")
    run_pipeline(repo, "cpBfk.yaml", f"{raws},{calib}", "u/bfk", flats)
    bfk = Butler(repo).get("bfk", instrument="ptccam", detector=0, collections=["u/bfk"])
    assert set(bfk.ampKernels) == set(ptc.ampNames)
    certify(repo, "u/bfk", calib, "bfk")
    run_pipeline(repo, "cpPtc.yaml", f"{raws},{calib}", "u/ptcBf", flats, "ptcIsr:doBias=False",
                 "ptcIsr:doBrighterFatter=True")
    ptc_bf = Butler(repo).get("ptc", instrument="ptccam", detector=0, collections=["u/ptcBf"])
    before, after = _quadratic(ptc), _quadratic(ptc_bf)
    print(f"a00 {a00}; quadratic before {before}, after {after}")
    for amp in ptc.ampNames:
        assert before[amp] < 0 and abs(after[amp]) <= 0.2 * abs(before[amp]), (amp, before[amp], after[amp])
