"""Quantum-graph building: shapes per dimension pattern, calibrations by time, file round trip,
``--show`` views and every build error."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import _toy_tasks as toy
import numpy as np
import pytest

from pipeline.exceptions import PipelineGraphError
from pipeline.graph.builder import (
    EmptyGraphError,
    MissingPrerequisiteError,
    build_quantum_graph,
)
from pipeline.graph.collections import OutputCollectionError, resolve_output_collections
from pipeline.graph.display import show_graph, write_dot
from pipeline.graph.quantum_graph import QuantumGraph, QuantumGraphFileError
from pipeline.pipeline_graph import PipelineGraph

from .shape_tasks import (
    ApplyBiasConfig,
    ApplyBiasTask,
    CombinePerDetectorConfig,
    CombinePerDetectorTask,
    NormalizePerFilterConfig,
    NormalizePerFilterTask,
)


def _toy_pipeline(**a: Any) -> list[tuple[str, type, Any]]:
    return [("subtractMedian", toy.SubtractMedianTask, toy.SubtractMedianConfig(**a)),
            ("gatherMedians", toy.GatherMediansTask, toy.GatherMediansConfig())]


def _build(butler: Any, tasks: Any, run: str = "u/test/run", where: str = "", **kw: Any) -> Any:
    colls = resolve_output_collections(butler.registry, inputs=kw.pop("inputs", [toy.TOY_RAW_RUN]),
                                       output_run=run, extend_run=kw.pop("extend_run", False))
    return build_quantum_graph(butler, PipelineGraph.from_tasks(tasks), collections=colls, where=where, **kw)


def test_per_exposure_detector_and_per_exposure_gather(toy_repo: Any) -> None:
    butler, _ = toy_repo
    g = _build(butler, _toy_pipeline())
    assert g.count_by_task() == {"subtractMedian": 6, "gatherMedians": 3}
    for q in g.quanta_for_task("subtractMedian"):
        (ref,) = q.inputs["inputImage"]
        assert ref.data_id.required == q.data_id.required and ref.run == toy.TOY_RAW_RUN
        assert [r.dataset_type.name for r in q.outputs["outputImage"]] == ["toyCalexp"]
        assert q.metadata_ref.dataset_type.name == "subtractMedian_metadata"
        assert q.log_ref.dataset_type.name == "subtractMedian_log"
    for q in g.quanta_for_task("gatherMedians"):
        dets = sorted(r.data_id["detector"] for r in q.inputs["inputImages"])
        assert dets == [0, 1]
        assert {r.data_id["exposure"] for r in q.inputs["inputImages"]} == {q.data_id["exposure"]}
        # each gather quantum depends on exactly the 2 producers of its inputs
        assert len(g.predecessors(q.id)) == 2
    # Every predicted output has its own UUID, all in the output run.
    outs = list(g.all_output_refs())
    assert len({r.id for r in outs}) == len(outs) == 6 * 3 + 3 * 3 + 2 + 1
    assert {r.run for r in outs} == {"u/test/run"}
    # Inputs carry their datastore records (so workers need no registry).
    raw_ids = {r.id for q in g.quanta_for_task("subtractMedian") for r in q.inputs["inputImage"]}
    assert raw_ids == set(g.datastore_records)


def test_per_detector_and_per_filter_gathers(toy_repo: Any) -> None:
    butler, _ = toy_repo
    tasks = _toy_pipeline() + [("combine", CombinePerDetectorTask, CombinePerDetectorConfig()),
                               ("normalize", NormalizePerFilterTask, NormalizePerFilterConfig())]
    g = _build(butler, tasks)
    assert g.count_by_task() == {"subtractMedian": 6, "gatherMedians": 3, "combine": 2, "normalize": 1}
    for q in g.quanta_for_task("combine"):
        assert sorted(r.data_id["exposure"] for r in q.inputs["inputs"]) == [1, 2, 3]
        assert {r.data_id["detector"] for r in q.inputs["inputs"]} == {q.data_id["detector"]}
    (norm,) = g.quanta_for_task("normalize")
    assert norm.data_id["physical_filter"] == "toy_r"
    assert len(norm.inputs["inputs"]) == 6
    assert sorted(r.data_id["exposure"] for r in norm.outputs["expScales"]) == [1, 2, 3]
    assert len(g.predecessors(norm.id)) == 6


def test_data_query_restricts_graph(toy_repo: Any) -> None:
    butler, _ = toy_repo
    g = _build(butler, _toy_pipeline(), where=f"instrument='{toy.TOY_INSTRUMENT}' AND exposure IN (1, 3) AND detector = 1")
    assert g.count_by_task() == {"subtractMedian": 2, "gatherMedians": 2}
    assert sorted(q.data_id["exposure"] for q in g.quanta_for_task("subtractMedian")) == [1, 3]


def test_empty_graph_names_the_constraint(toy_repo: Any) -> None:
    butler, _ = toy_repo
    with pytest.raises(EmptyGraphError, match="exposure = 99"):
        _build(butler, _toy_pipeline(), where=f"instrument='{toy.TOY_INSTRUMENT}' AND exposure = 99")
    butler.registry.register_run("empty/run")
    with pytest.raises(EmptyGraphError, match="no 'toyRaw' datasets in the input collections"):
        _build(butler, _toy_pipeline(), inputs=["empty/run"])


def test_output_collection_errors(toy_repo: Any) -> None:
    butler, _ = toy_repo
    reg = butler.registry
    with pytest.raises(OutputCollectionError, match="do not exist"):
        resolve_output_collections(reg, inputs=["nope"], output="u/x")
    with pytest.raises(OutputCollectionError, match="no output collection"):
        resolve_output_collections(reg, inputs=[toy.TOY_RAW_RUN])
    with pytest.raises(OutputCollectionError, match="not CHAINED"):
        resolve_output_collections(reg, inputs=[toy.TOY_RAW_RUN], output=toy.TOY_RAW_RUN)
    with pytest.raises(OutputCollectionError, match="already exists"):
        resolve_output_collections(reg, inputs=[toy.TOY_RAW_RUN], output_run=toy.TOY_RAW_RUN)
    with pytest.raises(OutputCollectionError, match="does not exist yet"):
        resolve_output_collections(reg, inputs=[toy.TOY_RAW_RUN], output="u/new", extend_run=True)
    c = resolve_output_collections(reg, inputs=[toy.TOY_RAW_RUN], output="u/new", timestamp="20260101T000000Z")
    assert c.run == "u/new/20260101T000000Z" and c.chain == [c.run, toy.TOY_RAW_RUN]


def _certify(butler: Any, value: float, begin_exposure_ns: int, end_ns: int | None, collection: str,
             name: str = "toyBias", run: str = "calib/run") -> None:
    from butler import CollectionType, DatasetType, Timespan

    reg = butler.registry
    dt = DatasetType(name, ("instrument", "detector"), "NumpyArray", is_calibration=True)
    reg.register_dataset_type(dt)
    reg.register_collection(collection, CollectionType.CALIBRATION)
    run = f"{run}/{value:g}"
    reg.register_run(run)
    refs = [butler.put(np.full((8, 8), value, dtype=np.float32), name, instrument=toy.TOY_INSTRUMENT,
                       detector=d, run=run) for d in (0, 1)]
    reg.certify(collection, refs, Timespan.from_ns(begin_exposure_ns, end_ns))


def _exposure_begin(butler: Any, e: int) -> int:
    (rec,) = butler.query_dimension_records("exposure", instrument=toy.TOY_INSTRUMENT, exposure=e)
    return rec.timespan.begin_ns


def test_calibration_lookup_by_time(toy_repo: Any) -> None:
    butler, _ = toy_repo
    b2 = _exposure_begin(butler, 2)
    _certify(butler, 100.0, 0, b2, "calib")          # valid for exposure 1
    _certify(butler, 200.0, b2, None, "calib")       # valid from exposure 2 on
    g = _build(butler, [("applyBias", ApplyBiasTask, ApplyBiasConfig())], inputs=[toy.TOY_RAW_RUN, "calib"])
    assert len(g) == 6
    assert g.metadata["n_queries"] < 10     # batched per dataset type, not one lookup per quantum
    for q in g.quanta():
        (bias,) = q.prerequisites["bias"]
        expected = "calib/run/100" if q.data_id["exposure"] == 1 else "calib/run/200"
        assert bias.run == expected and bias.data_id["detector"] == q.data_id["detector"]
        assert q.prerequisites["optional"] == []   # minimum=0: optional, absent
        assert bias.id in g.datastore_records


def test_ambiguous_and_missing_calibration(toy_repo: Any) -> None:
    butler, _ = toy_repo
    b2 = _exposure_begin(butler, 2)
    _certify(butler, 100.0, 0, b2 + 10**9, "calib")   # boundary inside exposure 2
    _certify(butler, 200.0, b2 + 10**9, b2 + 2 * 10**9, "calib")
    with pytest.raises(MissingPrerequisiteError) as info:
        _build(butler, [("applyBias", ApplyBiasTask, ApplyBiasConfig())], inputs=[toy.TOY_RAW_RUN, "calib"])
    msg = str(info.value)
    assert "toyBias" in msg and "calib" in msg
    assert "mbiguous" in msg            # exposure 2 straddles two validity ranges
    assert "applyBias" in msg


def test_missing_calibration_names_type_data_id_and_collections(toy_repo: Any) -> None:
    butler, _ = toy_repo
    b2 = _exposure_begin(butler, 2)
    _certify(butler, 100.0, 0, b2, "calib")   # nothing for exposures 2 and 3
    with pytest.raises(MissingPrerequisiteError) as info:
        _build(butler, [("applyBias", ApplyBiasTask, ApplyBiasConfig())], inputs=[toy.TOY_RAW_RUN, "calib"])
    msg = str(info.value)
    assert "'toyBias'" in msg and "4 quanta" in msg and "'calib'" in msg and "exposure: 2" in msg


def test_graph_file_round_trip(toy_repo: Any, tmp_path: Path) -> None:
    butler, _ = toy_repo
    g = _build(butler, _toy_pipeline(work_ms=1.5))
    path = g.save(tmp_path / "g.qg")
    header = QuantumGraph.read_header(path)
    assert header["n_quanta"] == 9 and header["tasks"] == {"subtractMedian": 6, "gatherMedians": 3}
    g2 = QuantumGraph.load(path)
    assert len(g2) == len(g) and set(g2.quantum_ids) == set(g.quantum_ids)
    assert sorted(g2.edges()) == sorted(g.edges())
    assert g2.tasks["subtractMedian"].config["work_ms"] == 1.5
    assert g2.metadata["output_run"] == "u/test/run"
    for qid in g.quantum_ids:
        a, b = g[qid], g2[qid]
        assert a.task_label == b.task_label and a.data_id == b.data_id
        for role in ("inputs", "prerequisites", "outputs"):
            ra, rb = getattr(a, role), getattr(b, role)
            assert {k: [r.id for r in v] for k, v in ra.items()} == {k: [r.id for r in v] for k, v in rb.items()}
        # expanded records survive (file templates need them)
        assert b.data_id.records["exposure"].obs_id == a.data_id.records["exposure"].obs_id
    assert g2.datastore_records == g.datastore_records
    assert [r.id for r in g2.init_outputs[""]] == [r.id for r in g.init_outputs[""]]
    sub = QuantumGraph.load(path, nodes=[g.quantum_ids[0]])
    assert len(sub) == 1


def test_graph_file_errors(tmp_path: Path) -> None:
    with pytest.raises(QuantumGraphFileError, match="does not exist"):
        QuantumGraph.load(tmp_path / "missing.qg")
    bad = tmp_path / "bad.qg"
    bad.write_bytes(b"hello\n")
    with pytest.raises(QuantumGraphFileError, match="not a ccdflow quantum graph"):
        QuantumGraph.load(bad)
    newer = tmp_path / "newer.qg"
    newer.write_bytes(b"CCDFLOW-QG 99\n{}\n")
    with pytest.raises(QuantumGraphFileError, match="version 99"):
        QuantumGraph.load(newer)
    trunc = tmp_path / "trunc.qg"
    trunc.write_bytes(b"CCDFLOW-QG 1\n{}\nxx")
    with pytest.raises(QuantumGraphFileError, match="truncated or corrupt"):
        QuantumGraph.load(trunc)


def test_show_views_and_dot(toy_repo: Any, tmp_path: Path) -> None:
    butler, _ = toy_repo
    g = _build(butler, _toy_pipeline())
    out = io.StringIO()
    show_graph(g, "summary", out)
    text = out.getvalue()
    assert "9 quanta" in text and "subtractMedian  6" in text and "gatherMedians   3" in text
    out = io.StringIO()
    show_graph(g, "workflow", out)
    lines = out.getvalue().splitlines()
    assert sum(1 for x in lines if x.startswith("Quantum ")) == 9
    assert sum(1 for x in lines if x.startswith("Parent Quantum")) == 6
    out = io.StringIO()
    show_graph(g, "graph", out)
    text = out.getvalue()
    some = g.quanta_for_task("subtractMedian")[0]
    assert str(some.id) in text and str(some.inputs["inputImage"][0].id) in text and "path=" in text
    out = io.StringIO()
    show_graph(g, "uri", out, uri_for=lambda ref: f"/repo/{ref.dataset_type.name}")
    assert "/repo/toyCalexp" in out.getvalue()
    with pytest.raises(ValueError, match="not one of"):
        show_graph(g, "bogus", io.StringIO())
    dot = write_dot(g, tmp_path / "g.dot").read_text()
    assert dot.startswith("digraph") and dot.count("shape=box") == 9


def test_inconsistent_dataset_type_is_an_error(toy_repo: Any) -> None:
    butler, _ = toy_repo
    cfg = toy.GatherMediansConfig()
    cfg.connections.summary = "toyCalexp"   # produces toyCalexp with other dims & storage class
    tasks = [("subtractMedian", toy.SubtractMedianTask, toy.SubtractMedianConfig()),
             ("gatherMedians", toy.GatherMediansTask, cfg)]
    # The pipeline graph refuses it, before the builder makes any query.
    with pytest.raises(PipelineGraphError, match="toyCalexp"):
        _build(butler, tasks)


def test_format_version_2_file_is_still_read(tmp_path: Path) -> None:
    """A graph saved by the format-2 writer (3 exposures x 2 detectors toy) loads, and re-saves as
    the current version with the same quanta, refs, records and edges."""
    from pipeline.graph.quantum_graph import FORMAT_VERSION

    old = QuantumGraph.load(Path(__file__).parent / "data" / "toy_v2.qg")
    assert old.count_by_task() == {"subtractMedian": 6, "gatherMedians": 3}
    assert sum(len(s) for s in old.successor_indices()) == 6
    for q in old.quanta_for_task("gatherMedians"):
        assert sorted(r.data_id["detector"] for r in q.inputs["inputImages"]) == [0, 1]
    raw_ids = {r.id for q in old.quanta_for_task("subtractMedian") for r in q.inputs["inputImage"]}
    assert raw_ids == set(old.datastore_records) and len(raw_ids) == 6
    path = old.save(tmp_path / "v3.qg")
    assert QuantumGraph.read_header(path)["version"] == FORMAT_VERSION == 3
    new = QuantumGraph.load(path)
    assert new.quantum_ids == old.quantum_ids
    for qid in old.quantum_ids:
        a, b = old[qid], new[qid]
        assert a.data_id == b.data_id and a.data_id.records == b.data_id.records
        for role in ("inputs", "prerequisites", "outputs"):
            assert ({k: [(r.id, r.dataset_type.name, r.run) for r in v] for k, v in getattr(a, role).items()}
                    == {k: [(r.id, r.dataset_type.name, r.run) for r in v] for k, v in getattr(b, role).items()})
    assert dict(new.datastore_records) == dict(old.datastore_records)
    assert list(new.edges()) == list(old.edges())
    cut = tmp_path / "cut.qg"
    cut.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(QuantumGraphFileError, match="truncated or corrupt"):
        QuantumGraph.load(cut)


def test_bulk_uuid7_factory_matches_uuid7_layout() -> None:
    """The builder's bulk UUID maker gives what ``butler.datasets.uuid7`` gives: version 7, the RFC
    variant, the current millisecond in the top 48 bits, random and unique otherwise."""
    import time
    import uuid

    from butler.datasets import uuid7
    from pipeline.graph.builder import _UuidFactory

    before = time.time_ns() // 1_000_000
    make = _UuidFactory()
    ids = [make() for _ in range(10_000)]  # more than one batch
    after = time.time_ns() // 1_000_000
    ref = uuid7()
    assert all(isinstance(u, uuid.UUID) and u.version == ref.version == 7 for u in ids)
    assert {u.variant for u in ids} == {ref.variant} == {uuid.RFC_4122}
    assert all(before <= (u.int >> 80) <= after for u in ids)
    assert len(set(ids)) == len(ids)
    assert [u.int >> 80 for u in ids] == sorted(u.int >> 80 for u in ids)  # time-ordered
    assert uuid.UUID(bytes=ids[0].bytes) == ids[0] and hash(ids[0]) == hash(uuid.UUID(str(ids[0])))
    # the 74 random bits vary (not a constant pattern)
    assert len({u.int & ((1 << 62) - 1) for u in ids}) == len(ids)
    assert len({(u.int >> 64) & 0xFFF for u in ids}) > 1000



def test_required_data_id_at_equals_the_data_ids(toy_repo: Any, tmp_path: Path) -> None:
    """The record-free required values equal the data IDs' required values, built and loaded."""
    butler, _ = toy_repo
    g = _build(butler, _toy_pipeline())
    g2 = QuantumGraph.load(g.save(tmp_path / "g.qg"))
    for graph in (g, g2, g.subset(g.quantum_ids[:3])):
        for i in range(len(graph)):
            req = graph.required_data_id_at(i)
            assert req == dict(graph.data_id_at(i).required) and list(req) == list(graph.data_id_at(i).required)
    assert g.required_data_id_at(0)["instrument"] == toy.TOY_INSTRUMENT
