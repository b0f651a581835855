"""What ``pipetask qgraph`` / ``pipetask run`` print for failures and ``--show`` (issue reproductions).

- A failing task printed a full traceback per quantum at the default log level and reported each
  failure three times (task logger with traceback, driver line, end-of-run list): now one line
  per failure, the traceback with ``--log-level DEBUG`` and in the quantum's ``<label>_log``.
- ``--show config`` (and ``history``, ``dump-config``, ``pipeline``, ``tasks``) was refused by
  ``qgraph``/``run`` only after the graph was built; now they are shown before, and alone they
  stop there (no graph built, nothing run), as in LSST's ``pipetask``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import _toy_tasks
import pytest
from click.testing import CliRunner

TOY_YAML = _toy_tasks.TOY_PIPELINE_YAML


@pytest.fixture
def toy(tmp_path: Path) -> tuple[Path, Path]:
    """Return a toy repository (3 exposures x 2 detectors) and its two-task pipeline file."""
    _toy_tasks.make_toy_repo(tmp_path / "repo", 3, 2, shape=(8, 8))
    pipe = tmp_path / "toy.yaml"
    pipe.write_text(TOY_YAML)
    return tmp_path / "repo", pipe


def _pipetask(*args: str) -> subprocess.CompletedProcess:
    """Run ``pipetask ARGS`` in a subprocess (real stdout/stderr and logging set-up)."""
    code = "import sys; from pipeline.cli import pipetask; sys.exit(pipetask(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_failing_quantum_is_reported_once(toy: tuple[Path, Path], jobs: str) -> None:
    """Two failed quanta: two ERROR lines, no traceback (DEBUG shows it; the _log keeps it)."""
    repo, pipe = toy
    args = [
        "run",
        "-b",
        str(repo),
        "-p",
        str(pipe),
        "-i",
        "ToyCam/raw/all",
        "-c",
        "subtractMedian:fail_on=[1]",
        "--register-dataset-types",
        "--no-progress",
        "-j",
        jobs,
    ]
    out = _pipetask(*args, "-o", f"u/fail{jobs}")
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if "injected failure" in line]
    assert len(lines) == 2, text  # two failed quanta, one line each
    assert all(line.startswith("ERROR ") for line in lines)
    assert "Executed 6 quanta successfully, 2 failed and 1 blocked" in out.stdout
    # the traceback: with --log-level DEBUG, and in the <label>_log dataset
    out = _pipetask(*args, "-o", f"u/debug{jobs}", "--log-level", "DEBUG")
    assert out.returncode == 1 and out.stderr.count("Traceback (most recent call last)") == 2
    from butler import Butler

    with Butler(repo) as b:
        log = b.get(
            "subtractMedian_log", collections=[f"u/fail{jobs}"], instrument="ToyCam", exposure=1, detector=0
        )
    errors = [r for r in log if r["levelname"] == "ERROR"]
    assert len(errors) == 1 and "injected failure" in errors[0]["message"]
    assert "Traceback" in errors[0]["exc_info"] and "RuntimeError: injected failure" in errors[0]["exc_info"]


def _invoke(*args: str):
    """Run ``pipetask ARGS`` through click's test runner."""
    from pipeline.cli import pipetask

    return CliRunner().invoke(pipetask, [str(a) for a in args])


@pytest.mark.parametrize("command", ["qgraph", "run"])
def test_pipeline_show_items_come_before_the_graph(toy: tuple[Path, Path], command: str) -> None:
    """Pipeline --show items alone: shown, no graph built, nothing created."""
    repo, pipe = toy
    base = [command, "-b", repo, "-p", pipe, "-i", "ToyCam/raw/all", "-o", f"u/show{command}"]
    r = _invoke(*base, "--show", "config=subtractMedian::fail*")
    assert r.exit_code == 0, r.output
    assert "### Configuration for task 'subtractMedian'" in r.output and "config.fail_on=[]" in r.output
    assert "No quantum graph built" in r.output and "Built a quantum graph" not in r.output
    r = _invoke(
        *base,
        "--show",
        "history=subtractMedian::fail_on",
        "--show",
        "tasks",
        "--show",
        "pipeline",
        "--show",
        "dump-config",
    )
    assert r.exit_code == 0, r.output
    for text in (
        "### History of config field 'fail_on'",
        "### Subtasks for task 'gatherMedians'",
        "class: _toy_tasks.SubtractMedianTask",
        "# Exposure ids whose quanta raise",
    ):
        assert text in r.output
    from butler import Butler

    with Butler(repo) as b:  # nothing was created: no output collection, no run
        assert not [c for c in b.registry.query_collections() if c.startswith("u/")]
    # an unknown item is refused before anything, naming both kinds
    r = _invoke(*base, "--show", "confg")
    assert r.exit_code == 2 and "did you mean 'config'?" in r.output and "graph items: summary" in r.output
    # a bad label is one error line
    r = _invoke(*base, "--show", "history=nosuch::fail_on")
    assert r.exit_code != 0 and "no task labelled 'nosuch'" in r.output and "Traceback" not in r.output


def test_pipeline_and_graph_show_items_together(toy: tuple[Path, Path]) -> None:
    """Pipeline items first, then the graph is built and its items shown."""
    repo, pipe = toy
    r = _invoke(
        "qgraph",
        "-b",
        repo,
        "-p",
        pipe,
        "-i",
        "ToyCam/raw/all",
        "-o",
        "u/both",
        "--show",
        "config=gatherMedians::*",
        "--show",
        "summary",
    )
    assert r.exit_code == 0, r.output
    assert r.output.index("### Configuration for task 'gatherMedians'") < r.output.index("subtractMedian  6")


def test_fail_fast_counts_quanta_that_never_ran_as_not_attempted(
    toy: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--fail-fast`` reported the quanta it never started as "blocked" (as if a predecessor failed)."""
    import json

    repo, pipe = toy
    summary = tmp_path / "s.json"
    out = _pipetask(
        "run",
        "-b",
        str(repo),
        "-p",
        str(pipe),
        "-i",
        "ToyCam/raw/all",
        "-o",
        "u/ff",
        "-c",
        "subtractMedian:fail_on=[1]",
        "--register-dataset-types",
        "--no-progress",
        "--fail-fast",
        "--summary",
        str(summary),
    )
    assert out.returncode == 1, out.stderr
    counts = json.loads(summary.read_text())["counts"]
    assert counts["failed"] == 1
    # blocked: only gatherMedians of exposure 1, the failed quantum's descendant
    assert counts["blocked"] == 1
    assert counts["pending"] == 9 - 1 - 1 - counts["done"] > 0
    assert f"{counts['pending']} not attempted" in out.stdout and "1 failed and 1 blocked" in out.stdout


def test_transfer_from_graph_registers_the_logs_of_failed_quanta(
    toy: tuple[Path, Path], tmp_path: Path
) -> None:
    """QBB: a failed quantum's ``<label>_log`` was never registered by ``transfer-from-graph``."""
    repo, pipe = toy
    graph = tmp_path / "g.qg"
    out = _pipetask(
        "qgraph",
        "-b",
        str(repo),
        "-p",
        str(pipe),
        "-i",
        "ToyCam/raw/all",
        "-o",
        "u/qbb",
        "-c",
        "subtractMedian:fail_on=[1]",
        "-q",
        str(graph),
    )
    assert out.returncode == 0, out.stderr
    assert _pipetask("pre-exec-init-qbb", str(repo), str(graph)).returncode == 0
    out = _pipetask("run-qbb", str(repo), str(graph))
    assert out.returncode == 1
    code = "import sys; from butler.cli import cli; sys.exit(cli(sys.argv[1:]))"
    args = ["transfer-from-graph", str(graph), str(repo), "--register-dataset-types", "--update-output-chain"]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "they include the logs of 2 failed quanta" in out.stdout
    from butler import Butler

    with Butler(repo) as b:
        for detector in (0, 1):
            log = b.get(
                "subtractMedian_log",
                collections=["u/qbb"],
                instrument="ToyCam",
                exposure=1,
                detector=detector,
            )
            assert any("injected failure" in (r.get("exc_info") or "") for r in log)
            assert (
                b.find_dataset(
                    "subtractMedian_metadata",
                    collections=["u/qbb"],
                    instrument="ToyCam",
                    exposure=1,
                    detector=detector,
                )
                is None
            )
    # idempotent: nothing new the second time
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Registered 0 dataset(s)" in out.stdout, out.stdout + out.stderr
