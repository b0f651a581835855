"""Fixtures for the butler tests: fresh repositories on SQLite and on PostgreSQL.

Every test that takes ``repo`` runs once per backend; on PostgreSQL each test gets its own
schema, dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

T0 = "2025-01-01T20:00:00"
"""Begin of exposure 1 (TAI); exposure i begins (i - 1) * 600 s later and lasts 60 s."""
EXPOSURE_IDS = (1, 2, 3, 4, 5, 6)
FILTERS = {1: "r_01", 2: "r_01", 3: "g_01", 4: "g_01", 5: "r_01", 6: "g_01"}
OBS_TYPES = {1: "bias", 2: "bias", 3: "flat", 4: "flat", 5: "science", 6: "flat"}
EXPTIMES = {1: 0.0, 2: 0.0, 3: 15.0, 4: 30.0, 5: 120.0, 6: 15.0}


def exposure_span(i: int):
    """The injected timespan of exposure ``i``."""
    import astropy.units as u
    from astropy.time import Time

    from butler import Timespan

    t0 = Time(T0, scale="tai")
    return Timespan(t0 + (i - 1) * 600 * u.s, t0 + ((i - 1) * 600 + 60) * u.s)


def fill_dimensions(registry) -> None:
    """Insert instrument ``cam`` (4 detectors, 2 filters), one night and six exposures."""
    registry.insert_dimension_data("instrument", {"name": "cam", "class_name": "", "detector_max": 4})
    registry.insert_dimension_data(
        "physical_filter",
        {"instrument": "cam", "name": "r_01", "band": "r"},
        {"instrument": "cam", "name": "g_01", "band": "g"},
    )
    registry.insert_dimension_data(
        "detector",
        *[{"instrument": "cam", "id": i, "full_name": f"S{i:02d}", "purpose": "SCIENCE"} for i in range(4)],
    )
    registry.insert_dimension_data("day_obs", {"instrument": "cam", "id": 20250101})
    registry.insert_dimension_data(
        "exposure",
        *[
            {
                "instrument": "cam",
                "id": i,
                "obs_id": f"CAM_{i:04d}",
                "physical_filter": FILTERS[i],
                "day_obs": 20250101,
                "exposure_time": EXPTIMES[i],
                "dark_time": EXPTIMES[i] + 1.0,
                "observation_type": OBS_TYPES[i],
                "timespan": exposure_span(i),
            }
            for i in EXPOSURE_IDS
        ],
    )


def invoke_butler(*args, ok: bool = True, input: str | None = None, codes: tuple[int, ...] = (1, 2)):
    """Run the ``butler`` CLI in-process (click's test runner) and check its exit.

    Parameters
    ----------
    *args
        The command line after ``butler``; each argument is passed through `str`.
    ok : `bool`
        Expect exit code 0 (else one of ``codes`` and no traceback in the output).
    input : `str`, optional
        Text fed to standard input (answers to confirmations).
    codes : `tuple` [`int`]
        The accepted non-zero exit codes when ``ok`` is false.

    Returns
    -------
    result : `click.testing.Result`
    """
    from click.testing import CliRunner

    from butler.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], input=input)
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code in codes, result.output
        assert "Traceback" not in result.output
    return result


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> Iterator[str | None]:
    """``None`` (SQLite default) or a PostgreSQL URL with a fresh schema (dropped afterwards)."""
    if request.param == "sqlite":
        yield None
        return
    yield from fresh_postgres_schema(request.getfixturevalue("postgres_url"))


def fresh_postgres_schema(base: str) -> Iterator[str]:
    """Yield the PostgreSQL URL ``base`` with a new schema (``?schema=t_...``); drop the schema after."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{base}?schema={schema}"
    import sqlalchemy as sa

    engine = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    engine.dispose()


@pytest.fixture
def repo(tmp_path: Path, db_url: str | None):
    """An empty repository (``Butler``) on each backend."""
    from butler import Butler

    b = Butler.create(tmp_path / "repo", db=db_url)
    yield b
    b.close()


@pytest.fixture
def filled(repo):
    """A repository with the standard dimension records and dataset types ``arr`` (exposure,
    detector; NumpyArray), ``meta`` (exposure; StructuredDataDict) and calibration ``bias``
    (detector; NumpyArray).
    """
    from butler import DatasetType

    fill_dimensions(repo.registry)
    repo.registry.register_dataset_type(DatasetType("arr", ["exposure", "detector"], "NumpyArray"))
    repo.registry.register_dataset_type(DatasetType("meta", ["exposure"], "StructuredDataDict"))
    repo.registry.register_dataset_type(DatasetType("bias", ["detector"], "NumpyArray", is_calibration=True))
    repo.registry.register_dataset_type(
        DatasetType("flat", ["detector", "physical_filter"], "NumpyArray", is_calibration=True)
    )
    return repo
