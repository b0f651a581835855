"""`pipetask run --executor parsl` from the command line: Parsl starts while the graph is built,
and every output equals the serial run's (SQLite repository, 2 local workers).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from butler import Butler

from .conftest import REPO_ROOT, make_toy_repo_db

pytestmark = [pytest.mark.parsl, pytest.mark.slow]


def _pipetask_run(repo: Path, output: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(Path(sys.executable).parent / "pipetask"), "run", "-b", str(repo),
        "-t", "_toy_tasks.SubtractMedianTask:subtractMedian",
        "-t", "_toy_tasks.GatherMediansTask:gatherMedians",
        "-i", "ToyCam/raw/all", "--output-run", output, "--register-dataset-types", *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(REPO_ROOT))


def test_pipetask_run_on_parsl_matches_serial(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_toy_repo_db(repo, 4, 3, shape=(32, 32))[0].close()
    serial = _pipetask_run(repo, "u/serial")
    assert serial.returncode == 0, serial.stderr
    parsl = _pipetask_run(repo, "u/parsl", "--executor", "parsl", "-j", "2")
    assert parsl.returncode == 0, parsl.stderr
    assert "Executed 16 quanta successfully, 0 failed and 0 blocked" in parsl.stdout
    assert "Traceback" not in parsl.stderr
    with Butler(repo) as b:
        for dataset_type in ("toyCalexp", "toyExposureSummary"):
            a = {r.data_id: r for r in b.query_datasets(dataset_type, collections=["u/serial"])}
            p = {r.data_id: r for r in b.query_datasets(dataset_type, collections=["u/parsl"])}
            assert set(a) == set(p) and len(a) == (12 if dataset_type == "toyCalexp" else 4)
            for data_id, ref in a.items():
                x, y = b.get(ref), b.get(p[data_id])
                if isinstance(x, np.ndarray):
                    np.testing.assert_array_equal(x, y)
                else:
                    assert x == y
