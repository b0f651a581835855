"""One writer per output RUN: a lock held for the whole of ``pipetask run`` / ``pipetask submit``.

Several drivers may share one repository (a PostgreSQL registry and a shared datastore): runs
into *different* RUN collections proceed concurrently (their registrations are independent
transactions), while a second driver writing into the *same* RUN is refused at once with
`RunLockedError` naming the holder -- two drivers registering the same predicted outputs would
otherwise race on the same files and dataset ids.

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a dedicated connection,
  keyed by a 64-bit hash of (schema, run). The server releases it when the connection ends, so a
  driver killed with ``kill -9`` or a lost node never leaves a stale lock.
- SQLite (one host): ``flock`` on ``REPO/.ccdflow/locks/<hash>.lock``; the kernel releases it
  when the process dies. The file holds the holder's host, pid and start time for the message.
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

from .runner import ExecutionError

__all__ = ["RunLockedError", "run_lock", "run_lock_key"]


class RunLockedError(ExecutionError):
    """Another driver is writing into the same output RUN collection."""


def run_lock_key(namespace: str, run: str) -> int:
    """Return the signed 64-bit advisory-lock key of a RUN.

    Parameters
    ----------
    namespace : `str`
        Database schema (or repository root) holding the registry.
    run : `str`
        RUN collection name.

    Returns
    -------
    key : `int`
        In ``[-2**63, 2**63)``; stable across processes and hosts (blake2b).
    """
    digest = hashlib.blake2b(f"ccdflow-run-lock\0{namespace}\0{run}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _holder_info(run: str) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "run": run,
            "since": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


@contextlib.contextmanager
def run_lock(butler: Any, run: str) -> Iterator[None]:
    """Hold the writer lock of an output RUN for the duration of the block.

    Parameters
    ----------
    butler : `butler.Butler`
        Butler on the repository (its registry database decides the mechanism).
    run : `str` or `None`
        The output RUN collection (`None`: no lock, nothing to protect).

    Yields
    ------
    None

    Raises
    ------
    RunLockedError
        If another driver (on any host, for PostgreSQL) holds the lock of this RUN; the message
        names the holder and the fix (wait, or write into another RUN).
    """
    if not run:
        yield
        return
    db = butler.registry.db
    if getattr(db, "dialect_name", "") == "postgresql":
        with _pg_lock(db, run):
            yield
    else:
        with _file_lock(Path(butler.root), run):
            yield


@contextlib.contextmanager
def _pg_lock(db: Any, run: str) -> Iterator[None]:
    import sqlalchemy as sa

    namespace = f"{db.engine.url.database}/{db.schema or 'public'}"
    key = run_lock_key(namespace, run)
    info = _holder_info(run)
    # application_name lets the refused driver say who holds the lock (pg_stat_activity).
    app_name = f"ccdflow-run-lock {key} {info['host']}:{info['pid']} {info['since']}"[:63]
    conn = db.engine.connect()
    try:
        conn.execute(sa.text("SELECT set_config('application_name', :n, false)"), {"n": app_name})
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        conn.commit()
        if not got:
            holder = conn.execute(sa.text(
                "SELECT a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND a.application_name LIKE :pat LIMIT 1"), {"pat": f"ccdflow-run-lock {key} %"}).first()
            conn.commit()
            who = "another driver"
            if holder is not None:
                parts = holder[0].split(" ")
                who = f"the driver {parts[2]} (started {parts[3] if len(parts) > 3 else '?'})"
            raise RunLockedError(
                f"output run {run!r} is being written by {who}; wait for it to finish, or write into "
                "another run (-o NAME gives a new timestamped run, or --output-run NEW)")
        try:
            yield
        finally:
            try:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
            except Exception:  # noqa: BLE001 - closing the session releases it anyway
                pass
    finally:
        conn.close()


@contextlib.contextmanager
def _file_lock(root: Path, run: str) -> Iterator[None]:
    key = run_lock_key(str(root.resolve()), run)
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
            who = (f"the driver {holder.get('host', '?')}:{holder.get('pid', '?')} "
                   f"(started {holder.get('since', '?')})" if holder else "another driver")
            raise RunLockedError(
                f"output run {run!r} is being written by {who}; wait for it to finish, or write into "
                "another run (-o NAME gives a new timestamped run, or --output-run NEW)") from None
        payload = json.dumps(_holder_info(run)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload, 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
