"""The ``ccdflow-demo`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .commands import StepFailed, StepRecord, children_cpu, prepare_repo, say, self_cpu
from .flows import FLOWS, run_flow
from .plots import write_plots
from .report import summarize

__all__ = ["main"]


def _package_summary() -> str:
    """First line of the ``pipeline.main_job`` docstring (read at call time: no import cycle)."""
    return (sys.modules[__package__].__doc__ or "").strip().splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the main job (console script ``ccdflow-demo``).

    Parameters
    ----------
    argv : sequence of `str`, optional
        Command-line arguments.

    Returns
    -------
    status : `int`
        0 on success, 1 if a step failed (its error is printed).
    """
    parser = argparse.ArgumentParser(prog="ccdflow-demo", description=_package_summary())
    parser.add_argument(
        "data_dir",
        help="directory holding raw/kast_blue and raw/efosc2 (scripts/demo.sh passes ../shared/data)",
    )
    parser.add_argument(
        "--repo", default="demo_repo", help="repository to create or reuse (default demo_repo)"
    )
    parser.add_argument(
        "--mode",
        choices=["reuse", "rebuild"],
        default="reuse",
        help="reuse an existing repository (steps already done are skipped) or "
        "delete and rebuild it (default reuse)",
    )
    parser.add_argument(
        "--instrument",
        action="append",
        choices=sorted(FLOWS),
        help="only these instruments (repeatable; default: every one found in DATA_DIR)",
    )
    parser.add_argument(
        "-j",
        "--processes",
        type=int,
        default=1,
        help="worker processes per pipetask run (default 1: the Kast and EFOSC2 frames "
        "are small, so starting workers costs more than it saves)",
    )
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    repo = Path(args.repo).resolve()
    if not data_dir.is_dir():
        print(
            f"error: data directory {data_dir} does not exist; pass the directory that holds raw/kast_blue "
            "and raw/efosc2",
            file=sys.stderr,
        )
        return 1
    names = args.instrument or [n for n, f in FLOWS.items() if (data_dir / f.raw_subdir).is_dir()]
    if not names:
        print(
            f"error: no raw/kast_blue or raw/efosc2 under {data_dir}; pass the data directory",
            file=sys.stderr,
        )
        return 1
    flows = [FLOWS[n] for n in names]
    t0, c0 = time.perf_counter(), children_cpu() + self_cpu()
    log: list[StepRecord] = []
    try:
        prepare_repo(repo, args.mode, log)
        for flow in flows:
            run_flow(flow, data_dir, repo, processes=args.processes, log=log)
        say("\n=== results ===", bold=True)
        report = summarize(repo, flows)
        plots = write_plots(repo, flows)
        from pipeline.report import write_report

        page = write_report(repo, repo / "report")
    except (StepFailed, FileNotFoundError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to finish ({repo} is reused)", file=sys.stderr)
        return 130
    print("\n" + report)
    print(f"\nplots written to {repo / 'plots'}:")
    for p in plots:
        print(f"  {p.relative_to(repo)}")
    print(f"\nreport page (open it in a browser): {page}")
    ran = [r for r in log if not r.skipped]
    wall, cpu = time.perf_counter() - t0, children_cpu() + self_cpu() - c0
    print(
        f"\nmain job finished in {wall:.0f} s wall, {cpu:.0f} s CPU (user+sys, this process and the "
        f"commands it ran): {len(ran)} commands run, {len(log) - len(ran)} steps already done"
    )
    return 0
