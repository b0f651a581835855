"""The registry suite, run on SQLite and PostgreSQL (``repo``/``filled`` fixtures)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from butler import (
    CollectionType,
    ConflictingDefinitionError,
    DataIdError,
    DatasetRef,
    DatasetType,
    InvalidQueryError,
    MissingCollectionError,
    MissingDatasetTypeError,
    Timespan,
)
from butler._errors import CollectionTypeError
from butler.registry import CalibrationLookupError

from .conftest import EXPOSURE_IDS, EXPTIMES, FILTERS, OBS_TYPES, exposure_span


def _raw_ids(exposures=EXPOSURE_IDS, detectors=range(4)):
    return [{"instrument": "cam", "exposure": e, "detector": d} for e in exposures for d in detectors]


# ---------------------------------------------------------------- dimensions and data IDs
def test_expand_data_id_attaches_records_and_implied_values(filled):
    reg = filled.registry
    did = reg.expand_data_id(instrument="cam", exposure=3, detector=2)
    assert did.dimensions == ("instrument", "detector", "exposure")
    assert did["physical_filter"] == "g_01" and did["band"] == "g" and did["day_obs"] == 20250101
    assert did.records["exposure"].exposure_time == 15.0
    assert did.records["exposure"].obs_id == "CAM_0003"
    assert did.records["detector"].full_name == "S02"
    assert did.records["exposure"].timespan == exposure_span(3)
    assert did.has_records()
    # The exposure gives the physical_filter of a flat's data ID.
    flat_id = reg.expand_data_id(
        {"instrument": "cam", "exposure": 4, "detector": 1}, dimensions=["detector", "physical_filter"]
    )
    assert flat_id.required == {"instrument": "cam", "physical_filter": "g_01", "detector": 1}


@pytest.mark.parametrize(
    "data_id, message",
    [
        ({"instrument": "cam", "exposure": 3}, "missing required dimension"),
        ({"instrument": "cam", "exposure": 99, "detector": 0}, "unknown value 99"),
        ({"instrument": "nocam", "exposure": 3, "detector": 0}, "no instrument record"),
        ({"instrument": "cam", "exposure": 3, "detector": 0, "visit": 1}, "'visit' is not a dimension"),
        ({"instrument": "cam", "exposure": "three", "detector": 0}, "not a valid int"),
        (
            {"instrument": "cam", "exposure": 3, "detector": 0, "physical_filter": "r_01"},
            "implies physical_filter='g_01'",
        ),
    ],
)
def test_bad_data_ids_are_rejected(filled, data_id, message):
    with pytest.raises(DataIdError, match=message):
        filled.registry.expand_data_id(data_id, dimensions=["exposure", "detector"])


def test_dimension_insert_conflicts_and_sync(filled):
    reg = filled.registry
    with pytest.raises(ConflictingDefinitionError, match="already exist"):
        reg.insert_dimension_data("detector", {"instrument": "cam", "id": 0, "full_name": "S00"})
    assert (
        reg.insert_dimension_data(
            "detector", {"instrument": "cam", "id": 0, "full_name": "S00"}, skip_existing=True
        )
        == 0
    )
    assert reg.sync_dimension_data("detector", {"instrument": "cam", "id": 9, "full_name": "S09"}) is True
    assert reg.sync_dimension_data("detector", {"instrument": "cam", "id": 9, "full_name": "S09"}) is False
    with pytest.raises(ConflictingDefinitionError, match="full_name"):
        reg.sync_dimension_data("detector", {"instrument": "cam", "id": 9, "full_name": "other"})
    with pytest.raises(DataIdError, match="not registered"):
        reg.insert_dimension_data("detector", {"instrument": "ghost", "id": 0, "full_name": "x"})
    # A failed insert leaves nothing behind.
    assert [r.id for r in reg.query_dimension_records("detector", instrument="cam")] == [0, 1, 2, 3, 9]


def test_sync_exposure_records_with_timespans(filled):
    reg = filled.registry
    rec = {
        "instrument": "cam",
        "id": 3,
        "obs_id": "CAM_0003",
        "physical_filter": "g_01",
        "day_obs": 20250101,
        "exposure_time": 15.0,
        "timespan": exposure_span(3),
    }
    assert reg.sync_dimension_data("exposure", rec) is False
    with pytest.raises(ConflictingDefinitionError, match=r"exposure_time \(15.0 != 16.0\)"):
        reg.sync_dimension_data("exposure", {**rec, "exposure_time": 16.0})
    with pytest.raises(ConflictingDefinitionError, match="timespan_begin"):
        reg.sync_dimension_data("exposure", {**rec, "timespan": exposure_span(4)})
    new = {**rec, "id": 7, "exposure": None, "obs_id": "CAM_0007", "timespan": exposure_span(6)}
    new.pop("exposure")
    assert reg.sync_dimension_data("exposure", new) is True
    assert reg.expand_data_id(instrument="cam", exposure=7).records["exposure"].timespan == exposure_span(6)


# ---------------------------------------------------------------- dataset types
def test_dataset_type_registration(filled):
    reg = filled.registry
    dt = DatasetType("arr", ["detector", "exposure", "instrument"], "NumpyArray")
    assert reg.register_dataset_type(dt) is False
    with pytest.raises(ConflictingDefinitionError, match="already registered"):
        reg.register_dataset_type(DatasetType("arr", ["detector"], "NumpyArray"))
    with pytest.raises(MissingDatasetTypeError, match="nothere"):
        reg.get_dataset_type("nothere")
    assert [d.name for d in reg.query_dataset_types("*r*")] == ["arr"]
    assert [d.name for d in reg.query_dataset_types(["m*", "b*"])] == ["bias", "meta"]
    assert reg.get_dataset_type("flat").dimensions == ("instrument", "physical_filter", "detector")


# ---------------------------------------------------------------- datasets in RUNs
def test_insert_and_find(filled):
    reg = filled.registry
    reg.register_run("run/a")
    refs = reg.insert_datasets("arr", _raw_ids(), "run/a")
    assert len(refs) == 24 and len({r.id for r in refs}) == 24
    found = reg.find_dataset("arr", {"instrument": "cam", "exposure": 5, "detector": 3}, collections="run/a")
    assert found.id == refs[4 * 4 + 3].id and found.run == "run/a"
    assert reg.find_dataset("arr", instrument="cam", exposure=5, detector=3, collections="run/*") == found
    assert reg.get_dataset(found.id).data_id.records["exposure"].exposure_time == 120.0


def test_one_dataset_per_data_id_per_run(filled):
    reg = filled.registry
    reg.register_run("run/a")
    reg.insert_datasets("arr", _raw_ids([1]), "run/a")
    with pytest.raises(ConflictingDefinitionError, match="already in RUN 'run/a'"):
        reg.insert_datasets("arr", _raw_ids([1, 2]), "run/a")
    # The failed batch inserted nothing (exposure 2 is absent).
    assert len(reg.query_datasets("arr", collections="run/a")) == 4


def test_one_row_conflict_in_a_transaction_keeps_its_earlier_rows(filled):
    """A one-row insert (a put) goes without a savepoint where a failed statement changes nothing.

    The conflict is still diagnosed, and the rows the transaction inserted before it stay.
    """
    reg = filled.registry
    reg.register_run("run/a")
    one = _raw_ids([1], [0])
    with reg.transaction():
        reg.insert_datasets("arr", one, "run/a")
        with pytest.raises(ConflictingDefinitionError, match="already in RUN 'run/a'"):
            reg.insert_datasets("arr", one, "run/a")
        reg.insert_datasets("arr", _raw_ids([2], [0]), "run/a")
    found = reg.query_datasets("arr", collections="run/a")
    assert sorted((r.data_id["exposure"], r.data_id["detector"]) for r in found) == [(1, 0), (2, 0)]


def test_insert_into_non_run_is_rejected(filled):
    reg = filled.registry
    reg.register_collection("tag", CollectionType.TAGGED)
    with pytest.raises(CollectionTypeError, match="only be put into a RUN"):
        reg.insert_datasets("arr", _raw_ids([1]), "tag")
    with pytest.raises(MissingCollectionError, match="nowhere"):
        reg.insert_datasets("arr", _raw_ids([1]), "nowhere")


def test_dataid_type_ids_are_deterministic_and_reimport_is_noop(filled):
    reg = filled.registry
    dt = reg.get_dataset_type("arr")
    did = reg.expand_data_id(instrument="cam", exposure=1, detector=0)
    i1 = DatasetRef.make_id(dt, did, "x", "dataid_type")
    assert i1 == DatasetRef.make_id(dt, did, "y", "dataid_type") and i1.version == 5
    assert DatasetRef.make_id(dt, did, "x", "dataid_type_run") != DatasetRef.make_id(
        dt, did, "y", "dataid_type_run"
    )
    refs = [DatasetRef(dt, did, "raw/all", i1)]
    assert len(reg.import_datasets(refs)) == 1
    assert reg.import_datasets(refs) == []
    with pytest.raises(ConflictingDefinitionError):
        reg.import_datasets([DatasetRef(dt, did, "raw/other", i1)])


def test_import_without_skip_existing_refuses_a_registered_id_and_inserts_nothing(filled):
    """``skip_existing=False`` (the driver's registration) looks for no ids first: the insert
    finds the registered one, raises, and the new ref of the same batch is not inserted."""
    reg = filled.registry
    dt = reg.get_dataset_type("arr")
    d0 = reg.expand_data_id(instrument="cam", exposure=1, detector=0)
    d1 = reg.expand_data_id(instrument="cam", exposure=1, detector=1)
    old = DatasetRef(dt, d0, "out/a", DatasetRef.make_id(dt, d0, "out/a", "dataid_type_run"))
    assert reg.import_datasets([old], skip_existing=False) == [old]
    new = DatasetRef(dt, d1, "out/b", DatasetRef.make_id(dt, d1, "out/b", "dataid_type_run"))
    moved = DatasetRef(dt, d0, "out/b", old.id)  # the registered id, in another RUN
    with pytest.raises(ConflictingDefinitionError, match=f"dataset id {old.id.hex}|{old.id}"):
        reg.import_datasets([new, moved], skip_existing=False)
    assert reg.get_dataset(new.id) is None
    assert reg.get_dataset(old.id).run == "out/a"
    assert reg.import_datasets([new], skip_existing=False) == [new]


# ---------------------------------------------------------------- collections
def test_chained_find_first(filled):
    reg = filled.registry
    for run in ("r1", "r2"):
        reg.register_run(run)
    a = reg.insert_datasets("arr", _raw_ids([1, 2], [0]), "r1")
    b = reg.insert_datasets("arr", _raw_ids([2, 3], [0]), "r2")
    reg.set_collection_chain("inner", ["r2"])
    reg.set_collection_chain("chain", ["inner", "r1"])
    assert reg.get_collection_chain("chain") == ("inner", "r1")
    found = reg.query_datasets("arr", collections="chain", find_first=True)
    by_exp = {r.data_id["exposure"]: r.id for r in found}
    assert by_exp == {1: a[0].id, 2: b[0].id, 3: b[1].id}
    assert len(reg.query_datasets("arr", collections="chain", find_first=False)) == 4
    ordered = reg.query_datasets("arr", collections="chain", find_first=True, order_by="-exposure", limit=2)
    assert [(r.data_id["exposure"], r.run) for r in ordered] == [(3, "r2"), (2, "r2")]
    assert (
        reg.find_dataset("arr", instrument="cam", exposure=2, detector=0, collections=["r1", "chain"]).id
        == a[1].id
    )
    with pytest.raises(ConflictingDefinitionError, match="cycle"):
        reg.set_collection_chain("inner", ["chain"])
    with pytest.raises(ConflictingDefinitionError, match="chained"):
        reg.remove_collection("r1")
    assert reg.query_collections("r*", types=[CollectionType.RUN]) == ["r1", "r2"]
    assert reg.query_collections("chain", flatten_chains=True) == ["r2", "r1"]


def test_tagged_collections(filled):
    reg = filled.registry
    reg.register_run("r1")
    reg.register_run("r2")
    a = reg.insert_datasets("arr", _raw_ids([1], [0, 1]), "r1")
    b = reg.insert_datasets("arr", _raw_ids([1], [0]), "r2")
    reg.register_collection("tag", CollectionType.TAGGED)
    reg.associate("tag", a)
    reg.associate("tag", a)  # idempotent
    with pytest.raises(ConflictingDefinitionError, match="already holds"):
        reg.associate("tag", b)
    assert {r.id for r in reg.query_datasets("arr", collections="tag")} == {a[0].id, a[1].id}
    reg.disassociate("tag", [a[0]])
    assert [r.id for r in reg.query_datasets("arr", collections="tag")] == [a[1].id]
    with pytest.raises(CollectionTypeError):
        reg.associate("r1", a)


def test_calibration_certify_lookup_and_conflicts(filled):
    reg = filled.registry
    reg.register_run("calib/run1")
    reg.register_run("calib/run2")
    b1 = reg.insert_datasets("bias", [{"instrument": "cam", "detector": 0}], "calib/run1")[0]
    b2 = reg.insert_datasets("bias", [{"instrument": "cam", "detector": 0}], "calib/run2")[0]
    reg.register_collection("calib", CollectionType.CALIBRATION)
    # b1 valid until exposure 3 begins; b2 from then on.
    boundary = exposure_span(3).begin
    reg.certify("calib", [b1], Timespan(None, boundary))
    reg.certify("calib", [b2], Timespan(boundary, None))
    for exp, want in [(1, b1), (2, b1), (3, b2), (6, b2)]:
        got = reg.find_dataset("bias", instrument="cam", exposure=exp, detector=0, collections="calib")
        assert got.id == want.id, exp
    # Overlap with an existing range is rejected, and nothing is written.
    with pytest.raises(ConflictingDefinitionError, match="1 validity range conflict"):
        reg.certify("calib", [b1], Timespan(exposure_span(5).begin, None))
    assert len(reg.query_calibration_validity("calib", "bias")) == 2
    # Lookup by time span through query_datasets and find-first ambiguity without a time.
    with pytest.raises(CalibrationLookupError, match="ambiguous|validity ranges"):
        reg.find_dataset("bias", instrument="cam", detector=0, collections="calib")
    refs = reg.query_datasets("bias", collections="calib", timespan=exposure_span(4))
    assert [r.id for r in refs] == [b2.id]
    with pytest.raises(CalibrationLookupError):
        reg.query_datasets("bias", collections="calib", find_first=True)


def test_decertify_trims_and_splits(filled):
    reg = filled.registry
    reg.register_run("calib/run1")
    b1 = reg.insert_datasets("bias", [{"instrument": "cam", "detector": 1}], "calib/run1")[0]
    reg.register_collection("calib", CollectionType.CALIBRATION)
    reg.certify("calib", [b1], Timespan(exposure_span(1).begin, exposure_span(6).end))
    # Remove exposure 3's span from the middle: the range splits in two.
    assert reg.decertify("calib", "bias", exposure_span(3)) == 1
    spans = [ts for _, ts in reg.query_calibration_validity("calib", "bias")]
    assert spans == [
        Timespan(exposure_span(1).begin, exposure_span(3).begin),
        Timespan(exposure_span(3).end, exposure_span(6).end),
    ]
    assert reg.find_dataset("bias", instrument="cam", exposure=3, detector=1, collections="calib") is None
    assert reg.find_dataset("bias", instrument="cam", exposure=4, detector=1, collections="calib").id == b1.id
    # Trim the end.
    reg.decertify("calib", "bias", Timespan(exposure_span(5).begin, None))
    spans = [ts for _, ts in reg.query_calibration_validity("calib", "bias")]
    assert spans[-1] == Timespan(exposure_span(3).end, exposure_span(5).begin)


def test_flat_found_by_exposure_filter_and_time(filled):
    reg = filled.registry
    reg.register_run("calib/flats")
    flats = reg.insert_datasets(
        "flat",
        [{"instrument": "cam", "detector": 0, "physical_filter": f} for f in ("r_01", "g_01")],
        "calib/flats",
    )
    reg.register_collection("calib", CollectionType.CALIBRATION)
    reg.certify("calib", flats, Timespan(None, None))
    got = reg.find_dataset("flat", instrument="cam", exposure=3, detector=0, collections="calib")
    assert got.data_id["physical_filter"] == FILTERS[3] and got.id == flats[1].id


def test_transaction_rolls_back_everything(filled):
    reg = filled.registry
    with pytest.raises(RuntimeError):
        with reg.transaction():
            reg.register_run("doomed")
            reg.insert_datasets("arr", _raw_ids([1], [0]), "doomed")
            raise RuntimeError("boom")
    assert reg.query_collections("doomed") == []
    with pytest.raises(MissingCollectionError):
        reg.get_collection_type("doomed")


def test_remove_run_removes_its_datasets(filled):
    reg = filled.registry
    reg.register_run("r1")
    refs = reg.insert_datasets("arr", _raw_ids([1]), "r1")
    reg.remove_collection("r1")
    assert reg.get_dataset(refs[0].id) is None


# ---------------------------------------------------------------- queries
def test_query_datasets_where_order_limit(filled):
    reg = filled.registry
    reg.register_run("r")
    reg.insert_datasets("arr", _raw_ids(), "r")
    refs = reg.query_datasets(
        "arr", collections="r", where="exposure.observation_type = 'flat' AND detector IN (1..3:2)"
    )
    flats = [e for e in EXPOSURE_IDS if OBS_TYPES[e] == "flat"]
    assert sorted((r.data_id["exposure"], r.data_id["detector"]) for r in refs) == [
        (e, d) for e in flats for d in (1, 3)
    ]
    assert all(r.data_id.records["exposure"].observation_type == "flat" for r in refs)
    refs = reg.query_datasets(
        "arr", collections="r", where="band = 'r'", order_by=["-exposure", "detector"], limit=3
    )
    assert [(r.data_id["exposure"], r.data_id["detector"]) for r in refs] == [(5, 0), (5, 1), (5, 2)]
    refs = reg.query_datasets(
        "arr", collections="r", where="exposure.exposure_time > :t", bind={"t": 20.0}, detector=0
    )
    assert sorted(r.data_id["exposure"] for r in refs) == [e for e in EXPOSURE_IDS if EXPTIMES[e] > 20.0]
    t = exposure_span(2).begin.isot
    refs = reg.query_datasets(
        "arr", collections="r", where=f"exposure.timespan OVERLAPS T'{t}' AND detector = 0"
    )
    assert [r.data_id["exposure"] for r in refs] == [2]
    refs = reg.query_datasets(
        "arr", collections="r", where="arr.run = 'r' AND GLOB(exposure.obs_id, 'CAM_000[12]')", detector=2
    )
    assert sorted(r.data_id["exposure"] for r in refs) == [1, 2]


@pytest.mark.parametrize(
    "where, message",
    [
        ("(exposure = 1", "unbalanced parentheses|expected"),
        ("exposure == 1", "expected|Invalid"),
        ("exposure.obs_id = 'CAM", "unterminated|string"),
        ("exposure.timespan OVERLAPS T'2025-13-45'", "time|Invalid"),
        ("exposure.nosuch = 1", "no field 'nosuch'"),
        ("visit = 3", "unknown dimension 'visit'"),
    ],
)
def test_malformed_or_unknown_query(filled, where, message):
    filled.registry.register_run("r")
    with pytest.raises(InvalidQueryError, match=message):
        filled.registry.query_datasets("arr", collections="r", where=where)


def test_query_data_ids_and_records(filled):
    reg = filled.registry
    reg.register_run("r")
    reg.insert_datasets("arr", _raw_ids([3, 4], [0, 1]), "r")
    ids = reg.query_data_ids(["exposure", "detector"], datasets="arr", collections="r", where="detector = 1")
    assert [(d["exposure"], d["detector"]) for d in ids] == [(3, 1), (4, 1)]
    assert ids[0].records["exposure"].obs_id == "CAM_0003"
    assert len(reg.query_data_ids(["exposure"], where="exposure.observation_type = 'bias'")) == 2
    recs = reg.query_dimension_records("exposure", where="exposure.exposure_time >= 30", order_by="-exposure")
    assert [r.id for r in recs] == [5, 4]
    assert recs[0].timespan == exposure_span(5)
    pf = reg.query_dimension_records("physical_filter", where="band = 'g'")
    assert [(r.name, r.band) for r in pf] == [("g_01", "g")]
    with pytest.raises(InvalidQueryError):
        reg.query_dimension_records("detector", where="detector.bogus = 1")
    with pytest.raises(DataIdError, match="unknown dimension 'nonesuch'"):
        reg.query_dimension_records("nonesuch")


def test_query_data_ids_read_records_on_first_use_and_equal_expand_data_id(filled, monkeypatch):
    """Data IDs of a query read their dimension records only when asked, once per batch and element.

    Values, equality and hashing need no record; the records then equal those of
    `expand_data_id` (the plain path), for every data ID and dimension.
    """
    reg = filled.registry
    reg.managers.clear_caches()
    dm = reg.managers.dimensions
    calls: list[str] = []
    prefetch = dm.prefetch
    monkeypatch.setattr(
        dm, "prefetch", lambda element, keys: (calls.append(element), prefetch(element, keys))
    )
    ids = reg.query_data_ids(["exposure", "detector"], where="detector IN (1, 2)")
    assert len(ids) == 2 * len(EXPOSURE_IDS)
    assert sorted((d["exposure"], d["detector"]) for d in ids) == sorted(
        (e, d) for e in EXPOSURE_IDS for d in (1, 2)
    )
    assert len(set(ids)) == len(ids) and ids[0] == dict(ids[0].required)
    assert calls == []  # nothing read yet
    assert ids[3].has_records()
    assert sorted(calls) == ["band", "day_obs", "detector", "exposure", "instrument", "physical_filter"]
    calls.clear()
    reg.managers.clear_caches()  # the batch keeps what it read
    for d in ids:
        plain = reg.expand_data_id(d.required, dimensions=["exposure", "detector"])
        assert dict(d) == dict(plain)
        assert d.has_records() and d.records == plain.records and d.timespan == plain.timespan


def test_hostile_string_cannot_change_query(filled):
    reg = filled.registry
    reg.register_run("r")
    reg.insert_datasets("arr", _raw_ids([1], [0]), "r")
    refs = reg.query_datasets(
        "arr", collections="r", where="exposure.obs_id = :o", bind={"o": "x' OR '1'='1"}
    )
    assert refs == []
    assert len(reg.query_datasets("arr", collections="r")) == 1


def test_schema_version_mismatch_is_reported(repo):
    from butler import Butler, RepositoryError

    reg = repo.registry
    with reg.transaction():
        reg.managers.attributes.set("schema_version", "999")
    repo.close()
    with pytest.raises(RepositoryError, match="schema_version '999'"):
        Butler(repo.root)


def test_uuid_roundtrip_of_given_ids(filled):
    reg = filled.registry
    reg.register_run("r")
    given = uuid.uuid4()
    ref = reg.insert_datasets("meta", [{"instrument": "cam", "exposure": 2}], "r", ids=[given])[0]
    assert ref.id == given and reg.get_dataset(given).data_id["exposure"] == 2


def test_query_data_ids_semi_join_on_datasets(filled):
    """Data IDs constrained by datasets of one or two types (semi-join), in given collections."""
    b, reg = filled, filled.registry
    for e, d in [(1, 0), (1, 1), (3, 0), (3, 2), (4, 2)]:
        b.put(np.zeros(1), "arr", instrument="cam", exposure=e, detector=d, run="r")
    b.put(np.zeros(1), "arr", instrument="cam", exposure=5, detector=3, run="other")
    for e in (3, 4, 6):
        b.put({"e": e}, "meta", instrument="cam", exposure=e, run="r")

    def pairs(dims, **kw):
        return sorted(tuple(d[x] for x in dims) for d in reg.query_data_ids(dims, **kw))

    assert pairs(["exposure", "detector"], datasets="arr", collections="r") == [
        (1, 0), (1, 1), (3, 0), (3, 2), (4, 2)
    ]
    # Duplicated dataset rows never duplicate data IDs; implied values and records come along.
    ids = reg.query_data_ids(["exposure"], datasets="arr", collections=["r", "other"])
    assert sorted(d["exposure"] for d in ids) == [1, 3, 4, 5]
    by_exp = {d["exposure"]: d for d in ids}
    assert by_exp[3]["band"] == "g" and by_exp[3].records["exposure"].obs_id == "CAM_0003"
    # Both types must exist for the data ID (an exposure-only type joins on exposure alone).
    assert pairs(["exposure", "detector"], datasets=["arr", "meta"], collections="r") == [
        (3, 0), (3, 2), (4, 2)
    ]
    assert pairs(["exposure"], datasets=["meta"], collections="r", where="exposure.exposure_time > 20") == [
        (4,)
    ]
    # Implied dimensions are joined on too (meta exists only for g_01 exposures).
    assert pairs(["physical_filter"], datasets="meta", collections="r") == [("g_01",)]
    # A dataset type sharing no dimension with the query: any dataset of it suffices.
    b.put(np.zeros(1), "bias", instrument="cam", detector=0, run="calib/run")
    assert pairs(["band"], datasets="bias", collections="calib/run") == [("g",), ("r",)]
    assert pairs(["band"], datasets="bias", collections="r") == []
