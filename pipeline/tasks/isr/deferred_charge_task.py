"""`DeferredChargeTask`: serial CTI correction subtask of `IsrTask` (glue over `deferred_charge`)."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.config import Config, Field
from pipeline.image import Exposure
from pipeline.task import Task

from .deferred_charge import DeferredChargeCalib, correct_serial_cti, readout_slices

__all__ = ["DeferredChargeConfig", "DeferredChargeTask"]


class DeferredChargeConfig(Config):
    """Configuration of `DeferredChargeTask` (LSST ``DeferredChargeConfig`` names and defaults)."""

    nPixelOffsetCorrection: int = Field(
        15, description="Number of prior pixels used for the local offset correction."
    )
    nPixelTrapCorrection: int = Field(6, description="Number of prior pixels used for the trap correction.")
    useGains: bool = Field(False, description="Scale the image by the gain (ADU → e⁻) while correcting.")
    zeroUnusedPixels: bool = Field(
        False, description="Set the serial prescan and parallel overscan to zero before the correction."
    )


class DeferredChargeTask(Task):
    """Remove serial deferred charge amplifier by amplifier, in readout order.

    See `pipeline.tasks.isr.deferred_charge` for the model (Snyder et al. 2021) and the
    correction (LSST ``DeferredChargeTask``: estimate from the observed image, subtract).
    """

    ConfigClass = DeferredChargeConfig
    _DefaultName = "deferredChargeCorrection"

    def run(
        self, exposure: Exposure, ctiCalib: DeferredChargeCalib, gains: Mapping[str, float] | None = None
    ) -> Exposure:
        """Correct the raw (untrimmed, overscan-subtracted) exposure in place.

        Parameters
        ----------
        exposure : `pipeline.image.Exposure`
            Raw exposure ``(ny, nx)`` in ADU with its detector; each amp's ``raw_bbox`` is
            corrected (data, serial prescan/overscan and parallel overscan rows).
        ctiCalib : `DeferredChargeCalib`
            Per-amp parameters; amps without parameters are left unchanged.
        gains : mapping of amp name to `float`, optional
            Gains (e⁻/ADU) used when ``useGains`` (default: the amplifiers' gains).

        Returns
        -------
        exposure : `pipeline.image.Exposure`
            The same exposure.

        Raises
        ------
        TypeError
            If ``ctiCalib`` is not a `DeferredChargeCalib`.
        """
        if not isinstance(ctiCalib, DeferredChargeCalib):
            raise TypeError(
                f"deferredChargeCalib must be a DeferredChargeCalib (dataset cpCtiCalib), "
                f"got {type(ctiCalib).__name__}"
            )
        c = self.config
        if ctiCalib.units == "electron" and not c.useGains:
            self.log.warning(
                "the CTI calibration is in electrons but useGains=False: the image (ADU) is "
                "corrected with electron trap sizes; set deferredChargeCorrection.useGains=True"
            )
        image = exposure.masked_image.image
        known = set(ctiCalib.ampNames)
        for amp in exposure.detector:
            if amp.name not in known:
                continue
            if c.zeroUnusedPixels:
                for box in (amp.raw_serial_prescan_bbox, amp.raw_parallel_overscan_bbox):
                    if not box.is_empty:
                        image[box.slices] = 0.0
            ys, xs, from_right = readout_slices(amp)
            seg = image[ys, xs]
            data = seg[:, ::-1] if from_right else seg
            g = float((gains or {}).get(amp.name, amp.gain)) if c.useGains else 1.0
            params = ctiCalib.parameters(amp.name)
            # Rows are independent (serial transfers): blocks of rows keep the work arrays in
            # the cache; the result is identical to one call on the whole amp.
            step = max(1, (1 << 16) // max(data.shape[1], 1))
            for y0 in range(0, data.shape[0], step):
                rows = data[y0 : y0 + step]
                corrected = correct_serial_cti(
                    rows * g if g != 1.0 else rows,
                    n_offset=c.nPixelOffsetCorrection,
                    n_trap=c.nPixelTrapCorrection,
                    **params,
                )
                if g != 1.0:
                    corrected /= g
                rows[...] = corrected.astype(image.dtype, copy=False)
        self.metadata["DEFERRED_CHARGE_AMPS"] = sorted(known & {a.name for a in exposure.detector})
        return exposure
