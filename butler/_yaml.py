"""YAML reading: libyaml when available, and a JSON copy of unchanged files so short commands skip PyYAML.

``import yaml`` costs ~20 ms, a tenth of a ``butler query-*`` command, which reads only
``butler.yaml`` and the schema files (``registry_schema/*.yaml``). `load_yaml_file` keeps the
parsed content of a file as JSON in the per-user cache directory (`butler._user_cache`), under a
name made of the file's absolute path, size, inode and modification and change times (ns); while
those are unchanged the JSON is read (the ``json`` module is imported anyway) and PyYAML is not
imported. A file whose content JSON does not carry exactly (dates, binary, non-string keys ...)
is parsed with PyYAML every time, and so is a file changed in the last 2 s (`SETTLED_NS`). The
directory keeps at most `MAX_CACHED_FILES` such copies.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from typing import IO, Any

from ._user_cache import user_cache_dir

__all__ = ["load_yaml", "load_yaml_file"]


def load_yaml(stream: IO[str] | str) -> Any:
    """Parse YAML safely (``yaml.CSafeLoader`` if PyYAML was built with libyaml)."""
    import yaml

    return yaml.load(stream, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


#: A file is copied to the cache only once its last change is this old (ns): file times advance
#: in clock ticks of a few ms, so a file rewritten at the same size within one tick would keep its
#: key; a change after the copy was made gives it a newer time, hence a new key ("racy git").
SETTLED_NS = 2_000_000_000


def _file_key(path: str) -> tuple[str, int]:
    """Return the key of a file's current version and the time of its last change (ns)."""
    st = os.stat(path)
    key = f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
    return key, max(st.st_mtime_ns, st.st_ctime_ns)


def _cache_entry(path: str) -> tuple[str, str, int] | None:
    """Return ``(cache file, key, last change)`` of a file's current version (`None`: no cache directory).

    The key (path, size, inode, modification and change times) is also stored in the cache
    file and compared on reading, so the short checksum in the name needs no hashlib (whose
    import costs ~5 ms): two keys with the same name only replace each other's copy.
    """
    directory = user_cache_dir()
    if directory is None:
        return None
    key, changed = _file_key(path)
    raw = key.encode("utf-8", "surrogateescape")
    name = f"yaml-{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}.json"
    return os.path.join(directory, name), key, changed


def load_yaml_file(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML file safely, through a JSON copy in the per-user cache while the file is unchanged.

    Parameters
    ----------
    path : `str` or `os.PathLike`
        The file.

    Returns
    -------
    content : `typing.Any`
        What `load_yaml` returns for the file's text.

    Raises
    ------
    OSError
        If the file cannot be read.
    yaml.YAMLError
        If it is not valid YAML.
    """
    path = os.fspath(path)
    entry = _cache_entry(path)
    if entry is not None:
        cache, key, changed = entry
        try:
            with open(cache, encoding="utf-8") as f:
                stored_key, stored = json.load(f)
            if stored_key == key:
                os.utime(cache)  # recently used: pruned last (`_prune` removes the oldest)
                return stored
        except (OSError, ValueError, TypeError):
            pass
    with open(path) as f:
        content = load_yaml(f)
    if entry is not None and time.time_ns() - changed > SETTLED_NS and _file_key(path)[0] == key:
        try:
            text = json.dumps([key, content])
            exact = json.loads(text)[1] == content
        except (TypeError, ValueError):  # dates, binary, sets ...: parsed with PyYAML each time
            exact = False
        if exact:  # also false for non-string keys (JSON makes them strings) and NaN
            tmp = f"{cache}.{os.getpid()}.tmp"
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)
                os.replace(tmp, cache)  # atomic: a concurrent reader sees no file or the whole file
            except OSError:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            else:
                _prune(os.path.dirname(cache))
    return content


#: At most this many cached files (every new repository's ``butler.yaml`` adds one); the least
#: recently used are removed when a new one is written.
MAX_CACHED_FILES = 256


def _prune(directory: str) -> None:
    try:
        entries = [e for e in os.scandir(directory) if e.name.startswith("yaml-") and e.name.endswith("json")]
        if len(entries) <= MAX_CACHED_FILES:
            return
        entries.sort(key=lambda e: e.stat().st_mtime_ns)
        for e in entries[: len(entries) - MAX_CACHED_FILES * 3 // 4]:
            os.unlink(e.path)
    except OSError:  # another process pruned first
        pass
