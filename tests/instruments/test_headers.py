"""FastHeader reads what it can and hands the other cards over to astropy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.verify import VerifyError, VerifyWarning

from pipeline.instruments.headers import FastHeader, read_headers


def _card(image: str) -> str:
    return image.ljust(80)[:80]


def test_long_object_value_is_read_through_continue_cards(tmp_path):
    """A 100-character OBJECT (written by astropy on CONTINUE cards) comes back whole."""
    obj = "NGC 1234 field 7 " + "".join(chr(ord("a") + i % 26) for i in range(83))
    assert len(obj) == 100
    header = fits.Header()
    header["OBJECT"] = obj
    header["EXPTIME"] = 30.0
    header["HIERARCH ESO INS PATH"] = "/".join(["segment"] * 12)  # long HIERARCH string
    header["HIERARCH ESO DET OUT1 CONAD"] = 1.1
    header["FILTER"] = "g"
    path = tmp_path / "long.fits"
    fits.PrimaryHDU(np.zeros((2, 3), np.int16), header=header).writeto(path)
    assert b"CONTINUE" in path.read_bytes()

    (fast,) = read_headers(path, fast=True)
    (slow,) = read_headers(path)
    assert isinstance(fast, FastHeader)
    assert fast["OBJECT"] == obj == slow["OBJECT"]
    assert fast["ESO INS PATH"] == slow["ESO INS PATH"] == "/".join(["segment"] * 12)
    assert fast.handed_over() == {"OBJECT", "ESO INS PATH"}
    # the cards around the long strings are still read by the fast parser, with astropy's values
    assert fast["EXPTIME"] == 30.0 and fast["FILTER"] == "g" and fast["ESO DET OUT1 CONAD"] == 1.1
    assert fast.keys() == ["SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "OBJECT", "EXPTIME",
                           "ESO INS PATH", "ESO DET OUT1 CONAD", "FILTER"]


@pytest.mark.parametrize(
    ("image", "key"),
    [
        ("HIERARCH ESO  DET  CHIP NAME = 'CCD40'", "ESO  DET  CHIP NAME"),   # double blanks
        ("HIERARCH ESO DET WIN1 BINX=2 / binning", "ESO DET WIN1 BINX"),   # no blanks around '='
        ("HIERARCH  ESO DET WIN1 BINY = 2", "ESO DET WIN1 BINY"),          # two blanks after HIERARCH
        ("HIERARCH ESO.DET.CHIP.ID = 'ccd40'", "ESO.DET.CHIP.ID"),         # dots in the keyword
        ("HIERARCH eso tel airm start = 1.204", "eso tel airm start"),      # lower case
        ("GAINS   = (1.5, 2.0)", "GAINS"),                                 # complex value
        ("RDNOISE =3.7", "RDNOISE"),                                       # '=' without its blank
        ("Object  = 'M31'", "Object"),                                     # lower case, not HIERARCH
    ],
)
def test_cards_not_fully_read_are_handed_over_to_astropy(image, key):
    """Odd cards give astropy's value; the plain cards beside them are still parsed directly."""
    cards = ("SIMPLE  =                    T", image, "EXPTIME =                 12.5")
    text = "".join(_card(c) for c in cards)
    fast = FastHeader(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        slow = fits.Header.fromstring(text)
    assert key in fast.handed_over()
    assert fast[key] == slow[key]
    assert fast["EXPTIME"] == 12.5 and "EXPTIME" not in fast.handed_over()


def test_unparsable_card_raises_astropys_error():
    """An unclosed string is not guessed at: the lookup raises what astropy raises."""
    text = "".join(_card(c) for c in ("SIMPLE  =                    T", "OBSERVER= 'O''Brien"))
    fast = FastHeader(text)
    assert "OBSERVER" in fast.handed_over()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        with pytest.raises(VerifyError, match="OBSERVER"):
            fits.Header.fromstring(text)["OBSERVER"]
        with pytest.raises(VerifyError, match="OBSERVER"):
            fast["OBSERVER"]
    assert fast["SIMPLE"] is True


def test_plain_header_hands_nothing_over():
    """A header of ordinary cards (strings, logicals, numbers, HIERARCH) is read without astropy."""
    header = fits.Header()
    header["OBJECT"] = "M31 & M32"
    header["DATE-OBS"] = "2015-05-20T04:37:33.5"
    header["SIMPLE"] = True
    header["NAXIS"] = 0
    header["HIERARCH ESO DET OUT1 RON"] = 7.8
    header["COMMENT"] = "a comment card"
    fast = FastHeader(header.tostring())
    assert fast.handed_over() == frozenset()
    for key in ("OBJECT", "DATE-OBS", "SIMPLE", "NAXIS", "ESO DET OUT1 RON"):
        assert fast[key] == header[key]


def _parse_string_by_character(text):
    """Read a FITS string value character by character (the reference for `_parse_string`)."""
    out = []
    i = 1
    while i < len(text):
        if text[i] == "'":
            if i + 1 < len(text) and text[i + 1] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out).rstrip(), True
        out.append(text[i])
        i += 1
    return "".join(out).rstrip(), False


def test_parse_string_equals_the_character_by_character_reading():
    import random

    from pipeline.instruments.headers import _parse_string

    rng = random.Random(3)
    cases = ["'", "''", "'''", "''''", "'a''", "'a'''", "'a'' '", "'x  ' / c", "'&'", "' ''&"]
    for _ in range(3000):
        cases.append("'" + "".join(rng.choice("a '/&") for _ in range(rng.randint(0, 20))))
    for text in cases:
        assert _parse_string(text) == _parse_string_by_character(text), text


def test_values_are_classified_when_looked_up(tmp_path):
    """A header is built without reading its values; each lookup reads or hands over its card."""
    cards = [
        fits.Card("PLAIN", "it''s", "c").image,
        fits.Card("NUM", 3.5).image,
        "CPLX    = (1.0, 2.0)".ljust(80),
        "LONG    = 'abc&'".ljust(80),
    ]
    fast = FastHeader("".join(cards))
    assert fast["PLAIN"] == "it''s" and fast["NUM"] == 3.5
    assert fast["CPLX"] == complex(1.0, 2.0) and fast["LONG"] == "abc&"
    assert fast.handed_over() == {"CPLX", "LONG"}


def test_read_plain_equals_plain_value_and_parse_value(shared_data):
    """The one-pass reading equals the check and the parse it replaces, on real and odd value fields."""
    import glob

    from pipeline.instruments.headers import _parse_value, _plain_value, _read_plain

    fields = ["", "  ", " T", " F / x", " 12", " -3.5e2 / c", " 1D3", " .5", " 1.", " (1, 2)", " abc"]
    fields += [" 'a''b' / c", " 'open", " 'x&'", " '  '", " 'a/b' / d", " +7 ", " 0x10"]
    for path in sorted(glob.glob(str(shared_data / "raw" / "*" / "*.fits*")))[:20]:
        text = read_headers(path, fast=True)[0].text
        fields += [text[i + 10 : i + 80] for i in range(0, len(text), 80) if text[i + 8 : i + 10] == "= "]
    for rest in fields:
        plain = _plain_value(rest)
        assert _read_plain(rest) == (plain, _parse_value(rest) if plain else None), rest
    assert len(fields) > 1000  # the real headers were read
