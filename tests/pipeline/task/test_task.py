"""Task, PipelineTask, subtasks, metadata and timers."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from pipeline.config import ConfigError, apply_overrides
from pipeline.connections import InputQuantizedConnection, OutputQuantizedConnection
from pipeline.struct import Struct
from pipeline.task import ButlerQuantumContext, PipelineTask, TaskMetadata
from tests.pipeline.toy_tasks import OffsetTask, SubtractConfig, SubtractTask


def test_names_logger_and_task_dict():
    """Names logger and task dict."""
    task = SubtractTask()
    assert task.getName() == "subtract" and task.getFullName() == "subtract"
    assert task.offset.getFullName() == "subtract.offset"
    assert task.log.name == "subtract" and task.offset.log.name == "subtract.offset"
    assert set(task.getTaskDict()) == {"subtract", "subtract.offset"}
    assert isinstance(task.log, logging.Logger)
    labelled = SubtractTask(name="isr")
    assert labelled.offset.getFullName() == "isr.offset"


def test_subtask_config_is_parent_field():
    """Subtask config is parent field."""
    config = apply_overrides(SubtractConfig(), {"offset.value": 4.0, "offset.method": "SUBTRACT"})
    task = SubtractTask(config=config)
    assert task.offset.config is task.config.offset
    assert task.offset.run(10.0) == 6.0


def test_make_subtask_unknown_field():
    """Make subtask unknown field."""
    task = SubtractTask()
    with pytest.raises(ConfigError, match="unknown config field 'ofset'.*did you mean 'offset'"):
        task.makeSubtask("ofset")


def test_subtask_needs_name():
    """Subtask needs name."""
    with pytest.raises(RuntimeError, match="needs a name"):
        OffsetTask(parentTask=SubtractTask())


def test_bad_config_type():
    """Bad config type."""
    with pytest.raises(TypeError, match="config must be a Config instance"):
        SubtractTask(config={"level": 1})


def test_metadata_nested_json_and_numpy():
    """Metadata nested json and numpy."""
    md = TaskMetadata()
    md["a.b"] = np.float32(1.5)
    md["arr"] = np.arange(3)
    md.add("list", 1)
    md.add("list", np.int64(2))
    md["nested"] = {"x": 1}
    assert md["a"]["b"] == 1.5 and md["arr"] == [0, 1, 2] and md["list"] == [1, 2]
    assert md.get_scalar("list") == 2 and md.get_array("a.b") == [1.5]
    assert md.names() == {"a.b", "arr", "list", "nested.x"}
    back = TaskMetadata.from_json(md.to_json())
    assert back == md and isinstance(back["nested"], TaskMetadata)
    with pytest.raises(TypeError, match="not JSON-able"):
        md["bad"] = object()


def test_timer_records_times_and_rss():
    """Timer records times and rss."""
    task = SubtractTask()
    with task.timer("run"):
        sum(range(200000))
    md = task.metadata
    for key in ("Utc", "WallTime", "CpuTime", "UserTime", "SystemTime", "MaxResidentSetSize"):
        assert f"runStart{key}" in md and f"runEnd{key}" in md
    assert md["runEndWallTime"] >= md["runStartWallTime"]
    assert md["runEndCpuTime"] > md["runStartCpuTime"]
    assert md["runDuration"] > 0 and md["runEndMaxResidentSetSize"] > 10_000_000  # > 10 MB, in bytes
    json.loads(task.getFullMetadata().to_json())


def test_full_metadata_keys():
    """Full metadata keys."""
    task = SubtractTask(name="isr")
    task.metadata["x"] = 1
    task.offset.metadata["y"] = 2
    full = task.getFullMetadata()
    assert full.to_dict() == {"isr": {"x": 1}, "isr:offset": {"y": 2}}
    task.emptyMetadata()
    assert task.getFullMetadata().to_dict() == {"isr": {}, "isr:offset": {}}


class FakeButlerQC:
    """In-memory ButlerQuantumContext: refs are strings naming stored objects."""

    def __init__(self, store):
        self.store = store
        self.quantum = type("Q", (), {"data_id": {"exposure": 1, "detector": 2}})()
        self.repo_root = "/nonexistent"

    def get(self, ref):
        """Return the stored object(s) for a ref or list of refs."""
        if isinstance(ref, list):
            return [self.store[r] for r in ref]
        return self.store[ref]

    def put(self, obj, ref):
        """Store an object under a ref."""
        self.store[ref] = obj


def test_default_run_quantum():
    """Default run quantum."""
    image = np.arange(12.0).reshape(3, 4)
    calib = np.full((3, 4), 0.5)
    butler_qc = FakeButlerQC({"raw-1": image, "bias-1": calib})
    assert isinstance(butler_qc, ButlerQuantumContext)
    config = apply_overrides(SubtractConfig(), {"level": 1.0, "statistic": "MEAN"})
    task = SubtractTask(config=config)
    task.runQuantum(
        butler_qc,
        InputQuantizedConnection(inputExp="raw-1", calib="bias-1"),
        OutputQuantizedConnection(outputExp="post-1"),
    )
    np.testing.assert_allclose(butler_qc.store["post-1"], image - 5.5 - 1.0 - 0.5)
    assert task.metadata["statValue"] == 5.5


def test_run_quantum_missing_output_field():
    """Run quantum missing output field."""

    class Bad(SubtractTask):
        def run(self, inputExp, calib=None):
            return Struct(wrong=1)

    butler_qc = FakeButlerQC({"raw": np.zeros((2, 2))})
    with pytest.raises(RuntimeError, match="returned no field 'outputExp' for output connection 'outputExp'"):
        Bad().runQuantum(
            butler_qc, InputQuantizedConnection(inputExp="raw"), OutputQuantizedConnection(outputExp="out")
        )


def test_run_not_implemented():
    """Run not implemented."""

    class Empty(PipelineTask):
        ConfigClass = SubtractConfig
        _DefaultName = "empty"

    with pytest.raises(NotImplementedError):
        Empty().run()


def test_config_of_wrong_class():
    """Config of wrong class."""
    from tests.pipeline.toy_tasks import CombineConfig

    with pytest.raises(TypeError, match="SubtractTask: config must be a SubtractConfig, got CombineConfig"):
        SubtractTask(config=CombineConfig())
