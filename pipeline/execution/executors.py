"""Executors: where quanta run. The interface is three methods, so Parsl can plug in.

An executor takes quantum *ids* and returns futures of `QuantumResult`::

    class QuantumExecutor:
        max_in_flight: int                        # how many quanta the driver keeps submitted
        def submit(self, quantum_id) -> Future    # concurrent.futures.Future-like (.result(), .done())
        def shutdown(self, cancel=False) -> None
        def reset(self) -> None                   # optional: rebuild after lost workers

The driver (`pipeline.execution.runner`) walks the graph, keeps ``max_in_flight`` quanta
submitted and registers the results; workers only need the graph file and the repository root.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from .single_quantum import QuantumResult, SingleQuantumExecutor

__all__ = ["QuantumExecutor", "SerialExecutor", "ProcessPoolQuantumExecutor", "WorkerLostError"]


class WorkerLostError(RuntimeError):
    """A worker process died (e.g. killed) while running quanta; they can be retried."""


class QuantumExecutor(Protocol):
    """What the driver needs from an executor (see module docstring)."""

    max_in_flight: int

    def submit(self, quantum_id: UUID) -> Future[QuantumResult]:
        """Start running one quantum; return a future of its result."""

    def shutdown(self, cancel: bool = False) -> None:
        """Stop the workers (``cancel=True``: drop queued quanta)."""


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
    """

    max_in_flight = 1

    def __init__(self, graph: Any, repo_root: str | os.PathLike[str], *, timeout: float | None = None,
                 log_level: int = logging.INFO, clean_stale: bool | None = None) -> None:
        self._sqe = SingleQuantumExecutor(graph, repo_root, timeout=timeout, log_level=log_level,
                                          clean_stale=clean_stale)

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
_WORKER: SingleQuantumExecutor | None = None


def _init_worker(graph_path: str, repo_root: str, timeout: float | None, log_level: int,
                 clean_stale: bool | None = None) -> None:
    """Pool initializer: load the graph once per worker process."""
    global _WORKER
    from ..graph.quantum_graph import QuantumGraph

    # One BLAS thread per worker: the pool is the parallelism.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    graph = QuantumGraph.load(graph_path)
    _WORKER = SingleQuantumExecutor(graph, repo_root, timeout=timeout, log_level=log_level,
                                    clean_stale=clean_stale)


def _run_in_worker(quantum_id: UUID) -> QuantumResult:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.execute(quantum_id)


class ProcessPoolQuantumExecutor:
    """A pool of worker processes started once, each running many quanta (``-j N``).

    Parameters
    ----------
    graph_path : path-like
        A saved graph file; each worker loads it once at start-up.
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

    def __init__(self, graph_path: str | os.PathLike[str], repo_root: str | os.PathLike[str],
                 processes: int, *, timeout: float | None = None, start_method: str = "forkserver",
                 log_level: int = logging.INFO, clean_stale: bool | None = None) -> None:
        if processes < 1:
            raise ValueError(f"-j/--processes must be at least 1, not {processes}")
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"--start-method must be 'forkserver' or 'spawn', not {start_method!r}")
        self.graph_path = str(Path(graph_path).resolve())
        self.repo_root = str(Path(repo_root).resolve())
        self.processes = processes
        self.timeout = timeout
        self.start_method = start_method
        self.log_level = log_level
        self.clean_stale = clean_stale
        self.max_in_flight = 2 * processes
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":
                ctx.set_forkserver_preload(["pipeline.execution.single_quantum", "butler"])
            self._pool = ProcessPoolExecutor(
                max_workers=self.processes, mp_context=ctx, initializer=_init_worker,
                initargs=(self.graph_path, self.repo_root, self.timeout, self.log_level, self.clean_stale))
        return self._pool

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
        return self._ensure_pool().submit(_run_in_worker, quantum_id)

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
        """Throw away a broken pool; the next `submit` starts fresh workers."""
        self.shutdown(cancel=True)
