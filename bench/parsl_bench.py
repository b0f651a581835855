"""Scheduling overhead per quantum: Parsl HighThroughputExecutor vs the local process pool.

Workload: the toy of middleware-reference section 10 (``bench/_toy_tasks.py``): E exposures x D
detectors of uint16 raws, ``subtractMedian`` per (exposure, detector) and ``gatherMedians`` per
exposure. Both executors get the same number of workers (2 on this machine class) and are warmed
up first (Parsl start-up -- interchange, manager and worker spawn -- and the pool's worker start
are reported separately, not counted as per-quantum overhead).

Printed per executor:

- ``wall``: seconds to run the whole graph through the driver (``run_graph``, registration included);
- ``sched ms/q``: scheduling overhead per quantum = (wall x workers - time spent inside
  ``SingleQuantumExecutor.execute`` on the workers) / quanta -- the cost of getting a quantum to a
  worker and its result back, plus idle worker time (target <= 5 ms/quantum);
- ``framework ms/q``: (wall x workers - time inside ``runQuantum``) / quanta, i.e. also the
  quantum-backed butler, metadata and log writing;
- ``driver CPU ms/q``: CPU time of the driver process (all its threads: graph walk, Parsl DFK,
  interchange client, batched registration) per quantum -- insensitive to how loaded the
  machine is, unlike the wall-clock figures.

The Parsl executor runs with its defaults (``quanta_per_task: auto``: Parsl tasks of about
0.2 s of quanta once the first results have shown how long a quantum takes; the window follows;
unencrypted loopback traffic; ``parsl.log`` at WARNING) unless options say otherwise.

Usage: ``python bench/parsl_bench.py [--quick] [--workers N] [--window W] [--quanta-per-task K|auto]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(HERE), os.environ.get("PYTHONPATH", "")] if p)
_BIN = str(Path(sys.executable).parent)
os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")

import _toy_tasks as toy  # noqa: E402


def _graph(butler: Any, run: str, work_ms: float) -> Any:
    from pipeline.graph.builder import build_quantum_graph
    from pipeline.graph.collections import resolve_output_collections

    colls = resolve_output_collections(butler.registry, inputs=[toy.TOY_RAW_RUN], output_run=run)
    tasks = [("subtractMedian", toy.SubtractMedianTask, toy.SubtractMedianConfig(work_ms=work_ms)),
             ("gatherMedians", toy.GatherMediansTask, toy.GatherMediansConfig())]
    return build_quantum_graph(butler, tasks, collections=colls)


def _measure(butler: Any, graph: Any, executor: Any, workers: int) -> dict[str, float]:
    from pipeline.execution.runner import pre_exec_init, run_graph

    pre_exec_init(butler, graph, register_dataset_types=True)
    # Warm-up: start the workers and load graph + task on each (a quantum of the first task,
    # rerun by the measured run; its files are rewritten before they are registered).
    t0 = time.perf_counter()
    first = [graph.id_at(i) for i in range(min(len(graph), 2 * workers))]
    for fut in [executor.submit(q) for q in first]:
        assert fut.result().ok
    startup = time.perf_counter() - t0
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        report = run_graph(butler, graph, executor, progress="none")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        executor.shutdown()
    assert report.success, report.summary(graph)["exceptionInfo"]
    n = len(graph)
    in_execute = sum(q.time for q in report.quanta.values())
    return {"startup": startup, "wall": wall, "n": n,
            "sched_ms": 1e3 * (wall * workers - in_execute) / n,
            "framework_ms": 1e3 * (wall * workers - report.run_time) / n,
            "execute_ms": 1e3 * in_execute / n, "driver_cpu_ms": 1e3 * cpu / n}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small workload (10 x 9, 128x128 images)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--window", type=int, default=None, help="Parsl max_in_flight (default: the executor's)")
    ap.add_argument("--prefetch", type=int, default=1, help="htex prefetch_capacity")
    ap.add_argument("--strategy-period", type=float, default=1.0, help="Parsl strategy period (s)")
    ap.add_argument("--parsl-log-level", default=None, help="level of the driver's parsl.log (default: "
                    "the executor's, WARNING)")
    ap.add_argument("--quanta-per-task", default="auto", help="Parsl quanta per task (batching): a number "
                    "or auto (default)")
    ap.add_argument("--work-ms", type=float, default=0.0, help="extra compute per subtractMedian quantum")
    args = ap.parse_args(argv)
    from pipeline.execution.executors import ProcessPoolQuantumExecutor
    from pipeline.execution.parsl_executor import ParslQuantumExecutor

    n_exp, n_det, shape = (10, 9, (128, 128)) if args.quick else (40, 9, (512, 512))
    with tempfile.TemporaryDirectory(prefix="parsl_bench_") as tmp:
        root = Path(tmp) / "repo"
        t0 = time.perf_counter()
        butler, _ = toy.make_toy_repo(root, n_exp, n_det, shape=shape)
        dt = time.perf_counter() - t0
        print(f"toy repository {n_exp} x {n_det} of {shape[0]}x{shape[1]} uint16 in {dt:.1f} s; "
              f"{args.workers} workers, work_ms={args.work_ms:g}")
        results = {}
        g = _graph(butler, "bench/pool", args.work_ms)
        gp = g.save(Path(tmp) / "pool.qg")
        pool = ProcessPoolQuantumExecutor(gp, root, args.workers)
        results["pool"] = _measure(butler, g, pool, args.workers)
        g = _graph(butler, "bench/parsl", args.work_ms)
        gp = g.save(Path(tmp) / "parsl.qg")
        cfg: dict[str, Any] = {
            "strategy_period": args.strategy_period, "run_dir": str(Path(tmp) / "runinfo"),
            "htex": {"max_workers_per_node": args.workers, "prefetch_capacity": args.prefetch}}
        if args.parsl_log_level:
            cfg["log_level"] = args.parsl_log_level.upper()
        qpt = args.quanta_per_task if args.quanta_per_task == "auto" else int(args.quanta_per_task)
        ex = ParslQuantumExecutor(gp, root, cfg, max_in_flight=args.window, quanta_per_task=qpt)
        results["parsl"] = _measure(butler, g, ex, args.workers)
        print(f"{'executor':<10}{'quanta':>8}{'start s':>10}{'wall s':>9}{'execute ms/q':>14}"
              f"{'sched ms/q':>12}"
              f"{'framework ms/q':>16}{'driver CPU ms/q':>17}")
        for name, r in results.items():
            print(f"{name:<10}{r['n']:>8}{r['startup']:>10.2f}{r['wall']:>9.2f}{r['execute_ms']:>14.2f}"
                  f"{r['sched_ms']:>12.2f}{r['framework_ms']:>16.2f}{r['driver_cpu_ms']:>17.2f}")
        extra = results["parsl"]["sched_ms"] - results["pool"]["sched_ms"]
        batching = (f"auto, ended at {ex.quanta_per_task}" if ex.auto_batch else str(ex.quanta_per_task))
        print(f"Parsl scheduling overhead {results['parsl']['sched_ms']:.2f} ms/quantum "
              f"({extra:+.2f} ms vs the local pool); target <= 5 ms/quantum; "
              f"window {ex.max_in_flight} quanta "
              f"({ex.tasks_in_flight} Parsl tasks), quanta per Parsl task: {batching}; "
              f"{ex.n_tasks_sent} Parsl tasks; load average {os.getloadavg()[0]:.2f}")
        butler.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
