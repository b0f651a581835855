"""The CLI's sqlite3 fast path for ``query-datasets`` gives exactly the registry path's output.

Every case runs the command twice in-process (``BUTLER_CLI_FAST=1`` and ``=0``) and compares
stdout, stderr and exit status byte for byte; a spy checks the fast path really answered the
cases it supports. One subprocess run checks that SQLAlchemy is not even imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from butler import CollectionType, DatasetType
from butler.cli import cli
from butler.registry import _sqlite_fast, backends

from .conftest import exposure_span


@pytest.fixture
def world(filled):
    """Return ``filled`` plus datasets in two runs, a tag, a chain and a calibration collection."""
    b, reg = filled, filled.registry
    for e in (1, 2, 3, 4, 5, 6):
        for d in (0, 1, 2):
            b.put(np.full(2, 10.0 * e + d), "arr", instrument="cam", exposure=e, detector=d, run="raw/all")
    for e in (3, 4):
        for d in (0, 1):
            b.put(np.zeros(2), "arr", instrument="cam", exposure=e, detector=d, run="redo")
        b.put({"e": e}, "meta", instrument="cam", exposure=e, run="redo")
    reg.register_collection("picked", CollectionType.TAGGED)
    reg.associate("picked", b.query_datasets("arr", collections="raw/all", where="detector = 2"))
    reg.set_collection_chain("chain", ["redo", "raw/all"])
    bias = [b.put(np.ones(2), "bias", instrument="cam", detector=d, run="calib/run") for d in (0, 1)]
    reg.register_collection("calib", CollectionType.CALIBRATION)
    reg.certify("calib", bias, exposure_span(1).__class__(exposure_span(1).begin, None))
    reg.register_dataset_type(DatasetType("other", ["detector"], "StructuredDataDict"))
    b.put({"x": 1}, "other", instrument="cam", detector=3, run="misc")
    reg.register_dataset_type(DatasetType("packages", [], "StructuredDataDict"))  # no dimensions
    b.put({"numpy": "2"}, "packages", run="misc")
    b.put({"numpy": "1"}, "packages", run="redo")
    return b


def _invoke(args, fast: bool, monkeypatch):
    monkeypatch.setenv("BUTLER_CLI_FAST", "1" if fast else "0")
    r = CliRunner().invoke(cli, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


def _check(world, monkeypatch, spy, args, answers):
    """Run the command with and without the fast path: same output; the spy saw it answer (or not)."""
    if world.registry.db.engine.dialect.name != "sqlite":
        pytest.skip("the fast path is for SQLite repositories")
    fast = _invoke(args, True, monkeypatch)
    assert spy["answered"] == (1 if answers else 0)
    slow = _invoke(args, False, monkeypatch)
    assert spy["answered"] == (1 if answers else 0)
    assert fast == slow
    if answers:
        assert fast[0] == 0
    return fast


@pytest.fixture
def spy(monkeypatch):
    """Count the queries the fast path answered."""
    calls = {"answered": 0}
    real = _sqlite_fast.SqliteFastRegistry.query_datasets

    def wrapped(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["answered"] += 1
        return out

    monkeypatch.setattr(_sqlite_fast.SqliteFastRegistry, "query_datasets", wrapped)
    return calls


CASES = [
    # (dataset types, collections, where, extra options, fast path expected to answer)
    (["arr"], ["raw/all"], "", [], True),
    (["arr"], ["raw/all"], "exposure = 3", [], True),
    (["arr"], ["raw/all"], "detector IN (0..1) AND exposure.observation_type = 'flat'", [], True),
    (["arr"], ["raw/all"], "exposure IN (1..6:2) OR detector.full_name = 'S02'", [], True),
    (["arr"], ["raw/all"], "NOT (physical_filter = 'r_01') AND band = 'g'", [], True),
    (["arr"], ["raw/all"], "GLOB(exposure.obs_id, 'CAM_000[12]')", [], True),
    (["arr"], ["raw/all"], "exposure.timespan OVERLAPS T'2025-01-01T20:10:30'", [], True),
    (["arr"], ["raw/all"], "exposure.timespan OVERLAPS (T'2025-01-01T20:00', T'2025-01-01T20:25')", [], True),
    (["arr"], ["raw/all"], "exposure.timespan < T'2025-01-01T20:21:00'", [], True),
    (["arr"], ["raw/all"], "exposure.timespan.begin >= T'2025-01-01T20:30:00'", [], True),
    (["arr"], ["raw/all"], "exposure.exposure_time / 2 > 7 AND exposure.dark_time - 1 < 100", [], True),
    (["arr"], ["raw/all"], "exposure.exposure_time * 2 + 1 = 31 OR exposure % 5 = 0", [], True),
    (["arr"], ["raw/all"], "-exposure.exposure_time < -20", [], True),
    (["arr"], ["raw/all"], "arr.run = 'raw/all' AND arr.ingest_date > T'2020-01-01T00:00:00'", [], True),
    (["arr"], ["raw/all"], "day_obs = 20250101 AND instrument = 'cam' AND detector != 1", [], True),
    (["arr"], ["raw/all"], "exposure.observation_type = 'it''s'", [], True),
    (["arr"], ["chain"], "detector = 0", [], True),
    (["arr"], ["chain"], "detector = 0", ["--find-first"], True),
    (["arr"], ["chain"], "arr.collection = 'redo'", ["--find-first"], True),
    (["arr"], ["picked", "redo"], "", ["--find-first"], True),
    (["arr"], ["picked", "redo"], "", [], True),
    (["arr"], ["r*"], "exposure > 2", [], True),
    (["arr", "meta"], None, "exposure = 4", [], True),
    (["*"], None, "", [], True),
    (["*"], None, "detector = 1", [], True),
    (["*"], ["chain", "misc"], "", ["--show-uri"], True),
    (["bias"], ["calib"], "", [], True),
    (["bias"], ["calib"], "bias.timespan OVERLAPS T'2025-01-02T00:00:00'", ["--find-first"], True),
    (["arr"], ["raw/all"], "exposure = 2", ["--format", "json"], True),
    (["arr"], ["raw/all"], "exposure = 2", ["--format", "csv", "--show-uri"], True),
    (["arr"], ["nothing_matches*"], "", [], True),
    (["packages"], None, "", [], True),
    (["packages"], ["chain", "misc"], "", ["--find-first"], True),
    (["packages"], ["chain", "misc"], "packages.run = 'misc'", [], True),
    (["arr"], ["raw/all"], "exposure > 100", [], True),
    (["bias"], ["calib"], "1 = 1", ["--find-first"], True),
    # Handled by the registry path (identical output or error): ordering/limits and every error.
    (["arr"], ["raw/all"], "", ["--order-by", "-exposure,detector"], False),
    (["arr"], ["raw/all"], "", ["--limit", "2"], False),
    (["nope"], ["raw/all"], "", [], False),
    (["arr"], ["nope"], "", [], False),
    (["arr"], ["raw/all"], "exposure = 'x'", [], False),
    (["arr"], ["raw/all"], "exposure.nofield = 1", [], False),
    (["arr"], ["raw/all"], "(detector = 1", [], False),
    (["arr"], ["raw/all"], "exposure.timespan OVERLAPS T'2025-13-45'", [], False),
    (["arr"], ["raw/all"], "visit = 3", [], False),
    (["arr"], [], "", ["--find-first"], False),
]


@pytest.mark.parametrize("types,collections,where,extra,answers", CASES)
def test_fast_path_output_identical(world, monkeypatch, spy, types, collections, where, extra, answers):
    if world.registry.db.engine.dialect.name != "sqlite":
        pytest.skip("the fast path is for SQLite repositories (PostgreSQL: test_postgres_uses_registry)")
    args = ["query-datasets", world.root, *types]
    for c in collections or []:
        args += ["--collections", c]
    if where:
        args += ["--where", where]
    args += extra
    _check(world, monkeypatch, spy, args, answers)


def test_fast_path_finds_the_injected_datasets(world, monkeypatch):
    if world.registry.db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    code, out, _ = _invoke(
        ["query-datasets", world.root, "arr", "--collections", "chain", "--find-first", "--format", "json",
         "--where", "detector = 0"],
        True,
        monkeypatch,
    )
    rows = json.loads(out)
    # exposures 3 and 4 come from "redo" (first in the chain), the others from raw/all.
    assert [(r["exposure"], r["run"]) for r in rows] == [
        (3, "redo"), (4, "redo"), (1, "raw/all"), (2, "raw/all"), (5, "raw/all"), (6, "raw/all")
    ] or sorted((r["exposure"], r["run"]) for r in rows) == [
        (1, "raw/all"), (2, "raw/all"), (3, "redo"), (4, "redo"), (5, "raw/all"), (6, "raw/all")
    ]
    assert {r["band"] for r in rows if r["exposure"] in (3, 4, 6)} == {"g"}
    assert len(rows) == 6 and code == 0


def test_fast_path_imports_no_sqlalchemy(world):
    if world.registry.db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    code = (
        "import sys\n"
        "from butler.cli import main\n"
        f"sys.argv = ['butler', 'query-datasets', {str(world.root)!r}, 'arr', '--collections', 'raw/all',"
        " '--where', \"exposure.observation_type = 'bias' AND detector = 1\", '--format', 'csv']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('SQLALCHEMY' if 'sqlalchemy' in sys.modules else 'NO-SQLALCHEMY')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[-1] == "NO-SQLALCHEMY"
    assert lines[0].startswith("type,run,id,instrument,band,physical_filter,detector,day_obs,exposure")
    assert [ln.split(",")[-1] for ln in lines[1:-1]] == ["1", "2"]  # the bias exposures, detector 1


def test_constant_expression_after_fast_path_fallback(world, monkeypatch):
    """``--where "1 = 1"`` compiled by the fast path, then by the registry path in the same process.

    A data ID with two certified ranges makes the fast path give up after compiling the
    expression; the registry path must compile its own clause (the compiled-clause cache is
    keyed by renderer), and report the ambiguity, not a SQLAlchemy ``ArgumentError``.
    """
    if world.registry.db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    from butler import Timespan

    reg = world.registry
    later = [world.put(np.ones(2), "bias", instrument="cam", detector=0, run="calib/run2")]
    reg.decertify("calib", "bias", Timespan(exposure_span(3).begin, None))
    reg.certify("calib", later, Timespan(exposure_span(4).begin, None))
    args = ["query-datasets", world.root, "bias", "--collections", "calib", "--find-first", "--where", "1 = 1"]
    code, out, err = _invoke(args, True, monkeypatch)
    assert code == 1
    assert "ArgumentError" not in out + err
    assert "validity ranges" in out + err
    assert _invoke(args, False, monkeypatch) == (code, out, err)


def test_postgres_uses_registry(world, monkeypatch, spy):
    if world.registry.db.engine.dialect.name == "sqlite":
        pytest.skip("PostgreSQL only")
    code, out, _ = _invoke(
        ["query-datasets", world.root, "arr", "--collections", "raw/all", "--where", "exposure = 3",
         "--format", "json"],
        True,
        monkeypatch,
    )
    assert code == 0 and spy["answered"] == 0
    assert sorted(r["detector"] for r in json.loads(out)) == [0, 1, 2]


def test_reader_closing_the_pipe_ends_quietly(filled):
    """``butler query-datasets ... | head -1``: no traceback, no error message, status 141."""
    if filled.registry.db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only (the CLI behaviour is the same on every backend)")
    data_ids = [{"instrument": "cam", "exposure": e, "detector": d} for e in range(1, 7) for d in range(4)]
    for i in range(60):  # 1,440 rows: far more than a pipe buffer holds
        filled.registry.register_run(f"run{i:02d}")
        filled.registry.insert_datasets("arr", data_ids, f"run{i:02d}")
    exe = [sys.executable, "-c", "from butler.cli import main; main()"]
    proc = subprocess.Popen(
        [*exe, "query-datasets", str(filled.root), "arr"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert first.split() == [b"type", b"run", b"id", b"instrument", b"band", b"physical_filter", b"detector",
                             b"day_obs", b"exposure"]
    assert err == ""


LISTING_CASES = [
    ["query-collections"],
    ["query-collections", "r*", "c*"],
    ["query-collections", "--chains", "tree"],
    ["query-collections", "--chains", "flatten"],
    ["query-collections", "--chains", "no-children", "--collection-type", "RUN"],
    ["query-collections", "--collection-type", "CHAINED", "--collection-type", "tagged"],
    ["query-collections", "--chains", "flatten", "--collection-type", "RUN", "ch*"],
    ["query-collections", "--format", "json"],
    ["query-collections", "--format", "csv", "nothing*"],
    ["query-dataset-types"],
    ["query-dataset-types", "b*", "m*", "--format", "csv"],
    ["query-dataset-types", "nope*"],
]


@pytest.mark.parametrize("command", LISTING_CASES)
def test_listing_commands_identical(world, monkeypatch, command):
    """query-collections / query-dataset-types: sqlite3 stand-in registry == the registry."""
    if world.registry.db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only (PostgreSQL: test_listing_postgres)")
    world.registry.set_collection_chain("outer", ["chain", "picked", "calib"])
    args = [command[0], world.root, *command[1:]]
    fast = _invoke(args, True, monkeypatch)
    slow = _invoke(args, False, monkeypatch)
    assert fast == slow and fast[0] == 0


def test_listing_uses_sqlite3_and_knows_the_collections(world, monkeypatch):
    if world.registry.db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    opened = []
    real = backends.SqliteBackend.open_read_only_fast
    monkeypatch.setattr(backends.SqliteBackend, "open_read_only_fast",
                        lambda self, root, url: opened.append(root) or real(self, root, url))
    code, out, _ = _invoke(["query-collections", world.root, "--format", "json"], True, monkeypatch)
    assert code == 0 and len(opened) == 1
    got = {r["Name"]: (r["Type"], r["Children"]) for r in json.loads(out)}
    assert got == {
        "calib": ("CALIBRATION", None), "calib/run": ("RUN", None), "chain": ("CHAINED", "redo, raw/all"),
        "misc": ("RUN", None), "picked": ("TAGGED", None), "raw/all": ("RUN", None), "redo": ("RUN", None),
    }
    code, out, _ = _invoke(["query-dataset-types", world.root, "--format", "json"], True, monkeypatch)
    assert [r["Name"] for r in json.loads(out)] == ["arr", "bias", "flat", "meta", "other", "packages"]
    assert json.loads(out)[1]["Calibration"] == "yes"


def test_listing_postgres(world, monkeypatch):
    if world.registry.db.engine.dialect.name == "sqlite":
        pytest.skip("PostgreSQL only")
    code, out, _ = _invoke(["query-collections", world.root, "r*", "--format", "json"], True, monkeypatch)
    assert code == 0 and [r["Name"] for r in json.loads(out)] == ["raw/all", "redo"]


@pytest.mark.parametrize(
    "command", [["query-collections"], ["query-dataset-types"], ["query-datasets", "arr"]]
)
def test_bad_repository_same_error(tmp_path, monkeypatch, command):
    (tmp_path / "plain").mkdir()
    for repo in (tmp_path / "missing", tmp_path / "plain"):
        args = [command[0], repo, *command[1:]]
        fast = _invoke(args, True, monkeypatch)
        slow = _invoke(args, False, monkeypatch)
        assert fast == slow and fast[0] == 1
        expected = "does not exist" if repo.name == "missing" else "not a butler repository"
        assert expected in fast[1] + fast[2]
