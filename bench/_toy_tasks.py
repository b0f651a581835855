"""The toy workload of middleware-reference section 10, as ccdflow tasks (importable).

- `SubtractMedianTask` (label ``subtractMedian``), per (exposure, detector): reads a 2-D
  ``toyRaw`` array (uint16 counts), returns ``toyCalexp`` = image - median (float32) and
  records the median in its metadata. ``work_ms`` adds that much extra compute (for the
  ``-j 2`` speed-up measurement), ``fail_on`` makes chosen quanta fail (tests).
- `GatherMediansTask` (label ``gatherMedians``), per exposure: reads every detector's
  ``toyCalexp`` and writes ``toyExposureSummary`` = {detector: mean residual} as a dict.

Both use the ``NumpyArray`` / ``StructuredDataDict`` storage classes so they need no image model.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import pipeline.connection_types as cT
from pipeline.config import Field
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.exceptions import NoWorkFound
from pipeline.struct import Struct
from pipeline.task import PipelineTask

__all__ = ["SubtractMedianTask", "SubtractMedianConfig", "GatherMediansTask", "GatherMediansConfig"]


class SubtractMedianConnections(PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    """Connections of `SubtractMedianTask`."""

    inputImage = cT.Input(name="toyRaw", storageClass="NumpyArray", doc="Raw counts (ny, nx) ADU.",
                          dimensions=("instrument", "exposure", "detector"))
    outputImage = cT.Output(name="toyCalexp", storageClass="NumpyArray", doc="Median-subtracted (ny, nx) ADU.",
                            dimensions=("instrument", "exposure", "detector"))


class SubtractMedianConfig(PipelineTaskConfig, pipelineConnections=SubtractMedianConnections):
    """Config of `SubtractMedianTask`."""

    work_ms: float = Field(0.0, description="Extra busy compute per quantum, in ms (benchmarks).")
    fail_on: list[int] = Field(default_factory=list, description="Exposure ids whose quanta raise (tests).")
    no_work_on: list[int] = Field(default_factory=list, description="Exposure ids that raise NoWorkFound.")
    sleep_s: float = Field(0.0, description="Sleep this long per quantum, in s (interruption tests).")


class SubtractMedianTask(PipelineTask):
    """Subtract the median of an image (toy ISR)."""

    ConfigClass = SubtractMedianConfig
    _DefaultName = "subtractMedian"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Check the failure/no-work switches, then do the default get/run/put."""
        exposure = butlerQC.quantum.data_id["exposure"]
        if exposure in self.config.fail_on:
            raise RuntimeError(f"injected failure for exposure {exposure}")
        if exposure in self.config.no_work_on:
            raise NoWorkFound(f"injected no-work for exposure {exposure}")
        if self.config.sleep_s:
            time.sleep(self.config.sleep_s)
        super().runQuantum(butlerQC, inputRefs, outputRefs)

    def run(self, inputImage: np.ndarray) -> Struct:
        """Subtract the median.

        Parameters
        ----------
        inputImage : `numpy.ndarray`, shape (ny, nx)
            Counts in ADU.

        Returns
        -------
        result : `Struct`
            ``outputImage`` (float32, ADU).
        """
        median = float(np.median(inputImage))
        out = inputImage.astype(np.float32) - np.float32(median)
        if self.config.work_ms > 0:
            t_end = time.perf_counter() + self.config.work_ms / 1000.0
            while time.perf_counter() < t_end:
                np.sqrt(out[:64, :64] ** 2 + 1.0)
        self.metadata["median"] = median
        return Struct(outputImage=out)


class GatherMediansConnections(PipelineTaskConnections, dimensions=("instrument", "exposure")):
    """Connections of `GatherMediansTask`."""

    inputImages = cT.Input(name="toyCalexp", storageClass="NumpyArray", doc="Per-detector residual images.",
                           dimensions=("instrument", "exposure", "detector"), multiple=True)
    summary = cT.Output(name="toyExposureSummary", storageClass="StructuredDataDict",
                        doc="Mean residual per detector.", dimensions=("instrument", "exposure"))


class GatherMediansConfig(PipelineTaskConfig, pipelineConnections=GatherMediansConnections):
    """Config of `GatherMediansTask`."""


class GatherMediansTask(PipelineTask):
    """Gather the detectors of an exposure (toy per-exposure step)."""

    ConfigClass = GatherMediansConfig
    _DefaultName = "gatherMedians"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Read the images and key the result by detector."""
        images = butlerQC.get(inputRefs.inputImages)
        detectors = [r.data_id["detector"] for r in inputRefs.inputImages]
        butlerQC.put(self.run(images, detectors), outputRefs)

    def run(self, inputImages: list[np.ndarray], detectors: list[int] | None = None) -> Struct:
        """Mean of each residual image.

        Parameters
        ----------
        inputImages : `list` [`numpy.ndarray`]
            Residual images (ny, nx), ADU.
        detectors : `list` [`int`], optional
            Their detector ids.

        Returns
        -------
        result : `Struct`
            ``summary``: ``{"n": count, "means": {detector: mean ADU}}``.
        """
        detectors = detectors if detectors is not None else list(range(len(inputImages)))
        means = {int(d): float(np.mean(im)) for d, im in zip(detectors, inputImages)}
        return Struct(summary={"n": len(inputImages), "means": means})
