"""Pipeline benchmark: a mock survey through ingest -> predict -> release on Celery workers.

Runs the same survey three ways against the real PostgreSQL (``--database``, emptied
before each way) and, for the workers, the real Redis: in-process (eager, the baseline),
with 1 worker process, and with 2 worker processes. Prints spectra/s per stage and
overall, the scaling ratio 2 vs 1, and the queue's overhead (1 worker against in-process).
The networks have the default architecture, trained for one epoch on random spectra: their
labels mean nothing, their cost per spectrum is the real one.

    .venv/bin/python benchmarks/pipeline_bench.py --survey /tmp/mock50k --stars 5000
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

STAGES = ("ingest", "predict", "release")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survey", type=Path, required=True)
    parser.add_argument("--stars", type=int, default=5000, help="Stars of a generated survey (~10 spectra each).")
    parser.add_argument("--database", default="postgres:///spcanet_bench_pipeline")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--var-dir", type=Path, default=Path("/tmp/spcanet-pipeline-bench"))
    parser.add_argument("--chunk-files", type=int, default=128)
    parser.add_argument("--chunk-spectra", type=int, default=4096)
    parser.add_argument("--ways", default="inprocess,1,2", help="Which runs: inprocess, 1, 2 (worker processes).")
    args = parser.parse_args()

    os.environ["SPCANET_VAR_DIR"] = str(args.var_dir)
    os.environ["SPECTRA_ARRAY_ROOT"] = str(args.var_dir / "arrays")
    os.environ["MODEL_ARTIFACT_ROOT"] = str(args.var_dir / "models")
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "true"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from catalog_bench import ensure_database, setup_django

    ensure_database(args.database)
    setup_django(args.database, broker_url=args.broker)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if not (args.survey / "manifest.json").exists():
        started = time.perf_counter()
        call_command("make_mock_survey", str(args.survey), stars=args.stars, seed=7)
        print(f"mock survey generated in {time.perf_counter() - started:.0f} s")
    rates = {}
    for way in args.ways.split(","):
        reset(args)
        formal, alternate = models()
        rates[way] = run_once(args, way, formal, alternate)
    report(rates)


def reset(args) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE tasks_processingchunk, tasks_processingrun, inference_catalogentry, inference_catalogrelease, "
            "inference_labelset, inference_modelversion, spectra_spectrum, spectra_sourcefile, spectra_star, "
            "spectra_curationrecord RESTART IDENTITY CASCADE")
    shutil.rmtree(args.var_dir / "arrays", ignore_errors=True)


def models():
    from django.conf import settings

    from core.labels import LABEL_FIELDS
    from inference.models import ModelVersion
    from inference.network.artifact import artifact_write
    from inference.network.config import NetworkConfig, TrainingConfig
    from inference.network.estimator import SPCANet
    from spectra.processing.pipeline import PREPROCESSING_VERSION

    rng = np.random.default_rng(0)
    versions = []
    for seed, role in enumerate(ModelVersion.Role):
        flux = (1 + rng.normal(0, 0.02, size=(96, 2, 4000))).astype(np.float32)
        labels = np.column_stack([rng.normal(5000, 400, 96), rng.normal(3, 1, 96), rng.normal(-0.2, 0.2, (96, 13))])
        net = SPCANet(NetworkConfig(), TrainingConfig(max_epochs=1, seed=seed), LABEL_FIELDS)
        net.fit(flux[:64], labels[:64], cv_flux=flux[64:], cv_labels=labels[64:])
        net.calibrate(flux[64:], labels[64:], np.full(32, 30.0))
        relative, sha256 = artifact_write(settings.MODEL_ARTIFACT_ROOT, net.to_artifact(
            preprocessing_version=PREPROCESSING_VERSION, role=role.value))
        versions.append(ModelVersion.objects.create(
            name=f"bench-{role.value}", role=role, artifact_uri=relative, artifact_sha256=sha256, config={},
            training_set_hash="0" * 64, code_version="bench", preprocessing_version=PREPROCESSING_VERSION))
    return versions


def run_once(args, way: str, formal, alternate) -> dict:
    from django.db import connection

    from spcanet_site.celery import app
    from tasks.models import ProcessingRun
    from tasks.services import processing_run_create, processing_run_progress, processing_run_start

    workers = None
    if way != "inprocess":
        env = {**os.environ, "CELERY_TASK_ALWAYS_EAGER": "false", "DATABASE_URL": args.database,
               "CELERY_BROKER_URL": args.broker}
        subprocess.run(["redis-cli", "-u", args.broker, "FLUSHDB"], check=True, capture_output=True)
        workers = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "spcanet_site", "worker", "-Q", "celery,cpu,gpu", "-c", way,
             "--without-gossip", "--without-mingle", "-l", "WARNING"],
            cwd=ROOT, env=env, start_new_session=True)
        app.conf.task_always_eager = False
        time.sleep(8)  # worker start-up, outside the timed run
    else:
        app.conf.task_always_eager = True
    connection.close()
    try:
        run = processing_run_create(stages=list(STAGES), paths=[str(args.survey / "fits")],
                                    rv_catalog_path=str(args.survey / "rv_catalog.csv"), measure_rv=False,
                                    formal_model=formal, alternate_model=alternate, release_name=f"bench-{way}",
                                    chunk_files=args.chunk_files, chunk_spectra=args.chunk_spectra)
        started = time.perf_counter()
        processing_run_start(run=run)
        while True:
            run.refresh_from_db()
            if run.is_finished:
                break
            time.sleep(0.5)
        total = time.perf_counter() - started
    finally:
        if workers is not None:
            os.killpg(workers.pid, signal.SIGTERM)
            workers.wait(timeout=120)
    progress = processing_run_progress(run=run)
    spectra = progress["stages"]["ingest"]["spectra"] or 0
    result = {"state": run.state, "spectra": spectra, "total_seconds": total,
              "stage_seconds": {s: run.stage_seconds.get(s) for s in STAGES},
              "predicted": progress["stages"].get("predict", {}).get("spectra") or 0}
    stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result["stage_seconds"].items()
                       if seconds is not None)
    print(f"{way}: {run.state}, {spectra} spectra ingested, {result['predicted']} predicted, {total:.1f} s ({stages})",
          flush=True)
    assert run.state == ProcessingRun.State.SUCCEEDED, progress
    return result


def report(rates: dict) -> None:
    print("\nspectra/s (stage rates over the spectra each stage handled)")
    print(f"{'way':<11}{'ingest':>10}{'predict':>10}{'release':>10}{'overall':>10}")
    for way, r in rates.items():
        cells = []
        for stage, count in (("ingest", r["spectra"]), ("predict", r["predicted"]), ("release", r["predicted"])):
            seconds = r["stage_seconds"][stage]
            cells.append(f"{count / seconds:>10,.0f}" if seconds else f"{'-':>10}")
        print(f"{way:<11}{''.join(cells)}{r['spectra'] / r['total_seconds']:>10,.0f}")
    if "inprocess" in rates:
        for way in (w for w in rates if w != "inprocess"):
            changes = []
            for stage in STAGES:
                own, queued = rates["inprocess"]["stage_seconds"][stage], rates[way]["stage_seconds"][stage]
                if own and queued:
                    changes.append(f"{stage} {queued / own - 1:+.1%}")
            target = "   (target: no stage more than 20% slower)" if way == "1" else ""
            print(f"stage time on {way} worker(s) vs the same stage in-process: {', '.join(changes)}{target}")
    if "1" in rates and "2" in rates:
        print(f"scaling 2 workers vs 1: {rates['1']['total_seconds'] / rates['2']['total_seconds']:.2f}x")
    if "1" in rates and "inprocess" in rates:
        overhead = rates["1"]["total_seconds"] / rates["inprocess"]["total_seconds"] - 1
        print(f"queue overhead (1 worker vs in-process, overall): {overhead:+.1%}   (target < 10%)")


if __name__ == "__main__":
    main()
