"""Camera description validation: errors name the file, the detector, the amplifier and the field."""

from __future__ import annotations

import pytest
import yaml

from pipeline.image import Box
from pipeline.instruments import (
    BUILTIN_INSTRUMENTS,
    CameraDescriptionError,
    UnknownInstrumentError,
    get_instrument,
    load_camera_description,
)
from pipeline.instruments.instrument import _HERE

MINIMAL = """
name: mycam
match: {INSTRUME: MYCAM}
filters: [{physical_filter: V, band: V}]
detectors:
  - id: 0
    name: chip0
    raw_shape: [110, 220]
    amplifiers:
      - {name: L, gain: 2.0, read_noise: 5.0, readout_corner: LL, bbox: [0, 0, 100, 100],
         raw_bbox: [0, 0, 110, 110], raw_data_bbox: [0, 0, 100, 100],
         raw_serial_overscan_bbox: "[101:110,1:100]", raw_parallel_overscan_bbox: [0, 100, 100, 10]}
      - {name: R, gain: 2.1, read_noise: 5.5, readout_corner: LR, bbox: [100, 0, 100, 100],
         raw_bbox: [110, 0, 110, 110], raw_data_bbox: [120, 0, 100, 100], raw_flip_x: true,
         raw_serial_overscan_bbox: [110, 0, 10, 100]}
translation:
  exposure_id: EXPNUM
  exposure_time: EXPTIME
  observation_type: {keyword: IMAGETYP, value_map: {zero: bias, object: science}}
  physical_filter: {keyword: FILTER, default: V}
  begin: {keyword: DATE-OBS}
  rules:
    - if: {"header:OBJECT": "Dome Flat"}
      set: {observation_type: flat}
"""


def _write(tmp_path, text, name="mycam.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_builtins_load_and_shapes():
    """Check builtins load and shapes."""
    expected = {"kast_blue": (1, {2}), "efosc2": (1, {1}), "megacam": (40, {2}), "testcam": (3, {4, 8, 16})}
    assert set(BUILTIN_INSTRUMENTS) == set(expected)
    for name, (ndet, namps) in expected.items():
        inst = get_instrument(name)
        assert len(inst.camera) == ndet and {len(d) for d in inst.camera} == namps
        for det in inst.camera:
            ny, nx = det.raw_shape
            for amp in det:
                assert Box(0, 0, nx, ny).contains(amp.raw_data_bbox)
                assert amp.raw_data_bbox.shape == amp.bbox.shape and det.bbox.contains(amp.bbox)
    k = get_instrument("kast_blue").camera[0]
    assert (k["A"].gain, k["A"].read_noise, k["B"].raw_serial_overscan_bbox) == (
        1.2,
        3.7,
        Box(2080, 0, 31, 350),
    )
    e = get_instrument("efosc2").camera[0]["L"]
    assert e.raw_serial_prescan_bbox == Box(1024, 0, 6, 1024) and e.raw_parallel_overscan_bbox.y0 == 1024


def test_minimal_yaml_only_instrument(tmp_path):
    """Check minimal yaml only instrument."""
    from astropy.io import fits

    inst = get_instrument(_write(tmp_path, MINIMAL))
    assert inst.name == "mycam" and inst.camera[0]["R"].raw_flip_x
    assert inst.camera[0]["L"].raw_serial_overscan_bbox == Box(100, 0, 10, 100)
    assert inst.camera[0].bbox == Box(0, 0, 200, 100)
    hdr = fits.Header(
        {
            "INSTRUME": "MYCAM",
            "EXPNUM": 42,
            "EXPTIME": 3.0,
            "IMAGETYP": "zero",
            "DATE-OBS": "2023-06-01T03:00:00",
            "OBJECT": "x",
        }
    )
    info = inst.translate(hdr)
    assert (info.exposure_id, info.observation_type, info.physical_filter, info.day_obs) == (
        42,
        "bias",
        "V",
        20230531,
    )
    assert info.obs_id == "42" and info.dark_time == 3.0 and info.detector == 0
    assert (info.end - info.begin).sec == pytest.approx(3.0)
    hdr["IMAGETYP"] = "OBJECT"
    hdr["OBJECT"] = "dome flat"
    assert inst.translate(hdr).observation_type == "flat"
    hdr["IMAGETYP"] = "object"
    hdr["OBJECT"] = "M31"
    assert inst.translate(hdr).observation_type == "science"


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (
            lambda d: d["detectors"][0]["amplifiers"][1].update(gain=-1),
            r"mycam.yaml: .*detector 'chip0' \(id 0, detectors\[0\]\), amplifier 'R' \(amplifiers\[1\]\), field 'gain'",  # noqa: E501
        ),
        (
            lambda d: d["detectors"][0]["amplifiers"][0].update(raw_data_bbox=[0, 0, 100, 300]),
            r"detector 'chip0'.*amplifier 'L' field 'raw_data_bbox'.*outside the raw image",
        ),
        (
            lambda d: d["detectors"][0]["amplifiers"][0].update(raw_bbox="33:44"),
            r"amplifier 'L'.*field 'raw_bbox'.*FITS section",
        ),
        (
            lambda d: d["detectors"][0]["amplifiers"][0].pop("read_noise"),
            r"amplifier 'L'.*field 'read_noise': Field required",
        ),
        (
            lambda d: d["detectors"][0]["amplifiers"][0].update(colour="red"),
            r"amplifier 'L'.*field 'colour': Extra inputs are not permitted",
        ),
        (lambda d: d["detectors"][0]["amplifiers"][0].update(readout_corner="XX"), r"field 'readout_corner'"),
        (lambda d: d["detectors"][0]["amplifiers"][1].update(name="L"), r"amplifier names repeat"),
        (lambda d: d["detectors"][0].update(crosstalk=[[0, 1]]), r"crosstalk' must be a 2x2"),
        (lambda d: d["detectors"].append(dict(d["detectors"][0])), r"detector ids repeat"),
        (
            lambda d: d["translation"].pop("exposure_time"),
            r"field 'translation.exposure_time': Field required",
        ),
        (lambda d: d["translation"]["rules"][0]["set"].update(colour="x"), r"unknown property 'colour'"),
        (lambda d: d.update(name="my cam"), r"field 'name'"),
        (lambda d: d.pop("match"), r"field 'match': Field required"),
        (lambda d: d.update(match={}), r"field 'match'"),
    ],
)
def test_validation_errors_name_file_detector_field(tmp_path, edit, pattern):
    """Check validation errors name file detector field."""
    data = yaml.safe_load(MINIMAL)
    edit(data)
    path = _write(tmp_path, yaml.safe_dump(data))
    with pytest.raises(CameraDescriptionError, match="(?s)" + pattern):
        load_camera_description(path)


def test_bad_files_and_names(tmp_path):
    """Check bad files and names."""
    with pytest.raises(CameraDescriptionError, match="not valid YAML"):
        load_camera_description(_write(tmp_path, "name: [unclosed"))
    with pytest.raises(CameraDescriptionError, match="must be a YAML mapping"):
        load_camera_description(_write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(
        UnknownInstrumentError, match="unknown instrument 'hsc'.*kast_blue, efosc2, megacam, testcam"
    ):
        get_instrument("hsc")
    with pytest.raises(UnknownInstrumentError, match="does not exist"):
        get_instrument(tmp_path / "nope.yaml")
    bad_class = MINIMAL.replace("name: mycam\n", "name: mycam\nclass_name: no.such.Translator\n")
    with pytest.raises(CameraDescriptionError, match="class_name 'no.such.Translator' cannot be imported"):
        get_instrument(_write(tmp_path, bad_class, "bad_class.yaml"))


def test_translation_value_errors(tmp_path):
    """Check translation value errors."""
    from astropy.io import fits

    from pipeline.instruments import TranslationError

    inst = get_instrument(_write(tmp_path, MINIMAL))
    base = {
        "INSTRUME": "MYCAM",
        "EXPNUM": 42,
        "EXPTIME": 3.0,
        "IMAGETYP": "zero",
        "DATE-OBS": "2023-06-01T03:00:00",
    }
    with pytest.raises(TranslationError, match="f.fits: cannot translate exposure_time .* from EXPTIME=-3.0"):
        inst.translate(fits.Header({**base, "EXPTIME": -3.0}), source="f.fits")
    with pytest.raises(TranslationError, match="cannot translate begin .* DATE-OBS='yesterday'"):
        inst.translate(fits.Header({**base, "DATE-OBS": "yesterday"}), source="f.fits")
    with pytest.raises(TranslationError, match="exposure_id 'abc' is not an integer"):
        inst.translate(fits.Header({**base, "EXPNUM": "abc"}), source="f.fits")
    with pytest.raises(TranslationError, match="cannot translate observation_type .*IMAGETYP missing"):
        inst.translate(fits.Header({k: v for k, v in base.items() if k != "IMAGETYP"}), source="f.fits")


def test_config_overrides_missing_is_empty():
    """Check config overrides come from pipeline/instruments/<name>/<label>.yaml, else are empty."""
    inst = get_instrument("testcam")
    assert inst.config_overrides("noSuchTask") == {}
    assert _HERE.name == "instruments"
    # MegaCam's ISR overrides (pipeline/instruments/megacam/isr.yaml) are found by label
    overrides = get_instrument("megacam").config_overrides("isr")
    assert overrides["doBias"] is False and overrides["doAssembleIsrExposures"] is True


def test_camera_format_doc_example_is_valid(tmp_path):
    """Check camera format doc example is valid."""
    from astropy.io import fits

    doc = (_HERE / "CAMERA_FORMAT.md").read_text()
    block = doc.split("## A complete example", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    inst = get_instrument(_write(tmp_path, block, "mycam_doc.yaml"))
    det = inst.camera[0]
    assert det["L"].raw_serial_overscan_bbox == Box(4, 0, 16, 1024)
    assert det.crosstalk[0, 1] == pytest.approx(2e-4)
    hdr = fits.Header(
        {
            "INSTRUME": "MYCAM",
            "EXPNUM": 7,
            "EXPOSURE": 0.0,
            "IMAGETYP": "Dark Frame",
            "DATE-OBS": "2024-06-01T22:00:00",
            "FILENAME": "d007.fits",
            "GAIN_R": 2.2,
        }
    )
    info = inst.translate(hdr)
    assert (info.observation_type, info.obs_id, info.exposure_time) == ("bias", "d007", 0.0)
    assert inst.detector_for_raw(0, hdr)["R"].gain == 2.2 and inst.detector_for_raw(0, hdr)["L"].gain == 1.9
