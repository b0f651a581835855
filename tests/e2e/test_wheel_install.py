"""A normal (non-editable) wheel install finds ccdflow's pipelines by name.

The wheel is built from this checkout, installed into a fresh virtual environment (its
dependencies come from the running environment's site-packages through a ``.pth`` file, so
nothing is downloaded), and ``pipetask build -p cpBias.yaml`` runs from a directory that holds
no checkout.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


def _clean_env() -> dict[str, str]:
    """A minimal environment: nothing that another test may have left in ``os.environ``
    (``PIP_*``, ``PYTHON*``, ``VIRTUAL_ENV``, ...) reaches the build, the install or the run."""
    return {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=_clean_env() if env is None else env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _setuptools_new_enough() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77  # pyproject's build requirement


def test_wheel_install_finds_pipelines_by_name(tmp_path):
    """Build, install into a fresh venv, run ``pipetask build -p cpBias.yaml`` elsewhere."""
    source = tmp_path / "source"  # a clean copy: no stale build/ or egg-info of the checkout
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "demo_repo", ".*_cache"
        ),
    )
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)]
    if _setuptools_new_enough():
        build.insert(4, "--no-build-isolation")
    _run(build, cwd=tmp_path)
    (wheel,) = dist.glob("ccdflow-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path
        ).strip()
    )
    # the dependencies (numpy, astropy, ...) of the running environment, after the venv's own
    deps = [p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (purelib / "_ccdflow_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        cwd=tmp_path,
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env()
    where = _run(
        [
            str(python),
            "-c",
            "import pipeline, pipelines; print(pipeline.__file__); print(pipelines.__file__)",
        ],
        cwd=elsewhere,
        env=env,
    ).split()
    assert all(Path(p).is_relative_to(purelib) for p in where), where
    installed = sorted(p.name for p in (purelib / "pipelines").rglob("*.yaml"))
    assert installed.count("cpBias.yaml") == 2  # the pipeline and its _ingredients/ part

    out = _run(
        [str(venv / "bin" / "pipetask"), "build", "-p", "cpBias.yaml", "--show", "pipeline-graph"],
        cwd=elsewhere,
        env=env,
    )
    assert "cpBiasIsr: IsrTask (instrument, detector, exposure)" in out
    assert "cpBiasCombine: CalibCombineTask (instrument, detector)" in out
    assert "bias (instrument, detector) Exposure [calibration]" in out
    # a path keeps working, and another pipeline by name too
    pipetask = str(venv / "bin" / "pipetask")
    by_path = _run(
        [pipetask, "build", "-p", str(REPO_ROOT / "pipelines" / "cpBias.yaml"), "--show", "pipeline-graph"],
        cwd=elsewhere,
        env=env,
    )
    assert by_path == out
    flat = _run(
        [str(venv / "bin" / "pipetask"), "build", "-p", "cpFlat.yaml", "--show", "pipeline-graph"],
        cwd=elsewhere,
        env=env,
    )
    assert "cpFlatNorm" in flat
