"""PTC plots (matplotlib, Agg): what people look at.

Pure functions returning Figures, and `PhotonTransferCurvePlotTask` writing them as ``Plot``
datasets (PNG).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

import pipeline.connection_types as cT
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask

from .ptc_dataset import PhotonTransferCurveDataset

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PhotonTransferCurvePlotConfig", "PhotonTransferCurvePlotTask", "plot_covariances",
           "plot_pair_gains", "plot_ptc"]


def new_figure(**kwargs: Any) -> Figure:
    """Return a new `matplotlib.figure.Figure` with the Agg backend selected.

    matplotlib is imported here, by the first plot, not with the task classes: building a
    quantum graph imports every task module and draws nothing.

    Parameters
    ----------
    **kwargs
        `matplotlib.figure.Figure` arguments (``figsize``, ``layout`` ...).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _grid(n: int) -> tuple[int, int]:
    ncol = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / ncol)), ncol


def _place_axes(fig: Figure, nr: int, nc: int, *, left: float, right: float, bottom: float,
                top: float, wgap: float, hgap: float) -> None:
    """Fix the subplot grid's margins and gaps in inches (instead of ``tight_layout``).

    ``tight_layout`` measures every tick label and title by drawing the figure once more
    before it is saved (about half the time of a PTC plot); these margins are what it
    finds for these figures: y label and tick labels on the left, the suptitle and the panel
    title at the top, the x label below, the panel's own labels between panels.
    """
    w, h = fig.get_size_inches()
    axw = (w - left - right - (nc - 1) * wgap) / nc
    axh = (h - top - bottom - (nr - 1) * hgap) / nr
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=wgap / axw, hspace=hgap / axh)


def _fit_summary(ptc: PhotonTransferCurveDataset, amp: str) -> str:
    """Summarise an amp's fit as ``"A: g=1.200±0.004 e-/ADU, noise=3.50±0.20 e-"``.

    Errors are shown when finite and positive; an undefined error (NaN: a fit with no degree of
    freedom) is shown as "±n/a".

    A noise the fit leaves unconstrained (`PhotonTransferCurveDataset.noise_unconstrained`), or
    exactly 0 (the fit's lower bound) without an error, means no point was faint enough to
    constrain it (e.g. a PTC from bright spectral flats only): the title then says so instead
    of a misleading "0.00 e-".
    """
    g, ge = float(ptc.gain[amp]), float(ptc.gainErr.get(amp, np.nan))
    n, ne = float(ptc.noise[amp]), float(ptc.noiseErr.get(amp, np.nan))
    gs = f"g={g:.3f}" + _err_text(ge, 3) + " e-/ADU"
    if ptc.noise_unconstrained(amp) or (n == 0.0 and not np.isfinite(ne)):
        ns = "noise unconstrained"
    else:
        ns = f"noise={n:.2f}" + _err_text(ne, 2) + " e-"
    return f"{amp}: {gs}, {ns}"


def _err_text(err: float, digits: int) -> str:
    """``"±0.004"`` for a finite positive error, ``"±n/a"`` for NaN (undefined), else ``""``."""
    if np.isnan(err):
        return "±n/a"
    return f"±{err:.{digits}f}" if np.isfinite(err) and err > 0 else ""


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
    fig = new_figure(figsize=(4 * nc, 4.4 * nr))
    # room for the y labels however few panels there are (a one-amp figure is 4 inches wide)
    outer = fig.add_gridspec(nr, nc, hspace=0.4, wspace=0.4, left=0.8 / (4 * nc) + 0.02, right=0.97)
    for k, amp in enumerate(amps):
        r, c = divmod(k, nc)
        inner = outer[r, c].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.08)
        ax = fig.add_subplot(inner[0])
        axr = fig.add_subplot(inner[1], sharex=ax)
        ax.tick_params(axis="x", which="both", labelbottom=False)
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
        ax.set_title(_fit_summary(ptc, amp), fontsize=9)
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
    fig = new_figure(figsize=(4 * nc, 3.2 * nr))
    for k, amp in enumerate(amps):
        ax = fig.add_subplot(nr, nc, k + 1)
        cov = np.asarray(ptc.covariances[amp])
        mu = np.asarray(ptc.rawMeans[amp])
        if cov.ndim != 3 or cov.shape[1] < 2:
            continue
        used = np.asarray(ptc.expIdMask[amp], bool)
        model = np.asarray(ptc.covariancesModel[amp])
        # many points per pair (GRID boxes): each is noisy, so also show binned medians
        n_pairs = len({tuple(p) for p in np.asarray(ptc.inputExpIdPairs[amp]).reshape(mu.size, -1)})
        many = mu.size > 2 * max(n_pairs, 1)
        for (i, j), col, name in (((0, 1), "C0", "C01 (dy=1)"), ((1, 0), "C1", "C10 (dx=1)")):
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = cov[:, i, j] / mu
                ax.plot(mu[used], ratio[used], ".", ms=2 if many else 3, color=col,
                        alpha=0.5 if many else 1.0, label=name)
                if many:
                    xm, ym = _binned_median(mu[used], ratio[used], log=False)
                    if xm.size:
                        ax.plot(xm, ym, "o-", ms=3, color=col, lw=1.2, label=f"{name[:3]} binned median")
                if model.ndim == 3 and np.isfinite(model[:, i, j]).any():
                    o = np.argsort(mu)
                    ax.plot(mu[o], model[o, i, j] / mu[o], "-", color=col, lw=0.8)
        ax.axhline(0.0, color="0.5", lw=0.6)
        ax.set_title(amp, fontsize=9)
        ax.set_xlabel("mean (ADU)")
        ax.set_ylabel("Cov / mean (ADU)")
        ax.legend(fontsize=7)
    fig.suptitle(title or "Nearest-neighbour covariances")
    _place_axes(fig, nr, nc, left=0.88, right=0.3, bottom=0.59, top=0.65, wgap=0.88, hgap=0.95)
    return fig


def _binned_median(x: np.ndarray, y: np.ndarray, nbins: int = 12,
                   log: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Median of ``y`` in ``nbins`` log- (or linearly) spaced bins of ``x > 0``.

    Bins with fewer than 3 points are dropped; returns (bin centres, medians).
    """
    ok = (x > 0) & np.isfinite(y) & np.isfinite(x)
    if ok.sum() < 6:
        return np.zeros(0), np.zeros(0)
    lo, hi = x[ok].min(), x[ok].max() * (1 + 1e-9)
    edges = np.geomspace(lo, hi, nbins + 1) if log else np.linspace(lo, hi, nbins + 1)
    idx = np.digitize(x[ok], edges) - 1
    xs, ys = [], []
    for b in range(nbins):
        sel = idx == b
        if sel.sum() >= 3:
            xs.append(np.sqrt(edges[b] * edges[b + 1]) if log else 0.5 * (edges[b] + edges[b + 1]))
            ys.append(np.median(y[ok][sel]))
    return np.array(xs), np.array(ys)


def plot_pair_gains(ptc: PhotonTransferCurveDataset, title: str = "") -> Figure:
    """Per-pair gain vs mean signal, one panel per amp, coloured by flat pair.

    Parameters
    ----------
    ptc : `PhotonTransferCurveDataset`
        A solved PTC (``gainList`` and ``rawMeans`` per point: one point per pair and amp, or
        one per grid box with ``detectorMeasurementRegion: GRID``).
    title : `str`
        Figure title.

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        Per amp: the per-pair gains (e⁻/ADU) against the mean signal of their region (ADU,
        log axis), one colour per pair (up to 10, then cycling), rejected points as grey
        crosses, the running median in log-spaced bins of mean when there are several
        points per pair (GRID), and the PTC-fit gain as a horizontal line. The y range is
        set from the 2nd-98th percentiles of the used points so a few wild boxes do not
        flatten the plot.

    Notes
    -----
    Per-pair gains are flux-normalised in extraction (``doGainFluxNormalization``), so a
    lamp drift between the two exposures does not make them fall with the signal.
    """
    amps = ptc.ampNames
    nr, nc = _grid(max(len(amps), 1))
    fig = new_figure(figsize=(4 * nc, 3.3 * nr))
    for k, amp in enumerate(amps):
        ax = fig.add_subplot(nr, nc, k + 1)
        mu = np.asarray(ptc.rawMeans[amp], float)
        g = np.asarray(ptc.gainList[amp], float)
        used = np.asarray(ptc.expIdMask[amp], bool)
        if used.size != mu.size:
            used = np.ones(mu.size, bool)
        pairs = np.asarray(ptc.inputExpIdPairs[amp]).reshape(mu.size, -1)
        ok = np.isfinite(mu) & np.isfinite(g) & (mu > 0)
        keys = [tuple(p) for p in pairs]
        uniq = list(dict.fromkeys(keys))
        per_pair = len(uniq) > 0 and mu.size > len(uniq)
        if per_pair:
            for n, key in enumerate(uniq):
                sel = ok & used & np.array([kk == key for kk in keys])
                label = f"pair {key[0]}-{key[-1]}" if n < 8 else None
                ax.semilogx(mu[sel], g[sel], ".", ms=3, color=f"C{n % 10}", label=label)
        else:
            ax.semilogx(mu[ok & used], g[ok & used], "o", ms=3, color="C0", label="flat pairs")
        rej = ok & ~used
        if rej.any():
            ax.semilogx(mu[rej], g[rej], "x", ms=3, color="0.6", label="rejected")
        if per_pair:
            xm, ym = _binned_median(mu[ok & used], g[ok & used])
            if xm.size:
                ax.semilogx(xm, ym, "-", color="k", lw=1.2, label="binned median")
        fit_gain = float(ptc.gain[amp])
        if np.isfinite(fit_gain):
            ax.axhline(fit_gain, color="C3", lw=1.0, ls="--", label=f"PTC fit {fit_gain:.3f}")
        good = g[ok & used]
        if good.size >= 3:
            lo, hi = np.percentile(good, [2, 98])
            if np.isfinite(fit_gain):
                lo, hi = min(lo, fit_gain), max(hi, fit_gain)
            pad = 0.15 * (hi - lo) + 1e-3 * abs(hi)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(amp, fontsize=9)
        ax.set_xlabel("mean signal of the region (ADU)", fontsize=8)
        ax.set_ylabel("gain per pair (e-/ADU)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(title or "Per-pair gain (dashed: PTC fit)")
    _place_axes(fig, nr, nc, left=0.69, right=0.28, bottom=0.56, top=0.65, wgap=0.76, hgap=0.9)
    return fig


class PhotonTransferCurvePlotConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Input and outputs of `PhotonTransferCurvePlotTask`: the solved PTC of one detector, its figures."""

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
