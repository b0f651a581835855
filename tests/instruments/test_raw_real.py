"""Raw reads of the real Kast and EFOSC2 files: the camera boxes hold what SOURCE.txt says."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.image import Box
from pipeline.instruments.raw import read_raw


def test_kast_bias_levels_and_read_noise(shared_data):
    """Check overscan ~943/965 ADU (amps A/B), data = overscan + 1-2 ADU, pair noise ~2.9/2.7 ADU."""
    files = sorted((shared_data / "raw" / "kast_blue").glob("b2[123].fits.gz"))
    biases = [read_raw(f) for f in files]
    for exp in biases:
        assert exp.info.observation_type == "bias" and exp.image.dtype == np.uint16
        levels = [float(np.median(exp.image[a.raw_serial_overscan_bbox.slices])) for a in exp.detector]
        data = [float(np.median(exp.image[a.raw_data_bbox.slices])) for a in exp.detector]
        assert levels == pytest.approx([943.0, 965.0], abs=2.0)
        assert np.all(np.array(data) - np.array(levels) >= 0) and np.all(
            np.array(data) - np.array(levels) <= 3
        )
    for amp, expected in zip(biases[0].detector, (2.86, 2.70)):
        diff = (
            biases[0].image[amp.raw_data_bbox.slices].astype(float)
            - biases[1].image[amp.raw_data_bbox.slices]
        )
        assert np.std(diff) / np.sqrt(2) == pytest.approx(expected, abs=0.15)


def test_kast_flat_amps_and_overscan_columns(shared_data):
    """Check the flat's illumination is in the data boxes only (the overscan boxes sit at bias level)."""
    flat = read_raw(shared_data / "raw" / "kast_blue" / "b11.fits.gz")
    a, b = flat.detector["A"], flat.detector["B"]
    assert np.median(flat.image[a.raw_data_bbox.slices]) > 2500  # blue end faint: ~400-11000 ADU
    assert np.median(flat.image[b.raw_data_bbox.slices]) > 12000
    for amp in (a, b):
        over = flat.image[amp.raw_serial_overscan_bbox.slices].astype(float)
        assert 935 < np.median(over) < 990 and over.max() < 2000  # no illuminated column inside


def test_efosc2_prescan_overscan_and_edge_column(shared_data):
    """Check EFOSC2 boxes: prescan at bias level in biases, x=1023 dark in the twilight flat."""
    bias = read_raw(shared_data / "raw" / "efosc2" / "EFOSC.2022-01-26T19:02:38.210.fits")
    amp = bias.detector["L"]
    assert amp.raw_serial_overscan_bbox == Box(1024, 0, 5, 1024)
    pre = np.median(bias.image[amp.raw_serial_overscan_bbox.slices])
    data = np.median(bias.image[amp.raw_data_bbox.slices])
    assert 210 < pre < 225 and abs(float(data) - float(pre)) < 5
    flat = read_raw(shared_data / "raw" / "efosc2" / "EFOSC.2022-01-28T00:08:16.282.fits")
    assert np.median(flat.image[100:900, 100:900]) > 30000
    assert np.median(flat.image[100:900, 1023]) < 1000  # the dead edge column left out of the data box
    assert np.median(flat.image[amp.raw_parallel_overscan_bbox.slices]) < 300
    sub = read_raw(
        shared_data / "raw" / "efosc2" / "EFOSC.2022-01-28T00:08:16.282.fits", bbox=Box(1024, 0, 5, 1024)
    )
    assert sub.shape == (1024, 5) and sub.xy0 == (1024, 0)
    assert np.array_equal(sub.image, flat.image[amp.raw_serial_overscan_bbox.slices])


@pytest.mark.parametrize("pattern", ["kast_blue/b1*.fits.gz", "efosc2/*.fits"])
def test_raw_metadata_matches_astropy(shared_data, pattern):
    """A single-HDU raw's metadata (plain cards read without astropy) equals astropy's reading."""
    from pipeline.image.fits import clean_header
    from pipeline.image.metadata import PropertyList
    from pipeline.instruments.headers import read_headers

    files = sorted((shared_data / "raw").glob(pattern))[:3]
    assert files
    for path in files:
        (header,) = read_headers(path)
        expected = PropertyList(clean_header(header))
        got = read_raw(path).metadata
        assert [(k, type(v), repr(v), c) for k, v, c in got.entries()] == [
            (k, type(v), repr(v), c) for k, v, c in expected.entries()
        ]
