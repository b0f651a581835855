"""IsrTask optional steps on small simulated raws (testcam detector 0, 4 amplifiers)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pipeline.image import Exposure, ExposureInfo, MaskedImage
from pipeline.instruments.simulate import simulate_exposures
from pipeline.tasks.isr import BrighterFatterKernel, IsrTask, IsrTaskConfig, Linearizer

LEVEL = 10000.0


def _sim(**truth):
    """Simulate one science raw of testcam detector 0 with the given truth parameters."""
    exps, t = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 10.0, "flux": LEVEL / 10.0}],
        seed=5,
        detectors=[0],
        **truth,
    )
    return exps[0], t


def _cfg(**kw) -> IsrTaskConfig:
    """Return a config without calibration frames, plus ``kw``."""
    base = dict(doBias=False, doDark=False, doFlat=False, doDefect=False)
    base.update(kw)
    return IsrTaskConfig(**base)


def _flat_of(truth) -> Exposure:
    """Return the injected flat pattern as a flat Exposure."""
    f = truth.flat[0].astype(np.float32)
    return Exposure(MaskedImage(f, None, np.zeros_like(f)))


def test_linearizer_polynomial_corrects_injected_nonlinearity():
    """Check a Polynomial linearizer undoes the simulator's quadratic non-linearity."""
    nl = 2e-6
    raw, truth = _sim(nonlinearity=nl)
    flat = _flat_of(truth)
    plain = IsrTask(config=_cfg(doFlat=True)).run(raw.copy(), flat=flat).exposure
    lin = Linearizer({a.name: "Polynomial" for a in raw.detector}, {a.name: [-nl] for a in raw.detector})
    fixed = IsrTask(config=_cfg(doFlat=True)).run(raw.copy(), flat=flat, linearizer=lin).exposure
    assert fixed.metadata["LSST ISR LINEARIZE APPLIED"]
    for amp in raw.detector:
        want = LEVEL / truth.gain(0, amp.name)
        got_plain = np.median(plain.image[amp.bbox.slices])
        got = np.median(fixed.image[amp.bbox.slices])
        assert got_plain / want - 1 == pytest.approx(nl * want, rel=0.1)  # ~1-2 % high uncorrected
        assert got == pytest.approx(want, rel=2e-3)


def test_apply_gains_units_and_normalization():
    """Check doApplyGains gives electrons (units header) and equal amp levels."""
    raw, truth = _sim(flat_rms=0.0, flat_gradient=0.0)
    out = IsrTask(config=_cfg(doApplyGains=True)).run(raw).exposure
    assert out.metadata["LSST ISR UNITS"] == "electron"
    for amp in out.detector:
        assert np.median(out.image[amp.bbox.slices]) == pytest.approx(LEVEL, rel=0.01)


def test_nan_masking_edges_vignette_and_outputs():
    """Check NaN masking/interpolation, edge SUSPECT masking, vignetting and extra outputs."""
    raw, _ = _sim()
    cfg = _cfg(
        numEdgeSuspect=2,
        edgeMaskLevel="AMP",
        doVignette=True,
        vignette={"xCenter": 64, "yCenter": 48, "radius": 60},
        doSaveInterpPixels=True,
        doBinnedExposures=True,
        binFactor1=4,
        binFactor2=16,
        doMeasureBackground=True,
        qa={"flatnessMeshX": 32, "flatnessMeshY": 32},
    )
    task = IsrTask(config=cfg)
    exp = task.ensureExposure(raw)
    task.convertIntToFloat(exp)
    assert exp.image.dtype == np.float32 and np.all(exp.variance == 1) and not exp.mask.any()
    exp.image[30, 20] = np.nan  # raw (30, 20) is inside amp C00's data (x0 = 3) -> assembled (30, 17)
    res = task.run(exp)
    out = res.exposure
    mi = out.masked_image
    assert task.metadata["NUMNANS"] == 1
    assert mi.mask[30, 17] & mi.get_plane_bitmask("UNMASKEDNAN")
    assert mi.mask[30, 17] & mi.get_plane_bitmask("INTRP") and np.isfinite(out.image[30, 17])
    assert np.isnan(res.preInterpExposure.image[30, 17])
    sus = mi.get_plane_bitmask("SUSPECT")
    assert mi.mask[10, 63] & sus and mi.mask[10, 64] & sus and not mi.mask[10, 61] & sus
    vig = mi.get_plane_bitmask(["VIGNETTED", "NO_DATA"])
    assert (mi.mask[0, 0] & vig) == vig and not mi.mask[48, 64] & vig
    assert res.outputBin1Exposure.shape == (96 // 4, 128 // 4)
    assert res.outputBin2Exposure.shape == (96 // 16, 128 // 16)
    assert "BGMEAN" in task.metadata


def test_brighter_fatter_delta_kernel_and_amp_offset():
    """Check a delta BF kernel leaves the image unchanged; amp offsets are measured."""
    raw, _ = _sim()
    k = np.zeros((5, 5))
    k[2, 2] = 1e-9
    ref = IsrTask(config=_cfg()).run(raw.copy()).exposure
    cfg = _cfg(doBrighterFatter=True, doAmpOffset=True, ampOffset={"ampEdgeWidth": 12, "doBackground": False})
    task = IsrTask(config=cfg)
    out = task.run(raw.copy(), bfKernel=BrighterFatterKernel(k)).exposure
    inner = (slice(3, -3), slice(3, -3))
    np.testing.assert_allclose(out.image[inner], ref.image[inner], rtol=1e-5)
    assert out.mask[0, 0] & out.masked_image.get_plane_bitmask("EDGE")
    assert "LSST ISR AMPOFFSET PEDESTAL C00" in out.metadata
    assert task.metadata["BRIGHTER_FATTER_ITERATIONS"] >= 1


def test_calib_keyword_mismatch_dates_and_flat_context(caplog):
    """Check cameraKeywordsToCompare warns/raises, calib dates land in the header, flatContext."""
    raw, truth = _sim()
    flat = _flat_of(truth)
    flat.metadata["HIERARCH CALIBDATE"] = "2024-02-01T00:00:00"
    flat.metadata["SEQNAME"] = "B"
    raw.metadata["SEQNAME"] = "A"
    cfg = _cfg(doFlat=True, cameraKeywordsToCompare=["SEQNAME"])
    with caplog.at_level(logging.WARNING):
        out = IsrTask(config=cfg).run(raw.copy(), flat=flat).exposure
    assert "SEQNAME" in caplog.text
    assert out.metadata["LSST ISR FLAT SEQUENCER MISMATCH"] is True
    assert out.metadata["LSST CALIB DATE FLAT"] == "2024-02-01T00:00:00"
    with pytest.raises(RuntimeError, match="SEQNAME"):
        IsrTask(
            config=_cfg(doFlat=True, cameraKeywordsToCompare=["SEQNAME"], doRaiseOnCalibMismatch=True)
        ).run(raw.copy(), flat=flat)
    task = IsrTask(config=_cfg(doFlat=True, doDark=True))
    img = np.full(flat.shape, 50.0, np.float32)
    exp = Exposure(MaskedImage(img.copy(), None, np.ones_like(img)), info=ExposureInfo(dark_time=10.0))
    dark = Exposure(MaskedImage(np.full_like(img, 1.0), None, None), info=ExposureInfo(dark_time=10.0))
    with task.flatContext(exp, flat, dark) as e:
        np.testing.assert_allclose(e.image, 49.0 / flat.image, rtol=1e-5)
    np.testing.assert_allclose(exp.image, img, atol=1e-3)


def test_calib_keyword_missing_from_either_header_is_not_a_mismatch(caplog):
    """A keyword missing from the calibration or the exposure is not compared (ip_isr).

    Only keywords in both headers are compared: a calibration without SEQNAME logs one info line
    ("not checked") and neither warns, marks the header nor raises with doRaiseOnCalibMismatch.
    """
    raw, truth = _sim()
    flat = _flat_of(truth)  # no SEQNAME, no OBSMODE
    flat.metadata["DAQMODE"] = "B"
    raw.metadata["SEQNAME"] = "A"
    raw.metadata["DAQMODE"] = "B"
    keys = ["SEQNAME", "OBSMODE", "DAQMODE"]  # calib lacks, both lack, both equal
    for raise_ in (False, True):
        task = IsrTask(config=_cfg(doFlat=True, cameraKeywordsToCompare=keys, doRaiseOnCalibMismatch=raise_))
        md = dict(raw.metadata)
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            task.compareCameraKeywords(md, flat, "flat")
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert infos == ["flat has no camera keyword(s) SEQNAME; not checked"]
        assert "LSST ISR FLAT SEQUENCER MISMATCH" not in md
    # a real difference in a keyword both have still warns
    flat.metadata["DAQMODE"] = "C"
    md = dict(raw.metadata)
    with caplog.at_level(logging.WARNING):
        IsrTask(config=_cfg(doFlat=True, cameraKeywordsToCompare=keys)).compareCameraKeywords(
            md, flat, "flat"
        )
    assert md["LSST ISR FLAT SEQUENCER MISMATCH"] is True


def test_stray_light_and_illumination():
    """Check the stray-light model is subtracted and the illumination correction divides."""
    raw, _ = _sim()
    base = IsrTask(config=_cfg()).run(raw.copy()).exposure
    model = np.full(base.shape, 100.0, np.float32)
    illum = MaskedImage(np.full(base.shape, 2.0, np.float32), None, np.zeros(base.shape, np.float32))
    cfg = _cfg(doStrayLight=True, doIlluminationCorrection=True, illumFilters=["g_test"])
    out = IsrTask(config=cfg).run(raw.copy(), strayLightData=model, illumMaskedImage=illum).exposure
    np.testing.assert_allclose(np.median(out.image), (np.median(base.image) - 100.0) / 2.0, rtol=1e-3)
    with pytest.raises(RuntimeError, match="illumMaskedImage"):
        IsrTask(config=cfg).run(raw.copy(), strayLightData=model)


def test_crosstalk_before_assembly_matches_after():
    """Check doCrosstalkBeforeAssemble gives the same result as the default (after assembly)."""
    raw, _ = _sim(crosstalk=True)
    amp = raw.detector.amplifiers[0]
    d = amp.raw_data_bbox
    raw.image[d.y0 + 5 : d.y0 + 15, d.x0 + 5 : d.x0 + 15] = 50000
    kw = dict(doCrosstalk=True, doSaturation=False, doInterpolate=False)
    after = IsrTask(config=_cfg(**kw)).run(raw.copy()).exposure
    before = IsrTask(config=_cfg(doCrosstalkBeforeAssemble=True, **kw)).run(raw.copy()).exposure
    np.testing.assert_allclose(before.image, after.image, atol=0.05)


def test_fringe_subtracted_in_task():
    """Check a fringe template is fitted and removed for a filter in fringe.filters."""
    raw, _ = _sim()
    ref = IsrTask(config=_cfg()).run(raw.copy()).exposure
    ny, nx = ref.shape
    y, x = np.mgrid[:ny, :nx]
    fringe = (np.sin(x / 3.0) * np.cos(y / 4.0)).astype(np.float32)
    raw2 = raw.copy()
    for a in raw2.detector:  # add 400 ADU x fringe in raw coordinates (sky noise is ~70 ADU)
        f = fringe[a.bbox.slices]
        f = f[::-1] if a.raw_flip_y else f
        f = f[:, ::-1] if a.raw_flip_x else f
        raw2.image[a.raw_data_bbox.slices] = raw2.image[a.raw_data_bbox.slices] + np.rint(400 * f).astype(
            np.uint16
        )
    cfg = _cfg(fringe={"filters": ["g_test"], "num": 2000, "small": 2, "large": 8})
    task = IsrTask(config=cfg)
    out = task.run(raw2, fringes=Exposure(MaskedImage(fringe, None, np.zeros_like(fringe)))).exposure
    amp = task.metadata["FRINGE_AMPLITUDES"][0]
    assert amp == pytest.approx(400.0, rel=0.05)
    # what is left is the amplitude error times the fringe pattern (rms 0.5)
    assert np.std(out.image - ref.image) < 0.05 * 400 * 0.5


@pytest.mark.parametrize("with_dark", [False, True])
def test_zero_flat_pixels_become_bad_and_interpolated(with_dark):
    """Check flat <= 0 / NaN pixels are masked BAD and interpolated (no inf in the output).

    With a dark, dark and flat run fused in one pass (the flat check is done block-wise).
    """
    raw, truth = _sim()
    flat = _flat_of(truth)
    flat.image[20, 30] = 0.0
    flat.image[21, 30] = np.nan
    kw = {}
    if with_dark:
        zeros = np.zeros_like(flat.image)
        kw["dark"] = Exposure(MaskedImage(zeros, None, zeros.copy()), info=ExposureInfo(dark_time=1.0))
    out = IsrTask(config=_cfg(doFlat=True, doDark=with_dark)).run(raw, flat=flat, **kw).exposure
    mi = out.masked_image
    assert np.all(np.isfinite(out.image))
    for y in (20, 21):
        assert mi.mask[y, 30] & mi.get_plane_bitmask("BAD") and mi.mask[y, 30] & mi.get_plane_bitmask("INTRP")


def test_ptc_missing_amp_falls_back_to_camera():
    """Check an amp absent from the PTC uses the camera gain (with a warning)."""
    raw, _ = _sim()

    class Ptc:
        gain = {"C00": 3.0}
        noise = {"C00": 9.0}

    out = IsrTask(config=_cfg(usePtcGains=True, usePtcReadNoise=True)).run(raw.copy(), ptc=Ptc()).exposure
    assert out.metadata["LSST ISR GAIN C00"] == 3.0 and out.metadata["LSST ISR READNOISE C00"] == 9.0
    assert out.metadata["LSST ISR GAIN C01"] == raw.detector["C01"].gain


def test_ptc_zero_noise_falls_back_to_overscan_noise():
    """Check a PTC read noise of 0 (failed fit) is replaced by the overscan noise, not kept."""
    raw, truth = _sim()

    class Ptc:
        gain = {a.name: truth.gain(0, a.name) for a in raw.detector}
        noise = {a.name: 0.0 for a in raw.detector}

    out = IsrTask(config=_cfg(usePtcGains=True, usePtcReadNoise=True)).run(raw, ptc=Ptc()).exposure
    for amp in out.detector:
        want = truth.amps[0][amp.name].read_noise
        assert out.metadata[f"LSST ISR READNOISE {amp.name}"] == pytest.approx(want, rel=0.35)


def test_ptc_tiny_noise_is_rejected():
    """Check a PTC read noise far below the overscan noise (failed fit, 6e-6 e-) is replaced."""
    raw, truth = _sim()

    class Ptc:
        gain = {a.name: truth.gain(0, a.name) for a in raw.detector}
        noise = {a.name: 6e-6 for a in raw.detector}

    out = IsrTask(config=_cfg(usePtcGains=True, usePtcReadNoise=True)).run(raw, ptc=Ptc()).exposure
    for amp in out.detector:
        assert out.metadata[f"LSST ISR READNOISE {amp.name}"] > 1.0


def test_lsst_helper_methods():
    """Check saturationDetection, suspectDetection and updateVariance on a raw amplifier."""
    raw, truth = _sim()
    task = IsrTask(config=_cfg(saturation=5000.0))
    exp = task.convertIntToFloat(raw.copy())
    amp = exp.detector.amplifiers[0]
    d = amp.raw_data_bbox
    exp.image[d.y0 + 1, d.x0 + 1] = 95000.0
    n_sat = task.saturationDetection(exp, amp)
    above = int(np.count_nonzero(exp.image[d.slices] >= 5000.0))
    assert n_sat == above > 0
    assert task.suspectDetection(exp, amp) == 1  # testcam suspect level 90000
    mi = exp.masked_image
    assert mi.mask[d.y0 + 1, d.x0 + 1] & mi.get_plane_bitmask("SUSPECT")
    sub = Exposure(MaskedImage(np.full((4, 4), 100.0, np.float32)))
    task.updateVariance(sub, amp)
    np.testing.assert_allclose(sub.variance, 100.0 / amp.gain + (amp.read_noise / amp.gain) ** 2, rtol=1e-6)
    with pytest.raises(RuntimeError, match="overscanImage"):
        IsrTask(config=_cfg(doEmpiricalReadNoise=True)).updateVariance(sub, amp)
    rng = np.random.default_rng(0)
    os_img = rng.normal(0, 3.0, (200, 20)).astype(np.float32)
    IsrTask(config=_cfg(doEmpiricalReadNoise=True)).updateVariance(sub, amp, overscanImage=os_img)
    np.testing.assert_allclose(sub.variance, 100.0 / amp.gain + 3.0**2, rtol=0.05)
