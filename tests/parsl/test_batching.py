"""Batching, window and retry bookkeeping of `ParslQuantumExecutor`, without starting Parsl.

The Parsl app is replaced by a recorder returning futures the test completes by hand, so the
exact grouping of quanta into Parsl tasks, the automatic batch size, the window and the
lost-worker resubmissions are checked deterministically (the real HTEX runs are in
``test_parsl_run.py`` and ``test_submit.py``).
"""

from __future__ import annotations

import uuid
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.execution.parsl_executor import ParslConfigError, ParslQuantumExecutor, ParslSiteConfig
from pipeline.execution.single_quantum import QuantumResult

pytestmark = pytest.mark.parsl


class _FakeApp:
    """Stands in for the two Parsl apps: records each task and hands back a pending future."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], bool]] = []
        self.futures: list[Future[Any]] = []

    def __call__(self, graph_path: str, root: str, qids: Any, timeout: Any, level: int,
                 retry: bool, ledger: str | None = None, key: int | None = None) -> Future[Any]:
        ids = list(qids) if isinstance(qids, list) else [qids]
        self.calls.append((ids, retry))
        fut: Future[Any] = Future()
        self.futures.append(fut)
        return fut

    def complete(self, i: int, wall_time: float = 0.01, status: str = "done") -> None:
        ids = self.calls[i][0]
        res = [QuantumResult(uuid.UUID(q), status, wall_time=wall_time) for q in ids]
        self.futures[i].set_result(res if len(ids) > 1 else res[0])


def _executor(tmp_path: Path, **kwargs: Any) -> tuple[ParslQuantumExecutor, _FakeApp]:
    g = tmp_path / "g.qg"
    g.write_bytes(b"x")
    cfg = {"htex": {"max_workers_per_node": 2, "prefetch_capacity": 1}, "lost_worker_retries": 1}
    ex = ParslQuantumExecutor(g, tmp_path, cfg, **kwargs)
    app = _FakeApp()
    ex._ensure_started = lambda: app  # type: ignore[method-assign]
    ex._batch_app = app
    ex._dfk = SimpleNamespace(cleanup=lambda: None)  # "running"
    return ex, app


def test_fixed_batches_fill_then_partial_batch_when_workers_would_idle(tmp_path: Path) -> None:
    ex, app = _executor(tmp_path, quanta_per_task=4)
    # 2 workers + 1 prefetch slot: 5 Parsl tasks in flight, partial batches below 3.
    assert ex.tasks_in_flight == 5 and ex.max_in_flight == 20
    ids = [uuid.uuid4() for _ in range(8)]
    futs = [ex.submit(q) for q in ids]
    # The first 3 go out alone (workers idle otherwise), then one full batch of 4, 1 waits.
    assert [len(c[0]) for c in app.calls] == [1, 1, 1, 4]
    assert [c[0] for c in app.calls[3:]] == [[str(q) for q in ids[3:7]]]
    app.complete(3)  # the batch: 3 tasks still in flight, not below 3 -> the last quantum waits
    assert len(app.calls) == 4 and all(f.done() for f in futs[3:7]) and not futs[7].done()
    app.complete(0)  # 2 tasks in flight: the waiting quantum goes out as a partial batch
    assert app.calls[4] == ([str(ids[7])], False)
    for i in (1, 2, 4):
        app.complete(i)
    assert [f.result().quantum_id for f in futs] == ids
    assert all(f.result().ok for f in futs) and ex.n_tasks_sent == 5 and ex._n_tasks == 0


def test_auto_batch_size_follows_the_median_quantum_time(tmp_path: Path) -> None:
    ex, app = _executor(tmp_path)
    assert ex.auto_batch and ex.quanta_per_task == 1 and ex.max_in_flight == 5
    futs = [ex.submit(uuid.uuid4()) for _ in range(5)]
    # Before any result the batch size is 1: every quantum is a full batch and goes out at once.
    assert [len(c[0]) for c in app.calls] == [1, 1, 1, 1, 1]
    for i in range(5):
        app.complete(i, wall_time=0.02)  # 20 ms quanta -> 0.2 s / 20 ms = 10 per Parsl task
    assert ex.quanta_per_task == 10 and ex.max_in_flight == 50
    assert all(f.done() for f in futs)
    ex2, app2 = _executor(tmp_path)
    ex2.submit(uuid.uuid4())
    app2.complete(0, wall_time=0.0005)  # very short quanta: capped
    assert ex2.quanta_per_task == ParslQuantumExecutor.AUTO_MAX_QUANTA_PER_TASK == 16
    ex3, app3 = _executor(tmp_path)
    ex3.submit(uuid.uuid4())
    app3.complete(0, wall_time=1.5)  # long quanta: one per task
    assert ex3.quanta_per_task == 1 and ex3.max_in_flight == 5
    # A fixed window stays fixed.
    ex4, app4 = _executor(tmp_path, max_in_flight=7)
    ex4.submit(uuid.uuid4())
    app4.complete(0, wall_time=0.02)
    assert ex4.quanta_per_task == 10 and ex4.max_in_flight == 7


def test_lost_worker_resubmits_each_quantum_and_task_errors_are_not_retried(tmp_path: Path) -> None:
    from parsl.executors.high_throughput.errors import WorkerLost

    ex, app = _executor(tmp_path, quanta_per_task=2)
    ids = [uuid.uuid4() for _ in range(5)]
    futs = [ex.submit(q) for q in ids]
    assert [len(c[0]) for c in app.calls] == [1, 1, 1, 2]
    app.futures[3].set_exception(WorkerLost(7, "node1"))  # the batch of 2 lost with its worker
    assert ex.n_lost == 1
    resent = app.calls[4:]
    assert sorted(c[0][0] for c in resent) == sorted(str(q) for q in ids[3:5])
    assert all(retry for _ids, retry in resent)  # leftovers of the lost attempt removed first
    app.futures[4].set_exception(WorkerLost(8, "node1"))  # second loss: retries (1) used up
    res = futs[ids.index(uuid.UUID(resent[0][0][0]))].result()
    assert res.status == "failed" and res.error.startswith("WorkerLostError")
    app.complete(5)
    app.complete(0, status="failed")  # an algorithm error comes back as a result: not resent
    app.complete(1)
    app.complete(2)
    assert len(app.calls) == 6 and futs[0].result().status == "failed"
    assert sum(f.result().ok for f in futs) == 3 and ex._n_tasks == 0
    ex.shutdown()
    assert ex.dfk is None


def test_quanta_per_task_validation(tmp_path: Path) -> None:
    assert ParslSiteConfig().quanta_per_task == "auto"
    assert ParslSiteConfig(quanta_per_task=3).quanta_per_task == 3
    with pytest.raises(ValueError):
        ParslSiteConfig(quanta_per_task=0)
    g = tmp_path / "g.qg"
    g.write_bytes(b"x")
    with pytest.raises(ParslConfigError, match="quanta_per_task must be a positive integer or 'auto'"):
        ParslQuantumExecutor(g, tmp_path, quanta_per_task="many")
    with pytest.raises(ParslConfigError, match="at least 1"):
        ParslQuantumExecutor(g, tmp_path, quanta_per_task=0)


def test_graph_path_may_come_later_but_is_needed_to_submit(tmp_path: Path) -> None:
    ex = ParslQuantumExecutor(None, tmp_path, {"htex": {"max_workers_per_node": 2}})
    with pytest.raises(RuntimeError, match="graph_path must be set before submitting"):
        ex.submit(uuid.uuid4())
    ex.shutdown()
    with pytest.raises(RuntimeError, match="was shut down; make a new one"):
        ex.start()
