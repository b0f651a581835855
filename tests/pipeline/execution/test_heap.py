"""`keep_freed_memory`: freed array buffers stay in the process instead of being faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CODE = """
import json, resource, sys
import numpy as np
applied = None
if sys.argv[1] == "keep":
    from pipeline.execution.heap import keep_freed_memory
    applied = keep_freed_memory()
    assert keep_freed_memory() is applied  # the second call only reports
def quantum():
    # What a quantum of the toy workload does: MB-sized buffers allocated, written, freed.
    a = np.ones((1024, 1024), np.float32)
    b = a * 2
    c = np.ones(3 << 20, np.uint8)
    total = float(b.sum()) + float(c.sum())
    del a, b, c
    return total
first = quantum()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
totals = [quantum() for _ in range(10)]
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 10
print(json.dumps({"applied": applied, "faults": faults, "totals": sorted({first, *totals})}))
"""

_MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def _run(mode: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _MALLOC_VARS}
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", CODE, mode], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="mallopt thresholds are glibc's")
def test_freed_buffers_are_reused_without_page_faults() -> None:
    """~1,800 page faults per 'quantum' (7 MB of buffers) by default, almost none once kept."""
    plain = _run("plain")
    kept = _run("keep")
    assert kept["applied"] is True
    assert plain["faults"] > 1000  # the default: the heap top is returned and faulted in again
    assert kept["faults"] < 50
    assert kept["totals"] == plain["totals"] == [1024 * 1024 * 2.0 + (3 << 20)]  # same values


@pytest.mark.skipif(not _glibc(), reason="mallopt thresholds are glibc's")
def test_a_users_malloc_setting_stands() -> None:
    """A ``MALLOC_*_`` variable in the environment: nothing is set, glibc follows the user."""
    got = _run("keep", MALLOC_TRIM_THRESHOLD_="1048576")
    assert got["applied"] is False
    assert got["faults"] > 1000  # the user's small trim threshold, not ours
