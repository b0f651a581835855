"""The ``butler`` command line, through click's test runner."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from butler import Butler, DatasetType

from .conftest import exposure_span, fill_dimensions, invoke_butler


def run(*args: str, ok: bool = True):
    return invoke_butler(*args, ok=ok)


@pytest.fixture
def cli_repo(tmp_path):
    root = tmp_path / "repo"
    run("create", root)
    b = Butler(root)
    fill_dimensions(b.registry)
    b.registry.register_dataset_type(DatasetType("arr", ["exposure", "detector"], "NumpyArray"))
    for e in (1, 2, 3):
        for d in (0, 1):
            b.put(
                np.full(3, 10 * e + d, dtype=float),
                "arr",
                instrument="cam",
                exposure=e,
                detector=d,
                run="raw/all",
            )
    b.close()
    return root


def test_create_errors(tmp_path):
    r = run("create", tmp_path / "repo")
    assert "Created repository" in r.output
    r = run("create", tmp_path / "repo", ok=False)
    assert "already a butler repository" in r.output
    r = run("query-collections", tmp_path / "nothere", ok=False)
    assert "does not exist" in r.output


def test_query_datasets_table_json_csv(cli_repo):
    r = run(
        "query-datasets",
        cli_repo,
        "arr",
        "--collections",
        "raw/all",
        "--where",
        "detector = 1 AND exposure > 1",
    )
    lines = r.output.splitlines()
    assert lines[0].split()[:3] == ["type", "run", "id"] and set(lines[1]) <= {"-", " "}
    assert len(lines) == 4
    r = run(
        "query-datasets",
        cli_repo,
        "arr",
        "--collections",
        "raw/all",
        "--format",
        "json",
        "--order-by",
        "-exposure,detector",
    )
    rows = json.loads(r.output)
    assert [(x["exposure"], x["detector"]) for x in rows] == [(3, 0), (3, 1), (2, 0), (2, 1), (1, 0), (1, 1)]
    assert rows[0]["physical_filter"] == "g_01"
    r = run("query-datasets", cli_repo, "a*", "--format", "csv", "--show-uri", "--where", "exposure = 2")
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert len(rows) == 2 and all(row["URI"].endswith(".npy") for row in rows)


@pytest.mark.parametrize(
    "where, message",
    [
        ("(detector = 1", "expected"),
        ("detector === 1", "Invalid query expression"),
        ("exposure.obs_id = 'abc", "Invalid query expression"),
        ("exposure.timespan OVERLAPS T'not-a-time'", "Invalid query expression"),
        ("exposure.color = 'red'", "no field 'color'"),
    ],
)
def test_bad_where_is_one_clear_error(cli_repo, where, message):
    r = run("query-datasets", cli_repo, "arr", "--where", where, ok=False)
    assert r.output.startswith("Error:") and message in r.output and "^" in r.output or "no field" in r.output


def test_unknown_names(cli_repo):
    assert "not registered" in run("query-datasets", cli_repo, "nosuch", ok=False).output
    assert (
        "does not exist" in run("query-datasets", cli_repo, "arr", "--collections", "nope", ok=False).output
    )
    assert "unknown dimension" in run("query-data-ids", cli_repo, "visit", ok=False).output


def test_data_ids_records_and_types(cli_repo):
    r = run(
        "query-data-ids",
        cli_repo,
        "exposure",
        "--where",
        "exposure.observation_type = 'flat'",
        "--format",
        "json",
    )
    assert [x["exposure"] for x in json.loads(r.output)] == [3, 4, 6]
    r = run("query-dimension-records", cli_repo, "exposure", "--where", "exposure = 5", "--format", "json")
    rec = json.loads(r.output)[0]
    assert rec["obs_id"] == "CAM_0005" and rec["exposure_time"] == 120.0
    assert rec["timespan"]["begin"].startswith(exposure_span(5).begin.isot[:19])
    r = run("query-dataset-types", cli_repo)
    assert "arr" in r.output and "NumpyArray" in r.output


def test_chains_certify_decertify_and_removal(cli_repo):
    run("register-dataset-type", cli_repo, "bias", "NumpyArray", "detector", "--is-calibration")
    b = Butler(cli_repo)
    b.put(np.zeros(2), "bias", instrument="cam", detector=0, run="calib/bias1")
    b.close()
    t_end = exposure_span(3).begin.isot
    run(
        "certify-calibrations",
        cli_repo,
        "calib/bias1",
        "calib",
        "bias",
        "--begin-date",
        "2025-01-01",
        "--end-date",
        t_end,
    )
    r = run(
        "certify-calibrations",
        cli_repo,
        "calib/bias1",
        "calib",
        "bias",
        "--begin-date",
        "2025-01-01T20:05:00",
        ok=False,
    )
    assert "validity range conflict" in r.output
    r = run(
        "certify-calibrations",
        cli_repo,
        "calib/bias1",
        "calib",
        "bias",
        "--begin-date",
        "2025-99-01",
        ok=False,
    )
    assert "valid time" in r.output
    run("collection-chain", cli_repo, "cam/defaults", "calib", "raw/all")
    r = run("collection-chain", cli_repo, "cam/defaults", "calib/bias1", "--mode", "prepend")
    assert "[calib/bias1, calib, raw/all]" in r.output
    r = run("collection-chain", cli_repo, "cam/defaults", "--mode", "pop")
    assert "[calib, raw/all]" in r.output
    b = Butler(cli_repo, collections="cam/defaults")
    assert b.get("bias", instrument="cam", detector=0, exposure=1).tolist() == [0.0, 0.0]
    b.close()
    run("decertify", cli_repo, "calib", "bias", "--begin-date", exposure_span(2).begin.isot)
    b = Butler(cli_repo, collections="cam/defaults")
    assert b.find_dataset("bias", instrument="cam", detector=0, exposure=2) is None
    assert b.find_dataset("bias", instrument="cam", detector=0, exposure=1) is not None
    b.close()
    r = run("query-collections", cli_repo, "--format", "json")
    kinds = {x["Name"]: x["Type"] for x in json.loads(r.output)}
    assert kinds == {
        "calib": "CALIBRATION",
        "calib/bias1": "RUN",
        "cam/defaults": "CHAINED",
        "raw/all": "RUN",
    }
    run(
        "associate",
        cli_repo,
        "best",
        "--collections",
        "raw/all",
        "--datasets",
        "arr",
        "--where",
        "detector = 0",
    )
    r = run("query-datasets", cli_repo, "arr", "--collections", "best", "--format", "json")
    assert len(json.loads(r.output)) == 3
    assert "CHAINED" in run("remove-runs", cli_repo, "raw/all", "--no-confirm", ok=False).output
    run("remove-collections", cli_repo, "cam/defaults", "best", "--no-confirm")
    r = run("prune-datasets", cli_repo, "raw/all", "--purge", "raw/all", "--where", "exposure = 1",
            "--no-confirm")
    assert "2 dataset(s) removed completely" in r.output
    r = run("remove-runs", cli_repo, "raw/*", "--no-confirm")
    assert "4 dataset(s)" in r.output
    assert not (cli_repo / "raw").exists()


def test_help_is_fast_and_lazy():
    code = "import sys, butler.cli; bad = [m for m in ('sqlalchemy', 'numpy', 'astropy') if m in sys.modules]; print(bad)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_help_lists_plugin_commands_without_importing_them():
    """Commands of other packages come from the ``butler.cli`` entry points, imported when run.

    ``butler --help`` imports no `logging` either (~4 ms of a ~45 ms process: the commands set
    logging up when they run), nor `json` and `csv` (~2 ms: imported by the output formats).
    """
    code = (
        "import sys\n"
        "from butler.cli import main\n"
        "sys.argv = ['butler', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pipeline', 'sqlalchemy', 'numpy', 'logging', 'json', 'csv')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in ("register-instrument", "ingest-raws", "transfer-from-graph"):
        assert f"  {name} " in out
    assert "Ingest raw files (or directories" in out and "imported when run" not in out
    assert out.strip().splitlines()[-1] == "[]"


def test_plugin_help_text_is_the_commands_own_without_importing_it():
    """A plugin command's help in ``butler --help`` is read from its source, unimported.

    It is the text click gives once the command is imported (the docstring, or help=).
    """
    import click

    from butler.cli import PLUGIN_GROUP
    from butler.cli._group import find_entry_points, load_entry_point, plugin_help_text

    found = find_entry_points(PLUGIN_GROUP)
    assert set(found) >= {"register-instrument", "ingest-raws", "transfer-from-graph"}
    for value in found.values():
        text = plugin_help_text(value)
        command = load_entry_point(value)
        assert text is not None and text == command.help, value
        assert click.Command("x", help=text).get_short_help_str(45) == command.get_short_help_str(45)
    assert plugin_help_text("butler.no_such_module:cmd") is None
    assert plugin_help_text("pipeline.instruments.butler_commands:no_such_command") is None


def test_plugin_entry_points_are_found():
    from butler.cli import PLUGIN_GROUP
    from butler.cli._group import find_entry_points, load_entry_point

    found = find_entry_points(PLUGIN_GROUP)
    assert found["register-instrument"] == "pipeline.instruments.butler_commands:register_instrument"
    command = load_entry_point(found["transfer-from-graph"])
    assert command.name == "transfer-from-graph"


def test_locked_repository_gives_clear_error(cli_repo):
    import sqlite3

    cfg = cli_repo / "butler.yaml"
    cfg.write_text(cfg.read_text().replace("busy_timeout: 60.0", "busy_timeout: 0.3"))
    other = sqlite3.connect(cli_repo / "registry.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        # Reading works while another process writes (WAL) ...
        assert "raw/all" in run("query-collections", cli_repo).output
        # ... a write waits for the busy timeout, then fails with one clear message.
        r = run("collection-chain", cli_repo, "chain", "raw/all", ok=False)
        assert r.exit_code == 1 and "locked by another writer" in r.output
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert "chain" not in run("query-collections", cli_repo).output
