"""Two processes ingesting the same files at the same time (PostgreSQL and SQLite).

Issue reproduction: on PostgreSQL two simultaneous ingests of the same files failed in 2 of 9
rounds with "a value they refer to is not registered (duplicate key ... day_obs_pkey)": both
saw the night's ``day_obs`` record missing and both inserted it. Now concurrent inserts of the
same dimension records are idempotent: each file is ingested exactly once, by one of the two,
and the other reports it as already present.
"""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path

import pytest

from butler import Butler
from pipeline.instruments import ingest_raws, register_instrument
from pipeline.instruments.simulate import simulate_raws


def _widen_the_race() -> None:
    """Pause after each check for existing dimension records, before the insert.

    Both workers then see the records missing and both insert them: the interleaving that
    happened by chance in the campaign happens every time.
    """
    import time

    from butler.registry.managers.dimensions import DimensionRecordManager

    check = DimensionRecordManager._existing_keys

    def slow_check(self, *args, **kwargs):
        found = check(self, *args, **kwargs)
        time.sleep(0.3)
        return found

    DimensionRecordManager._existing_keys = slow_check  # type: ignore[method-assign]


def _ingest(root: str, files: list[str], barrier, queue) -> None:
    """Worker: open the repository, wait for the other worker, ingest, report the outcome."""
    try:
        _widen_the_race()
        with Butler(root, writeable=True) as b:
            barrier.wait(timeout=60)
            report = ingest_raws(b, files, transfer="copy")
        queue.put(
            (len(report.ingested), sorted(report.ingested_files), sorted(report.skipped), report.failed, None)
        )
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        queue.put((0, [], [], [], f"{type(exc).__name__}: {exc}"))


def _insert_records(root: str, barrier, queue) -> None:
    """Worker: insert the same night and RUN as the other worker, at the same time."""
    try:
        _widen_the_race()
        with Butler(root, writeable=True) as b:
            barrier.wait(timeout=60)
            days = [{"instrument": "testcam", "id": 20250101 + i} for i in range(3)]
            n = b.registry.insert_dimension_data("day_obs", *days, skip_existing=True)
            created = b.registry.register_run("testcam/raw/all")
        queue.put((n, created, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        queue.put((0, False, f"{type(exc).__name__}: {exc}"))


def _repo(tmp_path: Path, name: str, backend: str, request) -> tuple[Path, str | None]:
    db = None
    if backend == "postgresql":
        db = f"{request.getfixturevalue('postgres_url')}?schema=t_{uuid.uuid4().hex[:12]}"
    root = tmp_path / name
    b = Butler.create(root, db=db)
    try:
        register_instrument(b, "testcam")
    finally:
        b.close()
    return root, db


def _drop(db: str | None, request) -> None:
    if db is not None:
        import sqlalchemy as sa

        engine = sa.create_engine(request.getfixturevalue("postgres_url"), poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(db.rsplit("=", 1)[1], cascade=True, if_exists=True))
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_processes_insert_the_same_records(tmp_path: Path, backend: str, request) -> None:
    """Both see the records missing and both insert them: one inserts, the other skips them."""
    root, db = _repo(tmp_path, "repo", backend, request)
    try:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(2)
        queue = ctx.Queue()
        procs = [ctx.Process(target=_insert_records, args=(str(root), barrier, queue)) for _ in range(2)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert [r[2] for r in results] == [None, None]
        assert sorted(r[0] for r in results) == [0, 3]
        assert sorted(r[1] for r in results) == [False, True]
        with Butler(root) as b:
            assert len(b.registry.query_dimension_records("day_obs")) == 3
    finally:
        _drop(db, request)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_simultaneous_ingests_of_the_same_files(tmp_path: Path, backend: str, request) -> None:
    """Each file ingested once, by one of two simultaneous ingests; no failure."""
    files = [
        str(p)
        for p in simulate_raws("testcam", tmp_path / "raws", exposures=["bias"] * 3 + ["dark"] * 2, seed=4)
    ]
    ctx = multiprocessing.get_context("spawn")
    rounds = 1
    for i in range(rounds):
        root, db = _repo(tmp_path, f"repo{i}", backend, request)
        barrier = ctx.Barrier(2)
        queue = ctx.Queue()
        procs = [ctx.Process(target=_ingest, args=(str(root), files, barrier, queue)) for _ in range(2)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        try:
            for n, ingested, skipped, failed, error in results:
                assert error is None, error
                assert failed == [], failed
                assert sorted(ingested + skipped) == sorted(files)
            # every file ingested exactly once, by one of the two
            assert sorted(results[0][1] + results[1][1]) == sorted(files)
            with Butler(root) as b:
                refs = b.registry.query_datasets("raw", collections="testcam/raw/all", find_first=False)
                assert len(refs) == results[0][0] + results[1][0]
                assert len({(r.data_id["exposure"], r.data_id["detector"]) for r in refs}) == len(refs)
                assert all(b.get_uri(r).exists() for r in refs)
        finally:
            _drop(db, request)
