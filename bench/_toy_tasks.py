"""The toy workload of middleware-reference section 10, as ccdflow tasks (importable).

- `SubtractMedianTask` (label ``subtractMedian``), per (exposure, detector): reads a 2-D
  ``toyRaw`` array (uint16 counts), returns ``toyCalexp`` = image - median (float32) and
  records the median in its metadata. ``work_ms`` adds that much extra compute (for the
  ``-j 2`` speed-up measurement), ``fail_on`` makes chosen quanta fail (tests).
- `GatherMediansTask` (label ``gatherMedians``), per exposure: reads every detector's
  ``toyCalexp`` and writes ``toyExposureSummary`` = {detector: mean residual} as a dict.

Both use the ``NumpyArray`` / ``StructuredDataDict`` storage classes so they need no image model,
and record the seconds spent in ``run`` (the task's own compute, without reading and writing) as
``computeSeconds`` in their metadata (the benchmarks subtract it from the wall time).
"""

from __future__ import annotations

import os
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
        env_fail = os.environ.get("CCDFLOW_TOY_FAIL", "")
        if exposure in self.config.fail_on or str(exposure) in env_fail.split(","):
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
        t0 = time.perf_counter()
        median = float(np.median(inputImage))
        out = inputImage.astype(np.float32) - np.float32(median)
        if self.config.work_ms > 0:
            t_end = time.perf_counter() + self.config.work_ms / 1000.0
            while time.perf_counter() < t_end:
                np.sqrt(out[:64, :64] ** 2 + 1.0)
        self.metadata["median"] = median
        self.metadata["computeSeconds"] = time.perf_counter() - t0
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
        t0 = time.perf_counter()
        detectors = detectors if detectors is not None else list(range(len(inputImages)))
        means = {int(d): float(np.mean(im)) for d, im in zip(detectors, inputImages)}
        self.metadata["computeSeconds"] = time.perf_counter() - t0
        return Struct(summary={"n": len(inputImages), "means": means})


# ----------------------------------------------------------------------------- toy repository
TOY_INSTRUMENT = "ToyCam"
TOY_RAW_RUN = "ToyCam/raw/all"
TOY_PIPELINE_YAML = """\
description: The toy pipeline of middleware-reference section 10.
tasks:
  subtractMedian:
    class: _toy_tasks.SubtractMedianTask
  gatherMedians:
    class: _toy_tasks.GatherMediansTask
"""
"""The two-task toy pipeline (``subtractMedian`` then ``gatherMedians``) as pipeline YAML."""


def register_toy_dimensions(butler: Any, n_exposures: int, n_detectors: int, *, start_id: int = 1,
                            exposure_time: float = 10.0) -> None:
    """Insert the instrument, filter, night, detector and exposure records of the toy camera.

    Parameters
    ----------
    butler : `butler.Butler`
        A writeable butler.
    n_exposures, n_detectors : `int`
        How many exposures (ids ``start_id ...``) and detectors (ids ``0 ..``).
    start_id : `int`
        First exposure id.
    exposure_time : `float`
        Exposure time of every exposure (s); exposures are 60 s apart from 2025-01-01T00:00 TAI.
    """
    from butler import Timespan

    reg = butler.registry
    reg.insert_dimension_data("instrument", {"name": TOY_INSTRUMENT, "class_name": "", "camera_yaml": "",
                                             "detector_max": max(n_detectors, 1)}, skip_existing=True)
    reg.insert_dimension_data("physical_filter", {"instrument": TOY_INSTRUMENT, "name": "toy_r", "band": "r"},
                              skip_existing=True)
    reg.insert_dimension_data("detector", *[{"instrument": TOY_INSTRUMENT, "id": d, "full_name": f"S{d:03d}",
                                             "purpose": "SCIENCE"} for d in range(n_detectors)],
                              skip_existing=True)
    t0 = 1_735_689_600 * 10**9 + 37 * 10**9  # 2025-01-01T00:00:00 TAI in TAI ns since 1970
    day = 86_400 * 10**9
    reg.insert_dimension_data("day_obs", {"instrument": TOY_INSTRUMENT, "id": 20250101,
                                          "timespan": Timespan.from_ns(t0, t0 + day)}, skip_existing=True)
    recs = []
    for i in range(n_exposures):
        e = start_id + i
        b = t0 + i * 60 * 10**9
        recs.append({"instrument": TOY_INSTRUMENT, "id": e, "obs_id": f"TOY_{e:06d}",
                     "exposure_time": exposure_time, "dark_time": exposure_time, "observation_type": "science",
                     "physical_filter": "toy_r", "day_obs": 20250101,
                     "timespan": Timespan.from_ns(b, b + int(exposure_time * 1e9))})
    reg.insert_dimension_data("exposure", *recs, skip_existing=True)


def make_toy_repo(root: Any, n_exposures: int, n_detectors: int, *, shape: tuple[int, int] = (512, 512),
                  seed: int = 1234, with_files: bool = True) -> tuple[Any, dict[tuple[int, int], float]]:
    """Create a repository with ``toyRaw`` uint16 images (known medians) in RUN ``ToyCam/raw/all``.

    Parameters
    ----------
    root : path-like
        New repository root.
    n_exposures, n_detectors : `int`
        Size of the workload.
    shape : `tuple` [`int`, `int`]
        Image shape (ny, nx).
    seed : `int`
        Random seed; image (e, d) is ``1000 + 10 e + d`` plus Poisson-like noise.
    with_files : `bool`
        Write image files (``False``: register the datasets only, for graph-build benchmarks).

    Returns
    -------
    butler : `butler.Butler`
        Writeable butler on the new repository.
    medians : `dict` [`tuple` [`int`, `int`], `float`]
        The true median of each (exposure, detector) image, in ADU.
    """
    from butler import Butler, DatasetType

    butler = Butler.create(root)
    butler = Butler(root, writeable=True)
    register_toy_dimensions(butler, n_exposures, n_detectors)
    dt = DatasetType("toyRaw", ("instrument", "exposure", "detector"), "NumpyArray")
    butler.registry.register_dataset_type(dt)
    butler.registry.register_run(TOY_RAW_RUN)
    rng = np.random.default_rng(seed)
    medians: dict[tuple[int, int], float] = {}
    if not with_files:
        ids = [{"instrument": TOY_INSTRUMENT, "exposure": e, "detector": d}
               for e in range(1, n_exposures + 1) for d in range(n_detectors)]
        from butler import StoredFileInfo

        refs = butler.registry.insert_datasets(dt, ids, TOY_RAW_RUN)
        fmt = "butler.datastore.formatters.NumpyFormatter"
        butler.registry.insert_file_records(
            [(r.id, StoredFileInfo(f"toy/{r.id.hex}.npy", fmt, "NumpyArray", None, 0)) for r in refs])
        return butler, medians
    for e in range(1, n_exposures + 1):
        for d in range(n_detectors):
            level = 1000 + 10 * e + d
            img = (level + rng.integers(-20, 21, size=shape)).astype(np.uint16)
            medians[(e, d)] = float(np.median(img))
            butler.put(img, dt.name, instrument=TOY_INSTRUMENT, exposure=e, detector=d, run=TOY_RAW_RUN)
    return butler, medians
