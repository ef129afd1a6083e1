"""Pipeline benchmark: a mock survey through ingest -> predict -> release on Celery workers.

Runs the same survey three ways against the real PostgreSQL (``--database``, emptied
before each way) and, for the workers, the real Redis: in-process (eager, the baseline),
with 1 worker process, and with 2 worker processes. After each run the release is
validated against the survey's APOGEE-, GALAH- and RAVE-like catalogs (imported and
matched, then ``release_validate`` over every row, Flag 0 included), timed apart. Prints spectra/s per stage and end to
end (ingest to release), the scaling ratio 2 vs 1, the queue's overhead per chunk (1
worker against in-process), the CPU seconds of the workers, PostgreSQL, this process and
the whole machine during each timed run (what a second process can still gain: on 2 cores
the work outside the workers runs on the second core for free when one worker runs), the
peak memory (VmHWM) of every process that did chunks, and the load average (``uptime``) before and after each way: the figures are only as
quiet as the machine. The networks have the default architecture with the masked-pixel
fill, trained for one epoch on random spectra: their labels mean nothing, their cost per
spectrum is the real one.

    .venv/bin/python benchmarks/pipeline_bench.py --survey /tmp/mock50k --stars 5000
    .venv/bin/python benchmarks/pipeline_bench.py --survey /tmp/mock50k --files 600 --ways 1,2   # a subset
    .venv/bin/python benchmarks/pipeline_bench.py --survey /tmp/mock50k --files 600 --ways 2 \
        --stages ingest,predict --chunk-files 64 --chunk-spectra 2048 --no-validation          # chunk sizes
    .venv/bin/python benchmarks/pipeline_bench.py --survey /tmp/mock50k --ways 1,2 --threads 1          # a core per process
    .venv/bin/python benchmarks/pipeline_bench.py --survey /tmp/mock50k --ways 1,2 --threads 1 --cold

Before each way's timed run the workers start and, unless ``--cold``, every pool process
warms both models (tasks.tasks; the bench creates the run first, so its models are in
demand); the warm-up time is printed apart.

``--threads N`` caps every library's threads per process at N (by default TensorFlow and
numba each use every core, so one process already loads both cores of a 2-core machine and
a second process has no core of its own).
"""

import argparse
import os
import re
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
# Threads per process: TensorFlow's two pools, numba's kernels, BLAS, the ingest's preprocessing threads.
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "INGEST_THREADS")
# The survey's validation catalogs (make_mock_survey) and their formats.
VALIDATION_CATALOGS = (("apogee_like.fits", "apogee-dr14"), ("galah_like.fits", "galah-dr2"), ("rave_like.csv", "rave-dr5"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survey", type=Path, required=True)
    parser.add_argument("--stars", type=int, default=5000, help="Stars of a generated survey (~10 spectra each).")
    parser.add_argument("--files", type=int, default=0, help="Only the first N files of the survey (0: all).")
    parser.add_argument("--database", default="postgres:///spcanet_bench_pipeline")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--var-dir", type=Path, default=Path("/tmp/spcanet-pipeline-bench"))
    parser.add_argument("--chunk-files", type=int, default=256, help="Files per ingest chunk (the runs' default).")
    parser.add_argument("--chunk-spectra", type=int, default=4096, help="Spectra per predict chunk (the runs' default).")
    parser.add_argument("--stages", default=",".join(STAGES), help="Pipeline stages to run, in order.")
    parser.add_argument("--no-validation", action="store_true", help="Skip the validation after the release.")
    parser.add_argument("--ways", default="inprocess,1,2", help="Which runs: inprocess, 1, 2 (worker processes).")
    parser.add_argument("--cold", action="store_true",
                        help="Workers that do not warm their models when they start (WORKER_WARM_MODELS=false): "
                             "the first prediction chunk of each process loads TensorFlow and the networks.")
    parser.add_argument("--threads", type=int, default=0,
                        help="Threads per process (TensorFlow, numba, BLAS, ingest); 0: the libraries' defaults "
                             "(every core in each process).")
    args = parser.parse_args()
    args.stages = [s for s in STAGES if s in args.stages.split(",")]
    args.validate = "release" in args.stages and not args.no_validation

    os.environ["SPCANET_VAR_DIR"] = str(args.var_dir)
    os.environ["SPECTRA_ARRAY_ROOT"] = str(args.var_dir / "arrays")
    os.environ["MODEL_ARTIFACT_ROOT"] = str(args.var_dir / "models")
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "true"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.threads:
        # Read by the libraries when they start: set before any of them is imported here,
        # and inherited by the worker processes.
        for variable in THREAD_VARIABLES:
            os.environ[variable] = str(args.threads)
    from catalog_bench import ensure_database, setup_django

    ensure_database(args.database)
    setup_django(args.database, broker_url=args.broker)
    from django.core.management import call_command

    from spectra.services.ingest import spectrum_files

    call_command("migrate", verbosity=0)
    if not (args.survey / "manifest.json").exists():
        started = time.perf_counter()
        call_command("make_mock_survey", str(args.survey), stars=args.stars, seed=7, no_ideal=True)
        print(f"mock survey generated in {time.perf_counter() - started:.0f} s")
    files = [str(path) for path in spectrum_files([args.survey / "fits"])]
    args.paths = files[: args.files] if args.files else [str(args.survey / "fits")]
    print(f"survey {args.survey}: {len(files) if not args.files else min(args.files, len(files)):,} files; "
          f"chunks of {args.chunk_files} files and {args.chunk_spectra} spectra; stages {','.join(args.stages)}"
          f"{' + validation' if args.validate else ''}; {os.cpu_count()} CPUs; "
          f"{f'{args.threads} thread(s) per process' if args.threads else 'default threads'}; "
          f"workers {'cold' if args.cold else 'warmed before each run'}", flush=True)
    results = {}
    for way in args.ways.split(","):
        reset(args)
        formal, alternate = models()
        results[way] = run_once(args, way, formal, alternate)
    report(results, args)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return ", ".join(Path("/proc/loadavg").read_text().split()[:3])


def _processes() -> dict[int, tuple[str, int, float]]:
    """Every process in /proc: pid -> (name, parent pid, CPU seconds of it and its reaped
    children: utime + stime + cutime + cstime)."""
    tick = os.sysconf("SC_CLK_TCK")
    processes = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
                name = text[text.index("(") + 1 : text.rindex(")")]
                fields = text.rsplit(")", 1)[1].split()
                processes[int(entry.name)] = (name, int(fields[1]), sum(int(v) for v in fields[11:15]) / tick)
            except (OSError, IndexError, ValueError):
                continue
    return processes


def _family(pid: int, processes: dict[int, tuple[str, int, float]]) -> set[int]:
    """A process and every descendant."""
    family, frontier = {pid}, [pid]
    while frontier:
        children = [child for child, (_, parent, _) in processes.items() if parent in frontier and child not in family]
        family.update(children)
        frontier = children
    return family


def cpu_snapshot(workers_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of the worker processes (with those they reaped), of PostgreSQL
    (every ``postgres`` process, the postmaster's reaped backends included), of this
    process, and busy seconds of the whole machine (/proc/stat, all but idle and iowait)."""
    processes = _processes()
    workers = 0.0 if workers_pid is None else sum(processes[p][2] for p in _family(workers_pid, processes)
                                                  if p in processes)
    postgres = sum(cpu for name, _, cpu in processes.values() if name == "postgres")
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    own = sum(os.times()[:4])
    return {"workers": workers, "postgres": postgres, "bench": own, "machine": busy}


def process_peaks(pid: int) -> dict[int, float]:
    """VmHWM (MB) of a process and every descendant, read from /proc (before they exit)."""
    peaks = {}
    for member in sorted(_family(pid, _processes())):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[member] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return peaks


def reset(args) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE tasks_processingchunk, tasks_processingrun, inference_catalogentry, inference_catalogrelease, "
            "inference_labelset, inference_modelversion, spectra_spectrum, spectra_sourcefile, spectra_star, "
            "spectra_curationrecord, validation_validationresult, validation_referencestar, "
            "validation_referencesurvey RESTART IDENTITY CASCADE")
    shutil.rmtree(args.var_dir / "arrays", ignore_errors=True)


def models():
    """The two model versions, registered afresh; their artifacts are trained once per
    ``--var-dir`` and preprocessing version (recorded in ``bench-models-fill.json`` beside
    them) and reused by every way: a model reads only spectra of its own version."""
    import json

    from django.conf import settings

    from inference.models import ModelVersion
    from spectra.processing.pipeline import PREPROCESSING_VERSION

    record = Path(settings.MODEL_ARTIFACT_ROOT) / "bench-models-fill.json"
    trained = json.loads(record.read_text()) if record.exists() else {}
    if trained.get("preprocessing_version") != PREPROCESSING_VERSION or not all(
            (Path(settings.MODEL_ARTIFACT_ROOT) / trained.get(role.value, ["-"])[0]).exists() for role in ModelVersion.Role):
        trained = {**train_models(), "preprocessing_version": PREPROCESSING_VERSION}
        record.write_text(json.dumps(trained))
    return [ModelVersion.objects.create(
        name=f"bench-{role.value}", role=role, artifact_uri=trained[role.value][0], artifact_sha256=trained[role.value][1],
        config={}, training_set_hash="0" * 64, code_version="bench", preprocessing_version=PREPROCESSING_VERSION)
        for role in ModelVersion.Role]


def train_models() -> dict[str, list[str]]:
    from django.conf import settings

    from core.labels import LABEL_FIELDS
    from inference.models import ModelVersion
    from inference.network.artifact import artifact_write
    from inference.network.config import NetworkConfig, TrainingConfig
    from inference.network.estimator import SPCANet
    from spectra.processing.pipeline import PREPROCESSING_VERSION

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    trained = {}
    for seed, role in enumerate(ModelVersion.Role):
        # [flux, ivar]: the network gets its masked-pixel fill, as a network trained on the shards does.
        arrays = np.ones((96, 2, 2, 4000), dtype=np.float32)
        arrays[:, 0] += rng.normal(0, 0.02, size=(96, 2, 4000)).astype(np.float32)
        arrays[:, 1] = 400.0
        labels = np.column_stack([rng.normal(5000, 400, 96), rng.normal(3, 1, 96), rng.normal(-0.2, 0.2, (96, 13))])
        net = SPCANet(NetworkConfig(), TrainingConfig(max_epochs=1, seed=seed), LABEL_FIELDS)
        net.fit(arrays[:64], labels[:64], cv_flux=arrays[64:], cv_labels=labels[64:])
        net.calibrate(arrays[64:], labels[64:], np.full(32, 30.0))
        relative, sha256 = artifact_write(settings.MODEL_ARTIFACT_ROOT, net.to_artifact(
            preprocessing_version=PREPROCESSING_VERSION, role=role.value))
        trained[role.value] = [relative, sha256]
    print(f"trained the two networks (one epoch on random spectra) in {time.perf_counter() - started:.0f} s", flush=True)
    return trained


def run_once(args, way: str, formal, alternate) -> dict:
    from django.db import connection

    from spcanet_site.celery import app
    from tasks.models import ProcessingRun
    from tasks.selectors import processing_run_progress
    from tasks.services import peak_rss_mb, processing_run_create, processing_run_start

    load_before = load_average()
    print(f"{way}: load average before {load_before}", flush=True)
    # Created before the workers start: a worker warms the models of the runs still to do.
    run = processing_run_create(stages=args.stages, paths=args.paths,
                                rv_catalog_path=str(args.survey / "rv_catalog.csv"), measure_rv=False,
                                formal_model=formal, alternate_model=alternate, release_name=f"bench-{way}",
                                chunk_files=args.chunk_files, chunk_spectra=args.chunk_spectra)
    workers, worker_peaks, warm_seconds = None, {}, None
    connection.close()
    try:
        if way != "inprocess":
            env = {**os.environ, "CELERY_TASK_ALWAYS_EAGER": "false", "DATABASE_URL": args.database,
                   "CELERY_BROKER_URL": args.broker, "WORKER_WARM_MODELS": "false" if args.cold else "true"}
            subprocess.run(["redis-cli", "-u", args.broker, "FLUSHDB"], check=True, capture_output=True)
            log = args.var_dir / f"worker-{way}.log"
            log.unlink(missing_ok=True)
            workers = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "spcanet_site", "worker", "-Q", "celery,cpu,gpu", "-c", way,
                 "--without-gossip", "--without-mingle", "-l", "INFO", "--logfile", str(log)],
                cwd=ROOT, env=env, start_new_session=True)
            app.conf.task_always_eager = False
            if args.cold:
                time.sleep(8)  # worker start-up, outside the timed run
            else:  # until every pool process has warmed its models, outside the timed run
                # (both when the run predicts; none are in demand, so none are warmed, when it does not)
                warm_seconds, warmed = wait_for_warm_workers(log, int(way), workers)
                print(f"{way}: worker processes started and warmed {', '.join(map(str, warmed))} model(s) in "
                      f"{warm_seconds:.1f} s", flush=True)
        else:
            app.conf.task_always_eager = True
        cpu_before = cpu_snapshot(None if workers is None else workers.pid)
        started = time.perf_counter()
        processing_run_start(run=run)
        while True:
            run.refresh_from_db()
            if run.is_finished:
                break
            time.sleep(0.5)
        total = time.perf_counter() - started
        cpu_after = cpu_snapshot(None if workers is None else workers.pid)
        cpu = {key: cpu_after[key] - cpu_before[key] for key in cpu_before}
    finally:
        if workers is not None:
            worker_peaks = process_peaks(workers.pid)
            os.killpg(workers.pid, signal.SIGTERM)
            workers.wait(timeout=120)
    progress = processing_run_progress(run=run)
    assert run.state == ProcessingRun.State.SUCCEEDED, progress
    stages = progress["stages"]
    spectra = (stages.get("ingest") or {}).get("spectra") or 0
    predicted = (stages.get("predict") or {}).get("spectra") or 0
    chunks = {stage: list(run.chunks.filter(stage=stage, state="done").values_list("seconds", "worker", "peak_rss_mb"))
              for stage in args.stages}
    result = {"state": run.state, "warm_seconds": warm_seconds, "spectra": spectra, "predicted": predicted,
              "total_seconds": total, "cpu": cpu,
              "stage_seconds": {s: run.stage_seconds.get(s) for s in args.stages},
              "chunks": {s: len(c) for s, c in chunks.items()},
              "chunk_seconds": {s: sum(c[0] for c in rows) for s, rows in chunks.items()},
              "files": (stages.get("ingest") or {}).get("units_done") or 0,
              "release_rows": (stages.get("release") or {}).get("spectra") or 0,
              "chunk_peaks": {}}
    for stage, rows in chunks.items():  # the highest peak each process reported, per stage
        for _, worker, peak in rows:
            key = worker.rsplit("/", 1)[-1] if worker else "in-process"
            result["chunk_peaks"].setdefault(stage, {})[key] = max(peak or 0, result["chunk_peaks"].get(stage, {}).get(key, 0))
    result["process_peaks"] = worker_peaks if workers is not None else {os.getpid(): peak_rss_mb()}
    if args.validate:
        result.update(validate(args, f"bench-{way}"))
    result["load"] = (load_before, load_average())
    timings = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result["stage_seconds"].items()
                        if seconds is not None)
    print(f"{way}: {run.state}, {result['files']:,} files, {spectra:,} spectra ingested, {predicted:,} predicted, "
          f"{total:.1f} s ({timings})" + (f"; validation {result['validation_seconds']:.1f} s" if args.validate else "")
          + f"; load average after {result['load'][1]}", flush=True)
    return result


def wait_for_warm_workers(log: Path, processes: int, workers: subprocess.Popen,
                          timeout: float = 300.0) -> tuple[float, list[int]]:
    """Seconds until ``processes`` pool processes have logged their warm-up (tasks.tasks),
    from now, and how many models each warmed (the worker's settings and the runs' demand
    decide that: both models of a run that predicts)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        text = log.read_text() if log.exists() else ""
        if "could not warm" in text:
            raise RuntimeError(f"a worker process could not warm its models; see {log}")
        warmed = [int(n) for n in re.findall(r" warmed (\d+) model\(s\) ", text)]
        if len(warmed) >= processes:
            return time.perf_counter() - started, warmed
        if workers.poll() is not None:
            raise RuntimeError(f"the worker exited with {workers.returncode}; see {log}")
        time.sleep(0.2)
    raise RuntimeError(f"the worker processes did not warm their models in {timeout:.0f} s; see {log}")


def validate(args, release_name: str) -> dict:
    """Import and match the survey's validation catalogs, then validate the release (every row); timed apart."""
    from inference.models import CatalogRelease
    from validation.services import reference_survey_import, release_validate

    started = time.perf_counter()
    surveys = [reference_survey_import(name=name.split(".")[0], path=args.survey / name, format_name=fmt)
               for name, fmt in VALIDATION_CATALOGS if (args.survey / name).exists()]
    imported = time.perf_counter() - started
    release = CatalogRelease.objects.get(name=release_name)
    started = time.perf_counter()
    # Every row, not only Flag = 1: the bench networks' labels are noise, so the two models
    # rarely agree and few rows would be compared; the cost of a real release is that of all.
    results = release_validate(release=release, surveys=surveys, good_only=False)
    seconds = time.perf_counter() - started
    compared = sum(r.n_spectra for r in results if r.label == "teff")
    return {"validation_seconds": seconds, "validation_import_seconds": imported, "validation_compared": compared,
            "validation_surveys": len(surveys), "validation_rows": release.entries.count()}


def report(results: dict, args) -> None:
    print(f"\nspectra/s per stage (ingest: spectra written; predict: spectra predicted by both models; release: "
          f"rows built{'; validation: release rows validated against the catalogs' if args.validate else ''})")
    columns = [*args.stages, *(["validation"] if args.validate else []), "end to end"]
    print(f"{'way':<11}" + "".join(f"{c:>12}" for c in columns) + f"{'files/s':>10}{'load before':>20}{'load after':>20}")
    for way, r in results.items():
        cells = []
        counts = {"ingest": r["spectra"], "predict": r["predicted"], "release": r["release_rows"]}
        for stage in args.stages:
            seconds = r["stage_seconds"][stage]
            cells.append(f"{counts[stage] / seconds:>12,.0f}" if seconds else f"{'-':>12}")
        if args.validate:
            cells.append(f"{r['validation_rows'] / r['validation_seconds']:>12,.0f}")
        spectra = r["spectra"] or r["predicted"]
        files = f"{r['files'] / r['stage_seconds']['ingest']:>10,.1f}" if r.get("files") and r["stage_seconds"].get("ingest") else f"{'-':>10}"
        print(f"{way:<11}{''.join(cells)}{spectra / r['total_seconds']:>12,.0f}{files}{r['load'][0]:>20}{r['load'][1]:>20}")
    print("(end to end: spectra over the wall time from the run's start to its last stage done; validation apart)")
    for way, r in results.items():
        extra = (f"; validation import+match {r['validation_import_seconds']:.1f} s, validate {r['validation_seconds']:.1f} s "
                 f"({r['validation_compared']:,} spectra compared in Teff over {r['validation_surveys']} catalogs)"
                 if args.validate else "")
        warm = ("" if way == "inprocess" else "; workers cold (each process loads the models at its first chunk)"
                if r["warm_seconds"] is None else f"; workers started and warmed in {r['warm_seconds']:.1f} s before it")
        print(f"{way}: {r['total_seconds']:.1f} s{warm}; chunks " + ", ".join(f"{s} {n}" for s, n in r["chunks"].items()) + extra)
    print("\nCPU seconds during each timed run (worker processes; PostgreSQL; this process, which runs the chunks "
          "in-process; the whole machine, and what else it ran)")
    for way, r in results.items():
        c = r["cpu"]
        other = c["machine"] - c["workers"] - c["postgres"] - c["bench"]
        print(f"{way}: workers {c['workers']:.1f}, PostgreSQL {c['postgres']:.1f}, this process {c['bench']:.1f}, "
              f"machine {c['machine']:.1f} (else {other:.1f}) over {r['total_seconds']:.1f} s on {os.cpu_count()} "
              f"CPUs ({c['machine'] / (r['total_seconds'] * (os.cpu_count() or 1)):.0%} busy)")
    print("\npeak memory (VmHWM, MB) per process")
    for way, r in results.items():
        reported = {}
        for stage_peaks in r["chunk_peaks"].values():
            for key, peak in stage_peaks.items():
                reported[key] = max(peak, reported.get(key, 0))
        by_stage = "; ".join(f"{stage}: " + ", ".join(f"{p:,.0f}" for p in sorted(peaks.values()))
                             for stage, peaks in r["chunk_peaks"].items())
        processes = ", ".join(f"{pid}: {p:,.0f}" for pid, p in r["process_peaks"].items())
        print(f"{way}: reported by chunks ({by_stage}); processes at the end ({processes})")
    if "inprocess" in results:
        for way in (w for w in results if w != "inprocess"):
            base, queued = results["inprocess"], results[way]
            changes = []
            for stage in args.stages:
                own, other = base["stage_seconds"][stage], queued["stage_seconds"][stage]
                if own and other:
                    changes.append(f"{stage} {other / own - 1:+.1%}")
            print(f"stage time on {way} worker(s) vs the same stage in-process: {', '.join(changes)}")
    if "1" in results and "2" in results:
        print(f"scaling 2 workers vs 1 (end to end): {results['1']['total_seconds'] / results['2']['total_seconds']:.2f}x; "
              "per stage: " + ", ".join(
                  f"{s} {results['1']['stage_seconds'][s] / results['2']['stage_seconds'][s]:.2f}x"
                  for s in args.stages if results["1"]["stage_seconds"][s] and results["2"]["stage_seconds"][s]))
    if "1" in results:
        one = results["1"]
        gaps = ", ".join(f"{s} {(one['stage_seconds'][s] - one['chunk_seconds'][s]) / one['chunks'][s] * 1000:,.0f} ms"
                         for s in args.stages if one["chunks"][s] and one["stage_seconds"][s])
        print(f"queue overhead per chunk on 1 worker (stage wall time minus its chunks' own time, per chunk): {gaps}")
        if "inprocess" in results:
            base = results["inprocess"]
            n = sum(one["chunks"].values())
            overhead = one["total_seconds"] - base["total_seconds"]
            print(f"queue overhead per chunk, 1 worker vs in-process: ({one['total_seconds']:.1f} - "
                  f"{base['total_seconds']:.1f} s) / {n} chunks = {overhead / n * 1000:,.0f} ms "
                  f"({one['total_seconds'] / base['total_seconds'] - 1:+.1%} end to end)")


if __name__ == "__main__":
    main()
