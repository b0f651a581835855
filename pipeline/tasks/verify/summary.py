"""``ccdflow-verify-summary``: print the verdict and the failed tests of verification runs.

Reads every ``verify*Results`` dataset (written by `CpVerifyRunMergeTask` /
`CpVerifyCalibMergeTask`) in the given collections and prints one line per run and one table
row per failed test::

    ccdflow-verify-summary REPO --collections u/me/verifyBias

Exit status: 0 if every result passed, 1 if any test failed, 2 on a usage error (unknown
repository or collection, no verification result found).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_summary", "main"]


def format_summary(results: Sequence[tuple[str, str, Mapping[str, Any]]], max_rows: int = 200) -> str:
    """Text table of verification results.

    Parameters
    ----------
    results : sequence of ``(dataset type, run, results dict)``
        ``verify*Results`` contents.
    max_rows : `int`
        Failure rows printed per result (the rest are counted).

    Returns
    -------
    text : `str`
    """
    lines = []
    for dtype, run, res in results:
        tests = res.get("TESTS", {})
        n_failed = sum(t.get("failed", 0) for t in tests.values())
        n_tests = sum(t.get("n", 0) for t in tests.values())
        verdict = "PASSED" if res.get("SUCCESS") else "FAILED"
        lines.append(
            f"{dtype} [{run}] {res.get('calibType', '?')}: {verdict} "
            f"({res.get('N_INPUTS', 0)} input(s), {n_tests - n_failed}/{n_tests} tests passed)"
        )
        for name, t in sorted(tests.items()):
            lines.append(
                f"    {name:<24s} {t.get('n', 0) - t.get('failed', 0):>5d}/{t.get('n', 0):<5d} passed"
            )
        failures = list(res.get("FAILURES", []))
        if failures:
            lines.append(f"    {'exposure':>16s} {'detector':>8s} {'amp':>6s}  {'test':<24s} {'value':>12s}")
            for f in failures[:max_rows]:
                value = f.get("value")
                vtxt = "" if value is None else f"{value:12.5g}"
                lines.append(
                    f"    {f.get('exposure')!s:>16s} {f.get('detector')!s:>8s} {f.get('amp')!s:>6s}  "
                    f"{str(f.get('test')):<24s} {vtxt:>12s}"
                )
            if len(failures) > max_rows:
                lines.append(f"    ... and {len(failures) - max_rows} more failure(s)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``ccdflow-verify-summary`` (module docstring)."""
    parser = argparse.ArgumentParser(
        prog="ccdflow-verify-summary",
        description="Print the verdict and failed tests of calibration verification runs (verify*Results).",
    )
    parser.add_argument("repo", help="butler repository")
    parser.add_argument("--collections", "-c", required=True, help="comma-separated collections to search")
    parser.add_argument(
        "--dataset-type",
        "-t",
        action="append",
        default=None,
        help="verification result dataset type(s) (default: every verify*Results)",
    )
    parser.add_argument("--max-rows", type=int, default=200, help="failure rows printed per result")
    args = parser.parse_args(argv)
    from butler import Butler

    try:
        butler = Butler(args.repo)
    except Exception as exc:  # noqa: BLE001 - any open failure is a usage error here
        print(f"ccdflow-verify-summary: error: cannot open repository {args.repo!r}: {exc}", file=sys.stderr)
        return 2
    collections = [c for c in args.collections.split(",") if c]
    dtypes = args.dataset_type
    if not dtypes:
        dtypes = sorted(dt.name for dt in butler.registry.query_dataset_types("verify*Results"))
    results = []
    for dtype in dtypes:
        try:
            refs = list(butler.query_datasets(dtype, collections=collections, find_first=False))
        except Exception as exc:  # noqa: BLE001 - unknown dataset type or collection
            print(f"ccdflow-verify-summary: error: {exc}", file=sys.stderr)
            return 2
        for ref in refs:
            results.append((dtype, ref.run, butler.get(ref)))
    if not results:
        print(
            "ccdflow-verify-summary: error: no verification result "
            f"({', '.join(dtypes) or 'verify*Results'}) "
            f"in {collections}; run a Verify*.yaml pipeline into one of them first",
            file=sys.stderr,
        )
        return 2
    print(format_summary(results, args.max_rows))
    return 0 if all(r.get("SUCCESS") for _, _, r in results) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
