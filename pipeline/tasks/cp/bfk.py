"""`BrighterFatterKernelSolveTask`: the ``bfk`` calibration of a detector from a FULLCOVARIANCE PTC.

cp_pipe ``cpBfk.py`` names and defaults (``level`` AMP, ``ignoreAmpsForAveraging`` [],
``xcorrCheckRejectLevel`` 2, ``nSigmaClip`` 5, ``forceZeroSum`` True, ``useAmatrix`` False,
``correlationQuadraticFit`` False, ``correlationModelRadius`` 100, ``correlationModelSlope``
-1.35). The math is `pipeline.tasks.cp.bfk_math`; the output is the ip_isr-like
`BrighterFatterKernel` (kernels in ``[y, x]``, applied to images in e⁻ by IsrTask's
``doBrighterFatter``; AMP level keeps one kernel per amp, DETECTOR level adds the detector kernel
from the correlations of every amp not in ``ignoreAmpsForAveraging``).
"""

from __future__ import annotations

import datetime
from typing import Any, ClassVar, Literal

import numpy as np

import pipeline.connection_types as cT
from pipeline.config import Field
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask
from pipeline.tasks.isr.calibs import BrighterFatterKernel

from .bfk_math import (
    average_correlations,
    flux_scaled_correlations,
    force_zero_sum,
    quadratic_correlations,
    successive_over_relax,
    tile_quadrant,
)
from .ptc_dataset import PhotonTransferCurveDataset

__all__ = ["BrighterFatterKernelSolveConfig", "BrighterFatterKernelSolveTask", "solve_bfk"]


class BrighterFatterKernelSolveConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """The PTC of a detector in (found by the time of the dummy raws), its kernel out."""

    dummy = cT.Input(name="raw", storageClass="Exposure", multiple=True, deferLoad=True,
                     doc="Exposures that select the PTC by time (not read).",
                     dimensions=("instrument", "exposure", "detector"))
    inputPtc = cT.PrerequisiteInput(name="ptc", storageClass="PhotonTransferCurveDataset",
                                    isCalibration=True, doc="FULLCOVARIANCE photon transfer curve.",
                                    dimensions=("instrument", "detector"))
    outputBFK = cT.Output(name="brighterFatterKernel", storageClass="IsrCalib", isCalibration=True,
                          doc="Brighter-fatter kernel(s).", dimensions=("instrument", "detector"))


class BrighterFatterKernelSolveConfig(PipelineTaskConfig,
                                      pipelineConnections=BrighterFatterKernelSolveConnections):
    """Configuration of `BrighterFatterKernelSolveTask` (cp_pipe names and defaults)."""

    noOpFields: ClassVar[dict[str, str]] = {
        "maxIterSuccessiveOverRelaxation": "the kernel's Poisson equation is solved directly (the "
                                           "converged limit of cp_pipe's SOR iteration)",
        "eLevelSuccessiveOverRelaxation": "the kernel's Poisson equation is solved directly (the "
                                          "converged limit of cp_pipe's SOR iteration)",
    }

    level: Literal["AMP", "DETECTOR"] = Field(
        "AMP", description="AMP: one kernel per amplifier; DETECTOR: also one kernel per detector.")
    ignoreAmpsForAveraging: list[str] = Field(
        default_factory=list, description="Amps left out of the detector kernel (level DETECTOR).")
    xcorrCheckRejectLevel: float = Field(
        2.0, description="Drop a pair whose |sum| / sum|.| of the scaled correlations exceeds this.")
    nSigmaClip: float = Field(5.0, gt=0, description="Sigma clip of the per-element mean over pairs.")
    forceZeroSum: bool = Field(True, description="Move the pre-kernel's sum into its centre.")
    useAmatrix: bool = Field(False, description="Use the PTC's a matrix (Astier+19 eq. 20) as the "
                                                 "correlations instead of the measured covariances.")
    correlationQuadraticFit: bool = Field(
        False, description="Slope of the correlations against mean^2 instead of the flux-scaled mean.")
    correlationModelRadius: int = Field(
        100, description="With forceZeroSum, model the correlations beyond this radius (pixels).")
    correlationModelSlope: float = Field(-1.35, description="Power-law slope of that model.")
    maxIterSuccessiveOverRelaxation: int = Field(
        10000, ge=1, description="SOR iterations (cp_pipe); no effect here: the system is solved directly.")
    eLevelSuccessiveOverRelaxation: float = Field(
        5.0e-14, gt=0, description="SOR target residual (cp_pipe); no effect here: the system is solved "
                                   "directly.")


def _pre_kernel(ptc: PhotonTransferCurveDataset, amp: str, config: BrighterFatterKernelSolveConfig,
                log: Any = None) -> tuple[np.ndarray | None, list[np.ndarray], list[np.ndarray], np.ndarray]:
    gain = float(ptc.gain[amp])
    if not np.isfinite(gain) or gain <= 0 or amp in ptc.badAmps:
        if log:
            log.warning("amp %s: unusable PTC gain %r; kernel left at zero", amp, gain)
        return None, [], [], np.zeros(0)
    mask = np.asarray(ptc.expIdMask[amp], bool)
    cov = np.asarray(ptc.covariances[amp], float)[mask]
    mu = np.asarray(ptc.rawMeans[amp], float)[mask]
    scaled, unscaled, fluxes = flux_scaled_correlations(cov, mu, gain, config.xcorrCheckRejectLevel)
    if not scaled:
        if log:
            log.warning("amp %s: every flat pair rejected; kernel left at zero", amp)
        return None, [], [], np.zeros(0)
    if config.useAmatrix:
        a = np.asarray(ptc.aMatrix[amp], float)
        a = np.where(np.isfinite(a), a, 0.0)
        pre = np.pad(tile_quadrant(-a), 1)
    elif config.correlationQuadraticFit:
        pre = quadratic_correlations(unscaled, fluxes)
    else:
        pre = average_correlations(scaled, config.nSigmaClip)
    return pre, scaled, unscaled, fluxes


def _kernel(pre: np.ndarray, config: BrighterFatterKernelSolveConfig) -> np.ndarray:
    if config.forceZeroSum:
        pre, _ = force_zero_sum(pre, config.correlationModelRadius, config.correlationModelSlope)
    k = successive_over_relax(pre, config.maxIterSuccessiveOverRelaxation,
                              config.eLevelSuccessiveOverRelaxation)
    return k.T          # correlations are [dx, dy]; IsrTask wants [y, x]


def solve_bfk(ptc: PhotonTransferCurveDataset, config: BrighterFatterKernelSolveConfig,
              detector: Any = None, log: Any = None) -> BrighterFatterKernel:
    """Kernels of every amp (and the detector) of a PTC.

    Parameters
    ----------
    ptc : `PhotonTransferCurveDataset`
        FULLCOVARIANCE (or FULLCOVARIANCE_NO_B) PTC: covariances, gains, a matrices.
    config : `BrighterFatterKernelSolveConfig`
    detector : `~pipeline.image.Detector`, optional
    log : `logging.Logger`, optional

    Returns
    -------
    bfk : `BrighterFatterKernel`
        ``ampKernels`` (all amps), ``kernel`` (DETECTOR level), ``gains``; metadata ``LEVEL``,
        ``A00_<amp>`` (the measured ``a00``, 1/e⁻: minus the pre-kernel centre before the zero-sum
        adjustment) and ``A00_DETECTOR``.

    Raises
    ------
    ValueError
        If the PTC is not a full-covariance fit, or (DETECTOR) no amp is left to average.

    Notes
    -----
    cp_pipe at DETECTOR level fits ``correlationQuadraticFit`` to the *flux-scaled* correlations
    (≈ constant in μ², so the slope and the kernel are ≈ 0) and skips ``forceZeroSum``; here the
    detector kernel is made exactly as an amp kernel, from the unscaled correlations of the kept
    amps, with ``forceZeroSum`` applied.
    """
    if not str(ptc.ptcFitType).startswith("FULLCOVARIANCE"):
        raise ValueError(f"BrighterFatterKernelSolveTask needs a FULLCOVARIANCE PTC, got ptcFitType "
                         f"{ptc.ptcFitType!r}; run cpPtc with -c ptcSolve:ptcFitType=FULLCOVARIANCE")
    side = 2 * ptc.covMatrixSide + 1
    amp_kernels: dict[str, np.ndarray] = {}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    md: dict[str, Any] = {"LEVEL": config.level, "CALIBDATE": now}
    det_scaled: list[np.ndarray] = []
    det_unscaled: list[np.ndarray] = []
    det_flux: list[float] = []
    det_a: list[np.ndarray] = []
    for amp in ptc.ampNames:
        pre, scaled, unscaled, fluxes = _pre_kernel(ptc, amp, config, log)
        if pre is None:
            amp_kernels[amp] = np.zeros((side, side))
            continue
        c = (pre.shape[0] - 1) // 2
        md[f"A00_{amp}"] = float(-pre[c, c])
        amp_kernels[amp] = _kernel(pre, config)
        if amp not in config.ignoreAmpsForAveraging:
            det_scaled += scaled
            det_unscaled += unscaled
            det_flux += list(fluxes)
            if config.useAmatrix:
                det_a.append(pre)
        if log:
            log.info("amp %s: a00 %.4g /e-, kernel centre %.4g", amp, md[f"A00_{amp}"],
                     amp_kernels[amp][c, c])
    kernel = None
    if config.level == "DETECTOR":
        if not det_scaled:
            raise ValueError("level=DETECTOR: no amp left to average (all bad or in ignoreAmpsForAveraging)")
        if config.useAmatrix:
            pre = np.mean(det_a, axis=0)
        elif config.correlationQuadraticFit:
            pre = quadratic_correlations(det_unscaled, np.asarray(det_flux))
        else:
            pre = average_correlations(det_scaled, config.nSigmaClip)
        c = (pre.shape[0] - 1) // 2
        md["A00_DETECTOR"] = float(-pre[c, c])
        kernel = _kernel(pre, config)
    gains = {a: float(ptc.gain[a]) for a in ptc.ampNames if np.isfinite(ptc.gain[a])}
    return BrighterFatterKernel(kernel, gains, amp_kernels, metadata=md,
                                detector_name=None if detector is None else detector.name,
                                detector_id=None if detector is None else detector.id)


class BrighterFatterKernelSolveTask(PipelineTask):
    """Brighter-fatter kernels from the PTC covariances (cp_pipe ``BrighterFatterKernelSolveTask``)."""

    ConfigClass = BrighterFatterKernelSolveConfig
    _DefaultName = "cpBfkMeasure"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Read the PTC (the dummy raws only select it), solve, write."""
        ptc = butlerQC.get(inputRefs.inputPtc)
        ptc = ptc[0] if isinstance(ptc, list | tuple) else ptc
        butlerQC.put(self.run(inputPtc=ptc), outputRefs)

    def run(self, inputPtc: PhotonTransferCurveDataset, dummy: Any = None, camera: Any = None,
            detector: Any = None) -> Struct:
        """Solve (see `solve_bfk`).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputBFK``: `BrighterFatterKernel`.
        """
        return Struct(outputBFK=solve_bfk(inputPtc, self.config, detector, self.log))
