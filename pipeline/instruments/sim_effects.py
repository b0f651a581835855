"""Opt-in detector effects for the raw simulator, each with its injected truth.

Effects are objects put in `SimulationTruth.effects` (empty by default, so a simulation without
them is unchanged), e.g.::

    truth = make_truth(get_instrument("testcam"), seed=3)
    truth.effects.append(DefectEffect(hot_pixels=[(10, 20)], cold_columns=[(40, 0, 96)]))
    simulate_raws("testcam", "sim/", exposures=[...], truth=truth)

`simulate.render_detector` calls the hooks an effect defines (the same duck-typed protocol as
`pipeline.instruments.sim_crosstalk_cti`): ``add_charge(detector, spec, expected, rng)`` on the
expected charge (e⁻, assembled frame) before the shot-noise draw; ``draw_electrons(detector, spec,
expected, rng)`` replacing the draw itself; ``transfer(amp, raw, gain)`` in place on one
amplifier's raw signal (ADU, before bias and read noise); ``to_dict()`` for ``truth.json``.

Effects here (issue "defects, linearity, brighter-fatter kernel"):

* `DefectEffect`: hot pixels and columns (extra dark current, seen in darks and flats) and
  cold pixels and columns (low response, seen in flats), at known places.
* `PolynomialNonLinearity`: per-amp ``ADU → ADU + c2·ADU² + c3·ADU³``.
* `BrighterFatterEffect`: the pixel area depends on the charge already collected,
  ``A_x = 1 + Σ_δ a_δ · Q_{x+δ}`` (Antilogus et al. 2014; Astier et al. 2019 eq. 2-3), with
  ``Σ_δ a_δ = 0`` over all four quadrants (charge is conserved on average). Integrating the
  exposure in ``n_steps`` Poisson increments gives flat-field covariances
  ``C_δ = μ δ_{δ0} + a_δ μ²`` (e⁻², to first order in ``a μ``), so the PTC measures ``a00``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BrighterFatterEffect",
    "DefectEffect",
    "PolynomialNonLinearity",
]


def _spec_times(spec: Any) -> tuple[float, float]:
    """``(dark_time, level)`` of an `ExposureSpec` (s, e⁻ at flat = 1)."""
    exptime = float(spec.exposure_time)
    dark_time = exptime if spec.dark_time is None else float(spec.dark_time)
    if spec.observation_type in ("flat", "science", "arc"):
        level = float(spec.level) if spec.level is not None else float(spec.flux) * exptime
    else:
        level = 0.0
    return dark_time, level


# -- defects ------------------------------------------------------------------------------------
@dataclass
class DefectEffect:
    """Hot and cold pixels and columns at known places (assembled detector pixels).

    Parameters
    ----------
    hot_pixels, cold_pixels : sequence of ``(x, y)``
        Single pixels.
    hot_columns, cold_columns : sequence of ``(x, y0, y1)``
        Column segments ``y0 <= y < y1`` (use ``0, ny`` for a full column).
    hot_current : `float`
        Extra dark current of hot pixels (e⁻/s): they stand out in darks, and in flats too when
        ``hot_current · t`` is many sigma above the flat level's noise.
    hot_offset : `float`
        Extra charge of hot pixels in every non-bias exposure (e⁻): makes them visible in short
        flats as well.
    cold_response : `float`
        Relative response (QE) of cold pixels (0 .. 1), seen in flats.
    detectors : sequence of `int`, optional
        Detector ids the defects apply to (default: all).
    """

    hot_pixels: Sequence[tuple[int, int]] = ()
    cold_pixels: Sequence[tuple[int, int]] = ()
    hot_columns: Sequence[tuple[int, int, int]] = ()
    cold_columns: Sequence[tuple[int, int, int]] = ()
    hot_current: float = 200.0
    hot_offset: float = 0.0
    cold_response: float = 0.3
    detectors: Sequence[int] | None = None

    def _applies(self, detector: Any) -> bool:
        return self.detectors is None or detector.id in self.detectors

    def masks(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Boolean ``(hot, cold)`` masks of shape ``(ny, nx)``."""
        hot = np.zeros(shape, bool)
        cold = np.zeros(shape, bool)
        for x, y in self.hot_pixels:
            hot[y, x] = True
        for x, y in self.cold_pixels:
            cold[y, x] = True
        for x, y0, y1 in self.hot_columns:
            hot[y0:y1, x] = True
        for x, y0, y1 in self.cold_columns:
            cold[y0:y1, x] = True
        return hot, cold

    def add_charge(self, detector: Any, spec: Any, expected: np.ndarray, rng: Any = None) -> np.ndarray:
        """Scale the light on cold pixels; add dark current (and offset) on hot ones (e⁻)."""
        if not self._applies(detector):
            return expected
        dark_time, level = _spec_times(spec)
        hot, cold = self.masks(expected.shape)
        out = expected.copy()
        if level:
            out[cold] -= (1.0 - self.cold_response) * expected[cold]
        if spec.observation_type != "bias":
            out[hot] += self.hot_current * dark_time + self.hot_offset
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the injected truth (``truth.json``)."""
        return {
            "hot_pixels": [list(map(int, p)) for p in self.hot_pixels],
            "cold_pixels": [list(map(int, p)) for p in self.cold_pixels],
            "hot_columns": [list(map(int, c)) for c in self.hot_columns],
            "cold_columns": [list(map(int, c)) for c in self.cold_columns],
            "hot_current": self.hot_current,
            "hot_offset": self.hot_offset,
            "cold_response": self.cold_response,
            "detectors": None if self.detectors is None else list(self.detectors),
        }


# -- non-linearity ------------------------------------------------------------------------------
@dataclass
class PolynomialNonLinearity:
    """Per-amp polynomial non-linearity ``ADU → ADU + Σ_k c_k ADU^(k+2)``.

    Parameters
    ----------
    coeffs : mapping of amp name to sequence of `float`
        ``[c2, c3, ...]`` (1/ADU, 1/ADU², ...), the ip_isr ``Polynomial`` layout with the
        opposite sign: a linearizer with coefficients ``-c2`` undoes ``c2`` to first order.
        Amps not listed use ``default``.
    default : sequence of `float`
        Coefficients of the amps not in ``coeffs``.
    """

    coeffs: Mapping[str, Sequence[float]] = field(default_factory=dict)
    default: Sequence[float] = ()

    def amp_coeffs(self, amp_name: str) -> list[float]:
        """``[c2, c3, ...]`` of one amplifier."""
        return [float(c) for c in self.coeffs.get(amp_name, self.default)]

    def transfer(self, amp: Any, raw: np.ndarray, gain: float) -> None:
        """Apply the amp's polynomial to its signal (ADU) in the raw frame, in place."""
        cs = self.amp_coeffs(amp.name)
        if not any(cs):
            return
        box = raw[amp.raw_data_bbox.slices]
        a = box.astype(np.float64)
        out = a.copy()
        for k, c in enumerate(cs, start=2):
            out += c * a**k
        box[...] = out

    def to_dict(self) -> dict[str, Any]:
        """Return the injected truth (``truth.json``)."""
        return {"coeffs": {k: list(map(float, v)) for k, v in self.coeffs.items()},
                "default": list(map(float, self.default))}


# -- brighter-fatter ----------------------------------------------------------------------------
def _tile_quadrant(a: np.ndarray) -> np.ndarray:
    """Mirror a first-quadrant ``[dx, dy]`` matrix ``(r, r)`` into a ``(2r-1, 2r-1)`` ``[y, x]`` kernel."""
    r = a.shape[0]
    full = np.zeros((2 * r - 1, 2 * r - 1))
    for dx in range(r):
        for dy in range(r):
            for sx in (-1, 1):
                for sy in (-1, 1):
                    full[r - 1 + sy * dy, r - 1 + sx * dx] = a[dx, dy]
    return full


def _correlate_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``out[y, x] = Σ_δ kernel[δ] · image[y + δy, x + δx]`` (zero outside), small kernels."""
    ky, kx = kernel.shape
    ry, rx = ky // 2, kx // 2
    ny, nx = image.shape
    out = np.zeros_like(image)
    for j in range(ky):
        for i in range(kx):
            w = kernel[j, i]
            if w == 0.0:
                continue
            dy, dx = j - ry, i - rx
            ys, yd = slice(max(dy, 0), ny + min(dy, 0)), slice(max(-dy, 0), ny + min(-dy, 0))
            xs, xd = slice(max(dx, 0), nx + min(dx, 0)), slice(max(-dx, 0), nx + min(-dx, 0))
            out[yd, xd] += w * image[ys, xs]
    return out


@dataclass
class BrighterFatterEffect:
    """Charge-dependent pixel area with a known coupling matrix ``a`` (Astier et al. 2019).

    Parameters
    ----------
    a : array-like, shape ``(r, r)``
        First-quadrant coupling ``a[dx, dy]`` (1/e⁻): the fractional area change of a pixel per
        electron in the pixel at lag ``(dx, dy)`` (and its mirror images). ``a[0, 0] < 0``;
        unless ``zero_sum=False`` ``a[0, 0]`` is set so that the four-quadrant sum is 0.
    n_steps : `int`
        Poisson increments the exposure is integrated in (the charge-dependence is applied
        between increments). With ``n`` increments the pairs of distinct increments give
        ``C_δ = a_δ μ² (1 - 1/n)``, so the coupling is applied scaled by ``n / (n - 1)`` and the
        realised covariances are ``a_δ μ²`` for any ``n >= 2``.
    zero_sum : `bool`
        Force ``Σ a = 0`` by adjusting ``a[0, 0]``.
    """

    a: Any = field(default_factory=lambda: np.array([[-3.0e-6, 6.0e-7], [6.0e-7, 1.5e-7]]))
    n_steps: int = 8
    zero_sum: bool = True

    def __post_init__(self) -> None:
        a = np.array(self.a, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"brighter-fatter coupling matrix must be square (r, r), got shape {a.shape}")
        if self.zero_sum:
            full = _tile_quadrant(a)
            a[0, 0] -= full.sum()
        self.a = a
        if self.n_steps < 2:
            raise ValueError(f"n_steps must be >= 2, got {self.n_steps}")

    @property
    def a00(self) -> float:
        """Injected ``a00`` (1/e⁻)."""
        return float(self.a[0, 0])

    def kernel(self) -> np.ndarray:
        """Four-quadrant coupling ``[y, x]`` (``(2r-1, 2r-1)``, 1/e⁻)."""
        return _tile_quadrant(self.a)

    def draw_electrons(self, detector: Any, spec: Any, expected: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
        """Accumulate ``expected`` in ``n_steps`` Poisson increments with charge-dependent areas.

        Each increment has mean ``expected / n · (1 + n/(n-1) · Σ_δ a_δ Q_{x+δ})`` where ``Q`` is
        the charge collected so far (``n = n_steps``). Increments are drawn as Gaussians of equal
        mean and variance above 1000 e⁻ per increment (exact Poisson below), as the simulator's
        own draw.
        """
        k = self.kernel() * (self.n_steps / (self.n_steps - 1))
        lam0 = np.clip(expected, 0, None).astype(np.float64) / self.n_steps
        q = np.zeros_like(lam0)
        for _ in range(self.n_steps):
            lam = lam0 * (1.0 + _correlate_same(q, k)) if q.any() else lam0
            lam = np.clip(lam, 0, None)
            big = lam >= 1000.0
            inc = np.empty_like(lam)
            if big.any():
                lb = lam[big]
                inc[big] = np.rint(lb + np.sqrt(lb) * rng.standard_normal(lb.shape))
            if (~big).any():
                inc[~big] = rng.poisson(lam[~big])
            q += inc
        return q.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Return the injected truth (``truth.json``)."""
        return {"a": self.a.tolist(), "a00": self.a00, "n_steps": self.n_steps}
