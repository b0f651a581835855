"""``pipetask qgraph``, ``pipetask run``, ``pipetask pre-exec-init-qbb`` and ``pipetask run-qbb``.

Attached lazily to the ``pipetask`` click group (`pipeline.cli`), so ``pipetask --help`` does not
import the butler or numpy. Option names follow ``ctrl_mpexec`` (middleware-reference section 6).
Every expected error (bad collection, missing dataset type, missing calibration, empty graph,
unreadable graph file ...) is printed as one ``Error: ...`` line with a non-zero exit status;
``run`` exits 1 when any quantum failed, after running everything it could.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

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
    from .exceptions import PipelineError
    from .execution.runner import ExecutionError
    from .graph.builder import GraphBuilderError

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
        except _expected_errors() as exc:
            msg = str(exc)
            if isinstance(exc, KeyError) and exc.args:
                msg = str(exc.args[0])
            raise click.ClickException(msg) from None

    return wrapper


# --------------------------------------------------------------------------- options
def _pipeline_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("-p", "--pipeline", "pipeline", default=None,
                     help="Pipeline YAML file, optionally with #subset or #label1,label2."),
        click.option("-t", "--task", "tasks", multiple=True,
                     help="Add a task: dotted.Class[:label] (repeatable)."),
        click.option("--delete", "delete", multiple=True, help="Remove a task label from the pipeline."),
        click.option("-c", "--config", "config_overrides", multiple=True,
                     help="Config override label:field=value (repeatable)."),
        click.option("-C", "--config-file", "config_files", multiple=True,
                     help="Config override file label:path (YAML or config.x = value lines)."),
        click.option("--instrument", default=None, help="Instrument whose config overrides apply."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _graph_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("-b", "--butler-config", "repo", default=None, help="Repository root (or its butler.yaml)."),
        click.option("-i", "--input", "inputs", multiple=True, help="Input collections (comma separated)."),
        click.option("-o", "--output", "output", default=None,
                     help="CHAINED output collection; a new RUN <output>/<timestamp> is prepended."),
        click.option("--output-run", default=None, help="The RUN collection for the outputs."),
        click.option("--extend-run", is_flag=True, help="Add to the existing output run (implies skip-existing in it)."),
        click.option("--replace-run", is_flag=True, help="Replace the output chain's first RUN with a new one."),
        click.option("--prune-replaced", type=click.Choice(["unstore", "purge"]), default=None,
                     help="Delete the replaced run's datasets (purge) after --replace-run."),
        click.option("--skip-existing-in", multiple=True,
                     help="Skip quanta whose <label>_metadata exists in these collections."),
        click.option("--skip-existing", is_flag=True, help="Skip quanta already done in the output collections."),
        click.option("--clobber-outputs", is_flag=True,
                     help="Remove outputs of unfinished quanta in the output run before rerunning them."),
        click.option("-d", "--data-query", "where", default="", help="Data query expression, e.g. \"instrument='x' AND exposure IN (1..5)\"."),
        click.option("--dataset-query-constraint", default="all",
                     help="Overall inputs that constrain the data query: all, off, or type1,type2."),
        click.option("-g", "--qgraph", "qgraph_file", default=None, help="Read the quantum graph from this file."),
        click.option("--qgraph-node-id", multiple=True, help="Only these quantum ids of -g (comma separated)."),
        click.option("-q", "--save-qgraph", default=None, help="Write the quantum graph to this file (.qg)."),
        click.option("--qgraph-datastore-records", is_flag=True,
                     help="Accepted for compatibility: graphs always carry their inputs' datastore records."),
        click.option("--show", "show", multiple=True,
                     help="Print: summary, graph, workflow, uri (repeatable)."),
        click.option("--qgraph-dot", default=None, help="Write a Graphviz file (.dot; .png/.svg with dot)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _exec_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("-j", "--processes", default=1, type=click.IntRange(min=1), show_default=True,
                     help="Worker processes (started once, each runs many quanta)."),
        click.option("--executor", type=click.Choice(["auto", "serial", "pool", "parsl"]), default="auto",
                     show_default=True, help="Where quanta run: auto (serial for -j 1, else a process pool), "
                     "serial, pool (-j N) or parsl (see --parsl-config)."),
        click.option("--parsl-config", default=None, metavar="FILE",
                     help="Parsl configuration: a .py file defining `config`, or a .yaml site file "
                     "(docs/parsl.md); implies --executor parsl."),
        click.option("--start-method", type=click.Choice(["forkserver", "spawn"]), default="forkserver",
                     show_default=True, help="How worker processes start."),
        click.option("--timeout", type=float, default=None, help="Per-quantum wall-clock limit in seconds."),
        click.option("--fail-fast", is_flag=True, help="Stop at the first failed quantum."),
        click.option("--summary", "summary", default=None, help="Write a JSON summary of the run here."),
        click.option("--register-dataset-types", is_flag=True, help="Register the pipeline's dataset types."),
        click.option("--no-versions", is_flag=True, help="Do not save or check the 'packages' dataset."),
        click.option("--init-only", is_flag=True, help="Only prepare the output run (configs, packages)."),
        click.option("--progress/--no-progress", default=True, help="Show progress (bar on a terminal)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _log_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--log-level", default=None, help="Log level (DEBUG, INFO, WARNING) or component=LEVEL."),
        click.option("--log-file", default=None, help="Also write log records to this file."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _setup_logging(level: str | None, log_file: str | None) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(asctime)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
    for spec in [s for s in (level or "").split(",") if s]:
        comp, _, lev = spec.rpartition("=")
        lvl = getattr(logging, lev.upper(), None)
        if not isinstance(lvl, int):
            raise click.BadParameter(f"unknown log level {lev!r}; use DEBUG, INFO, WARNING, ERROR",
                                     param_hint="--log-level")
        logging.getLogger(comp or None).setLevel(lvl)
    if log_file:
        h = logging.FileHandler(log_file)
        h.setFormatter(logging.Formatter("%(levelname)s %(asctime)s %(name)s: %(message)s"))
        root.addHandler(h)


# --------------------------------------------------------------------------- building blocks
def _load_pipeline(pipeline: str | None, tasks: Sequence[str], delete: Sequence[str],
                   config_overrides: Sequence[str], config_files: Sequence[str], instrument: str | None) -> Any:
    """Build the pipeline from -p/-t/-c/-C and return its validated pipeline graph."""
    from .exceptions import PipelineDefinitionError
    from .pipeline_yaml import Pipeline

    if pipeline:
        pipe = Pipeline.from_file(pipeline)
    elif tasks:
        pipe = Pipeline("command-line pipeline")
    else:
        raise click.UsageError("give a pipeline with -p FILE.yaml (or tasks with -t)")
    if instrument:
        pipe.instrument = instrument
    for t in tasks:
        cls, _, label = t.partition(":")
        pipe.add_task(cls, label or None)
    for label in delete:
        pipe.remove_task(label)
    for item in config_overrides:
        label, sep, rest = item.partition(":")
        field, eq, value = rest.partition("=")
        if not sep or not eq or not field:
            raise click.BadParameter(f"{item!r} is not label:field=value", param_hint="-c/--config")
        pipe.add_config_override(label, field.strip(), _parse_value(value))
    for item in config_files:
        label, sep, path = item.partition(":")
        if not sep or not path:
            raise click.BadParameter(f"{item!r} is not label:path", param_hint="-C/--config-file")
        pipe.add_config_file(label, path)
    if not pipe.tasks:
        raise PipelineDefinitionError("the pipeline has no tasks after the selection")
    return pipe.to_graph()


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _make_butler(repo: str | None, *, writeable: bool) -> Any:
    if not repo:
        raise click.UsageError("give the repository with -b/--butler-config REPO")
    from butler import Butler

    return Butler(repo, writeable=writeable)


def _build_or_load(opts: dict[str, Any], butler: Any) -> Any:
    from .graph.builder import build_quantum_graph
    from .graph.collections import resolve_output_collections
    from .graph.quantum_graph import QuantumGraph

    if opts["qgraph_file"]:
        from uuid import UUID

        nodes = None
        if opts["qgraph_node_id"]:
            try:
                nodes = [UUID(x) for x in _split_commas(opts["qgraph_node_id"])]
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--qgraph-node-id") from None
        graph = QuantumGraph.load(opts["qgraph_file"], nodes=nodes)
        return graph
    if butler is None:
        raise click.UsageError("building a graph needs the repository: -b REPO")
    tasks = _load_pipeline(opts["pipeline"], opts["tasks"], opts["delete"], opts["config_overrides"],
                           opts["config_files"], opts["instrument"])
    colls = resolve_output_collections(
        butler.registry, inputs=_split_commas(opts["inputs"]), output=opts["output"],
        output_run=opts["output_run"], extend_run=opts["extend_run"], replace_run=opts["replace_run"],
        skip_existing_in=_split_commas(opts["skip_existing_in"]), skip_existing=opts["skip_existing"])
    md = {"command": " ".join(["pipetask", *sys.argv[1:]]), "pipeline": opts["pipeline"],
          "prune_replaced": opts.get("prune_replaced")}
    graph = build_quantum_graph(butler, tasks, collections=colls, where=opts["where"],
                                clobber_outputs=opts["clobber_outputs"], metadata=md,
                                dataset_query_constraint=opts["dataset_query_constraint"])
    return graph


def _show(graph: Any, opts: dict[str, Any], butler: Any) -> None:
    from .graph.display import SHOW_CHOICES, show_graph, write_dot

    for what in opts["show"]:
        if what not in SHOW_CHOICES:
            raise click.BadParameter(f"{what!r} is not one of {', '.join(SHOW_CHOICES)}", param_hint="--show")
        uri_for = None
        if what == "uri":
            root = Path(butler.root) if butler is not None else None

            def uri_for(ref: Any, _root: Any = root) -> str:
                from .execution._butler_adapter import predicted_file_info

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
@_pipeline_options
@_graph_options
@_log_options
@_handle_errors
def qgraph(**opts: Any) -> None:
    """Build the quantum graph of a pipeline over a repository.

    Example: pipetask qgraph -b REPO -p pipelines/cpBias.yaml -i kast_blue/raw/all -o u/me/bias
    -d "instrument='kast_blue' AND exposure.observation_type='bias'" -q bias.qg --show summary
    """
    _setup_logging(opts.pop("log_level"), opts.pop("log_file"))
    butler = _make_butler(opts["repo"], writeable=False) if opts["repo"] else None
    graph = _build_or_load(opts, butler)
    _finish_graph(graph, opts, butler)
    if not opts["show"] and not opts["save_qgraph"] and not opts["qgraph_dot"]:
        from .graph.display import show_graph

        show_graph(graph, "summary", sys.stdout)


@click.command("run", short_help="Build (or read) a quantum graph and execute it.")
@_pipeline_options
@_graph_options
@_exec_options
@_log_options
@_handle_errors
def run(**opts: Any) -> None:
    """Execute a pipeline: build the graph (or read it with -g) and run every quantum.

    Outputs are registered in batches as quanta finish; a failed quantum blocks only its
    descendants and the command exits 1 after running everything else. Interrupted runs are
    finished with --extend-run --skip-existing (or -g with the same graph).
    """
    _setup_logging(opts.pop("log_level"), opts.pop("log_file"))
    butler = _make_butler(opts["repo"], writeable=True)
    graph = _build_or_load(opts, butler)
    _finish_graph(graph, opts, butler)
    if opts.get("parsl_config"):
        from .execution.parsl_executor import load_parsl_config

        load_parsl_config(opts["parsl_config"])  # a bad Parsl config fails before anything is written
    from .execution.run_lock import run_lock

    with run_lock(butler, graph.output_run):  # one driver per output RUN; a second one gets a clear error
        code = _execute(butler, graph, opts)
    if code:
        sys.exit(code)


def _execute(butler: Any, graph: Any, opts: dict[str, Any]) -> int:
    from .execution.executors import ProcessPoolQuantumExecutor, SerialExecutor
    from .execution.runner import pre_exec_init, run_graph

    pre_exec_init(butler, graph, register_dataset_types=opts["register_dataset_types"],
                  save_versions=not opts["no_versions"])
    if opts["init_only"]:
        _log.info("Initialized run %s (--init-only)", graph.output_run)
        return 0
    level = logging.getLogger().getEffectiveLevel()
    if opts.get("parsl_config") or opts.get("executor", "auto") != "auto":
        from .execution.submit import make_executor

        executor: Any = make_executor(
            "parsl" if opts.get("parsl_config") else opts["executor"], graph, butler.root,
            processes=opts["processes"], parsl_config=opts.get("parsl_config"), timeout=opts["timeout"],
            graph_path=None if opts["qgraph_node_id"] else (opts.get("qgraph") or opts.get("qgraph_file")
                                                            or opts.get("save_qgraph")),
            start_method=opts["start_method"], log_level=min(level, logging.INFO))
    elif opts["processes"] == 1:
        executor = SerialExecutor(graph, butler.root, timeout=opts["timeout"], log_level=min(level, logging.INFO))
    else:
        graph_path = opts["qgraph_file"] or opts["save_qgraph"]
        if not graph_path or opts["qgraph_node_id"]:
            gdir = Path(butler.root) / ".ccdflow" / "graphs"
            gdir.mkdir(parents=True, exist_ok=True)
            graph_path = str(gdir / f"{graph.output_run.replace('/', '_')}_{os.getpid()}.qg")
            graph.save(graph_path)
        executor = ProcessPoolQuantumExecutor(graph_path, butler.root, opts["processes"],
                                              timeout=opts["timeout"], start_method=opts["start_method"],
                                              log_level=min(level, logging.INFO))
    try:
        report = run_graph(butler, graph, executor, fail_fast=opts["fail_fast"],
                           progress="auto" if opts["progress"] else "none",
                           summary_path=opts["summary"], command=["pipetask", *sys.argv[1:]])
    finally:
        executor.shutdown()
    _after_run(butler, graph, opts)
    n_ok = report.count("done") + report.count("no_work")
    n_fail, n_blocked = report.count("failed"), report.count("blocked")
    click.echo(f"Executed {n_ok} quanta successfully, {n_fail} failed and {n_blocked} blocked "
               f"in {report.wall_time:.2f} s (output run {graph.output_run}).")
    for q in report.quanta.values():
        if q.status == "failed":
            click.echo(f"  FAILED {q.task_label} {q.data_id}: {q.error}", err=True)
    return 0 if report.success else 1


def _after_run(butler: Any, graph: Any, opts: dict[str, Any]) -> None:
    replaced = graph.metadata.get("replaced_run")
    prune = opts.get("prune_replaced") or graph.metadata.get("prune_replaced")
    if replaced and prune:
        _log.info("Removing replaced run %s (--prune-replaced %s)", replaced, prune)
        butler.remove_runs([replaced])


@click.command("pre-exec-init-qbb", short_help="Write a graph's run-level outputs without registering.")
@click.argument("repo")
@click.argument("qgraph_file")
@_log_options
@_handle_errors
def pre_exec_init_qbb(repo: str, qgraph_file: str, log_level: str | None, log_file: str | None) -> None:
    """Write the init outputs (<label>_config, packages) of a graph with a quantum-backed butler."""
    _setup_logging(log_level, log_file)
    from .execution._butler_adapter import make_qbb
    from .execution.runner import packages_versions
    from .graph.quantum_graph import QuantumGraph

    graph = QuantumGraph.load(qgraph_file)
    refs = [r for refs in graph.init_outputs.values() for r in refs]
    qbb = make_qbb(repo, {}, refs)
    for label, rs in graph.init_outputs.items():
        for ref in rs:
            value = packages_versions() if ref.dataset_type.name == "packages" else graph.tasks[label].config
            qbb.put(value, ref)
    click.echo(f"Wrote {len(refs)} init outputs of run {graph.output_run}")


@click.command("run-qbb", short_help="Execute a saved graph with no registry access.")
@click.argument("repo")
@click.argument("qgraph_file")
@click.option("--qgraph-node-id", multiple=True, help="Only these quantum ids (comma separated).")
@click.option("-j", "--processes", default=1, type=click.IntRange(min=1))
@click.option("--timeout", type=float, default=None)
@click.option("--summary", default=None)
@_log_options
@_handle_errors
def run_qbb(repo: str, qgraph_file: str, qgraph_node_id: Sequence[str], processes: int,
            timeout: float | None, summary: str | None, log_level: str | None, log_file: str | None) -> None:
    """Run quanta of a saved graph through quantum-backed butlers; nothing is registered."""
    _setup_logging(log_level, log_file)
    from uuid import UUID

    from .execution.executors import ProcessPoolQuantumExecutor, SerialExecutor
    from .execution.runner import run_graph
    from .graph.quantum_graph import QuantumGraph

    nodes = [UUID(x) for x in _split_commas(qgraph_node_id)] if qgraph_node_id else None
    graph = QuantumGraph.load(qgraph_file, nodes=nodes)
    if processes == 1:
        executor: Any = SerialExecutor(graph, repo, timeout=timeout)
    else:
        executor = ProcessPoolQuantumExecutor(qgraph_file, repo, processes, timeout=timeout)

    class _NoRegistry:
        def register_outputs(self, items: Any) -> None:
            pass

    try:
        report = run_graph(_NoRegistry(), graph, executor, summary_path=summary)
    finally:
        executor.shutdown()
    click.echo(f"{report.count('done') + report.count('no_work')} quanta done, {report.count('failed')} failed, "
               f"{report.count('blocked')} blocked")
    if not report.success:
        sys.exit(1)


#: Command name -> click command, for the lazy ``pipetask`` group.
COMMANDS = {"qgraph": qgraph, "run": run, "pre-exec-init-qbb": pre_exec_init_qbb, "run-qbb": run_qbb}
