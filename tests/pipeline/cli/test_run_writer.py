"""``pipetask run`` through the SQLAlchemy-free run writer leaves the registry the registry leaves.

Each run is made twice, on two copies of one repository: with the run writer
(`butler.registry._sqlite_run_writer`, the default on SQLite for a new output RUN; the test makes
sure no `butler.Butler` is opened) and with ``BUTLER_CLI_FAST=0`` (a `butler.Butler`,
SQLAlchemy). Then every table of both registries is dumped, each value with its SQLite storage
class, and compared. Predicted dataset UUIDs are random per graph, so dataset ids are replaced by
(dataset type id, RUN id, data ID key); registration times (``dataset.ingest_date``,
``run.timespan_begin``) are checked for their format and then masked; file sizes of task metadata
and logs (they hold timings) are masked; ``-o`` run names lose their timestamp.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import _toy_tasks as toy
import pytest
from click.testing import CliRunner

from butler import Butler, DatasetType
from pipeline.cli import graph_commands, pipetask

REPO_ROOT = Path(__file__).resolve().parents[3]
TASKS = [
    "-t",
    "_toy_tasks.SubtractMedianTask:subtractMedian",
    "-t",
    "_toy_tasks.GatherMediansTask:gatherMedians",
]
_STAMP = re.compile(r"\d{8}T\d{6}Z")
_DATETIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


def dump_registry(root: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Return every table of a SQLite registry, normalised for comparison (see the module doc)."""
    conn = sqlite3.connect(root / "registry.sqlite3")
    try:
        ids = {
            i: f"dataset<{t}/{r}/{k}>"
            for i, t, r, k in conn.execute("SELECT id, dataset_type_id, run_id, data_id_key FROM dataset")
        }
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        tables = [r[0] for r in conn.execute(sql)]
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table in tables:
            cols = [c[1] for c in conn.execute(f'PRAGMA table_info("{table}")')]
            select = ", ".join(f'"{c}", typeof("{c}")' for c in cols)
            rows = []
            for raw in conn.execute(f'SELECT {select} FROM "{table}"'):
                row = dict(zip(cols, raw[0::2]))
                kinds = raw[1::2]
                for c, v in row.items():
                    if isinstance(v, str):
                        row[c] = ids.get(v, _STAMP.sub("<stamp>", v))
                if table == "dataset":
                    assert _DATETIME.match(row["ingest_date"]), row["ingest_date"]
                    row["ingest_date"] = "<time>"
                if table == "run":
                    assert isinstance(row["timespan_begin"], int) and row["timespan_end"] is None
                    row["timespan_begin"] = "<time>"
                if table == "butler_attributes" and row["name"] == "created":
                    row["value"] = "<time>"
                if table == "file_datastore_records" and re.search(r"_(metadata|log)[_/]", row["path"]):
                    row["file_size"] = "<size>"
                rows.append((*row.values(), *kinds))
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        conn.close()


def _run(
    monkeypatch: pytest.MonkeyPatch, repo: Path, args: list[str], *, fast: bool
) -> tuple[int, str]:
    """``pipetask run`` in this process; with ``fast``, fail if a `butler.Butler` is opened."""
    real = graph_commands._make_butler

    def no_registry(*a: Any, **k: Any) -> Any:
        raise AssertionError("the run fell back to the registry")

    monkeypatch.setenv("BUTLER_CLI_FAST", "1" if fast else "0")
    monkeypatch.setattr(graph_commands, "_make_butler", no_registry if fast else real)
    try:
        args = ["run", "-b", str(repo), *args, "--no-progress"]
        r = CliRunner().invoke(pipetask, args, catch_exceptions=False)
    finally:
        monkeypatch.setattr(graph_commands, "_make_butler", real)
    return r.exit_code, r.output


def _pair(tmp_path: Path, n_exposures: int = 3, n_detectors: int = 2) -> tuple[Path, Path]:
    """Two identical toy repositories (one for each path)."""
    butler, _ = toy.make_toy_repo(tmp_path / "fast", n_exposures, n_detectors, shape=(8, 8))
    butler.close()
    shutil.copytree(tmp_path / "fast", tmp_path / "slow")
    return tmp_path / "fast", tmp_path / "slow"


def _both(
    monkeypatch: pytest.MonkeyPatch, fast: Path, slow: Path, args: list[str], *, fallback: bool = False
) -> tuple[tuple[int, str], tuple[int, str]]:
    a = _run(monkeypatch, fast, args, fast=not fallback)
    b = _run(monkeypatch, slow, args, fast=False)
    return a, b


def _normal(output: str) -> str:
    return re.sub(r"in \d+\.\d\d s", "in <t> s", _STAMP.sub("<stamp>", output))


def test_output_run_registers_as_the_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--output-run with --register-dataset-types: every table equal, ANALYZE included."""
    fast, slow = _pair(tmp_path, 12, 9)  # 108 + 12 quanta: 3 x 120 outputs
    before = dump_registry(fast)
    args = [*TASKS, "-i", toy.TOY_RAW_RUN, "--output-run", "u/run", "--register-dataset-types"]
    (ca, oa), (cb, ob) = _both(monkeypatch, fast, slow, args)
    assert ca == cb == 0, (oa, ob)
    assert "Executed 120 quanta successfully" in oa
    a, b = dump_registry(fast), dump_registry(slow)
    assert len(a["dataset"]) == len(before["dataset"]) + 360 + 3
    assert len(a["file_datastore_records"]) == len(before["file_datastore_records"]) + 363
    assert len(a["dataset_type"]) == 10 and len(a["run"]) == 2
    assert a == b
    # A second run into another RUN of the same repository: the types exist, nothing new to register.
    args = [*TASKS, "-i", toy.TOY_RAW_RUN, "--output-run", "u/run2", "-d", "exposure = 2"]
    (ca, oa), (cb, ob) = _both(monkeypatch, fast, slow, args)
    assert ca == cb == 0, (oa, ob)
    assert _normal(oa) == _normal(ob)
    assert dump_registry(fast) == dump_registry(slow)


def test_analyze_after_1000_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Over 1,000 new datasets the registry refreshes the planner statistics; so does the writer."""
    fast, slow = _pair(tmp_path, 40, 9)  # 3 x (360 + 40) = 1,200 outputs
    args = [*TASKS, "-i", toy.TOY_RAW_RUN, "--output-run", "u/big", "--register-dataset-types"]
    (ca, oa), (cb, ob) = _both(monkeypatch, fast, slow, args)
    assert ca == cb == 0, (oa, ob)
    a, b = dump_registry(fast), dump_registry(slow)
    assert a["sqlite_stat1"] and any(r[0] == "dataset" for r in a["sqlite_stat1"])
    assert a == b


def test_chained_output_new_and_existing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """-o NEW -i RAW (a timestamped RUN and a new chain), then -o EXISTING (the chain grows)."""
    fast, slow = _pair(tmp_path)
    args = [*TASKS, "-i", toy.TOY_RAW_RUN, "-o", "u/chain", "--register-dataset-types"]
    (ca, oa), (cb, ob) = _both(monkeypatch, fast, slow, args)
    assert ca == cb == 0, (oa, ob)
    assert dump_registry(fast) == dump_registry(slow)
    # The second run's stamp must differ from the first's (one-second resolution).
    args = [*TASKS, "-o", "u/chain", "--output-run", "u/chain/second", "-d", "exposure > 1"]
    (ca, oa), (cb, ob) = _both(monkeypatch, fast, slow, args)
    assert ca == cb == 0, (oa, ob)
    a, b = dump_registry(fast), dump_registry(slow)
    assert len(a["collection_chain"]) == 3
    assert a == b
    with Butler(fast, writeable=False) as butler:
        chain = butler.registry.get_collection_chain("u/chain")
    assert chain[0] == "u/chain/second" and chain[2] == toy.TOY_RAW_RUN


def test_failing_quantum(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A failing quantum: the same exit status, summary line and registered state."""
    fast, slow = _pair(tmp_path)
    monkeypatch.setenv("CCDFLOW_TOY_FAIL", "2")
    args = [*TASKS, "-i", toy.TOY_RAW_RUN, "--output-run", "u/fail", "--register-dataset-types"]
    (ca, oa), (cb, ob) = _both(monkeypatch, fast, slow, args)
    assert ca == cb == 1
    assert "Executed 6 quanta successfully, 2 failed and 1 blocked" in oa
    assert _normal(oa.splitlines()[-1]) == _normal(ob.splitlines()[-1])
    assert dump_registry(fast) == dump_registry(slow)


def test_process_pool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """-j 2: workers write, the driver registers through the writer."""
    fast, slow = _pair(tmp_path)
    args = [*TASKS, "-i", toy.TOY_RAW_RUN, "--output-run", "u/pool", "--register-dataset-types", "-j", "2"]
    (ca, oa), (cb, ob) = _both(monkeypatch, fast, slow, args)
    assert ca == cb == 0, (oa, ob)
    assert "Executed 9 quanta successfully" in oa
    assert dump_registry(fast) == dump_registry(slow)


def test_conflicting_dataset_type(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A dataset type registered differently: the registry's error, and nothing written."""
    fast, slow = _pair(tmp_path)
    for root in (fast, slow):
        with Butler(root) as butler:
            dt = DatasetType("toyCalexp", ("instrument", "exposure", "detector"), "StructuredDataDict")
            butler.registry.register_dataset_type(dt)
    before = dump_registry(fast)
    args = [*TASKS, "-i", toy.TOY_RAW_RUN, "--output-run", "u/x", "--register-dataset-types"]
    (ca, oa), (cb, ob) = _both(monkeypatch, fast, slow, args)
    assert ca == cb == 1
    assert "dataset type definitions conflict with the repository: toyCalexp" in oa
    assert oa == ob
    assert dump_registry(fast) == before == dump_registry(slow)
    assert not (fast / "u").exists()


def test_missing_dataset_types(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without --register-dataset-types: the registry's error, and nothing written."""
    fast, slow = _pair(tmp_path)
    before = dump_registry(fast)
    args = [*TASKS, "-i", toy.TOY_RAW_RUN, "--output-run", "u/x"]
    (ca, oa), (cb, ob) = _both(monkeypatch, fast, slow, args)
    assert ca == cb == 1
    assert "rerun with --register-dataset-types" in oa
    assert oa == ob
    assert dump_registry(fast) == before == dump_registry(slow)


def test_existing_output_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An output RUN that exists: the registry's error (the graph build refuses it), nothing written."""
    fast, slow = _pair(tmp_path)
    args = [*TASKS, "-i", toy.TOY_RAW_RUN, "--output-run", "u/x", "--register-dataset-types"]
    _both(monkeypatch, fast, slow, args)
    before = dump_registry(fast)
    (ca, oa), (cb, ob) = _both(monkeypatch, fast, slow, args, fallback=True)
    assert ca == cb == 1
    assert "output run u/x already exists" in oa
    assert oa == ob
    assert dump_registry(fast) == before == dump_registry(slow)


def test_duplicate_outputs_same_error(tmp_path: Path) -> None:
    """Registering outputs twice: the writer's error is the registry's, and the batch leaves nothing."""
    from butler.registry.backends import open_run_writer

    fast, slow = _pair(tmp_path, 2, 2)
    errors = []
    for root, use_writer in ((fast, True), (slow, False)):
        with Butler(root) as butler:
            dt = DatasetType("toyOut", ("instrument", "exposure", "detector"), "NumpyArray")
            butler.registry.register_dataset_type(dt)
            butler.registry.register_run("u/dup")
            refs = butler.query_datasets("toyRaw", collections=[toy.TOY_RAW_RUN])
            infos = butler.registry.get_file_records([r.id for r in refs])
        from butler import DatasetRef

        items = [(DatasetRef(dt, r.data_id, "u/dup"), infos[r.id]) for r in refs]
        target = open_run_writer(root) if use_writer else Butler(root)
        try:
            target.register_outputs(items[:2])
            before = dump_registry(root)
            again = [(DatasetRef(dt, r.data_id, "u/dup"), i) for r, i in items]  # new ids, 2 old data IDs
            with pytest.raises(Exception) as info:
                target.register_outputs(again)
            errors.append((type(info.value).__name__, str(info.value)))
            assert dump_registry(root) == before
            with pytest.raises(Exception) as info:
                target.register_outputs([items[3], items[3]])  # the same id twice
            errors.append((type(info.value).__name__, str(info.value)))
            assert dump_registry(root) == before
        finally:
            target.close()
    assert errors[0] == errors[2] and errors[1] == errors[3], errors
    assert "is already in RUN 'u/dup' (2 conflict(s))" in errors[0][1]
    assert dump_registry(fast) == dump_registry(slow)


_PROBE = (
    "import sys; from pipeline.cli.pipetask import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
    "print('SQLALCHEMY', 'sqlalchemy' in sys.modules)\n"
)


@pytest.mark.parametrize(
    ("extra", "env", "imported"),
    [
        (["--output-run", "u/new"], "1", False),
        (["-o", "u/chain", "-j", "2"], "1", False),
        (["--output-run", "u/new"], "0", True),
        (["--output-run", "u/done", "--extend-run", "--skip-existing"], "1", True),
    ],
)
def test_run_imports_no_sqlalchemy(tmp_path: Path, extra: list[str], env: str, imported: bool) -> None:
    """The whole fast ``pipetask run`` process never imports SQLAlchemy; the fallbacks do."""
    butler, _ = toy.make_toy_repo(tmp_path / "repo", 2, 2, shape=(4, 4))
    butler.close()
    base = ["run", "-b", str(tmp_path / "repo"), *TASKS, "-i", toy.TOY_RAW_RUN, "--register-dataset-types",
            "--no-progress"]
    environ = {**__import__("os").environ, "BUTLER_CLI_FAST": env}
    subprocess.run([sys.executable, "-c", _PROBE, *base, "--output-run", "u/done"], env=environ,
                   capture_output=True, text=True, check=True, cwd=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-c", _PROBE, *base, *extra], env=environ,
                          capture_output=True, text=True, cwd=str(REPO_ROOT))
    assert proc.returncode == 0, proc.stderr
    assert f"SQLALCHEMY {imported}" in proc.stdout


def test_real_cpbias_registers_as_the_registry(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Run cpBias over the Kast biases (real raws, ISR and combine): every table equal both ways."""
    from pipeline.instruments import ingest_raws, register_instrument

    with Butler.create(tmp_path / "fast") as butler:
        register_instrument(butler, "kast_blue")
        ingest_raws(butler, sorted((shared_data / "raw" / "kast_blue").glob("*.fits*")))
    shutil.copytree(tmp_path / "fast", tmp_path / "slow")
    args = ["-p", str(REPO_ROOT / "pipelines" / "cpBias.yaml"), "-i", "kast_blue/raw/all", "-o", "u/bias",
            "-d", "instrument = 'kast_blue' AND exposure.observation_type = 'bias'",
            "--register-dataset-types"]
    (ca, oa), (cb, ob) = _both(monkeypatch, tmp_path / "fast", tmp_path / "slow", args)
    assert ca == cb == 0, (oa, ob)
    assert "Executed 4 quanta successfully" in oa
    a, b = dump_registry(tmp_path / "fast"), dump_registry(tmp_path / "slow")
    assert [r[4] for r in a["dataset_type"] if r[1] == "bias"] == [1]  # is_calibration, stored as 1
    outputs = [r for r in a["file_datastore_records"] if r[1].startswith("u/bias/")]
    assert len(outputs) >= 4 * 3 + 2  # each quantum's products, metadata and log; configs, packages
    assert a == b
