"""Run every ccdflow benchmark, write ``bench/RESULTS.md`` and tabulate the speed targets.

Usage::

    python bench/run_all.py [--quick] [--only NAME ...] [--scale] [--update-readme]
    python bench/run_all.py --tables-only [--update-readme]     # re-tabulate bench/RESULTS.md

Each benchmark is a script in ``bench/`` that prints its figures; this runs them one after the
other in fresh interpreters (so start-up and peak memory are their own), writes their output with
the machine description and the date into ``bench/RESULTS.md``, and prints the table of targets:
each figure with its target, the LSST figure where the LSST stack was measured on the same
workload, and the ratio LSST / ccdflow. ``--update-readme`` writes that table into ``README.md``
and ``docs/benchmarks.md`` between the ``<!-- bench-table:begin -->`` / ``<!-- bench-table:end -->``
comments.

A benchmark reports a figure for the table with a line ``TARGET {json}`` (keys ``name``,
``value``, ``unit``, ``target``, ``lsst``, ``ratio``, ``note``); the figures of the benchmarks that
print plain lines are read with the patterns in `PATTERNS`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
BENCHMARKS = [
    "cli_bench",
    "main_job_bench",
    "butler_bench",
    "pipeline_bench",
    "isr_bench",
    "ptc_bench",
    "ingest_bench",
    "transfer_bench",
    "parsl_bench",
]
BEGIN, END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"


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


def _row(
    name: str,
    value: float,
    unit: str,
    target: str = "",
    lsst: str = "",
    ratio: float | None = None,
    note: str = "",
) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "target": target,
        "lsst": lsst,
        "ratio": ratio,
        "note": note,
    }


def _isr(m: re.Match[str]) -> list[dict[str, Any]]:
    return [
        _row("full ISR of a 16-amp 4072 x 4000 detector, one core", float(m[1]), "s", "<= 0.2"),
        _row(
            "ISR speed-up over ccdproc on the same steps (dark and flat variances propagated, as IsrTask)",
            float(m[2]),
            "x",
            ">= 6",
        ),
        _row("ISR peak memory / float32 image", float(m[3]), "x", "<= 4"),
    ]


def _ptc(m: re.Match[str]) -> list[dict[str, Any]]:
    return [_row("PTC extract of one flat pair (16 amps, lag 8), one thread", float(m[1]), "s", "<= 0.4")]


def _big(m: re.Match[str]) -> list[dict[str, Any]]:
    n = int(m[1])
    at = "" if n >= 1_000_000 else " at 10^6 quanta"
    wrap = (lambda t: t) if not at else (lambda t: f"({t}{at})")  # not compared below 10^6 quanta
    return [
        _row(f"{n:,d}-quantum graph: build", float(m[2]), "s", wrap("<= 90")),
        _row(f"{n:,d}-quantum graph: peak memory", float(m[3]), "MB", wrap("<= 4000")),
        _row(f"{n:,d}-quantum graph: save", float(m[4]), "s", wrap("<= 10")),
        _row(f"{n:,d}-quantum graph: load", float(m[5]), "s", wrap("<= 10")),
    ]


#: Plain-text figures of benchmarks without ``TARGET`` lines: (benchmark, pattern, rows from the match).
PATTERNS: list[tuple[str, str, Callable[[re.Match[str]], list[dict[str, Any]]]]] = [
    (
        "isr_bench",
        r"^16-amp \S+\s+\d+\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)x/.*?"
        r"([\d.]+)\s*$",
        _isr,
    ),
    (
        "isr_bench",
        r"^  16-amp \S+: ccdproc without the dark and flat uncertainties .*= ([\d.]+)x ccdflow full",
        lambda m: [
            _row(
                "ISR speed-up over ccdproc without the dark and flat variances (not the same steps)",
                float(m[1]),
                "x",
                "",
                note="reference only: ccdproc skips the dark and flat variances IsrTask propagates",
            )
        ],
    ),
    ("ptc_bench", r"^extract: 16 amps.*numThreads=1: ([\d.]+) s per pair", _ptc),
    (
        "pipeline_bench",
        r"^big graph .*?: (\d+) quanta built in ([\d.]+) s .*peak RSS (\d+) MB, saved in ([\d.]+) s"
        r".*loaded in ([\d.]+) s",
        _big,
    ),
]


def extract_targets(name: str, output: str) -> list[dict[str, Any]]:
    """Return the table rows of one benchmark's output.

    Parameters
    ----------
    name : `str`
        Benchmark name (``cli_bench``).
    output : `str`
        Its standard output.

    Returns
    -------
    rows : `list` [`dict`]
        ``name``, ``value``, ``unit``, ``target``, ``lsst``, ``ratio``, ``note`` and ``bench``.
    """
    rows = []
    for line in output.splitlines():
        if line.startswith("TARGET {"):
            try:
                row = json.loads(line[len("TARGET ") :])
            except json.JSONDecodeError:
                continue
            rows.append(
                {
                    **_row(row.get("name", "?"), row.get("value", float("nan")), row.get("unit", "")),
                    **{k: row[k] for k in ("target", "lsst", "ratio", "note") if row.get(k) is not None},
                }
            )
    if not rows:
        for bench, pattern, make in PATTERNS:
            if bench != name:
                continue
            for line in output.splitlines():
                m = re.search(pattern, line)
                if m:
                    rows += make(m)
                    break
    for row in rows:
        row["bench"] = name
    return rows


def _value(row: dict[str, Any]) -> str:
    v = float(row["value"])
    unit = row["unit"]
    text = f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"
    return f"{text} {unit}".strip()


def _met(row: dict[str, Any]) -> str:
    m = re.match(r"\s*(<=|>=)\s*([\d.]+)", str(row.get("target") or ""))
    if m is None:
        return ""
    ok = float(row["value"]) <= float(m[2]) if m[1] == "<=" else float(row["value"]) >= float(m[2])
    return "yes" if ok else "no"


def format_table(rows: Sequence[dict[str, Any]], markdown: bool) -> str:
    """Render the targets as a Markdown table or as aligned text.

    Parameters
    ----------
    rows : sequence of `dict`
        From `extract_targets`.
    markdown : `bool`
        Markdown (README, docs) or plain text (terminal).

    Returns
    -------
    text : `str`
    """
    head = ["benchmark", "figure", "ccdflow", "target", "met", "LSST", "LSST / ccdflow", "note"]
    cells = []
    for r in rows:
        ratio = r.get("ratio")
        cells.append(
            [
                f"`{r['bench']}`" if markdown else r["bench"],
                r["name"],
                _value(r),
                str(r.get("target") or ""),
                _met(r),
                str(r.get("lsst") or ""),
                f"{ratio:.1f}x" if ratio else "",
                str(r.get("note") or ""),
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def update_markdown(path: Path, table: str, stamp: str) -> bool:
    """Replace the text between the bench-table markers of a Markdown file.

    Parameters
    ----------
    path : `pathlib.Path`
        ``README.md`` or ``docs/benchmarks.md``.
    table : `str`
        The Markdown table.
    stamp : `str`
        One line saying when and where it was measured.

    Returns
    -------
    updated : `bool`
        False if the file has no markers (it is left alone).
    """
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{stamp}\n\n{table}\n{END}{tail}", encoding="utf-8")
    return True


def parse_results(text: str) -> tuple[dict[str, str], str]:
    """Split a ``bench/RESULTS.md`` into each benchmark's output, and its date/machine line."""
    outputs = {}
    for m in re.finditer(r"^## (\S+)\n\nCommand: [^\n]*\n\n```\n(.*?)\n```", text, re.S | re.M):
        outputs[m[1]] = m[2]
    date = re.search(r"^Date: (.*?)\s*$", text, re.M)
    machine = re.search(r"^Machine: (.*?)\s*$", text, re.M)
    stamp = f"Measured {date[1] if date else '?'} on {machine[1] if machine else '?'} by `python bench/run_all.py`."
    return outputs, stamp


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, write the results file and print the table of targets.

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
    parser.add_argument(
        "--scale",
        action="store_true",
        help="pass --scale to pipeline_bench: the 1,007,000-quantum graph targets (~5 min more, ~3 GB)",
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument(
        "--update-readme",
        action="store_true",
        help="write the table of targets into README.md and docs/benchmarks.md",
    )
    parser.add_argument(
        "--tables-only", action="store_true", help="run nothing: tabulate the outputs already in --output"
    )
    args = parser.parse_args(argv)
    status = 0
    if args.tables_only:
        outputs, stamp = parse_results(args.output.read_text(encoding="utf-8"))
    else:
        outputs = {}
        names = args.only or BENCHMARKS
        sections = []
        for name in names:
            script = BENCH_DIR / f"{name}.py"
            if not script.exists():
                sections.append(f"## {name}\n\n(not present)\n")
                continue
            extra = ["--scale"] if args.scale and name == "pipeline_bench" else []
            cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else []) + extra
            print(f"$ {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            print(proc.stdout, end="", flush=True)
            if proc.returncode != 0:
                status = 1
                print(proc.stderr[-4000:], file=sys.stderr)
            body = proc.stdout.strip() or "(no output)"
            outputs[name] = body
            tail = (
                ""
                if proc.returncode == 0
                else f"\n\nFAILED (exit {proc.returncode}):\n```\n{proc.stderr[-2000:]}\n```"
            )
            sections.append(
                f"## {name}\n\nCommand: `python bench/{' '.join([f'{name}.py', *cmd[2:]])}` "
                f"({wall:.1f} s)\n\n```\n{body}\n```{tail}\n"
            )
        date = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}"
        stamp = f"Measured {date} on {machine_description()} by `python bench/run_all.py`."
        rows = [r for name in names for r in extract_targets(name, outputs.get(name, ""))]
        header = (
            "# ccdflow benchmark results\n\n"
            f"Date: {date}  \n"
            f"Machine: {machine_description()}  \n"
            f"Produced by: `python bench/run_all.py{' --quick' if args.quick else ''}`\n\n"
            f"## Targets\n\n{format_table(rows, markdown=True)}\n\n"
        )
        args.output.write_text(header + "\n".join(sections))
        print(f"wrote {args.output}")
    rows = [r for name in (args.only or BENCHMARKS) for r in extract_targets(name, outputs.get(name, ""))]
    print("\n" + format_table(rows, markdown=False))
    if args.update_readme:
        table = format_table(rows, markdown=True)
        for path in (ROOT / "README.md", ROOT / "docs" / "benchmarks.md"):
            if update_markdown(path, table, stamp):
                print(f"updated the table in {path.relative_to(ROOT)}")
            else:
                print(f"{path.relative_to(ROOT)} has no {BEGIN} / {END} markers: left alone")
    return status


if __name__ == "__main__":
    sys.exit(main())
