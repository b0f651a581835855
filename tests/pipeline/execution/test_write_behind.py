"""Write-behind of the serial executor.

The same files as synchronous writes, written from copies taken at ``put``; a deferred write that
fails fails its quantum; nothing half-registered.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import _toy_tasks as toy
import numpy as np
import pytest

from butler.datastore.file_datastore import FileDatastore
from pipeline.execution.executors import SerialExecutor
from pipeline.execution.runner import pre_exec_init, run_graph
from pipeline.execution.single_quantum import snapshot_for_write
from pipeline.graph.builder import build_quantum_graph
from pipeline.graph.collections import resolve_output_collections
from pipeline.pipeline_graph import PipelineGraph
from pipeline.struct import Struct


class MutatingSubtractTask(toy.SubtractMedianTask):
    """Puts its output, then overwrites the array (the file must hold the values put)."""

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:  # noqa: N802
        """Put ``image - median``, then scribble over the array."""
        image = butlerQC.get(inputRefs.inputImage)
        out = self.run(image).outputImage
        butlerQC.put(Struct(outputImage=out), outputRefs)
        out[...] = -1.0


def _run(butler: Any, run: str, *, write_behind: bool, task: type = toy.SubtractMedianTask) -> Any:
    colls = resolve_output_collections(butler.registry, inputs=[toy.TOY_RAW_RUN], output_run=run)
    tasks = [("subtractMedian", task, toy.SubtractMedianConfig()),
             ("gatherMedians", toy.GatherMediansTask, toy.GatherMediansConfig())]
    graph = build_quantum_graph(butler, PipelineGraph.from_tasks(tasks), collections=colls)
    pre_exec_init(butler, graph, register_dataset_types=True)
    ex = SerialExecutor(graph, butler.root, write_behind=write_behind)
    assert ex.max_in_flight == (2 if write_behind else 1)
    try:
        return run_graph(butler, graph, ex, progress="none")
    finally:
        ex.shutdown()


def _files(butler: Any, run: str, name: str) -> dict[tuple, bytes]:
    out = {}
    for ref in butler.query_datasets(name, collections=[run]):
        out[tuple(sorted(ref.data_id.required.items()))] = butler.get_uri(ref).read_bytes()
    return out


def test_write_behind_writes_the_files_of_synchronous_writes(toy_repo: Any) -> None:
    """Same files (bytes), same log messages and metadata keys as the synchronous executor."""
    butler, medians = toy_repo
    assert _run(butler, "u/sync", write_behind=False).success
    report = _run(butler, "u/wb", write_behind=True)
    assert report.success and report.count("done") == 9 and report.n_registered == 9 * 3
    for name in ("toyCalexp", "toyExposureSummary"):
        sync, wb = _files(butler, "u/sync", name), _files(butler, "u/wb", name)
        assert len(sync) == (6 if name == "toyCalexp" else 3) and sync == wb
    for e in (1, 2, 3):
        for d in (0, 1):
            kw = dict(instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d)
            out = butler.get("toyCalexp", collections=["u/wb"], **kw)
            raw = butler.get("toyRaw", collections=[toy.TOY_RAW_RUN], instrument=toy.TOY_INSTRUMENT,
                             exposure=e, detector=d)
            np.testing.assert_array_equal(out, raw.astype(np.float32) - np.float32(medians[(e, d)]))
            md = {r: butler.get("subtractMedian_metadata", collections=[r], **kw) for r in ("u/sync", "u/wb")}
            assert md["u/sync"].keys() == md["u/wb"].keys()
            assert md["u/wb"]["task"]["subtractMedian"]["median"] == medians[(e, d)]
            assert md["u/wb"]["butler_metrics"]["n_put"] == 1 and len(md["u/wb"]["outputs"]) == 1
            assert md["u/wb"]["data_id"] == md["u/sync"]["data_id"]
            logs = [butler.get("subtractMedian_log", collections=[r], **kw) for r in ("u/sync", "u/wb")]
            assert [(x["levelname"], x["message"]) for x in logs[0]] == [(x["levelname"], x["message"])
                                                                         for x in logs[1]]
    # Every registered dataset has its file, and no temporary file is left.
    run_dir = Path(butler.root) / "u" / "wb"
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    for ref in butler.query_datasets("*", collections=["u/wb"]):
        assert butler.get_uri(ref).exists()


def test_a_deferred_write_uses_the_array_as_it_was_put(toy_repo: Any) -> None:
    """A task that changes its array after put still gets the put-time values in its file."""
    butler, medians = toy_repo
    assert _run(butler, "u/mut_sync", write_behind=False, task=MutatingSubtractTask).success
    assert _run(butler, "u/mut_wb", write_behind=True, task=MutatingSubtractTask).success
    wb = _files(butler, "u/mut_wb", "toyCalexp")
    assert wb == _files(butler, "u/mut_sync", "toyCalexp")
    kw = dict(instrument=toy.TOY_INSTRUMENT, exposure=1, detector=0)
    out = butler.get("toyCalexp", collections=["u/mut_wb"], **kw)
    assert not np.all(out == -1.0)


def test_a_failing_deferred_write_fails_its_quantum_and_leaves_no_file(
    toy_repo: Any, monkeypatch: Any
) -> None:
    """A write that fails in the writer thread fails the quantum as a failing put does."""
    butler, _ = toy_repo
    original = FileDatastore.prepare_write
    threads = []

    def prepare_write(self: Any, obj: Any, ref: Any) -> Any:
        if ref.dataset_type.name == "toyCalexp" and ref.data_id["exposure"] == 2:
            import threading

            threads.append(threading.current_thread().name)
            raise RuntimeError("injected write failure")
        return original(self, obj, ref)

    monkeypatch.setattr(FileDatastore, "prepare_write", prepare_write)
    report = _run(butler, "u/full", write_behind=True)
    assert threads and all(t.startswith("ccdflow-writer") for t in threads)  # the deferred path
    assert report.count("failed") == 2 and report.count("blocked") == 1 and report.count("done") == 6
    failed = [q for q in report.quanta.values() if q.status == "failed"]
    assert all("injected write failure" in (q.error or "") for q in failed)
    assert all(q.data_id["exposure"] == 2 for q in failed)
    run_dir = Path(butler.root) / "u" / "full"
    assert not [p for p in run_dir.rglob("*") if "TOY_000002" in str(p) and "toyCalexp" in p.name]
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    kw = dict(instrument=toy.TOY_INSTRUMENT, exposure=2, detector=0)
    log = butler.get("subtractMedian_log", collections=["u/full"], **kw)
    assert log[-1]["levelname"] == "ERROR" and "injected write failure" in log[-1]["message"]
    assert not butler.query_datasets("subtractMedian_metadata", collections=["u/full"], where="exposure = 2")
    assert len(butler.query_datasets("toyCalexp", collections=["u/full"])) == 4


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize("make", [
    lambda: np.arange(12.0).reshape(3, 4),
    lambda: np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    lambda: np.arange(12.0).reshape(3, 4).T,
    lambda: np.arange(5, dtype=">i2"),
    lambda: np.array(3.5),
    lambda: np.zeros((0, 4), np.uint16),
    lambda: np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
])
def test_snapshot_is_a_private_copy_with_the_same_file(make: Any) -> None:
    """The copy shares no memory and np.save writes the same bytes (incl. fortran_order)."""
    a = make()
    copy = snapshot_for_write(a)
    assert copy is not None and not np.shares_memory(copy, a)
    assert _npy(copy) == _npy(a)


@pytest.mark.parametrize("obj", [
    np.arange(10.0)[::2],  # neither C- nor Fortran-contiguous: written at once
    np.arange(24.0).reshape(2, 3, 4).transpose(1, 0, 2),
    np.array([{"a": 1}], dtype=object),
    np.ma.masked_array([1.0, 2.0]),
    [1, 2],
    {"a": np.arange(3)},
    3.0,
])
def test_snapshot_declines_what_it_cannot_copy_exactly(obj: Any) -> None:
    """Non-contiguous arrays, object arrays, subclasses and non-arrays are written at once."""
    assert snapshot_for_write(obj) is None
