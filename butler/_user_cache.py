"""The per-user cache directory of ccdflow (``$XDG_CACHE_HOME/ccdflow`` or ``~/.cache/ccdflow``)."""

from __future__ import annotations

import os

__all__ = ["user_cache_dir"]


def user_cache_dir() -> str | None:
    """Return the per-user cache directory (created with mode 0700), or `None` if it is unusable.

    Not the world-writable /tmp: nobody else can plant a file there for us to load.

    Returns
    -------
    path : `str` or `None`
        ``$XDG_CACHE_HOME/ccdflow`` or ``~/.cache/ccdflow``; `None` when it cannot be created or
        written (the callers then work without a cache).
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(base, "ccdflow")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError:
        return None
    if not os.access(directory, os.W_OK):
        return None
    return directory
