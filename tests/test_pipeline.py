"""The Celery pipeline: runs, chunks, stages, incremental re-runs, failures, and a killed worker."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from inference.models import CatalogEntry, CatalogRelease, LabelSet, ModelVersion
from inference.selectors import spectra_to_predict
from spectra.array_store import ArrayStore
from spectra.models import SourceFile, Spectrum, Star
from spectra.processing.pipeline import PREPROCESSING_VERSION
from tasks.models import ProcessingChunk, ProcessingRun
from tasks.selectors import processing_run_progress
from tasks.services import (
    RunConfigurationError,
    processing_run_create,
    processing_run_retry_failed,
    processing_run_start,
)

from .conftest import make_trained_models
from .shared_data import real_files

ROOT = Path(__file__).resolve().parent.parent


def write_rv_catalog(files, path):
    from spectra.io import read_spectrum_file

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["obsid", "rv_blue", "rv_red"])
        for file in files:
            try:
                writer.writerow([read_spectrum_file(file).obsid, -20.0, -18.0])
            except Exception:  # junk files have no usable header: they are recorded at ingest
                continue


@pytest.mark.django_db
def test_the_embedded_pipeline_runs_every_stage_and_a_rerun_does_nothing(tmp_path, settings, django_capture_on_commit_callbacks):
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    files = real_files()
    survey = tmp_path / "survey"
    survey.mkdir()
    for path in files:
        (survey / path.name).write_bytes(path.read_bytes())
    (survey / "broken.fits").write_text("not FITS")
    write_rv_catalog(files, tmp_path / "rv.csv")
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    run = processing_run_create(stages=["ingest", "predict", "release"], paths=[str(survey)],
                                rv_catalog_path=str(tmp_path / "rv.csv"), measure_rv=False, formal_model=formal,
                                alternate_model=alternate, release_name="pipe-1", chunk_files=3, chunk_spectra=20)
    with django_capture_on_commit_callbacks(execute=True):  # tasks are queued after commit
        processing_run_start(run=run)
    run.refresh_from_db()
    assert run.state == ProcessingRun.State.SUCCEEDED, list(run.chunks.values("stage", "state", "error"))
    progress = processing_run_progress(run=run)
    assert progress["stages"]["ingest"]["done"] == int(np.ceil((len(files) + 1) / 3))
    failed_files = SourceFile.objects.filter(status="failed")
    assert progress["stages"]["ingest"]["files_failed"] == failed_files.count() >= 1
    assert failed_files.filter(path__endswith="broken.fits").exists()  # recorded, and the chunk went on
    assert run.reason.startswith(f"{failed_files.count()} input file(s) could not be read")  # and said
    predictable = Spectrum.objects.filter(status=Spectrum.Status.PREPROCESSED).count()
    assert predictable > 20 and progress["stages"]["predict"]["spectra"] == predictable
    assert progress["stages"]["predict"]["done"] == int(np.ceil(predictable / 20))
    assert LabelSet.objects.count() == 2 * predictable
    release = CatalogRelease.objects.get(name="pipe-1")
    assert release.entry_count == predictable and not release.is_published
    assert set(run.stage_seconds) == {"ingest", "predict", "release"}

    again = processing_run_create(stages=["ingest", "predict", "release"], paths=[str(survey)],
                                  rv_catalog_path=str(tmp_path / "rv.csv"), measure_rv=False, formal_model=formal,
                                  alternate_model=alternate, release_name="pipe-1", chunk_files=3, chunk_spectra=20)
    with django_capture_on_commit_callbacks(execute=True):
        processing_run_start(run=again)
    again.refresh_from_db()
    assert again.state == ProcessingRun.State.SUCCEEDED
    second = processing_run_progress(run=again)["stages"]
    assert second["ingest"]["spectra"] == 0 and "predict" not in second  # nothing new: nothing predicted
    assert LabelSet.objects.count() == 2 * predictable and CatalogEntry.objects.count() == predictable


@pytest.mark.django_db
def test_a_model_reads_only_spectra_of_its_own_preprocessing_version(tmp_path, settings, capsys,
                                                                    django_capture_on_commit_callbacks):
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    spectra = _spectra_with_arrays(6)
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    older = [spectra[0].pk, spectra[3].pk]
    Spectrum.objects.filter(pk__in=older).update(preprocessing_version="1.0")
    call_command("predict_labels", formal.name, alternate.name)
    out = capsys.readouterr().out
    assert "predicted 4 spectra" in out
    assert (f"not predicted: 2 preprocessed spectra of another preprocessing version than the models' "
            f"(version {PREPROCESSING_VERSION}): 2 of version 1.0") in out and "ingest_spectra --stale" in out
    assert LabelSet.objects.count() == 8 and not LabelSet.objects.filter(spectrum_id__in=older).exists()
    # A run that predicts says what it left undone.
    run = processing_run_create(stages=["predict"], formal_model=formal, alternate_model=alternate)
    with django_capture_on_commit_callbacks(execute=True):
        processing_run_start(run=run)
    run.refresh_from_db()
    assert run.state == ProcessingRun.State.SUCCEEDED
    assert "2 preprocessed spectra of another preprocessing version than the models' were not predicted" in run.reason
    assert LabelSet.objects.count() == 8
    # Models of two preprocessing versions are given nothing to read.
    ModelVersion.objects.filter(pk=alternate.pk).update(preprocessing_version="1.0")
    alternate.refresh_from_db()
    assert not spectra_to_predict(model_versions=[formal, alternate], only_missing=False).exists()


@pytest.mark.django_db
def test_a_poisoned_chunk_fails_alone_and_can_be_retried(tmp_path, settings, monkeypatch, django_capture_on_commit_callbacks):
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    spectra = _spectra_with_arrays(60)
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    import inference.services.prediction as prediction

    real = prediction.labelsets_predict
    poison = spectra[25].pk

    def breaks_on_one_range(**kwargs):
        first, last = kwargs["id_range"]
        if first <= poison <= last:
            raise RuntimeError("poisoned chunk")
        return real(**kwargs)

    monkeypatch.setattr("tasks.services.labelsets_predict", breaks_on_one_range)
    run = processing_run_create(stages=["predict", "release"], formal_model=formal, alternate_model=alternate,
                                release_name="pipe-2", chunk_spectra=10)
    with django_capture_on_commit_callbacks(execute=True):
        processing_run_start(run=run)
    run.refresh_from_db()
    assert run.state == ProcessingRun.State.PARTIAL  # finished, with one chunk failed: not a success
    assert run.reason == "1 of 7 chunks failed"
    failed = run.chunks.get(state=ProcessingChunk.State.FAILED)
    assert "RuntimeError: poisoned chunk" in failed.error
    assert LabelSet.objects.filter(model_version=formal).count() == 50  # the other five chunks went on
    assert CatalogRelease.objects.get(name="pipe-2").entry_count == 50  # and the release was built from them

    monkeypatch.setattr("tasks.services.labelsets_predict", real)
    with django_capture_on_commit_callbacks(execute=True):
        assert processing_run_retry_failed(run=run) == 1
    run.refresh_from_db()
    assert run.state == ProcessingRun.State.SUCCEEDED
    assert LabelSet.objects.filter(model_version=formal).count() == 60
    assert CatalogRelease.objects.get(name="pipe-2").entry_count == 60


@pytest.mark.django_db
def test_runs_are_checked_and_controlled_through_the_api(tmp_path, settings, curator, django_capture_on_commit_callbacks):
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    with pytest.raises(RunConfigurationError, match="needs paths"):
        processing_run_create(stages=["ingest"])
    with pytest.raises(RunConfigurationError, match="formal and alternate"):
        processing_run_create(stages=["predict"])
    _spectra_with_arrays(12)
    make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    client = APIClient()
    body = {"stages": ["predict"], "formal_model": "tiny-formal", "alternate_model": "tiny-alternate"}
    assert client.post("/api/v1/processing-runs/", body, format="json").status_code in (401, 403)
    client.force_authenticate(curator)
    assert client.post("/api/v1/processing-runs/", {"stages": ["release"]}, format="json").status_code == 400
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/processing-runs/", body, format="json")
    assert response.status_code == 201, response.content
    run = client.get(f"/api/v1/processing-runs/{response.json()['id']}/").json()
    assert run["state"] == "succeeded" and run["progress"]["chunks"]["done"] == 1
    assert client.post(f"/api/v1/processing-runs/{run['id']}/retry/").json()["queued_chunks"] == 0
    assert client.post(f"/api/v1/processing-runs/{run['id']}/cancel/").json()["skipped_chunks"] == 0


@pytest.mark.django_db
def test_a_run_whose_inputs_all_fail_to_read_ends_failed_and_says_why(tmp_path, settings,
                                                                     django_capture_on_commit_callbacks):
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    survey = tmp_path / "survey"
    survey.mkdir()
    (survey / "broken.fits").write_text("not FITS")
    (survey / "empty.fits").write_bytes(b"")
    run = processing_run_create(stages=["ingest"], paths=[str(survey)], measure_rv=False)
    with django_capture_on_commit_callbacks(execute=True):
        processing_run_start(run=run)
    run.refresh_from_db()
    assert run.state == ProcessingRun.State.FAILED
    assert run.reason == "none of the 2 input file(s) could be read"
    assert list(run.chunks.values_list("state", "failed_items")) == [("done", 2)]


@pytest.mark.django_db
def test_a_run_is_refused_when_workers_could_never_receive_it(tmp_path, monkeypatch):
    from spcanet_site.celery import app

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery's conf.broker_url prefers it to the setting
    eager, broker = app.conf.task_always_eager, app.conf.broker_url
    try:
        app.conf.update(task_always_eager=False, broker_url="memory://")
        with pytest.raises(RunConfigurationError, match="no broker is configured"):
            processing_run_create(stages=["ingest"], paths=[str(tmp_path)])
        assert not ProcessingRun.objects.exists()
        app.conf.update(broker_url="redis://127.0.0.1:6379/15")
        assert processing_run_create(stages=["ingest"], paths=[str(tmp_path)]).state == ProcessingRun.State.PENDING
    finally:
        app.conf.update(task_always_eager=eager, broker_url=broker)


def _spectra_with_arrays(n: int) -> list[Spectrum]:
    from django.conf import settings

    rng = np.random.default_rng(1)
    flux = (1 + rng.normal(0, 0.02, size=(n, 2, 4000))).astype(np.float32)
    shard = ArrayStore(settings.SPECTRA_ARRAY_ROOT).write(flux, np.ones_like(flux))
    spectra = []
    for i in range(n):
        star = Star.objects.create(designation=f"LAMOST J{i:06d}.00+100000.0", ra=10 + i * 0.01, dec=10.0)
        spectra.append(Spectrum.objects.create(
            star=star, medres_specid=f"20190202-Q-02-{i:03d}-coadd", kind=Spectrum.Kind.COADD, plan_id="Q",
            spectrograph=2, fiber=i % 250 + 1, lmjd=58500, snr_blue=30.0, snr_red=40.0, source_path="/z.fits",
            source_sha256="d" * 64, file_format="dr7", status=Spectrum.Status.PREPROCESSED, array_shard=shard,
            array_row=i, preprocessing_version=PREPROCESSING_VERSION))
    return spectra


def _worker(env: dict, queue_names: str, *, app_module: str = "spcanet_site", pool: str = "solo",
            concurrency: int = 1, logfile=None) -> subprocess.Popen:
    """A Celery worker on ``queue_names``: its warnings on a pipe, or with ``logfile`` its
    INFO log in that file."""
    log_options = ["-l", "INFO", "--logfile", str(logfile)] if logfile else ["-l", "WARNING"]
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app_module, "worker", "-Q", queue_names, "-c", str(concurrency),
         "-P", pool, "--without-heartbeat", "--without-gossip", "--without-mingle", *log_options],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL if logfile else subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )


def _worker_environment(settings) -> tuple[dict, dict]:
    """Environment for worker processes on this test's database and its own queues; routes to them."""
    from django.db import connection

    db = connection.settings_dict
    database_url = f"postgres:///{db['NAME']}" if not db["HOST"] else (
        f"postgres://{db['USER'] or ''}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}")
    suffix = f"{os.getpid()}-{time.monotonic_ns()}"
    queues = {"cpu": f"cpu-{suffix}", "gpu": f"gpu-{suffix}"}
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "spcanet_site.settings.test", "DATABASE_URL": database_url,
           "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
           "CELERY_TASK_ALWAYS_EAGER": "false", "CELERY_VISIBILITY_TIMEOUT": "5",
           "SPECTRA_ARRAY_ROOT": str(settings.SPECTRA_ARRAY_ROOT), "MODEL_ARTIFACT_ROOT": str(settings.MODEL_ARTIFACT_ROOT),
           "TF_CPP_MIN_LOG_LEVEL": "3", "CELERY_CPU_QUEUE": queues["cpu"], "CELERY_GPU_QUEUE": queues["gpu"]}
    routes = {"tasks.ingest_chunk": {"queue": queues["cpu"]}, "tasks.release_chunk": {"queue": queues["cpu"]},
              "tasks.predict_chunk": {"queue": queues["gpu"]}}
    return env, routes


def _send_to_workers(routes: dict | None) -> None:
    """Queue tasks to the workers along ``routes``; None: back to eager, default routes.

    ``conf.update`` (not item assignment) makes Celery rebuild its cached router, or a
    second test in the process would send to the first one's queues.
    """
    from django.conf import settings

    from spcanet_site.celery import app

    app.conf.update(task_always_eager=routes is None, task_routes=routes or settings.CELERY_TASK_ROUTES)


def _stop(worker: subprocess.Popen | None) -> None:
    if worker is not None and worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_killing_a_worker_mid_run_loses_nothing_and_duplicates_nothing(tmp_path, settings):
    """SIGKILL the worker while a chunk is running, start another: every spectrum is
    predicted exactly once and the release holds every row once."""

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    n = 1200
    _spectra_with_arrays(n)
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    env, routes = _worker_environment(settings)
    queues = {"cpu": env["CELERY_CPU_QUEUE"], "gpu": env["CELERY_GPU_QUEUE"]}
    _send_to_workers(routes)
    first = _worker(env, ",".join(queues.values()))
    second = None
    try:
        run = processing_run_create(stages=["predict", "release"], formal_model=formal, alternate_model=alternate,
                                    release_name="killed", publish=True, chunk_spectra=100)
        processing_run_start(run=run)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # wait until a chunk is mid-way, after at least one finished
            running = ProcessingChunk.objects.filter(run=run, state="running").exists()
            if running and ProcessingChunk.objects.filter(run=run, state="done").exists():
                break
            time.sleep(0.05)
        else:
            pytest.fail("the worker never got going: " + first.stdout.read() if first.poll() is not None else "timeout")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        killed_chunk = ProcessingChunk.objects.filter(run=run, state="running").values_list("pk", flat=True).first()
        second = _worker(env, ",".join(queues.values()))
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.is_finished:
                break
            time.sleep(0.2)
        run.refresh_from_db()
        assert run.state == ProcessingRun.State.SUCCEEDED, list(run.chunks.values("index", "state", "error"))
    finally:
        _send_to_workers(None)
        for worker in (first, second):
            _stop(worker)
    for version in (formal, alternate):
        assert LabelSet.objects.filter(model_version=version).count() == n
        assert LabelSet.objects.filter(model_version=version).values("spectrum").distinct().count() == n
    assert CatalogEntry.objects.filter(release__name="killed").count() == n
    assert CatalogRelease.objects.get(name="killed").is_published
    if killed_chunk is not None:  # the chunk the kill interrupted was redelivered and redone
        assert ProcessingChunk.objects.get(pk=killed_chunk).attempts >= 2
    call_command("run_pipeline", "--follow", str(run.pk))


# What tests/poison_worker.py looks for (not imported here: importing it patches the ingest).
POISON = b"POISON: this file kills the process that ingests it\n"
HANG = b"HANG: this file blocks the process that ingests it\n"


def _wait_until_finished(run: ProcessingRun, seconds: float, workers: list[subprocess.Popen], start_worker=None) -> float:
    """Seconds until the run finished; with ``start_worker``, a worker that died is replaced,
    once its message can come back (the visibility timeout, 3 s here, has passed)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        run.refresh_from_db()
        if run.is_finished:
            break
        if start_worker is not None and workers[-1].poll() is not None:
            time.sleep(3.2)
            workers.append(start_worker())
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("pool", "limit"), [("prefork", 3), ("solo", 2)])
def test_a_chunk_that_kills_its_worker_fails_after_the_delivery_limit_and_can_be_retried(tmp_path, settings, pool, limit):
    """A file whose ingest kills the worker process (SIGKILL) every time: the chunk is
    delivered PROCESSING_CHUNK_MAX_DELIVERIES times, then failed naming the lost worker;
    the run ends failed, and a retry with the file repaired succeeds.

    prefork: the pool child dies and the worker puts the message back at once. solo: the
    worker itself dies, its message comes back after the visibility timeout, to the next
    worker started (and the limit is set lower, through the environment, to save time)."""

    from .shared_data import JUNK_FILES

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    good = [path for path in real_files() if path.name not in JUNK_FILES]
    if len(good) < 3:
        pytest.skip("needs three readable LAMOST MRS files")
    survey = tmp_path / "survey"
    survey.mkdir()
    for path in good[:2]:
        (survey / path.name).write_bytes(path.read_bytes())
    poisoned = survey / f"poisoned-{good[2].name}"
    poisoned.write_bytes(POISON + good[2].read_bytes())
    env, routes = _worker_environment(settings)
    env.update(PROCESSING_CHUNK_MAX_DELIVERIES=str(limit), CELERY_VISIBILITY_TIMEOUT="3")
    _send_to_workers(routes)

    def start_worker() -> subprocess.Popen:
        return _worker(env, env["CELERY_CPU_QUEUE"], app_module="tests.poison_worker", pool=pool)

    workers = [start_worker()]
    restart = start_worker if pool == "solo" else None
    try:
        run = processing_run_create(stages=["ingest"], paths=[str(survey)], measure_rv=False, chunk_files=1)
        processing_run_start(run=run)
        seconds = _wait_until_finished(run, 90, workers, restart)
        print(f"{pool}: the run with a worker-killing chunk finished in {seconds:.1f} s")
        # The other chunks succeeded: the run finished partial, the failure counted.
        assert run.state == ProcessingRun.State.PARTIAL, (seconds, list(run.chunks.values("state", "attempts", "error")))
        assert run.reason == f"1 of {run.chunks.count()} chunks failed"
        chunk = run.chunks.get(state=ProcessingChunk.State.FAILED)
        assert chunk.payload == {"paths": [str(poisoned)]}
        assert chunk.attempts == chunk.lost_deliveries == limit
        assert chunk.error.startswith(f"worker lost: delivered {limit} times, the worker process died each time "
                                      f"(last on {chunk.worker})"), chunk.error
        host, pid = chunk.worker.rsplit("/", 1)
        assert host.startswith("celery@")
        if pool == "prefork":  # a pool child died each time; the worker lived on
            assert int(pid) != workers[0].pid and workers[0].poll() is None
        else:  # a worker died each time; the next one failed the chunk without running it, and lives on
            assert len(workers) == limit + 1 and int(pid) == workers[limit - 1].pid
            assert [w.poll() for w in workers[:limit]] == [-signal.SIGKILL] * limit and workers[limit].poll() is None
        assert run.chunks.filter(state=ProcessingChunk.State.DONE).count() == 2
        written = Spectrum.objects.count()
        assert written > 0

        poisoned.write_bytes(good[2].read_bytes())  # the file repaired
        assert processing_run_retry_failed(run=run) == 1
        chunk.refresh_from_db()
        assert (chunk.lost_deliveries, chunk.error) == (0, "")
        seconds = _wait_until_finished(run, 60, workers)
        print(f"{pool}: the retried run finished in {seconds:.1f} s")
        assert run.state == ProcessingRun.State.SUCCEEDED, list(run.chunks.values("state", "attempts", "error"))
        chunk.refresh_from_db()
        assert (chunk.state, chunk.attempts, chunk.lost_deliveries) == (ProcessingChunk.State.DONE, limit + 1, 0)
        assert chunk.items > 0 and Spectrum.objects.count() == written + chunk.items
    finally:
        _send_to_workers(None)
        for worker in workers:
            _stop(worker)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_chunk_killed_at_the_hard_time_limit_fails_and_the_run_ends(tmp_path, settings, monkeypatch):
    """A chunk deaf to the soft time limit is killed at the hard one: it is failed with the
    reason (it is not left running, its message acknowledged, with the run never ending)."""
    from tasks.tasks import ingest_chunk

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    # The limits travel in the message, from the sender's task options (cached once sent).
    monkeypatch.setattr(ingest_chunk, "soft_time_limit", 1)
    monkeypatch.setattr(ingest_chunk, "time_limit", 3)
    monkeypatch.setattr(ingest_chunk, "_exec_options", None)
    survey = tmp_path / "survey"
    survey.mkdir()
    (survey / "hangs.fits").write_bytes(HANG)
    env, routes = _worker_environment(settings)
    _send_to_workers(routes)
    workers = [_worker(env, env["CELERY_CPU_QUEUE"], app_module="tests.poison_worker", pool="prefork")]
    try:
        run = processing_run_create(stages=["ingest"], paths=[str(survey)], measure_rv=False)
        processing_run_start(run=run)
        seconds = _wait_until_finished(run, 60, workers)
        print(f"the run with a chunk past the hard time limit finished in {seconds:.1f} s")
        assert run.state == ProcessingRun.State.FAILED, (seconds, list(run.chunks.values("state", "attempts", "error")))
        chunk = run.chunks.get()
        assert chunk.state == ProcessingChunk.State.FAILED and chunk.attempts == 1
        assert chunk.error.startswith("TimeLimitExceeded: killed at the hard time limit (3"), chunk.error
        assert workers[0].poll() is None
    finally:
        _send_to_workers(None)
        for worker in workers:
            _stop(worker)
