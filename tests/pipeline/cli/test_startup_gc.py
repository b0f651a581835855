"""pipetask pauses the garbage collector for start-up: qgraph whole, other commands until they start."""

from __future__ import annotations

from tests.gc_probe import first_gc_resume


def _first_resume(*args: str) -> str:
    return first_gc_resume("pipetask", *args)


def test_qgraph_keeps_the_pause_to_the_end(tmp_path):
    """``qgraph`` (here failing on a missing repository) resumes the collector only when it ends."""
    got = _first_resume("qgraph", "-b", str(tmp_path / "missing"), "-t", "x.Y:y", "-i", "in",
                        "--output-run", "out")
    assert got == "first-resume-from main False enabled-now True"


def test_other_commands_start_with_the_collector_on():
    """``build`` (and ``report``, ``submit`` ...) resume the collector before they start."""
    assert _first_resume("build", "--help") == "first-resume-from resolve_command False enabled-now True"
