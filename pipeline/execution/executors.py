"""Executors: where quanta run. The interface is three methods and a window, so Parsl can plug in.

An executor takes quantum *ids* and returns futures of `QuantumResult` (`QuantumExecutor`)::

    class QuantumExecutor:
        max_in_flight: int                        # how many quanta the driver keeps submitted
        def submit(self, quantum_id) -> Future    # concurrent.futures.Future-like (.result(), .done())
        def shutdown(self, cancel=False) -> None
        def reset(self) -> None                   # rebuild after lost workers

The driver (`pipeline.execution.runner`) walks the graph, keeps ``max_in_flight`` quanta
submitted and registers the results; workers only need the graph file and the repository root.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from .single_quantum import QuantumResult, SingleQuantumExecutor
from .threads import disable_implicit_threading

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

    from ..graph.quantum_graph import QuantumGraph

__all__ = ["QuantumExecutor", "SerialExecutor", "ProcessPoolQuantumExecutor", "WorkerLostError"]


class WorkerLostError(RuntimeError):
    """A worker process died (e.g. killed) while running quanta; they can be retried."""


class QuantumExecutor(Protocol):
    """What the driver (`pipeline.execution.runner.run_graph`) needs from an executor."""

    @property
    def max_in_flight(self) -> int:
        """How many quanta the driver keeps submitted (read before every submission: it may change)."""
        ...

    def submit(self, quantum_id: UUID) -> Future[QuantumResult]:
        """Start running one quantum; return a future of its result."""
        ...

    def shutdown(self, cancel: bool = False) -> None:
        """Stop the workers (``cancel=True``: drop queued quanta)."""
        ...

    def reset(self) -> None:
        """Rebuild after lost workers (`WorkerLostError`, a broken pool).

        The quanta the lost workers were running may have left partial files: the quanta run
        after a reset remove stale outputs first.
        """
        ...


class SerialExecutor:
    """Run quanta one at a time in the calling process (``-j 1``).

    Parameters
    ----------
    graph : `pipeline.graph.QuantumGraph`
        The graph.
    repo_root : path-like
        Repository root.
    timeout : `float`, optional
        Per-quantum wall-clock limit (s).
    log_level : `int`, optional
        Level of records kept in ``<label>_log``.
    clean_stale : `bool`, optional
        Passed to `SingleQuantumExecutor`.
    post_mortem : `bool`, optional
        Open the Python debugger at a failing quantum's exception (``pipetask run --pdb``).
    """

    max_in_flight = 1

    def __init__(self, graph: QuantumGraph, repo_root: str | os.PathLike[str], *, timeout: float | None = None,
                 log_level: int = logging.INFO, clean_stale: bool | None = None,
                 post_mortem: bool = False) -> None:
        self._sqe = SingleQuantumExecutor(graph, repo_root, timeout=timeout, log_level=log_level,
                                          clean_stale=clean_stale, post_mortem=post_mortem)

    def submit(self, quantum_id: UUID) -> Future[QuantumResult]:
        """Run the quantum now and return a completed future.

        Parameters
        ----------
        quantum_id : `uuid.UUID`

        Returns
        -------
        future : `concurrent.futures.Future` [`QuantumResult`]
        """
        fut: Future[QuantumResult] = Future()
        fut.set_result(self._sqe.execute(quantum_id))
        return fut

    def shutdown(self, cancel: bool = False) -> None:
        """Nothing to stop."""

    def reset(self) -> None:
        """Nothing to rebuild."""


# ---------------------------------------------------------------- process pool worker side
_WORKERS: dict[tuple[str, str, bool | None], SingleQuantumExecutor] = {}
_WORKER_OPTS: dict[str, Any] = {}


def _init_worker(timeout: float | None, log_level: int, driver_pid: int | None = None) -> None:
    """Pool initializer: per-process settings (the graph is loaded on first use).

    The worker exits when the driver ``driver_pid`` dies (`butler.process_guard`).
    """
    if driver_pid is not None:
        from butler.process_guard import exit_with_driver

        exit_with_driver(driver_pid)
    # One BLAS thread per worker: the pool is the parallelism.
    disable_implicit_threading()
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    _WORKER_OPTS.update(timeout=timeout, log_level=log_level)


def _ping() -> int:
    """Warm-up task: returns the worker's pid once it is up."""
    return os.getpid()


def _run_in_worker(graph_path: str, repo_root: str, clean_stale: bool | None, quantum_id: UUID) -> QuantumResult:
    """Run one quantum; the worker loads each graph file once and keeps it."""
    key = (graph_path, repo_root, clean_stale)
    sqe = _WORKERS.get(key)
    if sqe is None:
        from ..graph.quantum_graph import QuantumGraph

        sqe = _WORKERS[key] = SingleQuantumExecutor(QuantumGraph.load(graph_path), repo_root,
                                                    clean_stale=clean_stale, **_WORKER_OPTS)
    return sqe.execute(quantum_id)


#: Modules imported once by the fork server, so every worker starts with them loaded; the first
#: imports numpy with one BLAS thread (no idle OpenBLAS pool spinning in the fork server).
_PRELOAD = ["pipeline.execution._forkserver_preload", "numpy", "pipeline.execution.single_quantum",
            "pipeline.graph.quantum_graph", "pipeline.task", "pipeline.connections", "butler._quantum_backed",
            "butler.datastore.file_datastore", "butler.datastore.formatters", "butler.datasets",
            "butler.dimensions"]


class ProcessPoolQuantumExecutor:
    """A pool of worker processes started once, each running many quanta (``-j N``).

    Parameters
    ----------
    graph_path : path-like or `None`
        A saved graph file; each worker loads it once, on its first quantum. May be set later
        (``executor.graph_path = ...``) when the pool is started before the graph is saved.
    repo_root : path-like
        Repository root.
    processes : `int`
        Number of worker processes.
    timeout : `float`, optional
        Per-quantum wall-clock limit (s), enforced inside the worker.
    start_method : {"forkserver", "spawn"}, optional
        How workers start (``fork`` is refused: it copies the driver's database connections).
    log_level : `int`, optional
        Level of records kept in ``<label>_log``.
    clean_stale : `bool`, optional
        Passed to `SingleQuantumExecutor`.

    Raises
    ------
    ValueError
        If ``processes < 1`` or the start method is not allowed.
    """

    def __init__(self, graph_path: str | os.PathLike[str] | None, repo_root: str | os.PathLike[str],
                 processes: int, *, timeout: float | None = None, start_method: str = "forkserver",
                 log_level: int = logging.INFO, clean_stale: bool | None = None) -> None:
        if processes < 1:
            raise ValueError(f"-j/--processes must be at least 1, not {processes}")
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"--start-method must be 'forkserver' or 'spawn', not {start_method!r}")
        self.graph_path = str(Path(graph_path).resolve()) if graph_path is not None else None
        self.repo_root = str(Path(repo_root).resolve())
        self.processes = processes
        self.timeout = timeout
        self.start_method = start_method
        self.log_level = log_level
        self.clean_stale = clean_stale
        self.max_in_flight = 2 * processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _ensure_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            return self._ensure_pool_locked()

    def _ensure_pool_locked(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Imported here: a serial run (-j 1) needs neither (~10 ms of imports).
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":
                ctx.set_forkserver_preload(_PRELOAD)
            self._pool = ProcessPoolExecutor(
                max_workers=self.processes, mp_context=ctx, initializer=_init_worker,
                initargs=(self.timeout, self.log_level, os.getpid()))
        return self._pool

    def start(self) -> float:
        """Start the workers now (they import the stack once) and wait until all are up.

        Call it early -- e.g. in a thread while the graph is being built -- so the start-up
        overlaps other work. Safe to call before `graph_path` is known.

        Returns
        -------
        seconds : `float`
            Time the start-up took (s).
        """
        import time

        t0 = time.perf_counter()
        pool = self._ensure_pool()
        futs = [pool.submit(_ping) for _ in range(self.processes)]
        for f in futs:
            f.result()
        return time.perf_counter() - t0

    def start_in_background(self) -> None:
        """Call `start` in a daemon thread (returns at once)."""
        threading.Thread(target=self._start_quietly, daemon=True).start()

    def _start_quietly(self) -> None:
        try:
            self.start()
        except Exception:  # noqa: BLE001 - a real submit will report the problem
            pass

    def submit(self, quantum_id: UUID) -> Future[QuantumResult]:
        """Queue a quantum on the pool.

        Parameters
        ----------
        quantum_id : `uuid.UUID`

        Returns
        -------
        future : `concurrent.futures.Future` [`QuantumResult`]
            Raises `concurrent.futures.process.BrokenProcessPool` from ``result()`` when a
            worker died; the driver then calls `reset` and resubmits.
        """
        if self.graph_path is None:
            raise RuntimeError("ProcessPoolQuantumExecutor.graph_path must be set before submitting quanta")
        return self._ensure_pool().submit(_run_in_worker, self.graph_path, self.repo_root, self.clean_stale,
                                          quantum_id)

    def shutdown(self, cancel: bool = False) -> None:
        """Stop the workers.

        Parameters
        ----------
        cancel : `bool`
            Drop queued quanta and do not wait for running ones to finish.
        """
        if self._pool is not None:
            if cancel:
                procs = list(getattr(self._pool, "_processes", {}).values())
                self._pool.shutdown(wait=False, cancel_futures=True)
                for p in procs:
                    if p.is_alive():
                        p.terminate()
                for p in procs:
                    p.join(timeout=5)
            else:
                self._pool.shutdown(wait=True)
            self._pool = None

    def reset(self) -> None:
        """Throw away a broken pool; the next `submit` starts fresh workers, which remove the
        partial files the lost quanta may have left."""
        self.shutdown(cancel=True)
        self.clean_stale = True
