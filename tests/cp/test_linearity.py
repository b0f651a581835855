"""cpLinearity: the fit on synthetic PTC means, and the truth test through the CLI.

The raw simulator applies a per-amp polynomial non-linearity (`PolynomialNonLinearity`) to flat
pairs of ptccam; cpPtc and cpLinearity run through ``pipetask``; the fitted quadratic coefficient
of every amp must be the injected one within 5 %, and after ISR with ``doLinearize`` and the
certified linearizer the flat signal must be linear in exposure time within 0.1 %.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.instruments.sim_effects import PolynomialNonLinearity
from pipeline.tasks.cp import LinearitySolveConfig
from pipeline.tasks.cp.linearity import plot_linearity, solve_linearity
from pipeline.tasks.cp.linearity_math import fit_linearity, linearity_residuals
from pipeline.tasks.cp.ptc_dataset import PhotonTransferCurveDataset

from ._cpcli import CAMERA, certify, make_repo, run_pipeline

T = np.geomspace(0.2, 30.0, 20)
TRUE_LIN = 1500.0 * T + 3.0


def _measured(c2: float, c3: float = 0.0) -> np.ndarray:
    m = TRUE_LIN + c2 * TRUE_LIN**2 + c3 * TRUE_LIN**3
    return m * (1 + 1e-5 * np.random.default_rng(4).standard_normal(T.size))


@pytest.mark.parametrize("kind", ["Polynomial", "Squared", "LookupTable", "Spline"])
def test_fit_types_linearize(kind):
    m = _measured(-4e-7, 2e-12)
    fit = fit_linearity(T, m, np.ones(T.size, bool), linearity_type=kind, max_lookup_table_adu=60000)
    worst = np.nanmax(np.abs(fit.residuals))
    if kind == "Polynomial":
        assert fit.coeffs[0] == pytest.approx(4e-7, rel=0.01)
        assert fit.coeffs[1] == pytest.approx(-2e-12, rel=0.05)
        assert worst < 5e-4          # -k_j / k1^j is the first-order inverse: 2 c2^2 v^2 is left
    elif kind == "Squared":
        assert fit.coeffs.size == 1 and worst < 3e-3
    else:                            # exact inverses
        assert worst < 1e-4
    before, _ = linearity_residuals(T, m, np.ones(T.size, bool), "None", ())
    assert np.nanmax(np.abs(before)) > 0.005


def test_outliers_and_the_clipping_quirk():
    m = _measured(-1e-6)
    m[5] *= 1.3                      # one bad pair (> 5 sqrt(m) off)
    fit = fit_linearity(T, m, np.ones(T.size, bool), linearity_type="Polynomial", polynomial_order=2)
    assert not fit.mask[5] and fit.mask.sum() == T.size - 1
    # the high, non-linear points are kept (cp_pipe clips them against the linear fit)
    assert fit.mask[-1] and m[-1] > 40000
    assert fit.coeffs[0] == pytest.approx(1e-6, rel=0.01)
    with pytest.raises(ValueError, match="linear term"):
        fit_linearity(T, m, np.zeros(T.size, bool))


def test_solve_task_marks_bad_amps_and_plots(tmp_path):
    ptc = PhotonTransferCurveDataset(["A", "B"])
    ptc.rawExpTimes = {"A": T, "B": T}
    ptc.rawMeans = {"A": _measured(-3e-7), "B": _measured(-3e-7)}
    ptc.expIdMask = {"A": np.ones(T.size, bool), "B": np.ones(T.size, bool)}
    ptc.badAmps = ["B"]
    lin = solve_linearity(ptc, LinearitySolveConfig(linearityType="Polynomial"))
    assert lin.linearity_type == {"A": "Polynomial", "B": "None"}
    assert json.loads(lin.metadata["FIT_PARAMS"])["A"]["maxResidual"] < 1e-3
    fig = plot_linearity(ptc, lin, "test")
    fig.savefig(tmp_path / "lin.png")
    assert (tmp_path / "lin.png").stat().st_size > 10000


# --- truth through the CLI --------------------------------------------------------------------

NONLIN = PolynomialNonLinearity(coeffs={"C00": [-4e-7], "C01": [-3e-7, 2e-12], "C10": [-2.5e-7],
                                        "C11": [-3.5e-7]})


@pytest.mark.slow
def test_linearity_truth_via_cli(tmp_path):
    from butler import Butler
    from pipeline.instruments import get_instrument
    from pipeline.instruments.simulate import make_truth, simulate_raws

    times = np.geomspace(0.25, 30.0, 14)
    exposures = [{"type": "flat", "exposure_time": float(t), "flux": 2000.0} for t in times for _ in range(2)]
    truth = make_truth(get_instrument(str(CAMERA)), seed=21, gains=1.5, read_noises=5.0)
    truth.effects.append(NONLIN)
    simulate_raws(str(CAMERA), tmp_path / "raw", exposures=exposures, seed=21, truth=truth)
    assert truth.to_dict()["effects"]["PolynomialNonLinearity"]["coeffs"]["C01"] == [-3e-7, 2e-12]
    repo = tmp_path / "repo"
    make_repo(repo, tmp_path / "raw")
    raws, calib = "ptccam/raw/all", "ptccam/calib"
    flats = "exposure.observation_type='flat'"
    run_pipeline(repo, "cpPtc.yaml", raws, "u/ptc", flats, "ptcIsr:doBias=False")
    certify(repo, "u/ptc", calib, "ptc")
    run_pipeline(repo, "cpLinearity.yaml", f"{raws},{calib}", "u/lin", flats,
                 "cpLinearizerSolve:linearityType=Polynomial", "cpLinearizerSolve:maxLinearAdu=10000")
    b = Butler(repo)
    lin = b.get("linearizer", instrument="ptccam", detector=0, collections=["u/lin"])
    print("quadratic: " + ", ".join(f"{a} {-lin.linearity_coeffs[a][0]:.4g} (injected {c[0]:.4g})"
                                    for a, c in NONLIN.coeffs.items()))
    for amp, cs in NONLIN.coeffs.items():
        assert lin.linearity_type[amp] == "Polynomial"
        assert -lin.linearity_coeffs[amp][0] == pytest.approx(cs[0], rel=0.05), amp
    plot = b.query_datasets("linearityResidualPlot", collections=["u/lin"])
    assert len(plot) == 1
    certify(repo, "u/lin", calib, "linearizer")
    run_pipeline(repo, "isr.yaml", f"{raws},{calib}", "u/isr", flats, "isr:doBias=False",
                 "isr:doFlat=False", "isr:doLinearize=True")
    b = Butler(repo)
    means: dict[str, list[tuple[float, float]]] = {}
    for ref in b.query_datasets("postISRCCD", collections=["u/isr"]):
        exp = b.get(ref)
        assert exp.metadata["LSST ISR LINEARIZE APPLIED"]
        for amp in exp.detector:
            means.setdefault(amp.name, []).append(
                (exp.info.exposure_time, float(np.mean(exp.image[amp.bbox.slices]))))
    for amp, pts in means.items():
        t, m = np.array(pts).T
        use = m > 30.0
        res, _ = linearity_residuals(t, m, use, "None", ())
        print(f"{amp}: max |residual from linear| after doLinearize {np.nanmax(np.abs(res)):.2e}")
        assert np.nanmax(np.abs(res)) < 1e-3, (amp, np.nanmax(np.abs(res)))
