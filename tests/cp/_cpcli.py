"""Helpers for truth tests that run the cp pipelines through the ``butler`` and ``pipetask`` CLIs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
CAMERA = Path(__file__).parent / "data" / "ptccam.yaml"


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def cli(tool: str, *args: object, ok: bool = True) -> subprocess.CompletedProcess:
    """Run ``butler`` or ``pipetask`` with ``args``; assert the exit status."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([_tool(tool), *map(str, args)], capture_output=True, text=True, env=env)
    if ok:
        assert proc.returncode == 0, f"{tool} {' '.join(map(str, args))}\n{proc.stdout}\n{proc.stderr}"
    return proc


def make_repo(repo: Path, raw_dir: Path) -> None:
    """``butler create``, ``register-instrument`` (ptccam) and ``ingest-raws``."""
    cli("butler", "create", repo)
    cli("butler", "register-instrument", repo, CAMERA)
    cli("butler", "ingest-raws", repo, raw_dir)


def run_pipeline(repo: Path, pipeline: str, inputs: str, run: str, where: str, *config: str) -> None:
    """``pipetask run`` a pipeline of pipelines/ (``name#labels`` allowed) into ``run``."""
    args = ["run", "-b", repo, "-p", str(PIPELINES / pipeline), "-i", inputs, "--output-run", run,
            "-d", where, "--register-dataset-types", "--no-progress"]
    for c in config:
        args += ["-c", c]
    cli("pipetask", *args)


def certify(repo: Path, run: str, calib: str, dataset_type: str) -> None:
    """``butler certify-calibrations`` from ``run`` into the CALIBRATION collection ``calib``."""
    cli("butler", "certify-calibrations", repo, run, calib, dataset_type, "--begin-date", "2000-01-01")
