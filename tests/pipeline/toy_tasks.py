"""Small toy tasks, configs and connections used by the pipeline-definition tests."""

from __future__ import annotations

from typing import Literal

import pipeline.connection_types as cT  # noqa: N812 - the LSST spelling
from pipeline.config import Config, ConfigurableField, Field, model_validator
from pipeline.connections import PipelineTaskConfig, PipelineTaskConnections
from pipeline.struct import Struct
from pipeline.task import PipelineTask, Task

__all__ = [
    "CombineTask",
    "MeasureTask",
    "NormTask",
    "OffsetConfig",
    "OffsetTask",
    "ScaledOffsetTask",
    "SubtractTask",
]


class OffsetConfig(Config):
    """Config of a toy subtask adding a constant."""

    method: Literal["ADD", "SUBTRACT"] = Field("ADD", description="How to apply the offset.")
    value: float = Field(0.0, description="Offset (ADU).")


class OffsetTask(Task):
    """Toy subtask: add or subtract a constant."""

    ConfigClass = OffsetConfig
    _DefaultName = "offset"

    def run(self, x: float) -> float:
        """Apply the offset to ``x`` (ADU)."""
        return x + self.config.value if self.config.method == "ADD" else x - self.config.value


class ScaledOffsetConfig(OffsetConfig):
    """Config of the retarget replacement."""

    scale: float = Field(2.0, description="Multiplier applied after the offset.")


class ScaledOffsetTask(OffsetTask):
    """Retarget replacement: offset then scale."""

    ConfigClass = ScaledOffsetConfig

    def run(self, x: float) -> float:
        """Apply the offset then the scale."""
        return super().run(x) * self.config.scale


class SubtractConnections(
    PipelineTaskConnections,
    dimensions=("instrument", "exposure", "detector"),
    defaultTemplates={"calibType": "bias"},
):
    """Per-(exposure, detector) toy ISR."""

    inputExp = cT.Input(
        name="raw",
        storageClass="NumpyArray",
        doc="Raw image.",
        dimensions=("instrument", "exposure", "detector"),
    )
    calib = cT.PrerequisiteInput(
        name="{calibType}",
        storageClass="NumpyArray",
        doc="Calibration.",
        dimensions=("instrument", "detector"),
        isCalibration=True,
        minimum=0,
    )
    outputExp = cT.Output(
        name="toyPostIsr",
        storageClass="NumpyArray",
        doc="Corrected image.",
        dimensions=("instrument", "exposure", "detector"),
    )

    def __init__(self, *, config=None):
        super().__init__(config=config)
        if not config.doCalib:
            self.prerequisiteInputs.remove("calib")


class SubtractConfig(PipelineTaskConfig, pipelineConnections=SubtractConnections):
    """Config of `SubtractTask`."""

    doCalib: bool = Field(True, description="Subtract the calibration?")
    level: float = Field(0.0, description="Extra constant to subtract (ADU).")
    statistic: Literal["MEAN", "MEDIAN"] = Field("MEDIAN", description="Statistic removed from the image.")
    saturation: dict[str, float] = Field(
        default_factory=lambda: {"ALL_AMPS": 1e6}, description="Saturation per amp (ADU)."
    )
    threshold: float | None = Field(None, description="Optional threshold (ADU).")
    offset: OffsetConfig = ConfigurableField(OffsetTask, description="Offset subtask.")

    @model_validator(mode="after")
    def _check(self):
        if self.threshold is not None and self.threshold < self.level:
            raise ValueError(f"threshold ({self.threshold}) must be >= level ({self.level})")
        return self


class SubtractTask(PipelineTask):
    """Toy ISR: subtract a statistic, a level and an optional calibration."""

    ConfigClass = SubtractConfig
    _DefaultName = "subtract"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.makeSubtask("offset")

    def run(self, inputExp, calib=None):
        """Return ``inputExp`` minus the configured statistic, level and calib."""
        import numpy as np

        stat = np.median(inputExp) if self.config.statistic == "MEDIAN" else np.mean(inputExp)
        out = inputExp - stat - self.config.level
        if calib is not None:
            out = out - calib
        out = self.offset.run(out)
        self.metadata["statValue"] = float(stat)
        return Struct(outputExp=out)


class CombineConnections(PipelineTaskConnections, dimensions=("instrument", "detector")):
    """Per-detector combination of many exposures."""

    inputExps = cT.Input(
        name="toyPostIsr",
        storageClass="NumpyArray",
        doc="Inputs.",
        dimensions=("instrument", "exposure", "detector"),
        multiple=True,
    )
    outputCalib = cT.Output(
        name="toyCombined", storageClass="NumpyArray", doc="Combined.", dimensions=("instrument", "detector")
    )


class CombineConfig(PipelineTaskConfig, pipelineConnections=CombineConnections):
    """Config of `CombineTask`."""

    combine: Literal["MEAN", "MEDIAN"] = Field("MEAN", description="Combination statistic.")


class CombineTask(PipelineTask):
    """Toy combine: per-pixel mean/median of the inputs."""

    ConfigClass = CombineConfig
    _DefaultName = "combine"

    def run(self, inputExps):
        """Combine a list of arrays."""
        import numpy as np

        stack = np.stack(inputExps)
        out = stack.mean(axis=0) if self.config.combine == "MEAN" else np.median(stack, axis=0)
        return Struct(outputCalib=out)


class MeasureConnections(PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    """Per-(exposure, detector) statistics."""

    inputExp = cT.Input(
        name="toyPostIsr",
        storageClass="NumpyArray",
        doc="Image.",
        dimensions=("instrument", "exposure", "detector"),
    )
    stats = cT.Output(
        name="toyStats",
        storageClass="StructuredDataDict",
        doc="Stats.",
        dimensions=("instrument", "exposure", "detector"),
    )


class MeasureConfig(PipelineTaskConfig, pipelineConnections=MeasureConnections):
    """Config of `MeasureTask`."""

    nSigma: float = Field(3.0, description="Clip level.")


class MeasureTask(PipelineTask):
    """Toy measurement."""

    ConfigClass = MeasureConfig
    _DefaultName = "measure"

    def run(self, inputExp):
        """Return the mean."""
        return Struct(stats={"mean": float(inputExp.mean())})


class NormConnections(PipelineTaskConnections, dimensions=("instrument", "physical_filter")):
    """Per-filter normalization gathering all exposures × detectors."""

    inputStats = cT.Input(
        name="toyStats",
        storageClass="StructuredDataDict",
        doc="Stats.",
        dimensions=("instrument", "exposure", "detector"),
        multiple=True,
    )
    camera = cT.PrerequisiteInput(
        name="toyCamera",
        storageClass="StructuredDataDict",
        doc="Camera.",
        dimensions=("instrument",),
        isCalibration=True,
    )
    scales = cT.Output(
        name="toyScales",
        storageClass="StructuredDataDict",
        doc="Scales.",
        dimensions=("instrument", "physical_filter"),
    )


class NormConfig(PipelineTaskConfig, pipelineConnections=NormConnections):
    """Config of `NormTask`."""

    iterations: int = Field(10, description="Iterations.")


class NormTask(PipelineTask):
    """Toy normalization."""

    ConfigClass = NormConfig
    _DefaultName = "norm"

    def run(self, inputStats, camera):
        """Return the mean of the means."""
        return Struct(scales={"mean": sum(s["mean"] for s in inputStats) / len(inputStats)})
