"""Bulk read of datastore records (`DatastoreRecordManager.get_columns`, the quantum-graph builder's
one query for its inputs) against the per-id read (`get`), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from butler import Butler, StoredFileInfo
from butler.registry.managers import datastore_records as dr

from .conftest import EXPOSURE_IDS


def _fill(filled) -> list[uuid.UUID]:
    reg = filled.registry
    reg.register_run("run/a")
    refs = reg.insert_datasets("arr", [{"instrument": "cam", "exposure": e, "detector": d}
                                       for e in EXPOSURE_IDS for d in range(4)], "run/a")
    # Every other dataset has a record; checksums and sizes vary, two formatters.
    reg.insert_file_records([
        (r.id, StoredFileInfo(f"run/a/{k}.npy",
                              "butler.datastore.formatters.NumpyFormatter" if k % 3 else "x.Other",
                              "NumpyArray", None if k % 4 else f"{k:064x}", 100 + k))
        for k, r in enumerate(refs) if k % 2 == 0])
    return [r.id for r in refs]


@pytest.mark.parametrize("threshold", [1000, 4])  # one IN query; the temporary-table join
def test_columns_equal_the_per_id_records(filled, monkeypatch, threshold):
    monkeypatch.setattr(dr, "BULK_THRESHOLD", threshold)
    ids = _fill(filled) + [uuid.uuid4()]  # one unknown id: no row
    ids = ids[::-1]
    files = filled.registry._files
    cols = filled.registry.get_file_record_columns(ids)
    assert len(cols.position) == 12 and sorted(cols.position.tolist()) == list(range(2, 25, 2))  # 0: unknown
    expected = files.get(ids)
    assert len(expected) == 12 and cols.to_dict(ids) == expected
    # The temporary table is gone: a second read (same connection) works and agrees.
    assert filled.registry.get_file_record_columns(ids[:7]).to_dict(ids[:7]) == files.get(ids[:7])
    assert filled.registry.get_file_record_columns(ids).to_dict(ids) == expected
    assert len(filled.registry.get_file_record_columns([]).position) == 0


def test_columns_from_a_read_only_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(dr, "BULK_THRESHOLD", 4)
    b = Butler.create(tmp_path / "repo")
    from .conftest import fill_dimensions

    fill_dimensions(b.registry)
    from butler import DatasetType

    b.registry.register_dataset_type(DatasetType("arr", ["exposure", "detector"], "NumpyArray"))
    ids = _fill(b)
    expected = b.registry.get_file_records(ids)
    b.close()
    ro = Butler(tmp_path / "repo", writeable=False)
    assert ro.registry.get_file_record_columns(ids).to_dict(ids) == expected
    ro.close()
