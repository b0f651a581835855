"""Detector geometry: boxes, amplifiers, detectors and cameras.

The model follows the afw ``cameraGeom`` amplifier description (reference-algorithms.md §1.6)
with one deliberate difference: boxes are half-open ``(x0, y0, nx, ny)`` rather than inclusive
``[min, max]`` integer boxes, so ``image[box.slices]`` is the region a box names.

Coordinates: ``x`` is the column (FITS NAXIS1), ``y`` the row (FITS NAXIS2); numpy arrays are
indexed ``[y, x]``. Raw boxes are in the coordinates of the raw detector image (the one HDU that
holds the detector's pixels); ``Amplifier.bbox`` and ``Detector.bbox`` are in the assembled,
trimmed detector image.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Box", "ReadoutCorner", "Amplifier", "Detector", "Camera"]

_SECTION_RE = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")


@dataclass(frozen=True, slots=True)
class Box:
    """A half-open integer pixel box ``[x0, x0 + nx) × [y0, y0 + ny)``.

    Parameters
    ----------
    x0, y0 : int
        Lower-left corner (column, row), pixels.
    nx, ny : int
        Width and height in pixels (``>= 0``; a box with zero width or height is empty).

    Raises
    ------
    ValueError
        If ``nx`` or ``ny`` is negative.
    """

    x0: int
    y0: int
    nx: int
    ny: int

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "nx", "ny"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"Box.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.nx < 0 or self.ny < 0:
            raise ValueError(f"Box size must be non-negative, got nx={self.nx}, ny={self.ny}")

    # -- derived quantities -------------------------------------------------------------------
    @property
    def x1(self) -> int:
        """One past the last column."""
        return self.x0 + self.nx

    @property
    def y1(self) -> int:
        """One past the last row."""
        return self.y0 + self.ny

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(slice(y0, y1), slice(x0, x1))`` for indexing a ``(ny, nx)`` numpy array."""
        return (slice(self.y0, self.y1), slice(self.x0, self.x1))

    @property
    def shape(self) -> tuple[int, int]:
        """Array shape ``(ny, nx)``."""
        return (self.ny, self.nx)

    @property
    def area(self) -> int:
        """Number of pixels, ``nx * ny``."""
        return self.nx * self.ny

    @property
    def is_empty(self) -> bool:
        """True if the box holds no pixel."""
        return self.nx == 0 or self.ny == 0

    # -- operations --------------------------------------------------------------------------
    def intersection(self, other: Box) -> Box:
        """Return the overlap with ``other`` (an empty box at ``(0, 0)`` when disjoint)."""
        x0 = max(self.x0, other.x0)
        y0 = max(self.y0, other.y0)
        x1 = min(self.x1, other.x1)
        y1 = min(self.y1, other.y1)
        if x1 <= x0 or y1 <= y0:
            return Box(0, 0, 0, 0)
        return Box(x0, y0, x1 - x0, y1 - y0)

    def union(self, other: Box) -> Box:
        """Return the smallest box containing both boxes (empty boxes are ignored)."""
        if self.is_empty:
            return other
        if other.is_empty:
            return self
        x0 = min(self.x0, other.x0)
        y0 = min(self.y0, other.y0)
        return Box(x0, y0, max(self.x1, other.x1) - x0, max(self.y1, other.y1) - y0)

    def shifted(self, dx: int, dy: int) -> Box:
        """Return the box moved by ``(dx, dy)`` pixels."""
        return Box(self.x0 + dx, self.y0 + dy, self.nx, self.ny)

    def flipped_x(self, width: int) -> Box:
        """Mirror the box left-right inside an extent ``[0, width)``: ``x0' = width - x1``."""
        return Box(width - self.x1, self.y0, self.nx, self.ny)

    def flipped_y(self, height: int) -> Box:
        """Mirror the box top-bottom inside an extent ``[0, height)``: ``y0' = height - y1``."""
        return Box(self.x0, height - self.y1, self.nx, self.ny)

    def contains(self, other: Box) -> bool:
        """Return True if ``other`` lies entirely inside this box (an empty box always does)."""
        if other.is_empty:
            return True
        return self.x0 <= other.x0 and self.y0 <= other.y0 and other.x1 <= self.x1 and other.y1 <= self.y1

    def contains_point(self, x: int, y: int) -> bool:
        """Return True if pixel ``(x, y)`` is inside the box."""
        return self.x0 <= x < self.x1 and self.y0 <= y < self.y1

    # -- conversions -------------------------------------------------------------------------
    @classmethod
    def from_fits_section(cls, section: str) -> Box:
        """Parse a FITS section string ``'[x1:x2,y1:y2]'`` (1-indexed, inclusive).

        Raises
        ------
        ValueError
            If the string is not of that form or the ranges are reversed.
        """
        match = _SECTION_RE.match(str(section))
        if not match:
            raise ValueError(f"not a FITS section '[x1:x2,y1:y2]': {section!r}")
        xa, xb, ya, yb = (int(g) for g in match.groups())
        if xb < xa or yb < ya:
            raise ValueError(f"reversed FITS section (flipped readout is not a box): {section!r}")
        return cls(xa - 1, ya - 1, xb - xa + 1, yb - ya + 1)

    def to_fits_section(self) -> str:
        """Return the FITS section string ``'[x0+1:x1,y0+1:y1]'`` of the box."""
        return f"[{self.x0 + 1}:{self.x1},{self.y0 + 1}:{self.y1}]"

    @classmethod
    def from_shape(cls, shape: tuple[int, int], x0: int = 0, y0: int = 0) -> Box:
        """Box of an array of shape ``(ny, nx)`` with origin ``(x0, y0)``."""
        return cls(x0, y0, int(shape[1]), int(shape[0]))

    def to_list(self) -> list[int]:
        """``[x0, y0, nx, ny]`` (for YAML/JSON)."""
        return [self.x0, self.y0, self.nx, self.ny]

    @classmethod
    def coerce(cls, value: Any) -> Box:
        """Build a box from a ``Box``, a 4-sequence ``(x0, y0, nx, ny)`` or a FITS section string."""
        if isinstance(value, Box):
            return value
        if isinstance(value, str):
            return cls.from_fits_section(value)
        if value is None:
            return cls(0, 0, 0, 0)
        seq = list(value)
        if len(seq) != 4:
            raise ValueError(f"a box needs 4 integers (x0, y0, nx, ny), got {value!r}")
        return cls(*(int(v) for v in seq))

    def __repr__(self) -> str:
        return f"Box(x0={self.x0}, y0={self.y0}, nx={self.nx}, ny={self.ny})"


class ReadoutCorner(str, enum.Enum):
    """Corner of the assembled amplifier region read out first (afw ``ReadoutCorner``)."""

    LL = "LL"
    LR = "LR"
    UL = "UL"
    UR = "UR"

    def __str__(self) -> str:
        return self.value


_EMPTY = Box(0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Amplifier:
    """One amplifier (readout segment) of a detector.

    Parameters
    ----------
    name : str
        Amplifier name, unique in its detector (e.g. ``"A"``, ``"C10"``).
    gain : float
        Gain, e⁻/ADU.
    read_noise : float
        Read noise, e⁻.
    saturation : float
        Saturation level, ADU.
    suspect_level : float
        Level above which pixels are SUSPECT, ADU; NaN means none.
    readout_corner : str
        ``"LL"``, ``"LR"``, ``"UL"`` or ``"UR"`` (a `ReadoutCorner`).
    bbox : Box
        The amplifier's data region in the assembled, trimmed detector image.
    raw_bbox, raw_data_bbox, raw_serial_overscan_bbox, raw_serial_prescan_bbox, \
raw_parallel_overscan_bbox : Box
        Regions in the raw detector image (empty box when absent).
    raw_flip_x, raw_flip_y : bool
        Whether the raw data region must be mirrored to land in ``bbox`` (reference §2.4).
    linearity_type : str
        ``"None"``, ``"Polynomial"``, ``"Squared"``, ``"LookupTable"``, ``"Spline"``...
    linearity_coeffs : tuple of float
        Linearity coefficients (meaning depends on ``linearity_type``).
    linearity_threshold, linearity_maximum : float
        Linearity validity range, ADU.

    Notes
    -----
    Geometry per afw ``cameraGeom.Amplifier`` (reference-algorithms.md §1.6); boxes half-open.
    """

    name: str
    gain: float = 1.0
    read_noise: float = 0.0
    saturation: float = 65535.0
    suspect_level: float = float("nan")
    readout_corner: ReadoutCorner = ReadoutCorner.LL
    bbox: Box = _EMPTY
    raw_bbox: Box = _EMPTY
    raw_data_bbox: Box = _EMPTY
    raw_serial_overscan_bbox: Box = _EMPTY
    raw_serial_prescan_bbox: Box = _EMPTY
    raw_parallel_overscan_bbox: Box = _EMPTY
    raw_flip_x: bool = False
    raw_flip_y: bool = False
    linearity_type: str = "None"
    linearity_coeffs: tuple[float, ...] = ()
    linearity_threshold: float = 0.0
    linearity_maximum: float = float("nan")

    def __post_init__(self) -> None:
        object.__setattr__(self, "readout_corner", ReadoutCorner(str(self.readout_corner)))
        for name in (
            "bbox",
            "raw_bbox",
            "raw_data_bbox",
            "raw_serial_overscan_bbox",
            "raw_serial_prescan_bbox",
            "raw_parallel_overscan_bbox",
        ):
            object.__setattr__(self, name, Box.coerce(getattr(self, name)))
        for name in (
            "gain",
            "read_noise",
            "saturation",
            "suspect_level",
            "linearity_threshold",
            "linearity_maximum",
        ):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "linearity_coeffs", tuple(float(c) for c in self.linearity_coeffs))
        object.__setattr__(self, "raw_flip_x", bool(self.raw_flip_x))
        object.__setattr__(self, "raw_flip_y", bool(self.raw_flip_y))
        object.__setattr__(self, "linearity_type", str(self.linearity_type))

    # afw-style aliases used by the ISR code
    @property
    def raw_horizontal_overscan_bbox(self) -> Box:
        """Alias of `raw_serial_overscan_bbox` (afw ``rawHorizontalOverscanBBox``)."""
        return self.raw_serial_overscan_bbox

    @property
    def raw_vertical_overscan_bbox(self) -> Box:
        """Alias of `raw_parallel_overscan_bbox` (afw ``rawVerticalOverscanBBox``)."""
        return self.raw_parallel_overscan_bbox

    @property
    def raw_prescan_bbox(self) -> Box:
        """Alias of `raw_serial_prescan_bbox` (afw ``rawPrescanBBox``)."""
        return self.raw_serial_prescan_bbox

    def _key(self) -> tuple[Any, ...]:
        # NaN-safe comparison key (NaN levels compare equal to NaN)
        return tuple(
            "nan" if isinstance(v, float) and v != v else v
            for v in (getattr(self, f.name) for f in dataclasses.fields(self))
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Amplifier):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def replace(self, **changes: Any) -> Amplifier:
        """Return a copy with the given fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-able dict of every field (boxes as ``[x0, y0, nx, ny]``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Box):
                value = value.to_list()
            elif isinstance(value, ReadoutCorner):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, float) and np.isnan(value):
                value = None if f.name in ("suspect_level", "linearity_maximum") else value
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Amplifier:
        """Inverse of `to_dict` (``None`` for NaN-able levels means NaN)."""
        kwargs = dict(data)
        for key in ("suspect_level", "linearity_maximum"):
            if key in kwargs and kwargs[key] is None:
                kwargs[key] = float("nan")
        return cls(**kwargs)


@dataclass(frozen=True, eq=False)
class Detector:
    """A detector (CCD): its amplifiers, assembled geometry and optional crosstalk matrix.

    Parameters
    ----------
    id : int
        Detector id, unique in the camera (the ``detector`` data ID value).
    name : str
        Detector name (e.g. ``"ccd00"``).
    purpose : str
        ``"SCIENCE"``, ``"FOCUS"``, ``"GUIDER"``, ``"WAVEFRONT"``.
    bbox : Box
        The assembled, trimmed detector, ``(0, 0, nx, ny)``.
    amplifiers : tuple of Amplifier
        The amplifiers in readout order.
    crosstalk : numpy.ndarray or None
        Crosstalk coefficients, shape ``(n_amp, n_amp)``, indexed ``[source, target]``
        (reference-algorithms.md §2.8 and §9).
    hdu : int, str or None
        Where the raw pixels are: the HDU index or EXTNAME; None for the primary/first image HDU.
    raw_shape : tuple of int
        Shape ``(ny, nx)`` of the raw detector image.

    Raises
    ------
    ValueError
        If amplifier names repeat or the crosstalk matrix is not ``(n_amp, n_amp)``.
    """

    id: int
    name: str
    purpose: str = "SCIENCE"
    bbox: Box = _EMPTY
    amplifiers: tuple[Amplifier, ...] = ()
    crosstalk: np.ndarray | None = None
    hdu: int | str | None = None
    raw_shape: tuple[int, int] = (0, 0)
    _by_name: dict[str, Amplifier] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", int(self.id))
        object.__setattr__(self, "bbox", Box.coerce(self.bbox))
        object.__setattr__(self, "amplifiers", tuple(self.amplifiers))
        object.__setattr__(self, "raw_shape", tuple(int(v) for v in self.raw_shape))
        names = [a.name for a in self.amplifiers]
        if len(set(names)) != len(names):
            raise ValueError(f"detector {self.name!r}: amplifier names repeat: {names}")
        object.__setattr__(self, "_by_name", {a.name: a for a in self.amplifiers})
        if self.crosstalk is not None:
            xt = np.array(self.crosstalk, dtype=np.float64)
            n = len(self.amplifiers)
            if xt.shape != (n, n):
                raise ValueError(
                    f"detector {self.name!r}: crosstalk matrix has shape {xt.shape}, expected ({n}, {n})"
                )
            xt.setflags(write=False)
            object.__setattr__(self, "crosstalk", xt)

    def __getitem__(self, key: str | int) -> Amplifier:
        if isinstance(key, str):
            try:
                return self._by_name[key]
            except KeyError:
                raise KeyError(
                    f"detector {self.name!r} has no amplifier {key!r}; amplifiers: {list(self._by_name)}"
                ) from None
        return self.amplifiers[key]

    def __iter__(self) -> Iterator[Amplifier]:
        return iter(self.amplifiers)

    def __len__(self) -> int:
        return len(self.amplifiers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detector):
            return NotImplemented
        same_xt = (self.crosstalk is None and other.crosstalk is None) or (
            self.crosstalk is not None
            and other.crosstalk is not None
            and np.array_equal(self.crosstalk, other.crosstalk)
        )
        return (
            self.id == other.id
            and self.name == other.name
            and self.purpose == other.purpose
            and self.bbox == other.bbox
            and self.amplifiers == other.amplifiers
            and self.hdu == other.hdu
            and self.raw_shape == other.raw_shape
            and same_xt
        )

    def __hash__(self) -> int:
        return hash((self.id, self.name))

    @property
    def amp_names(self) -> list[str]:
        """Amplifier names in order."""
        return [a.name for a in self.amplifiers]

    @property
    def raw_bbox(self) -> Box:
        """The full raw detector image, ``(0, 0, nx, ny)`` from `raw_shape`."""
        return Box(0, 0, self.raw_shape[1], self.raw_shape[0])

    def replace(self, **changes: Any) -> Detector:
        """Return a copy with the given fields changed (e.g. ``amplifiers=...``)."""
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        kwargs.update(changes)
        return Detector(**kwargs)

    def with_amp_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> Detector:
        """Return a copy with per-amplifier fields replaced, ``{amp_name: {field: value}}``."""
        amps = tuple(a.replace(**overrides[a.name]) if a.name in overrides else a for a in self.amplifiers)
        return self.replace(amplifiers=amps)

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-able dict of the detector (inverse: `from_dict`)."""
        return {
            "id": self.id,
            "name": self.name,
            "purpose": self.purpose,
            "bbox": self.bbox.to_list(),
            "hdu": self.hdu,
            "raw_shape": list(self.raw_shape),
            "crosstalk": None if self.crosstalk is None else self.crosstalk.tolist(),
            "amplifiers": [a.to_dict() for a in self.amplifiers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Detector:
        """Build a detector from `to_dict` output."""
        kwargs = dict(data)
        kwargs["amplifiers"] = tuple(Amplifier.from_dict(a) for a in kwargs.get("amplifiers", ()))
        return cls(**kwargs)


class Camera:
    """A named collection of detectors.

    Parameters
    ----------
    name : str
        Camera (instrument) name.
    detectors : mapping of int to Detector, or iterable of Detector
        The detectors, keyed by id.

    Notes
    -----
    ``camera[3]`` looks a detector up by id, ``camera["ccd03"]`` by name; iteration yields the
    detectors in id order.
    """

    def __init__(self, name: str, detectors: Mapping[int, Detector] | list[Detector] | tuple[Detector, ...]):
        self.name = name
        if isinstance(detectors, Mapping):
            dets = list(detectors.values())
        else:
            dets = list(detectors)
        self.detectors: dict[int, Detector] = {d.id: d for d in sorted(dets, key=lambda d: d.id)}
        if len(self.detectors) != len(dets):
            raise ValueError(f"camera {name!r}: detector ids repeat")
        self._by_name = {d.name: d for d in self.detectors.values()}

    def __getitem__(self, key: int | str) -> Detector:
        if isinstance(key, str):
            if key in self._by_name:
                return self._by_name[key]
            raise KeyError(f"camera {self.name!r} has no detector named {key!r}")
        try:
            return self.detectors[int(key)]
        except KeyError:
            raise KeyError(
                f"camera {self.name!r} has no detector id {key!r}; "
                f"ids {min(self.detectors)}..{max(self.detectors)}"
                if self.detectors
                else f"camera {self.name!r} has no detectors"
            ) from None

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            return key in self._by_name
        return key in self.detectors

    def __iter__(self) -> Iterator[Detector]:
        return iter(self.detectors.values())

    def __len__(self) -> int:
        return len(self.detectors)

    def __repr__(self) -> str:
        return f"Camera({self.name!r}, {len(self)} detectors)"
