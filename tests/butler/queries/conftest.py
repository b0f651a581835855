"""Fixtures for the query-language tests: a small table with known rows and a fake resolver.

The table is one denormalised row per (exposure, detector) "raw" dataset, so expected results
can be computed in Python from :data:`ROWS` and compared with what the compiled SQL returns.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from butler.registry.queries import ResolvedColumn

NS = 1_000_000_000
# 2022-01-26T00:00:00 TAI in ns since 1970-01-01 TAI (19018 days after the epoch).
BASE_NS = 19018 * 86_400 * NS
TIMESPAN_MIN = -(2**62)
TIMESPAN_MAX = 2**62

HOSTILE_OBS_IDS = {
    3: "O'Brien'); DROP TABLE raw_rows; --",
    7: "50%_off\\x",
}


def _make_rows() -> list[dict[str, Any]]:
    rows = []
    for exposure in range(1, 13):
        obs_type = "bias" if exposure <= 4 else ("flat" if exposure <= 8 else "dark")
        exposure_time = 0.0 if obs_type == "bias" else 1.5 * exposure
        begin = BASE_NS + exposure * 100 * NS  # 100 s apart
        end = begin + int(round(exposure_time * NS)) + NS  # readout: +1 s
        for detector in (0, 1):
            rows.append(
                {
                    "instrument": "kast_blue" if exposure <= 10 else "efosc2",
                    "exposure": exposure,
                    "detector": detector,
                    "obs_id": HOSTILE_OBS_IDS.get(exposure, f"KB{exposure:04d}"),
                    "exposure_time": exposure_time,
                    "observation_type": obs_type,
                    "ts_begin": begin,
                    "ts_end": end,
                    "dataset_id": uuid.uuid5(uuid.NAMESPACE_DNS, f"raw-{exposure}-{detector}"),
                }
            )
    # One row with an unbounded timespan (a calibration-like validity range).
    rows.append(
        {
            "instrument": "kast_blue",
            "exposure": 99,
            "detector": 0,
            "obs_id": "forever",
            "exposure_time": 1.0,
            "observation_type": "science",
            "ts_begin": TIMESPAN_MIN,
            "ts_end": TIMESPAN_MAX,
            "dataset_id": uuid.uuid5(uuid.NAMESPACE_DNS, "raw-99-0"),
        }
    )
    return rows


ROWS = _make_rows()


def make_table(name: str) -> sa.Table:
    """Return the test table (one row per raw dataset), not yet created."""
    md = sa.MetaData()
    return sa.Table(
        name,
        md,
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instrument", sa.String(32), nullable=False),
        sa.Column("exposure", sa.BigInteger, nullable=False),
        sa.Column("detector", sa.Integer, nullable=False),
        sa.Column("obs_id", sa.String(64), nullable=False),
        sa.Column("exposure_time", sa.Float, nullable=False),
        sa.Column("observation_type", sa.String(32), nullable=False),
        sa.Column("ts_begin", sa.BigInteger, nullable=False),
        sa.Column("ts_end", sa.BigInteger, nullable=False),
        sa.Column("dataset_id", sa.Uuid, nullable=False),
    )


class UnknownIdentifierError(LookupError):
    """What the fake registry raises for names it does not know."""


class FakeResolver:
    """Maps identifiers to the test table's columns; records what was resolved."""

    def __init__(self, table: sa.Table) -> None:
        c = table.c
        self.table = table
        self.calls: list[str] = []
        self._map: dict[str, ResolvedColumn] = {
            "instrument": ResolvedColumn("str", "instrument", column=c.instrument),
            "exposure": ResolvedColumn("int", "exposure", column=c.exposure),
            "detector": ResolvedColumn("int", "detector", column=c.detector),
            "exposure.obs_id": ResolvedColumn("str", "exposure", column=c.obs_id),
            "exposure.exposure_time": ResolvedColumn("float", "exposure", column=c.exposure_time),
            "exposure.observation_type": ResolvedColumn("str", "exposure", column=c.observation_type),
            "exposure.timespan": ResolvedColumn("timespan", "exposure", timespan=(c.ts_begin, c.ts_end)),
            "raw.dataset_id": ResolvedColumn("uuid", "raw", column=c.dataset_id),
        }

    def resolve(self, identifier: str) -> ResolvedColumn:
        """Return the column of ``identifier`` or raise `UnknownIdentifierError`."""
        self.calls.append(identifier)
        try:
            return self._map[identifier]
        except KeyError:
            raise UnknownIdentifierError(
                f"unknown dimension or field {identifier!r}; known: {', '.join(sorted(self._map))}"
            ) from None


def _fill(engine: sa.Engine, table: sa.Table) -> None:
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), ROWS)


@pytest.fixture(scope="session")
def sqlite_db() -> Iterator[tuple[sa.Engine, sa.Table]]:
    """In-memory SQLite with the test table filled."""
    engine = sa.create_engine("sqlite://")
    table = make_table("raw_rows")
    _fill(engine, table)
    yield engine, table
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_db(postgres_url: str) -> Iterator[tuple[sa.Engine, sa.Table]]:
    """Yield the test table on the PostgreSQL server, under a per-process name, dropped afterwards."""
    engine = sa.create_engine(postgres_url)
    table = make_table(f"dql_raw_rows_{os.getpid()}")
    table.metadata.drop_all(engine)
    _fill(engine, table)
    yield engine, table
    table.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> tuple[sa.Engine, sa.Table]:
    """Return the filled test table on each backend (PostgreSQL skipped when no server URL is set)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_db")
    return request.getfixturevalue("postgres_db")


def run_where(
    db: tuple[sa.Engine, sa.Table], where: str, bind: dict[str, Any] | None = None
) -> list[tuple[int, int]]:
    """Compile ``where`` against ``db`` and return the sorted ``(exposure, detector)`` rows."""
    from butler.registry.queries import compile_expression

    engine, table = db
    clause = compile_expression(where, FakeResolver(table), bind=bind)
    stmt = sa.select(table.c.exposure, table.c.detector).where(clause)
    with engine.connect() as conn:
        return sorted((int(r[0]), int(r[1])) for r in conn.execute(stmt))


def expected(predicate: Any) -> list[tuple[int, int]]:
    """Rows of :data:`ROWS` for which ``predicate(row)`` is true, sorted like `run_where`."""
    return sorted((r["exposure"], r["detector"]) for r in ROWS if predicate(r))
