"""`PathTemplate.render` (alternatives parsed once) against the plain per-name lookup it replaced."""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

import pytest

from butler import DataCoordinate, DatasetRef, DatasetType, DimensionRecord
from butler._errors import DatastoreError
from butler.datastore.file_datastore import _SAFE, _UNSAFE, DEFAULT_TEMPLATES, FileDatastore, PathTemplate
from butler.datastore.records import StoredFileInfo
from butler.dimensions import default_universe


def _plain_value(ref: Any, name: str) -> Any:
    if name == "run":
        return ref.run
    if name == "datasetType":
        return ref.dataset_type.name
    if "." in name:
        head, _, field = name.partition(".")
        rec = ref.data_id.records.get(head)
        return None if rec is None else rec.get(field)
    return ref.data_id.get(name)


def plain_render(tpl: PathTemplate, ref: Any) -> str:
    """Render as before the alternatives were parsed once: names split and looked up per field."""
    out_segments = []
    last = len(tpl._parsed) - 1
    for i, (fields, tail) in enumerate(tpl._parsed):
        pieces: list[str] = []
        drop_next_sep = False
        for literal, name, _alternatives, optional in fields:
            if drop_next_sep and literal.startswith("_"):
                literal = literal[1:]
            drop_next_sep = False
            value = None
            for alternative in name.split("|"):
                value = _plain_value(ref, alternative)
                if value is not None:
                    name = alternative
                    break
            if value is None:
                if not optional:
                    raise DatastoreError(f"needs {name!r}")
                if literal.endswith("_"):
                    literal = literal[:-1]
                else:
                    drop_next_sep = True
                pieces.append(literal)
                continue
            text = str(value)
            if name == "run" and i != last:
                text = "/".join(_UNSAFE.sub("_", p) for p in text.split("/") if p not in ("", ".", ".."))
            elif not _SAFE.match(text):
                text = _UNSAFE.sub("_", text.replace("/", "_"))
            pieces.append(literal + text)
        if drop_next_sep and tail.startswith("_"):
            tail = tail[1:]
        rendered = ("".join(pieces) + tail).strip("_")
        if rendered:
            out_segments.append(rendered)
    return "/".join(out_segments)


TEMPLATES = [
    *DEFAULT_TEMPLATES.values(),
    "{run}/{datasetType}/{physical_filter|band:?}/{datasetType}_{exposure|detector}_{run}",
    "{run}/{band|physical_filter}",
    "{run}/{datasetType}/{exposure|day_obs:?}/{datasetType}_{exposure.obs_id|visit:?}_{run}",
    "{run}/{exposure.obs_id|exposure:?}/{detector.full_name|detector}_{day_obs:?}_{band:?}",
    "{run}/{datasetType}/{visit:?}_{exposure:?}/{physical_filter:?}_{run}",
    "{run}/{physical_filter}",
    "{run}/{exposure.missing_field|detector.full_name}_{run}",
]


def _refs() -> list[Any]:
    u = default_universe()
    refs = []
    expanded = {
        "exposure": DimensionRecord(u["exposure"], {"instrument": "cam", "id": 5, "obs_id": "CAM 0005/a",
                                                    "day_obs": 20250101}),
        "detector": DimensionRecord(u["detector"], {"instrument": "cam", "id": 2, "full_name": "S02"}),
    }
    for run, records in itertools.product(("cam/raw/all", "u/x/../y//z", "plain", "a b"), (expanded, {})):
        dt = DatasetType("raw", ["exposure", "detector"], "Exposure")
        values = {"instrument": "cam", "detector": 2, "exposure": 5, "day_obs": 20250101}
        refs.append(DatasetRef(dt, DataCoordinate(u, dt.dimensions, values, records), run))
        dt = DatasetType("flat", ["detector", "physical_filter"], "Exposure")
        values = {"instrument": "cam", "detector": 2, "physical_filter": "r/01", "band": "r"}
        refs.append(DatasetRef(dt, DataCoordinate(u, dt.dimensions, values, {}), run))
    return refs


@pytest.mark.parametrize("template", TEMPLATES)
def test_render_equals_the_plain_lookup(template: str) -> None:
    """Same path, or both refuse (a mandatory field without a value), for every ref."""
    tpl = PathTemplate(template)
    n_rendered = 0
    for ref in _refs():
        try:
            expected = plain_render(tpl, ref)
        except DatastoreError as exc:
            with pytest.raises(DatastoreError, match=re.escape(str(exc).split(" ")[1])):
                tpl.render(ref)
            continue
        assert tpl.render(ref) == expected
        n_rendered += 1
    assert n_rendered > 0 or template in ("{run}/{physical_filter}",)


def test_exists_like_pathlib(tmp_path: Any) -> None:
    """`FileDatastore.exists` by `os.stat` answers as `Path.exists` did (files, directories, symlinks)."""
    ds = FileDatastore(tmp_path, config={})
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.json").write_text("{}")
    os.symlink(tmp_path / "nowhere", tmp_path / "a" / "dangling.json")
    outside = tmp_path.parent / f"{tmp_path.name}_outside.json"
    outside.write_text("{}")
    paths = ["a/f.json", "a/missing.json", "a/f.json/below", "a/dangling.json", "a", "b/c.json", str(outside)]
    got = {p: ds.exists(StoredFileInfo(p, "f", "sc", None, -1)) for p in paths}
    assert got == {p: ds.abspath(p).exists() for p in paths}
    assert got == {"a/f.json": True, "a/missing.json": False, "a/f.json/below": False,
                   "a/dangling.json": False, "a": True, "b/c.json": False, str(outside): True}
