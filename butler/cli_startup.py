"""Start-up of the command-line processes: no cyclic garbage collection while they import and set up.

A ``pipetask`` or ``butler`` command first imports its libraries (SQLAlchemy, pydantic, numpy:
several hundred thousand objects, none of them garbage) and reads its configuration. The cyclic
garbage collector runs again and again meanwhile, each full collection traversing every object
made so far: about a tenth of the CPU time of ``pipetask qgraph`` or ``butler query-data-ids``.
`pause_gc` stops it for the start-up; `resume_gc` ends the pause when the command's own work
begins (``pipetask run`` before it executes quanta) or when the command ends: it first moves
everything made so far out of the collector's reach (`gc.freeze`, as
`butler.utils.bulk_objects` does after a query result or a graph is built), so re-enabling the collector
does not start with a traversal of all of it. Reference counting frees objects as usual during
the pause; only reference cycles wait.
"""

from __future__ import annotations

import gc

__all__ = ["pause_gc", "resume_gc"]

_paused = False


def pause_gc() -> None:
    """Pause the cyclic garbage collector for the start-up of a command (no-op if it is off)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_gc() -> None:
    """End the start-up pause: freeze the objects made so far, then re-enable the collector.

    Does nothing unless `pause_gc` paused it (and it is still paused), so a command may call it
    at the start of its work and again at its end.
    """
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
