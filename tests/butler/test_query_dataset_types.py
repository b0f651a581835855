"""query_datasets of several dataset types runs one UNION ALL.

The same refs, in the same order, as one query per type (the plain computation), on SQLite and
PostgreSQL (``filled`` fixture).
"""

from __future__ import annotations

from typing import Any

import pytest

from butler import CollectionType, DatasetType, Timespan
from butler._errors import InvalidQueryError
from butler.registry import CalibrationLookupError
from butler.registry._query import DatasetQuery, dataset_types_for_query

from .conftest import EXPOSURE_IDS, exposure_span


@pytest.fixture
def several(filled):
    """Return a repository with RUNs r1, r2 and CHAINED, TAGGED, CALIBRATION collections of five types."""
    reg = filled.registry
    reg.register_dataset_type(DatasetType("arr2", ["exposure", "detector"], "NumpyArray"))
    reg.register_dataset_type(DatasetType("dark", ["detector"], "NumpyArray", is_calibration=True))
    for run in ("r1", "r2", "calib/run1", "calib/run2"):
        reg.register_run(run)
    ids = [{"instrument": "cam", "exposure": e, "detector": d} for e in EXPOSURE_IDS for d in (0, 1)]
    arr1 = reg.insert_datasets("arr", ids, "r1")
    reg.insert_datasets("arr", [{"instrument": "cam", "exposure": e, "detector": 0} for e in (2, 4)], "r2")
    arr2 = [{"instrument": "cam", "exposure": e, "detector": 3} for e in (6, 1, 4)]
    reg.insert_datasets("arr2", arr2, "r2")
    reg.insert_datasets("arr2", [{"instrument": "cam", "exposure": 2, "detector": 0}], "r1")  # as arr's
    meta1 = reg.insert_datasets("meta", [{"instrument": "cam", "exposure": e} for e in EXPOSURE_IDS], "r1")
    reg.insert_datasets("meta", [{"instrument": "cam", "exposure": 3}], "r2")
    reg.insert_datasets("bias", [{"instrument": "cam", "detector": d} for d in range(4)], "r1")
    reg.register_collection("chain", CollectionType.CHAINED)
    reg.set_collection_chain("chain", ["r2", "r1"])
    reg.register_collection("tag", CollectionType.TAGGED)
    reg.associate("tag", arr1[3:7] + meta1[:2])
    b1 = reg.insert_datasets("bias", [{"instrument": "cam", "detector": d} for d in (0, 1)], "calib/run1")
    b2 = reg.insert_datasets("bias", [{"instrument": "cam", "detector": d} for d in (0, 1)], "calib/run2")
    flats = reg.insert_datasets(
        "flat", [{"instrument": "cam", "detector": 0, "physical_filter": f} for f in ("r_01", "g_01")],
        "calib/run1",
    )
    reg.register_collection("calib", CollectionType.CALIBRATION)
    boundary = exposure_span(3).begin
    reg.certify("calib", b1, Timespan(None, boundary))
    reg.certify("calib", b2, Timespan(boundary, None))
    reg.certify("calib", flats, Timespan(None, None))
    darks = reg.insert_datasets("dark", [{"instrument": "cam", "detector": d} for d in (1, 2)], "calib/run1")
    reg.certify("calib", darks, Timespan(None, None))  # same data IDs as biases: never ambiguous
    return filled


def _per_type(reg: Any, types: Any, collections: Any, **kw: Any) -> list:
    """Run the plain computation: one `DatasetQuery` per dataset type, results concatenated."""
    types_ = reg.managers.dataset_types
    dts = dataset_types_for_query(types_, types, kw.get("where", ""), kw.get("data_id"), {})
    search = reg.managers.collections.search_path(collections)
    find_first = kw.pop("find_first", True) and collections is not None
    timespan = kw.pop("timespan", None)
    out: list = []
    for dt in dts:
        out += DatasetQuery(reg.managers, dt, search, timespan=timespan).run(find_first=find_first, **kw)
    return out


def _key(ref: Any) -> tuple:
    return (ref.dataset_type.name, str(ref.id), ref.run, tuple(ref.data_id.items()))


CASES = [
    (["arr", "meta", "bias", "flat", "arr2"], ["r1", "r2"], {"find_first": False}),
    (["arr", "meta", "bias", "arr2"], ["r1", "r2"], {"find_first": True}),
    (["meta", "arr", "arr2"], "chain", {"where": "exposure.observation_type = 'flat' OR exposure = 1"}),
    (["arr2", "arr"], "chain", {"order_by": "-exposure,detector", "where": "exposure IN (2, 4, 6)",
                                "data_id": {"instrument": "cam"}}),
    (["meta", "arr2"], "chain", {"order_by": "-exposure.obs_id"}),
    (["arr2", "arr"], ["r2"], {"order_by": ["exposure.exposure_time", "-exposure"]}),
    (["arr", "meta"], "tag", {"find_first": False}),
    (["arr", "meta"], ["tag", "r2"], {"find_first": True}),
    ("*", ["r1", "r2", "calib"], {"find_first": False}),
    ("*", None, {}),
    ("ar*", ["r2", "r1"], {"where": "detector = 0"}),
    (["bias", "flat"], "calib", {"timespan": exposure_span(4)}),
    (["dark", "bias", "flat"], "calib", {"timespan": exposure_span(1)}),
    (["dark", "bias"], ["calib/run1", "calib/run2"], {"find_first": True}),
    (["arr", "arr2"], ["r2", "r1"], {"find_first": True, "where": "detector = 0"}),
    (["arr2", "meta", "arr"], ["r1", "r2"],
     {"where": "exposure IN (:e) AND GLOB(exposure.obs_id, 'CAM_000*')", "bind": {"e": [1, 2, 4]},
      "find_first": False}),
    (["flat", "bias"], "calib", {"find_first": False}),
    (["bias", "arr"], ["calib", "r1"], {"find_first": False, "detector": 1}),
    (["arr", "meta", "arr2"], ["r1", "r2"], {"limit": 2, "order_by": "exposure"}),
    (["arr", "meta"], [], {}),
]


@pytest.mark.parametrize("types, collections, kw", CASES)
def test_several_types_equal_one_query_per_type(several, types, collections, kw):
    """Same refs (id, type, run, data ID values and records) in the same order as per type.

    ``order_by`` cases order each type totally (ties have no defined order, either way).
    Without ``order_by`` the order within a type is the database's: the same on SQLite, where
    both statements scan the same index; on PostgreSQL the same refs per type.
    """
    reg = several.registry
    kw = dict(kw)
    dims = {k: kw.pop(k) for k in ("detector",) if k in kw}
    want = _per_type(reg, types, collections, **kw, dims=dims)
    got = reg.query_datasets(types, collections=collections, **kw, **dims)
    if "order_by" in kw or reg.managers.db.engine.dialect.name == "sqlite":
        assert [_key(r) for r in got] == [_key(r) for r in want]
    else:
        # Without ORDER BY, SQL leaves the order of a type's rows to the plan, which differs
        # between "dataset_type_id = ?" and "IN (...)" on PostgreSQL: the types come in the
        # same order, each with the same refs.
        assert [r.dataset_type.name for r in got] == [r.dataset_type.name for r in want]
        assert sorted(_key(r) for r in got) == sorted(_key(r) for r in want)
    assert want or collections == []  # every other case finds datasets
    plain = {r.id: r for r in want}
    for a in got:
        assert a.data_id.records == plain[a.id].data_id.records and a.data_id.has_records()


def test_several_types_run_one_statement(several, monkeypatch):
    """The refs of four dataset types come from one SELECT (the per-type path runs four)."""
    reg = several.registry
    db = reg.managers.db
    calls = []
    fetch = db.fetch_tuples
    monkeypatch.setattr(db, "fetch_tuples", lambda stmt: (calls.append(stmt), fetch(stmt))[1])
    refs = reg.query_datasets(["arr", "meta", "bias", "arr2"], collections=["r1", "r2"], find_first=False)
    assert len(calls) == 1
    assert [len([r for r in refs if r.dataset_type.name == n]) for n in ("arr", "meta", "bias", "arr2")] == [
        14, 7, 4, 4,
    ]
    calls.clear()
    _per_type(reg, ["arr", "meta", "bias", "arr2"], ["r1", "r2"], find_first=False)
    assert len(calls) == 4


def test_several_types_raise_what_the_first_failing_type_raises(several):
    """Errors are those of the first type (in order) whose query fails, as with one query per type."""
    reg = several.registry
    for types, collections, kw, error in [
        (["arr", "meta"], ["r1"], {"where": "arr.run = 'r1'"}, InvalidQueryError),
        (["arr", "arr2", "meta"], ["r2"], {"where": "arr.run = 'r1' OR exposure = 2"}, InvalidQueryError),
        (["meta", "bias"], ["r1"], {"where": "exposure = 1"}, InvalidQueryError),
        (["flat", "bias"], "calib", {"find_first": True}, CalibrationLookupError),
        (["bias", "flat"], "calib", {"find_first": True}, CalibrationLookupError),
        (["dark", "bias", "flat"], "calib", {"find_first": True}, CalibrationLookupError),
    ]:
        with pytest.raises(error) as plain:
            _per_type(reg, types, collections, **kw)
        with pytest.raises(error) as union:
            reg.query_datasets(types, collections=collections, **kw)
        assert str(union.value) == str(plain.value)


def test_more_types_than_one_statement_holds(several, monkeypatch):
    """Queries beyond `QUERIES_PER_STATEMENT` go to further statements; the result is unchanged."""
    import butler.registry._query as q

    reg = several.registry
    types = ["arr2", "meta", "arr", "bias", "flat"]
    want = [_key(r) for r in _per_type(reg, types, ["r1", "r2", "calib"], find_first=False)]
    monkeypatch.setattr(q, "QUERIES_PER_STATEMENT", 2)
    got = [_key(r) for r in reg.query_datasets(types, collections=["r1", "r2", "calib"], find_first=False)]
    assert [k[0] for k in got] == [k[0] for k in want] and sorted(got) == sorted(want)
    assert len(got) == 4 + 7 + 14 + 8 + 2
