"""The first module the process pool's fork server imports (`executors.ProcessPoolQuantumExecutor`).

It imports numpy with the BLAS / OpenMP pools at the quanta's thread limit
(`threads.import_numpy_with_thread_limit`): the fork server would otherwise start OpenBLAS with a
thread per core, which spins ~0.1 s of CPU after start-up while the workers start, only for each
worker to limit the pool to one thread (`threads.disable_implicit_threading`).
"""

from __future__ import annotations

from .threads import import_numpy_with_thread_limit

__all__: list[str] = []

import_numpy_with_thread_limit()
