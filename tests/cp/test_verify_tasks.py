"""cp_verify tasks on synthetic data of known truth: VerifyDark, VerifyDefects, VerifyPtc.

Every test builds what a good calibration leaves behind (a residual at the read noise, defects
that cover every bad pixel, a PTC that agrees with the previous one) and checks that it passes;
then injects one fault and checks that exactly the named test fails on exactly the named amp.
The statistics are compared with the injected numbers, not only the verdicts.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tasks.cp.ptc_extract import PhotonTransferCurveExtractTask
from pipeline.tasks.cp.ptc_solve import PhotonTransferCurveSolveTask
from pipeline.tasks.isr.calibs import Defects
from pipeline.tasks.verify.tasks import (
    CpVerifyDarkTask,
    CpVerifyDefectsTask,
    CpVerifyFlatConfig,
    CpVerifyFlatTask,
    CpVerifyPtcTask,
    CpVerifyRunMergeConfig,
    CpVerifyRunMergeTask,
)
from pipeline.tasks.verify.verify_stats import ptc_noise_scatter, verify_ptc_amp
from tests.cp._synth import SynthDetector, make_detector, make_exposure, make_flat

NAMES = ("C00", "C01", "C10", "C11")
DET = SynthDetector(
    gains=(1.2, 1.5, 1.0, 1.8), read_noise_e=(4.0, 5.0, 4.5, 6.0), ny=200, nx_amp=200, names=NAMES
)


def _failed(stats: dict) -> set[tuple[str, str]]:
    return {
        (a, t)
        for a, tests in stats["VERIFY"]["AMP"].items()
        for t, ok in tests.items()
        if not ok and t != "SUCCESS"
    }


# ----------------------------------------------------------------------------------------- dark
EXPTIME = 60.0  # s
DARK_CURRENT = 0.005  # e-/s: 0.3 e- per frame, negligible shot noise against 4-6 e- read noise


def _dark_residual(
    seed: int, n_dark_frames: int, extra_dark_e_per_s: dict[str, float] | None = None, n_cr: int = 0
):
    """The ISR residual of a dark processed with a candidate dark made of ``n_dark_frames``.

    residual = read noise + dark shot noise (this frame) − candidate-dark noise ×
    exposure time − candidate offset (ADU); the candidate dark holds the read noise of its
    ``n_dark_frames`` frames, plus ``extra_dark_e_per_s`` (a light leak in its frames) on the
    named amps. ``n_cr`` cosmic rays (3 x 3, 2000 ADU) go into amp C00.
    """
    rng = np.random.default_rng(seed)
    det = make_detector(DET)
    img = np.empty(DET.shape)
    md = {}
    for k, (amp, g, rn) in enumerate(zip(DET.names, DET.gains, DET.read_noise_e)):
        sl = np.s_[:, k * DET.nx_amp : (k + 1) * DET.nx_amp]
        shape = (DET.ny, DET.nx_amp)
        dark_e = rng.poisson(DARK_CURRENT * EXPTIME, shape) - DARK_CURRENT * EXPTIME
        frame = (rng.normal(0.0, rn, shape) + dark_e) / g
        cand_noise = rng.normal(0.0, rn / np.sqrt(n_dark_frames), shape) / g
        leak = (extra_dark_e_per_s or {}).get(amp, 0.0) * EXPTIME / g
        img[sl] = frame - cand_noise - leak
        md[f"LSST ISR GAIN {amp}"] = g
        md[f"LSST ISR READNOISE {amp}"] = rn
    for j in range(n_cr):
        y, x = 10 + 18 * (j % 10), 10 + 60 * (j // 10)
        img[y : y + 3, x : x + 3] += 2000.0
    exp = make_exposure(img, det, 7000 + seed, EXPTIME, obs_type="dark")
    exp.metadata.update(md)
    return exp


def test_verify_dark_good_passes_with_the_injected_numbers():
    """64 frames in the candidate: residual noise sqrt(1 + 1/64) (+0.8 %) of the read noise;
    8 cosmic rays counted and removed by the CR-masked noise.
    """
    exp = _dark_residual(1, 64, n_cr=8)
    stats = CpVerifyDarkTask().run(exp).outputStats
    assert stats["SUCCESS"], _failed(stats)
    assert stats["calibType"] == "dark"
    for amp, g, rn in zip(DET.names, DET.gains, DET.read_noise_e):
        s = stats["AMP"][amp]
        assert s["READ_NOISE"] == pytest.approx(rn / g)
        assert s["NOISE"] / (rn / g) == pytest.approx(np.sqrt(1 + 1 / 64), abs=0.02), amp
        assert abs(s["MEAN"]) < 0.02 * rn / g
    assert stats["AMP"]["C00"]["N_CR"] == 8 and stats["AMP"]["C01"]["N_CR"] == 0


def test_verify_dark_few_frames_fails_noise_and_a_leak_fails_mean():
    """A candidate from 4 frames: +11.8 % noise, NOISE fails on every amp. A light leak of
    0.1 e-/s in C01's dark frames: residual −4 ADU, beyond the 3.3 ADU noise, MEAN fails on C01
    only.
    """
    few = CpVerifyDarkTask().run(_dark_residual(2, 4)).outputStats
    assert not few["SUCCESS"]
    assert _failed(few) == {(a, "NOISE") for a in DET.names}
    leak = CpVerifyDarkTask().run(_dark_residual(3, 64, {"C01": 0.1})).outputStats
    assert _failed(leak) == {("C01", "MEAN")}
    assert leak["AMP"]["C01"]["MEAN"] == pytest.approx(-0.1 * EXPTIME / 1.5, abs=0.05)
    merged = (
        CpVerifyRunMergeTask(config=CpVerifyRunMergeConfig(calibType="dark")).run([few, leak]).outputResults
    )
    assert not merged["SUCCESS"] and merged["TESTS"]["NOISE"] == {"n": 8, "failed": 4}
    assert merged["TESTS"]["MEAN"] == {"n": 8, "failed": 1}


# -------------------------------------------------------------------------------------- defects
#: (x0, y0, nx, ny) in detector pixels: a hot column in C00, a cold column in C01, hot pixels in C11
TRUE_DEFECTS = [(37, 0, 1, 200), (251, 40, 1, 160), (700, 50, 2, 2), (650, 120, 1, 1)]


def _flat_with_defects(seed: int):
    """Flat-fielded frame at 10000 ADU (Poisson noise), the TRUE_DEFECTS at +-40 %."""
    rng = np.random.default_rng(seed)
    det = make_detector(DET)
    img = rng.normal(10000.0, 100.0, DET.shape)
    for k, (x0, y0, nx, ny) in enumerate(TRUE_DEFECTS):
        img[y0 : y0 + ny, x0 : x0 + nx] *= 0.6 if k == 1 else 1.4
    return make_exposure(img, det, 8000 + seed, 1.0)


def test_verify_defects_good_passes_missing_column_fails_outliers():
    exp = _flat_with_defects(4)
    good = CpVerifyDefectsTask().run(exp, Defects(TRUE_DEFECTS)).outputStats
    assert good["SUCCESS"], _failed(good)
    assert good["AMP"]["C00"]["DEFECT_PIXELS"] == 200 and good["AMP"]["C01"]["DEFECT_PIXELS"] == 160
    assert good["AMP"]["C00"]["FRAC"] == pytest.approx(200 / 40000)
    assert all(good["AMP"][a]["STAT_OUTLIERS"] <= 1 for a in DET.names)  # 5 sigma of 40000 normals
    # the candidate misses C01's cold column: 160 unmasked outliers there, nowhere else
    missing = CpVerifyDefectsTask().run(exp, Defects([TRUE_DEFECTS[i] for i in (0, 2, 3)])).outputStats
    assert _failed(missing) == {("C01", "OUTLIERS")}
    assert missing["AMP"]["C01"]["STAT_OUTLIERS"] == 160


def test_verify_defects_too_many_fails_fraction():
    """A candidate masking a 40 x 200 block of C10 (20 % of the amp > 5 %) fails FRACTION there."""
    exp = _flat_with_defects(5)
    cand = Defects(TRUE_DEFECTS + [(420, 0, 40, 200)])
    stats = CpVerifyDefectsTask().run(exp, cand).outputStats
    assert _failed(stats) == {("C10", "FRACTION")}
    assert stats["AMP"]["C10"]["FRAC"] == pytest.approx(0.2)


# ----------------------------------------------------------------------------------------- flat
def _spectral_flat_verification(seed: int, n_flat: int = 8, ramp: float = 0.0):
    """A Kast-like spectral dome flat verified on an independent frame, through IsrTask's flat division.

    The illumination rises along x from 400 to 11000 ADU (gain 1.2 e-/ADU, read noise 3 ADU),
    as Kast blue's amp A; the candidate flat is the mean of ``n_flat`` frames (with its
    variance) times ``1 + ramp · (x / nx - 0.5)`` (a wrong gradient). Returns the verification
    exposure with its image and variance planes as IsrTask leaves them.
    """
    from pipeline.tasks.isr.isr_functions import flat_correction

    rng = np.random.default_rng(seed)
    det = make_detector(DET)
    ny, nx = DET.shape
    gain, rn = 1.2, 3.0
    illum = np.tile(np.geomspace(400.0, 11000.0, nx), (ny, 1))  # ADU

    def frame():
        return rng.poisson(illum * gain) / gain + rng.normal(0.0, rn, illum.shape)

    frames = np.array([frame() for _ in range(n_flat)])
    flat = frames.mean(axis=0)
    flat_var = (illum / gain + rn**2) / n_flat
    norm = float(flat.mean())
    flat_img = (flat / norm) * (1.0 + ramp * (np.arange(nx) / nx - 0.5))[None, :]
    flat_var = flat_var / norm**2
    img = frame().astype(np.float32)
    var = (illum / gain + rn**2).astype(np.float32)
    mask = np.zeros(img.shape, np.int32)
    flat_correction(img, mask, var, flat_img.astype(np.float32), None, flat_var.astype(np.float32))
    return make_exposure(img, det, 9000 + seed, 15.0, variance=var)


def test_verify_flat_noise_of_a_spectral_flat():
    """A good flat of non-uniform illumination: every flat-fielded pixel sits at the same level
    but keeps its raw signal's shot noise. cp_verify's NOISE <= sqrt(MEAN) fails it on the faint
    amps; the ccdflow test against the variance plane (NOISE_RATIO) passes it, and fails a flat
    with a 20 % gradient across the detector (a 5 % ramp inside each amp)."""
    good = _spectral_flat_verification(6)
    stats = CpVerifyFlatTask().run(good).outputStats
    assert stats["SUCCESS"], _failed(stats)
    for amp in NAMES:
        assert stats["AMP"][amp]["NOISE_RATIO"] == pytest.approx(0.987, abs=0.02)  # 3-sigma clip
    # the faint end (C00: 400-1000 ADU raw) is noisier than sqrt(MEAN) of the flat-fielded level
    assert stats["AMP"]["C00"]["NOISE"] > 2 * np.sqrt(stats["AMP"]["C00"]["MEAN"])
    cp_verify = CpVerifyFlatTask(config=CpVerifyFlatConfig(useFlatVariance=False)).run(good).outputStats
    assert ("C00", "NOISE") in _failed(cp_verify) and ("C11", "NOISE") not in _failed(cp_verify)
    bad = CpVerifyFlatTask().run(_spectral_flat_verification(6, ramp=0.2)).outputStats
    # the 5 % ramp of an amp (std 46 ADU) beats the 36 ADU shot noise of the bright amps
    assert {("C10", "NOISE"), ("C11", "NOISE")} <= _failed(bad)
    assert bad["AMP"]["C11"]["NOISE_RATIO"] == pytest.approx(np.hypot(1.0, 46.0 / 36.0), rel=0.1)


# ------------------------------------------------------------------------------------------ PTC
PTC_DET = SynthDetector(
    gains=(1.2, 1.5, 1.0, 1.8), read_noise_e=(4.0, 5.0, 4.5, 6.0), ny=150, nx_amp=150, names=NAMES
)
#: e-; down to 10 e- so that the fitted read noise is good to ~1 % (PTC_NOISE allows 5 %), and
#: a turnoff (the top point) of 1e5 e- (PTC_TURNOFF needs 90000 e-)
SIGNALS = np.concatenate([np.geomspace(10, 2e4, 8), np.linspace(4e4, 1.0e5, 4)])


def _ptc(seed: int, gains=PTC_DET.gains, signals=SIGNALS, noise_slope: float = 0.0):
    """A PTC measured by the extract + solve tasks from synthetic flat pairs of known gains.

    The overscan read noise (header ``LSST ISR OVERSCAN RESIDUAL SERIAL STDEV``) is the true
    one, plus ``noise_slope`` ADU per 10^4 ADU of signal (a noise that follows the flux).
    """
    truth = SynthDetector(
        gains=tuple(gains),
        read_noise_e=PTC_DET.read_noise_e,
        ny=PTC_DET.ny,
        nx_amp=PTC_DET.nx_amp,
        names=NAMES,
    )
    det = make_detector(PTC_DET)  # nominal camera values
    rng = np.random.default_rng(seed)
    exps, dims = [], []
    for k, s in enumerate(signals):
        for j in range(2):
            im = make_flat(truth, s, rng)
            e = make_exposure(im, det, 100 * seed + 2 * k + j, float(s) / 1000.0)
            for a, g, rn in zip(truth.names, truth.gains, truth.read_noise_e):
                e.metadata[f"LSST ISR OVERSCAN RESIDUAL SERIAL STDEV {a}"] = (
                    rn / g + noise_slope * s / g / 1e4
                )
            exps.append(e)
            dims.append(e.info.id)
    ext = PhotonTransferCurveExtractTask()
    ext.config.maximumRangeCovariancesAstier = 1
    partials = ext.run(inputExp=exps, inputDims=dims).outputCovariances
    return PhotonTransferCurveSolveTask().run(inputCovariances=partials).outputPtcDataset, det


@pytest.fixture(scope="module")
def ptcs():
    previous, det = _ptc(1)
    good, _ = _ptc(2)
    drifted, _ = _ptc(3, gains=(1.2, 1.5 * 1.08, 1.0, 1.8))  # C01's gain 8 % higher
    return previous, good, drifted, det


def test_verify_ptc_against_the_previous_certified_ptc(ptcs):
    previous, good, drifted, det = ptcs
    for k, amp in enumerate(PTC_DET.names):  # the PTCs measure the truth
        assert good.gain[amp] == pytest.approx(PTC_DET.gains[k], rel=0.01)
        assert previous.gain[amp] == pytest.approx(PTC_DET.gains[k], rel=0.01)
    task = CpVerifyPtcTask()
    ok = task.run(good, inputReferencePtc=previous, detector=det).outputStats
    assert ok["SUCCESS"], _failed(ok)
    for amp in PTC_DET.names:
        s = ok["AMP"][amp]
        assert s["REF_SOURCE"] == "ptc" and s["REF_GAIN"] == previous.gain[amp]
        assert s["NOISE_SIGNAL_INDEPENDENCE"] < 0.01  # a constant overscan noise
        assert s["PTC_TURNOFF"] * s["PTC_GAIN"] > 90000.0
    bad = task.run(drifted, inputReferencePtc=previous, detector=det).outputStats
    assert _failed(bad) == {("C01", "PTC_GAIN")}
    assert bad["AMP"]["C01"]["PTC_GAIN"] / previous.gain["C01"] == pytest.approx(1.08, abs=0.01)


def test_verify_ptc_uses_the_camera_without_a_previous_ptc(ptcs):
    """No previous PTC: the camera's nominal gain / read noise are the reference (cp_verify).
    A camera whose C10 gain is 10 % off the truth fails C10's PTC_GAIN.
    """
    _, good, _, det = ptcs
    ok = CpVerifyPtcTask().run(good, detector=det).outputStats
    assert ok["SUCCESS"], _failed(ok)
    assert {s["REF_SOURCE"] for s in ok["AMP"].values()} == {"camera"}
    wrong = make_detector(
        SynthDetector(
            gains=(1.2, 1.5, 1.1, 1.8),
            read_noise_e=PTC_DET.read_noise_e,
            ny=PTC_DET.ny,
            nx_amp=PTC_DET.nx_amp,
            names=NAMES,
        )
    )
    bad = CpVerifyPtcTask().run(good, detector=wrong).outputStats
    assert _failed(bad) == {("C10", "PTC_GAIN")}
    none = CpVerifyPtcTask().run(good).outputStats  # nothing to compare with: the tests fail
    assert {t for _, t in _failed(none)} == {"PTC_GAIN", "PTC_NOISE"}


def test_verify_ptc_short_turnoff_and_flux_dependent_noise_fail():
    """Flats only up to 30000 e-: turnoff below 90000 e-, PTC_TURNOFF fails on every amp; an
    overscan noise rising by 5 ADU per 10^4 e- (a scatter of 2.5-4.5 ADU over the pairs) fails
    NOISE_SIGNAL_INDEPENDENCE.
    """
    short, det = _ptc(4, signals=np.geomspace(10, 3e4, 10), noise_slope=5.0)
    stats = CpVerifyPtcTask().run(short, detector=det).outputStats
    failed = _failed(stats)
    assert {(a, "PTC_TURNOFF") for a in PTC_DET.names} <= failed
    assert {(a, "NOISE_SIGNAL_INDEPENDENCE") for a in PTC_DET.names} <= failed
    assert not {t for _, t in failed} & {"PTC_GAIN"}


def test_verify_ptc_amp_thresholds_in_percent_and_electrons():
    base = dict(gain=1.5, noise=5.0, turnoff=70000.0, ref_gain=1.5, ref_noise=5.0)
    assert verify_ptc_amp(**base)["SUCCESS"]  # 70000 ADU x 1.5 = 105000 e- > 90000
    assert not verify_ptc_amp(**{**base, "gain": 1.5 * 1.051})["PTC_GAIN"]
    assert verify_ptc_amp(**{**base, "gain": 1.5 * 1.049})["PTC_GAIN"]
    assert not verify_ptc_amp(**{**base, "turnoff": 59000.0})["PTC_TURNOFF"]  # 88500 e-
    assert not verify_ptc_amp(**{**base, "ref_noise": float("nan")})["PTC_NOISE"]
    assert not verify_ptc_amp(**base, noise_scatter=1.3)["NOISE_SIGNAL_INDEPENDENCE"]
    assert ptc_noise_scatter([3.0, 3.0, 3.0]) == 0.0 and np.isnan(ptc_noise_scatter([3.0]))


# ------------------------------------------------------------------------ VerifyPtc via pipetask
@pytest.mark.slow
def test_verify_ptc_pipeline_finds_the_previous_certified_ptc(ptcs, tmp_path):
    """``pipetask run VerifyPtc.yaml -i CANDIDATE_RUN,CALIB``: the candidate is the run's ptc, the
    reference the one certified before it (not the candidate itself once certified too); a
    candidate whose C01 gain drifted by 8 % fails C01's PTC_GAIN, and the summary says so.
    """
    import subprocess
    import sys
    from pathlib import Path

    from butler import Butler, DatasetType

    previous, good, drifted, _ = ptcs
    cam = Path(__file__).parent / "data" / "xtcam.yaml"
    pipelines = Path(__file__).resolve().parents[2] / "pipelines"

    def tool(name: str) -> str:
        cand = Path(sys.executable).parent / name
        return str(cand) if cand.exists() else name

    def run(*args: object, ok: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run([str(a) for a in args], capture_output=True, text=True)
        assert res.returncode == 0 or not ok, (args[:3], res.stdout[-2000:], res.stderr[-2000:])
        return res

    repo = tmp_path / "repo"
    run(tool("butler"), "create", repo)
    run(tool("butler"), "register-instrument", repo, cam)
    b = Butler(repo, writeable=True)
    b.registry.register_dataset_type(
        DatasetType("ptc", ["instrument", "detector"], "PhotonTransferCurveDataset", is_calibration=True)
    )
    # the PTCs were measured on 4 amps named C00..C11 as xtcam's: rename nothing, just store them
    for obj, rname in ((previous, "p/previous"), (good, "p/good"), (drifted, "p/drifted")):
        b.put(obj, "ptc", {"instrument": "xtcam", "detector": 0}, run=rname)
    cert = (tool("butler"), "certify-calibrations", repo)
    run(
        *cert,
        "p/previous",
        "xtcam/calib",
        "ptc",
        "--begin-date",
        "2020-01-01T00:00:00",
        "--end-date",
        "2021-01-01T00:00:00",
    )
    # the good candidate is certified too, later: it must not become its own reference
    run(*cert, "p/good", "xtcam/calib", "ptc", "--begin-date", "2021-01-01T00:00:00")

    def verify(cand_run: str, out: str, reference: str) -> dict:
        run(
            tool("pipetask"),
            "run",
            "-b",
            repo,
            "-p",
            pipelines / "VerifyPtc.yaml",
            "-i",
            f"{cand_run},xtcam/calib",
            "--output-run",
            out,
            "-d",
            "instrument = 'xtcam' AND detector = 0",
            "--register-dataset-types",
        )
        bb = Butler(repo)
        det = bb.get("verifyPtcDetStats", instrument="xtcam", detector=0, collections=out)
        assert det["REFERENCE"]["run"] == reference
        assert {s["REF_SOURCE"] for s in det["AMP"].values()} == {"ptc"}
        return bb.get("verifyPtcResults", instrument="xtcam", collections=out)

    good_res = verify("p/good", "v/ptc_good", "p/previous")
    assert good_res["SUCCESS"], good_res["FAILURES"]
    assert good_res["TESTS"]["PTC_GAIN"] == {"n": 4, "failed": 0}
    # the drifted candidate is checked against the latest certified one (the good PTC)
    bad_res = verify("p/drifted", "v/ptc_drifted", "p/good")
    assert [(f["amp"], f["test"]) for f in bad_res["FAILURES"]] == [("C01", "PTC_GAIN")]
    assert bad_res["FAILURES"][0]["value"] == pytest.approx(drifted.gain["C01"])
    summ = run(tool("ccdflow-verify-summary"), repo, "--collections", "v/ptc_drifted", ok=False)
    assert summ.returncode == 1 and "PTC_GAIN" in summ.stdout and "C01" in summ.stdout
