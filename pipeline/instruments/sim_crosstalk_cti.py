"""Simulator effects with known truth: bright spots for crosstalk, and serial CTI.

Both are opt-in objects put in `SimulationTruth.effects` (the simulator's default list is empty):

* `BrightSpots` adds round, flat-topped bright spots (some above saturation) to the expected
  charge of ``science`` exposures, so the simulator's crosstalk (``truth.crosstalk[det]``,
  ``[source, target]``, ADU, set with `crosstalk_matrix`) leaves measurable ghosts in the other
  amplifiers;
* `SerialCti` moves charge along the serial register of every amplifier (readout order, e⁻,
  before the bias and read noise are added): first-order global CTI ``ε`` and one linear serial
  trap (Snyder et al. 2021, PASP 133, 074504). Its `to_dict` is the truth the CTI solver must
  recover.

The CTI forward model is written here from its physical description (a sequential loop over the
packets), independently of the correction code in ``pipeline.tasks.isr.deferred_charge``, so
that a test of one against the other is not a test of a function against itself.

Example::

    truth = make_truth(inst, seed=1, crosstalk=False)
    truth.crosstalk[0] = crosstalk_matrix(4, seed=1)
    truth.effects.append(BrightSpots(n_spots=12, level=60000.0))
    raws, truth = simulate_exposures(inst, specs, truth=truth, seed=1)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["BrightSpots", "SerialCti", "crosstalk_matrix", "serial_readout"]


def crosstalk_matrix(
    n_amp: int,
    *,
    seed: int = 0,
    low: float = 1e-4,
    high: float = 1e-3,
    n_zero: int = 2,
) -> np.ndarray:
    """Draw a crosstalk matrix ``[source, target]``, log-uniform coefficients in ``[low, high]``.

    Parameters
    ----------
    n_amp : `int`
        Number of amplifiers.
    seed : `int`
        Random seed.
    low, high : `float`
        Range of the off-diagonal coefficients (dimensionless, ADU/ADU).
    n_zero : `int`
        Off-diagonal entries set to exactly 0 (pairs without crosstalk, to test that the solver
        finds no false coefficient).

    Returns
    -------
    coeffs : `numpy.ndarray`, shape ``(n_amp, n_amp)``
        Zero diagonal.
    """
    rng = np.random.default_rng(seed)
    c = np.exp(rng.uniform(math.log(low), math.log(high), (n_amp, n_amp)))
    np.fill_diagonal(c, 0.0)
    off = [(i, j) for i in range(n_amp) for j in range(n_amp) if i != j]
    for k in rng.choice(len(off), size=min(n_zero, len(off)), replace=False):
        c[off[k]] = 0.0
    return c


@dataclass
class BrightSpots:
    """Flat-topped round spots added to ``science`` exposures (crosstalk sources).

    Attributes
    ----------
    n_spots : int
        Spots per detector and exposure, at random positions (none within ``radius`` of an edge).
    radius : float
        Pixels.
    level : float
        e⁻ per pixel of the spot top; each spot draws its level uniformly in
        ``[0.6, 1.0] · level``.
    saturated_fraction : float
        Fraction of spots given ``saturated_level`` instead (above the ADC saturation).
    saturated_level : float
        e⁻ per pixel of a saturated spot.
    observation_types : tuple of str
        Exposure types that get spots.
    """

    n_spots: int = 10
    radius: float = 6.0
    level: float = 75000.0
    saturated_fraction: float = 0.2
    saturated_level: float = 300000.0
    observation_types: tuple[str, ...] = ("science",)

    def add_charge(
        self, detector: Any, spec: Any, expected: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Add the spots to the expected charge (assembled frame, e⁻); simulator hook."""
        if spec.observation_type not in self.observation_types:
            return expected
        ny, nx = expected.shape
        r = float(self.radius)
        yy, xx = np.mgrid[0:ny, 0:nx]
        out = expected.copy()
        for _ in range(int(self.n_spots)):
            x0 = rng.uniform(r + 1, nx - r - 1)
            y0 = rng.uniform(r + 1, ny - r - 1)
            sat = rng.uniform() < self.saturated_fraction
            lev = self.saturated_level if sat else rng.uniform(0.6, 1.0) * self.level
            disc = (xx - x0) ** 2 + (yy - y0) ** 2 <= r * r
            out[disc] += np.float32(lev)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-data truth."""
        d = asdict(self)
        d["observation_types"] = list(self.observation_types)
        return d


def serial_readout(amp: Any) -> tuple[tuple[slice, slice], bool]:
    """Raw slices of an amplifier's segment and whether its rows are read from the right.

    The serial prescan is read first and the serial overscan last; without either, the readout
    corner (assembled frame) combined with ``raw_flip_x`` decides.
    """
    data = amp.raw_data_bbox
    pre, over = amp.raw_serial_prescan_bbox, amp.raw_serial_overscan_bbox
    if not pre.is_empty:
        from_right = pre.x0 >= data.x1
    elif not over.is_empty:
        from_right = over.x1 <= data.x0
    else:
        from_right = str(amp.readout_corner).upper().endswith("R") != bool(amp.raw_flip_x)
    return amp.raw_bbox.slices, bool(from_right)


@dataclass
class SerialCti:
    """Serial charge transfer inefficiency: global CTI and one linear trap (truth).

    Attributes
    ----------
    global_cti : float
        Fraction of a packet left behind per serial transfer; the packet read ``x``-th (0 = the
        first) crosses ``x + 1`` transfers and what it loses trails into the next packet (first
        order in ``ε·x``).
    trap_size : float
        Trap capacity, e⁻.
    trap_emission_time : float
        Emission time constant, in pixel transfers: between two packets the trap keeps
        ``exp(-1/τ)`` of its charge and releases the rest into the next packet.
    trap_scaling : float
        Linear capture: a packet of ``s`` e⁻ fills the trap up to ``min(size, scaling · s)``.
    trap_pixel : int
        Register position of the trap: packets read before it (index < pixel) do not cross it.
    amps : list of str, optional
        Amplifiers affected (default all).
    """

    global_cti: float = 5e-6
    trap_size: float = 20.0
    trap_emission_time: float = 1.0
    trap_scaling: float = 0.05
    trap_pixel: int = 0
    amps: list[str] | None = field(default=None)

    def propagate(self, rows: np.ndarray) -> np.ndarray:
        """Apply the serial transfer to packets in readout order (``(ny, nx)``, e⁻).

        Sequential over packets (the exact recursion): global CTI first, then the trap.
        """
        s = np.asarray(rows, dtype=np.float64)
        nx = s.shape[1]
        lost = self.global_cti * np.arange(1, nx + 1)[None, :] * s
        out = s - lost
        out[:, 1:] += lost[:, :-1]
        if self.trap_size > 0:
            keep = math.exp(-1.0 / self.trap_emission_time)
            occ = np.zeros(s.shape[0])
            for x in range(max(self.trap_pixel, 0), nx):
                packet = out[:, x]
                released = occ * (1.0 - keep)
                occ_kept = occ * keep
                fill = np.minimum(self.trap_size, self.trap_scaling * np.maximum(packet, 0.0))
                captured = np.maximum(fill - occ_kept, 0.0)
                out[:, x] = packet + released - captured
                occ = occ_kept + captured
        return out

    def transfer(self, amp: Any, raw: np.ndarray, gain: float) -> None:
        """Move charge along the serial register of one amplifier (simulator hook, ADU, in place)."""
        if self.amps is not None and amp.name not in self.amps:
            return
        sl, from_right = serial_readout(amp)
        seg = raw[sl]
        view = seg[:, ::-1] if from_right else seg
        view[...] = (self.propagate(view * gain) / gain).astype(raw.dtype)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data truth (``globalCti``, trap ``size`` e⁻, ``emissionTime``, ``scaling``)."""
        return {
            "globalCti": self.global_cti,
            "trapSize": self.trap_size,
            "emissionTime": self.trap_emission_time,
            "trapScaling": self.trap_scaling,
            "trapPixel": self.trap_pixel,
            "amps": self.amps,
        }
