"""The driver: prepares the output run, walks the graph, registers outputs in batches.

`pre_exec_init` makes the repository ready (dataset types, RUN and CHAINED collections, run-level
``<label>_config`` and ``packages`` datasets, checked against the existing ones when a run is
extended, removal of clobbered outputs). `run_graph` then keeps a bounded window of ready
quanta submitted to an executor (`pipeline.execution.executors`), records each result in a
`GraphWalker` (a failure blocks only its descendants) and registers the files workers wrote
with `butler.Butler.register_outputs` in batched transactions -- after the files exist, so an
interrupted run never leaves a registered dataset without its file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .executors import QuantumExecutor, WorkerLostError
from .single_quantum import QuantumResult
from .walker import GraphWalker

if TYPE_CHECKING:
    from butler import Butler, DatasetRef
    from butler.registry import Registry

    from ..graph.quantum_graph import QuantumGraph

__all__ = ["QuantumReport", "RunReport", "run_graph", "pre_exec_init", "ExecutionError",
           "packages_versions", "resume_state"]

_log = logging.getLogger("ccdflow.exec")


class ExecutionError(RuntimeError):
    """Raised when the repository is not ready for a graph (dataset types, configs, run)."""


@dataclass
class QuantumReport:
    """Outcome of one quantum (one entry of ``--summary``)."""

    quantum_id: UUID
    task_label: str
    data_id: dict[str, Any]
    status: str = "pending"
    time: float = 0.0
    error: str | None = None
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in ``--summary``.

        Returns
        -------
        data : `dict`
        """
        return {"quantumId": str(self.quantum_id), "taskLabel": self.task_label, "dataId": self.data_id,
                "status": self.status, "time": round(self.time, 6), "error": self.error,
                "traceback": self.traceback}


@dataclass
class RunReport:
    """Outcome of a whole run.

    Attributes
    ----------
    quanta : `dict` [`uuid.UUID`, `QuantumReport`]
    wall_time : `float`
        Seconds for the walk (s).
    interrupted : `bool`
        True when the run was stopped by Ctrl-C / a signal.
    disk_full : `str` or `None`
        The error of the first quantum that failed because the disk (or quota) was full; no
        quantum is submitted after it.
    """

    quanta: dict[UUID, QuantumReport] = field(default_factory=dict)
    wall_time: float = 0.0
    run_time: float = 0.0
    interrupted: bool = False
    n_registered: int = 0
    disk_full: str | None = None

    def count(self, status: str) -> int:
        """Number of quanta with a status.

        Parameters
        ----------
        status : `str`
            ``done``, ``no_work``, ``failed``, ``blocked`` (a predecessor failed), ``skipped`` or
            ``pending`` (not attempted: ``--fail-fast`` or a full disk stopped the run first).

        Returns
        -------
        n : `int`
        """
        return sum(1 for q in self.quanta.values() if q.status == status)

    @property
    def success(self) -> bool:
        """True when no quantum failed or was blocked and the run was not interrupted."""
        return not self.interrupted and all(q.status in ("done", "no_work", "skipped")
                                            for q in self.quanta.values())

    def summary(self, graph: QuantumGraph | None = None, command: Sequence[str] | None = None) -> dict[str, Any]:
        """Return the ``--summary`` JSON document.

        Parameters
        ----------
        graph : `pipeline.graph.QuantumGraph`, optional
            For the per-task counts.
        command : `list` [`str`], optional
            The command line.

        Returns
        -------
        summary : `dict`
        """
        status = "interrupted" if self.interrupted else ("success" if self.success else "failure")
        failed = [q for q in self.quanta.values() if q.status == "failed"]
        return {
            "status": status,
            "cmdLine": " ".join(command) if command else None,
            "wallTime": round(self.wall_time, 3),
            "counts": {s: self.count(s) for s in ("done", "no_work", "failed", "blocked", "pending", "skipped")},
            "qgraphSummary": {"outputRun": graph.output_run if graph is not None else None,
                              "quanta": graph.count_by_task() if graph is not None else {}},
            "exceptionInfo": ({"type": (failed[0].error or "").split(":")[0], "message": failed[0].error}
                              if failed else None),
            "quantaReports": [q.to_dict() for q in self.quanta.values()],
        }


def packages_versions() -> dict[str, str]:
    """Return the versions of the packages that matter for reproducibility.

    Returns
    -------
    versions : `dict` [`str`, `str`]
        ``python``, ``ccdflow`` and the main numerical libraries.
    """
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in ("ccdflow", "numpy", "scipy", "astropy", "sqlalchemy", "pydantic"):
        try:
            out[dist] = _dist_version(metadata.distribution(dist))
        except metadata.PackageNotFoundError:
            pass
    return out


_VERSION_LINE = re.compile(r"^Version:[ \t]*(.*?)\r?$", re.MULTILINE | re.IGNORECASE)


def _dist_version(dist: Any) -> str:
    """``Version`` of an installed distribution, as `importlib.metadata.version` returns it.

    Reads the field from the header block of its ``METADATA`` (the lines before the first empty
    one) instead of parsing the whole file with `email`: the METADATA of numpy or scipy carries
    the README, and the email parser spent ~40 ms per ``pipetask run`` on it. Falls back to
    ``dist.version`` when the header has no such line.

    Parameters
    ----------
    dist : `importlib.metadata.Distribution`

    Returns
    -------
    version : `str`
        As `email` parses the header: leading blanks dropped, trailing ones kept (``dist.version``,
        which may be `None`, when the field is missing).
    """
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    head = re.split(r"\r?\n\r?\n", text, maxsplit=1)[0]
    m = _VERSION_LINE.search(head)
    return m.group(1) if m else dist.version


# ---------------------------------------------------------------------------- pre-exec-init
def pre_exec_init(butler: Butler, graph: QuantumGraph, *, register_dataset_types: bool = False,
                  save_versions: bool = True) -> None:
    """Prepare the repository for a graph's outputs.

    Registers (``register_dataset_types``) or checks the dataset types, creates the output RUN
    and the CHAINED output collection, removes clobbered outputs, and writes the run-level
    ``<label>_config`` and ``packages`` datasets -- comparing them with those already in the run
    when it is extended.

    Parameters
    ----------
    butler : `butler.Butler`
        A writeable butler.
    graph : `pipeline.graph.QuantumGraph`
        The graph to run.
    register_dataset_types : `bool`
        Register missing dataset types instead of failing.
    save_versions : `bool`
        Write/check the ``packages`` dataset.

    Raises
    ------
    ExecutionError
        If a dataset type is missing (without ``register_dataset_types``) or defined
        differently, or the existing configs/packages of an extended run differ (the message
        names the differing fields and the fix).
    """
    from butler import MissingDatasetTypeError

    registry = butler.registry
    md = graph.metadata
    missing, conflicts = [], []
    for dt in graph.dataset_types.values():
        try:
            existing = registry.get_dataset_type(dt.name)
        except (MissingDatasetTypeError, KeyError, LookupError):
            existing = None
        if existing is None:
            missing.append(dt)
        elif existing != dt:
            conflicts.append(f"{dt.name}: repository has {existing}, pipeline needs {dt}")
    if conflicts:
        raise ExecutionError("dataset type definitions conflict with the repository: "
                             + "; ".join(conflicts) + ". Rename the pipeline's dataset type "
                             "(config.connections.<name>) or remove the old type")
    if missing and not register_dataset_types:
        raise ExecutionError(
            "dataset type(s) not registered in the repository: "
            + ", ".join(sorted(d.name for d in missing)) + "; rerun with --register-dataset-types")
    run = graph.output_run
    if not run:
        raise ExecutionError("the quantum graph has no output run; build it with -o or --output-run")
    existing_init = {}
    try:
        registry.get_collection_type(run)
        run_exists = True
    except Exception:  # noqa: BLE001 - MissingCollectionError
        run_exists = False
    if run_exists:
        for refs in graph.init_outputs.values():
            for ref in refs:
                found = butler.find_dataset(ref.dataset_type.name, collections=[run]) \
                    if _has_type(registry, ref.dataset_type.name) else None
                if found is not None:
                    existing_init[ref.dataset_type.name] = found
    # Compare before writing anything.
    problems: list[str] = []
    from ..config import diff_configs

    new_values: dict[str, Any] = {}
    for label, refs in graph.init_outputs.items():
        for ref in refs:
            name = ref.dataset_type.name
            value = packages_versions() if name == "packages" else graph.tasks[label].config
            new_values[name] = value
            old_ref = existing_init.get(name)
            if old_ref is None:
                continue
            old = butler.get(old_ref)
            if name == "packages":
                if not save_versions:
                    continue
                diff = [f"{k}: {old.get(k)!r} != {value.get(k)!r}" for k in sorted(set(old) | set(value))
                        if old.get(k) != value.get(k)]
                if diff:
                    problems.append(f"package versions differ from run {run!r}: " + "; ".join(diff)
                                    + " (rerun with --no-versions to ignore)")
            else:
                diff = diff_configs(old, value)
                if diff:
                    problems.append(f"task {label!r} config differs from the one saved in run {run!r}: "
                                    + "; ".join(diff[:10]))
    if problems:
        raise ExecutionError(" | ".join(problems) + ". Use a new output run, or the same config to extend it")
    # One transaction: dataset types, RUN, CHAINED collection and the init-outputs. If a write
    # fails (read-only directory, full disk) nothing is left registered, and the files already
    # written are deleted: no empty RUN or chain stays behind.
    put_paths: list[Path] = []
    try:
        with registry.transaction():
            for dt in missing:
                registry.register_dataset_type(dt)
            registry.register_run(run)
            chain_name = md.get("output")
            if chain_name:
                from butler import CollectionType

                chain = list(md.get("output_chain") or [run, *md.get("inputs", [])])
                try:
                    registry.get_collection_type(chain_name)
                    exists = True
                except Exception:  # noqa: BLE001 - MissingCollectionError
                    exists = False
                if not exists:
                    registry.register_collection(chain_name, CollectionType.CHAINED)
                registry.set_collection_chain(chain_name, chain)
            from ._butler_adapter import predicted_file_info

            for label, refs in graph.init_outputs.items():
                for ref in refs:
                    name = ref.dataset_type.name
                    if name in existing_init or (name == "packages" and not save_versions):
                        continue
                    path = Path(butler.root) / predicted_file_info(butler.root, ref).path
                    butler.put(new_values[name], ref)
                    put_paths.append(path)
    except BaseException:
        for path in put_paths:
            path.unlink(missing_ok=True)
        raise
    prune = md.get("clobber_refs") or []
    if prune:
        _prune(butler, prune)


def _has_type(registry: Registry, name: str) -> bool:
    try:
        registry.get_dataset_type(name)
        return True
    except Exception:  # noqa: BLE001
        return False


def _prune(butler: Butler, refs: list[dict[str, Any]]) -> None:
    from butler import DataCoordinate, DatasetRef

    objs = []
    for r in refs:
        dt = butler.registry.get_dataset_type(r["dataset_type"])
        objs.append(DatasetRef(dt, DataCoordinate.make(dt.dimensions, **r["data_id"]), r["run"],
                               UUID(r["id"])))
    _log.info("Removing %d outputs of previous attempts (--clobber-outputs)", len(objs))
    butler.prune_datasets(objs, purge=True)


# ---------------------------------------------------------------------------- progress
class _Progress:
    """A rich progress bar on a terminal, plain log lines otherwise."""

    def __init__(self, total: int, mode: str) -> None:
        self.total = total
        if mode == "auto":
            mode = "rich" if sys.stderr.isatty() else "plain"
        self.mode = mode
        self.t0 = time.monotonic()
        self.last = 0.0
        self._printed: tuple[int, int, int] | None = None
        self._bar: Any = None
        if mode == "rich" and total:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("[bold]quanta"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), transient=False)
            self._task = self._bar.add_task("run", total=total, status="")
            self._bar.start()

    def update(self, done: int, failed: int, blocked: int, final: bool = False) -> None:
        finished = done + failed + blocked
        elapsed = time.monotonic() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        if self._bar is not None:
            self._bar.update(self._task, completed=finished,
                             status=f"done {done} failed {failed} blocked {blocked} {rate:.1f}/s")
            if final:
                self._bar.stop()
            return
        if self.mode != "plain":
            return
        now = time.monotonic()
        state = (done, failed, blocked)
        if state == self._printed:
            return
        if final or now - self.last >= 5.0 or finished == self.total:
            self.last = now
            self._printed = state
            eta = (self.total - finished) / rate if rate > 0 else float("nan")
            _log.info("%d/%d quanta finished: %d done, %d failed, %d blocked; %.1f quanta/s, ETA %.0f s",
                      finished, self.total, done, failed, blocked, rate, eta)


# ---------------------------------------------------------------------------- driver
def run_graph(butler: Butler, graph: QuantumGraph, executor: QuantumExecutor, *, fail_fast: bool = False,
              progress: str = "auto", summary_path: str | os.PathLike[str] | None = None,
              batch_seconds: float = 1.0, batch_size: int = 500, max_retries: int = 1,
              command: Sequence[str] | None = None, skip: set[UUID] | frozenset[UUID] = frozenset()) -> RunReport:
    """Execute every quantum of a graph and register the outputs.

    Parameters
    ----------
    butler : `butler.Butler`
        Writeable butler of the repository (registration only; workers never use it).
    graph : `pipeline.graph.QuantumGraph`
        The graph; `pre_exec_init` must have run.
    executor : `pipeline.execution.executors.QuantumExecutor`
        Where quanta run.
    fail_fast : `bool`
        Stop submitting new quanta after the first failure.
    progress : {"auto", "rich", "plain", "none"}
        Progress display (``auto``: rich bar on a terminal, log lines otherwise).
    summary_path : path-like, optional
        Write the JSON summary (status, time, error per quantum) there.
    batch_seconds, batch_size : `float`, `int`
        Register finished outputs at least this often / in batches of this many results.
    max_retries : `int`
        How often a quantum whose worker died is resubmitted before it counts as failed.
    command : `list` [`str`], optional
        Command line recorded in the summary.
    skip : `set` [`uuid.UUID`], optional
        Quanta already done (e.g. from `resume_state`); marked ``skipped`` without running.

    Returns
    -------
    report : `RunReport`
        Per-quantum statuses. A `KeyboardInterrupt` is re-raised after the finished outputs were
        registered and the summary written.
    """
    t0 = time.perf_counter()
    n = len(graph)
    succ = graph.successor_indices()
    walker: GraphWalker[int] = GraphWalker({i: succ[i] for i in range(n)})
    report = RunReport()
    for i in range(n):
        qid = graph.id_at(i)
        report.quanta[qid] = QuantumReport(qid, graph.label_at(i), graph.required_data_id_at(i))
    bar = _Progress(n, progress)
    in_flight: dict[Future[QuantumResult], int] = {}
    retries: dict[int, int] = {}
    pending: list[QuantumResult] = []
    last_flush = time.monotonic()
    stop_submitting = False
    broken_at_submit = False
    n_done = n_failed = n_blocked = 0

    def flush() -> None:
        nonlocal last_flush
        if pending:
            report.n_registered += _register(butler, graph, pending)
            pending.clear()
        last_flush = time.monotonic()

    def on_result(idx: int, res: QuantumResult) -> None:
        nonlocal n_done, n_failed, n_blocked, stop_submitting
        rep = report.quanta[graph.id_at(idx)]
        rep.time = res.wall_time
        report.run_time += res.run_time
        pending.append(res)
        if res.ok:
            rep.status = res.status
            walker.mark_done(idx)
            n_done += 1
        else:
            rep.status, rep.error, rep.traceback = "failed", res.error, res.traceback
            if _disk_full(res.error):
                # Every further quantum would fail the same way: stop, and say it once.
                if report.disk_full is None:
                    report.disk_full = res.error
                stop_submitting = True
            else:
                _log.error("Quantum %s failed: %s", graph.quantum_at(idx).describe(), res.error)
            for b in walker.mark_failed(idx):
                report.quanta[graph.id_at(b)].status = "blocked"
                n_blocked += 1
            n_failed += 1
            if fail_fast:
                stop_submitting = True

    try:
        while not walker.finished:
            if not stop_submitting:
                # Read every time: an executor may widen its window as it learns (Parsl batching).
                window = max(1, executor.max_in_flight)
                batch = walker.take_ready(window - len(in_flight))
                for pos, idx in enumerate(batch):
                    qid = graph.id_at(idx)
                    if qid in skip:
                        report.quanta[qid].status = "skipped"
                        walker.mark_done(idx)
                        continue
                    try:
                        fut = executor.submit(qid)
                    except BrokenExecutor as exc:
                        if not _lost_worker(exc):
                            raise
                        for back in reversed(batch[pos:]):
                            walker.requeue(back)
                        broken_at_submit = True
                        break
                    in_flight[fut] = idx
            if not in_flight:
                if broken_at_submit:
                    _log.warning("A worker process died; restarting the pool")
                    _reset(executor, butler, graph.output_run)
                    broken_at_submit = False
                    continue
                if walker.n_ready and not stop_submitting:
                    continue
                break
            done, _ = wait(list(in_flight), timeout=batch_seconds, return_when=FIRST_COMPLETED)
            lost = broken_at_submit
            broken_at_submit = False
            for fut in done:
                idx = in_flight.pop(fut)
                try:
                    res = fut.result()
                except BrokenExecutor as exc:
                    if not _lost_worker(exc):
                        raise
                    lost = True
                    retries[idx] = retries.get(idx, 0) + 1
                    if retries[idx] > max_retries:
                        qid = graph.id_at(idx)
                        on_result(idx, QuantumResult(qid, "failed", error=f"{WorkerLostError.__name__}: the "
                                                     "worker process running it died"))
                    else:
                        walker.requeue(idx)
                    continue
                on_result(idx, res)
            if lost:
                _log.warning("A worker process died; restarting the pool and resubmitting its quanta")
                for fut, idx in list(in_flight.items()):
                    retries[idx] = retries.get(idx, 0) + 1
                    walker.requeue(idx)
                in_flight.clear()
                _reset(executor, butler, graph.output_run)
            if len(pending) >= batch_size or time.monotonic() - last_flush >= batch_seconds:
                flush()
            bar.update(n_done, n_failed, n_blocked)
        flush()
    except BaseException:
        report.interrupted = True
        executor.shutdown(cancel=True)
        # Results that already came back still get registered: their files are complete.
        for fut, idx in list(in_flight.items()):
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                pending.append(fut.result())
        try:
            flush()
        except Exception as exc:  # noqa: BLE001 - never mask the interrupt
            _log.error("could not register the outputs of the finished quanta: %s", exc,
                       exc_info=_log.isEnabledFor(logging.DEBUG))
        raise
    finally:
        report.wall_time = time.perf_counter() - t0
        bar.update(n_done, n_failed, n_blocked, final=True)
        if summary_path is not None:
            Path(summary_path).write_text(json.dumps(report.summary(graph, command), indent=1, default=str))
    # Quanta never submitted after --fail-fast (or a full disk) stopped the run stay "pending"
    # (not attempted): "blocked" is only for descendants of a failed quantum.
    return report


def _lost_worker(exc: BaseException) -> bool:
    """Whether ``exc`` is the process pool's `~concurrent.futures.process.BrokenProcessPool`.

    A worker died (killed, out of memory): the driver restarts the pool and resubmits. The
    class is looked up only when a broken executor is reported, so that a serial run does not
    import `concurrent.futures.process` and `multiprocessing` (~10 ms); a pool that raised it
    has imported that module.
    """
    mod = sys.modules.get("concurrent.futures.process")
    return mod is not None and isinstance(exc, mod.BrokenProcessPool)


def _disk_full(error: str | None) -> bool:
    """Whether a quantum's error says the disk or the quota was full (``ENOSPC``/``EDQUOT``)."""
    if not error:
        return False
    return any(s in error for s in ("[Errno 28]", "No space left on device", "[Errno 122]",
                                    "Disk quota exceeded", "database or disk is full"))


def _reset(executor: QuantumExecutor, butler: Butler | None = None, run: str | None = None) -> None:
    """Restart a broken pool (its quanta may have left partial files; see `QuantumExecutor.reset`).

    Its workers are gone (`executor.reset` terminates them), so the temporary files a killed
    worker left in the output RUN can go now (the driver holds the RUN's lock).
    """
    executor.reset()
    if butler is not None and run:
        from .cleanup import remove_stale_temporaries

        try:
            remove_stale_temporaries(butler, run)
        except Exception as exc:  # noqa: BLE001 - never stop the run for the clean-up
            _log.warning("could not remove the temporary files of run %s: %s", run, exc)


def resume_state(butler: Butler, graph: QuantumGraph) -> tuple[set[UUID], list[DatasetRef]]:
    """What a previous attempt at the same graph left in its output run.

    Used when a saved graph is run again (``pipetask run -g``) after an interruption or failure:
    quanta whose predicted ``<label>_metadata`` UUID is registered are done; datasets registered
    for the other quanta (the ``<label>_log`` of a failed attempt) are stale and must be removed
    before those quanta run again.

    Parameters
    ----------
    butler : `butler.Butler`
    graph : `pipeline.graph.QuantumGraph`

    Returns
    -------
    done : `set` [`uuid.UUID`]
        Ids of quanta that already succeeded.
    stale : `list` [`butler.DatasetRef`]
        Registered outputs of quanta that will run again.
    """
    run = graph.output_run
    if run is None:
        return set(), []
    try:
        butler.registry.get_collection_type(run)
    except Exception:  # noqa: BLE001 - MissingCollectionError: a fresh run
        return set(), []
    registered: set[UUID] = set()
    names = {r.dataset_type.name for i in range(len(graph)) for r in graph.quantum_at(i).all_outputs()}
    for name in sorted(names):
        try:
            registered.update(r.id for r in butler.query_datasets(name, collections=[run], find_first=True))
        except Exception:  # noqa: BLE001 - dataset type not registered yet
            continue
    done: set[UUID] = set()
    stale: list[DatasetRef] = []
    for i in range(len(graph)):
        q = graph.quantum_at(i)
        if q.metadata_ref.id in registered:
            done.add(q.id)
        else:
            stale.extend(r for r in q.all_outputs() if r.id in registered)
    return done, stale


def _register(butler: Butler, graph: QuantumGraph, results: list[QuantumResult]) -> int:
    """Register the files of finished quanta in one transaction; return how many."""
    items = []
    for res in results:
        if not res.written:
            continue
        q = graph[res.quantum_id]
        by_id = {r.id: r for r in q.all_outputs()}
        for uid, info in res.written:
            items.append((by_id[uid], info))
    if items:
        butler.register_outputs(items)
    return len(items)
