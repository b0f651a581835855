"""A/B of the serial run overhead of two checkouts, with one harness for both.

Each tree's own ``pipeline_bench.py`` measures the ``-j 1`` overhead its own way (one run per
figure in 1d53975, the median of three runs with ``os.sync()`` between them since), and the old
harness does not run on the new tree, so comparing their figures compares harnesses too. This
script runs the same measurement in both trees: in a fresh process per tree and round
(``PYTHONPATH=<tree>:<tree>/bench``), alternating which tree goes first, it makes the toy
repository (``_toy_tasks``: E exposures x D detectors of uint16 raws), builds the graph, and runs
it ``--runs`` times with the serial executor, each time into a new RUN after ``os.sync()``.

Figures per run: the wall overhead ``(wall - report.run_time) / quanta`` (1d53975's definition;
``run_time`` is the tasks' own time as the runner reports it) and the process CPU of the run per
quantum (user + system, the tasks' compute included; equal work in both trees).

Usage::

    python bench/run_overhead_ab.py /path/to/other-checkout [--rounds 3] [--runs 3] \
        [--exposures 50 --detectors 9 --size 512]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: The measurement, run inside each tree; only API that 1d53975 and later trees share.
_PROBE = r"""
import json, os, sys, tempfile, time
from pathlib import Path
import _toy_tasks as toy
from pipeline.execution.executors import SerialExecutor
from pipeline.execution.runner import pre_exec_init, run_graph
from pipeline.graph.builder import build_quantum_graph
from pipeline.graph.collections import resolve_output_collections

e, d, size, runs = (int(a) for a in sys.argv[1:5])
scratch = sys.argv[5]
tmp = Path(tempfile.mkdtemp(dir=scratch))
butler, _ = toy.make_toy_repo(tmp / "repo", e, d, shape=(size, size))
tasks = [("subtractMedian", toy.SubtractMedianTask, toy.SubtractMedianConfig()),
         ("gatherMedians", toy.GatherMediansTask, toy.GatherMediansConfig())]
out = []
for i in range(runs):
    colls = resolve_output_collections(butler.registry, inputs=[toy.TOY_RAW_RUN], output_run=f"ab/run{i}")
    graph = build_quantum_graph(butler, tasks, collections=colls)
    pre_exec_init(butler, graph, register_dataset_types=True)
    os.sync()
    t0, c0 = time.perf_counter(), time.process_time()
    ex = SerialExecutor(graph, butler.root)
    try:
        report = run_graph(butler, graph, ex, progress="none")
    finally:
        ex.shutdown()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert report.success
    n = len(graph)
    out.append({"overhead_ms": 1000 * (wall - report.run_time) / n, "cpu_ms": 1000 * cpu / n, "quanta": n})
print("RESULT " + json.dumps(out))
"""


def measure(tree: Path, args: argparse.Namespace, scratch: str) -> list[dict[str, float]]:
    """Run the probe in a fresh process on ``tree``; return its per-run figures.

    Parameters
    ----------
    tree : `pathlib.Path`
        A ccdflow checkout (its ``butler``, ``pipeline`` and ``bench/_toy_tasks.py`` are used).
    args : `argparse.Namespace`
        Workload size and number of runs.
    scratch : `str`
        Directory for the temporary repositories.

    Returns
    -------
    runs : `list` [`dict`]
        ``overhead_ms`` (wall minus the tasks' run time, per quantum), ``cpu_ms`` (process CPU
        per quantum) and ``quanta`` of each run.

    Raises
    ------
    RuntimeError
        If the probe fails in that tree (its standard error is included).
    """
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{tree / 'bench'}")
    cmd = [sys.executable, "-c", _PROBE, str(args.exposures), str(args.detectors), str(args.size),
           str(args.runs), scratch]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=scratch)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the probe failed in {tree}:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    """Alternate the two trees for ``--rounds`` rounds and print each run and the medians.

    Returns
    -------
    status : `int`
        0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (e.g. the pre-restructuring tree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="runs per process (new RUN each)")
    parser.add_argument("--exposures", type=int, default=50)
    parser.add_argument("--detectors", type=int, default=9)
    parser.add_argument("--size", type=int, default=512, help="raw image side (pixels)")
    args = parser.parse_args(argv)
    trees = {"this": HERE.parent, "other": args.other.resolve()}
    results: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for name in order:
                runs = measure(trees[name], args, scratch)
                results[name] += runs
                print(f"round {r + 1} {name:5} ({trees[name]}): overhead "
                      + " ".join(f"{x['overhead_ms']:.2f}" for x in runs) + " ms/quantum; CPU "
                      + " ".join(f"{x['cpu_ms']:.2f}" for x in runs) + " ms/quantum", flush=True)
    n = results["this"][0]["quanta"] if results["this"] else 0
    print(f"{n} quanta, {args.size}x{args.size}, load average {os.getloadavg()[0]:.1f}")
    for key, label in (("overhead_ms", "wall overhead"), ("cpu_ms", "CPU per quantum")):
        a = statistics.median(x[key] for x in results["this"])
        b = statistics.median(x[key] for x in results["other"])
        print(f"{label:16} median: this {a:.2f} ms, other {b:.2f} ms, this/other {a / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
