"""VO services benchmark: TAP sync and cone search latency on a synthetic release.

Uses the ``bench`` release of ``benchmarks/catalog_bench.py`` (built here with ``--rows``
unless ``--reuse`` finds it) in its own PostgreSQL database, and asks through the Django
test client (no network, no HTTP server: the figures are the service's own time):

- TAP sync: a 0.5 deg cone, ``SELECT ... WHERE 1=CONTAINS(POINT('ICRS', ra, dec),
  CIRCLE('ICRS', ra0, dec0, 0.5))`` at random centres in the footprint;
- TAP sync: ``SELECT TOP 1000 ... WHERE teff BETWEEN t AND t + 500``;
- Simple Cone Search, 0.5 deg (VERB=2);
- for comparison, the same TAP cone without the (dec, RA) box: the circle's centre given
  as an expression, so only the exact great-circle test is left (a sequential scan).

Goal: TAP p95 <= 200 ms.

    .venv/bin/python benchmarks/vo_bench.py --rows 300000 --database-url postgres:///spcanet_vo_bench
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.catalog_bench import bench_release, percentile  # noqa: E402

COLUMNS = "designation, gaia_source_id, ra, dec, teff, teff_err, logg, logg_err, fe_h, fe_h_err, flag"


def _tap(client, query: str) -> int:
    response = client.post("/tap/sync", {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query})
    assert response.status_code == 200, response.content[:300]
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return body.count(b"<FIELD")


def measure(n_requests: int, seed: int, release: str) -> dict[str, list[float]]:
    import numpy as np
    from django.test import Client

    rng = np.random.default_rng(seed + 2)
    client = Client()
    timings: dict[str, list[float]] = {"TAP cone 0.5 deg": [], "TAP TOP 1000 teff": [], "SCS cone 0.5 deg": [],
                                       "TAP cone, no box": []}
    _tap(client, "SELECT TOP 1 ra FROM spcanet.entries")  # warm-up: imports, URL resolving
    for i in range(n_requests):
        ra, dec = float(rng.uniform(0, 360)), float(np.degrees(np.arcsin(rng.uniform(-0.17, 0.94))))
        circle = f"CIRCLE('ICRS', {ra:.4f}, {dec:.4f}, 0.5)"
        t0 = time.perf_counter()
        _tap(client, f"SELECT {COLUMNS} FROM spcanet.entries WHERE 1=CONTAINS(POINT('ICRS', ra, dec), {circle})")
        timings["TAP cone 0.5 deg"].append(time.perf_counter() - t0)
        low = float(rng.uniform(4000, 5500))
        t0 = time.perf_counter()
        _tap(client, f"SELECT TOP 1000 {COLUMNS} FROM spcanet.entries WHERE teff BETWEEN {low:.0f} AND {low + 500:.0f}")
        timings["TAP TOP 1000 teff"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        response = client.get(f"/vo/scs/{release}/", {"RA": f"{ra:.4f}", "DEC": f"{dec:.4f}", "SR": "0.5"})
        body = b"".join(response.streaming_content) if response.streaming else response.content
        timings["SCS cone 0.5 deg"].append(time.perf_counter() - t0)
        assert response.status_code == 200 and b'name="Error"' not in body, body[:300]
        if i < max(5, n_requests // 10):  # slow: a few are enough
            t0 = time.perf_counter()
            _tap(client, f"SELECT {COLUMNS} FROM spcanet.entries WHERE 1=CONTAINS(POINT('ICRS', ra, dec), "
                         f"CIRCLE('ICRS', {ra:.4f} + 0, {dec:.4f}, 0.5))")
            timings["TAP cone, no box"].append(time.perf_counter() - t0)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000, help="Approximate number of catalog rows.")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres:///spcanet_vo_bench"))
    parser.add_argument("--requests", type=int, default=200, help="Requests per kind.")
    parser.add_argument("--reuse", action="store_true", help="Keep an existing 'bench' release instead of rebuilding.")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    release = bench_release(args.database_url, args.rows, args.seed, reuse=args.reuse)
    print(f"release bench: {release.entry_count:,} rows; {args.requests} requests per kind; "
          f"load average {os.getloadavg()[0]:.1f}")
    timings = measure(args.requests, args.seed, "bench")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    for name, values in timings.items():
        ms = [v * 1000 for v in values]
        print(f"{name + ':':<22} p50 {percentile(ms, 50):7.1f} ms   p95 {percentile(ms, 95):7.1f} ms   "
              f"max {max(ms):7.1f} ms   ({len(ms)} requests; goal p95 <= 200 ms)")


if __name__ == "__main__":
    main()
