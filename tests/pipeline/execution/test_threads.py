"""`disable_implicit_threading`: one BLAS thread per process while quanta run, unless the user chose."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.execution.threads import CORES_PER_QUANTUM_VAR, THREAD_ENV_VARS, thread_limit

CODE = """
import json, os, numpy
from threadpoolctl import threadpool_info
from pipeline.execution.threads import disable_implicit_threading
def blas():
    return sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
before = blas()
disable_implicit_threading()
print(json.dumps({"before": before, "after": blas(),
                  "env": [os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")]}))
"""


def _run(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (*THREAD_ENV_VARS, CORES_PER_QUANTUM_VAR)}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS starts one thread anyway")
def test_blas_limited_to_one_thread_after_numpy_was_loaded() -> None:
    got = _run({})
    assert got["before"] and max(got["before"]) > 1  # numpy's BLAS started with one thread per core
    assert got["after"] == [1]
    assert got["env"] == ["1", "1", "1"]  # for processes started later


def test_a_thread_count_the_user_gave_stands() -> None:
    got = _run({"OPENBLAS_NUM_THREADS": "2"})
    assert got["after"] == [min(2, max(got["before"]))] and got["env"] == ["2", "2", "2"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS starts one thread anyway")
def test_cores_per_quantum_of_a_parsl_worker_sets_the_limit() -> None:
    """A worker exporting 2 cores per quantum keeps 2 BLAS threads (it was limited to 1)."""
    # What a Parsl worker with cores_per_worker: 2 gets from its worker_init.
    got = _run({CORES_PER_QUANTUM_VAR: "2"})
    assert max(got["before"]) >= 2
    assert got["after"] == [2] and got["env"] == ["2", "2", "2"]


def test_a_user_thread_count_wins_over_cores_per_quantum() -> None:
    """An explicit OMP/OPENBLAS/MKL value stands over the worker's core count."""
    got = _run({CORES_PER_QUANTUM_VAR: "2", "OMP_NUM_THREADS": "1"})
    assert got["after"] == [1] and got["env"] == ["1", "1", "1"]


@pytest.mark.parametrize(
    "env, limit",
    [
        ({}, 1),
        ({CORES_PER_QUANTUM_VAR: "4"}, 4),
        ({CORES_PER_QUANTUM_VAR: "2.5"}, 2),
        ({CORES_PER_QUANTUM_VAR: "0.5"}, 1),
        ({CORES_PER_QUANTUM_VAR: "many"}, 1),
        ({CORES_PER_QUANTUM_VAR: "nan"}, 1),
        ({CORES_PER_QUANTUM_VAR: "4", "MKL_NUM_THREADS": "3"}, 3),
        ({"OMP_NUM_THREADS": "6", "OPENBLAS_NUM_THREADS": "2"}, 2),
        ({"OMP_NUM_THREADS": "0"}, 1),
        ({"OMP_NUM_THREADS": "x", CORES_PER_QUANTUM_VAR: "3"}, 3),
    ],
)
def test_thread_limit(env: dict[str, str], limit: int) -> None:
    """The limit read from an environment: user variables, then cores per quantum, then 1."""
    assert thread_limit(env) == limit


IMPORT_CODE = """
import json, os, sys
from pipeline.execution.threads import import_numpy_with_thread_limit
if sys.argv[1] == "pipetask":
    from pipeline.cli import main
    try:
        main(["run", "--help"])
    except SystemExit:
        pass
    assert "numpy" not in sys.modules, "pipetask run --help imported numpy"
    try:
        main(["run"])  # resolves the command (numpy imported), then fails: no repository
    except SystemExit:
        pass
elif sys.argv[1] == "forkserver":  # what the process pool's fork server imports first
    import importlib
    from pipeline.execution.executors import _PRELOAD
    importlib.import_module(_PRELOAD[0])
    assert "numpy" in sys.modules
else:
    import_numpy_with_thread_limit()
from threadpoolctl import threadpool_info
print(json.dumps({"blas": sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}),
                  "threads": len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None,
                  "env": [os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                      "MKL_NUM_THREADS")]}))
"""


def _run_import(how: str, env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (*THREAD_ENV_VARS, CORES_PER_QUANTUM_VAR)}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", IMPORT_CODE, how], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS starts one thread anyway")
@pytest.mark.parametrize("how", ["function", "pipetask", "forkserver"])
def test_numpy_imported_at_the_limit_starts_no_blas_thread(how: str) -> None:
    """``pipetask run`` and the pool's fork server import numpy with one BLAS thread: none to spin."""
    got = _run_import(how, {})
    assert got["blas"] == [1]
    if got["threads"] is not None:
        assert got["threads"] == 1  # only the main thread (plain `import numpy` starts one per core)
    assert got["env"] == [None, None, None]  # restored: later processes see the user's environment


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS starts one thread anyway")
def test_numpy_imported_at_the_limit_keeps_cores_per_quantum_and_user_values() -> None:
    """A worker's cores per quantum and a user's value set the pool size; the environment is theirs."""
    got = _run_import("function", {CORES_PER_QUANTUM_VAR: "2"})
    assert got["blas"] == [2] and got["env"] == [None, None, None]
    got = _run_import("function", {"OPENBLAS_NUM_THREADS": "2"})
    assert got["blas"] == [2] and got["env"] == [None, "2", None]
