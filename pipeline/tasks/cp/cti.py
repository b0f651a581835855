"""cpCti: `CpCtiMeasureTask` (overscan statistics per flat) and `CpCtiSolveTask` (``cpCtiCalib``).

cp_pipe's cpCti pipeline runs IsrTask with ``isrStats.doCtiStatistics`` to write the per-exposure
statistics (``cpCtiStatistics``, a ``{"CTI": {amp: {...}}}`` dictionary) that
``CpCtiSolveTask`` reads. ccdflow's IsrTask has no statistics subtask, so `CpCtiMeasureTask`
computes the same dictionary from IsrTask's untrimmed, overscan-corrected output
(``doAssembleCcd: false``). The solve writes a `DeferredChargeCalib` (dataset ``cpCtiCalib``,
units electron) that IsrTask applies with ``doDeferredCharge`` and
``deferredChargeCorrection.useGains: true``. The math is in `pipeline.tasks.cp.cti_math`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import pipeline.connection_types as cT  # noqa: N812 (contract spelling)
from pipeline.config import Field, model_validator
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask
from pipeline.tasks.isr.deferred_charge import DeferredChargeCalib, SerialTrap

from .cti_math import cti_turnoff, fit_serial_cti, measure_cti_statistics, serial_eper

__all__ = [
    "CpCtiMeasureConfig",
    "CpCtiMeasureConnections",
    "CpCtiMeasureTask",
    "CpCtiSolveConfig",
    "CpCtiSolveConnections",
    "CpCtiSolveTask",
]


class CpCtiMeasureConnections(PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    """One untrimmed ISR-processed flat in, its CTI statistics out."""

    inputExp = cT.Input(
        name="cpCtiIsrExp",
        storageClass="Exposure",
        doc="Untrimmed, overscan-corrected flat (IsrTask with doAssembleCcd=False).",
        dimensions=("instrument", "exposure", "detector"),
    )
    outputStatistics = cT.Output(
        name="cpCtiStatistics",
        storageClass="StructuredDataDict",
        doc="CTI statistics {'CTI': {amp: {IMAGE_MEAN, SERIAL_OVERSCAN_VALUES, ...}}} (e-).",
        dimensions=("instrument", "exposure", "detector"),
    )


class CpCtiMeasureConfig(PipelineTaskConfig, pipelineConnections=CpCtiMeasureConnections):
    """Configuration of `CpCtiMeasureTask`."""

    useIsrGains: bool = Field(
        True,
        description="Convert to electrons with the gains IsrTask used (header 'LSST ISR GAIN <amp>'); "
        "else the camera description's gains.",
    )


class CpCtiMeasureTask(PipelineTask):
    """Serial/parallel overscan statistics of one flat (ip_isr ``IsrStatisticsTask.measureCti``)."""

    ConfigClass = CpCtiMeasureConfig
    _DefaultName = "cpCtiMeasure"

    def run(self, inputExp: Any) -> Struct:
        """Measure every amplifier.

        Parameters
        ----------
        inputExp : `pipeline.image.Exposure`
            Untrimmed exposure (ADU) after overscan correction, with its detector.

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputStatistics``: ``{"CTI": {amp: stats}, "exposure": id, "detector": id}``
            (`pipeline.tasks.cp.cti_math.measure_cti_statistics`).

        Raises
        ------
        ValueError
            If the exposure has no detector or is trimmed (its shape is not the raw shape).
        """
        det = inputExp.detector
        if det is None:
            raise ValueError(f"exposure {inputExp.info.id} has no detector; cannot measure CTI")
        if tuple(inputExp.image.shape) != tuple(det.raw_shape):
            raise ValueError(
                f"CpCtiMeasureTask needs the untrimmed exposure (shape {tuple(det.raw_shape)}), got "
                f"{tuple(inputExp.image.shape)}; run the ISR with doAssembleCcd=False"
            )
        md = inputExp.metadata
        out: dict[str, Any] = {}
        for amp in det:
            gain = float(amp.gain)
            key = f"LSST ISR GAIN {amp.name}"
            if self.config.useIsrGains and md is not None and key in md:
                g = float(md[key])
                gain = g if g > 0 else gain
            out[amp.name] = measure_cti_statistics(np.asarray(inputExp.image), amp, gain)
        return Struct(outputStatistics={"CTI": out, "exposure": inputExp.info.id, "detector": det.id})


class CpCtiSolveConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Every flat's CTI statistics of a detector in, its ``cpCtiCalib`` out."""

    inputMeasurements = cT.Input(
        name="cpCtiStatistics",
        storageClass="StructuredDataDict",
        multiple=True,
        doc="Input overscan measurements to fit.",
        dimensions=("instrument", "exposure", "detector"),
    )
    outputCalib = cT.Output(
        name="cpCtiCalib",
        storageClass="IsrCalib",
        isCalibration=True,
        doc="Output CTI calibration (DeferredChargeCalib, electrons).",
        dimensions=("instrument", "detector"),
    )


class CpCtiSolveConfig(PipelineTaskConfig, pipelineConnections=CpCtiSolveConnections):
    """Configuration of `CpCtiSolveTask` (cp_pipe names and defaults)."""

    maxImageMean: float = Field(150000.0, description="Upper limit on acceptable image flux mean (electron).")
    localOffsetColumnRange: list[int] = Field(
        default_factory=lambda: [3, 13],
        description="First and last overscan column to use for local offset effect (1 = first column).",
    )
    maxSignalForCti: float = Field(
        10000.0,
        description="Upper flux limit (electron) of the EPER estimate used to start the fit (cp_pipe: of "
        "the global CTI fit).",
    )
    serialCtiRange: list[float] = Field(
        default_factory=lambda: [-1.0e-5, 1.0e-5],
        description="Serial CTI range to search for serial turnoff.",
    )
    turnoffFinderSigmaClip: int = Field(
        1, description="n for n*sigma to use for sigma clipping in turnoff finder."
    )
    turnoffFinderSigmaClipMaxIters: int = Field(
        5, description="Maximum iterations for sigma clipping in turnoff finder."
    )
    globalCtiColumnRange: list[int] = Field(
        default_factory=lambda: [1, 15],
        description="First and last serial overscan column to use for serial extended pixel edge response "
        "(EPER) estimate.",
    )
    trapColumnRange: list[int] = Field(
        default_factory=lambda: [1, 2],
        description="First and last overscan column to use for serial trap fit.",
    )
    fitError: float = Field(
        7.0 / np.sqrt(2000),
        gt=0,
        description="Error to use during parameter fitting (electron, per column mean).",
    )
    doFitTrap: bool = Field(
        True, description="Fit one linear serial trap (ccdflow; cp_pipe fits a spline trap)."
    )
    doFitLocalOffset: bool = Field(
        True, description="Fit the local electronic offset (drift scale, decay time)."
    )
    minTrapSize: float = Field(
        0.5, ge=0, description="A fitted trap smaller than this (electron) is dropped."
    )

    @model_validator(mode="after")
    def _check(self) -> CpCtiSolveConfig:
        for name in ("localOffsetColumnRange", "globalCtiColumnRange", "trapColumnRange"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or lo_hi[0] < 1 or lo_hi[1] < lo_hi[0]:
                raise ValueError(f"{name} must be [first, last] with 1 <= first <= last, got {lo_hi}")
        if self.globalCtiColumnRange[1] - self.globalCtiColumnRange[0] < 1:
            raise ValueError("globalCtiColumnRange must span at least two columns (the EPER uses two)")
        if len(self.serialCtiRange) != 2 or self.serialCtiRange[0] >= self.serialCtiRange[1]:
            raise ValueError(f"serialCtiRange must be [low, high] with low < high, got {self.serialCtiRange}")
        return self


class CpCtiSolveTask(PipelineTask):
    """Fit the serial CTI model of every amplifier from the flats' overscans (cp_pipe names).

    Notes
    -----
    Columns used by the fit: the union of ``localOffsetColumnRange``, ``globalCtiColumnRange``
    and ``trapColumnRange`` (1-based, as cp_pipe's), capped at the overscan width.
    """

    ConfigClass = CpCtiSolveConfig
    _DefaultName = "cpCtiSolve"

    def run(self, inputMeasurements: Sequence[Mapping[str, Any]], camera: Any = None) -> Struct:
        """Solve for the CTI parameters.

        Parameters
        ----------
        inputMeasurements : sequence of `dict`
            ``cpCtiStatistics`` of each flat of one detector.
        camera : optional
            Unused (cp_pipe compatibility).

        Returns
        -------
        result : `~pipeline.struct.Struct`
            ``outputCalib``: the `DeferredChargeCalib` (electrons).

        Raises
        ------
        RuntimeError
            No input, inputs of several detectors, or an amp with too few usable flats.
        """
        if not inputMeasurements:
            raise RuntimeError("CpCtiSolveTask: no cpCtiStatistics input; run CpCtiMeasureTask first")
        dets = {m.get("detector") for m in inputMeasurements}
        if len(dets) > 1:
            raise RuntimeError(f"CpCtiSolveTask: inputs of several detectors {sorted(map(str, dets))}")
        c = self.config
        amps = list(inputMeasurements[0]["CTI"])
        drift, decay, cti, traps = {}, {}, {}, {}
        meta: dict[str, Any] = {"OBSTYPE": "CTI", "NEXPOSURES": len(inputMeasurements)}
        g0, g1 = c.globalCtiColumnRange[0] - 1, c.globalCtiColumnRange[1] - 1
        ranges = (c.localOffsetColumnRange, c.globalCtiColumnRange, c.trapColumnRange)
        for amp in amps:
            entries = [m["CTI"][amp] for m in inputMeasurements]
            n_over = min(len(e["SERIAL_OVERSCAN_VALUES"]) for e in entries)
            cols = sorted({k - 1 for lo, hi in ranges for k in range(lo, hi + 1) if k - 1 < n_over})
            if len(cols) < 2 or g1 >= n_over:
                raise RuntimeError(
                    f"amp {amp}: the serial overscan has {n_over} column(s); globalCtiColumnRange "
                    f"{c.globalCtiColumnRange} needs {g1 + 1}"
                )
            sig = np.array([e["IMAGE_MEAN"] for e in entries], float)
            over = np.array([np.asarray(e["SERIAL_OVERSCAN_VALUES"][:n_over], float) for e in entries])
            ok = np.isfinite(sig) & np.all(np.isfinite(over), axis=1) & (sig < c.maxImageMean) & (sig > 0)
            order = np.argsort(sig)
            n_shifts = int(entries[0]["N_SERIAL_SHIFTS"])
            eper = serial_eper(sig[order], over[order], n_shifts, g0)
            turnoff, turnoff_err = cti_turnoff(
                sig[order], eper, c.serialCtiRange, c.turnoffFinderSigmaClip, c.turnoffFinderSigmaClipMaxIters
            )
            meta[f"SERIAL_CTI_TURNOFF_{amp}"] = turnoff
            meta[f"SERIAL_CTI_TURNOFF_ERR_{amp}"] = turnoff_err
            low = order[sig[order] < c.maxSignalForCti]
            meta[f"SERIAL_EPER_{amp}"] = float(np.nanmedian(eper[: len(low)])) if len(low) else float("nan")
            n_data = n_shifts
            n_pre = 0
            # the prescan length only shifts the transfer count: fold it into the imaging part
            if ok.sum() < 2:
                raise RuntimeError(
                    f"amp {amp}: {int(ok.sum())} flat(s) below maxImageMean={c.maxImageMean} e-; need 2+"
                )
            fit = fit_serial_cti(
                sig[ok],
                over[ok][:, cols],
                n_pre,
                n_data,
                cols,
                fit_error=c.fitError,
                fit_trap=c.doFitTrap,
                fit_local_offset=c.doFitLocalOffset,
            )
            cti[amp] = fit.globalCti
            drift[amp] = fit.driftScale
            decay[amp] = fit.decayTime
            traps[amp] = (
                [SerialTrap(fit.trapSize, fit.emissionTime, 0, "linear", [fit.scaling])]
                if c.doFitTrap and fit.trapSize >= c.minTrapSize
                else []
            )
            self.log.info(
                "amp %s: global CTI %.3e, trap %.2f e- (tau %.2f, scaling %.3g), drift %.2e (decay %.2f), "
                "chi2/dof %.2f, EPER turnoff %.0f e-",
                amp,
                fit.globalCti,
                fit.trapSize,
                fit.emissionTime,
                fit.scaling,
                fit.driftScale,
                fit.decayTime,
                fit.chi2,
                turnoff,
            )
            if not fit.success:
                self.log.warning("amp %s: the CTI fit did not converge", amp)
        calib = DeferredChargeCalib(
            driftScale=drift,
            decayTime=decay,
            globalCti=cti,
            serialTraps=traps,
            units="electron",
            metadata=meta,
        )
        return Struct(outputCalib=calib)
