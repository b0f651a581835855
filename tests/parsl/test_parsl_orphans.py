"""``kill -9`` of a ``pipetask run --executor parsl`` driver: Parsl's interchange, worker pool and
workers exit too (they used to stay for minutes: the interchange never notices its launcher died,
the pool waits ``heartbeat_threshold`` seconds).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.execution._parsl_guard import guard_parsl_config

from .conftest import REPO_ROOT, make_toy_repo_db

pytestmark = [pytest.mark.parsl, pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")]


def _session(sid: int) -> list[tuple[int, str]]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = Path(f"/proc/{d}/stat").read_bytes()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2:].split()
        if fields[0] not in (b"Z", b"X") and int(fields[3]) == sid:
            out.append((int(d), cmd))
    return out


def test_guard_wraps_default_launch_commands_only() -> None:
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    ex = HighThroughputExecutor(provider=LocalProvider())
    custom = HighThroughputExecutor(label="custom", provider=LocalProvider(), launch_cmd="my_pool.sh {debug}",
                                    interchange_launch_cmd=["my_interchange"])
    guard_parsl_config(Config(executors=[ex, custom]), driver_pid=4242)
    assert ex.interchange_launch_cmd == [sys.executable, "-m", "pipeline.execution._parsl_guard", "4242",
                                         "interchange.py"]
    assert ex.launch_cmd.startswith(f"{sys.executable} -m pipeline.execution._parsl_guard 4242 "
                                    "process_worker_pool.py ")
    assert custom.launch_cmd == "my_pool.sh {debug}" and custom.interchange_launch_cmd == ["my_interchange"]


def test_kill_9_of_a_parsl_driver_leaves_no_child(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_toy_repo_db(repo, 4, 2, shape=(16, 16))[0].close()
    cmd = [str(Path(sys.executable).parent / "pipetask"), "run", "-b", str(repo),
           "-t", "_toy_tasks.SubtractMedianTask:subtractMedian", "-i", "ToyCam/raw/all", "--output-run", "u/p",
           "--register-dataset-types", "--executor", "parsl", "-j", "2", "-c", "subtractMedian:sleep_s=30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT),
                            start_new_session=True)
    try:
        # Wait for the interchange and a worker pool manager running quanta.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            cmds = " ".join(c for _, c in _session(proc.pid))
            if "interchange" in cmds and "process_worker_pool" in cmds and "multiprocessing.spawn" in cmds:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5.0
        alive = _session(proc.pid)
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = _session(proc.pid)
        assert alive == [], alive
    finally:
        for pid, _ in _session(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
