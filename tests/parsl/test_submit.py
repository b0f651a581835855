"""``pipetask submit SUBMIT.yaml`` end to end on a local Parsl HighThroughputExecutor: one command
builds the graph, takes the run lock, runs on Parsl and registers the outputs. The driver is
interrupted (SIGINT) after two finished quanta (exposure 1 fails on the workers): it exits 130,
registers what finished (no dataset without its file), cleans Parsl up, and the run is finished
by a resume (``extend_run`` + ``skip_existing`` + ``clobber_outputs``) with the same config.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import _toy_tasks as toy
import numpy as np
import pytest

from butler import Butler
from pipeline.cli.options import load_pipeline
from pipeline.execution.submit import SubmitConfigError, execute_graph, submit
from pipeline.graph.builder import build_quantum_graph
from pipeline.graph.collections import resolve_output_collections

from .conftest import REPO_ROOT, make_toy_repo_db, pool_processes

BIN = Path(sys.executable).parent

PIPELINE = """\
description: toy ISR-like pipeline for the submit test
tasks:
  subtractMedian:
    class: tests.parsl._tasks.KillableSubtractMedianTask
  gatherMedians:
    class: _toy_tasks.GatherMediansTask
"""


def _submit_file(tmp: Path, repo: Path, query: str = "exposure IN (1..3)", **extra: str) -> Path:
    (tmp / "toy.yaml").write_text(PIPELINE)
    text = textwrap.dedent(f"""\
        pipelineYaml: toy.yaml
        butlerConfig: {repo}
        inCollection: {toy.TOY_RAW_RUN}
        dataQuery: "{query}"
        output: u/submit
        computeSite: laptop
        requestCpus: 1
        requestMemory: 512
        summary: summary.json
        qgraph: submit.qg
        sites:
          laptop:
            strategy_period: 0.1
            quanta_per_task: 1
            run_dir: {tmp / "runinfo"}
            export_env: {{CCDFLOW_TEST_FAIL: "1", CCDFLOW_TEST_SLEEP: "1.5"}}
            htex: {{max_workers_per_node: 2}}
            provider: {{kind: local}}
        """)
    for k, v in extra.items():
        text += f"{k}: {v}\n"
    path = tmp / "submit.yaml"
    path.write_text(text)
    return path


def _n_registered(root: Path, run: str) -> int:
    try:
        with Butler(root, writeable=False) as b:
            return len(b.query_datasets("toyCalexp", collections=[run]))
    except Exception:  # noqa: BLE001 - the run does not exist yet
        return 0


@pytest.mark.parsl
@pytest.mark.slow
def test_pipetask_submit_interrupted_then_resumed(tmp_path: Path) -> None:
    _, medians = make_toy_repo_db(tmp_path / "repo", 4, 2, shape=(8, 8))
    sub = _submit_file(tmp_path, tmp_path / "repo", query="exposure IN (1..4)", outputRun="u/submit/run1")
    proc = subprocess.Popen(
        [str(BIN / "pipetask"), "submit", str(sub), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(REPO_ROOT),
        # SIGINT may be ignored when the tests run as a background job: the default, as in a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # Interrupt (Ctrl-C) once the driver registered two finished quanta.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if _n_registered(tmp_path / "repo", "u/submit/run1") >= 2:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "Interrupted: finished quanta were registered" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    counts = summary["counts"]
    assert counts["done"] >= 2 and counts["done"] + counts["failed"] + counts["blocked"] < 12
    # dfk.cleanup() ran: no worker pool of this run is left behind.
    deadline = time.monotonic() + 15
    while pool_processes(str(tmp_path / "runinfo")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not pool_processes(str(tmp_path / "runinfo"))
    with Butler(tmp_path / "repo") as b:
        run = summary["qgraphSummary"]["outputRun"]
        assert run == "u/submit/run1"
        assert list(b.registry.get_collection_chain("u/submit")) == [run, toy.TOY_RAW_RUN]
        registered = b.query_datasets("*", collections=[run], find_first=False)
        assert registered and all(b.get_uri(r).exists() for r in registered)  # no dataset without its file
        n_calexp = len(b.query_datasets("toyCalexp", collections=[run]))
        assert 2 <= n_calexp < 6
        # Resume as for a local run: extend the run, skip finished quanta, clobber the failed
        # ones' logs (same config; no injected failure in this process).
        colls = resolve_output_collections(
            b.registry, output="u/submit", output_run=run, extend_run=True, skip_existing=True
        )
        pipe_graph = load_pipeline(str(tmp_path / "toy.yaml")).to_graph()
        g = build_quantum_graph(
            b, pipe_graph, collections=colls, where="exposure IN (1..4)", clobber_outputs=True
        )
        assert len(g) == 12 - counts["done"]
        report = execute_graph(b, g, executor="serial", progress="none")
        assert report.success and report.count("done") == len(g)
        for (e, d), med in medians.items():
            raw = b.get(
                "toyRaw", collections=[toy.TOY_RAW_RUN], instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d
            )
            out = b.get(
                "toyCalexp", collections=["u/submit"], instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d
            )
            np.testing.assert_array_equal(out, raw.astype(np.float32) - np.float32(med))
        assert len(b.query_datasets("toyExposureSummary", collections=[run])) == 4


def test_submit_errors_before_touching_the_repository(tmp_path: Path) -> None:
    make_toy_repo_db(tmp_path / "repo", 1, 1, shape=(4, 4))[0].close()
    bad_site = _submit_file(tmp_path, tmp_path / "repo", computeSite="nowhere")
    with pytest.raises(SubmitConfigError, match="compute_site 'nowhere' is not defined"):
        submit(bad_site)
    r = subprocess.run(
        [str(BIN / "pipetask"), "submit", str(bad_site)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(REPO_ROOT),
    )
    assert r.returncode != 0 and "compute_site 'nowhere' is not defined" in r.stderr
    assert "Traceback" not in r.stderr
    no_out = tmp_path / "noout.yaml"
    no_out.write_text(f"pipeline: toy.yaml\nrepo: {tmp_path / 'repo'}\n")
    with pytest.raises(SubmitConfigError, match="needs 'output'"):
        submit(no_out)
    with Butler(tmp_path / "repo") as b:
        assert b.registry.query_collections("u/*") == []
    # --dry-run: graph saved, nothing run or registered.
    dry = _submit_file(tmp_path, tmp_path / "repo")
    r = subprocess.run(
        [str(BIN / "pipetask"), "submit", str(dry), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(REPO_ROOT),
    )
    assert r.returncode == 0, r.stderr
    assert "Dry run" in r.stdout and (tmp_path / "submit.qg").is_file()
    with Butler(tmp_path / "repo") as b:
        assert b.registry.query_collections("u/*") == []
