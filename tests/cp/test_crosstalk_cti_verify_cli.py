"""cpCrosstalk, cpCti and the Verify* pipelines through the CLI, against injected truth.

Camera: tests/cp/data/xtcam.yaml (one CCD, four 160 x 128 amplifiers with readout-corner flips,
24 serial-overscan columns). Raws come from the simulator with the opt-in effects of
`pipeline.instruments.sim_crosstalk_cti` (bright / saturated spots with a known crosstalk matrix;
serial CTI with one trap), are ingested with ``butler ingest-raws`` and processed with
``pipetask run``; products are certified with ``butler certify-calibrations`` and used by
``pipetask run isr``. VerifyBias / VerifyFlat / VerifyDark / VerifyDefects run a good candidate
(every test passes) and one with an injected fault (the named tests fail on the named amps); the
dark and defects raws carry `pipeline.instruments.sim_effects.DefectEffect` defects.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.instruments import get_instrument
from pipeline.instruments.sim_crosstalk_cti import BrightSpots, SerialCti, crosstalk_matrix
from pipeline.instruments.simulate import make_truth, simulate_raws

pytestmark = pytest.mark.slow

CAMERA = Path(__file__).parent / "data" / "xtcam.yaml"
PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
RAWS = "xtcam/raw/all"
CALIB = "xtcam/calib"


def _tool(name: str) -> str:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def _run(*args: object, ok: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if ok and res.returncode != 0:
        raise AssertionError(
            f"{args[:3]} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        )
    return res


def _pipetask(repo: Path, pipeline: str, inputs: str, run: str, where: str, *extra: str) -> None:
    _run(
        _tool("pipetask"),
        "run",
        "-b",
        repo,
        "-p",
        PIPELINES / f"{pipeline}.yaml",
        "-i",
        inputs,
        "--output-run",
        run,
        "-d",
        where,
        "--register-dataset-types",
        *extra,
    )


def _certify(repo: Path, run: str, dtype: str) -> None:
    _run(_tool("butler"), "certify-calibrations", repo, run, CALIB, dtype)


def _repo(tmp: Path, raws_dir: Path) -> Path:
    repo = tmp / "repo"
    _run(_tool("butler"), "create", repo)
    _run(_tool("butler"), "register-instrument", repo, CAMERA)
    _run(_tool("butler"), "ingest-raws", repo, raws_dir, "--transfer", "symlink")
    return repo


def _ids(truth, kind: str) -> list[int]:
    return [e.exposure_id for e in truth.exposures if e.observation_type == kind]


def _where(ids: list[int]) -> str:
    return f"exposure IN ({', '.join(str(i) for i in ids)})"


# ----------------------------------------------------------------------------------- crosstalk
@pytest.fixture(scope="module")
def crosstalk_repo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xt")
    inst = get_instrument(str(CAMERA))
    truth = make_truth(inst, seed=11)
    truth.crosstalk[0] = crosstalk_matrix(4, seed=11)
    truth.effects.append(BrightSpots(n_spots=8))
    specs = [{"type": "bias"}] * 8 + [{"type": "science", "exposure_time": 1.0, "flux": 0.0}] * 12
    res = simulate_raws(inst, tmp / "raws", exposures=specs, seed=11, truth=truth)
    (tmp / "raws" / "truth.json").write_text(json.dumps(res.truth.to_dict()))
    repo = _repo(tmp, tmp / "raws")
    biases, science = _ids(truth, "bias"), _ids(truth, "science")
    _pipetask(repo, "cpBias", RAWS, "xt/bias", _where(biases))
    _certify(repo, "xt/bias", "bias")
    _pipetask(repo, "cpCrosstalk", f"{RAWS},{CALIB}", "xt/crosstalk", _where(science[1:]))
    _certify(repo, "xt/crosstalk", "crosstalk")
    return repo, truth, science


def test_crosstalk_coefficients_match_truth(crosstalk_repo):
    from butler import Butler

    repo, truth, _ = crosstalk_repo
    calib = Butler(repo).get("crosstalk", instrument="xtcam", detector=0, collections="xt/crosstalk")
    true = truth.crosstalk[0]
    assert json.loads((repo.parent / "raws" / "truth.json").read_text())["crosstalk"]["0"] == true.tolist()
    assert calib.amp_names == ["C00", "C01", "C10", "C11"]
    off = ~np.eye(4, dtype=bool)
    err = np.abs(calib.coeffs - true)
    tol = np.maximum(0.05 * true, 2e-6)
    assert np.all(err[off] <= tol[off]), (calib.coeffs, true)
    assert np.all(np.abs(calib.coeffs[off & (true == 0)]) < 1e-5)
    assert calib.coeffValid[off & (true > 0)].all()
    assert calib.coeffNum[off].min() > 500


def test_crosstalk_ghost_removed_by_isr(crosstalk_repo):
    """doCrosstalk with the certified matrix: the ghost of every unsaturated spot drops from tens
    of ADU to below the read noise (the spot-free science frame is zero + noise)."""
    from butler import Butler

    repo, truth, science = crosstalk_repo
    first = science[0]  # not used to measure
    base = (
        "-c",
        "isr:doDark=False",
        "-c",
        "isr:doFlat=False",
        "-c",
        "isr:doDefect=False",
        "-c",
        "isr:overscan.fitType=MEDIAN_PER_ROW",
    )
    _pipetask(repo, "isr", f"{RAWS},{CALIB}", "xt/isr_off", f"exposure = {first}", *base)
    _pipetask(
        repo,
        "isr",
        f"{RAWS},{CALIB}",
        "xt/isr_on",
        f"exposure = {first}",
        *base,
        "-c",
        "isr:doCrosstalk=True",
    )
    b = Butler(repo)
    off = b.get("postISRCCD", instrument="xtcam", exposure=first, detector=0, collections="xt/isr_off")
    on = b.get("postISRCCD", instrument="xtcam", exposure=first, detector=0, collections="xt/isr_on")
    det = off.detector
    amps = list(det)
    img_off, img_on = np.asarray(off.image, float), np.asarray(on.image, float)
    from pipeline.tasks.isr.crosstalk import flip_to

    checked = 0
    for s, sa in enumerate(amps):
        src = img_off[sa.bbox.slices]
        bright = (src > 20000) & (src < 50000)  # unsaturated spot tops
        if bright.sum() < 50:
            continue
        for t, ta in enumerate(amps):
            c = truth.crosstalk[0][s, t]
            if s == t or c < 3e-4:
                continue
            ghost_pos = flip_to(bright, str(sa.readout_corner), str(ta.readout_corner))
            own = flip_to(img_off[ta.bbox.slices], str(ta.readout_corner), str(ta.readout_corner))
            quiet = own < 1000  # no spot of the target's own
            sel = ghost_pos & quiet
            if sel.sum() < 30:
                continue
            g_off = float(np.median(img_off[ta.bbox.slices][sel]))
            g_on = float(np.median(img_on[ta.bbox.slices][sel]))
            rn = ta.read_noise / ta.gain
            assert g_off > 3 * rn, (sa.name, ta.name, g_off)
            assert abs(g_on) < rn, (sa.name, ta.name, g_on, rn)
            checked += 1
    assert checked >= 3


# ----------------------------------------------------------------------------------------- CTI
CTI_TRUTH = SerialCti(global_cti=4e-6, trap_size=25.0, trap_emission_time=1.0, trap_scaling=0.05)


@pytest.fixture(scope="module")
def cti_repo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cti")
    inst = get_instrument(str(CAMERA))
    truth = make_truth(inst, seed=12)
    truth.effects.append(CTI_TRUTH)
    levels = np.geomspace(200, 45000, 12)
    specs = [{"type": "flat", "exposure_time": 1.0, "level": float(v)} for v in levels]
    specs.append({"type": "flat", "exposure_time": 1.0, "level": 20000.0})  # test frame
    res = simulate_raws(inst, tmp / "raws", exposures=specs, seed=12, truth=truth)
    saved = json.loads(json.dumps(res.truth.to_dict()))
    assert saved["effects"]["SerialCti"]["globalCti"] == 4e-6
    repo = _repo(tmp, tmp / "raws")
    flats = _ids(truth, "flat")
    _pipetask(repo, "cpCti", RAWS, "cti/cti", _where(flats[:-1]))
    _certify(repo, "cti/cti", "cpCtiCalib")
    return repo, flats


def test_cti_matches_truth(cti_repo):
    from butler import Butler

    repo, _ = cti_repo
    calib = Butler(repo).get("cpCtiCalib", instrument="xtcam", detector=0, collections="cti/cti")
    assert calib.units == "electron"
    for amp in ("C00", "C01", "C10", "C11"):
        assert calib.globalCti[amp] == pytest.approx(CTI_TRUTH.global_cti, rel=0.10), amp
        traps = calib.serialTraps[amp]
        assert len(traps) == 1, amp
        assert traps[0].size == pytest.approx(CTI_TRUTH.trap_size, rel=0.20), amp


def test_deferred_charge_correction_removes_eper(cti_repo):
    """ISR with doDeferredCharge and the certified cpCtiCalib: the first serial-overscan column of a
    20k e- flat falls from ~25 ADU of deferred charge to below 0.5 ADU."""
    from butler import Butler
    from pipeline.tasks.isr.deferred_charge import readout_slices

    repo, flats = cti_repo
    test = flats[-1]
    base = (
        "-c",
        "isr:doBias=False",
        "-c",
        "isr:doDark=False",
        "-c",
        "isr:doFlat=False",
        "-c",
        "isr:doDefect=False",
        "-c",
        "isr:doAssembleCcd=False",
        "-c",
        "isr:overscan.fitType=MEDIAN_PER_ROW",
        "-c",
        "isr:overscan.leadingColumnsToSkip=6",
    )
    _pipetask(repo, "isr", f"{RAWS},{CALIB}", "cti/isr_off", f"exposure = {test}", *base)
    _pipetask(
        repo,
        "isr",
        f"{RAWS},{CALIB}",
        "cti/isr_on",
        f"exposure = {test}",
        *base,
        "-c",
        "isr:doDeferredCharge=True",
        "-c",
        "isr:deferredChargeCorrection.useGains=True",
    )
    b = Butler(repo)
    for run, check in (("cti/isr_off", lambda v: v > 10.0), ("cti/isr_on", lambda v: abs(v) < 0.5)):
        exp = b.get("postISRCCD", instrument="xtcam", exposure=test, detector=0, collections=run)
        img = np.asarray(exp.image, float)
        for amp in exp.detector:
            over, data = amp.raw_serial_overscan_bbox, amp.raw_data_bbox
            cols = img[data.y0 : data.y1, over.x0 : over.x1]
            _, _, from_right = readout_slices(amp)
            first = cols[:, -1] if from_right else cols[:, 0]
            assert check(float(first.mean())), (run, amp.name, float(first.mean()))


# -------------------------------------------------------------------------------- verification
@pytest.fixture(scope="module")
def verify_repo(tmp_path_factory):
    from butler import Butler

    tmp = tmp_path_factory.mktemp("verify")
    inst = get_instrument(str(CAMERA))
    truth = make_truth(inst, seed=13, flat_gradient=0.05)
    specs = [{"type": "bias"}] * 24 + [{"type": "flat", "exposure_time": 1.0, "level": 20000.0}] * 8
    simulate_raws(inst, tmp / "raws", exposures=specs, seed=13, truth=truth)
    repo = _repo(tmp, tmp / "raws")
    biases, flats = _ids(truth, "bias"), _ids(truth, "flat")
    _pipetask(repo, "cpBias", RAWS, "v/bias_good", _where(biases[:16]))
    _pipetask(repo, "cpBias", RAWS, "v/bias_half", _where(biases[:8]))
    # the good bias from 16 frames (residual noise sqrt(1 + 1/16) = 3 % above the read noise); the
    # "bad" one from half of them, with a +6 ADU offset in amp C01
    b = Butler(repo, writeable=True)
    bad = b.get("bias", instrument="xtcam", detector=0, collections="v/bias_half")
    amp = (
        bad.detector["C01"]
        if hasattr(bad.detector, "__getitem__")
        else [a for a in bad.detector if a.name == "C01"][0]
    )
    img = np.array(bad.image, dtype=np.float32)
    img[amp.bbox.slices] += 6.0
    bad.masked_image.image[...] = img
    b.put(bad, "bias", {"instrument": "xtcam", "detector": 0}, run="v/bias_bad")
    _certify(repo, "v/bias_good", "bias")
    _pipetask(repo, "cpFlat", f"{RAWS},{CALIB}", "v/flat_good", _where(flats[:4]))
    flat = b.get("flat", instrument="xtcam", detector=0, physical_filter="white", collections="v/flat_good")
    ny, nx = flat.image.shape
    ramp = (1.0 + 0.3 * (np.arange(nx) / (nx - 1) - 0.5))[None, :].astype(np.float32)
    flat.masked_image.image[...] = np.asarray(flat.image) * ramp
    b.put(flat, "flat", {"instrument": "xtcam", "detector": 0, "physical_filter": "white"}, run="v/flat_bad")
    return repo, biases, flats


def _verify(repo: Path, pipeline: str, calib_run: str, run: str, where: str) -> dict:
    from butler import Butler

    _pipetask(repo, pipeline, f"{calib_run},{RAWS},{CALIB}", run, where)
    name = {"VerifyBias": "verifyBiasResults", "VerifyFlat": "verifyFlatResults"}[pipeline]
    return Butler(repo).get(name, instrument="xtcam", collections=run)


def test_verify_good_bias_passes(verify_repo):
    repo, biases, _ = verify_repo
    res = _verify(repo, "VerifyBias", "v/bias_good", "v/verify_bias_good", _where(biases[16:]))
    assert res["SUCCESS"], res["FAILURES"]
    assert res["TESTS"]["NOISE"]["n"] == 8 * 4 and res["TESTS"]["MEAN"]["failed"] == 0
    out = _run(_tool("ccdflow-verify-summary"), repo, "--collections", "v/verify_bias_good")
    assert "PASSED" in out.stdout and out.returncode == 0


def test_verify_bad_bias_fails_named_tests(verify_repo):
    """Half the frames: the residual noise is sqrt(1 + 1/8) = 6 % above the read noise (NOISE
    fails on every amp); the +6 ADU offset of C01 fails its MEAN test; the others pass MEAN."""
    repo, biases, _ = verify_repo
    res = _verify(repo, "VerifyBias", "v/bias_bad", "v/verify_bias_bad", _where(biases[16:]))
    assert not res["SUCCESS"]
    failed = {(f["amp"], f["test"]) for f in res["FAILURES"]}
    assert {("C00", "NOISE"), ("C01", "NOISE"), ("C10", "NOISE"), ("C11", "NOISE")} <= failed
    assert ("C01", "MEAN") in failed
    assert not {("C00", "MEAN"), ("C10", "MEAN"), ("C11", "MEAN")} & failed
    out = _run(_tool("ccdflow-verify-summary"), repo, "--collections", "v/verify_bias_bad", ok=False)
    assert out.returncode == 1 and "FAILED" in out.stdout and "NOISE" in out.stdout


def test_verify_flat_good_passes_and_gradient_fails(verify_repo):
    repo, _, flats = verify_repo
    good = _verify(repo, "VerifyFlat", "v/flat_good", "v/verify_flat_good", _where(flats[4:]))
    assert good["SUCCESS"], good["FAILURES"]
    bad = _verify(repo, "VerifyFlat", "v/flat_bad", "v/verify_flat_bad", _where(flats[4:]))
    assert not bad["SUCCESS"]
    # a 30 % ramp: the amp levels differ by +-7.5 % (amp-to-amp SCATTER fails on every exposure)
    # and each amp holds a +-3.75 % ramp, far above the Poisson noise (NOISE fails on every amp)
    assert {f["test"] for f in bad["FAILURES"]} == {"SCATTER", "NOISE"}
    assert {f["amp"] for f in bad["FAILURES"] if f["test"] == "SCATTER"} == {"DET"}
    assert bad["TESTS"]["SCATTER"]["failed"] == 4 and bad["TESTS"]["NOISE"]["failed"] == 16


# ------------------------------------------------------------------ VerifyDark / VerifyDefects
#: assembled-pixel defects of xtcam (320 x 256): cold column segments (x, y0, y1) in C00 and
#: C11, hot pixels (x, y) in C01 and C10 (they also carry 5000 e- in every flat)
COLD_COLUMNS = [(40, 10, 120), (250, 128, 256)]
HOT_PIXELS = [(200, 60), (100, 200)]


@pytest.fixture(scope="module")
def verify_dark_defects_repo(tmp_path_factory):
    from butler import Butler, DatasetType
    from pipeline.instruments.sim_effects import DefectEffect
    from pipeline.tasks.isr.calibs import Defects

    tmp = tmp_path_factory.mktemp("verify_dd")
    inst = get_instrument(str(CAMERA))
    # 0.002 e-/s x 100 s: 0.2 e- of dark shot noise per frame, ~1 % of the read-noise variance
    truth = make_truth(inst, seed=14, dark_current=0.002)
    truth.effects.append(
        DefectEffect(cold_columns=COLD_COLUMNS, hot_pixels=HOT_PIXELS, hot_offset=5000.0, hot_current=20.0)
    )
    specs = (
        [{"type": "bias"}] * 24
        + [{"type": "dark", "exposure_time": 100.0}] * 32
        + [{"type": "flat", "exposure_time": 1.0, "level": 20000.0}] * 4
    )
    simulate_raws(inst, tmp / "raws", exposures=specs, seed=14, truth=truth)
    repo = _repo(tmp, tmp / "raws")
    biases, darks, flats = _ids(truth, "bias"), _ids(truth, "dark"), _ids(truth, "flat")
    _pipetask(repo, "cpBias", RAWS, "vd/bias", _where(biases))
    _certify(repo, "vd/bias", "bias")
    _pipetask(repo, "cpDark", f"{RAWS},{CALIB}", "vd/dark_good", _where(darks[:24]))
    _pipetask(repo, "cpDark", f"{RAWS},{CALIB}", "vd/dark_few", _where(darks[:4]))
    b = Butler(repo, writeable=True)
    b.registry.register_dataset_type(
        DatasetType("defects", ["instrument", "detector"], "IsrCalib", is_calibration=True)
    )
    boxes = [(x, y0, 1, y1 - y0) for x, y0, y1 in COLD_COLUMNS] + [(x, y, 1, 1) for x, y in HOT_PIXELS]
    did = {"instrument": "xtcam", "detector": 0}
    b.put(Defects(boxes), "defects", did, run="vd/defects_good")
    b.put(Defects(boxes[1:]), "defects", did, run="vd/defects_missing")  # C00's cold column missing
    return repo, darks[24:], flats


def _verify_results(repo: Path, pipeline: str, cand_run: str, run: str, where: str) -> dict:
    from butler import Butler

    _pipetask(repo, pipeline, f"{cand_run},{RAWS},{CALIB}", run, where)
    return Butler(repo).get(f"verify{pipeline[6:]}Results", instrument="xtcam", collections=run)


def test_verify_dark_good_passes_few_frames_fail_noise(verify_dark_defects_repo):
    """A dark from 24 frames passes every test on 8 other darks; one from 4 frames leaves
    sqrt(1 + 1/24 + 1/4) = 1.14 x the read noise: NOISE fails on every amp of every exposure."""
    repo, darks, _ = verify_dark_defects_repo
    good = _verify_results(repo, "VerifyDark", "vd/dark_good", "vd/verify_dark_good", _where(darks))
    assert good["SUCCESS"], good["FAILURES"]
    assert good["TESTS"]["NOISE"] == {"n": 8 * 4, "failed": 0} and good["calibType"] == "dark"
    few = _verify_results(repo, "VerifyDark", "vd/dark_few", "vd/verify_dark_few", _where(darks))
    assert few["TESTS"]["NOISE"] == {"n": 32, "failed": 32}
    assert {f["test"] for f in few["FAILURES"]} == {"NOISE"}


def test_verify_defects_good_passes_missing_column_fails(verify_dark_defects_repo):
    """Flats through ISR with the bias and the candidate defects (no flat division): with every
    injected defect in the candidate no pixel is left beyond 5 sigma; without C00's cold column
    its 110 pixels (at 30 % response) are outliers of C00 only."""
    from butler import Butler

    repo, _, flats = verify_dark_defects_repo
    good = _verify_results(repo, "VerifyDefects", "vd/defects_good", "vd/verify_defects_good", _where(flats))
    assert good["SUCCESS"], good["FAILURES"]
    stats = Butler(repo).get("verifyDefectsStats", instrument="xtcam", collections="vd/verify_defects_good")
    one = next(iter(stats["DETECTORS"].values()))
    assert one["AMP"]["C00"]["DEFECT_PIXELS"] == 110 and one["AMP"]["C11"]["DEFECT_PIXELS"] == 128
    missing = _verify_results(
        repo, "VerifyDefects", "vd/defects_missing", "vd/verify_defects_missing", _where(flats)
    )
    assert {(f["amp"], f["test"]) for f in missing["FAILURES"]} == {("C00", "OUTLIERS")}
    assert missing["TESTS"]["OUTLIERS"] == {"n": 4 * 4, "failed": 4}
    stats = Butler(repo).get(
        "verifyDefectsStats", instrument="xtcam", collections="vd/verify_defects_missing"
    )
    assert all(d["AMP"]["C00"]["STAT_OUTLIERS"] == 110 for d in stats["DETECTORS"].values())
