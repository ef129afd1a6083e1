"""Validation benchmark: cross-match and bias/scatter tables for a catalog-scale release.

Uses the ``bench`` release of ``catalog_bench.py`` (built in ``postgres:///spcanet_bench``
when missing, about 1.5 million rows), writes an APOGEE-like allStar FITS of ``--stars``
reference stars (a few per cent of them not in our catalog, Gaia ids on most, the rest
matched by position) with a known bias and scatter, imports it, and times
``release_validate`` (re-match by Gaia id and position, read the release's rows of the
matched stars, compute every table and bin, store the results). Prints seconds and the
peak memory (VmHWM) of the process. Target: under 60 s for 1.5M rows x 250,000 stars.

    .venv/bin/python benchmarks/validation_bench.py --stars 250000
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stars", type=int, default=250_000)
    parser.add_argument("--rows", type=int, default=1_500_000, help="Rows of the release built when missing.")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres:///spcanet_bench"))
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    from catalog_bench import build_catalog, ensure_database, peak_rss_mb, setup_django

    ensure_database(args.database_url)
    setup_django(args.database_url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from core.labels import LABEL_FIELDS
    from inference.models import CatalogEntry, CatalogRelease
    from spectra.mock.survey import SURVEYS, _write_survey
    from spectra.models import Star
    from validation.services import reference_survey_import, release_validate

    release = CatalogRelease.objects.filter(name="bench").first()
    if release is None:
        print(f"building the bench release (about {args.rows:,} rows)")
        build_catalog(args.rows, 1)
        release = CatalogRelease.objects.get(name="bench")
    print(f"release bench: {release.entry_count:,} rows, {Star.objects.count():,} stars")

    rng = np.random.default_rng(args.seed)
    star_rows = np.array(Star.objects.order_by("?").values_list("id", "ra", "dec", "gaia_source_id")[: args.stars],
                         dtype=object)
    n_missing = args.stars // 25  # stars the reference has and we do not
    n_ours = min(args.stars - n_missing, star_rows.shape[0])
    chosen = star_rows[:n_ours]
    entry_labels = dict(
        (row[0], row[1:]) for row in CatalogEntry.objects.filter(release=release, spectrum__star_id__in=chosen[:, 0].tolist())
        .order_by("spectrum__star_id").values_list("spectrum__star_id", *LABEL_FIELDS).iterator(chunk_size=50_000))
    truth = np.array([entry_labels.get(s, (np.nan,) * len(LABEL_FIELDS)) for s in chosen[:, 0]], dtype=np.float64)
    ra = np.r_[chosen[:, 1].astype(float), rng.uniform(0, 360, n_missing)]
    dec = np.r_[chosen[:, 2].astype(float), rng.uniform(-30, 80, n_missing)]
    gaia = np.r_[np.array([g or 0 for g in chosen[:, 3]], dtype=np.int64),
                 np.arange(n_missing, dtype=np.int64) + 9 * 10**18]
    gaia[rng.random(gaia.size) < 0.2] = 0  # a fifth without Gaia ids: matched by position
    n = ra.size
    truth = np.vstack([truth, np.full((n_missing, len(LABEL_FIELDS)), 5000.0)])
    injection = SURVEYS["apogee"]
    values = {name: truth[:, LABEL_FIELDS.index(name)] + injection.bias[name]
              + rng.normal(0, injection.scatter[name], n) for name in injection.bias}
    stars = {"ra": ra, "dec": dec, "gaia": gaia, "designation": [f"LAMOST J{i:09d}.0+000000.0" for i in range(n)]}
    with tempfile.TemporaryDirectory() as scratch:
        _write_survey("apogee", Path(scratch), stars, np.arange(n), values, rng.random(n) < 0.05, rng)
        started = time.perf_counter()
        survey = reference_survey_import(name="bench-apogee", path=Path(scratch) / "apogee_like.fits",
                                         format_name="apogee-dr14")
        import_seconds = time.perf_counter() - started
    print(f"imported {survey.row_count:,} reference stars ({survey.clean_count:,} clean, {survey.matched_count:,} "
          f"matched) in {import_seconds:.1f} s")
    before = peak_rss_mb()
    started = time.perf_counter()
    results = release_validate(release=release, surveys=[survey])
    seconds = time.perf_counter() - started
    teff = next(r for r in results if r.label == "teff")
    print(f"validation (cross-match + tables, {len(results)} labels): {seconds:.1f} s   (target < 60 s)")
    print(f"  compared {teff.n_spectra:,} spectra of {teff.n_stars:,} stars; Teff bias {teff.bias:+.1f} K "
          f"(injected {-injection.bias['teff']:+.1f}), sigma {teff.scatter:.1f} K (injected "
          f"{injection.scatter['teff']:.1f} plus the release's own scatter)")
    print(f"  peak memory (VmHWM): {peak_rss_mb():,.0f} MB (before validation {before:,.0f} MB)")


if __name__ == "__main__":
    main()
