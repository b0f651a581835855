"""cpDefects: the math on small arrays, and the truth test through the CLI.

The raw simulator injects hot and cold pixels and columns at known places (`DefectEffect`) into
biases, darks and flats of ptccam (one 512 x 512 CCD, four amplifiers); cpBias, cpDark and cpFlat
are run and certified, then cpDefects (from the combined calibrations) and cpDefectsIndividual
(from the exposures) through ``pipetask run``; both ``defects`` must hold every injected defect,
each injected column as one box, with at most 0.01 % of the pixels flagged falsely; certified,
IsrTask's ``doDefect`` masks (BAD) and interpolates them.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.instruments.sim_effects import DefectEffect
from pipeline.tasks.cp import MergeDefectsConfig, MergeDefectsTask
from pipeline.tasks.cp.defects_math import (
    boxes_to_mask,
    fill_bad_columns,
    fill_blinking_columns,
    find_amp_defects,
    mask_to_boxes,
    merge_masks,
)
from pipeline.tasks.isr.calibs import Defects

from ._cpcli import CAMERA, certify, make_repo, run_pipeline

# --- math ------------------------------------------------------------------------------------


def test_mask_to_boxes_is_an_exact_minimal_cover():
    rng = np.random.default_rng(1)
    m = np.zeros((60, 50), bool)
    m[:, 7] = True                      # full column: one box
    m[10:30, 20:23] = True              # 3-wide block: one box
    m[45, 40] = True                    # single pixel
    m[rng.integers(0, 60, 30), rng.integers(30, 50, 30)] = True
    boxes = mask_to_boxes(m)
    assert np.array_equal(boxes_to_mask(boxes, m.shape), m)
    assert (7, 0, 1, 60) in boxes and (20, 10, 3, 20) in boxes and (40, 45, 1, 1) in boxes
    area = sum(w * h for _, _, w, h in boxes)
    assert area == m.sum()              # disjoint


def test_find_amp_defects_thresholds():
    rng = np.random.default_rng(2)
    flat = 10000 + 100 * rng.standard_normal((100, 100))
    flat[5, 5] = 9000                   # -10 sigma: cold
    flat[6, 6] = 10600                  # +6 sigma: hot
    flat[7, 7] = 8100                   # 0.81 of the mean: not cold for VALUE
    flat[8, 8] = 7900                   # 0.79: cold for VALUE
    hot, cold, info = find_amp_defects(flat, None, image_type="flat")
    assert info["stdev"] == pytest.approx(100, rel=0.05)
    assert hot[6, 6] and cold[5, 5] and hot.sum() == 1 and cold.sum() == 3
    hot, cold, _ = find_amp_defects(flat, None, image_type="flat", threshold_type="VALUE")
    assert not hot.any() and cold[8, 8] and not cold[7, 7] and cold.sum() == 1
    dark = rng.poisson(20.0, (100, 100)).astype(float)   # 100 s at 0.2 e-/s, gain 1
    dark[1, 2] += 700                                      # 7 e-/s extra
    dark[3, 4] += 300                                      # 3 e-/s extra
    hot, cold, _ = find_amp_defects(dark, None, image_type="dark", threshold_type="VALUE",
                                    exposure_time=100.0, gain=1.0)
    assert hot[1, 2] and not hot[3, 4] and hot.sum() == 1 and not cold.any()
    hot, cold, _ = find_amp_defects(dark, None, image_type="bias")
    assert not hot.any() and not cold.any()      # STDEV on a bias: nothing (cp_pipe)


def test_column_filling():
    m = np.zeros((200, 10), bool)
    m[::3, 2] = True                    # blinking: 67 pixels every 3 rows
    m[0:40:5, 5] = True                 # only 8: left alone
    m[[10, 11, 150], 8] = True
    out = fill_blinking_columns(m, on_off_threshold=50, gap_threshold=30)
    assert out[0:199, 2].all() and out[:, 5].sum() == 8
    m2 = np.zeros((200, 10), bool)
    m2[:120, 3] = True
    full, n = fill_bad_columns(m2, [(slice(0, 200), slice(0, 10))], 100)
    assert n == 1 and full[:, 3].all()
    assert fill_bad_columns(m2, [(slice(0, 200), slice(0, 10))], -1)[1] == 0


def test_merge_modes_and_the_and_quirk():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    c = a.copy()
    a[0, 0] = b[0, 0] = c[0, 0] = True  # in all three
    a[1, 1] = b[1, 1] = True            # in two of three (0.67)
    a[2, 2] = True                      # in one
    assert merge_masks([a, b, c], "OR").sum() == 3
    # cp_pipe's AND keeps fraction > 1.0, i.e. nothing; ccdflow keeps the pixels in every input
    assert np.argwhere(merge_masks([a, b, c], "AND")).tolist() == [[0, 0]]
    assert merge_masks([a, b, c], "FRACTION", 0.7).sum() == 1
    assert merge_masks([a, b, c], "FRACTION", 0.5).sum() == 2


def test_merge_task_types_are_ored():
    shape = {"LSST CP DEFECTS NY": 20, "LSST CP DEFECTS NX": 10}
    darks = [Defects([(1, 1, 1, 1)], metadata={**shape, "cpDefectGenImageType": "dark"}) for _ in range(3)]
    flats = [Defects([(4, 0, 1, 20)], metadata={**shape, "cpDefectGenImageType": "flat"}),
             Defects([(4, 0, 1, 20), (9, 9, 1, 1)], metadata={**shape, "cpDefectGenImageType": "flat"})]
    out = MergeDefectsTask(config=MergeDefectsConfig(combinationMode="AND")).run(darks + flats).mergedDefects
    assert sorted(out.boxes) == [(1, 1, 1, 1), (4, 0, 1, 20)]
    with pytest.raises(ValueError, match="detector shape"):
        MergeDefectsTask().run([Defects([(0, 0, 1, 1)])])


# --- truth through the CLI --------------------------------------------------------------------

EFFECT = DefectEffect(
    hot_pixels=[(40, 50), (300, 100), (450, 400), (100, 300), (257, 258)],
    cold_pixels=[(60, 70), (320, 140), (480, 420), (120, 330)],
    hot_columns=[(200, 0, 256)],            # a full amplifier column (amp C00)
    cold_columns=[(350, 256, 512), (90, 20, 200)],   # full (amp C11) and partial (amp C00)
    hot_current=20.0, hot_offset=3000.0, cold_response=0.4,
)


@pytest.fixture(scope="module")
def defect_repo(tmp_path_factory):
    from pipeline.instruments import get_instrument
    from pipeline.instruments.simulate import make_truth, simulate_raws

    root = tmp_path_factory.mktemp("defects")
    raw = root / "raw"
    exposures = ([{"type": "bias"}] * 5 + [{"type": "dark", "exposure_time": 100.0}] * 3
                 + [{"type": "flat", "exposure_time": 2.0, "flux": 10000.0}] * 5)
    truth = make_truth(get_instrument(str(CAMERA)), seed=11, dark_current=0.05)
    truth.effects.append(EFFECT)
    result = simulate_raws(str(CAMERA), raw, exposures=exposures, seed=11, truth=truth)
    repo = root / "repo"
    make_repo(repo, raw)
    raws, calib = "ptccam/raw/all", "ptccam/calib"
    run_pipeline(repo, "cpBias.yaml", raws, "u/bias", "exposure.observation_type='bias'")
    certify(repo, "u/bias", calib, "bias")
    run_pipeline(repo, "cpDark.yaml", f"{raws},{calib}", "u/dark", "exposure.observation_type='dark'")
    certify(repo, "u/dark", calib, "dark")
    run_pipeline(repo, "cpFlat.yaml", f"{raws},{calib}", "u/flat", "exposure.observation_type='flat'")
    certify(repo, "u/flat", calib, "flat")
    return repo, result.truth


def _check(defects: Defects, shape=(512, 512)):
    hot, cold = EFFECT.masks(shape)
    truth = hot | cold
    found = defects.to_mask(shape)
    missed = truth & ~found
    false = found & ~truth
    assert not missed.any(), f"missed {np.argwhere(missed)[:10].tolist()}"
    assert false.sum() <= 1e-4 * found.size, f"{false.sum()} false positives"
    for x, y0, y1 in [*EFFECT.hot_columns, *EFFECT.cold_columns]:
        assert (x, y0, 1, y1 - y0) in defects.boxes, (x, y0, y1)
    return int(false.sum())


@pytest.mark.slow
def test_defects_from_combined_and_individual_via_cli(defect_repo):
    from butler import Butler

    repo, truth = defect_repo
    assert truth.to_dict()["effects"]["DefectEffect"]["hot_columns"] == [[200, 0, 256]]
    raws, calib = "ptccam/raw/all", "ptccam/calib"
    run_pipeline(repo, "cpDefects.yaml", calib, "u/defects", "instrument='ptccam'")
    run_pipeline(repo, "cpDefectsIndividual.yaml", f"{raws},{calib}", "u/defectsInd",
                 "exposure.observation_type IN ('dark', 'flat')")
    b = Butler(repo)
    combined = b.get("defects", instrument="ptccam", detector=0, collections=["u/defects"])
    individual = b.get("defects", instrument="ptccam", detector=0, collections=["u/defectsInd"])
    n_false_c = _check(combined)
    n_false_i = _check(individual)
    print(f"combined: {len(combined)} boxes, {n_false_c} false pixels; individual: {len(individual)} "
          f"boxes, {n_false_i} false pixels")
    # certify and use in ISR: every defect pixel BAD and interpolated
    certify(repo, "u/defects", calib, "defects")
    run_pipeline(repo, "isr.yaml", f"{raws},{calib}", "u/isr", "exposure.observation_type='flat'",
                 "isr:doDefect=True", "isr:doDark=True")
    b = Butler(repo)
    ref = b.query_datasets("postISRCCD", collections=["u/isr"])[0]
    exp = b.get(ref)
    bad = (exp.mask & exp.masked_image.get_plane_bitmask("BAD")) != 0
    hot, cold = EFFECT.masks(exp.shape)
    assert bad[hot | cold].all()
    col = exp.image[100:200, 90]            # interpolated cold column: back at the flat level
    ref_col = exp.image[100:200, 95]
    assert abs(np.median(col) / np.median(ref_col) - 1) < 0.02
