"""``where=`` through the public `Butler` API and the ``butler`` CLI (``--where``).

Datasets are small numpy arrays whose values encode their data ID, so a query's answer is
checked by reading back what it found.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("butler._butler")

from astropy.time import Time  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from butler import Butler, DatasetType, InvalidQueryError  # noqa: E402
from butler.cli import cli  # noqa: E402
from butler.timespan import Timespan  # noqa: E402

RUN = "u/test/arrays"
# exposure -> (observation_type, exposure_time s, begin TAI)
EXPOSURES = {
    10: ("bias", 0.0, "2022-01-26T01:00:00"),
    11: ("flat", 5.0, "2022-01-26T01:10:00"),
    12: ("flat", 15.0, "2022-01-26T01:20:00"),
    13: ("dark", 60.0, "2022-01-26T01:30:00"),
}


def value_of(exposure: int, detector: int) -> float:
    """Return the pixel value stored for a data ID (the injected truth)."""
    return exposure * 10.0 + detector


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Yield the path of a repository holding 2x2 arrays for 4 exposures x 2 detectors."""
    root = tmp_path_factory.mktemp("butler_where") / "repo"
    butler = Butler.create(root)
    reg = butler.registry
    reg.insert_dimension_data("instrument", {"name": "testcam", "class_name": "", "detector_max": 2})
    reg.insert_dimension_data(
        "detector",
        {"instrument": "testcam", "id": 0, "full_name": "ccd0", "purpose": "SCIENCE"},
        {"instrument": "testcam", "id": 1, "full_name": "ccd1", "purpose": "SCIENCE"},
    )
    reg.insert_dimension_data("physical_filter", {"instrument": "testcam", "name": "r_open", "band": "r"})
    reg.insert_dimension_data("day_obs", {"instrument": "testcam", "id": 20220126, "timespan": None})
    for exp, (obs_type, exptime, begin) in EXPOSURES.items():
        t0 = Time(begin, scale="tai")
        reg.insert_dimension_data(
            "exposure",
            {
                "instrument": "testcam",
                "id": exp,
                "obs_id": f"TC_{exp:05d}",
                "exposure_time": exptime,
                "dark_time": exptime,
                "observation_type": obs_type,
                "physical_filter": "r_open",
                "day_obs": 20220126,
                "timespan": Timespan(t0, Time(t0.jd + (exptime + 1) / 86400, format="jd", scale="tai")),
            },
        )
    reg.register_dataset_type(DatasetType("arr", ("instrument", "exposure", "detector"), "NumpyArray"))
    for exp in EXPOSURES:
        for det in (0, 1):
            butler.put(
                np.full((2, 2), value_of(exp, det)),
                "arr",
                instrument="testcam",
                exposure=exp,
                detector=det,
                run=RUN,
            )
    butler.close()
    yield root


def test_butler_query_datasets_where_and_get(repo):
    """query_datasets(where=...) finds exactly the flats on detector 1; get returns their pixels."""
    butler = Butler(repo, collections=RUN)
    refs = butler.query_datasets("arr", where="exposure.observation_type = 'flat' AND detector = 1")
    found = sorted((r.data_id["exposure"], r.data_id["detector"]) for r in refs)
    assert found == [(11, 1), (12, 1)]
    for ref in refs:
        assert np.all(butler.get(ref) == value_of(ref.data_id["exposure"], ref.data_id["detector"]))


def test_butler_query_data_ids_with_binds_and_times(repo):
    """query_data_ids honours binds, ranges and TAI time literals."""
    butler = Butler(repo, collections=RUN)
    ids = butler.query_data_ids(
        ["exposure"],
        where="instrument = :i AND exposure IN (10..13:2) AND exposure.exposure_time < :t",
        bind={"i": "testcam", "t": 100.0},
    )
    assert sorted(d["exposure"] for d in ids) == [10, 12]
    ids = butler.query_data_ids(["exposure"], where="exposure.timespan OVERLAPS T'2022-01-26T01:20:10'")
    assert [d["exposure"] for d in ids] == [12]
    recs = butler.query_dimension_records("exposure", where="GLOB(exposure.obs_id, 'TC_0001[23]')")
    assert sorted(r.id for r in recs) == [12, 13]


def test_butler_bad_expression_raises_invalid_query_error(repo):
    """A malformed expression through the Butler is an InvalidQueryError with the caret."""
    butler = Butler(repo, collections=RUN)
    with pytest.raises(InvalidQueryError) as info:
        butler.query_datasets("arr", where="exposure IN (10, 11")
    assert "unbalanced parentheses" in str(info.value)
    assert str(info.value).splitlines()[-1] == "  " + " " * len("exposure IN (10, 11") + "^"


def test_cli_where_json(repo):
    """Butler query-data-ids --where ... --format json prints the matching data IDs."""
    result = CliRunner().invoke(
        cli,
        [
            "query-data-ids",
            str(repo),
            "exposure",
            "--where",
            "exposure.observation_type = 'flat'",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert sorted(r["exposure"] for r in rows) == [11, 12]


@pytest.mark.parametrize(
    "where, reason",
    [
        ("exposure.obs_id = 'TC", "unterminated string"),
        ("(exposure = 1", "unbalanced parentheses"),
        ("exposure == 1", "unknown operator '=='"),
        ("exposure.timespan OVERLAPS T'2022-01-32'", "bad time literal"),
        ("exposure.obs_id = 3", "type mismatch"),
    ],
)
def test_cli_bad_where_is_one_clear_error(repo, where, reason):
    """The CLI prints the reason and the caret, exits non-zero, and shows no traceback."""
    result = CliRunner().invoke(cli, ["query-data-ids", str(repo), "exposure", "--where", where])
    assert result.exit_code != 0
    out = result.output
    assert reason in out, out
    assert "  " + where in out.splitlines(), out
    assert "Traceback" not in out
