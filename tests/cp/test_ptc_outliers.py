"""PTC outlier rejection and turnoff of the EXPAPPROXIMATION solve against injected truth.

Points follow Astier+19 eq. 16 exactly (a00 = -1e-6 / e-, read noise 5 e-) with the measurement
scatter of a 256 x 256 amp (relative sigma(var) = sqrt(2 / 65536)); beyond the injected turnoff the
variance collapses (saturation), as the raw simulator's clipped flats do.
"""

from __future__ import annotations

import numpy as np
import pytest

import pipeline.tasks.cp.ptc_solve_math as ptc_math
from pipeline.tasks.cp.ptc_dataset import PhotonTransferCurveDataset
from pipeline.tasks.cp.ptc_solve import PhotonTransferCurveSolveConfig, solve_ptc


def _points(gain, mu, turnoff, seed, collapse=(0.7, 0.3)):
    rng = np.random.default_rng(seed)
    var = ptc_math.exp_approx_model([-1e-6, gain, 25.0], mu)
    var = var * (1 + np.sqrt(2 / 65536) * rng.standard_normal(mu.size))
    above = mu > turnoff
    var[above] *= np.linspace(*collapse, above.sum())
    ptc = PhotonTransferCurveDataset(["C00"], covMatrixSide=1)
    ptc.append_points("C00", rawMeans=mu, rawVars=var, rawExpTimes=mu / 1000.0,
                      covariances=var[:, None, None],
                      covariancesSqrtWeights=(np.sqrt(65536 / 2) / var)[:, None, None])
    return ptc, above


def test_first_fit_uses_every_point_below_the_signal_limit(monkeypatch):
    """The first fit takes every good point with mean <= the limit, as cp_pipe.

    With gain 0.5 e-/ADU the variance (ADU^2) is twice the mean; comparing it with the limit
    as well shrank the sample (the defect: 24 of the 26 points with mean <= 101000 ADU used).
    """
    mu = np.geomspace(100, 140000, 28)
    ptc, _ = _points(0.5, mu, np.inf, seed=1)
    sizes = []
    real = ptc_math.least_squares

    def spy(fun, x0, **kw):
        sizes.append(len(kw["args"][0]))
        return real(fun, x0, **kw)

    monkeypatch.setattr(ptc_math, "least_squares", spy)
    res = ptc_math.fit_exp_approximation(ptc.rawMeans["C00"], ptc.rawVars["C00"])
    approx_gain = np.median(mu / ptc.rawVars["C00"])
    assert approx_gain == pytest.approx(0.5, rel=0.02)
    assert sizes[0] == np.count_nonzero(mu <= 50000.0 / approx_gain) == 26
    assert res.gain == pytest.approx(0.5, rel=0.003)


def test_gain_half_keeps_the_top_of_the_curve():
    """A seeded gain-0.5 curve with no turnoff keeps its top.

    The variance-limited first fit extrapolated badly and its sigma cut dropped the four top
    points (62598 ... 140000 ADU).
    """
    mu = np.geomspace(100, 140000, 28)
    ptc, _ = _points(0.5, mu, np.inf, seed=1)
    res = ptc_math.fit_exp_approximation(ptc.rawMeans["C00"], ptc.rawVars["C00"])
    assert res.mask.sum() >= 26
    assert res.mask[mu < 100000].all()


@pytest.mark.parametrize("seed", range(4))
def test_gain_one_turnoff_above_the_initial_limit(seed):
    """Gain 1.0, turnoff at 60000 e-, above maxSignalInitialPtcOutlierFit = 50000 e-.

    With the defaults the points kept are exactly those below the injected turnoff and the
    gain is recovered.
    """
    mu = np.concatenate([np.geomspace(100, 45000, 20), np.linspace(48000, 66000, 10)])
    ptc, above = _points(1.0, mu, 60000.0, seed)
    solve_ptc(ptc, PhotonTransferCurveSolveConfig())
    assert np.array_equal(ptc.expIdMask["C00"], ~above)
    assert ptc.expIdMask["C00"].sum() == 27
    assert ptc.ptcTurnoff["C00"] == pytest.approx(mu[~above].max())
    assert ptc.gain["C00"] == pytest.approx(1.0, rel=0.005)
    assert ptc.noise["C00"] == pytest.approx(5.0, rel=0.1)


@pytest.mark.parametrize("seed", range(4))
def test_gain_one_turnoff_below_the_initial_limit_needs_a_lower_limit(seed):
    """The reported 'top points of a gain-1.0 amp dropped': a turnoff below the initial limit.

    The amp saturates at 45000 e-, below the default 50000 e- initial-fit limit, so collapsed
    points enter the first fit, which then
    rejects good points at the top (only 8-13 of the 26 kept; cp_pipe, whose outlier loop this is,
    does the same, and masks such pairs earlier with its KS test of the difference image, which
    ccdflow does not compute). With the limit below the turnoff, as cp_pipe's LSSTCam pipelines
    set it, every point below the turnoff is kept and the gain is recovered.
    """
    mu = np.concatenate([np.geomspace(100, 38000, 20), np.linspace(40000, 49000, 10)])
    ptc, above = _points(1.0, mu, 45000.0, seed)
    default = solve_ptc(ptc, PhotonTransferCurveSolveConfig())
    assert default.expIdMask["C00"].sum() < 20
    ptc, above = _points(1.0, mu, 45000.0, seed)
    solve_ptc(ptc, PhotonTransferCurveSolveConfig(maxSignalInitialPtcOutlierFit=30000.0))
    assert np.array_equal(ptc.expIdMask["C00"], ~above)
    assert ptc.expIdMask["C00"].sum() == 26
    assert ptc.gain["C00"] == pytest.approx(1.0, rel=0.005)
