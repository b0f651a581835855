"""Which function first resumes the garbage collector in a command-line process (start-up pause)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, sys
import butler.cli_startup as s
seen = []
real = s.resume_gc
def spy():
    seen.append((sys._getframe(1).f_code.co_name, gc.isenabled()))
    real()
s.resume_gc = spy
from {module} import main
sys.argv = [{prog!r}, *sys.argv[1:]]
try:
    main({args})
except SystemExit:
    pass
print("first-resume-from", *seen[0], "enabled-now", gc.isenabled(), file=sys.stderr)
"""


def first_gc_resume(command: str, *args: str) -> str:
    """Run ``butler`` or ``pipetask`` with ``args`` in a fresh process; say who resumed the collector.

    Returns
    -------
    line : `str`
        ``first-resume-from FUNCTION ENABLED_BEFORE enabled-now ENABLED_AT_EXIT``.
    """
    module, call_args = {
        "butler": ("butler.cli.commands", ""),
        "pipetask": ("pipeline.cli.pipetask", "sys.argv[1:]"),
    }[command]
    code = PROBE.format(module=module, prog=command, args=call_args)
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return proc.stderr.strip().splitlines()[-1]
