"""The main job (``ccdflow-demo``): the whole calibration flow on real raw data, through the CLI.

For each instrument found in the data directory (``kast_blue``, ``efosc2``) it runs, as a user
would type them and showing each command and its progress:

``butler create`` → ``butler register-instrument`` → ``butler ingest-raws`` → ``pipetask run``
cpBias → ``butler certify-calibrations`` → cpFlat (Kast dome flats; EFOSC2 twilight flats) →
certify → cpDefects from the combined bias and flat (no darks) → certify → cpPtc on the flats
with the GRID measurement region (Kast b11/b12/b13; EFOSC2 the 10.31 s and 24.54 s dome-flat
triplets) → certify → ``pipetask run`` isr on the science frames with the certified bias, flat
and defects and the PTC's gains and read noise.

It then prints a table per amplifier (PTC gain and read noise against the nominal values, the
read noise measured in the overscan of the science frames, the overscan level) and the number
of datasets of each type, and writes the PTC plots and a quick-look PNG of one ``postISRCCD``
per instrument into ``REPO/plots/``, and the calibration report page ``REPO/report/index.html``
(`pipeline.report`), whose path it prints.

Re-running is safe: ``--mode reuse`` (default) skips every step whose outputs are complete and
finishes interrupted ones (``--extend-run``); ``--mode rebuild`` deletes the repository first.

The flow of each instrument is data (`Flow`, `FLOWS`); the numbers come back through the
`butler.Butler` Python API (`collect_results`). The end-to-end test runs the same `run_flow`
on simulated MegaCam raws.
"""

from __future__ import annotations

from .cli import main
from .commands import StepFailed, StepRecord, prepare_repo
from .flows import FLOWS, Flow, run_flow
from .plots import write_plots
from .report import AmpResult, collect_results, dataset_counts, format_report, summarize

__all__ = [
    "AmpResult",
    "FLOWS",
    "Flow",
    "StepFailed",
    "StepRecord",
    "collect_results",
    "dataset_counts",
    "format_report",
    "main",
    "prepare_repo",
    "run_flow",
    "summarize",
    "write_plots",
]
