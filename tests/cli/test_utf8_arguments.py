r"""Arguments that are not UTF-8 (raw bytes, lone surrogates): one usage error naming the argument.

Issue reproduction: ``butler query-datasets REPO raw --where "instrument = '<0xff>'"`` printed
``Error: 'utf-8' codec can't encode character '\udcff' ... surrogates not allowed``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from butler import Butler
from butler.cli import cli as butler_cli
from butler.cli_args import check_utf8_arguments
from pipeline.cli import pipetask


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


@pytest.fixture
def repo(tmp_path):
    """Return the path of an empty repository."""
    Butler.create(tmp_path / "repo").close()
    return tmp_path / "repo"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["query-datasets", "{repo}", "raw", "--where", b"instrument = '\xff'"],
            "argument 5 (after --where) is not valid UTF-8 text: 'instrument = '\\xff'' "
            "(invalid at character 15)",
        ),
        (
            ["query-datasets", "{repo}", "raw", b"--collections=a\xed\xa0\x80"],
            "argument 4 (the value of --collections) is not valid UTF-8 text: "
            "'--collections=a\\xed\\xa0\\x80'",
        ),
        (["register-dataset-type", "{repo}", b"x\xff", "NumpyArray"], "argument 3 is not valid UTF-8 text"),
        (
            ["ingest-raws", "{repo}", b"/tmp/\xc3(.fits"],
            "argument 3 is not valid UTF-8 text: '/tmp/\\xc3(.fits'",
        ),
    ],
)
def test_butler_refuses_non_utf8_arguments(repo, args, expected):
    """Real command line (bytes): exit status 2, one error line naming the argument, no traceback."""
    argv = [a.replace("{repo}", str(repo)).encode() if isinstance(a, str) else a for a in args]
    r = subprocess.run(
        [_tool("butler").encode(), *argv], capture_output=True, env=dict(os.environ, LANG="C.UTF-8")
    )
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert expected in err and "UnicodeEncodeError" not in err and "Traceback" not in err
    assert "pass names, paths and expressions in UTF-8" in err
    assert r.stdout == b""


def test_pipetask_refuses_non_utf8_arguments(repo):
    """``pipetask build -p <bytes>`` and ``pipetask run -o <bytes>``: the same error, nothing created."""
    r = subprocess.run([_tool("pipetask").encode(), b"build", b"-p", b"\xff.yaml"], capture_output=True)
    assert r.returncode == 2
    assert (
        "argument 3 (after -p) is not valid UTF-8 text: '\\xff.yaml' (invalid at character 1)"
        in r.stderr.decode()
    )
    r = subprocess.run(
        [
            _tool("pipetask").encode(),
            b"run",
            b"-b",
            str(repo).encode(),
            b"-p",
            b"cpBias.yaml",
            b"-o",
            b"u/\xff",
        ],
        capture_output=True,
    )
    assert (
        r.returncode == 2 and "argument 7 (after -o) is not valid UTF-8 text: 'u/\\xff'" in r.stderr.decode()
    )
    assert Butler(repo).registry.query_collections() == []


def test_lone_surrogates_from_python_callers():
    """A lone surrogate that is no escaped byte (from Python code) is refused too, printed escaped."""
    r = CliRunner().invoke(butler_cli, ["query-collections", "repo\ud800x"])
    assert r.exit_code == 2 and "argument 2 is not valid UTF-8 text: 'repo\\ud800x'" in r.output
    r = CliRunner().invoke(pipetask, ["build", "-t", "\udcff"])
    assert r.exit_code == 2 and "argument 3 (after -t)" in r.output
    check_utf8_arguments(["query-datasets", "répertoire", "—", "raw"])  # valid non-ASCII text passes
