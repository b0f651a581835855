"""Image model: geometry, `MaskedImage`, `Exposure` and their FITS I/O.

Geometry is `Box`, `Amplifier`, `Detector` and `Camera`; see docs/contracts.md §2. The
metadata of an exposure is a `PropertyList` (FITS cards only in `fits`).

The names are imported from their submodules on first use (PEP 562): a task module that names
`Exposure` or `Box` does not import `fits` (astropy.io.fits) with them, so building a quantum
graph (which imports the task classes) imports no astropy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from butler.utils import lazy_exports

if TYPE_CHECKING:
    from .exposure import DEFAULT_MASK_PLANES, MASK_PLANES, Exposure, ExposureInfo, MaskedImage
    from .fits import ExposureFormatter, read_exposure, write_exposure
    from .geometry import Amplifier, Box, Camera, Detector, ReadoutCorner
    from .metadata import PropertyList

_LAZY = {
    "DEFAULT_MASK_PLANES": ".exposure",
    "MASK_PLANES": ".exposure",
    "Exposure": ".exposure",
    "ExposureInfo": ".exposure",
    "MaskedImage": ".exposure",
    "ExposureFormatter": ".fits",
    "read_exposure": ".fits",
    "write_exposure": ".fits",
    "Amplifier": ".geometry",
    "Box": ".geometry",
    "Camera": ".geometry",
    "Detector": ".geometry",
    "ReadoutCorner": ".geometry",
    "PropertyList": ".metadata",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

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
