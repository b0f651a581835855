"""Benchmark of the pipeline framework on the toy workload of middleware-reference section 10.

E exposures x D detectors of 512x512 uint16 raws; task A (``subtractMedian``) per (exposure,
detector) subtracts the median; task B (``gatherMedians``) per exposure gathers its detectors.
Prints, per (E, D): graph build (ms/quantum), run with ``-j 1`` and ``-j 2`` (framework overhead
ms/quantum = (wall - time inside runQuantum) / quanta; beside it, for ``-j 1``, the same by CPU
time -- (CPU of the process - CPU inside runQuantum) / quanta, which a loaded machine moves far
less -- and for ``-j 2`` the driver's CPU per quantum), the ``-j 2`` speed-up on >= 50 ms
quanta, a query of the outputs, CLI start-up, and the build time and peak RSS of a
~100,000-quantum graph (500 exposures x 189 detectors + 500 per-exposure quanta, build only).

LSST on the same machine class: build 2-4 ms/quantum, serial overhead 50-90 ms/quantum,
``-j 2`` 0.8-1.8 s/quantum, CLI start 1.6 s. Targets: build <= 0.2 ms/quantum, serial overhead
<= 3 ms/quantum, ``-j 2`` >= 1.7x faster than ``-j 1`` on >= 50 ms quanta, ``pipetask --help``
<= 0.3 s, 100k-quantum graph <= 30 s and <= 2 GB.

``--scale`` adds the 10^6-quantum graph of issue #17 (5,300 exposures x 189 detectors + 5,300
per-exposure quanta = 1,007,000 quanta; targets: build <= 90 s and <= 4 GB peak RSS, save and
load <= 10 s each, driver memory <= 4 GB), each step in a fresh process: making the repository
(registry only, no files; ~3 min CPU, the longest part), the build and save, then the load and
the driver's set-up of ``pipetask run`` (`run_graph` up to its first submission, with an
executor that stops there: successor lists, walker, per-quantum reports). About 5 min on an
idle 2-core machine; it prints ``TARGET`` lines.

The run overheads are the median of ``--repeat`` runs (default 3), each after ``os.sync()`` and
the removal of the previous run's outputs; every run's figure and their spread are printed.

Usage: ``python bench/pipeline_bench.py [--quick] [--skip-big] [--scale] [--repeat N]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])

import _toy_tasks as toy  # noqa: E402


def _pipeline(work_ms: float = 0.0) -> list[tuple[str, type, Any]]:
    a = toy.SubtractMedianConfig(work_ms=work_ms)
    return [("subtractMedian", toy.SubtractMedianTask, a),
            ("gatherMedians", toy.GatherMediansTask, toy.GatherMediansConfig())]


def _build(butler: Any, run: str, work_ms: float = 0.0, where: str = "") -> tuple[Any, float]:
    from pipeline.graph.builder import build_quantum_graph
    from pipeline.graph.collections import resolve_output_collections

    colls = resolve_output_collections(butler.registry, inputs=[toy.TOY_RAW_RUN], output_run=run)
    t0 = time.perf_counter()
    graph = build_quantum_graph(butler, _pipeline(work_ms), collections=colls, where=where)
    return graph, time.perf_counter() - t0


#: CPU seconds spent inside the toy tasks' runQuantum in this process (with -j 1, every quantum).
_RUN_QUANTUM_CPU = [0.0]


def _count_run_quantum_cpu() -> None:
    """Wrap the toy tasks' ``runQuantum`` to add up the CPU time spent inside it in this process.

    Done here rather than by the framework, so that this file measures the same thing on any
    tree of the code (e.g. the Nov-22 one: ``PYTHONPATH=OLD_TREE python bench/pipeline_bench.py``).
    """
    for cls in (toy.SubtractMedianTask, toy.GatherMediansTask):
        if getattr(cls.runQuantum, "bench_wrapped", False):
            continue
        orig = cls.runQuantum

        def wrapped(self: Any, *args: Any, _orig: Any = orig, **kwargs: Any) -> Any:
            c0 = time.process_time()
            try:
                return _orig(self, *args, **kwargs)
            finally:
                _RUN_QUANTUM_CPU[0] += time.process_time() - c0

        wrapped.bench_wrapped = True  # type: ignore[attr-defined]
        cls.runQuantum = wrapped  # type: ignore[method-assign]


def _run(butler: Any, graph: Any, processes: int, tmp: Path) -> tuple[float, Any]:
    """Run a graph; the wall time includes saving the graph and starting the pool (s)."""
    from pipeline.execution.executors import ProcessPoolQuantumExecutor, SerialExecutor
    from pipeline.execution.runner import pre_exec_init, run_graph

    pre_exec_init(butler, graph, register_dataset_types=True)
    _count_run_quantum_cpu()
    rq0 = _RUN_QUANTUM_CPU[0]
    t0 = time.perf_counter()
    c0 = time.process_time()
    if processes == 1:
        ex: Any = SerialExecutor(graph, butler.root)
    else:
        path = tmp / f"g{processes}_{time.monotonic_ns()}.qg"
        graph.save(path)
        ex = ProcessPoolQuantumExecutor(path, butler.root, processes)
        report_start = ex.start()
    try:
        report = run_graph(butler, graph, ex, progress="none")
    finally:
        ex.shutdown()
    wall = time.perf_counter() - t0
    report.driver_cpu = time.process_time() - c0  # this process only (with -j 1 it runs the quanta)
    report.run_quantum_cpu = _RUN_QUANTUM_CPU[0] - rq0  # 0 with -j 2: the workers run the quanta
    assert report.success, report.summary(graph)
    report.pool_start = report_start if processes > 1 else 0.0
    return wall, report


def _cli_start() -> float:
    import compileall

    for pkg in ("butler", "pipeline"):  # time the CLI as installed: with bytecode (see butler_bench)
        compileall.compile_dir(str(HERE.parent / pkg), quiet=1)
    exe = shutil.which("pipetask") or str(Path(sys.executable).parent / "pipetask")
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([exe, "--help"], capture_output=True, check=False)
        best = min(best, time.perf_counter() - t0)
    return best


def _median_run(butler: Any, processes: int, tmp: Path, repeat: int, tag: str) -> dict[str, Any]:
    """Run the toy graph ``repeat`` times (a new RUN each) with ``-j processes``; the median run.

    Before each run the outputs of the previous one are removed and ``os.sync()`` writes back
    the dirty pages (neither is timed): a run that started while the page cache still held
    gigabytes of the previous run's files paid their writeback, and single-run figures moved
    by +-15 %. The overhead is ``(wall - time inside runQuantum / processes) / quanta``.

    Returns
    -------
    run : `dict`
        ``wall_s``, ``overhead_ms`` (ms/quantum), ``cpu_ms`` (with ``-j 1``: CPU of the process
        minus CPU inside runQuantum, per quantum; otherwise the driver's CPU per quantum),
        ``report`` of the median run (by overhead), ``runs`` (every run's overhead, in order),
        ``run_name`` of the median run and ``n`` quanta.
    """
    rows = []
    previous = None
    for k in range(repeat):
        if previous is not None:
            butler.remove_runs([previous], unstore=True)
        os.sync()
        name = f"bench/{tag}/{k}"
        graph, _ = _build(butler, name)
        n = len(graph)
        wall, rep = _run(butler, graph, processes, tmp)
        if processes == 1:
            cpu = 1000 * (rep.driver_cpu - rep.run_quantum_cpu) / n
        else:
            cpu = 1000 * rep.driver_cpu / n
        rows.append({"wall_s": wall, "overhead_ms": 1000 * (wall - rep.run_time / processes) / n,
                     "cpu_ms": cpu, "report": rep, "run_name": name, "n": n})
        previous = name if k < repeat - 1 else None
    median = sorted(rows, key=lambda r: r["overhead_ms"])[(len(rows) - 1) // 2]
    return {**median, "runs": [r["overhead_ms"] for r in rows]}


def _spread(runs: list[float]) -> str:
    """``median of N runs: a, b, c`` (ms/quantum), or the one run."""
    if len(runs) == 1:
        return "1 run"
    return f"median of {len(runs)} runs: " + ", ".join(f"{x:.2f}" for x in runs) + (
        f"; spread {max(runs) - min(runs):.2f}")


def bench_workload(e: int, d: int, shape: tuple[int, int], tmp: Path, *, speedup_ms: float,
                   repeat: int = 3) -> dict[str, Any]:
    """Build and run the toy workload of E exposures x D detectors; return the figures.

    The ``-j 1`` and ``-j 2`` overheads are the median of ``repeat`` runs (`_median_run`).
    """
    root = tmp / f"repo_{e}x{d}"
    t0 = time.perf_counter()
    butler, _ = toy.make_toy_repo(root, e, d, shape=shape)
    setup = time.perf_counter() - t0
    out: dict[str, Any] = {"E": e, "D": d, "setup_s": setup}
    graph, tb = _build(butler, "bench/build")
    n = len(graph)
    out.update(quanta=n, build_s=tb, build_ms_per_quantum=1000 * tb / n)
    del graph
    r1 = _median_run(butler, 1, tmp, repeat, "j1")
    out.update(j1_wall_s=r1["wall_s"], j1_overhead_ms_per_quantum=r1["overhead_ms"],
               j1_overhead_cpu_ms_per_quantum=r1["cpu_ms"], j1_runs=r1["runs"])
    r2 = _median_run(butler, 2, tmp, repeat, "j2")
    rep2 = r2["report"]
    out.update(j2_wall_s=r2["wall_s"], j2_overhead_ms_per_quantum=r2["overhead_ms"],
               j2_driver_cpu_ms_per_quantum=r2["cpu_ms"], j2_runs=r2["runs"])
    t0 = time.perf_counter()
    refs = butler.query_datasets("toyCalexp", collections=[f"bench/j1/{repeat - 1}"])
    out.update(query_outputs_s=time.perf_counter() - t0, n_outputs=len(refs))
    out.update(j2_pool_start_s=rep2.pool_start)
    if speedup_ms > 0:
        ga, _ = _build(butler, "bench/s1", work_ms=speedup_ms)
        w1, _ = _run(butler, ga, 1, tmp)
        gb, _ = _build(butler, "bench/s2", work_ms=speedup_ms)
        w2, r2 = _run(butler, gb, 2, tmp)
        out.update(speedup_task_ms=speedup_ms, speedup_j1_s=w1, speedup_j2_s=w2, speedup=w1 / w2,
                   speedup_pool_start_s=r2.pool_start, speedup_steady=w1 / max(w2 - r2.pool_start, 1e-9))
    shutil.rmtree(root, ignore_errors=True)
    return out


def bench_big(tmp: Path, e: int, d: int) -> dict[str, Any]:
    """Build-only benchmark (run in a fresh process for a clean peak-RSS figure)."""
    root = tmp / "repo_big"
    t0 = time.perf_counter()
    butler, _ = toy.make_toy_repo(root, e, d, with_files=False)
    setup = time.perf_counter() - t0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    graph, tb = _build(butler, "bench/big")
    t0 = time.perf_counter()
    gpath = tmp / "big.qg"
    graph.save(gpath)
    ts = time.perf_counter() - t0
    from pipeline.graph.quantum_graph import QuantumGraph

    n_quanta = len(graph)
    del graph  # a worker or a later command loads the file without the builder's graph around
    t0 = time.perf_counter()
    g2 = QuantumGraph.load(gpath)
    g2.successor_indices()
    tl = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"E": e, "D": d, "quanta": n_quanta, "setup_s": setup, "build_s": tb,
            "build_ms_per_quantum": 1000 * tb / n_quanta, "save_s": ts, "load_s": tl,
            "file_mb": gpath.stat().st_size / 1e6, "peak_rss_mb": rss, "rss_before_build_mb": rss0}


def scale_build(root: Path, gpath: Path) -> dict[str, Any]:
    """Build and save the graph of the repository at ``root`` (fresh process: its own peak RSS)."""
    from butler import Butler

    butler = Butler(root)
    c0 = time.process_time()
    graph, tb = _build(butler, "bench/scale")
    cb = time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    graph.save(gpath)
    return {"quanta": len(graph), "build_s": tb, "build_cpu_s": cb, "build_peak_rss_mb": rss,
            "save_s": time.perf_counter() - t0, "save_cpu_s": time.process_time() - c0,
            "file_mb": gpath.stat().st_size / 1e6,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


class _StopAtFirstSubmit:
    """Executor that interrupts `run_graph` at its first submission (the driver's set-up only)."""

    max_in_flight = 2

    def submit(self, quantum_id: Any) -> Any:
        raise KeyboardInterrupt

    def shutdown(self, cancel: bool = False) -> None:
        pass

    def reset(self) -> None:
        pass


def scale_load(root: Path, gpath: Path) -> dict[str, Any]:
    """Load the graph and set up its execution as ``pipetask run`` does (fresh process)."""
    from butler import Butler
    from pipeline.execution.runner import run_graph
    from pipeline.graph.quantum_graph import QuantumGraph

    butler = Butler(root)
    t0, c0 = time.perf_counter(), time.process_time()
    graph = QuantumGraph.load(gpath)
    out: dict[str, Any] = {"load_s": time.perf_counter() - t0, "load_cpu_s": time.process_time() - c0,
                           "load_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        run_graph(butler, graph, _StopAtFirstSubmit(), progress="none")  # type: ignore[arg-type]
    except KeyboardInterrupt:
        pass
    out.update(driver_setup_s=time.perf_counter() - t0, driver_setup_cpu_s=time.process_time() - c0,
               driver_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def _target(name: str, value: float, unit: str, goal: str, note: str = "") -> None:
    print("TARGET " + json.dumps({"bench": "pipeline_bench", "name": name, "value": round(value, 3), "unit": unit,
                                  "target": goal, "lsst": "", "ratio": None, "note": note}))


def bench_scale(tmp: Path, e: int, d: int) -> None:
    """The 10^6-quantum graph: repository, build + save, load + driver set-up in fresh processes."""
    root, gpath = tmp / "repo_scale", tmp / "scale.qg"

    def step(*args: str) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"scale step {args[0]} failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    t0 = time.perf_counter()
    step("--_scale_repo", str(root), str(e), str(d))
    setup = time.perf_counter() - t0
    b = step("--_scale_build", str(root), str(gpath))
    ld = step("--_scale_load", str(root), str(gpath))
    n = b["quanta"]
    print(f"scale graph ({e} x {d}): {n} quanta (repository set-up {setup:.0f} s)")
    print(f"  build {b['build_s']:.1f} s ({b['build_cpu_s']:.1f} s CPU, {1000 * b['build_s'] / n:.3f} ms/quantum), "
          f"peak RSS {b['build_peak_rss_mb']:.0f} MB")
    print(f"  save {b['save_s']:.2f} s ({b['save_cpu_s']:.2f} s CPU), {b['file_mb']:.1f} MB; peak RSS "
          f"{b['peak_rss_mb']:.0f} MB")
    print(f"  load {ld['load_s']:.2f} s ({ld['load_cpu_s']:.2f} s CPU), RSS {ld['load_rss_mb']:.0f} MB; driver "
          f"set-up {ld['driver_setup_s']:.1f} s ({ld['driver_setup_cpu_s']:.1f} s CPU), peak RSS "
          f"{ld['driver_rss_mb']:.0f} MB")
    note = f"{n} quanta ({e} x {d} + {e})"
    _target("10^6-quantum graph build", b["build_s"], "s", "<= 90", f"{note}; {b['build_cpu_s']:.0f} s CPU")
    _target("10^6-quantum graph build peak RSS", b["build_peak_rss_mb"] / 1024, "GB", "<= 4", note)
    _target("10^6-quantum graph save", b["save_s"], "s", "<= 10", f"{b['file_mb']:.0f} MB file")
    _target("10^6-quantum graph load", ld["load_s"], "s", "<= 10", note)
    _target("10^6-quantum graph driver peak RSS", ld["driver_rss_mb"] / 1024, "GB", "<= 4",
            "load + run_graph set-up up to the first submission")


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Small images, one small workload, small big-graph.")
    parser.add_argument("--skip-big", action="store_true", help="Skip the 100,000-quantum build.")
    parser.add_argument("--scale", action="store_true",
                        help="Also the 1,007,000-quantum graph (5,300 x 189; ~5 min idle, ~3 GB).")
    parser.add_argument("--repeat", type=int, default=3,
                        help="Runs per -j 1 / -j 2 overhead figure (median; os.sync() between runs).")
    parser.add_argument("--_big", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_scale_repo", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--_scale_build", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_scale_load", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._scale_repo:
        toy.make_toy_repo(Path(args._scale_repo[0]), int(args._scale_repo[1]), int(args._scale_repo[2]),
                          with_files=False)
        print("{}")
        return
    if args._scale_build:
        print(json.dumps(scale_build(Path(args._scale_build[0]), Path(args._scale_build[1]))))
        return
    if args._scale_load:
        print(json.dumps(scale_load(Path(args._scale_load[0]), Path(args._scale_load[1]))))
        return
    tmp = Path(tempfile.mkdtemp(prefix="ccdflow_bench_"))
    try:
        if args._big:
            print(json.dumps(bench_big(tmp, *args._big)))
            return
        if args.quick:
            work = [(10, 9)]
            shape = (64, 64)
            big = (50, 189)
            speed_at = (10, 9)
        else:
            work = [(10, 9), (50, 9), (100, 36)]
            shape = (512, 512)
            big = (500, 189)
            speed_at = (50, 9)
        print(f"pipetask --help: {_cli_start():.3f} s (LSST ~1.6 s; target <= 0.3 s)")
        for i, (e, d) in enumerate(work):
            r = bench_workload(e, d, shape, tmp, speedup_ms=60.0 if (e, d) == speed_at else 0.0,
                               repeat=args.repeat)
            print(f"(E, D) = ({e}, {d}): {r['quanta']} quanta, {shape[0]}x{shape[1]} uint16")
            print(f"  graph build        {r['build_ms_per_quantum']:.3f} ms/quantum ({r['build_s']:.3f} s)")
            print(f"  run -j 1 overhead  {r['j1_overhead_ms_per_quantum']:.2f} ms/quantum (wall {r['j1_wall_s']:.2f} s; "
                  f"by CPU {r['j1_overhead_cpu_ms_per_quantum']:.2f}; {_spread(r['j1_runs'])})")
            print(f"  run -j 2 overhead  {r['j2_overhead_ms_per_quantum']:.2f} ms/quantum (wall {r['j2_wall_s']:.2f} s; "
                  f"driver CPU {r['j2_driver_cpu_ms_per_quantum']:.2f} ms/quantum; {_spread(r['j2_runs'])})")
            print(f"  query outputs      {1000 * r['query_outputs_s']:.1f} ms for {r['n_outputs']} datasets")
            print(f"  pool start-up      {r['j2_pool_start_s']:.2f} s (2 workers, once per run)")
            if "speedup" in r:
                print(f"  -j 2 speed-up on {r['speedup_task_ms']:.0f} ms quanta: {r['speedup']:.2f}x "
                      f"({r['speedup_j1_s']:.2f} s -> {r['speedup_j2_s']:.2f} s incl. {r['speedup_pool_start_s']:.2f} s "
                      f"pool start-up; {r['speedup_steady']:.2f}x after start-up)")
            sys.stdout.flush()
        if not args.skip_big:
            proc = subprocess.run([sys.executable, __file__, "--_big", str(big[0]), str(big[1])],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print("big-graph benchmark failed:\n" + proc.stderr[-3000:])
            else:
                b = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"big graph ({b['E']} x {b['D']}): {b['quanta']} quanta built in {b['build_s']:.2f} s "
                      f"({b['build_ms_per_quantum']:.3f} ms/quantum), peak RSS {b['peak_rss_mb']:.0f} MB, "
                      f"saved in {b['save_s']:.2f} s ({b['file_mb']:.1f} MB), loaded in {b['load_s']:.2f} s")
        if args.scale:
            bench_scale(tmp, *((50, 189) if args.quick else (5300, 189)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
