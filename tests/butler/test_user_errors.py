"""Reproductions of errors users saw (bad input, concurrency), on SQLite and PostgreSQL.

Each test names the defect it reproduces; the fixed behaviour is one clear message (or the
same result on both backends), never a traceback or SQL text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from butler import Butler
from butler._errors import LockHeldError


def test_postgres_lock_message_keeps_the_start_time(repo, monkeypatch) -> None:
    """The run-lock holder's start time was cut off (application_name holds at most 63 bytes).

    With a 60-character host name the refused driver still names the holder's pid and its full
    start time.
    """
    if repo.registry.db.dialect_name != "postgresql":
        pytest.skip("the advisory lock message is PostgreSQL's; SQLite's is tested with the flock")
    import butler.registry.database as database
    import butler.registry.postgresql as postgresql

    long_host = "node-" + "x" * 55
    real = database.lock_holder_info

    def fake_info(name: str) -> dict:
        info = real(name)
        info["host"] = long_host
        return info

    monkeypatch.setattr(postgresql, "lock_holder_info", fake_info)
    other = Butler(repo.root)
    try:
        with repo.registry.db.exclusive_lock("u/run", root=Path(repo.root)):
            with pytest.raises(LockHeldError) as info:
                with other.registry.db.exclusive_lock("u/run", root=Path(repo.root)):
                    pass
        message = str(info.value)
        assert re.search(r"\(started \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)", message), message
        import os

        assert f":{os.getpid()} " in message
        assert "node-xxx" in message
        # released: the other driver takes it now
        with other.registry.db.exclusive_lock("u/run", root=Path(repo.root)):
            pass
    finally:
        other.close()


def test_decertify_of_an_empty_range_changes_nothing(filled) -> None:
    """Decertifying a zero-length range split every validity range at that instant."""
    from butler import CollectionType, Timespan

    from .conftest import exposure_span

    reg = filled.registry
    reg.register_run("calib/run1")
    refs = reg.insert_datasets("bias", [{"instrument": "cam", "detector": d} for d in (0, 1)], "calib/run1")
    reg.register_collection("calib", CollectionType.CALIBRATION)
    whole = Timespan(exposure_span(1).begin, exposure_span(6).end)
    reg.certify("calib", refs, whole)
    instant = exposure_span(3).begin
    assert reg.decertify("calib", "bias", Timespan(instant, instant)) == 0
    assert [ts for _, ts in reg.query_calibration_validity("calib", "bias")] == [whole, whole]
    # a range of one nanosecond still splits (the boundary case of the fix)
    one_ns = Timespan.from_ns(whole.begin_ns + 10, whole.begin_ns + 11)
    assert reg.decertify("calib", "bias", one_ns) == 2
    assert len(reg.query_calibration_validity("calib", "bias")) == 4


def test_cli_decertify_refuses_an_empty_range(tmp_path) -> None:
    """``butler decertify --begin-date T --end-date T``: one message, exit 2, nothing changed."""
    import numpy as np
    from click.testing import CliRunner

    from butler import DatasetType
    from butler.cli import cli

    from .conftest import fill_dimensions

    root = tmp_path / "repo"
    b = Butler.create(root)
    fill_dimensions(b.registry)
    b.registry.register_dataset_type(DatasetType("bias", ["detector"], "NumpyArray", is_calibration=True))
    b.put(np.zeros(2), "bias", instrument="cam", detector=0, run="calib/bias1")
    b.close()
    runner = CliRunner()
    r = runner.invoke(cli, ["certify-calibrations", str(root), "calib/bias1", "calib", "bias"])
    assert r.exit_code == 0, r.output
    t = "2025-01-01T20:10:00"
    r = runner.invoke(cli, ["decertify", str(root), "calib", "bias", "--begin-date", t, "--end-date", t])
    assert r.exit_code == 2, r.output
    assert "is empty" in r.output and "--end-date after --begin-date" in r.output
    assert "Traceback" not in r.output
    with Butler(root) as b:
        spans = [ts for _, ts in b.registry.query_calibration_validity("calib", "bias")]
    assert len(spans) == 1 and spans[0].begin is None and spans[0].end is None


def test_query_datasets_lists_a_calibration_once(filled) -> None:
    """A dataset certified for several validity ranges was listed once per range."""
    from butler import CollectionType, Timespan

    from .conftest import exposure_span

    reg = filled.registry
    reg.register_run("calib/run1")
    refs = reg.insert_datasets("bias", [{"instrument": "cam", "detector": d} for d in (0, 1)], "calib/run1")
    reg.register_collection("calib", CollectionType.CALIBRATION)
    for i in (1, 3, 5):  # three ranges each
        reg.certify("calib", refs, Timespan(exposure_span(i).begin, exposure_span(i + 1).begin))
    assert len(reg.query_calibration_validity("calib", "bias")) == 6
    got = reg.query_datasets("bias", collections="calib", find_first=False)
    assert sorted(r.id for r in got) == sorted(r.id for r in refs)
    got = reg.query_datasets("bias", collections=["calib", "calib/run1"], find_first=False)
    assert sorted(r.id for r in got) == sorted(r.id for r in refs)
    # a time still selects the range that holds it
    got = reg.query_datasets("bias", collections="calib", timespan=exposure_span(3), find_first=True)
    assert sorted(r.id for r in got) == sorted(r.id for r in refs)


def test_cli_query_datasets_lists_a_calibration_once(tmp_path) -> None:
    """``butler query-datasets REPO bias --collections CAL`` (SQLite fast path and registry path)."""
    import json

    import numpy as np
    from click.testing import CliRunner

    from butler import DatasetType
    from butler.cli import cli

    from .conftest import fill_dimensions

    root = tmp_path / "repo"
    b = Butler.create(root)
    fill_dimensions(b.registry)
    b.registry.register_dataset_type(DatasetType("bias", ["detector"], "NumpyArray", is_calibration=True))
    for d in (0, 1, 2):
        b.put(np.zeros(2), "bias", instrument="cam", detector=d, run="calib/bias1")
    b.close()
    runner = CliRunner()
    for begin, end in (("2025-01-01", "2025-01-02"), ("2025-01-03", "2025-01-04"), ("2025-01-05", None)):
        args = ["certify-calibrations", str(root), "calib/bias1", "CAL", "bias", "--begin-date", begin]
        r = runner.invoke(cli, args + (["--end-date", end] if end else []))
        assert r.exit_code == 0, r.output
    for extra in ([], ["--order-by", "detector"]):  # fast path, then the registry path
        r = runner.invoke(
            cli, ["query-datasets", str(root), "bias", "--collections", "CAL", "--format", "json", *extra]
        )
        assert r.exit_code == 0, r.output
        assert sorted(x["detector"] for x in json.loads(r.output)) == [0, 1, 2]


def test_postgres_refusing_a_query_value_is_one_line_without_sql(repo) -> None:
    """The safety net behind the compiler: a DataError of a SELECT never shows SQL text."""
    if repo.registry.db.dialect_name != "postgresql":
        pytest.skip("PostgreSQL's DataError")
    import sqlalchemy as sa

    from butler._errors import InvalidQueryError

    with pytest.raises(InvalidQueryError) as info:
        repo.registry.db.fetchall(sa.text("SELECT 1 / 0"))
    message = str(info.value)
    assert "division by zero" in message and "SELECT" not in message and "[SQL" not in message
