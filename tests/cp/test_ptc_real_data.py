"""PTC from the real Kast and EFOSC2 spectral dome flats (GRID region), through read_raw + IsrTask."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.instruments.raw import read_raw
from pipeline.tasks.cp.ptc_dataset import PhotonTransferCurveDataset
from pipeline.tasks.cp.ptc_extract import PhotonTransferCurveExtractTask
from pipeline.tasks.cp.ptc_solve import PhotonTransferCurveSolveConfig, solve_ptc
from pipeline.tasks.isr import IsrTask, IsrTaskConfig


def _isr(path):
    cfg = IsrTaskConfig(doBias=False, doDark=False, doFlat=False, doDefect=False, doEmpiricalReadNoise=True)
    return IsrTask(config=cfg).run(read_raw(path)).exposure


def _partials(exps, pairs):
    task = PhotonTransferCurveExtractTask()
    task.config.detectorMeasurementRegion = "GRID"
    task.config.gridSize = [64, 64]
    return [task.measure(exps[i], exps[j], (i, j), (exps[i].info.exposure_time, exps[j].info.exposure_time))
            for i, j in pairs]


def test_kast_gain_from_one_triplet_of_dome_flats(shared_data):
    """b11/b12/b13 (15 s each): PypeIt's nominal gain is 1.2 e-/ADU for both amps."""
    exps = [_isr(shared_data / "raw" / "kast_blue" / f"b{n}.fits.gz") for n in (11, 12, 13)]
    parts = _partials(exps, [(0, 1), (1, 2), (0, 2)])
    ptc = solve_ptc(PhotonTransferCurveDataset.from_partials(parts), PhotonTransferCurveSolveConfig())
    assert ptc.ampNames == ["A", "B"] and not ptc.badAmps
    for amp in ("A", "B"):
        assert ptc.n_points(amp) == 3 * 16 * 5          # 16 x 5 boxes of 64 x 64 (350 rows -> 5)
        assert ptc.expIdMask[amp].sum() > 0.8 * ptc.n_points(amp)
        assert ptc.gain[amp] == pytest.approx(1.2, rel=0.05), amp
    # one pair alone already gives a PTC spanning the spectral illumination
    one = solve_ptc(PhotonTransferCurveDataset.from_partials(parts[:1]), PhotonTransferCurveSolveConfig())
    mu = one.rawMeans["A"]
    assert np.nanmax(mu) / np.nanmin(mu) > 5
    assert one.gain["A"] == pytest.approx(1.2, rel=0.05)
    # the per-pair read noise comes from the ISR overscan residual (~3.7 e- / 1.2 e-/ADU)
    assert 2.0 < np.nanmedian(ptc.noiseList["A"]) < 4.0


def test_efosc2_gain_from_spectral_flat_triplets(shared_data):
    """10.31 s and 24.54 s Gr#3 flat triplets; header CONAD = 1.1 e-/ADU.

    Boxes below 2000 ADU (the vignetted / scattered-light rows of the spectrum) are excluded:
    their variance carries structure that is not shot noise. We measure ~1.18-1.19 e-/ADU.
    """
    d = shared_data / "raw" / "efosc2"
    files = sorted(d.glob("EFOSC.2022-01-26T19:[12]*.fits")) + sorted(d.glob("EFOSC.2022-01-30T11*.fits"))
    assert len(files) == 6
    exps = [_isr(f) for f in files]
    assert [round(e.info.exposure_time, 2) for e in exps] == [10.31] * 3 + [24.54] * 3
    parts = _partials(exps, [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5)])
    cfg = PhotonTransferCurveSolveConfig(minMeanSignal={"ALL_AMPS": 2000.0})
    ptc = solve_ptc(PhotonTransferCurveDataset.from_partials(parts), cfg)
    assert ptc.gain["L"] == pytest.approx(1.1, rel=0.10)
    assert ptc.expIdMask["L"].sum() > 500
