"""``where=`` on a repository of the real EFOSC2 raws in ``../shared/data``.

The truth is computed independently from the FITS headers (``DATE-OBS`` in UTC, ``EXPTIME``)
and the file names, not from the registry, so these tests check that numbers and times in
expressions select exactly the exposures the headers say they should.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("butler._butler")
pytest.importorskip("pipeline.instruments")

from astropy.io import fits  # noqa: E402
from astropy.time import Time, TimeDelta  # noqa: E402

from butler import Butler  # noqa: E402


@pytest.fixture(scope="module")
def efosc2(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Butler, list[dict]]]:
    """Yield a butler over the ingested EFOSC2 raws (left in place) and their header truth."""
    from pipeline.instruments import ingest_raws, register_instrument

    files = sorted((shared_data / "raw" / "efosc2").glob("*.fits"))
    assert len(files) >= 10
    root = tmp_path_factory.mktemp("efosc2_where") / "repo"
    butler = Butler.create(root)
    register_instrument(butler, "efosc2")
    ingest_raws(butler, files, transfer="direct")
    truth = []
    for f in files:
        header = fits.getheader(f)
        begin = Time(header["DATE-OBS"], scale="utc").tai
        exptime = float(header["EXPTIME"])
        truth.append(
            {
                "stem": f.stem,
                "begin": begin,
                "end": begin + TimeDelta(exptime, format="sec"),
                "exptime": exptime,
            }
        )
    yield butler, truth
    butler.close()


def obs_ids(data_ids) -> list[str]:
    """Return the sorted obs_id of expanded exposure data IDs."""
    return sorted(d.records["exposure"].obs_id for d in data_ids)


def stems(truth, predicate) -> list[str]:
    """Return the sorted file stems of the header rows selected by ``predicate``."""
    return sorted(t["stem"] for t in truth if predicate(t))


def test_exposure_time_comparisons(efosc2):
    """Numeric comparisons on exposure_time match the headers' EXPTIME."""
    butler, truth = efosc2
    got = butler.query_data_ids(["exposure"], where="instrument = 'efosc2' AND exposure.exposure_time > 100")
    assert obs_ids(got) == stems(truth, lambda t: t["exptime"] > 100)
    assert len(got) == 3
    got = butler.query_data_ids(["exposure"], where="exposure.exposure_time = 0")
    assert obs_ids(got) == stems(truth, lambda t: t["exptime"] == 0)
    got = butler.query_data_ids(
        ["exposure"], where="exposure.exposure_time >= 10 AND exposure.exposure_time < 25"
    )
    assert obs_ids(got) == stems(truth, lambda t: 10 <= t["exptime"] < 25)


def test_time_windows_in_utc_tai_and_mjd(efosc2):
    """A UTC window, the same window in TAI and as TAI MJDs select the same science frames."""
    butler, truth = efosc2
    lo, hi = Time("2022-01-28T08:00:00", scale="utc"), Time("2022-01-28T09:00:00", scale="utc")
    want = stems(truth, lambda t: t["exptime"] > 0 and t["begin"] < hi.tai and lo.tai < t["end"])
    assert len(want) == 3
    where_utc = "exposure.timespan OVERLAPS (T'2022-01-28T08:00:00/utc', T'2022-01-28T09:00:00/utc')"
    assert obs_ids(butler.query_data_ids(["exposure"], where=where_utc)) == want
    where_tai = f"exposure.timespan OVERLAPS (T'{lo.tai.isot}', T'{hi.tai.isot}')"
    assert obs_ids(butler.query_data_ids(["exposure"], where=where_tai)) == want
    where_mjd = f"exposure.timespan OVERLAPS ({float(lo.tai.mjd)!r}, {float(hi.tai.mjd)!r})"
    assert obs_ids(butler.query_data_ids(["exposure"], where=where_mjd)) == want


def test_time_point_inside_one_exposure(efosc2):
    """The instant 5 s after a flat's DATE-OBS (UTC) lies inside that flat only."""
    butler, truth = efosc2
    flat = next(t for t in truth if t["stem"] == "EFOSC.2022-01-26T19:18:58.464")
    instant = (flat["begin"] + TimeDelta(5, format="sec")).utc.isot
    got = butler.query_data_ids(["exposure"], where=f"exposure.timespan OVERLAPS T'{instant}/utc'")
    assert obs_ids(got) == [flat["stem"]]
    # read as TAI the same digits are 37 s earlier: before this flat began
    got = butler.query_data_ids(["exposure"], where=f"exposure.timespan OVERLAPS T'{instant}'")
    assert got == []


def test_glob_on_obs_id_and_raw_datasets(efosc2):
    """GLOB on obs_id matches the file names; query_datasets(raw) agrees."""
    butler, truth = efosc2
    got = butler.query_data_ids(["exposure"], where="GLOB(exposure.obs_id, 'EFOSC.2022-01-26T19:2*')")
    assert obs_ids(got) == stems(truth, lambda t: t["stem"].startswith("EFOSC.2022-01-26T19:2"))
    assert len(got) == 2
    refs = butler.query_datasets(
        "raw", collections="efosc2/raw/all", where="GLOB(exposure.obs_id, '*T08:4*') AND detector = 0"
    )
    assert sorted(r.data_id.records["exposure"].obs_id for r in refs) == stems(
        truth, lambda t: "T08:4" in t["stem"]
    )


def test_window_finds_zero_second_biases(efosc2):
    """Biases (EXPTIME 0) are found by a window that contains their DATE-OBS."""
    butler, truth = efosc2
    lo, hi = Time("2022-01-26T19:00:00", scale="utc").tai, Time("2022-01-26T19:10:00", scale="utc").tai
    want = stems(truth, lambda t: lo < t["begin"] < hi)
    assert len(want) == 5
    where = "exposure.timespan OVERLAPS (T'2022-01-26T19:00:00/utc', T'2022-01-26T19:10:00/utc')"
    assert obs_ids(butler.query_data_ids(["exposure"], where=where)) == want
