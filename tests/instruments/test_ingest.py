"""register_instrument / ingest_raws / RawFormatter through a real Butler."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from astropy.io import fits

from butler import Butler, ConflictingDefinitionError
from pipeline.instruments import get_instrument, ingest_raws, register_instrument
from pipeline.instruments.simulate import simulate_raws


@pytest.fixture
def butler(tmp_path):
    """Return a writeable butler on a new SQLite repository."""
    Butler.create(tmp_path / "repo")
    return Butler(tmp_path / "repo", writeable=True)


def test_register_instrument_records_and_idempotence(butler, tmp_path):
    """Check register instrument records and idempotence."""
    inst = register_instrument(butler, "megacam")
    dets = butler.query_dimension_records("detector", instrument="megacam")
    assert len(dets) == 40 and {d.full_name for d in dets} >= {"ccd00", "ccd39"}
    (rec,) = butler.query_dimension_records("instrument", instrument="megacam")
    assert rec.camera_yaml == inst.camera_yaml and rec.detector_max == 40
    assert rec.class_name == "pipeline.instruments.megacam.MegaCamTranslator"
    filters = {
        r.name: r.band for r in butler.query_dimension_records("physical_filter", instrument="megacam")
    }
    assert filters["i.MP9702"] == "i" and filters["gri.MP9605"] == "gri"
    register_instrument(butler, "megacam")  # no-op
    assert len(butler.query_dimension_records("detector", instrument="megacam")) == 40
    # the repository is self-contained: the instrument is found by name from the repo
    again = get_instrument("megacam", repo_root=butler.root)
    assert again.camera_yaml == inst.camera_yaml
    # a different description under the same name is refused
    text = tmp_path / "megacam.yaml"
    text.write_text(inst.camera_yaml.replace("gain: 1.54", "gain: 1.99", 1))
    with pytest.raises(ConflictingDefinitionError, match="different camera description"):
        register_instrument(butler, text)


def test_ingest_real_kast_and_efosc2_then_reingest_is_noop(butler, shared_data):
    """Check ingest real kast and efosc2 then reingest is noop."""
    register_instrument(butler, "kast_blue")
    register_instrument(butler, "efosc2")
    report = ingest_raws(
        butler, [shared_data / "raw" / "kast_blue", shared_data / "raw" / "efosc2"], transfer="symlink"
    )
    assert report.ok, report.summary()
    assert len(report.ingested) == 9 + 17 and not report.skipped
    again = ingest_raws(butler, [shared_data / "raw" / "kast_blue"], transfer="symlink")
    assert again.ok and not again.ingested and len(again.skipped) == 9
    refs = butler.query_datasets("raw", collections="kast_blue/raw/all")
    assert len(refs) == 9
    biases = butler.query_data_ids(
        ["exposure"], where="instrument = 'kast_blue' AND exposure.observation_type = 'bias'"
    )
    assert sorted(d["exposure"] for d in biases) == [20150520034404, 20150520034422, 20150520034439]
    exp = butler.get(
        "raw", instrument="efosc2", exposure=20220128000816, detector=0, collections="efosc2/raw/all"
    )
    assert exp.image.dtype == np.uint16 and exp.shape == (1030, 1030)
    direct = fits.getdata(shared_data / "raw" / "efosc2" / "EFOSC.2022-01-28T00:08:16.282.fits")
    assert np.array_equal(exp.image, direct) and exp.image.max() > 32767  # BZERO applied: unsigned values
    assert exp.info.observation_type == "flat" and exp.detector["L"].gain == 1.1
    assert exp.metadata["ESO DPR TYPE"] == "SKY,FLAT"
    (rec,) = butler.query_dimension_records("exposure", instrument="efosc2", exposure=20220128000816)
    assert (
        rec.observation_reason == "twilight"
        and rec.physical_filter == "g#782~Free"
        and rec.day_obs == 20220127
    )
    sub = butler.get(
        "raw",
        instrument="kast_blue",
        exposure=20150520034404,
        detector=0,
        collections="kast_blue/raw/all",
        parameters={"bbox": (2049, 0, 31, 350)},
    )
    assert sub.shape == (350, 31) and 930 < np.median(sub.image) < 960


def test_bad_files_are_reported_and_good_files_land(butler, tmp_path, shared_data):
    """Check bad files are reported and good files land."""
    register_instrument(butler, "kast_blue")
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(shared_data / "raw" / "kast_blue" / "b21.fits.gz", src / "b21.fits.gz")
    (src / "notfits.fits").write_text("this is not a FITS file\n" * 200)
    raw = gzip.decompress((shared_data / "raw" / "kast_blue" / "b22.fits.gz").read_bytes())
    (src / "truncated.fits").write_bytes(raw[: 2880 * 3 + 100])  # inside the 5-block header
    (src / "truncdata.fits").write_bytes(raw[: 2880 * 40])  # whole header, partial pixels
    hdr = fits.getheader(shared_data / "raw" / "kast_blue" / "b23.fits.gz")
    del hdr["EXPTIME"]
    fits.PrimaryHDU(np.zeros((350, 2112), np.uint16), header=hdr).writeto(src / "noexptime.fits")
    fits.PrimaryHDU(np.zeros((4, 4), np.int16), header=fits.Header({"INSTRUME": "HAL9000"})).writeto(
        src / "other.fits"
    )
    report = ingest_raws(butler, [src, tmp_path / "missing.fits"])
    reasons = dict(report.failed)
    assert sorted(r.data_id["exposure"] for r in report.ingested) == [20150520034404]
    assert "not a readable FITS file" in reasons[str(src / "notfits.fits")]
    assert "cannot translate exposure_time" in reasons[str(src / "noexptime.fits")]
    assert "EXPTIME" in reasons[str(src / "noexptime.fits")]
    assert (
        "unknown instrument" in reasons[str(src / "other.fits")]
        and "HAL9000" in reasons[str(src / "other.fits")]
    )
    assert "no such file" in reasons[str(tmp_path / "missing.fits")]
    assert "truncated FITS file" in reasons[str(src / "truncated.fits")]
    # a file truncated in its pixels has a whole header: ingest refuses it from its size (issue
    # reproduction: it was ingested and failed later in ISR); reading it directly names the file too
    assert (
        "truncated FITS file" in reasons[str(src / "truncdata.fits")]
        and f"announce {2880 * 5 + 350 * 2112 * 2} bytes" in reasons[str(src / "truncdata.fits")]
        and f"file has {2880 * 40}" in reasons[str(src / "truncdata.fits")]
    )
    from pipeline.instruments.raw import RawFileError, read_raw

    with pytest.raises(RawFileError, match="truncdata.fits: cannot read the pixels"):
        read_raw(src / "truncdata.fits")
    (src / "tiny.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    report2 = ingest_raws(butler, [src / "tiny.fits"])
    assert "truncated FITS file" in dict(report2.failed)[str(src / "tiny.fits")]
    assert not report.ok and "FAILED" in report.summary()


def test_no_instrument_registered(butler, shared_data):
    """Check no instrument registered."""
    with pytest.raises(ValueError, match="no instrument is registered.*register-instrument"):
        ingest_raws(butler, [shared_data / "raw" / "kast_blue"])


def test_multi_hdu_compressed_raws_one_dataset_per_detector(butler, tmp_path):
    """Check multi hdu compressed raws one dataset per detector."""
    register_instrument(butler, "testcam")
    res = simulate_raws(
        "testcam",
        tmp_path / "sim",
        exposures=["bias", {"type": "flat", "exposure_time": 1.0, "flux": 500}],
        seed=2,
        compress=True,
        gains={"C00": 1.25},
    )
    report = ingest_raws(butler, [tmp_path / "sim"], transfer="copy", processes=2)
    assert report.ok, report.summary()
    assert len(report.ingested) == 2 * 3
    refs = butler.query_datasets("raw", collections="testcam/raw/all", where="exposure = 1001")
    assert sorted(r.data_id["detector"] for r in refs) == [0, 1, 2]
    exp = butler.get("raw", instrument="testcam", exposure=1001, detector=2, collections="testcam/raw/all")
    assert exp.shape == (106, 600) and len(exp.detector) == 16 and exp.info.observation_type == "flat"
    exp0 = butler.get("raw", instrument="testcam", exposure=1001, detector=0, collections="testcam/raw/all")
    from pipeline.instruments.raw import read_raw

    assert np.array_equal(exp0.image, read_raw(res[1], "testcam", 0).image)
    assert res.truth.gain(0, "C00") == 1.25
    # sub-image read of a tile-compressed HDU through the butler (raw coordinates)
    sub = butler.get(
        "raw",
        instrument="testcam",
        exposure=1001,
        detector=2,
        collections="testcam/raw/all",
        parameters={"bbox": (10, 5, 40, 30)},
    )
    assert sub.image.dtype == np.uint16 and np.array_equal(sub.image, exp.image[5:35, 10:50])


@pytest.mark.slow
def test_megacam_simulated_raw_ingest_uses_header_gains(butler, tmp_path, shared_data):
    """Check megacam simulated raw ingest uses header gains."""
    register_instrument(butler, "megacam")
    simulate_raws(
        "megacam",
        tmp_path / "mc",
        exposures=["bias"],
        seed=1,
        detectors=[3],
        compress=True,
        header_template=shared_data / "headers" / "megacam" / "1927963o.fits.header",
        gains={"B": 1.91},
        first_id=2463900,
    )
    report = ingest_raws(butler, [tmp_path / "mc"], transfer="direct")
    assert report.ok, report.summary()
    (ref,) = report.ingested
    assert ref.data_id["detector"] == 3 and ref.data_id["exposure"] == 2463900
    exp = butler.get(ref)
    assert exp.detector["B"].gain == 1.91 and exp.image.dtype == np.uint16
    assert exp.info.observation_type == "bias" and exp.info.obs_id == "2463900b"


@pytest.fixture
def pg_butler(tmp_path, postgres_url):
    """Return a writeable butler whose registry is a fresh schema on the PostgreSQL server."""
    import uuid

    import sqlalchemy as sa

    schema = f"t_ingest_{uuid.uuid4().hex[:10]}"
    Butler.create(tmp_path / "pgrepo", db=f"{postgres_url}?schema={schema}")
    butler = Butler(tmp_path / "pgrepo", writeable=True)
    yield butler
    butler.close()
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    engine.dispose()


@pytest.mark.postgres
def test_ingest_on_postgresql(pg_butler, shared_data):
    """Check register and ingest of the real EFOSC2 raws on a PostgreSQL registry, and re-ingest."""
    register_instrument(pg_butler, "efosc2")
    report = ingest_raws(pg_butler, [shared_data / "raw" / "efosc2"], transfer="direct")
    assert report.ok and len(report.ingested) == 17
    assert len(ingest_raws(pg_butler, [shared_data / "raw" / "efosc2"], transfer="direct").skipped) == 17
    ids = sorted(
        d["exposure"]
        for d in pg_butler.query_data_ids(
            ["exposure"], where="instrument = 'efosc2' AND exposure.observation_type = 'bias'"
        )
    )
    assert ids[0] == 20220126190238 and len(ids) == 5
    exp = pg_butler.get("raw", instrument="efosc2", exposure=ids[0], detector=0, collections="efosc2/raw/all")
    assert exp.info.observation_type == "bias" and exp.image.dtype == np.uint16


def test_conflicting_exposure_id_fails_only_that_file(butler, tmp_path):
    """Check two different files claiming one exposure id: the second is reported, the first lands."""
    register_instrument(butler, "testcam")
    a = simulate_raws("testcam", tmp_path / "a", exposures=["bias"], seed=1, detectors=[0])
    b = simulate_raws("testcam", tmp_path / "b", exposures=["bias"], seed=2, detectors=[0])
    with fits.open(b[0], mode="update") as hdul:
        hdul[0].header["OBSID"] = "someone_else"
    first = ingest_raws(butler, [a[0]])
    assert first.ok and len(first.ingested) == 1
    second = ingest_raws(butler, [b[0]])
    ((path, reason),) = second.failed
    assert path == str(b[0]) and "exposure id 1000 is already used by obs_id 'testcam_1000'" in reason
    assert not second.ingested
