"""Exposure FITS round trips and sub-image reads."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.time import Time

from pipeline.image import (
    Amplifier,
    Box,
    Detector,
    Exposure,
    ExposureFormatter,
    ExposureInfo,
    MaskedImage,
    read_exposure,
    write_exposure,
)
from pipeline.image.fits import ExposureFitsError
from pipeline.image.metadata import PropertyList


def _exposure(dtype=np.float32):
    rng = np.random.default_rng(7)
    img = rng.normal(1000, 10, size=(40, 30)).astype(dtype)
    mi = MaskedImage(img, rng.integers(0, 8, size=(40, 30)), rng.uniform(1, 2, size=(40, 30)))
    mi.add_mask_plane("UNMASKEDNAN")
    mi.mask[5, 5] |= 1 << mi.mask_planes["UNMASKEDNAN"]
    amps = (
        Amplifier("A", gain=1.2, read_noise=3.7, bbox=(0, 0, 15, 40)),
        Amplifier("B", gain=1.3, read_noise=3.9, bbox=(15, 0, 15, 40), readout_corner="LR", raw_flip_x=True),
    )
    det = Detector(
        4,
        "ccd04",
        bbox=Box(0, 0, 30, 40),
        amplifiers=amps,
        crosstalk=[[0, 1e-3], [2e-3, 0]],
        hdu=5,
        raw_shape=(40, 34),
    )
    info = ExposureInfo(
        id=2015052001,
        obs_id="b11",
        instrument="kast_blue",
        exposure_time=15.0,
        dark_time=15.5,
        observation_type="flat",
        physical_filter="d55",
        begin=Time("2015-05-20T01:53:27.99", scale="tai"),
        end=Time("2015-05-20T01:53:42.99", scale="tai"),
        day_obs=20150519,
        detector=4,
    )
    exp = Exposure(
        mi,
        detector=det,
        info=info,
        photo_calib={"zero_point": 27.1},
        transmission_curve={"wavelength": [400.0, 500.0], "throughput": [0.5, 0.6]},
    )
    exp.metadata["OBJECT"] = "Dome Flat"
    exp.metadata["HIERARCH ESO DET OUT1 CONAD"] = 1.1
    return exp


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int32])
def test_round_trip_lossless(tmp_path, dtype):
    """Check round trip lossless."""
    exp = _exposure(dtype)
    path = tmp_path / "e.fits"
    write_exposure(exp, path)
    back = read_exposure(path)
    assert back.image.dtype == dtype
    assert np.array_equal(back.image, exp.image)
    assert np.array_equal(back.mask, exp.mask)
    assert np.array_equal(back.variance, exp.variance)
    assert back.masked_image.mask_planes == exp.masked_image.mask_planes
    assert back.masked_image.mask_planes["UNMASKEDNAN"] == 11
    assert back.detector == exp.detector
    assert back.info.id == 2015052001 and back.info.observation_type == "flat"
    assert back.info.begin.tai.isot == "2015-05-20T01:53:27.990"
    assert back.info.exposure_time == 15.0 and back.info.day_obs == 20150519
    assert back.metadata["OBJECT"] == "Dome Flat"
    assert back.metadata["ESO DET OUT1 CONAD"] == 1.1
    assert back.photo_calib == {"zero_point": 27.1}
    assert back.transmission_curve["throughput"] == [0.5, 0.6]


def test_sub_image_read(tmp_path):
    """Check sub image read."""
    exp = _exposure()
    path = tmp_path / "e.fits"
    ExposureFormatter().write(exp, path, None)
    box = Box(3, 7, 10, 5)
    sub = ExposureFormatter().read(path, None, parameters={"bbox": box})
    assert sub.shape == (5, 10) and sub.xy0 == (3, 7)
    assert np.array_equal(sub.image, exp.image[box.slices])
    assert np.array_equal(sub.variance, exp.variance[box.slices])
    assert np.array_equal(sub.mask, exp.mask[box.slices])
    # a sub-image written and re-read keeps its origin; reading a box of it uses parent coords
    write_exposure(sub, tmp_path / "s.fits")
    sub2 = read_exposure(tmp_path / "s.fits", bbox=Box(5, 8, 2, 2))
    assert np.array_equal(sub2.image, exp.image[8:10, 5:7])
    with pytest.raises(ExposureFitsError, match="outside"):
        read_exposure(path, bbox=Box(25, 0, 10, 5))
    with pytest.raises(ValueError, match="unknown read parameters"):
        ExposureFormatter().read(path, None, parameters={"region": box})


def test_bad_inputs(tmp_path):
    """Check bad inputs."""
    with pytest.raises(FileNotFoundError, match="no such Exposure file"):
        read_exposure(tmp_path / "missing.fits")
    from astropy.io import fits

    fits.PrimaryHDU(np.zeros((3, 3))).writeto(tmp_path / "plain.fits")
    with pytest.raises(ExposureFitsError, match="no IMAGE extension"):
        read_exposure(tmp_path / "plain.fits")
    with pytest.raises(TypeError, match="writes Exposure"):
        ExposureFormatter().write(np.zeros(3), tmp_path / "x.fits", None)


def test_exposure_pickles_for_process_pools():
    """Check an Exposure (detector, info, header) survives pickling, as worker processes need."""
    import pickle

    exp = _exposure(np.uint16)
    back = pickle.loads(pickle.dumps(exp))
    assert np.array_equal(back.image, exp.image) and back.detector == exp.detector
    assert back.info.begin == exp.info.begin and back.metadata["OBJECT"] == "Dome Flat"
    assert back.masked_image.mask_planes == exp.masked_image.mask_planes


def _reference_write(exposure, path):
    """Write the exposure card by card with plain astropy (the writer before the card cache)."""
    import json

    from astropy.io import fits

    from pipeline.image.fits import _STANDARD_KEYWORD, _is_structural, _json_default

    mi = exposure.masked_image
    x0, y0 = mi.xy0
    cards = []
    for key, value, comment in exposure.metadata.entries():
        if _is_structural(key):
            continue
        name = key if _STANDARD_KEYWORD.fullmatch(key) else f"HIERARCH {key}"
        try:
            cards.append(fits.Card(name, value, comment))
        except (ValueError, TypeError, fits.VerifyError):
            continue
    hdus = [fits.PrimaryHDU(header=fits.Header(cards))]
    for name, data in (("IMAGE", mi.image), ("MASK", mi.mask), ("VARIANCE", mi.variance)):
        hdr = fits.Header()
        if name == "MASK":
            for plane, bit in sorted(mi.mask_planes.items(), key=lambda kv: kv[1]):
                key = f"MP_{plane}"
                hdr.append(fits.Card(f"HIERARCH {key}" if len(key) > 8 else key, int(bit)))
        hdr["LTV1"] = -x0
        hdr["LTV2"] = -y0
        hdus.append(fits.ImageHDU(data=np.ascontiguousarray(data), header=hdr, name=name))
    archive = {
        "detector": None if exposure.detector is None else exposure.detector.to_dict(),
        "info": exposure.info.to_dict(),
        "photo_calib": exposure.photo_calib,
        "transmission_curve": exposure.transmission_curve,
    }
    text = json.dumps(archive, default=_json_default, allow_nan=True)
    col = fits.Column(name="JSON", format=f"{max(len(text), 1)}A", array=np.array([text]))
    hdus.append(fits.BinTableHDU.from_columns([col], name="ARCHIVE"))
    fits.HDUList(hdus).writeto(path, overwrite=True)


def _rich_metadata(exp):
    md = exp.metadata
    md.set("LONGSTR", "a long string value that needs CONTINUE cards " * 4, "long-string convention")
    md.set("QUOTES", "it's 'quoted'", "embedded quotes")
    md.set("HIERARCH LSST ISR UNITS", "electron", "HIERARCH with a comment")
    md["HIERARCH LSST ISR OVERSCAN MEDIAN AMP A"] = 1234.5678901234
    md["FLOATNEG0"] = -0.0
    md["FLOATZ"] = 0.0
    md.set("FLOATBIG", 1.0e300, "big")
    md["FLOATSM"] = 1.234567890123456e-12
    md["NPFLOAT"] = np.float64(2.5)
    md["NPF32"] = np.float32(0.1)
    md["NPINT"] = np.int64(-7)
    md.set("INTVAL", 1, "an int")
    md.set("BOOLT", True, "a bool")
    md["BOOLF"] = False
    md["ONEFLOAT"] = 1.0
    md.set("EMPTY", "", "empty string")
    md["NONEVAL"] = None
    md["COMMENT"] = "first comment line"
    md["COMMENT"] = "second comment line " * 5
    md["HISTORY"] = "processed by a test"
    md["NANVAL"] = float("nan")  # refused by FITS: left out by both writers
    md["LISTVAL"] = [1, 2]  # a container: left out by both writers
    md.set("LONGCOMMENT", 3, "a comment far too long to fit on one card " * 3)
    return exp


@pytest.mark.parametrize("xy0", [(0, 0), (5, -3)])
def test_written_bytes_match_plain_astropy(tmp_path, xy0):
    """The card cache and the single verification leave the file byte-identical to plain astropy."""
    exp = _rich_metadata(_exposure())
    exp.masked_image.xy0 = xy0
    ref, new = tmp_path / "ref.fits", tmp_path / "new.fits"
    _reference_write(exp, ref)
    for _ in range(2):  # second write: every card comes from the cache
        write_exposure(exp, new)
        assert new.read_bytes() == ref.read_bytes()
    from astropy.io import fits

    with fits.open(new) as hdul:
        hdul.verify("exception")
        assert hdul["ARCHIVE"].data["JSON"][0].startswith("{")
    back = read_exposure(new)
    assert back.metadata["LONGSTR"] == exp.metadata["LONGSTR"].rstrip()  # astropy strips on read
    assert back.metadata["FLOATNEG0"] == 0.0 and str(back.metadata["FLOATNEG0"]) == "-0.0"
    assert back.metadata["BOOLT"] is True and back.metadata["INTVAL"] == 1


def test_cached_cards_are_not_shared(tmp_path):
    """Editing a header made from cached cards never changes the next one."""
    from pipeline.image.fits import header_from_metadata

    md = PropertyList([("OBJECT", "Dome Flat", "target")])
    first = header_from_metadata(md)
    first["OBJECT"] = "changed"
    assert header_from_metadata(md)["OBJECT"] == "Dome Flat"


def test_write_leaves_card_templates_unchanged(tmp_path):
    """write_exposure hands `_card`'s templates to astropy uncopied; the HDUs copy, never edit them."""
    from pipeline.image import fits as pfits

    exp = _rich_metadata(_exposure())
    exp.masked_image.xy0 = (5, -3)
    write_exposure(exp, tmp_path / "a.fits")
    before = {k: (c.image, c.keyword, c.value, c.comment) for k, c in pfits._CARD_CACHE.items()}
    assert len(before) > 20
    write_exposure(exp, tmp_path / "b.fits")
    after = {k: (c.image, c.keyword, c.value, c.comment) for k, c in pfits._CARD_CACHE.items()}
    assert after == before
    assert (tmp_path / "a.fits").read_bytes() == (tmp_path / "b.fits").read_bytes()


def test_invalid_card_still_refused(tmp_path):
    """A card astropy's write-time verification refuses is still refused (before anything is written)."""
    from astropy.io import fits

    from pipeline.image.fits import _verify_cards

    def hdus():
        bad = fits.Card.fromstring("BADTEXT = 'bell\x07'")
        return [fits.PrimaryHDU(header=fits.Header([bad]))]

    with pytest.raises((fits.VerifyError, ValueError)):
        fits.HDUList(hdus()).writeto(tmp_path / "ref.fits", output_verify="exception")
    with pytest.raises((fits.VerifyError, ValueError)):
        _verify_cards(hdus())


_TRICKY_CARDS = [
    "PLAINSTR= 'abc     '           / a comment   ",
    "QUOTED  = 'it''s'",
    "NOSPACE = 'abc'/comment right after the string",
    "EMPTYSTR= ''                   / empty",
    "BLANKSTR= '    '",
    "LEADING = '  lead'",
    "INT     =                   42 / answer",
    "PLUSINT =                  +07",
    "NEGINT  =                  -12",
    "BIGINT  = 123456789012345678901234567890",
    "FLOAT   =                  1.5",
    "FLOATDOT=                   1.",
    "FLOATLED=                  .25",
    "FLOATEXP=              1.5E-03",
    "FLOATE2 =                  1E5",
    "FLOATD  =              1.5D-03 / D exponent: astropy",
    "FLOATLOW=              1.5e-03",
    "NEGZERO =                 -0.0",
    "BOOLT   =                    T / true",
    "BOOLF   =                    F",
    "BOOLLEFT= T",
    "UNDEF   =                      / no value",
    "COMPLEX = (1.0, 2.0)",
    "TWOSTR  = 'a' 'b'",
    "COMMENT = 'not a value'",
    "HISTORY a history line",
    "        blank keyword line",
    "HIERARCH ESO DET CHIP ID = 'ccd1' / hierarch",
    "HIERARCH lower case = 3",
    "LONGSTR = 'a long string that goes on and on and on and on and on and on and&'",
    "CONTINUE  'still going'",
    "CONTINUE  '' / and a comment",
    "lowkey  = 5",
    "NOBLANK =5",
    "TRAILCOM= 3 /",
    "NAXIS   =                    2",
]


def test_fast_header_reader_matches_astropy():
    """Cards read without astropy give the same keywords, values (and types) and comments."""
    from astropy.io import fits

    from pipeline.image.fits import metadata_from_header, metadata_from_header_text

    text = "".join(card.ljust(80) for card in _TRICKY_CARDS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns about the invalid cards
        expected = metadata_from_header(fits.Header.fromstring(text))
        got = metadata_from_header_text(text)

    def norm(md):
        return [(k, type(v).__name__, repr(v), c) for k, v, c in md.entries()]

    assert norm(got) == norm(expected)
    assert "NAXIS" not in got and got["FLOATD"] == 1.5e-3 and got["QUOTED"] == "it's"


def test_read_exposure_metadata_matches_astropy(tmp_path):
    """`read_exposure` reads the primary header itself; the metadata equals astropy's reading."""
    from astropy.io import fits

    from pipeline.image.fits import metadata_from_header

    exp = _rich_metadata(_exposure())
    write_exposure(exp, tmp_path / "x.fits")
    got = read_exposure(tmp_path / "x.fits").metadata
    expected = metadata_from_header(fits.getheader(tmp_path / "x.fits"))
    assert [(k, type(v), repr(v), c) for k, v, c in got.entries()] == [
        (k, type(v), repr(v), c) for k, v, c in expected.entries()
    ]
