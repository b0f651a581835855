"""Benchmark the butler's ``.npy`` reader against `numpy.load`.

    python bench/npy_read_bench.py [--repeat N]

`butler.datastore.formatters.NumpyFormatter` reads a version 1.0 ``.npy`` of a plain dtype by
matching its header with a regular expression and reading the data into the new array with one
``preadv``; anything else goes to `numpy.load`, which parses the header with `ast.literal_eval`.
This benchmark measures both (best of N per file, float64 arrays of 4 kB, 0.5 MB and 8 MB)
and prints whether the own reader is worth its ~40 lines: it is kept when it saves more than
20 % of a 0.5 MB read, the size of the butler benchmark's "get by ref" (~0.2 ms per dataset).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from butler.datastore.formatters import NumpyFormatter  # noqa: E402


def best(fn: Callable[[Path], object], path: Path, repeat: int) -> float:
    """Return the best wall time of ``fn(path)`` over ``repeat`` calls, in microseconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - t0)
    return min(times) * 1e6


def main() -> None:
    """Print one line per array size and the decision."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=500)
    args = parser.parse_args()
    butler_read = NumpyFormatter().read
    gain_half_mb = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'array':>12} {'numpy.load us':>14} {'butler us':>10} {'saved':>7}")
        for n in (512, 65536, 1048576):
            path = Path(tmp) / f"a{n}.npy"
            arr = np.random.default_rng(1).normal(size=n)
            np.save(path, arr)
            assert np.array_equal(np.load(path), butler_read(path, None))
            a = best(lambda p: np.load(p, allow_pickle=False), path, args.repeat)
            b = best(lambda p: butler_read(p, None), path, args.repeat)
            gain = (a - b) / a
            if n == 65536:
                gain_half_mb = gain
            print(f"{arr.nbytes / 1e6:>9.3f} MB {a:>14.1f} {b:>10.1f} {100 * gain:>6.0f}%")
    verdict = "keep the own reader" if gain_half_mb > 0.2 else "use numpy.load"
    print(f"0.5 MB read {100 * gain_half_mb:.0f} % faster than numpy.load: {verdict} (threshold 20 %)")


if __name__ == "__main__":
    main()
