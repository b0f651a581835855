"""Linearity corrections per amplifier (pure numpy).

Reference-algorithms §2.7 (ip_isr ``linearize.py``, ``src/applyLookupTable.cc``). Each function
corrects one amplifier region (a view of the ``(ny, nx)`` image, ADU) in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "LINEARITY_TYPES",
    "apply_linearity",
    "linearize_amps",
    "linearize_lookup_table",
    "linearize_polynomial",
    "linearize_spline",
    "linearize_squared",
]

LINEARITY_TYPES = ("None", "Proportional", "Polynomial", "Squared", "LookupTable", "Spline", "DoubleSpline")


def linearize_lookup_table(region: np.ndarray, table: np.ndarray, row: int, offset: float) -> int:
    """Add ``table[row, int(offset + v)]`` to every pixel ``v`` (in place).

    Parameters
    ----------
    region : `numpy.ndarray`, shape ``(ny, nx)``, float
        Amplifier pixels (ADU).
    table : `numpy.ndarray`, shape ``(n_rows, n_cols)``
        Lookup table (ADU corrections); ``n_cols >= n_rows``.
    row : `int`
        Table row of this amplifier.
    offset : `float`
        Added to the pixel value before indexing.

    Returns
    -------
    n_out_of_range : `int`
        Number of pixels whose column was clamped to ``[0, n_cols - 1]``.

    Raises
    ------
    RuntimeError
        If the table is not 2-D, has fewer columns than rows, or ``row`` is outside
        ``[0, n_rows)``.

    Notes
    -----
    Column = C truncation toward zero of ``offset + v``. **QUIRK** (reference §2.7): the
    reference checks ``row > n_rows`` so ``row == n_rows`` slips through to an index error;
    we reject every row outside ``[0, n_rows)`` with a clear RuntimeError.
    """
    table = np.asarray(table)
    if table.ndim != 2:
        raise RuntimeError(f"Linearity lookup table must be 2-D, got shape {table.shape}")
    nrows, ncols = table.shape
    if ncols < nrows:
        raise RuntimeError(f"Linearity lookup table has fewer columns ({ncols}) than rows ({nrows})")
    if not (0 <= row < nrows):
        raise RuntimeError(f"Linearity lookup table row {row} is outside [0, {nrows}); fix linearity_coeffs")
    with np.errstate(invalid="ignore"):
        col = np.trunc(region.astype(np.float64) + offset)
    col = np.nan_to_num(col, nan=-1.0)
    out = (col < 0) | (col > ncols - 1)
    col = np.clip(col, 0, ncols - 1).astype(np.intp)
    region += table[row][col].astype(region.dtype, copy=False)
    return int(np.count_nonzero(out))


def linearize_polynomial(region: np.ndarray, coeffs: Sequence[float]) -> bool:
    """``v += sum_i c_i v^(i+2)`` (coefficients start at the quadratic term), in place.

    Parameters
    ----------
    region : `numpy.ndarray`, shape ``(ny, nx)``
        Amplifier pixels (ADU).
    coeffs : sequence of `float`
        ``c_0`` (ADU⁻¹), ``c_1`` (ADU⁻²), ...

    Returns
    -------
    applied : `bool`
        `False` (no-op) if every coefficient is zero or none is finite.
    """
    c = np.asarray(coeffs, dtype=np.float64)
    c = c[np.isfinite(c)] if np.isfinite(c).any() else c[:0]
    if c.size == 0 or not np.any(c):
        return False
    v = region.astype(np.float64)
    corr = np.zeros_like(v)
    for i in range(c.size - 1, -1, -1):  # Horner on c_0 + c_1 v + ..., times v²
        corr = corr * v + c[i]
    region += (corr * v * v).astype(region.dtype, copy=False)
    return True


def linearize_squared(region: np.ndarray, c0: float) -> bool:
    """``v <- v (1 + c0 v)`` in place; no-op if ``c0 == 0``.

    Parameters
    ----------
    region : `numpy.ndarray`, shape ``(ny, nx)``
        Amplifier pixels (ADU).
    c0 : `float`
        Quadratic coefficient, ADU⁻¹.

    Returns
    -------
    applied : `bool`
    """
    if c0 == 0 or c0 != c0:
        return False
    region *= 1 + np.float32(c0) * region
    return True


def linearize_spline(region: np.ndarray, coeffs: Sequence[float], gain: float = 1.0) -> bool:
    """Subtract an Akima spline of the pixel value (ip_isr ``LinearizeSpline``), in place.

    Parameters
    ----------
    region : `numpy.ndarray`, shape ``(ny, nx)``
        Amplifier pixels.
    coeffs : sequence of `float`
        ``[nodes..., values...]`` (two equal halves), ADU.
    gain : `float`
        Multiplies nodes and values (1 unless the image is in e⁻ and the linearizer in ADU).

    Returns
    -------
    applied : `bool`

    Raises
    ------
    RuntimeError
        If the coefficient list does not split into two equal halves.

    Notes
    -----
    Values are shifted so that ``values[0] = 0``; node 0 (value 0) is prepended if missing;
    non-finite nodes/values set the whole amp to NaN. ``v -= Akima(clip(v, nodes[0],
    nodes[-1] - 0.1))`` (reference §2.7).
    """
    c = np.asarray(coeffs, dtype=np.float64)
    if c.size == 0:
        return False
    if c.size % 2:
        raise RuntimeError(f"Spline linearity needs [nodes..., values...], got {c.size} coefficients")
    n = c.size // 2
    nodes, values = c[:n] * gain, c[n:] * gain
    if not (np.all(np.isfinite(nodes)) and np.all(np.isfinite(values))):
        region[...] = np.nan
        return True
    values = values - values[0]
    if nodes[0] != 0:
        nodes = np.concatenate([[0.0], nodes])
        values = np.concatenate([[0.0], values])
    if nodes.size < 2:
        return False
    from scipy.interpolate import Akima1DInterpolator  # lazy import

    spl = Akima1DInterpolator(nodes, values)
    v = np.clip(region.astype(np.float64), nodes[0], nodes[-1] - 0.1)
    region -= spl(v).astype(region.dtype, copy=False)
    return True


def apply_linearity(
    region: np.ndarray,
    linearity_type: str,
    coeffs: Sequence[float],
    table: np.ndarray | None = None,
    gain: float = 1.0,
) -> int:
    """Dispatch one amplifier to its linearity correction.

    Parameters
    ----------
    region : `numpy.ndarray`, shape ``(ny, nx)``
        Amplifier pixels (ADU), corrected in place.
    linearity_type : `str`
        One of `LINEARITY_TYPES`.
    coeffs : sequence of `float`
        Type-specific coefficients (LookupTable: ``(row, offset)``).
    table : `numpy.ndarray`, optional
        Lookup table for ``LookupTable``.
    gain : `float`
        For ``Spline`` (see `linearize_spline`).

    Returns
    -------
    n_out_of_range : `int`
        Lookup-table clamps (0 for other types).

    Raises
    ------
    RuntimeError
        Unknown type, or a LookupTable without a table.
    """
    if linearity_type in ("None", "Proportional", "", None):
        return 0
    if linearity_type == "Polynomial":
        linearize_polynomial(region, coeffs)
    elif linearity_type == "Squared":
        linearize_squared(region, float(coeffs[0]) if len(coeffs) else 0.0)
    elif linearity_type == "LookupTable":
        if table is None:
            raise RuntimeError("LookupTable linearity needs the linearizer's table; none was given")
        return linearize_lookup_table(region, table, int(coeffs[0]), float(coeffs[1]))
    elif linearity_type == "Spline":
        linearize_spline(region, coeffs, gain)
    elif linearity_type == "DoubleSpline":
        c = np.asarray(coeffs, dtype=np.float64)
        half = c.size // 2
        linearize_spline(region, c[:half], gain)
        linearize_spline(region, c[half:], gain)
    else:
        raise RuntimeError(f"Unknown linearity type {linearity_type!r}; use one of {LINEARITY_TYPES}")
    return 0


def linearize_amps(image: np.ndarray, linearizer: Any, amp_boxes: Mapping[str, Any]) -> int:
    """Correct every amplifier region of an image with its linearity model.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Image (ADU), corrected in place.
    linearizer : `Linearizer`
        Per-amp ``linearity_type`` / ``linearity_coeffs`` and the lookup ``table``.
    amp_boxes : mapping [`str`, `pipeline.image.Box`]
        Each amp's region in ``image``.

    Returns
    -------
    n_out_of_range : `int`
        Lookup-table clamps summed over the amps.
    """
    n_out = 0
    for name, box in amp_boxes.items():
        ltype = linearizer.linearity_type.get(name, "None")
        coeffs = linearizer.linearity_coeffs.get(name, ())
        n_out += apply_linearity(image[box.slices], ltype, coeffs, linearizer.table)
    return n_out
