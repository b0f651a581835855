"""`butler.cli_startup`: the garbage collector paused for a command's start-up, and resumed once."""

from __future__ import annotations

import gc

from butler.cli_startup import pause_gc, resume_gc
from tests.gc_probe import first_gc_resume


def test_pause_then_resume_restores_the_collector():
    """A pause disables the collector; resuming re-enables it (once) and freezes what exists."""
    assert gc.isenabled()
    try:
        pause_gc()
        assert not gc.isenabled()
        resume_gc()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        gc.disable()
        resume_gc()  # a second resume does nothing
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_collector_turned_off_by_the_caller_stays_off():
    """Only a pause that disabled the collector is undone."""
    gc.disable()
    try:
        pause_gc()
        resume_gc()
        assert not gc.isenabled()
    finally:
        gc.enable()



def test_butler_commands_resume_the_collector_before_work_query_commands_at_the_end(tmp_path):
    """``butler create`` resumes the collector before it runs; ``query-collections`` runs in the pause."""
    repo = str(tmp_path / "repo")
    assert first_gc_resume("butler", "create", repo) == "first-resume-from resolve_command False enabled-now True"
    assert first_gc_resume("butler", "query-collections", repo) == "first-resume-from main False enabled-now True"
