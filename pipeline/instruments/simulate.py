"""Raw simulator: realistic raw files (or in-memory raw Exposures) for any camera, with known truth.

Signal model, per detector, in the *assembled* (trimmed) frame, electrons (e⁻):

1. expected charge ``S = level · flat + dark_current · dark_time (+ hot_column_current · dark_time
   on hot columns)``, ``level = flux · exposure_time`` (or the exposure's ``level``) for flats
   and science frames, 0 for bias and dark frames;
2. photon/dark shot noise: ``N ~ Poisson(S)`` (exact below 1000 e⁻; above, the normal
   approximation with the same mean and variance, see `_photon_counts`);
3. optional brighter-fatter-like charge sharing: each pixel gives the fraction
   ``a = bf_strength · S / 1e4`` of its charge to each of its 4 neighbours and keeps ``1 - 4a``
   (charge conserving; lowers the variance below the mean and correlates neighbours, both ∝ S²);
4. per amplifier, ADU ``= N / gain``; optional crosstalk ``target += Σ_s c[s, t] · source``
   (ADU, sources re-oriented to the target's readout corner, as ip_isr's crosstalk,
   ``Detector.crosstalk[source, target]``); optional quadratic non-linearity
   ``ADU → ADU + nonlinearity · ADU²``;
5. into the raw frame (flips per ``raw_flip_x/y``), plus, in every raw pixel of the amplifier
   segment (data, prescan, serial and parallel overscans): bias level + a row pattern
   (``bias_row_amplitude · sin``, same in data and overscan of a row) + Gaussian read noise
   ``read_noise / gain`` ADU; a fixed per-column bias pattern (``bias_col_rms``) is added to the
   data columns only (the structure a master bias removes);
6. clipped at the amplifier's saturation (and 0..65535), rounded to integers and written as
   int16 with BZERO 32768 (unsigned 16-bit), optionally tile-compressed (``.fz``).

Headers are written so the instrument's own translator ingests them (the YAML translation is
inverted: each property's first keyword gets the value, ``value_map`` inverted, ``format``
strings split). A real header dump can be given as a template (``header_template``, e.g. a
MegaCam ``*.fits.header`` file): its cards come first, with the simulated values substituted.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.time import Time, TimeDelta

from pipeline.image.exposure import Exposure, MaskedImage
from pipeline.image.geometry import Detector

from .headers import load_header_dump
from .instrument import Instrument, get_instrument
from .translator import OBSERVATION_TYPE_WORDS

__all__ = [
    "AmpTruth",
    "ExposureSpec",
    "ExposureTruth",
    "SimulationTruth",
    "SimulationResult",
    "make_truth",
    "render_detector",
    "simulate_exposures",
    "simulate_raws",
    "main",
]

@dataclass
class AmpTruth:
    """Injected values of one amplifier.

    Attributes
    ----------
    gain : float
        e⁻/ADU.
    read_noise : float
        e⁻.
    bias_level : float
        ADU.
    bias_row_amplitude : float
        Amplitude of the row pattern, ADU.
    saturation : float
        ADU (clipping level).
    """

    gain: float
    read_noise: float
    bias_level: float
    bias_row_amplitude: float
    saturation: float


@dataclass
class ExposureSpec:
    """What to simulate for one exposure.

    Parameters
    ----------
    observation_type : str
        ``bias``, ``dark``, ``flat``, ``science`` (LSST words).
    exposure_time : float
        Seconds (0 for a bias).
    flux : float
        e⁻/s per pixel at flat = 1 (flats and science).
    level : float, optional
        e⁻ per pixel at flat = 1; overrides ``flux · exposure_time``.
    physical_filter : str, optional
        Default: the instrument's first declared filter.
    dark_time : float, optional
        Seconds; default the exposure time.
    begin : astropy.time.Time or str, optional
        Start (TAI); default a fixed start date plus spacing.
    exposure_id : int, optional
        Default: derived (see `simulate_exposures`).
    target_name : str, optional
    """

    observation_type: str
    exposure_time: float = 0.0
    flux: float = 0.0
    level: float | None = None
    physical_filter: str | None = None
    dark_time: float | None = None
    begin: Any = None
    exposure_id: int | None = None
    target_name: str | None = None

    @classmethod
    def coerce(cls, value: ExposureSpec | Mapping[str, Any] | str) -> ExposureSpec:
        """From an `ExposureSpec`, a dict (``type`` is accepted for ``observation_type``) or a type word."""
        if isinstance(value, ExposureSpec):
            return value
        if isinstance(value, str):
            return cls(observation_type=value)
        data = dict(value)
        if "type" in data:
            data["observation_type"] = data.pop("type")
        return cls(**data)


@dataclass
class ExposureTruth:
    """The translated properties and injected signal of one simulated exposure."""

    exposure_id: int
    obs_id: str
    observation_type: str
    exposure_time: float
    dark_time: float
    level: float
    physical_filter: str
    begin: str
    path: str | None = None


@dataclass
class SimulationTruth:
    """Everything injected into a simulation (per detector id and amplifier name).

    Attributes
    ----------
    instrument : str
    seed : int
    amps : dict
        ``{detector_id: {amp_name: AmpTruth}}``.
    flat : dict
        ``{detector_id: ndarray (ny, nx)}``: the assembled flat pattern (mean 1).
    dark_current : float
        e⁻/s/pixel.
    hot_columns : dict
        ``{detector_id: [x, ...]}`` assembled columns with extra dark current.
    hot_column_current : float
        Extra e⁻/s/pixel on hot columns.
    bias_col_pattern : dict
        ``{detector_id: ndarray (nx_raw,)}`` fixed per-column bias pattern (ADU, raw columns; 0 off the data).
    nonlinearity : float
        Quadratic coefficient, 1/ADU.
    crosstalk : dict
        ``{detector_id: ndarray (n_amp, n_amp) or None}``, ``[source, target]``.
    bf_strength : float
        Charge-sharing strength (fraction per 1e4 e⁻).
    exposures : list of ExposureTruth
    effects : list
        Optional extra effects (none by default), e.g. from `pipeline.instruments.sim_crosstalk_cti`
        or `pipeline.instruments.sim_effects`.
        Each may define ``add_charge(detector, spec, expected, rng) -> expected`` (e⁻, assembled
        frame, before shot noise), ``draw_electrons(detector, spec, expected, rng) -> electrons``
        (replaces the shot-noise draw; the first effect that has it), ``transfer(amp, raw, gain)``
        (in place on the raw signal in
        ADU, before bias and read noise) and ``to_dict()`` (its truth, under ``effects`` in
        `to_dict`).
    """

    instrument: str
    seed: int
    amps: dict[int, dict[str, AmpTruth]]
    flat: dict[int, np.ndarray]
    dark_current: float = 0.0
    hot_columns: dict[int, list[int]] = field(default_factory=dict)
    hot_column_current: float = 0.0
    bias_col_pattern: dict[int, np.ndarray] = field(default_factory=dict)
    nonlinearity: float = 0.0
    crosstalk: dict[int, np.ndarray | None] = field(default_factory=dict)
    bf_strength: float = 0.0
    exposures: list[ExposureTruth] = field(default_factory=list)
    effects: list[Any] = field(default_factory=list)

    def gain(self, detector: int, amp: str) -> float:
        """Injected gain, e⁻/ADU."""
        return self.amps[detector][amp].gain

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (arrays summarised by their mean/std, except crosstalk)."""
        return {
            "instrument": self.instrument,
            "seed": self.seed,
            "amps": {str(d): {a: asdict(t) for a, t in amps.items()} for d, amps in self.amps.items()},
            "flat_mean_std": {str(d): [float(f.mean()), float(f.std())] for d, f in self.flat.items()},
            "dark_current": self.dark_current,
            "hot_columns": {str(d): v for d, v in self.hot_columns.items()},
            "hot_column_current": self.hot_column_current,
            "nonlinearity": self.nonlinearity,
            "crosstalk": {
                str(d): None if v is None else np.asarray(v).tolist() for d, v in self.crosstalk.items()
            },
            "bf_strength": self.bf_strength,
            "exposures": [asdict(e) for e in self.exposures],
            "effects": {type(e).__name__: e.to_dict() for e in self.effects if hasattr(e, "to_dict")},
        }


class SimulationResult(list):
    """The written paths (a ``list[Path]``) with the injected truth as ``.truth``."""

    truth: SimulationTruth


def _per_amp(value: Any, det: int, amp: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, Mapping):
        for key in ((det, amp), f"{det}:{amp}", amp, det):
            if key in value:
                return float(value[key])
        return default
    return float(value)


def make_truth(
    instrument: Instrument,
    *,
    seed: int = 0,
    detectors: Iterable[int] | None = None,
    gains: Any = None,
    read_noises: Any = None,
    bias_level: Any = 1000.0,
    bias_row_amplitude: float = 2.0,
    bias_col_rms: float = 1.0,
    flat_rms: float = 0.02,
    flat_gradient: float = 0.05,
    dark_current: float = 0.0,
    hot_columns: int = 0,
    hot_column_current: float = 50.0,
    nonlinearity: float = 0.0,
    crosstalk: bool | float = False,
    bf_strength: float = 0.0,
    saturation: float | None = None,
) -> SimulationTruth:
    """Draw the fixed (per-camera) part of a simulation.

    Parameters
    ----------
    instrument : Instrument
        The camera.
    seed : int
        Random seed (flat pattern, column pattern, hot columns).
    detectors : iterable of int, optional
        Detector ids (default all).
    gains, read_noises : float, dict or None
        e⁻/ADU and e⁻; a scalar for all amps, a dict keyed by ``(det, amp)``, ``"det:amp"``, amp
        name or detector id, or None for the camera description's values.
    bias_level : float or dict
        ADU (same keys as ``gains``).
    bias_row_amplitude, bias_col_rms : float
        ADU.
    flat_rms : float
        Pixel-to-pixel flat rms (fraction).
    flat_gradient : float
        Large-scale illumination gradient across the detector (fraction).
    dark_current : float
        e⁻/s/pixel.
    hot_columns : int
        Number of hot columns per detector.
    hot_column_current : float
        Extra e⁻/s/pixel on hot columns.
    nonlinearity : float
        Quadratic coefficient (1/ADU): measured = true + c · true².
    crosstalk : bool or float
        True: the detector's crosstalk matrix (or 1e-4 off-diagonal if it has none); a float:
        that coefficient for every off-diagonal pair; False: none.
    bf_strength : float
        Charge-sharing strength (fraction per neighbour per 1e4 e⁻).
    saturation : float, optional
        ADU; default each amplifier's saturation.

    Returns
    -------
    SimulationTruth
    """
    rng = np.random.default_rng(seed)
    det_ids = list(detectors) if detectors is not None else [d.id for d in instrument.camera]
    amps: dict[int, dict[str, AmpTruth]] = {}
    flats: dict[int, np.ndarray] = {}
    hot: dict[int, list[int]] = {}
    colpat: dict[int, np.ndarray] = {}
    xt: dict[int, np.ndarray | None] = {}
    for det_id in det_ids:
        det = instrument.camera[det_id]
        amps[det_id] = {
            a.name: AmpTruth(
                gain=_per_amp(gains, det_id, a.name, a.gain),
                read_noise=_per_amp(read_noises, det_id, a.name, a.read_noise),
                bias_level=_per_amp(bias_level, det_id, a.name, 1000.0),
                bias_row_amplitude=float(bias_row_amplitude),
                saturation=float(saturation if saturation is not None else min(a.saturation, 65535.0)),
            )
            for a in det
        }
        ny, nx = det.bbox.shape
        x = (np.arange(nx, dtype=np.float32) / max(nx - 1, 1) - 0.5)[None, :]
        y = (np.arange(ny, dtype=np.float32) / max(ny - 1, 1) - 0.5)[:, None]
        flat = (1.0 + flat_gradient * x + 0.5 * flat_gradient * y).astype(np.float32)
        flat = np.broadcast_to(flat, (ny, nx)).copy()
        if flat_rms:
            noise = rng.standard_normal((ny, nx), dtype=np.float32)
            noise *= np.float32(flat_rms)
            noise += np.float32(1.0)
            flat *= noise
        flats[det_id] = flat / np.float32(flat.mean(dtype=np.float64))
        hot[det_id] = (
            sorted(int(x) for x in rng.choice(nx, size=min(hot_columns, nx), replace=False))
            if hot_columns
            else []
        )
        pattern = np.zeros(det.raw_shape[1])
        for a in det:
            box = a.raw_data_bbox
            pattern[box.x0 : box.x1] = bias_col_rms * rng.standard_normal(box.nx)
        colpat[det_id] = pattern
        if crosstalk is False or crosstalk is None:
            xt[det_id] = None
        elif crosstalk is True and det.crosstalk is not None:
            xt[det_id] = np.array(det.crosstalk)
        else:
            c = 1e-4 if crosstalk is True else float(crosstalk)
            n = len(det)
            xt[det_id] = np.full((n, n), c) - np.eye(n) * c
    return SimulationTruth(
        instrument=instrument.name,
        seed=seed,
        amps=amps,
        flat=flats,
        dark_current=float(dark_current),
        hot_columns=hot,
        hot_column_current=float(hot_column_current),
        bias_col_pattern=colpat,
        nonlinearity=float(nonlinearity),
        crosstalk=xt,
        bf_strength=float(bf_strength),
    )


#: Above this mean (e⁻) counts are drawn from the normal approximation of the Poisson law.
POISSON_NORMAL_THRESHOLD = 1000.0


def _photon_counts(lam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts of mean ``lam`` (float32 array, e⁻), integer-valued float32.

    Pixels with ``lam >= POISSON_NORMAL_THRESHOLD`` use ``rint(lam + sqrt(lam)·N(0, 1))`` (same mean
    and variance; skewness 1/sqrt(lam) ≤ 3 % is dropped), which is ~10x faster than numpy's
    Poisson sampler for large means; smaller means are exact Poisson draws.
    """
    big = lam >= POISSON_NORMAL_THRESHOLD
    if not big.any():
        return rng.poisson(lam).astype(np.float32)
    out = np.empty(lam.shape, dtype=np.float32)
    if big.all():
        noise = rng.standard_normal(lam.shape, dtype=np.float32)
        np.sqrt(lam, out=out)
        out *= noise
        out += lam
        return np.rint(out, out=out)
    out[~big] = rng.poisson(lam[~big])
    lb = lam[big]
    out[big] = np.rint(lb + np.sqrt(lb) * rng.standard_normal(lb.shape, dtype=np.float32))
    return out


def _share_charge(image: np.ndarray, expected: np.ndarray, strength: float) -> np.ndarray:
    a = np.clip(strength * expected / 1e4, 0.0, 0.2)
    give = a * image
    out = image - 4.0 * give
    out[1:, :] += give[:-1, :]
    out[:-1, :] += give[1:, :]
    out[:, 1:] += give[:, :-1]
    out[:, :-1] += give[:, 1:]
    # edges: charge pushed off the detector is returned to its pixel (conserve charge)
    out[0, :] += give[0, :]
    out[-1, :] += give[-1, :]
    out[:, 0] += give[:, 0]
    out[:, -1] += give[:, -1]
    return out


def _flip(data: np.ndarray, fx: bool, fy: bool) -> np.ndarray:
    if fy:
        data = data[::-1, :]
    if fx:
        data = data[:, ::-1]
    return data


_RIGHT = ("LR", "UR")
_UPPER = ("UL", "UR")


def render_detector(
    detector: Detector, truth: SimulationTruth, spec: ExposureSpec, rng: np.random.Generator
) -> np.ndarray:
    """Simulate one raw detector image (model in the module docstring).

    Parameters
    ----------
    detector : Detector
        Geometry.
    truth : SimulationTruth
        Injected values (must contain ``detector.id``).
    spec : ExposureSpec
        The exposure.
    rng : numpy.random.Generator
        Random state.

    Returns
    -------
    numpy.ndarray of uint16, shape ``detector.raw_shape``
    """
    det_id = detector.id
    ny, nx = detector.bbox.shape
    exptime = float(spec.exposure_time)
    dark_time = exptime if spec.dark_time is None else float(spec.dark_time)
    if spec.observation_type in ("flat", "science", "arc"):
        level = float(spec.level) if spec.level is not None else float(spec.flux) * exptime
    else:
        level = 0.0
    expected = np.full((ny, nx), truth.dark_current * dark_time, dtype=np.float32)
    if level:
        expected += level * truth.flat[det_id]
    if truth.hot_columns.get(det_id):
        expected[:, truth.hot_columns[det_id]] += truth.hot_column_current * dark_time
    for effect in truth.effects:
        if hasattr(effect, "add_charge"):
            expected = effect.add_charge(detector, spec, expected, rng)
    drawer = next((e for e in truth.effects if hasattr(e, "draw_electrons")), None)
    if drawer is not None:  # e.g. sim_effects.BrighterFatterEffect: charge-dependent pixel areas
        electrons = drawer.draw_electrons(detector, spec, expected, rng)
    else:
        electrons = _photon_counts(np.clip(expected, 0, None), rng)
    if truth.bf_strength:
        electrons = _share_charge(electrons, expected, truth.bf_strength)
    amps = list(detector)
    adu = [electrons[a.bbox.slices] / truth.amps[det_id][a.name].gain for a in amps]
    xt = truth.crosstalk.get(det_id)
    if xt is not None:
        added = []
        for t, ta in enumerate(amps):
            extra = np.zeros_like(adu[t])
            for s, sa in enumerate(amps):
                if s == t or xt[s, t] == 0:
                    continue
                src = adu[s]
                fx = (str(sa.readout_corner) in _RIGHT) != (str(ta.readout_corner) in _RIGHT)
                fy = (str(sa.readout_corner) in _UPPER) != (str(ta.readout_corner) in _UPPER)
                src = _flip(src, fx, fy)
                if src.shape == extra.shape:
                    extra += xt[s, t] * src
            added.append(extra)
        adu = [a + e for a, e in zip(adu, added)]
    if truth.nonlinearity:
        adu = [a + truth.nonlinearity * a * a for a in adu]
    raw = np.zeros(detector.raw_shape, dtype=np.float32)
    colpat = truth.bias_col_pattern.get(det_id)
    for a, signal in zip(amps, adu):
        at = truth.amps[det_id][a.name]
        raw[a.raw_data_bbox.slices] = _flip(signal, a.raw_flip_x, a.raw_flip_y)
        for effect in truth.effects:
            if hasattr(effect, "transfer"):
                effect.transfer(a, raw, at.gain)
        seg = a.raw_bbox
        boxes = [seg] if not seg.is_empty else []
        for box in (
            a.raw_data_bbox,
            a.raw_serial_overscan_bbox,
            a.raw_serial_prescan_bbox,
            a.raw_parallel_overscan_bbox,
        ):
            if not box.is_empty and not seg.contains(box):
                boxes.append(box)
        for box in boxes:
            rows = np.arange(box.y0, box.y1, dtype=np.float32)[:, None]
            bias = np.float32(at.bias_level) + np.float32(at.bias_row_amplitude) * np.sin(
                np.float32(2 * np.pi / 97.0) * rows
            )
            noise = rng.standard_normal(size=box.shape, dtype=np.float32)
            noise *= np.float32(at.read_noise / at.gain)
            noise += bias
            raw[box.slices] += noise
        if colpat is not None:
            d = a.raw_data_bbox
            raw[d.slices] += colpat[d.x0 : d.x1][None, :]
        d = a.raw_data_bbox
        np.minimum(raw[d.slices], at.saturation, out=raw[d.slices])
    return np.clip(np.rint(raw), 0, 65535).astype(np.uint16)


# -- headers ---------------------------------------------------------------------------------------
def _inverse_value(rule: Any, value: Any) -> Any:
    if rule is None:
        return value
    if getattr(rule, "value_map", None):
        for raw_value, mapped in rule.value_map.items():
            if str(mapped).lower() == str(value).lower():
                return raw_value
    return value


def _set_from_rule(header: fits.Header, rule: Any, value: Any, props: Mapping[str, Any]) -> None:
    if rule is None or value is None:
        return
    if rule.format:
        fields = [f for _, f, _, _ in string.Formatter().parse(rule.format) if f]
        header_fields = [f for f in fields if f not in props]
        literals = [lit for lit, _, _, _ in string.Formatter().parse(rule.format) if lit]
        parts = [str(value)]
        for lit in literals:
            if lit and len(parts[-1].split(lit, 1)) == 2:
                head, tail = parts[-1].split(lit, 1)
                parts[-1:] = [head, tail]
        for name, part in zip(
            header_fields, parts if len(parts) == len(header_fields) else [str(value)] * len(header_fields)
        ):
            _put(header, name, part)
        return
    if rule.keyword is None:
        return
    key = rule.keyword if isinstance(rule.keyword, str) else rule.keyword[0]
    _put(header, key, value)


def _put(header: fits.Header, key: str, value: Any) -> None:
    if isinstance(value, np.generic):
        value = value.item()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        if len(key) > 8 or " " in key:
            header[f"HIERARCH {key}"] = value
        else:
            header[key] = value


def _time_value(rule: Any, t: Time) -> Any:
    scale = getattr(rule, "time_scale", "utc")
    tt = getattr(t, scale)
    fmt = getattr(rule, "time_format", "isot")
    if fmt == "mjd":
        return float(tt.mjd)
    if fmt == "unix":
        return float(t.utc.unix)
    return tt.isot


def _load_template(path: str | os.PathLike[str] | None) -> fits.Header | None:
    """Read the primary header of a header dump used as a template (`None`: no template)."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"header template {path} does not exist (a *.fits.header or YAML dump)")
    return load_header_dump(path)[0]


def _primary_header(
    instrument: Instrument,
    info: ExposureTruth,
    begin: Time,
    end: Time,
    target: str | None,
    template: fits.Header | None = None,
) -> fits.Header:
    spec = instrument.description.translation
    hdr = fits.Header()
    if template is not None:
        for card in template.cards:
            if card.keyword in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND", "NEXTEND", "END", ""):
                continue
            try:
                hdr.append(card, end=True)
            except (ValueError, VerifyWarning):
                continue
    for key, value in instrument.description.model.match.items():
        _put(hdr, key, value[0] if isinstance(value, list) else value)
    props = {"exposure_id": info.exposure_id}
    obstype_raw = _inverse_value(spec.observation_type, info.observation_type)
    if obstype_raw == info.observation_type:
        obstype_raw = info.observation_type.upper()
        if obstype_raw.lower() not in OBSERVATION_TYPE_WORDS:
            obstype_raw = info.observation_type
    _set_from_rule(hdr, spec.observation_type, obstype_raw, props)
    _set_from_rule(hdr, spec.exposure_time, float(info.exposure_time), props)
    if spec.dark_time is not None:
        _set_from_rule(hdr, spec.dark_time, float(info.dark_time), props)
    if spec.physical_filter is not None:
        _set_from_rule(hdr, spec.physical_filter, info.physical_filter, props)
    if spec.begin.keyword is not None:
        for kw in [spec.begin.keyword] if isinstance(spec.begin.keyword, str) else spec.begin.keyword:
            _put(hdr, kw, _time_value(spec.begin, begin))
    if spec.end is not None and spec.end.keyword is not None:
        _set_from_rule(hdr, spec.end, _time_value(spec.end, end), props)
    if spec.exposure_id.transform != "datetime_digits":
        _set_from_rule(hdr, spec.exposure_id, int(info.exposure_id), props)
    if spec.obs_id is not None and spec.obs_id.format is None:
        _set_from_rule(hdr, spec.obs_id, info.obs_id, props)
    if spec.target_name is not None and target:
        _set_from_rule(hdr, spec.target_name, target, props)
    if instrument.name == "megacam":
        for key in ("OBSID", "EXPNUM"):
            hdr[key] = int(info.exposure_id)
        hdr["FILENAME"] = info.obs_id
        hdr["EXPTYPE"] = hdr["OBSTYPE"]
        hdr["DATE-OBS"] = begin.utc.isot[:10]
        hdr["UTC-OBS"] = begin.utc.isot[11:]
    hdr["SIMULATD"] = (True, "ccdflow-simulate synthetic raw")
    return hdr


def _ext_header(instrument: Instrument, det: Detector, truth: SimulationTruth) -> fits.Header:
    hdr = fits.Header()
    hdr["EXTNAME"] = det.name if not isinstance(det.hdu, str) else det.hdu
    spec = instrument.description.translation
    for amp_name, fields_ in spec.amp_overrides.items():
        if amp_name not in det._by_name:
            continue
        at = truth.amps[det.id][amp_name]
        for fname, kws in fields_.items():
            kw = kws if isinstance(kws, str) else kws[0]
            if fname == "gain":
                _put(hdr, kw, at.gain)
            elif fname == "read_noise":
                _put(hdr, kw, at.read_noise)
    if instrument.name == "megacam":
        hdr["DATASEC"] = "[33:2080,1:4612]"
        for amp, (a, d, b) in {
            "A": ("[1:1056,1:4612]", "[33:1056,1:4612]", "[1:32,1:4644]"),
            "B": ("[1057:2112,1:4612]", "[1057:2080,1:4612]", "[2081:2112,1:4644]"),
        }.items():
            hdr[f"ASEC{amp}"] = a
            hdr[f"DSEC{amp}"] = d
            hdr[f"TSEC{amp}"] = d
            hdr[f"BSEC{amp}"] = b
        hdr["AMPLIST"] = "A B"
        hdr["AMPNAME"] = f"{det.name[3:]}a + {det.name[3:]}b"
        hdr["SATURATE"] = 65535
    return hdr


_START = Time("2024-03-01T02:00:00", scale="tai")
_LETTER = {"bias": "b", "dark": "d", "flat": "f", "science": "o", "arc": "a", "focus": "x"}


def _next_start(truth: SimulationTruth) -> Time | None:
    """Start of the next exposure after those already in ``truth`` (so ids never repeat)."""
    if not truth.exposures:
        return None
    last = truth.exposures[-1]
    return Time(last.begin, format="isot", scale="tai") + TimeDelta(last.exposure_time + 30.0, format="sec")


def _exposure_truths(
    instrument: Instrument, specs: list[ExposureSpec], first_id: int, start: Time | None = None
) -> list[tuple[ExposureTruth, Time, Time]]:
    out = []
    t = _START if start is None else start
    spec = instrument.description.translation
    filt0 = instrument.filters[0][0] if instrument.filters else "unknown"
    for i, s in enumerate(specs):
        begin = (
            Time(s.begin, scale="tai")
            if s.begin is not None and not isinstance(s.begin, Time)
            else (s.begin or t)
        )
        begin = Time(begin.tai.isot[:19], format="isot", scale="tai")  # whole seconds: stable DATE-OBS ids
        end = begin + TimeDelta(float(s.exposure_time), format="sec")
        t = end + TimeDelta(30.0, format="sec")
        if s.exposure_id is not None:
            exp_id = int(s.exposure_id)
        elif spec.exposure_id.transform == "datetime_digits":
            exp_id = int(begin.utc.strftime("%Y%m%d%H%M%S"))
        else:
            exp_id = first_id + i
        obstype = s.observation_type
        if instrument.name == "megacam":
            obs_id = f"{exp_id}{_LETTER.get(obstype, 'o')}"
        elif spec.obs_id is not None and spec.obs_id.format is not None:
            obs_id = spec.obs_id.format.format_map({"exposure_id": exp_id})
        else:
            obs_id = f"{instrument.name}_{exp_id}"
        level = float(s.level) if s.level is not None else float(s.flux) * float(s.exposure_time)
        if obstype not in ("flat", "science", "arc"):
            level = 0.0
        et = ExposureTruth(
            exposure_id=exp_id,
            obs_id=obs_id,
            observation_type=obstype,
            exposure_time=float(s.exposure_time),
            dark_time=float(s.exposure_time if s.dark_time is None else s.dark_time),
            level=level,
            physical_filter=s.physical_filter or filt0,
            begin=begin.tai.isot,
        )
        out.append((et, begin, end))
    return out


def simulate_exposures(
    instrument: Instrument | str,
    exposures: Sequence[ExposureSpec | Mapping[str, Any] | str],
    *,
    seed: int = 0,
    truth: SimulationTruth | None = None,
    detectors: Iterable[int] | None = None,
    first_id: int = 1000,
    header_template: str | os.PathLike[str] | None = None,
    **truth_params: Any,
) -> tuple[list[Exposure], SimulationTruth]:
    """Simulate raw Exposures in memory (no files): one per (exposure, detector).

    Parameters
    ----------
    instrument : Instrument or str
        The camera.
    exposures : sequence of ExposureSpec, dict or str
        What to simulate, in order.
    seed : int
        Random seed (pixel noise; also the fixed truth when ``truth`` is None).
    truth : SimulationTruth, optional
        Reuse fixed injected values (e.g. the same bias structure for a later flat set).
    detectors : iterable of int, optional
        Detector ids (default: those of ``truth``, else all).
    first_id : int
        Exposure id of the first exposure for instruments with a plain integer id keyword.
    header_template : str or path-like, optional
        A header dump (``*.fits.header`` text or PropertyList YAML) whose cards start every
        primary header, with the simulated values substituted (real MegaCam cards, say).
    **truth_params
        Passed to `make_truth` when ``truth`` is None.

    Returns
    -------
    exposures : list of Exposure
        Untrimmed uint16 raw images with detector, info (translated values) and metadata.
    truth : SimulationTruth
        Injected values; ``truth.exposures`` gets one `ExposureTruth` per exposure.
    """
    inst = instrument if isinstance(instrument, Instrument) else get_instrument(instrument)
    if truth is None:
        truth = make_truth(inst, seed=seed, detectors=detectors, **truth_params)
    elif truth_params:
        raise TypeError(f"pass either truth= or truth parameters, not both: {sorted(truth_params)}")
    det_ids = list(detectors) if detectors is not None else list(truth.amps)
    specs = [ExposureSpec.coerce(e) for e in exposures]
    template = _load_template(header_template)
    rng = np.random.default_rng([seed, len(truth.exposures)])
    out: list[Exposure] = []
    for et, begin, end in _exposure_truths(inst, specs, first_id + len(truth.exposures), _next_start(truth)):
        truth.exposures.append(et)
        primary = _primary_header(inst, et, begin, end, None, template)
        for det_id in det_ids:
            det = inst.camera[det_id]
            spec = ExposureSpec(et.observation_type, et.exposure_time, level=et.level, dark_time=et.dark_time)
            pixels = render_detector(det, truth, spec, rng)
            ext = _ext_header(inst, det, truth)
            merged = primary.copy()
            merged.extend(ext, update=True)
            info = inst.translate(merged, None, detector=det_id, source=et.obs_id).to_exposure_info()
            out.append(
                Exposure(
                    MaskedImage(pixels),
                    metadata=merged,
                    detector=inst.detector_for_raw(det_id, merged),
                    info=info,
                )
            )
    return out, truth


def simulate_raws(
    instrument: Instrument | str,
    out_dir: str | os.PathLike[str],
    *,
    exposures: Sequence[ExposureSpec | Mapping[str, Any] | str],
    seed: int = 0,
    truth: SimulationTruth | None = None,
    detectors: Iterable[int] | None = None,
    compress: bool = False,
    first_id: int = 1000,
    header_template: str | os.PathLike[str] | None = None,
    **truth_params: Any,
) -> SimulationResult:
    """Write simulated raw FITS files (one per exposure) that ``ingest_raws`` ingests.

    Parameters
    ----------
    instrument : Instrument or str
        The camera (built-in name, YAML path or `Instrument`).
    out_dir : str or path-like
        Output directory (created).
    exposures : sequence of ExposureSpec, dict or str
        E.g. ``[{"type": "bias"}] * 5 + [{"type": "flat", "exposure_time": 2.0, "flux": 5000}]``.
    seed : int
        Random seed; the same arguments give byte-identical pixels.
    truth : SimulationTruth, optional
        Fixed injected values to reuse (default: drawn by `make_truth` from ``truth_params``).
    detectors : iterable of int, optional
        Detector ids to write (default all; MegaCam has 40 × 19 MB).
    compress : bool
        Write RICE tile-compressed ``.fits.fz`` files.
    first_id : int
        First exposure id for instruments with a plain integer id keyword.
    header_template : str or path-like, optional
        A header dump (``*.fits.header`` text or PropertyList YAML) whose cards start every
        primary header, with the simulated values substituted (real MegaCam cards, say).
    **truth_params
        `make_truth` parameters (gains, read_noises, bias_level, dark_current, nonlinearity,
        crosstalk, bf_strength, hot_columns, flat_rms ...).

    Returns
    -------
    SimulationResult
        The file paths (a list) with ``.truth``, the `SimulationTruth`.

    Raises
    ------
    UnknownInstrumentError
        If the instrument is unknown.
    """
    inst = instrument if isinstance(instrument, Instrument) else get_instrument(instrument)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if truth is None:
        truth = make_truth(inst, seed=seed, detectors=detectors, **truth_params)
    elif truth_params:
        raise TypeError(f"pass either truth= or truth parameters, not both: {sorted(truth_params)}")
    det_ids = list(detectors) if detectors is not None else list(truth.amps)
    specs = [ExposureSpec.coerce(e) for e in exposures]
    template = _load_template(header_template)
    rng = np.random.default_rng([seed, len(truth.exposures)])
    result = SimulationResult()
    single = len(inst.camera) == 1
    for et, begin, end in _exposure_truths(inst, specs, first_id + len(truth.exposures), _next_start(truth)):
        primary = _primary_header(inst, et, begin, end, None, template)
        hdus: list[Any] = []
        for det_id in det_ids:
            det = inst.camera[det_id]
            spec = ExposureSpec(et.observation_type, et.exposure_time, level=et.level, dark_time=et.dark_time)
            pixels = render_detector(det, truth, spec, rng)
            if single:
                hdus.append(fits.PrimaryHDU(data=pixels, header=primary, uint=True))
            else:
                ext = _ext_header(inst, det, truth)
                if compress:
                    hdus.append(
                        fits.CompImageHDU(data=pixels, header=ext, compression_type="RICE_1", uint=True)
                    )
                else:
                    hdus.append(fits.ImageHDU(data=pixels, header=ext, uint=True))
        if not single:
            hdus.insert(0, fits.PrimaryHDU(header=primary))
        elif compress:
            hdus = [
                fits.PrimaryHDU(header=primary),
                fits.CompImageHDU(data=hdus[0].data, compression_type="RICE_1", uint=True),
            ]
        suffix = ".fits.fz" if compress else ".fits"
        path = out_dir / f"{et.obs_id.replace('/', '_')}{suffix}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            fits.HDUList(hdus).writeto(path, overwrite=True)
        et.path = str(path)
        truth.exposures.append(et)
        result.append(path)
    result.truth = truth
    return result


def _parse_set(text: str, obstype: str) -> list[dict[str, Any]]:
    """``N`` or ``N:t1,t2,...`` (exposure times) → exposure dicts."""
    count, _, times = text.partition(":")
    n = int(count)
    if not times:
        return [{"observation_type": obstype}] * n
    return [
        {"observation_type": obstype, "exposure_time": float(t)} for t in times.split(",") for _ in range(n)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``ccdflow-simulate``: write simulated raws and ``truth.json``.

    Example::

        ccdflow-simulate testcam sim/ --bias 5 --dark 3:60 --flat 2:1,2,4,8 --flux 2000 --seed 3
    """
    parser = argparse.ArgumentParser(
        prog="ccdflow-simulate",
        description="Write simulated raw files with known truth for a camera description.",
    )
    parser.add_argument(
        "instrument", help="built-in name (kast_blue, efosc2, megacam, testcam) or camera YAML path"
    )
    parser.add_argument("out_dir", help="output directory")
    parser.add_argument("--bias", default="0", help="number of biases (default 0)")
    parser.add_argument("--dark", default="0", help="N or N:t1,t2 (N darks per exposure time, s)")
    parser.add_argument("--flat", default="0", help="N or N:t1,t2 (N flats per exposure time, s)")
    parser.add_argument("--science", default="0", help="N or N:t1,t2")
    parser.add_argument(
        "--flux", type=float, default=1000.0, help="flat/science flux, e-/s/pixel (default 1000)"
    )
    parser.add_argument("--dark-current", type=float, default=0.0, help="e-/s/pixel (default 0)")
    parser.add_argument(
        "--gain", type=float, default=None, help="e-/ADU for every amp (default: the camera's)"
    )
    parser.add_argument(
        "--read-noise", type=float, default=None, help="e- for every amp (default: the camera's)"
    )
    parser.add_argument("--bias-level", type=float, default=1000.0, help="ADU (default 1000)")
    parser.add_argument("--first-id", type=int, default=1000, help="first exposure id (integer-id cameras)")
    parser.add_argument("--nonlinearity", type=float, default=0.0, help="quadratic coefficient, 1/ADU")
    parser.add_argument("--bf-strength", type=float, default=0.0, help="brighter-fatter-like charge sharing")
    parser.add_argument("--crosstalk", action="store_true", help="add the camera's crosstalk")
    parser.add_argument("--hot-columns", type=int, default=0, help="hot columns per detector")
    parser.add_argument("--detectors", default=None, help="comma-separated detector ids (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compress", action="store_true", help="write tile-compressed .fits.fz")
    parser.add_argument(
        "--header-template",
        default=None,
        help="header dump whose cards start every primary header (e.g. a real *.fits.header)",
    )
    args = parser.parse_args(argv)
    try:
        exposures: list[dict[str, Any]] = []
        exposures += _parse_set(args.bias, "bias")
        exposures += _parse_set(args.dark, "dark")
        exposures += [dict(e, flux=args.flux) for e in _parse_set(args.flat, "flat")]
        exposures += [dict(e, flux=args.flux) for e in _parse_set(args.science, "science")]
        if not exposures:
            parser.error("nothing to simulate: give --bias, --dark, --flat or --science")
        for e in exposures:
            if e["observation_type"] != "bias" and "exposure_time" not in e:
                e["exposure_time"] = 1.0
        dets = None if args.detectors is None else [int(d) for d in args.detectors.split(",")]
        result = simulate_raws(
            args.instrument,
            args.out_dir,
            exposures=exposures,
            seed=args.seed,
            detectors=dets,
            compress=args.compress,
            first_id=args.first_id,
            header_template=args.header_template,
            gains=args.gain,
            read_noises=args.read_noise,
            bias_level=args.bias_level,
            dark_current=args.dark_current,
            nonlinearity=args.nonlinearity,
            bf_strength=args.bf_strength,
            crosstalk=args.crosstalk,
            hot_columns=args.hot_columns,
        )
    except (ValueError, KeyError, LookupError, OSError) as exc:
        print(f"ccdflow-simulate: error: {exc}", file=sys.stderr)
        return 2
    truth_path = Path(args.out_dir) / "truth.json"
    truth_path.write_text(json.dumps(result.truth.to_dict(), indent=1))
    print(f"wrote {len(result)} raw file(s) to {args.out_dir} and the injected values to {truth_path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
