"""The three-step quantum-backed flow: ``pipetask pre-exec-init-qbb`` and ``pipetask run-qbb`` with
no registry at all (the registry file moved away and ``butler.yaml`` pointing at a database that
does not exist), then ``butler transfer-from-graph`` registering what the workers finished, run
again after more quanta finished, and once more with nothing new (idempotent).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import _toy_tasks as toy
import numpy as np
import pytest
import yaml

from butler import Butler
from pipeline.execution.qbb import transfer_from_graph
from pipeline.graph.builder import build_quantum_graph
from pipeline.graph.collections import resolve_output_collections
from pipeline.pipeline_graph import PipelineGraph

from .conftest import make_toy_repo_db

BIN = Path(sys.executable).parent
BOGUS_DB = "postgresql+psycopg://nobody@127.0.0.1:9/no_such_registry"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(args[0]), *args[1:]], capture_output=True, text=True, timeout=120)


class _NoRegistry:
    """Move the registry away and point butler.yaml at a database that does not exist."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.saved = root.parent / f"{root.name}.saved"

    def __enter__(self) -> _NoRegistry:
        self.saved.mkdir()
        for p in self.root.glob("registry.sqlite3*"):
            shutil.move(str(p), self.saved / p.name)
        shutil.copy(self.root / "butler.yaml", self.saved / "butler.yaml")
        cfg = yaml.safe_load((self.root / "butler.yaml").read_text())
        cfg["registry"]["db"] = BOGUS_DB
        (self.root / "butler.yaml").write_text(yaml.safe_dump(cfg))
        return self

    def __exit__(self, *exc: object) -> None:
        assert not list(self.root.glob("registry.sqlite3*")), "a worker step created a registry"
        for p in self.saved.iterdir():
            shutil.move(str(p), self.root / p.name)
        self.saved.rmdir()


@pytest.fixture
def qbb_setup(tmp_path: Path) -> tuple[Any, dict[tuple[int, int], float], Any, Path]:
    butler, medians = make_toy_repo_db(tmp_path / "repo", 3, 2, shape=(8, 8))
    colls = resolve_output_collections(butler.registry, inputs=[toy.TOY_RAW_RUN], output="u/qbb")
    tasks = [
        ("subtractMedian", toy.SubtractMedianTask, toy.SubtractMedianConfig()),
        ("gatherMedians", toy.GatherMediansTask, toy.GatherMediansConfig()),
    ]
    graph = build_quantum_graph(butler, PipelineGraph.from_tasks(tasks), collections=colls)
    path = graph.save(tmp_path / "g.qg")
    butler.close()
    return graph, medians, path, tmp_path / "repo"


def test_three_step_qbb_without_registry(qbb_setup: Any) -> None:
    graph, medians, gpath, root = qbb_setup
    first = [q.id for q in graph.quanta() if q.data_id["exposure"] in (1, 2)]  # 4 + 2 quanta
    rest = [q.id for q in graph.quanta() if q.data_id["exposure"] == 3]
    with _NoRegistry(root):
        # Sanity: the registry really is unusable now.
        bad = _cli(BIN / "butler", "query-collections", str(root))
        assert bad.returncode != 0
        r = _cli(BIN / "pipetask", "pre-exec-init-qbb", str(root), str(gpath))
        assert r.returncode == 0, r.stderr
        r = _cli(
            BIN / "pipetask",
            "run-qbb",
            str(root),
            str(gpath),
            "--qgraph-node-id",
            ",".join(str(i) for i in first),
            "--summary",
            str(root.parent / "s1.json"),
        )
        assert r.returncode == 0, r.stderr
    summary = json.loads((root.parent / "s1.json").read_text())
    assert summary["counts"]["done"] == 6

    # Register what finished (CLI), with the dataset types and the output chain.
    r = _cli(
        BIN / "butler",
        "transfer-from-graph",
        str(gpath),
        str(root),
        "--register-dataset-types",
        "--update-output-chain",
    )
    assert r.returncode == 0, r.stderr
    assert "Registered" in r.stdout
    with Butler(root) as b:
        run = graph.output_run
        assert list(b.registry.get_collection_chain("u/qbb")) == [run, toy.TOY_RAW_RUN]
        assert len(b.query_datasets("toyCalexp", collections=["u/qbb"])) == 4
        assert len(b.query_datasets("toyExposureSummary", collections=["u/qbb"])) == 2
        # Init outputs (configs, packages) were registered too.
        assert b.get("subtractMedian_config", collections=[run]) is not None
        n_after_first = len(b.query_datasets("*", collections=[run], find_first=False))

    with _NoRegistry(root):
        r = _cli(
            BIN / "pipetask",
            "run-qbb",
            str(root),
            str(gpath),
            "--qgraph-node-id",
            ",".join(str(i) for i in rest),
        )
        assert r.returncode == 0, r.stderr

    rep = transfer_from_graph(gpath, root, register_dataset_types=True, update_output_chain=True)
    assert rep.n_done == 9 and rep.n_quanta == 9
    assert rep.n_registered == 3 * 3  # 2 subtractMedian + 1 gatherMedians quanta x (output, metadata, log)
    assert rep.n_already == n_after_first

    again = transfer_from_graph(gpath, root, update_output_chain=True)
    assert again.n_registered == 0 and again.n_already == rep.n_already + rep.n_registered
    assert again.chain == [graph.output_run, toy.TOY_RAW_RUN]

    with Butler(root) as b:
        for (e, d), med in medians.items():
            raw = b.get(
                "toyRaw", collections=[toy.TOY_RAW_RUN], instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d
            )
            out = b.get(
                "toyCalexp", collections=["u/qbb"], instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d
            )
            np.testing.assert_array_equal(out, raw.astype(np.float32) - np.float32(med))
        s3 = b.get("toyExposureSummary", collections=["u/qbb"], instrument=toy.TOY_INSTRUMENT, exposure=3)
        assert s3["n"] == 2


def test_transfer_registers_only_finished_quanta(qbb_setup: Any) -> None:
    """A quantum without its metadata (killed mid-way) is not registered; its stale output is ignored."""
    graph, _medians, gpath, root = qbb_setup
    sm = [q for q in graph.quanta() if q.task_label == "subtractMedian"]
    r = _cli(BIN / "pipetask", "run-qbb", str(root), str(gpath), "--qgraph-node-id", str(sm[0].id))
    assert r.returncode == 0, r.stderr
    # Fake a worker killed after writing its output but before its metadata: copy the output file
    # of sm[0] to the predicted path of sm[1]'s output.
    from pipeline.execution._butler_adapter import predicted_file_info

    out0 = next(iter(sm[0].outputs["outputImage"]))
    out1 = next(iter(sm[1].outputs["outputImage"]))
    p0 = root / predicted_file_info(root, out0).path
    p1 = root / predicted_file_info(root, out1).path
    p1.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(p0, p1)
    rep = transfer_from_graph(gpath, root, register_dataset_types=True)
    assert rep.n_done == 1
    assert rep.n_registered == 3  # sm[0]: output + metadata + log (no init outputs: pre-exec-init not run)
    with Butler(root) as b:
        assert b.registry.get_dataset(out0.id) is not None
        assert b.registry.get_dataset(out1.id) is None


def test_transfer_errors(qbb_setup: Any) -> None:
    graph, _medians, gpath, root = qbb_setup
    from pipeline.execution.runner import ExecutionError

    with pytest.raises(ExecutionError, match="--register-dataset-types"):
        transfer_from_graph(gpath, root)
    r = _cli(BIN / "butler", "transfer-from-graph", str(root / "nope.qg"), str(root))
    assert r.returncode != 0 and "nope.qg" in r.stderr and "Traceback" not in r.stderr
    # A driver writing the same run holds its lock: the transfer is refused, nothing registered.
    from pipeline.execution.run_lock import RunLockedError, run_lock

    with Butler(root) as b, run_lock(b, graph.output_run):
        with pytest.raises(RunLockedError, match="is being written by"):
            transfer_from_graph(gpath, root, register_dataset_types=True)
    with Butler(root) as b:
        assert graph.output_run not in b.registry.query_collections()
        assert toy.TOY_RAW_RUN in b.registry.query_collections()
