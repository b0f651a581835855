"""pipelines/isr.yaml loads, and the MegaCam overrides apply when the pipeline names the instrument."""

from __future__ import annotations

from pathlib import Path

from pipeline.definitions import Pipeline
from pipeline.tasks.isr import CfhtIsrTask, IsrTask

REPO = Path(__file__).resolve().parents[2]


def test_isr_pipeline_yaml():
    """Check isr pipeline yaml."""
    p = Pipeline.from_file(REPO / "pipelines" / "isr.yaml")
    assert p.task_class("isr") is IsrTask
    cfg = p.task_config("isr")
    assert (
        cfg.doDefect is False
        and cfg.doDark is False
        and cfg.doBias is True
        and cfg.overscan.fitType == "MEDIAN"
    )
    conns = cfg.make_connections()
    assert conns.ccdExposure.name == "raw" and conns.outputExposure.name == "postISRCCD"
    assert "defects" not in conns.prerequisiteInputs


def test_megacam_instrument_overrides():
    """Check megacam instrument overrides."""
    p = Pipeline.from_string(
        "description: megacam isr\ninstrument: megacam\ntasks:\n  isr: pipeline.tasks.isr.CfhtIsrTask\n"
    )
    assert p.task_class("isr") is CfhtIsrTask
    cfg = p.task_config("isr")
    assert (cfg.doBias, cfg.doDark, cfg.doFlat, cfg.doFringe, cfg.doSuspect) == (False,) * 5
    assert cfg.fringe.filters == ["i.MP9701", "i.MP9702", "z.MP9801"] and cfg.fringe.large == 50
    assert cfg.safe == 0.95
