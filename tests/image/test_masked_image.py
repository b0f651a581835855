"""MaskedImage arithmetic against reference-algorithms.md §1.3."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.image import MASK_PLANES, MaskedImage


def _mi(value, var, mask=0, shape=(3, 4)):
    return MaskedImage(
        np.full(shape, value, np.float32), np.full(shape, mask, np.int32), np.full(shape, var, np.float32)
    )


def test_default_planes_fixed_bits():
    """Check default planes fixed bits."""
    assert MASK_PLANES["BAD"] == 0 and MASK_PLANES["SAT"] == 1 and MASK_PLANES["SUSPECT"] == 7
    assert MASK_PLANES["NO_DATA"] == 8 and MASK_PLANES["STREAK"] == 10
    mi = _mi(0, 0)
    assert mi.get_plane_bitmask(["BAD", "SAT"]) == 3
    with pytest.raises(KeyError, match="UNMASKEDNAN"):
        mi.get_plane_bitmask("UNMASKEDNAN")
    assert mi.add_mask_plane("UNMASKEDNAN") == 11
    assert mi.add_mask_plane("CROSSTALK") == 12
    assert mi.get_plane_bitmask("CROSSTALK") == 1 << 12
    assert "UNMASKEDNAN" not in MASK_PLANES  # per-image dictionary


def test_add_subtract_scaled():
    """Check add subtract scaled."""
    a = _mi(10.0, 2.0, mask=1)
    a -= _mi(1.0, 0.5, mask=2)
    assert np.all(a.image == 9.0) and np.all(a.variance == 2.5) and np.all(a.mask == 3)
    a.scaled_plus(2.0, _mi(1.0, 0.25))
    assert np.all(a.image == 11.0) and np.allclose(a.variance, 2.5 + 4 * 0.25)
    a.scaled_minus(3.0, _mi(1.0, 1.0, mask=4))
    assert np.all(a.image == 8.0) and np.allclose(a.variance, 3.5 + 9.0) and np.all(a.mask == 7)
    a += 2.0
    assert np.all(a.image == 10.0) and np.allclose(a.variance, 12.5)


def test_multiply_divide_variance():
    """Check multiply divide variance."""
    a = _mi(4.0, 1.0)
    b = _mi(2.0, 0.5)
    a *= b  # var = A² var_B + B² var_A = 16*0.5 + 4*1 = 12
    assert np.all(a.image == 8.0) and np.allclose(a.variance, 12.0)
    a = _mi(4.0, 1.0)
    a /= b  # var = (A² var_B + B² var_A)/B⁴ = (8 + 4)/16 = 0.75
    assert np.all(a.image == 2.0) and np.allclose(a.variance, 0.75)
    a = _mi(4.0, 1.0)
    a.scaled_divides(2.0, b)  # var /= c²; image /= c·B
    assert np.all(a.image == 1.0) and np.allclose(a.variance, 0.75 / 4)
    a = _mi(4.0, 1.0)
    a.scaled_multiplies(3.0, b)
    assert np.all(a.image == 24.0) and np.allclose(a.variance, 9 * 12.0)
    a = _mi(4.0, 1.0)
    a *= 3.0
    assert np.all(a.image == 12.0) and np.allclose(a.variance, 9.0)
    a /= 2.0
    assert np.all(a.image == 6.0) and np.allclose(a.variance, 2.25)


def test_integer_image_promoted_on_arithmetic_and_mask_conformed():
    """Check integer image promoted on arithmetic and mask conformed."""
    raw = MaskedImage(np.full((2, 2), 100, np.uint16))
    assert raw.image.dtype == np.uint16
    other = _mi(0.5, 0.0, shape=(2, 2))
    bit = other.add_mask_plane("CROSSTALK")
    other.mask[0, 0] = 1 << bit
    raw -= other
    assert raw.image.dtype == np.float32 and raw.image[0, 0] == 99.5
    assert raw.mask[0, 0] == 1 << raw.mask_planes["CROSSTALK"]


def test_subimage_is_view_and_shape_check():
    """Check subimage is view and shape check."""
    mi = MaskedImage(np.arange(20, dtype=np.float32).reshape(4, 5))
    from pipeline.image import Box

    sub = mi.subimage(Box(1, 2, 3, 2))
    assert sub.xy0 == (1, 2) and sub.image[0, 0] == 11.0
    sub.image[0, 0] = -1
    assert mi.image[2, 1] == -1
    assert mi.subimage(Box(0, 0, 5, 4)).shape == (4, 5)
    with pytest.raises(ValueError, match="not inside"):
        mi.subimage(Box(3, 3, 5, 5))
    with pytest.raises(ValueError, match="shapes differ"):
        mi += MaskedImage(np.zeros((2, 2), np.float32))


def test_multiply_by_integer_image_does_not_overflow():
    """Check B*B in the product variance is computed in float for a uint16 operand."""
    a = _mi(2.0, 1.0, shape=(2, 2))
    b = MaskedImage(np.full((2, 2), 60000, np.uint16))
    a *= b
    assert np.allclose(a.image, 120000.0) and np.allclose(a.variance, 60000.0**2, rtol=1e-6)
