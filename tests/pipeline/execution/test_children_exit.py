"""Child processes exit when their driver is killed with SIGKILL (no orphans).

The reproduction: after ``kill -9`` of ``pipetask run -j 2`` the fork server, the resource tracker
and the pool workers stayed alive for minutes (a worker waits on its task queue for ever and keeps
the fork server's and the tracker's pipes open). Linux only: the checks read ``/proc``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import _toy_tasks as toy
from butler.process_guard import exit_with_driver, process_alive

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")

TOY_YAML = toy.TOY_PIPELINE_YAML


def _session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the driver was started with ``start_new_session``)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = Path(f"/proc/{d}/stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2:].split()
        if fields[0] not in (b"Z", b"X") and int(fields[3]) == sid:
            out.append(int(d))
    return out


def _wait_gone(sid: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    alive = _session(sid)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = _session(sid)
    return alive


def _cleanup(pids: list[int]) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_process_alive_sees_a_killed_unreaped_process_as_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_alive(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        time.sleep(0.3)  # a zombie now: not reaped yet
        assert not process_alive(proc.pid)
    finally:
        proc.wait()
    assert process_alive(os.getpid())
    exit_with_driver(os.getpid())  # in the driver itself: does nothing


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_pool_workers_exit_with_their_driver(tmp_path: Path, method: str) -> None:
    """Any start method: the workers, fork server and resource tracker go within a few seconds."""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import multiprocessing, os, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from butler.process_guard import exit_with_driver

        if __name__ == "__main__":
            ctx = multiprocessing.get_context({method!r})
            pool = ProcessPoolExecutor(2, mp_context=ctx, initializer=exit_with_driver,
                                       initargs=(os.getpid(),))
            futs = [pool.submit(time.sleep, 600) for _ in range(2)]
            print("started", flush=True)
            time.sleep(600)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"started"
        deadline = time.monotonic() + 30
        while len(_session(proc.pid)) < 3 and time.monotonic() < deadline:  # driver + 2 workers at least
            time.sleep(0.1)
        assert len(_session(proc.pid)) >= 3
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        alive = _wait_gone(proc.pid, 5.0)
        assert alive == [], f"{len(alive)} child process(es) outlived the driver"
    finally:
        _cleanup(_session(proc.pid))


def test_kill_9_of_pipetask_run_leaves_no_child(toy_repo: Any, tmp_path: Path) -> None:
    butler, _ = toy_repo
    pipe = tmp_path / "toy.yaml"
    pipe.write_text(TOY_YAML)
    cmd = [sys.executable, "-c", "from pipeline.cli import pipetask; pipetask()", "run", "-b", str(butler.root),
           "-p", str(pipe), "-i", toy.TOY_RAW_RUN, "-o", "u/orphans", "-j", "2", "--register-dataset-types",
           "--no-progress", "-c", "subtractMedian:sleep_s=2.0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Wait until the pool runs quanta: driver, fork server, resource tracker and 2 workers.
        deadline = time.monotonic() + 60
        while len(_session(proc.pid)) < 5 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None and len(_session(proc.pid)) >= 5, _session(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        alive = _wait_gone(proc.pid, 5.0)
        assert alive == [], f"{len(alive)} child process(es) outlived the killed driver"
    finally:
        _cleanup(_session(proc.pid))
