"""Exposure FITS round trips and sub-image reads."""

from __future__ import annotations

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
