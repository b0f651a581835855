"""Header translation: FITS headers → `ObservationInfo` (exposure properties).

`Translator` is driven entirely by the ``translation:`` section of a camera description
(`~pipeline.instruments.camera_yaml.TranslationSpec`). An instrument with quirks subclasses it
and names the subclass in the YAML's ``class_name``; the hooks are `Translator.check_headers`,
`Translator.fix_properties` and `Translator.amp_overrides`.

Translation order for one header: every property's `PropertyRule` (keyword with fallbacks or
format string → transform → value map → default/fallback), observation-type normalisation to
LSST words, then the ``rules:`` in order, then derived values (dark time from exposure time,
end from begin + exposure time, day_obs from begin).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from astropy.io import fits
from astropy.time import Time

from pipeline.image.exposure import ExposureInfo
from pipeline.image.geometry import Camera, Detector

from .camera_yaml import PropertyRule, TranslationSpec

__all__ = ["ObservationInfo", "TranslationError", "Translator", "OBSERVATION_TYPE_WORDS"]

#: Default normalisation of observation-type header values to LSST words (after the YAML value_map).
OBSERVATION_TYPE_WORDS: dict[str, str] = {
    "zero": "bias",
    "bias": "bias",
    "dark": "dark",
    "flat": "flat",
    "flatfield": "flat",
    "domeflat": "flat",
    "dome flat": "flat",
    "skyflat": "flat",
    "sky,flat": "flat",
    "twilight": "flat",
    "lampflat": "flat",
    "object": "science",
    "science": "science",
    "sci": "science",
    "std": "science",
    "standard": "science",
    "arc": "arc",
    "arcs": "arc",
    "comp": "arc",
    "comparison": "arc",
    "wave": "arc",
    "lamp": "arc",
    "focus": "focus",
    "led": "flat",
    "fringe": "science",
}


class TranslationError(ValueError):
    """A header cannot be translated; the message names the file, property and keywords."""


@dataclass
class ObservationInfo:
    """Translated exposure properties of one raw (one detector of one file).

    Attributes
    ----------
    instrument : str
    exposure_id : int
    obs_id : str
    exposure_time, dark_time : float
        Seconds.
    observation_type : str
        LSST word: bias, dark, flat, science, arc, focus...
    physical_filter, band : str
    begin_ns, end_ns : int
        TAI nanoseconds since 1970-01-01T00:00:00 TAI (the registry encoding); the properties
        ``begin`` and ``end`` give TAI `~astropy.time.Time` objects.
    day_obs : int
        ``YYYYMMDD``.
    detector : int or None
        Detector id (None before the detector is known).
    science_program, target_name, observation_reason, group : str or None
    hdu : int or None
        HDU index of the detector's pixels in the file.
    """

    instrument: str
    exposure_id: int
    obs_id: str
    exposure_time: float
    dark_time: float
    observation_type: str
    physical_filter: str
    band: str
    begin_ns: int
    end_ns: int
    day_obs: int
    detector: int | None = None
    science_program: str | None = None
    target_name: str | None = None
    observation_reason: str | None = None
    group: str | None = None
    hdu: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def begin(self) -> Time:
        """Exposure start, TAI `~astropy.time.Time` (built from `begin_ns` on demand)."""
        return _ns_to_time(self.begin_ns)

    @property
    def end(self) -> Time:
        """Exposure end, TAI `~astropy.time.Time` (built from `end_ns` on demand)."""
        return _ns_to_time(self.end_ns)

    def exposure_record(self) -> dict[str, Any]:
        """Return the ``exposure`` dimension record (dict) for the registry."""
        from butler import Timespan  # local: pipeline.instruments may be used without a butler

        return {
            "instrument": self.instrument,
            "id": self.exposure_id,
            "obs_id": self.obs_id,
            "exposure_time": self.exposure_time,
            "dark_time": self.dark_time,
            "observation_type": self.observation_type,
            "observation_reason": self.observation_reason,
            "target_name": self.target_name,
            "science_program": self.science_program,
            "group": self.group,
            "physical_filter": self.physical_filter,
            "day_obs": self.day_obs,
            "timespan": Timespan.from_ns(self.begin_ns, self.end_ns),
        }

    def to_exposure_info(self) -> ExposureInfo:
        """Return the `~pipeline.image.ExposureInfo` of an Exposure read from this raw."""
        return ExposureInfo(
            id=self.exposure_id,
            obs_id=self.obs_id,
            instrument=self.instrument,
            exposure_time=self.exposure_time,
            dark_time=self.dark_time,
            observation_type=self.observation_type,
            physical_filter=self.physical_filter,
            begin=self.begin,
            end=self.end,
            day_obs=self.day_obs,
            detector=self.detector,
            extra={
                "band": self.band,
                "science_program": self.science_program,
                "target_name": self.target_name,
                "observation_reason": self.observation_reason,
                "group": self.group,
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (times as TAI ISOT strings)."""
        out = asdict(self)
        out["begin"] = self.begin.isot
        out["end"] = self.end.isot
        return out


_MISSING = object()
_SANITIZE_RE = re.compile(r"[\s/\\]+")
_ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


class _HeaderFormatMap(Mapping[str, Any]):
    """Mapping used by ``format`` strings: translated properties first, then header keywords."""

    def __init__(self, header: fits.Header, props: Mapping[str, Any]) -> None:
        self.header = header
        self.props = props

    def __getitem__(self, key: str) -> Any:
        if key in self.props and self.props[key] is not None:
            return self.props[key]
        if key in self.header:
            value = self.header[key]
            return value.strip() if isinstance(value, str) else value
        raise KeyError(key)

    def __iter__(self):  # pragma: no cover - not used by str.format_map
        return iter(self.header)

    def __len__(self) -> int:  # pragma: no cover
        return len(self.header)


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower()
    return value


def _matches(actual: Any, expected: Any) -> bool:
    if isinstance(expected, list):
        return any(_matches(actual, e) for e in expected)
    if actual is None:
        return expected is None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return bool(actual) == bool(expected)
    if isinstance(expected, (int, float)):
        try:
            return math.isclose(float(actual), float(expected), abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return _norm(str(actual)) == _norm(str(expected))


class Translator:
    """Translate the headers of one instrument's raws.

    Parameters
    ----------
    instrument : str
        Instrument name (written into every `ObservationInfo`).
    spec : TranslationSpec
        The YAML translation section.
    camera : pipeline.image.Camera
        The camera (used to resolve detector names and HDUs).
    filters : sequence of (str, str)
        Declared ``(physical_filter, band)`` pairs (bands of undeclared filters come from
        ``spec.band_map`` or the filter name itself).
    """

    def __init__(
        self, instrument: str, spec: TranslationSpec, camera: Camera, filters: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.instrument = instrument
        self.spec = spec
        self.camera = camera
        self.bands = dict(filters)
        self.bands.update(spec.band_map)

    # -- hooks for subclasses --------------------------------------------------------------------
    def check_headers(self, headers: Sequence[fits.Header], source: str) -> None:
        """Raise `TranslationError` if a file's headers cannot be handled (default: accept)."""

    def fix_properties(self, props: dict[str, Any], header: fits.Header, source: str) -> None:
        """Adjust translated properties in place before the YAML rules run (default: nothing)."""

    def amp_overrides(self, header: fits.Header, detector: Detector) -> dict[str, dict[str, float]]:
        """Per-amplifier values read from this detector's header (``translation.amp_overrides``).

        Returns
        -------
        dict
            ``{amp_name: {field: value}}`` for `Detector.with_amp_overrides`; keywords absent
            from the header are skipped.
        """
        out: dict[str, dict[str, float]] = {}
        for amp_name, fields_ in self.spec.amp_overrides.items():
            if amp_name not in detector._by_name:
                continue
            values: dict[str, float] = {}
            for fname, keywords in fields_.items():
                for kw in [keywords] if isinstance(keywords, str) else keywords:
                    if kw in header:
                        try:
                            values[fname] = float(header[kw])
                        except (TypeError, ValueError):
                            pass
                        break
            if values:
                out[amp_name] = values
        return out

    # -- detectors in a file -----------------------------------------------------------------------
    def detectors_in_headers(
        self, headers: Sequence[fits.Header], source: str = "<header>"
    ) -> list[tuple[int, int]]:
        """Return ``[(detector_id, hdu_index), ...]`` for the detectors whose pixels a file holds.

        Raises
        ------
        TranslationError
            If a multi-detector file's HDUs cannot be matched to detectors.
        """
        self.check_headers(headers, source)
        dets = list(self.camera)
        if len(dets) == 1:
            det = dets[0]
            hdu = self._resolve_hdu(det, headers, source)
            return [(det.id, hdu)]
        out: list[tuple[int, int]] = []
        for index, hdr in enumerate(headers):
            if not _has_image(hdr):
                continue
            det_id = self._detector_from_header(hdr, index, source)
            if det_id is not None:
                out.append((det_id, index))
        if not out:
            raise TranslationError(
                f"{source}: no HDU matches a detector of {self.instrument} "
                f"({len(headers)} HDUs; expected extensions named like {dets[0].name!r})"
            )
        return out

    def _resolve_hdu(self, det: Detector, headers: Sequence[fits.Header], source: str) -> int:
        if isinstance(det.hdu, int) and det.hdu < len(headers) and _has_image(headers[det.hdu]):
            return det.hdu
        # (a tile-compressed copy of a single-HDU raw has its image in HDU 1: fall through)
        if isinstance(det.hdu, str):
            for i, h in enumerate(headers):
                if str(h.get("EXTNAME", "")).strip() == det.hdu:
                    return i
            raise TranslationError(f"{source}: no HDU with EXTNAME {det.hdu!r} for detector {det.name}")
        for i, h in enumerate(headers):
            if _has_image(h):
                return i
        raise TranslationError(f"{source}: no image HDU in the file")

    def _detector_from_header(self, hdr: fits.Header, index: int, source: str) -> int | None:
        rule = self.spec.detector
        if rule is not None:
            try:
                value = self._read_property("detector", rule, hdr, {}, source, required=False)
            except TranslationError:
                value = None
            if value is not None:
                if isinstance(value, str):
                    if value in self.camera:
                        return self.camera[value].id
                    try:
                        value = int(value)
                    except ValueError:
                        value = None
                if isinstance(value, int) and value in self.camera.detectors:
                    return value
        for det in self.camera:
            if det.hdu == index or (
                isinstance(det.hdu, str) and str(hdr.get("EXTNAME", "")).strip() == det.hdu
            ):
                return det.id
        return None

    # -- translation -----------------------------------------------------------------------------
    def translate(
        self,
        header: fits.Header,
        hdu_index: int | None = None,
        *,
        detector: int | None = None,
        source: str = "<header>",
    ) -> ObservationInfo:
        """Translate one (merged primary + extension) header.

        Parameters
        ----------
        header : astropy.io.fits.Header
            The header; for multi-extension raws the primary header updated with the
            detector's extension header (`~pipeline.instruments.headers.merge_headers`).
        hdu_index : int, optional
            HDU the header comes from (used to find the detector when no keyword names it).
        detector : int, optional
            Detector id if already known.
        source : str
            File name for error messages.

        Returns
        -------
        ObservationInfo

        Raises
        ------
        TranslationError
            If a required property's keywords are all missing or a value cannot be converted;
            the message names the file, the property and the keywords tried.
        """
        spec = self.spec
        props: dict[str, Any] = {}
        order = [
            "exposure_time",
            "observation_type",
            "begin",
            "exposure_id",
            "obs_id",
            "dark_time",
            "physical_filter",
            "end",
            "day_obs",
            "science_program",
            "target_name",
            "observation_reason",
            "group",
        ]
        required = {"exposure_time", "observation_type", "begin", "exposure_id"}
        for name in order:
            rule: PropertyRule | None = getattr(spec, name)
            if rule is None:
                props[name] = None
                continue
            props[name] = self._read_property(name, rule, header, props, source, required=name in required)
        if props["observation_type"] is not None:
            word = str(props["observation_type"]).strip()
            props["observation_type"] = OBSERVATION_TYPE_WORDS.get(word.lower(), word.lower())
        self.fix_properties(props, header, source)
        for rule in spec.rules:
            if all(self._condition(key, expected, props, header) for key, expected in rule.if_.items()):
                props.update(rule.set)
        # derived values
        begin: _Instant = props["begin"]
        exptime = float(props["exposure_time"])
        if props["dark_time"] is None:
            props["dark_time"] = exptime
        end: _Instant | None = props["end"]
        if end is None or end.ns < begin.ns:
            end = _Instant(begin.ns + round(max(exptime, 0.0) * 1e9), None)
        if props["day_obs"] is None:
            local = begin.utc + _dt.timedelta(hours=spec.day_obs_offset_hours)
            props["day_obs"] = int(local.strftime("%Y%m%d"))
        if props["obs_id"] is None:
            props["obs_id"] = str(props["exposure_id"])
        physical_filter = props["physical_filter"] or "unknown"
        if detector is None and hdu_index is not None and spec.detector is not None:
            detector = self._detector_from_header(header, hdu_index, source)
        if detector is None and len(self.camera) == 1:
            detector = next(iter(self.camera)).id
        try:
            exposure_id = int(props["exposure_id"])
        except (TypeError, ValueError):
            raise TranslationError(
                f"{source}: exposure_id {props['exposure_id']!r} is not an integer; fix "
                f"translation.exposure_id in the {self.instrument} camera description"
            ) from None
        return ObservationInfo(
            instrument=self.instrument,
            exposure_id=exposure_id,
            obs_id=str(props["obs_id"]),
            exposure_time=exptime,
            dark_time=float(props["dark_time"]),
            observation_type=str(props["observation_type"]),
            physical_filter=str(physical_filter),
            band=self.bands.get(str(physical_filter), str(physical_filter)),
            begin_ns=begin.ns,
            end_ns=end.ns,
            day_obs=int(props["day_obs"]),
            detector=detector,
            science_program=_opt_str(props["science_program"]),
            target_name=_opt_str(props["target_name"]),
            observation_reason=_opt_str(props["observation_reason"]),
            group=_opt_str(props["group"]),
            hdu=hdu_index,
        )

    def _condition(self, key: str, expected: Any, props: Mapping[str, Any], header: fits.Header) -> bool:
        if key.startswith("header:"):
            kw = key[len("header:") :]
            return _matches(header.get(kw), expected)
        return _matches(props.get(key), expected)

    def _read_property(
        self,
        name: str,
        rule: PropertyRule,
        header: fits.Header,
        props: Mapping[str, Any],
        source: str,
        *,
        required: bool,
    ) -> Any:
        value: Any = _MISSING
        keywords: list[str] = []
        if rule.format is not None:
            try:
                value = rule.format.format_map(_HeaderFormatMap(header, props))
            except KeyError as exc:
                keywords = [str(exc.args[0])]
                value = _MISSING
        elif rule.keyword is not None:
            keywords = [rule.keyword] if isinstance(rule.keyword, str) else list(rule.keyword)
            for kw in keywords:
                if kw in header:
                    candidate = header[kw]
                    if candidate is None or (isinstance(candidate, str) and not candidate.strip()):
                        continue
                    value = candidate
                    break
        if value is _MISSING:
            if rule.fallback is not None and props.get(rule.fallback) is not None:
                return props[rule.fallback]
            if rule.default is not None:
                value = rule.default
            elif required:
                tried = ", ".join(keywords) if keywords else "(no keyword configured)"
                raise TranslationError(
                    f"{source}: cannot translate {name} for instrument {self.instrument}: header keyword(s) "
                    f"{tried} missing; the file is not a valid {self.instrument} raw, "
                    "or add a keyword/default "
                    f"for translation.{name} in the camera description"
                )
            else:
                return None
        if isinstance(value, str):
            value = value.strip()
        try:
            value = self._transform(name, rule, value)
        except (TypeError, ValueError) as exc:
            raise TranslationError(
                f"{source}: cannot translate {name} for instrument {self.instrument} from "
                f"{keywords[0] if keywords else 'format'}={value!r}: {exc}"
            ) from None
        if rule.value_map:
            mapped = _MISSING
            key = _norm(str(value))
            for raw_value, new_value in rule.value_map.items():
                if _norm(str(raw_value)) == key:
                    mapped = new_value
                    break
            if mapped is not _MISSING:
                value = mapped
        return value

    def _transform(self, name: str, rule: PropertyRule, value: Any) -> Any:
        if name in ("begin", "end"):
            _check_has_time(name, rule, value)
            try:
                instant = _to_instant(value, rule)
            except (ValueError, OverflowError) as exc:
                if isinstance(exc, OverflowError) or "unacceptable date" in str(exc):
                    raise ValueError(
                        f"{name} is outside the years 1678-2261 that the registry can store"
                    ) from None
                # astropy's message spans several lines (one per format it tried): give one line
                raise ValueError(
                    f"not a valid {rule.time_format or 'ISO'} time (expected e.g. 2024-02-29T12:34:56.7)"
                ) from None
            if not _MIN_NS <= instant.ns <= _MAX_NS:
                raise ValueError(f"{name} is outside the years 1678-2261 that the registry can store")
            return instant
        t = rule.transform
        if t == "datetime_digits":
            if isinstance(value, str) and rule.time_scale == "utc" and _ISO_RE.match(value):
                return int(re.sub(r"\D", "", value[:19]))  # fast path: the UTC digits themselves
            time = _to_time(value, rule)
            return int(time.utc.strftime("%Y%m%d%H%M%S"))
        if t == "strip_fits_suffix":
            return re.sub(r"\.(fits|fit|fts)(\.gz|\.fz)?$", "", str(value), flags=re.I)
        if t == "sanitize":
            return _SANITIZE_RE.sub("_", str(value).strip())
        if t == "lower":
            return str(value).lower()
        if t == "upper":
            return str(value).upper()
        if t == "int":
            out = int(value)
            if not -(2**63) <= out < 2**63:
                raise ValueError(f"{name} {out} does not fit in a signed 64-bit integer")
            return out
        if name in ("exposure_time", "dark_time"):
            out = float(value)
            if not math.isfinite(out) or out < 0:
                raise ValueError(f"{name} must be a finite non-negative number of seconds")
            return out
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise ValueError(f"{name} {value} does not fit in a signed 64-bit integer")
        return value


_DATE_ONLY_RE = re.compile(r"^\d{4}-\d\d-\d\d$")
# TAI nanoseconds since 1970 must fit a signed 64-bit column: 1677-09-21 .. 2262-04-11,
# trimmed by a year on each side for the TAI-UTC offset and an exposure's length.
_MIN_NS = -(2**63) + 366 * 86400 * 10**9
_MAX_NS = 2**63 - 1 - 366 * 86400 * 10**9


def _check_has_time(name: str, rule: PropertyRule, value: Any) -> None:
    """Refuse a calendar date without a time of day for ``begin`` / ``end``.

    Raises
    ------
    ValueError
        If ``value`` is a date-only string (``"2013-07-13"``): taking it as midnight would put
        every exposure of a night at one instant. Some cameras write the time in a second
        keyword; the camera description then combines them with a ``format`` rule.
    """
    if isinstance(value, str) and _DATE_ONLY_RE.match(value.strip()) and rule.time_format in ("isot", "fits"):
        raise ValueError(
            f"{value.strip()!r} is a date without a time of day; if the header gives the time in "
            f"another keyword, combine them in the camera description, e.g. "
            f'{name}: {{format: "{{DATE-OBS}}T{{UT}}"}}'
        )


class _Instant(NamedTuple):
    """A translated time: TAI nanoseconds since 1970-01-01 TAI and the UTC calendar datetime."""

    ns: int
    utc: _dt.datetime | None


_UNIX_EPOCH = _dt.datetime(1970, 1, 1)


def _to_instant(value: Any, rule: PropertyRule) -> _Instant:
    """Convert a header time to an `_Instant`.

    ISO strings in UTC take a fast path (``datetime`` + the ERFA leap-second table, TAI = UTC +
    ΔAT); anything else goes through astropy `~astropy.time.Time`.
    """
    if isinstance(value, str) and rule.time_scale == "utc" and rule.time_format in ("isot", "fits"):
        text = value.strip().rstrip("Z")
        if _ISO_RE.match(text):
            try:
                utc = _dt.datetime.fromisoformat(text[:26])
            except ValueError:
                utc = None
            if utc is not None:
                import erfa

                day_frac = (utc.hour * 3600 + utc.minute * 60 + utc.second + utc.microsecond * 1e-6) / 86400.0
                dat = float(erfa.dat(utc.year, utc.month, utc.day, day_frac))
                delta = utc - _UNIX_EPOCH
                us = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
                return _Instant(us * 1000 + round(dat * 1e9), utc)
    time = _to_time(value, rule)
    return _Instant(_time_to_ns(time), time.utc.datetime)


def _time_to_ns(time: Time) -> int:
    from butler.timespan import time_to_ns

    return time_to_ns(time)


def _ns_to_time(ns: int) -> Time:
    from butler.timespan import ns_to_time

    return ns_to_time(ns)


def _to_time(value: Any, rule: PropertyRule) -> Time:
    if isinstance(value, Time):
        return value
    fmt = rule.time_format
    if fmt == "mjd":
        return Time(float(value), format="mjd", scale=rule.time_scale)
    if fmt == "unix":
        return Time(float(value), format="unix", scale="utc")
    text = str(value).strip()
    if fmt == "fits" or "T" not in text:
        return Time(text, format="fits" if "T" in text else "iso", scale=rule.time_scale)
    return Time(text, format="isot", scale=rule.time_scale)


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _has_image(header: fits.Header) -> bool:
    if header.get("ZIMAGE"):
        return int(header.get("ZNAXIS", 0)) > 0
    if header.get("XTENSION", "IMAGE").strip() not in ("IMAGE",) and not header.get("SIMPLE", False):
        return False
    return int(header.get("NAXIS", 0)) > 0
