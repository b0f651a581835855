"""``pipetask qgraph`` / ``pipetask run`` end to end: options, outputs, errors, exit codes, and
interruption (a real driver process killed with SIGKILL mid-run, then resumed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _toy_tasks as toy
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import pipetask

TOY_YAML = toy.TOY_PIPELINE_YAML


@pytest.fixture
def toy_cli(toy_repo: Any, tmp_path: Path) -> tuple[Any, Path, dict[tuple[int, int], float]]:
    butler, medians = toy_repo
    p = tmp_path / "toy.yaml"
    p.write_text(TOY_YAML)
    return butler, p, medians


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(pipetask, list(args), catch_exceptions=False)


def test_qgraph_save_show_and_dot(toy_cli: Any, tmp_path: Path) -> None:
    butler, pipe, _ = toy_cli
    qg, dot = tmp_path / "g.qg", tmp_path / "g.dot"
    r = _invoke("qgraph", "-b", str(butler.root), "-p", str(pipe), "-i", toy.TOY_RAW_RUN, "-o", "u/cli",
                "-q", str(qg), "--show", "summary", "--show", "workflow", "--qgraph-dot", str(dot))
    assert r.exit_code == 0, r.output
    assert "9 quanta" in r.output and "subtractMedian  6" in r.output
    assert r.output.count("Parent Quantum") == 6
    assert qg.exists() and dot.read_text().count("shape=box") == 9
    # The saved graph runs: 9 quanta, exit 0, outputs correct.
    r = _invoke("run", "-b", str(butler.root), "-g", str(qg), "--register-dataset-types", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "Executed 9 quanta successfully, 0 failed and 0 blocked" in r.output
    from butler import Butler

    b = Butler(butler.root)
    out = b.get("toyCalexp", collections=["u/cli"], instrument=toy.TOY_INSTRUMENT, exposure=2, detector=1)
    raw = b.get("toyRaw", collections=[toy.TOY_RAW_RUN], instrument=toy.TOY_INSTRUMENT, exposure=2, detector=1)
    assert float(np.median(out)) == 0.0 and out.shape == raw.shape


def test_run_failure_exit_code_and_summary(toy_cli: Any, tmp_path: Path) -> None:
    butler, pipe, _ = toy_cli
    summary = tmp_path / "s.json"
    r = _invoke("run", "-b", str(butler.root), "-p", str(pipe), "-i", toy.TOY_RAW_RUN, "-o", "u/fail",
                "-c", "subtractMedian:fail_on=[1]", "--register-dataset-types", "--summary", str(summary),
                "--no-progress")
    assert r.exit_code == 1
    assert "Executed 6 quanta successfully, 2 failed and 1 blocked" in r.output
    doc = json.loads(summary.read_text())
    assert doc["status"] == "failure" and doc["counts"] == {"done": 6, "no_work": 0, "failed": 2, "blocked": 1,
                                                           "pending": 0, "skipped": 0}


@pytest.mark.parametrize("args, message", [
    (["-i", "nope", "-o", "u/x"], "input collection(s) nope do not exist"),
    (["-i", toy.TOY_RAW_RUN], "no output collection"),
    (["-i", toy.TOY_RAW_RUN, "-o", "u/x", "-d", "instrument='ToyCam' AND exposure=42"], "is empty"),
    (["-i", toy.TOY_RAW_RUN, "-o", "u/x", "-d", "exposure =="], "Error:"),
    (["-i", toy.TOY_RAW_RUN, "-o", "u/x", "-c", "subtractMedian:nosuchfield=1"], "nosuchfield"),
    (["-i", toy.TOY_RAW_RUN, "-o", "u/x", "--show", "bogus"], "bogus"),
])
def test_qgraph_errors_are_one_line(toy_cli: Any, args: list[str], message: str) -> None:
    butler, pipe, _ = toy_cli
    r = _invoke("qgraph", "-b", str(butler.root), "-p", str(pipe), *args)
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output


def test_run_errors_leave_repo_untouched(toy_cli: Any, tmp_path: Path) -> None:
    butler, pipe, _ = toy_cli
    r = _invoke("run", "-b", str(butler.root), "-p", str(pipe), "-i", toy.TOY_RAW_RUN, "-o", "u/noreg")
    assert r.exit_code == 1 and "--register-dataset-types" in r.output
    from butler import Butler

    assert Butler(butler.root).registry.query_collections("u/*") == []
    r = _invoke("run", "-b", str(butler.root), "-g", str(tmp_path / "missing.qg"))
    assert r.exit_code == 1 and "does not exist" in r.output


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from pipeline.cli import pipetask; pipetask()", *args]


def _registered_files_exist(root: Path, collection: str) -> int:
    from butler import Butler

    b = Butler(root)
    n = 0
    for ref in b.query_datasets("*", collections=[collection]):
        assert b.get_uri(ref).exists(), f"{ref} registered without its file"
        n += 1
    return n


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigkill-driver", "ctrl-c"])
def test_kill_driver_then_resume(toy_cli: Any, tmp_path: Path, how: str) -> None:
    butler, pipe, medians = toy_cli
    root = str(butler.root)
    env = dict(os.environ)
    args = ["run", "-b", root, "-p", str(pipe), "-i", toy.TOY_RAW_RUN, "-o", "u/kill", "-j", "2",
            "--register-dataset-types", "-c", "subtractMedian:sleep_s=2.0", "--no-progress"]
    # A shell without job control starts background jobs with SIGINT ignored, and a child
    # inherits that: give the driver the default disposition a terminal's foreground job has.
    proc = subprocess.Popen(_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Wait until at least one quantum is registered, then SIGKILL the driver only.
    from butler import Butler

    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            done = len(Butler(root).query_datasets("subtractMedian_metadata", collections=["u/kill"]))
        except Exception:  # noqa: BLE001 - collection/type not there yet
            done = 0
        if done >= 1:
            break
    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)   # what a terminal sends to the whole job
        out = proc.communicate(timeout=60)[0].decode()
        assert proc.returncode == 130, out
        assert "--extend-run" in out and "Traceback" not in out
    else:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1.0)
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # orphaned workers, if any survived
    except ProcessLookupError:
        pass
    n_before = _registered_files_exist(butler.root, "u/kill")
    n_md = len(Butler(root).query_datasets("subtractMedian_metadata", collections=["u/kill"]))
    try:
        n_md += len(Butler(root).query_datasets("gatherMedians_metadata", collections=["u/kill"]))
    except Exception:  # noqa: BLE001 - nothing of that type registered yet
        pass
    assert 1 <= n_md < 9        # interrupted part-way
    assert n_before >= 3
    # Resume: only the unfinished quanta run; the result is complete and correct.
    r = subprocess.run(_cmd("run", "-b", root, "-p", str(pipe), "-o", "u/kill", "--extend-run",
                            "--skip-existing", "--no-progress", "-j", "2", "-c", "subtractMedian:sleep_s=2.0"), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    n_run = int(r.stdout.split("Executed ")[1].split()[0])
    assert n_run < 9            # finished quanta were skipped
    _registered_files_exist(butler.root, "u/kill")
    b = Butler(root)
    for e in (1, 2, 3):
        for d in (0, 1):
            out = b.get("toyCalexp", collections=["u/kill"], instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d)
            raw = b.get("toyRaw", collections=[toy.TOY_RAW_RUN], instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d)
            np.testing.assert_allclose(out, raw.astype(np.float32) - medians[(e, d)])
        assert b.get("toyExposureSummary", collections=["u/kill"], instrument=toy.TOY_INSTRUMENT, exposure=e)["n"] == 2


@pytest.mark.slow
def test_killed_worker_is_replaced(toy_cli: Any, tmp_path: Path) -> None:
    import psutil

    butler, pipe, medians = toy_cli
    root = str(butler.root)
    summary = tmp_path / "s.json"
    args = ["run", "-b", root, "-p", str(pipe), "-i", toy.TOY_RAW_RUN, "-o", "u/wk", "-j", "2",
            "--register-dataset-types", "-c", "subtractMedian:sleep_s=0.5", "--no-progress", "--summary", str(summary)]
    proc = subprocess.Popen(_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        # forkserver workers are children of the fork server, itself a child of the driver
        servers = [p for p in psutil.Process(proc.pid).children()
                   if "forkserver" in " ".join(p.cmdline())]
        kids = [k for srv in servers for k in srv.children()]
        if len(kids) >= 1:
            time.sleep(0.5)   # let it pick up a quantum
            victim = kids[0]
    assert victim is not None
    victim.kill()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()
    doc = json.loads(summary.read_text())
    assert doc["counts"]["done"] == 9
    assert "worker process died" in out.decode() or "A worker process died" in out.decode()
    _registered_files_exist(butler.root, "u/wk")


def test_data_id_scoped_config_applies_per_quantum(toy_cli: Any, tmp_path: Path) -> None:
    butler, _, _ = toy_cli
    pipe = tmp_path / "scoped.yaml"
    pipe.write_text(TOY_YAML.replace(
        "    class: _toy_tasks.SubtractMedianTask\n",
        "    class: _toy_tasks.SubtractMedianTask\n    config:\n      - dataId: {exposure: 2}\n"
        "        fail_on: [2]\n"))
    summary = tmp_path / "s.json"
    r = _invoke("run", "-b", str(butler.root), "-p", str(pipe), "-i", toy.TOY_RAW_RUN, "-o", "u/scoped",
                "--register-dataset-types", "--no-progress", "--summary", str(summary))
    assert r.exit_code == 1
    doc = json.loads(summary.read_text())
    failed = {(q["dataId"]["exposure"], q["dataId"]["detector"]) for q in doc["quantaReports"]
              if q["status"] == "failed"}
    assert failed == {(2, 0), (2, 1)}
    assert doc["counts"]["done"] == 6


def test_rerunning_a_saved_graph_finishes_the_job(toy_cli: Any, tmp_path: Path, monkeypatch: Any) -> None:
    butler, pipe, medians = toy_cli
    qg = tmp_path / "g.qg"
    r = _invoke("qgraph", "-b", str(butler.root), "-p", str(pipe), "-i", toy.TOY_RAW_RUN, "-o", "u/again",
                "-q", str(qg))
    assert r.exit_code == 0, r.output
    monkeypatch.setenv("CCDFLOW_TOY_FAIL", "3")
    r = _invoke("run", "-b", str(butler.root), "-g", str(qg), "--register-dataset-types", "--no-progress")
    assert r.exit_code == 1 and "2 failed and 1 blocked" in r.output
    monkeypatch.delenv("CCDFLOW_TOY_FAIL")
    r = _invoke("run", "-b", str(butler.root), "-g", str(qg), "--no-progress")
    assert r.exit_code == 0, r.output
    assert "Skipped 6 quanta" in r.output and "Executed 3 quanta successfully" in r.output
    # 9 quanta x (output, metadata, log) + 2 configs + packages, plus the 6 raws in the chain
    assert _registered_files_exist(butler.root, "u/again") == 9 * 3 + 2 + 1 + 6
    from butler import Butler

    b = Butler(butler.root)
    for d in (0, 1):
        out = b.get("toyCalexp", collections=["u/again"], instrument=toy.TOY_INSTRUMENT, exposure=3, detector=d)
        raw = b.get("toyRaw", collections=[toy.TOY_RAW_RUN], instrument=toy.TOY_INSTRUMENT, exposure=3, detector=d)
        np.testing.assert_allclose(out, raw.astype(np.float32) - medians[(3, d)])


def test_qbb_three_steps_need_no_registry_and_can_be_repeated(toy_cli: Any, tmp_path: Path) -> None:
    butler, pipe, medians = toy_cli
    qg = tmp_path / "g.qg"
    r = _invoke("qgraph", "-b", str(butler.root), "-p", str(pipe), "-i", toy.TOY_RAW_RUN,
                "--output-run", "u/qbb", "-q", str(qg))
    assert r.exit_code == 0, r.output
    root = str(butler.root)
    # Hide the registry: run-qbb must not need it.
    reg = Path(root) / "registry.sqlite3"
    hidden = reg.with_name("hidden.sqlite3")
    reg.rename(hidden)
    try:
        r = _invoke("pre-exec-init-qbb", root, str(qg))
        assert r.exit_code == 0 and "Wrote 3 init outputs" in r.output, r.output
        r = _invoke("pre-exec-init-qbb", root, str(qg))
        assert r.exit_code == 0 and "3 already present" in r.output
        one = str(_first_quantum(qg))
        r = _invoke("run-qbb", root, str(qg), "--qgraph-node-id", one)
        assert r.exit_code == 0 and "1 quanta done" in r.output, r.output
        r = _invoke("run-qbb", root, str(qg))
        assert r.exit_code == 0 and "8 quanta done" in r.output and "1 already done" in r.output, r.output
    finally:
        hidden.rename(reg)
    # Nothing was registered: the output run does not exist.
    from butler import Butler

    assert Butler(root).registry.query_collections("u/qbb") == []


def _first_quantum(path: Path) -> Any:
    from pipeline.graph.quantum_graph import QuantumGraph

    g = QuantumGraph.load(path)
    return g.quanta_for_task("subtractMedian")[0].id
