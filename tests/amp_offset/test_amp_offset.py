"""AmpOffset tests (reference-algorithms §5 and §8 check 12)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.image import Amplifier, Box, Detector, Exposure
from pipeline.tasks.amp_offset import (
    AmpOffsetConfig,
    AmpOffsetTask,
    get_amp_associations,
    get_interface_offset,
    get_neighbors,
    neighbors_from_sides,
)


def grid_detector(ncol: int, nrow: int, nx: int, ny: int) -> Detector:
    """Build the grid detector test input."""
    amps = []
    for r in range(nrow):
        for c in range(ncol):
            amps.append(Amplifier(f"C{r}{c}", bbox=Box(c * nx, r * ny, nx, ny)))
    return Detector(0, "det", bbox=Box(0, 0, ncol * nx, nrow * ny), amplifiers=tuple(amps))


def constant_exposure(det: Detector, values, noise: float = 0.0, seed: int = 1) -> Exposure:
    """Build the constant exposure test input."""
    img = np.zeros(det.bbox.shape, np.float32)
    for amp, v in zip(det, values):
        img[amp.bbox.slices] = v
    if noise:
        img += np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)
    return Exposure(img, detector=det)


def quiet_task(**kw) -> AmpOffsetTask:
    """Build the quiet task test input."""
    cfg = AmpOffsetConfig(doBackground=False, doDetection=False, **kw)
    return AmpOffsetTask(config=cfg)


def test_associations_lsst_like_layout():
    """Check associations lsst like layout."""
    det = grid_detector(4, 2, 100, 51)
    assoc, sides = get_amp_associations(list(det))
    assert np.all(assoc.sum(axis=1) == 0) and np.array_equal(assoc, assoc.T)
    assert assoc[0, 0] == 2 and assoc[1, 1] == 3
    assert sides[0, 1] == 1 and sides[1, 0] == 3 and sides[0, 4] == 0 and sides[4, 0] == 2
    nb, sd = neighbors_from_sides(sides, 5)
    assert nb == [1, 4, 6] and sd == [2, 3, 1]


def test_get_neighbors_takes_lsst_amp_id_grid():
    """``getNeighbors(ampIds, ampId)`` takes LSST's grid of amp ids, not the side matrix."""
    grid = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    assert get_neighbors(grid, 0) == ([4, 1], [0, 1])
    assert AmpOffsetTask().getNeighbors(grid, 0) == ([4, 1], [0, 1])
    assert get_neighbors(grid, 5) == ([6, 1, 4], [1, 2, 3])
    # agrees with the side matrix of the same layout (grid rows increase with y)
    det = grid_detector(4, 2, 100, 51)
    _, sides = get_amp_associations(list(det))
    for amp in range(8):
        nb, sd = get_neighbors(grid, amp)
        assert sorted(zip(nb, sd)) == sorted(zip(*neighbors_from_sides(sides, amp)))
    with pytest.raises(ValueError, match="appears 0 times"):
        get_neighbors(grid, 9)


@pytest.mark.parametrize("kind", ["symmetric", "random", "artificial"])
def test_constant_amps_pedestals_exact(kind):
    """Check constant amps pedestals exact."""
    det = grid_detector(4, 2, 100, 51)
    if kind == "symmetric":
        v = np.linspace(-2.5, 2.5, 8)
    elif kind == "random":
        v = np.random.default_rng(1746).uniform(-2.5, 2.5, 8)
    else:
        v = np.array([5, 1, 3, -4, 30, 25, 22, 27], float)
    exp = constant_exposure(det, v)
    task = quiet_task(ampEdgeWidth=12, ampEdgeMaxOffset=50.0, doApplyAmpOffset=(kind == "symmetric"))
    before = exp.image.copy()
    res = task.run(exp)
    np.testing.assert_allclose(res.pedestals, v - v.mean(), atol=1e-6)
    if kind == "symmetric":
        assert abs(float(exp.image.sum(dtype=np.float64))) < 1e-2
    else:
        np.testing.assert_array_equal(exp.image, before)  # measure only
    assert "LSST ISR AMPOFFSET PEDESTAL C00" in task.metadata


def test_megacam_two_amps_and_16_amp_noisy():
    """Check megacam two amps and 16 amp noisy."""
    det = grid_detector(2, 1, 256, 1024)
    v = np.array([3.0, -1.0])
    res = quiet_task().run(constant_exposure(det, v))
    np.testing.assert_allclose(res.pedestals, v - v.mean(), atol=1e-6)
    det16 = grid_detector(8, 2, 128, 400)
    v16 = np.random.default_rng(3).uniform(-2, 2, 16)
    sigma = 5.0
    res = quiet_task().run(constant_exposure(det16, v16 + 1000, noise=sigma, seed=4))
    # Noise level of one interface offset: each profile point is a median of 64 pixels
    # (sigma * 1.2533 / 8), the difference of two profiles adds sqrt(2), and the clipped mean
    # runs over the shortest interface (128 points).
    level = sigma * 1.2533 / np.sqrt(64) * np.sqrt(2) / np.sqrt(128)
    err = np.abs(res.pedestals - (v16 - v16.mean()))
    assert err.max() < 3 * level
    assert err.mean() < level


def test_offset_caps_and_failures():
    """Check offset caps and failures."""
    a = np.full(100, 10.0)
    b = np.full(100, 2.0)
    r = get_interface_offset("A", "B", a, b, max_offset=5.0)
    assert r.interfaceId == "A-B" and r.interfaceOffset == 0.0 and r.interfaceOffsetOriginal == 8.0
    assert r.maxOffsetFail and not r.minFracFail
    b2 = b.copy()
    b2[:70] = np.nan
    r = get_interface_offset("A", "B", a, b2, max_offset=50.0, do_window_smoothing=False)
    assert r.minFracFail and r.interfaceOffset == 0.0 and r.ampEdgeGoodFrac == pytest.approx(0.3)
    with pytest.raises(RuntimeError, match="ampEdgeWindowFrac"):
        get_interface_offset("A", "B", a, b, window_frac=2.0)


def test_with_background_and_detection_on_sources():
    """Check with background and detection on sources."""
    det = grid_detector(4, 2, 100, 51)
    # Checkerboard pedestals on a smooth y ramp 0..100 (the ramp must go into the background,
    # the pedestals must not).
    v = np.array([1.5, -1.5, 1.5, -1.5, -1.5, 1.5, -1.5, 1.5])
    exp = constant_exposure(det, v + 100.0, noise=0.5, seed=9)
    exp.image += np.linspace(0, 100, exp.shape[0], dtype=np.float32)[:, None]
    exp.image[20:24, 95:105] += 5000.0  # a star across an interface
    res = AmpOffsetTask(config=AmpOffsetConfig(ampEdgeWidth=12)).run(exp)
    np.testing.assert_allclose(res.pedestals, v - v.mean(), atol=0.15)


def test_detect_sources_finds_star_not_noise():
    """Check the smoothed 5-sigma detection flags a faint star and almost no noise pixels."""
    from pipeline.tasks.amp_offset.amp_offset import detect_sources

    rng = np.random.default_rng(2)
    im = rng.normal(0.0, 1.0, (200, 200))
    y, x = np.mgrid[:200, :200]
    im += 6.0 * np.exp(-((x - 100) ** 2 + (y - 80) ** 2) / (2 * 2.0**2))  # peak ~6 sigma per pixel
    det = detect_sources(im, 5.0, 2.0)
    assert det[80, 100]
    assert det[:40, :40].sum() == 0
