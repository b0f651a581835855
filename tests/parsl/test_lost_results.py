"""A task whose result dies with its worker process must not leave the driver waiting for ever.

Parsl's worker puts a finished task's result on a multiprocessing queue (written to the manager by
a background thread) and takes the next task at once; killed a few milliseconds later, it can die
before the result was written. Parsl then reports the next task lost (WorkerLost) and nothing at
all about the finished one. This happened in ``test_parsl_run.py`` under load (the injected
SIGKILL comes ~5 ms after the previous batch finished): the driver waited for ever on the two
quanta of that batch. Here the race is replayed without Parsl: a fake app writes the worker's
ledger lines and never completes the finished task's future.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from concurrent.futures import Future, wait
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.execution.parsl_executor import ParslQuantumExecutor, lost_results, parse_ledger, write_ledger
from pipeline.execution.single_quantum import QuantumResult

pytestmark = pytest.mark.parsl


class _Worker:
    """Fake Parsl app: every task "runs" in one fake worker process that writes its ledger lines."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[list[str], bool, int | None]] = []
        self.futures: list[Future[Any]] = []

    def __call__(self, graph_path: str, root: str, qids: Any, timeout: Any, level: int, retry: bool,
                 ledger: str | None = None, key: int | None = None) -> Future[Any]:
        ids = list(qids) if isinstance(qids, list) else [qids]
        self.calls.append((ids, retry, key))
        fut: Future[Any] = Future()
        self.futures.append(fut)
        self.ledger = ledger
        return fut

    def write(self, i: int, *what: str) -> None:
        key = self.calls[i][2]
        if self.ledger is not None and key is not None:
            with open(Path(self.ledger) / self.name, "a") as f:
                f.writelines(f"{key} {w}\n" for w in what)

    def complete(self, i: int) -> None:
        ids = self.calls[i][0]
        res = [QuantumResult(uuid.UUID(q), "done", wall_time=0.01) for q in ids]
        self.futures[i].set_result(res if len(ids) > 1 else res[0])


def _executor(tmp_path: Path, worker: _Worker) -> ParslQuantumExecutor:
    g = tmp_path / "g.qg"
    g.write_bytes(b"x")
    cfg = {"htex": {"max_workers_per_node": 2, "prefetch_capacity": 1}, "lost_worker_retries": 2,
           "quanta_per_task": 2}
    ex = ParslQuantumExecutor(g, tmp_path, cfg)
    ex._ensure_started = lambda: worker  # type: ignore[method-assign]
    ex._batch_app = worker
    ex._dfk = SimpleNamespace(cleanup=lambda: None)  # "running"
    return ex


def test_parse_ledger_and_lost_results() -> None:
    """Which tasks a dead worker process finished without its result reaching the driver."""
    assert parse_ledger("1 start\n1 done\n2 start\n3 do") == ({1, 2}, {1})
    files = {"h.10": "1 start\n1 done\n2 start\n2 done\n3 start\n", "h.11": "4 start\n4 done\n5 start\n"}
    # Task 3 reported lost: h.10 is dead; of what it finished, 2 is still awaited (1 came back).
    assert lost_results(files, set(), 3, {2, 3, 4, 5}) == ({2}, {"h.10"})
    # A process known dead (its PID is gone): what it finished and was not answered.
    assert lost_results(files, {"h.11"}, None, {2, 3, 4, 5}) == ({4}, {"h.11"})
    # Nothing dead, nothing lost; a started-only task (5) is Parsl's to report, never claimed here.
    assert lost_results(files, set(), None, {2, 4, 5}) == (set(), set())
    assert lost_results(files, {"h.11"}, 5, {5}) == (set(), {"h.11"})


def test_write_ledger_appends_to_this_process_file(tmp_path: Path) -> None:
    """The worker side: one file per process, lines appended; a missing ledger is ignored."""
    write_ledger(str(tmp_path), "7 start\n")
    write_ledger(str(tmp_path), "7 done\n")
    path = tmp_path / f"{socket.gethostname()}.{os.getpid()}"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert parse_ledger(path.read_text()) == ({7}, {7})
    write_ledger(str(tmp_path / "gone"), "8 start\n")  # no exception, nothing written
    assert not (tmp_path / "gone").exists()


def test_result_lost_with_the_killed_worker_is_resubmitted(tmp_path: Path) -> None:
    """The race of the hang: a finished task's result dies with the worker killed in the next task."""
    from parsl.executors.high_throughput.errors import WorkerLost

    worker = _Worker(f"{socket.gethostname()}.4000000")  # not a live PID (above pid_max)
    ex = _executor(tmp_path, worker)
    ids = [uuid.uuid4() for _ in range(4)]
    futs = [ex.submit(q) for q in ids]
    # Below the low-water mark (3 tasks in flight) quanta go out alone; q3 waits for a partner.
    assert [c[0] for c in worker.calls] == [[str(ids[0])], [str(ids[1])], [str(ids[2])]]
    worker.complete(0)  # q3 goes out (fewer than 3 tasks in flight)
    assert worker.calls[3][0] == [str(ids[3])]
    # Task 1 (q1) finishes on the worker, whose result then dies with it; task 2 (q2) was
    # running on the same worker process when it was killed.
    worker.write(1, "start", "done")
    worker.write(2, "start")
    worker.futures[2].set_exception(WorkerLost(0, "vm"))
    assert ex.n_lost == 2 and ex.n_results_lost == 1
    resent = {c[0][0]: i for i, c in enumerate(worker.calls) if i >= 4}
    assert set(resent) == {str(ids[1]), str(ids[2])}
    assert all(worker.calls[i][1] for i in resent.values())  # leftovers removed first
    for i in resent.values():
        worker.complete(i)
    worker.complete(3)
    done, pending = wait(futs, timeout=5)
    assert not pending, "the driver would wait for ever on the quantum whose result was lost"
    assert [f.result().quantum_id for f in futs] == ids and all(f.result().ok for f in futs)
    # The lost result arriving after all (it cannot, but if it did) changes nothing.
    worker.complete(1)
    assert ex._n_tasks == 0 and not ex._running
    ex.shutdown()
    assert not any((tmp_path / ".ccdflow" / "parsl-ledger").iterdir())


def test_worker_dead_between_tasks_is_found_by_its_pid(tmp_path: Path) -> None:
    """No WorkerLost at all (the worker died idle): a gone local PID is enough."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    worker = _Worker(f"{socket.gethostname()}.{gone.pid}")
    ex = _executor(tmp_path, worker)
    q = uuid.uuid4()
    fut = ex.submit(q)
    worker.write(0, "start", "done")  # finished, result lost, process gone
    resend: list[Any] = []
    ex._claim_lost_results(None, resend)
    ex._send(resend)
    assert ex.n_results_lost == 1 and len(worker.calls) == 2 and worker.calls[1][1]
    worker.complete(1)
    assert fut.result(timeout=5).ok
    # A live process's finished-but-unanswered task is left alone (its result may be on the way).
    live = _Worker(f"{socket.gethostname()}.{os.getpid()}")
    (tmp_path / "b").mkdir()
    ex2 = _executor(tmp_path / "b", live)
    f2 = ex2.submit(uuid.uuid4())
    live.write(0, "start", "done")
    resend = []
    ex2._claim_lost_results(None, resend)
    assert resend == [] and ex2.n_results_lost == 0 and not f2.done()
    live.complete(0)
    assert f2.result(timeout=5).ok


def test_parsl_retry_of_the_lost_task_still_resubmits_the_lost_result(tmp_path: Path) -> None:
    """With Parsl ``retries`` (default 1) the WorkerLost reaches only the retry handler."""
    from parsl.executors.high_throughput.errors import WorkerLost

    from pipeline.execution.parsl_executor import lost_worker_retry_handler

    worker = _Worker(f"{socket.gethostname()}.4000001")
    ex = _executor(tmp_path, worker)
    ids = [uuid.uuid4() for _ in range(2)]
    futs = [ex.submit(q) for q in ids]
    worker.write(0, "start", "done")  # finished, result lost
    # Task 1 was killed right after its end was noted (before Parsl's worker reported it): the
    # dead process "finished" it too, but Parsl is running it again -- it must not be sent twice.
    worker.write(1, "start", "done")
    key = worker.calls[1][2]
    record = {"args": [ex.graph_path, ex.repo_root, str(ids[1]), None, 20, False, worker.ledger, key]}
    assert lost_worker_retry_handler(WorkerLost(0, "vm"), record) == 1.0  # Parsl retries task 1 itself
    assert ex.n_results_lost == 1 and [c[0] for c in worker.calls[2:]] == [[str(ids[0])]]
    worker.complete(2)
    worker.complete(1)  # Parsl's retry of the killed task succeeds
    assert [f.result(timeout=5).ok for f in futs] == [True, True] and not ex._running
    # Other errors are not retried and touch nothing; a task record without ledger is fine.
    assert lost_worker_retry_handler(ValueError("x"), record) == 1e9
    assert lost_worker_retry_handler(WorkerLost(0, "vm"), {"args": [1, 2]}) == 1.0
    ex.shutdown()


def test_run_goes_on_without_a_ledger(tmp_path: Path) -> None:
    """A ledger that cannot be made costs only the detection of lost results, never a quantum."""
    (tmp_path / ".ccdflow").write_text("not a directory")
    worker = _Worker("unused")
    ex = _executor(tmp_path, worker)
    fut = ex.submit(uuid.uuid4())
    assert worker.calls[0][2] == 1 and worker.ledger is None
    worker.complete(0)
    assert fut.result(timeout=5).ok
    ex.shutdown()
