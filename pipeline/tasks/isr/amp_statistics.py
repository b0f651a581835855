"""Quality statistics of a processed exposure: per-amp final statistics and the background grid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.image import Box, MaskedImage
from pipeline.image.statistics import clipped_stats

from . import isr_functions as F  # noqa: N812

__all__ = ["amp_statistics", "background_levels", "flagged_after_interpolation"]

#: Mask planes whose pixels are left out of the statistics.
_EXCLUDED = ("BAD", "SAT", "NO_DATA", "UNMASKEDNAN")


def amp_statistics(
    mi: MaskedImage,
    amp_boxes: Mapping[str, Box],
    overscan_medians: Mapping[str, float],
    flagged: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per-amp SAT/BAD counts and final MEAN / MEDIAN / STDEV / LEVEL.

    Parameters
    ----------
    mi : `pipeline.image.MaskedImage`
        Processed, assembled planes (ADU, or e⁻ after ``doApplyGains``).
    amp_boxes : mapping [`str`, `pipeline.image.Box`]
        Each amp's region.
    overscan_medians : mapping [`str`, `float`]
        Serial overscan median per amp (ADU); ``LEVEL`` = final median − this (NaN if absent).
    flagged : tuple of `numpy.ndarray`, optional
        ``(ys, xs, mask values)`` of every pixel with SAT or BAD (a superset is fine), from
        `isr_functions.flagged_pixels`; scanned from the mask when omitted.

    Returns
    -------
    stats : `dict` [`str`, `dict`]
        Per amp name: ``NSAT``, ``NBAD`` (exact counts), ``MEAN``, ``MEDIAN``, ``STDEV`` (clipped,
        on a deterministic strided subsample of about 8k good pixels, SAT/BAD/NO_DATA/UNMASKEDNAN
        excluded) and ``LEVEL``.
    """
    sat_bit = mi.get_plane_bitmask("SAT")
    bad_bit = mi.get_plane_bitmask("BAD")
    excl = mi.get_plane_bitmask([p for p in _EXCLUDED if p in mi.mask_planes])
    out: dict[str, dict[str, Any]] = {}
    # SAT/BAD counts from the (sparse) flagged-pixel coordinates: two full-image passes
    # instead of four per amplifier.
    fy, fx, fv = F.flagged_pixels(mi.mask, sat_bit | bad_bit) if flagged is None else flagged
    for name, box in amp_boxes.items():
        sl = box.slices
        img, msk = mi.image[sl], mi.mask[sl]
        inside = (fy >= box.y0) & (fy < box.y1) & (fx >= box.x0) & (fx < box.x1)
        vals = fv[inside]
        nsat = int(np.count_nonzero(vals & sat_bit))
        nbad = int(np.count_nonzero(vals & bad_bit))
        sample = F.sample_for_statistics(img, None, 1 << 13, mask=msk, exclude_bits=excl)
        # clipped_stats computes the (linear) median of the sample anyway (all NaN if empty)
        mean, var, _, med = clipped_stats(sample, _with_median=True)
        stdev = float(np.sqrt(var)) if var == var else float("nan")
        level = med - overscan_medians[name] if name in overscan_medians else float("nan")
        out[name] = {"NSAT": nsat, "NBAD": nbad, "MEAN": mean, "MEDIAN": med, "STDEV": stdev, "LEVEL": level}
    return out


def background_levels(
    mi: MaskedImage, mesh_x: int, mesh_y: int, clip_sigma: float, n_iter: int
) -> dict[str, float]:
    """Clipped mean background on a grid of ``mesh_x × mesh_y`` cells (ISR QA ``measureBackground``).

    Returns
    -------
    stats : `dict`
        ``BGMEAN`` and ``BGVAR``: mean and variance of the finite cell levels (NaN if none).
    """
    img = mi.image
    good = (mi.mask & mi.get_plane_bitmask([p for p in _EXCLUDED if p in mi.mask_planes])) == 0
    levels = []
    for y in range(0, img.shape[0] - mesh_y + 1, mesh_y):
        for x in range(0, img.shape[1] - mesh_x + 1, mesh_x):
            sl = (slice(y, y + mesh_y), slice(x, x + mesh_x))
            levels.append(clipped_stats(img[sl], ~good[sl], clip_sigma, n_iter)[0])
    arr = np.array(levels, float)
    arr = arr[np.isfinite(arr)]
    return {
        "BGMEAN": float(arr.mean()) if arr.size else float("nan"),
        "BGVAR": float(arr.var()) if arr.size else float("nan"),
    }


def flagged_after_interpolation(
    mask: np.ndarray,
    inventory: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    interpolated: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Return the flagged pixels (row-major, unique) and their mask values after interpolation.

    Parameters
    ----------
    mask : `numpy.ndarray` of int32, shape ``(ny, nx)``
        Mask plane.
    inventory : tuple of `numpy.ndarray` or `None`
        ``(ys, xs, values)`` of the flagged pixels before interpolation.
    interpolated : tuple of `numpy.ndarray` or `None`
        ``(ys, xs)`` of the interpolated pixels (including saturation growth).

    Returns
    -------
    flagged : tuple of `numpy.ndarray` or `None`
        ``(ys, xs, mask[ys, xs])`` of the union; `None` without an inventory.
    """
    if inventory is None:
        return None
    nx = mask.shape[1]
    idx = inventory[0] * nx + inventory[1]
    if interpolated is not None and interpolated[0].size:
        idx = np.union1d(idx, interpolated[0] * nx + interpolated[1])
    fy, fx = np.divmod(idx, nx)
    return fy, fx, mask[fy, fx]
