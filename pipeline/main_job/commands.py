"""Running the main job's commands: print each one, run it, time it, stop on failure.

The ``butler`` and ``pipetask`` commands run inside this process by default (their click
commands, as the console scripts call them, `run_in_process`): each printed command line is
still what a user would type, but the ~0.5 s of start-up and imports of a new interpreter is paid
once instead of per command. ``CCDFLOW_DEMO_SUBPROCESS=1`` runs every command in its own process
instead (the behaviour is the same; only the time differs).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "StepFailed",
    "StepRecord",
    "children_cpu",
    "prepare_repo",
    "run_command",
    "run_in_process",
    "say",
    "self_cpu",
    "tool",
]


class StepFailed(RuntimeError):  # noqa: N818 - the name the main job's users know
    """A command of the main job exited non-zero (its own output says why)."""


@dataclasses.dataclass
class StepRecord:
    """One command the main job ran (or skipped).

    Attributes
    ----------
    label : `str`
        Short name (``kast_blue cpBias``).
    command : `str`
        The shell-quoted command line (empty when skipped).
    wall : `float`
        Wall-clock time (s).
    cpu : `float`
        User + system CPU time of the command and its worker processes (s).
    skipped : `bool`
        True when ``--mode reuse`` found the step complete.
    """

    label: str
    command: str
    wall: float = 0.0
    cpu: float = 0.0
    skipped: bool = False


def children_cpu() -> float:
    """Return the user + system CPU seconds of the finished child processes so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    """Return the user + system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def say(text: str, *, bold: bool = False) -> None:
    """Print a line now (bold on a terminal)."""
    if bold and sys.stdout.isatty():
        text = f"\033[1m{text}\033[0m"
    print(text, flush=True)


def run_in_process(cmd: Sequence[Any]) -> int | None:
    """Run a ``butler`` or ``pipetask`` command line in this process, as its console script would.

    Parameters
    ----------
    cmd : sequence
        The command line; ``cmd[0]`` is the console script (a path or a name).

    Returns
    -------
    status : `int` or `None`
        The exit status the console script would have returned (its errors printed as it prints
        them), or `None` when ``cmd[0]`` is not one of these commands (run it as a process).

    Raises
    ------
    KeyboardInterrupt
        If the command was interrupted.
    """
    import click

    prog = Path(str(cmd[0])).name
    if prog == "butler":
        from butler.cli.commands import cli as group
    elif prog == "pipetask":
        from pipeline.cli.pipetask import pipetask as group
    else:
        return None
    args = [str(c) for c in cmd[1:]]
    saved_argv = sys.argv
    sys.argv = [prog, *args]  # what the command records as its command line (run summaries)
    try:
        rv = group.main(args=args, prog_name=prog, standalone_mode=False)
        # without standalone mode, click returns the code of ctx.exit(code) (else the command's value)
        status = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    except click.exceptions.Abort:
        raise KeyboardInterrupt from None
    except click.ClickException as exc:
        exc.show()
        status = exc.exit_code
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            status = code or 0
        else:  # sys.exit("message"): printed on stderr, status 1
            print(code, file=sys.stderr)
            status = 1
    finally:
        sys.argv = saved_argv
        sys.stdout.flush()
        sys.stderr.flush()
    return status


def _in_process_enabled() -> bool:
    return os.environ.get("CCDFLOW_DEMO_SUBPROCESS", "0") in ("", "0")


def run_command(cmd: Sequence[Any], *, label: str, log: list[StepRecord]) -> StepRecord:
    """Print and run one command, streaming its output.

    ``butler`` and ``pipetask`` run in this process (`run_in_process`) unless
    ``CCDFLOW_DEMO_SUBPROCESS=1``; anything else runs as a child process.

    Raises
    ------
    StepFailed
        If the command exits non-zero.
    """
    text = " ".join(shlex.quote(str(c)) for c in cmd)
    say(f"\n$ {text}", bold=True)
    t0, c0 = time.perf_counter(), children_cpu() + self_cpu()
    status = run_in_process(cmd) if _in_process_enabled() else None
    if status is None:
        status = subprocess.run([str(c) for c in cmd], check=False).returncode
    rec = StepRecord(label, text, time.perf_counter() - t0, children_cpu() + self_cpu() - c0)
    log.append(rec)
    if status != 0:
        raise StepFailed(f"{label} failed (exit {status}); the command was:\n  {text}")
    say(f"  [{label}: {rec.wall:.2f} s wall, {rec.cpu:.2f} s CPU]")
    return rec


def tool(name: str) -> str:
    """Return the path of a console script installed beside this interpreter (else ``name``)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def prepare_repo(repo: Path, mode: str = "reuse", log: list[StepRecord] | None = None) -> None:
    """Create the repository with ``butler create``, or reuse / rebuild an existing one.

    Parameters
    ----------
    repo : `pathlib.Path`
        Repository root.
    mode : {"reuse", "rebuild"}
        Keep an existing repository, or delete it first.
    log : `list` [`StepRecord`], optional
        Receives the ``butler create`` record.

    Raises
    ------
    StepFailed
        If ``repo`` is a non-empty directory that is not a repository (never deleted), or
        ``butler create`` fails.
    """
    log = [] if log is None else log
    is_repo = (repo / "butler.yaml").exists()
    if repo.exists() and not is_repo and any(repo.iterdir()):
        raise StepFailed(
            f"{repo} exists and is not a ccdflow repository (no butler.yaml); "
            "choose another --repo or remove it"
        )
    if mode == "rebuild" and is_repo:
        say(f"removing {repo} (--mode rebuild)")
        shutil.rmtree(repo)
        is_repo = False
    if is_repo:
        say(f"reusing {repo} (--mode reuse: completed steps are skipped)")
    else:
        run_command([tool("butler"), "create", repo], label="butler create", log=log)
