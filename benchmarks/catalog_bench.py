"""Catalog benchmark: bulk label writes, API latency and CSV export at catalog scale.

Fills a separate PostgreSQL database (default ``postgres:///spcanet_bench``) with a
synthetic catalog of about ``--rows`` spectra (the published catalog has 1,472,211 rows),
then prints:

- bulk label writes (LabelSet upserts, both models): rows/s;
- release build (combine both models into entries): rows/s;
- a filtered API page (Teff window, S/N > 20, Flag = 1): latency p50/p95;
- cone search (1 deg radius, random centres): latency p50/p95;
- full CSV export: rows/s and the peak memory (RSS) of the exporting process.

Targets: writes >= 20,000 rows/s; API p95 <= 100 ms; export >= 50,000 rows/s under 300 MB.

    .venv/bin/python benchmarks/catalog_bench.py --rows 1500000
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup_django(database_url: str, broker_url: str | None = None) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "spcanet_site.settings.local")
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"
    # Publishing writes no release files here: download_bench.py measures writing them.
    os.environ.setdefault("RELEASE_FILES_ON_PUBLISH", "false")
    if broker_url:
        os.environ["CELERY_BROKER_URL"] = broker_url
    else:
        os.environ.pop("CELERY_BROKER_URL", None)
    import django

    django.setup()


def ensure_database(database_url: str) -> None:
    import psycopg2
    from environ import Env

    config = Env.db_url_config(database_url)
    admin = psycopg2.connect(dbname="postgres", user=config["USER"] or None, host=config["HOST"] or None, port=config["PORT"] or None)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{config["NAME"]}"')
    admin.close()


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MB.

    Not ru_maxrss: on Linux a child started by fork/exec inherits its parent's value.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# PostgreSQL settings the figures depend on (a release read from the buffers or from disk;
# checkpoints during a build), printed beside them.
SERVER_SETTINGS = ("shared_buffers", "effective_cache_size", "max_wal_size", "checkpoint_timeout")


def server_settings() -> str:
    """The PostgreSQL server's SERVER_SETTINGS, one line: 'shared_buffers 128MB, ...'."""
    from django.db import connection

    with connection.cursor() as cursor:
        values = []
        for name in SERVER_SETTINGS:
            cursor.execute(f"SHOW {name}")
            values.append(f"{name} {cursor.fetchone()[0]}")
    return ", ".join(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def build_catalog(rows: int, seed: int) -> tuple[int, float, float, float]:
    """Stars, spectra, both models' label sets, and a published release; returns timings."""
    import numpy as np
    from django.db import connection, transaction

    from inference.models import CatalogRelease, ModelVersion
    from inference.services.demo import demo_model_labels, demo_observations_create, demo_synthetic_model
    from inference.services.prediction import labelsets_upsert
    from inference.services.release import catalog_release_build, catalog_release_create, catalog_release_publish

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE inference_catalogentry, inference_catalogrelease, inference_labelset, inference_modelversion, "
            "spectra_spectrum, spectra_star, spectra_curationrecord RESTART IDENTITY CASCADE"
        )
    rng = np.random.default_rng(seed)
    formal = demo_synthetic_model(ModelVersion.Role.FORMAL, seed)
    alternate = demo_synthetic_model(ModelVersion.Role.ALTERNATE, seed)
    n_stars_total = int(rows / 3.5)  # 1-6 spectra per star, 3.5 on average
    chunk = 50_000
    spectra = 0
    write_seconds = 0.0
    label_rows = 0
    t_observations = 0.0
    for start in range(0, n_stars_total, chunk):
        t0 = time.perf_counter()
        with transaction.atomic():
            observations = demo_observations_create(rng, first_star=start, n_stars=min(chunk, n_stars_total - start), seed=seed)
        t_observations += time.perf_counter() - t0
        (values_f, values_a), (errors, _) = demo_model_labels(rng, observations)
        for model, values in ((formal, values_f), (alternate, values_a)):
            t0 = time.perf_counter()
            labelsets_upsert(model_version=model, spectrum_ids=observations.spectrum_ids, values=values, errors=errors)
            write_seconds += time.perf_counter() - t0
            label_rows += values.shape[0]
        spectra += observations.spectrum_ids.shape[0]
        print(f"  ... {spectra:,} spectra written", flush=True)
    release = catalog_release_create(name="bench", formal_model=formal, alternate_model=alternate)
    chunks_written: list[float] = []  # when each chunk of entries was committed
    t0 = time.perf_counter()
    catalog_release_build(release=release, progress=lambda n: chunks_written.append(time.perf_counter()))
    build_seconds = time.perf_counter() - t0
    entries_seconds = chunks_written[-1] - t0 if chunks_written else build_seconds
    catalog_release_publish(release=CatalogRelease.objects.get(pk=release.pk))
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"  stars and spectra written in {t_observations:.1f} s")
    print(f"  release build {build_seconds:.1f} s: entries {entries_seconds:.1f} s, "
          f"then statistics, counts and star table {build_seconds - entries_seconds:.1f} s")
    return spectra, label_rows / write_seconds, spectra / build_seconds, write_seconds


def bench_release(database_url: str, rows: int, seed: int, *, reuse: bool):
    """Migrate the benchmark database and return its 'bench' release, built unless ``reuse``
    finds one. Used by the download and VO benchmarks."""
    ensure_database(database_url)
    setup_django(database_url)
    from django.core.management import call_command

    from inference.models import CatalogRelease

    call_command("migrate", verbosity=0)
    release = CatalogRelease.objects.filter(name="bench").first()
    if not (reuse and release is not None):
        print(f"building a catalog of about {rows:,} rows in {database_url}")
        build_catalog(rows, seed)
        release = CatalogRelease.objects.get(name="bench")
    return release


def api_latency(n_requests: int, seed: int) -> dict[str, list[float]]:
    import numpy as np
    from django.test import Client

    rng = np.random.default_rng(seed + 1)
    client = Client()
    timings: dict[str, list[float]] = {"filtered page": [], "cone search": []}
    client.get("/api/v1/releases/bench/entries/?page_size=1")  # warm-up: URL resolving, imports
    for _ in range(n_requests):
        low = float(rng.uniform(4000, 5500))
        url = f"/api/v1/releases/bench/entries/?teff_min={low:.0f}&teff_max={low + 500:.0f}&snr_min=20&flag=1"
        t0 = time.perf_counter()
        response = client.get(url)
        timings["filtered page"].append(time.perf_counter() - t0)
        assert response.status_code == 200 and len(response.json()["results"]) == 100, response.content[:200]
        ra, dec = float(rng.uniform(0, 360)), float(np.degrees(np.arcsin(rng.uniform(-0.17, 0.94))))
        t0 = time.perf_counter()
        response = client.get(f"/api/v1/releases/bench/entries/?cone_ra={ra:.4f}&cone_dec={dec:.4f}&cone_radius=1")
        timings["cone search"].append(time.perf_counter() - t0)
        assert response.status_code == 200
    return timings


def export_in_subprocess(database_url: str) -> tuple[int, float, int, float, float]:
    """Run the full export in a fresh process and print its rate and peak RSS."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from benchmarks.catalog_bench import peak_rss_mb;"
        "from benchmarks.catalog_bench import setup_django; setup_django(sys.argv[2]);"
        "from django.test import Client;"
        "base = peak_rss_mb();"
        "t0 = time.perf_counter(); rows = -1; size = 0\n"  # -1: the column header row
        "blocks = iter(Client().get('/api/v1/releases/bench/export.csv').streaming_content)\n"
        "for block in blocks:\n"
        "    rows += block.count(b'\\n'); size += len(block)\n"
        "elapsed = time.perf_counter() - t0\n"
        "peak = peak_rss_mb()\n"
        "print(f'{rows} {elapsed} {size} {base} {peak}')"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), database_url], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(output[0]), float(output[1]), int(output[2]), float(output[3]), float(output[4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_500_000, help="Approximate number of catalog rows.")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres:///spcanet_bench"))
    parser.add_argument("--requests", type=int, default=200, help="API requests per kind.")
    parser.add_argument("--reuse", action="store_true", help="Keep an existing 'bench' release instead of rebuilding.")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    ensure_database(args.database_url)
    setup_django(args.database_url)
    from django.core.management import call_command

    from inference.models import CatalogRelease

    call_command("migrate", verbosity=0)

    print(f"database {args.database_url} ({server_settings()})")
    release = CatalogRelease.objects.filter(name="bench").first()
    if args.reuse and release is not None:
        print(f"reusing release bench ({release.entry_count:,} rows); no write figures this run")
    else:
        print(f"building a catalog of about {args.rows:,} rows")
        spectra, write_rate, build_rate, _ = build_catalog(args.rows, args.seed)
        release = CatalogRelease.objects.get(name="bench")
        print(f"catalog rows:                {release.entry_count:,} ({release.good_count:,} with Flag = 1)")
        print(f"bulk label writes:           {write_rate:,.0f} rows/s   (target >= 20,000)")
        print(f"release build:               {build_rate:,.0f} rows/s")

    timings = api_latency(args.requests, args.seed)
    for name, values in timings.items():
        ms = [v * 1000 for v in values]
        print(
            f"API {name + ':':<24} p50 {percentile(ms, 50):6.1f} ms   p95 {percentile(ms, 95):6.1f} ms   "
            f"max {max(ms):6.1f} ms   ({len(ms)} requests; target p95 <= 100 ms)"
        )
    rows, elapsed, size, base_mb, peak_mb = export_in_subprocess(args.database_url)
    print(
        f"CSV export:                  {rows:,} rows in {elapsed:.1f} s = {rows / elapsed:,.0f} rows/s, "
        f"{size / 1e6:,.0f} MB   (target >= 50,000 rows/s)"
    )
    print(f"CSV export peak RSS:         {peak_mb:,.0f} MB (after start-up {base_mb:,.0f} MB; target < 300 MB)")


if __name__ == "__main__":
    main()
