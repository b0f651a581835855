"""``butler register-instrument --update``: allowed changes are applied and listed, changes to
the geometry of detectors with data (or to filters exposures use) are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from butler import Butler, DatasetType
from butler.cli import cli
from pipeline.instruments import register_instrument
from pipeline.instruments.update import InstrumentUpdateRefusedError, camera_changes, update_instrument

TESTCAM = Path(__file__).resolve().parents[2] / "pipeline" / "instruments" / "testcam.yaml"


def _edit(tmp_path: Path, *replacements: tuple[str, str, int]) -> Path:
    """Copy testcam.yaml with the n-th occurrence (1-based) of each ``old`` replaced by ``new``."""
    text = TESTCAM.read_text()
    for old, new, nth in replacements:
        pos = -1
        for _ in range(nth):
            pos = text.index(old, pos + 1)
        text = text[:pos] + new + text[pos + len(old):]
    out = tmp_path / f"testcam_{len(list(tmp_path.glob('testcam_*')))}.yaml"
    out.write_text(text)
    return out


@pytest.fixture
def repo(tmp_path):
    """testcam registered; detector 0 has a dataset; one exposure in g_test."""
    b = Butler.create(tmp_path / "repo")
    register_instrument(b, "testcam")
    b.registry.insert_dimension_data("day_obs", {"instrument": "testcam", "id": 20250101})
    b.registry.insert_dimension_data(
        "exposure",
        {"instrument": "testcam", "id": 1, "obs_id": "T1", "physical_filter": "g_test", "day_obs": 20250101},
    )
    b.registry.register_dataset_type(DatasetType("thing", ["detector"], "NumpyArray"))
    b.put(np.zeros(2), "thing", instrument="testcam", detector=0, run="r")
    return b


def test_diff_lists_every_change(tmp_path):
    from pipeline.instruments import load_camera_description

    new = _edit(
        tmp_path,
        ("gain: 1.884", "gain: 1.9", 1),
        ("raw_data_bbox: [3, 0, 64, 48]", "raw_data_bbox: [4, 0, 64, 48]", 3),
    )
    changes = camera_changes(load_camera_description(TESTCAM), load_camera_description(new))
    assert [str(c) for c in changes] == [
        "detector 0 (S00) amplifier C00: gain 1.884 -> 1.9",
        "detector 2 (S02) amplifier C00: raw_data_bbox [3, 0, 64, 48] -> [4, 0, 64, 48]",
    ]
    assert [c.geometry for c in changes] == [False, True]


def test_allowed_update_is_applied(repo, tmp_path):
    new = _edit(
        tmp_path,
        ("gain: 1.884", "gain: 1.9", 1),  # detector 0 (has data): nominal gain only
        ("raw_data_bbox: [3, 0, 64, 48]", "raw_data_bbox: [4, 0, 64, 48]", 3),  # detector 2: no data
        ("  - {physical_filter: empty, band: white}", "  - {physical_filter: empty, band: white}\n"
         "  - {physical_filter: i_test, band: i}", 1),
    )
    result = update_instrument(repo, new)
    assert result.applied and result.filters_added == ["i_test"]
    assert len(result.changes) == 3
    rec = repo.registry.get_dimension_record("instrument", {"instrument": "testcam"})
    assert "gain: 1.9" in rec.camera_yaml
    assert (repo.root / "instruments" / "testcam.yaml").read_text() == rec.camera_yaml
    assert {r.name for r in repo.registry.query_dimension_records("physical_filter")} >= {"i_test"}
    again = update_instrument(repo, new)
    assert not again.changes and not again.applied


def test_geometry_change_of_detector_with_data_is_refused(repo, tmp_path):
    before = repo.registry.get_dimension_record("instrument", {"instrument": "testcam"}).camera_yaml
    new = _edit(tmp_path, ("raw_data_bbox: [3, 0, 64, 48]", "raw_data_bbox: [4, 0, 64, 48]", 1),
                ("gain: 1.884", "gain: 1.9", 1))
    with pytest.raises(InstrumentUpdateRefusedError) as err:
        update_instrument(repo, new)
    msg = str(err.value)
    assert "detector 0 (S00) amplifier C00: raw_data_bbox [3, 0, 64, 48] -> [4, 0, 64, 48]" in msg
    assert "1 dataset(s) use detector 0" in msg and "gain" not in msg
    assert repo.registry.get_dimension_record("instrument", {"instrument": "testcam"}).camera_yaml == before
    removed = _edit(tmp_path, ("  - {physical_filter: g_test, band: g}\n", "", 1))
    with pytest.raises(InstrumentUpdateRefusedError, match="exposures use filter g_test"):
        update_instrument(repo, removed)


def test_cli_update(repo, tmp_path):
    root = repo.root
    repo.close()
    ok = _edit(tmp_path, ("read_noise: 5.63", "read_noise: 6.0", 1))
    r = CliRunner().invoke(cli, ["register-instrument", str(root), str(ok), "--update"])
    assert r.exit_code == 0, r.output
    assert "detector 0 (S00) amplifier C00: read_noise 5.63 -> 6.0" in r.output
    assert "Updated instrument testcam" in r.output
    bad = _edit(tmp_path, ("raw_shape: [106, 150]", "raw_shape: [106, 151]", 1))
    r = CliRunner().invoke(cli, ["register-instrument", str(root), str(bad), "--update"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "raw_shape (106, 150) -> (106, 151)" in r.output and "(run with" not in r.output
    r = CliRunner().invoke(cli, ["register-instrument", str(root), str(bad)])
    assert r.exit_code == 1 and "different camera" in r.output
