"""Seeded synthetic flat pairs with known gain, read noise and brighter-fatter-like correlations.

Private stand-in for ``tests/builders.py`` / the raw simulator while those are written. Images
are assembled, overscan-subtracted arrays ``(ny, nx)`` in ADU with amps side by side along x.

Brighter-fatter-like correlations: after Poisson sampling of ``N`` electrons per pixel with
mean ``b``, charge moves between nearest neighbours, ``N' = N + k ∇²N`` with ``k = α b``
(the pixel boundaries shift in proportion to the stored charge). To first order in ``k`` this
gives ``C00 = b - 8 α b²`` and ``C01 = C10 = 2 α b²`` in e⁻², i.e. Astier+19 ``a00 = -8α`` and
``a01 = a10 = 2α`` (1/e⁻) with ``Σ a = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SynthDetector", "make_flat", "make_pair_sequence"]


@dataclass
class SynthDetector:
    """Truth of a synthetic detector: amps side by side along x, each ``(ny, nx_amp)``."""

    gains: tuple[float, ...] = (0.7, 1.5, 2.5, 4.0)
    read_noise_e: tuple[float, ...] = (2.0, 4.0, 7.0, 10.0)
    ny: int = 300
    nx_amp: int = 300
    alpha: float = 0.0  # BF strength: a00 = -8 alpha (1/e-)
    names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.names:
            self.names = tuple(f"C{i:02d}" for i in range(len(self.gains)))

    @property
    def shape(self) -> tuple[int, int]:
        return self.ny, self.nx_amp * len(self.gains)

    def amp_regions(self) -> dict[str, tuple[slice, slice]]:
        return {n: (slice(0, self.ny), slice(i * self.nx_amp, (i + 1) * self.nx_amp))
                for i, n in enumerate(self.names)}

    @property
    def a00(self) -> float:
        return -8.0 * self.alpha


def make_flat(det: SynthDetector, signal_e: float | np.ndarray, rng: np.random.Generator,
              pattern: np.ndarray | None = None) -> np.ndarray:
    """One flat (ADU, float64) at ``signal_e`` electrons per pixel (scalar or per-amp array),
    times an optional illumination ``pattern`` of shape ``det.shape``."""
    out = np.empty(det.shape)
    sig = np.broadcast_to(np.asarray(signal_e, float), (len(det.gains),))
    for i, (g, rn) in enumerate(zip(det.gains, det.read_noise_e)):
        sl = np.s_[:, i * det.nx_amp:(i + 1) * det.nx_amp]
        lam = np.full((det.ny, det.nx_amp), sig[i])
        if pattern is not None:
            lam = lam * pattern[sl]
        n = rng.poisson(lam).astype(np.float64)
        if det.alpha:
            k = det.alpha * lam
            p = np.pad(n, 1, mode="edge")
            lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * n
            n = n + k * lap
        out[sl] = (n + rng.normal(0.0, rn, n.shape)) / g
    return out


def make_pair_sequence(det: SynthDetector, signals_e: np.ndarray, seed: int):
    """Yield ``(exp_time, im1, im2)`` for each signal level (exposure time = signal / 1000 e⁻/s)."""
    rng = np.random.default_rng(seed)
    for s in signals_e:
        yield float(s) / 1000.0, make_flat(det, s, rng), make_flat(det, s, rng)
