"""`butler._yaml.load_yaml_file`: YAML files read through a JSON copy while unchanged, same content."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from butler._yaml import load_yaml, load_yaml_file


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """Point the per-user cache at a fresh directory; return its ``ccdflow`` subdirectory.

    Files count as settled at once (`SETTLED_NS`), so the tests need not wait 2 s.
    """
    import butler._yaml as by

    monkeypatch.setattr(by, "SETTLED_NS", -(10**15))
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "ccdflow"


def _cached(cache_home):
    return sorted(cache_home.glob("yaml-*.json")) if cache_home.exists() else []


def test_content_equals_pyyaml_and_is_cached(tmp_path, cache_home):
    """The content is what PyYAML gives, with the same types, and read back from one JSON copy."""
    path = tmp_path / "a.yaml"
    path.write_text("# comment\nx: 1\ny: [1.5, true, null, 'no']\nz: {a: b}\nn: no\n")
    first = load_yaml_file(path)
    assert first == load_yaml(path.read_text()) == {
        "x": 1, "y": [1.5, True, None, "no"], "z": {"a": "b"}, "n": False
    }
    assert len(_cached(cache_home)) == 1
    second = load_yaml_file(path)
    assert second == first
    assert type(second["x"]) is int and type(second["y"][0]) is float and second["y"][1] is True


def test_a_changed_file_is_read_again(tmp_path, cache_home):
    """A new size or modification time is a new version of the file."""
    path = tmp_path / "a.yaml"
    path.write_text("x: 1\n")
    assert load_yaml_file(path) == {"x": 1}
    path.write_text("x: 22\n")
    assert load_yaml_file(path) == {"x": 22}
    path.write_text("x: 3\n")  # same size as the first version, another modification time
    os.utime(path, ns=(1, 1))
    assert load_yaml_file(path) == {"x": 3}


@pytest.mark.parametrize(
    "text",
    ["when: 2022-01-26\n", "1: one\n2: two\n", "x: .nan\n", "s: !!set {a, b}\n", "b: !!binary aGVsbG8=\n"],
)
def test_content_json_cannot_carry_is_parsed_each_time(tmp_path, cache_home, text):
    """Dates, integer keys, NaN, sets, binary: no JSON copy, PyYAML's content."""
    path = tmp_path / "a.yaml"
    path.write_text(text)
    want = load_yaml(text)
    got = load_yaml_file(path)
    assert repr(got) == repr(want)
    assert _cached(cache_home) == []


def test_without_a_cache_directory(tmp_path, monkeypatch):
    """No usable cache directory: the file is parsed with PyYAML."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    path = tmp_path / "a.yaml"
    path.write_text("x: [1, 2]\n")
    assert load_yaml_file(path) == {"x": [1, 2]}


def test_a_repository_query_does_not_import_pyyaml_once_cached(tmp_path, cache_home):
    """The second ``butler query-dimension-records`` of a repository reads no YAML with PyYAML."""
    from butler import Butler

    Butler.create(tmp_path / "repo").close()
    code = (
        "import sys; from butler.registry import backends; "
        "r = backends.open_read_only_fast(sys.argv[1]); r.query_dimension_records('instrument'); "
        "print('yaml' in sys.modules)"
    )
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "fresh-cache"))
    time.sleep(2.1)  # files changed in the last 2 s are not copied (SETTLED_NS)
    runs = [
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "repo")], env=env, capture_output=True,
                       text=True, check=True).stdout.strip()
        for _ in range(2)
    ]
    assert runs == ["True", "False"]


def test_invalid_butler_yaml_is_still_reported(tmp_path, cache_home):
    """Invalid YAML in ``butler.yaml`` is still a `RepositoryError` naming the file."""
    from butler._config import load_config
    from butler._errors import RepositoryError

    (tmp_path / "butler.yaml").write_text("registry: [unclosed\n")
    with pytest.raises(RepositoryError, match="not valid YAML"):
        load_config(tmp_path)


def test_the_cache_is_pruned(tmp_path, cache_home, monkeypatch):
    """The directory keeps at most ``MAX_CACHED_FILES`` copies."""
    import butler._yaml as by

    monkeypatch.setattr(by, "MAX_CACHED_FILES", 8)
    for i in range(20):
        path = tmp_path / f"f{i}.yaml"
        path.write_text(f"i: {i}\n")
        assert load_yaml_file(path) == {"i": i}
        assert len(_cached(cache_home)) <= 8
    assert load_yaml_file(tmp_path / "f19.yaml") == {"i": 19}


def test_a_copy_of_another_file_version_is_not_used(tmp_path, cache_home):
    """The cache file's stored key must match the file's current version (names may collide)."""
    import json

    path = tmp_path / "a.yaml"
    path.write_text("x: 1\n")
    assert load_yaml_file(path) == {"x": 1}
    (cache,) = _cached(cache_home)
    key, content = json.loads(cache.read_text())
    cache.write_text(json.dumps([key + "-other", {"x": "wrong"}]))
    assert load_yaml_file(path) == {"x": 1}


def test_pruning_keeps_the_files_in_use(tmp_path, cache_home, monkeypatch):
    """A copy that is read often survives many new files (least recently used go first)."""
    import butler._yaml as by

    monkeypatch.setattr(by, "MAX_CACHED_FILES", 8)
    keep = tmp_path / "keep.yaml"
    keep.write_text("k: 1\n")
    load_yaml_file(keep)
    (copy,) = _cached(cache_home)
    for i in range(30):
        path = tmp_path / f"f{i}.yaml"
        path.write_text(f"i: {i}\n")
        load_yaml_file(path)
        load_yaml_file(keep)
    assert copy.exists()


def test_a_file_just_written_is_not_copied(tmp_path, monkeypatch):
    """A file changed in the last 2 s is parsed, not copied.

    A same-size rewrite within one tick of the file clock would keep its key.
    """
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    path = tmp_path / "a.yaml"
    path.write_text("x: 1\n")
    assert load_yaml_file(path) == {"x": 1}
    assert _cached(home / "ccdflow") == []
    path.write_text("x: 2\n")  # same size, most likely the same modification time
    assert load_yaml_file(path) == {"x": 2}
