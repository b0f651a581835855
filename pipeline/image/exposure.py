"""Masked images and exposures.

`MaskedImage` holds three co-registered ``(ny, nx)`` planes (image, int32 mask bit planes,
float32 variance in ADU²) and implements afw's in-place arithmetic with its variance and mask
propagation rules (reference-algorithms.md §1.3). `Exposure` adds the header (a
`~pipeline.image.metadata.PropertyList`), the detector geometry and the exposure info.
"""

from __future__ import annotations

import copy as _copy
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from astropy.time import Time

from .geometry import Box, Detector
from .metadata import PropertyList

__all__ = [
    "MASK_PLANES",
    "DEFAULT_MASK_PLANES",
    "MaskedImage",
    "ExposureInfo",
    "Exposure",
]

#: The fixed default mask planes (afw default dictionary, reference §1.2): name → bit index.
DEFAULT_MASK_PLANES: dict[str, int] = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
    "VIGNETTED": 9,
    "STREAK": 10,
}
MASK_PLANES = DEFAULT_MASK_PLANES

_MAX_PLANES = 31  # int32: bit 31 is the sign bit, keep it free


def _as_float32(array: Any) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)


class MaskedImage:
    """Image, mask and variance planes of one image, all of shape ``(ny, nx)``.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
        Pixel values, ADU (float32 for processed data; an integer array is kept as is for raws
        until ISR's ``convertIntToFloat``; other float dtypes become float32).
    mask : array_like of int, shape (ny, nx), optional
        Bit-plane mask (int32); zeros when omitted.
    variance : array_like, shape (ny, nx), optional
        Variance, ADU² (float32); zeros when omitted.
    mask_planes : mapping of str to int, optional
        Plane name → bit index; defaults to a copy of `MASK_PLANES`.
    xy0 : tuple of int, optional
        Origin ``(x0, y0)`` of this image in its parent's coordinates.

    Raises
    ------
    ValueError
        If the planes are not 2-D or their shapes differ.

    Notes
    -----
    Arithmetic (``+= -= *= /=`` and the ``scaled_*`` methods) follows afw ``MaskedImage``
    (reference-algorithms.md §1.3): masks OR, variances propagate as for independent errors.
    Operands with different plane dictionaries are conformed by plane name.
    """

    __slots__ = ("_image", "_mask", "_variance", "mask_planes", "xy0")

    def __init__(
        self,
        image: Any,
        mask: Any = None,
        variance: Any = None,
        mask_planes: Mapping[str, int] | None = None,
        xy0: tuple[int, int] = (0, 0),
    ) -> None:
        img = np.asarray(image)
        if img.ndim != 2:
            raise ValueError(f"MaskedImage needs a 2-D image, got shape {img.shape}")
        if not np.issubdtype(img.dtype, np.integer) and img.dtype != np.float32:
            img = img.astype(np.float32)
        self._image = img
        if mask is None:
            self._mask = np.zeros(img.shape, dtype=np.int32)
        else:
            self._mask = np.asarray(mask, dtype=np.int32)
        if variance is None:
            self._variance = np.zeros(img.shape, dtype=np.float32)
        else:
            self._variance = _as_float32(variance)
        if self._mask.shape != img.shape or self._variance.shape != img.shape:
            raise ValueError(
                f"MaskedImage planes differ in shape: image {img.shape}, mask {self._mask.shape}, "
                f"variance {self._variance.shape}"
            )
        self.mask_planes: dict[str, int] = dict(DEFAULT_MASK_PLANES if mask_planes is None else mask_planes)
        self.xy0 = (int(xy0[0]), int(xy0[1]))

    # -- planes --------------------------------------------------------------------------------
    @property
    def image(self) -> np.ndarray:
        """The image plane, ``(ny, nx)``, ADU."""
        return self._image

    @image.setter
    def image(self, value: Any) -> None:
        arr = np.asarray(value)
        if arr.shape != self._mask.shape:
            raise ValueError(f"new image shape {arr.shape} differs from the mask shape {self._mask.shape}")
        self._image = arr

    @property
    def mask(self) -> np.ndarray:
        """The int32 mask plane, ``(ny, nx)``."""
        return self._mask

    @mask.setter
    def mask(self, value: Any) -> None:
        arr = np.asarray(value, dtype=np.int32)
        if arr.shape != self._image.shape:
            raise ValueError(f"new mask shape {arr.shape} differs from the image shape {self._image.shape}")
        self._mask = arr

    @property
    def variance(self) -> np.ndarray:
        """The float32 variance plane, ``(ny, nx)``, ADU²."""
        return self._variance

    @variance.setter
    def variance(self, value: Any) -> None:
        arr = _as_float32(value)
        if arr.shape != self._image.shape:
            raise ValueError(
                f"new variance shape {arr.shape} differs from the image shape {self._image.shape}"
            )
        self._variance = arr

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return self._image.shape  # type: ignore[return-value]

    @property
    def bbox(self) -> Box:
        """The image's box in parent coordinates (origin `xy0`)."""
        return Box.from_shape(self.shape, *self.xy0)

    # -- mask planes ---------------------------------------------------------------------------
    def add_mask_plane(self, name: str) -> int:
        """Add a mask plane (next free bit) if missing; return its bit index.

        Raises
        ------
        ValueError
            If all 31 usable bits are taken.
        """
        if name in self.mask_planes:
            return self.mask_planes[name]
        used = set(self.mask_planes.values())
        for bit in range(_MAX_PLANES):
            if bit not in used:
                self.mask_planes[name] = bit
                return bit
        raise ValueError(f"no free mask bit for plane {name!r}: all {_MAX_PLANES} are used")

    def get_plane_bitmask(self, names: str | Iterable[str], *, add: bool = False) -> int:
        """Return the OR of ``1 << bit`` for the named planes.

        Parameters
        ----------
        names : str or iterable of str
            Plane name(s).
        add : bool, optional
            Add missing planes (next free bit) instead of raising.

        Raises
        ------
        KeyError
            If a plane is unknown and ``add`` is False; the message lists the known planes.
        """
        if isinstance(names, str):
            names = [names]
        value = 0
        for name in names:
            if name not in self.mask_planes:
                if not add:
                    raise KeyError(
                        f"unknown mask plane {name!r}; known: {sorted(self.mask_planes)}; "
                        "use add_mask_plane(name) to add it"
                    )
                self.add_mask_plane(name)
            value |= 1 << self.mask_planes[name]
        return value

    def _conformed_mask(self, other: MaskedImage) -> np.ndarray:
        """``other.mask`` re-expressed in this image's plane dictionary (adds planes as needed)."""
        if other.mask_planes == self.mask_planes or not other.mask.any():
            return other.mask
        out = np.zeros(other.mask.shape, dtype=np.int32)
        for name, bit in other.mask_planes.items():
            sel = (other.mask & (1 << bit)) != 0
            if sel.any():
                out[sel] |= np.int32(1 << self.add_mask_plane(name))
        return out

    # -- arithmetic (reference §1.3) -------------------------------------------------------------
    def _check_other(self, other: MaskedImage) -> None:
        if other.shape != self.shape:
            raise ValueError(f"MaskedImage shapes differ: {self.shape} vs {other.shape}")

    def _float_image(self) -> np.ndarray:
        if self._image.dtype != np.float32:
            self._image = self._image.astype(np.float32)
        return self._image

    def __iadd__(self, other: MaskedImage | float) -> MaskedImage:
        if isinstance(other, MaskedImage):
            return self.scaled_plus(1.0, other)
        img = self._float_image()
        img += np.float32(other)
        return self

    def __isub__(self, other: MaskedImage | float) -> MaskedImage:
        if isinstance(other, MaskedImage):
            return self.scaled_minus(1.0, other)
        img = self._float_image()
        img -= np.float32(other)
        return self

    def __imul__(self, other: MaskedImage | float) -> MaskedImage:
        if isinstance(other, MaskedImage):
            return self.scaled_multiplies(1.0, other)
        s = float(other)
        img = self._float_image()
        img *= np.float32(s)
        self._variance *= np.float32(s * s)
        return self

    def __itruediv__(self, other: MaskedImage | float) -> MaskedImage:
        if isinstance(other, MaskedImage):
            return self.scaled_divides(1.0, other)
        s = float(other)
        img = self._float_image()
        img /= np.float32(s)
        self._variance /= np.float32(s * s)
        return self

    def scaled_plus(self, c: float, other: MaskedImage) -> MaskedImage:
        """In place: ``image += c·B; mask |= B.mask; variance += c²·var_B``. Returns self."""
        self._check_other(other)
        img = self._float_image()
        c = float(c)
        if c == 1.0:
            img += other.image
            self._variance += other.variance
        else:
            img += np.float32(c) * other.image
            self._variance += np.float32(c * c) * other.variance
        self._mask |= self._conformed_mask(other)
        return self

    def scaled_minus(self, c: float, other: MaskedImage) -> MaskedImage:
        """In place: ``image -= c·B; mask |= B.mask; variance += c²·var_B``. Returns self."""
        self._check_other(other)
        img = self._float_image()
        c = float(c)
        if c == 1.0:
            img -= other.image
            self._variance += other.variance
        else:
            img -= np.float32(c) * other.image
            self._variance += np.float32(c * c) * other.variance
        self._mask |= self._conformed_mask(other)
        return self

    def scaled_multiplies(self, c: float, other: MaskedImage) -> MaskedImage:
        """In place: ``var = c²(A²·var_B + B²·var_A); image *= c·B; mask |= B.mask``. Returns self."""
        self._check_other(other)
        img = self._float_image()
        a = img
        b = other.image.astype(np.float32, copy=False)  # integer operands: no uint16 overflow in b*b
        var = a * a * other.variance + b * b * self._variance
        c = float(c)
        if c != 1.0:
            var *= np.float32(c * c)
            img *= np.float32(c) * b
        else:
            img *= b
        self._variance = var.astype(np.float32, copy=False)
        self._mask |= self._conformed_mask(other)
        return self

    def scaled_divides(self, c: float, other: MaskedImage) -> MaskedImage:
        """In place: ``var = (A²·var_B + B²·var_A)/(c²·B⁴); image /= c·B; mask |= B.mask``. Returns self."""
        self._check_other(other)
        img = self._float_image()
        a = img
        b = other.image.astype(np.float32, copy=False)
        b2 = b * b
        c = float(c)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = (a * a * other.variance + b2 * self._variance) / (np.float32(c * c) * b2 * b2)
            if c != 1.0:
                img /= np.float32(c) * b
            else:
                img /= b
        self._variance = var.astype(np.float32, copy=False)
        self._mask |= self._conformed_mask(other)
        return self

    # -- copies / views --------------------------------------------------------------------------
    def subimage(self, box: Box) -> MaskedImage:
        """Return a view on ``box`` (parent coordinates, i.e. including `xy0`).

        Raises
        ------
        ValueError
            If the box is not inside the image.
        """
        local = box.shifted(-self.xy0[0], -self.xy0[1])
        if not Box.from_shape(self.shape).contains(local):
            raise ValueError(f"{box} is not inside the image {self.bbox}")
        sl = local.slices
        return MaskedImage(
            self._image[sl], self._mask[sl], self._variance[sl], self.mask_planes, xy0=(box.x0, box.y0)
        )

    def copy(self) -> MaskedImage:
        """Deep copy of the three planes and the plane dictionary."""
        return MaskedImage(
            self._image.copy(), self._mask.copy(), self._variance.copy(), dict(self.mask_planes), self.xy0
        )

    def __repr__(self) -> str:
        return f"MaskedImage(shape={self.shape}, dtype={self._image.dtype}, xy0={self.xy0})"



def _is_time(value: Any) -> bool:
    """Whether ``value`` is an `astropy.time.Time` (astropy is imported only by code that makes one)."""
    module = sys.modules.get("astropy.time")
    return module is not None and isinstance(value, module.Time)

@dataclass
class ExposureInfo:
    """What is known about the exposure an image comes from.

    Parameters
    ----------
    id : int or None
        Exposure id (the ``exposure`` data ID value).
    obs_id : str or None
        Observation id string (e.g. the file's base name, ``"1927963o"``).
    instrument : str or None
        Instrument name.
    exposure_time : float
        Shutter-open time, s (NaN if unknown).
    dark_time : float
        Time from the end of the pre-read clear to the readout, s (NaN if unknown).
    observation_type : str or None
        ``"bias"``, ``"dark"``, ``"flat"``, ``"science"``, ``"arc"``...
    physical_filter : str or None
        Physical filter name.
    begin, end : astropy.time.Time or None
        Exposure start and end, TAI.
    day_obs : int or None
        Observing day ``YYYYMMDD``.
    detector : int or None
        Detector id the image comes from.
    extra : dict
        Other translated properties (``science_program``, ``target_name``...).
    """

    id: int | None = None
    obs_id: str | None = None
    instrument: str | None = None
    exposure_time: float = float("nan")
    dark_time: float = float("nan")
    observation_type: str | None = None
    physical_filter: str | None = None
    begin: Time | None = None
    end: Time | None = None
    day_obs: int | None = None
    detector: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; times as TAI ISOT strings, NaN as None."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if _is_time(value):
                value = value.tai.isot
            elif isinstance(value, float) and np.isnan(value):
                value = None
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExposureInfo:
        """Inverse of `to_dict`."""
        kwargs = dict(data)
        for key in ("begin", "end"):
            if kwargs.get(key) is not None:
                from astropy.time import Time

                kwargs[key] = Time(kwargs[key], format="isot", scale="tai")
        for key in ("exposure_time", "dark_time"):
            if kwargs.get(key) is None:
                kwargs[key] = float("nan")
        known = {f.name for f in fields(cls)}
        extra = {k: v for k, v in kwargs.items() if k not in known}
        kwargs = {k: v for k, v in kwargs.items() if k in known}
        if extra:
            kwargs.setdefault("extra", {}).update(extra)
        return cls(**kwargs)


class Exposure:
    """A masked image with its header, detector and exposure info.

    Parameters
    ----------
    masked_image : MaskedImage or numpy.ndarray
        The pixels; a bare ``(ny, nx)`` array becomes a `MaskedImage` with empty mask and zero
        variance.
    metadata : PropertyList, mapping or astropy.io.fits.Header, optional
        The header (LSST "metadata"), kept as a `PropertyList` (a header or mapping is
        converted; a `PropertyList` is used as is, not copied); empty when omitted.
    detector : Detector, optional
        Geometry of the detector the pixels come from.
    info : ExposureInfo, optional
        Exposure properties; an empty `ExposureInfo` when omitted.
    photo_calib : object, optional
        Photometric calibration attachment (a float zero point or a JSON-able dict).
    transmission_curve : object, optional
        Transmission curve attachment (JSON-able, e.g. ``{"wavelength": [...], "throughput": [...]}``).
    """

    def __init__(
        self,
        masked_image: MaskedImage | np.ndarray,
        *,
        metadata: Any = None,
        detector: Detector | None = None,
        info: ExposureInfo | None = None,
        photo_calib: Any = None,
        transmission_curve: Any = None,
    ) -> None:
        if not isinstance(masked_image, MaskedImage):
            masked_image = MaskedImage(masked_image)
        self.masked_image = masked_image
        self.metadata = metadata  # type: ignore[assignment]  # the setter converts
        self.detector = detector
        self.info = ExposureInfo() if info is None else info
        self.photo_calib = photo_calib
        self.transmission_curve = transmission_curve

    @property
    def metadata(self) -> PropertyList:
        """The header keywords (LSST "metadata"), a `PropertyList`."""
        return self._metadata

    @metadata.setter
    def metadata(self, value: Any) -> None:
        self._metadata = value if isinstance(value, PropertyList) else PropertyList(value)

    @property
    def image(self) -> np.ndarray:
        """The image plane, ``(ny, nx)``."""
        return self.masked_image.image

    @image.setter
    def image(self, value: Any) -> None:
        self.masked_image.image = value

    @property
    def mask(self) -> np.ndarray:
        """The mask plane, ``(ny, nx)`` int32."""
        return self.masked_image.mask

    @mask.setter
    def mask(self, value: Any) -> None:
        self.masked_image.mask = value

    @property
    def variance(self) -> np.ndarray:
        """The variance plane, ``(ny, nx)`` float32, ADU²."""
        return self.masked_image.variance

    @variance.setter
    def variance(self, value: Any) -> None:
        self.masked_image.variance = value

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return self.masked_image.shape

    @property
    def xy0(self) -> tuple[int, int]:
        """Origin ``(x0, y0)`` in the parent image."""
        return self.masked_image.xy0

    @property
    def bbox(self) -> Box:
        """Box of this exposure in parent coordinates."""
        return self.masked_image.bbox

    def copy(self) -> Exposure:
        """Deep copy (pixels, header, info); the detector is immutable and shared."""
        return Exposure(
            self.masked_image.copy(),
            metadata=self.metadata.copy(),
            detector=self.detector,
            info=_copy.deepcopy(self.info),
            photo_calib=_copy.deepcopy(self.photo_calib),
            transmission_curve=_copy.deepcopy(self.transmission_curve),
        )

    def subexposure(self, box: Box) -> Exposure:
        """Return a view on ``box`` (parent coordinates); header and info are shared."""
        return Exposure(
            self.masked_image.subimage(box),
            metadata=self.metadata,
            detector=self.detector,
            info=self.info,
            photo_calib=self.photo_calib,
            transmission_curve=self.transmission_curve,
        )

    def __repr__(self) -> str:
        det = None if self.detector is None else self.detector.name
        return f"Exposure(shape={self.shape}, dtype={self.image.dtype}, detector={det!r}, id={self.info.id})"
