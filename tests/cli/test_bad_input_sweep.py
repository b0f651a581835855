"""The bad-input sweep (``scripts/bad_input_sweep.py``): a fast subset and (slow) the whole sweep.

Each case runs ``butler`` / ``pipetask`` as a subprocess on a small ``testcam`` repository and
checks: the exit status, no traceback or SQL text in the output, one ``Error`` line, and the
registry row counts and file listing unchanged.

The fast subset holds the defects the sweep found: ``collection-chain`` left a new CHAINED parent
behind when the chain was refused (unknown child, cycle); ``ingest-raws -j 0`` was accepted;
``ingest-raws`` of a file with ``DATE-OBS = 'yesterday'`` printed astropy's multi-line
``ValueError``; a failed ``ingest-raws`` had no ``Error`` line; ``ingest-raws`` of a file whose
filter differs from its already registered exposure's left the new ``physical_filter`` and
``band`` rows behind.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bad_input_sweep", ROOT / "scripts" / "bad_input_sweep.py")
sweep_mod = importlib.util.module_from_spec(_spec)
sys.modules["bad_input_sweep"] = sweep_mod
_spec.loader.exec_module(sweep_mod)

#: Cases of the fast subset (by name): the found defects and one of each kind of input.
FAST = [
    "chain with unknown child",
    "chain parent = child",
    "ingest -j 0",
    "ingest bad DATE-OBS",
    "ingest truncated 50%",
    "ingest no DATE-OBS",
    "ingest unknown filter",
    "where 'exposure IN ('",
    "certify bad begin date",
    "-c unknown field",
    "run lock held",
]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with the sweep's repository built in it."""
    d = tmp_path_factory.mktemp("sweep")
    sweep_mod.build_repo(d / "repo", d / "raws")
    return d


@pytest.fixture
def in_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the checkout root (the cases name pipelines/*.yaml) with the venv's tools first."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))


def test_fast_cases_exist() -> None:
    """Every fast case name is a case of the sweep (a renamed case would silently drop out)."""
    names = {c.name for c in sweep_mod.cases()}
    assert set(FAST) <= names
    assert len(names) == len(sweep_mod.cases()) >= 100


@pytest.mark.parametrize("name", FAST)
def test_fast_subset(sweep_dir: Path, in_checkout: None, name: str) -> None:
    """Each fast case: refused cleanly, one Error line, repository unchanged."""
    (outcome,) = sweep_mod.sweep(sweep_dir, names=[name], verbose=False)
    assert outcome.problems == [], outcome.output
    assert outcome.returncode != 0


def test_snapshot_sees_a_new_collection(sweep_dir: Path) -> None:
    """The unchanged-repository check can fail: a registered collection changes the snapshot."""
    from butler import Butler, CollectionType

    before = sweep_mod.snapshot(sweep_dir / "repo")
    b = Butler(sweep_dir / "repo", writeable=True)
    try:
        b.registry.register_collection("sweep/tmp", CollectionType.TAGGED)
        after = sweep_mod.snapshot(sweep_dir / "repo")
        b.registry.remove_collection("sweep/tmp")
    finally:
        b.close()
    assert any("collection" in d for d in sweep_mod._diff(before, after))


@pytest.mark.slow
def test_whole_sweep(sweep_dir: Path, in_checkout: None) -> None:
    """All ~150 cases; lists every failing case with its problems."""
    outcomes = sweep_mod.sweep(sweep_dir, verbose=False)
    failed = [f"{o.case.name}: {o.problems} | {sweep_mod._message(o)}" for o in outcomes if o.problems]
    assert failed == []


@pytest.mark.parametrize(
    ("name", "fname"), [("pipeline non-UTF-8 file", "latin1.yaml"), ("-C non-UTF-8 file", "latin1.py")]
)
def test_non_utf8_files_named(sweep_dir: Path, in_checkout: None, name: str, fname: str) -> None:
    """A Latin-1 pipeline / override file: the error names the file and the byte (was the bare codec
    message "'utf-8' codec can't decode byte 0xe9 ...")."""
    (outcome,) = sweep_mod.sweep(sweep_dir, names=[name], verbose=False)
    assert outcome.problems == [], outcome.output
    msg = sweep_mod._message(outcome)
    assert fname in msg and "is not UTF-8 text (byte 0xe9" in msg and "codec" not in msg, msg


def test_qgraph_and_run_honour_select_tasks(sweep_dir: Path, in_checkout: None) -> None:
    """``pipetask qgraph/run --select-tasks`` used to be ignored (the whole pipeline was built, and a
    malformed expression passed unnoticed); now it selects, and a bad expression is one error."""
    import subprocess

    base = [sweep_mod._tool("pipetask"), "qgraph", "-b", str(sweep_dir / "repo"), "-i", sweep_mod.RAW_RUN,
            "-p", "pipelines/cpBias.yaml", "--output-run", "sw/select", "--register-dataset-types"]
    r = subprocess.run([*base, "--select-tasks", "cpBiasIsr"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "cpBiasIsr  15" in r.stdout and "cpBiasCombine" not in r.stdout
    (outcome,) = sweep_mod.sweep(sweep_dir, names=["--select-tasks malformed"], verbose=False)
    assert outcome.problems == []
    assert "--select-tasks 'cpBiasIsr & (': unexpected end of expression" in sweep_mod._message(outcome)
