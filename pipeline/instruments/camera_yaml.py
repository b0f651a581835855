"""The camera description YAML: pydantic models, validation with readable errors, and loading.

A camera description is one YAML file per instrument (see ``CAMERA_FORMAT.md`` next to this
module for the format and a complete example). `load_camera_description` validates it and
returns a `CameraDescription` holding the `~pipeline.image.Camera` and the header-translation
specification. Errors name the file, the detector, the amplifier and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.image.geometry import Amplifier, Box, Camera, Detector

__all__ = [
    "CameraDescriptionError",
    "PropertyRule",
    "ConditionalRule",
    "TranslationSpec",
    "AmplifierModel",
    "DetectorModel",
    "CameraModel",
    "CameraDescription",
    "load_camera_description",
    "parse_camera_description",
    "PROPERTY_NAMES",
]

#: Exposure properties a camera description can translate from headers.
PROPERTY_NAMES = (
    "exposure_id",
    "obs_id",
    "exposure_time",
    "dark_time",
    "observation_type",
    "physical_filter",
    "begin",
    "end",
    "day_obs",
    "detector",
    "science_program",
    "target_name",
    "observation_reason",
    "group",
)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CameraDescriptionError(ValueError):
    """A camera description YAML is invalid; the message names file, detector and field."""


def _coerce_box(value: Any) -> Box:
    try:
        return Box.coerce(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{exc}; give a box as [x0, y0, nx, ny] (0-indexed, half-open) or a FITS section '[x1:x2,y1:y2]'"
        ) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, populate_by_name=True)


class PropertyRule(_Strict):
    """How one exposure property is read from a header.

    The first present keyword of ``keyword`` wins (or ``format`` builds a string from several
    keywords); ``transform`` converts it; ``value_map`` renames values (case-insensitive);
    ``default`` is used when no keyword is present; ``fallback`` copies another property.
    """

    keyword: str | list[str] | None = Field(None, description="Header keyword, or keywords tried in order.")
    format: str | None = Field(
        None,
        description="Format string over header keywords and translated properties: '{FILTER}~{GRISM}'.",
    )
    transform: Literal[
        "none", "datetime_digits", "strip_fits_suffix", "sanitize", "lower", "upper", "int", "detector_name"
    ] = Field("none", description="Conversion applied to the raw value.")
    value_map: dict[str, Any] = Field(default_factory=dict, description="Raw value → translated value.")
    default: Any = Field(
        None, description="Value when no keyword is present (None: the property is required)."
    )
    fallback: str | None = Field(
        None, description="Use this other property's value when no keyword is present."
    )
    time_format: Literal["isot", "fits", "mjd", "unix"] = Field(
        "isot", description="For times: value format."
    )
    time_scale: Literal["utc", "tai", "tt"] = Field("utc", description="For times: value time scale.")

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any) -> Any:
        if isinstance(data, (str, list)):
            return {"keyword": data}
        return data


class ConditionalRule(_Strict):
    """A conditional rule: when all ``if`` conditions hold, ``set`` the properties.

    Condition keys are property names or ``header:KEYWORD``; a value matches
    case-insensitively, a list means any of.
    """

    if_: dict[str, Any] = Field(alias="if", description="Conditions (all must hold).")
    set: dict[str, Any] = Field(description="Properties to set when the conditions hold.")

    @field_validator("set")
    @classmethod
    def _known_properties(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key not in PROPERTY_NAMES:
                raise ValueError(f"rule sets unknown property {key!r}; properties: {list(PROPERTY_NAMES)}")
        return value


class TranslationSpec(_Strict):
    """Header translation: one `PropertyRule` per exposure property, plus rules and overrides."""

    exposure_id: PropertyRule
    obs_id: PropertyRule | None = None
    exposure_time: PropertyRule
    dark_time: PropertyRule | None = None
    observation_type: PropertyRule
    physical_filter: PropertyRule | None = None
    begin: PropertyRule
    end: PropertyRule | None = None
    day_obs: PropertyRule | None = None
    detector: PropertyRule | None = None
    science_program: PropertyRule | None = None
    target_name: PropertyRule | None = None
    observation_reason: PropertyRule | None = None
    group: PropertyRule | None = None
    rules: list[ConditionalRule] = Field(default_factory=list)
    day_obs_offset_hours: float = Field(
        -12.0, description="day_obs = UTC date of (begin + offset); -12 h makes a night one day_obs."
    )
    amp_overrides: dict[str, dict[str, str | list[str]]] = Field(
        default_factory=dict,
        description="Per-file amp values from the detector's header: {amp: {gain: KEY, read_noise: KEY}}.",
    )
    band_map: dict[str, str] = Field(default_factory=dict, description="physical_filter → band.")


_AMP_FIELDS = {
    "name",
    "gain",
    "read_noise",
    "saturation",
    "suspect_level",
    "readout_corner",
    "bbox",
    "raw_bbox",
    "raw_data_bbox",
    "raw_serial_overscan_bbox",
    "raw_serial_prescan_bbox",
    "raw_parallel_overscan_bbox",
    "raw_flip_x",
    "raw_flip_y",
    "linearity_type",
    "linearity_coeffs",
    "linearity_threshold",
    "linearity_maximum",
}


class AmplifierModel(_Strict):
    """One amplifier in the YAML (fields as `pipeline.image.Amplifier`)."""

    name: str
    gain: float = Field(gt=0, description="e-/ADU")
    read_noise: float = Field(ge=0, description="e-")
    saturation: float = Field(65535.0, gt=0, description="ADU")
    suspect_level: float | None = Field(None, description="ADU; null = none")
    readout_corner: Literal["LL", "LR", "UL", "UR"] = "LL"
    bbox: Box
    raw_bbox: Box
    raw_data_bbox: Box
    raw_serial_overscan_bbox: Box = Box(0, 0, 0, 0)
    raw_serial_prescan_bbox: Box = Box(0, 0, 0, 0)
    raw_parallel_overscan_bbox: Box = Box(0, 0, 0, 0)
    raw_flip_x: bool = False
    raw_flip_y: bool = False
    linearity_type: str = "None"
    linearity_coeffs: list[float] = Field(default_factory=list)
    linearity_threshold: float = 0.0
    linearity_maximum: float | None = None

    @field_validator(
        "bbox",
        "raw_bbox",
        "raw_data_bbox",
        "raw_serial_overscan_bbox",
        "raw_serial_prescan_bbox",
        "raw_parallel_overscan_bbox",
        mode="before",
    )
    @classmethod
    def _box(cls, value: Any) -> Box:
        return _coerce_box(value)

    def to_amplifier(self) -> Amplifier:
        """Build the `Amplifier`."""
        data = self.model_dump()
        data["suspect_level"] = float("nan") if data["suspect_level"] is None else data["suspect_level"]
        data["linearity_maximum"] = (
            float("nan") if data["linearity_maximum"] is None else data["linearity_maximum"]
        )
        data["linearity_coeffs"] = tuple(data["linearity_coeffs"])
        for key in (
            "bbox",
            "raw_bbox",
            "raw_data_bbox",
            "raw_serial_overscan_bbox",
            "raw_serial_prescan_bbox",
            "raw_parallel_overscan_bbox",
        ):
            data[key] = getattr(self, key)
        return Amplifier(**data)


class DetectorModel(_Strict):
    """One detector in the YAML."""

    id: int = Field(ge=0)
    name: str
    purpose: str = "SCIENCE"
    hdu: int | str | None = Field(
        None, description="HDU index or EXTNAME of the raw pixels; null = first image HDU"
    )
    raw_shape: tuple[int, int] = Field(description="(ny, nx) of the raw detector image")
    bbox: Box | None = Field(None, description="assembled detector box; default: union of amplifier boxes")
    crosstalk: list[list[float]] | None = Field(None, description="(n_amp, n_amp), [source][target]")
    amplifiers: list[AmplifierModel] = Field(min_length=1)

    @field_validator("bbox", mode="before")
    @classmethod
    def _box(cls, value: Any) -> Box | None:
        return None if value is None else _coerce_box(value)

    @model_validator(mode="after")
    def _check(self) -> DetectorModel:
        ny, nx = self.raw_shape
        raw = Box(0, 0, nx, ny)
        names = [a.name for a in self.amplifiers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"amplifier names repeat: {dup}")
        union = Box(0, 0, 0, 0)
        for amp in self.amplifiers:
            union = union.union(amp.bbox)
        det_box = self.bbox if self.bbox is not None else union
        for amp in self.amplifiers:
            for key in (
                "raw_bbox",
                "raw_data_bbox",
                "raw_serial_overscan_bbox",
                "raw_serial_prescan_bbox",
                "raw_parallel_overscan_bbox",
            ):
                box = getattr(amp, key)
                if not raw.contains(box):
                    raise ValueError(
                        f"amplifier {amp.name!r} field {key!r}: {box} is outside the raw image {raw} "
                        f"(raw_shape {list(self.raw_shape)} is (ny, nx))"
                    )
            if amp.raw_data_bbox.shape != amp.bbox.shape:
                raise ValueError(
                    f"amplifier {amp.name!r}: raw_data_bbox {amp.raw_data_bbox} and bbox {amp.bbox} "
                    "differ in size"
                )
            if not det_box.contains(amp.bbox):
                raise ValueError(
                    f"amplifier {amp.name!r} field 'bbox': {amp.bbox} is outside the detector {det_box}"
                )
        if self.crosstalk is not None:
            n = len(self.amplifiers)
            if len(self.crosstalk) != n or any(len(row) != n for row in self.crosstalk):
                raise ValueError(
                    f"field 'crosstalk' must be a {n}x{n} matrix (one row and column per amplifier)"
                )
        return self

    def to_detector(self) -> Detector:
        """Build the `Detector`."""
        amps = tuple(a.to_amplifier() for a in self.amplifiers)
        bbox = self.bbox
        if bbox is None:
            bbox = Box(0, 0, 0, 0)
            for a in amps:
                bbox = bbox.union(a.bbox)
        return Detector(
            id=self.id,
            name=self.name,
            purpose=self.purpose,
            bbox=bbox,
            amplifiers=amps,
            crosstalk=self.crosstalk,
            hdu=self.hdu,
            raw_shape=self.raw_shape,
        )


class FilterModel(_Strict):
    """A physical filter and its band."""

    physical_filter: str
    band: str


class CameraModel(_Strict):
    """The whole camera description file."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")
    description: str = ""
    class_name: str | None = Field(None, description="Dotted path of a Translator subclass for quirks.")
    match: dict[str, str | list[str]] = Field(
        min_length=1,
        description="Header keyword → value(s) identifying this instrument's raws (ingest needs one).",
    )
    filters: list[FilterModel] = Field(default_factory=list)
    amplifier_defaults: dict[str, Any] = Field(default_factory=dict)
    templates: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form YAML anchors (&name) reused with <<: *name; not read otherwise.",
    )
    detectors: list[DetectorModel] = Field(min_length=1)
    translation: TranslationSpec

    @model_validator(mode="after")
    def _check(self) -> CameraModel:
        ids = [d.id for d in self.detectors]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"detector ids repeat: {dup}")
        names = [d.name for d in self.detectors]
        dupn = sorted({n for n in names if names.count(n) > 1})
        if dupn:
            raise ValueError(f"detector names repeat: {dupn}")
        return self


class CameraDescription:
    """A validated camera description.

    Attributes
    ----------
    name : str
        Instrument name.
    model : CameraModel
        The validated YAML content.
    camera : pipeline.image.Camera
        The detectors.
    translation : TranslationSpec
        Header translation specification.
    text : str
        The YAML text (stored in the repository's instrument record).
    source : str
        Where it was read from (file path or ``"<repository>"``).
    """

    def __init__(self, model: CameraModel, text: str, source: str) -> None:
        self.model = model
        self.name = model.name
        self.text = text
        self.source = source
        self.camera = Camera(model.name, [d.to_detector() for d in model.detectors])
        self.translation = model.translation

    @property
    def filters(self) -> list[tuple[str, str]]:
        """``(physical_filter, band)`` pairs declared in the YAML."""
        return [(f.physical_filter, f.band) for f in self.model.filters]


def _describe_location(raw: dict[str, Any], loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    i = 0
    if len(loc) >= 2 and loc[0] == "detectors" and isinstance(loc[1], int):
        dets = raw.get("detectors") or []
        det = dets[loc[1]] if loc[1] < len(dets) and isinstance(dets[loc[1]], dict) else {}
        parts.append(f"detector {det.get('name', '?')!r} (id {det.get('id', '?')}, detectors[{loc[1]}])")
        i = 2
        if len(loc) >= 4 and loc[2] == "amplifiers" and isinstance(loc[3], int):
            amps = det.get("amplifiers") or []
            amp = amps[loc[3]] if loc[3] < len(amps) and isinstance(amps[loc[3]], dict) else {}
            parts.append(f"amplifier {amp.get('name', '?')!r} (amplifiers[{loc[3]}])")
            i = 4
    rest = [str(p) for p in loc[i:]]
    if rest:
        parts.append(f"field '{'.'.join(rest)}'")
    return ", ".join(parts) if parts else "top level"


def parse_camera_description(text: str, source: str = "<string>") -> CameraDescription:
    """Validate camera-description YAML text.

    Parameters
    ----------
    text : str
        The YAML.
    source : str
        Name used in error messages (the file path).

    Returns
    -------
    CameraDescription

    Raises
    ------
    CameraDescriptionError
        On YAML syntax errors or invalid content; the message names the file, the detector,
        the amplifier and the field, and what is expected.
    """
    try:
        raw = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a SafeLoader (libyaml when available)
    except yaml.YAMLError as exc:
        raise CameraDescriptionError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise CameraDescriptionError(
            f"{source}: a camera description must be a YAML mapping (name:, detectors:, ...)"
        )
    defaults = raw.get("amplifier_defaults") or {}
    if isinstance(defaults, dict) and isinstance(raw.get("detectors"), list):
        bad = sorted(set(defaults) - _AMP_FIELDS)
        if bad:
            raise CameraDescriptionError(f"{source}: amplifier_defaults has unknown fields {bad}")
        for det in raw["detectors"]:
            if isinstance(det, dict) and isinstance(det.get("amplifiers"), list):
                det["amplifiers"] = [
                    {**defaults, **amp} if isinstance(amp, dict) else amp for amp in det["amplifiers"]
                ]
    try:
        model = CameraModel.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors()[:10]:
            where = _describe_location(raw, tuple(err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {msg}")
        more = "" if exc.error_count() <= 10 else f"\n  ... and {exc.error_count() - 10} more"
        raise CameraDescriptionError(
            f"{source}: invalid camera description ({exc.error_count()} error(s)):\n"
            + "\n".join(lines)
            + more
        ) from None
    return CameraDescription(model, text, source)


def load_camera_description(path: str | os.PathLike[str]) -> CameraDescription:
    """Read and validate a camera-description YAML file.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    CameraDescriptionError
        If the content is invalid (see `parse_camera_description`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no camera description file {path}")
    return parse_camera_description(path.read_text(), str(path))
