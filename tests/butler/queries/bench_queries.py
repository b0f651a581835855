"""Benchmark of the query-expression parser and compiler (prints figures; not a test).

Run ``python tests/butler/queries/bench_queries.py [--quick]``. Figures are CPU time per call
(``time.process_time``), best of several rounds, so other processes on a shared machine
disturb them less than wall time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

EXPRESSIONS = {
    "short": "instrument = 'kast_blue' AND exposure.observation_type = 'bias'",
    "typical": "instrument = 'kast_blue' AND exposure IN (1..20:2, 30) AND detector != 3 "
    "AND exposure.observation_type = 'flat'",
    "time": "instrument = 'kast_blue' AND exposure.timespan OVERLAPS (T'2022-01-26T19:00:00', T'2022-01-27')",
}


def best_cpu(fn, n: int, rounds: int) -> float:
    """Best-of-``rounds`` CPU seconds per call of ``fn`` over ``n`` calls."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best


def main() -> None:
    """Print parser/compiler timings for a few typical expressions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    n, rounds = (200, 3) if args.quick else (2000, 5)

    here = Path(__file__).resolve().parent
    code = (
        "import time; t0 = time.perf_counter(); import butler.registry.queries as q; "
        "t1 = time.perf_counter();"
        'q.parse_expression("a = 1"); t2 = time.perf_counter();'
        "print(f'{1e3*(t1-t0):.0f} {1e3*(t2-t1):.1f}')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    print(
        f"import butler.registry.queries (new process): {out[0]} ms; "
        f"first parse (builds/loads lark tables): {out[1]} ms"
    )

    sys.path.insert(0, str(here.parent))
    from queries.conftest import FakeResolver, make_table  # noqa: E402

    from butler.registry.queries import _parser, compile_expression, parse_expression
    from butler.registry.queries._compiler import _Compiler

    table = make_table("bench")
    resolver = FakeResolver(table)
    print(
        f"{'expression':>10} {'chars':>5} {'parse':>10} {'compile':>10} {'parse+compile':>14} "
        f"{'repeat (cached)':>16}"
    )
    for label, text in EXPRESSIONS.items():
        tree = parse_expression(text)
        parse_s = best_cpu(lambda: _parser._parse_cached.__wrapped__(text), n, rounds)
        compile_s = best_cpu(lambda: _Compiler(text, resolver, {}).condition(tree), n, rounds)
        cached_s = best_cpu(lambda: compile_expression(text, resolver), n, rounds)
        print(
            f"{label:>10} {len(text):>5} {parse_s * 1e6:>8.0f}us {compile_s * 1e6:>8.0f}us "
            f"{(parse_s + compile_s) * 1e6:>12.0f}us {cached_s * 1e6:>14.0f}us"
        )


if __name__ == "__main__":
    main()
