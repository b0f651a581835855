"""The state of one `IsrTask.run`: inputs and intermediate results passed from step to step.

Nothing of a run is kept on the task, so one task instance can process several exposures at
the same time (style guide habit 14).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.image import Box, Exposure

__all__ = ["IsrCalibs", "IsrRunState", "check_inputs"]


@dataclass
class IsrCalibs:
    """Calibrations and auxiliary inputs of one run (the keyword arguments of `IsrTask.run`).

    ``bfKernel`` is a detector kernel or a mapping amp → kernel once resolved; ``fringes``
    the template exposure(s); ``defects`` a `Defects`. See `IsrTask.run` for each field.
    """

    bias: Any = None
    linearizer: Any = None
    crosstalk: Any = None
    crosstalkSources: Any = None
    dark: Any = None
    flat: Any = None
    ptc: Any = None
    bfKernel: Any = None
    bfGains: Any = None
    defects: Any = None
    fringes: Any = None
    opticsTransmission: Any = None
    filterTransmission: Any = None
    sensorTransmission: Any = None
    atmosphereTransmission: Any = None
    strayLightData: Any = None
    illumMaskedImage: Any = None
    deferredChargeCalib: Any = None


@dataclass
class IsrRunState:
    """What the steps of one run hand to each other.

    Attributes
    ----------
    exposure : `pipeline.image.Exposure`
        The exposure being processed (its planes and detector are replaced by assembly).
    owned_raw : `numpy.ndarray` or `None`
        The float32 copy of an integer raw made by this run: its memory may be reused as the
        assembled variance plane.
    variance_replaced : `bool`
        The assembled variance plane holds no values yet; the variance step computes all.
    nan_free : `bool`
        The fused bias/variance/linearity pass saw only finite values.
    dark_flat_done : `bool`
        The dark and flat were applied in that pass.
    nonfinite : `numpy.ndarray` of `int` or `None`
        With ``dark_flat_done``: flat indices of the pixels non-finite before the dark.
    dark_flat : `tuple` or `None`
        Dark and flat planes and scales to apply in the bias/variance/linearity pass
        (`IsrCorrectionSteps._dark_flat_in_pass`), `None` if they run separately.
    thumbnails : `binning.PassThumbnails` or `None`
        QA thumbnails summed in that pass (`IsrCorrectionSteps._plan_thumbnails`).
    overscans : `dict` [`str`, `pipeline.struct.Struct`]
        Overscan results per amp.
    gains, noises : `dict` [`str`, `float`]
        Effective gain (e⁻/ADU) and read noise (e⁻) per amp.
    amp_boxes : `dict` [`str`, `pipeline.image.Box`]
        Each amp's region in the current image (trimmed or raw data box).
    task_metadata : `dict`
        Task metadata items of this run, copied to ``task.metadata`` when the run ends.
    inventory : `tuple` or `None`
        ``(bits, (ys, xs, values))``: the flagged-pixel inventory of the mask for ``bits``
        found while widening the saturation trails, when no later step changes the mask.
    """

    exposure: Exposure
    owned_raw: np.ndarray | None = None
    variance_replaced: bool = False
    nan_free: bool = False
    dark_flat_done: bool = False
    nonfinite: np.ndarray | None = None
    dark_flat: Any = None
    thumbnails: Any = None
    overscans: dict[str, Any] = field(default_factory=dict)
    gains: dict[str, float] = field(default_factory=dict)
    noises: dict[str, float] = field(default_factory=dict)
    amp_boxes: dict[str, Box] = field(default_factory=dict)
    task_metadata: dict[str, Any] = field(default_factory=dict)
    inventory: Any = None


def check_inputs(config: Any, ccd: Exposure, calibs: IsrCalibs, do_linearize: bool) -> None:
    """Check that every calibration the configuration asks for was given.

    Parameters
    ----------
    config : `IsrTaskConfig`
        The switches.
    ccd : `pipeline.image.Exposure`
        The raw (its detector and physical filter decide some needs).
    calibs : `IsrCalibs`
        The inputs of the run.
    do_linearize : `bool`
        Linearity will be corrected (`IsrTask.doLinearize`).

    Raises
    ------
    RuntimeError
        Naming the first missing input and the switch that needs it.
    """
    c = config
    filt = ccd.info.physical_filter
    k = calibs
    need = [
        (c.doBias, k.bias, "bias", "doBias"),
        (c.doDark, k.dark, "dark", "doDark"),
        (c.doFlat, k.flat, "flat", "doFlat"),
        (c.doDefect, k.defects, "defects", "doDefect"),
        (c.doBrighterFatter, k.bfKernel, "bfKernel (brighter-fatter kernel)", "doBrighterFatter"),
        (c.usePtcGains or c.usePtcReadNoise, k.ptc, "ptc (photon transfer curve)",
         "usePtcGains/usePtcReadNoise"),
        (c.doStrayLight, k.strayLightData, "strayLightData", "doStrayLight"),
        (c.doDeferredCharge, k.deferredChargeCalib, "deferredChargeCalib", "doDeferredCharge"),
    ]  # fmt: skip
    if do_linearize and ccd.detector[0].linearity_type == "LookupTable":
        need.append((True, k.linearizer, "linearizer (lookup table)", "doLinearize"))
    if c.doCrosstalk and not c.crosstalk.useConfigCoefficients and ccd.detector.crosstalk is None:
        need.append((True, k.crosstalk, "crosstalk", "doCrosstalk"))
    if c.doFringe and filt in c.fringe.filters:
        need.append((True, k.fringes, "fringes", "doFringe"))
    if c.doIlluminationCorrection and filt in c.illumFilters:
        need.append((True, k.illumMaskedImage, "illumMaskedImage", "doIlluminationCorrection"))
    for on, value, what, switch in need:
        if on and value is None:
            raise RuntimeError(
                f"IsrTask: {switch} is True but no {what} calibration was provided or "
                f"found; certify one in an input CALIBRATION collection (butler "
                f"certify-calibrations) / pass it to run(), or set {switch}=False"
            )
