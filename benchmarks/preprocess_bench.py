"""Reading, preprocessing and ingest benchmark (prints figures).

1. Reading: spectra/s of the project's reader over the real MRS files (repeated), next
   to a plain astropy loop over the same files (open, read every table's columns),
   measured in the same run; their ratio. Target: at least 3x.
2. Preprocessing core alone on one core, a batch of 10,000 spectra (real spectra
   repeated), catalog RVs supplied: spectra/s. Target: >= 2,000/s. Also the rate of
   cross-correlation RV measurement, which runs when no catalog RV is given.
3. Ingest end to end into PostgreSQL: spectra/s; and peak memory (RSS) while ingesting
   a growing number of files, which must stay flat (streaming, not accumulating).

    .venv/bin/python benchmarks/preprocess_bench.py [--ingest-files 2000]

Numerical libraries are pinned to one thread, so "one core" means one core.
"""

import argparse
import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"

import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REAL = ROOT.parent / "shared" / "data" / "lamost_mrs"


def bench_reading(files: list[Path], repeats: int) -> None:
    from astropy.io import fits

    from spectra.io import read_spectrum_file

    for path in files:  # both readers then read from the operating system's file cache
        path.read_bytes()
    count = 0
    start = time.perf_counter()
    for _ in range(repeats):
        for path in files:
            with fits.open(path) as hdul:
                for hdu in hdul[1:]:
                    for name in hdu.columns.names:
                        np.asarray(hdu.data[name])
                count += (len(hdul) - 1) // 2
    astropy_rate = count / (time.perf_counter() - start)
    count = 0
    start = time.perf_counter()
    for _ in range(repeats):
        for path in files:
            count += len(read_spectrum_file(path).spectra)
    ours = count / (time.perf_counter() - start)
    print(f"reading: {ours:,.0f} two-arm spectra/s (project reader) vs {astropy_rate:,.0f}/s (plain astropy loop): "
          f"{ours / astropy_rate:.1f}x   [{count:,} spectra from {len(files)} real files x {repeats}]")


def bench_preprocessing(files: list[Path], batch: int) -> None:
    from spectra.io import read_spectrum_file
    from spectra.processing.pipeline import PreprocessConfig, preprocess

    per_file = [read_spectrum_file(path).spectra for path in files]
    spectra, file_ids, copies = [], [], 0
    while len(spectra) < batch:  # each repeat of a file counts as a file of its own
        for of_file in per_file:
            spectra += of_file
            file_ids += [copies] * len(of_file)
            copies += 1
    spectra, file_ids = spectra[:batch], np.array(file_ids[:batch], dtype=np.int64)
    rv = np.zeros((batch, 2))
    preprocess(spectra[:8], rv_supplied=rv[:8], files=file_ids[:8])  # compile / load the kernels
    rates = {"with": [], "without": []}
    for _ in range(5):  # the coadds' fill from their exposures on and off, alternating
        for name, fill in (("with", True), ("without", False)):
            start = time.perf_counter()
            preprocess(spectra, rv_supplied=rv, files=file_ids, config=PreprocessConfig(coadd_fill_from_exposures=fill))
            rates[name].append(batch / (time.perf_counter() - start))
    with_fill, without = np.median(rates["with"]), np.median(rates["without"])
    print(f"preprocessing core: {with_fill:,.0f} spectra/s on one core ({batch:,} spectra, RVs supplied; target >= 2,000; "
          f"median of 5); without the coadds' fill from their exposures {without:,.0f}/s (ratio {with_fill / without:.3f})")
    try:
        from spcanet_site.settings.base import SPECTRUM_MODEL_PATH
        from spectra.processing.spectrum_model import CannonSpectrumModel, template_bank_from_model

        templates = template_bank_from_model(CannonSpectrumModel.load(SPECTRUM_MODEL_PATH))
    except Exception as error:  # noqa: BLE001  (the model is optional here)
        print(f"RV measurement: skipped ({error})")
        return
    sample = spectra[:2000]
    preprocess(sample[:8], templates=templates, files=file_ids[:8])
    start = time.perf_counter()
    preprocess(sample, templates=templates, files=file_ids[:2000])
    elapsed = time.perf_counter() - start
    print(f"preprocessing with RVs measured by cross-correlation: {len(sample) / elapsed:,.0f} spectra/s on one core "
          f"({len(templates.labels)} templates, both arms)")


def bench_ingest(files: list[Path], n_files: int, database_url: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="spcanet-ingest-bench-"))
    os.environ["SPECTRA_ARRAY_ROOT"] = str(workdir / "arrays")  # read when django.setup() runs below
    from benchmarks.catalog_bench import ensure_database, peak_rss_mb

    ensure_database(database_url)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from spectra.io import read_spectrum_file
    from spectra.services.ingest import spectra_ingest

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE spectra_sourcefile, spectra_spectrum, spectra_star RESTART IDENTITY CASCADE")
    # Distinct copies of the real good files (each copy differs by one header byte, so
    # its sha256 and medres_specid are new), spread over a directory tree.
    good = [p for p in files if "58268" not in p.name and "58269" not in p.name]
    from spectra.io.lamost_writer import write_lamost_mrs

    templates = [read_spectrum_file(p) for p in good]
    tree = workdir / "survey"
    for i in range(n_files):
        sf = templates[i % len(templates)]
        sf.fiber = i % 250 + 1
        sf.spectrograph = i // 250 % 16 + 1
        sf.plan_id = f"BENCH{i // 4000:05d}"
        write_lamost_mrs(sf, tree / f"plan{i // 100:03d}" / f"med-{sf.lmjd}-{sf.plan_id}_sp{sf.spectrograph:02d}-{sf.fiber:03d}.fits.gz")
    catalog = {(sf.obsid, None): (-20.0, -19.0) for sf in templates}
    checkpoints = []
    written = 0
    start = time.perf_counter()
    directories = sorted(tree.iterdir())
    for directory in directories:
        summary = spectra_ingest(paths=[directory], rv_catalog=catalog)
        written += summary.spectra_written
        checkpoints.append((written, time.perf_counter() - start, peak_rss_mb()))
    elapsed = time.perf_counter() - start
    print(f"ingest into PostgreSQL: {written:,} spectra from {n_files:,} files in {elapsed:.1f} s = "
          f"{written / elapsed:,.0f} spectra/s (catalog RVs; target >= 300/s)")
    print("ingest peak RSS as spectra accumulate: " + ", ".join(f"{n:,}: {rss:,.0f} MB" for n, _, rss in checkpoints[:: max(1, len(checkpoints) // 6)]))
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="Passes over the real files when reading.")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--ingest-files", type=int, default=2_000, help="Files for the ingest benchmark (0: skip).")
    parser.add_argument("--only-ingest", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres:///spcanet_bench"))
    args = parser.parse_args()
    # Before anything reads the settings (the spectrum model path comes from them too).
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "spcanet_site.settings.local")
    files = sorted(REAL.iterdir()) if REAL.is_dir() else []
    if not files:
        raise SystemExit(f"the real MRS files are needed ({REAL})")
    if args.only_ingest:
        bench_ingest(files, args.only_ingest, args.database_url)
        return
    bench_reading(files, args.repeats)
    bench_preprocessing(files, args.batch)
    if args.ingest_files:  # in a fresh process, so its peak memory is the ingest's alone
        import subprocess

        subprocess.run(
            [sys.executable, __file__, "--only-ingest", str(args.ingest_files), "--database-url", args.database_url],
            check=True,
        )


if __name__ == "__main__":
    main()
