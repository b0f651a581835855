"""The inter-process run lock of a repository on one host, without SQLAlchemy.

`flock_lock` is the default `butler.registry.database.Database.exclusive_lock` (SQLite): an
``flock`` on ``REPO/.ccdflow/locks/run-<key>.lock``, released by the kernel when the process
dies. It lives here, apart from `butler.registry.database`, so that the SQLAlchemy-free run
writer of ``pipetask run`` (`butler.registry._sqlite_run_writer`) takes the same lock through
the same code.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._errors import LockHeldError

__all__ = ["flock_lock", "lock_holder_info", "lock_key"]


def lock_key(namespace: str, name: str) -> int:
    """Return the signed 64-bit key of a named lock (`Database.exclusive_lock`).

    Parameters
    ----------
    namespace : `str`
        Database schema (or repository root) the lock belongs to.
    name : `str`
        Lock name (an output RUN collection).

    Returns
    -------
    key : `int`
        In ``[-2**63, 2**63)``; stable across processes and hosts (blake2b).
    """
    digest = hashlib.blake2b(f"ccdflow-run-lock\0{namespace}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_holder_info(name: str) -> dict[str, Any]:
    """Return what a lock holder records about itself: host, pid, lock name and start time (UTC)."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "run": name,
        "since": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@contextlib.contextmanager
def flock_lock(name: str, *, root: Path) -> Iterator[None]:
    """Hold the one-host lock named ``name`` of the repository at ``root`` for the block.

    ``flock`` on ``root/.ccdflow/locks/run-<key>.lock`` (`lock_key` of the resolved root and
    ``name``); the file holds the holder's host, pid and start time for the message of the
    next process that asks.

    Parameters
    ----------
    name : `str`
        The lock's name (an output RUN collection).
    root : `pathlib.Path`
        The repository root.

    Raises
    ------
    LockHeldError
        If another process holds it (``holder`` says who).
    """
    key = lock_key(str(root.resolve()), name)
    lock_dir = root / ".ccdflow" / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"run-{key & 0xFFFFFFFFFFFFFFFF:016x}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            except (ValueError, OSError):
                holder = {}
            who = (
                f"the driver {holder.get('host', '?')}:{holder.get('pid', '?')} "
                f"(started {holder.get('since', '?')})"
                if holder
                else "another driver"
            )
            raise LockHeldError(who) from None
        payload = json.dumps(lock_holder_info(name)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload, 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
