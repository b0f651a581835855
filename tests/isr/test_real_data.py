"""IsrTask on the real Kast (2 amps) and EFOSC2 (1 amp) raws in ../shared/data (issue 5 "Proof")."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.instruments.raw import read_raw
from pipeline.tasks.isr import IsrTask, IsrTaskConfig


def _config(**kw) -> IsrTaskConfig:
    return IsrTaskConfig(doBias=False, doDark=False, doFlat=False, doDefect=False, **kw)


@pytest.mark.parametrize("name", ["b21", "b22", "b23", "b24"])
def test_kast_no_amp_step_after_overscan_and_assembly(shared_data, name):
    """Check kast no amp step after overscan and assembly."""
    raw = read_raw(shared_data / "raw" / "kast_blue" / f"{name}.fits.gz")
    before = raw.image.astype(float)
    # the two amplifiers sit ~20 ADU apart before overscan correction
    raw_step = np.median(before[:, 1004:1024]) - np.median(before[:, 1024:1044])
    assert abs(raw_step) > 10
    out = IsrTask(config=_config(doEmpiricalReadNoise=True)).run(raw).exposure
    assert out.shape == (350, 2048)
    img = out.image
    md = out.metadata
    noise = max(
        md["LSST ISR OVERSCAN RESIDUAL SERIAL STDEV A"], md["LSST ISR OVERSCAN RESIDUAL SERIAL STDEV B"]
    )
    assert 2.0 < noise < 4.0  # ~3.7 e- / 1.2 e-/ADU
    step = np.median(img[:, 1004:1024]) - np.median(img[:, 1024:1044])
    assert abs(step) < noise
    # per-amp overscan levels and read noise in the header
    assert md["LSST ISR OVERSCAN SERIAL MEDIAN A"] == pytest.approx(943, abs=10)
    assert md["LSST ISR OVERSCAN SERIAL MEDIAN B"] == pytest.approx(966, abs=20)
    for amp in ("A", "B"):
        assert md[f"LSST ISR READNOISE {amp}"] == pytest.approx(
            md[f"LSST ISR OVERSCAN RESIDUAL SERIAL STDEV {amp}"] * 1.2, rel=1e-6
        )
    assert md["LSST ISR NOISE SOURCE"] == "OVERSCAN"


def test_kast_bias_level_removed_per_amp(shared_data):
    """Check kast bias level removed per amp."""
    out = IsrTask(config=_config()).run(read_raw(shared_data / "raw" / "kast_blue" / "b21.fits.gz")).exposure
    for amp in out.detector:
        sub = out.image[amp.bbox.slices]
        assert abs(float(np.median(sub))) < 3.0  # within one read noise of zero
        var = np.median(out.variance[amp.bbox.slices])
        assert var == pytest.approx((3.7 / 1.2) ** 2 + np.median(sub) / 1.2, rel=0.2)


@pytest.mark.parametrize("index", [0, 1])
def test_efosc2_bias_overscan_and_header(shared_data, index):
    """Check efosc2 bias overscan and header."""
    path = sorted((shared_data / "raw" / "efosc2").glob("EFOSC*.fits"))[index]
    raw = read_raw(path)
    assert raw.info.observation_type == "bias"
    out = IsrTask(config=_config()).run(raw).exposure
    md = out.metadata
    level = md["LSST ISR OVERSCAN SERIAL MEDIAN L"]
    assert 150 < level < 300
    sigma = md["LSST ISR OVERSCAN RESIDUAL SERIAL STDEV L"]
    assert sigma == pytest.approx(7.8 / 1.1, rel=0.5)
    assert abs(float(np.median(out.image))) < sigma
    assert md["LSST ISR READNOISE L"] == 7.8 and md["LSST ISR GAIN L"] == 1.1
    assert out.shape == (1024, 1023)
