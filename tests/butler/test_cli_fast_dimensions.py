"""The CLI's sqlite3 fast path for ``query-dimension-records`` and ``query-data-ids``.

As ``test_cli_fast.py`` does for ``query-datasets``: every case runs the command with
``BUTLER_CLI_FAST=1`` and ``=0`` and compares stdout, stderr and exit status byte for byte; a
spy checks which cases the fast path answered; a subprocess checks SQLAlchemy is not imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from butler.registry import _sqlite_fast

from . import test_cli_fast as _base

_invoke = _base._invoke
_check = _base._check
world = _base.world  # the repository fixture of the query-datasets cases

RECORD_CASES = [
    # (element, extra arguments, fast path expected to answer)
    ("instrument", [], True),
    ("detector", [], True),
    ("exposure", [], True),
    ("physical_filter", [], True),
    ("band", [], True),
    ("day_obs", [], True),
    ("exposure", ["--where", "exposure.observation_type = 'flat'"], True),
    ("exposure", ["--where", "exposure IN (2..5) AND detector = 1"], False),
    ("exposure", ["--where", "band = 'g'"], True),
    ("exposure", ["--where", "exposure.timespan OVERLAPS T'2025-01-01T20:10:30'"], True),
    ("exposure", ["--where", "exposure.exposure_time * 2 > 20 OR exposure.obs_id = 'CAM_0001'"], True),
    ("exposure", ["--where", "physical_filter.band = 'r' AND instrument = 'cam'"], True),
    ("detector", ["--where", "detector.full_name = 'S02' OR detector > 2"], True),
    ("detector", ["--limit", "2"], True),
    ("exposure", ["--where", "exposure > 2", "--format", "json"], True),
    ("exposure", ["--where", "exposure > 2", "--format", "csv", "--limit", "3"], True),
    ("exposure", ["--where", "exposure > 100"], True),
    # The registry path: ordering and every error.
    ("exposure", ["--order-by", "-exposure"], False),
    ("nope", [], False),
    ("exposure", ["--where", "exposure.nofield = 1"], False),
    ("exposure", ["--where", "(exposure = 1"], False),
    ("exposure", ["--where", "exposure = 'x'"], False),
    ("exposure", ["--where", "visit = 3"], False),
]

DATA_ID_CASES = [
    (["exposure"], [], True),
    (["detector"], [], True),
    (["exposure", "detector"], [], True),
    (["exposure,detector"], ["--where", "detector IN (0..1) AND exposure.observation_type = 'flat'"], True),
    (["band"], [], True),
    (["physical_filter"], ["--where", "band = 'g'"], True),
    (["exposure"], ["--where", "exposure.timespan < T'2025-01-01T20:21:00'"], True),
    (["exposure", "detector"], ["--where", "detector.full_name = 'S02'", "--format", "json"], True),
    (["exposure", "detector"], ["--limit", "5", "--format", "csv"], True),
    (["day_obs"], [], True),
    (["instrument"], ["--where", "instrument = 'nope'"], True),
    (["exposure"], ["--datasets", "arr", "--collections", "raw/all"], True),
    (["exposure", "detector"], ["--datasets", "arr", "--collections", "redo"], True),
    (
        ["exposure", "detector"],
        ["--datasets", "arr", "--collections", "picked", "--where", "exposure > 2"],
        True,
    ),
    (["exposure"], ["--datasets", "meta,arr", "--collections", "chain"], True),
    (["detector"], ["--datasets", "bias", "--collections", "calib"], True),
    (["detector"], ["--datasets", "other"], True),
    (["exposure"], ["--datasets", "packages", "--collections", "misc", "--where", "exposure < 3"], True),
    (["exposure"], ["--datasets", "packages", "--collections", "raw/all"], True),
    (["exposure"], ["--datasets", "a*", "--collections", "r*", "--limit", "2"], True),
    (["band"], ["--datasets", "arr", "--collections", "redo"], True),
    (["exposure"], ["--collections", "nope"], True),
    # The registry path: ordering and every error.
    (["exposure"], ["--datasets", "nope", "--collections", "raw/all"], False),
    (["exposure"], ["--datasets", "arr", "--collections", "nope"], False),
    (["exposure"], ["--datasets", "arr", "--where", "arr.run = 'redo'"], False),
    (["exposure"], ["--order-by", "-exposure"], False),
    (["nope"], [], False),
    (["exposure"], ["--where", "detector = 1"], False),
    (["exposure"], ["--where", "exposure = 'x'"], False),
]


@pytest.fixture
def spy(monkeypatch):
    """Count the queries the fast path answered."""
    calls = {"answered": 0}
    for name in ("query_dimension_records", "query_data_ids"):
        real = getattr(_sqlite_fast.SqliteFastRegistry, name)

        def wrapped(*args, _real=real, **kwargs):
            out = _real(*args, **kwargs)
            calls["answered"] += 1
            return out

        monkeypatch.setattr(_sqlite_fast.SqliteFastRegistry, name, wrapped)
    return calls


@pytest.mark.parametrize("element,extra,answers", RECORD_CASES)
def test_records_identical(world, monkeypatch, spy, element, extra, answers):
    """query-dimension-records: fast path == registry path, byte for byte."""
    _check(world, monkeypatch, spy, ["query-dimension-records", world.root, element, *extra], answers)


@pytest.mark.parametrize("dims,extra,answers", DATA_ID_CASES)
def test_data_ids_identical(world, monkeypatch, spy, dims, extra, answers):
    """query-data-ids: fast path == registry path, byte for byte."""
    _check(world, monkeypatch, spy, ["query-data-ids", world.root, *dims, *extra], answers)


def test_records_nonempty(world, monkeypatch, spy):
    """The fast path really lists the records (with their timespans)."""
    code, out, _ = _check(
        world, monkeypatch, spy, ["query-dimension-records", world.root, "exposure", "--format", "csv"], True
    )
    assert len(out.strip().splitlines()) == 7 and "timespan (begin)" in out.splitlines()[0]


@pytest.mark.parametrize(
    "args",
    [
        ["query-dimension-records", "{root}", "exposure", "--where", "exposure.observation_type = 'flat'"],
        ["query-data-ids", "{root}", "exposure", "detector", "--where", "detector = 1"],
    ],
)
def test_no_sqlalchemy(world, args):
    """The new fast paths answer without importing SQLAlchemy."""
    if world.registry.db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    argv = [a.format(root=str(world.root)) for a in args]
    code = (
        "import sys\n"
        "from butler.cli import main\n"
        f"sys.argv = ['butler', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('SQLALCHEMY' if 'sqlalchemy' in sys.modules else 'NO-SQLALCHEMY')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[-1] == "NO-SQLALCHEMY"
    assert len(lines) > 3


def test_data_ids_with_datasets_found(world, monkeypatch, spy):
    """The fast path's dataset semi-joins keep exactly the data IDs with datasets."""
    args = [
        "query-data-ids",
        world.root,
        "exposure",
        "detector",
        "--datasets",
        "arr",
        "--collections",
        "redo",
    ]
    code, out, _ = _check(world, monkeypatch, spy, [*args, "--format", "json"], True)
    assert sorted((r["exposure"], r["detector"]) for r in json.loads(out)) == [(3, 0), (3, 1), (4, 0), (4, 1)]
    args = ["query-data-ids", world.root, "exposure", "--datasets", "packages", "--collections"]
    assert _invoke([*args, "raw/all"], True, monkeypatch)[1].strip() == "No data IDs found."
    code, out, _ = _invoke([*args, "misc", "--where", "exposure < 3", "--format", "json"], True, monkeypatch)
    assert [r["exposure"] for r in json.loads(out)] == [1, 2]
