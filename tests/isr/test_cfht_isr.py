"""CfhtIsrTask (reference-algorithms §6.2) on a simulated MegaCam CCD and the MegaCam overrides."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.instruments import get_instrument
from pipeline.instruments.simulate import simulate_exposures
from pipeline.tasks.isr import CfhtIsrTask, CfhtIsrTaskConfig
from pipeline.tasks.isr.cfht_isr_task import estimate_saturation


def test_estimate_saturation_histogram():
    """Check estimate saturation histogram."""
    rng = np.random.default_rng(0)
    img = rng.integers(1000, 2000, (100, 100)).astype(np.uint16)
    assert estimate_saturation(img, 65535.0) == 65535.0  # nothing above 60000 -> header SATURATE
    img[:10, :10] = 64000
    img[10:12, :10] = 62000
    edges = np.linspace(60000, 64001, 101)
    left = edges[np.searchsorted(edges, 64000, side="right") - 1]
    assert estimate_saturation(img, 65535.0, 0.95) == float(int(0.95 * left))


@pytest.fixture(scope="module")
def megacam_flat():
    """Build the megacam flat test input."""
    exps, truth = simulate_exposures(
        "megacam",
        [{"observation_type": "flat", "exposure_time": 1.0, "flux": 20000.0}],
        seed=2,
        detectors=[0],
    )
    return exps[0], truth


def test_cfht_isr_gains_saturation_and_overrides(megacam_flat):
    """Check cfht isr gains saturation and overrides."""
    raw, truth = megacam_flat
    raw = raw.copy()
    raw.metadata["GAINA"] = 1.71
    raw.metadata["RDNOISEA"] = 65535.0  # old files: replaced by RDNOISE
    raw.metadata["RDNOISE"] = 4.5
    raw.image[100:110, 100:110] = 65535  # saturated block in amp A (raw x 100 -> assembled x 68)
    overrides = get_instrument("megacam").config_overrides("isr")
    assert overrides["doBias"] is False and overrides["fringe"]["large"] == 50
    cfg = CfhtIsrTaskConfig.from_dict({**overrides, "doDefect": False})
    assert cfg.safe == 0.95 and cfg.overscan.fitType == "MEDIAN"
    out = CfhtIsrTask(config=cfg).run(raw).exposure
    md = out.metadata
    assert md["LSST ISR GAIN A"] == 1.71 and md["LSST ISR READNOISE A"] == 4.5
    assert md["LSST ISR GAIN B"] == pytest.approx(float(raw.metadata["GAINB"]))
    sat = md["LSST ISR CFHT SATURATION"]
    assert sat == float(int(0.95 * (60000 + 99 * (65536 - 60000) / 100)))
    assert out.shape == (4612, 2048)
    mi = out.masked_image
    assert np.all(mi.mask[100:110, 68:78] & mi.get_plane_bitmask("SAT"))
    # per-amp level = flux / gain with the header gains used by the simulator for amp B
    flat = truth.flat[0]
    gb = truth.gain(0, "B")
    assert np.median(out.image[:, 1100:2000] / flat[:, 1100:2000]) == pytest.approx(20000.0 / gb, rel=2e-3)
    # no step between the amps once the per-amp gains are applied
    ga = truth.gain(0, "A")
    a = np.median(out.image[:, 1000:1024] / flat[:, 1000:1024]) * ga
    b = np.median(out.image[:, 1024:1048] / flat[:, 1024:1048]) * gb
    assert a == pytest.approx(b, rel=2e-3)


def test_cfht_refuses_bf_kernel_and_bad_amp_names(megacam_flat):
    """Check cfht refuses bf kernel and bad amp names."""
    raw, _ = megacam_flat
    task = CfhtIsrTask(config=CfhtIsrTaskConfig(doBias=False, doDark=False, doFlat=False, doDefect=False))
    with pytest.raises(ValueError, match="brighter-fatter"):
        task.run(raw.copy(), bfKernel=np.ones((3, 3)))
    bad = raw.copy()
    bad.detector = bad.detector.replace(
        amplifiers=tuple(a.replace(name=n) for a, n in zip(bad.detector, "XY"))
    )
    with pytest.raises(ValueError, match="named A and B"):
        task.run(bad)
