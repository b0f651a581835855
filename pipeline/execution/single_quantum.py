"""Run one quantum in a worker: no registry, predicted refs only, atomic files, provenance out.

`SingleQuantumExecutor.execute` is what every executor (serial, process pool, Parsl, ``run-qbb``)
calls with a quantum id. It

1. rebuilds the task from the graph's saved class path and frozen config (cached per label);
2. makes a `butler.QuantumBackedButler` knowing the quantum's predicted inputs (with datastore
   records for pre-existing ones, predicted file locations for ones produced upstream) and
   outputs, and drops inputs an upstream quantum did not produce (`NoWorkFound` when a
   connection then falls below its ``minimum``);
3. calls ``task.runQuantum(butlerQC, inputRefs, outputRefs)`` with the log captured, under an
   optional wall-clock timeout;
4. writes ``<label>_log`` always and ``<label>_metadata`` (timings, CPU, max RSS, task metadata,
   butler metrics, output UUIDs) only on success -- the metadata file is written last, so its
   existence marks success. On failure the partial outputs are deleted (no file a rerun trips
   over) and only the log is kept;
5. returns a small picklable `QuantumResult` listing ``(dataset id, StoredFileInfo)`` of every
   file written, for the driver to register in a batch.
"""

from __future__ import annotations

import datetime
import logging
import os
import resource
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ..graph.quantum import LOG_CONNECTION, METADATA_CONNECTION, Quantum
from .butler_qc import ButlerQuantumContext, InputQuantizedConnection, OutputQuantizedConnection
from .heap import keep_freed_memory
from .threads import disable_implicit_threading

if TYPE_CHECKING:
    from butler import DatasetRef, QuantumBackedButler, StoredFileInfo

    from ..graph.quantum_graph import QuantumGraph
    from ..task import PipelineTask

__all__ = ["QuantumResult", "SingleQuantumExecutor", "QuantumTimeoutError", "make_task"]

_log = logging.getLogger("ccdflow.exec")


class QuantumTimeoutError(TimeoutError):
    """Raised inside a quantum that ran longer than ``--timeout`` seconds."""


@dataclass
class QuantumResult:
    """What a worker reports back for one quantum (small and picklable).

    Attributes
    ----------
    quantum_id : `uuid.UUID`
    status : `str`
        ``"done"`` (success), ``"no_work"`` (`NoWorkFound`: success without outputs) or
        ``"failed"``.
    written : `list` [`tuple` [`uuid.UUID`, `butler.StoredFileInfo`]]
        Files written (outputs, metadata, log) to register; on failure only the log.
    error : `str`, optional
        ``"ExceptionType: message"`` for failures.
    traceback : `str`, optional
        Formatted traceback for failures.
    wall_time : `float`
        Seconds from start of preparation to the end (s).
    run_time : `float`
        Seconds spent inside ``runQuantum`` (s).
    """

    quantum_id: UUID
    status: str
    written: list[tuple[UUID, Any]] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    wall_time: float = 0.0
    run_time: float = 0.0

    @property
    def ok(self) -> bool:
        """True for ``done`` and ``no_work``."""
        return self.status != "failed"


def make_task(task_class: str, config: dict[str, Any], label: str) -> PipelineTask:
    """Build a task from its class path and frozen config dict.

    Parameters
    ----------
    task_class : `str`
        Dotted path of the `PipelineTask` subclass.
    config : `dict`
        ``config.to_dict()`` of the task's config.
    label : `str`
        Task label (used as the task name and in errors).

    Returns
    -------
    task : `pipeline.task.PipelineTask`

    Raises
    ------
    ImportError
        If the class cannot be imported.
    pipeline.exceptions.ConfigError
        If the saved config no longer validates.
    """
    from ..config import import_dotted

    cls = import_dotted(task_class)
    cfg = cls.ConfigClass.from_dict(config, label=label)
    cfg.freeze()
    try:
        return cls(config=cfg, name=label)
    except TypeError:
        return cls(config=cfg)


class _LogCollector(logging.Handler):
    """Collect log records as JSON-able dicts (the ``<label>_log`` dataset)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not kill the quantum
            msg = str(record.msg)
        entry = {"name": record.name, "levelname": record.levelname, "levelno": record.levelno,
                 "message": msg, "asctime": datetime.datetime.fromtimestamp(
                     record.created, datetime.UTC).isoformat(),
                 "filename": record.filename, "lineno": record.lineno, "funcName": record.funcName,
                 "process": record.process, "MDC": {}}
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_info"] = "".join(traceback.format_exception(*record.exc_info))
        self.records.append(entry)


@contextmanager
def _capture_logs(level: int) -> Iterator[_LogCollector]:
    root = logging.getLogger()
    handler = _LogCollector()
    handler.setLevel(level)
    old_level = root.level
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        if root.level != old_level:  # setLevel empties every logger's cache: only on a change
            root.setLevel(old_level)


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise `QuantumTimeoutError` in the main thread after ``seconds`` (SIGALRM; Unix)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(
            signal, "SIGALRM"):
        yield
        return

    def _handler(signum: int, frame: Any) -> None:
        raise QuantumTimeoutError(f"quantum exceeded the --timeout of {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _usage() -> dict[str, Any]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"Utc": datetime.datetime.now(datetime.UTC).isoformat(), "CpuTime": time.process_time(),
            "UserTime": ru.ru_utime, "SystemTime": ru.ru_stime, "MaxResidentSetSize": ru.ru_maxrss * 1024,
            "MinorPageFaults": ru.ru_minflt, "MajorPageFaults": ru.ru_majflt,
            "BlockInputs": ru.ru_inblock, "BlockOutputs": ru.ru_oublock,
            "VoluntaryContextSwitches": ru.ru_nvcsw, "InvoluntaryContextSwitches": ru.ru_nivcsw}


class SingleQuantumExecutor:
    """Execute quanta of one graph against one repository root, without a registry.

    Parameters
    ----------
    graph : `pipeline.graph.QuantumGraph`
        The graph (its tasks' classes and configs, and the datastore records of its inputs).
    repo_root : path-like
        Root of the butler repository (the datastore root).
    timeout : `float`, optional
        Wall-clock limit per quantum in s; a quantum over it fails with `QuantumTimeoutError`.
    log_level : `int`, optional
        Level of the records kept in ``<label>_log`` (default INFO).
    clean_stale : `bool`, optional
        Delete unregistered files left at the predicted output paths by an interrupted attempt
        before running. Default: only when the graph extends an existing run (a new run cannot
        have leftovers); ``run-qbb`` always cleans.
    post_mortem : `bool`, optional
        On a failure inside the task, open `pdb` post-mortem at the exception before the quantum
        is recorded as failed (``pipetask run --pdb``; in-process executors only).
    """

    def __init__(self, graph: QuantumGraph, repo_root: str | os.PathLike[str], *, timeout: float | None = None,
                 log_level: int = logging.INFO, clean_stale: bool | None = None,
                 post_mortem: bool = False) -> None:
        disable_implicit_threading()
        keep_freed_memory()
        self.post_mortem = post_mortem
        self.graph = graph
        if clean_stale is None:
            clean_stale = bool(graph.metadata.get("extend_run", True))
        self.clean_stale = clean_stale
        self.repo_root = Path(repo_root)
        self.timeout = timeout
        self.log_level = log_level
        self._tasks: dict[tuple[str, int], PipelineTask] = {}
        self._predictor: Any = None

    # -------------------------------------------------------------------- helpers
    def task_for(self, label: str, quantum_id: UUID | None = None) -> PipelineTask:
        """Return the (cached) task instance of a label (and of a quantum's config variant).

        Parameters
        ----------
        label : `str`
        quantum_id : `uuid.UUID`, optional
            Selects the config of data-ID-scoped pipeline config blocks, when any.

        Returns
        -------
        task : `pipeline.task.PipelineTask`
        """
        info = self.graph.tasks[label]
        variant, config = info.config_for(quantum_id) if quantum_id is not None else (-1, info.config)
        task = self._tasks.get((label, variant))
        if task is None:
            task = self._tasks[(label, variant)] = make_task(info.task_class, config, label)
        return task

    def _input_records(self, quantum: Quantum, base: QuantumBackedButler
                       ) -> dict[UUID, tuple[DatasetRef, StoredFileInfo]]:
        """Inputs with their records: from the graph, or predicted by ``base`` for upstream outputs."""
        records = self.graph.datastore_records
        out: dict[UUID, tuple[DatasetRef, StoredFileInfo]] = {}
        for ref in quantum.all_inputs():
            info = records.get(ref.id)
            if info is None:
                info = base.predicted_file_info(ref)
            out[ref.id] = (ref, info)
        return out

    # -------------------------------------------------------------------- main
    def execute(self, quantum_id: UUID) -> QuantumResult:
        """Run one quantum and write its outputs, metadata and log.

        Parameters
        ----------
        quantum_id : `uuid.UUID`
            Id of a quantum of the graph.

        Returns
        -------
        result : `QuantumResult`
            Never raises for an error inside the task: failures are reported in the result
            (status ``failed``, error and traceback), with the log written.
        """
        from ..exceptions import NoWorkFound
        from ._butler_adapter import base_qbb, make_qbb, remove_stale

        t_start = time.perf_counter()
        prep = _usage()
        quantum = self.graph[quantum_id]
        label = quantum.task_label
        info = self.graph.tasks[label]
        conn_specs = info.connections
        qbb: QuantumBackedButler | None = None
        status = "done"
        error = tb = None
        run_time = 0.0
        task_md: dict[str, Any] = {}
        butler_qc: ButlerQuantumContext | None = None
        written: list[tuple[UUID, StoredFileInfo]] = []
        with _capture_logs(self.log_level) as logs:
            try:
                with _time_limit(self.timeout):
                    task = self.task_for(label, quantum.id)
                    base = base_qbb(self.repo_root)
                    qbb = base.for_quantum(inputs=self._input_records(quantum, base),
                                           outputs=quantum.all_outputs())
                    if self.clean_stale:
                        remove_stale(qbb, self.repo_root, quantum.all_outputs())
                    inputs = self._present_inputs(qbb, quantum, conn_specs)
                    in_refs = InputQuantizedConnection(**self._shape(inputs, conn_specs))
                    outputs = {k: v for k, v in quantum.outputs.items()
                               if k not in (METADATA_CONNECTION, LOG_CONNECTION)}
                    out_refs = OutputQuantizedConnection(**self._shape(outputs, conn_specs))
                    deferred = {n for n, c in conn_specs.items() if c.get("defer_load")}
                    butler_qc = ButlerQuantumContext(qbb, quantum, self.repo_root, deferred=deferred)
                    start = _usage()
                    t0 = time.perf_counter()
                    try:
                        task.runQuantum(butler_qc, in_refs, out_refs)
                    finally:
                        run_time = time.perf_counter() - t0
                    end = _usage()
                    task_md = self._task_metadata(task)
            except NoWorkFound as exc:
                status = "no_work"
                _log.info("No work found for %s: %s", quantum.describe(), exc)
                start = end = _usage()
                self._delete_written(qbb)
            except BaseException as exc:  # noqa: BLE001 - report every failure, incl. timeouts
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    self._delete_written(qbb)
                    raise
                status = "failed"
                error = f"{type(exc).__name__}: {exc}"
                tb = traceback.format_exc()
                # The <label>_log dataset keeps the failure with its traceback (pipetask report
                # shows it); the console gets one line from the driver (runner.run_graph) and the
                # traceback only at --log-level DEBUG.
                task_log = logging.getLogger(f"ccdflow.{label}")
                logs.handle(task_log.makeRecord(
                    task_log.name, logging.ERROR, __file__, 0, "Quantum %s failed: %s",
                    (quantum.describe(), error), (type(exc), exc, exc.__traceback__)))
                task_log.debug("Traceback of the failure of %s:\n%s", quantum.describe(), tb.rstrip())
                if self.post_mortem:
                    import pdb

                    print(f"--pdb: quantum {quantum.describe()} raised {error}; entering the debugger "
                          "(c or q to go on)", flush=True)
                    pdb.post_mortem(exc.__traceback__)
                self._delete_written(qbb)
        if qbb is None:
            try:
                qbb = make_qbb(self.repo_root, {}, quantum.all_outputs())
            except Exception:  # noqa: BLE001
                return QuantumResult(quantum_id, "failed", [], error, tb, time.perf_counter() - t_start, run_time)
        try:
            if quantum.log_ref is not None:  # saveLogOutput=False: no <label>_log
                qbb.put(logs.records, quantum.log_ref)
            if status != "failed":
                metadata = {
                    "quantum": {**{f"prep{k}": v for k, v in prep.items()},
                                **{f"start{k}": v for k, v in start.items()},
                                **{f"end{k}": v for k, v in end.items()},
                                "wallTime": time.perf_counter() - t_start, "runTime": run_time},
                    "task": task_md,
                    "butler_metrics": (butler_qc.metrics() if butler_qc is not None
                                       else ButlerQuantumContext.no_metrics()),
                    "caveats": ["NO_WORK"] if status == "no_work" else [],
                    "outputs": [str(i) for i in butler_qc.put_ids] if butler_qc is not None else [],
                    "quantum_id": str(quantum.id), "data_id": dict(quantum.data_id.required),
                }
                qbb.put(metadata, quantum.metadata_ref)
            written = [(ref.id, finfo) for ref, finfo in qbb.written]
        except Exception as exc:  # noqa: BLE001 - e.g. disk full while writing provenance
            status = "failed"
            error = error or f"{type(exc).__name__}: {exc}"
            tb = tb or traceback.format_exc()
            self._delete_written(qbb)
            written = []
        return QuantumResult(quantum_id, status, written, error, tb, time.perf_counter() - t_start, run_time)

    @staticmethod
    def _task_metadata(task: PipelineTask) -> dict[str, Any]:
        try:
            md = task.getFullMetadata()
        except Exception:  # noqa: BLE001
            md = task.metadata
        try:
            return _jsonable(md.to_dict())
        except Exception:  # noqa: BLE001
            return {}

    @staticmethod
    def _shape(refs: dict[str, list[Any]], specs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, lst in refs.items():
            multiple = specs.get(name, {}).get("multiple", len(lst) > 1)
            if multiple:
                out[name] = list(lst)
            else:
                out[name] = lst[0] if lst else None
        return out

    def _present_inputs(self, qbb: QuantumBackedButler, quantum: Quantum, specs: dict[str, dict[str, Any]]
                        ) -> dict[str, list[DatasetRef]]:
        """Inputs that exist; raise `NoWorkFound` when a connection falls below its minimum."""
        from ..exceptions import NoWorkFound

        records = self.graph.datastore_records
        result: dict[str, list[DatasetRef]] = {}
        for connections in (quantum.inputs, quantum.prerequisites):
            for name, refs in connections.items():
                present = [r for r in refs if r.id in records or qbb.exists(r)]
                minimum = specs.get(name, {}).get("minimum", 1)
                if len(present) < minimum:
                    missing = [r for r in refs if r not in present]
                    raise NoWorkFound(
                        f"connection {name!r} has {len(present)} of {len(refs)} datasets (minimum "
                        f"{minimum}); not produced upstream: "
                        + ", ".join(f"{r.dataset_type.name}@{r.data_id!r}" for r in missing[:3]))
                if present or minimum > 0 or refs:
                    result[name] = present
        return result

    @staticmethod
    def _delete_written(qbb: QuantumBackedButler | None) -> None:
        if qbb is None:
            return
        from ._butler_adapter import delete_written

        delete_written(qbb)


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and other values to JSON-able Python values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    tolist = getattr(obj, "tolist", None)
    if tolist is not None:
        return _jsonable(tolist())
    if hasattr(obj, "items"):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return str(obj)
