"""`LinearitySolveTask`: the ``linearizer`` calibration of a detector from its PTC; `LinearityPlotTask`.

cp_pipe ``cpLinearitySolve.py`` names and defaults (``linearityType`` Squared, ``polynomialOrder`` 3,
``splineKnots`` 10, ``minLinearAdu`` 30, ``maxLinearAdu`` 20000, ``nSigmaClipLinear`` 5,
``maxLookupTableAdu`` 2**18, ``usePhotodiode``). One quantum per detector: the ``dummy`` raws (the
flats of the PTC, deferred, never read) give the time at which the certified ``ptc`` is looked up.
The math is `pipeline.tasks.cp.linearity_math`; the output is the ip_isr `Linearizer` (ADU) that
IsrTask's ``doLinearize`` applies.
"""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

import pipeline.connection_types as cT
from pipeline.config import Field
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask
from pipeline.tasks.isr.calibs import Linearizer

from .linearity_math import fit_linearity, linearity_residuals
from .ptc_dataset import PhotonTransferCurveDataset
from .ptc_plots import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "LinearityPlotConfig",
    "LinearityPlotTask",
    "LinearitySolveConfig",
    "LinearitySolveTask",
    "plot_linearity",
    "solve_linearity",
]


class LinearitySolveConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """The PTC of a detector in (found by the time of the dummy raws), its linearizer out."""

    dummy = cT.Input(name="raw", storageClass="Exposure", multiple=True, deferLoad=True,
                     doc="Exposures that select the PTC by time (not read).",
                     dimensions=("instrument", "exposure", "detector"))
    inputPtc = cT.PrerequisiteInput(name="ptc", storageClass="PhotonTransferCurveDataset",
                                    isCalibration=True, doc="Photon transfer curve (means vs time).",
                                    dimensions=("instrument", "detector"))
    outputLinearizer = cT.Output(name="linearity", storageClass="IsrCalib", isCalibration=True,
                                 doc="Linearizer (ip_isr layout, ADU).",
                                 dimensions=("instrument", "detector"))


class LinearitySolveConfig(PipelineTaskConfig, pipelineConnections=LinearitySolveConnections):
    """Configuration of `LinearitySolveTask` (cp_pipe names and defaults)."""

    linearityType: Literal["LookupTable", "Polynomial", "Squared", "Spline", "None"] = Field(
        "Squared", description="Type of linearizer to construct.")
    polynomialOrder: int = Field(3, ge=2,
                                 description="Degree of the polynomial fit (Polynomial, LookupTable).")
    splineKnots: int = Field(10, ge=2, description="Number of spline nodes (Spline).")
    maxLookupTableAdu: int = Field(2**18, ge=2, description="Length of a LookupTable row (ADU).")
    maxLinearAdu: float = Field(20000.0,
                                description="Maximum mean (ADU, exclusive) used for the linear term.")
    minLinearAdu: float = Field(30.0, description="Minimum mean (ADU, exclusive) used at all.")
    nSigmaClipLinear: float = Field(
        5.0, gt=0,
        description="Reject points farther than this many sqrt(mean) from the polynomial fit.")
    usePhotodiode: bool = Field(False, description="Use the PTC photodiode charges instead of the "
                                                    "exposure times as the flux proxy.")


def _one(obj: Any) -> Any:
    return obj[0] if isinstance(obj, list | tuple) else obj


def solve_linearity(ptc: PhotonTransferCurveDataset, config: LinearitySolveConfig,
                    detector: Any = None, log: Any = None) -> Linearizer:
    """Fit every amp of a PTC.

    Parameters
    ----------
    ptc : `PhotonTransferCurveDataset`
        Solved PTC (``rawExpTimes``, ``rawMeans``, ``expIdMask``; ``photoCharges`` with
        ``usePhotodiode``).
    config : `LinearitySolveConfig`
    detector : `~pipeline.image.Detector`, optional
        For the metadata (name, id).
    log : `logging.Logger`, optional

    Returns
    -------
    linearizer : `Linearizer`
        Per-amp type and coefficients; bad amps get ``"None"``. The metadata holds per-amp fit
        parameters (``FIT_PARAMS``, JSON) and the maximum fractional residual ``MAX_RESIDUAL``.
    """
    c = config
    types: dict[str, str] = {}
    coeffs: dict[str, np.ndarray] = {}
    rows = []
    fit_params: dict[str, Any] = {}
    for amp in ptc.ampNames:
        proxy = ptc.photoCharges[amp] if c.usePhotodiode else ptc.rawExpTimes[amp]
        if amp in ptc.badAmps or np.asarray(ptc.rawMeans[amp]).size == 0:
            types[amp], coeffs[amp] = "None", np.zeros(1)
            if log:
                log.warning("amp %s has no usable PTC points; linearity type None", amp)
            continue
        try:
            fit = fit_linearity(
                proxy, ptc.rawMeans[amp], ptc.expIdMask[amp], linearity_type=c.linearityType,
                polynomial_order=c.polynomialOrder, spline_knots=c.splineKnots,
                min_linear_adu=c.minLinearAdu, max_linear_adu=c.maxLinearAdu,
                n_sigma_clip_linear=c.nSigmaClipLinear, max_lookup_table_adu=c.maxLookupTableAdu,
                table_row_index=len(rows))
        except ValueError as err:
            types[amp], coeffs[amp] = "None", np.zeros(1)
            if log:
                log.warning("amp %s: %s; linearity type None", amp, err)
            continue
        types[amp], coeffs[amp] = c.linearityType, fit.coeffs
        if fit.table_row is not None:
            rows.append(fit.table_row)
        fit_params[amp] = {"poly": fit.poly.tolist(), "linear": fit.linear.tolist(),
                           "nPoints": int(fit.mask.sum()),
                           "maxResidual": float(np.nanmax(np.abs(fit.residuals)))
                           if np.any(np.isfinite(fit.residuals)) else float("nan")}
        if log:
            log.info("amp %s: %s %s, max |residual| %.2e over %d points", amp, c.linearityType,
                     np.array2string(fit.coeffs[:4], precision=4), fit_params[amp]["maxResidual"],
                     fit_params[amp]["nPoints"])
    md = {"LINEARITY_TYPE": c.linearityType, "FIT_PARAMS": json.dumps(fit_params),
          "CALIBDATE": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "LSST ISR UNITS": "adu"}
    table = np.stack(rows) if rows else None
    return Linearizer(types, coeffs, table, metadata=md,
                      detector_name=None if detector is None else detector.name,
                      detector_id=None if detector is None else detector.id)


class LinearitySolveTask(PipelineTask):
    """Fit the linearity of each amplifier from the PTC (cp_pipe ``LinearitySolveTask``).

    Notes
    -----
    Deliberate difference (README quirks table): the linear range only fixes the linear flux
    proxy; outliers are clipped on the polynomial residuals and the polynomial uses every PTC
    point above ``minLinearAdu`` (cp_pipe clips on the linear residuals and fits only below
    ``maxLinearAdu``, which removes the non-linearity it measures).
    """

    ConfigClass = LinearitySolveConfig
    _DefaultName = "cpLinearitySolve"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Read the PTC (the dummy raws only select it), fit, write."""
        ptc = _one(butlerQC.get(inputRefs.inputPtc))
        det = None
        try:
            from pipeline.instruments import get_instrument

            det_id = int(outputRefs.outputLinearizer.data_id["detector"])
            det = get_instrument(str(outputRefs.outputLinearizer.data_id["instrument"])).camera[det_id]
        except Exception:  # noqa: BLE001 - a camera YAML not registered by name: metadata only
            det = None
        butlerQC.put(self.run(inputPtc=ptc, detector=det), outputRefs)

    def run(self, inputPtc: PhotonTransferCurveDataset, dummy: Any = None, camera: Any = None,
            detector: Any = None) -> Struct:
        """Fit (see `solve_linearity`).

        Parameters
        ----------
        inputPtc : `PhotonTransferCurveDataset`
        dummy, camera : optional
            Unused (cp_pipe signature).
        detector : `~pipeline.image.Detector`, optional

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputLinearizer``: `Linearizer`.
        """
        lin = solve_linearity(inputPtc, self.config, detector, self.log)
        return Struct(outputLinearizer=lin)


def plot_linearity(ptc: PhotonTransferCurveDataset, linearizer: Linearizer, title: str = "") -> Figure:
    """Linearity residuals per amp: before (raw means) and after the linearizer, against signal.

    Parameters
    ----------
    ptc : `PhotonTransferCurveDataset`
        The PTC the linearizer was fitted to.
    linearizer : `Linearizer`
    title : `str`

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        One panel per amp: fractional residual (%) from a straight line in exposure time of the
        raw means (open circles) and of the linearized means (filled), against the mean (ADU).
    """
    amps = list(ptc.ampNames)
    ncol = int(np.ceil(np.sqrt(max(len(amps), 1))))
    nrow = int(np.ceil(len(amps) / ncol))
    fig = new_figure(figsize=(4.2 * ncol, 3.4 * nrow), layout="constrained")
    for k, amp in enumerate(amps):
        ax = fig.add_subplot(nrow, ncol, k + 1)
        t = np.asarray(ptc.rawExpTimes[amp], float)
        m = np.asarray(ptc.rawMeans[amp], float)
        use = np.asarray(ptc.expIdMask[amp], bool) & np.isfinite(m) & (m > 0)
        if use.sum() >= 2:
            before, _ = linearity_residuals(t, m, use, "None", ())
            after, corr = linearity_residuals(t, m, use, linearizer.linearity_type.get(amp, "None"),
                                              linearizer.linearity_coeffs.get(amp, ()), linearizer.table)
            ax.plot(m[use], 100 * before[use], "o", mfc="none", color="0.5", label="raw")
            ax.plot(corr[use], 100 * after[use], "o", color="C0", label="linearized")
            ax.axhline(0, color="k", lw=0.6)
            ax.set_xscale("log")
            ax.legend(fontsize=7, loc="best")
        ax.set_title(f"{amp}: {linearizer.linearity_type.get(amp, 'None')}", fontsize=9)
        ax.set_xlabel("mean signal (ADU)")
        ax.set_ylabel("residual from linear (%)")
    if title:
        fig.suptitle(title)
    return fig


class LinearityPlotConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """The PTC and linearizer in, the residual plot out."""

    dummy = cT.Input(name="raw", storageClass="Exposure", multiple=True, deferLoad=True,
                     doc="Exposures that select the calibrations by time (not read).",
                     dimensions=("instrument", "exposure", "detector"))
    inputPtc = cT.PrerequisiteInput(name="ptc", storageClass="PhotonTransferCurveDataset",
                                    isCalibration=True, doc="Photon transfer curve.",
                                    dimensions=("instrument", "detector"))
    inputLinearizer = cT.Input(name="linearity", storageClass="IsrCalib", doc="Linearizer to show.",
                               isCalibration=True, dimensions=("instrument", "detector"))
    linearityPlot = cT.Output(name="linearityResidualPlot", storageClass="Plot",
                              doc="Residual from linear vs signal per amp.",
                              dimensions=("instrument", "detector"))


class LinearityPlotConfig(PipelineTaskConfig, pipelineConnections=LinearityPlotConnections):
    """Configuration of `LinearityPlotTask` (no options)."""


class LinearityPlotTask(PipelineTask):
    """Draw the linearity residuals of a detector (one PNG ``Plot``)."""

    ConfigClass = LinearityPlotConfig
    _DefaultName = "cpLinearityPlot"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Read the PTC and linearizer, draw, write."""
        ptc = _one(butlerQC.get(inputRefs.inputPtc))
        lin = _one(butlerQC.get(inputRefs.inputLinearizer))
        title = f"{outputRefs.linearityPlot.data_id['instrument']} detector " \
                f"{outputRefs.linearityPlot.data_id['detector']}: linearity"
        butlerQC.put(Struct(linearityPlot=plot_linearity(ptc, lin, title)), outputRefs)

    def run(self, inputPtc: PhotonTransferCurveDataset, inputLinearizer: Linearizer,
            dummy: Any = None) -> Struct:
        """Draw (see `plot_linearity`).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``linearityPlot``: the Figure.
        """
        return Struct(linearityPlot=plot_linearity(inputPtc, inputLinearizer))
