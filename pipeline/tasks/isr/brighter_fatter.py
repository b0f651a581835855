"""Brighter-fatter correction (Coulton et al. 2018), pure numpy/scipy.

Reference-algorithms §2.9 (ip_isr ``brighterFatterCorrection``). `brighter_fatter_correction`
corrects one image; `brighter_fatter_delta` applies it to a detector image at DETECTOR or
AMP level (``brighterFatterLevel``) and returns the correction to add.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BrighterFatterResult", "brighter_fatter_correction", "brighter_fatter_delta", "amp_kernels"]


def brighter_fatter_correction(
    image: np.ndarray, kernel: np.ndarray, max_iter: int = 10, threshold: float = 1000.0
) -> tuple[np.ndarray, float, int]:
    """Compute iteratively the brighter-fatter correction of an image in electrons.

    Parameters
    ----------
    image : `numpy.ndarray`, shape ``(ny, nx)``
        Image in e⁻ (NaN treated as 0).
    kernel : `numpy.ndarray`, shape ``(ky, kx)``
        BF kernel in ``[y, x]`` order.
    max_iter : `int`
        ``brighterFatterMaxIter`` (>= 1).
    threshold : `float`
        ``brighterFatterThreshold``: stop when ``sum |I_{n+1} - I_n| < threshold`` (e⁻).

    Returns
    -------
    corrected : `numpy.ndarray`, shape ``(ny, nx)``
        ``image + c`` with ``c`` applied on the interior shrunk by one more pixel.
    difference : `float`
        Last convergence measure (0.0 if only one iteration ran).
    iterations : `int`
        Iterations performed.

    Raises
    ------
    ValueError
        If ``max_iter < 1``.

    Notes
    -----
    Coulton, Mandelbaum et al. 2018, eq. 22: ``c = ½[∇I·∇Φ + I ∇²Φ]`` with ``Φ = K ⊛ I``.
    **QUIRK** (§2.9): with ``max_iter = 1`` the reference leaves the difference undefined;
    we return 0.0 and the one-iteration correction.
    """
    from scipy.signal import fftconvolve  # lazy: scipy.signal takes seconds to import

    if max_iter < 1:
        raise ValueError(f"brighterFatterMaxIter must be >= 1, got {max_iter}")
    orig = np.nan_to_num(image.astype(np.float64), nan=0.0)
    ky, kx = kernel.shape
    y0, y1 = ky // 2, orig.shape[0] - ky // 2
    x0, x1 = kx // 2, orig.shape[1] - kx // 2
    current = orig.copy()
    prev = np.zeros_like(orig)
    corr = np.zeros_like(orig)
    diff = 0.0
    it = 0
    for it in range(max_iter):
        phi = fftconvolve(current, kernel, mode="same")
        gy, gx = np.gradient(current)
        py, px = np.gradient(phi)
        d2y = np.zeros_like(phi)
        d2x = np.zeros_like(phi)
        d2y[1:-1] = phi[2:] - 2 * phi[1:-1] + phi[:-2]
        d2x[:, 1:-1] = phi[:, 2:] - 2 * phi[:, 1:-1] + phi[:, :-2]
        corr = np.zeros_like(orig)
        inner = (slice(y0, y1), slice(x0, x1))
        corr[inner] = 0.5 * (
            gy[inner] * py[inner] + gx[inner] * px[inner] + current[inner] * (d2y[inner] + d2x[inner])
        )
        nxt = orig + corr
        if it >= 1:
            diff = float(np.sum(np.abs(nxt - prev)))
            if diff < threshold:
                current = nxt
                break
        prev = nxt
        current = nxt
    out = image.astype(np.float64).copy()
    shrink = (slice(y0 + 1, y1 - 1), slice(x0 + 1, x1 - 1))
    out[shrink] += corr[shrink]
    return out.astype(image.dtype, copy=False), diff, it + 1


def amp_kernels(kernel: Any, level: str, amp_names: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Per-amp kernels for ``brighterFatterLevel='AMP'`` (`None` at DETECTOR level).

    Parameters
    ----------
    kernel : `numpy.ndarray` or mapping [`str`, `numpy.ndarray`]
        One kernel ``[y, x]`` (used for every amp) or one per amp name.
    level : `str`
        ``"DETECTOR"`` or ``"AMP"``.
    amp_names : sequence of `str`
        The detector's amplifiers.

    Returns
    -------
    kernels : `dict` or `None`

    Raises
    ------
    RuntimeError
        AMP level with a mapping that lacks an amp; DETECTOR level with a mapping.
    """
    if level == "AMP":
        if isinstance(kernel, Mapping):
            missing = [n for n in amp_names if n not in kernel]
            if missing:
                raise RuntimeError(
                    f"brighterFatterLevel='AMP' but the brighter-fatter kernel has no kernel for "
                    f"amp(s) {missing}; provide ampKernels for every amp or use 'DETECTOR'"
                )
            return {n: np.asarray(kernel[n], float) for n in amp_names}
        return {n: np.asarray(kernel, float) for n in amp_names}
    if isinstance(kernel, Mapping):
        raise RuntimeError(
            "per-amp brighter-fatter kernels need brighterFatterLevel='AMP' (or pass one detector kernel)"
        )
    return None


@dataclass
class BrighterFatterResult:
    """Result of `brighter_fatter_delta`.

    Attributes
    ----------
    delta : `numpy.ndarray`, shape ``(ny, nx)``
        Correction to add to the image (ADU, float64).
    difference : `float`
        Last convergence measure (largest over the amps at AMP level).
    iterations : `int`
        Iterations performed (largest over the amps).
    border : `int`
        Kernel half-size: pixels this close to the image edge are not corrected.
    amp_iterations : `dict` [`str`, `int`]
        Iterations per amp (AMP level only).
    """

    delta: np.ndarray
    difference: float
    iterations: int
    border: int
    amp_iterations: dict[str, int] = field(default_factory=dict)


def brighter_fatter_delta(
    image: np.ndarray,
    kernel: Any,
    kernels: Mapping[str, np.ndarray] | None,
    amp_boxes: Mapping[str, Any],
    gains: Mapping[str, float],
    *,
    apply_gain: bool,
    max_iter: int,
    threshold: float,
) -> BrighterFatterResult:
    """Brighter-fatter correction of a detector image, at DETECTOR or AMP level.

    Parameters
    ----------
    image : `numpy.ndarray` of float64, shape ``(ny, nx)``
        Image (ADU) with the masked pixels interpolated; scaled in place by the gains when
        ``apply_gain``.
    kernel : `numpy.ndarray`
        Detector kernel ``[y, x]`` (used when ``kernels`` is `None`).
    kernels : mapping [`str`, `numpy.ndarray`] or `None`
        Per-amp kernels (AMP level, see `amp_kernels`).
    amp_boxes : mapping [`str`, `pipeline.image.Box`]
        Each amp's region.
    gains : mapping [`str`, `float`]
        e⁻/ADU per amp (1 when missing).
    apply_gain : `bool`
        Correct in electrons (``brighterFatterApplyGain``).
    max_iter : `int`
        ``brighterFatterMaxIter``.
    threshold : `float`
        ``brighterFatterThreshold`` (e⁻), for the whole detector.

    Returns
    -------
    result : `BrighterFatterResult`

    Notes
    -----
    AMP level: each amplifier is corrected with its own kernel and gain, on its region grown
    by ``(max_iter + 1) × (radius + 2)`` pixels (each iteration reaches ``radius + 2`` pixels
    further), so that identical kernels give the DETECTOR result away from amp boundaries;
    the convergence threshold is scaled by the amp's share of the detector area.
    """
    img = image
    if apply_gain:
        for name, box in amp_boxes.items():
            img[box.slices] *= gains.get(name, 1.0)
    amp_iter: dict[str, int] = {}
    if kernels is None:
        k = np.asarray(kernel, float)
        corrected, diff, n = brighter_fatter_correction(img, k, max_iter, threshold)
        delta = corrected - img
        del corrected
        b = max(k.shape) // 2
    else:
        delta = np.zeros_like(img)
        ny, nx = img.shape
        diff, n, b = 0.0, 0, 0
        for name, box in amp_boxes.items():
            k = kernels[name]
            r = max(k.shape) // 2
            b = max(b, r)
            grow = (max_iter + 1) * (r + 2)
            ys = slice(max(box.y0 - grow, 0), min(box.y1 + grow, ny))
            xs = slice(max(box.x0 - grow, 0), min(box.x1 + grow, nx))
            sub = img[ys, xs]
            thresh = threshold * sub.size / img.size
            corr, d_amp, n_amp = brighter_fatter_correction(sub, k, max_iter, thresh)
            inner = (
                slice(box.y0 - ys.start, box.y1 - ys.start),
                slice(box.x0 - xs.start, box.x1 - xs.start),
            )
            delta[box.slices] = corr[inner] - sub[inner]
            diff, n = max(diff, d_amp), max(n, n_amp)
            amp_iter[name] = n_amp
    if apply_gain:
        for name, box in amp_boxes.items():
            delta[box.slices] /= gains.get(name, 1.0)
    return BrighterFatterResult(delta, diff, n, b, amp_iter)
