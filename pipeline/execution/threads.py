"""One BLAS / OpenMP thread per process while quanta run (LSST's ``disable_implicit_threading``).

numpy's BLAS (OpenBLAS, MKL) and OpenMP runtimes start one thread per core by default. While
quanta run, the parallelism is the executor's (``-j``: pool workers, Parsl workers), so implicit
threads only oversubscribe the cores: a ``-j 2`` pool on 2 cores ran 4 BLAS threads, and a matrix
product of the PTC covariance fit took 24 ms per amplifier instead of 1.9 ms on a loaded machine.
The environment variables alone do not help once numpy is imported (the libraries read them when
they load, and pool workers are forked from a process that has numpy), so the limit is also set
at run time with `threadpoolctl` (the library LSST's ``lsst.utils.threads`` uses). Tasks that
want threads have their own option (``numThreads`` of the PTC extraction).
"""

from __future__ import annotations

import os

__all__ = ["THREAD_ENV_VARS", "disable_implicit_threading"]

#: The variables the BLAS and OpenMP runtimes read for their thread count.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_done = False


def disable_implicit_threading() -> None:
    """Limit the BLAS and OpenMP thread pools of this process (and its children) to one thread.

    The environment variables `THREAD_ENV_VARS` are set to ``1`` where unset (for processes
    started later), and the pools of the libraries already loaded are limited at run time with
    `threadpoolctl.threadpool_limits` (a process forked after numpy was imported keeps the pool
    size numpy started with, whatever the environment says now). A value the user gave one of
    the variables stands: the pools are limited to it instead. The second and later calls in a
    process do nothing. Numbers do not change: the thread count splits BLAS's work, not its sums.
    """
    global _done
    if _done:
        return
    _done = True
    given = [os.environ[var] for var in THREAD_ENV_VARS if os.environ.get(var, "").isdigit()]
    limit = max(1, min(int(v) for v in given)) if given else 1
    for var in THREAD_ENV_VARS:
        os.environ.setdefault(var, str(limit))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=limit)
