"""Application of calibration frames (bias, dark, flat, stray light, illumination) to an exposure.

Thin, stateless adapters from `Exposure` / `MaskedImage` / array calibrations to the plane
kernels of `isr_functions` (reference-algorithms §2.6-§2.9). Each changes the exposure's
planes in place and returns nothing or what the kernel measured.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.image import Exposure, MaskedImage

from . import isr_functions as F  # noqa: N812
from .masking import mask_bad_flat

__all__ = [
    "apply_bias",
    "apply_dark",
    "apply_dark_and_flat",
    "apply_flat",
    "calib_planes",
    "calib_metadata",
    "conformed_mask",
    "has_nonzero",
]


def calib_planes(calib: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(image, mask, variance)`` of an `Exposure`, `MaskedImage` or array (mask, variance `None`)."""
    if isinstance(calib, (Exposure, MaskedImage)):
        return calib.image, calib.mask, calib.variance
    arr = np.asarray(calib, dtype=np.float32)
    return arr, None, None


def calib_metadata(calib: Any) -> Any:
    """Header metadata of a calibration (an empty mapping if it has none)."""
    md = getattr(calib, "metadata", None)
    return md if md is not None else {}


def _dark_time(calib: Any) -> float | None:
    return getattr(getattr(calib, "info", None), "dark_time", None)


def has_nonzero(plane: np.ndarray) -> bool:
    """Whether an integer (or bool) plane holds a non-zero value: ``np.count_nonzero(plane) > 0``.

    A C-contiguous plane whose size in bytes is a multiple of 8 is read as unsigned 64-bit
    words (every byte of a zero integer is zero) and tested with one maximum, about twice
    as fast as counting the int32 elements; other planes are counted.

    Parameters
    ----------
    plane : `numpy.ndarray`
        Mask-like plane of any shape (integer or bool dtype for the fast path).

    Returns
    -------
    nonzero : `bool`
    """
    if plane.size == 0:
        return False
    if (
        plane.flags.c_contiguous
        and plane.nbytes % 8 == 0
        and (np.issubdtype(plane.dtype, np.integer) or plane.dtype == np.bool_)
    ):
        return bool(plane.reshape(-1).view(np.uint64).max())
    return bool(np.count_nonzero(plane))


def conformed_mask(exposure: Exposure, calib: Any, mask: np.ndarray | None) -> np.ndarray | None:
    """Return the calibration's mask in the exposure's plane dictionary; `None` if no bit is set.

    A calibration mask without any bit set is dropped: the read-only count is cheaper than
    OR-ing a full plane of zeros into the exposure's mask.
    """
    if mask is None or not has_nonzero(mask):
        return None
    if not isinstance(calib, (Exposure, MaskedImage)):
        return mask
    mi = calib.masked_image if isinstance(calib, Exposure) else calib
    return (
        exposure.masked_image._conformed_mask(mi)
        if mi.mask_planes != exposure.masked_image.mask_planes
        else mask
    )


def apply_bias(exposure: Exposure, bias: Any, use_variance: bool = True, conform: bool = True) -> None:
    """Subtract the bias (`isr_functions.bias_correction`).

    Its variance is added only if ``use_variance``; its mask is ORed in the exposure's plane
    dictionary if ``conform`` (else bit for bit, as for the untrimmed bias before overscan).
    """
    bi, bm, bv = calib_planes(bias)
    mi = exposure.masked_image
    F.bias_correction(
        mi.image,
        mi.mask,
        mi.variance,
        bi,
        conformed_mask(exposure, bias, bm) if conform else bm,
        bv if use_variance else None,
    )


def apply_dark(exposure: Exposure, dark: Any, invert: bool = False) -> None:
    """Subtract (``invert``: add back) the dark scaled by the dark-time ratio.

    Raises
    ------
    RuntimeError
        Shapes differ or the exposure's dark time is undefined (`isr_functions.dark_correction`).
    """
    di, dm, dv = calib_planes(dark)
    F.dark_correction(
        exposure.image,
        exposure.mask,
        exposure.variance,
        di,
        conformed_mask(exposure, dark, dm),
        dv,
        exposure.info.dark_time,
        _dark_time(dark),
        invert,
    )


def apply_flat(
    exposure: Exposure, flat: Any, scaling_type: str, user_scale: float, invert: bool = False
) -> None:
    """Divide by (``invert``: multiply by) the flat (`isr_functions.flat_correction`).

    Pixels where the flat is not positive and finite get BAD (they are then set and
    interpolated like defects instead of leaving inf/NaN in the output).
    """
    fi, fm, fv = calib_planes(flat)
    if not invert:
        mask_bad_flat(exposure.masked_image, fi)
    F.flat_correction(
        exposure.image,
        exposure.mask,
        exposure.variance,
        fi,
        conformed_mask(exposure, flat, fm),
        fv,
        scaling_type,
        user_scale,
        invert,
    )


def apply_dark_and_flat(
    exposure: Exposure, dark: Any, flat: Any, scaling_type: str, user_scale: float
) -> None:
    """`apply_dark` then `apply_flat` in one blocked pass (`isr_functions.dark_flat_correction`)."""
    di, dm, dv = calib_planes(dark)
    fi, fm, fv = calib_planes(flat)
    _, _, flat_ok = F.dark_flat_correction(
        exposure.image,
        exposure.mask,
        exposure.variance,
        (di, conformed_mask(exposure, dark, dm), dv),
        exposure.info.dark_time,
        _dark_time(dark),
        (fi, conformed_mask(exposure, flat, fm), fv),
        scaling_type,
        user_scale,
    )
    if not flat_ok:  # masking is independent of the arithmetic: done after, only if needed
        mask_bad_flat(exposure.masked_image, fi)
