"""`SqliteReadOnlyButler` (``sqlite3``, no SQLAlchemy) against the registry, call by call.

The graph-level equality of ``pipetask qgraph`` is in ``tests/pipeline/cli/test_qgraph_read_only.py``;
here each read is compared with the `butler.Butler`'s answer on a toy repository whose 6,100
datasets take the datastore records past the temporary-table threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import _toy_tasks as toy
import numpy as np
import pytest

from butler import Butler, MissingCollectionError, MissingDatasetTypeError
from butler._errors import FastPathUnavailableError
from butler.registry.backends import open_read_only_butler


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Make a toy repository of 100 x 61 datasets, opened as a `Butler` and as a read-only butler."""
    root = tmp_path_factory.mktemp("ro") / "repo"
    toy.make_toy_repo(root, 100, 61, with_files=False)
    butler = Butler(root, writeable=False)
    fast = open_read_only_butler(root)
    yield butler, fast
    fast.close()
    butler.close()


def _refs_equal(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.id, x.run, x.dataset_type, x.data_id.to_simple()) == (y.id, y.run, y.dataset_type,
                                                                        y.data_id.to_simple())
        assert {k: v.to_dict() for k, v in x.data_id.records.items()} == \
            {k: v.to_dict() for k, v in y.data_id.records.items()}


def test_queries_equal(repos: Any) -> None:
    """Dataset and data-ID queries with a data query give the same refs, data IDs and records."""
    butler, fast = repos
    where = "exposure > 95 AND detector IN (3..5)"
    a = butler.query_datasets("toyRaw", collections=[toy.TOY_RAW_RUN], where=where)
    b = fast.query_datasets("toyRaw", collections=[toy.TOY_RAW_RUN], where=where)
    assert len(a) == 15
    _refs_equal(a, b)
    a = butler.query_data_ids(["exposure", "detector"], where=where, datasets=["toyRaw"],
                              collections=[toy.TOY_RAW_RUN])
    b = fast.query_data_ids(["exposure", "detector"], where=where, datasets=["toyRaw"],
                            collections=[toy.TOY_RAW_RUN])
    assert [x.to_simple() for x in a] == [x.to_simple() for x in b] and len(a) == 15
    assert [x.timespan for x in a] == [x.timespan for x in b]
    assert fast.unavailable is None


@pytest.mark.parametrize("n", [0, 3, 5000, 6100])
def test_file_record_columns_equal(repos: Any, n: int) -> None:
    """Same rows in the same order, below and above the temporary-table threshold (5,000)."""
    butler, fast = repos
    refs = butler.query_datasets("toyRaw", collections=[toy.TOY_RAW_RUN])[:n]
    ids = [r.id for r in refs]
    a = butler.registry.get_file_record_columns(ids)
    b = fast.get_file_record_columns(ids)
    assert len(a.position) == n
    assert np.array_equal(a.position, b.position)
    assert (a.path, a.formatter, a.storage_class, a.checksum, a.file_size) == \
        (b.path, b.formatter, b.storage_class, b.checksum, b.file_size)
    assert list(butler.registry.get_file_records(ids).items()) == list(fast.get_file_records(ids).items())
    assert fast.unavailable is None


def test_refusals_are_remembered(tmp_path: Path) -> None:
    """A refused read is remembered; a missing collection is the registry's error, not a refusal."""
    toy.make_toy_repo(tmp_path / "repo", 2, 2, with_files=False)
    fast = open_read_only_butler(tmp_path / "repo")
    try:
        with pytest.raises(MissingCollectionError, match="did you mean 'ToyCam/raw/all'"):
            fast.get_collection_type("ToyCam/raw/al")
        assert fast.unavailable is None  # the registry's answer, not a refusal
        with pytest.raises(FastPathUnavailableError):
            fast.query_datasets("toyRaw", collections=[toy.TOY_RAW_RUN], bind={"x": 1})
        assert fast.unavailable is not None and "bind" in fast.unavailable
        with pytest.raises(FastPathUnavailableError):
            fast.find_dataset("toyRaw", {"exposure": 1}, collections=[toy.TOY_RAW_RUN])
    finally:
        fast.close()


def test_unregistered_type_is_the_registrys_error(repos: Any) -> None:
    """Unknown dataset types and collections: the registry's exceptions and messages, no refusal."""
    butler, fast = repos
    errors = []
    for b in (butler, fast):
        with pytest.raises(MissingDatasetTypeError) as e1:
            b.find_dataset("toyRa", {"instrument": toy.TOY_INSTRUMENT}, collections=[toy.TOY_RAW_RUN])
        with pytest.raises(MissingDatasetTypeError) as e2:
            b.registry.query_calibration_validity(toy.TOY_RAW_RUN, "toyRa")
        with pytest.raises(MissingDatasetTypeError) as e3:
            b.query_datasets("toyRa", collections=["no/such/collection"], where="detector = 1")
        with pytest.raises(MissingCollectionError) as e4:
            b.query_datasets("toyRaw", collections=[toy.TOY_RAW_RUN, "ToyCam/raw/al"], where="detector = 1")
        with pytest.raises(MissingCollectionError) as e5:
            b.registry.resolve_collections(["ToyCam/*", "nothing"])
        errors.append(tuple(str(e.value) for e in (e1, e2, e3, e4, e5)))
    assert errors[0] == errors[1]
    assert "did you mean 'toyRaw'" in errors[0][0]
    assert fast.unavailable is None
    with pytest.raises(FastPathUnavailableError):  # a registered type: the registry finds it
        fast.find_dataset("toyRaw", {"instrument": toy.TOY_INSTRUMENT, "exposure": 1, "detector": 1},
                          collections=[toy.TOY_RAW_RUN])
    fast.unavailable = None


def test_refs_from_ids_on_a_fresh_butler(repos: Any) -> None:
    """Refs by id (the certifications' datasets) before any dataset type was looked up, in the order given."""
    butler, _ = repos
    ids = [r.id for r in butler.query_datasets("toyRaw", collections=[toy.TOY_RAW_RUN], where="exposure = 7")]
    ids.reverse()
    fresh = open_read_only_butler(butler.root)
    try:
        _refs_equal(fresh._refs_from_ids(ids), [butler.get_dataset(i) for i in ids])
    finally:
        fresh.close()
