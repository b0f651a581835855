"""The calibration report page (``ccdflow-report REPO [-i COLLECTIONS] -o DIR``).

`collect_report` reads a repository through the butler API and writes the images;
`render_html` turns the result into one static page; `write_report` does both and returns the
path of ``DIR/index.html``. The page is self-contained: it opens from disk, needs no server and
makes no network request.
"""

from __future__ import annotations

from .cli import main, write_report
from .collect import AmpRow, CalibEntry, DetectorSection, ImageEntry, ReportData, RunEntry, collect_report
from .html import render_html

__all__ = [
    "AmpRow",
    "CalibEntry",
    "DetectorSection",
    "ImageEntry",
    "ReportData",
    "RunEntry",
    "collect_report",
    "main",
    "render_html",
    "write_report",
]
