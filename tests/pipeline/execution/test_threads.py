"""`disable_implicit_threading`: one BLAS thread per process while quanta run, unless the user chose."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.execution.threads import THREAD_ENV_VARS

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
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV_VARS}
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
