"""Run quanta on Parsl (``pipetask run --executor parsl --parsl-config FILE``).

`ParslQuantumExecutor` implements the small executor interface of
`pipeline.execution.executors` (``max_in_flight``, ``submit``, ``shutdown``, ``reset``) on a
Parsl ``DataFlowKernel``, so the driver (`pipeline.execution.runner.run_graph`) is the same for
serial, process-pool and Parsl runs: it walks the graph, keeps at most ``max_in_flight`` quanta
submitted (never the whole graph) and registers the outputs in batched transactions.

Workers receive only ``(graph path, repository root, quantum id)`` and run the quantum through
`pipeline.execution.single_quantum.SingleQuantumExecutor` (a quantum-backed butler: predicted
refs, no registry), cached once per worker process. This is the ctrl_bps_parsl model
(middleware-reference section 7) without an extra workflow layer.

Failures
--------
- An algorithm error inside a task is reported as a failed `QuantumResult` by the worker; it is
  never retried and the driver blocks only the quantum's descendants.
- A lost worker or manager (``WorkerLost``/``ManagerLost``: killed process, node crash, missed
  heartbeats) is retried: first by Parsl's own ``retries`` (with a retry handler that counts only
  lost-worker errors), then by this executor up to ``lost_worker_retries`` more times; after
  that the quantum fails with ``WorkerLostError`` and only its descendants are blocked.
- A task that finished on a worker killed just afterwards can lose its result inside Parsl
  (no result, no error: its future would stay pending for ever). Workers record each task's
  start and end in a ledger file per process; the tasks a dead process finished whose results
  never came are resubmitted like lost ones (see `lost_results`).
- Any other infrastructure error (e.g. ccdflow cannot be imported on the workers) fails the
  quantum with the Parsl error message instead of killing the whole run.

Configuration
-------------
``--parsl-config`` is either a Python file defining ``config`` (a `parsl.config.Config`), or a
YAML file in the schema of `ParslSiteConfig`::

    executor: htex                 # HighThroughputExecutor (the only one supported)
    retries: 1                     # Parsl retries, counted only for lost workers
    lost_worker_retries: 2         # further resubmissions by ccdflow
    strategy_period: 1             # s between Parsl scaling decisions
    quanta_per_task: auto          # batch short quanta into one Parsl task (or a fixed number)
    htex: {max_workers_per_node: 8, cores_per_worker: 1, mem_per_worker: 4, prefetch_capacity: 1}
    provider:
      kind: slurm                  # local | slurm | pbs | lsf | kubernetes
      partition: normal
      walltime: "02:00:00"
      max_blocks: 10
      worker_init: "source /path/to/venv/bin/activate"
      launcher: srun               # single | srun | mpiexec | aprun | simple

See ``docs/parsl.md`` for complete examples.
"""

from __future__ import annotations

import inspect
import logging
import os
import runpy
import shutil
import socket
import statistics
import sys
import threading
import weakref
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .executors import WorkerLostError
from .runner import ExecutionError
from .single_quantum import QuantumResult
from .threads import CORES_PER_QUANTUM_VAR, THREAD_ENV_VARS

__all__ = ["ParslQuantumExecutor", "ParslConfigError", "ParslWorkersUnavailableError", "ParslSiteConfig",
           "HtexOptions", "ProviderOptions", "load_parsl_config", "make_parsl_config",
           "run_quantum_on_worker", "run_quanta_on_worker", "is_lost_worker_error", "is_no_workers_error",
           "lost_worker_retry_handler", "PROVIDER_KINDS", "write_ledger", "parse_ledger", "lost_results"]

_log = logging.getLogger("ccdflow.exec.parsl")

#: ``provider.kind`` -> Parsl provider class path.
PROVIDER_KINDS: dict[str, str] = {
    "local": "parsl.providers.LocalProvider",
    "slurm": "parsl.providers.SlurmProvider",
    "pbs": "parsl.providers.PBSProProvider",
    "lsf": "parsl.providers.LSFProvider",
    "kubernetes": "parsl.providers.KubernetesProvider",
}

_LAUNCHERS: dict[str, str] = {
    "single": "parsl.launchers.SingleNodeLauncher",
    "simple": "parsl.launchers.SimpleLauncher",
    "srun": "parsl.launchers.SrunLauncher",
    "mpiexec": "parsl.launchers.MpiExecLauncher",
    "aprun": "parsl.launchers.AprunLauncher",
    "jsrun": "parsl.launchers.JsrunLauncher",
}


class ParslConfigError(ValueError):
    """A Parsl configuration file or section is invalid (the message names the field and the fix)."""


class ParslWorkersUnavailableError(ExecutionError):
    """Parsl could not start (or keep) any worker block; the run stops instead of failing every quantum."""


# ============================================================================ YAML schema
class HtexOptions(BaseModel):
    """Options of Parsl's ``HighThroughputExecutor`` (the ``htex:`` section).

    Attributes
    ----------
    label : `str`
        Executor label.
    max_workers_per_node : `int`, optional
        Worker processes per node (default: as many as ``cores_per_worker`` allows).
    cores_per_worker : `float`
        Cores each worker (one quantum at a time) gets.
    mem_per_worker : `float`, optional
        Memory per worker in GB (Parsl limits the worker count per node accordingly).
    prefetch_capacity : `int`
        Tasks a worker pool (one per node) fetches ahead of its free workers (default 1: a
        worker finishing a quantum starts the next one without a round trip to the driver).
    heartbeat_period, heartbeat_threshold : `int`
        Seconds between heartbeats / before a silent manager counts as lost.
    poll_period : `int`
        Milliseconds the interchange and the executor's result thread wait per poll (Parsl's
        ``poll_period``).
    encrypted : `bool`, optional
        CurveZMQ encryption of the task and result traffic. Default: off for the local
        provider on a loopback address (the traffic never leaves the host; saves CPU per
        task and the certificate set-up), on otherwise.
    address : `str`, optional
        Address workers use to reach the driver. Default: ``127.0.0.1`` for the local provider,
        the host name otherwise.
    interface : `str`, optional
        Network interface whose address to use instead (e.g. ``ib0``).
    worker_debug : `bool`
        Verbose worker logs.
    """

    model_config = ConfigDict(extra="forbid")

    label: str = "ccdflow"
    max_workers_per_node: int | None = Field(None, ge=1)
    cores_per_worker: float = Field(1.0, gt=0)
    mem_per_worker: float | None = Field(None, gt=0)
    prefetch_capacity: int = Field(1, ge=0)
    heartbeat_period: int = Field(30, ge=1)
    heartbeat_threshold: int = Field(120, ge=1)
    poll_period: int = Field(10, ge=1)
    encrypted: bool | None = None
    address: str | None = None
    interface: str | None = None
    worker_debug: bool = False


class ProviderOptions(BaseModel):
    """Where worker blocks come from (the ``provider:`` section).

    ``kind`` picks the Parsl provider; every other key is passed to its constructor and must be
    one of its parameters (``partition``, ``account``, ``qos``, ``walltime``, ``nodes_per_block``,
    ``init_blocks``, ``min_blocks``, ``max_blocks``, ``worker_init``, ``scheduler_options``,
    ``queue``, ``project``, ``image``, ``namespace`` ... depending on the provider). ``launcher``
    is a name (``single``, ``srun``, ``mpiexec``, ``aprun``, ``simple``, ``jsrun``).
    """

    model_config = ConfigDict(extra="allow")

    kind: Literal["local", "slurm", "pbs", "lsf", "kubernetes"] = "local"
    launcher: str | None = None
    worker_init: str = ""


class ParslSiteConfig(BaseModel):
    """The YAML form of a Parsl configuration for ccdflow.

    Attributes
    ----------
    executor : ``"htex"``
        Parsl ``HighThroughputExecutor``.
    retries : `int`
        Parsl retries; the installed retry handler counts only lost workers/managers.
    lost_worker_retries : `int`
        Resubmissions by ccdflow after Parsl's retries are used up.
    max_in_flight : `int`, optional
        Quanta the driver keeps submitted (default ``quanta_per_task x (2 x workers + prefetch x
        nodes)``, following the batch size when it is ``auto``).
    quanta_per_task : `int` or ``"auto"``
        Quanta sent to a worker in one Parsl task. ``auto`` (default): 1 until results come
        back, then enough quanta for a Parsl task to last about
        `ParslQuantumExecutor.AUTO_TASK_SECONDS` (at most ``AUTO_MAX_QUANTA_PER_TASK``), from
        the median quantum time measured on the workers.
    strategy_period : `float`
        Seconds between Parsl scaling decisions (short values start the first block sooner).
    max_idletime : `float`
        Seconds an idle block is kept before being released.
    run_dir : `str`, optional
        Parsl's log directory (default ``REPO/.ccdflow/parsl``).
    log_level : {"DEBUG", "INFO", "WARNING", "ERROR"}
        Level of the driver's ``parsl.log`` (default WARNING; INFO writes ~5 lines per Parsl
        task and costs ~0.5 ms of driver CPU per task, DEBUG ~20 lines).
    export_env : `dict`
        Environment variables exported on the workers before they start.
    htex : `HtexOptions`
    provider : `ProviderOptions`
    """

    model_config = ConfigDict(extra="forbid")

    executor: Literal["htex", "HighThroughputExecutor"] = "htex"
    retries: int = Field(1, ge=0)
    lost_worker_retries: int = Field(2, ge=0)
    max_in_flight: int | None = Field(None, ge=1)
    quanta_per_task: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    strategy_period: float = Field(1.0, gt=0)
    max_idletime: float = Field(120.0, ge=0)
    run_dir: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    export_env: dict[str, str] = Field(default_factory=dict)
    htex: HtexOptions = Field(default_factory=HtexOptions)
    provider: ProviderOptions = Field(default_factory=ProviderOptions)


def _import(path: str) -> Any:
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _format_validation(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        parts.append(f"{loc}: {err['msg']}")
    return f"invalid Parsl configuration {where}: " + "; ".join(parts)


def _nodes(site: ParslSiteConfig) -> int:
    """Return the number of nodes (worker pools) a site configuration gives at most."""
    prov = site.provider.model_dump()
    blocks = int(prov.get("max_blocks") or prov.get("init_blocks") or 1)
    return max(1, int(prov.get("nodes_per_block") or 1) * blocks)


def _worker_slots(site: ParslSiteConfig) -> int:
    """Return the number of workers a site configuration gives at most."""
    per_node = site.htex.max_workers_per_node
    if per_node is None:
        cores = site.provider.model_dump().get("cores_per_node") or (os.cpu_count() or 1)
        per_node = max(1, int(cores // site.htex.cores_per_worker))
    return max(1, _nodes(site) * per_node)


def make_parsl_config(site: ParslSiteConfig | dict[str, Any], *,
                      run_dir: str | os.PathLike[str] | None = None) -> Any:
    """Build a `parsl.config.Config` from the YAML schema.

    Parameters
    ----------
    site : `ParslSiteConfig` or `dict`
        The configuration (a mapping is validated first).
    run_dir : path-like, optional
        Parsl's run directory when ``site.run_dir`` is not set.

    Returns
    -------
    config : `parsl.config.Config`
        A fresh config (Parsl configs are single-use), with one ``HighThroughputExecutor``.

    Raises
    ------
    ParslConfigError
        If a field is unknown or has a wrong value, the provider does not accept a key, or the
        launcher name is unknown.
    """
    if not isinstance(site, ParslSiteConfig):
        try:
            site = ParslSiteConfig.model_validate(site or {})
        except ValidationError as exc:
            raise ParslConfigError(_format_validation(exc, "")) from None
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor

    prov_cls = _import(PROVIDER_KINDS[site.provider.kind])
    kwargs = {k: v for k, v in site.provider.model_dump().items()
              if k not in ("kind", "launcher", "worker_init")}
    allowed = [p for p in inspect.signature(prov_cls.__init__).parameters if p not in ("self", "launcher",
                                                                                      "worker_init")]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ParslConfigError(
            f"provider kind {site.provider.kind!r} does not accept {', '.join(unknown)}; "
            f"allowed keys: kind, launcher, worker_init, {', '.join(allowed)}")
    if site.provider.launcher is not None:
        lname = site.provider.launcher.lower()
        if lname not in _LAUNCHERS:
            raise ParslConfigError(f"unknown provider.launcher {site.provider.launcher!r}; choose one of "
                                   f"{', '.join(_LAUNCHERS)}")
        if "launcher" not in inspect.signature(prov_cls.__init__).parameters:
            raise ParslConfigError(f"provider kind {site.provider.kind!r} takes no launcher; "
                                   "remove provider.launcher")
        kwargs["launcher"] = _import(_LAUNCHERS[lname])()
    # Workers are fresh interpreters: put this Python's bin/ first on PATH (process_worker_pool.py
    # and the ccdflow installation), one BLAS thread per single-core worker (or, for a worker with
    # several cores, their number for `threads.disable_implicit_threading`), then the user's lines.
    init = [f'export PATH="{Path(sys.executable).parent}:$PATH"']
    if site.htex.cores_per_worker <= 1:
        init.append("export " + " ".join(f"{var}=1" for var in THREAD_ENV_VARS))
    else:
        init.append(f"export {CORES_PER_QUANTUM_VAR}={int(site.htex.cores_per_worker)}")
    for k, v in site.export_env.items():
        init.append(f"export {k}={_shell_quote(str(v))}")
    if site.provider.worker_init:
        init.append(site.provider.worker_init)
    kwargs["worker_init"] = "\n".join(init) if site.provider.kind != "kubernetes" else "; ".join(init)
    try:
        provider = prov_cls(**kwargs)
    except TypeError as exc:
        raise ParslConfigError(f"provider kind {site.provider.kind!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - parsl.errors.OptionalModuleMissing and the like
        if type(exc).__name__ == "OptionalModuleMissing":
            mods = ", ".join(getattr(exc, "module_names", []) or ["?"])
            raise ParslConfigError(f"provider kind {site.provider.kind!r} needs the Python package(s) {mods} "
                                   f"on the driver: pip install {mods.replace(', ', ' ')}") from None
        raise
    h = site.htex
    address = h.address
    if address is None and h.interface is not None:
        from parsl.addresses import address_by_interface

        address = address_by_interface(h.interface)
    if address is None:
        if site.provider.kind == "local":
            address = "127.0.0.1"
        else:
            from parsl.addresses import address_by_hostname

            address = address_by_hostname()
    htex = HighThroughputExecutor(
        label=h.label, provider=provider, address=address, cores_per_worker=h.cores_per_worker,
        mem_per_worker=h.mem_per_worker, max_workers_per_node=h.max_workers_per_node,
        prefetch_capacity=h.prefetch_capacity, heartbeat_period=h.heartbeat_period,
        heartbeat_threshold=h.heartbeat_threshold, worker_debug=h.worker_debug, poll_period=h.poll_period,
        encrypted=h.encrypted if h.encrypted is not None else not (
            site.provider.kind == "local" and (address.startswith("127.") or address == "localhost")))
    rd = site.run_dir or (str(run_dir) if run_dir is not None else "runinfo")
    return Config(executors=[htex], retries=site.retries, retry_handler=lost_worker_retry_handler,
                  strategy_period=site.strategy_period, max_idletime=site.max_idletime, run_dir=rd,
                  initialize_logging=True)


def _shell_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def load_parsl_config(source: str | os.PathLike[str] | dict[str, Any] | Any, *,
                      run_dir: str | os.PathLike[str] | None = None) -> tuple[Any, ParslSiteConfig | None]:
    """Load a Parsl configuration from a ``.py`` file, a ``.yaml`` file, a mapping or a Config.

    Parameters
    ----------
    source : path-like, `dict` or `parsl.config.Config`
        ``.py``: a module defining ``config`` (a `parsl.config.Config`); ``.yaml``/``.yml``: the
        `ParslSiteConfig` schema; a mapping: that schema in memory; a Config: used as is.
    run_dir : path-like, optional
        Parsl run directory for YAML configs without ``run_dir``.

    Returns
    -------
    config : `parsl.config.Config`
    site : `ParslSiteConfig` or `None`
        The parsed YAML (`None` for Python configs).

    Raises
    ------
    ParslConfigError
        If the file is missing, has another extension, does not define ``config``, or the YAML
        is invalid.
    """
    from parsl.config import Config

    if isinstance(source, Config):
        return source, None
    if isinstance(source, dict):
        site = _validate_site(source, "(mapping)")
        return make_parsl_config(site, run_dir=run_dir), site
    path = Path(source)
    if not path.is_file():
        raise ParslConfigError(f"Parsl config file {path} does not exist; give a .py file defining `config` "
                               "or a .yaml file (see docs/parsl.md)")
    suffix = path.suffix.lower()
    if suffix == ".py":
        try:
            ns = runpy.run_path(str(path))
        except Exception as exc:  # noqa: BLE001 - the user's file: report, do not crash
            raise ParslConfigError(f"Parsl config file {path} raised {type(exc).__name__}: {exc}") from None
        config = ns.get("config")
        if not isinstance(config, Config):
            raise ParslConfigError(f"Parsl config file {path} must define `config = parsl.config.Config(...)`"
                                   f" (found {type(config).__name__})")
        return config, None
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ParslConfigError(f"Parsl config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ParslConfigError(f"Parsl config file {path} must hold a mapping "
                                   "(executor:, htex:, provider: ...)")
        site = _validate_site(data, str(path))
        return make_parsl_config(site, run_dir=run_dir), site
    raise ParslConfigError(f"Parsl config file {path} must end in .py or .yaml, not {suffix!r}")


def _validate_site(data: dict[str, Any], where: str) -> ParslSiteConfig:
    try:
        return ParslSiteConfig.model_validate(data)
    except ValidationError as exc:
        raise ParslConfigError(_format_validation(exc, where)) from None


# ============================================================================ failure classification
def is_lost_worker_error(exc: BaseException) -> bool:
    """Whether an exception means the worker/manager running a task was lost (retryable).

    Parameters
    ----------
    exc : `BaseException`

    Returns
    -------
    lost : `bool`
        True for Parsl's ``WorkerLost`` and ``ManagerLost``, and for `WorkerLostError`.
    """
    names = {"WorkerLost", "ManagerLost", "WorkerLostError"}
    return type(exc).__name__ in names or isinstance(exc, WorkerLostError)


def is_no_workers_error(exc: BaseException) -> bool:
    """Whether an exception means Parsl has no usable worker blocks (fatal for the run).

    Parameters
    ----------
    exc : `BaseException`

    Returns
    -------
    fatal : `bool`
        True for Parsl's ``TooManyJobFailuresError`` and ``BadStateException`` (blocks failed
        to start or register: wrong ``worker_init``, batch system refusing the job ...).
    """
    return any(c.__name__ in ("TooManyJobFailuresError", "BadStateException") for c in type(exc).__mro__)


def lost_worker_retry_handler(exc: BaseException, task_record: Any) -> float:
    """Parsl ``retry_handler``: lost workers cost 1 retry, anything else is not retried.

    Parameters
    ----------
    exc : `BaseException`
        The failure.
    task_record : `parsl.dataflow.taskrecord.TaskRecord`
        Parsl's task record. For a ccdflow task lost with its worker, the executor that sent it
        is told at once (Parsl retries the task itself and reports nothing else): the tasks the
        same worker process had finished whose results died with it are resubmitted
        (`lost_results`).

    Returns
    -------
    cost : `float`
        1 for a lost worker/manager, a cost above any retry budget otherwise.
    """
    if not is_lost_worker_error(exc):
        return 1e9
    try:
        args = task_record["args"]
        ledger, key = args[6], args[7]
        owner = _LEDGER_OWNERS.get(ledger) if isinstance(ledger, str) and isinstance(key, int) else None
        ex = owner() if owner is not None else None
        if ex is not None:
            ex._claim_and_send(key)
    except Exception as err:  # noqa: BLE001 - never stop Parsl's retry of the lost task
        _log.debug("lost-result check after %s failed: %s", exc, err)
    return 1.0


# ============================================================================ worker side
def _warm_worker() -> int:
    """Warm-up app: import what running a quantum needs; return the worker's pid."""
    import butler._quantum_backed  # noqa: F401
    import pipeline.execution.single_quantum  # noqa: F401
    import pipeline.graph.quantum_graph  # noqa: F401

    return os.getpid()


_WORKER_CACHE: dict[tuple[str, str, int, int, float | None, int], Any] = {}


def run_quantum_on_worker(graph_path: str, repo_root: str, quantum_id: str, timeout: float | None = None,
                          log_level: int = logging.INFO, clean_stale: bool = False,
                          ledger: str | None = None, task_key: int | None = None) -> QuantumResult:
    """Run one quantum in a Parsl worker (the Parsl app body).

    The graph is loaded and the `SingleQuantumExecutor` built once per worker process and
    graph file (cached); tasks are cached by label inside it.

    Parameters
    ----------
    graph_path : `str`
        Saved graph file (shared filesystem).
    repo_root : `str`
        Repository root (shared filesystem).
    quantum_id : `str`
        Quantum UUID.
    timeout : `float`, optional
        Per-quantum wall-clock limit (s).
    log_level : `int`
        Level of records kept in ``<label>_log``.
    clean_stale : `bool`
        Delete leftovers of an earlier attempt at the predicted output paths first (set for
        the resubmission of a quantum whose worker was lost).
    ledger, task_key : `str`, `int`, optional
        Task ledger directory and the driver's key of this Parsl task: ``KEY start`` and
        ``KEY done`` are appended to this process's ledger file (see `write_ledger`).

    Returns
    -------
    result : `QuantumResult`
        Task errors are reported in the result, not raised.
    """
    if ledger is not None and task_key is not None:
        write_ledger(ledger, f"{task_key} start\n")
        try:
            return run_quantum_on_worker(graph_path, repo_root, quantum_id, timeout, log_level, clean_stale)
        finally:
            write_ledger(ledger, f"{task_key} done\n")
    from .single_quantum import SingleQuantumExecutor

    st = os.stat(graph_path)
    key = (graph_path, repo_root, st.st_mtime_ns, st.st_size, timeout, log_level)
    sqe = _WORKER_CACHE.get(key)
    if sqe is None:
        from ..graph.quantum_graph import QuantumGraph

        _WORKER_CACHE.clear()
        graph = QuantumGraph.load(graph_path)
        sqe = SingleQuantumExecutor(graph, repo_root, timeout=timeout, log_level=log_level)
        _WORKER_CACHE[key] = sqe
    default = sqe.clean_stale
    if clean_stale and not default:
        sqe.clean_stale = True
        try:
            return sqe.execute(UUID(quantum_id))
        finally:
            sqe.clean_stale = default
    return sqe.execute(UUID(quantum_id))


def run_quanta_on_worker(graph_path: str, repo_root: str, quantum_ids: list[str],
                         timeout: float | None = None, log_level: int = logging.INFO,
                         clean_stale: bool = False, ledger: str | None = None,
                         task_key: int | None = None) -> list[QuantumResult]:
    """Run several quanta one after the other in a Parsl worker (one Parsl task per batch).

    Parameters
    ----------
    graph_path, repo_root, timeout, log_level, clean_stale, ledger, task_key
        As for `run_quantum_on_worker` (the ledger lines are written once for the batch).
    quantum_ids : `list` [`str`]
        Quantum UUIDs.

    Returns
    -------
    results : `list` [`QuantumResult`]
        In the order of ``quantum_ids``.
    """
    if ledger is not None and task_key is not None:
        write_ledger(ledger, f"{task_key} start\n")
    try:
        return [run_quantum_on_worker(graph_path, repo_root, q, timeout, log_level, clean_stale)
                for q in quantum_ids]
    finally:
        if ledger is not None and task_key is not None:
            write_ledger(ledger, f"{task_key} done\n")


# ============================================================================ task ledger
# Parsl's worker hands a finished task's result to a multiprocessing queue, whose background
# feeder thread writes it to the manager, and takes the next task at once. A worker killed a
# few milliseconds later (the tests' SIGKILL, the OOM killer in the next quantum) can die
# before the feeder wrote the previous result: Parsl then reports the task in progress as
# lost (WorkerLost) but never says anything about the finished one, whose future stays
# pending for ever. Each worker process therefore appends ``KEY start`` / ``KEY done`` to its
# own ledger file (``HOST.PID`` in a directory on the shared filesystem); when the process is
# known to be dead (a WorkerLost for a task it started, or a local PID that is gone), every
# task it marked done whose result never came is resubmitted like a lost one.
_HOST: list[str] = []
#: Ledger directory -> the driver-side executor that owns it (for `lost_worker_retry_handler`).
_LEDGER_OWNERS: dict[str, weakref.ref[ParslQuantumExecutor]] = {}


def write_ledger(ledger: str, line: str) -> None:
    """Append one line to this worker process's ledger file ``LEDGER/HOST.PID``.

    Parameters
    ----------
    ledger : `str`
        Ledger directory (shared filesystem; made by the driver).
    line : `str`
        ``KEY start`` or ``KEY done``, with its newline.

    Notes
    -----
    One ``O_APPEND`` write and close per call (no fsync): the file is read only after its
    process died, and close-to-open consistency makes it visible on NFS. An unwritable ledger
    (removed by a driver that shut down, full disk) is ignored: only the detection of lost
    results depends on it, never the quantum.
    """
    if not _HOST:
        _HOST.append(socket.gethostname())
    try:
        fd = os.open(os.path.join(ledger, f"{_HOST[0]}.{os.getpid()}"),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def parse_ledger(text: str) -> tuple[set[int], set[int]]:
    """Return the task keys a ledger file marks started and done.

    Parameters
    ----------
    text : `str`
        The file's content (a truncated last line is ignored).

    Returns
    -------
    started, done : `set` [`int`]
    """
    started: set[int] = set()
    done: set[int] = set()
    for line in text.splitlines():
        key, _, what = line.partition(" ")
        if not key.isdigit():
            continue
        if what == "start":
            started.add(int(key))
        elif what == "done":
            done.add(int(key))
    return started, done


def lost_results(ledgers: dict[str, str], dead: set[str], lost_key: int | None,
                 outstanding: set[int]) -> tuple[set[int], set[str]]:
    """Find the tasks whose results died with their worker process (pure function).

    Parameters
    ----------
    ledgers : `dict` [`str`, `str`]
        Ledger file name -> content, for files not examined yet.
    dead : `set` [`str`]
        Names of files whose process is known to be dead (e.g. local PIDs that are gone),
        read after the process was found dead.
    lost_key : `int` or `None`
        Key of a task Parsl reported lost (WorkerLost): every file that started it without
        finishing it belongs to a process that died.
    outstanding : `set` [`int`]
        Keys whose results the driver still waits for.

    Returns
    -------
    lost : `set` [`int`]
        Outstanding keys marked done in a dead process's file: finished, result lost. Tasks it
        only started are left to Parsl's WorkerLost report (and its retries).
    dead_files : `set` [`str`]
        The dead processes' files (their content is final; they need not be read again).
    """
    dead_files = set(dead) & set(ledgers)
    parsed = {name: parse_ledger(text) for name, text in ledgers.items()}
    if lost_key is not None:
        dead_files |= {name for name, (started, done) in parsed.items()
                       if lost_key in started and lost_key not in done}
    lost: set[int] = set()
    for name in dead_files:
        lost |= parsed[name][1] & outstanding
    return lost, dead_files


# ============================================================================ driver side
_Item = tuple[UUID, "Future[QuantumResult]", int]


class ParslQuantumExecutor:
    """Quantum executor on a Parsl ``DataFlowKernel`` (see the module docstring).

    Parameters
    ----------
    graph_path : path-like or `None`
        The saved graph file; workers load it (shared filesystem). May be set later
        (``executor.graph_path = ...``) when Parsl is started before the graph is saved.
    repo_root : path-like
        Repository root (shared filesystem).
    config : path-like, `dict`, `ParslSiteConfig` or `parsl.config.Config`, optional
        ``.py``/``.yaml`` file, schema mapping or Config (default: 2 local workers).
    max_in_flight : `int`, optional
        Quanta kept submitted (default ``quanta_per_task x tasks_in_flight``, following the
        batch size when it is ``auto``).
    lost_worker_retries : `int`, optional
        Resubmissions after a lost worker once Parsl's own retries are used up (default: the
        YAML's ``lost_worker_retries``, else 2).
    quanta_per_task : `int` or ``"auto"``, optional
        Quanta sent to a worker in one Parsl task (default: the YAML's ``quanta_per_task``,
        else ``"auto"``). Values above 1 divide Parsl's per-task cost (driver, interchange,
        worker pool: ~2-5 ms of CPU) among the quanta of a batch; ``"auto"`` picks the batch
        size from the median quantum time the workers report (see `AUTO_TASK_SECONDS`).
    timeout : `float`, optional
        Per-quantum wall-clock limit (s), enforced in the worker.
    log_level : `int`
        Level of records kept in ``<label>_log``.

    Attributes
    ----------
    tasks_in_flight : `int`
        Parsl tasks kept submitted: ``2 x workers + prefetch_capacity x nodes`` (every worker
        busy, the next task prefetched and one more queued in the interchange), or 64 for
        Python configs whose worker count is unknown.
    n_lost : `int`
        Task attempts lost with their worker (resubmitted or failed).
    n_results_lost : `int`
        Of these, tasks that had finished but whose result died with the worker process.

    Raises
    ------
    ParslConfigError
        If the configuration cannot be loaded (raised at construction, before anything starts).

    Notes
    -----
    Batching: submitted quanta wait in a buffer until a full batch is there, or are sent at
    once (possibly as a partial batch) while fewer Parsl tasks are in flight than the workers
    and their prefetch slots can hold -- so no worker idles for want of a batch and no timer
    is needed (every Parsl task that completes re-checks the buffer).

    Parsl starts on the first `submit` (or `start`). `shutdown` always calls ``dfk.cleanup()`` (which stops
    the interchange and cancels the blocks); the driver calls it in a ``finally``.
    """

    #: ``quanta_per_task: auto`` aims at Parsl tasks lasting about this long (s).
    AUTO_TASK_SECONDS = 0.2
    #: Largest batch ``quanta_per_task: auto`` makes.
    AUTO_MAX_QUANTA_PER_TASK = 16
    #: Seconds between two checks for local worker processes that died between tasks.
    LEDGER_SWEEP_SECONDS = 5.0

    def __init__(self, graph_path: str | os.PathLike[str] | None, repo_root: str | os.PathLike[str],
                 config: Any = None, *, max_in_flight: int | None = None,
                 lost_worker_retries: int | None = None, timeout: float | None = None,
                 log_level: int = logging.INFO, quanta_per_task: int | str | None = None) -> None:
        self.graph_path = str(Path(graph_path).resolve()) if graph_path is not None else None
        self.repo_root = str(Path(repo_root).resolve())
        if self.graph_path is not None and not Path(self.graph_path).is_file():
            raise ParslConfigError(f"graph file {self.graph_path} does not exist; "
                                   "save the graph first (-q FILE)")
        self.timeout = timeout
        self.log_level = log_level
        run_dir = Path(self.repo_root) / ".ccdflow" / "parsl"
        if config is None:
            config = {"htex": {"max_workers_per_node": 2}}
        self.site: ParslSiteConfig | None
        if isinstance(config, ParslSiteConfig):
            self._config, self.site = make_parsl_config(config, run_dir=run_dir), config
        else:
            self._config, self.site = load_parsl_config(config, run_dir=run_dir)
        self._run_dir = str(self._config.run_dir)
        if quanta_per_task is None:
            quanta_per_task = self.site.quanta_per_task if self.site is not None else "auto"
        self.auto_batch = quanta_per_task == "auto"
        if not self.auto_batch:
            try:
                quanta_per_task = int(quanta_per_task)
            except (TypeError, ValueError):
                raise ParslConfigError(f"quanta_per_task must be a positive integer or 'auto', "
                                       f"not {quanta_per_task!r}") from None
            if quanta_per_task < 1:
                raise ParslConfigError(
                    f"quanta_per_task must be at least 1 (or 'auto'), not {quanta_per_task}")
        self.quanta_per_task = 1 if self.auto_batch else int(quanta_per_task)
        if self.site is not None:
            slots, prefetch = _worker_slots(self.site), self.site.htex.prefetch_capacity * _nodes(self.site)
            self.tasks_in_flight = 2 * slots + prefetch
            self._low_water = slots + prefetch
        else:
            self.tasks_in_flight, self._low_water = 64, 32
        if max_in_flight is None and self.site is not None:
            max_in_flight = self.site.max_in_flight
        self._fixed_window = max_in_flight is not None
        self.max_in_flight = max(1, int(max_in_flight if max_in_flight is not None
                                        else self.quanta_per_task * self.tasks_in_flight))
        if lost_worker_retries is None:
            lost_worker_retries = self.site.lost_worker_retries if self.site is not None else 2
        self.lost_worker_retries = int(lost_worker_retries)
        self._dfk: Any = None
        self._app: Any = None
        self._batch_app: Any = None
        self._pending: list[_Item] = []
        self._n_tasks = 0  # Parsl tasks submitted and not finished
        self._times: deque[float] = deque(maxlen=64)
        self._lock = threading.RLock()
        self._start_lock = threading.Lock()
        self._outstanding: set[Future[QuantumResult]] = set()
        self._seq = 0
        self._running: dict[int, list[_Item]] = {}  # Parsl tasks by key, until their result is handled
        self._ledger: str | None = None
        self._no_ledger = False
        self._dead_ledgers: set[str] = set()
        self._parsl_retries: set[int] = set()  # keys Parsl is running again after a lost worker
        self._stop_sweeps = threading.Event()
        self.n_lost = 0
        self.n_results_lost = 0
        """Parsl tasks whose result died with their worker after they finished (resubmitted)."""
        self.n_tasks_sent = 0
        """Parsl tasks sent so far (attempts, lost-worker resubmissions included)."""

    # -------------------------------------------------------------------- lifecycle
    def _ensure_started(self) -> Any:
        app = self._app  # set last by _start_locked: not None means fully started
        if app is not None:
            return app
        with self._start_lock:
            return self._start_locked()

    def _start_locked(self) -> Any:
        if self._app is None:
            from parsl.app.app import python_app
            from parsl.dataflow.dflow import DataFlowKernel

            if self._config is None:
                raise RuntimeError("this ParslQuantumExecutor was shut down; make a new one")
            Path(self._config.run_dir).mkdir(parents=True, exist_ok=True)
            _log.info("Starting Parsl (run dir %s, %d quanta in flight at most)", self._config.run_dir,
                      self.max_in_flight)
            # Parsl logs go to RUN_DIR/parsl.log; keep them off the user's console.
            logging.getLogger("parsl").propagate = False
            from ._parsl_guard import guard_parsl_config

            # The interchange and local worker pools exit when this driver dies (kill -9 too).
            dfk = DataFlowKernel(config=guard_parsl_config(self._config))
            level = self.site.log_level if self.site is not None else None
            if level is not None:
                logging.getLogger("parsl").setLevel(level)
            self._batch_app = python_app(run_quanta_on_worker, data_flow_kernel=dfk)
            self._dfk = dfk
            threading.Thread(target=self._sweep_periodically, name="ccdflow-parsl-ledger",
                             daemon=True).start()
            self._app = python_app(run_quantum_on_worker, data_flow_kernel=dfk)
        return self._app

    @property
    def dfk(self) -> Any:
        """The running ``DataFlowKernel`` (`None` before the first submit and after shutdown)."""
        return self._dfk

    def start(self) -> float:
        """Start Parsl now and wait until every worker has imported the worker-side modules.

        Call it early -- `start_in_background` while the graph is being built -- so Parsl's
        start-up (interchange, worker pools, imports: several seconds) overlaps other work.
        `graph_path` may still be `None` (set it before submitting quanta).

        Returns
        -------
        seconds : `float`
            Time the start-up took (s).

        Raises
        ------
        RuntimeError
            If the executor was shut down.
        """
        import time

        t0 = time.perf_counter()
        self._ensure_started()
        with self._start_lock:
            dfk = self._dfk
        if dfk is None:
            return time.perf_counter() - t0
        from concurrent.futures import wait

        from parsl.app.app import python_app

        warm = python_app(_warm_worker, data_flow_kernel=dfk)
        n = _worker_slots(self.site) if self.site is not None else 1
        pending = {warm() for _ in range(n)}
        while pending and self._dfk is dfk:  # stop waiting when shut down meanwhile
            done, pending = wait(pending, timeout=0.5)
            if any(f.exception() is not None for f in done):
                break  # a real submit reports what is wrong
        return time.perf_counter() - t0

    def start_in_background(self) -> None:
        """Call `start` in a daemon thread (returns at once; errors surface on `submit`)."""
        threading.Thread(target=self._start_quietly, name="ccdflow-parsl-start", daemon=True).start()

    def _start_quietly(self) -> None:
        try:
            self.start()
        except Exception:  # noqa: BLE001 - a real submit will report the problem
            pass

    def submit(self, quantum_id: UUID) -> Future[QuantumResult]:
        """Submit one quantum to Parsl (batched with others when ``quanta_per_task`` > 1).

        Parameters
        ----------
        quantum_id : `uuid.UUID`

        Returns
        -------
        future : `concurrent.futures.Future` [`QuantumResult`]
            Lost workers are retried and other infrastructure errors become a failed result;
            ``result()`` raises only `ParslWorkersUnavailableError` (no worker block could be
            started), which stops the run.
        """
        if self.graph_path is None:
            raise RuntimeError("ParslQuantumExecutor.graph_path must be set before submitting quanta")
        outer: Future[QuantumResult] = Future()
        with self._lock:
            self._outstanding.add(outer)
            self._pending.append((quantum_id, outer, 0))
            batch = self._take_batch_locked()
        if batch:
            self._attempt(batch)
        return outer

    def _take_batch_locked(self) -> list[_Item]:
        """Take the next batch off the buffer if it is full or workers would otherwise idle."""
        k = self.quanta_per_task
        if not self._pending or (len(self._pending) < k and self._n_tasks >= self._low_water):
            return []
        batch, self._pending = self._pending[:k], self._pending[k:]
        self._n_tasks += 1
        return batch

    def _record_times(self, results: list[Any]) -> None:
        """Update the automatic batch size and window from the quantum times of a result."""
        for r in results:
            if isinstance(r, QuantumResult) and r.wall_time > 0:
                self._times.append(r.wall_time)
        if not self._times:
            return
        typical = statistics.median(self._times)
        k = int(self.AUTO_TASK_SECONDS / max(typical, 1e-4))
        k = max(1, min(self.AUTO_MAX_QUANTA_PER_TASK, k))
        if k != self.quanta_per_task:
            _log.debug("Median quantum time %.1f ms: %d quanta per Parsl task", 1e3 * typical, k)
            self.quanta_per_task = k
            if not self._fixed_window:
                self.max_in_flight = k * self.tasks_in_flight

    def _ledger_dir(self) -> str | None:
        """Return the task ledger directory of this executor (made on first use, removed at shutdown).

        `None` if it cannot be made (the run goes on without the detection of lost results).
        """
        with self._lock:
            if self._ledger is None and not self._no_ledger:
                path = Path(self.repo_root) / ".ccdflow" / "parsl-ledger" / uuid4().hex
                try:
                    path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    _log.warning("cannot make the Parsl task ledger %s (%s): results lost with a killed "
                                 "worker will not be detected", path, exc)
                    self._no_ledger = True
                    return None
                self._ledger = str(path)
                _LEDGER_OWNERS[self._ledger] = weakref.ref(self)
            return self._ledger

    def _attempt(self, items: list[_Item]) -> None:
        """Send quanta ``(id, outer future, times lost so far)`` as one Parsl task.

        The caller has counted the task in ``_n_tasks``; the lock must not be held (Parsl may
        run the done callback synchronously).
        """
        with self._lock:
            self._seq += 1
            key = self._seq
            self._running[key] = items
        try:
            app = self._ensure_started()
            ledger = self._ledger_dir()
            retry = any(n > 0 for _, _, n in items)  # after a lost worker: remove its leftovers first
            if len(items) == 1:
                fut = app(self.graph_path, self.repo_root, str(items[0][0]), self.timeout, self.log_level,
                          retry, ledger, key)
            else:
                fut = self._batch_app(self.graph_path, self.repo_root, [str(q) for q, _, _ in items],
                                      self.timeout, self.log_level, retry, ledger, key)
        except Exception as exc:  # noqa: BLE001 - e.g. Parsl already shut down
            with self._lock:
                self._running.pop(key, None)
                self._n_tasks -= 1
            for qid, outer, _ in items:
                self._finish(outer, QuantumResult(qid, "failed", error=f"{type(exc).__name__}: {exc}"))
            return
        self.n_tasks_sent += 1
        fut.add_done_callback(lambda f: self._on_done(f, items, key))

    def _on_done(self, fut: Any, items: list[_Item], key: int | None = None) -> None:
        """Done callback of a Parsl task (``key`` `None`: a task not in ``_running``, tests)."""
        with self._lock:
            if key is not None:
                self._parsl_retries.discard(key)
            if key is not None and self._running.pop(key, None) is None:
                return  # its result was declared lost with its worker and the quanta resent
            self._n_tasks -= 1
        resend: list[_Item] = []
        try:
            self._handle(fut, items, resend, key)
        finally:
            self._send(resend)

    def _send(self, resend: list[_Item]) -> None:
        """Send lost-worker resubmissions (one quantum per task) and the batches now due."""
        with self._lock:
            batches = []
            for item in resend:
                self._n_tasks += 1
                batches.append([item])
            while True:
                batch = self._take_batch_locked()
                if not batch:
                    break
                batches.append(batch)
        for batch in batches:
            self._attempt(batch)

    def _lost(self, items: list[_Item], why: str, resend: list[_Item]) -> None:
        """Resubmit the quanta of a lost task (``resend``), or fail those out of retries."""
        with self._lock:
            self.n_lost += 1
            stopping = self._dfk is None
        for qid, outer, n_lost in items:
            if n_lost < self.lost_worker_retries and not stopping:
                _log.warning("Worker lost while running quantum %s (%s); resubmitting (%d/%d)",
                             qid, why, n_lost + 1, self.lost_worker_retries)
                resend.append((qid, outer, n_lost + 1))
            else:
                self._finish(outer, QuantumResult(
                    qid, "failed",
                    error=f"{WorkerLostError.__name__}: the worker running this quantum "
                    f"was lost {n_lost + 1} time(s); last error: {why}"))

    def _claim_lost_results(self, lost_key: int | None, resend: list[_Item]) -> None:
        """Resubmit the tasks that finished on a dead worker process but whose result never came.

        See `lost_results`: the dead processes are those that started ``lost_key`` (reported
        lost by Parsl) and, on this host, those whose PID is gone.
        """
        ledger = self._ledger
        if ledger is None:
            return
        from butler.process_guard import process_alive

        try:
            names = [n for n in os.listdir(ledger) if n not in self._dead_ledgers]
        except OSError:
            return
        host = socket.gethostname()
        dead = set()
        for name in names:  # liveness first, content second: a dead process's file is final
            h, _, pid = name.rpartition(".")
            if h == host and pid.isdigit() and not process_alive(int(pid)):
                dead.add(name)
        if lost_key is None and not dead:
            return
        texts = {}
        for name in (names if lost_key is not None else sorted(dead)):
            try:
                texts[name] = Path(ledger, name).read_text()
            except OSError:
                continue
        with self._lock:
            awaited = set(self._running) - self._parsl_retries  # never run twice at once
            lost, dead_files = lost_results(texts, dead, lost_key, awaited)
            self._dead_ledgers |= dead_files
            claimed = [self._running.pop(k) for k in sorted(lost)]
            self._n_tasks -= len(claimed)
            self.n_results_lost += len(claimed)
        for items in claimed:
            self._lost(items, "the worker process died after finishing the task, before Parsl "
                       "delivered its result", resend)

    def _claim_and_send(self, lost_key: int) -> None:
        """Resubmit the lost results of the process that was running ``lost_key`` (Parsl retries that one)."""
        with self._lock:
            if lost_key in self._running:
                self._parsl_retries.add(lost_key)
        resend: list[_Item] = []
        self._claim_lost_results(lost_key, resend)
        if resend:
            self._send(resend)

    def _sweep_periodically(self) -> None:
        """Daemon thread: every `LEDGER_SWEEP_SECONDS`, claim results lost with local workers.

        Covers a worker that died between two tasks (Parsl reports nothing then).
        """
        while not self._stop_sweeps.wait(self.LEDGER_SWEEP_SECONDS):
            if not self._running:
                continue
            resend: list[_Item] = []
            try:
                self._claim_lost_results(None, resend)
            except Exception as exc:  # noqa: BLE001 - never kill the sweeps
                _log.debug("ledger sweep failed: %s", exc)
            if resend:
                self._send(resend)

    def _handle(self, fut: Any, items: list[_Item], resend: list[_Item], key: int | None = None) -> None:
        try:
            res = fut.result()
        except BaseException as exc:  # noqa: BLE001 - classify every infrastructure error
            if is_lost_worker_error(exc):
                self._lost(items, str(exc), resend)
                # Tasks the same process finished just before it died may have lost their
                # results with it (Parsl's result queue is written by a background thread).
                self._claim_lost_results(key, resend)
                return
            if is_no_workers_error(exc):
                err = ParslWorkersUnavailableError(
                    f"Parsl could not start any worker: {' '.join(str(exc).split())} -- check the provider "
                    f"settings and worker_init, and the logs under {self._run_dir}/*/submit_scripts "
                    "(finished quanta were registered; rerun with --extend-run --skip-existing)")
                for _qid, outer, _ in items:
                    self._finish(outer, err)
                return
            for qid, outer, _ in items:
                self._finish(outer, QuantumResult(
                    qid, "failed", error=f"ParslError: {type(exc).__name__}: {exc} (check that ccdflow is "
                    "installed on the workers and the repository is on a shared filesystem)"))
            return
        results = res if isinstance(res, list) else [res]
        if self.auto_batch:
            with self._lock:
                self._record_times(results)
        for i, (qid, outer, _) in enumerate(items):
            r = results[i] if i < len(results) else None
            if not isinstance(r, QuantumResult):
                r = QuantumResult(qid, "failed", error=f"ParslError: the worker returned {type(r).__name__}")
            self._finish(outer, r)

    def _finish(self, outer: Future[QuantumResult], res: QuantumResult | BaseException) -> None:
        """Settle ``outer`` with a result, or with an exception that stops the run."""
        with self._lock:
            self._outstanding.discard(outer)
        if not outer.done():
            try:
                if isinstance(res, BaseException):
                    outer.set_exception(res)
                else:
                    outer.set_result(res)
            except Exception:  # noqa: BLE001 - cancelled by shutdown(cancel=True) meanwhile
                pass

    def shutdown(self, cancel: bool = False) -> None:
        """Stop Parsl: ``dfk.cleanup()`` (interchange stopped, blocks cancelled).

        Parameters
        ----------
        cancel : `bool`
            Also mark the quanta still outstanding as cancelled (interrupted runs).
        """
        with self._lock:
            pending, self._pending = self._pending, []
        for _qid, outer, _n in pending:  # never sent: the run is over or interrupted
            outer.cancel()
        with self._start_lock, self._lock:  # waits for a start in progress (start_in_background)
            dfk, self._dfk, self._app, self._batch_app = self._dfk, None, None, None
            outstanding = list(self._outstanding) if cancel else []
            self._outstanding.clear() if cancel else None
        self._stop_sweeps.set()
        try:
            if dfk is not None:
                dfk.cleanup()
        finally:
            for fut in outstanding:
                fut.cancel()
            self._config = None
            if self._ledger is not None:
                _LEDGER_OWNERS.pop(self._ledger, None)
                shutil.rmtree(self._ledger, ignore_errors=True)

    def reset(self) -> None:
        """Nothing to rebuild: lost workers are handled inside the executor."""

    def __enter__(self) -> ParslQuantumExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(cancel=exc[0] is not None)
