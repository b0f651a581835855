"""``butler transfer-datasets`` of a whole main-job repository from SQLite to PostgreSQL.

The repository is the main job's flow (`pipeline.main_job.run_flow`: raw ingest, cpBias, cpFlat,
cpPtc with certification, science ISR) on seeded simulated ``testcam`` raws. Everything moves to
a PostgreSQL registry with ``butler transfer-datasets SOURCE DEST --register-dataset-types``,
and the test checks every dataset (ID, type, RUN, data ID), every file (blake2b of the bytes,
size, formatter), every validity range of every CALIBRATION collection, the chains, the
dimension records, that calibration lookups by exposure time find the same datasets, that a
PTC reads back with the same gains, and that a second transfer is a no-op.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from butler import Butler, CollectionType
from tests.builders import run_simulated_flow, simulated_flow

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

FILTER = "r_test"


@pytest.fixture(scope="module")
def main_job_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The main job's calibration flow on simulated testcam raws (2 detectors, 12 amplifiers)."""
    from pipeline.instruments.simulate import simulate_raws

    flow = simulated_flow(
        "testcam",
        calib_begin="2024-01-01T00:00:00",
        gain_tolerance=0.05,
        ptc_config=("ptcExtract:minNumberGoodPixelsForCovariance=1000",),
    )
    base = tmp_path_factory.mktemp("transfer_main_job")
    raws = base / "raws"
    exposures: list[dict[str, Any]] = [{"type": "bias"}] * 3
    for t in (1.0, 5.0, 20.0):
        exposures += [{"type": "flat", "exposure_time": t, "flux": 1000.0, "physical_filter": FILTER}] * 2
    exposures.append(
        {"type": "science", "exposure_time": 30.0, "level": 2000.0, "physical_filter": FILTER,
         "target_name": "sim_field"}
    )
    simulate_raws("testcam", raws, exposures=exposures, seed=7, detectors=(0, 1))
    repo = base / "repo"
    run_simulated_flow(flow, raws, repo)
    yield repo
    shutil.rmtree(base, ignore_errors=True)


def _blake2b(path: Path) -> str:
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def inventory(b: Butler) -> dict[str, Any]:
    """Every dataset with its file's hash, every validity range, chain and used record."""
    reg = b.registry
    refs = reg.query_datasets("*", find_first=False)
    infos = reg.get_file_records([r.id for r in refs])
    datasets = {}
    for r in refs:
        info = infos[r.id]
        path = b.datastore.abspath(info.path)
        datasets[r.id] = (
            r.dataset_type.name, r.run, r.data_id.key, info.formatter, path.stat().st_size, _blake2b(path)
        )
    calibs = set()
    chains = {}
    for name in reg.query_collections("*"):
        kind = reg.get_collection_type(name)
        if kind is CollectionType.CALIBRATION:
            for dt in reg.query_dataset_types("*"):
                if dt.is_calibration:
                    calibs |= {(name, r.id, ts.begin_ns, ts.end_ns)
                               for r, ts in reg.query_calibration_validity(name, dt.name)}
        elif kind is CollectionType.CHAINED:
            chains[name] = reg.get_collection_chain(name)
    used = {(e, rec.data_id_value) for r in refs for e, rec in r.data_id.records.items()}
    records = {
        (e, repr(rec))
        for e in reg.universe.names
        for rec in reg.query_dimension_records(e)
        if (e, rec.data_id_value) in used
    }
    runs = set(reg.query_collections("*", types=["RUN"]))
    return {"datasets": datasets, "calibs": calibs, "chains": chains, "records": records, "runs": runs}


def test_transfer_whole_repository_to_postgresql(main_job_repo: Path, tmp_path: Path, postgres_url: str):
    src = Butler(main_job_repo, writeable=False)
    before = inventory(src)
    assert len(before["datasets"]) > 100 and len(before["calibs"]) >= 6  # bias, flat, ptc x 2 detectors
    schema = f"t_{uuid.uuid4().hex[:12]}"
    dest_root = tmp_path / "pg_repo"
    butler_exe = str(Path(sys.executable).parent / "butler")
    subprocess.run([butler_exe, "create", str(dest_root), "--db", f"{postgres_url}?schema={schema}"],
                   check=True, capture_output=True)
    try:
        proc = subprocess.run(
            [butler_exe, "transfer-datasets", str(main_job_repo), str(dest_root), "--register-dataset-types"],
            capture_output=True, text=True, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"Number of datasets transferred: {len(before['datasets'])}" in proc.stdout
        dest = Butler(dest_root, writeable=False)
        assert dest.config["registry"]["db"].startswith("postgresql")
        after = inventory(dest)
        assert after["datasets"] == before["datasets"]
        assert after["calibs"] == before["calibs"]
        assert after["chains"] == before["chains"]
        assert after["records"] == before["records"]
        assert after["runs"] == before["runs"]
        # Calibration lookups by exposure time find the same datasets; a PTC reads the same.
        sci = src.registry.query_datasets(
            "raw", where="exposure.observation_type = 'science'", find_first=False
        )
        assert sci
        for raw in sci:
            for calib in ("bias", "flat", "ptc"):
                a = src.find_dataset(calib, raw.data_id, collections=["testcam/calib"])
                b = dest.find_dataset(calib, raw.data_id, collections=["testcam/calib"])
                assert a is not None and b is not None and a.id == b.id
        ptc_ref = src.registry.query_datasets("ptc", find_first=False)[0]
        g_src = src.get(ptc_ref).gain
        g_dst = dest.get(dest.get_dataset(ptc_ref.id)).gain
        assert g_src.keys() == g_dst.keys()
        assert np.allclose(list(g_src.values()), list(g_dst.values()), equal_nan=True)
        dest.close()
        again = subprocess.run(
            [butler_exe, "transfer-datasets", str(main_job_repo), str(dest_root), "--register-dataset-types"],
            capture_output=True, text=True, check=True,
        )
        assert "Number of datasets transferred: 0" in again.stdout
        assert f"{len(before['datasets'])} dataset(s) already present" in again.stdout
    finally:
        _drop_schema(postgres_url, schema)


def _drop_schema(url: str, schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    engine.dispose()
