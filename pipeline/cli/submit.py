"""``pipetask submit SUBMIT_FILE``: build a graph from a submit YAML and run it on Parsl.

The work is `pipeline.execution.submit.submit`; this module is its command line.
"""

from __future__ import annotations

import sys
from typing import Any

from ..execution.submit import submit
from .options import setup_logging

__all__ = ["submit_command"]


def _make_command() -> Any:
    import click

    @click.command("submit", short_help="Build a graph from a submit YAML and run it on Parsl.")
    @click.argument("submit_file")
    @click.option("--dry-run", is_flag=True,
                  help="Build and save the graph and check the configuration only.")
    @click.option("--progress/--no-progress", default=True, help="Show progress (a bar on a terminal).")
    @click.option("--log-level", "log_level", multiple=True, metavar="[COMPONENT=]LEVEL",
                  help="Log level (DEBUG, INFO, WARNING, ERROR), globally or for one logger.")
    @click.option("--log-file", default=None, metavar="FILE", help="Also write log records to FILE.")
    def submit_command(submit_file: str, dry_run: bool, progress: bool, log_level: tuple[str, ...],
                       log_file: str | None) -> None:
        """Run the batch submission described by SUBMIT_FILE.

        The file gives pipeline, repo, inputs, data query, output, compute site, cores/memory per
        quantum and Parsl provider settings.

        Example: pipetask submit bias_submit.yaml
        """
        setup_logging(log_level, log_file)
        try:
            res = submit(submit_file, dry_run=dry_run, progress="auto" if progress else "none")
        except KeyboardInterrupt:
            click.echo("Interrupted: finished quanta were registered; set extend_run: true and "
                       "skip_existing: "
                       "true (with output_run) in the submit file to finish the job", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - one clear line for every expected error
            if not _is_user_error(exc):
                raise
            msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            raise click.ClickException(msg) from None
        if res.report is None:
            click.echo(f"Dry run: saved the graph for run {res.output_run} to {res.graph_path}")
            return
        rep = res.report
        n_ok = rep.count("done") + rep.count("no_work")
        click.echo(f"Executed {n_ok} quanta successfully, {rep.count('failed')} failed and "
                   f"{rep.count('blocked')} "
                   f"blocked in {rep.wall_time:.2f} s (output run {res.output_run}; graph {res.graph_path}).")
        for q in rep.quanta.values():
            if q.status == "failed":
                click.echo(f"  FAILED {q.task_label} {q.data_id}: {q.error}", err=True)
        if not rep.success:
            sys.exit(1)

    return submit_command


def _is_user_error(exc: BaseException) -> bool:
    classes: list[type[BaseException]] = [FileNotFoundError, ValueError, KeyError, PermissionError]
    try:
        from butler import ButlerError

        classes.append(ButlerError)
    except ImportError:  # pragma: no cover
        pass
    from ..exceptions import PipelineError
    from ..execution.runner import ExecutionError
    from ..graph.builder import GraphBuilderError

    classes += [PipelineError, GraphBuilderError, ExecutionError]
    return isinstance(exc, tuple(classes))


submit_command = _make_command()
