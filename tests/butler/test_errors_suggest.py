"""Unknown dataset types and collections: the error names the closest existing one."""

from __future__ import annotations

import pytest

from butler import Butler, DatasetType
from butler._errors import MissingCollectionError, MissingDatasetTypeError


def test_unknown_dataset_type_suggests_the_close_one(tmp_path) -> None:
    b = Butler.create(tmp_path / "repo")
    b.registry.register_dataset_type(DatasetType("flat", ["instrument"], "NumpyArray"))
    with pytest.raises(MissingDatasetTypeError, match=r"'flatt' is not registered \(did you mean 'flat'\?\)"):
        b.registry.get_dataset_type("flatt")
    with pytest.raises(MissingDatasetTypeError) as err:
        b.registry.get_dataset_type("zzzz")
    assert "did you mean" not in str(err.value)


def test_unknown_collection_suggests_the_close_one(tmp_path) -> None:
    b = Butler.create(tmp_path / "repo")
    b.registry.register_run("cam/calib/run")
    expected = r"'cam/calib/rn' does not exist \(did you mean 'cam/calib/run'\?\)"
    with pytest.raises(MissingCollectionError, match=expected):
        b.registry.resolve_collections(["cam/calib/rn"])
