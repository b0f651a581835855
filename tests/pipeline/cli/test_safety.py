"""``pipetask run`` when the repository cannot be written, the disk is full, an attempt was
interrupted, the inputs changed, or nothing is left to do.

Each test reproduces a defect of the reliability campaign: tracebacks or raw SQL for a read-only
repository or a full disk, an empty RUN and CHAINED collection left behind by a failed ``-o``,
temporary and unregistered files left in a RUN, inputs silently merged into an output chain, and
exit status 1 for a rerun with nothing to do. Read-only cases run twice where possible: with a
real read-only path (``chmod``, or ``chattr +i`` as root, since root ignores permissions) and with
an injected ``EACCES``/SQLite error, which always runs.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import _toy_tasks as toy
from butler import Butler
from pipeline.cli import pipetask

TOY_YAML = toy.TOY_PIPELINE_YAML


@pytest.fixture
def repo(toy_repo: Any, tmp_path: Path) -> tuple[Path, Path, dict[tuple[int, int], float]]:
    butler, medians = toy_repo
    root = Path(butler.root)
    butler.close()
    pipe = tmp_path / "toy.yaml"
    pipe.write_text(TOY_YAML)
    return root, pipe, medians


def _run(root: Path, pipe: Path, *args: str) -> Any:
    result = CliRunner().invoke(pipetask, ["run", "-b", str(root), "-p", str(pipe), "--register-dataset-types",
                                           "--no-progress", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert "SELECT" not in result.output and "INSERT" not in result.output  # no raw SQL
    return result


def _collections(root: Path) -> set[str]:
    with Butler(root) as b:
        return set(b.registry.query_collections("*"))


def _check_outputs(root: Path, collection: str, medians: dict[tuple[int, int], float]) -> None:
    with Butler(root) as b:
        for e in (1, 2, 3):
            for d in (0, 1):
                out = b.get("toyCalexp", collections=[collection], instrument=toy.TOY_INSTRUMENT, exposure=e,
                            detector=d)
                raw = b.get("toyRaw", collections=[toy.TOY_RAW_RUN], instrument=toy.TOY_INSTRUMENT, exposure=e,
                            detector=d)
                np.testing.assert_allclose(out, raw.astype(np.float32) - medians[(e, d)])


def _files_not_registered(root: Path, run: str) -> list[Path]:
    with Butler(root) as b:
        registered = {Path(b.get_uri(r)).resolve() for r in b.query_datasets("*", collections=[run])}
    return [p for p in (root / run).rglob("*") if p.is_file() and p.resolve() not in registered]


@contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """Make ``path`` read-only for this process: chmod, or ``chattr +i`` as root; skip if impossible."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)],
                                                         capture_output=True).returncode != 0:
        pytest.skip("running as root without a working chattr: no way to make a path read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


# ----------------------------------------------------------------------------- read-only (item 6)
def test_read_only_output_directory(repo: Any) -> None:
    root, pipe, _ = repo
    (root / "u").mkdir()
    before = _collections(root)
    with _read_only(root / "u"):
        r = _run(root, pipe, "-i", toy.TOY_RAW_RUN, "-o", "u/ro")
    assert r.exit_code == 1
    assert str(root / "u") in r.output and "cannot be written" in r.output
    assert r.output.count("Error:") == 1
    assert _collections(root) == before  # no empty RUN, no CHAINED collection


def test_read_only_output_directory_injected(repo: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with an injected EACCES: runs as root too."""
    root, pipe, _ = repo
    import tempfile

    def denied(*args: Any, dir: Any = None, **kwargs: Any) -> Any:  # noqa: A002 - mkstemp's name
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    before = _collections(root)
    r = _run(root, pipe, "-i", toy.TOY_RAW_RUN, "-o", "u/ro")
    assert r.exit_code == 1 and "cannot be written" in r.output and str(root) in r.output
    assert _collections(root) == before


def _clean_copy(root: Path, dest: Path) -> Path:
    """Copy a repository with its registry checkpointed (no -wal file), as a fresh process sees it."""
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns("registry.sqlite3*"))
    src, dst = sqlite3.connect(root / "registry.sqlite3"), sqlite3.connect(dest / "registry.sqlite3")
    src.backup(dst)
    src.close()
    dst.close()
    return dest


def _pipetask_subprocess(root: Path, pipe: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    cmd = [sys.executable, "-c", "from pipeline.cli import pipetask; pipetask()", "run", "-b", str(root), "-p",
           str(pipe), "--register-dataset-types", "--no-progress", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("what", ["registry file", "repository"])
def test_read_only_registry(repo: Any, tmp_path: Path, what: str) -> None:
    root, pipe, _ = repo
    copy = _clean_copy(root, tmp_path / "copy")
    before = _collections(copy)
    paths = [copy / "registry.sqlite3"] + ([copy] if what == "repository" else [])
    with _read_only(paths[0]), (_read_only(paths[1]) if len(paths) > 1 else _nothing()):
        r = _pipetask_subprocess(copy, pipe, "-i", toy.TOY_RAW_RUN, "-o", "u/ro")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out and "INSERT" not in out and out.count("Error:") == 1
    if what == "repository":
        assert f"repository directory {copy} is read-only" in out
    else:
        assert "registry database" in out and "read-only" in out and "registry.sqlite3" in out
    assert _collections(copy) == before


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@pytest.mark.parametrize("fast", ["1", "0"])
def test_read_only_repository_can_be_read(repo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          fast: str) -> None:
    """A repository in a directory nobody may write (a read-only mount, another user's, an archive)
    is queried, read and planned; it used to fail at the registry's WAL files even for a query."""
    root, pipe, medians = repo
    copy = _clean_copy(root, tmp_path / "copy")
    assert not (copy / "registry.sqlite3-wal").exists()
    monkeypatch.setenv("BUTLER_CLI_FAST", fast)  # the sqlite3 fast path, and the SQLAlchemy path
    from butler.cli import cli

    with _read_only(copy / "registry.sqlite3"), _read_only(copy):
        r = CliRunner().invoke(cli, ["query-datasets", str(copy), "toyRaw", "--collections", toy.TOY_RAW_RUN])
        assert r.exit_code == 0, r.output
        assert sum("toyRaw" in line for line in r.output.splitlines()) == 6
        r = CliRunner().invoke(cli, ["query-data-ids", str(copy), "exposure", "detector", "--datasets", "toyRaw",
                                     "--collections", toy.TOY_RAW_RUN, "--where", "exposure = 2"])
        assert r.exit_code == 0, r.output
        assert len([line for line in r.output.splitlines() if line.startswith(toy.TOY_INSTRUMENT)]) == 2
        with Butler(copy, writeable=False) as b:
            raw = b.get("toyRaw", collections=[toy.TOY_RAW_RUN], instrument=toy.TOY_INSTRUMENT, exposure=2,
                        detector=1)
        assert float(np.median(raw)) == medians[(2, 1)]
        r = CliRunner().invoke(pipetask, ["qgraph", "-b", str(copy), "-p", str(pipe), "-i", toy.TOY_RAW_RUN,
                                          "-o", "u/plan"])
        assert r.exit_code == 0, r.output
        assert "subtractMedian  6" in r.output
        # Writing is still refused, with the way to read it.
        with pytest.raises(Exception, match="cannot be opened there for writing.*writeable=False"):
            Butler(copy)
    assert sorted(p.name for p in copy.iterdir()) == ["ToyCam", "butler.yaml", "registry.sqlite3"]


@pytest.mark.parametrize("fast", ["0", "1"])
def test_read_only_registry_injected(repo: Any, monkeypatch: pytest.MonkeyPatch, fast: str) -> None:
    """SQLite refuses the first registry write: one line, nothing registered (registry and run writer)."""
    import sqlalchemy as sa

    from butler.registry._sqlite_run_writer import SqliteRunWriter
    from butler.registry.registry import Registry

    root, pipe, _ = repo
    monkeypatch.setenv("BUTLER_CLI_FAST", fast)

    def readonly(self: Any, *a: Any, **k: Any) -> None:
        raise sa.exc.OperationalError("INSERT INTO collection (name, type) VALUES (?, ?)", ("u/ro", 1),
                                      sqlite3.OperationalError("attempt to write a readonly database"))

    used = []

    def readonly_sqlite3(self: Any, *a: Any, **k: Any) -> None:
        used.append(self)
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(SqliteRunWriter, "register_run", readonly_sqlite3)
    monkeypatch.setattr(Registry, "register_run", readonly)
    r = _run(root, pipe, "-i", toy.TOY_RAW_RUN, "-o", "u/ro")
    assert r.exit_code == 1 and "registry database" in r.output and "read-only" in r.output
    assert bool(used) == (fast == "1")
    assert "INSERT INTO" not in r.output
    monkeypatch.undo()
    assert "u/ro" not in _collections(root)


# ----------------------------------------------------------------------------- full disk (items 6, 3)
def _enospc_for(monkeypatch: pytest.MonkeyPatch, names: set[str]) -> None:
    """Make every write of a dataset type in ``names`` fail with ENOSPC (the driver's and the workers')."""
    from butler.datastore.file_datastore import FileDatastore

    original = FileDatastore.prepare_write

    def prepare_write(self: Any, obj: Any, ref: Any) -> Any:
        if ref.dataset_type.name in names or "*" in names:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.root / ref.run / ".x.tmp"))
        return original(self, obj, ref)

    monkeypatch.setattr(FileDatastore, "prepare_write", prepare_write)


def test_full_disk_before_anything_is_registered(repo: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root, pipe, _ = repo
    before = _collections(root)
    _enospc_for(monkeypatch, {"packages"})  # the last init-output: configs were written first
    r = _run(root, pipe, "-i", toy.TOY_RAW_RUN, "-o", "u/full")
    assert r.exit_code == 1 and "disk is full" in r.output and r.output.count("Error:") == 1
    assert _collections(root) == before
    assert not (root / "u" / "full").exists() or not [p for p in (root / "u" / "full").rglob("*") if p.is_file()]


def test_full_disk_during_the_run_then_rerun(repo: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    root, pipe, medians = repo
    _enospc_for(monkeypatch, {"toyCalexp"})
    r = _run(root, pipe, "-i", toy.TOY_RAW_RUN, "-o", "u/full")
    assert r.exit_code == 1
    assert "disk is full" in r.output and "--extend-run --skip-existing" in r.output
    assert "FAILED" not in r.output  # one message, not one per quantum
    monkeypatch.undo()
    r = _run(root, pipe, "-o", "u/full", "--extend-run", "--skip-existing", "--clobber-outputs")
    assert r.exit_code == 0, r.output
    _check_outputs(root, "u/full", medians)
    with Butler(root) as b:
        run = b.registry.get_collection_chain("u/full")[0]
    assert _files_not_registered(root, run) == []


@pytest.mark.parametrize("fast", ["0", "1"])
def test_registration_on_a_full_disk_then_rerun(repo: Any, monkeypatch: pytest.MonkeyPatch, fast: str) -> None:
    """The registry's disk fills up: files written, not registered; the rerun removes and redoes them.

    With ``fast``: the registrations of the SQLAlchemy-free run writer fail the same way.
    """
    import sqlalchemy as sa

    from butler.registry._sqlite_run_writer import SqliteRunWriter

    root, pipe, medians = repo
    monkeypatch.setenv("BUTLER_CLI_FAST", fast)

    def full(self: Any, items: Any) -> None:
        with self.registry.transaction():
            raise sa.exc.OperationalError("INSERT INTO dataset (id) VALUES (?)", (1,),
                                          sqlite3.OperationalError("database or disk is full"))

    used = []

    def full_sqlite3(self: Any, items: Any) -> None:
        used.append(self)
        with self.transaction():
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Butler, "register_outputs", full)
    monkeypatch.setattr(SqliteRunWriter, "register_outputs", full_sqlite3)
    r = _run(root, pipe, "-i", toy.TOY_RAW_RUN, "-o", "u/full2")
    assert r.exit_code == 1 and "disk" in r.output and "full" in r.output
    assert bool(used) == (fast == "1")
    monkeypatch.undo()
    with Butler(root) as b:
        run = b.registry.get_collection_chain("u/full2")[0]
    assert _files_not_registered(root, run)  # the reproduction: outputs and _log files on disk, unregistered
    r = _run(root, pipe, "-o", "u/full2", "--extend-run", "--skip-existing")
    assert r.exit_code == 0, r.output
    _check_outputs(root, "u/full2", medians)
    assert _files_not_registered(root, run) == []


# ----------------------------------------------------------------------------- stale temporaries (item 3)
def test_rerun_removes_stale_temporary_files_of_its_run_only(repo: Any) -> None:
    root, pipe, medians = repo
    r = _run(root, pipe, "-i", toy.TOY_RAW_RUN, "-o", "u/tmp", "-d", "exposure = 1")
    assert r.exit_code == 0, r.output
    with Butler(root) as b:
        run = b.registry.get_collection_chain("u/tmp")[0]
        b.registry.register_run(run + "/nested")  # another RUN inside this run's directory
    # What kill -9 of a worker or the driver leaves: partial files beside their final paths.
    stale = [root / run / "toyCalexp" / ".toyCalexp_ToyCam_S001.0123456789ab.tmp.npy",
             root / run / ".packages_x.a1b2c3d4e5f6.tmp.yaml"]
    other = root / run / "nested" / ".toyCalexp_y.0123456789ab.tmp.npy"
    for p in [*stale, other]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    r = _run(root, pipe, "-o", "u/tmp", "--extend-run", "--skip-existing")
    assert r.exit_code == 0, r.output
    assert not any(p.exists() for p in stale)
    assert other.exists()  # a file of another RUN is not this run's to remove
    _check_outputs(root, "u/tmp", medians)


# ----------------------------------------------------------------------------- nothing to do (item 25)
def test_rerun_with_nothing_left_to_do_exits_0(repo: Any) -> None:
    root, pipe, _ = repo
    assert _run(root, pipe, "-i", toy.TOY_RAW_RUN, "-o", "u/done").exit_code == 0
    r = _run(root, pipe, "-o", "u/done", "--extend-run", "--skip-existing")
    assert r.exit_code == 0, r.output
    assert "Nothing to do" in r.output and "already finished" in r.output


# ----------------------------------------------------------------------------- inputs differ (item 2)
def test_other_inputs_for_an_existing_chain_need_rebase(repo: Any) -> None:
    root, pipe, medians = repo
    assert _run(root, pipe, "-i", toy.TOY_RAW_RUN, "-o", "u/chain").exit_code == 0
    with Butler(root) as b:
        b.registry.register_run("u/extra")
        first = list(b.registry.get_collection_chain("u/chain"))
    r = _run(root, pipe, "-i", "u/extra," + toy.TOY_RAW_RUN, "-o", "u/chain")
    assert r.exit_code == 1 and "inputs differ" in r.output and "--rebase" in r.output
    with Butler(root) as b:
        assert list(b.registry.get_collection_chain("u/chain")) == first  # unchanged
    r = _run(root, pipe, "-i", "u/extra," + toy.TOY_RAW_RUN, "-o", "u/chain", "--rebase",
             "--output-run", "u/chain/second")  # (a timestamped run of the same second would clash)
    assert r.exit_code == 0, r.output
    with Butler(root) as b:
        chain = list(b.registry.get_collection_chain("u/chain"))
    assert chain == ["u/chain/second", first[0], "u/extra", toy.TOY_RAW_RUN]
    _check_outputs(root, "u/chain", medians)
