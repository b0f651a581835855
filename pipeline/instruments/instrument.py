"""`Instrument`: a camera description plus its header translator, and `get_instrument`."""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from astropy.io import fits

from pipeline.image.geometry import Camera, Detector

from .camera_yaml import (
    CameraDescription,
    CameraDescriptionError,
    load_camera_description,
    parse_camera_description,
)
from .headers import MergedHeader, read_headers
from .translator import ObservationInfo, TranslationError, Translator

__all__ = [
    "Instrument",
    "get_instrument",
    "BUILTIN_INSTRUMENTS",
    "UnknownInstrumentError",
    "instrument_for_headers",
]

_HERE = Path(__file__).resolve().parent

#: Names of the camera descriptions shipped with ccdflow.
BUILTIN_INSTRUMENTS = ("kast_blue", "efosc2", "megacam", "testcam")


class UnknownInstrumentError(ValueError, LookupError):
    """No camera description of that name (built-in, file or repository)."""


class Instrument:
    """An instrument: camera geometry, filters and header translation.

    Parameters
    ----------
    description : CameraDescription
        The validated camera description.

    Attributes
    ----------
    name : str
    camera : pipeline.image.Camera
    filters : list of (str, str)
        ``(physical_filter, band)`` pairs.
    translator : Translator
        The header translator (the YAML's ``class_name`` subclass when given).
    """

    def __init__(self, description: CameraDescription) -> None:
        self.description = description
        self.name = description.name
        self.camera: Camera = description.camera
        self.filters = description.filters
        cls: type[Translator] = Translator
        if description.model.class_name:
            cls = _import_class(description.model.class_name, description.source)
        self.translator = cls(self.name, description.translation, self.camera, self.filters)

    @property
    def class_name(self) -> str:
        """Dotted path of the translator class ('' for the plain YAML translator)."""
        return self.description.model.class_name or ""

    @property
    def camera_yaml(self) -> str:
        """The camera description text (stored in the repository's instrument record)."""
        return self.description.text

    def matches(self, header: fits.Header) -> bool:
        """Return True if a primary header belongs to this instrument (YAML ``match:`` keywords)."""
        match = self.description.model.match
        if not match:
            return False
        for key, expected in match.items():
            value = header.get(key)
            if value is None:
                return False
            options = expected if isinstance(expected, list) else [expected]
            if str(value).strip().lower() not in {str(o).strip().lower() for o in options}:
                return False
        return True

    def translate(
        self,
        header: fits.Header,
        hdu_index: int | None = None,
        *,
        detector: int | None = None,
        source: str = "<header>",
    ) -> ObservationInfo:
        """Translate a header; see `Translator.translate`."""
        return self.translator.translate(header, hdu_index, detector=detector, source=source)

    def translate_file_headers(
        self, headers: Sequence[fits.Header], source: str = "<file>"
    ) -> list[ObservationInfo]:
        """One `ObservationInfo` per detector held by a file (headers of all its HDUs).

        Raises
        ------
        TranslationError
            If the headers cannot be translated.
        """
        out = []
        for det_id, hdu in self.translator.detectors_in_headers(headers, source):
            merged = MergedHeader(headers[0], headers[hdu] if hdu else None)
            out.append(self.translate(merged, hdu, detector=det_id, source=source))
        return out

    def detectors_in_file(self, path: str | os.PathLike[str]) -> list[tuple[int, int]]:
        """``[(detector_id, hdu_index), ...]`` for a raw file (reads headers only)."""
        return self.translator.detectors_in_headers(read_headers(path), str(path))

    def detector_for_raw(self, detector_id: int, header: fits.Header) -> Detector:
        """Return the detector with per-file header overrides (e.g. MegaCam GAINA/GAINB) applied."""
        det = self.camera[detector_id]
        overrides = self.translator.amp_overrides(header, det)
        return det.with_amp_overrides(overrides) if overrides else det

    def config_overrides(self, task_label: str) -> dict[str, Any]:
        """Task config overrides from ``pipeline/instruments/<name>/<task_label>.yaml`` (empty if none)."""
        path = _HERE / self.name / f"{task_label}.yaml"
        if not path.is_file():
            return {}
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise CameraDescriptionError(f"{path}: config overrides must be a mapping of field: value")
        return data

    def __repr__(self) -> str:
        return f"Instrument({self.name!r}, {len(self.camera)} detectors)"


def _import_class(dotted: str, source: str) -> type[Translator]:
    module_name, _, attr = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CameraDescriptionError(
            f"{source}: class_name {dotted!r} cannot be imported ({exc}); give the dotted path of a "
            "pipeline.instruments.translator.Translator subclass, or null"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Translator)):
        raise CameraDescriptionError(f"{source}: class_name {dotted!r} is not a Translator subclass")
    return cls


@functools.lru_cache(maxsize=32)
def _builtin(name: str) -> Instrument:
    return Instrument(load_camera_description(_HERE / f"{name}.yaml"))


@functools.lru_cache(maxsize=64)
def _from_text(text: str, source: str) -> Instrument:
    return Instrument(parse_camera_description(text, source))


def get_instrument(
    name_or_path: str | os.PathLike[str], *, repo_root: str | os.PathLike[str] | None = None
) -> Instrument:
    """Return an instrument by built-in name, camera-description path, or repository name.

    Parameters
    ----------
    name_or_path : str or path-like
        ``kast_blue``, ``efosc2``, ``megacam``, ``testcam``; a path to a camera YAML; or the name
        of an instrument registered in the repository at ``repo_root``.
    repo_root : str or path-like, optional
        A butler repository; instruments registered there are found by name (their camera YAML
        is stored in the instrument record and mirrored in ``REPO/instruments/<name>.yaml``).

    Returns
    -------
    Instrument

    Raises
    ------
    UnknownInstrumentError
        If nothing of that name exists (the message lists the built-in names).
    CameraDescriptionError
        If the camera description is invalid.
    """
    text = os.fspath(name_or_path)
    if repo_root is not None:
        mirrored = Path(repo_root) / "instruments" / f"{text}.yaml"
        if mirrored.is_file():
            return _from_text(mirrored.read_text(), str(mirrored))
    if text in BUILTIN_INSTRUMENTS:
        return _builtin(text)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UnknownInstrumentError(f"camera description file {path} does not exist")
        return _from_text(path.read_text(), str(path))
    if repo_root is not None:
        record_text = _camera_yaml_from_registry(repo_root, text)
        if record_text:
            return _from_text(record_text, f"{repo_root} instrument record {text!r}")
    raise UnknownInstrumentError(
        f"unknown instrument {text!r}: not a built-in ({', '.join(BUILTIN_INSTRUMENTS)}), not a camera YAML "
        f"file{'' if repo_root is None else ', and not registered in ' + os.fspath(repo_root)}"
    )


def _camera_yaml_from_registry(repo_root: str | os.PathLike[str], name: str) -> str | None:
    try:
        from butler import Butler

        butler = Butler(os.fspath(repo_root))
        records = butler.query_dimension_records("instrument", where=f"instrument = '{name}'")
    except Exception:  # noqa: BLE001 - repository absent or unreadable: treated as "not registered"
        return None
    for rec in records:
        text = rec.get("camera_yaml")
        if text:
            return str(text)
    return None


def instrument_for_headers(
    header: fits.Header, candidates: Sequence[Instrument] | Mapping[str, Instrument]
) -> Instrument | None:
    """Return the first candidate whose ``match:`` keywords fit the primary header, or None."""
    values = candidates.values() if isinstance(candidates, Mapping) else candidates
    for inst in values:
        if inst.matches(header):
            return inst
    return None


# re-exported for convenience
__all__ += ["TranslationError"]
