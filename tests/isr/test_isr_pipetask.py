"""pipelines/isr.yaml run by ``pipetask run`` on real Kast raws in a fresh repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from butler import Butler
from pipeline.cli import pipetask
from pipeline.instruments import ingest_raws, register_instrument


def test_pipetask_isr_on_kast(shared_data, tmp_path):
    """Check pipetask isr on kast."""
    repo = tmp_path / "repo"
    butler = Butler.create(repo)
    register_instrument(butler, "kast_blue")
    raws = sorted((shared_data / "raw" / "kast_blue").glob("b2[14].fits.gz"))
    ingest_raws(butler, raws)
    pipe = str(Path(__file__).resolve().parents[2] / "pipelines" / "isr.yaml")
    result = CliRunner().invoke(
        pipetask,
        [
            "run",
            "-b",
            str(repo),
            "-p",
            pipe,
            "-i",
            "kast_blue/raw/all",
            "--output-run",
            "u/isr",
            "-d",
            "instrument='kast_blue'",
            "--register-dataset-types",
            "--no-progress",
            "-c",
            "isr:doBias=False",
            "-c",
            "isr:doFlat=False",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    b = Butler(repo, collections=["u/isr"])
    refs = b.query_datasets("postISRCCD", collections=["u/isr"])
    assert len(refs) == 2
    for ref in refs:
        exp = b.get(ref)
        assert exp.shape == (350, 2048) and exp.image.dtype == np.float32
        md = exp.metadata
        assert 930 < md["LSST ISR OVERSCAN SERIAL MEDIAN A"] < 960
        assert md["LSST ISR READNOISE B"] == 3.7
        noise = md["LSST ISR OVERSCAN RESIDUAL SERIAL STDEV A"]
        step = np.median(exp.image[:, 1004:1024]) - np.median(exp.image[:, 1024:1044])
        assert abs(step) < noise
    assert len(b.query_datasets("OssThumb", collections=["u/isr"])) == 2
    # doBias on (the default) without a certified bias: the quantum fails, the run exits non-zero
    result = CliRunner().invoke(
        pipetask,
        [
            "run",
            "-b",
            str(repo),
            "-p",
            pipe,
            "-i",
            "kast_blue/raw/all",
            "--output-run",
            "u/isr2",
            "-d",
            "instrument='kast_blue'",
            "--register-dataset-types",
            "--no-progress",
        ],
    )
    assert result.exit_code != 0
