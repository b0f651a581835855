"""Instruments: camera descriptions, header translation, raw ingest and reading, simulator.

See docs/contracts.md §3 and CAMERA_FORMAT.md.
"""

from __future__ import annotations

from .camera_yaml import (
    CameraDescription,
    CameraDescriptionError,
    load_camera_description,
    parse_camera_description,
)
from .headers import RawFileError, read_headers
from .instrument import BUILTIN_INSTRUMENTS, Instrument, UnknownInstrumentError, get_instrument
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


def __getattr__(name: str):  # lazy: ingest imports the butler
    if name in ("ingest_raws", "register_instrument", "IngestReport"):
        from . import ingest

        return getattr(ingest, name)
    if name == "read_raw":
        from .raw import read_raw

        return read_raw
    if name == "simulate_raws":
        from .simulate import simulate_raws

        return simulate_raws
    raise AttributeError(f"module 'pipeline.instruments' has no attribute {name!r}")
