"""One BLAS / OpenMP thread per process while quanta run (LSST's ``disable_implicit_threading``).

numpy's BLAS (OpenBLAS, MKL) and OpenMP runtimes start one thread per core by default. While
quanta run, the parallelism is the executor's (``-j``: pool workers, Parsl workers), so implicit
threads only oversubscribe the cores: a ``-j 2`` pool on 2 cores ran 4 BLAS threads, and a matrix
product of the PTC covariance fit took 24 ms per amplifier instead of 1.9 ms on a loaded machine.
The environment variables alone do not help once numpy is imported (the libraries read them when
they load, and pool workers are forked from a process that has numpy), so the limit is also set
at run time with `threadpoolctl` (the library LSST's ``lsst.utils.threads`` uses). Tasks that
want threads have their own option (``numThreads`` of the PTC extraction).

A worker that owns several cores per quantum (a Parsl ``htex`` executor with
``cores_per_worker > 1``) is told so by `CORES_PER_QUANTUM_VAR`, which the Parsl ``worker_init``
exports (`pipeline.execution.parsl_executor`); the pools are then limited to that many threads.
"""

from __future__ import annotations

import os
import sys

__all__ = ["CORES_PER_QUANTUM_VAR", "THREAD_ENV_VARS", "disable_implicit_threading",
           "import_numpy_with_thread_limit", "thread_limit"]

#: The variables the BLAS and OpenMP runtimes read for their thread count.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

#: Whole cores one quantum may use (exported by the Parsl ``worker_init`` when
#: ``cores_per_worker > 1``); the thread limit when none of `THREAD_ENV_VARS` is given.
CORES_PER_QUANTUM_VAR = "CCDFLOW_CORES_PER_QUANTUM"

_done = False


def thread_limit(environ: dict[str, str] | os._Environ[str] | None = None) -> int:
    """Return the BLAS / OpenMP thread count quanta run with.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default `os.environ`).

    Returns
    -------
    limit : `int`
        The smallest positive integer value among `THREAD_ENV_VARS` when the user gave one;
        else the whole number of cores in `CORES_PER_QUANTUM_VAR` (a number such as ``2`` or
        ``2.5``, rounded down, at least 1); else 1. Values that are not numbers are ignored.
    """
    env = os.environ if environ is None else environ
    given = [int(env[var]) for var in THREAD_ENV_VARS if env.get(var, "").isdigit()]
    if given:
        return max(1, min(given))
    try:
        cores = float(env.get(CORES_PER_QUANTUM_VAR, ""))
    except ValueError:
        return 1
    return max(1, int(cores)) if cores == cores and cores != float("inf") else 1


def disable_implicit_threading() -> None:
    """Limit the BLAS and OpenMP thread pools of this process (and its children) to `thread_limit`.

    The environment variables `THREAD_ENV_VARS` are set to the limit where unset (for processes
    started later), and the pools of the libraries already loaded are limited at run time with
    `threadpoolctl.threadpool_limits` (a process forked after numpy was imported keeps the pool
    size numpy started with, whatever the environment says now). A value the user gave one of
    the variables stands; without one, a worker given several cores per quantum
    (`CORES_PER_QUANTUM_VAR`) keeps that many threads; otherwise one. The second and later calls
    in a process do nothing. Numbers do not change: the thread count splits BLAS's work, not its
    sums.
    """
    global _done
    if _done:
        return
    _done = True
    limit = thread_limit()
    for var in THREAD_ENV_VARS:
        os.environ.setdefault(var, str(limit))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=limit)


def import_numpy_with_thread_limit() -> None:
    """Import numpy with its BLAS / OpenMP thread pools started at `thread_limit` threads.

    OpenBLAS starts its pool when it is loaded (on ``import numpy``), one thread per core, and
    each new thread spins for about 0.1 s of CPU waiting for work before it sleeps: ~0.1 s of
    a second core at the start of every ``pipetask run``, though the quanta then run with
    `disable_implicit_threading`'s one thread. Imported with `THREAD_ENV_VARS` at the limit
    (where the user gave none), the pool starts at its final size and there is no thread to
    spin. The environment is restored at once, so processes started later (Parsl workers told
    their cores per quantum, `CORES_PER_QUANTUM_VAR`) see the user's environment; the limit at
    run time stays `disable_implicit_threading`'s job. Does nothing when numpy is imported already.
    """
    if "numpy" in sys.modules:
        return
    limit = str(thread_limit())
    saved = {var: os.environ.get(var) for var in THREAD_ENV_VARS}
    for var in THREAD_ENV_VARS:
        os.environ.setdefault(var, limit)
    try:
        import numpy  # noqa: F401 - loaded now, with the limit in the environment
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
