"""``ccdflow-report REPO [-i COLLECTIONS] -o DIR``: write the calibration report page."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from .collect import DetectorSection

__all__ = ["main", "write_report"]


def write_report(
    repo: str | Path,
    outdir: str | Path,
    collections: Sequence[str] | None = None,
    *,
    thumbnails: bool = True,
    title: str | None = None,
    sections: Sequence[DetectorSection] = (),
) -> Path:
    """Write ``outdir/index.html`` and its images for a repository.

    Parameters
    ----------
    repo : path-like
        Butler repository.
    outdir : path-like
        Report directory (created; an existing ``index.html`` and ``img/`` are replaced).
    collections : sequence of `str`, optional
        Collections or glob patterns to look in (default: every collection).
    thumbnails : `bool`
        Draw thumbnails of the image calibrations and ISR outputs.
    title : `str`, optional
        Page title (default ``"ccdflow calibration report: <repo name>"``).
    sections : sequence of `DetectorSection`, optional
        Detector sections collected earlier into the same ``outdir`` (`collect_report` with
        ``instruments``): shown as they are, their images kept.

    Returns
    -------
    path : `pathlib.Path`
        The ``index.html`` written.

    Raises
    ------
    LookupError
        If ``collections`` match nothing.
    """
    import shutil

    from .collect import collect_report
    from .html import render_html

    outdir = Path(outdir)
    img = outdir / "img"
    keep = {Path(image.path).name for section in sections for image in section.images}
    if img.is_dir():  # every image is drawn again, but those of the sections given
        for path in img.iterdir():
            if path.name not in keep:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    data = collect_report(repo, outdir, collections, thumbnails=thumbnails, sections=sections)
    page = outdir / "index.html"
    tmp = page.with_suffix(".html.tmp")
    tmp.write_text(
        render_html(data, title or f"ccdflow calibration report: {Path(repo).resolve().name}"),
        encoding="utf-8",
    )
    tmp.replace(page)
    return page


@click.command("ccdflow-report", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("repo", type=click.Path(file_okay=False))
@click.option(
    "-i",
    "--collections",
    "collections",
    multiple=True,
    metavar="COLL[,COLL]",
    help="Collections (or glob patterns) to report on; chains are followed. Default: all.",
)
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write index.html and img/ into.",
)
@click.option("--no-thumbnails", is_flag=True, help="Skip the thumbnails of calibrations and ISR outputs.")
@click.option("--title", default=None, help="Page title.")
def main(repo: str, collections: Sequence[str], output: str, no_thumbnails: bool, title: str | None) -> None:
    """Write a static HTML calibration report of REPO into a directory.

    Per instrument and detector: the certified calibrations and their validity ranges on a time
    line, a sortable table per amplifier (PTC gain and read noise against the nominal values,
    overscan level and noise, defects, linearity, verification), the PTC plots, thumbnails of
    the combined calibrations and ISR outputs; then every run with its 'pipetask report'
    summary. Open DIR/index.html in a browser (no server needed).
    """
    if not (Path(repo) / "butler.yaml").is_file():
        raise click.ClickException(
            f"{repo} is not a butler repository (no butler.yaml); give the directory made by 'butler create'"
        )
    colls = [c.strip() for value in collections for c in value.split(",") if c.strip()]
    try:
        page = write_report(repo, output, colls or None, thumbnails=not no_thumbnails, title=title)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Report written to {page.resolve()}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
