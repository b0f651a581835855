"""`PhotonTransferCurveSolveTask`: fit the PTC of a detector from its ``cpPtcPartial`` datasets.

One quantum per detector gathers every partial (DUMMY ones are skipped), applies the
mean-signal cuts, fits EXPAPPROXIMATION (always: it defines the outlier mask and the turnoff)
and then the configured model, and writes the ``ptc`` calibration. The math lives in
`pipeline.tasks.cp.ptc_solve_math`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

import pipeline.connection_types as cT
from pipeline.config import Field
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask

from .ptc_dataset import PhotonTransferCurveDataset
from .ptc_extract import amp_value
from .ptc_solve_math import fit_exp_approximation, fit_full_covariance, fit_polynomial

__all__ = [
    "PhotonTransferCurveSolveConfig",
    "PhotonTransferCurveSolveConnections",
    "PhotonTransferCurveSolveTask",
    "solve_ptc",
]


class PhotonTransferCurveSolveConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Connections: every ``cpPtcPartial`` of a detector in, its ``ptc`` calibration out."""

    inputCovariances = cT.Input(
        name="cpPtcPartial", storageClass="PhotonTransferCurveDataset", multiple=True,
        doc="Partial PTCs (one per flat pair; DUMMY ones are ignored).",
        dimensions=("instrument", "exposure", "detector"),
    )
    outputPtcDataset = cT.Output(
        name="ptc", storageClass="PhotonTransferCurveDataset", isCalibration=True,
        doc="Photon transfer curve: per-amp gain, read noise, a/b matrices, turnoff.",
        dimensions=("instrument", "detector"),
    )


class PhotonTransferCurveSolveConfig(PipelineTaskConfig,
                                     pipelineConnections=PhotonTransferCurveSolveConnections):
    """Configuration of `PhotonTransferCurveSolveTask` (cp_pipe names and defaults)."""

    ptcFitType: Literal["EXPAPPROXIMATION", "FULLCOVARIANCE", "FULLCOVARIANCE_NO_B", "POLYNOMIAL"] = Field(
        "EXPAPPROXIMATION", description="Fit PTC to Astier+19 exponential approximation (eq. 16), "
                                        "full model (eq. 20), full model without b, or a polynomial.")
    minMeanSignal: dict[str, float] = Field(
        default_factory=lambda: {"ALL_AMPS": 0.0},
        description="Minimum mean signal (ADU) per amp; points at or below are excluded (exclusive).")
    maxMeanSignal: dict[str, float] = Field(
        default_factory=lambda: {"ALL_AMPS": 1e6},
        description="Maximum mean signal (ADU) per amp; points at or above are excluded (exclusive).")
    maximumRangeCovariancesAstierFullCovFit: int = Field(
        8, ge=1, description="Maximum lag range used in the FULLCOVARIANCE fit (<= the measured range).")
    polynomialFitDegree: int = Field(3, ge=1, description="Degree of the POLYNOMIAL fit.")
    sigmaCutPtcOutliers: float = Field(5.0, gt=0, description="Sigma cut for outlier rejection in the PTC.")
    maxIterationsPtcOutliers: int = Field(2, ge=1, description="Maximum iterations of outlier rejection.")
    maxSignalInitialPtcOutlierFit: float = Field(
        50000.0, description="Maximum signal for the initial outlier fit (e- if "
                             "scaleMaxSignalInitialPtcOutlierFit, else ADU); must be below the PTC "
                             "turnoff, else collapsed points bias the first fit and good points "
                             "at the top of the curve are rejected.")
    maxDeltaInitialPtcOutlierFit: float = Field(
        9000.0, description="Mean gap after a rejected point that cuts the curve (turnoff; e- if scaled).")
    scaleMaxSignalInitialPtcOutlierFit: bool = Field(
        True, description="Scale the two limits above by an approximate gain (e- → ADU).")
    sigmaClipFullFitCovariancesAstier: float = Field(
        5.0, gt=0, description="Sigma clip in the full covariance fit.")
    maxIterFullFitCovariancesAstier: int = Field(
        3, ge=1, description="Iterations of the full covariance fit.")
    binSize: int = Field(1, ge=1, description="Binning used in extract (fit bounds are dropped when > 1).")


def _bad_amp(ptc: PhotonTransferCurveDataset, amp: str) -> None:
    if amp not in ptc.badAmps:
        ptc.badAmps.append(amp)
    n = ptc.n_points(amp)
    ptc.expIdMask[amp] = np.zeros(n, bool)
    for name in ("finalMeans", "finalVars", "finalModelVars"):
        getattr(ptc, name)[amp] = np.full(n, np.nan)


def solve_ptc(ptc: PhotonTransferCurveDataset, config: PhotonTransferCurveSolveConfig,
              log: Any = None) -> PhotonTransferCurveDataset:
    """Fit every amp of a merged PTC in place.

    Parameters
    ----------
    ptc : `PhotonTransferCurveDataset`
        Points of every pair (`PhotonTransferCurveDataset.from_partials`).
    config : `PhotonTransferCurveSolveConfig`
        Fit configuration.
    log : `logging.Logger`, optional
        Where to warn.

    Returns
    -------
    ptc : `PhotonTransferCurveDataset`
        The same object, with ``ptcFitType``, ``gain``, ``noise``, matrices, masks, turnoff set.
        Amps that cannot be fitted are in ``badAmps`` with NaN results.
    """
    ptc.ptcFitType = config.ptcFitType
    m = ptc.covMatrixSide
    for amp in ptc.ampNames:
        mu = np.asarray(ptc.rawMeans[amp], float)
        var = np.asarray(ptc.rawVars[amp], float)
        n = mu.size
        lo = amp_value(config.minMeanSignal, amp, 0.0)
        hi = amp_value(config.maxMeanSignal, amp, 1e6)
        good = np.asarray(ptc.expIdMask[amp], bool) & np.isfinite(mu) & np.isfinite(var)
        good &= (mu > lo) & (mu < hi)
        ptc.covariancesModel[amp] = np.full((n, m, m), np.nan)
        if good.sum() < 2:
            _bad_amp(ptc, amp)
            continue
        sw = np.asarray(ptc.covariancesSqrtWeights[amp], float)
        sw00 = sw[:, 0, 0] if sw.size else None
        if sw00 is not None and not np.all(np.isfinite(sw00[good]) & (sw00[good] > 0)):
            sw00 = None
        exp = fit_exp_approximation(
            mu, var, sw00, good, sigma_cut=config.sigmaCutPtcOutliers,
            max_iterations=config.maxIterationsPtcOutliers,
            max_signal_initial=config.maxSignalInitialPtcOutlierFit,
            max_delta_initial=config.maxDeltaInitialPtcOutlierFit,
            scale_initial_by_gain=config.scaleMaxSignalInitialPtcOutlierFit,
            bounded=config.binSize == 1,
        )
        if exp.bad:
            _bad_amp(ptc, amp)
            continue
        mask = exp.mask
        ptc.expIdMask[amp] = mask
        ptc.ptcTurnoff[amp] = exp.turnoff
        ptc.ptcTurnoffSamplingError[amp] = exp.turnoff_sampling_err
        model_vars = exp.model
        if config.ptcFitType == "EXPAPPROXIMATION":
            ptc.gain[amp], ptc.gainErr[amp] = exp.gain, exp.gain_err
            ptc.noise[amp], ptc.noiseErr[amp] = exp.noise, exp.noise_err
            ptc.ptcFitPars[amp], ptc.ptcFitParsError[amp] = exp.params, exp.params_err
            a = np.full((m, m), np.nan)
            a[0, 0] = exp.a00
            ptc.aMatrix[amp] = a
            cm = np.full((n, m, m), np.nan)
            cm[:, 0, 0] = exp.model
            ptc.covariancesModel[amp] = cm
        elif config.ptcFitType == "POLYNOMIAL":
            try:
                poly = fit_polynomial(mu, var, mask, config.polynomialFitDegree)
            except ValueError as err:
                if log:
                    log.warning("amp %s: %s", amp, err)
                _bad_amp(ptc, amp)
                continue
            ptc.gain[amp], ptc.gainErr[amp] = poly.gain, poly.gain_err
            ptc.noise[amp], ptc.noiseErr[amp] = poly.noise, poly.noise_err
            ptc.ptcFitPars[amp], ptc.ptcFitParsError[amp] = poly.coeffs, poly.coeffs_err
            model_vars = poly.model
            cm = np.full((n, m, m), np.nan)
            cm[:, 0, 0] = poly.model
            ptc.covariancesModel[amp] = cm
        else:
            r = min(config.maximumRangeCovariancesAstierFullCovFit, m)
            try:
                full = fit_full_covariance(
                    mu, ptc.covariances[amp], ptc.covariancesSqrtWeights[amp], mask, r,
                    no_b=config.ptcFitType == "FULLCOVARIANCE_NO_B",
                    sigma_cut=config.sigmaClipFullFitCovariancesAstier,
                    n_sigma_iter=config.maxIterFullFitCovariancesAstier)
            except ValueError as err:
                if log:
                    log.warning("amp %s: %s", amp, err)
                _bad_amp(ptc, amp)
                continue
            ptc.gain[amp], ptc.gainErr[amp] = full.gain, full.gain_err
            ptc.noise[amp], ptc.noiseErr[amp] = full.noise, full.noise_err
            for name, val in (("aMatrix", full.a_matrix), ("bMatrix", full.b_matrix),
                              ("noiseMatrix", full.noise_matrix), ("aMatrixErr", full.a_matrix_err),
                              ("bMatrixErr", full.b_matrix_err), ("noiseMatrixErr", full.noise_matrix_err)):
                out = np.full((m, m), np.nan)
                out[:r, :r] = val
                getattr(ptc, name)[amp] = out
            cm = np.full((n, m, m), np.nan)
            cm[:, :r, :r] = full.model
            ptc.covariancesModel[amp] = cm
            model_vars = full.model[:, 0, 0]
            ptc.ptcFitPars[amp], ptc.ptcFitParsError[amp] = exp.params, exp.params_err
        ptc.finalMeans[amp] = np.where(mask, mu, np.nan)
        ptc.finalVars[amp] = np.where(mask, var, np.nan)
        ptc.finalModelVars[amp] = np.where(mask, model_vars, np.nan)
        noise_list = np.asarray(ptc.noiseList[amp], float)
        if log and np.any(np.isfinite(noise_list)) and np.isfinite(ptc.noise[amp]):
            expected = float(np.nanmedian(noise_list)) * ptc.gain[amp]
            if ptc.noise_unconstrained(amp):
                log.warning("amp %s: the read noise is not constrained by the PTC (%.3g +- %.3g e-: no "
                            "point is faint enough); the overscan noise is %.3f e-", amp,
                            ptc.noise[amp], ptc.noiseErr[amp], expected)
            elif expected > 0 and abs(ptc.noise[amp] / expected - 1) > 0.05:
                log.warning("amp %s: fitted noise %.3f e- differs by more than 5%% from the overscan "
                            "noise %.3f e-", amp, ptc.noise[amp], expected)
    return ptc


class PhotonTransferCurveSolveTask(PipelineTask):
    """Fit the photon transfer curve of each amp (cp_pipe ``PhotonTransferCurveSolveTask``).

    Notes
    -----
    Reference-algorithms §3.4; Astier et al. 2019 eq. 16 and 20. Decisions: mean cuts are
    exclusive; ``maxMeanSignal``/``minMeanSignal`` apply on top of the extract's ``expIdMask``.
    """

    ConfigClass = PhotonTransferCurveSolveConfig
    _DefaultName = "cpPtcSolve"

    def run(self, inputCovariances: Sequence[PhotonTransferCurveDataset], camera: Any = None,
            detId: Any = None) -> Struct:
        """Merge the partials and fit.

        Parameters
        ----------
        inputCovariances : sequence of `PhotonTransferCurveDataset`
            Partial PTCs of one detector.
        camera, detId : optional
            Unused (cp_pipe compatibility).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputPtcDataset``: the solved `PhotonTransferCurveDataset`.

        Raises
        ------
        ValueError
            If no partial holds measurements.
        """
        ptc = PhotonTransferCurveDataset.from_partials(inputCovariances)
        solve_ptc(ptc, self.config, self.log)
        ptc.metadata["ptcFitType"] = self.config.ptcFitType
        return Struct(outputPtcDataset=ptc)
