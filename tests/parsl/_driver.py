"""A pipeline driver process for the shared-repository tests (``python -m tests.parsl._driver``).

Builds the toy graph into ``--output``/``--output-run`` and runs it serially through
`pipeline.execution.submit.execute_graph` (which holds the run's writer lock). ``--hold S`` only
takes the lock of ``--output-run`` and sleeps (prints ``locked`` first). Exit status: 0 success,
1 failed quanta, 3 `RunLockedError` (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import _toy_tasks as toy


def main() -> int:
    """Run the driver; see the module docstring."""
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("--output")
    ap.add_argument("--output-run")
    ap.add_argument("--sleep", type=float, default=0.0, help="sleep_s of each quantum")
    ap.add_argument("--hold", type=float, default=None)
    args = ap.parse_args()
    from butler import Butler
    from pipeline.execution.run_lock import RunLockedError, run_lock
    from pipeline.execution.submit import execute_graph
    from pipeline.graph.builder import build_quantum_graph
    from pipeline.graph.collections import resolve_output_collections
    from pipeline.pipeline_graph import PipelineGraph

    butler = Butler(args.repo, writeable=True)
    try:
        if args.hold is not None:
            with run_lock(butler, args.output_run):
                print("locked", flush=True)
                time.sleep(args.hold)
            return 0
        colls = resolve_output_collections(
            butler.registry, inputs=[toy.TOY_RAW_RUN], output=args.output, output_run=args.output_run
        )
        tasks = [
            ("subtractMedian", toy.SubtractMedianTask, toy.SubtractMedianConfig(sleep_s=args.sleep)),
            ("gatherMedians", toy.GatherMediansTask, toy.GatherMediansConfig()),
        ]
        graph = build_quantum_graph(butler, PipelineGraph.from_tasks(tasks), collections=colls)
        report = execute_graph(butler, graph, executor="serial", register_dataset_types=True, progress="none")
        print(
            json.dumps(
                {"run": graph.output_run, "done": report.count("done"), "failed": report.count("failed")}
            )
        )
        return 0 if report.success else 1
    except RunLockedError as exc:
        print(str(exc), file=sys.stderr)
        return 3
    finally:
        butler.close()


if __name__ == "__main__":
    sys.exit(main())
