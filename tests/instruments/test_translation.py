"""Translation of every real file in ../shared/data to the right exposure properties."""

from __future__ import annotations

import pytest

from pipeline.instruments import TranslationError, get_instrument, read_headers
from pipeline.instruments.headers import load_header_dump, merge_headers

KAST = {
    # file: (exposure id, observation type, exposure time, target)
    "b1.fits.gz": (20150520013527, "arc", 30.0, "Arcs"),
    "b11.fits.gz": (20150520015327, "flat", 15.0, "Dome Flat"),
    "b12.fits.gz": (20150520015400, "flat", 15.0, "Dome Flat"),
    "b13.fits.gz": (20150520015433, "flat", 15.0, "Dome Flat"),
    "b21.fits.gz": (20150520034404, "bias", 0.0, "Bias"),
    "b22.fits.gz": (20150520034422, "bias", 0.0, "Bias"),
    "b23.fits.gz": (20150520034439, "bias", 0.0, "Bias"),
    "b24.fits.gz": (20150520041216, "science", 30.0, "Feige 66"),
    "b27.fits.gz": (20150520043733, "science", 1200.0, "J1217p3905"),
}


def test_kast_blue_every_file(shared_data):
    """Check kast blue every file."""
    inst = get_instrument("kast_blue")
    files = sorted((shared_data / "raw" / "kast_blue").glob("*.fits.gz"))
    assert len(files) == len(KAST)
    for path in files:
        (info,) = inst.translate_file_headers(read_headers(path), str(path))
        exp_id, obstype, exptime, target = KAST[path.name]
        assert info.exposure_id == exp_id, path.name
        assert info.observation_type == obstype, path.name
        assert info.exposure_time == exptime and info.dark_time == exptime
        assert info.target_name == target
        assert info.physical_filter == "d55~600_4310" and info.band == "white"
        assert info.day_obs == 20150519  # local night at Lick (UTC-12 h convention)
        assert info.detector == 0 and info.instrument == "kast_blue"
    # DATE-OBS is UTC; the record is TAI (TAI-UTC = 35 s in May 2015)
    (b27,) = inst.translate_file_headers(read_headers(files[-1]), "b27")
    assert b27.begin.utc.isot == "2015-05-20T04:37:33.120"
    assert b27.begin.tai.isot == "2015-05-20T04:38:08.120"
    assert b27.end.utc.isot == "2015-05-20T04:57:33.140"


EFOSC_TYPES = {"DARK": "bias", "FLAT": "flat", "SKY,FLAT": "flat", "OBJECT": "science"}


def test_efosc2_every_file(shared_data):
    """Check efosc2 every file."""
    from astropy.io import fits

    inst = get_instrument("efosc2")
    files = sorted((shared_data / "raw" / "efosc2").glob("EFOSC.*.fits"))
    assert len(files) == 17
    counts: dict[str, int] = {}
    for path in files:
        headers = read_headers(path)
        (info,) = inst.translate_file_headers(headers, str(path))
        h = headers[0]
        assert info.observation_type == EFOSC_TYPES[h["ESO DPR TYPE"].strip()]
        counts[info.observation_type] = counts.get(info.observation_type, 0) + 1
        assert info.obs_id == path.name.removesuffix(".fits")
        stamp = path.name[6:25].replace("-", "").replace("T", "").replace(":", "")
        assert info.exposure_id == int(stamp)
        assert info.exposure_time == pytest.approx(float(h["EXPTIME"]))
        assert info.dark_time == pytest.approx(float(h["ESO DET WIN1 DKTM"]))
        assert info.science_program == "108.22F6.001"
        if h["ESO DPR TYPE"].strip() == "SKY,FLAT":
            assert info.observation_reason == "twilight" and info.physical_filter == "g#782~Free"
            assert info.band == "g"
        assert isinstance(h, fits.Header)
    assert counts == {"bias": 5, "flat": 9, "science": 3}


def test_megacam_real_headers(shared_data):
    """Check megacam real headers."""
    inst = get_instrument("megacam")
    expected = {
        "1927963f": (1927963, "flat", 2.03, 2.0, "gri.MP9605", 20160511, 40),
        "1927963o": (1927963, "science", 60.081, 60.0, "gri.MP9605", 20160511, 40),
        "2463854b": (2463854, "bias", 0.0, 0.0, "CaHK.MP9303", 20191204, 40),
        "2463857d": (2463857, "dark", 1000.0, 1000.0, "CaHK.MP9303", 20191204, 40),
        "979412b": (979412, "bias", 0.0, 0.0, "z.MP9801", 20080329, 36),
    }
    for stem, (exp_id, obstype, exptime, darktime, filt, day_obs, ndet) in expected.items():
        headers = load_header_dump(shared_data / "headers" / "megacam" / f"{stem}.fits.header")
        infos = inst.translate_file_headers(headers, stem)
        assert len(infos) == ndet
        assert [i.detector for i in infos] == list(range(ndet))
        assert [i.hdu for i in infos] == list(range(1, ndet + 1))
        info = infos[7]
        assert (info.exposure_id, info.obs_id, info.observation_type) == (exp_id, stem, obstype)
        assert info.exposure_time == exptime and info.dark_time == darktime
        assert info.physical_filter == filt and info.day_obs == day_obs
        # per-file header gains override the camera table (GAINA/GAINB, RDNOISEA/RDNOISEB)
        det = inst.detector_for_raw(info.detector, headers[info.hdu])
        assert det["A"].gain == pytest.approx(float(headers[info.hdu]["GAINA"]))
        assert det["B"].read_noise == pytest.approx(float(headers[info.hdu]["RDNOISEB"]))
    # the 2016 object: MJD-OBS 57520.2914642 UTC -> TAI (+36 s)
    headers = load_header_dump(shared_data / "headers" / "megacam" / "1927963o.fits.header")
    info = inst.translate_file_headers(headers, "o")[0]
    assert info.begin.utc.isot.startswith("2016-05-12T06:59:42")
    assert info.begin.tai.isot.startswith("2016-05-12T07:00:18")
    assert info.science_program == "16AH02" and info.target_name == "P10vfPh-C000"


def test_megacam_ccd36_to_39_use_header_values(shared_data):
    """Check megacam ccd36 to 39 use header values."""
    inst = get_instrument("megacam")
    headers = load_header_dump(shared_data / "headers" / "megacam" / "2463854b.fits.header")
    for det_id in range(36, 40):
        det = inst.camera[det_id]
        assert det.name == f"ccd{det_id}" and det.hdu == det_id + 1
        assert det["A"].gain == pytest.approx(float(headers[det_id + 1]["GAINA"]))


def test_megacam_2003_per_amp_layout_is_refused(shared_data):
    """Check megacam 2003 per amp layout is refused."""
    inst = get_instrument("megacam")
    headers = load_header_dump(shared_data / "headers" / "megacam" / "688231o.fits.header")
    with pytest.raises(TranslationError, match="one HDU per amplifier.*2003-era"):
        inst.translate_file_headers(headers, "688231o.fits")


def test_megaprime_translator_yaml_headers(shared_data):
    """Check megaprime translator yaml headers."""
    inst = get_instrument("megacam")
    (good,) = load_header_dump(shared_data / "headers" / "translator" / "fitsheader-megaprime.yaml")
    info = inst.translate(good, 3, source="fitsheader-megaprime.yaml")
    assert info.exposure_id == 1038843 and info.observation_type == "science"
    assert info.exposure_time == pytest.approx(615.037) and info.physical_filter == "i.MP9702"
    assert info.detector == 2  # EXTNAME ccd02 wins over the HDU index
    det = inst.detector_for_raw(2, good)
    assert (det["A"].gain, det["B"].gain, det["A"].read_noise, det["B"].read_noise) == (1.57, 1.67, 3.0, 5.0)


def test_broken_megaprime_header_gives_clear_error(shared_data):
    """Check broken megaprime header gives clear error."""
    inst = get_instrument("megacam")
    (bad,) = load_header_dump(shared_data / "headers" / "translator" / "bad-megaprime.yaml")
    with pytest.raises(
        TranslationError, match=r"bad-megaprime.yaml: cannot translate exposure_time .*EXPTIME"
    ):
        inst.translate(bad, 3, source="bad-megaprime.yaml")


def test_other_instruments_headers_are_not_megacam(shared_data):
    """Check other instruments headers are not megacam."""
    inst = get_instrument("megacam")
    for name in ("fitsheader-decam.yaml", "fitsheader-hsc.yaml"):
        (hdr,) = load_header_dump(shared_data / "headers" / "translator" / name)
        assert not inst.matches(hdr)
        assert not get_instrument("kast_blue").matches(hdr) and not get_instrument("efosc2").matches(hdr)


def test_merge_headers_extension_wins():
    """Check merge headers extension wins."""
    from astropy.io import fits

    p = fits.Header({"EXPTIME": 1.0, "FILTER": "r"})
    e = fits.Header({"EXPTIME": 2.0, "EXTNAME": "ccd01"})
    m = merge_headers(p, e)
    assert m["EXPTIME"] == 2.0 and m["FILTER"] == "r" and m["EXTNAME"] == "ccd01"
    assert p["EXPTIME"] == 1.0


def test_fast_header_matches_astropy_on_every_real_file(shared_data):
    """Check FastHeader (used by ingest) gives astropy's value for every keyword of every real raw."""
    from pipeline.instruments.headers import FastHeader

    files = sorted((shared_data / "raw").glob("*/*.fits*"))
    assert len(files) == 26
    for path in files:
        (slow,) = read_headers(path)
        (fast,) = read_headers(path, fast=True)
        assert isinstance(fast, FastHeader)
        for key in fast.keys():
            if key in slow and key not in ("COMMENT", "HISTORY"):
                expected = slow[key]
                got = fast[key]
                if isinstance(expected, float):
                    assert got == pytest.approx(expected, rel=1e-12), (path.name, key)
                else:
                    assert got == expected, (path.name, key)
        assert fast["EXPTIME"] == slow["EXPTIME"]
    (efosc,) = read_headers(files[0], fast=True)
    assert files[0].name.startswith("EFOSC")
    assert efosc["ESO DET OUT1 CONAD"] == 1.1 and efosc["ESO DPR CATG"] in ("CALIB", "SCIENCE")


def _kast_b27(shared_data):
    path = shared_data / "raw" / "kast_blue" / "b27.fits.gz"
    return read_headers(path)


def test_date_without_time_is_refused_and_format_rule_combines_them(shared_data, tmp_path):
    """A date-only DATE-OBS is refused for ``begin``, naming the fix; the format rule works.

    Issue reproduction: ``DATE-OBS = '2013-07-13'`` with the time in ``UT`` was taken as
    midnight without a word.
    """
    from pipeline.instruments.instrument import _HERE

    headers = _kast_b27(shared_data)
    h = headers[0].copy()
    utc_time = h["DATE-OBS"].split("T")[1]
    h["DATE-OBS"] = "2015-05-20"
    h["UT"] = utc_time
    for kw in ("DATE-BEG", "DATE-END"):
        h.remove(kw, ignore_missing=True)
    inst = get_instrument("kast_blue")
    with pytest.raises(TranslationError, match=r"b27: cannot translate .*'2015-05-20' is a date without a "
                                               r"time of day.*\{DATE-OBS\}T\{UT\}"):
        inst.translate(h, 0, source="b27")
    text = (_HERE / "kast_blue.yaml").read_text()
    text = text.replace("exposure_id: {keyword: [DATE-OBS, DATE-BEG], transform: datetime_digits}",
                        'exposure_id: {format: "{DATE-OBS}T{UT}", transform: datetime_digits}')
    text = text.replace("begin: {keyword: [DATE-BEG, DATE-OBS], time_format: isot, time_scale: utc}",
                        'begin: {format: "{DATE-OBS}T{UT}", time_format: isot, time_scale: utc}')
    text = text.replace("  end: {keyword: DATE-END, time_format: isot, time_scale: utc}\n", "")
    camera = tmp_path / "kast_split_time.yaml"
    camera.write_text(text)
    info = get_instrument(camera).translate(h, 0, source="b27")
    assert info.begin.utc.isot == "2015-05-20T04:37:33.120"
    assert info.exposure_id == 20150520043733


def test_out_of_range_integers_and_times_are_translation_errors(shared_data, tmp_path):
    """An EXPNUM >= 2**63 or a time past 2262 is a TranslationError naming the file.

    Issue reproduction: both raised OverflowError (and aborted a whole ingest batch).
    """
    h = _kast_b27(shared_data)[0].copy()
    h["DATE-OBS"] = "9999-01-01T00:00:00.000"
    h.remove("DATE-BEG", ignore_missing=True)
    h.remove("DATE-END", ignore_missing=True)
    with pytest.raises(TranslationError, match=r"b27: cannot translate begin .*outside the years 1678-2261"):
        get_instrument("kast_blue").translate(h, 0, source="b27")
    from pipeline.instruments.instrument import _HERE

    text = (_HERE / "kast_blue.yaml").read_text().replace(
        "exposure_id: {keyword: [DATE-OBS, DATE-BEG], transform: datetime_digits}",
        "exposure_id: {keyword: EXPNUM, transform: int}")
    camera = tmp_path / "kast_expnum.yaml"
    camera.write_text(text)
    h = _kast_b27(shared_data)[0].copy()
    h["EXPNUM"] = str(2**63)
    with pytest.raises(TranslationError, match=r"b27: cannot translate exposure_id .*9223372036854775808 "
                                               r"does not fit in a signed 64-bit integer"):
        get_instrument(camera).translate(h, 0, source="b27")
    h["EXPNUM"] = str(2**63 - 1)
    assert get_instrument(camera).translate(h, 0, source="b27").exposure_id == 2**63 - 1
