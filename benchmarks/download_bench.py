"""Download benchmark: rows/s and peak memory of each format over a whole release.

Uses the ``bench`` release of ``benchmarks/catalog_bench.py`` (built here with ``--rows``
unless ``--reuse`` finds it), in its own PostgreSQL database (default
``postgres:///spcanet_bench``). Each format is downloaded in a fresh process through the
Django test client, reading the streamed response to the end as a client would; the
figures are that process's wall time and peak resident memory (VmHWM).

Goals (on the 1.5M-row release): CSV and FITS >= 150,000 rows/s, Parquet
>= 300,000 rows/s, peak <= 300 MB.

    .venv/bin/python benchmarks/download_bench.py --rows 1500000
    .venv/bin/python benchmarks/download_bench.py --reuse --formats csv,fits,parquet
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.catalog_bench import bench_release  # noqa: E402

FORMATS = ("csv", "csv-paper", "ecsv", "fits", "votable", "parquet")
GOALS = {"csv": 150_000, "fits": 150_000, "parquet": 300_000}

_DOWNLOAD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from benchmarks.catalog_bench import peak_rss_mb, setup_django
setup_django(sys.argv[2])
from django.test import Client
base = peak_rss_mb()
t0 = time.perf_counter()
response = Client().get('/api/v1/releases/bench/export/', {'format': sys.argv[3]})
assert response.status_code == 200, response.content[:300]
size = 0
for block in response.streaming_content:
    size += len(block)
elapsed = time.perf_counter() - t0
print(elapsed, size, base, peak_rss_mb())
"""


def download_in_subprocess(database_url: str, fmt: str) -> tuple[float, int, float, float]:
    output = subprocess.run(
        [sys.executable, "-c", _DOWNLOAD, str(ROOT), database_url, fmt], capture_output=True, text=True, check=True
    ).stdout.split()
    return float(output[0]), int(output[1]), float(output[2]), float(output[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_500_000, help="Approximate number of catalog rows.")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres:///spcanet_bench"))
    parser.add_argument("--reuse", action="store_true", help="Keep an existing 'bench' release instead of rebuilding.")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"Comma-separated, from {', '.join(FORMATS)}.")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    release = bench_release(args.database_url, args.rows, args.seed, reuse=args.reuse)
    rows = release.entry_count
    print(f"database {args.database_url}, release bench: {rows:,} rows")
    for fmt in args.formats.split(","):
        load = os.getloadavg()[0]  # the machine's other work: the figures are wall time
        elapsed, size, base_mb, peak_mb = download_in_subprocess(args.database_url, fmt)
        goal = GOALS.get(fmt)
        print(
            f"{fmt:<10} {rows / elapsed:>10,.0f} rows/s{f' (goal >= {goal:,})' if goal else '':<20} "
            f"{elapsed:6.1f} s  {size / 1e6:8,.0f} MB  peak RSS {peak_mb:5,.0f} MB (start-up {base_mb:,.0f} MB; goal <= 300)"
            f"  load {load:.1f}-{os.getloadavg()[0]:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
