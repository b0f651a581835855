"""The Butler facade and the file datastore, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from butler import (
    Butler,
    CollectionType,
    ConflictingDefinitionError,
    DataIdError,
    DatasetNotFoundError,
    DatasetRef,
    DatasetType,
    DatastoreError,
    FileDataset,
    QuantumBackedButler,
    RepositoryError,
    Timespan,
)
from butler._errors import CollectionTypeError

from .conftest import exposure_span


def test_put_get_roundtrip_and_paths(filled):
    rng = np.random.default_rng(42)
    arr = rng.normal(1000.0, 5.0, size=(64, 48)).astype(np.float32)
    ref = filled.put(arr, "arr", instrument="cam", exposure=3, detector=2, run="u/me/run1")
    assert ref.run == "u/me/run1" and ref.id.version == 7
    uri = filled.get_uri(ref)
    # Template: {run}/{datasetType}/{day_obs}/{exposure.obs_id}/{datasetType}_{instrument}_{obs_id}_{detector.full_name}_{run}
    assert uri == filled.root / "u/me/run1/arr/20250101/CAM_0003/arr_cam_CAM_0003_S02_u_me_run1.npy"
    got = filled.get("arr", {"instrument": "cam", "exposure": 3}, detector=2, collections="u/me/run1")
    assert got.dtype == np.float32 and np.array_equal(got, arr)
    assert np.array_equal(filled.get(ref), arr)
    cut = filled.get(ref, parameters={"slices": (slice(10, 20), slice(5, 8))})
    assert cut.shape == (10, 3) and np.array_equal(cut, arr[10:20, 5:8])
    assert filled.exists("arr", instrument="cam", exposure=3, detector=2, collections="u/me/run1")
    assert filled.get_dataset(ref.id) == ref and filled.get_dataset(str(ref.id)).run == "u/me/run1"
    other = Butler.from_config(filled.root, collections="u/*")
    assert np.array_equal(other.get("arr", instrument="cam", exposure=3, detector=2), arr)
    other.close()
    assert not filled.exists("arr", instrument="cam", exposure=4, detector=2, collections="u/me/run1")
    # No leftover temporary files.
    assert not [p for p in uri.parent.iterdir() if p.name.startswith(".")]


def test_put_second_dataset_same_data_id_is_rejected_and_file_kept(filled):
    a = np.arange(6.0)
    ref = filled.put(a, "arr", instrument="cam", exposure=1, detector=0, run="r")
    with pytest.raises(ConflictingDefinitionError, match="already in RUN 'r'"):
        filled.put(a * 2, "arr", instrument="cam", exposure=1, detector=0, run="r")
    assert np.array_equal(filled.get(ref), a)
    assert len(list(filled.get_uri(ref).parent.iterdir())) == 1


def test_put_into_non_run_and_missing_run(filled):
    filled.registry.register_collection("tag", CollectionType.TAGGED)
    with pytest.raises(CollectionTypeError, match="only be put into a RUN"):
        filled.put(np.zeros(2), "arr", instrument="cam", exposure=1, detector=0, run="tag")
    with pytest.raises(CollectionTypeError, match="no RUN"):
        filled.put(np.zeros(2), "arr", instrument="cam", exposure=1, detector=0)
    with pytest.raises(DataIdError, match="missing required dimension"):
        filled.put(np.zeros(2), "arr", instrument="cam", exposure=1, run="r")
    with pytest.raises(DataIdError, match="unknown value 77"):
        filled.put(np.zeros(2), "arr", instrument="cam", exposure=77, detector=0, run="r")
    assert filled.registry.query_collections("r") == []

    class Unwritable:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("cannot convert")

    with pytest.raises(DatastoreError, match="cannot write arr"):
        filled.put(Unwritable(), "arr", instrument="cam", exposure=1, detector=0, run="new/run")
    assert filled.registry.query_collections("new/*") == []
    assert not (filled.root / "new").exists() or not list((filled.root / "new").rglob("*.npy*"))


def test_get_missing_names_collections(filled):
    filled.registry.register_run("r1")
    filled.registry.register_run("r2")
    with pytest.raises(DatasetNotFoundError, match=r"collection\(s\) \['r1', 'r2'\]"):
        filled.get("arr", instrument="cam", exposure=1, detector=0, collections=["r1", "r2"])


def test_deleted_and_corrupted_files_are_reported(filled):
    ref = filled.put(np.arange(100.0), "arr", instrument="cam", exposure=2, detector=1, run="r")
    path = filled.get_uri(ref)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DatastoreError, match=rf"arr .*corrupted.*{path.name}|{path.name}.*corrupted"):
        filled.get(ref)
    path.unlink()
    with pytest.raises(DatastoreError, match=rf"deleted.*|{path.name}") as exc:
        filled.get("arr", instrument="cam", exposure=2, detector=1, collections="r")
    assert str(path) in str(exc.value) and "arr" in str(exc.value)


def test_checksums_detect_same_size_corruption(tmp_path, db_url):
    from .conftest import fill_dimensions

    b = Butler.create(tmp_path / "ck", db=db_url, checksum=True)
    fill_dimensions(b.registry)
    b.registry.register_dataset_type(DatasetType("meta", ["exposure"], "StructuredDataDict"))
    ref = b.put({"gain": 1.25, "noise": [3.5, 3.75]}, "meta", instrument="cam", exposure=1, run="r")
    assert b.get(ref) == {"gain": 1.25, "noise": [3.5, 3.75]}
    p = b.get_uri(ref)
    p.write_text(p.read_text().replace("1.25", "9.25"))
    with pytest.raises(DatastoreError, match="checksum"):
        b.get(ref)
    b.close()


def test_calibration_get_by_exposure_time(filled):
    reg = filled.registry
    b1 = filled.put(np.full(4, 1.0), "bias", instrument="cam", detector=0, run="calib/1")
    b2 = filled.put(np.full(4, 2.0), "bias", instrument="cam", detector=0, run="calib/2")
    reg.register_collection("calib", CollectionType.CALIBRATION)
    reg.certify("calib", [b1], Timespan(None, exposure_span(4).begin))
    reg.certify("calib", [b2], Timespan(exposure_span(4).begin, None))
    assert filled.get("bias", instrument="cam", exposure=2, detector=0, collections="calib")[0] == 1.0
    assert filled.get("bias", instrument="cam", exposure=5, detector=0, collections="calib")[0] == 2.0
    assert (
        filled.get("bias", instrument="cam", detector=0, collections="calib", timespan=exposure_span(1))[0]
        == 1.0
    )


@pytest.mark.parametrize("transfer", ["copy", "symlink", "hardlink", "move", "direct", "auto"])
def test_ingest_transfer_modes(filled, tmp_path, transfer):
    src = tmp_path / "external" / "frame.npy"
    src.parent.mkdir()
    data = np.arange(12.0).reshape(3, 4)
    np.save(src, data)
    dt = filled.registry.get_dataset_type("arr")
    fd = FileDataset(src, DatasetRef(dt, {"instrument": "cam", "exposure": 4, "detector": 3}, "raw/all"))
    refs = filled.ingest(fd, transfer=transfer, id_generation="dataid_type")
    assert len(refs) == 1 and refs[0].id.version == 5
    uri = filled.get_uri(refs[0])
    if transfer == "direct":
        assert uri == src
    else:
        assert uri.is_relative_to(filled.root)
    assert uri.is_symlink() == (transfer == "symlink")
    assert src.exists() == (transfer != "move")
    assert np.array_equal(
        filled.get("arr", instrument="cam", exposure=4, detector=3, collections="raw/all"), data
    )
    if transfer != "move":
        # Re-ingesting the same file is a no-op with deterministic ids.
        assert filled.ingest(fd, transfer=transfer, id_generation="dataid_type") == []
        assert len(filled.query_datasets("arr", collections="raw/all")) == 1


def test_ingest_failure_leaves_nothing(filled, tmp_path):
    src = tmp_path / "a.npy"
    np.save(src, np.zeros(3))
    dt = filled.registry.get_dataset_type("arr")
    good = FileDataset(src, DatasetRef(dt, {"instrument": "cam", "exposure": 1, "detector": 0}, "raw/all"))
    bad = FileDataset(
        tmp_path / "missing.npy",
        DatasetRef(dt, {"instrument": "cam", "exposure": 2, "detector": 0}, "raw/all"),
    )
    with pytest.raises(DatastoreError, match="missing.npy"):
        filled.ingest(good, bad, transfer="copy")
    assert filled.registry.query_collections("raw/*") == []
    assert filled.query_datasets("arr") == []
    assert not list((filled.root / "raw").rglob("*.npy"))


def test_prune_and_remove_runs_delete_files(filled):
    refs = [
        filled.put(np.ones(3) * i, "arr", instrument="cam", exposure=i, detector=0, run="r")
        for i in (1, 2, 3)
    ]
    paths = [filled.get_uri(r) for r in refs]
    filled.prune_datasets(refs[:1])
    assert not paths[0].exists() and paths[1].exists()
    assert filled.registry.get_dataset(refs[0].id) is None
    filled.registry.set_collection_chain("chain", ["r"])
    with pytest.raises(ConflictingDefinitionError, match="chain"):
        filled.remove_runs(["r"])
    filled.registry.remove_collection("chain")
    assert filled.remove_runs(["r"]) == 2
    assert not paths[1].exists() and not (filled.root / "r").exists()
    assert filled.registry.query_collections("r") == []


def test_register_outputs_and_quantum_backed_butler(filled):
    reg = filled.registry
    inp = filled.put(np.arange(5.0), "arr", instrument="cam", exposure=1, detector=0, run="in")
    info = reg.get_file_records([inp.id])[inp.id]
    dt = reg.get_dataset_type("meta")
    out = DatasetRef(
        dt, reg.expand_data_id(instrument="cam", exposure=1, dimensions=dt.dimensions), "out/run"
    )
    qbb = QuantumBackedButler(filled.root, inputs={inp.id: (inp, info)}, outputs=[out])
    x = qbb.get(inp)
    qbb.put({"sum": float(x.sum())}, out)
    assert qbb.exists(out) and qbb.get(out) == {"sum": 10.0}
    with pytest.raises(DatasetNotFoundError, match="not a predicted output"):
        qbb.put({}, DatasetRef(dt, out.data_id, "out/run"))
    # Nothing is registered until the driver registers the outputs, in one transaction.
    assert reg.query_collections("out/*") == []
    filled.register_outputs(qbb.written)
    assert filled.get("meta", instrument="cam", exposure=1, collections="out/run") == {"sum": 10.0}
    assert filled.find_dataset("meta", instrument="cam", exposure=1, collections="out/run").id == out.id
    with pytest.raises(ConflictingDefinitionError):
        filled.register_outputs(qbb.written)
    # Datastore records are reachable through the datastore bridge.
    assert filled.datastore.get_stored_infos([out])[out.id].path == qbb.written[0][1].path


def test_query_refs_are_expanded(filled):
    for e in (1, 2):
        filled.put({"e": e}, "meta", instrument="cam", exposure=e, run="r")
    refs = filled.query_datasets("meta", collections="r", order_by="exposure")
    assert [r.data_id.records["exposure"].obs_id for r in refs] == ["CAM_0001", "CAM_0002"]
    assert [filled.get(r) for r in refs] == [{"e": 1}, {"e": 2}]


def test_repository_errors(tmp_path):
    with pytest.raises(RepositoryError, match="does not exist"):
        Butler(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RepositoryError, match="not a butler repository"):
        Butler(tmp_path / "plain")
    Butler.create(tmp_path / "repo").close()
    with pytest.raises(RepositoryError, match="already a butler repository"):
        Butler.create(tmp_path / "repo")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(RepositoryError, match="not empty"):
        Butler.create(tmp_path / "full")
    with pytest.raises(RepositoryError):
        Butler.create(tmp_path / "badpg", db="postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert not (tmp_path / "badpg").exists()
    b = Butler.create(tmp_path / "repo", overwrite=True)
    assert b.registry.query_collections() == []
    b.close()


def test_template_per_dataset_type(tmp_path):
    from .conftest import fill_dimensions

    b = Butler.create(
        tmp_path / "t", templates={"meta": "{run}/custom/{exposure}/{datasetType}_{exposure.obs_id}"}
    )
    fill_dimensions(b.registry)
    b.registry.register_dataset_type(DatasetType("meta", ["exposure"], "StructuredDataDict"))
    ref = b.put({"a": 1}, "meta", instrument="cam", exposure=6, run="r")
    assert b.get_uri(ref) == b.root / "r/custom/6/meta_CAM_0006.yaml"
    assert Path(b.datastore.path_for(ref)) == Path("r/custom/6/meta_CAM_0006.yaml")
    b.close()


def test_sqlite_writer_lock_times_out_cleanly(tmp_path):
    import sqlite3

    from butler import RepositoryLockedError

    from .conftest import fill_dimensions

    b = Butler.create(tmp_path / "lock")
    fill_dimensions(b.registry)
    cfg = (b.root / "butler.yaml").read_text().replace("busy_timeout: 60.0", "busy_timeout: 0.5")
    (b.root / "butler.yaml").write_text(cfg)
    b.close()
    other = sqlite3.connect(b.root / "registry.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        b2 = Butler(b.root)
        # Readers are not blocked by the writer (WAL).
        assert len(b2.registry.query_dimension_records("detector")) == 4
        import time

        t0 = time.monotonic()
        with pytest.raises(RepositoryLockedError, match="locked by another writer"):
            b2.registry.register_run("blocked")
        assert time.monotonic() - t0 >= 0.4
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert b2.registry.query_collections("blocked") == []
    assert b2.registry.register_run("blocked") is True
    b2.close()


def test_formatters_roundtrip(tmp_path):
    from astropy.table import Table

    from butler.datastore.formatters import (
        AstropyFitsTableFormatter,
        AstropyTableFormatter,
        JsonFormatter,
        NumpyFormatter,
        PngFormatter,
        YamlFormatter,
    )

    t = Table({"amp": ["C00", "C01"], "gain": [1.5, 1.25]})
    for fmt in (AstropyTableFormatter(), AstropyFitsTableFormatter()):
        p = tmp_path / f"t{fmt.extension}"
        fmt.write(t, p, None)
        back = fmt.read(p, None)
        assert list(back["amp"]) == ["C00", "C01"] and list(back["gain"]) == [1.5, 1.25]
        assert fmt.read(p, None, parameters={"columns": ["gain"]}).colnames == ["gain"]
    d = {"a": np.float32(1.5), "b": [np.int64(3), 4], "c": {"d": "x"}}
    for fmt in (YamlFormatter(), JsonFormatter()):
        p = tmp_path / f"d{fmt.extension}"
        fmt.write(d, p, None)
        assert fmt.read(p, None) == {"a": 1.5, "b": [3, 4], "c": {"d": "x"}}
    p = tmp_path / "a.npy"
    NumpyFormatter().write(np.arange(6, dtype=">i2").reshape(2, 3), p, None)
    back = NumpyFormatter().read(p, None)
    assert back.dtype == np.dtype(">i2") and back.tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="bbox"):
        NumpyFormatter().read(p, None, parameters={"bbox": 1})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    p = tmp_path / "f.png"
    PngFormatter().write(fig, p, None)
    plt.close(fig)
    assert PngFormatter().read(p, None).startswith(b"\x89PNG") and os.path.getsize(p) > 100


def _writer(root: str, run: str, n: int) -> None:
    b = Butler(root, run=run)
    for i in range(n):
        b.put({"i": i, "run": run}, "meta", instrument="cam", exposure=1 + i % 6, run=f"{run}/{i // 6}")
    b.close()


def test_concurrent_writers_serialize_on_sqlite(tmp_path):
    """Two processes putting at once both succeed (WAL + BEGIN IMMEDIATE + busy timeout)."""
    import multiprocessing as mp

    from .conftest import fill_dimensions

    b = Butler.create(tmp_path / "conc")
    fill_dimensions(b.registry)
    b.registry.register_dataset_type(DatasetType("meta", ["exposure"], "StructuredDataDict"))
    b.close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "conc"), f"w{k}", 12)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    b = Butler(tmp_path / "conc")
    refs = b.query_datasets("meta", collections="w*", find_first=False)
    assert len(refs) == 24
    assert sorted(b.get(r)["i"] for r in refs) == sorted(list(range(12)) * 2)
    b.close()


def test_missing_registry_file_is_reported_not_recreated(tmp_path):
    Butler.create(tmp_path / "r").close()
    (tmp_path / "r" / "registry.sqlite3").unlink()
    with pytest.raises(RepositoryError, match="registry database .* is missing"):
        Butler(tmp_path / "r")
    assert not (tmp_path / "r" / "registry.sqlite3").exists()


def test_quantum_backed_butler_reuse_for_workers(filled):
    """A worker shares one datastore between quanta (config/datastore kwargs, for_quantum)."""
    import shutil

    from butler._config import load_config

    reg = filled.registry
    inp = filled.put(np.arange(4.0), "arr", instrument="cam", exposure=1, detector=0, run="in")
    info = reg.get_file_records([inp.id])[inp.id]
    dt = reg.get_dataset_type("meta")
    outs = [
        DatasetRef(dt, reg.expand_data_id(instrument="cam", exposure=e, dimensions=dt.dimensions), "out/w")
        for e in (1, 2)
    ]
    cfg = load_config(filled.root)
    first = QuantumBackedButler(filled.root, inputs={inp.id: (inp, info)}, outputs=outs[:1], config=cfg)
    assert list(first.inputs) == [inp.id] and list(first.outputs) == [outs[0].id]
    # The predicted record names the file the write produces.
    predicted = first.predicted_file_info(outs[0])
    first.put({"v": float(first.get(inp).sum())}, outs[0])
    (ref0, info0), = first.written
    assert info0.path == predicted.path and info0.file_size > 0 and predicted.file_size == -1
    # The next quantum shares the datastore, with fresh state.
    second = first.for_quantum(inputs={}, outputs=outs[1:])
    assert second.datastore is first.datastore and second.written == []
    with pytest.raises(DatasetNotFoundError, match="not an input"):
        second.get(inp)
    # A prune elsewhere removed the whole output run directory: the shared cache copes.
    shutil.rmtree(filled.root / "out")
    second.put({"v": 2.0}, outs[1])
    assert second.get(outs[1]) == {"v": 2.0}
    # Old call form and datastore= form give the same layout; a foreign datastore is refused.
    third = QuantumBackedButler(filled.root, inputs={}, outputs=outs, datastore=first.datastore)
    assert third.predicted_file_info(outs[1]).path == second.written[0][1].path
    with pytest.raises(ValueError, match="rooted at"):
        QuantumBackedButler(filled.root / "other", inputs={}, outputs=outs, datastore=first.datastore)
    # A failed attempt's files are deleted and forgotten; leftovers at predicted paths removed.
    assert second.delete_written() == 1 and second.written == []
    assert not (filled.root / second.predicted_file_info(outs[1]).path).exists()
    third.put({"v": 3.0}, outs[0])
    assert third.remove_stale() == 1
    assert not (filled.root / third.predicted_file_info(outs[0]).path).exists()


def test_query_refs_records_are_lazy_but_complete(filled):
    """Query results build their records on first use, from a snapshot of the record caches."""
    import pickle

    for e in (1, 3, 5):
        for d in (0, 2):
            filled.put(np.zeros(1), "arr", instrument="cam", exposure=e, detector=d, run="r")
    refs = filled.query_datasets("arr", collections="r")
    assert refs[0].data_id._records is None and refs[0].data_id._vmap is None  # not built yet
    # A failed transaction clears the registry's caches; the refs keep their records.
    with pytest.raises(RuntimeError):
        with filled.registry.transaction():
            raise RuntimeError("boom")
    by_key = {(r.data_id["exposure"], r.data_id["detector"]): r for r in refs}
    assert sorted(by_key) == [(1, 0), (1, 2), (3, 0), (3, 2), (5, 0), (5, 2)]
    r = by_key[(3, 2)]
    assert r.data_id.has_records()
    assert r.data_id.records["exposure"].obs_id == "CAM_0003"
    assert r.data_id.records["detector"].full_name == "S02"
    assert r.data_id.records["physical_filter"].band == "g" and r.data_id["band"] == "g"
    assert r.data_id.timespan == exposure_span(3)
    # Same identity and values as a ref found directly; pickles with its records.
    found = filled.find_dataset("arr", instrument="cam", exposure=3, detector=2, collections="r")
    assert found == r and hash(found.data_id) == hash(r.data_id)
    assert dict(r.data_id) == found.data_id.to_simple() == {
        "instrument": "cam", "detector": 2, "exposure": 3, "band": "g", "physical_filter": "g_01",
        "day_obs": 20250101,
    }
    back = pickle.loads(pickle.dumps(by_key[(5, 0)]))
    assert back == by_key[(5, 0)] and back.data_id.records["exposure"].obs_id == "CAM_0005"
    assert isinstance(back.id, uuid.UUID) and str(back.id) == str(by_key[(5, 0)].id)
    assert hash(back.id) == hash(uuid.UUID(str(back.id)))


def test_staged_write_leaves_no_file_when_the_block_fails(filled):
    """`FileDatastore.staged_write`: a failure before or after ``commit()`` removes the file."""
    a = np.arange(12.0).reshape(3, 4)
    ref = filled.put(a, "arr", instrument="cam", exposure=2, detector=1, run="staged")
    directory = filled.get_uri(ref).parent
    before = sorted(p.name for p in directory.iterdir())
    other = type(ref)(ref.dataset_type, ref.data_id, "staged2", uuid.uuid4())
    for fail_after_commit in (False, True):
        with pytest.raises(KeyError, match="injected"):
            with filled.datastore.staged_write(a, other) as (info, commit):
                assert info.file_size > 0
                if fail_after_commit:
                    commit()
                    assert (filled.root / info.path).exists()
                raise KeyError("injected")
        assert not (filled.root / info.path).exists()
        assert not [p for p in (filled.root / info.path).parent.iterdir() if p.name.startswith(".")]
    with pytest.raises(RuntimeError, match="without commit"):
        with filled.datastore.staged_write(a, other) as (info, commit):
            pass
    assert not (filled.root / info.path).parent.exists() or not list((filled.root / info.path).parent.iterdir())
    with filled.datastore.staged_write(a, other) as (info, commit):
        commit()
    assert np.array_equal(np.load(filled.root / info.path), a)
    assert sorted(p.name for p in directory.iterdir()) == before  # the first RUN's directory untouched
