"""Every IsrTask config field changes the output or the graph (behaviour, not a source grep).

One rich synthetic input (testcam detector 2: 16 amplifiers with flips, prescans, serial and
parallel overscans) gives every step something to do: a saturated star with a horizontal trail,
a bleed into the parallel overscan, crosstalk, non-linearity, a structured bias with a block that
drives the variance negative, a NaN in the bias, a dark with hot columns, a flat with a dead pixel,
defects, a PTC, a brighter-fatter kernel (detector and per-amp), a fringe, a deferred-charge
calibration, stray light, an illumination correction, transmission curves and a calibration
whose sequencer keyword differs from the exposure's.

`test_field_changes_the_output` runs the baseline config (every step on that can be) and, for
each field, the baseline with that field changed (``CASES``; bools flip and ``Literal`` fields
take every other value automatically), and asserts that the image, mask, variance, headers,
task metadata, statistics, thumbnails, binned exposures or connections differ. Fields whose
effect needs another baseline or another input use a named *variant* (config + input);
fields whose effect shows only under a condition one run cannot give are mapped to the test
that shows it (``NAMED_TESTS``); documented no-ops warn when set (``noOpFields``).
`test_every_field_is_accounted_for` checks that each field is in exactly one of these classes.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pipeline.image import Box, Exposure, ExposureInfo, MaskedImage
from pipeline.instruments.simulate import simulate_exposures
from pipeline.tasks.isr import BrighterFatterKernel, Defects, IsrTask, IsrTaskConfig, Linearizer
from pipeline.tasks.isr.calibs import CrosstalkCalib
from pipeline.tasks.isr.deferred_charge import DeferredChargeCalib, SerialTrap
from pipeline.tasks.isr.overscan_task import FitType

from ._behaviour import (
    assert_named_tests_exist,
    auto_value,
    build_config,
    connection_entries,
    differing,
    exposure_entries,
    get_dotted,
    leaf_fields,
    metadata_dict,
)

DET = 2
FILTER = "g_test"  # the simulated exposure's physical filter
SUSPECT = 50000.0  # amp suspect level given to the rich input (testcam's 90000 is above uint16)
SATURATION = 60000.0  # config saturation of the baseline (testcam's 100000 is above uint16)


@dataclasses.dataclass
class RichInput:
    """The raw and every calibration ``IsrTask.run`` can take (copied per run)."""

    raw: Exposure
    calibs: dict[str, Any]

    def run_kwargs(self) -> dict[str, Any]:
        """Return the ``IsrTask.run`` arguments (fresh copies of the exposures)."""
        kw = {k: (v.copy() if isinstance(v, Exposure) else v) for k, v in self.calibs.items()}
        return {"ccdExposure": self.raw.copy(), **kw}


class FakePtc:
    """A PTC with per-amp gains and read noises (what IsrTask reads of a PTC dataset)."""

    def __init__(self, gain: dict[str, float], noise: dict[str, float]) -> None:
        self.gain, self.noise = gain, noise


def _exposure(img: np.ndarray, var: float = 1.0, **info: Any) -> Exposure:
    img = np.asarray(img, np.float32)
    return Exposure(MaskedImage(img, None, np.full_like(img, var)), info=ExposureInfo(**info))


@functools.cache
def rich_input() -> RichInput:
    """Build the rich input once (about 1 s)."""
    exps, truth = simulate_exposures(
        "testcam",
        [{"observation_type": "science", "exposure_time": 10.0, "flux": 800.0}],
        seed=7,
        detectors=[DET],
        crosstalk=True,
        nonlinearity=2e-6,
        dark_current=2.0,
        hot_columns=2,
    )
    raw = exps[0]
    amps = tuple(dataclasses.replace(a, suspect_level=SUSPECT) for a in raw.detector)
    raw.detector = dataclasses.replace(raw.detector, amplifiers=amps)
    det = raw.detector
    ny, nx = det.bbox.ny, det.bbox.nx
    img = raw.image.astype(np.float64)
    # A fringe pattern (assembled coordinates) added to the raw in raw coordinates.
    yy, xx = np.mgrid[:ny, :nx]
    fringe = (np.sin(xx / 3.0) * np.cos(yy / 4.0) + 0.3).astype(np.float32)
    for a in det:
        f = fringe[a.bbox.slices]
        f = f[::-1] if a.raw_flip_y else f
        f = f[:, ::-1] if a.raw_flip_x else f
        img[a.raw_data_bbox.slices] += 200.0 * f
    # Amp pedestals (amp offsets to measure): -4, 0 or +4 ADU on the data regions.
    for i, a in enumerate(det):
        img[a.raw_data_bbox.slices] += 4.0 * ((i % 3) - 1)
    # A saturated star with a horizontal saturated trail in amp C00 (no flip).
    d0 = det["C00"].raw_data_bbox
    img[d0.y0 + 20 : d0.y0 + 24, d0.x0 + 30 : d0.x0 + 34] = 65000.0
    img[d0.y0 + 30, d0.x0 + 10 : d0.x0 + 25] = 64000.0
    # A bright column in amp C01 running into its parallel overscan (below saturation).
    a1 = det["C01"]
    d1, p1 = a1.raw_data_bbox, a1.raw_parallel_overscan_bbox
    img[d1.y0 + 30 : p1.y1, d1.x0 + 10] = 50000.0
    # A negative dip and a positive outlier in the serial overscan of C02.
    s2 = det["C02"].raw_serial_overscan_bbox
    img[s2.y0 + 5, s2.x0 + 2] -= 800.0
    img[s2.y0 + 9, s2.x0 + 3] += 1500.0
    raw.masked_image.image[...] = np.clip(np.rint(img), 0, 65535).astype(raw.image.dtype)
    raw.metadata["SEQNAME"] = "A"
    raw.metadata["TESTKEY"] = "removable"

    names = [a.name for a in det]
    # bias: a few ADU of structure and a block that drives the image (and variance) negative
    bias_img = (3.0 + 0.01 * xx + 0.02 * yy).astype(np.float32)
    bias_img[70:74, 400:404] = 30000.0
    bias_img[55, 300] = np.nan
    bias = _exposure(bias_img, 0.5)
    dark_img = np.full((ny, nx), 2.0 / truth.gain(DET, "C00"), np.float32)
    dark_img[:, 200] += 40.0
    dark = _exposure(dark_img, 0.1, dark_time=1.0)
    flat_img = truth.flat[DET].astype(np.float32)
    g_ref = det["C00"].gain
    for a in det:  # the flat carries the gain ratios: the flat-fielded amps agree
        flat_img[a.bbox.slices] *= g_ref / a.gain
    flat_img[40, 150] = 0.0
    flat = _exposure(flat_img, 1e-4)
    flat.metadata["SEQNAME"] = "B"
    defects = Defects([Box(20, 10, 1, 30), Box(100, 60, 3, 3), Box(350, 5, 2, 20)])
    linearizer = Linearizer({n: "Polynomial" for n in names}, {n: [-2e-6] for n in names})
    n = len(names)
    rng = np.random.default_rng(3)
    coeffs = np.where(np.eye(n, dtype=bool), 0.0, rng.uniform(1e-4, 4e-4, (n, n)))
    crosstalk = CrosstalkCalib(coeffs, coeffs_sqr=coeffs * 1e-5, amp_names=names)
    ptc = FakePtc({a.name: a.gain * 1.1 for a in det}, {a.name: a.read_noise * 1.5 + 1.0 for a in det})
    g = np.exp(-(np.mgrid[-2:3, -2:3] ** 2).sum(axis=0) / 2.0)
    kernel = 2e-6 * g / g.sum()
    bfk = BrighterFatterKernel(
        kernel, {a.name: a.gain for a in det}, {nm: kernel * (1 + 0.2 * i) for i, nm in enumerate(names)}
    )
    trap = SerialTrap(size=150.0, emission_time=2.5, pixel=2, trap_type="linear", coeffs=[0.005])
    cti = DeferredChargeCalib(
        driftScale={nm: 2.4e-4 for nm in names},
        decayTime={nm: 2.4 for nm in names},
        globalCti={nm: 5e-6 for nm in names},
        serialTraps={nm: [trap] for nm in names},
    )
    illum = MaskedImage((1.0 + 0.05 * xx / nx).astype(np.float32), None, np.zeros((ny, nx), np.float32))
    calibs = dict(
        bias=bias, dark=dark, flat=flat, defects=defects, linearizer=linearizer, crosstalk=crosstalk,
        ptc=ptc, bfKernel=bfk, fringes=_exposure(fringe, 0.0), deferredChargeCalib=cti,
        strayLightData=np.full((ny, nx), 7.0, np.float32), illumMaskedImage=illum,
        opticsTransmission={"kind": "optics"}, filterTransmission={"kind": "filter"},
        sensorTransmission={"kind": "sensor"}, atmosphereTransmission={"kind": "atmosphere"},
    )  # fmt: skip
    return RichInput(raw, calibs)


#: The baseline: every step on that can be, each with something to do (dotted keys).
N_AMPS = 16
BASE: dict[str, Any] = {
    "saturation": SATURATION,
    "doSuspect": True,
    "numEdgeSuspect": 2,
    "overscan.doParallelOverscan": True,
    "overscan.parallelOverscanMaskThreshold": 45000,
    "doDeferredCharge": True,
    "deferredChargeCorrection.useGains": True,
    "usePtcGains": True,
    "doCrosstalk": True,
    "crosstalk.crosstalkValues": list(np.full(N_AMPS * N_AMPS, 2e-4)),
    "crosstalk.crosstalkShape": [N_AMPS, N_AMPS],
    "crosstalk.doQuadraticCrosstalkCorrection": True,
    "doBrighterFatter": True,
    "brighterFatterThreshold": 1e-3,
    "doStrayLight": True,
    "fringe.filters": [FILTER],
    "fringe.num": 60,
    "fringe.small": 2,
    "fringe.large": 8,
    "doAmpOffset": True,
    "ampOffset.doApplyAmpOffset": True,
    "ampOffset.ampEdgeWidth": 12,
    "ampOffset.ampEdgeMaxOffset": 50.0,
    "doMeasureBackground": True,
    "qa.flatnessMeshX": 32,
    "qa.flatnessMeshY": 32,
    "doCalculateStatistics": True,
    "doSaveInterpPixels": True,
    "doVignette": True,
    "vignette.xCenter": 256.0,
    "vignette.yCenter": 48.0,
    "vignette.radius": 250.0,
    "doAttachTransmissionCurve": True,
    "doIlluminationCorrection": True,
    "illumFilters": [FILTER],
    "doBinnedExposures": True,
    "binFactor1": 4,
    "binFactor2": 16,
    "cameraKeywordsToCompare": ["SEQNAME"],
}


def _no_filter(inp: RichInput) -> RichInput:
    raw = inp.raw.copy()
    raw.info = dataclasses.replace(raw.info, physical_filter=None)
    return RichInput(raw, inp.calibs)


def _detectorless(inp: RichInput) -> RichInput:
    out = IsrTask(config=build_config(IsrTaskConfig, VARIANTS["bare"][0])).run(inp.raw.copy()).exposure
    return RichInput(out.image.copy(), {})


#: Named variants: (config overrides on top of BASE, input transform or None).
VARIANTS: dict[str, tuple[dict[str, Any], Callable[[RichInput], RichInput] | None]] = {
    "main": ({}, None),
    # doApplyGains excludes doFlat
    "noflat": ({"doFlat": False}, None),
    "gains": ({"doFlat": False, "doApplyGains": True}, None),
    # overscan models with parameters
    "poly": ({"overscan.fitType": "POLY", "overscan.order": 2}, None),
    "perrow": ({"overscan.fitType": "MEDIAN_PER_ROW"}, None),
    "order5": ({"overscan.order": 5}, None),  # spline fits need >= 5 bins
    "meanclip": ({"overscan.fitType": "MEANCLIP"}, None),
    "maxdev": ({"overscan.maxDeviation": 400.0, "overscan.fitType": "MEAN"}, None),
    # crosstalk from the config's coefficients (they have no quadratic terms)
    "noquad": ({"crosstalk.doQuadraticCrosstalkCorrection": False}, None),
    "xtconfig": (
        {"crosstalk.useConfigCoefficients": True, "crosstalk.doQuadraticCrosstalkCorrection": False},
        None,
    ),
    # a tight fringe clip rejects positions at every iteration
    "fringeclip": ({"fringe.clip": 1.0}, None),
    # BAD pixels keep their badStatistic value when not interpolated
    "nointerp": ({"doInterpolate": False}, None),
    # amp offsets measured, not applied (doApplyAmpOffset needs doAmpOffset)
    "ampmeasure": ({"ampOffset.doApplyAmpOffset": False}, None),
    # per-amp brighter-fatter kernels
    "bfamp": ({"brighterFatterLevel": "AMP"}, None),
    # no calibrations at all (assembly switches)
    "bare": (
        {
            "doBias": False,
            "doDark": False,
            "doFlat": False,
            "doDefect": False,
            "doLinearize": False,
            "doCrosstalk": False,
            "doBrighterFatter": False,
            "doDeferredCharge": False,
            "usePtcGains": False,
            "doStrayLight": False,
            "doFringe": False,
            "doIlluminationCorrection": False,
            "doVignette": False,
            "doAmpOffset": False,
            "ampOffset.doApplyAmpOffset": False,
            "cameraKeywordsToCompare": [],
            "doBinnedExposures": False,
        },
        None,
    ),  # fmt: skip
    # exposure without a physical filter (fallbackFilterName)
    "nofilter": ({"fluxMag0T1": {FILTER: 1e11}}, _no_filter),
}
# a detector-less 2-D array (config gain / readNoise describe its single amplifier)
VARIANTS["detectorless"] = (
    {**VARIANTS["bare"][0], "doOverscan": False, "doAssembleCcd": False, "gain": 2.0, "readNoise": 5.0},
    _detectorless,
)

#: field -> list of (value, variant). Fields absent here get `auto_value` in "main".
CASES: dict[str, list[tuple[Any, str]]] = {
    "datasetType": [("rawAlt", "main")],
    "fallbackFilterName": [(FILTER, "nofilter")],
    "doSetBadRegions": [(False, "nointerp")],
    "badStatistic": [("MEDIAN", "nointerp")],
    "saturation": [(30000.0, "main")],
    "growSaturationFootprintSize": [(3, "main")],
    "saturatedMaskName": [("SATX", "main")],
    "suspectMaskName": [("SUSPX", "main")],
    "numEdgeSuspect": [(5, "main")],
    "overscan.fitType": [
        (v, "order5" if v.endswith("SPLINE") else "main") for v in typing.get_args(FitType) if v != "MEDIAN"
    ],
    "overscan.order": [(4, "poly")],
    "overscan.numSigmaClip": [(1.5, "meanclip")],
    "overscan.maskPlanes": [([], "main")],
    "overscan.overscanIsInt": [(False, "perrow")],
    "overscan.maxDeviation": [(5.0, "main")],
    "overscan.doAbsoluteMaxDeviation": [(False, "maxdev")],
    "overscan.parallelOverscanMaskThreshold": [(55000, "main")],
    "overscan.parallelOverscanMaskGrowSize": [(2, "main")],
    "overscan.leadingColumnsToSkip": [(2, "main")],
    "overscan.trailingColumnsToSkip": [(2, "main")],
    "overscan.leadingRowsToSkip": [(1, "main")],
    "overscan.trailingRowsToSkip": [(1, "main")],
    "doAssembleCcd": [(False, "bare")],
    "assembleCcd.doTrim": [(False, "bare")],
    "assembleCcd.keysToRemove": [(["TESTKEY"], "main")],
    "biasDataProductName": [("biasAlt", "main")],
    "darkDataProductName": [("darkAlt", "main")],
    "flatDataProductName": [("flatAlt", "main")],
    "deferredChargeCorrection.nPixelOffsetCorrection": [(5, "main")],
    "deferredChargeCorrection.nPixelTrapCorrection": [(2, "main")],
    "gain": [(4.0, "detectorless")],
    "readNoise": [(12.0, "detectorless")],
    "negativeVarianceMaskName": [("NEGVAR", "main")],
    "crosstalk.useConfigCoefficients": [(True, "noquad")],
    "crosstalk.minPixelToMask": [(20000.0, "main")],
    "crosstalk.crosstalkMaskPlane": [("XTALK", "main")],
    "crosstalk.crosstalkValues": [(list(np.full(N_AMPS * N_AMPS, 5e-4)), "xtconfig")],
    "crosstalk.crosstalkShape": [([8, 32], "xtconfig")],
    "brighterFatterLevel": [("AMP", "main")],
    "brighterFatterMaxIter": [(1, "main")],
    "brighterFatterThreshold": [(1e6, "main")],
    "brighterFatterMaskListToInterpolate": [(["SAT"], "main")],
    "brighterFatterMaskGrowSize": [(2, "main")],
    "flatUserScale": [(2.0, "main")],
    "doApplyGains": [(True, "noflat")],
    "normalizeGains": [(True, "gains")],
    "doAmpOffset": [(False, "ampmeasure")],
    "fringe.filters": [([], "main")],
    "fringe.num": [(30, "main")],
    "fringe.small": [(1, "main")],
    "fringe.large": [(12, "main")],
    "fringe.iterations": [(1, "fringeclip")],
    "fringe.clip": [(1.0, "main")],
    "fringe.rngSeedOffset": [(17, "main")],
    "ampOffset.ampEdgeInset": [(2, "main")],
    "ampOffset.ampEdgeWidth": [(6, "main")],
    "ampOffset.ampEdgeMinFrac": [(0.999, "main")],
    "ampOffset.ampEdgeMaxOffset": [(0.01, "main")],
    "ampOffset.ampEdgeWindowFrac": [(0.5, "main")],
    "ampOffset.backgroundFractionSample": [(0.3, "main")],
    "ampOffset.detectionThreshold": [(1.0, "main")],
    "ampOffset.detectionSmoothingSigma": [(0.5, "main")],
    "ampOffset.ignorePlanes": [([], "main")],
    "qa.thumbnailBinning": [(2, "main")],
    "qa.flatnessMeshX": [(16, "main")],
    "qa.flatnessMeshY": [(16, "main")],
    "qa.flatnessClipSigma": [(1.0, "main")],
    "qa.flatnessNIter": [(1, "main")],
    "maskListToInterpolate": [(["SAT"], "main")],
    "fluxMag0T1": [({FILTER: 1e11}, "main")],
    "defaultFluxMag0T1": [(1e11, "main")],
    "vignetteValue": [(0.0, "main")],
    "vignette.xCenter": [(100.0, "main")],
    "vignette.yCenter": [(10.0, "main")],
    "vignette.radius": [(200.0, "main")],
    "illumScale": [(2.0, "main")],
    "illumFilters": [([], "main")],
    "binFactor1": [(2, "main")],
    "binFactor2": [(8, "main")],
    "cameraKeywordsToCompare": [([], "main")],
}

#: Fields whose only effect is to refuse a run (the refusal is the behaviour asserted).
EXPECT_RAISE = {
    "doConvertIntToFloat": RuntimeError,  # False: the uint16 raw is refused, naming the field
    "doRaiseOnCalibMismatch": RuntimeError,  # the flat's SEQNAME differs
    "crosstalk.crosstalkShape": RuntimeError,  # 8 x 32 coefficients for 16 amplifiers
}

#: Fields whose effect needs a condition the rich input cannot give -> the test showing it.
NAMED_TESTS: dict[str, str] = {
    # calibrations smaller than the detector (the baseline's fit)
    "doTrimToMatchCalib": (
        "tests/isr/test_isr_extras.py::test_trim_to_match_calib_keeps_amp_boxes_inside_the_image"
    ),
    # an untrimmed (raw-shaped) bias
    "doBiasBeforeOverscan": "tests/tasks/test_config_behaviour_isr.py::test_bias_before_overscan",
}

FRAMEWORK = {"saveMetadata", "saveLogOutput"}  # tests/tasks/test_config_fields.py


def fingerprint(config: IsrTaskConfig, inp: RichInput) -> dict[str, Any]:
    """Everything one run produces, flattened (see `_behaviour.same`)."""
    out = connection_entries(config)
    task = IsrTask(config=config)
    try:
        res = task.run(**inp.run_kwargs())
    except Exception as exc:  # noqa: BLE001 - a refusal is an output too
        out["raised"] = type(exc)
        out["message"] = str(exc)
        return out
    out.update(exposure_entries("exposure", res.exposure))
    out.update(exposure_entries("preInterp", res.preInterpExposure))
    out.update(exposure_entries("bin1", res.outputBin1Exposure))
    out.update(exposure_entries("bin2", res.outputBin2Exposure))
    out["ossThumb"] = res.ossThumb
    out["flattenedThumb"] = res.flattenedThumb
    out["outputStatistics"] = res.outputStatistics
    for k, v in metadata_dict(task.getFullMetadata()).items():
        out[f"taskmd{k}"] = v
    return out


@functools.cache
def variant_fingerprint(variant: str) -> tuple[IsrTaskConfig, RichInput, dict[str, Any]]:
    """Baseline config, input and fingerprint of a variant (computed once)."""
    overrides, transform = VARIANTS[variant]
    config = build_config(IsrTaskConfig, {**BASE, **overrides})
    inp = rich_input()
    if transform is not None:
        inp = transform(inp)
    return config, inp, fingerprint(config, inp)


def _cases() -> list[tuple[str, Any, str]]:
    out = []
    base_cfg = build_config(IsrTaskConfig, BASE)
    for dotted in leaf_fields(IsrTaskConfig):
        if dotted in FRAMEWORK or dotted in IsrTaskConfig.noOpFields or dotted in NAMED_TESTS:
            continue
        if dotted in CASES:
            out += [(dotted, value, variant) for value, variant in CASES[dotted]]
        else:
            out += [
                (dotted, v, "main") for v in auto_value(IsrTaskConfig, dotted, get_dotted(base_cfg, dotted))
            ]
    return out


def test_baseline_is_rich_and_deterministic():
    """The baseline runs every step (each APPLIED keyword True) and a rerun is identical."""
    config, inp, fp = variant_fingerprint("main")
    assert "raised" not in fp, fp.get("message")
    for step in ("OVERSCAN", "ASSEMBLECCD", "BIAS", "VARIANCE", "LINEARIZE", "CROSSTALK", "DEFECT",
                 "DARK", "FLAT", "FRINGE", "BF", "STRAYLIGHT", "DEFERREDCHARGE"):  # fmt: skip
        assert fp[f"exposure.md/LSST ISR {step} APPLIED"] is True, step
    mask, planes = fp["exposure.mask"], fp["exposure.planes"]
    for plane in ("SAT", "SUSPECT", "BAD", "INTRP", "CROSSTALK", "UNMASKEDNAN", "VIGNETTED", "EDGE"):
        assert np.count_nonzero(mask & (1 << planes[plane])) > 0, plane
    assert fp["exposure.md/LSST ISR FLAT SEQUENCER MISMATCH"] is True
    assert differing(fp, fingerprint(config, inp)) == []


@pytest.mark.parametrize("dotted,value,variant", _cases(), ids=lambda v: str(v)[:40])
def test_field_changes_the_output(dotted, value, variant):
    """Changing one field (from the variant's baseline) changes the outputs or the connections."""
    config, inp, base = variant_fingerprint(variant)
    assert "raised" not in base, (variant, base.get("message"))
    assert get_dotted(config, dotted) != value, f"{dotted}: the case value is the baseline value"
    overrides = {**BASE, **VARIANTS[variant][0], dotted: value}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a documented no-op would warn: not expected here
        changed = build_config(IsrTaskConfig, overrides)
    fp = fingerprint(changed, inp)
    if dotted in EXPECT_RAISE:
        assert fp.get("raised") is EXPECT_RAISE[dotted], fp.get("message")
        return
    assert "raised" not in fp, fp.get("message")
    assert differing(base, fp), f"{dotted}={value!r} ({variant}) changed nothing"


def test_every_field_is_accounted_for():
    """Each leaf field is swept, mapped to a named test, a documented no-op or a framework field."""
    swept = {d for d, _, _ in _cases()}
    for dotted in leaf_fields(IsrTaskConfig):
        classes = [
            dotted in swept,
            dotted in NAMED_TESTS,
            dotted in IsrTaskConfig.noOpFields,
            dotted in FRAMEWORK,
        ]
        assert sum(classes) == 1, (dotted, classes)
    assert set(CASES) <= set(leaf_fields(IsrTaskConfig))
    assert_named_tests_exist(NAMED_TESTS)
    assert len(leaf_fields(IsrTaskConfig)) == 149


def test_bias_before_overscan():
    """DoBiasBeforeOverscan subtracts an untrimmed bias from the raw before the overscan.

    With a bias of strong column structure (20 ADU rms), ISR with the untrimmed mean of the
    bias raws subtracted first equals ISR with the usual trimmed master bias (the overscan
    levels cancel the same way) to a fraction of an ADU, and differs from no bias by the
    structure.
    """
    specs = [{"observation_type": "bias"}] * 6 + [
        {"observation_type": "science", "exposure_time": 10.0, "flux": 300.0}
    ]
    exps, _ = simulate_exposures("testcam", specs, seed=13, detectors=[DET], bias_col_rms=20.0)
    plain = dict(doDark=False, doFlat=False, doDefect=False, doInterpolate=False, doSetBadRegions=False)
    untrimmed = np.mean([e.image.astype(np.float64) for e in exps[:6]], axis=0).astype(np.float32)
    no_bias = IsrTask(config=IsrTaskConfig(doBias=False, **plain))
    trimmed = np.mean([no_bias.run(e.copy()).exposure.image for e in exps[:6]], axis=0)
    raw = exps[6]
    first = IsrTask(config=IsrTaskConfig(doBiasBeforeOverscan=True, **plain)).run(
        raw.copy(), bias=_exposure(untrimmed, 0.0)
    )
    usual = IsrTask(config=IsrTaskConfig(**plain)).run(raw.copy(), bias=_exposure(trimmed, 0.0))
    none = no_bias.run(raw.copy()).exposure.image
    assert first.exposure.metadata["LSST ISR BIAS APPLIED"] is True
    a, b = first.exposure.image, usual.exposure.image
    assert a.shape == b.shape == raw.detector.bbox.shape
    for amp in raw.detector:
        d = (a - b)[amp.bbox.slices]
        # integer overscan medians of the raw minus a mean vs medians of the raws: +-0.5 ADU steps
        assert abs(float(np.median(d))) <= 0.75, amp.name
        assert float(np.std(d)) < 0.05, amp.name  # the same bias pixels are subtracted
    assert float(np.std(none - b)) > 15.0  # the column structure (20 ADU rms) is what is removed


def test_normalize_gains_ignores_nan_pixels():
    """NormalizeGains scales each amp to the median of the amp medians, a NaN pixel left out.

    Two amps at 100 and 300 ADU with gains 2 and 1 (200 and 300 e-) end at 250 e- each; the NaN
    pixel stays NaN instead of turning its amp (or every amp) into NaN.
    """
    from pipeline.tasks.isr.gain_noise import apply_amp_gains

    img = np.full((8, 16), 100.0, np.float32)
    img[:, 8:] = 300.0
    img[0, 0] = np.nan
    var = np.ones_like(img)
    boxes = {"A": Box(0, 0, 8, 8), "B": Box(8, 0, 8, 8)}
    apply_amp_gains(img, var, {"A": 2.0, "B": 1.0}, boxes, normalize=True)
    assert np.isnan(img[0, 0])
    np.testing.assert_allclose(img[1:, :8], 250.0, rtol=1e-6)
    np.testing.assert_allclose(img[:, 8:], 250.0, rtol=1e-6)
    np.testing.assert_allclose(var[:, :8], 4.0)  # the variance is converted, not rescaled


def test_negative_variance_is_masked_next_to_a_nan():
    """A NaN in the same rows does not hide a negative variance from maskNegativeVariance.

    The fused bias/variance pass reports the smallest variance so the task can skip the scan;
    a NaN in the block used to make the block minimum NaN, which ``min`` then dropped.
    """
    inp = rich_input()
    cfg = IsrTaskConfig(
        doDark=False, doFlat=False, doDefect=False, doLinearize=False, doInterpolate=False,
        doSetBadRegions=False,
    )  # fmt: skip
    out = IsrTask(config=cfg).run(inp.raw.copy(), bias=inp.calibs["bias"].copy()).exposure
    mi = out.masked_image
    assert np.isnan(out.image[55, 300])  # the bias NaN, same rows as the negative block
    block = (slice(70, 74), slice(400, 404))
    assert np.all(out.variance[block] < 0)
    assert np.all(mi.mask[block] & mi.get_plane_bitmask("BAD"))
    negative = out.variance <= 0
    assert np.count_nonzero(negative & ((mi.mask & mi.get_plane_bitmask("BAD")) == 0)) == 0


def test_cfht_safe_factor(monkeypatch):
    """CfhtIsrTask.safe reaches the histogram saturation estimate, which scales with it.

    `tests/isr/test_cfht_isr.py` checks the estimate's value with the default 0.95; here the
    configured factor is the one the task passes, and 0.8 gives a lower saturation level.
    """
    import pipeline.tasks.isr.cfht_isr_task as cfht

    seen = []
    estimate = cfht.estimate_saturation

    class StopError(Exception):
        pass

    def spy(image, header_saturate=65535.0, safe=0.95):
        seen.append(safe)
        raise StopError

    monkeypatch.setattr(cfht, "estimate_saturation", spy)
    with pytest.raises(StopError):
        cfht.CfhtIsrTask(config=cfht.CfhtIsrTaskConfig(safe=0.8)).run(rich_input().raw.copy())
    assert seen == [0.8]
    img = np.full((20, 20), 1000, np.uint16)
    img[:10] = 64000
    assert estimate(img, 65535.0, 0.8) < estimate(img, 65535.0, 0.95)
    assert estimate(img, 65535.0, 0.8) == pytest.approx(0.8 * 64000, rel=2e-3)
