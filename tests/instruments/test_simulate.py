"""The raw simulator: reproducibility, injected truth recovered from the pixels, headers that translate."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.instruments import get_instrument
from pipeline.instruments.raw import read_raw
from pipeline.instruments.simulate import main, simulate_raws
from tests.builders import make_bias_set, make_flat_pair_sequence, make_raw_exposure

#: Simulator settings that leave only photon noise (no read noise, flat structure or bias structure).
_QUIET = dict(read_noises=0.0, flat_rms=0.0, flat_gradient=0.0, bias_row_amplitude=0.0, bias_col_rms=0.0)


def _amp_stats(exp, amp):
    data = exp.image[amp.raw_data_bbox.slices].astype(np.float64)
    over = exp.image[amp.raw_serial_overscan_bbox.slices].astype(np.float64)
    return data, over


def test_flat_pair_gain_and_noise_recovered():
    """Check flat pair gain and noise recovered."""
    pairs, truth = make_flat_pair_sequence(
        "testcam",
        gains={"C00": 1.5, "C01": 2.5},
        read_noises=6.0,
        exposure_times=[4.0],
        seed=11,
        flux=2000.0,
        flat_rms=0.0,
        bias_col_rms=0.0,
    )
    e1, e2 = pairs[0]
    assert e1.image.dtype == np.uint16 and e1.shape == e1.detector.raw_shape
    for name in ("C00", "C01", "C11"):
        amp = e1.detector[name]
        g = truth.gain(0, name)
        d1, o1 = _amp_stats(e1, amp)
        d2, o2 = _amp_stats(e2, amp)
        # overscan-corrected mean and pair-difference variance: var(diff)/2 = mu/g + (rn/g)^2
        mu = 0.5 * (
            (d1 - np.median(o1, axis=1)[:, None]).mean() + (d2 - np.median(o2, axis=1)[:, None]).mean()
        )
        var = np.var(d1 - d2) / 2.0
        rn_adu = truth.amps[0][name].read_noise / g
        gain_est = mu / (var - rn_adu**2)
        assert gain_est == pytest.approx(g, rel=0.06), name
        assert np.std(o1 - o2) / np.sqrt(2) == pytest.approx(rn_adu, rel=0.1)
    assert truth.gain(0, "C00") == 1.5 and truth.gain(0, "C01") == 2.5
    assert truth.amps[0]["C10"].gain == get_instrument("testcam").camera[0]["C10"].gain


def test_bias_level_row_structure_and_flips():
    """Check bias level row structure and flips."""
    exps, truth = make_bias_set(
        "testcam", n=1, seed=2, detector=1, bias_level={"C00": 500.0}, bias_row_amplitude=3.0, read_noises=1.0
    )
    exp = exps[0]
    det = exp.detector
    c00 = det["C00"]
    _, over = _amp_stats(exp, c00)
    box = c00.raw_serial_overscan_bbox
    expected = 500.0 + 3.0 * np.sin(2 * np.pi * np.arange(box.y0, box.y1) / 97.0)
    assert over.mean() == pytest.approx(expected.mean(), abs=0.5)
    rows = over.mean(axis=1)
    assert np.corrcoef(rows, expected)[0, 1] > 0.9
    assert truth.amps[1]["C01"].bias_level == 1000.0
    # a top-right amp is stored flipped: its prescan is on the right of its data, its parallel overscan below
    c13 = det["C13"]
    assert c13.raw_flip_x and c13.raw_flip_y and c13.readout_corner == "UR"
    assert c13.raw_serial_prescan_bbox.x0 > c13.raw_data_bbox.x0
    assert c13.raw_parallel_overscan_bbox.y0 < c13.raw_data_bbox.y0


def test_flat_pattern_lands_through_flips():
    """Check flat pattern lands through flips."""
    # a flat with no noise sources but photon noise: the assembled data region follows truth.flat
    exp, truth = make_raw_exposure(
        "testcam",
        detector=0,
        exposure_time=10.0,
        flux=2000.0,
        seed=5,
        read_noises=0.0,
        bias_row_amplitude=0.0,
        bias_col_rms=0.0,
        flat_gradient=0.3,
        flat_rms=0.0,
    )
    flat = truth.flat[0]
    for amp in exp.detector:
        g = truth.gain(0, amp.name)
        raw = exp.image[amp.raw_data_bbox.slices].astype(float) - truth.amps[0][amp.name].bias_level
        if amp.raw_flip_y:
            raw = raw[::-1, :]
        if amp.raw_flip_x:
            raw = raw[:, ::-1]
        model = 20000.0 * flat[amp.bbox.slices] / g
        # column and row profiles follow the flat (a wrong flip is off by up to 15 % at the edges)
        assert np.allclose(raw.mean(axis=0) / model.mean(axis=0), 1.0, atol=0.006), amp.name
        assert np.allclose(raw.mean(axis=1) / model.mean(axis=1), 1.0, atol=0.006), amp.name
        assert not np.allclose(raw.mean(axis=0)[::-1] / model.mean(axis=0), 1.0, atol=0.006)


def test_crosstalk_nonlinearity_dark_hot_columns_saturation():
    """Check crosstalk nonlinearity dark hot columns saturation."""
    exp, truth = make_raw_exposure(
        "testcam",
        detector=0,
        observation_type="dark",
        exposure_time=100.0,
        seed=9,
        dark_current=2.0,
        hot_columns=2,
        hot_column_current=30.0,
        read_noises=2.0,
    )
    amp = exp.detector["C00"]
    d, o = _amp_stats(exp, amp)
    signal_e = (d - o.mean()).mean() * truth.gain(0, "C00")
    hot = [x for x in truth.hot_columns[0] if amp.bbox.x0 <= x < amp.bbox.x1]
    cold_cols = [x for x in range(amp.bbox.nx) if x not in hot]
    assert (d[:, cold_cols] - o.mean()).mean() * truth.gain(0, "C00") == pytest.approx(200.0, rel=0.05)
    assert signal_e > 190.0
    for x in hot:
        assert (d[:, x] - o.mean()).mean() * truth.gain(0, "C00") == pytest.approx(3200.0, rel=0.05)
    # saturation clips
    sat, _ = make_raw_exposure(
        "testcam", detector=0, exposure_time=10.0, flux=1e5, seed=1, saturation=30000.0
    )
    assert sat.image[sat.detector["C00"].raw_data_bbox.slices].max() == 30000
    # non-linearity: measured = true + c true^2
    lin, _ = make_raw_exposure("testcam", detector=0, exposure_time=5.0, flux=4000.0, seed=4, **_QUIET)
    nl, _ = make_raw_exposure(
        "testcam", detector=0, exposure_time=5.0, flux=4000.0, seed=4, nonlinearity=1e-5, **_QUIET
    )
    a = lin.detector["C00"]
    m0 = lin.image[a.raw_data_bbox.slices].astype(float).mean() - 1000.0
    m1 = nl.image[a.raw_data_bbox.slices].astype(float).mean() - 1000.0
    assert m1 == pytest.approx(m0 + 1e-5 * m0**2, rel=2e-3)
    # crosstalk: a source amp at high signal leaks c[s, t] x signal into a target
    xt_exp, xt_truth = make_raw_exposure(
        "testcam", detector=0, exposure_time=1.0, flux=30000.0, seed=3, crosstalk=True, **_QUIET
    )
    coeffs = xt_truth.crosstalk[0]
    det = xt_exp.detector
    ref, _ = make_raw_exposure("testcam", detector=0, exposure_time=1.0, flux=30000.0, seed=3, **_QUIET)
    target = det["C11"]
    extra = (
        xt_exp.image[target.raw_data_bbox.slices].astype(float) - ref.image[target.raw_data_bbox.slices]
    ).mean()
    expected = sum(coeffs[s, 3] * 30000.0 / xt_truth.gain(0, det[s].name) for s in range(3))
    assert extra == pytest.approx(expected, abs=0.3)


def test_brighter_fatter_like_correlations():
    """Check brighter fatter like correlations."""
    pairs, truth = make_flat_pair_sequence(
        "testcam",
        gains=1.0,
        exposure_times=[20.0],
        seed=8,
        flux=2000.0,
        bf_strength=0.02,
        detector=2,
        **_QUIET,
    )
    e1, e2 = pairs[0]
    amp = e1.detector["C00"]
    diff = e1.image[amp.raw_data_bbox.slices].astype(float) - e2.image[amp.raw_data_bbox.slices].astype(float)
    var = diff.var() / 2
    cov_x = np.mean((diff[:, 1:] - diff.mean()) * (diff[:, :-1] - diff.mean())) / 2
    assert var < 0.9 * 40000.0  # variance deficit below the Poisson mean
    assert cov_x / var > 0.03  # positive nearest-neighbour covariance


def test_reproducible_and_files_translate(tmp_path):
    """Check reproducible and files translate."""
    r1, r2 = (
        simulate_raws(
            "testcam",
            tmp_path / sub,
            exposures=["bias", {"type": "flat", "exposure_time": 2, "flux": 100}],
            seed=3,
            detectors=[0, 2],
        )
        for sub in ("a", "b")
    )
    assert [p.name for p in r1] == ["testcam_1000.fits", "testcam_1001.fits"]
    for p1, p2 in zip(r1, r2):
        a = read_raw(p1, "testcam", 2)
        b = read_raw(p2, "testcam", 2)
        assert np.array_equal(a.image, b.image)
    inst = get_instrument("testcam")
    assert inst.detectors_in_file(r1[1]) == [(0, 1), (2, 2)]
    flat = read_raw(r1[1], None, 2)  # instrument found from the header
    assert flat.info.observation_type == "flat" and flat.info.exposure_time == 2.0 and flat.info.id == 1001
    assert r1.truth.exposures[1].level == 200.0


@pytest.mark.parametrize("name", ["kast_blue", "efosc2"])
def test_single_hdu_instruments_round_trip(tmp_path, name):
    """Check single hdu instruments round trip."""
    res = simulate_raws(
        name,
        tmp_path,
        exposures=[
            "bias",
            {"type": "flat", "exposure_time": 3.0, "flux": 1000.0},
            {"type": "dark", "exposure_time": 60.0},
        ],
        seed=1,
        compress=(name == "efosc2"),
    )
    types = [read_raw(p).info.observation_type for p in res]
    assert types == ["bias", "flat", "dark"]
    exp = read_raw(res[1])
    assert exp.image.dtype == np.uint16 and exp.shape == exp.detector.raw_shape
    assert exp.info.id == res.truth.exposures[1].exposure_id


@pytest.mark.slow
def test_megacam_simulation_uses_real_header_cards(tmp_path, shared_data):
    """Check megacam simulation uses real header cards."""
    res = simulate_raws(
        "megacam",
        tmp_path,
        exposures=[{"type": "flat", "exposure_time": 1.0, "flux": 2000.0}],
        seed=1,
        detectors=[12],
        compress=True,
        header_template=shared_data / "headers" / "megacam" / "1927963o.fits.header",
        gains={"A": 1.7},
        read_noises={"B": 4.5},
    )
    path = res[0]
    assert path.name == "1000f.fits.fz"
    exp = read_raw(path, "megacam", 12)
    assert exp.metadata["TELESCOP"] == "CFHT 3.6m" and exp.metadata["OBSTYPE"] == "FLAT"
    assert exp.info.observation_type == "flat" and exp.info.id == 1000 and exp.info.obs_id == "1000f"
    # the per-file GAINA / RDNOISEB cards carry the injected values and override the camera table
    assert exp.detector["A"].gain == 1.7 and exp.detector["B"].read_noise == 4.5
    assert get_instrument("megacam").camera[12]["A"].gain != 1.7


def test_cli(tmp_path, capsys):
    """Check cli."""
    args = ["testcam", str(tmp_path), "--bias", "2", "--flat", "1:1,2", "--detectors", "0", "--seed", "4"]
    assert main(args + ["--gain", "1.7", "--first-id", "50"]) == 0
    assert read_raw(tmp_path / "testcam_52.fits", "testcam", 0).info.exposure_time == 1.0
    assert read_raw(tmp_path / "testcam_53.fits", "testcam", 0).info.exposure_time == 2.0
    assert len(list(tmp_path.glob("testcam_*.fits"))) == 4
    import json

    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["amps"]["0"]["C10"]["gain"] == 1.7 and len(truth["exposures"]) == 4
    assert main(["nosuchcam", str(tmp_path / "x"), "--bias", "1"]) == 2
    assert "unknown instrument 'nosuchcam'" in capsys.readouterr().err


def test_reusing_truth_continues_ids_and_keeps_fixed_structure(tmp_path):
    """Check a second call with truth= gets new exposure ids (DATE-OBS based) and the same bias structure."""
    first = simulate_raws("kast_blue", tmp_path, exposures=["bias", "bias"], seed=1, bias_level=800.0)
    second = simulate_raws("kast_blue", tmp_path, exposures=["bias"], seed=1, truth=first.truth)
    ids = [e.exposure_id for e in second.truth.exposures]
    assert len(set(ids)) == 3 and ids == sorted(ids)
    assert second.truth is first.truth and second.truth.amps[0]["A"].bias_level == 800.0
    assert read_raw(second[0]).info.id == ids[2]


@pytest.mark.parametrize("lam", [3.0, 200.0, 5000.0])
def test_photon_counts_mean_and_variance(lam):
    """Check shot noise has mean = variance = lambda, below and above the normal-approximation switch."""
    from pipeline.instruments.simulate import _photon_counts

    counts = _photon_counts(np.full((400, 500), lam, np.float32), np.random.default_rng(1))
    assert np.all(counts == np.rint(counts))
    assert counts.mean() == pytest.approx(lam, rel=2e-3 if lam > 100 else 1e-2)
    assert counts.var() == pytest.approx(lam, rel=1.5e-2)
