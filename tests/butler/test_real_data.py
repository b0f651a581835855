"""The butler on the real Kast raws in ``../shared/data``: register, ingest, query, read back."""

from __future__ import annotations

import json

import pytest

from butler import Butler

from .conftest import invoke_butler

pytest.importorskip("pipeline.instruments")


def _run(*args):
    return invoke_butler(*args).output


def test_kast_blue_ingest_query_get(shared_data, tmp_path):
    raws = sorted((shared_data / "raw" / "kast_blue").glob("*.fits*"))
    assert len(raws) == 9
    repo = tmp_path / "repo"
    _run("create", repo)
    _run("register-instrument", repo, "kast_blue")
    out = _run("ingest-raws", repo, *raws, "--transfer", "symlink")
    assert "Ingested 9 file(s) (9 raw dataset(s))" in out
    # Re-ingesting the same files is a no-op (deterministic UUIDv5 ids).
    assert "(0 raw dataset(s)); 9 file(s) already present" in _run("ingest-raws", repo, *raws)
    rows = json.loads(
        _run(
            "query-datasets",
            repo,
            "raw",
            "--collections",
            "kast_blue/raw/all",
            "--format",
            "json",
            "--where",
            "exposure.observation_type = 'flat'",
        )
    )
    # The three 15 s dome flats of 2015-05-20 (SOURCE.txt).
    assert len(rows) == 3 and {r["physical_filter"] for r in rows} == {"d55~600_4310"}
    recs = json.loads(
        _run(
            "query-dimension-records",
            repo,
            "exposure",
            "--where",
            "exposure.observation_type = 'flat'",
            "--format",
            "json",
        )
    )
    assert [r["exposure_time"] for r in recs] == [15.0, 15.0, 15.0]
    assert all(r["timespan"]["begin"].startswith("2015-05-20T01:5") for r in recs)
    b = Butler(repo, collections="kast_blue/raw/all")
    biases = b.query_datasets("raw", where="exposure.observation_type = 'bias'", order_by="exposure")
    assert len(biases) == 3
    raw = b.get(biases[0])
    assert raw.image.shape == (350, 2112) and raw.image.dtype.kind in "iu"
    assert b.get_uri(biases[0]).is_symlink()
    b.close()
