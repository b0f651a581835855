"""Small tasks for the graph-shape and calibration-lookup tests (NumpyArray / dict datasets)."""

from __future__ import annotations

from typing import Any

import numpy as np

import pipeline.connection_types as cT
from pipeline.config import Field
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask

__all__ = ["ApplyBiasTask", "CombinePerDetectorTask", "NormalizePerFilterTask"]


class ApplyBiasConnections(PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    """Per (exposure, detector), with a calibration prerequisite found by time."""

    raw = cT.Input(name="toyRaw", storageClass="NumpyArray", dimensions=("instrument", "exposure", "detector"))
    bias = cT.PrerequisiteInput(name="toyBias", storageClass="NumpyArray", dimensions=("instrument", "detector"),
                                isCalibration=True)
    optional = cT.PrerequisiteInput(name="toyDefects", storageClass="NumpyArray",
                                    dimensions=("instrument", "detector"), isCalibration=True, minimum=0)
    debiased = cT.Output(name="toyDebiased", storageClass="NumpyArray",
                         dimensions=("instrument", "exposure", "detector"))


class ApplyBiasConfig(PipelineTaskConfig, pipelineConnections=ApplyBiasConnections):
    """Config of `ApplyBiasTask`."""

    scale: float = Field(1.0, description="Multiply the bias by this.")


class ApplyBiasTask(PipelineTask):
    """raw - scale * bias."""

    ConfigClass = ApplyBiasConfig
    _DefaultName = "applyBias"

    def run(self, raw: np.ndarray, bias: np.ndarray, optional: Any = None) -> Struct:
        """Subtract the bias (ADU)."""
        return Struct(debiased=raw.astype(np.float32) - self.config.scale * bias.astype(np.float32))


class CombineConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Per detector, gathering every exposure."""

    inputs = cT.Input(name="toyCalexp", storageClass="NumpyArray", multiple=True,
                      dimensions=("instrument", "exposure", "detector"))
    combined = cT.Output(name="toyCombined", storageClass="NumpyArray", dimensions=("instrument", "detector"))


class CombinePerDetectorConfig(PipelineTaskConfig, pipelineConnections=CombineConnections):
    """Config of `CombinePerDetectorTask`."""


class CombinePerDetectorTask(PipelineTask):
    """Mean of the inputs."""

    ConfigClass = CombinePerDetectorConfig
    _DefaultName = "combine"

    def run(self, inputs: list[np.ndarray]) -> Struct:
        """Average the images."""
        return Struct(combined=np.mean(np.stack(inputs), axis=0))


class NormalizeConnections(PipelineTaskConnections, dimensions=("instrument", "physical_filter")):
    """Per physical_filter, gathering every exposure x detector; one output per exposure too."""

    inputs = cT.Input(name="toyCalexp", storageClass="NumpyArray", multiple=True,
                      dimensions=("instrument", "exposure", "detector"))
    scales = cT.Output(name="toyFilterScales", storageClass="StructuredDataDict",
                       dimensions=("instrument", "physical_filter"))
    expScales = cT.Output(name="toyExpScales", storageClass="StructuredDataDict", multiple=True,
                          dimensions=("instrument", "exposure"))


class NormalizePerFilterConfig(PipelineTaskConfig, pipelineConnections=NormalizeConnections):
    """Config of `NormalizePerFilterTask`."""


class NormalizePerFilterTask(PipelineTask):
    """Count the inputs per exposure."""

    ConfigClass = NormalizePerFilterConfig
    _DefaultName = "normalize"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Write one dict per exposure and the filter summary."""
        counts: dict[int, int] = {}
        for ref in inputRefs.inputs:
            counts[ref.data_id["exposure"]] = counts.get(ref.data_id["exposure"], 0) + 1
        butlerQC.put({"n": len(inputRefs.inputs)}, outputRefs.scales)
        butlerQC.put([{"n_detectors": counts[r.data_id["exposure"]]} for r in outputRefs.expScales],
                     outputRefs.expScales)
