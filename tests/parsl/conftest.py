"""Fixtures for the Parsl / QBB / shared-repository tests.

Parsl workers are fresh interpreters: ``bench/`` (toy tasks), the repository root (``tests.parsl``
task module) and the venv's ``bin/`` (``process_worker_pool.py``) must be on their paths.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench"
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


def make_toy_repo_db(
    root: Path,
    n_exposures: int,
    n_detectors: int,
    *,
    db: str | None = None,
    shape: tuple[int, int] = (16, 16),
    seed: int = 99,
) -> tuple[Any, dict[tuple[int, int], float]]:
    """A toy repository (``toyRaw`` uint16 images with known medians) on any registry database.

    Parameters
    ----------
    root : `pathlib.Path`
        New repository root.
    n_exposures, n_detectors : `int`
        Workload size.
    db : `str`, optional
        Registry URL (PostgreSQL with ``?schema=...``); default SQLite in the repository.
    shape : `tuple` [`int`, `int`]
        Image shape (ny, nx).
    seed : `int`
        Random seed; image (e, d) is ``1000 + 10 e + d`` plus uniform noise in [-20, 20] ADU.

    Returns
    -------
    butler : `butler.Butler`
    medians : `dict` [`tuple` [`int`, `int`], `float`]
        True median (ADU) of every (exposure, detector) image.
    """
    import _toy_tasks as toy

    from butler import Butler, DatasetType

    Butler.create(root, db=db)
    butler = Butler(root, writeable=True)
    toy.register_toy_dimensions(butler, n_exposures, n_detectors)
    dt = DatasetType("toyRaw", ("instrument", "exposure", "detector"), "NumpyArray")
    butler.registry.register_dataset_type(dt)
    butler.registry.register_run(toy.TOY_RAW_RUN)
    rng = np.random.default_rng(seed)
    medians: dict[tuple[int, int], float] = {}
    for e in range(1, n_exposures + 1):
        for d in range(n_detectors):
            img = (1000 + 10 * e + d + rng.integers(-20, 21, size=shape)).astype(np.uint16)
            medians[(e, d)] = float(np.median(img))
            butler.put(
                img, dt.name, instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d, run=toy.TOY_RAW_RUN
            )
    return butler, medians


def drop_pg_schema(url: str, schema: str) -> None:
    """Drop a test schema (and everything in it) from the PostgreSQL server."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


def pool_processes(marker: str) -> list[str]:
    """Return ``"PID: command line"`` of each live parsl worker pool whose command line has ``marker``."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if "process_worker_pool" in cmd and marker in cmd and state != "Z":
            out.append(f"{p.name}: {cmd[:100]}")
    return out


@pytest.fixture
def pg_db(postgres_url: str) -> Iterator[str]:
    """A registry URL in a fresh PostgreSQL schema, dropped afterwards."""
    schema = f"ccdflow_parsl_{uuid.uuid4().hex[:10]}"
    yield f"{postgres_url}?schema={schema}"
    drop_pg_schema(postgres_url, schema)
