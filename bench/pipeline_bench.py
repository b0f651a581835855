"""Benchmark of the pipeline framework on the toy workload of middleware-reference section 10.

E exposures x D detectors of 512x512 uint16 raws; task A (``subtractMedian``) per (exposure,
detector) subtracts the median; task B (``gatherMedians``) per exposure gathers its detectors.
Prints, per (E, D): graph build (ms/quantum), run with ``-j 1`` and ``-j 2`` (framework overhead
ms/quantum = (wall - time inside runQuantum) / quanta), the ``-j 2`` speed-up on >= 50 ms
quanta, a query of the outputs, CLI start-up, and the build time and peak RSS of a
~100,000-quantum graph (500 exposures x 189 detectors + 500 per-exposure quanta, build only).

LSST on the same machine class: build 2-4 ms/quantum, serial overhead 50-90 ms/quantum,
``-j 2`` 0.8-1.8 s/quantum, CLI start 1.6 s. Targets: build <= 0.2 ms/quantum, serial overhead
<= 3 ms/quantum, ``-j 2`` >= 1.7x faster than ``-j 1`` on >= 50 ms quanta, ``pipetask --help``
<= 0.3 s, 100k-quantum graph <= 30 s and <= 2 GB.

Usage: ``python bench/pipeline_bench.py [--quick] [--skip-big]``
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


def _run(butler: Any, graph: Any, processes: int, tmp: Path) -> tuple[float, Any]:
    """Run a graph; the wall time includes saving the graph and starting the pool (s)."""
    from pipeline.execution.executors import ProcessPoolQuantumExecutor, SerialExecutor
    from pipeline.execution.runner import pre_exec_init, run_graph

    pre_exec_init(butler, graph, register_dataset_types=True)
    t0 = time.perf_counter()
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


def bench_workload(e: int, d: int, shape: tuple[int, int], tmp: Path, *, speedup_ms: float) -> dict[str, Any]:
    """Build and run the toy workload of E exposures x D detectors; return the figures."""
    root = tmp / f"repo_{e}x{d}"
    t0 = time.perf_counter()
    butler, _ = toy.make_toy_repo(root, e, d, shape=shape)
    setup = time.perf_counter() - t0
    out: dict[str, Any] = {"E": e, "D": d, "setup_s": setup}
    graph, tb = _build(butler, "bench/j1")
    n = len(graph)
    out.update(quanta=n, build_s=tb, build_ms_per_quantum=1000 * tb / n)
    wall, rep = _run(butler, graph, 1, tmp)
    out.update(j1_wall_s=wall, j1_overhead_ms_per_quantum=1000 * (wall - rep.run_time) / n)
    graph2, _ = _build(butler, "bench/j2")
    wall2, rep2 = _run(butler, graph2, 2, tmp)
    out.update(j2_wall_s=wall2, j2_overhead_ms_per_quantum=1000 * (wall2 - rep2.run_time / 2) / n)
    t0 = time.perf_counter()
    refs = butler.query_datasets("toyCalexp", collections=["bench/j1"])
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


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Small images, one small workload, small big-graph.")
    parser.add_argument("--skip-big", action="store_true", help="Skip the 100,000-quantum build.")
    parser.add_argument("--_big", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
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
            r = bench_workload(e, d, shape, tmp, speedup_ms=60.0 if (e, d) == speed_at else 0.0)
            print(f"(E, D) = ({e}, {d}): {r['quanta']} quanta, {shape[0]}x{shape[1]} uint16")
            print(f"  graph build        {r['build_ms_per_quantum']:.3f} ms/quantum ({r['build_s']:.3f} s)")
            print(f"  run -j 1 overhead  {r['j1_overhead_ms_per_quantum']:.2f} ms/quantum (wall {r['j1_wall_s']:.2f} s)")
            print(f"  run -j 2 overhead  {r['j2_overhead_ms_per_quantum']:.2f} ms/quantum (wall {r['j2_wall_s']:.2f} s)")
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
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
