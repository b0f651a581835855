"""The speed-ups give the same numbers as the straightforward computations they replace."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pipeline.image import Amplifier, Box, Detector, Exposure, MaskedImage
from pipeline.image.statistics import clipped_stats, median
from pipeline.instruments.simulate import simulate_exposures
from pipeline.tasks.isr import IsrTask, IsrTaskConfig, Linearizer
from pipeline.tasks.isr import isr_functions as F  # noqa: N812
from pipeline.tasks.isr.assembly import assemble_plane, assemble_sparse_plane
from pipeline.tasks.isr.binning import bin_image, bin_planes


@pytest.fixture
def planes():
    """Make random exposure, dark and flat planes."""
    rng = np.random.default_rng(3)
    ny, nx = 300, 257
    img = (rng.normal(1000, 30, (ny, nx))).astype(np.float32)
    var = rng.uniform(10, 20, (ny, nx)).astype(np.float32)
    mask = np.zeros((ny, nx), np.int32)
    mask[rng.integers(0, ny, 40), rng.integers(0, nx, 40)] = rng.integers(1, 64, 40)
    dark = rng.uniform(0, 0.01, (ny, nx)).astype(np.float32)
    dvar = rng.uniform(0, 1e-4, (ny, nx)).astype(np.float32)
    flat = rng.uniform(0.9, 1.1, (ny, nx)).astype(np.float32)
    fvar = rng.uniform(0, 1e-5, (ny, nx)).astype(np.float32)
    dmask = np.zeros_like(mask)
    dmask[5, 7] = 128
    return img, var, mask, dark, dvar, dmask, flat, fvar


@pytest.mark.parametrize("scaling", ["USER", "MEAN", "MEDIAN"])
def test_fused_dark_flat_equals_sequential(planes, scaling):
    """dark_flat_correction == dark_correction then flat_correction (image, variance, mask)."""
    img, var, mask, dark, dvar, dmask, flat, fvar = planes
    a = [p.copy() for p in (img, mask, var)]
    b = [p.copy() for p in (img, mask, var)]
    F.dark_correction(a[0], a[1], a[2], dark, dmask, dvar, 30.0, 2.0)
    F.flat_correction(a[0], a[1], a[2], flat, None, fvar, scaling, 1.0)
    s = F.dark_flat_correction(b[0], b[1], b[2], (dark, dmask, dvar), 30.0, 2.0, (flat, None, fvar), scaling)
    assert s[0] == 15.0
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(a[1], b[1])
    # and the arithmetic itself: (A - 15 D) / (F / s), variance (vA + 225 vD) / B² + out² vB / B²
    sc = F.flat_scale(flat, scaling, 1.0)
    B = flat.astype(np.float64) / sc
    out = (img.astype(np.float64) - 15.0 * dark) / B
    np.testing.assert_allclose(b[0], out, rtol=2e-6)
    v = (var + 225.0 * dvar.astype(np.float64)) / B**2 + out**2 * (fvar / sc**2) / B**2
    np.testing.assert_allclose(b[2], v, rtol=2e-5)
    with pytest.raises(RuntimeError, match="darktime is NaN"):
        F.dark_flat_correction(b[0], b[1], b[2], (dark, None, None), float("nan"), 1.0, (flat, None, None))


def test_histogram_statistics_equal_sorting_path():
    """Integer data: histogram clipped stats / median equal the float (sorting) computation."""
    rng = np.random.default_rng(1)
    for sigma in (0.4, 3.0, 40.0):
        x = np.rint(rng.normal(1000, sigma, 50_000)).astype(np.int32)
        x[:300] += 20_000  # outliers clipped away
        a = clipped_stats(x, _with_median=True)
        b = clipped_stats(x.astype(np.float64), _with_median=True)
        assert a[2] == b[2]
        np.testing.assert_allclose(a[:2], b[:2], rtol=1e-12)
        assert a[3] == b[3] == median(x) == float(np.median(x))


def _mirrored_detector() -> tuple[list[Amplifier], Detector]:
    """A 2 x 2-amp detector (raw 24 x 28, 10 x 10 data per amp) with every kind of amp flip."""
    amps = []
    for i, (fx, fy) in enumerate([(False, False), (True, False), (False, True), (True, True)]):
        col, row = i % 2, i // 2
        raw = Box(col * 14, row * 12, 14, 12)
        amps.append(
            Amplifier(
                f"A{i}",
                bbox=Box(col * 10, row * 10, 10, 10),
                raw_bbox=raw,
                raw_data_bbox=Box(raw.x0 + 2, raw.y0 + 1, 10, 10),
                raw_flip_x=fx,
                raw_flip_y=fy,
            )
        )
    det = Detector(0, "D", bbox=Box(0, 0, 20, 20), amplifiers=tuple(amps), raw_shape=(24, 28))
    return amps, det


def test_sparse_assembly_and_flagged_pixels():
    """assemble_sparse_plane == assemble_plane on a sparse mask; flagged_pixels == np.nonzero."""
    amps, det = _mirrored_detector()
    rng = np.random.default_rng(0)
    m = np.zeros((24, 28), np.int32)
    m.ravel()[rng.integers(0, m.size, 60)] = rng.integers(1, 1 << 20, 60)
    for trim in (True, False):
        np.testing.assert_array_equal(
            assemble_sparse_plane(m, det, trim=trim), assemble_plane(m, det, trim=trim)
        )
    ys, xs, vals = F.flagged_pixels(m, 0b1010, block=5)
    ey, ex = np.nonzero(m & 0b1010)
    np.testing.assert_array_equal(ys, ey)
    np.testing.assert_array_equal(xs, ex)
    np.testing.assert_array_equal(vals, m[ey, ex] & 0b1010)


@pytest.mark.parametrize("block", [1, 5, 16, 128])
def test_flagged_pixels_and_flagged_rows_equal_nonzero(block):
    """Column-prefiltered scans == np.nonzero / per-row OR, for sparse and dense blocks.

    A bad column through every block, a defect box, a saturated star, scattered bits, a
    block with more than 1/8 of its columns flagged (the dense branch) and a row with bits
    not asked for.
    """
    rng = np.random.default_rng(11)
    m = np.zeros((70, 96), np.int32)
    m[:, 40] |= 4
    m[20:31, 60:62] |= 4
    m[50:53, 3:9] |= 1 << 14
    m.ravel()[rng.integers(0, m.size, 25)] |= rng.integers(1, 1 << 12, 25).astype(np.int32)
    m[60:62, ::3] |= 8  # dense rows
    m[66, :] = 1 << 20  # bits not asked for
    for bits in (0b1010, 0b110, 1 << 14, 1 << 20, -1, 1 << 25):
        ys, xs, vals = F.flagged_pixels(m, bits, block=block)
        ey, ex = np.nonzero(m & bits)
        np.testing.assert_array_equal(ys, ey)
        np.testing.assert_array_equal(xs, ex)
        np.testing.assert_array_equal(vals, m[ey, ex] & bits)
        rows = F.rows_with_bits(m, bits, block=block)
        np.testing.assert_array_equal(rows, np.flatnonzero(np.bitwise_or.reduce(m, axis=1) & bits))
    assert F.rows_with_bits(m, 1 << 14, block=block).tolist() == [50, 51, 52]
    assert F.flagged_pixels(np.zeros((0, 5), np.int32), 1)[0].size == 0
    assert F.rows_with_bits(np.zeros((3, 0), np.int32), 1).size == 0


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32])
@pytest.mark.parametrize("level", ["none", "scalar", "rows"])
def test_assembly_of_mirrored_amps_equals_direct_subtraction(monkeypatch, dtype, level):
    """Mirrored amps assembled through the blocked scratch == ``np.subtract`` on the flipped view."""
    from pipeline.tasks.isr import assembly

    monkeypatch.setattr(assembly, "_FLIP_BLOCK_PIXELS", 30)  # several blocks and a short last one
    amps, det = _mirrored_detector()
    rng = np.random.default_rng(4)
    raw = (rng.random((24, 28)) * 60000).astype(dtype)
    levels = {
        "none": None,
        "scalar": {a.name: 1000.3 + i for i, a in enumerate(amps)},
        "rows": {a.name: rng.normal(1000, 5, 10) for a in amps},
    }[level]
    got = assemble_plane(raw, det, dtype=np.float32, subtract=levels)
    for a in amps:
        view = raw[a.raw_data_bbox.slices]
        view = view[::-1] if a.raw_flip_y else view
        view = view[:, ::-1] if a.raw_flip_x else view
        want = np.empty(view.shape, np.float32)
        if levels is None:
            want[...] = view
        elif level == "scalar":
            np.subtract(view, np.float32(levels[a.name]), out=want)
        else:
            rows = np.asarray(levels[a.name], np.float32)
            np.subtract(view, (rows[::-1] if a.raw_flip_y else rows)[:, None], out=want)
        np.testing.assert_array_equal(got[a.bbox.slices], want)


def test_binning_and_view_sampling():
    """Strided binning equals the reshape mean; view sampling takes every sy-th/sx-th pixel."""
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, (103, 86)).astype(np.float32)
    for b in (1, 2, 4, 7):
        ny, nx = 103 // b, 86 // b
        want = a[: ny * b, : nx * b].astype(np.float64).reshape(ny, b, nx, b).mean(axis=(1, 3))
        np.testing.assert_allclose(bin_image(a, b), want, rtol=1e-5, atol=1e-6)
    m = np.zeros(a.shape, np.int32)
    m[3, 5] = 4
    m[50, 40] = 1
    _, mb, _ = bin_planes(a, m, np.ones_like(a), 4)
    assert mb[0, 1] == 4 and mb[12, 10] == 1 and mb.sum() == 5
    view = a[10:90, 5:80]
    s = F.sample_for_statistics(view, max_samples=100)
    step = view.size // 100
    sx = int(np.sqrt(step))
    sy = step // sx
    np.testing.assert_array_equal(s, view[::sy, ::sx].ravel())


def _plain_block_reduce(a, b, op, dtype):
    """``op`` over the b rows, then over the b columns, left to right, in ``dtype``."""
    ny, nx = a.shape[0] // b, a.shape[1] // b
    x = a[: ny * b, : nx * b].astype(dtype).reshape(ny, b, nx * b)
    r = x[:, 0]
    for k in range(1, b):
        r = op(r, x[:, k])
    c = r.reshape(ny, nx, b)
    o = c[:, :, 0]
    for k in range(1, b):
        o = op(o, c[:, :, k])
    return o


@pytest.mark.parametrize("b", [1, 2, 3, 4])
def test_block_binning_equals_plain_sums_bit_for_bit(b):
    """Thumbnails and binned planes: the banded reduction adds in the plain order."""
    rng = np.random.default_rng(9)
    a = (rng.normal(1000, 30, (1030, 517)) * 1.37).astype(np.float32)
    got = bin_image(a, b, np.float32)
    want = _plain_block_reduce(a, b, np.add, np.float32)
    want *= 1.0 / (b * b)
    np.testing.assert_array_equal(got, want)
    mean64 = (_plain_block_reduce(a, b, np.add, np.float64) / (b * b)).astype(np.float32)
    np.testing.assert_array_equal(bin_image(a, b), mean64)  # float64 accumulation
    m = rng.integers(0, 1 << 20, a.shape).astype(np.int32)
    m *= rng.random(a.shape) < 0.3
    _, mb, vb = bin_planes(a, m, a, b)
    np.testing.assert_array_equal(mb, _plain_block_reduce(m, b, np.bitwise_or, np.int32))
    np.testing.assert_array_equal(vb, mean64)


class _UnfusedIsrTask:
    """Factory of an IsrTask forced onto the step-by-step path for steps 10-12."""

    @staticmethod
    def make(config):
        from pipeline.tasks.isr import IsrTask

        class Unfused(IsrTask):
            def _assemble(self, state, *args):
                super()._assemble(state, *args)
                state.variance_replaced = False  # bias, variance, linearity run separately

        return Unfused(config=config)


def test_fused_bias_variance_linearity_equals_step_by_step():
    """Check steps 10-12 fused per amp/block give bit-identical planes to the separate steps.

    With several linearity types and negative-variance pixels.
    """
    exps, _ = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 10.0, "flux": 200.0}],
        seed=3,
        detectors=[2],
    )
    raw = exps[0]
    names = [a.name for a in raw.detector]
    types = ["Squared", "Polynomial", "None", "Proportional"]
    lin = Linearizer(
        {n: types[i % 4] for i, n in enumerate(names)},
        {n: ([2e-6] if i % 4 == 0 else [1e-6, -1e-10]) for i, n in enumerate(names)},
    )
    shape = raw.detector.bbox.shape
    rng = np.random.default_rng(4)
    bias_img = rng.normal(5.0, 1.0, shape).astype(np.float32)
    bias_img[10:12, 20:30] = 5000.0  # makes the variance negative there
    bias = Exposure(MaskedImage(bias_img, None, np.full(shape, 0.3, np.float32)))
    cfg = IsrTaskConfig(
        doDark=False, doFlat=False, doDefect=False, doInterpolate=False, doSetBadRegions=False
    )
    fused = IsrTask(config=cfg).run(raw.copy(), bias=bias, linearizer=lin).exposure
    plain = _UnfusedIsrTask.make(cfg).run(raw.copy(), bias=bias, linearizer=lin).exposure
    np.testing.assert_array_equal(fused.image, plain.image)
    np.testing.assert_array_equal(fused.variance, plain.variance)
    np.testing.assert_array_equal(fused.mask, plain.mask)
    bad = fused.masked_image.get_plane_bitmask("BAD")
    assert np.all(fused.mask[10:12, 20:30] & bad)
    nolin = IsrTask(config=cfg.model_copy(update={"doLinearize": False})).run(raw.copy(), bias=bias).exposure
    amp0 = fused.detector[0].bbox.slices  # a Squared amp: the linearity changed it
    assert np.abs(fused.image[amp0] - nolin.image[amp0]).max() > 0.5
    np.testing.assert_array_equal(fused.variance, nolin.variance)  # variance is pre-linearity


def test_saturation_masking_with_nan_in_the_amp():
    """A NaN pixel in an amp does not hide its saturated pixels (NaN-ignoring maximum)."""
    exps, _ = simulate_exposures("testcam", [{"observation_type": "bias"}], seed=2, detectors=[0])
    raw = exps[0]
    img = raw.image.astype(np.float32)
    d = raw.detector[0].raw_data_bbox
    img[d.y0 + 3, d.x0 + 4] = np.nan
    img[d.y0 + 10, d.x0 + 20] = 70000.0
    raw.masked_image.image = img
    cfg = IsrTaskConfig(
        saturation=60000.0, doBias=False, doDark=False, doFlat=False, doDefect=False, doInterpolate=False
    )
    out = IsrTask(config=cfg).run(raw).exposure
    sat = out.masked_image.get_plane_bitmask("SAT")
    a = out.detector[0].bbox
    assert np.count_nonzero(out.mask[a.slices] & sat) == 1


@pytest.mark.parametrize("fit", ["MEDIAN", "MEDIAN_PER_ROW", "POLY"])
def test_overscan_subtracted_while_assembling_equals_in_place(fit):
    """Check the overscan level subtracted during assembly equals the in-place subtraction.

    For constant and per-row models and flipped amps.
    """
    exps, _ = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 5.0, "flux": 100.0}],
        seed=5,
        detectors=[0],
    )
    raw = exps[0]
    cfg = IsrTaskConfig(
        overscan={"fitType": fit, "order": 3},
        doBias=False,
        doDark=False,
        doFlat=False,
        doDefect=False,
    )
    deferred = IsrTask(config=cfg)
    out_d = deferred.run(raw.copy()).exposure
    in_place = IsrTask(config=cfg)
    orig = in_place.overscan.run
    in_place.overscan.run = lambda exposure, amp, isTransposed=False, deferImage=False: orig(exposure, amp)
    out_i = in_place.run(raw.copy()).exposure
    np.testing.assert_array_equal(out_d.image, out_i.image)
    np.testing.assert_array_equal(out_d.variance, out_i.variance)
    np.testing.assert_array_equal(out_d.mask, out_i.mask)
    for amp in raw.detector:
        key = f"LSST ISR OVERSCAN RESIDUAL SERIAL STDEV {amp.name}"
        assert out_d.metadata[key] == out_i.metadata[key]


@pytest.mark.parametrize("fit", ["MEDIAN", "MEDIAN_PER_ROW"])
def test_integer_raw_assembled_directly_equals_converted_raw(fit):
    """An integer raw converted while assembling equals the same raw converted to float32 first.

    The float32 raw takes the plain path (whole-frame conversion, overscan corrected in the
    raw); saturated pixels (compared as float32) and a flipped amp included.
    """
    exps, _ = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 5.0, "flux": 100.0}],
        seed=7,
        detectors=[0],
    )
    raw = exps[0]
    assert np.issubdtype(raw.image.dtype, np.integer)
    d = raw.detector[0].raw_data_bbox
    raw.image[d.y0 + 4, d.x0 + 5 : d.x0 + 8] = 60001
    img_in, pristine = raw.image, raw.image.copy()
    as_float = raw.copy()
    as_float.masked_image.image = raw.image.astype(np.float32)
    cfg = IsrTaskConfig(
        overscan={"fitType": fit}, saturation=60000.5, doBias=False, doDark=False, doFlat=False,
        doDefect=False,
    )
    out_i = IsrTask(config=cfg).run(raw).exposure
    out_f = IsrTask(config=cfg).run(as_float).exposure
    np.testing.assert_array_equal(img_in, pristine)  # the caller's integer pixels are not written
    np.testing.assert_array_equal(out_i.image, out_f.image)
    np.testing.assert_array_equal(out_i.variance, out_f.variance)
    np.testing.assert_array_equal(out_i.mask, out_f.mask)
    sat = out_i.masked_image.get_plane_bitmask("SAT")
    assert np.count_nonzero(out_i.mask & sat) >= 3
    assert dict(out_i.metadata.items()) == dict(out_f.metadata.items())


def test_nan_pixel_found_through_the_fused_steps():
    """A NaN raw pixel is masked UNMASKEDNAN (and interpolated) on the fused 10-12 path."""
    exps, _ = simulate_exposures("testcam", [{"observation_type": "bias"}], seed=6, detectors=[0])
    pristine = exps[0].copy()
    raw = exps[0]
    img = raw.image.astype(np.float32)
    d = raw.detector[0].raw_data_bbox
    img[d.y0 + 7, d.x0 + 9] = np.nan
    raw.masked_image.image = img
    bias = np.zeros(raw.detector.bbox.shape, np.float32)
    cfg = IsrTaskConfig(doDark=False, doFlat=False, doDefect=False)
    task = IsrTask(config=cfg)
    out = task.run(raw, bias=bias).exposure
    nan_bit = out.masked_image.get_plane_bitmask("UNMASKEDNAN")
    assert task.metadata["NUMNANS"] == 1
    assert np.count_nonzero(out.mask & nan_bit) == 1
    assert np.all(np.isfinite(out.image))
    clean = IsrTask(config=cfg)
    clean.run(pristine, bias=bias)
    assert clean.metadata["NUMNANS"] == 0


def _side_by_side_boxes(ny: int = 40, nx: int = 23, ncol: int = 4, nrow: int = 2) -> dict[str, Box]:
    return {f"C{r}{c}": Box(c * nx, r * ny, nx, ny) for r in range(nrow) for c in range(ncol)}


def test_amp_runs_group_side_by_side_amps():
    """Amps with the same rows and touching columns form one run; a gap or overlap splits."""
    from pipeline.tasks.isr.bias_variance import amp_runs

    runs = amp_runs(_side_by_side_boxes())
    assert [(r[0], r[1], r[2], r[3]) for r in runs] == [(0, 40, 0, 92), (40, 80, 0, 92)]
    assert [m[0] for m in runs[0][4]] == ["C00", "C01", "C02", "C03"]
    assert runs[0][4][1] == ("C01", 23, 46)
    gap = {"A": Box(0, 0, 10, 5), "B": Box(12, 0, 10, 5), "C": Box(22, 0, 3, 5)}
    assert [(r[2], r[3], [m[0] for m in r[4]]) for r in amp_runs(gap)] == [
        (0, 10, ["A"]),
        (12, 25, ["B", "C"]),
    ]
    overlap = {"B": Box(5, 0, 10, 5), "A": Box(0, 0, 10, 5)}
    assert [r[4][0][0] for r in amp_runs(overlap)] == ["B", "A"]  # given order kept


@pytest.mark.parametrize("kind", ["squared", "mixed", "zero-coefficient"])
def test_bias_variance_linearity_by_runs_equals_per_amp(kind):
    """The row-run kernel gives the planes of bias, variance and linearity applied amp by amp.

    Includes non-finite pixels (an amp without an active correction keeps its inf).
    """
    from pipeline.tasks.isr.bias_variance import bias_variance_linearity
    from pipeline.tasks.isr.linearize import linearize_amps

    boxes = _side_by_side_boxes()
    names = list(boxes)
    rng = np.random.default_rng(7)
    shape = (80, 92)
    img = rng.normal(20000, 100, shape).astype(np.float32)
    img[3, 30] = np.inf
    img[50, 5] = np.nan
    bias = rng.normal(5, 1, shape).astype(np.float32)
    gains = {n: 1.2 + 0.1 * i for i, n in enumerate(names)}
    noises = {n: 5.0 + i for i, n in enumerate(names)}
    if kind == "squared":
        lin = Linearizer({n: "Squared" for n in names}, {n: [1e-7 * (i + 1)] for i, n in enumerate(names)})
    elif kind == "mixed":
        types = ["Squared", "Polynomial", "None", "Squared"]
        lin = Linearizer({n: types[i % 4] for i, n in enumerate(names)}, {n: [1e-7, -1e-12] for n in names})
    else:
        coeffs = {n: [0.0 if i == 1 else 1e-7] for i, n in enumerate(names)}
        lin = Linearizer({n: "Squared" for n in names}, coeffs)
    fused_img, fused_var = img.copy(), np.empty_like(img)
    res = bias_variance_linearity(fused_img, fused_var, bias, gains, noises, boxes, lin)
    plain_img, plain_var = img.copy(), np.empty_like(img)
    F.bias_correction(plain_img, None, None, bias, None, None)
    for n, box in boxes.items():
        F.update_variance(plain_img[box.slices], plain_var[box.slices], gains[n], noises[n])
    linearize_amps(plain_img, lin, boxes)
    np.testing.assert_array_equal(fused_img, plain_img)
    np.testing.assert_array_equal(fused_var, plain_var)
    assert not res.finite
    if kind == "zero-coefficient":
        assert np.isposinf(fused_img[3, 30])  # amp C01 has no correction: inf stays inf


@pytest.mark.parametrize("case", ["clean", "huge-sum", "variance-overflow", "linearity-overflow", "nan"])
def test_bias_variance_linearity_finite_flag_equals_plane_check(case):
    """``finite`` is True exactly when every output image and variance value is finite.

    Finite values whose sum overflows float32 are finite; an overflow to inf in the variance
    only (a tiny gain) or in the linearity only is not.
    """
    from pipeline.tasks.isr.bias_variance import bias_variance_linearity

    boxes = _side_by_side_boxes()
    names = list(boxes)
    rng = np.random.default_rng(5)
    img = rng.normal(20000, 100, (80, 92)).astype(np.float32)
    gains = {n: 1.5 for n in names}
    if case == "huge-sum":
        img[:] = 3e36  # finite everywhere; a float32 sum of the block overflows
    elif case == "variance-overflow":
        img[10, 10] = 3e37
        gains[names[0]] = 0.01  # 3e37 / 0.01 overflows in the variance only
    elif case == "linearity-overflow":
        img[60, 70] = 6e22  # 6e22 * (1 + 1e-7 * 6e22) overflows
    elif case == "nan":
        img[41, 3] = np.nan
    coeff = 0.0 if case == "huge-sum" else 1e-7
    lin = Linearizer({n: "Squared" for n in names}, {n: [coeff] for n in names})
    var = np.empty_like(img)
    res = bias_variance_linearity(img, var, np.zeros_like(img), gains, {n: 5.0 for n in names}, boxes, lin)
    want = bool(np.isfinite(img).all() and np.isfinite(var).all())
    assert res.finite == want == (case in ("clean", "huge-sum"))


def test_box_maxima_equal_per_box_reduction():
    """Band-wise column maxima give each box's NaN-ignoring maximum (all-NaN box: NaN)."""
    from pipeline.tasks.isr.masking import box_maxima

    rng = np.random.default_rng(11)
    img = rng.normal(100, 10, (60, 50)).astype(np.float32)
    img[0:20, 0:10] = np.nan  # box A all NaN
    img[25, 30] = np.nan
    img[40, 45] = 1e6
    boxes = {"A": Box(0, 0, 10, 20), "B": Box(10, 0, 15, 20), "C": Box(30, 0, 20, 20),
             "D": Box(0, 20, 50, 40), "E": Box(40, 35, 10, 10), "F": Box(5, 5, 0, 3)}
    got = box_maxima(img, boxes)
    for name, box in boxes.items():
        want = float(np.fmax.reduce(img[box.slices], axis=None)) if box.area else float("nan")
        assert got[name] == want or (np.isnan(got[name]) and np.isnan(want)), name
    assert got["E"] == 1e6 and np.isnan(got["A"])


def test_dark_and_flat_in_the_bias_variance_pass_equal_separate_steps():
    """Dark and flat applied in the fused steps 10-12 pass equal the step-by-step run.

    Planes, masks and NaN count, with a NaN raw pixel, negative variances, a flat with a zero
    and a NaN pixel, calibration mask bits.
    """
    exps, _ = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 10.0, "flux": 200.0}],
        seed=8,
        detectors=[1],
    )
    raw = exps[0]
    img = raw.image.astype(np.float32)
    d = raw.detector[1].raw_data_bbox
    img[d.y0 + 5, d.x0 + 6] = np.nan
    raw.masked_image.image = img
    shape = raw.detector.bbox.shape
    rng = np.random.default_rng(9)
    bias_img = rng.normal(3.0, 0.5, shape).astype(np.float32)
    bias_img[20:22, 30:40] = 9000.0  # negative variance there
    bias = Exposure(MaskedImage(bias_img, None, np.full(shape, 0.2, np.float32)))
    dark_img = rng.uniform(0, 0.02, shape).astype(np.float32)
    dark_mask = np.zeros(shape, np.int32)
    dark = Exposure(MaskedImage(dark_img, dark_mask, rng.uniform(0, 1e-4, shape).astype(np.float32)))
    dark.info.dark_time = 2.0
    flat_img = rng.uniform(0.9, 1.1, shape).astype(np.float32)
    flat_img[40, 41] = 0.0
    flat_img[50, 51] = np.nan
    flat = Exposure(MaskedImage(flat_img, None, rng.uniform(0, 1e-5, shape).astype(np.float32)))
    flat.mask[60, 61] = flat.masked_image.get_plane_bitmask("BAD")
    cfg = IsrTaskConfig(doInterpolate=False, doSetBadRegions=False, doDefect=False)
    task = IsrTask(config=cfg)
    fused = task.run(raw.copy(), bias=bias, dark=dark, flat=flat).exposure
    plain_task = _UnfusedIsrTask.make(cfg)
    plain = plain_task.run(raw.copy(), bias=bias, dark=dark, flat=flat).exposure
    np.testing.assert_array_equal(fused.image, plain.image)
    np.testing.assert_array_equal(fused.variance, plain.variance)
    np.testing.assert_array_equal(fused.mask, plain.mask)
    assert task.metadata["NUMNANS"] == plain_task.metadata["NUMNANS"] >= 1
    neg = fused.masked_image.get_plane_bitmask(cfg.negativeVarianceMaskName)
    assert np.all(fused.mask[20:22, 30:40] & neg)
    bad = fused.masked_image.get_plane_bitmask("BAD")
    assert fused.mask[40, 41] & bad and fused.mask[50, 51] & bad and fused.mask[60, 61] & bad


@pytest.mark.parametrize(
    ("binning", "extra"), [(3, {}), (4, {}), (5, {}), (4, {"doApplyGains": True, "doFlat": False})]
)
def test_thumbnails_summed_in_the_pass_equal_binned_images(monkeypatch, binning, extra):
    """QA thumbnails summed block by block in the fused pass == `bin_image` of the plain run.

    Several blocks per amp run (small blocks); binning 5 does not divide the amp rows (the
    thumbnails are binned from the image); with gains applied after the pass only the
    post-overscan thumbnail is made in the pass.
    """
    import pipeline.tasks.isr.isr_task as isr_task_module

    monkeypatch.setattr(F, "_BLOCK_PIXELS", 256 * 5)
    exps, _ = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 10.0, "flux": 200.0}],
        seed=12,
        detectors=[1],
    )
    raw = exps[0]
    shape = raw.detector.bbox.shape
    rng = np.random.default_rng(13)
    bias = Exposure(MaskedImage(rng.normal(3.0, 0.5, shape).astype(np.float32)))
    dark = Exposure(MaskedImage(rng.uniform(0, 0.02, shape).astype(np.float32), None,
                                rng.uniform(0, 1e-4, shape).astype(np.float32)))  # fmt: skip
    dark.info.dark_time = 2.0
    flat = Exposure(MaskedImage(rng.uniform(0.9, 1.1, shape).astype(np.float32), None,
                                rng.uniform(0, 1e-5, shape).astype(np.float32)))  # fmt: skip
    cfg = IsrTaskConfig(qa={"thumbnailBinning": binning}, doDefect=False, **extra)
    calls = []
    binned = isr_task_module.bin_image
    monkeypatch.setattr(isr_task_module, "bin_image", lambda *a, **kw: calls.append(1) or binned(*a, **kw))
    calibs = {"bias": bias, "dark": dark, "flat": flat}
    fused = IsrTask(config=cfg).run(raw.copy(), **calibs)
    n_binned = len(calls)
    plain = _UnfusedIsrTask.make(cfg).run(raw.copy(), **calibs)
    assert n_binned == {3: 0, 4: 0, 5: 2}[binning] + bool(extra)
    assert len(calls) == n_binned + 2  # the plain run bins both from the image
    assert fused.ossThumb.shape == (96 // binning, 256 // binning)
    np.testing.assert_array_equal(fused.ossThumb, plain.ossThumb)
    np.testing.assert_array_equal(fused.flattenedThumb, plain.flattenedThumb)
    np.testing.assert_array_equal(fused.exposure.image, plain.exposure.image)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 32, 33])
def test_row_quartiles_equal_numpy_percentile(n):
    """One sort per row gives np.percentile's 25/50/75 (ties, NaN, +-inf, +-0 included)."""
    from pipeline.tasks.isr.overscan import mask_line_outliers, row_quartiles

    rng = np.random.default_rng(n)
    data = np.rint(rng.normal(1000, 3, (300, n))) + rng.choice([0.0, 0.25, 0.5], (300, n))
    data[5, 0] = np.nan
    data[6, :] = np.nan
    data[7, -1] = np.inf
    data[8, 0] = -np.inf
    data[9, :2] = [np.inf, -np.inf]
    data[10, :] = 0.0
    data[10, ::2] = -0.0
    data[11, :] = 1e300
    data[11, 0] = -1e300
    got = row_quartiles(data)
    with np.errstate(invalid="ignore"):
        want = np.percentile(data, [25.0, 50.0, 75.0], axis=1)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    masked = np.zeros(data.shape, bool)
    masked[20, 0] = True
    with np.errstate(invalid="ignore"):
        q25, q50, q75 = want
        sig = 0.74 * (q75 - q25)
        msig = np.median(sig)
        sig = np.where(sig > 2 * msig, msig, sig)
        plain = masked | (np.abs(data - q50[:, None]) > 3.0 * sig[:, None]) | ~np.isfinite(data)
    np.testing.assert_array_equal(mask_line_outliers(data, masked, 3.0), plain)


@pytest.mark.parametrize("n", [1, 2, 5, 32, 33, 700])
def test_median_per_row_equals_nanmedian(n):
    """The sorted-row median equals np.nanmedian of the selected pixels (odd, even, empty rows)."""
    from pipeline.image.statistics import median_per_row

    rng = np.random.default_rng(n)
    data = np.rint(rng.normal(1000, 3, (200, n))) + rng.choice([0.0, 0.5], (200, n))
    data[3, 0] = np.nan
    data[4, -1] = np.inf
    data[5, :] = 1.5e308  # (x + x) overflows
    mask = rng.random((200, n)) < 0.2
    mask[7, :] = True  # empty row
    got = median_per_row(data, mask)
    sel = np.where(mask | ~np.isfinite(data), np.nan, data)
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanmedian(sel, axis=1)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[7])
    ints = data.astype(np.int64)[8:20]
    np.testing.assert_array_equal(median_per_row(ints), np.median(ints, axis=1))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32])
@pytest.mark.parametrize("level", [200.0, 200.000001, np.float64(200.000001), np.float32(200.5), 16777216.5])
def test_saturation_of_an_integer_raw_equals_float32_comparison(dtype, level):
    """SAT on an integer raw == SAT on its float32 values (python, numpy float64/float32 levels)."""
    from pipeline.tasks.isr.masking import mask_amplifier

    rng = np.random.default_rng(3)
    hi = 250 if dtype == np.uint8 else (30000 if dtype == np.int16 else 60000)
    data = rng.integers(0, hi, (12, 20)).astype(dtype)
    data[2, 3:6] = 200
    data[3, 3:6] = 201
    if dtype == np.int32:
        data[4, :3] = [16777216, 16777217, 16777218]
    box = Box(0, 0, 20, 12)
    amp = Amplifier("A", bbox=box, raw_bbox=box, raw_data_bbox=box)
    planes = []
    for img in (data, data.astype(np.float32)):
        mi = MaskedImage(img)
        mask_amplifier(mi, amp, None, saturation=level, saturated_plane="SAT", suspect_plane=None)
        planes.append(mi.mask.copy())
    np.testing.assert_array_equal(planes[0], planes[1])
    n_sat = np.count_nonzero(data.astype(np.float32) >= level)
    assert np.count_nonzero(planes[0]) == n_sat and (n_sat > 0 or level > 1e6)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int16, np.int32, np.int64, np.float32])
@pytest.mark.parametrize("shape", [(0, 5), (1, 1), (3, 5), (4, 6), (64, 130)])
def test_has_nonzero_equals_count_nonzero(dtype, shape):
    """`calib_apply.has_nonzero` == ``np.count_nonzero(plane) > 0`` (contiguous or not, odd sizes)."""
    from pipeline.tasks.isr.calib_apply import has_nonzero

    rng = np.random.default_rng(5)
    base = np.zeros(shape, dtype)
    cases = [base, base[:, ::2], base.T]
    if base.size:
        one = base.copy()
        one[-1, -1] = 1  # the last element only (the end of the last 64-bit word)
        first = base.copy()
        first.reshape(-1)[0] = 1
        many = (rng.random(shape) < 0.01).astype(dtype)
        cases += [one, first, many, one[:, ::2], one.T]
    if dtype == np.float32 and base.size:
        neg = base.copy()
        neg[0, 0] = -0.0  # a zero with a set bit: counted as zero
        cases.append(neg)
    for plane in cases:
        assert has_nonzero(plane) == (np.count_nonzero(plane) > 0), (plane.shape, plane.strides)


@pytest.mark.parametrize("hole", [None, (0, 0), (37, 41), (99, 129)])
def test_saturated_amp_marked_bad_only_when_every_pixel_is_flagged(hole):
    """The sampled pre-test of `mask_amplifier` keeps the full-amp BAD rule: one unflagged pixel
    (in the sample or not) keeps the amp good."""
    from pipeline.tasks.isr.masking import mask_amplifier

    data = np.full((100, 130), 300, np.uint16)
    if hole is not None:
        data[hole] = 10
    box = Box(0, 0, 130, 100)
    amp = Amplifier("A", bbox=box, raw_bbox=box, raw_data_bbox=box)
    mi = MaskedImage(data)
    res = mask_amplifier(mi, amp, None, saturation=200.0, saturated_plane="SAT", suspect_plane=None)
    assert res.bad == (hole is None)
    bad = mi.get_plane_bitmask("BAD")
    assert np.count_nonzero(mi.mask & bad) == (data.size if hole is None else 0)
    assert np.count_nonzero(mi.mask & mi.get_plane_bitmask("SAT")) == data.size - (hole is not None)


@pytest.mark.parametrize("with_sat_bit", [True, False])
def test_widening_inventory_equals_widening_then_scan(with_sat_bit):
    """`widen_saturation_mask_inventory` == `widen_saturation_mask` then `flagged_pixels`
    (trails of every width class, at the edges, a BAD-only pixel, bits with or without SAT)."""
    from pipeline.tasks.isr.masking import widen_saturation_mask, widen_saturation_mask_inventory

    rng = np.random.default_rng(9)
    mask = np.zeros((300, 257), np.int32)
    mi0 = MaskedImage(np.zeros(mask.shape, np.float32), mask)
    sat, bad, intrp = (mi0.get_plane_bitmask(p) for p in ("SAT", "BAD", "INTRP"))
    for row, (x0, w) in enumerate([(0, 3), (20, 6), (60, 7), (100, 8), (150, 9), (200, 10), (245, 12)]):
        mask[40 + 3 * row, x0 : x0 + w] |= sat
    mask[250, 250:] |= sat  # at the right edge
    mask[rng.integers(0, 300, 30), rng.integers(0, 257, 30)] |= bad
    mask[5, 5] |= intrp | 1024  # a bit outside the inventory as well
    bits = (bad | sat | intrp) if with_sat_bit else (bad | intrp)
    a = MaskedImage(np.zeros(mask.shape, np.float32), mask.copy(), None, mi0.mask_planes)
    b = MaskedImage(np.zeros(mask.shape, np.float32), mask.copy(), None, mi0.mask_planes)
    widen_saturation_mask(a, "SAT")
    ys, xs, vals = F.flagged_pixels(a.mask, bits)
    got = widen_saturation_mask_inventory(b, "SAT", bits)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert np.count_nonzero(a.mask & sat) > np.count_nonzero(mask & sat)  # trails were widened
    for want, have in zip((ys, xs, vals), got):
        np.testing.assert_array_equal(want, have)
        assert want.dtype == have.dtype
    # no SAT plane: nothing widened, the plain inventory
    c = MaskedImage(np.zeros(mask.shape, np.float32), mask.copy(), None, {"BAD": 0})
    got = widen_saturation_mask_inventory(c, "SAT", 1)
    np.testing.assert_array_equal(c.mask, mask)
    for want, have in zip(F.flagged_pixels(mask, 1), got):
        np.testing.assert_array_equal(want, have)


@pytest.mark.parametrize("extra", [{}, {"doVignette": True}])
def test_inventory_from_the_widening_gives_the_scanned_run(monkeypatch, extra):
    """IsrTask with the inventory taken from the widening scan == the run that scans the mask
    again before the bad regions (saturated trail, defects); a step that can change the mask
    in between (vignetting) turns the reuse off."""
    from pipeline.tasks.isr import IsrTask
    from pipeline.tasks.isr import isr_task as isr_task_module

    exps, _ = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 10.0, "flux": 200.0}],
        seed=21,
        detectors=[1],
    )
    raw = exps[0]
    raw.image[30:33, 40:52] = 65000  # saturated trails, widened
    shape = raw.detector.bbox.shape
    rng = np.random.default_rng(22)
    calibs = {
        "bias": Exposure(MaskedImage(rng.normal(3.0, 0.5, shape).astype(np.float32))),
        "dark": Exposure(MaskedImage(rng.uniform(0, 0.02, shape).astype(np.float32))),
        "flat": Exposure(MaskedImage(rng.uniform(0.9, 1.1, shape).astype(np.float32))),
        "defects": [Box(10, 0, 1, shape[0]), Box(60, 20, 3, 4)],
    }
    calibs["dark"].info.dark_time = 2.0
    cfg = IsrTaskConfig(doSaturation=True, saturation=60000.0, doCalculateStatistics=True, **extra)
    used = []
    real = isr_task_module.widen_saturation_mask_inventory
    monkeypatch.setattr(
        isr_task_module, "widen_saturation_mask_inventory", lambda *a: used.append(1) or real(*a)
    )
    task = IsrTask(config=cfg)
    fused = task.run(raw.copy(), **calibs)
    assert len(used) == (0 if extra else 1)
    monkeypatch.setattr(IsrTask, "_mask_final_after_widening", lambda self, *a: False)
    plain = IsrTask(config=cfg).run(raw.copy(), **calibs)
    for name in ("image", "mask", "variance"):
        np.testing.assert_array_equal(getattr(fused.exposure, name), getattr(plain.exposure, name))
    assert fused.outputStatistics and fused.outputStatistics == plain.outputStatistics
    sat = fused.exposure.masked_image.get_plane_bitmask("SAT")
    assert np.count_nonzero(fused.exposure.mask & sat) > 0
    assert dict(fused.exposure.metadata.items()) == dict(plain.exposure.metadata.items())
