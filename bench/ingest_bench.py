"""Benchmark raw ingest: N Kast-like raw files (real header, gzipped zero pixels) into a new repository.

    python bench/ingest_bench.py [--quick] [-n N] [-j PROCESSES] [--transfer direct|symlink|copy]

Prints the wall time of ``ingest_raws`` (headers only: translation, records, datasets) and of a
re-ingest (a no-op). Target: 1,000 files in under 10 s.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time, TimeDelta

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from butler import Butler  # noqa: E402
from pipeline.instruments import ingest_raws, register_instrument  # noqa: E402

SHARED = REPO_ROOT / ".." / "shared" / "data" / "raw" / "kast_blue" / "b11.fits.gz"


def make_files(out: Path, n: int) -> list[Path]:
    """Write ``n`` gzipped Kast-blue raws with the real b11 header and distinct DATE-OBS."""
    if SHARED.is_file():
        header = fits.getheader(SHARED)
    else:  # minimal Kast-like header
        header = fits.Header(
            {
                "VERSION": "kastb",
                "OBSTYPE": "OBJECT",
                "OBJECT": "Dome Flat",
                "EXPTIME": 15,
                "BSPLIT_N": "d55",
                "GRISM_N": "600/4310",
            }
        )
    buf = io.BytesIO()
    fits.PrimaryHDU(np.zeros((350, 2112), np.uint16), header=header, uint=True).writeto(buf)
    blob = buf.getvalue()
    data_start = len(
        fits.PrimaryHDU(np.zeros((350, 2112), np.uint16), header=header, uint=True).header.tostring()
    )
    data_gz = gzip.compress(blob[data_start:], compresslevel=1)  # gzip members concatenate
    start = Time("2020-01-01T00:00:00", scale="utc")
    paths = []
    for i in range(n):
        t = (start + TimeDelta(20.0 * i, format="sec")).isot[:22]
        h = header.copy()
        for key in ("DATE-OBS", "DATE-BEG"):
            h[key] = t
        h["DATE-END"] = (start + TimeDelta(20.0 * i + 15, format="sec")).isot[:22]
        hdr_bytes = h.tostring().encode()
        assert len(hdr_bytes) == data_start
        p = out / f"b{i:05d}.fits.gz"
        p.write_bytes(gzip.compress(hdr_bytes, compresslevel=1) + data_gz)
        paths.append(p)
    return paths


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 files instead of 1000")
    parser.add_argument("-n", type=int, default=None)
    parser.add_argument("-j", type=int, default=1, help="header-reading processes")
    parser.add_argument("--transfer", default="direct")
    args = parser.parse_args()
    n = args.n or (200 if args.quick else 1000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "raw").mkdir()
        t0 = time.perf_counter()
        make_files(tmp / "raw", n)
        t_make = time.perf_counter() - t0
        Butler.create(tmp / "repo")
        butler = Butler(tmp / "repo", writeable=True)
        register_instrument(butler, "kast_blue")
        t0 = time.perf_counter()
        report = ingest_raws(butler, [tmp / "raw"], transfer=args.transfer, processes=args.j)
        t_ingest = time.perf_counter() - t0
        assert report.ok and len(report.ingested) == n, report.summary()
        t0 = time.perf_counter()
        again = ingest_raws(butler, [tmp / "raw"], transfer=args.transfer, processes=args.j)
        t_again = time.perf_counter() - t0
        assert not again.ingested and len(again.skipped) == n
    print(f"ingest_bench: {n} Kast raw files (gz, real header) made in {t_make:.1f} s")
    print(
        f"ingest_raws  ({args.transfer}, -j {args.j}): {t_ingest:.2f} s  = {1e3 * t_ingest / n:.2f} ms/file "
        f"({'PASS' if t_ingest * 1000 / n < 10 else 'FAIL'} vs 10 s per 1000 files)"
    )
    print(f"re-ingest (no-op): {t_again:.2f} s")


if __name__ == "__main__":
    main()
