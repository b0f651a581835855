"""Running the main job's commands: print each one, run it, time it, stop on failure."""

from __future__ import annotations

import dataclasses
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


def run_command(cmd: Sequence[Any], *, label: str, log: list[StepRecord]) -> StepRecord:
    """Print and run one command, streaming its output.

    Raises
    ------
    StepFailed
        If the command exits non-zero.
    """
    text = " ".join(shlex.quote(str(c)) for c in cmd)
    say(f"\n$ {text}", bold=True)
    t0, c0 = time.perf_counter(), children_cpu()
    proc = subprocess.run([str(c) for c in cmd], check=False)
    rec = StepRecord(label, text, time.perf_counter() - t0, children_cpu() - c0)
    log.append(rec)
    if proc.returncode != 0:
        raise StepFailed(f"{label} failed (exit {proc.returncode}); the command was:\n  {text}")
    say(f"  [{label}: {rec.wall:.1f} s wall, {rec.cpu:.1f} s CPU]")
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
