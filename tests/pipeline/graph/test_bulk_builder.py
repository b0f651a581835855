"""The builder's bulk path (`QuantumGraphBuilder._add_quanta_bulk`) builds the graph the
per-quantum reference path builds (``bulk=False``): same quanta, data IDs with their records,
inputs, outputs, edges, datastore records, init outputs and task info; only the ids of the
predicted datasets and quanta differ (they are random), so they are compared by what they name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import _toy_tasks as toy
import numpy as np
import pytest

from pipeline.graph.builder import QuantumGraphBuilder
from pipeline.graph.collections import resolve_output_collections
from pipeline.graph.quantum_graph import QuantumGraph
from pipeline.pipeline_graph import PipelineGraph

from .shape_tasks import (
    ApplyBiasConfig,
    ApplyBiasTask,
    CombinePerDetectorConfig,
    CombinePerDetectorTask,
    NormalizePerFilterConfig,
    NormalizePerFilterTask,
)


def _tasks() -> list[tuple[str, type, Any]]:
    """Five tasks in two independent subgraphs: a calibration lookup (applyBias), 1:1
    (subtractMedian), gathers per exposure / detector / filter, an output with more dimensions than
    its task (normalize's per-exposure outputs)."""
    return [("subtractMedian", toy.SubtractMedianTask, toy.SubtractMedianConfig()),
            ("gatherMedians", toy.GatherMediansTask, toy.GatherMediansConfig()),
            ("combine", CombinePerDetectorTask, CombinePerDetectorConfig()),
            ("normalize", NormalizePerFilterTask, NormalizePerFilterConfig()),
            ("applyBias", ApplyBiasTask, ApplyBiasConfig())]


def _certify_bias(butler: Any) -> None:
    from butler import CollectionType, DatasetType, Timespan

    reg = butler.registry
    reg.register_dataset_type(DatasetType("toyBias", ("instrument", "detector"), "NumpyArray",
                                          is_calibration=True))
    reg.register_collection("calib", CollectionType.CALIBRATION)
    reg.register_run("calib/run")
    refs = [butler.put(np.full((8, 8), 5.0, dtype=np.float32), "toyBias", instrument=toy.TOY_INSTRUMENT,
                       detector=d, run="calib/run") for d in (0, 1)]
    reg.certify("calib", refs, Timespan.from_ns(0, None))


def _build(butler: Any, bulk: bool, where: str = "") -> tuple[QuantumGraph, list[str]]:
    colls = resolve_output_collections(butler.registry, inputs=[toy.TOY_RAW_RUN, "calib"],
                                       output_run="u/bulk")
    builder = QuantumGraphBuilder(PipelineGraph.from_tasks(_tasks()), butler, collections=colls, where=where,
                                  bulk=bulk)
    used: list[str] = []
    inner = builder._add_quanta_bulk

    def spy(task: Any, *args: Any) -> None:
        used.append(task.label)
        inner(task, *args)

    builder._add_quanta_bulk = spy  # type: ignore[method-assign]
    return builder.build(), used


def _canonical(g: QuantumGraph) -> dict[str, Any]:
    """The graph with every predicted dataset named by (type, data ID, run) and every quantum by
    (task, data ID): what two builds of the same pipeline must agree on."""
    run = g.metadata["output_run"]

    def ds(r: Any) -> tuple[Any, ...]:
        name = (r.dataset_type.name, r.data_id.key, r.run, r.data_id.to_dict())
        return name if r.run == run else (*name, str(r.id))  # existing inputs keep their ids

    qname = {}
    quanta = {}
    for q in g.quanta():
        key = (q.task_label, q.data_id.key)
        qname[q.id] = key
        quanta[key] = {"data_id": q.data_id.to_dict(),
                       **{role: {c: [ds(r) for r in refs] for c, refs in getattr(q, role).items()}
                          for role in ("inputs", "prerequisites", "outputs")}}
    assert len(quanta) == len(g)
    md = {k: v for k, v in g.metadata.items() if k not in ("build_seconds", "output_run", "output_chain",
                                                          "output", "run")}
    return {"quanta": quanta,
            "edges": sorted((qname[a], qname[b]) for a, b in g.edges()),
            "records": {str(k): v for k, v in g.datastore_records.items()},
            "init_outputs": {k: [ds(r) for r in v] for k, v in g.init_outputs.items()},
            "tasks": {k: t.to_dict() for k, t in g.tasks.items()},
            "metadata": md}


def _same(a: QuantumGraph, b: QuantumGraph) -> None:
    ca, cb = _canonical(a), _canonical(b)
    for part in ca:
        assert ca[part] == cb[part], part


@pytest.mark.parametrize("chunk", [32768, 4])  # all quanta of a task at once; in chunks of 4
def test_bulk_and_per_quantum_builders_make_the_same_graph(toy_repo: Any, tmp_path: Path, monkeypatch: Any,
                                                           chunk: int) -> None:
    monkeypatch.setattr(QuantumGraphBuilder, "_BULK_CHUNK", chunk)
    butler, _ = toy_repo
    _certify_bias(butler)
    fast, used = _build(butler, bulk=True)
    slow, not_used = _build(butler, bulk=False)
    assert not_used == []
    # The simple tasks went through the bulk path; the calibration and multi-output ones did not.
    assert sorted(used) == ["combine", "gatherMedians", "subtractMedian"]
    assert fast.count_by_task() == {"subtractMedian": 6, "gatherMedians": 3, "combine": 2, "normalize": 1,
                                    "applyBias": 6}
    _same(fast, slow)
    # Datastore records: the raws and the two biases, read in bulk.
    assert len(fast.datastore_records) == 6 + 2
    # The same after a save and a load (the columns the bulk path wrote are a valid file).
    _same(QuantumGraph.load(fast.save(tmp_path / "fast.qg")), slow)
    # Every id is unique and a version-7 UUID.
    ids = [r.id for r in fast.all_output_refs()] + list(fast.quantum_ids)
    # outputs (3 per quantum, normalize 6), 5 configs + packages, 18 quanta
    assert len(set(ids)) == len(ids) == (6 * 3 + 3 * 3 + 2 * 3 + 6 + 6 * 3) + 6 + 18
    assert {u.version for u in ids} == {7}


def test_bulk_path_with_a_data_query(toy_repo: Any) -> None:
    butler, _ = toy_repo
    _certify_bias(butler)
    where = f"instrument='{toy.TOY_INSTRUMENT}' AND exposure IN (1, 3) AND detector = 1"
    fast, used = _build(butler, bulk=True, where=where)
    slow, _ = _build(butler, bulk=False, where=where)
    assert fast.count_by_task()["subtractMedian"] == 2 and "subtractMedian" in used
    _same(fast, slow)
