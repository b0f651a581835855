"""Defect finding and merging (pure numpy): the math of `MeasureDefectsTask` and `MergeDefectsTask`.

cp_pipe ``cpDefects.py`` (read for the algorithm, not copied): per amplifier, subtract the clipped
mean and flag pixels beyond a threshold (a multiple of the clipped standard deviation, or a value:
dark current, bias level, fraction of the flat level); fill on-and-off ("blinking") columns and
mostly-bad amplifier columns; merge per-exposure masks by the fraction of exposures that flag a
pixel. Defects are stored as boxes ``(x0, y0, width, height)`` in assembled detector pixels
(ip_isr ``Defects`` FITS layout); `mask_to_boxes` turns a mask into as few boxes as a run-length
merge gives (one box per rectangular defect, so a bad column is one box).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from pipeline.image.statistics import clipped_stats

__all__ = [
    "boxes_to_mask",
    "fill_bad_columns",
    "fill_blinking_columns",
    "find_amp_defects",
    "mask_to_boxes",
    "merge_masks",
]


def mask_to_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Cover a boolean mask exactly with boxes from a column-wise run-length merge.

    Each column's runs of consecutive True pixels are found; a run identical (same ``y0`` and
    height) to one in the previous column extends that box by one column. A rectangle is one box,
    a column segment is one box, an isolated pixel a 1 x 1 box.

    Parameters
    ----------
    mask : `numpy.ndarray` of `bool`, shape ``(ny, nx)``

    Returns
    -------
    boxes : `list` of ``(x0, y0, width, height)``
        Sorted by ``(x0, y0)``; disjoint; their union is the mask.
    """
    m = np.asarray(mask, bool)
    ny, nx = m.shape
    open_boxes: dict[tuple[int, int], list[int]] = {}   # (y0, h) -> [x0, y0, w, h]
    done: list[tuple[int, int, int, int]] = []
    cols = np.flatnonzero(m.any(axis=0))
    prev_x = -2
    for x in cols:
        col = m[:, x].astype(np.int8)
        d = np.diff(np.concatenate(([0], col, [0])))
        starts = np.flatnonzero(d == 1)
        ends = np.flatnonzero(d == -1)
        runs = {(int(s), int(e - s)) for s, e in zip(starts, ends)}
        nxt: dict[tuple[int, int], list[int]] = {}
        for key, box in open_boxes.items():
            if x == prev_x + 1 and key in runs:
                box[2] += 1
                nxt[key] = box
            else:
                done.append(tuple(box))  # type: ignore[arg-type]
        for key in runs:
            if key not in nxt:
                nxt[key] = [int(x), key[0], 1, key[1]]
        open_boxes = nxt
        prev_x = int(x)
    done.extend(tuple(b) for b in open_boxes.values())  # type: ignore[misc]
    return sorted(done, key=lambda b: (b[0], b[1]))


def boxes_to_mask(boxes: Iterable[Sequence[int]], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise ``(x0, y0, width, height)`` boxes into a boolean ``(ny, nx)`` mask (clipped)."""
    out = np.zeros(shape, bool)
    for x0, y0, w, h in boxes:
        out[max(int(y0), 0):max(int(y0) + int(h), 0), max(int(x0), 0):max(int(x0) + int(w), 0)] = True
    return out


def find_amp_defects(
    image: np.ndarray,
    good: np.ndarray | None,
    *,
    image_type: str,
    threshold_type: str = "STDEV",
    n_sigma_bright: float = 4.8,
    n_sigma_dark: float = -5.0,
    dark_current_threshold: float = 5.0,
    bias_threshold: float = 1000.0,
    frac_threshold_flat: float = 0.8,
    exposure_time: float = 1.0,
    gain: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Hot and cold pixels of one amplifier image.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Amplifier pixels (ADU; a combined dark may be in ADU/s with ``exposure_time=1``).
    good : `numpy.ndarray` of `bool`, optional
        Pixels that may be used for the background statistics and flagged (e.g. not NO_DATA,
        not in the excluded border).
    image_type : `str`
        ``dark``, ``bias`` or anything else (treated as a flat).
    threshold_type : `str`
        ``STDEV``: flag ``> n_sigma_bright σ`` above the clipped mean (darks: hot only; flats:
        hot and ``< n_sigma_dark σ`` cold; biases: nothing, as cp_pipe). ``VALUE``: darks flag
        pixels whose dark current exceeds ``dark_current_threshold`` e⁻/s (``× exposure_time /
        gain`` ADU above the clipped mean), biases pixels more than ``bias_threshold`` ADU above
        it, flats pixels below ``frac_threshold_flat`` × the clipped mean (cold only).
    n_sigma_bright, n_sigma_dark : `float`
        Thresholds in clipped standard deviations (``n_sigma_dark < 0``).
    dark_current_threshold : `float`
        e⁻/s.
    bias_threshold : `float`
        ADU.
    frac_threshold_flat : `float`
        Fraction of the clipped mean.
    exposure_time : `float`
        Seconds (darks, ``VALUE``).
    gain : `float`
        e⁻/ADU (darks, ``VALUE``).

    Returns
    -------
    hot, cold : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
    info : `dict`
        ``mean`` (clipped mean, ADU), ``stdev`` (clipped σ, ADU) and the applied ``hotThreshold``
        / ``coldThreshold`` (ADU above / below the mean; NaN when not searched).

    Notes
    -----
    The clipped statistics are afw's MEANCLIP / STDEVCLIP (3σ, 3 iterations). cp_pipe turns a
    ``VALUE`` threshold into a number of σ and hands it to afw's "stdev" threshold; here the
    value is applied directly (same intent).
    """
    img = np.asarray(image, np.float64)
    sel = np.isfinite(img) if good is None else (np.asarray(good, bool) & np.isfinite(img))
    hot = np.zeros(img.shape, bool)
    cold = np.zeros(img.shape, bool)
    info = {"mean": float("nan"), "stdev": float("nan"), "hotThreshold": float("nan"),
            "coldThreshold": float("nan")}
    if not sel.any():
        return hot, cold, info
    mean, var, _ = clipped_stats(img, ~sel, nsigma=3.0, niter=3)
    mean, sd = float(mean), float(np.sqrt(var))
    info["mean"], info["stdev"] = mean, sd
    kind = image_type.lower()
    hot_t = cold_t = None
    if threshold_type == "VALUE":
        if kind == "dark":
            hot_t = dark_current_threshold * exposure_time / (gain if gain > 0 else 1.0)
        elif kind == "bias":
            hot_t = bias_threshold
        else:
            cold_t = (1.0 - frac_threshold_flat) * mean
    else:
        if kind == "dark":
            hot_t = n_sigma_bright * sd
        elif kind == "bias":
            return hot, cold, info
        else:
            hot_t, cold_t = n_sigma_bright * sd, -n_sigma_dark * sd
    with np.errstate(invalid="ignore"):
        if hot_t is not None:
            hot = sel & (img - mean > hot_t)
            info["hotThreshold"] = float(hot_t)
        if cold_t is not None:
            cold = sel & (mean - img > cold_t)
            info["coldThreshold"] = float(cold_t)
    return hot, cold, info


def fill_blinking_columns(mask: np.ndarray, on_off_threshold: int = 50,
                          gap_threshold: int = 30) -> np.ndarray:
    """Fill columns with many intermittent bad pixels (cp_pipe ``maskBlocksIfIntermitentBadPixelsInColumn``).

    A column with at least ``on_off_threshold`` bad pixels is filled from its lowest to its
    highest bad pixel, except across gaps of ``gap_threshold`` or more consecutive good pixels.

    Parameters
    ----------
    mask : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
    on_off_threshold, gap_threshold : `int`
        ``badOnAndOffPixelColumnThreshold``, ``goodPixelColumnGapThreshold``.

    Returns
    -------
    filled : `numpy.ndarray` of `bool`
    """
    out = np.asarray(mask, bool).copy()
    counts = out.sum(axis=0)
    for x in np.flatnonzero(counts >= on_off_threshold):
        ys = np.flatnonzero(out[:, x])
        # consecutive bad pixels y[i], y[i+1] with a gap difference >= gap_threshold are not joined
        for a, b in zip(ys[:-1], ys[1:]):
            if b - a < gap_threshold:
                out[a:b + 1, x] = True
    return out


def fill_bad_columns(mask: np.ndarray, amp_slices: Sequence[tuple[slice, slice]],
                     threshold: float) -> tuple[np.ndarray, int]:
    """Mark whole amplifier columns bad when they hold ``>= threshold`` bad pixels.

    Parameters
    ----------
    mask : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
    amp_slices : sequence of ``(slice_y, slice_x)``
        Amplifier regions.
    threshold : `float`
        ``badPixelsToFillColumnThreshold``; ``<= 0`` disables.

    Returns
    -------
    filled : `numpy.ndarray` of `bool`
    n_columns : `int`
        Number of amplifier columns filled.
    """
    out = np.asarray(mask, bool).copy()
    if threshold <= 0:
        return out, 0
    n = 0
    for sy, sx in amp_slices:
        sub = out[sy, sx]
        cols = np.flatnonzero(sub.sum(axis=0) >= threshold)
        sub[:, cols] = True
        n += cols.size
    return out, n


def merge_masks(masks: Sequence[np.ndarray], mode: str = "FRACTION", fraction: float = 0.7) -> np.ndarray:
    """Combine per-exposure defect masks of one image type.

    Parameters
    ----------
    masks : sequence of `numpy.ndarray` of `bool`, shape ``(ny, nx)``
    mode : `str`
        ``OR`` (flagged in any), ``AND`` (flagged in all), ``FRACTION`` (flagged in more than
        ``fraction`` of them).
    fraction : `float`
        ``combinationFraction`` (0 .. 1).

    Returns
    -------
    merged : `numpy.ndarray` of `bool`

    Raises
    ------
    ValueError
        If ``masks`` is empty or ``mode`` is unknown.

    Notes
    -----
    cp_pipe flags ``frac > threshold`` with threshold 1.0 for AND, which no fraction exceeds
    (AND finds nothing); here AND is ``frac == 1`` (every exposure), as intended.
    """
    if not masks:
        raise ValueError("no defect masks to merge")
    frac = np.mean(np.stack([np.asarray(m, bool) for m in masks]), axis=0)
    if mode == "OR":
        return frac > 0.0
    if mode == "AND":
        return frac >= 1.0
    if mode == "FRACTION":
        return frac > fraction
    raise ValueError(f"unknown combinationMode {mode!r}; use AND, OR or FRACTION")
