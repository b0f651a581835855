"""Fixtures for the quantum-graph and execution tests: a toy repository with known medians."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
# Worker processes import the toy tasks by dotted path.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in [str(BENCH), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p)


@pytest.fixture
def toy_repo(tmp_path: Path) -> tuple[Any, dict[tuple[int, int], float]]:
    """A repository with 3 exposures x 2 detectors of 8x8 ``toyRaw`` images (known medians)."""
    import _toy_tasks as toy

    return toy.make_toy_repo(tmp_path / "repo", 3, 2, shape=(8, 8))
