"""Overscan fixtures of reference-algorithms §2.3 / §8 check 1."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tasks.isr.overscan import (
    FIT_TYPES,
    correct_overscan,
    fill_masked_lines,
    fit_overscan,
    mask_deviant_pixels,
    skip_columns,
    smoothing_bad_lines,
)

DATA = (slice(0, 10), slice(0, 10))
SERIAL = (slice(0, 10), slice(10, 13))
SERIAL_T = (slice(10, 13), slice(0, 10))  # transposed geometry: serial overscan below... above the data


def amp13(transposed: bool = False, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Build the amp13 test input."""
    img = np.full((13, 13), 2.0, dtype=np.float32)
    img[0:10, 0:10] = 10.0
    ov = SERIAL_T if transposed else SERIAL
    img[ov] += offset
    return img, np.zeros((13, 13), np.int32)


@pytest.mark.parametrize("fit_type", ["MEDIAN", "MEDIAN_PER_ROW", "MEAN_PER_ROW", "MEAN", "MEANCLIP"])
@pytest.mark.parametrize("transposed", [False, True])
def test_13x13_exact(fit_type, transposed):
    """Check 13x13 exact."""
    img, mask = amp13(transposed)
    ov = SERIAL_T if transposed else SERIAL
    res = correct_overscan(img, mask, DATA, ov, fit_type=fit_type, transpose=transposed)
    assert np.all(img[DATA] == 8.0)
    assert np.all(img[ov] == 0.0)
    assert res.residual_sigma == 0.0
    assert not res.skipped


@pytest.mark.parametrize("fit_type", ["MEDIAN_PER_ROW", "MEAN_PER_ROW"])
@pytest.mark.parametrize("is_int,data_value,residual", [(True, 8.0, 0.5), (False, 7.5, 0.0)])
def test_13x13_half_offset_int_truncation(fit_type, is_int, data_value, residual):
    """Check 13x13 half offset int truncation."""
    img, mask = amp13(offset=0.5)
    correct_overscan(img, mask, DATA, SERIAL, fit_type=fit_type, is_int=is_int)
    assert np.all(img[DATA] == data_value)
    assert np.all(img[SERIAL] == residual)


@pytest.mark.parametrize("is_int,pixel,data_value", [(True, 12343.5, 8.0), (False, 12343.0, 7.5)])
def test_transposed_outlier_rejected(is_int, pixel, data_value):
    """Check transposed outlier rejected."""
    img, mask = amp13(transposed=True, offset=0.5)
    img[10, 0] = 12345.5
    correct_overscan(
        img, mask, DATA, SERIAL_T, fit_type="MEDIAN_PER_ROW", is_int=is_int, nsigma=2.7, transpose=True
    )
    assert img[10, 0] == pixel
    assert np.all(img[DATA] == data_value)


@pytest.mark.parametrize(
    "fit_type", ["POLY", "CHEB", "LEG", "NATURAL_SPLINE", "CUBIC_SPLINE", "AKIMA_SPLINE"]
)
def test_vector_fits_recover_ramp(fit_type):
    """Check vector fits recover ramp."""
    img, mask = amp13()
    rows = np.arange(10, dtype=np.float32)[:, None]
    img[0:10, 10:13] = 2.0 + rows + np.array([-0.5, 0.0, 0.5], np.float32)
    correct_overscan(img, mask, DATA, SERIAL, fit_type=fit_type, order=5)
    np.testing.assert_allclose(img[0:10, 10:13], np.tile([-0.5, 0.0, 0.5], (10, 1)), atol=2e-5)
    np.testing.assert_allclose(img[DATA], np.broadcast_to(8.0 - rows, (10, 10)), atol=2e-5)


def test_spline_order_one_degrades_to_constant():
    """Check spline order one degrades to constant."""
    # Reference QUIRK (§9): fewer than 5 non-empty bins -> constant = first bin value.
    lines = np.arange(20, dtype=float)[:, None] + np.zeros((20, 3))
    model, *_ = fit_overscan(lines, np.zeros(lines.shape, bool), "NATURAL_SPLINE", order=1)
    assert np.all(model == pytest.approx(9.5))
    model, *_ = fit_overscan(lines, np.zeros(lines.shape, bool), "AKIMA_SPLINE", order=4)
    # 4 bins < 5: first bin (rows 0..4) mean = 2.0
    assert np.all(model == pytest.approx(2.0))


def test_sine_wave_per_row():
    """Check sine wave per row."""
    n = 500
    wave = np.trunc(20 * np.sin(np.arange(n) / 20.0) + 1000).astype(np.float32)
    img = np.zeros((n, 15), np.float32)
    img[:, :10] = 50 + wave[:, None]
    img[:, 10:] = wave[:, None]
    for fit in ("MEDIAN_PER_ROW", "MEAN_PER_ROW"):
        im = img.copy()
        correct_overscan(im, None, (slice(0, n), slice(0, 10)), (slice(0, n), slice(10, 15)), fit_type=fit)
        assert np.all(im[:, :10] == 50.0)
        assert np.all(im[:, 10:] == 0.0)


def test_skip_columns_leading_side():
    """Check skip columns leading side."""
    # Data left of the overscan: leading = low-x side of the overscan.
    assert skip_columns(10, 20, 0, 3, 1) == (13, 19)
    # Data right of the overscan (MegaCam amp A): leading = high-x side.
    assert skip_columns(0, 32, 32, 3, 1) == (1, 29)
    with pytest.raises(ValueError, match="leaves no overscan"):
        skip_columns(0, 4, 10, 2, 2)


def test_skip_columns_excludes_bad_columns_from_fit():
    """Check skip columns excludes bad columns from fit."""
    img, mask = amp13()
    img[0:10, 10] = 1000.0  # leading column (next to the data) is junk
    correct_overscan(img, mask, DATA, SERIAL, fit_type="MEAN_PER_ROW", leading_to_skip=1)
    assert np.all(img[DATA] == 8.0)


def test_mask_deviant_rows():
    """Check mask deviant rows."""
    lines = np.full((10, 4), 2.0)
    lines[3] = 200.0
    lines[6] = -200.0
    masked, bad = mask_deviant_pixels(lines, np.zeros(lines.shape, bool), 100.0, absolute=True)
    assert list(np.flatnonzero(bad)) == [3, 6]
    masked, bad = mask_deviant_pixels(lines, np.zeros(lines.shape, bool), 100.0, absolute=False)
    assert list(np.flatnonzero(bad)) == [3]
    lines = np.full((20, 4), 2.0)
    lines[10] = 7.0
    assert list(np.flatnonzero(smoothing_bad_lines(lines, 3, 5.0))) == [10]
    with pytest.raises(ValueError, match="maxDeviation"):
        mask_deviant_pixels(lines, np.zeros(lines.shape, bool), 0.0)


def test_bad_rows_masked_in_parent_mask():
    """Check bad rows masked in parent mask."""
    img, mask = amp13()
    img[4, 10:13] = 5000.0
    res = correct_overscan(img, mask, DATA, SERIAL, fit_type="MEDIAN_PER_ROW")
    assert res.n_bad_lines == 1
    assert np.all(mask[4, 10:13] & 1)
    assert np.all(img[4, 0:10] == 8.0)  # filled from neighbouring rows


def test_fill_masked_lines():
    """Check fill masked lines."""
    v = np.arange(20, dtype=float)
    bad = np.zeros(20, bool)
    bad[8:10] = True
    out = fill_masked_lines(v, bad)
    assert out[8] == out[9] == np.median(np.r_[v[3:8], v[10:15]])
    bad = np.zeros(20, bool)
    bad[:3] = True  # starts at 0: only the after side
    assert fill_masked_lines(v, bad)[0] == np.median(v[3:8])


def test_unknown_fit_type():
    """Check unknown fit type."""
    with pytest.raises(ValueError, match="Unknown overscan fitType"):
        fit_overscan(np.ones((3, 3)), np.zeros((3, 3), bool), "SPLINE3")
    assert "AKIMA_SPLINE" in FIT_TYPES and len(FIT_TYPES) == 11


def test_parallel_overscan_transposed_and_megacam_row_mismatch():
    """Check parallel overscan transposed and megacam row mismatch."""
    # Serial overscan one row longer than the data (MegaCam 4613 vs 4612): per-row model
    # is matched by absolute row index.
    rng = np.random.default_rng(5)
    ny = 41
    level = 1000 + np.arange(ny, dtype=np.float32)
    img = np.zeros((ny, 20), np.float32)
    img[:, 4:] = level[:, None] + 7
    img[:, :4] = level[:, None]
    img[:40, 4:] += rng.normal(0, 0.0, (40, 16)).astype(np.float32)
    correct_overscan(
        img,
        None,
        (slice(0, 40), slice(4, 20)),
        (slice(0, 41), slice(0, 4)),
        fit_type="MEDIAN_PER_ROW",
        is_int=False,
    )
    np.testing.assert_allclose(img[:40, 4:], 7.0)
    # Parallel overscan: level varies with column, rows 10..12 hold the overscan.
    img = np.zeros((13, 10), np.float32)
    img[:] = np.arange(10, dtype=np.float32)[None, :]
    img[:10] += 5
    correct_overscan(
        img,
        None,
        (slice(0, 10), slice(0, 10)),
        (slice(10, 13), slice(0, 10)),
        fit_type="MEDIAN_PER_ROW",
        transpose=True,
        is_int=False,
    )
    assert np.all(img[:10] == 5.0)


def test_spline_config_with_too_few_bins_is_refused():
    """Check spline config with too few bins is refused."""
    from pipeline.tasks.isr.isr_task import OverscanCorrectionTaskConfig

    with pytest.raises(Exception, match="order >= 5"):
        OverscanCorrectionTaskConfig(fitType="AKIMA_SPLINE", order=1)
    assert OverscanCorrectionTaskConfig(fitType="AKIMA_SPLINE", order=5).order == 5


def test_serial_and_parallel_overscan_task():
    """Check serial + parallel correction (reference §2.3 parallel fixture) via the subtask."""
    from pipeline.image import Amplifier, Box, Exposure, MaskedImage
    from pipeline.tasks.isr.isr_task import OverscanCorrectionTask, OverscanCorrectionTaskConfig

    ramp = np.arange(10, dtype=np.float32)  # column-dependent level seen in the parallel overscan
    img = np.full((13, 13), 2.0, np.float32)
    img[0:10, 0:10] = 10.0 + ramp[None, :]
    img[10:13, 0:10] = 2.0 + ramp[None, :]
    amp = Amplifier(
        "A",
        bbox=Box(0, 0, 10, 10),
        raw_bbox=Box(0, 0, 13, 13),
        raw_data_bbox=Box(0, 0, 10, 10),
        raw_serial_overscan_bbox=Box(10, 0, 3, 10),
        raw_parallel_overscan_bbox=Box(0, 10, 10, 3),
    )
    exp = Exposure(MaskedImage(img))
    cfg = OverscanCorrectionTaskConfig(doParallelOverscan=True, fitType="MEDIAN_PER_ROW")
    res = OverscanCorrectionTask(config=cfg).run(exp, amp)
    assert res.overscanMean == pytest.approx(2.0, abs=1e-3)
    assert res.parallel.overscanMean == pytest.approx(ramp.mean(), abs=1e-3)
    np.testing.assert_array_equal(exp.image[0:10, 0:10], 8.0)
    assert res.parallel.residualSigma == pytest.approx(0.0, abs=1e-3)
