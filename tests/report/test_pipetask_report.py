"""``pipetask report`` / ``aggregate-reports``: counts and failure messages after serial, pool,
QBB (three steps) and repeated runs, from a graph file and from the registry alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

REPO_ROOT = Path(__file__).resolve().parents[2]

import _toy_tasks as toy

from pipeline.execution.report import Summary, failure_message
from pipeline.execution.report_cli import aggregate_reports_command, report_command

TOY_YAML = toy.TOY_PIPELINE_YAML
MESSAGE = "RuntimeError: injected failure for exposure 1"


def _pipetask(*args: str, env: dict[str, str] | None = None) -> Any:
    from pipeline.cli import pipetask

    return CliRunner(env=env).invoke(pipetask, list(args), catch_exceptions=False)


def _report(*args: str) -> Any:
    return CliRunner().invoke(report_command, list(args), catch_exceptions=False)


@pytest.fixture
def toy_env(tmp_path: Path) -> tuple[Path, Path]:
    """(repository root, pipeline file): 3 exposures x 2 detectors of 8x8 toy images."""
    butler, _ = toy.make_toy_repo(tmp_path / "repo", 3, 2, shape=(8, 8))
    pipe = tmp_path / "toy.yaml"
    pipe.write_text(TOY_YAML)
    return Path(butler.root), pipe


def _counts(summary: Summary) -> dict[str, tuple[int, int, int, int, int]]:
    """Label -> (expected, successful, failed, blocked, unknown)."""
    return {
        label: (t.n_expected, t.n_successful, t.n_failed, t.n_blocked, t.n_unknown)
        for label, t in summary.tasks.items()
    }


def test_failure_message_from_log_records() -> None:
    records = [
        {"levelno": 20, "message": "starting"},
        {"levelno": 40, "message": "Quantum subtractMedian {exposure: 1} failed: ValueError: bad\nsecond"},
    ]
    assert failure_message(records) == "ValueError: bad"
    assert failure_message([{"levelno": 20, "message": "fine"}]) == ""


@pytest.mark.parametrize(
    "executor",
    [
        ["-j", "1"],
        ["-j", "2"],
        pytest.param(["--executor", "parsl", "-j", "2"], marks=[pytest.mark.parsl, pytest.mark.slow]),
    ],
)
def test_report_from_graph_serial_pool_parsl(
    toy_env: tuple[Path, Path], tmp_path: Path, executor: list[str]
) -> None:
    repo, pipe = toy_env
    qg = tmp_path / "g.qg"
    args = [
        "run",
        "-b",
        str(repo),
        "-p",
        str(pipe),
        "-i",
        toy.TOY_RAW_RUN,
        "-o",
        "u/fail",
        "-q",
        str(qg),
        "-c",
        "subtractMedian:fail_on=[1]",
        "--register-dataset-types",
        "--no-progress",
        *executor,
    ]
    if "parsl" in executor:  # Parsl in its own driver process, as users run it
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "pipetask"), *args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=str(REPO_ROOT),
        )
        assert proc.returncode == 1 and "2 failed and 1 blocked" in proc.stdout, proc.stderr[-2000:]
    else:
        r = _pipetask(*args)
        assert r.exit_code == 1 and "2 failed and 1 blocked" in r.output
    out = tmp_path / "report.json"
    r = _report(str(repo), str(qg), "--full-output-filename", str(out))
    assert r.exit_code == 0, r.output
    # LSST's table layout: a header line with these columns, then one row per task
    header = r.output.splitlines()[0].split()
    assert header == [
        "Task",
        "Unknown",
        "Successful",
        "Caveats",
        "Blocked",
        "Failed",
        "Wonky",
        "TOTAL",
        "EXPECTED",
    ]
    summary = Summary.model_validate_json(out.read_text())
    assert _counts(summary) == {"subtractMedian": (6, 4, 2, 0, 0), "gatherMedians": (3, 2, 0, 1, 0)}
    failed = summary.tasks["subtractMedian"].failed_quanta
    assert sorted(q.data_id["detector"] for q in failed) == [0, 1]
    assert all(q.data_id["exposure"] == 1 and q.messages == [MESSAGE] for q in failed)
    assert all(list(q.runs.values()) == ["FAILED"] for q in failed)
    doc = json.loads(out.read_text())
    assert doc["tasks"]["subtractMedian"]["n_failed"] == 2
    ds = summary.datasets["toyCalexp"]
    assert (ds.n_expected, ds.n_visible, ds.n_unsuccessful) == (6, 4, 2)
    assert ds.producer == "subtractMedian"
    # without --full-output-filename the errors table is printed with the one-line message
    r = _report(str(repo), str(qg))
    assert "subtractMedian errors:" in r.output and MESSAGE in r.output
    assert "gatherMedians errors:" not in r.output
    r = _report(str(repo), str(qg), "--brief")
    assert "errors:" not in r.output


def test_report_from_registry(toy_env: tuple[Path, Path], tmp_path: Path) -> None:
    """``pipetask report REPO -o OUT``: the run kept its graph in the repository, so the blocked
    quantum is known; without that copy the report falls back to the run's datasets and says so."""
    repo, pipe = toy_env
    args = ["run", "-b", str(repo), "-p", str(pipe), "-i", toy.TOY_RAW_RUN, "-o", "u/reg"]
    r = _pipetask(*args, "-c", "subtractMedian:fail_on=[2]", "--register-dataset-types", "--no-progress")
    assert r.exit_code == 1
    out = tmp_path / "r.json"
    r = _pipetask("report", str(repo), "-o", "u/reg", "--full-output-filename", str(out))
    assert r.exit_code == 0, r.output
    summary = Summary.model_validate_json(out.read_text())
    assert _counts(summary) == {"subtractMedian": (6, 4, 2, 0, 0), "gatherMedians": (3, 2, 0, 1, 0)}
    sub = summary.tasks["subtractMedian"]
    assert {q.data_id["exposure"] for q in sub.failed_quanta} == {2}
    assert all(q.messages == ["RuntimeError: injected failure for exposure 2"] for q in sub.failed_quanta)
    assert summary.notes == []
    # without the graph copy: successes and failures from the datasets, blocked ones unknown
    shutil.rmtree(repo / ".ccdflow" / "graphs")
    r = _pipetask("report", str(repo), "--collections", "u/reg", "--full-output-filename", str(out))
    assert r.exit_code == 0, r.output
    summary = Summary.model_validate_json(out.read_text())
    assert _counts(summary) == {"subtractMedian": (6, 4, 2, 0, 0), "gatherMedians": (2, 2, 0, 0, 0)}
    assert summary.tasks["subtractMedian"].failed_quanta[0].messages == [
        "RuntimeError: injected failure for exposure 2"
    ]
    assert len(summary.notes) == 1 and "has no saved graph" in summary.notes[0]
    r = _pipetask("report", str(repo), "--collections", "nope/*")
    assert r.exit_code == 1 and "no RUN collection" in r.output


def test_report_qbb_three_steps_before_and_after_transfer(toy_env: tuple[Path, Path], tmp_path: Path) -> None:
    repo, pipe = toy_env
    qg = tmp_path / "q.qg"
    r = _pipetask(
        "qgraph",
        "-b",
        str(repo),
        "-p",
        str(pipe),
        "-i",
        toy.TOY_RAW_RUN,
        "-o",
        "u/qbb",
        "-q",
        str(qg),
        "--qgraph-datastore-records",
    )
    assert r.exit_code == 0, r.output
    assert _pipetask("pre-exec-init-qbb", str(repo), str(qg)).exit_code == 0
    r = _pipetask("run-qbb", str(repo), str(qg), env={"CCDFLOW_TOY_FAIL": "1"})
    assert r.exit_code == 1, r.output
    # nothing registered yet: the report reads the files (metadata, logs) at their predicted paths
    out = tmp_path / "before.json"
    assert _report(str(repo), str(qg), "--full-output-filename", str(out)).exit_code == 0
    before = Summary.model_validate_json(out.read_text())
    assert _counts(before) == {"subtractMedian": (6, 4, 2, 0, 0), "gatherMedians": (3, 2, 0, 1, 0)}
    assert all(q.messages == [MESSAGE] for q in before.tasks["subtractMedian"].failed_quanta)
    # --no-use-qbb: only the registry counts, so nothing is known yet
    out2 = tmp_path / "noqbb.json"
    assert _report(str(repo), str(qg), "--no-use-qbb", "--full-output-filename", str(out2)).exit_code == 0
    assert _counts(Summary.model_validate_json(out2.read_text()))["subtractMedian"] == (6, 0, 0, 0, 6)


def test_report_two_attempts_recovered(toy_env: tuple[Path, Path], tmp_path: Path) -> None:
    """A failed run, then the same processing again in a new run: the failures are recovered."""
    repo, pipe = toy_env
    g1, g2 = tmp_path / "a1.qg", tmp_path / "a2.qg"
    r = _pipetask(
        "run",
        "-b",
        str(repo),
        "-p",
        str(pipe),
        "-i",
        toy.TOY_RAW_RUN,
        "--output-run",
        "u/att/run1",
        "-q",
        str(g1),
        "--register-dataset-types",
        "--no-progress",
        env={"CCDFLOW_TOY_FAIL": "1"},
    )
    assert r.exit_code == 1
    r = _pipetask(
        "run",
        "-b",
        str(repo),
        "-p",
        str(pipe),
        "-i",
        toy.TOY_RAW_RUN,
        "--output-run",
        "u/att/run2",
        "-q",
        str(g2),
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "att.json"
    assert _report(str(repo), str(g1), str(g2), "--full-output-filename", str(out)).exit_code == 0
    s = Summary.model_validate_json(out.read_text())
    sub = s.tasks["subtractMedian"]
    assert (sub.n_expected, sub.n_successful, sub.n_failed) == (6, 6, 0)
    assert sorted((d["exposure"], d["detector"]) for d in sub.recovered_quanta) == [(1, 0), (1, 1)]
    gather = s.tasks["gatherMedians"]
    assert (gather.n_expected, gather.n_successful, gather.n_blocked) == (3, 3, 0)
    # the other order: a success followed by a failure is "wonky"
    out = tmp_path / "wonky.json"
    assert _report(str(repo), str(g2), str(g1), "--full-output-filename", str(out)).exit_code == 0
    w = Summary.model_validate_json(out.read_text()).tasks["subtractMedian"]
    assert w.n_wonky == 2 and w.n_successful == 4
    assert all(q.runs == {"u/att/run2": "SUCCESSFUL", "u/att/run1": "FAILED"} for q in w.wonky_quanta)


def test_aggregate_reports(toy_env: tuple[Path, Path], tmp_path: Path) -> None:
    repo, pipe = toy_env
    files = []
    for i, (where, fail) in enumerate([("exposure IN (1, 2)", "[1]"), ("exposure = 3", "[]")]):
        qg = tmp_path / f"g{i}.qg"
        _pipetask(
            "run",
            "-b",
            str(repo),
            "-p",
            str(pipe),
            "-i",
            toy.TOY_RAW_RUN,
            "-o",
            f"u/agg{i}",
            "-q",
            str(qg),
            "-d",
            where,
            "-c",
            f"subtractMedian:fail_on={fail}",
            "--register-dataset-types",
            "--no-progress",
        )
        files.append(tmp_path / f"r{i}.json")
        assert _report(str(repo), str(qg), "--full-output-filename", str(files[-1])).exit_code == 0
    merged = tmp_path / "merged.json"
    r = CliRunner().invoke(
        aggregate_reports_command, [*map(str, files), "--full-output-filename", str(merged)]
    )
    assert r.exit_code == 0, r.output
    s = Summary.model_validate_json(merged.read_text())
    assert _counts(s) == {"subtractMedian": (6, 4, 2, 0, 0), "gatherMedians": (3, 2, 0, 1, 0)}
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    r = CliRunner().invoke(aggregate_reports_command, [str(bad)])
    assert r.exit_code == 1 and "is not a JSON report" in r.output
