#!/usr/bin/env python
"""Repeated ``kill -9`` trials of ``pipetask run``: nothing lost, nothing left behind.

Each trial runs the toy pipeline (``bench/_toy_tasks.py``: subtractMedian per exposure x detector,
gatherMedians per exposure) on a small toy repository with ``-j 2`` (process pool, or Parsl with
``--executor parsl``), kills something with SIGKILL part-way, and checks:

- ``driver`` trials: the driver is killed; within ``--orphan-timeout`` seconds no process of its
  session (forkserver, resource tracker, workers, Parsl interchange and worker pool) survives;
  the documented rerun (``--extend-run --skip-existing``) then exits 0;
- ``worker`` trials: one pool worker is killed; the driver restarts the pool and finishes (exit 0);
- after either: no temporary file (``.*.tmp*``) and no unregistered file is left in the output
  RUN, every registered dataset has its file, and the outputs equal those of an uninterrupted
  run (array equality).

Usage (from the repository root, after ``pip install -e .``)::

    python scripts/kill_trials.py --trials 12 [--executor pool|parsl] [--workdir DIR] [--seed N]

Prints one line per trial and the counts; exits 1 if any check failed. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import _toy_tasks as toy  # noqa: E402
import numpy as np  # noqa: E402

TOY_YAML = """\
description: Toy pipeline (kill trials).
tasks:
  subtractMedian:
    class: _toy_tasks.SubtractMedianTask
  gatherMedians:
    class: _toy_tasks.GatherMediansTask
"""
TEMP = re.compile(r"\..+\.tmp")
N_EXP, N_DET = 4, 2


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), str(ROOT), env.get("PYTHONPATH", "")])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _pipetask(*args: str) -> list[str]:
    return [sys.executable, "-c", "from pipeline.cli import pipetask; pipetask()", *args]


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def session_members(sid: int, exclude: int | None = None) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == exclude:
            continue
        st = _stat(int(d))
        if st and st[0] not in ("Z", "X") and int(st[3]) == sid:
            out.append(int(d))
    return out


def _cleaned(log: str) -> int:
    """Leftover files the driver reported removing (temporary and unregistered)."""
    return sum(int(n) for n in re.findall(r"Removed (\d+) (?:temporary|unregistered output) file", log))


def _ppid(pid: int) -> int:
    st = _stat(pid)
    return int(st[1]) if st else -1


def _has_chain(root: Path, name: str) -> bool:
    from butler import Butler

    with Butler(root) as b:
        return bool(b.registry.query_collections(name))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def outputs(root: Path, collection: str) -> dict[tuple, Any]:
    """Read every output of the toy pipeline in ``collection``."""
    from butler import Butler

    b = Butler(root)
    try:
        out: dict[tuple, Any] = {}
        for e in range(1, N_EXP + 1):
            for d in range(N_DET):
                out[("toyCalexp", e, d)] = b.get("toyCalexp", collections=[collection],
                                                 instrument=toy.TOY_INSTRUMENT, exposure=e, detector=d)
            out[("toyExposureSummary", e)] = b.get("toyExposureSummary", collections=[collection],
                                                   instrument=toy.TOY_INSTRUMENT, exposure=e)
        return out
    finally:
        b.close()


def leftovers(root: Path, run_prefix: str) -> tuple[list[str], list[str], list[str]]:
    """(temporary files, unregistered files, registered datasets without their file) under the runs."""
    from butler import Butler

    b = Butler(root)
    try:
        runs = b.registry.query_collections(run_prefix + "/*", types=["RUN"])
        registered: set[Path] = set()
        missing = []
        for run in runs:
            for ref in b.query_datasets("*", collections=[run], find_first=False):
                uri = b.get_uri(ref)
                registered.add(Path(uri).resolve())
                if not Path(uri).exists():
                    missing.append(str(uri))
    finally:
        b.close()
    temps, unregistered = [], []
    top = root / run_prefix
    for p in top.rglob("*") if top.exists() else []:
        if p.is_file():
            if TEMP.match(p.name):
                temps.append(str(p))
            elif p.resolve() not in registered:
                unregistered.append(str(p))
    return temps, unregistered, missing


def equal(a: dict, b: dict) -> bool:
    """Whether two `outputs` results are identical (arrays bit for bit)."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray):
            if not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return True


def run_args(repo: Path, pipe: Path, executor: str, sleep: float) -> list[str]:
    """``pipetask run`` arguments common to the first run and the rerun."""
    args = ["run", "-b", str(repo), "-p", str(pipe), "-j", "2", "--register-dataset-types", "--no-progress",
            "-c", f"subtractMedian:sleep_s={sleep}"]
    if executor == "parsl":
        args += ["--executor", "parsl"]
    return args


def trial(i: int, kind: str, template: Path, work: Path, pipe: Path, executor: str, reference: dict,
          rng: random.Random, orphan_timeout: float, sleep: float) -> dict[str, Any]:
    """Run, kill, (rerun) and check one trial; return its findings."""
    repo = work / f"t{i:02d}"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(template, repo)
    res: dict[str, Any] = {"trial": i, "kind": kind, "ok": True, "problems": []}
    args = run_args(repo, pipe, executor, sleep) + ["-i", toy.TOY_RAW_RUN, "-o", "u/kill"]
    proc = subprocess.Popen(_pipetask(*args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    # Kill at a random point: early (maybe before anything is registered) or after k quanta wrote
    # their metadata (progress seen on disk, as the driver registers in batches).
    k = rng.randint(0, 6) if kind == "driver" else rng.randint(1, 5)
    deadline = time.monotonic() + 300
    if k == 0:
        time.sleep(rng.uniform(0.5, 3.0))
    else:
        while proc.poll() is None and time.monotonic() < deadline:
            if len(list((repo / "u" / "kill").rglob("subtractMedian_metadata*"))) >= k:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
    res["k"] = k
    if proc.poll() is not None:
        res["note"] = "finished before the kill"
    elif kind == "driver":
        os.kill(proc.pid, signal.SIGKILL)
    else:
        members = session_members(proc.pid, exclude=proc.pid)
        if executor == "pool":  # workers are the fork server's children
            servers = [p for p in members if "forkserver" in _cmdline(p) and _ppid(p) == proc.pid]
            workers = [p for p in members if _ppid(p) in servers]
        else:  # Parsl workers are spawned by the worker pool manager, after its Manager server
            spawned = sorted(p for p in members if "multiprocessing.spawn" in _cmdline(p)
                             and "process_worker_pool" in _cmdline(_ppid(p)))
            workers = spawned[1:]
        if workers:
            victim = rng.choice(workers)
            os.kill(victim, signal.SIGKILL)
            res["note"] = f"killed worker {victim}"
        else:
            res["note"] = "no worker to kill"
    if kind == "driver":
        proc.wait()
        deadline = time.monotonic() + orphan_timeout
        alive = session_members(proc.pid)
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = session_members(proc.pid)
        res["orphans"] = len(alive)
        if alive:
            res["ok"] = False
            res["problems"].append("survivors: " + "; ".join(f"{p} {_cmdline(p)[:80]}" for p in alive))
            for p in alive:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # The documented rerun: finish the job in the same RUN; if the driver died before it
        # created anything, simply run again.
        again = ["-o", "u/kill", "--extend-run", "--skip-existing"] if _has_chain(repo, "u/kill") \
            else ["-i", toy.TOY_RAW_RUN, "-o", "u/kill"]
        res["rerun"] = "extend" if "--extend-run" in again else "fresh"
        rerun = subprocess.run(_pipetask(*run_args(repo, pipe, executor, sleep), *again), env=_env(),
                               capture_output=True, text=True)
        res["rerun_rc"] = rerun.returncode
        res["cleaned"] = _cleaned(rerun.stdout + rerun.stderr)
        if rerun.returncode != 0:
            res["ok"] = False
            res["problems"].append(f"rerun exit {rerun.returncode}: {(rerun.stdout + rerun.stderr)[-400:]}")
        if "Traceback" in rerun.stdout + rerun.stderr:
            res["ok"] = False
            res["problems"].append("traceback in the rerun")
    else:
        try:
            out = proc.communicate(timeout=300)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)  # its children follow (butler.process_guard)
            out = proc.communicate()[0].decode(errors="replace")
            res["problems"].append("the run did not finish within 300 s after the worker kill")
            res["ok"] = False
        res["rc"] = proc.returncode
        res["cleaned"] = _cleaned(out)
        if proc.returncode != 0:
            res["ok"] = False
            res["problems"].append(f"run exit {proc.returncode}: {out[-400:]}")
        alive = session_members(proc.pid)
        res["orphans"] = len(alive)
        if alive:
            res["ok"] = False
            res["problems"].append(f"{len(alive)} processes left after the driver exited")
    temps, unreg, missing = leftovers(repo, "u/kill")
    res.update(temps=len(temps), unregistered=len(unreg), missing=len(missing))
    found = (("temporary files", temps), ("unregistered files", unreg), ("missing files", missing))
    for name, items in found:
        if items:
            res["ok"] = False
            res["problems"].append(f"{len(items)} {name}, e.g. {items[0]}")
    try:
        same = equal(outputs(repo, "u/kill"), reference)
    except Exception as exc:  # noqa: BLE001 - a missing output is a failed trial
        same = False
        res["problems"].append(f"outputs unreadable: {type(exc).__name__}: {exc}")
    res["equal"] = same
    if not same:
        res["ok"] = False
        res["problems"].append("outputs differ from the uninterrupted run")
    shutil.rmtree(repo, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    """Run the trials; return the exit status (0: every check passed).

    Parameters
    ----------
    argv : `list` [`str`], optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    status : `int`
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--executor", choices=["pool", "parsl"], default="pool")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--orphan-timeout", type=float, default=5.0,
                    help="Seconds the children of a killed driver may take to exit.")
    ap.add_argument("--sleep", type=float, default=0.3, help="Seconds each subtractMedian quantum sleeps.")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="kill_trials_"))
    work.mkdir(parents=True, exist_ok=True)
    template = work / "template"
    if template.exists():
        shutil.rmtree(template)
    butler, _ = toy.make_toy_repo(template, N_EXP, N_DET, shape=(32, 32))
    butler.close()
    pipe = work / "toy.yaml"
    pipe.write_text(TOY_YAML)
    ref_repo = work / "reference"
    shutil.rmtree(ref_repo, ignore_errors=True)
    shutil.copytree(template, ref_repo)
    r = subprocess.run(_pipetask(*run_args(ref_repo, pipe, a.executor, a.sleep), "-i", toy.TOY_RAW_RUN, "-o",
                                 "u/kill"), env=_env(), capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout + r.stderr)
        return 1
    reference = outputs(ref_repo, "u/kill")
    results = []
    for i in range(a.trials):
        kind = "driver" if i % 3 != 2 else "worker"
        t = time.monotonic()
        res = trial(i, kind, template, work, pipe, a.executor, reference, rng, a.orphan_timeout, a.sleep)
        res["seconds"] = round(time.monotonic() - t, 1)
        results.append(res)
        print(f"trial {i:2d} {a.executor} kill {kind:6s}: {'ok ' if res['ok'] else 'FAIL'} "
              f"orphans={res.get('orphans')} temps={res['temps']} unregistered={res['unregistered']} "
              f"missing={res['missing']} equal={res['equal']} cleaned={res.get('cleaned', 0)} "
              f"k={res.get('k')} rerun={res.get('rerun', '-')} "
              f"{res.get('note', '')} ({res['seconds']} s)", flush=True)
        for p in res["problems"]:
            print(f"    {p}")
    n_ok = sum(r["ok"] for r in results)
    print(f"\n{a.executor}: {len(results)} trials ({sum(r['kind'] == 'driver' for r in results)} driver, "
          f"{sum(r['kind'] == 'worker' for r in results)} worker kills): {n_ok} passed; "
          f"surviving children {sum(r.get('orphans') or 0 for r in results)}, temp files "
          f"{sum(r['temps'] for r in results)}, unregistered files "
          f"{sum(r['unregistered'] for r in results)}, "
          f"missing files {sum(r['missing'] for r in results)}, outputs different "
          f"{sum(not r['equal'] for r in results)}, failed reruns "
          f"{sum(1 for r in results if r.get('rerun_rc', 0) != 0)}; leftover files removed by the "
          f"driver {sum(r.get('cleaned', 0) for r in results)}")
    if a.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if n_ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
