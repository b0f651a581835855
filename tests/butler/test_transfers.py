"""Export / import / transfer-datasets / retrieve-artifacts (butler.transfers), both backends."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from butler import (
    Butler,
    CollectionType,
    ConflictingDefinitionError,
    DatastoreError,
    MissingDatasetTypeError,
    RepositoryError,
    Timespan,
)
from butler.transfers import collect

from .conftest import exposure_span, fresh_postgres_schema


def _fill_datasets(b: Butler) -> None:
    """arr (6 exposures x 2 detectors) in raw/all, meta per exposure, two certified biases,
    a TAGGED collection and a chain."""
    for e in range(1, 7):
        for d in (0, 1):
            b.put(np.full(4, 10.0 * e + d), "arr", instrument="cam", exposure=e, detector=d, run="raw/all")
        b.put({"exposure": e, "mean": 1.5 * e}, "meta", instrument="cam", exposure=e, run="raw/all")
    reg = b.registry
    reg.register_collection("cam/calib", CollectionType.CALIBRATION)
    v1 = [b.put(np.full(4, 100.0 + d), "bias", instrument="cam", detector=d, run="calib/v1") for d in (0, 1)]
    v2 = [b.put(np.full(4, 200.0 + d), "bias", instrument="cam", detector=d, run="calib/v2") for d in (0, 1)]
    mid = exposure_span(3).begin
    reg.certify("cam/calib", v1, Timespan(None, mid))
    reg.certify("cam/calib", v2, Timespan(mid, None))
    reg.register_collection("best", CollectionType.TAGGED)
    reg.associate("best", b.query_datasets("arr", collections=["raw/all"], where="detector = 0"))
    reg.set_collection_chain("cam/defaults", ["cam/calib", "raw/all"])


@pytest.fixture
def dest_url(db_url):
    """A second registry on the same backend as ``db_url`` (a fresh schema on PostgreSQL)."""
    if db_url is None:
        yield None
        return
    yield from fresh_postgres_schema(db_url.split("?")[0])


@pytest.fixture
def source(filled):
    _fill_datasets(filled)
    return filled


def _sha(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=32).hexdigest()


def _snapshot(b: Butler) -> dict:
    """Everything an exchange must preserve: datasets (id, type, run, data ID, file hash),
    validity ranges, tags, chains, dimension records."""
    reg = b.registry
    refs = reg.query_datasets("*", find_first=False)
    infos = reg.get_file_records([r.id for r in refs])
    datasets = {
        r.id: (r.dataset_type.name, r.run, r.data_id.key, _sha(b.datastore.abspath(infos[r.id].path)))
        for r in refs
    }
    calibs = sorted(
        (str(ref.id), ts.begin_ns, ts.end_ns)
        for ref, ts in reg.query_calibration_validity("cam/calib", "bias")
    )
    tags = sorted(str(r.id) for r in reg.query_datasets("arr", collections=["best"], find_first=False))
    used = {(e, rec.data_id_value) for r in refs for e, rec in r.data_id.records.items()}
    records = {
        e: sorted(repr(r) for r in reg.query_dimension_records(e) if (e, r.data_id_value) in used)
        for e in ("instrument", "detector", "physical_filter", "day_obs", "exposure")
    }
    return {
        "datasets": datasets,
        "calibs": calibs,
        "tags": tags,
        "chain": reg.get_collection_chain("cam/defaults"),
        "records": records,
    }


def test_collect_selects_records_and_collections(source):
    c = collect(source, "arr", collections=["raw/all"], where="exposure = 3 AND detector = 1")
    assert c.n_datasets == 1 and c.n_files == 1
    assert [r["id"] for r in c.records["exposure"]] == [3]
    assert [r["id"] for r in c.records["detector"]] == [1]
    assert [r["name"] for r in c.records["physical_filter"]] == ["g_01"]
    assert [r["name"] for r in c.records["band"]] == ["g"]
    assert [col.name for col in c.collections] == ["raw/all"]
    whole = collect(source)
    assert whole.n_datasets == 12 + 6 + 4
    assert whole.n_validity_ranges == 4
    names = [col.name for col in whole.collections]
    assert names.index("cam/defaults") > max(names.index("cam/calib"), names.index("raw/all"))
    assert len(whole.tags["best"]) == 6


def test_export_import_round_trip(source, tmp_path, dest_url):
    before = _snapshot(source)
    report = source.export(tmp_path / "exp", transfer="copy")
    assert (report.n_datasets, report.n_files, report.n_validity_ranges) == (22, 22, 4)
    doc = yaml.safe_load((tmp_path / "exp" / "export.yaml").read_text())
    assert doc["description"] == "Butler Data Repository Export" and doc["version"] == "1.0.2"
    kinds = {d["type"] for d in doc["data"]}
    assert kinds == {"dimension", "collection", "dataset_type", "dataset", "associations"}
    dest = Butler.create(tmp_path / "dest", db=dest_url)
    r1 = dest.import_(tmp_path / "exp", transfer="copy")
    assert (r1.n_datasets, r1.n_files, r1.n_validity_ranges) == (22, 22, 4)
    after = _snapshot(dest)
    assert after == before
    # Exposure timespans survive to the nanosecond; a calibration lookup by exposure works.
    got = dest.get("bias", instrument="cam", detector=1, exposure=5, collections="cam/defaults")
    assert got[0] == 201.0
    got = dest.get("bias", instrument="cam", detector=1, exposure=1, collections="cam/defaults")
    assert got[0] == 101.0
    # Importing again is a no-op.
    r2 = dest.import_(tmp_path / "exp", transfer="copy")
    assert (r2.n_datasets, r2.n_skipped, r2.n_files, r2.n_validity_ranges, r2.n_records) == (0, 22, 0, 0, 0)
    assert _snapshot(dest) == before
    dest.close()


def test_import_conflict_changes_nothing(source, tmp_path):
    source.export(tmp_path / "exp")
    dest = Butler.create(tmp_path / "dest")
    from .conftest import fill_dimensions

    fill_dimensions(dest.registry)
    dest.registry.register_dataset_type(source.registry.get_dataset_type("arr"))
    clash = dest.put(np.zeros(4), "arr", instrument="cam", exposure=4, detector=1, run="raw/all")
    files_before = sorted(p for p in (tmp_path / "dest").rglob("*") if p.is_file())
    with pytest.raises(ConflictingDefinitionError) as err:
        dest.import_(tmp_path / "exp")
    msg = str(err.value)
    assert "arr" in msg and "'exposure': 4" in msg and str(clash.id) in msg and "nothing was imported" in msg
    assert sorted(p for p in (tmp_path / "dest").rglob("*") if p.is_file()) == files_before
    assert len(dest.registry.query_datasets("*", find_first=False)) == 1
    assert dest.registry.query_collections("*") == ["raw/all"]


def test_import_conflicting_record_and_missing_file(source, tmp_path):
    source.export(tmp_path / "exp")
    dest = Butler.create(tmp_path / "dest")
    dest.registry.insert_dimension_data("instrument", {"name": "cam", "class_name": "", "detector_max": 9})
    with pytest.raises(ConflictingDefinitionError, match=r"instrument .*detector_max: 9 in the repo\w*, 4"):
        dest.import_(tmp_path / "exp")
    dest2 = Butler.create(tmp_path / "dest2")
    victim = next((tmp_path / "exp").rglob("bias_*"))
    victim.unlink()
    with pytest.raises(DatastoreError, match="is missing"):
        dest2.import_(tmp_path / "exp")
    assert dest2.registry.query_collections("*") == []
    assert not [p for p in (tmp_path / "dest2").rglob("*") if p.is_file() and p.suffix == ".npy"]


def test_import_detects_corrupted_file(source, tmp_path):
    source.export(tmp_path / "exp", "meta", transfer="copy")
    victim = next((tmp_path / "exp").rglob("meta_*"))
    victim.write_text(victim.read_text() + "# extra\n")
    dest = Butler.create(tmp_path / "dest")
    with pytest.raises(DatastoreError, match="bytes"):
        dest.import_(tmp_path / "exp")
    assert dest.registry.query_dataset_types("*") == []


def test_export_refuses_non_empty_directory(source, tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "x").write_text("x")
    with pytest.raises(RepositoryError, match="not an empty directory"):
        source.export(tmp_path / "exp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "repo"]


def test_export_symlink_mode(source, tmp_path):
    source.export(tmp_path / "exp", "meta", transfer="symlink")
    files = [p for p in (tmp_path / "exp").rglob("meta_*")]
    assert len(files) == 6 and all(p.is_symlink() for p in files)


def test_transfer_datasets_between_backends(source, tmp_path, postgres_url):
    before = _snapshot(source)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    dest = Butler.create(tmp_path / "pg", db=f"{postgres_url}?schema={schema}")
    try:
        with pytest.raises(MissingDatasetTypeError, match="--register-dataset-types"):
            dest.transfer_from(source)
        report = dest.transfer_from(source, register_dataset_types=True)
        assert (report.n_datasets, report.n_files, report.n_validity_ranges) == (22, 22, 4)
        assert _snapshot(dest) == before
        again = dest.transfer_from(source, register_dataset_types=True)
        assert (again.n_datasets, again.n_skipped) == (0, 22)
    finally:
        dest.close()
        _drop_schema(postgres_url, schema)


def test_retrieve_artifacts(source, tmp_path):
    refs = source.query_datasets("arr", collections=["raw/all"], where="exposure IN (1, 2)")
    paths = source.retrieve_artifacts(refs, tmp_path / "out")
    assert len(paths) == 4
    for ref, p in zip(refs, paths):
        rel = source.registry.get_file_records([ref.id])[ref.id].path
        assert p == tmp_path / "out" / rel
        assert np.load(p)[0] == 10.0 * ref.data_id["exposure"] + ref.data_id["detector"]
    with pytest.raises(DatastoreError, match="already exists"):
        source.retrieve_artifacts(refs, tmp_path / "out")
    flat = source.retrieve_artifacts(refs, tmp_path / "flat", preserve_path=False)
    assert sorted(p.parent for p in flat) == [tmp_path / "flat"] * 4


def _drop_schema(url: str, schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    engine.dispose()


def test_direct_ingested_file_travels(filled, tmp_path):
    """A file registered where it is (outside the root) goes to external/ in the export."""
    from butler import DatasetRef, FileDataset

    outside = tmp_path / "elsewhere" / "a.npy"
    outside.parent.mkdir()
    np.save(outside, np.arange(5.0))
    dt = filled.registry.get_dataset_type("arr")
    ref = DatasetRef(dt, {"instrument": "cam", "exposure": 2, "detector": 3}, "ext")
    filled.ingest(FileDataset(outside, ref), transfer="direct")
    filled.export(tmp_path / "exp", "arr", transfer="symlink")
    copied = tmp_path / "exp" / "external" / outside.relative_to("/")
    assert copied.is_symlink() and copied.resolve() == outside
    dest = Butler.create(tmp_path / "dest")
    dest.import_(tmp_path / "exp", transfer="copy")
    (got,) = dest.query_datasets("arr", collections="ext")
    path = dest.get_uri(got)
    assert path.is_relative_to(dest.root) and not path.is_symlink()
    assert dest.get(got).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
