"""Batch runs in one command: ``pipetask submit SUBMIT.yaml``, and the executor factory.

A submit file holds everything a batch run needs -- pipeline, repository, input collections,
data query, output, compute site, cores and memory per quantum, Parsl provider settings -- in
the spirit of ``bps submit`` (middleware-reference section 7; the BPS key names ``pipelineYaml``,
``butlerConfig``, ``inCollection``, ``dataQuery``, ``outputRun``, ``computeSite``,
``requestCpus`` and ``requestMemory`` are accepted as aliases)::

    pipeline: pipelines/cpBias.yaml
    repo: /project/repo
    inputs: [kast_blue/raw/all, kast_blue/calib]
    data_query: "instrument='kast_blue' AND exposure.observation_type='bias'"
    output: u/me/bias
    compute_site: slurm
    cores_per_quantum: 1
    memory_per_quantum: 4096          # MB
    sites:
      slurm:
        provider: {kind: slurm, partition: normal, walltime: "04:00:00", max_blocks: 20,
                   nodes_per_block: 1, worker_init: "source /project/venv/bin/activate"}
        htex: {max_workers_per_node: 32}

`submit` builds the quantum graph (saved next to the repository), takes the run's writer lock,
prepares the output run, runs every quantum on Parsl through `ParslQuantumExecutor` and
registers the outputs in batches, exactly like ``pipetask run --executor parsl``.

`make_executor` and `execute_graph` are the Python API behind ``pipetask run --executor
serial|pool|parsl``.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from butler import Butler

    from ..graph.quantum_graph import QuantumGraph
    from .executors import QuantumExecutor
    from .runner import RunReport

__all__ = ["SubmitConfig", "SubmitConfigError", "SubmitResult", "execute_graph", "load_submit_config",
           "make_executor", "default_parsl_config", "graph_file", "submit",
           "EXECUTOR_KINDS"]

_log = logging.getLogger("ccdflow.submit")

#: Values of ``pipetask run --executor``.
EXECUTOR_KINDS = ("auto", "serial", "pool", "parsl")


class SubmitConfigError(ValueError):
    """A submit file is missing, unreadable or has an invalid field (the message says which)."""


# ============================================================================ executor factory
def graph_file(graph: QuantumGraph, repo_root: Path, graph_path: str | os.PathLike[str] | None) -> str:
    """Return the file pool and Parsl workers load ``graph`` from.

    Parameters
    ----------
    graph : `pipeline.graph.QuantumGraph`
        The graph.
    repo_root : `pathlib.Path`
        Repository root.
    graph_path : path-like, optional
        The graph's file if saved already.

    Returns
    -------
    path : `str`
        ``graph_path`` if it is a file, else a new file under ``REPO/.ccdflow/graphs/``.
    """
    if graph_path is not None and Path(graph_path).is_file():
        return str(graph_path)
    gdir = repo_root / ".ccdflow" / "graphs"
    gdir.mkdir(parents=True, exist_ok=True)
    path = gdir / f"{(graph.output_run or 'graph').replace('/', '_')}_{os.getpid()}.qg"
    graph.save(path)
    return str(path)


def make_executor(kind: str, graph: QuantumGraph, repo_root: str | os.PathLike[str], *, processes: int = 1,
                  graph_path: str | os.PathLike[str] | None = None, parsl_config: Any = None,
                  timeout: float | None = None, start_method: str = "forkserver",
                  log_level: int = logging.INFO) -> QuantumExecutor:
    """Make the executor a run asks for.

    Parameters
    ----------
    kind : {"auto", "serial", "pool", "parsl"}
        ``auto``: serial for ``processes == 1``, else a process pool.
    graph : `pipeline.graph.QuantumGraph`
        The graph to run.
    repo_root : path-like
        Repository root.
    processes : `int`
        Pool size (``pool``/``auto``).
    graph_path : path-like, optional
        The graph's file if saved already (pool and Parsl workers load it); otherwise it is saved
        under ``REPO/.ccdflow/graphs/``.
    parsl_config : path-like, `dict` or `parsl.config.Config`, optional
        For ``parsl``: a ``.py``/``.yaml`` file or a mapping (default: ``processes`` local
        workers, 2 when ``processes`` is 1).
    timeout : `float`, optional
        Per-quantum wall-clock limit (s).
    start_method : {"forkserver", "spawn"}
        Process-pool start method.
    log_level : `int`
        Level of records kept in ``<label>_log``.

    Returns
    -------
    executor : `pipeline.execution.executors.QuantumExecutor`

    Raises
    ------
    ValueError
        If ``kind`` is unknown, or ``parsl_config`` is given for another executor.
    pipeline.execution.parsl_executor.ParslConfigError
        If the Parsl configuration is invalid.
    """
    from .executors import ProcessPoolQuantumExecutor, SerialExecutor

    if kind not in EXECUTOR_KINDS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTOR_KINDS)}, not {kind!r}")
    if parsl_config is not None and kind != "parsl":
        raise ValueError("--parsl-config needs --executor parsl")
    root = Path(repo_root)
    if kind == "auto":
        kind = "serial" if processes == 1 else "pool"
    if kind == "serial":
        return SerialExecutor(graph, root, timeout=timeout, log_level=log_level)
    path = graph_file(graph, root, graph_path)
    if kind == "pool":
        return ProcessPoolQuantumExecutor(path, root, processes, timeout=timeout, start_method=start_method,
                                          log_level=log_level)
    from .parsl_executor import ParslQuantumExecutor

    return ParslQuantumExecutor(path, root, default_parsl_config(parsl_config, processes), timeout=timeout,
                                log_level=log_level)


def default_parsl_config(parsl_config: Any, processes: int) -> Any:
    """Return ``parsl_config``, or when it is `None` the local default for ``-j processes``.

    Parameters
    ----------
    parsl_config : path-like, `dict` or `parsl.config.Config`, optional
        The configuration given (``--parsl-config``).
    processes : `int`
        ``-j N``: the number of local workers when no configuration is given (the built-in
        default of 2 when ``processes`` is 1).

    Returns
    -------
    parsl_config : path-like, `dict`, `parsl.config.Config` or `None`
    """
    if parsl_config is None and processes > 1:
        return {"htex": {"max_workers_per_node": processes}}
    return parsl_config


def execute_graph(butler: Butler, graph: QuantumGraph, *, executor: QuantumExecutor | str = "auto", processes: int = 1,
                  parsl_config: Any = None, graph_path: str | os.PathLike[str] | None = None,
                  register_dataset_types: bool = False, save_versions: bool = True, lock: bool = True,
                  timeout: float | None = None, **run_kwargs: Any) -> RunReport:
    """Prepare the output run and execute a graph, holding the run's writer lock throughout.

    Parameters
    ----------
    butler : `butler.Butler`
        Writeable butler.
    graph : `pipeline.graph.QuantumGraph`
        The graph.
    executor : `str` or executor
        An executor kind for `make_executor`, or an executor object.
    processes, parsl_config, graph_path, timeout
        Passed to `make_executor`.
    register_dataset_types, save_versions : `bool`
        Passed to `pipeline.execution.runner.pre_exec_init`.
    lock : `bool`
        Take the RUN's writer lock (`pipeline.execution.run_lock.run_lock`).
    **run_kwargs
        Passed to `pipeline.execution.runner.run_graph` (``fail_fast``, ``progress``,
        ``summary_path`` ...).

    Returns
    -------
    report : `pipeline.execution.runner.RunReport`

    Raises
    ------
    pipeline.execution.run_lock.RunLockedError
        If another driver is writing the same output RUN.
    pipeline.execution.runner.ExecutionError
        If the repository is not ready for the graph.
    """
    import contextlib

    from .run_lock import run_lock
    from .runner import pre_exec_init, run_graph

    ctx = run_lock(butler, graph.output_run) if lock and graph.output_run else contextlib.nullcontext()
    with ctx:
        if lock and graph.output_run:
            from .cleanup import check_writable, remove_stale_files

            # Under the RUN's lock: fail before registering anything when the output directory
            # cannot be written, and remove what an interrupted attempt left in the RUN.
            check_writable(butler, graph.output_run)
            remove_stale_files(butler, graph)
        pre_exec_init(butler, graph, register_dataset_types=register_dataset_types,
                      save_versions=save_versions)
        if isinstance(executor, str):
            level = min(logging.getLogger().getEffectiveLevel(), logging.INFO)
            executor = make_executor(executor, graph, butler.root, processes=processes, graph_path=graph_path,
                                     parsl_config=parsl_config, timeout=timeout, log_level=level)
        try:
            return run_graph(butler, graph, executor, **run_kwargs)
        finally:
            executor.shutdown()


# ============================================================================ submit file
_ALIASES = {
    "pipeline": ("pipeline", "pipelineYaml"),
    "repo": ("repo", "butlerConfig", "butler"),
    "inputs": ("inputs", "input", "inCollection"),
    "data_query": ("data_query", "dataQuery", "where"),
    "output_run": ("output_run", "outputRun"),
    "compute_site": ("compute_site", "computeSite"),
    "cores_per_quantum": ("cores_per_quantum", "requestCpus"),
    "memory_per_quantum": ("memory_per_quantum", "requestMemory"),
}


def _alias(name: str) -> Any:
    return AliasChoices(*_ALIASES[name])


class SubmitConfig(BaseModel):
    """A submit file (``pipetask submit SUBMIT.yaml``).

    Attributes
    ----------
    pipeline : `str`
        Pipeline YAML, optionally ``#subset`` (alias ``pipelineYaml``).
    repo : `str`
        Repository root (alias ``butlerConfig``).
    inputs : `list` [`str`]
        Input collections (alias ``inCollection``; a comma-separated string is accepted).
    data_query : `str`
        Data query expression (alias ``dataQuery``).
    output : `str`, optional
        CHAINED output collection (``-o``); a new timestamped RUN is made in it.
    output_run : `str`, optional
        Explicit output RUN (alias ``outputRun``).
    extend_run, skip_existing, clobber_outputs : `bool`
        As the ``pipetask run`` flags (resume an interrupted submission with
        ``extend_run: true`` and ``skip_existing: true``).
    config : `list` [`str`]
        ``label:field=value`` overrides.
    config_files : `list` [`str`]
        ``label:file`` override files.
    instrument : `str`, optional
        Instrument whose config overrides apply.
    register_dataset_types : `bool`
        Register the pipeline's dataset types (default true).
    compute_site : `str`
        Name of an entry of ``sites`` (alias ``computeSite``); ``local`` is built in.
    cores_per_quantum : `float`
        Cores per quantum (alias ``requestCpus``) -> Parsl ``cores_per_worker``.
    memory_per_quantum : `float`, optional
        Memory per quantum in MB (alias ``requestMemory``) -> Parsl ``mem_per_worker``.
    sites : `dict` [`str`, `dict`]
        Parsl site configurations in the schema of
        `pipeline.execution.parsl_executor.ParslSiteConfig`.
    parsl_config : `str`, optional
        A ``.py``/``.yaml`` Parsl config file instead of ``sites``.
    qgraph : `str`, optional
        Where to save the graph (default ``REPO/.ccdflow/submit/<run>.qg``).
    summary : `str`, optional
        JSON run summary path.
    fail_fast : `bool`
    timeout : `float`, optional
        Per-quantum wall-clock limit (s).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    pipeline: str = Field(validation_alias=_alias("pipeline"))
    repo: str = Field(validation_alias=_alias("repo"))
    inputs: list[str] = Field(default_factory=list, validation_alias=_alias("inputs"))
    data_query: str = Field("", validation_alias=_alias("data_query"))
    output: str | None = None
    output_run: str | None = Field(None, validation_alias=_alias("output_run"))
    extend_run: bool = False
    skip_existing: bool = False
    clobber_outputs: bool = False
    config: list[str] = Field(default_factory=list)
    config_files: list[str] = Field(default_factory=list)
    instrument: str | None = None
    register_dataset_types: bool = True
    compute_site: str = Field("local", validation_alias=_alias("compute_site"))
    cores_per_quantum: float = Field(1.0, gt=0, validation_alias=_alias("cores_per_quantum"))
    memory_per_quantum: float | None = Field(None, gt=0, validation_alias=_alias("memory_per_quantum"))
    sites: dict[str, dict[str, Any]] = Field(default_factory=dict)
    parsl_config: str | None = None
    qgraph: str | None = None
    summary: str | None = None
    fail_fast: bool = False
    timeout: float | None = Field(None, gt=0)

    @field_validator("inputs", mode="before")
    @classmethod
    def _split_inputs(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    def site_config(self) -> dict[str, Any]:
        """Return the Parsl site mapping of ``compute_site`` with cores/memory per quantum applied.

        Returns
        -------
        site : `dict`
            In the `ParslSiteConfig` schema.

        Raises
        ------
        SubmitConfigError
            If ``compute_site`` names no entry of ``sites`` (and is not ``local``).
        """
        import copy

        if self.compute_site in self.sites:
            site = copy.deepcopy(self.sites[self.compute_site])
        elif self.compute_site == "local":
            site = {"provider": {"kind": "local"}}
        else:
            raise SubmitConfigError(
                f"compute_site {self.compute_site!r} is not defined; add it under 'sites:' "
                f"(defined: {', '.join(self.sites) or 'none'}) or use 'local'")
        htex = site.setdefault("htex", {})
        htex.setdefault("cores_per_worker", self.cores_per_quantum)
        if self.memory_per_quantum is not None:
            htex.setdefault("mem_per_worker", self.memory_per_quantum / 1024.0)
        if site.get("provider", {}).get("kind", "local") == "local" and "max_workers_per_node" not in htex:
            htex["max_workers_per_node"] = max(1, int((os.cpu_count() or 1) // self.cores_per_quantum))
        return site


def load_submit_config(source: str | os.PathLike[str] | dict[str, Any]) -> SubmitConfig:
    """Read and validate a submit file.

    Relative paths (``pipeline``, ``repo``, ``parsl_config``, ``qgraph``, ``summary``) are relative
    to the file's directory; ``$VARS`` and ``~`` are expanded.

    Parameters
    ----------
    source : path-like or `dict`
        The YAML file, or its content.

    Returns
    -------
    config : `SubmitConfig`

    Raises
    ------
    SubmitConfigError
        If the file is missing or not YAML, a required field is missing, or a field is unknown or
        invalid (every problem is listed with its field name).
    """
    base = Path.cwd()
    if isinstance(source, dict):
        data = dict(source)
        where = "(mapping)"
    else:
        import yaml

        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise SubmitConfigError(f"submit file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SubmitConfigError(f"submit file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise SubmitConfigError(f"submit file {path} must hold a mapping (pipeline:, repo:, inputs: ...)")
        base = path.resolve().parent
    try:
        cfg = SubmitConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            msg = "required field missing" if err["type"] == "missing" else err["msg"]
            problems.append(f"{loc}: {msg}")
        raise SubmitConfigError(f"invalid submit file {where}: " + "; ".join(problems)) from None

    def fix(p: str | None, keep_fragment: bool = False) -> str | None:
        if p is None:
            return None
        p = os.path.expanduser(os.path.expandvars(p))
        frag = ""
        if keep_fragment and "#" in p:
            p, frag = p.split("#", 1)
            frag = "#" + frag
        return (str(base / p) if not os.path.isabs(p) else p) + frag

    cfg.pipeline = fix(cfg.pipeline, keep_fragment=True) or cfg.pipeline
    cfg.repo = fix(cfg.repo) or cfg.repo
    cfg.parsl_config = fix(cfg.parsl_config)
    cfg.qgraph = fix(cfg.qgraph)
    cfg.summary = fix(cfg.summary)
    return cfg


@dataclass
class SubmitResult:
    """Outcome of `submit`.

    Attributes
    ----------
    graph_path : `pathlib.Path`
        The saved quantum graph.
    output_run : `str`
    report : `pipeline.execution.runner.RunReport` or `None`
        `None` for a dry run.
    """

    graph_path: Path
    output_run: str
    report: Any = None


def submit(source: str | os.PathLike[str] | dict[str, Any] | SubmitConfig, *, dry_run: bool = False,
           progress: str = "auto") -> SubmitResult:
    """Build the graph of a submit file and run it on Parsl.

    Parameters
    ----------
    source : path-like, `dict` or `SubmitConfig`
        The submit file.
    dry_run : `bool`
        Build and save the graph, check the Parsl configuration, run nothing.
    progress : {"auto", "rich", "plain", "none"}
        Progress display.

    Returns
    -------
    result : `SubmitResult`

    Raises
    ------
    SubmitConfigError
        If the submit file is invalid.
    pipeline.execution.parsl_executor.ParslConfigError
        If the Parsl site configuration is invalid.
    pipeline.execution.run_lock.RunLockedError
        If another driver writes the same output run.
    butler.ButlerError, pipeline.graph.builder.GraphBuilderError
        For repository, collection and graph-building errors.
    """
    from butler import Butler

    from ..definitions import parse_config_file_option, parse_config_override, pipeline_from_options
    from ..graph.builder import build_quantum_graph
    from ..graph.collections import resolve_output_collections
    from .parsl_executor import ParslSiteConfig, load_parsl_config

    cfg = source if isinstance(source, SubmitConfig) else load_submit_config(source)
    if not cfg.output and not cfg.output_run:
        raise SubmitConfigError("the submit file needs 'output' (a CHAINED collection) or 'output_run'")
    # Check the Parsl configuration before touching the repository.
    parsl_cfg: Any
    if cfg.parsl_config:
        parsl_cfg = cfg.parsl_config
        load_parsl_config(parsl_cfg)
    else:
        parsl_cfg = cfg.site_config()
        try:
            ParslSiteConfig.model_validate(parsl_cfg)
        except ValidationError as exc:
            from .parsl_executor import ParslConfigError, _format_validation

            raise ParslConfigError(_format_validation(exc, f"(site {cfg.compute_site!r})")) from None
    butler = Butler(cfg.repo, writeable=True)
    registered = [str(r.get("name")) for r in butler.query_dimension_records("instrument")]
    pipe = pipeline_from_options(
        cfg.pipeline, (), (), [parse_config_override(c) for c in cfg.config],
        [parse_config_file_option(c) for c in cfg.config_files], cfg.instrument,
        registered_instruments=registered, repo=str(butler.root)).to_graph()
    executor = None
    try:
        if not dry_run:
            # Start Parsl (interchange, worker blocks, worker imports) while the graph is built.
            from .parsl_executor import ParslQuantumExecutor

            if isinstance(parsl_cfg, dict) and "run_dir" not in parsl_cfg:
                parsl_cfg = {**parsl_cfg, "run_dir": str(Path(butler.root) / ".ccdflow" / "parsl")}
            level = min(logging.getLogger().getEffectiveLevel(), logging.INFO)
            executor = ParslQuantumExecutor(None, butler.root, parsl_cfg, timeout=cfg.timeout,
                                            log_level=level)
            executor.start_in_background()
        colls = resolve_output_collections(
            butler.registry, inputs=cfg.inputs, output=cfg.output, output_run=cfg.output_run,
            extend_run=cfg.extend_run, skip_existing=cfg.skip_existing)
        cmd = " ".join(["pipetask", "submit", *sys.argv[2:]]) if sys.argv[1:2] == ["submit"] else "submit()"
        md = {"command": cmd,
              "pipeline": cfg.pipeline, "compute_site": cfg.compute_site}
        graph = build_quantum_graph(butler, pipe, collections=colls, where=cfg.data_query,
                                    clobber_outputs=cfg.clobber_outputs, metadata=md)
        gpath = Path(cfg.qgraph) if cfg.qgraph else (
            Path(butler.root) / ".ccdflow" / "submit" / f"{colls.run.replace('/', '_')}.qg")
        graph.save(gpath)
        _log.info("Saved quantum graph of %d quanta to %s", len(graph), gpath)
        result = SubmitResult(gpath, colls.run)
        if executor is None:
            return result
        executor.graph_path = str(gpath.resolve())
        result.report = execute_graph(
            butler, graph, executor=executor, graph_path=gpath,
            register_dataset_types=cfg.register_dataset_types, timeout=cfg.timeout, fail_fast=cfg.fail_fast,
            progress=progress, summary_path=cfg.summary, command=["pipetask", "submit", *sys.argv[2:]])
        return result
    finally:
        if executor is not None:
            executor.shutdown()  # idempotent; stops a Parsl started for a graph that failed to build
        butler.close()
