"""Image model: geometry, `MaskedImage`, `Exposure` and their FITS I/O.

Geometry is `Box`, `Amplifier`, `Detector` and `Camera`; see docs/contracts.md §2. The
metadata of an exposure is a `PropertyList` (FITS cards only in `fits`).
"""

from __future__ import annotations

from .exposure import DEFAULT_MASK_PLANES, MASK_PLANES, Exposure, ExposureInfo, MaskedImage
from .fits import ExposureFormatter, read_exposure, write_exposure
from .geometry import Amplifier, Box, Camera, Detector, ReadoutCorner
from .metadata import PropertyList

__all__ = [
    "Box",
    "Amplifier",
    "Detector",
    "Camera",
    "ReadoutCorner",
    "MaskedImage",
    "Exposure",
    "ExposureInfo",
    "PropertyList",
    "MASK_PLANES",
    "DEFAULT_MASK_PLANES",
    "read_exposure",
    "write_exposure",
    "ExposureFormatter",
]
