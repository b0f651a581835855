"""Child processes that exit when their driver dies (``kill -9`` included).

A worker of a process pool blocks reading its task queue; when the driver is killed with
``SIGKILL`` nothing tells it, and it would wait for ever (holding the resource tracker's pipe
open, so that stays too). `exit_with_driver`, called first thing in a worker (a pool
initializer), makes it exit within about a second of the driver's death by two means:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` when the worker's parent is an intermediate
  single-threaded process such as the multiprocessing fork server (the kernel signals the child
  when that parent exits; the fork server exits when the driver's end of its pipe closes). It is
  not used when the parent is the driver itself: the kernel sends the signal when the parent
  *thread* that forked the child exits, and a driver may start workers from a short-lived thread;
- everywhere, a daemon thread that polls once per ``interval`` whether the driver is still alive
  (not gone, not a zombie) and the worker still has its original parent; otherwise it kills the
  process's own descendants (helpers such as a multiprocessing manager or resource tracker) and
  ends the process with ``os._exit``.

A worker killed this way may leave a partial temporary file in its output run; the next run into
that RUN removes it (`butler.datastore.file_datastore.FileDatastore.remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["exit_with_driver", "process_alive"]

_PR_SET_PDEATHSIG = 1
_started: set[int] = set()


def process_alive(pid: int) -> bool:
    """Return whether process ``pid`` exists and is not a zombie.

    Parameters
    ----------
    pid : `int`
        Process id.

    Returns
    -------
    alive : `bool`
        False for a process that is gone or has exited but not been reaped (state ``Z``/``X`` in
        ``/proc/PID/stat``); `os.kill` with signal 0 alone reports a killed, unreaped driver as
        alive.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # "pid (comm) S ...": comm may contain spaces and parentheses, the state follows the last ')'.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def _descendants(pid: int) -> list[int]:
    """Process ids of the live descendants of ``pid`` (from ``/proc``; empty where unavailable)."""
    try:
        entries = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return []
    parent_of: dict[int, int] = {}
    for p in entries:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and fields[0] not in (b"Z", b"X"):
            parent_of[p] = int(fields[1])
    out: list[int] = []
    frontier = [pid]
    while frontier:
        q = frontier.pop()
        kids = [p for p, pp in parent_of.items() if pp == q]
        out += kids
        frontier += kids
    return out


def _exit_now() -> None:
    """Kill this process's descendants (helpers it started: a manager, a resource tracker), then exit."""
    for p in _descendants(os.getpid()):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    os._exit(1)


def _set_pdeathsig(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)``; False where unavailable (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def exit_with_driver(driver_pid: int, *, interval: float = 0.5, follow_parent: bool = True) -> None:
    """Make the calling process exit when the driver process ``driver_pid`` dies.

    Call it once in each worker process (a pool initializer); further calls in the same process
    do nothing. It returns at once.

    Parameters
    ----------
    driver_pid : `int`
        Process id of the driver (``os.getpid()`` in the driver, passed to the workers).
    interval : `float`
        Seconds between two liveness checks of the watchdog thread (s).
    follow_parent : `bool`
        Also exit when this process's parent changes (it was re-parented: the parent died), and
        use ``PR_SET_PDEATHSIG`` when the parent is not the driver. False for a process started
        in the background by a short-lived shell (Parsl's worker pool), whose parent exits at once.

    Notes
    -----
    If the driver is already gone when this is called, the process exits at once (status 1).
    """
    me = os.getpid()
    if me in _started or me == driver_pid:
        return
    _started.add(me)
    parent = os.getppid()
    if follow_parent and parent != driver_pid:
        # A fork server (single-threaded) forked us: the kernel kills us when it exits.
        _set_pdeathsig(signal.SIGKILL)

    def gone() -> bool:
        return (follow_parent and os.getppid() != parent) or not process_alive(driver_pid)

    if gone():
        _exit_now()

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            if gone():
                _exit_now()

    threading.Thread(target=watch, name="exit-with-driver", daemon=True).start()
