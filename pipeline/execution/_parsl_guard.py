"""Run one of Parsl's helper programs so that it exits when the driver dies.

``python -m pipeline.execution._parsl_guard DRIVER_PID PROGRAM [ARGS...]`` starts the watchdog of
`butler.process_guard.exit_with_driver` and then runs the Python script ``PROGRAM`` (found on
``PATH``: Parsl's ``interchange.py`` or ``process_worker_pool.py``) in this process, as its
``__main__``. Parsl's interchange never notices that the process that launched it was killed, and
a worker pool only gives up after ``heartbeat_threshold`` seconds without the interchange (2
minutes by default); with the guard both exit within a second of a ``kill -9`` of the driver, and
the pool's workers follow (they watch their manager).

`guard_parsl_config` puts the guard in front of the launch commands of a Parsl configuration.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
from typing import Any

__all__ = ["guard_parsl_config", "main"]

_INTERCHANGE = "interchange.py"
_WORKER_POOL = "process_worker_pool.py"


def guard_parsl_config(config: Any, driver_pid: int | None = None) -> Any:
    """Wrap the interchange (and, for local providers, the worker pool) launch commands.

    Parameters
    ----------
    config : `parsl.config.Config`
        A configuration not loaded yet; changed in place.
    driver_pid : `int`, optional
        The driver's process id (default: this process).

    Returns
    -------
    config : `parsl.config.Config`
        The same object. Executors whose commands were customised by the user are left alone;
        worker pools of batch-system providers run on other hosts and rely on Parsl's heartbeat.
    """
    pid = os.getpid() if driver_pid is None else driver_pid
    prefix = [sys.executable, "-m", __name__, str(pid)]
    for ex in getattr(config, "executors", ()):
        cmd = getattr(ex, "interchange_launch_cmd", None)
        if cmd is not None and list(cmd) == [_INTERCHANGE]:
            ex.interchange_launch_cmd = [*prefix, _INTERCHANGE]
        launch = getattr(ex, "launch_cmd", None)
        provider = type(getattr(ex, "provider", None)).__name__
        if isinstance(launch, str) and launch.startswith(_WORKER_POOL) and provider == "LocalProvider":
            ex.launch_cmd = " ".join(prefix) + " " + launch
    return config


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``DRIVER_PID PROGRAM [ARGS...]`` (see the module docstring).

    Parameters
    ----------
    argv : `list` [`str`], optional
        Arguments (default: ``sys.argv[1:]``).
    """
    from butler.process_guard import exit_with_driver

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        sys.exit("usage: python -m pipeline.execution._parsl_guard DRIVER_PID PROGRAM [ARGS...]")
    driver_pid, program, rest = int(args[0]), args[1], args[2:]
    # On PATH as Parsl expects, else beside this interpreter (a venv not activated).
    path = shutil.which(program) or shutil.which(program, path=os.path.dirname(sys.executable)) or program
    exit_with_driver(driver_pid, follow_parent=False)
    sys.argv = [path, *rest]
    runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    main()
