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
