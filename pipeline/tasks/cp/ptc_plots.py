"""PTC plots (matplotlib, Agg): what people look at. Pure functions returning Figures, and
`PhotonTransferCurvePlotTask` writing them as ``Plot`` datasets (PNG)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import pipeline.connection_types as cT  # noqa: E402
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections  # noqa: E402
from pipeline.struct import Struct  # noqa: E402
from pipeline.task import PipelineTask  # noqa: E402

from .ptc_dataset import PhotonTransferCurveDataset  # noqa: E402

__all__ = ["PhotonTransferCurvePlotConfig", "PhotonTransferCurvePlotTask", "plot_covariances",
           "plot_pair_gains", "plot_ptc"]


def _grid(n: int) -> tuple[int, int]:
    ncol = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / ncol)), ncol


def plot_ptc(ptc: PhotonTransferCurveDataset, title: str = "") -> Figure:
    """Variance vs mean per amp (log-log) with the fit, and fractional residuals below.

    Parameters
    ----------
    ptc : `PhotonTransferCurveDataset`
        A solved PTC.
    title : `str`
        Figure title.

    Returns
    -------
    fig : `matplotlib.figure.Figure`
    """
    amps = ptc.ampNames
    nr, nc = _grid(max(len(amps), 1))
    fig = Figure(figsize=(4 * nc, 4.2 * nr))
    gs = fig.add_gridspec(2 * nr, nc, height_ratios=[3, 1] * nr, hspace=0.35)
    for k, amp in enumerate(amps):
        r, c = divmod(k, nc)
        ax = fig.add_subplot(gs[2 * r, c])
        axr = fig.add_subplot(gs[2 * r + 1, c], sharex=ax)
        mu = np.asarray(ptc.rawMeans[amp])
        var = np.asarray(ptc.rawVars[amp])
        used = np.asarray(ptc.expIdMask[amp], bool)
        model = np.asarray(ptc.finalModelVars[amp])
        if model.size != mu.size:
            model = np.full(mu.size, np.nan)
        ax.loglog(mu[used], var[used], ".", ms=3, label="used")
        if (~used).any():
            ax.loglog(mu[~used], var[~used], "x", ms=3, color="0.6", label="rejected")
        order = np.argsort(mu)
        ok = np.isfinite(model[order])
        ax.loglog(mu[order][ok], model[order][ok], "-", color="C3", label=ptc.ptcFitType)
        ax.set_title(f"{amp}: g={ptc.gain[amp]:.3f} e-/ADU, noise={ptc.noise[amp]:.2f} e-", fontsize=9)
        ax.set_ylabel("variance (ADU²)")
        ax.legend(fontsize=7)
        with np.errstate(invalid="ignore", divide="ignore"):
            axr.semilogx(mu[used], var[used] / model[used] - 1, ".", ms=3)
        axr.axhline(0, color="C3", lw=0.8)
        axr.set_xlabel("mean (ADU)")
        axr.set_ylabel("resid.")
    fig.suptitle(title or "Photon transfer curve")
    return fig


def plot_covariances(ptc: PhotonTransferCurveDataset, title: str = "") -> Figure:
    """C01 and C10 (per-flat covariances, ADU²) divided by the mean vs mean, per amp, with the model."""
    amps = ptc.ampNames
    nr, nc = _grid(max(len(amps), 1))
    fig = Figure(figsize=(4 * nc, 3.2 * nr))
    for k, amp in enumerate(amps):
        ax = fig.add_subplot(nr, nc, k + 1)
        cov = np.asarray(ptc.covariances[amp])
        mu = np.asarray(ptc.rawMeans[amp])
        if cov.ndim != 3 or cov.shape[1] < 2:
            continue
        used = np.asarray(ptc.expIdMask[amp], bool)
        model = np.asarray(ptc.covariancesModel[amp])
        for (i, j), col, name in (((0, 1), "C0", "C01 (dy=1)"), ((1, 0), "C1", "C10 (dx=1)")):
            with np.errstate(invalid="ignore", divide="ignore"):
                ax.plot(mu[used], cov[used, i, j] / mu[used], ".", ms=3, color=col, label=name)
                if model.ndim == 3 and np.isfinite(model[:, i, j]).any():
                    o = np.argsort(mu)
                    ax.plot(mu[o], model[o, i, j] / mu[o], "-", color=col, lw=0.8)
        ax.set_title(amp, fontsize=9)
        ax.set_xlabel("mean (ADU)")
        ax.set_ylabel("Cov / mean (ADU)")
        ax.legend(fontsize=7)
    fig.suptitle(title or "Nearest-neighbour covariances")
    fig.tight_layout()
    return fig


def plot_pair_gains(ptc: PhotonTransferCurveDataset, title: str = "") -> Figure:
    """Per-pair gain vs mean for every amp, with the fitted gain as a line."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for k, amp in enumerate(ptc.ampNames):
        mu = np.asarray(ptc.rawMeans[amp])
        g = np.asarray(ptc.gainList[amp])
        ok = np.isfinite(mu) & np.isfinite(g)
        ax.semilogx(mu[ok], g[ok], ".", ms=3, color=f"C{k % 10}", label=amp)
        if np.isfinite(ptc.gain[amp]):
            ax.axhline(ptc.gain[amp], color=f"C{k % 10}", lw=0.8)
    ax.set_xlabel("mean (ADU)")
    ax.set_ylabel("gain per pair (e-/ADU)")
    ax.legend(fontsize=7, ncol=4)
    ax.set_title(title or "Per-pair gain (lines: PTC fit)")
    return fig


class PhotonTransferCurvePlotConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    inputPtc = cT.Input(name="ptc", storageClass="PhotonTransferCurveDataset", doc="Solved PTC.",
                        isCalibration=True,
                        dimensions=("instrument", "detector"))
    ptcPlot = cT.Output(name="ptcVarMeanPlot", storageClass="Plot", doc="Variance vs mean with fit.",
                        dimensions=("instrument", "detector"))
    covariancePlot = cT.Output(name="ptcCovariancePlot", storageClass="Plot", doc="C01/C10 vs mean.",
                               dimensions=("instrument", "detector"))
    gainPlot = cT.Output(name="ptcGainPlot", storageClass="Plot", doc="Per-pair gain vs mean.",
                         dimensions=("instrument", "detector"))


class PhotonTransferCurvePlotConfig(PipelineTaskConfig,
                                    pipelineConnections=PhotonTransferCurvePlotConnections):
    """Configuration of `PhotonTransferCurvePlotTask` (no options)."""


class PhotonTransferCurvePlotTask(PipelineTask):
    """Draw the PTC of a detector (three PNG ``Plot`` datasets)."""

    ConfigClass = PhotonTransferCurvePlotConfig
    _DefaultName = "cpPtcPlot"

    def run(self, inputPtc: PhotonTransferCurveDataset, detector: Any = None) -> Struct:
        """Make the figures.

        Parameters
        ----------
        inputPtc : `PhotonTransferCurveDataset`
            A solved PTC.

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``ptcPlot``, ``covariancePlot``, ``gainPlot``: `matplotlib.figure.Figure`.
        """
        det = inputPtc.metadata.get("detector", "")
        title = f"detector {det}" if det != "" else ""
        return Struct(ptcPlot=plot_ptc(inputPtc, title), covariancePlot=plot_covariances(inputPtc, title),
                      gainPlot=plot_pair_gains(inputPtc, title))
