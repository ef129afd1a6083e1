"""Download benchmark: rows/s and peak memory of each format over a whole release.

Uses the ``bench`` release of ``benchmarks/catalog_bench.py`` (built here with ``--rows``
unless ``--reuse`` finds it), in its own PostgreSQL database (default
``postgres:///spcanet_bench``). Each format is timed three ways, each in a fresh process:

- ``streamed``: the whole release downloaded while it has no written file, so its rows
  stream from the database (what every filtered download does);
- ``write``: the release's file in that format written as a worker does after publication
  (``inference.services.release_files``);
- ``file``: the whole release downloaded again, now served from that file.

Downloads go through the Django test client, reading the response to the end as a client
would; the figures are the process's wall time and peak resident memory (VmHWM).

Goals (on the 1.5M-row release): CSV and FITS >= 150,000 rows/s, Parquet
>= 300,000 rows/s, peak <= 300 MB.

    .venv/bin/python benchmarks/download_bench.py --rows 1500000
    .venv/bin/python benchmarks/download_bench.py --reuse --formats csv,fits,parquet
"""

import argparse
import os
import subprocess
import sys
import tempfile
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
assert response.has_header('ETag') == (sys.argv[4] == 'file'), 'served the wrong way'
size = 0
for block in response.streaming_content:
    size += len(block)
elapsed = time.perf_counter() - t0
print(elapsed, size, base, peak_rss_mb())
"""

_WRITE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from benchmarks.catalog_bench import peak_rss_mb, setup_django
setup_django(sys.argv[2])
from inference.models import CatalogRelease
from inference.services.release_files import ENTRIES, release_files_write
release = CatalogRelease.objects.get(name='bench')
base = peak_rss_mb()
t0 = time.perf_counter()
(written,) = release_files_write(release=release, tables=(ENTRIES,), formats=(sys.argv[3],))
elapsed = time.perf_counter() - t0
print(elapsed, written.bytes, base, peak_rss_mb())
"""


def in_subprocess(script: str, database_url: str, fmt: str, files_root: str, way: str = "") -> tuple[float, int, float, float]:
    """(seconds, bytes, start-up MB, peak MB) of ``script`` run on ``fmt`` in a fresh process."""
    env = {**os.environ, "RELEASE_FILES_ROOT": files_root}
    output = subprocess.run(
        [sys.executable, "-c", script, str(ROOT), database_url, fmt, way], capture_output=True, text=True,
        check=True, env=env,
    ).stdout.split()
    return float(output[0]), int(output[1]), float(output[2]), float(output[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_500_000, help="Approximate number of catalog rows.")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres:///spcanet_bench"))
    parser.add_argument("--reuse", action="store_true", help="Keep an existing 'bench' release instead of rebuilding.")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"Comma-separated, from {', '.join(FORMATS)}.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ways", default="streamed,write,file",
                        help="Comma-separated, from streamed, write, file ('file' needs the files: write or --files-root).")
    parser.add_argument("--files-root", help="Where the release files are written and read (default: a temporary one).")
    args = parser.parse_args()

    release = bench_release(args.database_url, args.rows, args.seed, reuse=args.reuse)
    rows = release.entry_count
    print(f"database {args.database_url}, release bench: {rows:,} rows")
    print(f"{'format':<10} {'way':<8} {'rows/s':>10} {'':<20} {'time':>8} {'size':>10}")
    ways = args.ways.split(",")
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as temporary:
        files_root = args.files_root or temporary
        for fmt in args.formats.split(","):
            goal = GOALS.get(fmt)
            for way, script, root in (("streamed", _DOWNLOAD, empty), ("write", _WRITE, files_root),
                                      ("file", _DOWNLOAD, files_root)):
                if way not in ways:
                    continue
                load = os.getloadavg()[0]  # the machine's other work: the figures are wall time
                elapsed, size, base_mb, peak_mb = in_subprocess(script, args.database_url, fmt, root, way)
                goal_text = f" (goal >= {goal:,})" if goal and way != "write" else ""
                print(
                    f"{fmt:<10} {way:<8} {rows / elapsed:>10,.0f} rows/s{goal_text:<20} {elapsed:6.1f} s  "
                    f"{size / 1e6:8,.0f} MB  peak RSS {peak_mb:5,.0f} MB (start-up {base_mb:,.0f} MB; goal <= 300)"
                    f"  load {load:.1f}-{os.getloadavg()[0]:.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
