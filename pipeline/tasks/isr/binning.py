"""Block binning of images (reference-algorithms §2.14, afw ``binImage``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PassThumbnails", "bin_image", "bin_planes"]


def _check(factor: int) -> int:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)):
        raise TypeError(f"binFactor must be an int, got {type(factor).__name__} {factor!r}")
    if factor < 1:
        raise ValueError(f"binFactor must be >= 1, got {factor}")
    return int(factor)


def bin_image(image: np.ndarray, factor: int, dtype: type = np.float64) -> np.ndarray:
    """Mean of ``factor × factor`` blocks; trailing rows/columns are dropped.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
    factor : `int`
    dtype : numpy dtype
        Accumulation type (float32 is enough for thumbnails and twice as fast).

    Returns
    -------
    binned : `numpy.ndarray`, shape ``(ny // factor, nx // factor)``, float32

    Raises
    ------
    TypeError
        If ``factor`` is not an int.
    """
    b = _check(factor)
    out = _block_sum(image, b, dtype)
    out *= 1.0 / (b * b)
    return out.astype(np.float32, copy=False)


def _block_sum(plane: np.ndarray, b: int, dtype: type = np.float64) -> np.ndarray:
    """Sum of ``b × b`` blocks of a ``(ny, nx)`` plane; shape ``(ny // b, nx // b)``."""
    return _block_reduce(plane, b, np.add, dtype)


#: Input pixels per band of `_block_reduce` (its row accumulator stays in the cache).
_BAND_PIXELS = 1 << 20


def _block_reduce(
    plane: np.ndarray, b: int, op: np.ufunc, dtype: type, out: np.ndarray | None = None
) -> np.ndarray:
    """Reduce ``b × b`` blocks of a ``(ny, nx)`` plane with ``op`` (in ``dtype``).

    Rows of strided row views, then columns of strided column views of the (b times
    smaller) row result, band by band of output rows: about one read of the input, and the
    row accumulator is a small reused buffer (a full-size one costs its page faults; a
    ``reshape(ny, b, nx, b).sum`` is ~8× slower on float32). Every output value is
    ``op(...op(op(r0, r1), r2)..., r_{b-1})`` over the rows, then the same over the columns.
    ``out`` (shape ``(ny // b, nx // b)``, ``dtype``) receives the result when given.
    """
    ny, nx = plane.shape[0] // b, plane.shape[1] // b
    if out is None:
        out = np.empty((ny, nx), np.dtype(dtype))
    if ny == 0 or nx == 0:
        return out
    band = max(1, _BAND_PIXELS // (nx * b * b))
    acc_buf = np.empty((min(band, ny), nx * b), np.dtype(dtype))
    dt = np.dtype(dtype)
    for y0 in range(0, ny, band):
        y1 = min(y0 + band, ny)
        acc = acc_buf[: y1 - y0]
        rows = [plane[y0 * b + k : y1 * b : b, : nx * b] for k in range(b)]
        # the first operation combines two inputs when no conversion is needed (a copy pass
        # less; same values)
        start = 2 if b > 1 and plane.dtype == dt else 1
        if start == 2:
            op(rows[0], rows[1], out=acc)
        else:
            np.copyto(acc, rows[0], casting="unsafe")
        for k in range(start, b):
            op(acc, rows[k], out=acc)
        o = out[y0:y1]
        if b > 1:
            op(acc[:, 0::b], acc[:, 1::b], out=o)
        else:
            np.copyto(o, acc)
        for k in range(2, b):
            op(o, acc[:, k::b], out=o)
    return out


def bin_planes(
    image: np.ndarray, mask: np.ndarray, variance: np.ndarray, factor: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin a masked image: image mean, mask OR, variance ``sum(var) / b²`` (variance of the mean).

    Parameters
    ----------
    image, mask, variance : `numpy.ndarray`, shape ``(ny, nx)``
    factor : `int`

    Returns
    -------
    image, mask, variance : `numpy.ndarray`, shape ``(ny // b, nx // b)``

    Notes
    -----
    Reference-algorithms §2.14 (the output keeps the input ``xy0``). The variance of the
    mean of ``b²`` pixels is ``sum(var) / b⁴``; the reference's ``sum(var) / b²`` convention
    (the mean variance) is kept for compatibility with afw ``binImage``.
    """
    b = _check(factor)
    img = bin_image(image, b)
    m = _block_reduce(mask, b, np.bitwise_or, np.int32)
    v = _block_sum(variance, b) / (b * b)
    return img, m, v.astype(np.float32)


@dataclass
class PassThumbnails:
    """Thumbnails (`bin_image` means, float32) summed block by block inside a pass over the image.

    A pass that processes an image in blocks of whole rows (`bias_variance.bias_variance_linearity`)
    adds each block to the thumbnail while the block is in the cache, before (``before``) and/or
    after (``after``) its arithmetic, instead of a separate read of the frame per thumbnail.
    Each thumbnail pixel is the same sum in the same order as `bin_image`'s, so the means are
    bit for bit those of ``bin_image(image, factor, np.float32)`` at that point.

    Attributes
    ----------
    factor : `int`
        Binning factor ``b``.
    before, after : `numpy.ndarray` or `None`
        float32 sums of shape ``(ny // b, nx // b)`` (means after `finish`); `None` = not made.
    """

    factor: int
    before: np.ndarray | None
    after: np.ndarray | None

    @classmethod
    def plan(
        cls,
        shape: tuple[int, int],
        runs: Sequence[tuple[int, int, int, int]],
        factor: int,
        before: bool,
        after: bool,
    ) -> PassThumbnails | None:
        """Return the thumbnails to fill in a pass over ``runs``, or `None` if it cannot.

        Parameters
        ----------
        shape : `tuple` of `int`
            Image shape ``(ny, nx)``.
        runs : sequence of ``(y0, y1, x0, x1)``
            The row bands of the pass; each must span the full width and start on a multiple
            of ``factor`` (also end on one, or at the image end), and together they must tile
            the rows.
        factor : `int`
            Binning factor.
        before, after : `bool`
            Which thumbnails are wanted.

        Returns
        -------
        thumbnails : `PassThumbnails` or `None`
            `None` when none is wanted or the geometry does not allow it (then bin the
            finished image instead).
        """
        b = _check(factor)
        ny, nx = shape
        if not (before or after) or ny < b or nx < b:
            return None
        if any(not (x0 == 0 and x1 == nx) for _, _, x0, x1 in runs):  # a run narrower than the image
            return None
        edges = sorted((y0, y1) for y0, y1, _, _ in runs)
        y = 0
        for y0, y1 in edges:
            if y0 != y or y0 % b or (y1 % b and y1 != ny):
                return None
            y = y1
        if y != ny:
            return None
        tshape = (ny // b, nx // b)
        return cls(
            b,
            np.empty(tshape, np.float32) if before else None,
            np.empty(tshape, np.float32) if after else None,
        )

    def add(self, which: str, block: np.ndarray, r0: int) -> None:
        """Sum the ``b × b`` cells of rows ``[r0, r0 + len(block))`` (``r0`` a multiple of ``b``)."""
        out = self.before if which == "before" else self.after
        if out is None:
            return
        b = self.factor
        n = min(block.shape[0], out.shape[0] * b - r0)
        if n >= b:
            _block_reduce(block[:n], b, np.add, np.float32, out=out[r0 // b : r0 // b + n // b])

    def finish(self) -> None:
        """Turn the sums into means (as `bin_image`)."""
        b = self.factor
        for out in (self.before, self.after):
            if out is not None:
                out *= 1.0 / (b * b)
