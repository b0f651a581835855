"""`PropertyList`, the one metadata type, and its FITS conversion in `pipeline.image.fits`."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from pipeline.image import Exposure, MaskedImage, PropertyList, read_exposure, write_exposure
from pipeline.image.fits import header_from_metadata, metadata_from_header


def test_keywords_follow_fits_rules_and_keep_order():
    """Check case-insensitive keys, HIERARCH prefix ignored, order kept, comments, COMMENT list."""
    md = PropertyList()
    md["HIERARCH LSST ISR UNITS"] = "adu"
    md.set("exptime", 30.0, "seconds")
    md["OBJECT"] = "M31"
    md["COMMENT"] = "first"
    md.add("comment", "second")
    md["LSST ISR UNITS"] = "electron"  # same entry, keeps its place
    assert md.names() == ["LSST ISR UNITS", "EXPTIME", "OBJECT", "COMMENT"]
    assert md["lsst isr units"] == "electron" and "HIERARCH EXPTIME" in md
    assert md.getComment("EXPTIME") == "seconds" and md["COMMENT"] == ["first", "second"]
    copy = md.copy()
    copy["OBJECT"] = "M33"
    copy.add("COMMENT", "third")
    assert md["OBJECT"] == "M31" and md["COMMENT"] == ["first", "second"]
    md.remove("object")
    md.remove("NOT THERE", ignore_missing=True)
    with pytest.raises(KeyError, match="NOT THERE"):
        md.remove("NOT THERE")
    with pytest.raises(ValueError, match="COMMENT/HISTORY"):
        md.add("EXPTIME", 1.0)


def test_fits_round_trip_through_a_header():
    """Check metadata -> header -> metadata keeps values, comments and commentary lines."""
    md = PropertyList()
    md.set("EXPTIME", 30.0, "seconds")
    md["LSST ISR OVERSCAN SERIAL MEDIAN C00"] = 1234.5
    md["LONGTEXT"] = "x" * 100  # a standard keyword: CONTINUE cards
    md["HISTORY"] = "made by a test"
    md["NAXIS"] = 2  # structural: not written
    md["BADVALUE"] = float("nan")  # FITS cannot hold NaN: left out
    hdr = header_from_metadata(md)
    assert hdr.cards["LSST ISR OVERSCAN SERIAL MEDIAN C00"].image.startswith("HIERARCH")
    assert "NAXIS" not in hdr and "BADVALUE" not in hdr
    back = metadata_from_header(fits.Header.fromstring(hdr.tostring()))
    assert back["EXPTIME"] == 30.0 and back.getComment("EXPTIME") == "seconds"
    assert back["LSST ISR OVERSCAN SERIAL MEDIAN C00"] == 1234.5
    assert back["LONGTEXT"] == "x" * 100 and back["HISTORY"] == ["made by a test"]


def test_exposure_metadata_is_a_property_list(tmp_path):
    """Check a header given to an Exposure becomes a PropertyList and survives a file round trip."""
    hdr = fits.Header()
    hdr["OBJECT"] = ("flat", "target")
    hdr["HIERARCH ESO DET OUT1 CONAD"] = 1.1
    exp = Exposure(MaskedImage(np.zeros((4, 5), np.float32)), metadata=hdr)
    assert isinstance(exp.metadata, PropertyList)
    assert exp.metadata["ESO DET OUT1 CONAD"] == 1.1 and exp.metadata.getComment("OBJECT") == "target"
    exp.metadata["LSST ISR UNITS"] = "adu"
    write_exposure(exp, tmp_path / "e.fits")
    back = read_exposure(tmp_path / "e.fits")
    assert back.metadata == exp.metadata
