"""One writer per output RUN: a lock held for the whole of ``pipetask run`` / ``pipetask submit``.

Several drivers may share one repository (a PostgreSQL registry and a shared datastore): runs
into *different* RUN collections proceed concurrently (their registrations are independent
transactions), while a second driver writing into the *same* RUN is refused at once with
`RunLockedError` naming the holder -- two drivers registering the same predicted outputs would
otherwise race on the same files and dataset ids.

The lock itself is the registry database's `butler.registry.database.Database.exclusive_lock`:
a session-level advisory lock on PostgreSQL (released by the server when the connection ends,
so a killed driver never leaves a stale lock), ``flock`` on a file under ``REPO/.ccdflow/locks``
on SQLite (released by the kernel when the process dies).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from butler import LockHeldError
from butler.registry._locks import lock_key

from .runner import ExecutionError

if TYPE_CHECKING:
    from butler import Butler

__all__ = ["RunLockedError", "run_lock", "run_lock_key"]


class RunLockedError(ExecutionError):
    """Another driver is writing into the same output RUN collection."""


def run_lock_key(namespace: str, run: str) -> int:
    """Return the signed 64-bit lock key of a RUN (`butler.registry._locks.lock_key`).

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
    return lock_key(namespace, run)


@contextlib.contextmanager
def run_lock(butler: Butler, run: str | None) -> Iterator[None]:
    """Hold the writer lock of an output RUN for the duration of the block.

    Parameters
    ----------
    butler : `butler.Butler` or `butler.registry._sqlite_run_writer.SqliteRunWriter`
        Butler on the repository (its registry database provides the lock; the SQLite run
        writer takes the same ``flock``, `butler.registry._locks.flock_lock`).
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
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(butler.registry.db.exclusive_lock(run, root=Path(butler.root)))
        except LockHeldError as exc:
            raise RunLockedError(
                f"output run {run!r} is being written by {exc.holder}; wait for it to finish, or write "
                "into another run (-o NAME gives a new timestamped run, or --output-run NEW)"
            ) from None
        yield
