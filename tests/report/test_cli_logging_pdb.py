"""``pipetask`` logging options (``--long-log``, ``--log-file``, ``--log-label``) and ``run --pdb``."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import _toy_tasks as toy
import pytest
from click.testing import CliRunner

from butler.cli_logging import LONG_LOG_FORMAT, parse_labels, parse_levels, setup_logging

TOY_YAML = toy.TOY_PIPELINE_YAML


@pytest.fixture
def toy_env(tmp_path: Path) -> tuple[Path, Path]:
    """(repository root, pipeline file) of a 2 x 1 toy repository."""
    butler, _ = toy.make_toy_repo(tmp_path / "repo", 2, 1, shape=(8, 8))
    pipe = tmp_path / "toy.yaml"
    pipe.write_text(TOY_YAML)
    return Path(butler.root), pipe


def _pipetask(*args: str, input: str | None = None) -> Any:
    from pipeline.cli import pipetask

    return CliRunner().invoke(pipetask, list(args), input=input, catch_exceptions=False)


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    from butler.cli_logging import installed_handlers

    for h in installed_handlers():
        root.removeHandler(h)
        h.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_parse_levels_and_labels() -> None:
    assert parse_levels(["INFO", "ccdflow.exec=debug,butler=WARNING"]) == [
        ("", logging.INFO),
        ("ccdflow.exec", logging.DEBUG),
        ("butler", logging.WARNING),
    ]
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        parse_levels(["x=LOUD"])
    assert parse_labels(["night=20150520", "site=lick,run=a"]) == {
        "NIGHT": "20150520",
        "SITE": "lick",
        "RUN": "a",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_labels(["nolabel"])


def test_long_log_labels_and_json_file(tmp_path: Path) -> None:
    text, js = tmp_path / "log.txt", tmp_path / "log.json"
    setup_logging(["INFO"], [str(text), str(js)], long_log=True, log_labels=["night=20150520"], log_tty=False)
    logging.getLogger("ccdflow.test").info("hello %s", "world")
    for h in logging.getLogger().handlers:
        h.flush()
    line = text.read_text().strip().splitlines()[-1]
    # LONG_LOG_FORMAT: level, ISO time, logger, ({labels}), (file:line) - message
    assert LONG_LOG_FORMAT.startswith("%(levelname)s %(asctime)s %(name)s")
    assert line.startswith("INFO 20") and " ccdflow.test ({NIGHT=20150520})(test_cli_logging_pdb.py:" in line
    assert line.endswith(" - hello world")
    rec = json.loads(js.read_text().strip().splitlines()[-1])
    assert rec["message"] == "hello world" and rec["levelname"] == "INFO" and rec["name"] == "ccdflow.test"
    assert rec["MDC"] == {"NIGHT": "20150520"}


def test_pipetask_log_options(toy_env: tuple[Path, Path], tmp_path: Path) -> None:
    repo, pipe = toy_env
    js = tmp_path / "run.json"
    r = _pipetask(
        "run",
        "-b",
        str(repo),
        "-p",
        str(pipe),
        "-i",
        toy.TOY_RAW_RUN,
        "-o",
        "u/log",
        "--register-dataset-types",
        "--no-progress",
        "--log-level",
        "INFO",
        "--long-log",
        "--log-label",
        "LABEL=night1",
        "--log-file",
        str(js),
    )
    assert r.exit_code == 0, r.output
    records = [json.loads(x) for x in js.read_text().splitlines()]
    assert records and all(rec["MDC"].get("LABEL") == "night1" for rec in records)
    assert any(rec["name"].startswith("ccdflow.") for rec in records), {rec["name"] for rec in records}
    r = _pipetask("build", "-p", str(pipe), "--log-label", "oops")
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
    r = _pipetask("build", "-p", str(pipe), "--log-level", "LOUD")
    assert r.exit_code == 2 and "unknown log level 'LOUD'" in r.output


def test_run_pdb_post_mortem(toy_env: tuple[Path, Path]) -> None:
    """--pdb stops at the failing quantum's exception; the debugger sees the task's frame."""
    repo, pipe = toy_env
    cmd = [
        str(Path(sys.executable).parent / "pipetask"),
        "run",
        "-b",
        str(repo),
        "-p",
        str(pipe),
        "-i",
        toy.TOY_RAW_RUN,
        "-o",
        "u/pdb",
        "-c",
        "subtractMedian:fail_on=[1]",
        "--register-dataset-types",
        "--no-progress",
        "--pdb",
    ]
    proc = subprocess.run(
        cmd, input="p ('exposure seen by pdb:', exposure)\nc\n", capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "--pdb: quantum subtractMedian" in proc.stdout
    assert "-> raise RuntimeError" in proc.stdout
    assert "('exposure seen by pdb:', 1)" in proc.stdout
    assert "1 failed" in proc.stdout
    for bad in (["-j", "2"], ["--executor", "pool"]):
        r = _pipetask(
            "run", "-b", str(repo), "-p", str(pipe), "-i", toy.TOY_RAW_RUN, "-o", "u/pdb2", "--pdb", *bad
        )
        assert r.exit_code == 2 and "--pdb needs the serial executor" in r.output
