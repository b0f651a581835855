"""Ingest refuses what would fail later or lose data (issue reproductions).

- a different file for an already-ingested exposure is refused, naming both files;
- truncated files (plain, tile-compressed, gzip) and wrong image shapes are refused at ingest;
- a multi-detector file without one detector's HDU is reported (WARNING line naming it);
- a header value that overflows (EXPID >= 2**63, MJD 1e30) fails its file only (CLI);
- the summary counts files, then the datasets of the ingested files.
"""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from butler import Butler
from pipeline.instruments import ingest_raws, register_instrument
from pipeline.instruments.instrument import _HERE
from pipeline.instruments.simulate import simulate_raws


@pytest.fixture
def butler(tmp_path):
    """Return a writeable butler on a new SQLite repository with testcam registered."""
    Butler.create(tmp_path / "repo")
    b = Butler(tmp_path / "repo", writeable=True)
    register_instrument(b, "testcam")
    return b


def _sim(out, seed, n=1, **kw):
    return simulate_raws("testcam", out, exposures=["bias"] * n, seed=seed, **kw)


def test_different_file_for_ingested_exposure_is_refused(butler, tmp_path):
    """Re-ingest: same content is skipped; different content for the same exposure fails, naming both."""
    a = _sim(tmp_path / "a", seed=1)[0]
    first = ingest_raws(butler, [a], transfer="copy")
    assert first.ok and len(first.ingested) == 3 and first.ingested_files == [str(a)]
    stored = butler.get_uri(first.ingested[0])
    assert stored != a
    # the same file again, and a byte-identical copy elsewhere: already present
    copy = tmp_path / "elsewhere" / a.name
    copy.parent.mkdir()
    shutil.copy(a, copy)
    again = ingest_raws(butler, [a, copy])
    assert again.ok and not again.ingested and again.skipped == [str(a), str(copy)]
    # same exposure (same obs_id, same size), other pixels: refused, both files named
    b = _sim(tmp_path / "b", seed=2)[0]
    assert b.stat().st_size == a.stat().st_size and b.read_bytes() != a.read_bytes()
    report = ingest_raws(butler, [b])
    ((path, reason),) = report.failed
    assert path == str(b) and not report.skipped and not report.ingested
    assert f"raw testcam exposure 1000 detector 0 is already ingested from {stored}" in reason
    assert "same size but different content" in reason
    # a tile-compressed version of other pixels: differs in size
    c = _sim(tmp_path / "c", seed=3, compress=True)[0]
    report = ingest_raws(butler, [c])
    ((path, reason),) = report.failed
    assert (
        path == str(c)
        and f"({a.stat().st_size} bytes) and this file differs ({c.stat().st_size} bytes)" in reason
    )
    # with datastore checksums the comparison uses the recorded checksum
    root2 = tmp_path / "repo2"
    Butler.create(root2, checksum=True)
    b2 = Butler(root2, writeable=True)
    register_instrument(b2, "testcam")
    assert ingest_raws(b2, [a], transfer="copy").ok
    assert ingest_raws(b2, [copy]).skipped == [str(copy)]
    assert "same size but different content" in dict(ingest_raws(b2, [b]).failed)[str(b)]
    # the repository is unchanged: the first file's pixels are still what is read
    exp = butler.get("raw", instrument="testcam", exposure=1000, detector=0, collections="testcam/raw/all")
    assert np.array_equal(exp.image, fits.getdata(a, 1))


def test_truncated_files_are_refused_at_ingest(butler, tmp_path, shared_data):
    """Truncated pixel data is refused from the header sizes (plain, .fz, gzip); complete files land."""
    src = _sim(tmp_path / "sim", seed=4, n=5)
    fz = _sim(tmp_path / "fz", seed=5, compress=True, first_id=2000)[0]
    bad = tmp_path / "bad"
    bad.mkdir()
    plain = src[0].read_bytes()
    (bad / "short.fits").write_bytes(plain[: len(plain) - 2880 * 3])  # last HDU's pixels cut
    (bad / "short.fits.fz").write_bytes(fz.read_bytes()[:-2880])
    (bad / "short.fits.gz").write_bytes(gzip.compress(src[1].read_bytes())[:-5000])
    (bad / "whole.fits.gz").write_bytes(gzip.compress(src[2].read_bytes()))
    # a multi-member gzip (header member + data member, like bench/ingest_bench.py): complete
    raw3 = src[3].read_bytes()
    (bad / "members.fits.gz").write_bytes(gzip.compress(raw3[:2880]) + gzip.compress(raw3[2880:]))
    # the same file without the padding of its last data block is complete too
    with fits.open(src[4]) as hdul:
        last = hdul[-1]
        h = last.header
        unpadded = last._data_offset + h["NAXIS1"] * h["NAXIS2"] * abs(h["BITPIX"]) // 8
    assert unpadded % 2880
    (bad / "unpadded.fits").write_bytes(src[4].read_bytes()[:unpadded])
    # a single-HDU gzip raw (Kast): header-only reading never reaches its end; the gzip trailer does
    register_instrument(butler, "kast_blue")
    kast = gzip.decompress((shared_data / "raw" / "kast_blue" / "b21.fits.gz").read_bytes())
    (bad / "kast_short.fits.gz").write_bytes(gzip.compress(kast[:-100_000]))
    report = ingest_raws(butler, [bad])
    reasons = dict(report.failed)
    assert sorted(reasons) == [
        str(bad / n) for n in ("kast_short.fits.gz", "short.fits", "short.fits.fz", "short.fits.gz")
    ]
    assert reasons[str(bad / "kast_short.fits.gz")] == (
        f"truncated FITS file: its 1 HDU header(s) announce {2880 * 5 + 350 * 2112 * 2} bytes (headers + NAXISn x BITPIX "
        f"data) but the decompressed file has {len(kast) - 100_000}; copy the file again from its source"
    )
    assert reasons[str(bad / "short.fits")].startswith("truncated FITS file")
    assert f"file has {len(plain) - 2880 * 3}" in reasons[str(bad / "short.fits")]
    assert reasons[str(bad / "short.fits.fz")].startswith("truncated FITS file")
    assert "EOFError: Compressed file ended" in reasons[str(bad / "short.fits.gz")]
    assert sorted(report.ingested_files) == [
        str(bad / n) for n in ("members.fits.gz", "unpadded.fits", "whole.fits.gz")
    ]


def test_wrong_image_shape_is_refused_at_ingest(butler, tmp_path):
    """A detector HDU whose image is not the camera's raw_shape fails its file at ingest."""
    good, other = _sim(tmp_path / "sim", seed=6, n=2)
    with fits.open(other) as hdul:
        hdul[2].data = hdul[2].data[:-1]  # S01: 105 rows instead of 106
        hdul.writeto(tmp_path / "short_rows.fits")
    report = ingest_raws(butler, [good, tmp_path / "short_rows.fits"])
    ((path, reason),) = report.failed
    assert path == str(tmp_path / "short_rows.fits")
    assert "HDU 2 image is (105, 300) (ny, nx) but the testcam camera description says detector S01" in reason
    assert "raw_shape is (106, 300)" in reason
    assert report.ingested_files == [str(good)] and len(report.ingested) == 3


def test_missing_detector_hdu_is_reported(butler, tmp_path):
    """A multi-detector file without one detector's HDU: WARNING naming file and detector."""
    full, partial, declared = _sim(tmp_path / "sim", seed=7, n=3)
    with fits.open(partial) as hdul:
        del hdul[2]  # S01
        hdul.writeto(tmp_path / "no_s01.fits")
    with fits.open(declared) as hdul:
        hdul[0].header["NEXTEND"] = 3
        del hdul[3]  # S02
        hdul.writeto(tmp_path / "nextend.fits")
    report = ingest_raws(butler, [full, tmp_path / "no_s01.fits", tmp_path / "nextend.fits"])
    assert report.ok and len(report.ingested) == 3 + 2 + 2
    warnings = dict(report.warnings)
    assert sorted(warnings) == [str(tmp_path / "nextend.fits"), str(tmp_path / "no_s01.fits")]
    assert warnings[str(tmp_path / "no_s01.fits")] == (
        "no HDU for 1 of the 3 testcam detector(s): S01 (id 1); ingested the 2 detector(s) present"
    )
    assert warnings[str(tmp_path / "nextend.fits")].startswith("2 extension(s) but NEXTEND = 3; no HDU for 1")
    assert "S02 (id 2)" in warnings[str(tmp_path / "nextend.fits")]
    assert f"WARNING {tmp_path / 'no_s01.fits'}: no HDU for 1" in report.summary()
    assert "2 file(s) with warnings" in report.headline()


def _mjd_camera(tmp_path):
    text = (_HERE / "testcam.yaml").read_text()
    for old, new in (
        ("name: testcam", "name: mjdcam"),
        ("INSTRUME: TESTCAM", "INSTRUME: MJDCAM"),
        (
            "begin: {keyword: DATE-OBS, time_format: isot, time_scale: tai}",
            "begin: {keyword: MJD-OBS, time_format: mjd, time_scale: tai}",
        ),
    ):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "mjdcam.yaml"
    path.write_text(text)
    return path


def test_cli_batch_with_overflowing_headers_fails_those_files_only(tmp_path):
    """EXPID >= 2**63 and MJD-OBS = 1e30: FAILED <file> lines, the rest of the batch is ingested."""
    from butler.cli import cli

    camera = _mjd_camera(tmp_path)
    repo = tmp_path / "repo"
    runner = CliRunner()
    assert runner.invoke(cli, ["create", str(repo)]).exit_code == 0
    r = runner.invoke(cli, ["register-instrument", str(repo), str(camera)])
    assert r.exit_code == 0, r.output
    files = simulate_raws(camera, tmp_path / "raws", exposures=["bias"] * 4, seed=8)
    with fits.open(files[1], mode="update") as hdul:
        hdul[0].header["EXPID"] = 2**63
    with fits.open(files[2], mode="update") as hdul:
        hdul[0].header["MJD-OBS"] = 1e30
    r = runner.invoke(cli, ["ingest-raws", str(repo), str(tmp_path / "raws")])
    assert r.exit_code == 1
    assert r.stdout.strip() == (
        "Ingested 2 file(s) (6 raw dataset(s)); 0 file(s) already present; 2 file(s) failed."
    )
    failed = [line for line in r.stderr.splitlines() if line.strip().startswith("FAILED")]
    assert len(failed) == 2 and "Traceback" not in r.output
    assert (
        failed[0].startswith(f"  FAILED {files[1]}: ")
        and "does not fit in a signed 64-bit integer" in failed[0]
    )
    assert failed[1].startswith(f"  FAILED {files[2]}: ") and "cannot translate begin" in failed[1]
    ids = Butler(repo).query_data_ids(["exposure"], where="instrument = 'mjdcam'")
    assert sorted(d["exposure"] for d in ids) == [1000, 1003]
    # re-ingest: files counted as files, nothing new
    r = runner.invoke(cli, ["ingest-raws", str(repo), str(files[0]), str(files[3])])
    assert r.exit_code == 0
    assert (
        r.stdout.strip()
        == "Ingested 0 file(s) (0 raw dataset(s)); 2 file(s) already present; 0 file(s) failed."
    )
