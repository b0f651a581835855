"""``pipetask submit SUBMIT.yaml`` end to end on a local Parsl HighThroughputExecutor: one command
builds the graph, takes the run lock, runs on Parsl and registers the outputs; an algorithm error
on the workers fails only its quanta (exit status 1) and the run is then finished by a resume
(``extend_run`` + ``skip_existing`` + ``clobber_outputs``) with the same configuration."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import _toy_tasks as toy
from butler import Butler
from pipeline.execution.submit import SubmitConfigError, execute_graph, submit
from pipeline.graph.builder import build_quantum_graph
from pipeline.graph.collections import resolve_output_collections

from .conftest import REPO_ROOT, make_toy_repo_db

BIN = Path(sys.executable).parent

PIPELINE = """\
description: toy ISR-like pipeline for the submit test
tasks:
  subtractMedian:
    class: tests.parsl._tasks.KillableSubtractMedianTask
  gatherMedians:
    class: _toy_tasks.GatherMediansTask
"""


def _submit_file(tmp: Path, repo: Path, **extra: str) -> Path:
    (tmp / "toy.yaml").write_text(PIPELINE)
    text = textwrap.dedent(f"""\
        pipelineYaml: toy.yaml
        butlerConfig: {repo}
        inCollection: {toy.TOY_RAW_RUN}
        dataQuery: "exposure IN (1..3)"
        output: u/submit
        computeSite: laptop
        requestCpus: 1
        requestMemory: 512
        summary: summary.json
        qgraph: submit.qg
        sites:
          laptop:
            strategy_period: 0.1
            run_dir: {tmp / "runinfo"}
            export_env: {{CCDFLOW_TEST_FAIL: "2"}}
            htex: {{max_workers_per_node: 2}}
            provider: {{kind: local}}
        """)
    for k, v in extra.items():
        text += f"{k}: {v}\n"
    path = tmp / "submit.yaml"
    path.write_text(text)
    return path


@pytest.mark.parsl
@pytest.mark.slow
def test_pipetask_submit_then_resume(tmp_path: Path) -> None:
    _, medians = make_toy_repo_db(tmp_path / "repo", 4, 2, shape=(8, 8))
    sub = _submit_file(tmp_path, tmp_path / "repo")
    r = subprocess.run([str(BIN / "pipetask"), "submit", str(sub), "--no-progress"], capture_output=True, text=True,
                       timeout=240, cwd=str(REPO_ROOT))
    assert r.returncode == 1, r.stderr
    assert "Executed 6 quanta successfully, 2 failed and 1 blocked" in r.stdout
    assert "injected worker-side failure for exposure 2" in r.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    counts = summary["counts"]
    assert (counts["done"], counts["failed"], counts["blocked"], counts["pending"]) == (6, 2, 1, 0)
    assert (tmp_path / "submit.qg").is_file()
    with Butler(tmp_path / "repo") as b:
        run = summary["qgraphSummary"]["outputRun"]
        assert run.startswith("u/submit/")
        assert list(b.registry.get_collection_chain("u/submit")) == [run, toy.TOY_RAW_RUN]
        assert len(b.query_datasets("toyCalexp", collections=[run])) == 4
        # Resume (same config, no injected failure in this process) as for a local run: extend the run,
        # skip finished quanta, clobber the failed ones' logs; only the missing quanta run.
        colls = resolve_output_collections(b.registry, output="u/submit", output_run=run, extend_run=True,
                                           skip_existing=True)
        pipe_graph = __import__("pipeline._cli_opts", fromlist=["load_pipeline"]).load_pipeline(
            str(tmp_path / "toy.yaml")).to_graph()
        g = build_quantum_graph(b, pipe_graph, collections=colls, where="exposure IN (1..3)", clobber_outputs=True)
        assert len(g) == 3  # 2 failed + 1 blocked
        report = execute_graph(b, g, executor="serial", progress="none")
        assert report.success and report.count("done") == 3
        for (e, d), med in medians.items():
            if e > 3:
                continue
            raw = b.get("toyRaw", collections=[toy.TOY_RAW_RUN], instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d)
            out = b.get("toyCalexp", collections=["u/submit"], instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d)
            np.testing.assert_array_equal(out, raw.astype(np.float32) - np.float32(med))
        assert len(b.query_datasets("toyExposureSummary", collections=[run])) == 3


def test_submit_errors_before_touching_the_repository(tmp_path: Path) -> None:
    make_toy_repo_db(tmp_path / "repo", 1, 1, shape=(4, 4))[0].close()
    bad_site = _submit_file(tmp_path, tmp_path / "repo", computeSite="nowhere")
    with pytest.raises(SubmitConfigError, match="compute_site 'nowhere' is not defined"):
        submit(bad_site)
    r = subprocess.run([str(BIN / "pipetask"), "submit", str(bad_site)], capture_output=True, text=True, timeout=120,
                       cwd=str(REPO_ROOT))
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
    r = subprocess.run([str(BIN / "pipetask"), "submit", str(dry), "--dry-run"], capture_output=True, text=True,
                       timeout=120, cwd=str(REPO_ROOT))
    assert r.returncode == 0, r.stderr
    assert "Dry run" in r.stdout and (tmp_path / "submit.qg").is_file()
    with Butler(tmp_path / "repo") as b:
        assert b.registry.query_collections("u/*") == []
