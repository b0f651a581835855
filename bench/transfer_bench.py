"""Benchmark ``butler transfer-datasets``: a synthetic SQLite repository into SQLite and PostgreSQL.

    python bench/transfer_bench.py [--quick] [-n EXPOSURES] [--detectors D] [--postgres URL]

The source holds ``n x D`` small ``arr`` datasets (exposure x detector), one ``meta`` per
exposure and ``D`` certified biases. Prints the wall time of the transfer (all of it: selection,
records, registry rows, file copies, size checks) per destination, per dataset, and of a
second transfer (a no-op). PostgreSQL: ``--postgres`` or ``BUTLER_TEST_POSTGRES_URL``
(a fresh schema, dropped afterwards); skipped without one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from butler import Butler, CollectionType, DatasetType, Timespan  # noqa: E402
from butler.transfers import transfer_datasets  # noqa: E402


def make_source(root: Path, n_exposures: int, n_detectors: int) -> Butler:
    """Create the source repository (SQLite) and fill it."""
    import astropy.units as u
    from astropy.time import Time

    b = Butler.create(root)
    reg = b.registry
    reg.insert_dimension_data("instrument", {"name": "cam", "class_name": "", "detector_max": n_detectors})
    reg.insert_dimension_data("physical_filter", {"instrument": "cam", "name": "r_01", "band": "r"})
    reg.insert_dimension_data(
        "detector", *[{"instrument": "cam", "id": d, "full_name": f"S{d:02d}"} for d in range(n_detectors)]
    )
    reg.insert_dimension_data("day_obs", {"instrument": "cam", "id": 20250101})
    t0 = Time("2025-01-01T20:00:00", scale="tai")
    reg.insert_dimension_data(
        "exposure",
        *[
            {
                "instrument": "cam",
                "id": e,
                "obs_id": f"CAM_{e:06d}",
                "physical_filter": "r_01",
                "day_obs": 20250101,
                "exposure_time": 30.0,
                "observation_type": "science",
                "timespan": Timespan(t0 + 60 * e * u.s, t0 + (60 * e + 30) * u.s),
            }
            for e in range(n_exposures)
        ],
    )
    reg.register_dataset_type(DatasetType("arr", ["exposure", "detector"], "NumpyArray"))
    reg.register_dataset_type(DatasetType("meta", ["exposure"], "StructuredDataDict"))
    reg.register_dataset_type(DatasetType("bias", ["detector"], "NumpyArray", is_calibration=True))
    for e in range(n_exposures):
        for d in range(n_detectors):
            b.put(
                np.full(64, float(e * n_detectors + d)),
                "arr",
                instrument="cam",
                exposure=e,
                detector=d,
                run="raw/all",
            )
        b.put({"exposure": e}, "meta", instrument="cam", exposure=e, run="raw/all")
    biases = [
        b.put(np.zeros(64), "bias", instrument="cam", detector=d, run="calib/run") for d in range(n_detectors)
    ]
    reg.register_collection("cam/calib", CollectionType.CALIBRATION)
    reg.certify("cam/calib", biases, Timespan(None, None))
    reg.set_collection_chain("cam/defaults", ["cam/calib", "raw/all"])
    return b


def _time_transfer(src: Butler, dest: Butler) -> tuple[float, float, int]:
    t = time.perf_counter()
    r = transfer_datasets(src, dest, register_dataset_types=True)
    first = time.perf_counter() - t
    t = time.perf_counter()
    again = transfer_datasets(src, dest, register_dataset_types=True)
    second = time.perf_counter() - t
    assert again.n_datasets == 0 and again.n_skipped == r.n_datasets
    return first, second, r.n_datasets


def _drop_schema(url: str, schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    engine.dispose()


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 exposures instead of 500")
    parser.add_argument("-n", type=int, default=None, help="exposures (default 500)")
    parser.add_argument("--detectors", type=int, default=4)
    parser.add_argument("--postgres", default=os.environ.get("BUTLER_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    n = args.n or (100 if args.quick else 500)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        src = make_source(Path(tmp) / "src", n, args.detectors)
        total = n * args.detectors + n + args.detectors
        print(f"transfer_bench: source of {total} datasets (SQLite) made in {time.perf_counter() - t:.1f} s")
        dests = [("SQLite", None)]
        if args.postgres:
            dests.append(("PostgreSQL", f"{args.postgres}?schema=bench_{uuid.uuid4().hex[:10]}"))
        for name, url in dests:
            dest = Butler.create(Path(tmp) / f"dest_{name}", db=url)
            try:
                first, second, n_moved = _time_transfer(src, dest)
            finally:
                dest.close()
                if url is not None:
                    _drop_schema(args.postgres, url.rsplit("schema=", 1)[1])
            print(
                f"SQLite -> {name}: {n_moved} datasets (+ their files, records, {args.detectors} validity "
                f"ranges) in {first:.2f} s = {1e3 * first / n_moved:.2f} ms/dataset; "
                f"again (no-op): {second:.2f} s"
            )
        if not args.postgres:
            print("PostgreSQL: skipped (no --postgres / BUTLER_TEST_POSTGRES_URL)")


if __name__ == "__main__":
    main()
