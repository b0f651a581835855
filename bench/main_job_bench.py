"""The main job (``ccdflow-demo``) from scratch and re-run, and where its time goes.

Runs ``ccdflow-demo DATA_DIR --repo TMP --mode rebuild`` (from scratch), then the same command
again (``--mode reuse``: nothing to do), and prints:

- the wall and CPU time of each (targets: <= 12 s from scratch, <= 3 s re-run, on an idle
  2-core machine; the steps other issues added, defects, verification and the report page, are
  outside that budget and should cost <= 1.5 s each);
- per command: wall, CPU, and for ``pipetask run`` its quanta execution against the rest (graph
  building, run set-up); then the results table, the plots and the report page (from scratch the
  job draws the first instrument's plots and report sections while the other instrument's flow
  finishes, and writes the rest of the page in a worker alongside the table and the plots: its
  own time is the figure, the note says how long the job waited for it);
- the import time of the whole job (``python -X importtime``, summed, in a third run with
  ``--serial`` so the imports of both flows are in one process), with its largest packages.

Usage: ``python bench/main_job_bench.py [DATA_DIR] [--quick]`` (default ``../shared/data`` beside
the repository; ``--quick`` skips the import-time run). The ``TARGET {...}`` lines are what
``bench/run_all.py`` tabulates.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cli_bench import import_profile, target  # noqa: E402

STEP = re.compile(r"^  \[(?P<label>[^\]:]+): (?P<wall>[\d.]+) s wall, (?P<cpu>[\d.]+) s CPU\]")
EXECUTED = re.compile(r"^Executed (?P<n>\d+) quanta .* in (?P<exec>[\d.]+) s \(output run")
#: ``[plots: 0.80 s]``; the report page, when a worker writes it alongside the table and the plots,
#: ``[report page: 1.90 s, in a worker ...; waited 0.10 s]`` (its own time, and what it added).
PHASE = re.compile(
    r"^  \[(?P<label>results table|plots|report page): (?P<wall>[\d.]+) s(?:, .*waited (?P<waited>[\d.]+) s)?\]"
)


def _demo() -> str:
    candidate = Path(sys.executable).parent / "ccdflow-demo"
    return str(candidate) if candidate.exists() else (shutil.which("ccdflow-demo") or "ccdflow-demo")


def run_demo(args: Sequence[str]) -> tuple[float, float, str]:
    """Run ``ccdflow-demo ARGS``; return wall (s), CPU of it and its children (s), and its stdout."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([_demo(), *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"ccdflow-demo failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, proc.stdout


def breakdown(stdout: str) -> list[tuple[str, float, float, float | None]]:
    """Per command of a main-job output: (label, wall s, CPU s, seconds executing quanta or None)."""
    rows = []
    executed: float | None = None
    for line in stdout.splitlines():
        m = EXECUTED.match(line)
        if m:
            executed = float(m["exec"])
            continue
        m = STEP.match(line)
        if m:
            rows.append((m["label"], float(m["wall"]), float(m["cpu"]), executed))
            executed = None
            continue
        m = PHASE.match(line) or EARLY.match(line)
        if m:
            rows.append((m["label"], float(m["wall"]), float("nan"), None))
    return rows


#: ``[kast_blue plots and report-page sections, while the others finish: 0.80 s]``
EARLY = re.compile(r"^  \[(?P<label>\S+ plots and report-page sections), while the others finish: (?P<wall>[\d.]+) s\]")


def report_page_waited(stdout: str) -> float | None:
    """Seconds the main job waited for a report page written by a worker (`None`: not in a worker)."""
    for line in stdout.splitlines():
        m = PHASE.match(line)
        if m and m["waited"] is not None:
            return float(m["waited"])
    return None


def results_table(stdout: str) -> str:
    """Return the per-amplifier results table of a main-job output (to compare two runs)."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("instrument det amp")), None)
    if start is None:
        return ""
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("PTC gain:")), len(lines))
    return "\n".join(lines[start:end])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the figures.

    Parameters
    ----------
    argv : sequence of `str`, optional
        Command-line arguments.

    Returns
    -------
    status : `int`
        0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=str(HERE.parents[1] / "shared" / "data"))
    parser.add_argument("--quick", action="store_true", help="skip the import-time run")
    args = parser.parse_args(argv)
    data = Path(args.data_dir)
    if not (data / "raw").is_dir():
        print(f"no raw data under {data}: pass the data directory (it holds raw/kast_blue and raw/efosc2)")
        return 0
    import compileall

    for pkg in ("butler", "pipeline"):  # as installed: with bytecode
        compileall.compile_dir(str(HERE.parent / pkg), quiet=1)
    tmp = Path(tempfile.mkdtemp(prefix="ccdflow_main_job_bench_"))
    try:
        repo = tmp / "demo_repo"
        wall, cpu, out = run_demo([str(data), "--repo", str(repo), "--mode", "rebuild"])
        print(
            f"main job from scratch: {wall:.1f} s wall, {cpu:.1f} s CPU   [target <= 12 s on an idle 2-core machine]"
        )
        rows = breakdown(out)
        extra = ("defects", "Verify", "report page")
        budget = sum(w for label, w, _, _ in rows if not any(e in label for e in extra))
        outside = sum(w for label, w, _, _ in rows if any(e in label for e in extra))
        print(
            f"  per command (wall / CPU s; pipetask: executing quanta + the rest = graph, set-up); "
            f"sum {budget:.1f} s + {outside:.1f} s of defects, verification and report page:"
        )
        waited = report_page_waited(out)
        for label, w, c, ex in rows:
            split = f"   quanta {ex:.2f} + graph/set-up {w - ex:.2f}" if ex is not None else ""
            if label == "report page" and waited is not None:
                split = f"   in a worker alongside the table and the plots; waited {waited:.2f}"
            cpu_text = f"{c:5.1f}" if c == c else "    -"
            print(f"    {label:32s} {w:5.2f} / {cpu_text}{split}")
        target(
            "main job from scratch (ccdflow-demo, both instruments)",
            wall,
            "s",
            "<= 12",
            note=f"CPU {cpu:.1f} s; before: 27 s",
        )
        for label, w, _, _ in rows:
            if any(e in label for e in extra):
                note = f"in a worker; waited {waited:.2f} s" if label == "report page" and waited is not None else ""
                target(f"main job step: {label}", w, "s", "<= 1.5", note=note)
        table = results_table(out)
        print("  results table:\n    " + table.replace("\n", "\n    "))
        wall2, cpu2, out2 = run_demo([str(data), "--repo", str(repo)])
        print(f"main job re-run, nothing to do: {wall2:.1f} s wall, {cpu2:.1f} s CPU   [target <= 3 s]")
        for label, w, c, _ in breakdown(out2):
            print(f"    {label:32s} {w:5.2f} s")
        if results_table(out2) != table:
            print("  WARNING: the re-run's results table differs from the first run's")
        target(
            "main job re-run with nothing to do", wall2, "s", "<= 3", note=f"CPU {cpu2:.1f} s; before: 11 s"
        )
        if not args.quick:
            total, packages = import_profile([_demo(), str(data), "--repo", str(tmp / "imports"), "--serial"])
            pk = ", ".join(f"{p} {1000 * s:.0f}" for p, s in packages)
            print(f"main job imports (one process, --serial): {total:.2f} s   ({pk} ms)")
            target("main job imports (python -X importtime, summed)", total, "s", "", note=pk)
        print(
            json.dumps(
                {
                    "from_scratch_s": round(wall, 2),
                    "rerun_s": round(wall2, 2),
                    "load_average": round(os.getloadavg()[0], 2),
                }
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
