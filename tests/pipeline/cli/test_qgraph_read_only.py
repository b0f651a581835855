"""``pipetask qgraph`` through the SQLAlchemy-free read-only butler equals the registry's graph.

Each graph is built twice, with the read-only butler (`butler.registry._sqlite_read_only`, the
default on SQLite) and with ``BUTLER_CLI_FAST=0`` (a `butler.Butler`, SQLAlchemy), saved, loaded
and compared field by field: quanta in storage order with their data IDs and dimension records,
every input, prerequisite and output, the datastore records of the inputs, the init outputs, task
configs, dataset types, edges and metadata. Predicted dataset and quantum UUIDs are random, so
predicted outputs are compared by dataset type, data ID and RUN, and quanta by position.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import _toy_tasks as toy
import pytest
from click.testing import CliRunner

from butler import Butler, CollectionType, DatasetType, StoredFileInfo, Timespan
from pipeline.cli import graph_commands, pipetask
from pipeline.graph.quantum_graph import QuantumGraph

REPO_ROOT = Path(__file__).resolve().parents[3]

#: Graph metadata that differs from one build to the next (time taken).
_VOLATILE_METADATA = {"build_seconds"}


def _ref_sig(ref: Any, predicted: set[UUID]) -> tuple[Any, ...]:
    dc = ref.data_id
    records = {k: v.to_dict() for k, v in dc.records.items()}
    return (
        ref.dataset_type.name,
        ref.dataset_type.storage_class,
        ref.dataset_type.dimensions,
        ref.dataset_type.is_calibration,
        dc.to_simple(),
        json.dumps(records, sort_keys=True, default=str),
        ref.run,
        None if ref.id in predicted else ref.id,
    )


def graph_signature(graph: QuantumGraph) -> dict[str, Any]:
    """Everything a graph holds, with the random UUIDs of what it predicts left out."""
    quanta = [graph.quantum_at(i) for i in range(len(graph))]
    predicted = {r.id for q in quanta for refs in q.outputs.values() for r in refs}
    predicted |= {r.id for refs in graph.init_outputs.values() for r in refs}

    def refs(conns: dict[str, list[Any]]) -> dict[str, list[tuple[Any, ...]]]:
        return {c: [_ref_sig(r, predicted) for r in rs] for c, rs in conns.items()}

    index = {q.id: i for i, q in enumerate(quanta)}
    return {
        "quanta": [
            (
                q.task_label,
                q.data_id.to_simple(),
                json.dumps(
                    {k: v.to_dict() for k, v in q.data_id.records.items()}, sort_keys=True, default=str
                ),
                refs(q.inputs),
                refs(q.prerequisites),
                refs(q.outputs),
            )
            for q in quanta
        ],
        "edges": sorted((index[a], index[b]) for a, b in graph.edges()),
        "init_outputs": refs(graph.init_outputs),
        "tasks": {label: t.to_dict() for label, t in graph.tasks.items()},
        "dataset_types": {
            n: (dt.dimensions, dt.storage_class, dt.is_calibration) for n, dt in graph.dataset_types.items()
        },
        "datastore_records": {i: info.to_dict() for i, info in graph.datastore_records.items()},
        "datastore_record_order": list(graph.datastore_records),
        "metadata": {k: v for k, v in graph.metadata.items() if k not in _VOLATILE_METADATA},
    }


def _qgraph_both_ways(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str]) -> tuple[Any, Any]:
    """Build and save the graph with the read-only butler, then with the registry; load both."""
    fast_file, slow_file = tmp_path / "fast.qg", tmp_path / "slow.qg"
    real_make_butler = graph_commands._make_butler

    def no_registry(*a: Any, **k: Any) -> Any:
        raise AssertionError("the read-only build fell back to the registry")

    monkeypatch.setenv("BUTLER_CLI_FAST", "1")
    monkeypatch.setattr(graph_commands, "_make_butler", no_registry)
    r = CliRunner().invoke(pipetask, ["qgraph", *args, "-q", str(fast_file)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    monkeypatch.setattr(graph_commands, "_make_butler", real_make_butler)
    monkeypatch.setenv("BUTLER_CLI_FAST", "0")
    r = CliRunner().invoke(pipetask, ["qgraph", *args, "-q", str(slow_file)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return QuantumGraph.load(fast_file), QuantumGraph.load(slow_file)


def _assert_same(fast: QuantumGraph, slow: QuantumGraph) -> None:
    a, b = graph_signature(fast), graph_signature(slow)
    for key in a:
        assert a[key] == b[key], key


def test_toy_graph_equal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """10 x 9 toy raws (the benchmark's 100 quanta), with and without a data query."""
    butler, _ = toy.make_toy_repo(tmp_path / "repo", 10, 9, shape=(4, 4))
    pipe = tmp_path / "toy.yaml"
    pipe.write_text(toy.TOY_PIPELINE_YAML)
    common = ["-b", str(butler.root), "-p", str(pipe), "-i", toy.TOY_RAW_RUN, "--output-run", "u/toy"]
    fast, slow = _qgraph_both_ways(monkeypatch, tmp_path, common)
    assert len(fast) == 100 and fast.count_by_task() == {"subtractMedian": 90, "gatherMedians": 10}
    assert len(fast.datastore_records) == 90
    _assert_same(fast, slow)
    where = ["-d", f"instrument = '{toy.TOY_INSTRUMENT}' AND exposure IN (2..4) AND detector > 5"]
    fast, slow = _qgraph_both_ways(monkeypatch, tmp_path, [*common, *where])
    assert fast.count_by_task() == {"subtractMedian": 9, "gatherMedians": 3}
    _assert_same(fast, slow)
    # No overall input has the subgraph's dimensions: the data-ID query itself (query_data_ids).
    fast, slow = _qgraph_both_ways(monkeypatch, tmp_path, [*common, "--dataset-query-constraint", "off"])
    assert len(fast) == 100
    _assert_same(fast, slow)


def test_refused_read_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A read the read-only butler refuses, even one the builder catches, makes qgraph use the registry."""
    from butler.registry import _sqlite_read_only

    butler, _ = toy.make_toy_repo(tmp_path / "repo", 2, 2, shape=(4, 4))
    pipe = tmp_path / "toy.yaml"
    pipe.write_text(toy.TOY_PIPELINE_YAML)
    refused = []

    def refuse(self: Any, *a: Any, **k: Any) -> Any:
        def run() -> None:
            refused.append(True)
            raise _sqlite_read_only.FastPathUnavailableError("refused by the test")

        return self._guard(run)

    # The builder catches a failed dataset query of the lead input and tries query_data_ids.
    monkeypatch.setattr(_sqlite_read_only.SqliteReadOnlyButler, "query_datasets", refuse)
    used = []
    real_make_butler = graph_commands._make_butler
    monkeypatch.setattr(graph_commands, "_make_butler",
                        lambda *a, **k: used.append(1) or real_make_butler(*a, **k))
    qg = tmp_path / "g.qg"
    args = ["qgraph", "-b", str(butler.root), "-p", str(pipe), "-i", toy.TOY_RAW_RUN, "--output-run", "u/x",
            "-q", str(qg)]
    r = CliRunner().invoke(pipetask, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert refused and used == [1]
    assert QuantumGraph.load(qg).count_by_task() == {"subtractMedian": 4, "gatherMedians": 2}


def test_failed_build_gives_the_registry_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A build failing with the read-only butler (unknown input collection) gives the registry's error."""
    butler, _ = toy.make_toy_repo(tmp_path / "repo", 2, 2, shape=(4, 4))
    pipe = tmp_path / "toy.yaml"
    pipe.write_text(toy.TOY_PIPELINE_YAML)
    args = ["qgraph", "-b", str(butler.root), "-p", str(pipe), "-i", "ToyCam/raw/al", "--output-run", "u/x"]
    outputs = []
    for fast in ("1", "0"):
        monkeypatch.setenv("BUTLER_CLI_FAST", fast)
        r = CliRunner().invoke(pipetask, args)
        assert r.exit_code == 1
        outputs.append(r.output)
    assert outputs[0] == outputs[1]
    assert "input collection(s) ToyCam/raw/al do not exist" in outputs[0]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [([], "Quantum graph: 4 quanta"), (["--show", "config=work_ms"], "config.work_ms=0.0")],
)
def test_qgraph_imports_no_sqlalchemy(tmp_path: Path, extra: list[str], expected: str) -> None:
    """The whole ``pipetask qgraph`` process (or its pipeline ``--show``) never imports SQLAlchemy."""
    butler, _ = toy.make_toy_repo(tmp_path / "repo", 2, 2, shape=(4, 4))
    code = (
        "import sys; from pipeline.cli.pipetask import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('SQLALCHEMY', 'sqlalchemy' in sys.modules)\n"
    )
    args = ["qgraph", "-b", str(butler.root), "-t", "_toy_tasks.SubtractMedianTask:subtractMedian",
            "-i", toy.TOY_RAW_RUN, "--output-run", "u/x", *extra]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    out = proc.stdout
    assert expected in out
    assert "SQLALCHEMY False" in out


def _kast_repo(root: Path, shared_data: Path) -> Butler:
    from pipeline.instruments import ingest_raws, register_instrument

    butler = Butler.create(root)
    register_instrument(butler, "kast_blue")
    ingest_raws(butler, sorted((shared_data / "raw" / "kast_blue").glob("*.fits*")))
    return butler


def _certify_bias(butler: Butler) -> None:
    """Certify a bias for detector 0 for all time in ``kast_blue/calib`` (its file is never read)."""
    from pipeline.definitions import Pipeline

    node = Pipeline.from_file(str(REPO_ROOT / "pipelines" / "cpPtc.yaml")).to_graph().dataset_types["bias"]
    dt = DatasetType("bias", node.dimensions, node.storage_class, is_calibration=True)
    reg = butler.registry
    reg.register_dataset_type(dt)
    reg.register_run("kast_blue/calib/run")
    detector = butler.query_dimension_records("detector")[0].id
    (ref,) = reg.insert_datasets(
        dt, [{"instrument": "kast_blue", "detector": detector}], "kast_blue/calib/run"
    )
    reg.insert_file_records(
        [(ref.id, StoredFileInfo("calib/bias.fits", "some.Formatter", dt.storage_class, None, 1))]
    )
    reg.register_collection("kast_blue/calib", CollectionType.CALIBRATION)
    reg.certify("kast_blue/calib", [ref], Timespan.from_ns(None, None))


def test_real_cpbias_cpptc_graphs_equal(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Check cpBias over the Kast biases, cpPtc over its flats with a certified bias (calibrations)."""
    butler = _kast_repo(tmp_path / "repo", shared_data)
    _certify_bias(butler)
    repo = str(butler.root)
    bias_args = [
        "-b",
        repo,
        "-p",
        str(REPO_ROOT / "pipelines" / "cpBias.yaml"),
        "-i",
        "kast_blue/raw/all",
        "--output-run",
        "u/bias",
        "-d",
        "instrument = 'kast_blue' AND exposure.observation_type = 'bias'",
    ]
    fast, slow = _qgraph_both_ways(monkeypatch, tmp_path, bias_args)
    assert fast.count_by_task() == {"cpBiasIsr": 3, "cpBiasCombine": 1}
    _assert_same(fast, slow)
    ptc_args = [
        "-b",
        repo,
        "-p",
        str(REPO_ROOT / "pipelines" / "cpPtc.yaml"),
        "-i",
        "kast_blue/raw/all,kast_blue/calib",
        "--output-run",
        "u/ptc",
        "-d",
        "exposure.observation_type = 'flat'",
    ]
    fast, slow = _qgraph_both_ways(monkeypatch, tmp_path, ptc_args)
    counts = fast.count_by_task()
    assert counts["ptcIsr"] == 3 and counts["ptcSolve"] == 1
    bias_inputs = [r for q in fast.quanta_for_task("ptcIsr") for r in q.prerequisites["bias"]]
    assert len(bias_inputs) == 3 and len({r.id for r in bias_inputs}) == 1
    assert bias_inputs[0].id in fast.datastore_records
    _assert_same(fast, slow)
    # isr.yaml: bias and flat lookups; no flat type is registered (the registry's MissingDatasetTypeError
    # per quantum, answered the same way by the read-only butler), so flats are simply absent.
    isr_args = ["-b", repo, "-p", str(REPO_ROOT / "pipelines" / "isr.yaml"), "-i",
                "kast_blue/raw/all,kast_blue/calib", "--output-run", "u/isr",
                "-d", "exposure.observation_type IN ('flat', 'arc')"]
    fast, slow = _qgraph_both_ways(monkeypatch, tmp_path, isr_args)
    assert fast.count_by_task() == {"isr": 4}
    assert all(len(q.prerequisites["bias"]) == 1 and not q.prerequisites.get("flat") for q in fast.quanta())
    _assert_same(fast, slow)


def test_task_classes_import_no_astropy_scipy_matplotlib() -> None:
    """Loading every pipeline of pipelines/ (task classes, configs, connections) imports none of them.

    Building a graph imports each task class; astropy, scipy and matplotlib are imported by the
    code that reads or writes FITS, fits or draws (about 1 s of imports for cpPtc otherwise).
    """
    code = (
        "import glob, sys\n"
        "from pipeline.definitions import Pipeline\n"
        "n = sum(len(Pipeline.from_file(p).to_graph().tasks) for p in sorted(glob.glob(sys.argv[1])))\n"
        "heavy = ('astropy', 'scipy', 'matplotlib', 'numcodecs', 'astroscrappy', 'sqlalchemy')\n"
        "print(n, sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO_ROOT / "pipelines" / "*.yaml")],
                         capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert int(out[0]) >= 40
    assert out[1].strip() == "[]"


def test_saved_graph_show_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``qgraph -g FILE -b REPO --show uri``: the same output both ways, and no SQLAlchemy import."""
    butler, _ = toy.make_toy_repo(tmp_path / "repo", 2, 2, shape=(4, 4))
    qg = tmp_path / "g.qg"
    base = ["qgraph", "-b", str(butler.root), "-t", "_toy_tasks.SubtractMedianTask:subtractMedian"]
    r = CliRunner().invoke(pipetask, [*base, "-i", toy.TOY_RAW_RUN, "--output-run", "u/x", "-q", str(qg)])
    assert r.exit_code == 0, r.output
    args = ["qgraph", "-b", str(butler.root), "-g", str(qg), "--show", "uri"]
    outputs = []
    for fast in ("1", "0"):
        monkeypatch.setenv("BUTLER_CLI_FAST", fast)
        r = CliRunner().invoke(pipetask, args, catch_exceptions=False)
        assert r.exit_code == 0, r.output
        outputs.append(r.output)
    assert outputs[0] == outputs[1] and outputs[0].count(str(butler.root)) >= 4
    code = (
        "import sys; from pipeline.cli.pipetask import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('SQLALCHEMY', 'sqlalchemy' in sys.modules)\n"
    )
    monkeypatch.setenv("BUTLER_CLI_FAST", "1")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    assert "SQLALCHEMY False" in proc.stdout
