"""``butler export / import / transfer-datasets / retrieve-artifacts / get`` through click."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from butler import Butler, DatasetType
from butler.cli import cli

from .conftest import fill_dimensions, invoke_butler


def run(*args, ok: bool = True):
    return invoke_butler(*args, ok=ok, codes=(1,))


@pytest.fixture
def cli_repo(tmp_path):
    root = tmp_path / "repo"
    b = Butler.create(root)
    fill_dimensions(b.registry)
    b.registry.register_dataset_type(DatasetType("arr", ["exposure", "detector"], "NumpyArray"))
    b.registry.register_dataset_type(DatasetType("stats", ["detector"], "StructuredDataDict"))
    for e in (1, 2, 3):
        for d in (0, 1):
            b.put(np.full(3, 10.0 * e + d), "arr", instrument="cam", exposure=e, detector=d, run="raw/all")
    for d in (0, 1):
        b.put({"gain": {"A": 1.5 + d, "B": float("nan")}, "n": [1, 2]}, "stats", instrument="cam",
              detector=d, run="cp/run")
    b.close()
    return root


def test_export_import_cli(cli_repo, tmp_path):
    r = run("export", cli_repo, tmp_path / "exp", "-t", "arr", "--where", "exposure = 2",
            "--transfer", "copy")
    assert "Exported 2 dataset(s) in 2 file(s)" in r.output
    doc = yaml.safe_load((tmp_path / "exp" / "export.yaml").read_text())
    exps = [d for d in doc["data"] if d["type"] == "dimension" and d["element"] == "exposure"]
    assert [rec["id"] for rec in exps[0]["records"]] == [2]
    run("create", tmp_path / "dest")
    r = run("import", tmp_path / "dest", tmp_path / "exp")
    assert "Imported 2 dataset(s) in 2 file(s)" in r.output and "Collections created: raw/all" in r.output
    r = run("import", tmp_path / "dest", tmp_path / "exp")
    assert "Imported 0 dataset(s)" in r.output and "2 dataset(s) already present" in r.output
    r = run("export", cli_repo, tmp_path / "exp", ok=False)
    assert "not an empty directory" in r.output
    r = run("import", tmp_path / "dest", tmp_path / "nothing", ok=False)
    assert "no export file" in r.output


def test_transfer_datasets_cli(cli_repo, tmp_path):
    run("create", tmp_path / "dest")
    r = run("transfer-datasets", cli_repo, tmp_path / "dest", "--collections", "raw/all", ok=False)
    assert "--register-dataset-types" in r.output
    r = run("transfer-datasets", cli_repo, tmp_path / "dest", "--collections", "raw/all", "--dry-run")
    assert "Would transfer 6 dataset(s) in 6 file(s)" in r.output
    r = run("transfer-datasets", cli_repo, tmp_path / "dest", "--register-dataset-types")
    assert "Number of datasets transferred: 8" in r.output
    b = Butler(tmp_path / "dest")
    assert b.get("arr", instrument="cam", exposure=3, detector=1, collections="raw/all")[0] == 31.0


def test_retrieve_artifacts_cli(cli_repo, tmp_path):
    r = run("retrieve-artifacts", cli_repo, tmp_path / "out", "-t", "arr", "--where", "detector = 1",
            "--no-preserve-path")
    assert "Number of artifacts retrieved into destination" in r.output and r.output.rstrip().endswith(": 3")
    assert sorted(p.suffix for p in (tmp_path / "out").iterdir()) == [".npy"] * 3
    r = run("retrieve-artifacts", cli_repo, tmp_path / "out", "-t", "arr", "--where", "detector = 1",
            "--no-preserve-path", ok=False)
    assert "already exists" in r.output
    run("retrieve-artifacts", cli_repo, tmp_path / "out", "-t", "arr", "--where", "detector = 1",
        "--no-preserve-path", "--clobber")


def test_get_cli(cli_repo, tmp_path):
    r = run("get", cli_repo, "stats", "-d", "instrument=cam,detector=1", "--collections", "cp/run")
    assert json.loads(r.output) == {"gain": {"A": 2.5, "B": None}, "n": [1, 2]}
    r = run("get", cli_repo, "arr", "-d", "instrument=cam", "-d", "exposure=2", "-d", "detector=0",
            "--collections", "raw/all", "--format", "yaml")
    assert yaml.safe_load(r.output) == [20.0, 20.0, 20.0]
    run("get", cli_repo, "arr", "-d", "instrument=cam,exposure=2,detector=0", "--collections", "raw/all",
        "--format", "fits", "-o", tmp_path / "a.fits")
    from astropy.io import fits

    assert fits.getdata(tmp_path / "a.fits").tolist() == [20.0, 20.0, 20.0]
    r = run("get", cli_repo, "stats", "-d", "instrument=cam,detector=1", "--collections", "cp/run",
            "--format", "fits", "-o", tmp_path / "s.fits", ok=False)
    assert "no FITS form" in r.output
    r = run("get", cli_repo, "stats", "-d", "instrument=cam,detector=3", "--collections", "cp/run", ok=False)
    assert "no stats dataset" in r.output


@pytest.fixture
def restore_logging():
    """Undo the CLI's logging set-up (handlers and levels) after a test."""
    import logging

    from butler import cli_logging

    root = logging.getLogger()
    saved = root.level
    yield
    for h in cli_logging._INSTALLED:
        root.removeHandler(h)
        h.close()
    cli_logging._INSTALLED.clear()
    root.setLevel(saved)
    for name in ("butler", "butler.transfers"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_logging_options(cli_repo, tmp_path, restore_logging):
    log = tmp_path / "log.json"
    txt = tmp_path / "log.txt"
    run("--log-level", "butler.transfers=DEBUG", "--log-file", log, "--log-file", txt, "--long-log",
        "--log-label", "LABEL=night1", "export", cli_repo, tmp_path / "exp", "-t", "arr")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records and {r["name"] for r in records} == {"butler.transfers"}
    assert {r["MDC"]["LABEL"] for r in records} == {"night1"}
    assert any(r["levelname"] == "DEBUG" and r["message"].startswith("exported ") for r in records)
    assert any(r["levelname"] == "INFO" and r["message"].startswith("selected 6 dataset(s)") for r in records)
    first = txt.read_text().splitlines()[0]
    assert first.startswith("INFO ") and " butler.transfers ({LABEL=night1})(_export.py:" in first
    result = CliRunner().invoke(cli, ["--log-level", "nonsense", "query-collections", str(cli_repo)])
    assert result.exit_code == 2 and "unknown log level 'nonsense'" in result.output
    result = CliRunner().invoke(cli, ["--log-label", "oops", "query-collections", str(cli_repo)])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    # Only the root (or 'butler') at DEBUG shows tracebacks; a component level does not.
    r = run("--log-level", "butler.registry=DEBUG", "import", cli_repo, tmp_path / "none", ok=False)
    assert "no export file" in r.output
    args = ["--log-level", "DEBUG", "import", str(cli_repo), str(tmp_path / "none")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and result.exception is not None
