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

__all__ = ["SynthDetector", "make_correlated_flat", "make_detector", "make_exposure", "make_flat",
           "make_pair_sequence"]


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


def make_detector(det: SynthDetector, det_id: int = 0):
    """A `pipeline.image.Detector` with the synthetic amp layout (nominal gain/noise = truth)."""
    from pipeline.image import Amplifier, Box, Detector

    amps = tuple(
        Amplifier(name=n, gain=g, read_noise=rn, bbox=Box(i * det.nx_amp, 0, det.nx_amp, det.ny))
        for i, (n, g, rn) in enumerate(zip(det.names, det.gains, det.read_noise_e))
    )
    return Detector(id=det_id, name=f"det{det_id:02d}", bbox=Box(0, 0, det.shape[1], det.ny),
                    amplifiers=amps)


def make_exposure(image: np.ndarray, detector, exp_id: int, exp_time: float,
                  mask: np.ndarray | None = None, obs_type: str = "flat", dark_time: float | None = None,
                  variance: np.ndarray | None = None):
    """Wrap an ``(ny, nx)`` array as a post-ISR `pipeline.image.Exposure`."""
    from astropy.time import Time, TimeDelta

    from pipeline.image import Exposure, ExposureInfo, MaskedImage

    begin = Time(60000.0 + exp_id / 1440.0, format="mjd", scale="tai")
    info = ExposureInfo(id=exp_id, obs_id=f"synth{exp_id}", instrument="synth",
                        exposure_time=exp_time,
                        dark_time=exp_time if dark_time is None else dark_time,
                        observation_type=obs_type, physical_filter="white", begin=begin,
                        end=begin + TimeDelta(exp_time, format="sec"), detector=detector.id)
    mi = MaskedImage(image.astype(np.float32),
                     None if mask is None else mask.astype(np.int32),
                     None if variance is None else variance.astype(np.float32))
    return Exposure(mi, detector=detector, info=info)


def make_correlated_flat(mean_adu: float, cov_lags: np.ndarray, shape: tuple[int, int],
                         rng: np.random.Generator) -> np.ndarray:
    """Gaussian flat with an exactly prescribed covariance function (ADU).

    ``cov_lags[i, j]`` (ADU²) is the covariance at lag ``(dx=i, dy=j)``, first quadrant, assumed
    symmetric in both axes. White noise is filtered by ``sqrt(PSD)`` where the power spectrum is
    the Fourier transform of the (circular) covariance function, so the image's covariance at
    every lag in the matrix is ``cov_lags`` and zero beyond. Used to test the FULLCOVARIANCE fit
    against Astier+19 eq. 20 truth without simulating the physics.
    """
    ny, nx = shape
    r = cov_lags.shape[0]
    kern = np.zeros((ny, nx))
    for i in range(r):
        for j in range(r):
            for sx in (1, -1):
                for sy in (1, -1):
                    kern[(sy * j) % ny, (sx * i) % nx] = cov_lags[i, j]
    psd = np.fft.rfft2(kern).real
    if np.any(psd < 0):
        raise ValueError("covariance matrix is not positive definite on this grid")
    white = rng.standard_normal(shape)
    img = np.fft.irfft2(np.fft.rfft2(white) * np.sqrt(psd), s=shape)
    return mean_adu + img
