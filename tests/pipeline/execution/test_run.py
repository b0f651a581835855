"""Execution: serial and process-pool runs, failure isolation, NoWorkFound, skip/extend/clobber,
provenance datasets, config checks on extended runs, and the driver's batched registration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import _toy_tasks as toy
import numpy as np
import pytest

from butler import Butler
from pipeline.execution.executors import ProcessPoolQuantumExecutor, SerialExecutor
from pipeline.execution.runner import ExecutionError, pre_exec_init, run_graph
from pipeline.graph.builder import EmptyGraphError, GraphBuilderError, build_quantum_graph
from pipeline.graph.collections import resolve_output_collections
from pipeline.pipeline_graph import PipelineGraph


def _tasks(**a: Any) -> list[tuple[str, type, Any]]:
    return [("subtractMedian", toy.SubtractMedianTask, toy.SubtractMedianConfig(**a)),
            ("gatherMedians", toy.GatherMediansTask, toy.GatherMediansConfig())]


def _graph(butler: Any, tasks: Any, *, output: str | None = "u/test", output_run: str | None = None,
           extend_run: bool = False, skip_existing: bool = False, clobber: bool = False, where: str = "") -> Any:
    colls = resolve_output_collections(butler.registry, inputs=[toy.TOY_RAW_RUN] if not extend_run else [],
                                       output=output, output_run=output_run, extend_run=extend_run,
                                       skip_existing=skip_existing)
    return build_quantum_graph(butler, PipelineGraph.from_tasks(tasks), collections=colls, where=where,
                               clobber_outputs=clobber)


def _execute(butler: Any, graph: Any, processes: int = 1, tmp: Path | None = None, **kw: Any) -> Any:
    pre_exec_init(butler, graph, register_dataset_types=True)
    if processes == 1:
        ex: Any = SerialExecutor(graph, butler.root)
    else:
        assert tmp is not None
        path = graph.save(tmp / "run.qg")
        ex = ProcessPoolQuantumExecutor(path, butler.root, processes)
    try:
        return run_graph(butler, graph, ex, progress="none", **kw)
    finally:
        ex.shutdown()


def _check_outputs(butler: Any, collection: str, medians: dict[tuple[int, int], float],
                   exposures: tuple[int, ...] = (1, 2, 3)) -> None:
    for e in exposures:
        for d in (0, 1):
            raw = butler.get("toyRaw", collections=[toy.TOY_RAW_RUN], instrument=toy.TOY_INSTRUMENT,
                             exposure=e, detector=d)
            out = butler.get("toyCalexp", collections=[collection], instrument=toy.TOY_INSTRUMENT,
                             exposure=e, detector=d)
            np.testing.assert_allclose(out, raw.astype(np.float32) - medians[(e, d)])
            md = butler.get("subtractMedian_metadata", collections=[collection], instrument=toy.TOY_INSTRUMENT,
                            exposure=e, detector=d)
            assert md["task"]["subtractMedian"]["median"] == medians[(e, d)]
            assert md["quantum"]["endMaxResidentSetSize"] > 0 and md["butler_metrics"]["n_put"] == 1
        summary = butler.get("toyExposureSummary", collections=[collection], instrument=toy.TOY_INSTRUMENT,
                             exposure=e)
        assert summary["n"] == 2
        for d in (0, 1):
            raw = butler.get("toyRaw", collections=[toy.TOY_RAW_RUN], instrument=toy.TOY_INSTRUMENT,
                             exposure=e, detector=d)
            assert summary["means"][d] == pytest.approx(float(np.mean(raw)) - medians[(e, d)], abs=1e-4)


def test_serial_run_outputs_and_provenance(toy_repo: Any) -> None:
    butler, medians = toy_repo
    g = _graph(butler, _tasks())
    report = _execute(butler, g)
    assert report.success and report.count("done") == 9
    run = g.output_run
    assert run.startswith("u/test/")
    assert list(butler.registry.get_collection_chain("u/test")) == [run, toy.TOY_RAW_RUN]
    _check_outputs(butler, "u/test", medians)
    # Run-level provenance.
    cfg = butler.get("subtractMedian_config", collections=[run])
    assert cfg["work_ms"] == 0.0
    pk = butler.get("packages", collections=[run])
    assert "numpy" in pk and pk["numpy"] == np.__version__
    logs = butler.get("subtractMedian_log", collections=[run], instrument=toy.TOY_INSTRUMENT, exposure=1, detector=0)
    assert isinstance(logs, list)
    # Every registered output has its file.
    for ref in butler.query_datasets("*", collections=[run]):
        assert butler.get_uri(ref).exists()


def test_process_pool_matches_serial(toy_repo: Any, tmp_path: Path) -> None:
    butler, medians = toy_repo
    g1 = _graph(butler, _tasks(), output=None, output_run="u/serial")
    assert _execute(butler, g1).success
    g2 = _graph(butler, _tasks(), output=None, output_run="u/pool")
    report = _execute(butler, g2, processes=2, tmp=tmp_path)
    assert report.success and report.count("done") == 9
    _check_outputs(butler, "u/pool", medians)
    for e in (1, 2, 3):
        for d in (0, 1):
            a = butler.get("toyCalexp", collections=["u/serial"], instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d)
            b = butler.get("toyCalexp", collections=["u/pool"], instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d)
            assert np.array_equal(a, b)


def test_failure_blocks_only_descendants(toy_repo: Any, tmp_path: Path) -> None:
    butler, medians = toy_repo
    g = _graph(butler, _tasks(fail_on=[2]))
    summary = tmp_path / "summary.json"
    report = _execute(butler, g, summary_path=summary)
    assert not report.success
    assert report.count("failed") == 2 and report.count("blocked") == 1 and report.count("done") == 6
    doc = json.loads(summary.read_text())
    assert doc["status"] == "failure" and doc["counts"]["failed"] == 2
    failed = [q for q in doc["quantaReports"] if q["status"] == "failed"]
    assert {q["dataId"]["exposure"] for q in failed} == {2}
    assert all("injected failure for exposure 2" in q["error"] for q in failed)
    run = g.output_run
    # Failed quanta: log (with the exception) registered, no metadata, no outputs.
    log = butler.get("subtractMedian_log", collections=[run], instrument=toy.TOY_INSTRUMENT, exposure=2, detector=0)
    assert any("injected failure" in (r.get("exc_info") or r["message"]) for r in log)
    assert butler.find_dataset("subtractMedian_metadata", collections=[run], instrument=toy.TOY_INSTRUMENT,
                               exposure=2, detector=0) is None
    assert butler.find_dataset("toyCalexp", collections=[run], instrument=toy.TOY_INSTRUMENT,
                               exposure=2, detector=0) is None
    _check_outputs(butler, run, medians, exposures=(1, 3))


def test_no_work_found_propagates(toy_repo: Any) -> None:
    butler, medians = toy_repo
    g = _graph(butler, _tasks(no_work_on=[1]))
    report = _execute(butler, g)
    assert report.success
    assert report.count("no_work") == 3 and report.count("done") == 6   # 2 subtract + 1 gather (exp 1)
    run = g.output_run
    md = butler.get("subtractMedian_metadata", collections=[run], instrument=toy.TOY_INSTRUMENT, exposure=1, detector=0)
    assert md["caveats"] == ["NO_WORK"]
    assert butler.find_dataset("toyCalexp", collections=[run], instrument=toy.TOY_INSTRUMENT,
                               exposure=1, detector=1) is None
    _check_outputs(butler, run, medians, exposures=(2, 3))


def test_skip_existing_and_extend_run(toy_repo: Any) -> None:
    butler, medians = toy_repo
    where = f"instrument='{toy.TOY_INSTRUMENT}' AND exposure IN (1, 2)"
    g = _graph(butler, _tasks(), where=where)
    assert _execute(butler, g).success
    # Same data again, --extend-run: nothing left to do.
    with pytest.raises(EmptyGraphError, match="already finished"):
        _graph(butler, _tasks(), extend_run=True, where=where)
    # Whole data set with --extend-run: only exposure 3 remains.
    g2 = _graph(butler, _tasks(), extend_run=True)
    assert g2.output_run == g.output_run
    assert g2.count_by_task() == {"subtractMedian": 2, "gatherMedians": 1}
    assert g2.metadata["skipped"] == {"subtractMedian": 4, "gatherMedians": 2}
    assert _execute(butler, g2).success
    _check_outputs(butler, "u/test", medians)


def test_extend_run_with_other_config_is_refused(toy_repo: Any) -> None:
    butler, _ = toy_repo
    where = f"instrument='{toy.TOY_INSTRUMENT}' AND exposure = 1"
    assert _execute(butler, _graph(butler, _tasks(), where=where)).success
    g2 = _graph(butler, _tasks(work_ms=2.0), extend_run=True)
    with pytest.raises(ExecutionError, match=r"subtractMedian.*work_ms: 0.0 != 2.0"):
        pre_exec_init(butler, g2)


def test_rerun_failed_quanta_needs_clobber(toy_repo: Any, monkeypatch: Any) -> None:
    butler, medians = toy_repo
    monkeypatch.setenv("CCDFLOW_TOY_FAIL", "3")
    g = _graph(butler, _tasks())
    assert _execute(butler, g).count("failed") == 2
    monkeypatch.delenv("CCDFLOW_TOY_FAIL")
    with pytest.raises(GraphBuilderError, match="--clobber-outputs"):
        _graph(butler, _tasks(), extend_run=True)
    g2 = _graph(butler, _tasks(), extend_run=True, clobber=True)
    assert g2.count_by_task() == {"subtractMedian": 2, "gatherMedians": 1}
    assert len(g2.metadata["clobber_refs"]) == 2      # the two stale _log datasets
    assert _execute(butler, g2).success
    _check_outputs(butler, "u/test", medians)


def test_missing_dataset_type_needs_flag(toy_repo: Any) -> None:
    butler, _ = toy_repo
    g = _graph(butler, _tasks())
    with pytest.raises(ExecutionError, match="--register-dataset-types"):
        pre_exec_init(butler, g, register_dataset_types=False)
    # nothing was written: the run does not exist
    assert "u/test" not in [c for c in butler.registry.query_collections("u/*")]


def test_timeout_fails_the_quantum(toy_repo: Any) -> None:
    butler, _ = toy_repo
    g = _graph(butler, _tasks(sleep_s=2.0), where=f"instrument='{toy.TOY_INSTRUMENT}' AND exposure = 1 AND detector = 0")
    pre_exec_init(butler, g, register_dataset_types=True)
    report = run_graph(butler, g, SerialExecutor(g, butler.root, timeout=0.3), progress="none")
    assert report.count("failed") == 1 and report.count("blocked") == 1
    (failed,) = [q for q in report.quanta.values() if q.status == "failed"]
    assert "QuantumTimeoutError" in failed.error


def test_packages_versions_equal_importlib_metadata() -> None:
    """The ``packages`` dataset's versions (read from the METADATA header) equal `importlib.metadata`."""
    from importlib import metadata

    from pipeline.execution.runner import _dist_version, packages_versions

    got = packages_versions()
    assert got["numpy"] == metadata.version("numpy") == np.__version__
    for name in ("ccdflow", "numpy", "scipy", "astropy", "sqlalchemy", "pydantic"):
        try:
            assert got[name] == metadata.version(name)
        except metadata.PackageNotFoundError:
            assert name not in got
    dists = list(metadata.distributions())
    assert len(dists) > 10
    assert [_dist_version(d) for d in dists] == [d.version for d in dists]


def test_dist_version_reads_the_header_only() -> None:
    """A ``Version:`` line in the description (after the header block) is not the version."""
    from importlib import metadata

    from pipeline.execution.runner import _dist_version

    class Fake(metadata.Distribution):
        def __init__(self, text: str) -> None:
            self.text = text

        def read_text(self, filename: str) -> str | None:
            return self.text if filename == "METADATA" else None

        def locate_file(self, path: Any) -> Any:
            return Path(path)

    body = "Metadata-Version: 2.1\nName: fake\nVersion:  1.2.3rc1 \nSummary: x\n\nVersion: 9.9\n"
    fake = Fake(body)
    assert _dist_version(fake) == fake.version == "1.2.3rc1 "  # email keeps trailing blanks
    crlf = Fake(body.replace("\n", "\r\n"))
    assert _dist_version(crlf) == crlf.version == "1.2.3rc1 "
    no_field = Fake("Metadata-Version: 2.1\nName: fake\n\nVersion: 9.9\n")
    assert _dist_version(no_field) is no_field.version is None


def test_pipetask_run_records_its_graph_without_the_report_models(toy_repo: Any, tmp_path: Path) -> None:
    """``pipetask run`` saves its graph for ``pipetask report`` without the report's models or (-j 1) a pool.

    The report module defines pydantic models; the pool needs ``multiprocessing``.
    """
    import subprocess
    import sys

    butler, _ = toy_repo
    root = Path(butler.root)
    butler.close()
    pipe = tmp_path / "toy.yaml"
    pipe.write_text(toy.TOY_PIPELINE_YAML)
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom pipeline.cli import pipetask\n"
        f"r = CliRunner().invoke(pipetask, ['run', '-b', {str(root)!r}, '-p', {str(pipe)!r}, '-i', "
        f"{toy.TOY_RAW_RUN!r}, '-o', 'u/rec', '--register-dataset-types', '--no-progress'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('pipeline.execution.report' in sys.modules, 'pipeline.execution.run_graphs' in sys.modules,\n"
        "      'concurrent.futures.process' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = proc.stdout.split()
    assert out[-3:] == ["False", "True", "False"]  # a serial run needs no process-pool machinery
    from pipeline.execution.report import saved_graphs

    with Butler(root) as b:
        run = b.registry.get_collection_chain("u/rec")[0]
    graphs = saved_graphs(root)
    assert list(graphs) == [run] and len(graphs[run]) == 1
