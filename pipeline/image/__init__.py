"""Image model: geometry, `MaskedImage`, `Exposure` and their FITS I/O.

Geometry is `Box`, `Amplifier`, `Detector` and `Camera`; see docs/contracts.md §2.
"""

from __future__ import annotations

from .exposure import DEFAULT_MASK_PLANES, MASK_PLANES, Exposure, ExposureInfo, MaskedImage
from .fits import ExposureFormatter, read_exposure, write_exposure
from .geometry import Amplifier, Box, Camera, Detector, ReadoutCorner

__all__ = [
    "Box",
    "Amplifier",
    "Detector",
    "Camera",
    "ReadoutCorner",
    "MaskedImage",
    "Exposure",
    "ExposureInfo",
    "MASK_PLANES",
    "DEFAULT_MASK_PLANES",
    "read_exposure",
    "write_exposure",
    "ExposureFormatter",
]
