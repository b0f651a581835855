"""Instruments: camera descriptions, header translation, raw ingest and reading, simulator.

See docs/contracts.md §3 and CAMERA_FORMAT.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .camera_yaml import (
        CameraDescription,
        CameraDescriptionError,
        load_camera_description,
        parse_camera_description,
    )
    from .headers import RawFileError, read_headers
    from .ingest import IngestReport, ingest_raws, register_instrument
    from .instrument import BUILTIN_INSTRUMENTS, Instrument, UnknownInstrumentError, get_instrument
    from .raw import read_raw
    from .simulate import simulate_raws
    from .translator import ObservationInfo, TranslationError, Translator

__all__ = [
    "BUILTIN_INSTRUMENTS",
    "CameraDescription",
    "CameraDescriptionError",
    "Instrument",
    "IngestReport",
    "ObservationInfo",
    "RawFileError",
    "TranslationError",
    "Translator",
    "UnknownInstrumentError",
    "get_instrument",
    "ingest_raws",
    "load_camera_description",
    "parse_camera_description",
    "read_headers",
    "read_raw",
    "register_instrument",
    "simulate_raws",
]


# Every name is imported on first use (PEP 562): importing the package, or its light
# `_shipped` module (the ``ccdflow.instruments`` entry point), does not load astropy.
_LAZY = {
    "BUILTIN_INSTRUMENTS": "instrument",
    "CameraDescription": "camera_yaml",
    "CameraDescriptionError": "camera_yaml",
    "Instrument": "instrument",
    "IngestReport": "ingest",
    "ObservationInfo": "translator",
    "RawFileError": "headers",
    "TranslationError": "translator",
    "Translator": "translator",
    "UnknownInstrumentError": "instrument",
    "get_instrument": "instrument",
    "ingest_raws": "ingest",
    "load_camera_description": "camera_yaml",
    "parse_camera_description": "camera_yaml",
    "read_headers": "headers",
    "read_raw": "raw",
    "register_instrument": "ingest",
    "simulate_raws": "simulate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline.instruments' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
