"""Fixtures for the quantum-graph and execution tests: a toy repository with known medians."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest



@pytest.fixture
def toy_repo(tmp_path: Path) -> tuple[Any, dict[tuple[int, int], float]]:
    """A repository with 3 exposures x 2 detectors of 8x8 ``toyRaw`` images (known medians)."""
    import _toy_tasks as toy

    return toy.make_toy_repo(tmp_path / "repo", 3, 2, shape=(8, 8))
