"""Growing pixel selections (afw detection footprint growth), shared by ISR and amp offset."""

from __future__ import annotations

import numpy as np

__all__ = ["grow_mask"]


def _bbox_of(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """Return the bounding box of the selected pixels plus ``margin``, clipped; `None` if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    ny, nx = mask.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, ny)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, nx)),
    )


def grow_mask(selected: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean selection by a *diamond* (L1 distance ``<= radius``).

    Parameters
    ----------
    selected : `numpy.ndarray` of `bool`, shape ``(ny, nx)``
        Pixels to grow.
    radius : `int`
        Growth radius in pixels; ``<= 0`` returns a copy.

    Returns
    -------
    grown : `numpy.ndarray` of `bool`, shape ``(ny, nx)``

    Notes
    -----
    afw ``FootprintSet`` growth with ``isotropic=False`` / SpanSet dilation with a MANHATTAN
    stencil (reference-algorithms §1.4): a grow of 1 adds the 4-neighbours only. The dilation
    is computed only inside the bounding box of the selection (plus ``radius``).
    """
    out = selected.copy()
    if radius <= 0:
        return out
    sl = _bbox_of(selected, radius)
    if sl is None:
        return out
    from scipy import ndimage as _ndi  # lazy import

    st = _ndi.generate_binary_structure(2, 1)
    out[sl] = _ndi.binary_dilation(selected[sl], st, iterations=int(radius))
    return out
