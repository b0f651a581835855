"""Timespans, the dimension universe, data IDs, dataset types/refs and path templates (no database)."""

from __future__ import annotations

import pickle
import uuid

import pytest
from astropy.time import Time

from butler import DataCoordinate, DataIdError, DatasetRef, DatasetType, Timespan
from butler.datastore.file_datastore import PathTemplate
from butler.dimensions import DimensionRecord, default_universe
from butler.registry.schema import schema_summary
from butler.timespan import TIMESPAN_MAX, TIMESPAN_MIN, iso_tai_to_ns, ns_to_isot, ns_to_time, parse_time, time_to_ns


def test_time_ns_roundtrip_is_exact_and_tai():
    t = Time("2022-01-26T19:00:00.123456789", scale="tai", precision=9)
    ns = time_to_ns(t)
    assert ns == (19018 * 86400 + 19 * 3600) * 10**9 + 123456789
    assert ns_to_time(ns).isot == "2022-01-26T19:00:00.123"
    assert abs((ns_to_time(ns) - t).to_value("s")) < 1e-9
    # A UTC time is converted to TAI (37 s ahead since 2017).
    utc = Time("2022-01-26T19:00:00", scale="utc")
    assert time_to_ns(utc) - time_to_ns(Time("2022-01-26T19:00:00", scale="tai")) == 37 * 10**9
    assert time_to_ns(Time("1970-01-01T00:00:00", scale="tai")) == 0


def test_isot_without_astropy_equals_astropy():
    """`ns_to_isot` / `iso_tai_to_ns` (no astropy) give astropy's strings and nanoseconds."""
    import numpy as np

    rng = np.random.default_rng(17)
    day, ms = 86_400 * 10**9, 10**6
    # (an exact half-millisecond is a tie that astropy's floating point breaks either way: not sampled)
    samples = [0, -1, 1, ms // 2 + 10, ms // 2 - 10, day - 1, day - ms // 2 + 10, day - ms // 2 - 10, -day, -day - 1]
    samples += [int(x) for x in rng.integers(-150 * 365 * day, 140 * 365 * day, 300)]
    samples += [int(x) * ms + ms // 2 + d for x in rng.integers(-10**11, 10**12, 40) for d in (-10, 10)]
    for ns in samples:
        assert ns_to_isot(ns) == ns_to_time(ns).isot, ns
    texts = ["2015-05-01T00:00:00", "2015-05-01", "2022-01-26T19:00", "2022-01-26 19:00:00.5",
             "2000-02-29T23:59:59.999999999", "1901-12-31T01:02:03.000123", "2116-01-01T00:00:00.1"]
    for text in texts:
        assert iso_tai_to_ns(text) == time_to_ns(parse_time(text)), text
        assert Timespan.from_strings(text, None).begin_ns == time_to_ns(parse_time(text))
    for bad in ["2015-02-30", "2015-05-01T24:00:00", "2015-05-01T00:00:60", " 2015-05-01", "mjd", "2015-5-1"]:
        assert iso_tai_to_ns(bad) is None, bad
    with pytest.raises(ValueError, match="not a valid time"):
        Timespan.from_strings("2015-02-30", None)


def test_timespan_overlap_contains_difference():
    def t(s):
        return Time(f"2025-01-01T{s}", scale="tai")

    a = Timespan(t("10:00:00"), t("11:00:00"))
    b = Timespan(t("11:00:00"), t("12:00:00"))
    assert not a.overlaps(b) and not b.overlaps(a)  # half-open
    assert a.overlaps(Timespan(t("10:59:59"), None))
    assert a.contains(t("10:00:00")) and not a.contains(t("11:00:00"))
    unbounded = Timespan(None, None)
    assert (unbounded.begin_ns, unbounded.end_ns) == (TIMESPAN_MIN, TIMESPAN_MAX)
    assert unbounded.overlaps(a) and unbounded.begin is None
    parts = Timespan(t("09:00:00"), t("13:00:00")).difference(a)
    assert parts == [Timespan(t("09:00:00"), t("10:00:00")), Timespan(t("11:00:00"), t("13:00:00"))]
    assert a.difference(unbounded) == []
    with pytest.raises(ValueError, match="before its begin"):
        Timespan(t("11:00:00"), t("10:00:00"))
    assert Timespan.from_dict(a.to_dict()) == a


def test_universe_groups_and_data_coordinates():
    u = default_universe()
    assert u.group(["exposure", "detector"]) == (
        ("instrument", "detector", "exposure"),
        ("band", "physical_filter", "day_obs"),
    )
    assert u.group(["physical_filter"]) == (("instrument", "physical_filter"), ("band",))
    did = DataCoordinate.make(["exposure", "detector"], instrument="cam", exposure="12", detector=3)
    assert did.required == {"instrument": "cam", "detector": 3, "exposure": 12}
    assert did == {"instrument": "cam", "detector": 3, "exposure": 12}
    assert hash(did) == hash(
        DataCoordinate.make(["exposure", "detector"], instrument="cam", exposure=12, detector=3)
    )
    assert did.key == '["cam",3,12]'
    with pytest.raises(DataIdError, match="missing required dimension"):
        DataCoordinate.make(["exposure", "detector"], instrument="cam", exposure=1)
    with pytest.raises(DataIdError, match="not a valid int"):
        DataCoordinate.make(["detector"], instrument="cam", detector=1.5)
    rec = DimensionRecord(
        u["detector"], {"instrument": "cam", "id": 3, "full_name": "S03", "purpose": "SCIENCE"}
    )
    full = DataCoordinate(
        u, ("instrument", "detector"), {"instrument": "cam", "detector": 3}, {"detector": rec}
    )
    back = DataCoordinate.from_dict(full.to_dict())
    assert back == full and back.records["detector"].full_name == "S03"
    assert pickle.loads(pickle.dumps(full)).records["detector"] == rec
    with pytest.raises(AttributeError, match="no field 'bogus'"):
        rec.bogus


def test_dataset_type_and_ref():
    dt = DatasetType("flat", ["detector", "physical_filter", "instrument"], "Exposure", is_calibration=True)
    assert dt.dimensions == ("instrument", "physical_filter", "detector") and dt.implied == ("band",)
    assert dt == DatasetType("flat", ["physical_filter", "detector"], "Exposure", True)
    with pytest.raises(ValueError, match="invalid dataset type name"):
        DatasetType("bad name", [], "NumpyArray")
    did = dt.make_data_id(instrument="cam", physical_filter="r", detector=1)
    ref = DatasetRef(dt, did, "calib/run")
    assert ref.id.version == 7
    assert DatasetRef.from_dict(ref.to_dict()) == ref
    expected = uuid.uuid5(
        uuid.uuid5(uuid.NAMESPACE_DNS, "lsst.org"),
        "dataset_type=flat,detector=1,instrument=cam,physical_filter=r",
    )
    assert DatasetRef.make_id(dt, did, "x", "dataid_type") == expected
    with pytest.raises(ValueError, match="unknown id generation mode"):
        DatasetRef.make_id(dt, did, "x", "random")


def test_path_template_rendering():
    u = default_universe()
    dt = DatasetType("raw", ["exposure", "detector"], "Exposure")
    recs = {
        "exposure": DimensionRecord(
            u["exposure"], {"instrument": "cam", "id": 5, "obs_id": "CAM_0005", "day_obs": 20250101}
        ),
        "detector": DimensionRecord(u["detector"], {"instrument": "cam", "id": 2, "full_name": "S02"}),
    }
    did = DataCoordinate(
        u, dt.dimensions, {"instrument": "cam", "detector": 2, "exposure": 5, "day_obs": 20250101}, recs
    )
    ref = DatasetRef(dt, did, "cam/raw/all")
    tpl = PathTemplate(
        "{run}/{datasetType}/{day_obs}/{exposure.obs_id}/{datasetType}_{instrument}_{exposure.obs_id}_{detector.full_name}_{run}"
    )
    assert tpl.render(ref) == "cam/raw/all/raw/20250101/CAM_0005/raw_cam_CAM_0005_S02_cam_raw_all"
    opt = PathTemplate("{run}/{datasetType}/{band:?}/{datasetType}_{band:?}_{detector.full_name:?}_{run}")
    assert opt.render(ref) == "cam/raw/all/raw/raw_S02_cam_raw_all"
    with pytest.raises(Exception, match="needs 'physical_filter'"):
        PathTemplate("{run}/{physical_filter}").render(ref)
    with pytest.raises(ValueError, match="must contain"):
        PathTemplate("{datasetType}")


def test_schema_yaml_has_docs_and_versions():
    summary = schema_summary()
    assert summary["dimensions_version"] >= 1 and summary["tables_version"] >= 1
    assert summary["undocumented"] == []
    assert {
        "dataset",
        "collection",
        "run",
        "collection_chain",
        "dataset_type",
        "dataset_tags",
        "dataset_calibs",
        "file_datastore_records",
        "butler_attributes",
    } <= set(summary["tables"])


def test_numpy_formatter_writes_the_bytes_of_np_save(tmp_path):
    """The cached-header fast write gives exactly np.save's file, for every layout and dtype."""
    import io

    import numpy as np

    from butler.datastore.formatters import NumpyFormatter

    fmt = NumpyFormatter()
    arrays = [
        np.arange(12.0).reshape(3, 4),
        np.zeros((0, 3), np.int16),
        np.array(5.0),
        np.arange(6, dtype=">i4"),
        np.ones((2, 3), np.float32).T,  # not C-contiguous: np.save path
        np.arange(10)[::2],
        np.array(["ab", "c"]),
        np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
        np.arange(4, dtype=np.complex64),
        np.zeros((2,) + (1,) * 60),
    ]
    for i, a in enumerate(arrays):
        path = tmp_path / f"{i}.npy"
        fmt.write(a, path, None)
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        assert path.read_bytes() == buf.getvalue(), (i, a.dtype, a.shape)
        back = fmt.read(path, None)
        assert back.dtype == a.dtype and back.shape == a.shape and np.array_equal(back, a)


def test_fast_npy_read_equals_numpy_load(tmp_path):
    """The own reader gives numpy.load's array, for every dtype and layout it takes."""
    import numpy as np

    from butler.datastore.formatters import _fast_npy_read

    rng = np.random.default_rng(3)
    arrays = [
        np.arange(3.0),  # data inside the first 4 kB read
        rng.normal(size=(4096 - 128) // 8),  # data ends at 4 kB
        rng.normal(size=(4096 - 128) // 8 + 1),  # one value past it
        rng.normal(size=(256, 256)),  # 0.5 MB: the benchmark's size
        np.asfortranarray(rng.normal(size=(300, 7))),  # fortran_order: True
        rng.integers(0, 1000, size=(40, 50)).astype(">i2"),
        np.array(7, dtype=np.uint8),  # 0-d
        np.zeros((0, 4)),
        (rng.normal(size=2000) + 1j).astype(np.complex64),
        np.array([b"ab", b"cde"] * 700),
        np.array([True, False] * 3000),
        np.zeros((2,) + (1,) * 40),  # a header longer than the first 128-byte read
    ]
    for i, a in enumerate(arrays):
        path = tmp_path / f"{i}.npy"
        np.save(path, a, allow_pickle=False)
        if i == len(arrays) - 1:
            assert int.from_bytes(path.read_bytes()[8:10], "little") == 246  # two reads of the header
        back = _fast_npy_read(path)
        ref = np.load(path, allow_pickle=False)
        assert back is not None, i
        assert back.dtype == ref.dtype and back.shape == ref.shape, i
        assert back.flags.f_contiguous == ref.flags.f_contiguous and back.flags.writeable, i
        assert np.array_equal(back, ref), i
        assert back.tobytes(order="A") == ref.tobytes(order="A"), i
    # Truncated: the same ValueError numpy.fromfile gave (the datastore calls it corrupted).
    data = (tmp_path / "3.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match=r"truncated: 65523 of 65536 values"):
        _fast_npy_read(tmp_path / "cut.npy")
    # Not a plain .npy of version 1.0: left to numpy.load.
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "text.npy").write_bytes(b"not numpy")
    assert _fast_npy_read(tmp_path / "obj.npy") is None
    assert _fast_npy_read(tmp_path / "text.npy") is None


def test_every_storage_class_formatter_is_a_formatter():
    """Each formatter named in storage_classes.yaml subclasses `butler.Formatter` and can read."""
    from butler import ButlerError, Formatter
    from butler.storage_classes import get_formatter, storage_classes

    names = sorted({sc.formatter for sc in storage_classes().values()})
    assert len(names) >= 6
    for dotted in names:
        formatter = get_formatter(dotted)
        assert isinstance(formatter, Formatter), dotted
        assert formatter.extension.startswith("."), dotted
        assert type(formatter).read is not Formatter.read, dotted
    with pytest.raises(ButlerError, match="not a subclass of butler.Formatter"):
        get_formatter("pathlib.Path")


def test_path_template_alternates_and_bad_fields():
    """``{physical_filter|band:?}`` was written literally into the path; other braces are refused."""
    u = default_universe()
    dt = DatasetType("flat", ["detector", "physical_filter"], "Exposure")
    did = DataCoordinate(
        u, dt.dimensions, {"instrument": "cam", "detector": 2, "physical_filter": "r_01", "band": "r"}, {}
    )
    ref = DatasetRef(dt, did, "calib/run")
    tpl = PathTemplate("{run}/{datasetType}/{physical_filter|band:?}/{datasetType}_{exposure|detector}_{run}")
    assert tpl.render(ref) == "calib/run/flat/r_01/flat_2_calib_run"
    assert PathTemplate("{run}/{band|physical_filter}").render(ref) == "calib/run/r"
    missing = PathTemplate(
        "{run}/{datasetType}/{exposure|day_obs:?}/{datasetType}_{exposure.obs_id|visit:?}_{run}"
    )
    assert missing.render(ref) == "calib/run/flat/flat_calib_run"
    with pytest.raises(Exception, match="needs 'exposure|day_obs'"):
        PathTemplate("{run}/{exposure|day_obs}").render(ref)
    assert PathTemplate("{run}/{physical_filter|band:?}").fields() == {"run", "physical_filter", "band"}
    for bad in ("{run}/{visit:08d}", "{run}/{band", "{run}/band}", "{run}/{physical filter}", "{run}/{}"):
        with pytest.raises(ValueError, match="is not a field"):
            PathTemplate(bad)


def test_butler_create_refuses_a_bad_template(tmp_path):
    """A template the datastore cannot render is refused before anything is created."""
    from butler import Butler

    with pytest.raises(ValueError, match=r"'\{band:\?x\}' is not a field"):
        Butler.create(tmp_path / "repo", templates={"flat": "{run}/{datasetType}/{band:?x}"})
    assert not (tmp_path / "repo").exists()


def _flatten_recursive(names, graph, keep_chains):
    """Expand chains by plain recursion, depth first (what `flatten_chains` must equal)."""
    from butler.collections import MAX_CHAIN_DEPTH

    out: list[str] = []

    def visit(n: str, depth: int) -> None:
        if depth > MAX_CHAIN_DEPTH:
            raise RecursionError(n)
        if n in graph:
            if keep_chains and n not in out:
                out.append(n)
            for c in graph[n]:
                visit(c, depth + 1)
        elif n not in out:
            out.append(n)

    for n in names:
        visit(n, 0)
    return out


def test_flatten_chains_equals_recursive_expansion_and_leaves_no_garbage():
    import gc
    import random

    from butler.collections import flatten_chains

    rng = random.Random(5)
    leaves = [f"r{i}" for i in range(6)]
    for case in range(300):
        chains = [f"c{i}" for i in range(rng.randint(0, 5))]
        # Children only among later chains (no cycle) and leaves, duplicates allowed.
        graph = {
            c: [rng.choice(chains[i + 1 :] + leaves) for _ in range(rng.randint(0, 4))]
            for i, c in enumerate(chains)
        }
        names = [rng.choice(chains + leaves) for _ in range(rng.randint(0, 4))]
        for keep in (False, True):
            got = flatten_chains(
                names, graph.__contains__, graph.__getitem__, RecursionError, keep_chains=keep
            )
            assert got == _flatten_recursive(names, graph, keep), (case, graph, names, keep)
    chain = {"c0": ["r2", "c1", "r2"], "c1": ["r1", "r3"]}
    got = flatten_chains(
        ["c0", "r1"], chain.__contains__, chain.__getitem__, RecursionError, keep_chains=True
    )
    assert got == ["c0", "r2", "c1", "r1", "r3"]
    # A cycle raises too_deep for the same name as the recursive expansion (the first beyond depth 100).
    cycle = {"a": ["r0", "b"], "b": ["a"]}
    with pytest.raises(RecursionError, match="^r0$"):
        _flatten_recursive(["a"], cycle, False)
    with pytest.raises(RecursionError, match="^r0$"):
        flatten_chains(["a"], cycle.__contains__, cycle.__getitem__, RecursionError)
    # No reference cycle per call (a recursive closure would leave garbage on every lookup).
    graph = {"c0": ["r2", "c1"], "c1": ["r1"]}
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(1000):
            flatten_chains(["c0", "r0"], graph.__contains__, graph.__getitem__, RecursionError)
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert grown < 1000, grown  # a recursive closure leaves 13 objects per call
    # What a collection finds now must not be ours (other threads of the test process, e.g. a
    # database driver's, may leave garbage of their own meanwhile: counting all of it was flaky).
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        ours = [o for o in gc.garbage if getattr(o, "__module__", None) == "butler.collections"]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert ours == []


def test_reproducible_dataset_id_namespace_is_daf_butlers():
    """The written-out namespace of reproducible dataset IDs is uuid5(NAMESPACE_DNS, 'lsst.org')."""
    from butler.datasets import NAMESPACE_LSST

    assert NAMESPACE_LSST == uuid.uuid5(uuid.NAMESPACE_DNS, "lsst.org")


def _to_builtin_general(obj):
    """`to_builtin` before its exact-type fast path (the reference the fast path must equal)."""
    from collections.abc import Mapping

    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Mapping):
        return {
            str(k) if not isinstance(k, (int, float, bool)) else k: _to_builtin_general(v) for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_to_builtin_general(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _to_builtin_general(obj.tolist())
    if hasattr(obj, "to_dict"):
        return _to_builtin_general(obj.to_dict())
    return str(obj)


def test_to_builtin_fast_path_equals_the_general_conversion():
    """Exact dict/list/tuple/scalar types take the fast path; the result (values, types, key
    types and order) is that of the general isinstance-based conversion."""
    import collections
    import enum
    import json
    from pathlib import Path

    import numpy as np

    from butler.datastore.formatters import to_builtin

    class Level(enum.IntEnum):
        LOW = 1

    class Name(str):
        def __str__(self):
            return "renamed"

    uid = uuid.UUID(int=7)
    objs = [
        None, True, 3, 2.5, float("nan"), "s", Level.LOW, Name("n"),
        {"a": 1, 2: "b", 2.5: None, False: [1, (2, 3)], None: 0, uid: {"x": np.float32(1.5)}, (1, 2): "t"},
        {Name("k"): 1, np.int64(4): 2, np.float64(1.5): 3},
        [np.arange(3), np.int64(5), np.bool_(True), {1, 2}, frozenset(), Path("/a/b"), uid],
        (1, [2, {"c": (3,)}]),
        collections.OrderedDict(z=1, a=2),
        collections.defaultdict(list, {"k": [1]}),
        {"quantum": {"prepUtc": "2026-01-01T00:00:00+00:00", "CpuTime": 0.25, "MaxResidentSetSize": 10}},
    ]
    for obj in objs:
        fast, general = to_builtin(obj), _to_builtin_general(obj)
        assert json.dumps(fast) == json.dumps(general), obj
        assert repr(fast) == repr(general), obj


def test_json_formatter_writes_the_bytes_of_a_text_dump(tmp_path):
    """One os.write of the encoded text gives the file the text-mode write gave."""
    import json

    from butler.datastore.formatters import JsonFormatter, to_builtin

    fmt = JsonFormatter()
    for i, obj in enumerate([[], {"é": "ü ✓", "n": [1, 2.5, None]}, {"x": "\n\t\"", 3: True}, "x" * 100_000]):
        path = tmp_path / f"{i}.json"
        fmt.write(obj, path, None)
        with open(tmp_path / f"{i}.ref", "w") as f:
            f.write(json.dumps(to_builtin(obj)))
        assert path.read_bytes() == (tmp_path / f"{i}.ref").read_bytes()
        assert fmt.read(path, None) == json.loads(json.dumps(to_builtin(obj)))


def test_normalized_relative_path_equals_pure_posix_path():
    """The datastore's string normalisation of rendered paths equals PurePosixPath's."""
    from pathlib import PurePosixPath

    from butler.datastore.file_datastore import _normalized

    for rel in ["a/b/c.npy", "a//b.npy", "./a/b", "a/./b", "a/b/", "a/b/.", ".", "a/../b", "a/.b/c",
                "a./b", "run/x_y/.hidden.json", "a/b//", "a..b/c"]:
        assert _normalized(rel) == PurePosixPath(rel).as_posix(), rel
