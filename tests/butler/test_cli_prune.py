"""``butler prune-datasets`` / ``remove-runs`` / ``remove-collections``: LSST's semantics, confirmation.

The reproduction of the data loss: ``prune-datasets REPO <output chain>`` used to purge
everything the chain reached, the raws of the input RUN included, without asking.
"""

from __future__ import annotations

import numpy as np
import pytest

from butler import Butler, DatasetType
from butler.cli import commands

from .conftest import fill_dimensions, invoke_butler


def run(*args, ok=True, input=None):
    return invoke_butler(*args, ok=ok, input=input)


@pytest.fixture
def repo(tmp_path):
    """raw/all (6 ``arr``), out/r1 (6 ``proc`` + ``arr`` of exposure 1), chain out = [out/r1, raw/all]."""
    root = tmp_path / "repo"
    run("create", root)
    b = Butler(root)
    fill_dimensions(b.registry)
    b.registry.register_dataset_type(DatasetType("arr", ["exposure", "detector"], "NumpyArray"))
    b.registry.register_dataset_type(DatasetType("proc", ["exposure", "detector"], "NumpyArray"))
    for e in (1, 2, 3):
        for d in (0, 1):
            b.put(np.full(3, 10 * e + d, dtype=float), "arr", instrument="cam", exposure=e, detector=d,
                  run="raw/all")
            b.put(np.full(3, -e, dtype=float), "proc", instrument="cam", exposure=e, detector=d, run="out/r1")
    b.put(np.zeros(3), "arr", instrument="cam", exposure=1, detector=0, run="out/r1")
    b.registry.set_collection_chain("out", ["out/r1", "raw/all"])
    b.close()
    return root


def _count(root, name, collection):
    b = Butler(root)
    try:
        return len(b.query_datasets(name, collections=[collection], find_first=False))
    finally:
        b.close()


def _files(root, run):
    return sorted(p.name for p in (root / run).rglob("*") if p.is_file())


def test_prune_needs_an_operation(repo):
    r = run("prune-datasets", repo, "out", ok=False)
    assert "no operation" in r.output and "--purge RUN" in r.output
    r = run("prune-datasets", repo, "out", "--purge", "out/r1", "--disassociate", "t", ok=False)
    assert "cannot be used together" in r.output
    r = run("prune-datasets", repo, "out", "--purge", "out", "--no-confirm", ok=False)
    assert "not a RUN" in r.output
    r = run("prune-datasets", repo, "out", "--disassociate", "raw/all", "--no-confirm", ok=False)
    assert "not TAGGED" in r.output
    r = run("prune-datasets", repo, "out*", "--unstore", "--no-confirm", ok=False)
    assert "--find-all" in r.output
    assert _count(repo, "arr", "raw/all") == 6 and _count(repo, "proc", "out/r1") == 6


def test_purge_of_an_output_chain_never_reaches_the_input_raws(repo):
    raws_before = _files(repo, "raw/all")
    assert len(raws_before) == 6
    r = run("prune-datasets", repo, "out", "--purge", "out/r1", "--no-confirm")
    # find-first along the chain: proc x6 and arr(e1,d0) in out/r1; the other 5 arr are raws.
    assert "7 dataset(s) removed completely" in r.output
    assert "5 dataset(s) found in out belong to other runs and are kept" in r.output
    assert _count(repo, "proc", "out/r1") == 0 and _count(repo, "arr", "out/r1") == 0
    assert _count(repo, "arr", "raw/all") == 6
    assert _files(repo, "raw/all") == raws_before
    assert not _files(repo, "out/r1")


def test_purge_find_all_still_only_in_the_run(repo):
    r = run("prune-datasets", repo, "out", "--purge", "out/r1", "--find-all", "--datasets", "arr",
            "--no-confirm")
    assert "1 dataset(s) removed completely" in r.output
    assert "6 dataset(s) found in out belong to other runs" in r.output
    assert _count(repo, "arr", "raw/all") == 6 and _count(repo, "proc", "out/r1") == 6


def test_unstore_is_find_first_unless_find_all(repo):
    run("prune-datasets", repo, "out", "--unstore", "--datasets", "arr", "--where", "exposure = 1 AND "
        "detector = 0", "--no-confirm")
    b = Butler(repo)
    first = b.find_dataset("arr", collections=["out/r1"], instrument="cam", exposure=1, detector=0)
    raw = b.find_dataset("arr", collections=["raw/all"], instrument="cam", exposure=1, detector=0)
    assert first is not None and raw is not None  # unstore keeps the registry entries
    assert not b.registry.get_file_records([first.id]) and b.registry.get_file_records([raw.id])
    b.close()
    run("prune-datasets", repo, "out", "--unstore", "--find-all", "--datasets", "arr", "--where",
        "exposure = 1 AND detector = 0", "--no-confirm")
    b = Butler(repo)
    assert not b.registry.get_file_records([raw.id])
    b.close()
    assert len(_files(repo, "raw/all")) == 5


def test_disassociate_only_from_the_tag(repo):
    run("associate", repo, "best", "--collections", "raw/all", "--datasets", "arr")
    r = run("prune-datasets", repo, "--disassociate", "best", "--where", "detector = 1", "--no-confirm")
    assert "3 dataset(s) disassociated from best" in r.output
    assert _count(repo, "arr", "best") == 3 and _count(repo, "arr", "raw/all") == 6


def test_confirmation_lists_and_asks(repo, monkeypatch):
    # Non-interactive standard input (a script, CI): refused with the fix, nothing removed.
    r = run("prune-datasets", repo, "out", "--purge", "out/r1", ok=False)
    assert "will be removed completely" in r.output and "proc" in r.output
    assert "not a terminal" in r.output and "--no-confirm" in r.output
    assert _count(repo, "proc", "out/r1") == 6
    monkeypatch.setattr(commands, "_stdin_is_interactive", lambda: True)
    r = run("prune-datasets", repo, "out", "--purge", "out/r1", input="n\n")
    assert "Continue?" in r.output and "Aborted; nothing was removed" in r.output
    assert _count(repo, "proc", "out/r1") == 6
    r = run("prune-datasets", repo, "out", "--purge", "out/r1", input="y\n")
    assert "7 dataset(s) removed completely" in r.output
    assert _count(repo, "proc", "out/r1") == 0 and _count(repo, "arr", "raw/all") == 6
    # --dry-run lists and never asks.
    r = run("prune-datasets", repo, "raw/all", "--unstore", "--dry-run")
    assert "6 dataset(s) will be unstored" in r.output and "Continue?" not in r.output
    assert len(_files(repo, "raw/all")) == 6


def test_remove_runs_confirms_and_unlinks(repo, monkeypatch):
    r = run("remove-runs", repo, "out/r1", ok=False)
    assert "will be unlinked from out" in r.output and "proc(6)" in r.output
    assert "not a terminal" in r.output
    r = run("remove-runs", repo, "out/r1", "--no-confirm", ok=False)
    assert "--force" in r.output
    assert _count(repo, "proc", "out/r1") == 6
    monkeypatch.setattr(commands, "_stdin_is_interactive", lambda: True)
    r = run("remove-runs", repo, "out/r1", input="n\n")
    assert "Aborted" in r.output and _count(repo, "proc", "out/r1") == 6
    r = run("remove-runs", repo, "out/r1", input="y\n")
    assert "Removed 1 run(s) and 7 dataset(s)" in r.output
    b = Butler(repo)
    assert list(b.registry.get_collection_chain("out")) == ["raw/all"]
    b.close()
    assert _count(repo, "arr", "raw/all") == 6 and not (repo / "out" / "r1").exists()


def test_remove_runs_force_without_confirmation(repo):
    r = run("remove-runs", repo, "out/r1", "--no-confirm", "--force")
    assert "Removed 1 run(s)" in r.output
    assert _count(repo, "arr", "raw/all") == 6


def test_remove_collections_confirms(repo, monkeypatch):
    r = run("remove-collections", repo, "out*", ok=False)
    assert "out" in r.output and "CHAINED" in r.output and "NOT removed" in r.output
    assert "not a terminal" in r.output
    monkeypatch.setattr(commands, "_stdin_is_interactive", lambda: True)
    r = run("remove-collections", repo, "out*", input="y\n")
    assert "Removed 1 collection(s): out" in r.output
    assert _count(repo, "proc", "out/r1") == 6
    r = run("remove-collections", repo, "out*", "--no-confirm", ok=False)
    assert "use remove-runs" in r.output


def test_certify_that_already_committed_is_nothing_to_do(repo):
    """Issue item: a repeated certify (e.g. a rerun main-job step) exits 0 with "nothing to do"."""
    run("register-dataset-type", repo, "bias", "NumpyArray", "detector", "--is-calibration")
    b = Butler(repo)
    b.put(np.zeros(2), "bias", instrument="cam", detector=0, run="calib/bias1")
    b.close()
    args = ["certify-calibrations", repo, "calib/bias1", "calib", "bias", "--begin-date", "2025-01-01",
            "--end-date", "2025-02-01"]
    assert "Certified 1 bias" in run(*args).output
    r = run(*args)
    assert "Nothing to do" in r.output and "already certified in calib" in r.output
    # Another range for the same dataset still conflicts (it is not the same certification).
    r = run("certify-calibrations", repo, "calib/bias1", "calib", "bias", "--begin-date", "2025-01-15",
            ok=False)
    assert "conflict" in r.output
