r"""The ``pipetask`` command line: ``build`` here, ``qgraph``/``run``/... loaded on demand.

``pipetask --help`` imports only click (the execution commands live in `pipeline.cli.graph_commands` and
are imported when invoked), so it starts in well under 0.3 s.

Examples
--------
::

    pipetask build -p pipelines/cpBias.yaml --show pipeline-graph
    pipetask build -p pipelines/cpFlat.yaml#cpFlatMeasure -c cpFlatMeasure:doVignette=false \\
        --show config=cpFlatMeasure::doVignette -s expanded.yaml --pipeline-dot flat.dot
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from pathlib import Path

from .options import handle_pipeline_errors, load_pipeline, log_options, pipeline_options, setup_logging

__all__ = ["PIPELINE_SHOW_ITEMS", "SHOW_CHOICES", "main", "pipetask", "render_pipeline_show"]

# name -> (module, attribute, short help); imported only when the command runs.
_LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "qgraph": ("pipeline.cli.graph_commands", "qgraph", "Build a quantum graph (and save, show or draw it)."),
    "run": ("pipeline.cli.graph_commands", "run", "Build (or read) a quantum graph and execute it."),
    "pre-exec-init-qbb": (
        "pipeline.cli.graph_commands",
        "pre_exec_init_qbb",
        "Write a graph's run-level outputs without registering.",
    ),
    "run-qbb": ("pipeline.cli.graph_commands", "run_qbb", "Execute a saved graph with no registry access."),
    "report": (
        "pipeline.execution.report_cli",
        "report_command",
        "Summarize executed quanta per task: succeeded, failed (with messages), blocked.",
    ),
    "aggregate-reports": (
        "pipeline.execution.report_cli",
        "aggregate_reports_command",
        "Merge the JSON reports of 'pipetask report'.",
    ),
    "submit": (
        "pipeline.cli.submit",
        "submit_command",
        "Build a graph from a submit YAML and run it on Parsl.",
    ),
}

SHOW_CHOICES = (
    "pipeline",
    "config",
    "config=[LABEL::]PATTERN",
    "history=LABEL::FIELD",
    "dump-config",
    "tasks",
    "subsets",
    "inputs",
    "pipeline-graph",
    "task-graph",
)

#: The pipeline-level ``--show`` item names (``SHOW_CHOICES`` without their ``=...`` arguments).
PIPELINE_SHOW_ITEMS = frozenset(choice.split("=", 1)[0] for choice in SHOW_CHOICES)


#: Commands that keep the start-up pause of the cyclic garbage collector (`main`): building a
#: graph is start-up; ``run`` and ``run-qbb`` resume the collector before executing quanta.
GC_PAUSED_COMMANDS = frozenset({"qgraph", "run", "run-qbb", "pre-exec-init-qbb"})

#: Commands that execute quanta: numpy is imported with its BLAS pool at the quanta's thread
#: limit (`pipeline.execution.threads.import_numpy_with_thread_limit`), so no idle pool spins.
EXECUTING_COMMANDS = frozenset({"run", "run-qbb"})


class LazyGroup(click.Group):
    """A click group whose extra commands are imported only when invoked (or their help shown).

    Arguments that are not valid UTF-8 are refused first (`butler.cli_args`, imported only then).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Refuse arguments that are not valid UTF-8, then parse as a group does."""
        if any("\ud800" <= ch <= "\udfff" for arg in args for ch in arg):
            from butler.cli_args import check_utf8_arguments

            check_utf8_arguments(args)
        return super().parse_args(ctx, args)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Find the command; those not in `GC_PAUSED_COMMANDS` start with the garbage collector on."""
        name, command, rest = super().resolve_command(ctx, args)
        if name in EXECUTING_COMMANDS and not {"-h", "--help"} & set(rest):
            from ..execution.threads import import_numpy_with_thread_limit

            import_numpy_with_thread_limit()
        if name not in GC_PAUSED_COMMANDS:
            from butler.cli_startup import resume_gc

            resume_gc()
        return name, command, rest

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Return the names of the loaded and the not yet imported commands, sorted."""
        return sorted(set(self.commands) | set(_LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return the command ``cmd_name``, importing its module on first use (`None` if unknown).

        Raises
        ------
        click.ClickException
            If the command's module does not define it (a broken installation).
        """
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        spec = _LAZY_COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module = importlib.import_module(spec[0])
        command = getattr(module, spec[1], None)
        if command is None:
            raise click.ClickException(f"pipetask {cmd_name} is not available in this installation")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands with their short help, without importing the lazy ones."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(limit=formatter.width - 20)))
            else:
                rows.append((name, _LAZY_COMMANDS[name][2]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def pipetask() -> None:
    """Build and run pipelines of tasks over a data repository (LSST pipetask style)."""


@pipetask.command("build", short_help="Expand, validate, show and save a pipeline (no repository needed).")
@pipeline_options
@click.option(
    "-s",
    "--save-pipeline",
    "save_pipeline",
    default=None,
    metavar="FILE",
    help="Write the expanded pipeline (imports resolved, overrides included) as YAML.",
)
@click.option(
    "--show",
    "show",
    multiple=True,
    metavar="ITEM",
    help="What to print: pipeline, config, config=[LABEL::]PATTERN, history=LABEL::FIELD, dump-config, "
    "tasks, subsets, inputs, pipeline-graph, task-graph. Repeatable.",
)
@click.option(
    "--pipeline-dot",
    "pipeline_dot",
    default=None,
    metavar="FILE",
    help="Write the pipeline graph as Graphviz dot (prerequisite edges dashed); .png/.svg/.pdf are rendered "
    "with the 'dot' program when it is installed.",
)
@log_options
@handle_pipeline_errors
def build(
    pipeline: str | None,
    tasks: Sequence[str],
    delete: Sequence[str],
    config_overrides: Sequence[str],
    config_files: Sequence[str],
    instrument: str | None,
    select_tasks: str | None,
    save_pipeline: str | None,
    show: Sequence[str],
    pipeline_dot: str | None,
    log_level: Sequence[str],
    log_file: str | None,
) -> None:
    """Expand, validate, show and save a pipeline.

    Imports, subsets, parameters and overrides are expanded; configs, contracts and the pipeline graph
    are validated; then the pipeline is printed, saved or drawn. Nothing is written unless everything
    validates.

    \b
    Examples:
      pipetask build -p isr.yaml --show pipeline-graph
      pipetask build -p isr.yaml -c isr:overscan.fitType=POLY --show config=isr::overscan.*
      pipetask build -p isr.yaml --instrument megacam --show history=isr::doFlat
      pipetask build -p isr.yaml --show dump-config > isr_config.py   # edit, then -C isr:isr_config.py
      pipetask build -p cpFlat.yaml#step1 -s expanded.yaml --pipeline-dot flat.dot
    """  # noqa: D301 - "\b" is click's no-rewrap marker
    setup_logging(log_level, log_file)
    for item in show:
        _check_show(item)
    pipe = load_pipeline(pipeline, tasks, delete, config_overrides, config_files, instrument, select_tasks)
    graph = pipe.to_graph()
    for item in show:
        click.echo(_render_show(item, pipe, graph), nl=False)
    if save_pipeline:
        pipe.write(save_pipeline)
    if pipeline_dot:
        write_dot_file(pipeline_dot, graph.to_dot())


def write_dot_file(path: str, dot: str) -> None:
    """Write Graphviz text to ``path``; ``.png``/``.svg``/``.pdf`` are rendered with ``dot`` if present.

    Parameters
    ----------
    path : `str`
        Output file; any other extension gets the dot text itself.
    dot : `str`
        Graphviz source.

    Raises
    ------
    click.ClickException
        If an image format is asked for but the Graphviz ``dot`` program is not installed, or it fails.
    """
    import shutil
    import subprocess
    from pathlib import Path

    target = Path(path)
    fmt = target.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        _atomic_write(target, dot)
        return
    exe = shutil.which("dot")
    if exe is None:
        raise click.ClickException(
            f"cannot write {path}: the Graphviz 'dot' program is not installed; "
            f"write {target.with_suffix('.dot').name} instead and render it elsewhere"
        )
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    proc = subprocess.run([exe, f"-T{fmt}", "-o", str(tmp)], input=dot, text=True, capture_output=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise click.ClickException(f"dot failed to render {path}: {proc.stderr.strip()}")
    os.replace(tmp, target)


def _check_show(item: str) -> None:
    name = item.split("=", 1)[0]
    if name not in PIPELINE_SHOW_ITEMS:
        import difflib

        close = difflib.get_close_matches(name, [c.split("=")[0] for c in SHOW_CHOICES], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise click.BadParameter(
            f"unknown --show item {item!r}.{hint} Choose from: {', '.join(SHOW_CHOICES)}", param_hint="--show"
        )


def render_pipeline_show(item: str, pipe: Any, graph: Any) -> str | None:
    """Render one pipeline-level ``--show`` item (for reuse by ``qgraph``/``run``).

    Parameters
    ----------
    item : `str`
        E.g. ``"pipeline-graph"``, ``"config=isr::doBias"``, ``"history=isr::doFlat"``.
    pipe : `~pipeline.definitions.Pipeline`
        The expanded pipeline.
    graph : `~pipeline.pipeline_graph.PipelineGraph`
        Its validated graph.

    Returns
    -------
    text : `str` or `None`
        The text to print, or `None` when ``item`` is not a pipeline-level item (e.g. ``graph``).

    Raises
    ------
    click.BadParameter
        For an unknown label or a pattern matching no field.
    """
    if item.split("=", 1)[0] not in PIPELINE_SHOW_ITEMS:
        return None
    return _render_show(item, pipe, graph)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _render_show(item: str, pipe: Any, graph: Any) -> str:
    from ..config import flatten_config

    name, _, arg = item.partition("=")
    if name == "pipeline":
        return pipe.to_yaml()
    if name == "history":
        label, sep, field = arg.partition("::")
        if not sep or not label or not field:
            raise click.BadParameter(f"{item!r}: use history=LABEL::FIELD", param_hint="--show")
        if label not in graph.tasks:
            raise click.BadParameter(
                f"no task labelled {label!r} (labels: {', '.join(graph.tasks)})", param_hint="--show history"
            )
        lines = [f"### History of config field '{field}' of task '{label}'"]
        return "\n".join(lines + pipe.config_history(label, field)) + "\n"
    if name == "pipeline-graph":
        return graph.to_text()
    if name == "task-graph":
        return graph.to_task_text()
    if name == "subsets":
        lines = [
            f"{n}: {', '.join(s.labels)}" + (f"  # {s.description}" if s.description else "")
            for n, s in pipe.subsets.items()
        ]
        return "\n".join(lines or ["(no subsets)"]) + "\n"
    if name == "inputs":
        lines = ["### Overall inputs"]
        lines += [f"{n} {_dims(d.dimensions)} {d.storage_class}" for n, d in graph.overall_inputs().items()]
        lines.append("### Prerequisite inputs")
        lines += [
            f"{n} {_dims(d.dimensions)} {d.storage_class}" + (" calibration" if d.is_calibration else "")
            for n, d in graph.prerequisite_inputs().items()
        ]
        return "\n".join(lines) + "\n"
    if name == "tasks":
        lines = []
        for label, node in graph.tasks.items():
            lines.append(f"### Subtasks for task '{label}'")
            for full, cls in _subtask_tree(label, node.task_class, node.config):
                lines.append(f"{full}: {cls.__module__}.{cls.__qualname__}")
        return "\n".join(lines) + "\n"
    if name == "dump-config" or (name == "config" and not arg):
        from ..config import format_config

        lines = []
        for label, node in graph.tasks.items():
            lines.append(f"### Configuration for task '{label}'")
            lines += format_config(node.config, docs=name == "dump-config")
        return "\n".join(lines) + "\n"
    # config=[LABEL::]PATTERN
    label_part, sep, pattern = arg.partition("::")
    if not sep:
        label_part, pattern = "", arg
    labels = [label_part] if label_part else list(graph.tasks)
    for label in labels:
        if label not in graph.tasks:
            import difflib

            close = difflib.get_close_matches(label, list(graph.tasks), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise click.BadParameter(
                f"no task labelled {label!r}{hint} (labels: {', '.join(graph.tasks)})",
                param_hint="--show config",
            )
    lines = []
    matched = False
    for label in labels:
        items = [(p, v) for p, v in flatten_config(graph.tasks[label].config) if _field_matches(p, pattern)]
        if not items:
            continue
        matched = True
        lines.append(f"### Configuration for task '{label}'")
        lines += [f"config.{p}={v!r}" for p, v in items]
    if not matched:
        where = f"task {label_part!r}" if label_part else "any task"
        raise click.BadParameter(
            f"no config field of {where} matches {pattern!r}", param_hint="--show config"
        )
    return "\n".join(lines) + "\n"


def _field_matches(path: str, pattern: str) -> bool:
    import fnmatch

    pattern = pattern.removeprefix("config.")
    low, pat = path.lower(), pattern.lower()
    return fnmatch.fnmatchcase(low, pat) or low.startswith(pat + ".")


def _subtask_tree(prefix: str, task_class: type, config: Any) -> list[tuple[str, type]]:
    from ..config import Config, configurable_target

    out = [(prefix, task_class)]
    for field in type(config).model_fields:
        value = getattr(config, field)
        if isinstance(value, Config) and field != "connections":
            try:
                target = configurable_target(config, field)
            except Exception:  # noqa: BLE001 - plain nested config, not a subtask
                continue
            out += _subtask_tree(f"{prefix}.{field}", target, value)
    return out


def _dims(dims: Sequence[str]) -> str:
    return "(" + ", ".join(dims) + ")"


def main(argv: Sequence[str] | None = None) -> Any:
    """Console entry point ``pipetask``.

    The cyclic garbage collector is paused during start-up (`butler.cli_startup`): for the
    whole of ``qgraph`` and ``pre-exec-init-qbb``, until quanta are executed for ``run`` and
    ``run-qbb``, until the command starts for the others (``LazyGroup.resolve_command``).
    """
    from butler.cli_startup import pause_gc, resume_gc

    pause_gc()
    try:
        return pipetask.main(args=list(argv) if argv is not None else None, prog_name="pipetask")
    finally:
        resume_gc()


if __name__ == "__main__":  # pragma: no cover
    main()
