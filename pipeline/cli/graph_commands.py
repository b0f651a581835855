"""``pipetask qgraph``, ``pipetask run``, ``pipetask pre-exec-init-qbb`` and ``pipetask run-qbb``.

Attached lazily to the ``pipetask`` click group (`pipeline.cli`), so ``pipetask --help`` does not
import the butler or numpy. Option names follow ``ctrl_mpexec`` (middleware-reference section 6).
Every expected error (bad collection, missing dataset type, missing calibration, empty graph,
unreadable graph file ...) is printed as one ``Error: ...`` line with a non-zero exit status;
``run`` exits 1 when any quantum failed, after running everything it could.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from .options import butler_options, exec_options, log_options, pipeline_options

__all__ = ["qgraph", "run", "pre_exec_init_qbb", "run_qbb", "COMMANDS"]

_log = logging.getLogger("ccdflow.pipetask")


def _split_commas(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that are user errors (printed without a traceback)."""
    classes: list[type[BaseException]] = [FileNotFoundError, ValueError, KeyError, PermissionError]
    try:
        from butler import ButlerError

        classes.append(ButlerError)
    except ImportError:
        pass
    from ..exceptions import PipelineError
    from ..execution.runner import ExecutionError
    from ..graph.builder import GraphBuilderError

    classes += [PipelineError, GraphBuilderError, ExecutionError]
    return tuple(classes)


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted: finished quanta were registered; rerun with --extend-run "
                       "--skip-existing to finish the job", err=True)
            sys.exit(130)
        except Exception as exc:
            from ..graph.builder import NothingToDoError

            if isinstance(exc, NothingToDoError):
                # A rerun after everything finished (--extend-run --skip-existing): success.
                click.echo(f"Nothing to do: {exc}")
                return None
            from butler._errors import storage_error

            storage = storage_error(exc)  # a full disk or a read-only path, whatever layer noticed
            if storage is not None:
                raise click.ClickException(str(storage)) from None
            if not isinstance(exc, _expected_errors()):
                raise
            msg = str(exc)
            if isinstance(exc, KeyError) and exc.args:
                msg = str(exc.args[0])
            raise click.ClickException(msg) from None

    return wrapper


# --------------------------------------------------------------------------- options
# Shared options (-p -t -c -C -b -i -o ... -j --log-level) come from pipeline.cli.options; the ones
# below only exist for graph building/execution.
def _graph_extra_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--prune-replaced", type=click.Choice(["unstore", "purge"]), default=None,
                     help="Delete the replaced run's datasets after --replace-run."),
        click.option("--dataset-query-constraint", default="all", show_default=True,
                     help="Overall inputs that constrain the data query: all, off, or type1,type2."),
        click.option("--qgraph-node-id", multiple=True, metavar="UUID[,UUID]",
                     help="With -g: only these quanta (comma separated)."),
        click.option("--qgraph-datastore-records", is_flag=True,
                     help="Accepted for compatibility: graphs always carry their inputs' datastore records."),
        click.option("--show", "show", multiple=True, metavar="ITEM",
                     help="Pipeline items, shown before the graph is built (alone, nothing else is done): "
                     "pipeline, config, config=[LABEL::]PATTERN, history=LABEL::FIELD, dump-config, "
                     "tasks, subsets, inputs, pipeline-graph, task-graph. Graph items: summary, graph, "
                     "workflow, uri. Repeatable."),
        click.option("--qgraph-dot", default=None, metavar="FILE",
                     help="Write the graph for Graphviz (.dot; .png/.svg/.pdf rendered with 'dot')."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _exec_extra_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--executor", type=click.Choice(["auto", "serial", "pool", "parsl"]), default="auto",
                     show_default=True, help="Where quanta run: auto (serial for -j 1, else a process pool), "
                     "serial, pool (-j N) or parsl (see --parsl-config)."),
        click.option("--parsl-config", default=None, metavar="FILE",
                     help="Parsl configuration: a .py file defining `config`, or a .yaml site file "
                     "(docs/parsl.md); implies --executor parsl."),
        click.option("--start-method", type=click.Choice(["forkserver", "spawn"]), default="forkserver",
                     show_default=True, help="How worker processes start (they start once and run many quanta)."),
        click.option("--timeout", type=float, default=None, metavar="SECONDS",
                     help="Per-quantum wall-clock limit; a quantum over it fails."),
        click.option("--fail-fast", is_flag=True, help="Stop submitting quanta after the first failure."),
        click.option("--summary", "summary", default=None, metavar="FILE",
                     help="Write a JSON summary (status, time, error per quantum)."),
        click.option("--no-versions", is_flag=True, help="Do not save or check the 'packages' dataset."),
        click.option("--init-only", is_flag=True, help="Only prepare the output run (collections, configs)."),
        click.option("--progress/--no-progress", default=True,
                     help="Show progress: a bar on a terminal, log lines otherwise."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _setup_logging(level: Any, log_file: str | None) -> None:
    from .options import setup_logging

    setup_logging(level, log_file)


# --------------------------------------------------------------------------- building blocks
def _load_pipeline(pipeline: str | None, tasks: Sequence[str], delete: Sequence[str],
                   config_overrides: Sequence[str], config_files: Sequence[str], instrument: str | None,
                   butler: Any = None, select_tasks: str | None = None) -> Any:
    """Build the pipeline from -p/-t/-c/-C/--select-tasks and return its validated pipeline graph.

    With a butler, the pipeline's instrument must be registered in its repository.
    """
    from .options import load_pipeline

    if butler is not None:
        registered = [str(r.get("name")) for r in butler.query_dimension_records("instrument")]
        return load_pipeline(pipeline, tasks, delete, config_overrides, config_files, instrument,
                             select_tasks, registered_instruments=registered,
                             repo=str(butler.root)).to_graph()
    return load_pipeline(pipeline, tasks, delete, config_overrides, config_files, instrument,
                         select_tasks).to_graph()


def _make_butler(repo: str | None, *, writeable: bool) -> Any:
    if not repo:
        raise click.UsageError("give the repository with -b/--butler-config REPO")
    from butler import Butler

    return Butler(repo, writeable=writeable)


def _read_only_butler(repo: str) -> Any:
    """Open the SQLAlchemy-free read-only butler of a repository (`butler.registry.backends`).

    Returns `None` instead when the repository's backend has none (PostgreSQL) or
    ``BUTLER_CLI_FAST=0``.
    """
    from butler.registry.backends import FastPathUnavailableError, fast_path_enabled, open_read_only_butler

    if not fast_path_enabled():
        return None
    try:
        return open_read_only_butler(repo)
    except FastPathUnavailableError as exc:
        _log.debug("no read-only butler for %s (%s)", repo, exc)
        return None


class _HeldLogRecords(logging.Filter):
    """Hold back the log records of the root logger's handlers, to emit them later or never."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.handlers = list(logging.getLogger().handlers)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.records or self.records[-1] is not record:  # once, whichever handler sees it
            self.records.append(record)
        return False

    def __enter__(self) -> _HeldLogRecords:
        for h in self.handlers:
            h.addFilter(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handlers:
            h.removeFilter(self)

    def emit(self) -> None:
        """Pass the held records to the handlers (as they would have been)."""
        for record in self.records:
            for h in self.handlers:
                if record.levelno >= h.level:
                    h.handle(record)


def _build_read_only(opts: dict[str, Any]) -> tuple[Any, Any]:
    """Build the graph with the read-only butler when it answers every read as the registry would.

    Building a graph only reads the registry; on SQLite the read-only butler
    (`butler.registry._sqlite_read_only`) does that without importing SQLAlchemy (a third of
    ``pipetask qgraph``'s run time). When it refuses a read (``butler.unavailable``) or the build
    fails in any way, nothing of this attempt is kept, not even its log messages: the caller
    builds the graph again with a `butler.Butler`, which gives the canonical graph or error.

    Returns
    -------
    graph, butler
        The graph and the (closed) read-only butler, or ``(None, None)``.
    """
    butler = _read_only_butler(opts["repo"])
    if butler is None:
        return None, None
    graph = None
    held = _HeldLogRecords()
    try:
        with held:
            graph = _build_or_load(opts, butler, read_only=True)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - the registry path gives the canonical outcome
        _log.debug("read-only graph build failed (%s: %s); building through the registry",
                   type(exc).__name__, exc)
        graph = None
    finally:
        butler.close()
    if graph is None or butler.unavailable is not None:
        _log.debug("read-only graph build refused (%s); building through the registry", butler.unavailable)
        return None, None
    held.emit()
    return graph, butler


def _build_or_load(opts: dict[str, Any], butler: Any, *, read_only: bool = False) -> Any:
    """Load the graph (``-g``) or build it; ``read_only``: with a `_read_only_butler`."""
    from ..graph.builder import build_quantum_graph
    from ..graph.collections import resolve_output_collections
    from ..graph.quantum_graph import QuantumGraph

    if opts["qgraph"]:
        from uuid import UUID

        nodes = None
        if opts["qgraph_node_id"]:
            try:
                nodes = [UUID(x) for x in _split_commas(opts["qgraph_node_id"])]
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--qgraph-node-id") from None
        graph = QuantumGraph.load(opts["qgraph"], nodes=nodes)
        return graph
    if butler is None:
        raise click.UsageError("building a graph needs the repository: -b REPO")
    tasks = _load_pipeline(opts["pipeline"], opts["tasks"], opts["delete"], opts["config_overrides"],
                           opts["config_files"], opts["instrument"], butler, opts.get("select_tasks"))
    if read_only and any(c.lookup_function is not None for node in tasks.tasks.values()
                         for c in node.prerequisite_inputs.values()):
        from butler.registry.backends import FastPathUnavailableError

        # A lookup function may call any registry method: only the registry answers them all.
        raise FastPathUnavailableError("a prerequisite input has a lookup function")
    colls = resolve_output_collections(
        butler.registry, inputs=_split_commas(opts["inputs"]), output=opts["output"],
        output_run=opts["output_run"], extend_run=opts["extend_run"], replace_run=opts["replace_run"],
        skip_existing_in=_split_commas(opts["skip_existing_in"]), skip_existing=opts["skip_existing"],
        rebase=bool(opts.get("rebase")))
    md = {"command": " ".join(["pipetask", *sys.argv[1:]]), "pipeline": opts["pipeline"],
          "prune_replaced": opts.get("prune_replaced")}
    graph = build_quantum_graph(butler, tasks, collections=colls, where=opts["data_query"],
                                clobber_outputs=opts["clobber_outputs"], metadata=md,
                                dataset_query_constraint=opts["dataset_query_constraint"])
    return graph


def split_show(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``--show`` items into pipeline items and graph items, refusing unknown ones.

    Pipeline items (``pipeline``, ``config[=...]``, ``history=...``, ``dump-config``, ``tasks`` as in
    LSST's ``pipetask``, and ``subsets``, ``inputs``, ``pipeline-graph``, ``task-graph``) are shown
    before the quantum graph is built; graph items (``summary``, ``graph``, ``workflow``, ``uri``)
    after.

    Parameters
    ----------
    items : sequence of `str`
        The ``--show`` values.

    Returns
    -------
    pipeline_items, graph_items : `list` [`str`]
        In the order given.

    Raises
    ------
    click.BadParameter
        For an unknown item (before anything is built), naming the choices.
    """
    if not items:
        return [], []
    from ..graph.display import SHOW_CHOICES as GRAPH_ITEMS
    from .pipetask import PIPELINE_SHOW_ITEMS, SHOW_CHOICES

    pipeline_items: list[str] = []
    graph_items: list[str] = []
    for item in items:
        if item.split("=", 1)[0] in PIPELINE_SHOW_ITEMS:
            pipeline_items.append(item)
        elif item in GRAPH_ITEMS:
            graph_items.append(item)
        else:
            import difflib

            names = [c.split("=")[0] for c in SHOW_CHOICES] + list(GRAPH_ITEMS)
            close = difflib.get_close_matches(item.split("=", 1)[0], names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise click.BadParameter(
                f"unknown --show item {item!r}{hint}; pipeline items: {', '.join(SHOW_CHOICES)}; "
                f"graph items: {', '.join(GRAPH_ITEMS)}",
                param_hint="--show",
            )
    return pipeline_items, graph_items


def _show_pipeline(items: Sequence[str], opts: dict[str, Any], butler: Any) -> None:
    """Print the pipeline ``--show`` items (before any graph is built)."""
    from .options import load_pipeline
    from .pipetask import render_pipeline_show

    if not opts["pipeline"] and not opts["tasks"]:
        raise click.BadParameter(
            f"--show {items[0]} needs the pipeline: give -p PIPELINE (or -t)", param_hint="--show"
        )
    registered = None
    if butler is not None:
        registered = [str(r.get("name")) for r in butler.query_dimension_records("instrument")]
    pipe = load_pipeline(opts["pipeline"], opts["tasks"], opts["delete"], opts["config_overrides"],
                         opts["config_files"], opts["instrument"], opts.get("select_tasks"),
                         registered_instruments=registered,
                         repo=str(butler.root) if butler is not None else None)
    graph = pipe.to_graph()
    for item in items:
        click.echo(render_pipeline_show(item, pipe, graph) or "", nl=False)


def _instruments_butler(repo: str) -> Any:
    """Open a butler to list the registered instruments with: the read-only one when it answers."""
    butler = _read_only_butler(repo)
    if butler is not None:
        from butler.registry.backends import FastPathUnavailableError

        try:
            butler.query_dimension_records("instrument")
            return butler
        except FastPathUnavailableError:
            butler.close()
    return _make_butler(repo, writeable=False)


def _show_pipeline_only(opts: dict[str, Any], command: str) -> bool:
    """Show the pipeline ``--show`` items; return whether that was all there was to do.

    As in LSST's ``pipetask``: when every ``--show`` item is a pipeline item (and ``qgraph`` is
    not asked to save or draw a graph), no quantum graph is built and nothing is executed.
    """
    pipeline_items, graph_items = split_show(opts["show"])
    opts["show"] = graph_items
    if not pipeline_items:
        return False
    butler = _instruments_butler(opts["repo"]) if opts["repo"] else None
    try:
        _show_pipeline(pipeline_items, opts, butler)
    finally:
        if butler is not None:
            butler.close()
    if graph_items or (command == "qgraph" and (opts["save_qgraph"] or opts["qgraph_dot"])):
        return False
    click.echo(f"No quantum graph built{' or executed' if command == 'run' else ''}: "
               "every --show item was about the pipeline.", err=True)
    return True


def _show(graph: Any, opts: dict[str, Any], butler: Any) -> None:
    if not opts["show"] and not opts["qgraph_dot"]:
        return
    from ..graph.display import show_graph, write_dot

    for what in opts["show"]:
        uri_for = None
        if what == "uri":
            root = Path(butler.root) if butler is not None else None

            def uri_for(ref: Any, _root: Any = root) -> str:
                from ..execution._butler_adapter import predicted_file_info

                if _root is None:
                    return "?"
                return str(_root / predicted_file_info(_root, ref).path)
        show_graph(graph, what, sys.stdout, uri_for=uri_for)
    if opts["qgraph_dot"]:
        path = write_dot(graph, opts["qgraph_dot"])
        _log.info("Wrote %s", path)


def _finish_graph(graph: Any, opts: dict[str, Any], butler: Any) -> None:
    if opts["save_qgraph"]:
        graph.save(opts["save_qgraph"])
        _log.info("Saved quantum graph of %d quanta to %s", len(graph), opts["save_qgraph"])
    _show(graph, opts, butler)


# --------------------------------------------------------------------------- commands
@click.command("qgraph", short_help="Build a quantum graph (and save, show or draw it).")
@pipeline_options
@butler_options
@_graph_extra_options
@log_options
@_handle_errors
def qgraph(**opts: Any) -> None:
    """Build the quantum graph of a pipeline over a repository.

    Example: pipetask qgraph -b REPO -p pipelines/cpBias.yaml -i kast_blue/raw/all -o u/me/bias
    -d "instrument='kast_blue' AND exposure.observation_type='bias'" -q bias.qg --show summary
    """
    _setup_logging(opts.pop("log_level"), opts.pop("log_file"))
    if _show_pipeline_only(opts, "qgraph"):
        return
    graph = butler = None
    if opts["repo"] and opts["qgraph"]:
        # A saved graph (-g): the repository only gives its root (--show uri); no registry read.
        butler = _read_only_butler(opts["repo"])
        if butler is not None:
            butler.close()
            graph = _build_or_load(opts, butler)
    elif opts["repo"]:
        graph, butler = _build_read_only(opts)  # no SQLAlchemy import when it answers everything
    if graph is None:
        butler = _make_butler(opts["repo"], writeable=False) if opts["repo"] else None
        graph = _build_or_load(opts, butler)
    _finish_graph(graph, opts, butler)
    if not opts["show"] and not opts["save_qgraph"] and not opts["qgraph_dot"]:
        from ..graph.display import show_graph

        show_graph(graph, "summary", sys.stdout)


@click.command("run", short_help="Build (or read) a quantum graph and execute it.")
@pipeline_options
@butler_options
@_graph_extra_options
@exec_options
@_exec_extra_options
@click.option("--pdb", "pdb", is_flag=True,
              help="Open the Python debugger (post-mortem) at the exception of a failing quantum; "
              "serial execution only (-j 1).")
@log_options
@_handle_errors
def run(**opts: Any) -> None:
    """Execute a pipeline: build the graph (or read it with -g) and run every quantum.

    Outputs are registered in batches as quanta finish; a failed quantum blocks only its
    descendants and the command exits 1 after running everything else. Interrupted runs are
    finished with --extend-run --skip-existing (or -g with the same graph).
    """
    if opts["pdb"] and (opts["processes"] != 1 or opts.get("parsl_config")
                        or opts.get("executor", "auto") not in ("auto", "serial")):
        raise click.UsageError("--pdb needs the serial executor: the debugger runs in this process; "
                               "drop -j / --executor / --parsl-config (or use -j 1)")
    _setup_logging(opts.pop("log_level"), opts.pop("log_file"))
    if _show_pipeline_only(opts, "run"):
        return
    pool = None
    if opts["processes"] > 1 and opts["repo"] and not opts.get("parsl_config") \
            and opts.get("executor", "auto") == "auto":
        # Start the workers now: their start-up (imports) overlaps building the graph.
        from ..execution.executors import ProcessPoolQuantumExecutor

        pool = ProcessPoolQuantumExecutor(None, opts["repo"], opts["processes"], timeout=opts["timeout"],
                                          start_method=opts["start_method"],
                                          log_level=min(logging.getLogger().getEffectiveLevel(), logging.INFO))
        pool.start_in_background()
    elif opts["repo"] and (opts.get("parsl_config") or opts.get("executor") == "parsl"):
        # Parsl's start-up (interchange, worker pools, imports: several seconds) overlaps building
        # the graph too; a bad --parsl-config fails here, before anything is written.
        from ..execution.parsl_executor import ParslQuantumExecutor
        from ..execution.submit import default_parsl_config

        cfg = default_parsl_config(opts.get("parsl_config"), opts["processes"])
        pool = ParslQuantumExecutor(None, opts["repo"], cfg, timeout=opts["timeout"],
                                    log_level=min(logging.getLogger().getEffectiveLevel(), logging.INFO))
        pool.start_in_background()
    opts["_pool"] = pool
    try:
        _run_command(opts)
    finally:
        if pool is not None:
            pool.shutdown()


def _run_command(opts: dict[str, Any]) -> None:
    graph = None
    if _run_writer_may_apply(opts):
        graph, _ = _build_read_only(opts)  # no SQLAlchemy import when it answers everything
        writer = _open_run_writer(opts["repo"], graph) if graph is not None else None
        if writer is not None:
            try:
                _finish_graph(graph, opts, writer)
                _run_locked(writer, graph, opts)
            finally:
                writer.close()
            return
    butler = _make_butler(opts["repo"], writeable=True)
    if graph is None:
        graph = _build_or_load(opts, butler)
    _finish_graph(graph, opts, butler)
    _run_locked(butler, graph, opts)


def _run_locked(butler: Any, graph: Any, opts: dict[str, Any]) -> None:
    """Run the graph under the output RUN's lock; exit with the status of `_execute`."""
    # (a bad --parsl-config has failed already: `run` builds the Parsl executor before the graph)
    from ..execution.cleanup import check_writable, remove_stale_files
    from ..execution.run_lock import run_lock

    with run_lock(butler, graph.output_run):  # one driver per output RUN; a second one gets a clear error
        # Nothing is registered before the output directory is known to be writable; what an
        # interrupted attempt left in this RUN (temporary and unregistered files) goes first.
        check_writable(butler, graph.output_run)
        remove_stale_files(butler, graph)
        code = _execute(butler, graph, opts)
    if code:
        sys.exit(code)


def _run_writer_may_apply(opts: dict[str, Any]) -> bool:
    """Whether the options of ``pipetask run`` allow the SQLAlchemy-free run writer.

    It writes into a new output RUN only: a graph built here (no ``-g``), no ``--extend-run``,
    ``--replace-run``, ``--prune-replaced``, ``--skip-existing(-in)`` or ``--rebase``, and the
    serial or process-pool executor (Parsl's driver keeps the `butler.Butler`).
    """
    if not opts["repo"] or opts["qgraph"]:
        return False
    if opts["extend_run"] or opts["replace_run"] or opts.get("prune_replaced") or opts.get("rebase"):
        return False
    if opts["skip_existing"] or opts["skip_existing_in"]:
        return False
    return not opts.get("parsl_config") and opts.get("executor", "auto") in ("auto", "serial", "pool")


def _open_run_writer(repo: str, graph: Any) -> Any:
    """Open the SQLAlchemy-free run writer (`butler.registry.backends.open_run_writer`) for a graph.

    Returns `None`, before anything is written, unless the graph writes into a new RUN (no such
    collection, no directory of that name in the datastore: nothing to clean up or compare), has
    nothing to clobber or replace, its init-outputs have no dimensions and the data IDs of its
    outputs are complete (values and records: the registry would insert them as they are).
    ``BUTLER_CLI_FAST=0`` and repositories without a run writer (PostgreSQL) give `None` too.
    """
    from butler import MissingCollectionError
    from butler.registry.backends import FastPathUnavailableError, open_run_writer

    md = graph.metadata
    run = graph.output_run
    if not run or md.get("replaced_run") or md.get("clobber_refs") or md.get("extend_run"):
        return None
    if any(r.dataset_type.dimensions for refs in graph.init_outputs.values() for r in refs):
        return None
    for i in range(len(graph)):
        outputs = graph.quantum_at(i).all_outputs()
        if not all(r.data_id.has_full() and r.data_id.has_records() for r in outputs):
            return None
    try:
        writer = open_run_writer(repo)
    except FastPathUnavailableError as exc:
        _log.debug("no run writer for %s (%s); running through the registry", repo, exc)
        return None
    try:
        writer.get_collection_type(run)
    except MissingCollectionError:
        if not (Path(writer.root) / run).exists():
            return writer
    writer.close()
    return None


def _execute(butler: Any, graph: Any, opts: dict[str, Any]) -> int:
    from butler.cli_startup import resume_gc

    from ..execution.executors import ProcessPoolQuantumExecutor, SerialExecutor
    from ..execution.runner import pre_exec_init, resume_state, run_graph

    resume_gc()  # start-up is over: quanta (task code) run with the garbage collector on

    done: set[Any] = set()
    # `_run_command` swept the RUN once, under its lock, before this (`remove_stale_files`): no
    # quantum needs to look for leftovers at its output paths again (an --extend-run paid that
    # per quantum). A pool that loses a worker turns the per-quantum sweep back on (`reset`).
    clean_stale: bool | None = False
    if opts.get("qgraph"):
        # Running a saved graph again (after Ctrl-C, kill -9 or failures) finishes the job:
        # quanta whose metadata is registered are skipped, stale logs of failed attempts removed.
        done, stale = resume_state(butler, graph)
        if done or stale:
            clean_stale = True
            _log.info("Resuming run %s: %d quanta already done, %d stale datasets removed",
                      graph.output_run, len(done), len(stale))
        if stale:
            butler.prune_datasets(stale, purge=True)
    pre_exec_init(butler, graph, register_dataset_types=opts["register_dataset_types"],
                  save_versions=not opts["no_versions"])
    from ..execution.run_graphs import record_run_graph

    record_run_graph(graph, butler.root)  # so `pipetask report REPO -o ...` knows what was expected
    if opts["init_only"]:
        _log.info("Initialized run %s (--init-only)", graph.output_run)
        return 0
    level = logging.getLogger().getEffectiveLevel()
    # The graph's file if saved already (-g or --save-qgraph); a subset of -g is saved anew.
    graph_path = None if opts["qgraph_node_id"] else (opts["qgraph"] or opts["save_qgraph"])
    pool = opts.get("_pool")
    if pool is not None and type(pool).__name__ == "ParslQuantumExecutor":
        from ..execution.submit import graph_file

        executor: Any = pool  # started in the background by `run`
        executor.graph_path = str(Path(graph_file(graph, Path(butler.root), graph_path)).resolve())
    elif opts.get("parsl_config") or opts.get("executor", "auto") != "auto":
        from ..execution.submit import make_executor

        executor = make_executor(
            "parsl" if opts.get("parsl_config") else opts["executor"], graph, butler.root,
            processes=opts["processes"], parsl_config=opts.get("parsl_config"), timeout=opts["timeout"],
            graph_path=graph_path, start_method=opts["start_method"], log_level=min(level, logging.INFO))
    elif opts["processes"] == 1:
        executor = SerialExecutor(graph, butler.root, timeout=opts["timeout"], log_level=min(level, logging.INFO),
                                  clean_stale=clean_stale, post_mortem=bool(opts.get("pdb")))
    else:
        from ..execution.submit import graph_file

        graph_path = graph_file(graph, Path(butler.root), graph_path)
        executor = opts.get("_pool") or ProcessPoolQuantumExecutor(
            None, butler.root, opts["processes"], timeout=opts["timeout"], start_method=opts["start_method"],
            log_level=min(level, logging.INFO))
        executor.graph_path = str(Path(graph_path).resolve())
        executor.repo_root = str(Path(butler.root).resolve())
        executor.clean_stale = clean_stale
    try:
        report = run_graph(butler, graph, executor, fail_fast=opts["fail_fast"],
                           progress="auto" if opts["progress"] else "none",
                           summary_path=opts["summary"], command=["pipetask", *sys.argv[1:]], skip=done)
    finally:
        executor.shutdown()
    _after_run(butler, graph, opts)
    n_ok = report.count("done") + report.count("no_work")
    if report.count("skipped"):
        click.echo(f"Skipped {report.count('skipped')} quanta already done in {graph.output_run}.")
    n_fail, n_blocked = report.count("failed"), report.count("blocked")
    n_pending = report.count("pending")
    not_run = (f"; {n_pending} not attempted (the run stopped at the first failure)" if n_pending else "")
    click.echo(f"Executed {n_ok} quanta successfully, {n_fail} failed and {n_blocked} blocked{not_run} "
               f"in {report.wall_time:.2f} s (output run {graph.output_run}).")
    if report.disk_full:
        _raise_disk_full(report, graph)
    # Each failure was reported once, as it happened (one ERROR line; the traceback with
    # --log-level DEBUG, in the quantum's <label>_log and in --summary).
    return 0 if report.success else 1


def _raise_disk_full(report: Any, graph: Any) -> None:
    """One message for a full disk, not one per quantum that hit it (`RunReport.disk_full`)."""
    import re

    from butler._errors import StorageFullError

    from ..execution.runner import _disk_full

    n = sum(1 for q in report.quanta.values() if q.status == "failed" and _disk_full(q.error))
    m = re.search(r"'(/[^']+)'", report.disk_full or "")
    where = f" writing {Path(m.group(1)).parent}" if m else ""
    out = graph.metadata.get("output")
    again = f"-o {out}" if out else f"--output-run {graph.output_run}"
    raise StorageFullError(
        f"the disk is full (no space left on device){where}: {n} quanta failed on it and no further "
        f"quantum was started; free some space and rerun with {again} --extend-run --skip-existing")


def _after_run(butler: Any, graph: Any, opts: dict[str, Any]) -> None:
    replaced = graph.metadata.get("replaced_run")
    prune = opts.get("prune_replaced") or graph.metadata.get("prune_replaced")
    if replaced and prune:
        _log.info("Removing replaced run %s (--prune-replaced %s)", replaced, prune)
        butler.remove_runs([replaced])


def _on_disk(repo: str, ref: Any) -> bool:
    """Whether the file of a dataset predicted by the graph exists (quantum-backed runs)."""
    from ..execution._butler_adapter import predicted_file_info

    return (Path(repo) / predicted_file_info(repo, ref).path).exists()


@click.command("pre-exec-init-qbb", short_help="Write a graph's run-level outputs without registering.")
@click.argument("repo")
@click.argument("qgraph_file")
@log_options
@_handle_errors
def pre_exec_init_qbb(repo: str, qgraph_file: str, log_level: str | None, log_file: str | None) -> None:
    """Write the init outputs (<label>_config, packages) of a graph with a quantum-backed butler."""
    _setup_logging(log_level, log_file)
    from ..execution._butler_adapter import make_qbb
    from ..execution.runner import packages_versions
    from ..graph.quantum_graph import QuantumGraph

    graph = QuantumGraph.load(qgraph_file)
    from ..execution.run_graphs import record_run_graph

    record_run_graph(graph, repo)  # so `pipetask report REPO -o ...` works after the transfer
    refs = [r for refs in graph.init_outputs.values() for r in refs]
    qbb = make_qbb(repo, {}, refs)
    n = 0
    for label, rs in graph.init_outputs.items():
        for ref in rs:
            if _on_disk(repo, ref):
                continue  # written by an earlier call: this step can be repeated
            value = packages_versions() if ref.dataset_type.name == "packages" else graph.tasks[label].config
            qbb.put(value, ref)
            n += 1
    click.echo(f"Wrote {n} init outputs of run {graph.output_run} ({len(refs) - n} already present)")


@click.command("run-qbb", short_help="Execute a saved graph with no registry access.")
@click.argument("repo")
@click.argument("qgraph_file")
@click.option("--qgraph-node-id", multiple=True, help="Only these quantum ids (comma separated).")
@click.option("-j", "--processes", default=1, type=click.IntRange(min=1))
@click.option("--timeout", type=float, default=None)
@click.option("--summary", default=None)
@log_options
@_handle_errors
def run_qbb(repo: str, qgraph_file: str, qgraph_node_id: Sequence[str], processes: int,
            timeout: float | None, summary: str | None, log_level: str | None, log_file: str | None) -> None:
    """Run quanta of a saved graph through quantum-backed butlers; nothing is registered."""
    _setup_logging(log_level, log_file)
    from uuid import UUID

    from ..execution.executors import ProcessPoolQuantumExecutor, SerialExecutor
    from ..execution.runner import run_graph
    from ..graph.quantum_graph import QuantumGraph

    try:
        nodes = [UUID(x) for x in _split_commas(qgraph_node_id)] if qgraph_node_id else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--qgraph-node-id") from None
    graph = QuantumGraph.load(qgraph_file, nodes=nodes)
    from butler.cli_startup import resume_gc

    resume_gc()  # start-up is over: quanta (task code) run with the garbage collector on
    # A quantum counts as done when its metadata file exists: a rerun finishes the job.
    done = {q.id for q in graph.quanta()
            if _on_disk(repo, q.metadata_ref)}
    if processes == 1:
        executor: Any = SerialExecutor(graph, repo, timeout=timeout, clean_stale=True)
    else:
        executor = ProcessPoolQuantumExecutor(qgraph_file, repo, processes, timeout=timeout, clean_stale=True)

    class _NoRegistry:
        def register_outputs(self, items: Any) -> None:
            pass

    try:
        report = run_graph(_NoRegistry(), graph, executor, summary_path=summary, skip=done)
    finally:
        executor.shutdown()
    click.echo(f"{report.count('done') + report.count('no_work')} quanta done, {report.count('failed')} failed, "
               f"{report.count('blocked')} blocked, {report.count('skipped')} already done")
    if not report.success:
        sys.exit(1)


#: Command name -> click command, for the lazy ``pipetask`` group.
COMMANDS = {"qgraph": qgraph, "run": run, "pre-exec-init-qbb": pre_exec_init_qbb, "run-qbb": run_qbb}
