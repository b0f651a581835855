"""CCD assembly: trimmed or untrimmed mosaics of the amplifiers, with raw flips.

Implements reference-algorithms §2.4 (ip_isr ``assembleCcdTask.py``, afw
``cameraGeom/_assembleImage.py``) on plain numpy planes, one plane at a time so the caller can
free each raw plane as soon as it has been assembled (peak-memory friendly).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.image import Box, MaskedImage

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.image import Detector, Exposure

__all__ = [
    "amp_view",
    "assemble_exposure",
    "assemble_plane",
    "assemble_sparse_plane",
    "assembled_detector",
    "convert_int_to_float",
    "trim_to_match",
    "untrimmed_shape",
    "writable_variance",
]


def amp_view(raw: np.ndarray, box: "Box", flip_x: bool, flip_y: bool) -> np.ndarray:
    """Return a (possibly mirrored) view of ``raw[box]``.

    Parameters
    ----------
    raw : `numpy.ndarray`, shape ``(ny, nx)``
        Raw plane.
    box : `pipeline.image.Box`
        Region in raw coordinates.
    flip_x, flip_y : `bool`
        Mirror along x / y (numpy ``[::-1]``; y first, as afw).

    Returns
    -------
    view : `numpy.ndarray`, shape ``box.shape``
        A view (no copy).
    """
    view = raw[box.slices]
    if flip_y:
        view = view[::-1, :]
    if flip_x:
        view = view[:, ::-1]
    return view


def untrimmed_shape(detector: "Detector") -> tuple[int, int]:
    """Shape ``(ny, nx)`` of the untrimmed assembled image: the union of the raw amp boxes."""
    ys = [a.raw_bbox.y1 for a in detector] or [0]
    xs = [a.raw_bbox.x1 for a in detector] or [0]
    return max(ys), max(xs)


def _checked_boxes(amp: Any, raw_shape: tuple[int, ...], trim: bool) -> tuple[Any, Any]:
    """Return the amplifier's (raw source box, assembled destination box).

    Raises
    ------
    ValueError
        If the source box lies outside ``raw_shape`` or the two boxes differ in shape (a camera
        description that does not match the raw file).
    """
    src_box = amp.raw_data_bbox if trim else amp.raw_bbox
    dst_box = amp.bbox if trim else amp.raw_bbox
    if src_box.y1 > raw_shape[0] or src_box.x1 > raw_shape[1]:
        raise ValueError(
            f"amplifier {amp.name!r}: raw box {src_box} lies outside the raw image of shape "
            f"{raw_shape}; the camera description does not match this raw file"
        )
    if src_box.shape != dst_box.shape:
        raise ValueError(
            f"amplifier {amp.name!r}: raw data box {src_box} and assembled box {dst_box} differ in "
            "shape; fix the camera description"
        )
    return src_box, dst_box


def assemble_plane(
    raw: np.ndarray,
    detector: "Detector",
    *,
    trim: bool = True,
    dtype: np.dtype | type | None = None,
    fill: float = 0,
    subtract: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Assemble one plane (image, mask or variance) of a raw detector image.

    Parameters
    ----------
    raw : `numpy.ndarray`, shape ``(ny_raw, nx_raw)``
        Raw plane containing every amplifier (ADU for the image, ADU² for the variance).
    detector : `pipeline.image.Detector`
        Geometry: ``amp.bbox`` (assembled), ``amp.raw_data_bbox``, ``amp.raw_bbox``,
        ``amp.raw_flip_x``, ``amp.raw_flip_y``.
    trim : `bool`, optional
        Trimmed output of shape ``detector.bbox.shape`` with
        ``out[amp.bbox] = flip(raw[amp.raw_data_bbox])`` (default); otherwise the untrimmed
        union of the raw boxes with ``out[amp.raw_bbox] = flip(raw[amp.raw_bbox])``.
    dtype : numpy dtype, optional
        Output dtype (default: the raw dtype).
    fill : `float`, optional
        Value of output pixels covered by no amplifier.
    subtract : mapping of amp name to `float` or `numpy.ndarray`, optional
        Trimmed assembly only: a level subtracted from each amp while copying it, a scalar
        or one value per raw data row (the deferred overscan model, ADU), i.e.
        ``out[amp.bbox] = flip(raw[amp.raw_data_bbox] - level)`` in one pass.

    Returns
    -------
    out : `numpy.ndarray`
        The assembled plane.

    Raises
    ------
    ValueError
        If an amplifier's raw box lies outside the raw plane or its assembled box does not
        have the shape of its raw data box, or ``subtract`` is given with ``trim=False``.
    """
    if subtract and not trim:
        raise ValueError("assemble_plane: 'subtract' is only supported for the trimmed assembly")
    dtype = raw.dtype if dtype is None else np.dtype(dtype)
    shape = detector.bbox.shape if trim else untrimmed_shape(detector)
    out = np.empty(shape, dtype=dtype)
    covered = 0
    for amp in detector:
        src_box, dst_box = _checked_boxes(amp, raw.shape, trim)
        view = amp_view(raw, src_box, False, amp.raw_flip_y)
        level = None if subtract is None else subtract.get(amp.name)
        if level is not None and np.ndim(level) == 0:
            level = out.dtype.type(level)
        elif level is not None:
            rows = np.asarray(level, dtype=out.dtype)
            if rows.shape != (src_box.ny,):
                raise ValueError(
                    f"amplifier {amp.name!r}: {rows.shape[0]} row levels for {src_box.ny} data rows"
                )
            level = (rows[::-1] if amp.raw_flip_y else rows)[:, None]
        _copy_amp(view, out[dst_box.slices], amp.raw_flip_x, level)
        covered += dst_box.area
    if covered < out.size:
        cov = np.zeros(shape, bool)
        for amp in detector:
            cov[(amp.bbox if trim else amp.raw_bbox).slices] = True
        out[~cov] = fill
    return out


#: Pixels per block of a mirrored amplifier copy (`_copy_amp`): the scratch stays in the cache.
_FLIP_BLOCK_PIXELS = 1 << 15


def _copy_amp(src: np.ndarray, dst: np.ndarray, flip_x: bool, level: Any) -> None:
    """``dst[...] = src[:, ::-1] if flip_x else src`` minus ``level`` (`None`, scalar or column).

    ``level`` is `None`, a scalar of ``dst``'s dtype or one value per row, shape ``(ny, 1)``.
    A mirrored amp is converted and corrected block by block into a contiguous scratch, then
    copied mirrored with a same-dtype copy: a conversion that reads backwards along the row is
    about 1.5 times slower. Every value is ``dst.dtype(src) - level``, as the direct
    ``np.subtract(src[:, ::-1], level, out=dst)``.
    """
    if not flip_x:
        if level is None:
            dst[...] = src
        else:
            np.subtract(src, level, out=dst)
        return
    ny, nx = dst.shape
    block = max(1, _FLIP_BLOCK_PIXELS // max(nx, 1))
    scratch = np.empty((min(block, ny), nx), dst.dtype)
    for y0 in range(0, ny, block):
        y1 = min(y0 + block, ny)
        t = scratch[: y1 - y0]
        if level is None:
            np.copyto(t, src[y0:y1], casting="unsafe")
        else:
            np.subtract(src[y0:y1], level if np.ndim(level) == 0 else level[y0:y1], out=t)
        dst[y0:y1] = t[:, ::-1]


def assemble_sparse_plane(
    raw: np.ndarray,
    detector: "Detector",
    *,
    trim: bool = True,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """`assemble_plane` for a mostly-zero plane (a mask): copy only the non-zero pixels.

    Parameters
    ----------
    raw : `numpy.ndarray` of int, shape ``(ny_raw, nx_raw)``
        Raw plane (e.g. the int32 mask with a few SAT/BAD bits set).
    detector : `pipeline.image.Detector`
    trim : `bool`
        As `assemble_plane`.
    dtype : numpy dtype, optional
        Output dtype (default: the raw dtype).

    Returns
    -------
    out : `numpy.ndarray`
        Same values as ``assemble_plane(raw, detector, trim=trim, dtype=dtype, fill=0)``,
        built on a zero-initialised plane: the zero pixels are never written (no copy of a
        full plane, no page faults for untouched pages).

    Raises
    ------
    ValueError
        As `assemble_plane`.
    """
    from .isr_functions import flagged_pixels

    dtype = raw.dtype if dtype is None else np.dtype(dtype)
    shape = detector.bbox.shape if trim else untrimmed_shape(detector)
    out = np.zeros(shape, dtype=dtype)
    boxes = {amp.name: _checked_boxes(amp, raw.shape, trim) for amp in detector}
    flagged = _boxes_with_nonzero(raw, {name: b[0] for name, b in boxes.items()})
    for amp in detector:
        src_box, dst_box = boxes[amp.name]
        if amp.name not in flagged:
            continue
        src = raw[src_box.slices]
        ys, xs, vals = flagged_pixels(src, -1)
        if amp.raw_flip_y:
            ys = src_box.ny - 1 - ys
        if amp.raw_flip_x:
            xs = src_box.nx - 1 - xs
        out[ys + dst_box.y0, xs + dst_box.x0] = vals
    return out


def _boxes_with_nonzero(plane: np.ndarray, boxes: Mapping[str, Box]) -> set[str]:
    """Names of the boxes of ``plane`` holding a non-zero value.

    Boxes sharing their rows are tested together: one column-wise bitwise OR over whole rows
    of the band (fast on contiguous rows), then each box's columns; testing each box's
    (narrow-rowed) view costs numpy's per-row overhead on every row.
    """
    bands: dict[tuple[int, int], list[tuple[str, Box]]] = {}
    for name, box in boxes.items():
        if box.nx and box.ny:
            bands.setdefault((box.y0, box.y1), []).append((name, box))
    found = set()
    for (y0, y1), members in bands.items():
        x0 = min(b.x0 for _, b in members)
        x1 = max(b.x1 for _, b in members)
        cols = np.bitwise_or.reduce(plane[y0:y1, x0:x1], axis=0) if np.issubdtype(
            plane.dtype, np.integer
        ) else np.any(plane[y0:y1, x0:x1] != 0, axis=0)
        for name, b in members:
            if cols[b.x0 - x0 : b.x1 - x0].any():
                found.add(name)
    return found


def _mirror(box: "Box", outer: "Box", fx: bool, fy: bool) -> "Box":
    from pipeline.image import Box

    if box.is_empty:
        return box
    x0, y0 = box.x0, box.y0
    if fx:
        x0 = outer.x0 + (outer.x1 - box.x1)
    if fy:
        y0 = outer.y0 + (outer.y1 - box.y1)
    return Box(x0, y0, box.nx, box.ny)


def assembled_detector(detector: "Detector", *, trim: bool = True) -> "Detector":
    """Return the detector geometry describing the assembled image.

    Parameters
    ----------
    detector : `pipeline.image.Detector`
        Raw geometry.
    trim : `bool`
        Trimmed assembly leaves the geometry unchanged except that flips are cleared on
        nothing (``amp.bbox`` already describes the output); untrimmed assembly mirrors each
        amp's raw sub-boxes inside its ``raw_bbox`` where flipped and clears the flips.

    Returns
    -------
    detector : `pipeline.image.Detector`
        Geometry of the assembled image.
    """
    if trim:
        return detector
    amps = []
    for a in detector:
        fx, fy = a.raw_flip_x, a.raw_flip_y
        amps.append(
            a.replace(
                raw_data_bbox=_mirror(a.raw_data_bbox, a.raw_bbox, fx, fy),
                raw_serial_overscan_bbox=_mirror(a.raw_serial_overscan_bbox, a.raw_bbox, fx, fy),
                raw_serial_prescan_bbox=_mirror(a.raw_serial_prescan_bbox, a.raw_bbox, fx, fy),
                raw_parallel_overscan_bbox=_mirror(a.raw_parallel_overscan_bbox, a.raw_bbox, fx, fy),
                raw_flip_x=False,
                raw_flip_y=False,
            )
        )
    return detector.replace(amplifiers=tuple(amps))


def convert_int_to_float(
    mi: MaskedImage, keep_integer: bool = False
) -> tuple[MaskedImage, np.ndarray | None]:
    """Integer raw → float32 with variance 1 and mask 0 (float input: float32, planes kept).

    Parameters
    ----------
    mi : `pipeline.image.MaskedImage`
        Raw planes (ADU).
    keep_integer : `bool`, optional
        Keep the integer image (new mask and variance only): the trimmed assembly converts the
        data sections while copying them (`assemble_plane`), which saves one full-frame pass
        and the float32 raw. Only for callers that read the raw pixels and never write them
        before the assembly; the float32 values are the same.

    Returns
    -------
    converted : `pipeline.image.MaskedImage`
        ``mi`` itself when already float32.
    owned : `numpy.ndarray` or `None`
        The new float32 image when converted from integers (not with ``keep_integer``): a
        buffer the caller owns and may reuse once it is no longer needed (see
        `assemble_exposure`).

    Raises
    ------
    RuntimeError
        Pixels neither integer nor floating point.

    Notes
    -----
    The variance of a converted integer raw is a read-only broadcast of 1.0 until a step
    writes to it (`writable_variance`); assembly creates the real plane. This saves one
    full-size plane.
    """
    if np.issubdtype(mi.image.dtype, np.floating):
        if mi.image.dtype != np.float32:
            return MaskedImage(
                mi.image.astype(np.float32), mi.mask, mi.variance, mi.mask_planes, mi.xy0
            ), None
        return mi, None
    if not np.issubdtype(mi.image.dtype, np.integer):
        raise RuntimeError(f"cannot convert raw pixels of dtype {mi.image.dtype} to float")
    img = mi.image if keep_integer else mi.image.astype(np.float32)
    out = MaskedImage(
        img,
        np.zeros(img.shape, np.int32),
        np.broadcast_to(np.float32(1.0), img.shape),
        mi.mask_planes,
        mi.xy0,
    )
    return out, None if keep_integer else img


def writable_variance(mi: MaskedImage) -> np.ndarray:
    """Materialise a broadcast (read-only) variance plane before writing to it; return it."""
    if not mi.variance.flags.writeable:
        mi.variance = np.array(mi.variance, dtype=np.float32)
    return mi.variance


def assemble_exposure(
    exposure: "Exposure",
    *,
    trim: bool,
    levels: Mapping[str, Any] | None,
    spare: np.ndarray | None,
    replace_variance: bool,
) -> bool:
    """Assemble the amplifiers of a raw exposure in place (planes and detector).

    Parameters
    ----------
    exposure : `pipeline.image.Exposure`
        Raw exposure; its masked image and detector are replaced by the assembled ones.
    trim : `bool`
        Keep only the data sections (``assembleCcd.doTrim``).
    levels : mapping [`str`, scalar or `numpy.ndarray`], optional
        Overscan level per amp still to subtract from the data (deferred overscan).
    spare : `numpy.ndarray`, optional
        A float32 buffer the caller owns (the converted raw image) whose memory may become
        the variance plane (a fresh plane costs more in page faults than the arithmetic that
        fills it).
    replace_variance : `bool`
        The variance will be recomputed for every pixel (``doVariance``); when every pixel
        belongs to an amp the assembled variance then needs no initial values.

    Returns
    -------
    variance_replaced : `bool`
        The assembled variance plane holds no values yet (``replace_variance`` and the amps
        cover the trimmed detector): the caller must compute every pixel of it.
    """
    det = exposure.detector
    mi = exposure.masked_image
    planes = dict(mi.mask_planes)
    xy0 = mi.xy0
    raw_img, raw_mask, raw_var = mi.image, mi.mask, mi.variance
    if spare is not None and not (raw_img is spare and spare.flags.c_contiguous):
        spare = None
    exposure.masked_image = None  # the raw planes are freed as soon as they are assembled
    del mi
    # mask first: its raw plane is freed before the image is assembled (peak memory: at most
    # two raw and two assembled planes at any time)
    mask = assemble_sparse_plane(raw_mask, det, trim=trim, dtype=np.int32)
    del raw_mask
    img = assemble_plane(raw_img, det, trim=trim, dtype=np.float32, subtract=levels or None)
    if spare is not None and spare.size < img.size:
        spare = None
    del raw_img
    covered = trim and sum(a.bbox.area for a in det) == det.bbox.area
    replaced = bool(replace_variance and covered)
    if replaced:
        var = (
            spare.reshape(-1)[: img.size].reshape(img.shape)
            if spare is not None
            else np.empty(img.shape, np.float32)
        )
    elif not raw_var.flags.writeable:  # untouched broadcast of 1.0 from convert_int_to_float
        if spare is not None:
            var = spare.reshape(-1)[: img.size].reshape(img.shape)
            var.fill(1.0)
        else:
            var = np.ones(img.shape, np.float32)
    else:
        var = assemble_plane(raw_var, det, trim=trim, dtype=np.float32, fill=1.0)
    del raw_var
    exposure.masked_image = MaskedImage(img, mask, var, planes, xy0)
    exposure.detector = assembled_detector(det, trim=trim)
    return replaced


def trim_to_match(exposure: "Exposure", shape: tuple[int, int]) -> None:
    """Trim an assembled exposure symmetrically to a calibration's ``shape`` (``doTrimToMatchCalib``).

    The new border pixels get EDGE; the amp boxes are shifted into the trimmed frame and
    clipped to it.

    Raises
    ------
    RuntimeError
        If the size differences are not equal, even and non-negative.
    """
    ny, nx = exposure.shape
    dy, dx = ny - shape[0], nx - shape[1]
    if dy == 0 and dx == 0:
        return
    if dy != dx or dy % 2 or dy < 0:
        raise RuntimeError(
            f"cannot trim the raw {exposure.shape} symmetrically to the calibration {shape}; "
            "the size differences must be equal, even and non-negative"
        )
    n = dy // 2
    mi = exposure.masked_image
    sl = (slice(n, ny - n), slice(n, nx - n))
    exposure.masked_image = MaskedImage(
        mi.image[sl].copy(), mi.mask[sl].copy(), mi.variance[sl].copy(), mi.mask_planes, mi.xy0
    )
    edge = np.int32(exposure.masked_image.get_plane_bitmask("EDGE"))
    exposure.mask[:1, :] |= edge
    exposure.mask[-1:, :] |= edge
    exposure.mask[:, :1] |= edge
    exposure.mask[:, -1:] |= edge
    frame = Box(0, 0, nx - 2 * n, ny - 2 * n)
    amps = [a.replace(bbox=a.bbox.shifted(-n, -n).intersection(frame)) for a in exposure.detector]
    exposure.detector = exposure.detector.replace(amplifiers=tuple(amps), bbox=frame)
