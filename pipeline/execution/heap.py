"""Keep freed array memory in the process while quanta run (glibc ``mallopt``).

glibc's ``malloc`` gives an allocation of 128 KB or more its own ``mmap`` and, once the first
such block is freed, raises that threshold to the block's size and the heap's trim threshold to
twice it ("dynamic mmap threshold", ``mallopt(3)``). A quantum allocates and frees several
array buffers of 0.5-2 MB (the inputs read, the task's temporaries, the outputs), more than the
trim threshold, so the top of the heap is handed back to the kernel after most quanta and the
next quantum's buffers fault it in again: about 200 page faults per quantum of the toy workload
(512x512 uint16 in, float32 out), each zeroing a fresh 4 KB page -- and on a VM whose memory the
host backs lazily, a page the guest returned can cost ~2 ms per MB to get back.

`keep_freed_memory` sets both thresholds once per process (`mallopt` ``M_MMAP_THRESHOLD`` =
32 MB, glibc's largest, and ``M_TRIM_THRESHOLD`` = 128 MB), so buffers up to 32 MB come from
the heap and up to 128 MB of freed heap stays with the process for the next quantum: an
in-process serial run of the toy graph makes 0-5 page faults per quantum instead of ~200, with
the same peak resident size. Larger buffers are still mapped and unmapped on their own. Values
do not change; only where freed memory goes.

Nothing is done off glibc, or when the user tunes ``malloc`` through the environment
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or a ``glibc.malloc``
tunable in ``GLIBC_TUNABLES``): their choice stands.
"""

from __future__ import annotations

import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

#: Allocations of at least this many bytes get their own mapping (glibc's maximum on 64-bit).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Freed memory at the top of the heap is returned to the kernel only beyond this many bytes.
TRIM_THRESHOLD = 128 * 1024 * 1024

#: ``mallopt`` parameter numbers (glibc ``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_USER_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_state: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed heap memory for reuse (`MMAP_THRESHOLD`, `TRIM_THRESHOLD`); once per process.

    Returns
    -------
    applied : `bool`
        Whether the thresholds are set (by this call or an earlier one): `False` off glibc, when
        the user tunes ``malloc`` through the environment, or when ``mallopt`` refuses a value.
    """
    global _state
    if _state is not None:
        return _state
    _state = False
    try:
        libc_version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    if not libc_version or not libc_version.startswith("glibc"):
        return False
    if any(os.environ.get(v) for v in _USER_VARS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error.
    _state = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _state
