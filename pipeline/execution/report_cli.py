"""``pipetask report`` and ``pipetask aggregate-reports`` (click commands over `.report`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["aggregate_reports_command", "report_command"]


def _emit(summary: Any, full_output_filename: str | None, brief: bool) -> None:
    """Print a summary (counts only when written to a file, as LSST) and write its JSON."""
    click.echo(summary.format(brief=brief or bool(full_output_filename)), nl=False)
    if full_output_filename:
        path = Path(full_output_filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(summary.model_dump_json(indent=2))
        click.echo(f"Wrote the full report to {path}")


@click.command("report", short_help="Summarize the quanta of executed graphs or runs: done, failed, blocked.")
@click.argument("repo")
@click.argument("qgraphs", nargs=-1)
@click.option(
    "--collections",
    multiple=True,
    metavar="COLL[,COLL]",
    help="Report the RUN collections these reach (chains flattened), without a graph file.",
)
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="COLL",
    help="The -o of 'pipetask run': its CHAINED collection (its runs are reported).",
)
@click.option(
    "--where",
    "-d",
    "where",
    default="",
    metavar="EXPR",
    help="Data query restricting the quanta of runs reported without a graph.",
)
@click.option(
    "--full-output-filename",
    default=None,
    metavar="FILE",
    help="Also write the whole report (every failure, its data ID and messages) as JSON.",
)
@click.option(
    "--logs/--no-logs",
    default=True,
    show_default=True,
    help="Read the logs of failed quanta for their error messages.",
)
@click.option("--brief", is_flag=True, help="Counts only (no per-data-ID error tables).")
@click.option(
    "--force-v2",
    is_flag=True,
    hidden=True,
    help="Accepted for LSST compatibility: every report here is of the multi-graph kind.",
)
@click.option(
    "--use-qbb/--no-use-qbb",
    default=True,
    show_default=True,
    help="Count files of unregistered outputs (quantum-backed runs not yet transferred).",
)
def report_command(
    repo: str,
    qgraphs: Sequence[str],
    collections: Sequence[str],
    output: str | None,
    where: str,
    full_output_filename: str | None,
    logs: bool,
    brief: bool,
    force_v2: bool,
    use_qbb: bool,
) -> None:
    """Per task: quanta expected, succeeded, failed, blocked and not attempted; each failure.

    REPO is the repository the graphs ran against. QGRAPHS are graph files (-q of 'pipetask
    qgraph' / 'pipetask run', several for several attempts, oldest first). Without a graph,
    --collections / -o report runs from what the repository holds.

    Example: pipetask report REPO --collections u/me/isr --full-output-filename report.json
    """
    from butler import Butler

    from ..graph.quantum_graph import QuantumGraph
    from .report import report_from_collections, report_from_graphs

    colls = [c for value in collections for c in value.split(",") if c.strip()]
    if output:
        colls.append(output)
    if not qgraphs and not colls:
        raise click.UsageError("give graph files (QGRAPHS) or --collections / -o")
    try:
        butler = Butler(repo, writeable=False)
    except Exception as exc:  # noqa: BLE001 - not a repository: one clear error
        raise click.ClickException(f"{repo}: {exc}") from None
    try:
        if qgraphs:
            graphs = []
            for path in qgraphs:
                if not Path(path).is_file():
                    raise click.BadParameter(f"{path} does not exist", param_hint="QGRAPHS")
                graphs.append(QuantumGraph.load(path))
            summary = report_from_graphs(butler, graphs, logs=logs, use_disk=use_qbb)
        else:
            summary = report_from_collections(butler, colls, where=where, logs=logs)
    except (LookupError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    _emit(summary, full_output_filename, brief)


@click.command("aggregate-reports", short_help="Merge the JSON reports of 'pipetask report'.")
@click.argument("filenames", nargs=-1, required=True)
@click.option("--full-output-filename", default=None, metavar="FILE", help="Write the merged report as JSON.")
@click.option("--brief", is_flag=True, help="Counts only.")
def aggregate_reports_command(
    filenames: Sequence[str], full_output_filename: str | None, brief: bool
) -> None:
    """Merge reports of disjoint groups of data IDs (same pipeline) into one.

    FILENAMES are files written by 'pipetask report --full-output-filename'.
    """
    from .report import aggregate_files

    missing = [f for f in filenames if not Path(f).is_file()]
    if missing:
        raise click.BadParameter(f"{', '.join(missing)} not found", param_hint="FILENAMES")
    try:
        summary = aggregate_files(filenames)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(summary, full_output_filename, brief)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(report_command())
