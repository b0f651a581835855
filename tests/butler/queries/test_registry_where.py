"""``where=`` expressions through the real registry (SQLite and PostgreSQL).

A small repository is filled with known dimension records and datasets; every query's answer is
derived independently from the injected records (:data:`EXPOSURES`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip("butler.registry.registry")

from astropy.time import Time  # noqa: E402

from butler._errors import InvalidQueryError  # noqa: E402
from butler.collections import CollectionType  # noqa: E402
from butler.datasets import DatasetType  # noqa: E402
from butler.dimensions import default_universe  # noqa: E402
from butler.registry import make_database  # noqa: E402
from butler.registry.registry import Registry  # noqa: E402
from butler.timespan import Timespan  # noqa: E402

RUN = "kast_blue/raw/all"
INSTRUMENT = "kast_blue"


def tai(text: str) -> Time:
    """Return a TAI astropy Time."""
    return Time(text, scale="tai")


# exposure id -> (obs_id, observation_type, exposure_time s, physical_filter, begin TAI, end TAI)
EXPOSURES = {
    1: ("KB0001", "bias", 0.0, "open", "2022-01-26T00:00:00", "2022-01-26T00:00:05"),
    2: ("KB0002", "bias", 0.0, "open", "2022-01-26T00:01:00", "2022-01-26T00:01:05"),
    3: ("KB0003", "flat", 10.0, "d46", "2022-01-26T00:02:00", "2022-01-26T00:02:15"),
    4: ("KB0004", "flat", 20.0, "d46", "2022-01-26T00:03:00", "2022-01-26T00:03:25"),
    5: ("KB0005", "dark", 300.0, "open", "2022-01-26T00:04:00", "2022-01-26T00:09:05"),
    6: ("KB0006", "flat", 40.0, "d57", "2022-01-27T00:00:00", "2022-01-27T00:00:45"),
    7: (
        "O'Brien'); DROP TABLE dataset; --",
        "science",
        60.0,
        "d57",
        "2022-01-27T01:00:00",
        "2022-01-27T01:01:05",
    ),
}
FILTER_BAND = {"open": "white", "d46": "g", "d57": "r"}
DETECTORS = {0: ("ccd0", "SCIENCE"), 1: ("ccd1", "WAVEFRONT")}


def _fill(registry: Registry) -> dict[tuple[int, int], uuid.UUID]:
    registry.insert_dimension_data("instrument", {"name": INSTRUMENT, "class_name": "", "detector_max": 2})
    registry.insert_dimension_data("instrument", {"name": "efosc2", "class_name": "", "detector_max": 1})
    registry.insert_dimension_data(
        "detector",
        *[
            {"instrument": INSTRUMENT, "id": d, "full_name": name, "purpose": purpose}
            for d, (name, purpose) in DETECTORS.items()
        ],
        {"instrument": "efosc2", "id": 0, "full_name": "ccd0", "purpose": "SCIENCE"},
    )
    registry.insert_dimension_data(
        "physical_filter",
        *[{"instrument": INSTRUMENT, "name": f, "band": b} for f, b in FILTER_BAND.items()],
        {"instrument": "efosc2", "name": "open", "band": "white"},
    )
    registry.insert_dimension_data(
        "day_obs",
        {"instrument": INSTRUMENT, "id": 20220126, "timespan": None},
        {"instrument": INSTRUMENT, "id": 20220127, "timespan": None},
        {"instrument": "efosc2", "id": 20220126, "timespan": None},
    )
    records = []
    for exp, (obs_id, obs_type, exptime, filt, begin, end) in EXPOSURES.items():
        records.append(
            {
                "instrument": INSTRUMENT,
                "id": exp,
                "obs_id": obs_id,
                "exposure_time": exptime,
                "dark_time": exptime,
                "observation_type": obs_type,
                "physical_filter": filt,
                "day_obs": int(begin[:10].replace("-", "")),
                "timespan": Timespan(tai(begin), tai(end)),
            }
        )
    registry.insert_dimension_data("exposure", *records)
    # efosc2 exposure 1 overlaps kast_blue exposure 1 in id (not in instrument)
    registry.insert_dimension_data(
        "exposure",
        {
            "instrument": "efosc2",
            "id": 1,
            "obs_id": "EF0001",
            "exposure_time": 1.0,
            "dark_time": 1.0,
            "observation_type": "flat",
            "physical_filter": "open",
            "day_obs": 20220126,
            "timespan": Timespan(tai("2022-01-26T00:00:00"), tai("2022-01-26T00:00:02")),
        },
    )
    raw = DatasetType("raw", ("instrument", "exposure", "detector"), "Exposure")
    bias = DatasetType("bias", ("instrument", "detector"), "Exposure", is_calibration=True)
    registry.register_dataset_type(raw)
    registry.register_dataset_type(bias)
    registry.register_run(RUN)
    registry.register_run("efosc2/raw/all")
    data_ids = [
        {"instrument": INSTRUMENT, "exposure": e, "detector": d} for e in EXPOSURES for d in DETECTORS
    ]
    refs = registry.insert_datasets(raw, data_ids, RUN)
    registry.insert_datasets(raw, [{"instrument": "efosc2", "exposure": 1, "detector": 0}], "efosc2/raw/all")
    # two certified biases for detector 0: v1 before 00:03:00 TAI, v2 from then on
    registry.register_run("calib/v1")
    registry.register_run("calib/v2")
    registry.register_collection("calib", CollectionType.CALIBRATION)
    (v1,) = registry.insert_datasets(bias, [{"instrument": INSTRUMENT, "detector": 0}], "calib/v1")
    (v2,) = registry.insert_datasets(bias, [{"instrument": INSTRUMENT, "detector": 0}], "calib/v2")
    registry.certify("calib", [v1], Timespan(tai("2022-01-25T00:00:00"), tai("2022-01-26T00:03:00")))
    registry.certify("calib", [v2], Timespan(tai("2022-01-26T00:03:00"), None))
    ids = {(r.data_id["exposure"], r.data_id["detector"]): r.id for r in refs}
    ids[("bias", "v1")] = v1.id
    ids[("bias", "v2")] = v2.id
    return ids


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def repo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Registry, dict]]:
    """Yield a filled registry on each backend (PostgreSQL in a fresh schema, dropped afterwards)."""
    universe = default_universe()
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("where") / "registry.sqlite3"
        db = make_database(f"sqlite:///{path}")
    else:
        url = request.getfixturevalue("postgres_url")
        schema = f"dql_where_{uuid.uuid4().hex[:10]}"
        db = make_database(url, schema=schema, create=True)
    registry = Registry.create(db, universe)
    try:
        ids = _fill(registry)
        yield registry, ids
    finally:
        if request.param != "sqlite":
            db.drop_schema()
        db.close()


def exposures_of(data_ids) -> list[int]:
    """Return the sorted exposure ids of data IDs."""
    return sorted({int(d["exposure"]) for d in data_ids})


def raw_keys(refs) -> list[tuple[int, int]]:
    """Return the sorted (exposure, detector) keys of raw refs."""
    return sorted((int(r.data_id["exposure"]), int(r.data_id["detector"])) for r in refs)


def test_metadata_field_and_governor(repo):
    """A metadata field selects the right exposures, per instrument or across them."""
    registry, _ = repo
    got = registry.query_data_ids(
        ["exposure"], where="instrument = 'kast_blue' AND exposure.observation_type = 'flat'"
    )
    assert exposures_of(got) == [e for e, v in EXPOSURES.items() if v[1] == "flat"] == [3, 4, 6]
    both = registry.query_data_ids(["exposure"], where="exposure.observation_type = 'flat'")
    assert sorted((d["instrument"], d["exposure"]) for d in both) == [
        ("efosc2", 1),
        (INSTRUMENT, 3),
        (INSTRUMENT, 4),
        (INSTRUMENT, 6),
    ]


def test_ranges_strides_and_detectors_on_datasets(repo):
    """Ranges, strides and NOT IN select the right raw datasets."""
    registry, _ = repo
    refs = registry.query_datasets(
        "raw", collections=RUN, where="instrument = 'kast_blue' AND exposure IN (1..7:3) AND detector = 1"
    )
    assert raw_keys(refs) == [(1, 1), (4, 1), (7, 1)]
    refs = registry.query_datasets("raw", collections=RUN, where="exposure NOT IN (2..6) AND detector != 1")
    assert raw_keys(refs) == [(1, 0), (7, 0)]


def test_fields_of_other_elements(repo):
    """Fields of detector, implied band/physical_filter/day_obs and arithmetic work."""
    registry, _ = repo
    refs = registry.query_datasets(
        "raw", collections=RUN, where="detector.purpose = 'WAVEFRONT' AND exposure <= 2"
    )
    assert raw_keys(refs) == [(1, 1), (2, 1)]
    refs = registry.query_datasets("raw", collections=RUN, where="band = 'g'")
    assert raw_keys(refs) == [(3, 0), (3, 1), (4, 0), (4, 1)]
    refs = registry.query_datasets("raw", collections=RUN, where="physical_filter = 'd57' AND detector = 0")
    assert raw_keys(refs) == [(6, 0), (7, 0)]
    refs = registry.query_datasets("raw", collections=RUN, where="day_obs = 20220127 AND detector = 0")
    assert raw_keys(refs) == [(6, 0), (7, 0)]
    got = registry.query_data_ids(
        ["exposure"], where="exposure.exposure_time * 2 >= 80 AND instrument = 'kast_blue'"
    )
    assert exposures_of(got) == [e for e, v in EXPOSURES.items() if v[2] * 2 >= 80] == [5, 6, 7]


def test_glob(repo):
    """GLOB on obs_id with classes and wildcards; case-sensitive."""
    registry, _ = repo
    got = registry.query_data_ids(
        ["exposure"], where="GLOB(exposure.obs_id, 'KB000[2-4]') AND instrument = 'kast_blue'"
    )
    assert exposures_of(got) == [2, 3, 4]
    got = registry.query_data_ids(["exposure"], where="GLOB(exposure.obs_id, '*DROP*')")
    assert exposures_of(got) == [7]
    got = registry.query_data_ids(["exposure"], where="GLOB(exposure.obs_id, 'kb*')")  # case-sensitive
    assert got == []


def test_timespan_overlaps_and_comparisons(repo):
    """OVERLAPS with times and intervals (TAI default, /utc), and < / > on timespans."""
    registry, _ = repo
    got = registry.query_data_ids(
        ["exposure"], where="instrument = 'kast_blue' AND exposure.timespan OVERLAPS T'2022-01-26T00:02:10'"
    )
    assert exposures_of(got) == [3]
    # time literals are TAI by default; 00:01:33 UTC is 00:02:10 TAI (TAI - UTC = 37 s)
    got = registry.query_data_ids(
        ["exposure"],
        where="instrument = 'kast_blue' AND exposure.timespan OVERLAPS T'2022-01-26T00:01:33/utc'",
    )
    assert exposures_of(got) == [3]
    got = registry.query_data_ids(
        ["exposure"], where="instrument = 'kast_blue' AND exposure.timespan OVERLAPS T'2022-01-26T00:01:33'"
    )
    assert got == []  # read as TAI, 00:01:33 falls between exposures 2 and 3
    got = registry.query_data_ids(
        ["exposure"],
        where="instrument = 'kast_blue' AND exposure.timespan "
        "OVERLAPS (T'2022-01-26T00:01:03', T'2022-01-26T00:04:00')",
    )
    assert exposures_of(got) == [2, 3, 4]  # end is exclusive: exposure 5 begins exactly at 00:04:00
    got = registry.query_data_ids(
        ["exposure"], where="instrument = 'kast_blue' AND exposure.timespan < T'2022-01-26T00:02:15'"
    )
    assert exposures_of(got) == [1, 2, 3]  # ends at or before
    got = registry.query_data_ids(
        ["exposure"], where="instrument = 'kast_blue' AND exposure.timespan > 59605.5"
    )
    assert exposures_of(got) == [6, 7]  # a bare number is an MJD (TAI); MJD 59605.5 = 2022-01-26T12:00


def test_bind_values(repo):
    """Bind values (UUIDs, lists expanded in IN, empty lists, floats) select the right rows."""
    registry, ids = repo
    got = registry.query_data_ids(
        ["exposure"],
        where="instrument = :inst AND exposure IN (:exps) AND exposure.observation_type != :t",
        bind={"inst": INSTRUMENT, "exps": [1, 3, 5, 6], "t": "bias"},
    )
    assert exposures_of(got) == [3, 5, 6]
    t = Time("2022-01-26T00:04:30", scale="tai")
    got = registry.query_data_ids(
        ["exposure"], where="instrument = 'kast_blue' AND exposure.timespan OVERLAPS :t", bind={"t": t}
    )
    assert exposures_of(got) == [5]
    refs = registry.query_datasets(
        "raw", collections=RUN, where="raw.dataset_id = :id", bind={"id": ids[(4, 1)]}
    )
    assert [r.id for r in refs] == [ids[(4, 1)]]
    refs = registry.query_datasets(
        "raw", collections=[RUN, "efosc2/raw/all"], where="raw.run = 'efosc2/raw/all'"
    )
    assert [(r.data_id["instrument"], r.data_id["exposure"]) for r in refs] == [("efosc2", 1)]


def test_ingest_date_datetime_column(repo):
    """Time literals, MJDs and datetime binds compare with the naive-UTC ingest_date."""
    import datetime

    registry, _ = repo
    n_raw = len(EXPOSURES) * len(DETECTORS)
    # ingest_date is naive UTC "now": after 2020 and before 2100, whatever the literal's scale
    assert (
        len(registry.query_datasets("raw", collections=RUN, where="raw.ingest_date > T'2020-01-01'")) == n_raw
    )
    assert (
        registry.query_datasets("raw", collections=RUN, where="raw.ingest_date < T'2020-01-01T00:00:00/utc'")
        == []
    )
    assert (
        len(registry.query_datasets("raw", collections=RUN, where="raw.ingest_date < 88069")) == n_raw
    )  # MJD, 2100
    # a datetime bind value is compared as given (naive UTC for this column)
    future = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(minutes=5)
    refs = registry.query_datasets("raw", collections=RUN, where="raw.ingest_date < :t", bind={"t": future})
    assert len(refs) == n_raw
    past = future - datetime.timedelta(days=1)
    assert (
        registry.query_datasets("raw", collections=RUN, where="raw.ingest_date < :t", bind={"t": past}) == []
    )


def test_dimension_records(repo):
    """query_dimension_records honours where=."""
    registry, _ = repo
    recs = registry.query_dimension_records(
        "exposure", where="exposure.exposure_time > 15 AND instrument = 'kast_blue'"
    )
    assert sorted(r.obs_id for r in recs) == sorted(v[0] for v in EXPOSURES.values() if v[2] > 15)
    recs = registry.query_dimension_records("detector", where="detector.full_name = 'ccd1'")
    assert [(r.instrument, r.id) for r in recs] == [(INSTRUMENT, 1)]


def test_calibration_validity_timespan(repo):
    """<datasetType>.timespan selects certified calibrations by validity (half-open)."""
    registry, ids = repo
    refs = registry.query_datasets(
        "bias", collections="calib", find_first=False, where="bias.timespan OVERLAPS T'2022-01-26T00:02:00'"
    )
    assert [r.id for r in refs] == [ids[("bias", "v1")]]
    refs = registry.query_datasets(
        "bias", collections="calib", find_first=False, where="bias.timespan OVERLAPS T'2022-01-26T00:03:00'"
    )
    assert [r.id for r in refs] == [ids[("bias", "v2")]]  # half-open: v1 ends exactly here
    refs = registry.query_datasets(
        "bias",
        collections="calib",
        find_first=False,
        where="bias.timespan OVERLAPS (T'2022-01-26T00:02:00', T'2022-01-26T00:04:00')",
    )
    assert sorted(r.id for r in refs) == sorted([ids[("bias", "v1")], ids[("bias", "v2")]])


def test_hostile_values_are_data_not_sql(repo):
    """SQL-looking values are data through the registry too."""
    registry, _ = repo
    hostile = EXPOSURES[7][0]
    got = registry.query_data_ids(["exposure"], where="exposure.obs_id = :v", bind={"v": hostile})
    assert exposures_of(got) == [7]
    quoted = "'" + hostile.replace("'", "''") + "'"
    got = registry.query_data_ids(["exposure"], where=f"exposure.obs_id = {quoted}")
    assert exposures_of(got) == [7]
    got = registry.query_data_ids(["exposure"], where="exposure.obs_id = :v", bind={"v": "x' OR '1'='1"})
    assert got == []
    # the dataset table survived
    assert len(registry.query_datasets("raw", collections=RUN)) == len(EXPOSURES) * len(DETECTORS)


@pytest.mark.parametrize(
    "where, column, words",
    [
        ("exposure IN (1, 2", 18, ["unbalanced parentheses"]),
        ("exposure == 1", 10, ["unknown operator '=='"]),
        ("exposure.obs_id = 'KB", 19, ["unterminated string"]),
        ("exposure.timespan OVERLAPS T'2022-02-30'", 28, ["bad time literal"]),
        ("exposure.obs_id = 3", 19, ["type mismatch"]),
        ("exposure.timespan OVERLAPS exposure.obs_id", 28, ["OVERLAPS needs a timespan"]),
        ("exposure.nonsense = 3", 1, ["nonsense"]),
        ("visit = 3", 1, ["visit"]),
    ],
)
def test_bad_expressions_raise_invalid_query_with_caret(repo, where, column, words):
    """Registry errors for bad expressions keep the caret and the reason."""
    registry, _ = repo
    with pytest.raises(InvalidQueryError) as info:
        registry.query_datasets("raw", collections=RUN, where=where)
    message = str(info.value)
    for word in words:
        assert word in message, message
    caret_line = [line for line in message.splitlines() if line.strip() == "^"][-1]
    assert caret_line.index("^") - 2 + 1 == column, message
    assert "  " + where in message.splitlines()
