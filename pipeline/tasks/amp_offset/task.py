"""`AmpOffsetTask`: measure (and optionally remove) amplifier pedestal offsets."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.config import Config, Field, model_validator
from pipeline.struct import Struct
from pipeline.task import Task

from . import amp_offset as _ao

__all__ = ["AmpOffsetConfig", "AmpOffsetTask"]

_IGNORED = ["BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "SUSPECT", "NO_DATA"]


class AmpOffsetConfig(Config):
    """Configuration of `AmpOffsetTask` (LSST names and defaults, reference §5)."""

    ampEdgeInset: int = Field(5, description="Pixels skipped next to each amp interface.")
    ampEdgeWidth: int = Field(64, description="Width (pixels) of the strips used along each interface.")
    ampEdgeMinFrac: float = Field(0.5, description="Minimum fraction of good edge values for a valid offset.")
    ampEdgeMaxOffset: float = Field(5.0, description="Largest interface offset (image units) accepted.")
    doWindowSmoothing: bool = Field(True, description="Smooth the edge differences with a running window.")
    ampEdgeWindowFrac: float = Field(
        512 / 4176, description="Smoothing window as a fraction of the edge length (<= 1)."
    )
    doBackground: bool = Field(True, description="Subtract a smooth background before measuring.")
    backgroundFractionSample: float = Field(
        1.0,
        description="Background cell size (for the cell medians "
        "the smooth background is fitted to) as a "
        "fraction of the short amp side.",
    )
    doDetection: bool = Field(True, description="Mask sources (> detectionThreshold sigma) before measuring.")
    detectionThreshold: float = Field(5.0, description="Detection threshold in units of the clipped sigma.")
    detectionSmoothingSigma: float = Field(
        2.0, description="Gaussian smoothing sigma (pixels) applied before thresholding the detection image."
    )
    applyWeights: bool = Field(True, description="Weight interfaces by their length.")
    doApplyAmpOffset: bool = Field(
        False, description="Subtract the pedestals from the image (False: measure only)."
    )
    ignorePlanes: list[str] = Field(
        default_factory=lambda: list(_IGNORED), description="Mask planes whose pixels are ignored."
    )

    @model_validator(mode="after")
    def _check(self) -> "AmpOffsetConfig":
        if self.ampEdgeWindowFrac > 1:
            raise ValueError("ampEdgeWindowFrac must be <= 1")
        return self


class AmpOffsetTask(Task):
    """Calculate and apply amp offset corrections to an exposure (reference §5).

    The math is in `pipeline.tasks.amp_offset.amp_offset`; the LSST-named methods delegate.
    """

    ConfigClass = AmpOffsetConfig
    _DefaultName = "ampOffset"

    def getAmpAssociations(self, amps: Any) -> tuple[np.ndarray, np.ndarray]:
        """See `pipeline.tasks.amp_offset.amp_offset.get_amp_associations`."""
        return _ao.get_amp_associations(list(amps))

    def getNeighbors(self, ampIds: np.ndarray, ampId: int) -> tuple[list[int], list[int]]:
        """Neighbours of ``ampId`` on the amp grid ``ampIds`` and their sides (LSST signature).

        See `pipeline.tasks.amp_offset.amp_offset.get_neighbors`.
        """
        return _ao.get_neighbors(ampIds, ampId)

    def getAmpEdges(self, im: np.ndarray, amps: Any, ampSides: np.ndarray) -> dict:
        """See `pipeline.tasks.amp_offset.amp_offset.get_amp_edges`."""
        return _ao.get_amp_edges(im, list(amps), ampSides, self.config.ampEdgeInset, self.config.ampEdgeWidth)

    def getInterfaceOffset(
        self, ampNameA: str, ampNameB: str, edgeA: np.ndarray, edgeB: np.ndarray
    ) -> tuple[str, float, float, float, bool, bool]:
        """See `pipeline.tasks.amp_offset.amp_offset.get_interface_offset` (returns the LSST tuple)."""
        c = self.config
        r = _ao.get_interface_offset(
            ampNameA,
            ampNameB,
            edgeA,
            edgeB,
            window_frac=c.ampEdgeWindowFrac,
            do_window_smoothing=c.doWindowSmoothing,
            min_frac=c.ampEdgeMinFrac,
            max_offset=c.ampEdgeMaxOffset,
        )
        return (
            r.interfaceId,
            r.interfaceOffset,
            r.interfaceOffsetOriginal,
            r.ampEdgeGoodFrac,
            r.minFracFail,
            r.maxOffsetFail,
        )

    def getAmpOffsets(
        self, im: np.ndarray, amps: Any, associations: np.ndarray, sides: np.ndarray
    ) -> tuple[np.ndarray, dict[str, float]]:
        """See `pipeline.tasks.amp_offset.amp_offset.get_amp_offsets`."""
        c = self.config
        return _ao.get_amp_offsets(
            im,
            list(amps),
            associations,
            sides,
            inset=c.ampEdgeInset,
            width=c.ampEdgeWidth,
            window_frac=c.ampEdgeWindowFrac,
            do_window_smoothing=c.doWindowSmoothing,
            min_frac=c.ampEdgeMinFrac,
            max_offset=c.ampEdgeMaxOffset,
            apply_weights=c.applyWeights,
        )

    def run(self, exposure: Any) -> Struct:
        """Measure the pedestals of an assembled exposure; subtract them if ``doApplyAmpOffset``.

        Parameters
        ----------
        exposure : `pipeline.image.Exposure`
            Assembled, trimmed exposure with a detector; modified in place only when
            ``doApplyAmpOffset``.

        Returns
        -------
        result : `pipeline.struct.Struct`
            ``pedestals`` (`numpy.ndarray`, one per amp, image units) and ``interfaceOffsets``.

        Raises
        ------
        RuntimeError
            If the exposure has no detector.
        """
        det = exposure.detector
        if det is None:
            raise RuntimeError("AmpOffsetTask needs an exposure with a detector attached")
        amps = list(det)
        c = self.config
        im = exposure.image.astype(np.float64)
        bits = exposure.masked_image.get_plane_bitmask(
            [p for p in c.ignorePlanes if p in exposure.masked_image.mask_planes]
        )
        bad = (exposure.mask & bits) != 0 if bits else np.zeros(im.shape, bool)
        im[bad] = np.nan
        if c.doBackground:
            short = min(amps[0].bbox.nx, amps[0].bbox.ny)
            im -= _ao.estimate_background(im, max(int(short * c.backgroundFractionSample) // 2, 8))
        if c.doDetection:
            im[_ao.detect_sources(im, c.detectionThreshold, c.detectionSmoothingSigma)] = np.nan
        assoc, sides = self.getAmpAssociations(amps)
        ped, interfaces = self.getAmpOffsets(im, amps, assoc, sides)
        for iid, value in interfaces.items():
            self.metadata[f"LSST ISR AMPOFFSET INTERFACEOFFSET {iid}"] = float(value)
        for amp, p in zip(amps, ped):
            self.metadata[f"LSST ISR AMPOFFSET PEDESTAL {amp.name}"] = float(p)
            exposure.metadata[f"HIERARCH LSST ISR AMPOFFSET PEDESTAL {amp.name}"] = float(p)
        exposure.metadata["HIERARCH LSST ISR AMPOFFSET PEDESTAL SUBTRACTED"] = bool(c.doApplyAmpOffset)
        if c.doApplyAmpOffset:
            for amp, p in zip(amps, ped):
                exposure.image[amp.bbox.slices] -= np.float32(p)
        return Struct(pedestals=ped, interfaceOffsets=interfaces)
