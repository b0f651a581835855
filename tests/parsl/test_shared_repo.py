"""Several drivers on one repository: concurrent runs into different RUNs on PostgreSQL stay
consistent, a second writer of the same RUN is refused with a clear error (PostgreSQL advisory
lock / SQLite flock), and a driver killed with SIGKILL leaves no stale lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import _toy_tasks as toy
import numpy as np
import pytest

from butler import Butler
from pipeline.execution.run_lock import RunLockedError, run_lock, run_lock_key

from .conftest import REPO_ROOT, make_toy_repo_db


def _driver(repo: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.parsl._driver", str(repo), *args],
        cwd=str(REPO_ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[tuple[int, int], float]]:
    db = request.getfixturevalue("pg_db") if request.param == "postgres" else None
    butler, medians = make_toy_repo_db(tmp_path / "repo", 4, 3, db=db, shape=(8, 8))
    butler.close()
    return tmp_path / "repo", medians


def test_run_lock_key_is_stable() -> None:
    assert run_lock_key("db/schema", "u/a") == run_lock_key("db/schema", "u/a")
    assert run_lock_key("db/schema", "u/a") != run_lock_key("db/schema", "u/b")
    assert run_lock_key("db/s1", "u/a") != run_lock_key("db/s2", "u/a")
    assert -(2**63) <= run_lock_key("x", "y") < 2**63


@pytest.mark.postgres
def test_concurrent_drivers_different_runs(pg_db: str, tmp_path: Path) -> None:
    butler, medians = make_toy_repo_db(tmp_path / "repo", 4, 3, db=pg_db, shape=(8, 8))
    butler.close()
    root = tmp_path / "repo"
    names = ("u/a", "u/b")
    procs = [_driver(root, "--output", name, "--sleep", "0.05") for name in names]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    runs = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert all(r["done"] == 4 * 3 + 4 and r["failed"] == 0 for r in runs)
    with Butler(root) as b:
        for name, r in zip(names, runs):
            assert list(b.registry.get_collection_chain(name)) == [r["run"], toy.TOY_RAW_RUN]
            refs = b.query_datasets("toyCalexp", collections=[r["run"]])
            assert len(refs) == 12
            for ref in refs:
                e, d = ref.data_id["exposure"], ref.data_id["detector"]
                raw = b.get(
                    "toyRaw",
                    collections=[toy.TOY_RAW_RUN],
                    instrument=toy.TOY_INSTRUMENT,
                    exposure=e,
                    detector=d,
                )
                np.testing.assert_array_equal(
                    b.get(ref), raw.astype(np.float32) - np.float32(medians[(e, d)])
                )
            assert len(b.query_datasets("toyExposureSummary", collections=[r["run"]])) == 4


def test_same_run_refused_with_clear_error(repo: Any) -> None:
    root, _ = repo
    with Butler(root) as b, run_lock(b, "u/same"):
        # Another driver process: refused at once, exit status 3, message names us.
        p = _driver(root, "--output-run", "u/same")
        out, err = p.communicate(timeout=60)
        assert p.returncode == 3, (out, err)
        assert "output run 'u/same' is being written by" in err
        assert str(os.getpid()) in err and "--output-run" in err
        # Another butler in this process is refused too; a different run is fine.
        with Butler(root) as b2:
            with pytest.raises(RunLockedError, match="u/same"):
                with run_lock(b2, "u/same"):
                    pass
            with run_lock(b2, "u/other"):
                pass
        with Butler(root) as b3:
            assert "u/same" not in b3.registry.query_collections("u/*")  # nothing was written
    # Released: the driver now runs.
    p = _driver(root, "--output-run", "u/same")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["done"] == 16


def test_killed_driver_leaves_no_stale_lock(repo: Any) -> None:
    root, _ = repo
    p = _driver(root, "--output-run", "u/k", "--hold", "60")
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "locked", p.stderr.read() if p.stderr else ""
        with Butler(root) as b:
            with pytest.raises(RunLockedError):
                with run_lock(b, "u/k"):
                    pass
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        with Butler(root) as b, run_lock(b, "u/k"):
            pass
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
