"""Linearizer known values (reference §2.7) and crosstalk with flips (§2.8, §8 check 6)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.image import Amplifier, Box
from pipeline.tasks.isr.crosstalk import crosstalk_correct, needs_flip
from pipeline.tasks.isr.linearize import (
    apply_linearity,
    linearize_lookup_table,
    linearize_polynomial,
    linearize_spline,
    linearize_squared,
)


def test_lookup_table_known_values():
    """Check lookup table known values."""
    table = np.array([(7, 6, 5, 4), (1, 1, 1, 1), (5, 4, 3, 2), (0, 0, 0, 0)], dtype=np.float32)
    rows, offsets = (3, 2, 1, 0), (0, 0, 1, 1)
    expected = [(-1, 0, 1, 2), (4, 5, 5, 5), (0, 1, 2, 3), (6, 6, 6, 6)]
    total = 0
    for r, o, e in zip(rows, offsets, expected):
        amp = np.array([[-1.0, 0.0], [1.0, 2.0]], np.float32)
        total += linearize_lookup_table(amp, table, r, o)
        assert amp.ravel().tolist() == list(e)
    assert total == 2
    with pytest.raises(RuntimeError, match="outside"):
        linearize_lookup_table(np.zeros((2, 2), np.float32), table, 4, 0)  # row == nrows (QUIRK)
    with pytest.raises(RuntimeError, match="2-D"):
        linearize_lookup_table(np.zeros((2, 2), np.float32), np.zeros(4), 0, 0)


@pytest.mark.parametrize("c", [0.0, 0.11, -0.15, -12.0])
def test_squared_known_values(c):
    """Check squared known values."""
    amp = np.array([-1.0, 0.0, 1.0, 2.0], np.float32)
    linearize_squared(amp, c)
    np.testing.assert_allclose(amp, [-1 + c, 0, 1 + c, 2 + 4 * c], rtol=1e-6)


def test_polynomial_and_dispatch():
    """Check polynomial and dispatch."""
    amp = np.array([[10.0, 100.0]], np.float32)
    linearize_polynomial(amp, [1e-3, 1e-6])
    np.testing.assert_allclose(
        amp, [[10 + 1e-3 * 100 + 1e-6 * 1000, 100 + 1e-3 * 1e4 + 1e-6 * 1e6]], rtol=1e-6
    )
    amp2 = np.array([[10.0]], np.float32)
    assert not linearize_polynomial(amp2, [0.0, 0.0])
    apply_linearity(amp2, "Proportional", [])
    assert amp2[0, 0] == 10.0
    with pytest.raises(RuntimeError, match="Unknown linearity"):
        apply_linearity(amp2, "Cubic", [])


def test_spline_subtracts_akima():
    """Check spline subtracts akima."""
    nodes = [0.0, 1000.0, 2000.0, 3000.0]
    values = [0.0, 10.0, 20.0, 30.0]  # linear: correction = v / 100
    amp = np.array([[500.0, 1500.0, 5000.0]], np.float32)
    linearize_spline(amp, nodes + values)
    np.testing.assert_allclose(amp[0, :2], [495.0, 1485.0], rtol=1e-6)
    assert amp[0, 2] == pytest.approx(5000 - 29.999, rel=1e-6)  # clipped at nodes[-1] - 0.1


def _amps(ny, nx):
    corners = ["LL", "LR", "UL", "UR"]
    boxes = [Box(0, 0, nx, ny), Box(nx, 0, nx, ny), Box(0, ny, nx, ny), Box(nx, ny, nx, ny)]
    return [Amplifier(f"A{i}", bbox=b, readout_corner=c) for i, (b, c) in enumerate(zip(boxes, corners))]


def test_needs_flip():
    """Check needs flip."""
    assert needs_flip("LL", "LR") == (True, False)
    assert needs_flip("LL", "UR") == (True, True)
    assert needs_flip("UR", "UL") == (True, False)
    assert needs_flip("LR", "LR") == (False, False)


def test_crosstalk_with_flips_recovers_clean_image():
    """Check crosstalk with flips recovers clean image."""
    ny, nx = 50, 25
    amps = _amps(ny, nx)
    rng = np.random.default_rng(12345)
    clean = rng.normal(0.0, 0.1, (2 * ny, 2 * nx)).astype(np.float32)
    # Bright sources, positioned in each amp's own readout frame.
    for a in amps:
        sub = clean[a.bbox.slices]
        ys, xs = rng.integers(0, ny, 25), rng.integers(0, nx, 25)
        sub[ys, xs] = 12345.0
    # Physical matrix: fraction of j (source) seen in i (target).
    phys = np.array([[0, 1, 2, 3], [3, 0, 2, 1], [4, 5, 0, 6], [7, 8, 9, 0]], float) * 1e-4
    coeffs = phys.T  # [source, target]
    raw = clean.copy()
    for t, at in enumerate(amps):
        for s, as_ in enumerate(amps):
            if s == t:
                continue
            fx, fy = needs_flip(str(as_.readout_corner), str(at.readout_corner))
            src = clean[as_.bbox.slices]
            src = src[::-1] if fy else src
            src = src[:, ::-1] if fx else src
            raw[at.bbox.slices] += coeffs[s, t] * src
    mask = np.zeros(raw.shape, np.int32)
    mask[raw > 12000] |= 2  # pretend SAT, must not change
    nsat = int(((mask & 2) != 0).sum())
    n = crosstalk_correct(raw, mask, None, amps, coeffs, crosstalk_bit=1 << 11, min_pixel_to_mask=10000)
    np.testing.assert_allclose(raw, clean, atol=2e-2)
    assert n > 0 and ((mask & (1 << 11)) != 0).sum() > 0
    assert int(((mask & 2) != 0).sum()) == nsat
    # a matrix of the wrong size is refused
    with pytest.raises(RuntimeError, match="crosstalk matrix"):
        crosstalk_correct(raw, None, None, amps, np.zeros((3, 3)))
