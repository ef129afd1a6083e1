"""Scale benchmark: a million spectra through predict, release, validation, export and the API.

Starts from a small ingested mock survey (``make_mock_survey --no-ideal``, ingested once)
and replicates its spectra in SQL into new stars and spectra rows until there are
``--spectra`` of them (one size after another, e.g. ``100000,1000000``). A replica is a
new spectrum with a new ``medres_specid`` that points at the same array-shard row as its
source spectrum, of a new star (a new position on the LAMOST sky, a new Gaia id, the same
designation): no FITS file and no shard is written, so disk use is the database's alone.
By default every replica has a star of its own (one spectrum per star: the star table as
large as it can be); ``--replica-stars as-source`` gives the replicas of one source star's
spectra, copy by copy, one new star, so stars have as many spectra as in the mock survey
(its plan observes each star on several nights, with several exposures, as the MRS
time-domain fields do); ``--replica-stars K`` gives every K replicas of a copy, in the
order of their source stars, one new star (K spectra per star; DR9's mean is at least 9.2,
docs/capacity.md).

Per size it prints spectra/s and the peak RSS (VmHWM, reset before each stage) of:

- predict (both models): ``labelsets_predict`` into PostgreSQL on ``--predict-sample``
  spectra (the cost per spectrum does not depend on N). The other spectra get their
  source spectrum's label sets copied in SQL: the same arrays through the same network
  give the same labels. Timed apart and never counted as prediction;
- release build (``catalog_release_build``: entries, then the star table), with the
  CPU seconds of this process and of its PostgreSQL backend;
- validation (``release_validate``) against an APOGEE-like catalog of ``--ref-stars``
  stars drawn from ours;
- the full CSV export, in a fresh process (catalog_bench's);
- API p50/p95: a filtered page (Teff window, S/N > 20, Flag = 1) and a 1 deg cone search.

The two models are one network trained for one epoch on random spectra (as
``pipeline_bench.py``), registered as a formal and an alternate version: both run on
every predicted spectrum, so the cost is that of two models, and they agree, so rows
get Flag = 1 as in a real release. Their labels mean nothing. Everything created is
removed at the end (rows, shards, models, the mock survey) unless ``--keep``;
``--cleanup`` only removes what an earlier ``--keep`` run left; ``--api-only`` measures the
API alone on the release it left (to compare server settings).

    .venv/bin/python benchmarks/scale_bench.py --spectra 100000,1000000
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from catalog_bench import peak_rss_mb, server_settings  # noqa: E402

# Tables the benchmark fills, emptied before it starts and when it ends.
TABLES = (
    "validation_validationresult", "validation_referencestar", "validation_referencesurvey",
    "inference_catalogstar", "inference_catalogentry", "inference_catalogrelease", "inference_labelset",
    "inference_modelversion", "spectra_spectrumcopy", "spectra_spectrum", "spectra_sourcefile", "spectra_star",
    "spectra_curationrecord",
)
SOURCE_TABLE = "scale_bench_source"  # replica spectrum id -> the ingested spectrum it copies
REPLICA_COPIES_PER_STATEMENT = 100  # copies of the ingested spectra written by one INSERT


def reset_peak() -> float:
    """Reset this process's VmHWM to its current RSS (Linux /proc/self/clear_refs, value 5);
    returns that RSS, MB."""
    Path("/proc/self/clear_refs").write_text("5")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all processes: the build's several
    PostgreSQL connections too), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def sql(statement: str, params=None):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else cursor.rowcount


def columns_of(table: str, skip: set[str]) -> list[str]:
    rows = sql("SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
               [table])
    return [name for (name,) in rows if name not in skip]


def clean(var_dir: Path, *, survey: bool) -> None:
    """Empty the benchmark's tables and remove its shards and models (and the mock survey)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {SOURCE_TABLE}")
        present = {name for (name,) in sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        cursor.execute(f"TRUNCATE {', '.join(t for t in TABLES if t in present)} RESTART IDENTITY CASCADE")
    for name in ("arrays", "models", *(("mock",) if survey else ())):
        shutil.rmtree(var_dir / name, ignore_errors=True)


def ingest_mock(survey: Path, stars: int) -> int:
    from django.core.management import call_command

    from spectra.models import Spectrum

    if not (survey / "manifest.json").exists():
        started = time.perf_counter()
        call_command("make_mock_survey", str(survey), stars=stars, seed=11, no_ideal=True)
        print(f"mock survey of {stars} stars generated in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    call_command("ingest_spectra", str(survey / "fits"), rv_catalog=str(survey / "rv_catalog.csv"),
                 no_rv_measurement=True)
    n = Spectrum.objects.filter(status=Spectrum.Status.PREPROCESSED).exclude(array_shard="").count()
    print(f"ingested: {n:,} preprocessed spectra in {time.perf_counter() - started:.0f} s", flush=True)
    sql(f"CREATE TABLE IF NOT EXISTS {SOURCE_TABLE} (spectrum_id bigint PRIMARY KEY, source_id bigint NOT NULL)")
    return n


def replicate(target: int, seed: int, stars: str = "one-per-spectrum") -> tuple[int, float]:
    """Add replicas until there are ``target`` preprocessed spectra; returns (added, seconds).

    ``stars``: ``one-per-spectrum`` (a new star per replica), ``as-source`` (the replicas of
    one source star's spectra in one copy share a new star) or a whole number K (every K
    replicas of a copy, in the order of their source stars, share a new star)."""
    from spectra.models import Spectrum

    started = time.perf_counter()
    sources = np.array(sql(
        "SELECT s.id FROM spectra_spectrum s WHERE s.status = 'preprocessed' AND s.array_shard <> '' "
        f"AND NOT EXISTS (SELECT 1 FROM {SOURCE_TABLE} m WHERE m.spectrum_id = s.id) ORDER BY s.id"),
        dtype=np.int64).ravel()
    have = Spectrum.objects.filter(status=Spectrum.Status.PREPROCESSED).exclude(array_shard="").count()
    star_cols = columns_of("spectra_star", {"id", "gaia_source_id", "ra", "dec", "created_at"})
    spectrum_cols = columns_of("spectra_spectrum", {"id", "star_id", "medres_specid", "created_at", "updated_at"})
    sql("CREATE TEMP TABLE IF NOT EXISTS _sources (rank bigint PRIMARY KEY, spectrum_id bigint, star_id bigint, "
        "star_rank bigint)")
    sql("TRUNCATE _sources")
    # star_rank: the replica's star within a copy, 1..stars (its source star's, or its own).
    if stars == "as-source":
        star_rank = "dense_rank() OVER (ORDER BY s.star_id)"
    elif stars == "one-per-spectrum":
        star_rank = "row_number() OVER (ORDER BY s.id)"
    else:
        star_rank = f"(row_number() OVER (ORDER BY s.star_id, s.id) - 1) / {int(stars)} + 1"
    sql(f"INSERT INTO _sources SELECT row_number() OVER (ORDER BY s.id), s.id, s.star_id, {star_rank} "
        "FROM spectra_spectrum s WHERE s.id = ANY(%s)", [sources.tolist()])
    stars = int(sql("SELECT max(star_rank) FROM _sources")[0][0] or 0)
    sql("SELECT setseed(%s)", [seed / 1000 % 1])
    added = 0
    copy = -(-int(sql(f"SELECT count(*) FROM {SOURCE_TABLE}")[0][0]) // max(1, sources.size)) + 1  # a new suffix
    while have + added < target:
        rows = min(target - have - added, sources.size * REPLICA_COPIES_PER_STATEMENT)
        # Copy c of the source at rank r is row c * n + r of this batch; its star is star
        # c * stars + star_rank of the batch's stars, spread on the LAMOST sky.
        batch = ("FROM _sources x CROSS JOIN generate_series(0, %s) AS c(k) "
                 "WHERE c.k * %s + x.rank <= %s")
        copies = -(-rows // sources.size)
        batch_params = [copies - 1, sources.size, rows]
        star_base = sql("SELECT nextval(pg_get_serial_sequence('spectra_star', 'id'))")[0][0]
        sql("SELECT setval(pg_get_serial_sequence('spectra_star', 'id'), %s)", [star_base + copies * stars])
        sql(f"INSERT INTO spectra_star (id, {', '.join(star_cols)}, gaia_source_id, ra, dec, created_at) "
            f"SELECT DISTINCT ON (c.k, x.star_rank) %s + c.k * %s + x.star_rank, {', '.join('st.' + c for c in star_cols)}, "
            "4000000000000000000 + %s + c.k * %s + x.star_rank, 360 * random(), "
            "degrees(asin(sin(radians(-10)) + random() * (sin(radians(60)) - sin(radians(-10))))), now() "
            + batch.replace("FROM _sources x", "FROM _sources x JOIN spectra_star st ON st.id = x.star_id"),
            [star_base - 1, stars, star_base, stars, *batch_params])
        spectrum_base = sql("SELECT nextval(pg_get_serial_sequence('spectra_spectrum', 'id'))")[0][0]
        sql("SELECT setval(pg_get_serial_sequence('spectra_spectrum', 'id'), %s)", [spectrum_base + rows])
        sql(f"INSERT INTO spectra_spectrum (id, star_id, medres_specid, {', '.join(spectrum_cols)}, created_at, "
            f"updated_at) SELECT %s + c.k * %s + x.rank, %s + c.k * %s + x.star_rank, "
            f"s.medres_specid || '-x' || (%s + c.k), {', '.join('s.' + c for c in spectrum_cols)}, now(), now() "
            + batch.replace("FROM _sources x", "FROM _sources x JOIN spectra_spectrum s ON s.id = x.spectrum_id"),
            [spectrum_base - 1, sources.size, star_base - 1, stars, copy, *batch_params])
        sql(f"INSERT INTO {SOURCE_TABLE} SELECT %s + c.k * %s + x.rank, x.spectrum_id " + batch,
            [spectrum_base - 1, sources.size, *batch_params])
        added += rows
        copy += copies
    for table in ("spectra_star", "spectra_spectrum", SOURCE_TABLE):
        sql(f"ANALYZE {table}")
    return added, time.perf_counter() - started


def make_models():
    """One network, one epoch on random spectra, registered as formal and alternate."""
    from django.conf import settings

    from core.labels import LABEL_FIELDS
    from inference.models import ModelVersion
    from inference.network.artifact import artifact_write
    from inference.network.config import NetworkConfig, TrainingConfig
    from inference.network.estimator import SPCANet
    from spectra.processing.pipeline import PREPROCESSING_VERSION

    rng = np.random.default_rng(0)
    flux = (1 + rng.normal(0, 0.02, size=(96, 2, 4000))).astype(np.float32)
    labels = np.column_stack([rng.normal(5000, 400, 96), rng.normal(3, 1, 96), rng.normal(-0.2, 0.2, (96, 13))])
    net = SPCANet(NetworkConfig(), TrainingConfig(max_epochs=1, seed=0), LABEL_FIELDS)
    net.fit(flux[:64], labels[:64], cv_flux=flux[64:], cv_labels=labels[64:])
    net.calibrate(flux[64:], labels[64:], np.full(32, 30.0))
    versions = []
    for role in (ModelVersion.Role.FORMAL, ModelVersion.Role.ALTERNATE):
        relative, sha256 = artifact_write(settings.MODEL_ARTIFACT_ROOT, net.to_artifact(
            preprocessing_version=PREPROCESSING_VERSION, role=role.value))
        versions.append(ModelVersion.objects.create(
            name=f"scale-{role.value}", role=role, artifact_uri=relative, artifact_sha256=sha256, config={},
            training_set_hash="0" * 64, code_version="bench", preprocessing_version=PREPROCESSING_VERSION))
    return versions


def predict(models, sample: int) -> dict:
    """Predict the ingested spectra and a sample of replicas; copy the rest's label sets."""
    from inference.models import LabelSet
    from inference.services.prediction import labelsets_predict

    ingested = [sid for (sid,) in sql(
        f"SELECT s.id FROM spectra_spectrum s WHERE s.status = 'preprocessed' AND NOT EXISTS "
        f"(SELECT 1 FROM {SOURCE_TABLE} m WHERE m.spectrum_id = s.id) ORDER BY s.id")]
    labelsets_predict(model_versions=models, spectrum_ids=ingested)  # sources of every copy
    lacking = [sid for (sid,) in sql(
        f"SELECT m.spectrum_id FROM {SOURCE_TABLE} m WHERE NOT EXISTS (SELECT 1 FROM inference_labelset l "
        "WHERE l.spectrum_id = m.spectrum_id AND l.model_version_id = %s) ORDER BY m.spectrum_id LIMIT %s",
        [models[0].pk, sample])]
    start_rss = reset_peak()
    started = time.perf_counter()
    predicted = labelsets_predict(model_versions=models, spectrum_ids=lacking) if lacking else 0
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    label_cols = columns_of("inference_labelset", {"id", "spectrum_id", "predicted_at"})
    started = time.perf_counter()
    copied = sql(
        f"INSERT INTO inference_labelset (spectrum_id, {', '.join(label_cols)}, predicted_at) "
        f"SELECT m.spectrum_id, {', '.join('l.' + c for c in label_cols)}, now() FROM {SOURCE_TABLE} m "
        "JOIN inference_labelset l ON l.spectrum_id = m.source_id WHERE NOT EXISTS (SELECT 1 FROM "
        "inference_labelset x WHERE x.spectrum_id = m.spectrum_id AND x.model_version_id = l.model_version_id)")
    sql("ANALYZE inference_labelset")
    copy_seconds = time.perf_counter() - started
    return {"predicted": predicted, "seconds": seconds, "peak": peak, "start": start_rss, "copied": copied, "copy_seconds": copy_seconds,
            "label_sets": LabelSet.objects.count()}


def build_release(models) -> dict:
    from django.db import connection

    from inference.models import CatalogRelease
    from inference.services.release import catalog_release_build, catalog_release_create, catalog_release_publish

    sql("TRUNCATE validation_validationresult, inference_catalogstar, inference_catalogentry, "
        "inference_catalogrelease RESTART IDENTITY CASCADE")
    release = catalog_release_create(name="bench", formal_model=models[0], alternate_model=models[1])
    backend = sql("SELECT pg_backend_pid()")[0][0]
    start_rss = reset_peak()
    cpu_backend, cpu_self, cpu_machine = cpu_seconds(backend), time.process_time(), machine_cpu_seconds()
    started = time.perf_counter()
    catalog_release_build(release=release)
    seconds = time.perf_counter() - started
    cpu = {"python": time.process_time() - cpu_self, "postgres": cpu_seconds(backend) - cpu_backend,
           "machine": machine_cpu_seconds() - cpu_machine}
    peak = peak_rss_mb()
    release = catalog_release_publish(release=CatalogRelease.objects.get(pk=release.pk))
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE inference_catalogentry")
        cursor.execute("VACUUM ANALYZE inference_catalogstar")
    return {"release": release, "seconds": seconds, "peak": peak, "start": start_rss, "cpu": cpu}


def validate(release, ref_stars: int, seed: int) -> dict:
    from core.labels import LABEL_FIELDS
    from inference.models import CatalogEntry
    from spectra.mock.survey import SURVEYS, _write_survey
    from validation.services import reference_survey_import, release_validate

    rng = np.random.default_rng(seed)
    rows = sql(
        "SELECT st.id, st.ra, st.dec, COALESCE(st.gaia_source_id, 0) FROM spectra_star st "
        "WHERE EXISTS (SELECT 1 FROM spectra_spectrum s WHERE s.star_id = st.id) ORDER BY random() LIMIT %s",
        [ref_stars])
    star_ids = np.array([row[0] for row in rows], dtype=np.int64)
    labels = dict(
        (row[0], row[1:]) for row in CatalogEntry.objects.filter(release=release, spectrum__star_id__in=star_ids.tolist())
        .order_by("spectrum__star_id").values_list("spectrum__star_id", *LABEL_FIELDS).iterator(chunk_size=50_000))
    truth = np.array([labels.get(s, (np.nan,) * len(LABEL_FIELDS)) for s in star_ids], dtype=np.float64)
    injection = SURVEYS["apogee"]
    n = star_ids.size
    values = {name: truth[:, LABEL_FIELDS.index(name)] + injection.bias[name] + rng.normal(0, injection.scatter[name], n)
              for name in injection.bias}
    gaia = np.array([row[3] for row in rows], dtype=np.int64)
    gaia[rng.random(n) < 0.2] = 0  # a fifth matched by position
    stars = {"ra": np.array([row[1] for row in rows]), "dec": np.array([row[2] for row in rows]), "gaia": gaia,
             "designation": [f"LAMOST J{i:09d}.0+000000.0" for i in range(n)]}
    with tempfile.TemporaryDirectory() as scratch:
        _write_survey("apogee", Path(scratch), stars, np.arange(n), values, rng.random(n) < 0.05, rng)
        survey = reference_survey_import(name="scale-apogee", path=Path(scratch) / "apogee_like.fits",
                                         format_name="apogee-dr14")
    start_rss = reset_peak()
    started = time.perf_counter()
    results = release_validate(release=release, surveys=[survey])
    seconds = time.perf_counter() - started
    teff = next(r for r in results if r.label == "teff")
    return {"seconds": seconds, "peak": peak_rss_mb(), "start": start_rss, "spectra": teff.n_spectra, "stars": teff.n_stars}


def api_latency(release, requests: int, seed: int) -> dict[str, list[float]]:
    """Filtered page (Teff windows drawn from the release's own Flag = 1 range) and cone search."""
    from django.test import Client

    from inference.models import CatalogEntry

    rng = np.random.default_rng(seed)
    good = CatalogEntry.objects.filter(release=release, flag=1, snr_blue__gt=20, snr_red__gt=20)
    low_q, high_q = (np.array(sql(
        "SELECT percentile_cont(ARRAY[0.05, 0.95]) WITHIN GROUP (ORDER BY teff) FROM inference_catalogentry "
        "WHERE release_id = %s AND flag = 1", [release.pk])[0][0] or [4500.0, 5500.0], dtype=np.float64))
    width = max(1.0, (high_q - low_q) / 4)
    client = Client()
    client.get(f"/api/v1/releases/{release.name}/entries/?page_size=1")  # warm-up
    timings: dict[str, list[float]] = {"filtered page": [], "cone search": []}
    full = 0
    for _ in range(requests):
        low = float(rng.uniform(low_q, high_q - width))
        url = (f"/api/v1/releases/{release.name}/entries/?teff_min={low:.1f}&teff_max={low + width:.1f}"
               "&snr_min=20&flag=1")
        started = time.perf_counter()
        response = client.get(url)
        timings["filtered page"].append(time.perf_counter() - started)
        assert response.status_code == 200, response.content[:200]
        full += len(response.json()["results"]) == 100
        ra, dec = float(rng.uniform(0, 360)), float(np.degrees(np.arcsin(rng.uniform(-0.17, 0.87))))
        started = time.perf_counter()
        response = client.get(f"/api/v1/releases/{release.name}/entries/?cone_ra={ra:.4f}&cone_dec={dec:.4f}"
                              "&cone_radius=1")
        timings["cone search"].append(time.perf_counter() - started)
        assert response.status_code == 200
    timings["full pages"] = [full, requests, good.count()]
    return timings


def run_size(target: int, args, models) -> dict:
    from catalog_bench import export_in_subprocess

    from spectra.models import Spectrum

    out: dict = {"target": target}
    added, seconds = replicate(target, args.seed, stars=args.replica_stars)
    out["spectra"] = Spectrum.objects.filter(status=Spectrum.Status.PREPROCESSED).count()
    print(f"\n== {out['spectra']:,} spectra ({added:,} replicas added in {seconds:.0f} s; {load()})", flush=True)
    p = predict(models, args.predict_sample)
    out["predict"] = p
    print(f"predict (2 models): {p['predicted']:,} spectra in {p['seconds']:.1f} s = "
          f"{p['predicted'] / max(p['seconds'], 1e-9):,.0f} spectra/s, peak RSS {p['peak']:,.0f} MB "
          f"(+{p['peak'] - p['start']:,.0f} over the stage's start); "
          f"{p['copied']:,} label sets copied from their source spectra in {p['copy_seconds']:.0f} s "
          f"(not prediction); {load()}", flush=True)
    b = build_release(models)
    release = b["release"]
    out["build"] = b
    print(f"release build: {release.entry_count:,} entries, {release.star_count:,} stars in {b['seconds']:.1f} s = "
          f"{release.entry_count / b['seconds']:,.0f} spectra/s, peak RSS {b['peak']:,.0f} MB "
          f"(+{b['peak'] - b['start']:,.0f} over the stage's start); CPU s: python "
          f"{b['cpu']['python']:.1f} (its threads too), its own postgres backend {b['cpu']['postgres']:.1f}, the "
          f"whole machine {b['cpu']['machine']:.1f} (the build's other connections, and anything else running: "
          f"{release.entry_count / b['cpu']['machine']:,.0f} spectra per machine CPU second); {load()}", flush=True)
    v = validate(release, args.ref_stars, args.seed)
    out["validate"] = v
    print(f"validation: {v['spectra']:,} spectra of {v['stars']:,} reference stars in {v['seconds']:.1f} s "
          f"({release.entry_count / v['seconds']:,.0f} catalog spectra/s), peak RSS {v['peak']:,.0f} MB "
          f"(+{v['peak'] - v['start']:,.0f} over the stage's start); {load()}",
          flush=True)
    rows, elapsed, size, base_mb, peak_mb = export_in_subprocess(args.database_url)
    out["export"] = {"rows": rows, "seconds": elapsed, "peak": peak_mb}
    print(f"CSV export: {rows:,} rows in {elapsed:.1f} s = {rows / elapsed:,.0f} rows/s, {size / 1e6:,.0f} MB, "
          f"peak RSS {peak_mb:,.0f} MB (start-up {base_mb:,.0f} MB); {load()}", flush=True)
    out["api"] = api_report(release, args)
    return out


def api_report(release, args) -> dict[str, tuple[float, float]]:
    """Measure and print the API's p50 and p95 (ms) per kind of request."""
    from catalog_bench import percentile

    timings = api_latency(release, args.requests, args.seed)
    full, requests, good = timings.pop("full pages")
    figures = {}
    for name, values in timings.items():
        ms = [v * 1000 for v in values]
        figures[name] = (percentile(ms, 50), percentile(ms, 95))
        print(f"API {name}: p50 {percentile(ms, 50):.1f} ms, p95 {percentile(ms, 95):.1f} ms "
              f"({len(ms)} requests)", flush=True)
    print(f"  ({full} of {requests} filtered pages full; {good:,} Flag = 1 rows with S/N > 20; {load()})", flush=True)
    return figures


def _replica_stars(value: str) -> str:
    """``--replica-stars``: one-per-spectrum, as-source or a whole number of spectra per star."""
    if value in ("one-per-spectrum", "as-source") or (value.isdigit() and int(value) >= 1):
        return value
    raise argparse.ArgumentTypeError("one-per-spectrum, as-source or a whole number of spectra per star (>= 1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", default="100000,1000000", help="Sizes, ascending, comma-separated.")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres:///spcanet_scale"))
    parser.add_argument("--var-dir", type=Path, default=Path("/tmp/spcanet-scale-bench"))
    parser.add_argument("--mock-stars", type=int, default=200, help="Stars of the mock survey (~10 spectra each).")
    parser.add_argument("--predict-sample", type=int, default=4096,
                        help="Replicas predicted for real per size (the rate does not depend on N).")
    parser.add_argument("--ref-stars", type=int, default=50_000, help="Stars of the validation catalog.")
    parser.add_argument("--requests", type=int, default=100, help="API requests per kind.")
    parser.add_argument("--replica-stars", type=_replica_stars, default="one-per-spectrum",
                        help="A new star per replica (one-per-spectrum, the default), per source star and copy "
                             "(as-source: as many spectra per star as the mock survey has), or per K replicas "
                             "(a whole number K: K spectra per star).")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="Keep the rows, shards and survey at the end.")
    parser.add_argument("--cleanup", action="store_true", help="Only remove what an earlier --keep run left.")
    parser.add_argument("--api-only", action="store_true",
                        help="Only the API figures, on the release an earlier --keep run left (server settings apart).")
    args = parser.parse_args()

    os.environ["SPCANET_VAR_DIR"] = str(args.var_dir)
    os.environ["SPECTRA_ARRAY_ROOT"] = str(args.var_dir / "arrays")
    os.environ["MODEL_ARTIFACT_ROOT"] = str(args.var_dir / "models")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from catalog_bench import ensure_database, setup_django

    ensure_database(args.database_url)
    setup_django(args.database_url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if args.api_only:
        from inference.models import CatalogRelease

        release = CatalogRelease.objects.filter(name="bench").first()
        if release is None:
            parser.error(f"no release 'bench' in {args.database_url}: run with --keep first")
        print(f"database {args.database_url} ({server_settings()}); release bench: {release.entry_count:,} entries; "
              f"{load()}", flush=True)
        api_report(release, args)
        return
    survey = args.var_dir / "mock"
    clean(args.var_dir, survey=args.cleanup)
    if args.cleanup:
        print(f"removed the benchmark's rows from {args.database_url} and {args.var_dir}")
        return
    print(f"database {args.database_url} ({server_settings()}); {load()}", flush=True)
    results = []
    try:
        ingest_mock(survey, args.mock_stars)
        models = make_models()
        for target in sorted(int(s) for s in args.spectra.split(",")):
            results.append(run_size(target, args, models))
    finally:
        if not args.keep:
            clean(args.var_dir, survey=True)
    print("\nsize        predict/s  build/s (peak MB above start)  validate/s (ditto)  export rows/s (peak MB)  "
          "page p95  cone p95")
    for r in results:
        entries = r["build"]["release"].entry_count
        print(f"{r['spectra']:>9,} {r['predict']['predicted'] / max(r['predict']['seconds'], 1e-9):>10,.0f} "
              f"{entries / r['build']['seconds']:>8,.0f} (+{r['build']['peak'] - r['build']['start']:,.0f}) "
              f"{entries / r['validate']['seconds']:>13,.0f} (+{r['validate']['peak'] - r['validate']['start']:,.0f}) "
              f"{r['export']['rows'] / r['export']['seconds']:>16,.0f} ({r['export']['peak']:,.0f}) "
              f"{r['api']['filtered page'][1]:>8.1f} ms {r['api']['cone search'][1]:>6.1f} ms")


if __name__ == "__main__":
    main()
