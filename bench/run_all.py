"""Run every ccdflow benchmark and write ``bench/RESULTS.md``.

Usage::

    python bench/run_all.py [--quick] [--only NAME ...]

Each benchmark is a script in ``bench/`` that prints its figures; this runs them one after the
other in fresh interpreters (so start-up and peak memory are their own), and writes their output
with the machine description and the date into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = ["butler_bench", "pipeline_bench", "isr_bench", "ptc_bench", "ingest_bench", "parsl_bench"]


def machine_description() -> str:
    """Describe the machine the figures were measured on.

    Returns
    -------
    text : `str`
        CPU model, core count, memory and Python version, one line.
    """
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024**2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}, {platform.system()}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write the results file.

    Parameters
    ----------
    argv : `list` [`str`], optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    status : `int`
        0 if every benchmark ran, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    names = args.only or BENCHMARKS
    sections = []
    status = 0
    for name in names:
        script = BENCH_DIR / f"{name}.py"
        if not script.exists():
            sections.append(f"## {name}\n\n(not present)\n")
            continue
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        print(f"$ {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        print(proc.stdout, end="")
        if proc.returncode != 0:
            status = 1
            print(proc.stderr[-4000:], file=sys.stderr)
        body = proc.stdout.strip() or "(no output)"
        tail = "" if proc.returncode == 0 else f"\n\nFAILED (exit {proc.returncode}):\n```\n{proc.stderr[-2000:]}\n```"
        sections.append(
            f"## {name}\n\nCommand: `python bench/{name}.py{' --quick' if args.quick else ''}` "
            f"({wall:.1f} s)\n\n```\n{body}\n```{tail}\n"
        )
    header = (
        "# ccdflow benchmark results\n\n"
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}  \n"
        f"Machine: {machine_description()}  \n"
        f"Produced by: `python bench/run_all.py{' --quick' if args.quick else ''}`\n\n"
    )
    args.output.write_text(header + "\n".join(sections))
    print(f"wrote {args.output}")
    return status


if __name__ == "__main__":
    sys.exit(main())
