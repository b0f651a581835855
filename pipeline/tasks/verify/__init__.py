"""Calibration verification (cp_verify): per-exposure statistics and tests, run-level results.

Tasks are thin glue over `pipeline.tasks.verify.verify_stats`; `pipeline.tasks.verify.summary`
is the ``ccdflow-verify-summary`` console command that prints the failures of a run.
"""

from __future__ import annotations

from butler.utils import lazy_exports

_LAZY = {
    "CpVerifyBiasConfig": "tasks",
    "CpVerifyBiasTask": "tasks",
    "CpVerifyCalibMergeTask": "tasks",
    "CpVerifyDarkConfig": "tasks",
    "CpVerifyDarkTask": "tasks",
    "CpVerifyDefectsConfig": "tasks",
    "CpVerifyDefectsTask": "tasks",
    "CpVerifyFlatConfig": "tasks",
    "CpVerifyFlatTask": "tasks",
    "CpVerifyPtcTask": "tasks",
    "CpVerifyRunMergeTask": "tasks",
    "CpVerifyStatsConfig": "tasks",
    "CpVerifyStatsTask": "tasks",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = sorted(_LAZY)
