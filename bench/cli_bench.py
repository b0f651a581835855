"""The toy workload through the command line, as users run it, beside the LSST middleware.

E exposures x D detectors of 512x512 uint16 raws; ``subtractMedian`` per (exposure, detector)
subtracts the median, ``gatherMedians`` per exposure gathers its detectors (`_toy_tasks`). Each
figure is a whole command in a fresh process, as typed:

- ``pipetask run`` of 100 quanta (10 x 9 + 10) and of 3,700 quanta (100 x 36 + 100): framework
  overhead per quantum = (wall - ``pipetask --help`` wall - the tasks' own compute) / quanta,
  the definition of the LSST comparison. The tasks' own compute is the time inside their
  ``run`` methods (``computeSeconds`` in their metadata); reading the inputs and writing the
  outputs count as framework;
- ``pipetask qgraph`` of 100 quanta, whole process;
- ``butler query-data-ids`` (3,600 rows) and ``butler query-dimension-records exposure``;
- the first ``query_data_ids`` call in a process (3,600 rows);
- each command's import time (``python -X importtime``, summed over the modules) and its
  largest packages.

The LSST column is the LSST stack (lsst-daf-butler / pipe-base / ctrl-mpexec 30.2026.4300)
measured on the same toy workload and machine class; it is not a dependency, so its figures are
constants here. Wall times are the median of several runs; CPU times (user + system of the
command) are printed beside them because a shared machine moves wall times.

Usage: ``python bench/cli_bench.py [--quick] [--repeat N] [--only PARTS]`` (``--only
qgraph,imports``: only ``pipetask qgraph`` and its import time); the last lines (``TARGET {...}``)
are what ``bench/run_all.py`` tabulates.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(HERE), os.environ.get("PYTHONPATH", "")] if p)

import _toy_tasks as toy  # noqa: E402

#: LSST figures of the same commands on the toy workload (the issue's measurements).
LSST = {
    "run100_overhead_ms": "58.8-63.2",
    "run100_wall_s": "8.23",
    "run3700_overhead_ms": "117",
    "qgraph100_wall_s": "1.94",
    "help_wall_s": "1.6",
    "first_query_ms": "6-21",
}
#: The parts of the benchmark (``--only``); ``help`` always runs (the run overheads subtract it).
PARTS = ("help", "qgraph", "run", "run-large", "queries", "first-query", "imports")
#: The part whose command each import profile is of.
IMPORT_PARTS = {
    "pipetask --help": "help",
    "pipetask qgraph": "qgraph",
    "pipetask run": "run",
    "butler query-data-ids": "queries",
    "butler query-dimension-records": "queries",
}
TASKS = [
    "-t",
    "_toy_tasks.SubtractMedianTask:subtractMedian",
    "-t",
    "_toy_tasks.GatherMediansTask:gatherMedians",
]


def target(
    name: str, value: float, unit: str, goal: str, lsst: str = "", ratio: float | None = None, note: str = ""
) -> None:
    """Print one machine-readable figure (``TARGET {json}``) for ``bench/run_all.py``.

    Parameters
    ----------
    name : `str`
        What was measured.
    value : `float`
        The figure, in ``unit``.
    unit : `str`
        ``ms``, ``s``, ``ms/quantum`` ...
    goal : `str`
        The target (``<= 3.9``).
    lsst : `str`
        The LSST figure in the same unit, if there is one.
    ratio : `float`, optional
        LSST / ccdflow.
    note : `str`
        Anything else worth a column.
    """
    print(
        "TARGET "
        + json.dumps(
            {
                "bench": "cli_bench",
                "name": name,
                "value": round(value, 4),
                "unit": unit,
                "target": goal,
                "lsst": lsst,
                "ratio": None if ratio is None else round(ratio, 1),
                "note": note,
            }
        ),
        flush=True,
    )


def _exe(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def timed(cmd: Sequence[str], *, repeat: int = 3, check: bool = True) -> tuple[float, float, list[float]]:
    """Run a command ``repeat`` times; return the median wall, median CPU (s) and all walls."""
    wall, cpu, walls, _ = timed_sys(cmd, repeat=repeat, check=check)
    return wall, cpu, walls


def timed_sys(
    cmd: Sequence[str], *, repeat: int = 3, check: bool = True
) -> tuple[float, float, list[float], float]:
    """Like `timed`, with the median kernel (system) CPU time (s) as a fourth value."""
    walls, cpus, syss = [], [], []
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(list(cmd), capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        syss.append(r1.ru_stime - r0.ru_stime)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return statistics.median(walls), statistics.median(cpus), walls, statistics.median(syss)


def fresh_write_cost(directory: Path, n_files: int = 48, size: int = 1 << 20) -> float:
    """Kernel cost of writing new files on this machine: ms per MB (best of three passes).

    Writes ``n_files`` new files of ``size`` bytes, as a quantum writes its output, and deletes
    them. On bare metal this is ~0.1-0.3 ms/MB (a copy into the page cache); on a virtual
    machine whose memory the host backs lazily, pages the guest has not touched recently cost a
    host page fault each, ~2 ms/MB, and the figure moves between runs. The run benchmarks'
    overhead includes this cost for every output, so it is printed beside them.
    """
    buf = os.urandom(size)
    best = float("inf")
    for k in range(3):
        paths = [directory / f".write_probe_{k}_{i}" for i in range(n_files)]
        t0 = time.perf_counter()
        for p in paths:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, buf)
            finally:
                os.close(fd)
        best = min(best, (time.perf_counter() - t0) * 1e3 / (n_files * size / 2**20))
        for p in paths:
            p.unlink()
    return best


def import_profile(cmd: Sequence[str], top: int = 6) -> tuple[float, list[tuple[str, float]]]:
    """Import time of a command: the sum of ``-X importtime`` self times (s), and its largest packages.

    Parameters
    ----------
    cmd : sequence of `str`
        A console script and its arguments (run as ``python -X importtime SCRIPT ...``).
    top : `int`
        How many top-level packages to list.

    Returns
    -------
    total : `float`
        Seconds spent importing (sum of the self times of every module).
    packages : `list` [`tuple` [`str`, `float`]]
        ``(top-level package, seconds)``, largest first (sum of self times of its modules).
    """
    proc = subprocess.run([sys.executable, "-X", "importtime", *cmd], capture_output=True, text=True)
    total = 0.0
    per: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m is None:
            continue
        self_s = int(m[1]) / 1e6
        total += self_s
        pkg = m[4].split(".")[0]
        per[pkg] = per.get(pkg, 0.0) + self_s
    return total, sorted(per.items(), key=lambda kv: -kv[1])[:top]


def _fmt_packages(packages: list[tuple[str, float]]) -> str:
    return ", ".join(f"{p} {1000 * s:.0f}" for p, s in packages)


def _find(tree: Any, key: str) -> float:
    """Return the value of ``key`` anywhere in a nested mapping (task metadata nests by task name)."""
    if isinstance(tree, dict):
        if key in tree:
            return float(tree[key])
        for value in tree.values():
            found = _find(value, key)
            if found == found:
                return found
    return float("nan")


def compute_seconds(repo: Path, run: str) -> tuple[float, float, int]:
    """Sum the tasks' own compute (``computeSeconds``) and time in ``runQuantum`` of a run's quanta (s)."""
    from butler import Butler

    b = Butler(repo, writeable=False)
    compute = in_run_quantum = 0.0
    n = 0
    for label in ("subtractMedian", "gatherMedians"):
        for ref in b.query_datasets(f"{label}_metadata", collections=[run]):
            md = b.get(ref)
            compute += _find(md["task"], "computeSeconds")
            in_run_quantum += float(md["quantum"]["runTime"])
            n += 1
    return compute, in_run_quantum, n


def bench_run(repo: Path, n_quanta_expected: int, help_wall: float, repeat: int, tag: str) -> dict[str, Any]:
    """``pipetask run`` of the whole toy graph of ``repo``, ``repeat`` times (new RUN each time)."""
    pipetask = _exe("pipetask")
    rows = []
    for k in range(repeat):
        run = f"bench/{tag}/{k}"
        cmd = [
            pipetask,
            "run",
            "-b",
            str(repo),
            *TASKS,
            "-i",
            toy.TOY_RAW_RUN,
            "--output-run",
            run,
            "--register-dataset-types",
            "--no-progress",
        ]
        wall, cpu, _, sys_s = timed_sys(cmd, repeat=1)
        compute, in_rq, n = compute_seconds(repo, run)
        if n != n_quanta_expected:
            raise RuntimeError(f"{tag}: {n} quanta ran, expected {n_quanta_expected}")
        rows.append(
            {
                "wall": wall,
                "cpu": cpu,
                "compute": compute,
                "in_run_quantum": in_rq,
                "n": n,
                "overhead_ms": 1000 * (wall - help_wall - compute) / n,
                "overhead_cpu_ms": 1000 * (cpu - compute) / n,
                "sys_ms": 1000 * sys_s / n,
            }
        )
    best = sorted(rows, key=lambda r: r["overhead_ms"])[len(rows) // 2]  # the median run
    best["all_overhead_ms"] = [r["overhead_ms"] for r in rows]
    return best


def report_overhead(
    r: dict[str, Any], what: str, goal: str, lsst: str, lsst_ms: float, write_ms: float
) -> None:
    """Print the framework overhead of a `bench_run` result and its ``TARGET`` line.

    Parameters
    ----------
    r : `dict`
        `bench_run`'s result (ms/quantum by wall and CPU, the kernel's share, every run).
    what : `str`
        The command, e.g. ``"pipetask run of 100 quanta"``.
    goal : `str`
        The target, ms/quantum.
    lsst, lsst_ms : `str`, `float`
        The LSST figure as printed and the value the ratio is taken against (ms/quantum).
    write_ms : `float`
        This machine's cost of writing new files (`fresh_write_cost`, ms/MB).
    """
    print(
        f"  framework overhead           {r['overhead_ms']:7.2f} ms/quantum "
        f"(runs: {', '.join(f'{x:.2f}' for x in r['all_overhead_ms'])}; by CPU {r['overhead_cpu_ms']:.2f}, "
        f"kernel {r['sys_ms']:.2f})   [LSST {lsst} ms; target <= {goal} ms]"
    )
    target(
        f"{what}, framework overhead",
        r["overhead_ms"],
        "ms/quantum",
        f"<= {goal}",
        lsst,
        lsst_ms / r["overhead_ms"],
        note=f"by CPU {r['overhead_cpu_ms']:.2f}, of which kernel {r['sys_ms']:.2f}; new-file writes "
        f"{write_ms:.2f} ms/MB",
    )


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
    parser.add_argument("--quick", action="store_true", help="64x64 images and a 20 x 9 'large' run.")
    parser.add_argument("--repeat", type=int, default=5, help="runs per small figure (median)")
    parser.add_argument(
        "--only",
        default="",
        metavar="PARTS",
        help="comma-separated parts to run (default: all): "
        + ", ".join(PARTS)
        + "; e.g. '--only qgraph,imports' "
        "times pipetask qgraph and its imports (with another part, 'imports' profiles that part's commands only)",
    )
    args = parser.parse_args(argv)
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    if only - set(PARTS):
        parser.error(f"unknown part(s) {sorted(only - set(PARTS))}; choose from {', '.join(PARTS)}")

    def want(part: str) -> bool:
        return not only or part in only

    import compileall

    # Time the commands as installed: with bytecode, also for the toy tasks' module (an installed
    # task package has it; without it every pipetask process compiled _toy_tasks.py, ~5 ms).
    for pkg in ("butler", "pipeline"):
        compileall.compile_dir(str(HERE.parent / pkg), quiet=1)
    compileall.compile_file(str(HERE / "_toy_tasks.py"), quiet=1)
    shape = (64, 64) if args.quick else (512, 512)
    big = (20, 9) if args.quick else (100, 36)
    repeat = 2 if args.quick else args.repeat
    tmp = Path(tempfile.mkdtemp(prefix="ccdflow_cli_bench_"))
    pipetask, butler_cli = _exe("pipetask"), _exe("butler")
    try:
        small, _ = toy.make_toy_repo(tmp / "small", 10, 9, shape=shape)
        needs_large = not only or bool(only & {"run-large", "queries", "first-query"}) or only == {"imports"}
        large = toy.make_toy_repo(tmp / "large", *big, shape=shape)[0] if needs_large else None
        small.close() if hasattr(small, "close") else None
        large.close() if large is not None and hasattr(large, "close") else None
        n_small, n_large = 10 * 9 + 10, big[0] * big[1] + big[0]
        write_ms = fresh_write_cost(tmp)
        print(
            f"toy workload: {shape[0]}x{shape[1]} uint16 raws; load average {os.getloadavg()[0]:.1f} "
            f"on {os.cpu_count()} cores at the start; writing new files costs {write_ms:.2f} ms/MB here "
            "(bare metal ~0.1-0.3)"
        )

        qgraph = [
            pipetask,
            "qgraph",
            "-b",
            str(tmp / "small"),
            *TASKS,
            "-i",
            toy.TOY_RAW_RUN,
            "--output-run",
            "bench/qgraph",
        ]
        where = f"instrument = '{toy.TOY_INSTRUMENT}'"
        qdi = [butler_cli, "query-data-ids", str(tmp / "large"), "exposure,detector", "-d", where]
        qdr = [butler_cli, "query-dimension-records", str(tmp / "large"), "exposure"]

        help_wall, help_cpu, _ = timed([pipetask, "--help"], repeat=max(repeat, 5))
        print(
            f"pipetask --help                {help_wall:7.3f} s wall, {help_cpu:.3f} s CPU   [LSST {LSST['help_wall_s']} s]"
        )
        target(
            "pipetask --help, whole process",
            help_wall,
            "s",
            "<= 0.3",
            LSST["help_wall_s"],
            float(LSST["help_wall_s"]) / help_wall,
        )

        if want("qgraph"):
            qg_wall, qg_cpu, _ = timed(qgraph, repeat=repeat)
            print(
                f"pipetask qgraph, 100 quanta    {qg_wall:7.3f} s wall, {qg_cpu:.3f} s CPU   "
                f"[LSST {LSST['qgraph100_wall_s']} s; target <= 0.32 s]"
            )
            target(
                "pipetask qgraph of 100 quanta, whole process",
                qg_wall,
                "s",
                "<= 0.32",
                LSST["qgraph100_wall_s"],
                float(LSST["qgraph100_wall_s"]) / qg_wall,
            )

        if want("run"):
            r = bench_run(tmp / "small", n_small, help_wall, repeat, "r100")
            print(
                f"pipetask run, 100 quanta       {r['wall']:7.3f} s wall, {r['cpu']:.3f} s CPU; tasks' compute "
                f"{r['compute']:.3f} s, in runQuantum {r['in_run_quantum']:.3f} s   [LSST {LSST['run100_wall_s']} s]"
            )
            target(
                "pipetask run of 100 quanta, whole process",
                r["wall"],
                "s",
                "",
                LSST["run100_wall_s"],
                float(LSST["run100_wall_s"]) / r["wall"],
            )
            report_overhead(r, "pipetask run of 100 quanta", "3.9", LSST["run100_overhead_ms"], 61.0, write_ms)

        if want("run-large"):
            rl = bench_run(tmp / "large", n_large, help_wall, 1, "rbig")
            print(
                f"pipetask run, {n_large:,d} quanta   {rl['wall']:7.2f} s wall, {rl['cpu']:.2f} s CPU; tasks' compute "
                f"{rl['compute']:.2f} s, in runQuantum {rl['in_run_quantum']:.2f} s"
            )
            report_overhead(
                rl, f"pipetask run of {n_large:,d} quanta", "2.3", LSST["run3700_overhead_ms"], 117.0, write_ms
            )

        if want("queries"):
            qdi_wall, qdi_cpu, _ = timed(qdi, repeat=repeat)
            print(
                f"butler query-data-ids ({big[0] * big[1]:,d} rows)  {qdi_wall:7.3f} s wall, {qdi_cpu:.3f} s CPU   "
                "[target <= 0.2 s]"
            )
            target(f"butler query-data-ids CLI ({big[0] * big[1]:,d} rows)", qdi_wall, "s", "<= 0.2")
            qdr_wall, qdr_cpu, _ = timed(qdr, repeat=repeat)
            print(
                f"butler query-dimension-records exposure ({big[0]} rows)  {qdr_wall:7.3f} s wall, "
                f"{qdr_cpu:.3f} s CPU   [target <= 0.2 s]"
            )
            target("butler query-dimension-records CLI", qdr_wall, "s", "<= 0.2")

        if want("first-query"):
            probe = (
                "import time, sys; from butler import Butler; b = Butler(sys.argv[1], writeable=False); "
                "t = time.perf_counter(); c = time.process_time(); "
                "n = len(list(b.registry.query_data_ids(['exposure', 'detector'], where=sys.argv[2]))); "
                "print(n, 1000 * (time.perf_counter() - t), 1000 * (time.process_time() - c))"
            )
            firsts = []
            for _ in range(repeat):
                out = subprocess.run(
                    [sys.executable, "-c", probe, str(tmp / "large"), where],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()
                firsts.append((float(out[1]), float(out[2]), int(out[0])))
            fw = statistics.median(f[0] for f in firsts)
            fc = statistics.median(f[1] for f in firsts)
            print(
                f"first query_data_ids in a process ({firsts[0][2]:,d} rows)  {fw:7.1f} ms wall, {fc:.1f} ms CPU   "
                f"[LSST {LSST['first_query_ms']} ms; target <= 10 ms]"
            )
            target(
                f"first query_data_ids call in a process ({firsts[0][2]:,d} rows)",
                fw,
                "ms",
                "<= 10",
                LSST["first_query_ms"],
                13.5 / fw,
            )

        if want("imports"):
            print("import time per command (python -X importtime, sum of self times; largest packages, ms):")
        commands = {
            "pipetask --help": [pipetask, "--help"],
            "pipetask qgraph": qgraph,
            "pipetask run": [
                pipetask,
                "run",
                "-b",
                str(tmp / "small"),
                *TASKS,
                "-i",
                toy.TOY_RAW_RUN,
                "--output-run",
                "bench/imports",
                "--register-dataset-types",
                "--no-progress",
            ],
            "butler query-data-ids": qdi,
            "butler query-dimension-records": qdr,
        }
        for name, cmd in commands.items():
            if not want("imports") or (only - {"imports"} and IMPORT_PARTS[name] not in only):
                continue
            total, packages = import_profile(cmd)
            print(f"  {name:32s} {1000 * total:6.0f} ms   ({_fmt_packages(packages)})")
            target(f"imports of {name}", 1000 * total, "ms", "", note=_fmt_packages(packages[:4]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
