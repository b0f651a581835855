"""Serial deferred-charge (CTI) model and correction (Snyder et al. 2021, PASP 133, 074504).

The model of one amplifier row, in readout order (index ``x = 0`` is the first pixel read, it
crosses ``x + 1`` serial transfers), has three parts applied in the physical order:

1. **Global CTI** ``ε`` (first order in ``ε·x``): a packet loses ``ε (x + 1) s_x`` over its
   transfers and that charge trails into the next packet::

       s'_x = s_x − ε (x + 1) s_x + ε x s_{x−1}

2. **Serial traps** (per trap: ``size`` e⁻, emission time ``τ`` in pixel transfers, location
   ``pixel`` in the register, capture function ``f``). Between two packets the trap keeps a
   fraction ``r = exp(−1/τ)`` of its charge (the rest is emitted into the next packet); a
   packet fills the trap up to ``f(s)``. The occupancy after packet ``x`` is therefore::

       O_x = max(r O_{x−1}, f(s_x)) = max_{k ≥ 0} r^k f(s_{x−k})

   and the packet reads ``s_x + O_{x−1} − O_x`` (emitted minus captured). Packets with
   ``x < pixel`` do not cross the trap. ``f`` is ``min(size, a·s)`` (``linear``, coefficients
   ``[a]``) or ``size / (1 + exp(−k (s − s0)))`` (``logistic``, coefficients ``[s0, k]``),
   never more than the packet holds.

3. **Local electronic offset** (output-amplifier drift): scale ``d``, decay time ``t``
   (pixels), ``q = exp(−1/t)``::

       o_x = s''_x + max_{k ≥ 0} d·max(0, s''_{x−k}) q^k

The **correction** follows the LSST ``DeferredChargeTask`` approach: the deferred charge is
estimated from the *observed* image with the same formulas truncated to the last
``nPixelOffsetCorrection`` (offset) and ``nPixelTrapCorrection`` (traps) pixels, and
subtracted, in the reverse order (offset, traps, global CTI). The error is second order in the
(small) deferred charge.

All functions take ``(ny, nx)`` float arrays already in readout orientation (``x = 0`` read
first) and in electrons (or ADU when the parameters are in ADU).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .calibs import IsrCalib, _need

if TYPE_CHECKING:  # pragma: no cover
    from astropy.table import Table

__all__ = [
    "DeferredChargeCalib",
    "SerialTrap",
    "correct_serial_cti",
    "decayed_running_max",
    "global_cti_correct",
    "global_cti_forward",
    "local_offset",
    "readout_slices",
    "simulate_serial_cti",
    "trap_occupancy",
]

TRAP_TYPES = ("linear", "logistic")


@dataclass
class SerialTrap:
    """One serial-register trap (Snyder et al. 2021 §4).

    Parameters
    ----------
    size : `float`
        Maximum trapped charge, e⁻ (> 0).
    emission_time : `float`
        Emission time constant, in serial transfers (> 0).
    pixel : `int`
        Register position of the trap (packets with readout index ``< pixel`` do not cross it).
    trap_type : {"linear", "logistic"}
        Capture function.
    coeffs : sequence of `float`
        ``[a]`` (linear: ``min(size, a·s)``) or ``[s0, k]`` (logistic:
        ``size / (1 + exp(−k (s − s0)))``), signal ``s`` in e⁻.

    Raises
    ------
    ValueError
        Unknown trap type, wrong number of coefficients, non-positive size or emission time.
    """

    size: float
    emission_time: float
    pixel: int = 0
    trap_type: str = "linear"
    coeffs: list[float] = field(default_factory=lambda: [1.0])

    def __post_init__(self) -> None:
        self.trap_type = str(self.trap_type).lower()
        self.coeffs = [float(c) for c in self.coeffs]
        if self.trap_type not in TRAP_TYPES:
            raise ValueError(f"serial trap type {self.trap_type!r} is unknown; use one of {TRAP_TYPES}")
        need = 1 if self.trap_type == "linear" else 2
        if len(self.coeffs) != need:
            raise ValueError(f"a {self.trap_type} serial trap needs {need} coefficient(s), got {self.coeffs}")
        if not (self.size > 0 and self.emission_time > 0):
            raise ValueError(
                f"serial trap size ({self.size}) and emission_time ({self.emission_time}) must be > 0"
            )
        self.pixel = int(self.pixel)

    def capture(self, signal: np.ndarray) -> np.ndarray:
        """Trap occupancy ``f(s)`` reached by a packet of ``signal`` e⁻ (same shape, e⁻).

        Clipped to ``[0, max(s, 0)]``: a trap cannot hold more than the packet brought.
        """
        s = np.asarray(signal, dtype=_work_dtype(signal))
        t = s.dtype.type
        if self.trap_type == "linear":
            f = s * t(self.coeffs[0])
            np.minimum(f, t(self.size), out=f)
        else:
            s0, k = self.coeffs
            with np.errstate(over="ignore"):
                f = t(self.size) / (1 + np.exp((s - t(s0)) * t(-k)))
        np.maximum(f, 0, out=f)
        return np.minimum(f, np.maximum(s, 0), out=f)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (YAML/JSON)."""
        return {
            "size": float(self.size),
            "emissionTime": float(self.emission_time),
            "pixel": int(self.pixel),
            "trapType": self.trap_type,
            "coeffs": list(self.coeffs),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SerialTrap:
        """Inverse of `to_dict` (also accepts the snake_case keys)."""
        return cls(
            size=float(d["size"]),
            emission_time=float(d.get("emissionTime", d.get("emission_time"))),
            pixel=int(d.get("pixel", 0)),
            trap_type=str(d.get("trapType", d.get("trap_type", "linear"))),
            coeffs=list(d.get("coeffs", [1.0])),
        )


# --------------------------------------------------------------------------------------------
# pure model functions (arrays in readout orientation, x = 0 read first)
# --------------------------------------------------------------------------------------------
def decayed_running_max(values: np.ndarray, r: float, n: int | None = None) -> np.ndarray:
    """``M_x = max_{0 ≤ k < n} r^k v_{x−k}`` along the last axis (terms before ``x = 0`` absent).

    Parameters
    ----------
    values : `numpy.ndarray`, shape ``(ny, nx)``
        Non-negative values (e⁻).
    r : `float`
        Decay per pixel, ``0 <= r < 1``.
    n : `int`, optional
        Number of terms (the current pixel and ``n − 1`` previous ones); `None` = all (exact
        recursion ``M_x = max(v_x, r M_{x−1})``, a loop over columns).

    Returns
    -------
    running_max : `numpy.ndarray`, shape ``(ny, nx)``
        float32 for float32 input, else float64.
    """
    v = np.asarray(values, dtype=_work_dtype(values))
    nx = v.shape[-1]
    if n is None:
        out = v.copy()
        for x in range(1, nx):
            np.maximum(out[..., x], r * out[..., x - 1], out=out[..., x])
        return out
    n = max(1, min(int(n), nx))
    # Doubling: W_{2p} = max(W_p, r^p shift_p(W_p)) covers k in [0, 2p); a window of n is
    # max(W_p, r^(n-p) shift_(n-p)(W_p)) with p the largest power of two <= n (the two ranges
    # [0, p) and [n-p, n) overlap and max is idempotent): log2(n) + 1 passes instead of n - 1.
    out = v.copy()
    p = 1
    while 2 * p <= n:
        np.maximum(out[..., p:], out[..., :-p] * (r**p), out=out[..., p:])
        p *= 2
    if p < n:
        d = n - p
        shifted = out[..., :-d] * (r**d)
        np.maximum(out[..., d:], shifted, out=out[..., d:])
    return out


def local_offset(
    signal: np.ndarray, drift_scale: float, decay_time: float, n: int | None = None
) -> np.ndarray:
    """Local electronic offset ``L_x = max_k d·max(0, s_{x−k}) exp(−k / t)`` (e⁻).

    Parameters
    ----------
    signal : `numpy.ndarray`, shape ``(ny, nx)``
        Signal in readout orientation (e⁻).
    drift_scale : `float`
        ``d`` (dimensionless); 0 gives zeros.
    decay_time : `float`
        ``t`` in pixels (> 0).
    n : `int`, optional
        Pixels used (``nPixelOffsetCorrection``); `None` = all.

    Returns
    -------
    offset : `numpy.ndarray`, shape ``(ny, nx)`` (float32 for float32 input, else float64)
    """
    s = np.asarray(signal, dtype=_work_dtype(signal))
    if drift_scale == 0:
        return np.zeros(s.shape, s.dtype)
    r = math.exp(-1.0 / decay_time) if decay_time > 0 else 0.0
    v = np.maximum(s, 0)
    v *= s.dtype.type(drift_scale)
    return decayed_running_max(v, r, n)


def trap_occupancy(signal: np.ndarray, trap: SerialTrap, n: int | None = None) -> np.ndarray:
    """Occupancy ``O_x`` of a serial trap after packet ``x`` (e⁻; 0 before ``trap.pixel``).

    Parameters
    ----------
    signal : `numpy.ndarray`, shape ``(ny, nx)``
        Packets in readout orientation (e⁻).
    trap : `SerialTrap`
    n : `int`, optional
        Packets remembered (``nPixelTrapCorrection``); `None` = all.

    Returns
    -------
    occupancy : `numpy.ndarray`, shape ``(ny, nx)`` (float32 for float32 input, else float64)
    """
    f = trap.capture(signal)
    if trap.pixel > 0:
        f[..., : trap.pixel] = 0.0
    return decayed_running_max(f, math.exp(-1.0 / trap.emission_time), n)


def _shift_right(a: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a)
    out[..., 1:] = a[..., :-1]
    return out


def global_cti_forward(signal: np.ndarray, cti: float) -> np.ndarray:
    """First-order global CTI: ``s_x − ε (x + 1) s_x + ε x s_{x−1}`` (module docstring)."""
    s = np.asarray(signal, dtype=np.float64)
    lost = cti * np.arange(1, s.shape[-1] + 1) * s
    return s - lost + _shift_right(lost)


def global_cti_correct(observed: np.ndarray, cti: float) -> np.ndarray:
    """Remove first-order global CTI estimated from the observed packets.

    Returns a new array (float32 for float32 input, else float64).
    """
    c = np.array(observed, dtype=_work_dtype(observed))
    if cti == 0:
        return c
    lost = c * (cti * np.arange(1, c.shape[-1] + 1, dtype=c.dtype))
    c += lost
    c[..., 1:] -= lost[..., :-1]
    return c


def _work_dtype(a: np.ndarray) -> type:
    """float32 stays float32 (the deferred charge is tiny); anything else is float64."""
    return np.float32 if np.asarray(a).dtype == np.float32 else np.float64


def simulate_serial_cti(
    image: np.ndarray,
    *,
    drift_scale: float = 0.0,
    decay_time: float = 1.0,
    global_cti: float = 0.0,
    traps: Sequence[SerialTrap] = (),
) -> np.ndarray:
    """Forward model: add serial deferred charge to a true image (exact, no truncation).

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        True packets in readout orientation (e⁻).
    drift_scale, decay_time : `float`
        Local offset parameters (``decay_time`` in pixels).
    global_cti : `float`
        Global CTI per transfer.
    traps : sequence of `SerialTrap`

    Returns
    -------
    observed : `numpy.ndarray`, shape ``(ny, nx)``, float64
    """
    s = global_cti_forward(image, global_cti)
    for trap in traps:
        occ = trap_occupancy(s, trap, None)
        s = s + _shift_right(occ) - occ
    return s + local_offset(s, drift_scale, decay_time, None)


def correct_serial_cti(
    observed: np.ndarray,
    *,
    drift_scale: float = 0.0,
    decay_time: float = 1.0,
    global_cti: float = 0.0,
    traps: Sequence[SerialTrap] = (),
    n_offset: int = 15,
    n_trap: int = 6,
) -> np.ndarray:
    """Remove the modelled serial deferred charge, estimated from the observed packets.

    Parameters
    ----------
    observed : `numpy.ndarray`, shape ``(ny, nx)``
        Observed packets in readout orientation (e⁻).
    drift_scale, decay_time, global_cti, traps
        Model parameters (see `simulate_serial_cti`); a ``drift_scale`` of 0 skips the offset.
    n_offset : `int`
        ``nPixelOffsetCorrection``: pixels used for the local-offset estimate.
    n_trap : `int`
        ``nPixelTrapCorrection``: previous packets remembered by each trap.

    Returns
    -------
    corrected : `numpy.ndarray`, shape ``(ny, nx)`` (float32 for float32 input, else float64)

    Notes
    -----
    Reverse order of the forward model: local offset, traps (last to first), global CTI
    (module docstring; LSST ``DeferredChargeTask.local_offset_inverse`` /
    ``local_trap_inverse`` approach).
    """
    c = np.array(observed, dtype=_work_dtype(observed))
    if drift_scale > 0:
        c -= local_offset(c, drift_scale, decay_time, n_offset)
    for trap in reversed(list(traps)):
        occ = trap_occupancy(c, trap, n_trap)
        c += occ  # minus the deferred charge O_{x-1} - O_x
        c[..., 1:] -= occ[..., :-1]
    return global_cti_correct(c, global_cti) if global_cti else c


def readout_slices(amp: Any) -> tuple[slice, slice, bool]:
    """Raw slices of an amplifier's segment and whether its rows are read from the right.

    The read direction comes from the raw geometry: the serial prescan is read first, the
    serial overscan last; without either, from ``readout_corner`` (assembled frame) combined
    with ``raw_flip_x``.

    Returns
    -------
    ys, xs : `slice`
        ``amp.raw_bbox`` slices.
    from_right : `bool`
        True if the first pixel read is at the right end of each row.
    """
    data = amp.raw_data_bbox
    pre, over = amp.raw_serial_prescan_bbox, amp.raw_serial_overscan_bbox
    if not pre.is_empty:
        from_right = pre.x0 >= data.x1
    elif not over.is_empty:
        from_right = over.x1 <= data.x0
    else:
        from_right = str(amp.readout_corner).upper().endswith("R") != bool(amp.raw_flip_x)
    ys, xs = amp.raw_bbox.slices
    return ys, xs, bool(from_right)


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------
class DeferredChargeCalib(IsrCalib):
    """Per-amplifier serial CTI parameters (LSST ``DeferredChargeCalib``, dataset ``cpCtiCalib``).

    Parameters
    ----------
    driftScale, decayTime, globalCti : mapping of amp name to `float`, optional
        Local-offset scale (dimensionless), its decay time (pixels), global CTI per transfer.
    serialTraps : mapping of amp name to `SerialTrap` (or its dict, or a list of them), optional
    units : {"electron", "adu"}
        Units of the trap sizes / signals the parameters refer to (``useGains`` converts the
        image to electrons first when ``"electron"``).
    **kwargs
        See `IsrCalib`.

    Notes
    -----
    Stored as one astropy table row per amp (FITS via `IsrCalibFormatter`, storage class
    ``IsrCalib``) or as YAML (`write_yaml` / `read_yaml`).
    """

    calib_type = "CTI"

    def __init__(
        self,
        driftScale: Mapping[str, float] | None = None,
        decayTime: Mapping[str, float] | None = None,
        globalCti: Mapping[str, float] | None = None,
        serialTraps: Mapping[str, Any] | None = None,
        units: str = "electron",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.driftScale = {k: float(v) for k, v in (driftScale or {}).items()}
        self.decayTime = {k: float(v) for k, v in (decayTime or {}).items()}
        self.globalCti = {k: float(v) for k, v in (globalCti or {}).items()}
        self.serialTraps: dict[str, list[SerialTrap]] = {}
        for amp, traps in (serialTraps or {}).items():
            if traps is None:
                continue
            seq = traps if isinstance(traps, (list, tuple)) else [traps]
            self.serialTraps[amp] = [t if isinstance(t, SerialTrap) else SerialTrap.from_dict(t) for t in seq]
        if units not in ("electron", "adu"):
            raise ValueError(f"DeferredChargeCalib units must be 'electron' or 'adu', got {units!r}")
        self.units = units

    @property
    def ampNames(self) -> list[str]:
        """Amplifiers with any parameter."""
        names = set(self.driftScale) | set(self.decayTime) | set(self.globalCti) | set(self.serialTraps)
        return sorted(names)

    def parameters(self, amp: str) -> dict[str, Any]:
        """Keyword arguments of `correct_serial_cti` for one amplifier (zeros when absent)."""
        return {
            "drift_scale": self.driftScale.get(amp, 0.0),
            "decay_time": self.decayTime.get(amp, 1.0),
            "global_cti": self.globalCti.get(amp, 0.0),
            "traps": list(self.serialTraps.get(amp, [])),
        }

    # -- plain data / YAML ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-data form: ``{"metadata", "units", "amplifiers": {amp: {...}}}``."""
        amps = {}
        for amp in self.ampNames:
            amps[amp] = {
                "driftScale": self.driftScale.get(amp, 0.0),
                "decayTime": self.decayTime.get(amp, 1.0),
                "globalCti": self.globalCti.get(amp, 0.0),
                "serialTraps": [t.to_dict() for t in self.serialTraps.get(amp, [])],
            }
        return {"metadata": dict(self.metadata), "units": self.units, "amplifiers": amps}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeferredChargeCalib:
        """Inverse of `to_dict`.

        Raises
        ------
        ValueError
            If ``amplifiers`` is missing.
        """
        if "amplifiers" not in d:
            raise ValueError("a DeferredChargeCalib dict needs an 'amplifiers' mapping (amp -> parameters)")
        amps = d["amplifiers"]
        return cls(
            driftScale={a: p.get("driftScale", 0.0) for a, p in amps.items()},
            decayTime={a: p.get("decayTime", 1.0) for a, p in amps.items()},
            globalCti={a: p.get("globalCti", 0.0) for a, p in amps.items()},
            serialTraps={a: p.get("serialTraps", []) for a, p in amps.items()},
            units=d.get("units", "electron"),
            metadata=d.get("metadata"),
        )

    def write_yaml(self, path: str | os.PathLike[str]) -> None:
        """Write `to_dict` as YAML."""
        import yaml

        with open(path, "w") as fh:
            yaml.safe_dump(json.loads(json.dumps(self.to_dict(), default=str)), fh, sort_keys=False)

    @classmethod
    def read_yaml(cls, path: str | os.PathLike[str]) -> DeferredChargeCalib:
        """Read a file written by `write_yaml`."""
        import yaml

        with open(path) as fh:
            return cls.from_dict(yaml.safe_load(fh))

    # -- table ---------------------------------------------------------------------------------
    def to_table(self) -> list[Table]:
        """One row per amp: AMPLIFIER, DRIFT_SCALE, DECAY_TIME, GLOBAL_CTI, SERIAL_TRAPS (JSON)."""
        from astropy.table import Table

        names = self.ampNames
        t = Table(
            {
                "AMPLIFIER": names,
                "DRIFT_SCALE": [self.driftScale.get(a, 0.0) for a in names],
                "DECAY_TIME": [self.decayTime.get(a, 1.0) for a in names],
                "GLOBAL_CTI": [self.globalCti.get(a, 0.0) for a in names],
                "SERIAL_TRAPS": [
                    json.dumps([t.to_dict() for t in self.serialTraps.get(a, [])]) for a in names
                ],
            }
        )
        t.meta.update(self.metadata)
        t.meta["CTI_UNITS"] = self.units
        return [t]

    @classmethod
    def from_table(cls, tables: Sequence[Table]) -> DeferredChargeCalib:
        """Build from `to_table` output (see `IsrCalib.from_table`)."""
        t = tables[0]
        _need(t, ("AMPLIFIER", "DRIFT_SCALE", "DECAY_TIME", "GLOBAL_CTI", "SERIAL_TRAPS"), "CTI calibration")
        meta = dict(t.meta)
        units = meta.pop("CTI_UNITS", "electron")
        names = [str(a) for a in t["AMPLIFIER"]]
        return cls(
            driftScale=dict(zip(names, (float(v) for v in t["DRIFT_SCALE"]))),
            decayTime=dict(zip(names, (float(v) for v in t["DECAY_TIME"]))),
            globalCti=dict(zip(names, (float(v) for v in t["GLOBAL_CTI"]))),
            serialTraps={a: json.loads(str(s)) for a, s in zip(names, t["SERIAL_TRAPS"])},
            units=units,
            metadata=meta,
        )
