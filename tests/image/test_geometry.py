"""Tests of Box / Amplifier / Detector / Camera geometry."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.image import Amplifier, Box, Camera, Detector, ReadoutCorner


def test_box_basics():
    """Check box basics."""
    b = Box(2, 3, 4, 5)
    assert (b.x1, b.y1, b.shape, b.area) == (6, 8, (5, 4), 20)
    arr = np.arange(100).reshape(10, 10)
    assert arr[b.slices].shape == (5, 4)
    assert arr[b.slices][0, 0] == 3 * 10 + 2
    assert b.intersection(Box(4, 0, 10, 4)) == Box(4, 3, 2, 1)
    assert b.intersection(Box(20, 20, 1, 1)).is_empty
    assert b.shifted(1, -1) == Box(3, 2, 4, 5)
    assert b.union(Box(0, 0, 1, 1)) == Box(0, 0, 6, 8)
    assert Box(0, 0, 10, 10).contains(b) and not b.contains(Box(0, 0, 10, 10))


def test_box_flips_mirror_inside_extent():
    """Check box flips mirror inside extent."""
    b = Box(0, 0, 3, 2)
    assert b.flipped_x(10) == Box(7, 0, 3, 2)
    assert b.flipped_y(6) == Box(0, 4, 3, 2)
    # flipping twice is the identity
    assert b.flipped_x(10).flipped_x(10) == b
    # the flipped box selects the mirrored pixels
    arr = np.arange(60).reshape(6, 10)
    assert np.array_equal(arr[:, ::-1][b.slices], arr[b.flipped_x(10).slices][:, ::-1])


def test_box_fits_section_round_trip():
    """Check box fits section round trip."""
    b = Box.from_fits_section("[33:2080,1:4612]")
    assert b == Box(32, 0, 2048, 4612)
    assert b.to_fits_section() == "[33:2080,1:4612]"
    with pytest.raises(ValueError, match="FITS section"):
        Box.from_fits_section("33:2080")
    with pytest.raises(ValueError, match="reversed"):
        Box.from_fits_section("[10:1,1:5]")
    with pytest.raises(ValueError, match="non-negative"):
        Box(0, 0, -1, 3)


def test_amplifier_and_detector():
    """Check amplifier and detector."""
    a = Amplifier(
        "A", gain=1.5, read_noise=4.0, readout_corner="LR", bbox=(0, 0, 10, 20), raw_data_bbox="[3:12,1:20]"
    )
    assert a.readout_corner is ReadoutCorner.LR and a.readout_corner == "LR"
    assert a.raw_data_bbox == Box(2, 0, 10, 20)
    assert a.replace(gain=2.0).gain == 2.0 and a.gain == 1.5
    b = a.replace(name="B", bbox=Box(10, 0, 10, 20))
    det = Detector(
        3,
        "ccd03",
        bbox=Box(0, 0, 20, 20),
        amplifiers=(a, b),
        crosstalk=[[0, 1e-4], [2e-4, 0]],
        raw_shape=(20, 24),
    )
    assert det["B"] is b and det[0] is a and len(det) == 2
    assert [amp.name for amp in det] == ["A", "B"]
    assert det.crosstalk[0, 1] == pytest.approx(1e-4)
    assert Detector.from_dict(det.to_dict()) == det
    det2 = det.with_amp_overrides({"B": {"gain": 9.0}})
    assert det2["B"].gain == 9.0 and det["B"].gain == 1.5
    with pytest.raises(KeyError, match="no amplifier 'C'"):
        det["C"]
    with pytest.raises(ValueError, match="crosstalk"):
        Detector(0, "x", amplifiers=(a, b), crosstalk=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="repeat"):
        Detector(0, "x", amplifiers=(a, a))
    cam = Camera("cam", [det])
    assert cam[3] is det and cam["ccd03"] is det and len(cam) == 1
    with pytest.raises(KeyError, match="no detector id 7"):
        cam[7]
