"""A toy ISR-like task for the Parsl tests: the median subtraction of ``bench/_toy_tasks.py`` plus
hooks the tests drive through environment variables (set only for the Parsl workers).

- ``CCDFLOW_TEST_KILL="EXPOSURE:DETECTOR:MARKER"``: the first attempt at that quantum writes its output,
  creates ``MARKER`` and kills its own worker process with SIGKILL before the metadata is written.
- ``CCDFLOW_TEST_FAIL="E1,E2"``: quanta of these exposures raise (an algorithm error).
- ``CCDFLOW_TEST_SLEEP=S``: every quantum sleeps S seconds first.
- ``CCDFLOW_TEST_ATTEMPTS=DIR``: every attempt at a quantum leaves a file ``DIR/<exp>_<det>_<pid>_<ns>``,
  so a test can count how often each quantum ran.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import _toy_tasks as toy

__all__ = ["KillableSubtractMedianTask", "KillableSubtractMedianConfig"]


class KillableSubtractMedianConfig(toy.SubtractMedianConfig):
    """Same fields as `SubtractMedianConfig`."""


class KillableSubtractMedianTask(toy.SubtractMedianTask):
    """`SubtractMedianTask` whose worker can be killed mid-quantum by the tests."""

    ConfigClass = KillableSubtractMedianConfig
    _DefaultName = "subtractMedian"

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        """Record the attempt, maybe kill the worker, then run the toy task."""
        data_id = butlerQC.quantum.data_id
        exp, det = data_id["exposure"], data_id["detector"]
        attempts = os.environ.get("CCDFLOW_TEST_ATTEMPTS")
        if attempts:
            Path(attempts).mkdir(parents=True, exist_ok=True)
            (Path(attempts) / f"{exp}_{det}_{os.getpid()}_{time.monotonic_ns()}").touch()
        if os.environ.get("CCDFLOW_TEST_SLEEP"):
            time.sleep(float(os.environ["CCDFLOW_TEST_SLEEP"]))
        if str(exp) in os.environ.get("CCDFLOW_TEST_FAIL", "").split(","):
            raise RuntimeError(f"injected worker-side failure for exposure {exp}")
        kill = os.environ.get("CCDFLOW_TEST_KILL")
        if kill:
            k_exp, k_det, marker = kill.split(":", 2)
            if (int(k_exp), int(k_det)) == (exp, det) and not Path(marker).exists():
                # Mid-quantum: the output file is written, the metadata (success marker) is not.
                super().runQuantum(butlerQC, inputRefs, outputRefs)
                Path(marker).write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        super().runQuantum(butlerQC, inputRefs, outputRefs)
