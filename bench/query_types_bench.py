"""query_datasets of many dataset types: one statement (the registry) vs one query per type.

The main job's dataset counts and its report ask for ~89 dataset types at once. The registry
answers such a call with one SELECT (`butler.registry._query.query_dataset_types`); the plain
computation it replaces runs one `DatasetQuery` per type. Both are timed in this process on
the same repository, alternating, and the best CPU time (user + system of the process) of
``--repeat`` calls is printed, with the load average: the figure a shared machine moves least.

Usage: ``python bench/query_types_bench.py [--types 89] [--repeat 7]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _toy_tasks as toy  # noqa: E402

from butler import Butler, DatasetType  # noqa: E402
from butler.registry._query import DatasetQuery  # noqa: E402


def make_repo(root: Path, n_types: int) -> list[str]:
    """Create a repository with ``n_types`` dataset types in one RUN; return their names.

    Two types in three have dimensions (exposure, detector) and 90 datasets (10 x 9), the
    others (exposure) and 10, as the main job's products and their metadata do.
    """
    Butler.create(root)
    b = Butler(root, writeable=True)
    toy.register_toy_dimensions(b, 10, 9)
    reg = b.registry
    reg.register_run("run")
    names = []
    for i in range(n_types):
        name = f"type{i:03d}"
        per_detector = bool(i % 3)
        dims = ("instrument", "exposure", "detector") if per_detector else ("instrument", "exposure")
        reg.register_dataset_type(DatasetType(name, dims, "NumpyArray"))
        ids = [
            {"instrument": toy.TOY_INSTRUMENT, "exposure": e, **({"detector": d} if per_detector else {})}
            for e in range(1, 11)
            for d in (range(9) if per_detector else [0])
        ]
        reg.insert_datasets(name, ids, "run")
        names.append(name)
    b.close()
    return names


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", type=int, default=89, help="dataset types per call (default 89)")
    parser.add_argument("--repeat", type=int, default=7, help="calls per variant; the best is kept")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ccdflow_query_types_"))
    try:
        names = make_repo(root / "repo", args.types)
        b = Butler(root / "repo", writeable=False)
        reg = b.registry

        def per_type() -> list:
            search = reg.managers.collections.search_path(["run"])
            out: list = []
            for name in names:
                dt = reg.managers.dataset_types.entry(name)[1]
                out += DatasetQuery(reg.managers, dt, search).run(find_first=False)
            return out

        def one_statement() -> list:
            return reg.query_datasets(names, collections=["run"], find_first=False)

        best = {"one query per type": float("inf"), "one statement": float("inf")}
        counts = {}
        for _ in range(args.repeat):
            for label, fn in (("one query per type", per_type), ("one statement", one_statement)):
                c = time.process_time()
                counts[label] = len(fn())
                best[label] = min(best[label], time.process_time() - c)
        assert counts["one query per type"] == counts["one statement"]
        n = counts["one statement"]
        print(f"query_datasets of {len(names)} dataset types ({n:,d} refs); load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for label, seconds in best.items():
            print(f"  {label:<20s} {1000 * seconds:7.1f} ms CPU (best of {args.repeat})")
        b.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
