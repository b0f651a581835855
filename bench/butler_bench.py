"""Butler benchmark: put/get of 0.5 MB numpy datasets, queries over 3,600 and 100,000 datasets, CLI time.

Usage::

    python bench/butler_bench.py [--quick] [--keep DIR]
    python bench/butler_bench.py --ab OTHER_CHECKOUT [--rounds N]

Prints one line per figure (milliseconds unless stated). ``--ab`` compares this checkout with
another one (e.g. the pre-restructuring tree) back to back on the per-call figures (put, get by
ref, get by data ID, register_outputs, ``butler --help``): each round runs both trees in fresh
processes, alternating which goes first, and the table holds the best CPU time (user + system)
of all rounds, the figure least moved by other load on a shared machine.

LSST figures on the same machine class (middleware-reference §10): put 4-12 ms, get by data ID
3.5-8 ms, get by ref 0.4-0.8 ms, CLI query ~1.5 s. Our targets: put <= 1.5 ms, get by data ID
<= 0.5 ms, query over 100,000 datasets <= 100 ms, CLI query <= 0.4 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parents[1]


def _tree_argument(argv: list[str]) -> Path:
    """Return the checkout to import ``butler`` from: ``--tree DIR`` (for ``--ab``), else this one."""
    if "--tree" in argv:
        return Path(argv[argv.index("--tree") + 1]).resolve()
    return HERE


TREE = _tree_argument(sys.argv)
sys.path.insert(0, str(TREE))

from butler import Butler, DatasetType, Timespan  # noqa: E402

N_DET = 36


def _fill(butler: Butler, n_exposures: int) -> None:
    import astropy.units as u
    from astropy.time import Time

    reg = butler.registry
    reg.insert_dimension_data("instrument", {"name": "bench", "class_name": "", "detector_max": N_DET})
    reg.insert_dimension_data("physical_filter", {"instrument": "bench", "name": "r_01", "band": "r"})
    reg.insert_dimension_data(
        "detector",
        *[
            {"instrument": "bench", "id": d, "full_name": f"S{d:03d}", "purpose": "SCIENCE"}
            for d in range(N_DET)
        ],
    )
    reg.insert_dimension_data("day_obs", {"instrument": "bench", "id": 20250101})
    t0 = Time("2025-01-01T20:00:00", scale="tai")
    begin = [t0 + i * 60 * u.s for i in range(n_exposures)]
    reg.insert_dimension_data(
        "exposure",
        *[
            {
                "instrument": "bench",
                "id": i,
                "obs_id": f"BE_{i:06d}",
                "physical_filter": "r_01",
                "day_obs": 20250101,
                "exposure_time": 15.0,
                "dark_time": 15.0,
                "observation_type": "flat" if i % 2 else "bias",
                "timespan": Timespan(begin[i], begin[i] + 30 * u.s),
            }
            for i in range(n_exposures)
        ],
    )
    reg.register_dataset_type(DatasetType("arr", ["exposure", "detector"], "NumpyArray"))


class _Clock:
    """Wall and CPU (user + system of this process) time of a block, per item, in ms."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> _Clock:
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = (time.perf_counter() - self.w) / self.n * 1e3
        self.cpu = (time.process_time() - self.c) / self.n * 1e3

    def __str__(self) -> str:
        return f"{self.wall:8.3f} ms/dataset wall, {self.cpu:6.3f} CPU"


def bench_put_get(root: Path, n: int) -> None:
    """Print put, get by ref, get by data ID and find_dataset of ``n`` 0.5 MB arrays."""
    b = Butler.create(root / "putget")
    _fill(b, max(2, n // N_DET + 1))
    arr = np.random.default_rng(1).normal(size=(256, 256))  # 0.5 MB float64
    ids = [(i // N_DET, i % N_DET) for i in range(n)]
    b.put(arr, "arr", instrument="bench", exposure=0, detector=0, run="warm")
    with _Clock(n) as put:
        refs = [
            b.put(arr, "arr", instrument="bench", exposure=e, detector=d, run="bench/run") for e, d in ids
        ]
    # File write alone, for reference (same formatter, same sizes).
    fw = root / "filewrite"
    fw.mkdir()
    with _Clock(n) as write:
        for i in range(n):
            with open(fw / f"{i}.npy", "wb") as f:
                np.save(f, arr)
    b.close()
    b = Butler(root / "putget", collections=["bench/run"])
    b.get(refs[0])
    with _Clock(n) as by_ref:
        for r in refs:
            b.get(r)
    with _Clock(n) as by_id:
        for e, d in ids:
            b.get("arr", instrument="bench", exposure=e, detector=d)
    with _Clock(n) as find:
        for e, d in ids:
            b.find_dataset("arr", instrument="bench", exposure=e, detector=d)
    print(
        f"put 0.5 MB numpy        {put}   (np.save alone {write.wall:.3f} wall / {write.cpu:.3f} CPU)"
        "  [LSST 4-12 ms; target <= 1.5]"
    )
    print(f"get by ref              {by_ref}   [LSST 0.4-0.8 ms]")
    print(
        f"get by data ID          {by_id}   (registry lookup alone {find.wall:.3f} wall / {find.cpu:.3f} CPU)"
        "  [LSST 3.5-8 ms; target <= 0.5]"
    )
    b.close()


def bench_register_outputs(root: Path, n: int) -> None:
    """Time the pipeline driver's hot path: register outputs that workers wrote, in one transaction."""
    from butler import DatasetRef, StoredFileInfo

    b = Butler.create(root / "outputs")
    _fill(b, n // N_DET + 1)
    dt = b.registry.get_dataset_type("arr")
    items = []
    for i in range(n):
        did = b.registry.expand_data_id(
            instrument="bench", exposure=i // N_DET, detector=i % N_DET, dimensions=dt.dimensions
        )
        items.append(
            (
                DatasetRef(dt, did, "pipe/run"),
                StoredFileInfo(
                    f"pipe/run/arr/{i}.npy",
                    "butler.datastore.formatters.NumpyFormatter",
                    "NumpyArray",
                    None,
                    524416,
                ),
            )
        )
    with _Clock(n) as reg:
        b.register_outputs(items)
    print(f"register_outputs ({n:,d} in one transaction) {reg}")
    b.close()


def _registry_repo(root: Path, name: str, n_datasets: int) -> Butler:
    b = Butler.create(root / name)
    n_exp = (n_datasets + N_DET - 1) // N_DET
    _fill(b, n_exp)
    data_ids = [
        {"instrument": "bench", "exposure": i // N_DET, "detector": i % N_DET} for i in range(n_datasets)
    ]
    b.registry.register_run("bench/run")
    t = time.perf_counter()
    for i in range(0, n_datasets, 20000):
        b.registry.insert_datasets("arr", data_ids[i : i + 20000], "bench/run")
    print(f"  (registered {n_datasets} datasets in {time.perf_counter() - t:.2f} s)")
    return b


def _time(fn, repeat: int = 3) -> tuple[str, int]:
    fn()
    walls, cpus = [], []
    n = 0
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        n = len(fn())
        walls.append((time.perf_counter() - t) * 1e3)
        cpus.append((time.process_time() - c) * 1e3)
    return f"{statistics.median(walls):7.1f} ms wall / {statistics.median(cpus):6.1f} CPU", n


def bench_queries(root: Path, n_datasets: int, label: str) -> Path:
    """Print query_datasets and query_data_ids over ``n_datasets``; return the repository."""
    b = _registry_repo(root, label, n_datasets)
    b.close()
    b = Butler(root / label, collections=["bench/run"])
    ms_all, n_all = _time(lambda: b.query_datasets("arr"))
    ms_det, n_det = _time(
        lambda: b.query_datasets("arr", where="detector = 7 AND exposure.observation_type = 'flat'")
    )
    ms_exp, n_exp = _time(lambda: b.query_datasets("arr", where="exposure = 42"))
    print(f"query_datasets over {n_datasets:>7,d}: all ({n_all:,d} refs, expanded)  {ms_all}")
    print(f"query_datasets over {n_datasets:>7,d}: detector = 7 AND flat ({n_det:,d})  {ms_det}")
    print(f"query_datasets over {n_datasets:>7,d}: exposure = 42 ({n_exp})  {ms_exp}   [target <= 100 ms]")
    ms_ids, n_ids = _time(
        lambda: b.query_data_ids(["exposure", "detector"], datasets=["arr"], collections=["bench/run"])
    )
    flat = "exposure.observation_type = 'flat'"
    ms_flat, n_flat = _time(
        lambda: b.query_data_ids(["exposure"], datasets=["arr"], collections=["bench/run"], where=flat)
    )
    print(
        f"query_data_ids over {n_datasets:>7,d}: exposure,detector with arr ({n_ids:,d}, expanded)  {ms_ids}"
    )
    print(f"query_data_ids over {n_datasets:>7,d}: exposure with arr, flat ({n_flat:,d})  {ms_flat}")
    b.close()
    return root / label


def bench_cli(repo: Path) -> None:
    """Print whole-process times of the query commands and of ``butler --help``."""
    # Time the CLI as installed: with bytecode, even when PYTHONDONTWRITEBYTECODE is set here
    # (otherwise every run recompiles the ccdflow sources, ~0.1 s).
    import compileall

    for pkg in ("butler", "pipeline"):
        compileall.compile_dir(str(Path(__file__).resolve().parents[1] / pkg), quiet=1)
    exe = Path(sys.executable).with_name("butler")
    cmd = [
        str(exe),
        "query-datasets",
        str(repo),
        "arr",
        "--collections",
        "bench/run",
        "--where",
        "exposure = 42",
    ]
    subprocess.run(cmd, check=True, capture_output=True)

    def timed(c: list[str]) -> tuple[float, float]:
        walls, cpus = [], []
        for _ in range(3):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run(c, check=True, capture_output=True)
            walls.append(time.perf_counter() - t)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        return statistics.median(walls), statistics.median(cpus)

    wall, cpu = timed(cmd)
    print(f"butler query-datasets CLI  {wall:8.3f} s wall, {cpu:.3f} s CPU   [LSST ~1.5 s; target <= 0.4 s]")
    os.environ["BUTLER_CLI_FAST"] = "0"
    try:
        wall, cpu = timed(cmd)
    finally:
        del os.environ["BUTLER_CLI_FAST"]
    print(f"  same, SQLAlchemy registry path (BUTLER_CLI_FAST=0)  {wall:8.3f} s wall, {cpu:.3f} s CPU")
    queries = [
        ("query-dimension-records", ["exposure", "--where", "exposure.observation_type = 'flat'"]),
        ("query-data-ids", ["exposure", "detector", "--where", "detector = 7 AND exposure < 100"]),
    ]
    for name, extra in queries:
        c = [str(exe), name, str(repo), *extra]
        subprocess.run(c, check=True, capture_output=True)
        wall, cpu = timed(c)
        print(f"butler {name} CLI  {wall:8.3f} s wall, {cpu:.3f} s CPU   [target <= 0.2 s]")
        os.environ["BUTLER_CLI_FAST"] = "0"
        try:
            wall, cpu = timed(c)
        finally:
            del os.environ["BUTLER_CLI_FAST"]
        print(f"  same, SQLAlchemy registry path (BUTLER_CLI_FAST=0)  {wall:8.3f} s wall, {cpu:.3f} s CPU")
    wall, cpu = timed([str(exe), "--help"])
    print(f"butler --help              {wall:8.3f} s wall, {cpu:.3f} s CPU   [target <= 0.3 s]")
    print(
        f"(load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores;"
        " wall times scale with it)"
    )


def _best(fn, n: int, repeat: int) -> tuple[float, float]:
    """Best CPU and best wall time per item (ms) of ``repeat`` calls of ``fn(k)`` doing ``n`` items."""
    cpus, walls = [], []
    for k in range(repeat):
        with _Clock(n) as c:
            fn(k)
        cpus.append(c.cpu)
        walls.append(c.wall)
    return min(cpus), min(walls)


def _help_time(tree: Path, repeat: int) -> tuple[float, float]:
    """Best CPU and wall time (s) of a whole ``butler --help`` process importing ``tree``."""
    exe = Path(sys.executable).with_name("butler")
    env = dict(os.environ, PYTHONPATH=str(tree))
    subprocess.run([str(exe), "--help"], check=True, capture_output=True, env=env)
    cpus, walls = [], []
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run([str(exe), "--help"], check=True, capture_output=True, env=env)
        walls.append(time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    return min(cpus), min(walls)


def core_figures(root: Path, n: int = 200, n_outputs: int = 2000, repeat: int = 3) -> dict[str, list[float]]:
    """Measure the per-call figures of ``--ab``: ``{name: [best CPU, best wall]}`` (ms; s for --help).

    ``butler`` is imported from `TREE`; every figure uses only API both trees have.
    """
    from butler import DatasetRef, StoredFileInfo

    out: dict[str, list[float]] = {}
    b = Butler.create(root / "core")
    _fill(b, max(2, n // N_DET + 1) + n_outputs // N_DET + 1)
    arr = np.random.default_rng(1).normal(size=(256, 256))  # 0.5 MB float64
    ids = [(i // N_DET, i % N_DET) for i in range(n)]
    b.put(arr, "arr", instrument="bench", exposure=0, detector=0, run="warm")
    refs: list[Any] = []

    def put(k: int) -> None:
        refs[:] = [
            b.put(arr, "arr", instrument="bench", exposure=e, detector=d, run=f"bench/run{k}") for e, d in ids
        ]

    out["put 0.5 MB (ms)"] = list(_best(put, n, repeat))
    b.close()
    b = Butler(root / "core", collections=[f"bench/run{repeat - 1}"])
    b.get(refs[0])

    # Each result is dropped before the next get, as in a loop over datasets (keeping them all
    # would add the page faults of fresh memory to every read).
    def by_ref(k: int) -> None:
        for r in refs:
            b.get(r)

    def by_id(k: int) -> None:
        for e, d in ids:
            b.get("arr", instrument="bench", exposure=e, detector=d)

    def find(k: int) -> None:
        for e, d in ids:
            b.find_dataset("arr", instrument="bench", exposure=e, detector=d)

    out["get by ref (ms)"] = list(_best(by_ref, n, repeat))
    out["get by data ID (ms)"] = list(_best(by_id, n, repeat))
    out["find_dataset (ms)"] = list(_best(find, n, repeat))
    dt = b.registry.get_dataset_type("arr")
    first = n // N_DET + 1
    dids = [
        b.registry.expand_data_id(
            instrument="bench", exposure=first + i // N_DET, detector=i % N_DET, dimensions=dt.dimensions
        )
        for i in range(n_outputs)
    ]

    def register(k: int) -> None:
        items = [
            (
                DatasetRef(dt, did, f"pipe/run{k}"),
                StoredFileInfo(
                    f"pipe/run{k}/arr/{i}.npy",
                    "butler.datastore.formatters.NumpyFormatter",
                    "NumpyArray",
                    None,
                    524416,
                ),
            )
            for i, did in enumerate(dids)
        ]
        b.register_outputs(items)

    out["register_outputs (ms/dataset)"] = list(_best(register, n_outputs, repeat))
    b.close()
    out["butler --help (s)"] = list(_help_time(TREE, 2 * repeat))
    return out


def _default_scratch() -> str | None:
    """Return ``/dev/shm`` where it is a writable directory (a RAM file system), else `None`."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def ab(other: Path, rounds: int, scratch: str | None) -> None:
    """Compare ``other`` (A) with this checkout (B) back to back; print a Markdown table.

    The repositories are made under ``scratch`` (default ``/dev/shm``): on a disk, the writeback
    of the 0.5 MB files of earlier rounds lands in later ones (single loops of the same puts
    differed by up to 2x).
    """
    import compileall
    import json

    trees = {"A": other.resolve(), "B": HERE}
    for tree in trees.values():
        for pkg in ("butler", "pipeline", "registry_schema"):
            compileall.compile_dir(str(tree / pkg), quiet=1)
    best: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    loads = []
    for r in range(rounds):
        for label in ("A", "B") if r % 2 == 0 else ("B", "A"):
            loads.append(os.getloadavg()[0])
            res = subprocess.run(
                [sys.executable, __file__, "--core", "--tree", str(trees[label])]
                + (["--scratch", scratch] if scratch else []),
                check=True,
                capture_output=True,
                text=True,
            )
            figures = json.loads(res.stdout.strip().splitlines()[-1])
            for name, (cpu, wall) in figures.items():
                old = best[label].get(name)
                best[label][name] = [cpu, wall] if old is None else [min(old[0], cpu), min(old[1], wall)]
    print(f"A = {trees['A']}, B = {trees['B']}; best of {rounds} rounds x 3 (CPU user+sys; wall)")
    print(f"repositories under {scratch or tempfile.gettempdir()}")
    print(f"load average during the runs: {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")
    print("| figure | A CPU | B CPU | B/A CPU | A wall | B wall |")
    print("|---|---|---|---|---|---|")
    for name in best["A"]:
        a, b = best["A"][name], best["B"][name]
        print(f"| {name} | {a[0]:.3f} | {b[0]:.3f} | {b[0] / a[0]:.2f} | {a[1]:.3f} | {b[1]:.3f} |")


def main() -> None:
    """Run the benchmark (or the ``--ab`` comparison)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small sizes (a few seconds).")
    parser.add_argument("--keep", default=None, help="Keep the repositories in this directory.")
    parser.add_argument("--ab", default=None, metavar="CHECKOUT", help="Compare with another checkout.")
    parser.add_argument("--rounds", type=int, default=5, help="Rounds of --ab (default 5).")
    parser.add_argument("--tree", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--core", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--scratch",
        default=None,
        help="Directory for the --ab repositories (default /dev/shm, a RAM file system, where present).",
    )
    args = parser.parse_args()
    if args.ab:
        ab(Path(args.ab), args.rounds, args.scratch or _default_scratch())
        return
    if args.core:
        import json

        with tempfile.TemporaryDirectory(prefix="butler_bench_", dir=args.scratch) as tmp:
            print(json.dumps(core_figures(Path(tmp))))
        return
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="butler_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        print(f"butler benchmark ({'quick' if args.quick else 'full'}), repositories under {root}")
        bench_put_get(root, 100 if args.quick else 500)
        bench_register_outputs(root, 1000 if args.quick else 10_000)
        repo = bench_queries(root, 3600, "q3600")
        bench_queries(root, 20_000 if args.quick else 100_000, "qbig")
        bench_cli(repo)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
