"""Runs under faults: a lost worker, a flushed broker, a lost stage advance, a redelivered
publish, a full array store, concurrent ingests. Each ends in a final state with exact counts."""

import os
import shutil
import signal
import time

import pytest
import redis
from django.core.management import call_command

from inference.models import CatalogEntry, CatalogRelease, LabelSet
from spectra.models import SourceFile, Spectrum, Star
from spectra.processing.pipeline import PREPROCESSING_VERSION
from tasks.models import ProcessingChunk, ProcessingRun
from tasks.reconcile import broker_chunk_ids, processing_runs_reconcile
from tasks.services import processing_run_create, processing_run_start

from .conftest import make_trained_models
from .shared_data import JUNK_FILES, real_files
from .test_ingest import KIC_FILES, small_filesystem  # noqa: F401  (a fixture)
from .test_pipeline import (
    _send_to_workers,
    _spectra_with_arrays,
    _stop,
    _worker,
    _worker_environment,
    write_rv_catalog,
)

FAST_LIVENESS = {"PIPELINE_HEARTBEAT_SECONDS": "0.5", "PIPELINE_WORKER_LOST_SECONDS": "3",
                 "PIPELINE_MESSAGE_LOST_SECONDS": "2"}


def _fast_liveness(settings) -> None:
    for name, value in FAST_LIVENESS.items():
        setattr(settings, name, float(value))


def _follow(run: ProcessingRun, seconds: float, every: float = 1.0) -> float:
    """Wait for the run's final state, reconciling as ``run_pipeline --follow`` does; seconds taken."""
    started = time.monotonic()
    next_reconcile = started
    while time.monotonic() - started < seconds:
        run.refresh_from_db()
        if run.is_finished:
            break
        if time.monotonic() >= next_reconcile:
            processing_runs_reconcile()
            next_reconcile = time.monotonic() + every
        time.sleep(0.1)
    run.refresh_from_db()
    return time.monotonic() - started


def _chunk_states(run):
    return list(run.chunks.values_list("stage", "index", "state", "lost_deliveries", "error"))


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_costs_seconds_not_the_visibility_timeout(tmp_path, settings):
    """SIGKILL a solo worker mid-chunk: its message would return only after the visibility
    timeout (left at its default, 40 minutes). The chunk's heartbeat stops; the reconciler
    sends it again and a second worker finishes the run."""
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    _fast_liveness(settings)
    n = 1200
    _spectra_with_arrays(n)
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    env, routes = _worker_environment(settings)
    env.pop("CELERY_VISIBILITY_TIMEOUT")
    env.update(FAST_LIVENESS)
    queues = ",".join((env["CELERY_CPU_QUEUE"], env["CELERY_GPU_QUEUE"]))
    _send_to_workers(routes)
    first, second = _worker(env, queues), None
    try:
        run = processing_run_create(stages=["predict", "release"], formal_model=formal, alternate_model=alternate,
                                    release_name="lost-worker", publish=True, chunk_spectra=100)
        processing_run_start(run=run)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if (ProcessingChunk.objects.filter(run=run, state="running").exists()
                    and ProcessingChunk.objects.filter(run=run, state="done").exists()):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the worker never got going")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        killed = ProcessingChunk.objects.filter(run=run, state="running").values_list("pk", flat=True).first()
        second = _worker(env, queues)
        seconds = _follow(run, 240)
        print(f"killed solo worker: run final {seconds:.1f} s after the kill (visibility timeout "
              f"{settings.CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout']} s)")
        assert run.state == ProcessingRun.State.SUCCEEDED, _chunk_states(run)
        assert seconds < 120
    finally:
        _send_to_workers(None)
        for worker in (first, second):
            _stop(worker)
    for version in (formal, alternate):
        assert LabelSet.objects.filter(model_version=version).count() == n
    assert CatalogEntry.objects.filter(release__name="lost-worker").count() == n
    assert CatalogRelease.objects.get(name="lost-worker").is_published
    if killed is not None:
        chunk = ProcessingChunk.objects.get(pk=killed)
        assert chunk.lost_deliveries == 1 and chunk.attempts == 2 and chunk.state == "done"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_broker_that_lost_its_messages_does_not_strand_the_run(tmp_path, settings):
    """Queue a run, lose every message (a Redis restarted without persistence), then start
    a worker: the reconciler finds the queued chunks that no message carries and sends them."""
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    _fast_liveness(settings)
    n = 300
    _spectra_with_arrays(n)
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    env, routes = _worker_environment(settings)
    env.update(FAST_LIVENESS)
    _send_to_workers(routes)
    worker = None
    try:
        run = processing_run_create(stages=["predict", "release"], formal_model=formal, alternate_model=alternate,
                                    release_name="flushed", publish=True, chunk_spectra=50)
        processing_run_start(run=run)
        queued = set(ProcessingChunk.objects.filter(run=run, state="queued").values_list("pk", flat=True))
        assert len(queued) == 6 and broker_chunk_ids() >= queued
        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
        assert not (broker_chunk_ids() & queued)
        worker = _worker(env, ",".join((env["CELERY_CPU_QUEUE"], env["CELERY_GPU_QUEUE"])))
        seconds = _follow(run, 180)
        print(f"flushed broker: run final {seconds:.1f} s after a worker started")
        assert run.state == ProcessingRun.State.SUCCEEDED, _chunk_states(run)
    finally:
        _send_to_workers(None)
        _stop(worker)
    assert LabelSet.objects.filter(model_version=formal).count() == n
    assert CatalogEntry.objects.filter(release__name="flushed").count() == n
    assert run.chunks.filter(state="done").count() == 7  # six predict chunks and the release, each once


@pytest.mark.django_db
def test_a_stage_whose_advance_was_lost_moves_on(tmp_path, settings, django_capture_on_commit_callbacks):
    """The last chunk of a stage was recorded done, then the connection dropped before the
    next stage was planned: the run sits in `running` with nothing open. The reconciler
    (or any late message for the chunk) plans the next stage."""
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    spectra = _spectra_with_arrays(30)
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    run = processing_run_create(stages=["predict", "release"], formal_model=formal, alternate_model=alternate,
                                release_name="advance", publish=True, chunk_spectra=30)
    import tasks.services

    real_advance = tasks.services.processing_run_advance
    calls = []

    def advance_once_then_drop(*, run_id):
        calls.append(run_id)
        if len(calls) == 2:  # the advance after the predict chunk: the connection is gone
            raise tasks.services.DatabaseError("server closed the connection unexpectedly")
        return real_advance(run_id=run_id)

    tasks.services.processing_run_advance = advance_once_then_drop
    import tasks.tasks

    tasks.tasks.processing_run_advance = advance_once_then_drop
    try:
        with pytest.raises(tasks.services.DatabaseError), django_capture_on_commit_callbacks(execute=True):
            processing_run_start(run=run)
    finally:
        tasks.services.processing_run_advance = real_advance
        tasks.tasks.processing_run_advance = real_advance
    run.refresh_from_db()
    assert len(calls) == 2
    assert (run.state, run.current_stage) == ("running", "predict")
    assert list(run.chunks.values_list("stage", "state")) == [("predict", "done")]
    with django_capture_on_commit_callbacks(execute=True):
        summary = processing_runs_reconcile()
    run.refresh_from_db()
    assert summary.advanced == [run.pk]
    assert run.state == ProcessingRun.State.SUCCEEDED
    assert CatalogRelease.objects.get(name="advance").entry_count == len(spectra)


@pytest.mark.django_db
def test_a_redelivered_publish_of_the_same_release_is_success(tmp_path, settings, django_capture_on_commit_callbacks):
    """The worker published the release and died before recording its chunk: the message
    comes back. Publishing the same content again is success; other content is refused."""
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    _spectra_with_arrays(20)
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    run = processing_run_create(stages=["predict", "release"], formal_model=formal, alternate_model=alternate,
                                release_name="twice", publish=True, chunk_spectra=20)
    with django_capture_on_commit_callbacks(execute=True):
        processing_run_start(run=run)
    run.refresh_from_db()
    assert run.state == "succeeded"
    # The same release chunk delivered again, as after a worker died before saving it.
    chunk = run.chunks.get(stage="release")
    ProcessingChunk.objects.filter(pk=chunk.pk).update(state="running", message="m:0")
    ProcessingRun.objects.filter(pk=run.pk).update(state="running", finished_at=None)
    from tasks.tasks import release_chunk

    with django_capture_on_commit_callbacks(execute=True):
        release_chunk.apply(args=[chunk.pk], task_id="m")  # the same message again
    run.refresh_from_db()
    chunk.refresh_from_db()
    assert (run.state, chunk.state, chunk.items, chunk.error, chunk.lost_deliveries) == ("succeeded", "done", 20, "", 1)
    # A published release that differs from what the run would build is not overwritten.
    more = _spectra_with_arrays_offset(5)
    from inference.services.prediction import labelsets_predict

    labelsets_predict(model_versions=[formal, alternate], id_range=(more[0].pk, more[-1].pk))
    ProcessingChunk.objects.filter(pk=chunk.pk).update(state="running", message="m:0")
    ProcessingRun.objects.filter(pk=run.pk).update(state="running", finished_at=None)
    with django_capture_on_commit_callbacks(execute=True):
        release_chunk.apply(args=[chunk.pk], task_id="m")  # the same message again
    chunk.refresh_from_db()
    assert chunk.state == "failed" and "published with 20 rows and cannot change; this run would build 25" in chunk.error
    assert CatalogRelease.objects.get(name="twice").entry_count == 20


def _spectra_with_arrays_offset(n: int) -> list[Spectrum]:
    import numpy as np
    from django.conf import settings

    from spectra.array_store import ArrayStore

    flux = np.ones((n, 2, 4000), dtype=np.float32)
    shard = ArrayStore(settings.SPECTRA_ARRAY_ROOT).write(flux, flux)
    out = []
    for i in range(n):
        star = Star.objects.create(designation=f"LAMOST J{i:06d}.00+200000.0", ra=50 + i * 0.01, dec=20.0)
        out.append(Spectrum.objects.create(
            star=star, medres_specid=f"20190303-R-03-{i:03d}-coadd", kind=Spectrum.Kind.COADD, plan_id="R",
            spectrograph=3, fiber=i + 1, lmjd=58600, snr_blue=30.0, snr_red=40.0, source_path="/r.fits",
            source_sha256="e" * 64, file_format="dr7", status=Spectrum.Status.PREPROCESSED, array_shard=shard,
            array_row=i, preprocessing_version=PREPROCESSING_VERSION))
    return out


@pytest.mark.django_db
def test_a_full_array_store_stops_the_run_and_publishes_nothing(
    tmp_path, settings, small_filesystem, django_capture_on_commit_callbacks  # noqa: F811
):
    settings.SPECTRA_ARRAY_ROOT = small_filesystem / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    files = [p for p in real_files() if p.name not in JUNK_FILES]
    survey = tmp_path / "survey"
    survey.mkdir()
    for path in files:
        shutil.copy(path, survey / path.name)
    write_rv_catalog(files, tmp_path / "rv.csv")
    run = processing_run_create(stages=["ingest", "predict", "release"], paths=[str(survey)],
                                rv_catalog_path=str(tmp_path / "rv.csv"), measure_rv=False, formal_model=formal,
                                alternate_model=alternate, release_name="full-disk", publish=True, chunk_files=1)
    with django_capture_on_commit_callbacks(execute=True):
        processing_run_start(run=run)
    run.refresh_from_db()
    assert run.state == ProcessingRun.State.FAILED
    assert run.reason.startswith("stopped: cannot write an array shard under ") and "errno 28" in run.reason
    failed = run.chunks.get(state="failed")
    assert "No space left on device" in failed.error
    done = run.chunks.filter(stage="ingest", state="done").count()
    assert done >= 1 and run.chunks.filter(state="skipped").count() == len(files) - done - 1
    assert not run.chunks.filter(stage__in=["predict", "release"]).exists()
    assert not CatalogRelease.objects.filter(name="full-disk").exists()
    assert not SourceFile.objects.filter(status="failed").exists()  # no file blamed for the disk
    assert not [p for p in small_filesystem.rglob("*") if ".tmp-" in p.name]


@pytest.mark.django_db
@pytest.mark.parametrize("publish_partial", [False, True])
def test_a_release_is_not_published_from_a_partial_run_unless_asked(
    tmp_path, settings, monkeypatch, django_capture_on_commit_callbacks, publish_partial
):
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    spectra = _spectra_with_arrays(40)
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    import inference.services.prediction as prediction

    real = prediction.labelsets_predict
    poison = spectra[5].pk

    def breaks_on_one_range(**kwargs):
        if kwargs["id_range"][0] <= poison <= kwargs["id_range"][1]:
            raise RuntimeError("poisoned chunk")
        return real(**kwargs)

    monkeypatch.setattr("tasks.services.labelsets_predict", breaks_on_one_range)
    run = processing_run_create(stages=["predict", "release"], formal_model=formal, alternate_model=alternate,
                                release_name="partial", publish=True, publish_partial=publish_partial, chunk_spectra=10)
    with django_capture_on_commit_callbacks(execute=True):
        processing_run_start(run=run)
    run.refresh_from_db()
    release = CatalogRelease.objects.get(name="partial")
    assert run.state == ProcessingRun.State.PARTIAL
    assert release.entry_count == 30
    assert release.is_published == publish_partial
    if publish_partial:
        assert run.reason == "1 of 5 chunks failed"
    else:
        assert run.reason == ("1 of 5 chunks failed; release partial built (30 rows) but not published: 1 chunks of "
                              "earlier stages failed (retry them, or publish from the admin, or start the run with "
                              "publish_partial)")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_concurrent_ingest_chunks_on_a_prefork_worker_make_one_star_per_object(tmp_path, settings):
    """One run on a worker with two pool processes, a file per chunk, four files of one star
    and the rest: every object is one Star, however the chunks interleave."""
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    files = real_files()
    survey = tmp_path / "survey"
    survey.mkdir()
    for path in files:
        shutil.copy(path, survey / path.name)
    write_rv_catalog(files, tmp_path / "rv.csv")
    env, routes = _worker_environment(settings)
    _send_to_workers(routes)
    worker = _worker(env, env["CELERY_CPU_QUEUE"], pool="prefork", concurrency=2)
    try:
        run = processing_run_create(stages=["ingest"], paths=[str(survey)], rv_catalog_path=str(tmp_path / "rv.csv"),
                                    measure_rv=False, chunk_files=1)
        processing_run_start(run=run)
        _follow(run, 180)
        assert run.state == ProcessingRun.State.SUCCEEDED, _chunk_states(run)
    finally:
        _send_to_workers(None)
        _stop(worker)
    assert Star.objects.count() == 3  # the real files hold three objects (tests/test_ingest.py)
    kic = Spectrum.objects.filter(source_path__endswith=KIC_FILES[0]).values_list("star_id", flat=True).first()
    assert set(Spectrum.objects.filter(plan_id__in=["TD192102N424113K01", "TD193637N444141K01"]).values_list(
        "star_id", flat=True)) == {kic}
    call_command("merge_duplicate_stars", "--dry-run")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_database_that_refuses_connections_for_a_while_does_not_strand_the_run(tmp_path, settings):
    """Mid-run, the database drops every worker connection and refuses new ones for 20 s.
    The worker's retries and the reconciler bring the run to its final state after that,
    with every spectrum predicted once."""
    from django.db import connection

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    _fast_liveness(settings)
    n = 1200
    _spectra_with_arrays(n)
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    env, routes = _worker_environment(settings)
    env.update(FAST_LIVENESS)
    _send_to_workers(routes)
    worker = _worker(env, ",".join((env["CELERY_CPU_QUEUE"], env["CELERY_GPU_QUEUE"])))
    name = connection.settings_dict["NAME"]
    try:
        run = processing_run_create(stages=["predict", "release"], formal_model=formal, alternate_model=alternate,
                                    release_name="outage", publish=True, chunk_spectra=100)
        processing_run_start(run=run)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not run.chunks.filter(state="done").exists():
            time.sleep(0.05)
        ours = connection.connection.get_backend_pid()
        with _admin_cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            outage_end = time.monotonic() + 20
            while time.monotonic() < outage_end:  # whoever reconnected before the refusal is dropped too
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                               "AND pid <> %s", [name, ours])
                time.sleep(0.5)
            cursor.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        seconds = _follow(run, 400)
        print(f"database outage of 20 s: run final {seconds:.1f} s after the database came back")
        assert run.state == ProcessingRun.State.SUCCEEDED, _chunk_states(run)
    finally:
        with _admin_cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        _send_to_workers(None)
        _stop(worker)
    for version in (formal, alternate):
        assert LabelSet.objects.filter(model_version=version).count() == n
    assert CatalogEntry.objects.filter(release__name="outage").count() == n
    assert CatalogRelease.objects.get(name="outage").is_published


class _admin_cursor:
    """A cursor on the server's `postgres` database, in autocommit, for ALTER DATABASE."""

    def __enter__(self):
        import psycopg2
        from django.db import connection

        params = {k: v for k, v in connection.get_connection_params().items() if k != "database"}
        params["dbname"] = "postgres"
        self.connection = psycopg2.connect(**params)
        self.connection.autocommit = True
        return self.connection.cursor()

    def __exit__(self, *exc):
        self.connection.close()
