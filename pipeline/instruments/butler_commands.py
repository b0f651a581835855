"""The ``butler`` commands of the instruments package: ``register-instrument`` and ``ingest-raws``.

They reach the ``butler`` CLI through the ``butler.cli`` entry-point group (``pyproject.toml``),
so that ``butler`` itself never imports ``pipeline``. This module imports only click; the
instrument code is imported when a command runs.
"""

from __future__ import annotations

import sys

import click

__all__ = ["ingest_raws", "register_instrument"]


@click.command("register-instrument")
@click.argument("repo")
@click.argument("instrument")
@click.option(
    "--update",
    is_flag=True,
    help="Replace the registered camera description (prints the differences; refused if a detector "
    "with data would change geometry).",
)
def register_instrument(repo: str, instrument: str, update: bool) -> None:
    """Register INSTRUMENT (a built-in name or a camera YAML path): its detectors and filters."""
    from butler import Butler

    from . import register_instrument as _register

    b = Butler(repo)
    if update:
        from .update import update_instrument

        result = update_instrument(b, instrument)
        click.echo(result.format())
        click.echo(f"Updated instrument {result.name}" if result.applied else "Nothing to update")
        return
    click.echo(f"Registered instrument {_register(b, instrument).name}")


@click.command("ingest-raws")
@click.argument("repo")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--transfer",
    type=click.Choice(["auto", "copy", "symlink", "hardlink", "move", "direct"]),
    default="auto",
    show_default=True,
    help="How files enter the repository.",
)
@click.option(
    "-j", "--processes", type=click.IntRange(min=1), default=1, show_default=True, help="Processes reading headers."
)
def ingest_raws(repo: str, paths: tuple[str, ...], transfer: str, processes: int) -> None:
    """Ingest raw files (or directories of them) into <instrument>/raw/all."""
    from butler import Butler

    from . import ingest_raws as _ingest

    b = Butler(repo)
    report = _ingest(b, list(paths), transfer=transfer, processes=processes)
    click.echo(report.headline())
    for path, message in report.warnings:
        click.echo(f"  WARNING {path}: {message}", err=True)
    for path, reason in report.failed:
        click.echo(f"  FAILED {path}: {reason}", err=True)
    if report.failed:
        click.echo(
            f"Error: {len(report.failed)} file(s) could not be ingested (listed above); "
            "fix or remove them and run ingest-raws again",
            err=True,
        )
        sys.exit(1)
