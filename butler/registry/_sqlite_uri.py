"""How to open an SQLite registry file read-only with ``sqlite3`` (no SQLAlchemy imported)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["sqlite_read_only_uri"]


def sqlite_read_only_uri(path: str | Path) -> str:
    """Return the ``sqlite3`` URI that opens the registry file ``path`` read-only.

    A registry in WAL mode needs its ``-wal`` and ``-shm`` files even to be read; in a directory
    this process cannot write (a read-only mount, a repository of another user, an archived
    copy) with no ``-wal`` file present (the last writer closed cleanly, so every transaction is
    in the main file) SQLite cannot create them and refuses to open the file. The URI then adds
    ``immutable=1`` (`SQLite URI parameters <https://www.sqlite.org/uri.html>`_): the file is read
    without locks or journal. Nobody can be writing it, since a writer would need to create the
    ``-wal`` file in that same directory. Otherwise it is plain ``mode=ro``.

    Parameters
    ----------
    path : `str` or `pathlib.Path`
        The SQLite database file.

    Returns
    -------
    uri : `str`
        ``file:...?mode=ro`` or ``file:...?mode=ro&immutable=1``; open it with ``uri=True``.
    """
    path = Path(path).absolute()
    uri = f"{path.as_uri()}?mode=ro"
    directory = path.parent
    if not os.access(directory, os.W_OK) and not os.path.exists(f"{path}-wal"):
        uri += "&immutable=1"
    return uri
