"""Shared ``pipetask`` option decorators and pipeline-loading helpers (importing only click).

The option names and letters follow ``ctrl_mpexec`` (middleware-reference section 6), so users'
habits carry over. Commands receive them as keyword arguments named as in the ``dest`` column:

=====================================  =====================  ===============================
option                                 dest                   meaning
=====================================  =====================  ===============================
``-p/--pipeline FILE[#sel]``           ``pipeline``           pipeline YAML (+ subset/labels)
``-t/--task Class[:label]``            ``tasks``              add a task (repeatable)
``--delete label``                     ``delete``             remove a task (repeatable)
``-c/--config label:field=value``      ``config_overrides``   config override (repeatable)
``-C/--config-file label:file``        ``config_files``       override file (repeatable)
``--instrument NAME``                  ``instrument``         instrument config overrides
``--select-tasks EXPR``                ``select_tasks``       keep the tasks EXPR selects
``-b/--butler-config REPO``            ``repo``               repository
``-i/--input COLL[,COLL]``             ``inputs``             input collections
``-o/--output NAME``                   ``output``             output CHAINED collection
``--output-run RUN``                   ``output_run``
``--extend-run``, ``--replace-run``,   flags
``--rebase``
``--skip-existing-in COLL``            ``skip_existing_in``
``--skip-existing``,                   flags
``--clobber-outputs``
``-d/--data-query EXPR``               ``data_query``
``-g/--qgraph FILE``                   ``qgraph``             read a quantum graph
``-q/--save-qgraph FILE``              ``save_qgraph``
``-j/--processes N``                   ``processes``
``--register-dataset-types``           flag
``--log-level [comp=]LEVEL``           ``log_level``          repeatable
``--log-file FILE``                    ``log_file``           repeatable
``--long-log``, ``--log-label K=V``    (click context)        read by `setup_logging`
``--log-tty/--no-log-tty``             (click context)
=====================================  =====================  ===============================
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ..definitions import Pipeline

__all__ = [
    "butler_options",
    "compose",
    "exec_options",
    "handle_pipeline_errors",
    "load_pipeline",
    "log_options",
    "parse_config_override",
    "pipeline_options",
    "setup_logging",
]

_F = TypeVar("_F", bound=Callable[..., Any])


def compose(*decorators: Callable[[_F], _F]) -> Callable[[_F], _F]:
    """Combine click option decorators (applied so options show in the listed order)."""

    def wrap(f: _F) -> _F:
        for dec in reversed(decorators):
            f = dec(f)
        return f

    return wrap


pipeline_options = compose(
    click.option(
        "-p",
        "--pipeline",
        "pipeline",
        default=None,
        metavar="FILE[#SUBSET|#LABEL,...]",
        help="Pipeline YAML file; '#name' selects a subset or comma-separated task labels.",
    ),
    click.option(
        "-t",
        "--task",
        "tasks",
        multiple=True,
        metavar="CLASS[:LABEL]",
        help="Add a task by dotted class path (label defaults to its _DefaultName). Repeatable.",
    ),
    click.option("--delete", "delete", multiple=True, metavar="LABEL", help="Remove a task. Repeatable."),
    click.option(
        "-c",
        "--config",
        "config_overrides",
        multiple=True,
        metavar="LABEL:FIELD=VALUE",
        help="Override a config field (dotted path; value parsed as YAML). 'parameters:NAME=VALUE' "
        "sets a pipeline parameter. Repeatable.",
    ),
    click.option(
        "-C",
        "--config-file",
        "config_files",
        multiple=True,
        metavar="LABEL:FILE",
        help="Config override file: YAML mapping, or .py with 'config.x = literal' lines. Repeatable.",
    ),
    click.option(
        "--select-tasks",
        "select_tasks",
        default=None,
        metavar="EXPR",
        help="Keep only the tasks an expression selects: labels, dataset types or subsets combined with "
        "| & ~ ( ), and <X <=X >X >=X for what is upstream/downstream of X (e.g. '<=cpPtcSolve & ~isr').",
    ),
    click.option(
        "--instrument",
        default=None,
        metavar="NAME",
        help="Instrument whose pipeline/instruments/<NAME>/<label>.yaml overrides apply.",
    ),
)

butler_options = compose(
    click.option("-b", "--butler-config", "repo", default=None, metavar="REPO", help="Repository root."),
    click.option(
        "-i",
        "--input",
        "inputs",
        multiple=True,
        metavar="COLL[,COLL]",
        help="Input collections, searched in order. Repeatable or comma-separated.",
    ),
    click.option(
        "-o",
        "--output",
        "output",
        default=None,
        metavar="NAME",
        help="Output CHAINED collection: a new timestamped RUN followed by the inputs.",
    ),
    click.option("--output-run", default=None, metavar="RUN", help="Output RUN collection."),
    click.option(
        "--extend-run", is_flag=True, help="Add to the existing output RUN (implies --skip-existing)."
    ),
    click.option(
        "--replace-run", is_flag=True, help="Replace the first RUN of the output chain with a new one."
    ),
    click.option(
        "--rebase",
        is_flag=True,
        help="Redefine the existing -o chain when -i differs from its inputs (its output runs, then "
        "the new inputs, then its other members) instead of refusing.",
    ),
    click.option(
        "--skip-existing-in",
        multiple=True,
        metavar="COLL",
        help="Skip quanta whose outputs (metadata) exist in these collections.",
    ),
    click.option("--skip-existing", is_flag=True, help="Skip quanta already done in the output RUN."),
    click.option(
        "--clobber-outputs",
        is_flag=True,
        help="Remove partial outputs of failed quanta before rerunning them (with --extend-run).",
    ),
    click.option(
        "-d",
        "--data-query",
        "data_query",
        default="",
        metavar="EXPR",
        help="Data query expression, e.g. \"instrument='kast_blue' AND exposure IN (1..5)\".",
    ),
    click.option(
        "-g", "--qgraph", "qgraph", default=None, metavar="FILE", help="Read the quantum graph from FILE."
    ),
    click.option(
        "-q",
        "--save-qgraph",
        "save_qgraph",
        default=None,
        metavar="FILE",
        help="Write the quantum graph to FILE.",
    ),
    click.option("--register-dataset-types", is_flag=True, help="Register missing dataset types."),
)

exec_options = compose(
    click.option(
        "-j",
        "--processes",
        default=1,
        type=click.IntRange(min=1),
        show_default=True,
        help="Number of worker processes.",
    ),
)

def _keep_in_context(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keep a logging option in the click context (read by `setup_logging`, not passed on)."""
    ctx.meta[f"ccdflow.{param.name}"] = value
    return value


log_options = compose(
    click.option(
        "--log-level",
        "log_level",
        multiple=True,
        metavar="[COMPONENT=]LEVEL",
        help="Log level (CRITICAL, ERROR, WARNING, INFO, VERBOSE, DEBUG, TRACE), globally or for one logger "
        "(ccdflow.exec=DEBUG). Repeatable.",
    ),
    click.option(
        "--log-file",
        "log_file",
        multiple=True,
        metavar="FILE",
        help="Also write log records to FILE: JSON lines if it ends in .json, else text. Repeatable.",
    ),
    click.option(
        "--long-log",
        is_flag=True,
        expose_value=False,
        callback=_keep_in_context,
        help="Log records in the long format (time, logger, labels, source line).",
    ),
    click.option(
        "--log-label",
        multiple=True,
        metavar="KEY=VALUE",
        expose_value=False,
        callback=_keep_in_context,
        help="Label added to every log record (shown by --long-log, written to JSON log files). Repeatable.",
    ),
    click.option(
        "--log-tty/--no-log-tty",
        default=True,
        expose_value=False,
        callback=_keep_in_context,
        help="Log to the terminal (default) or only to the --log-file files.",
    ),
)


def setup_logging(levels: Sequence[str] | str | None, log_file: Sequence[str] | str | None = None) -> None:
    """Configure logging from ``--log-level``, ``--log-file`` and the other `log_options`.

    ``--long-log``, ``--log-label`` and ``--log-tty`` are read from the current click context; the
    work is done by the set-up shared with the ``butler`` command, `butler.cli_logging`.

    Parameters
    ----------
    levels : sequence of `str`, `str` or `None`
        ``LEVEL`` (root) or ``component=LEVEL`` entries.
    log_file : `str` or sequence of `str`, optional
        Files receiving every record (text, or JSON lines when the name ends in ``.json``).

    Raises
    ------
    click.BadParameter
        For an unknown level name, a malformed label or a log file that cannot be opened.
    """
    import logging  # imported here: keeps `pipetask --help` fast

    from butler.cli_logging import installed_handlers, parse_levels
    from butler.cli_logging import setup_logging as _setup

    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    root = logging.getLogger()
    foreign = any(h not in installed_handlers() for h in root.handlers)
    old_level = root.level
    try:
        root_given = any(not comp for comp, _ in parse_levels(levels))
        _setup(levels, log_file, long_log=bool(meta.get("ccdflow.long_log", False)),
               log_labels=meta.get("ccdflow.log_label", ()), log_tty=bool(meta.get("ccdflow.log_tty", True)),
               default_level=logging.INFO)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--log-level / --log-label") from None
    except OSError as exc:
        raise click.BadParameter(f"cannot open the log file: {exc}", param_hint="--log-file") from None
    if foreign and not root_given:
        root.setLevel(old_level)  # a host (pytest, an application) owns the root logger's level


def parse_config_override(item: str) -> tuple[str, str, Any]:
    """Split a ``-c`` value ``label:field=value`` into ``(label, field, parsed value)``.

    Raises
    ------
    click.BadParameter
        If the text is not of that form.
    """
    from ..definitions import parse_config_override as parse
    from ..exceptions import PipelineDefinitionError

    try:
        return parse(item)
    except PipelineDefinitionError as exc:
        raise click.BadParameter(str(exc), param_hint="-c/--config") from None


def load_pipeline(
    pipeline: str | None = None,
    tasks: Sequence[str] = (),
    delete: Sequence[str] = (),
    config_overrides: Sequence[str] = (),
    config_files: Sequence[str] = (),
    instrument: str | None = None,
    select_tasks: str | None = None,
    registered_instruments: Sequence[str] | None = None,
    repo: str | None = None,
) -> Pipeline:
    """Build a `~pipeline.definitions.Pipeline` from the pipeline options.

    Parameters
    ----------
    pipeline : `str`, optional
        ``-p`` value.
    tasks, delete, config_overrides, config_files : sequence of `str`
        ``-t``, ``--delete``, ``-c``, ``-C`` values.
    instrument : `str`, optional
        ``--instrument`` value.
    select_tasks : `str`, optional
        ``--select-tasks`` expression (see `pipeline.pipeline_graph.select_tasks`).
    registered_instruments : sequence of `str`, optional
        Instruments registered in the repository ``repo`` the pipeline will run on; the
        pipeline's instrument must be one of them. Without a repository it must be built in
        (`pipeline.definitions.check_instrument_name`).
    repo : `str`, optional
        That repository (for messages).

    Returns
    -------
    pipeline : `~pipeline.definitions.Pipeline`
        Not yet validated; call ``.to_graph()``.

    Raises
    ------
    click.UsageError
        If neither ``-p`` nor ``-t`` is given.
    PipelineDefinitionError, click.BadParameter
        For bad files, labels or option syntax.
    """
    from ..definitions import parse_config_file_option, pipeline_from_options
    from ..exceptions import PipelineDefinitionError

    if not pipeline and not tasks:
        raise click.UsageError("give a pipeline with -p FILE.yaml (or tasks with -t CLASS[:LABEL])")
    overrides = [parse_config_override(item) for item in config_overrides]
    files = []
    for item in config_files:
        try:
            files.append(parse_config_file_option(item))
        except PipelineDefinitionError as exc:
            raise click.BadParameter(str(exc), param_hint="-C/--config-file") from None
    return pipeline_from_options(pipeline, tasks, delete, overrides, files, instrument, select_tasks,
                                 registered_instruments=registered_instruments, repo=repo)


def handle_pipeline_errors(fn: _F) -> _F:
    """Turn the framework's definition errors into one ``Error: ...`` line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..exceptions import PipelineError

        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            raise click.ClickException(str(exc)) from None
        except FileNotFoundError as exc:
            raise click.ClickException(f"{exc.strerror or exc}: {exc.filename}") from None

    return wrapper  # type: ignore[return-value]
