"""Orchestration of processing runs: plan chunks, advance stage by stage, cancel, retry.

Chunk work is done by the apps' services (``spectra_ingest``, ``labelsets_predict``,
``catalog_release_build``); this module only decides what runs where and records it.
"""

import logging
import resource
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from functools import cache

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from inference.models import LabelSet
from inference.selectors import spectra_other_preprocessing, spectra_to_predict
from inference.services.prediction import labelsets_predict
from inference.services.release import (
    ReleaseImmutableError,
    catalog_release_build,
    catalog_release_get_or_create,
    catalog_release_publish,
)
from spectra.services.ingest import rv_catalog_read, spectra_ingest, spectrum_files

from .models import ProcessingChunk, ProcessingRun

Stage = ProcessingRun.Stage
logger = logging.getLogger(__name__)


class RunConfigurationError(ValueError):
    """The run cannot be started as configured."""


def processing_run_create(
    *,
    stages: list[str],
    paths: list[str] | None = None,
    rv_catalog_path: str = "",
    measure_rv: bool = True,
    formal_model=None,
    alternate_model=None,
    release_name: str = "",
    publish: bool = False,
    publish_partial: bool = False,
    chunk_files: int | None = None,
    chunk_spectra: int | None = None,
    name: str = "",
    created_by=None,
) -> ProcessingRun:
    """Record a run; nothing is queued until ``processing_run_start``.

    Stages run in the pipeline's order whatever order they are given in; chunk sizes
    default to the model's (``ProcessingRun.chunk_files``, ``chunk_spectra``). Raises
    RunConfigurationError when the run could not start as configured.
    """
    stages_requested = list(stages)
    if chunk_files is None:
        chunk_files = ProcessingRun._meta.get_field("chunk_files").default
    if chunk_spectra is None:
        chunk_spectra = ProcessingRun._meta.get_field("chunk_spectra").default
    stages = [stage for stage in Stage.values if stage in stages]
    run = ProcessingRun(
        name=name, stages=stages, paths=[str(p) for p in paths or []], rv_catalog_path=rv_catalog_path,
        measure_rv=measure_rv, formal_model=formal_model, alternate_model=alternate_model,
        release_name=release_name, publish=publish, publish_partial=publish_partial, chunk_files=chunk_files,
        chunk_spectra=chunk_spectra,
        created_by=created_by,
    )
    processing_run_check(run=run, requested=stages_requested)
    run.save()
    return run


def processing_run_check(*, run: ProcessingRun, requested: list[str] | None = None) -> None:
    """Raise RunConfigurationError unless the run can be started as configured."""
    stages = requested if requested is not None else run.stages
    unknown = set(stages or []) - set(Stage.values)
    if unknown or not stages:
        raise RunConfigurationError(f"stages must be among {Stage.values}, got {stages}")
    if Stage.INGEST in stages and not run.paths:
        raise RunConfigurationError("an ingest stage needs paths")
    if (Stage.PREDICT in stages or Stage.RELEASE in stages) and not (run.formal_model_id and run.alternate_model_id):
        raise RunConfigurationError("predict and release stages need the formal and alternate models")
    if Stage.RELEASE in stages and not run.release_name:
        raise RunConfigurationError("a release stage needs a release name")
    if run.chunk_files < 1 or run.chunk_spectra < 1:
        raise RunConfigurationError("chunk sizes must be positive")
    broker_check()


def broker_check() -> None:
    """Refuse to queue work that no worker can receive.

    The in-memory transport exists only inside one process: with eager execution off, a
    run queued there would wait forever while workers listen elsewhere.
    """
    if not current_app.conf.task_always_eager and str(current_app.conf.broker_url or "").startswith("memory://"):
        raise RunConfigurationError(
            "tasks are not run in-process (CELERY_TASK_ALWAYS_EAGER is false) but no broker is configured: "
            "set CELERY_BROKER_URL (e.g. redis://127.0.0.1:6379/0) for the workers and this process")


def processing_run_start(*, run: ProcessingRun) -> None:
    """Start a pending run: plan its first stage and queue the chunks."""
    with transaction.atomic():
        locked = ProcessingRun.objects.select_for_update().get(pk=run.pk)
        if locked.state != ProcessingRun.State.PENDING:
            raise RunConfigurationError(f"run {locked.pk} is {locked.state}, not pending")
        processing_run_check(run=locked)
        locked.state = ProcessingRun.State.RUNNING
        locked.started_at = timezone.now()
        locked.save(update_fields=["state", "started_at"])
    processing_run_advance(run_id=run.pk)


def _plan(run: ProcessingRun, stage: str) -> list[dict]:
    if stage == Stage.INGEST:
        files = [str(path) for path in spectrum_files(run.paths)]
        return [{"paths": files[i : i + run.chunk_files]} for i in range(0, len(files), run.chunk_files)]
    if stage == Stage.PREDICT:
        ids = list(spectra_to_predict(model_versions=[run.formal_model, run.alternate_model])
                   .order_by("pk").values_list("pk", flat=True))
        return [{"first_id": ids[i], "last_id": ids[min(i + run.chunk_spectra, len(ids)) - 1],
                 "count": min(run.chunk_spectra, len(ids) - i)} for i in range(0, len(ids), run.chunk_spectra)]
    return [{"release": run.release_name}]


def chunk_size(stage: str, payload: dict) -> int:
    """What a chunk covers, in its stage's unit (``STAGE_UNITS``): files, spectra, or 1 build."""
    if stage == Stage.INGEST:
        return len(payload.get("paths", ()))
    if stage == Stage.PREDICT:
        return int(payload.get("count", 0))
    return 1


def processing_run_advance(*, run_id: int) -> None:
    """If the current stage has no open chunk, plan the next stage with work (or finish).

    Called after every chunk; the run row is locked, so two workers finishing the last
    two chunks at once plan the next stage once.
    """
    created: list[ProcessingChunk] = []
    with transaction.atomic():
        run = ProcessingRun.objects.select_for_update(of=("self",)).select_related(
            "formal_model", "alternate_model").get(pk=run_id)
        if run.state != ProcessingRun.State.RUNNING:
            return
        open_states = [ProcessingChunk.State.QUEUED, ProcessingChunk.State.RUNNING]
        if run.current_stage and run.chunks.filter(stage=run.current_stage, state__in=open_states).exists():
            return
        now = timezone.now()
        if run.current_stage and run.stage_started_at:
            run.stage_seconds = {**run.stage_seconds, run.current_stage: (now - run.stage_started_at).total_seconds()}
        following = run.stages[run.stages.index(run.current_stage) + 1 :] if run.current_stage else run.stages
        for stage in following:
            run.current_stage, run.stage_started_at = stage, now
            payloads = _plan(run, stage)
            if payloads:
                last = run.chunks.filter(stage=stage).aggregate(last=Max("index"))["last"]
                first = 0 if last is None else last + 1  # a retried run plans later stages again
                created = ProcessingChunk.objects.bulk_create(
                    [ProcessingChunk(run=run, stage=stage, index=first + i, payload=p, size=chunk_size(stage, p))
                     for i, p in enumerate(payloads)]
                )
                break
            run.stage_seconds = {**run.stage_seconds, stage: 0.0}
        else:
            counts = run.chunks.aggregate(
                failed=Count("pk", filter=Q(state=ProcessingChunk.State.FAILED)),
                done=Count("pk", filter=Q(state=ProcessingChunk.State.DONE)),
                total=Count("pk", filter=~Q(state=ProcessingChunk.State.SKIPPED)))
            files = run.chunks.filter(stage=Stage.INGEST, state=ProcessingChunk.State.DONE).aggregate(
                failed=Sum("failed_items"), written=Sum("items"), unchanged=Sum("skipped_items"))
            notes = []
            if counts["failed"]:
                # Never reported as success: what failed is counted, and retry_failed can redo it.
                run.state = ProcessingRun.State.PARTIAL if counts["done"] else ProcessingRun.State.FAILED
                notes.append(f"{counts['failed']} of {counts['total']} chunks failed")
            else:
                run.state = ProcessingRun.State.SUCCEEDED
            if files["failed"]:
                # Files that could not be read are recorded by ingest; a run that read none failed.
                read = (files["written"] or 0) + (files["unchanged"] or 0)
                notes.append(f"{files['failed']} input file(s) could not be read" if read
                             else f"none of the {files['failed']} input file(s) could be read")
                if not read and run.state == ProcessingRun.State.SUCCEEDED:
                    run.state = ProcessingRun.State.FAILED
            if Stage.PREDICT in run.stages:
                other = spectra_other_preprocessing(model_versions=[run.formal_model, run.alternate_model])
                if other:  # (a model reads only its own preprocessing version's arrays)
                    notes.append(f"{sum(other.values())} preprocessed spectra of another preprocessing version than "
                                 "the models' were not predicted (ingest_spectra --stale preprocesses older ones again)")
            if notes:
                summary = "; ".join(notes)
                run.reason = f"{summary}; {run.reason}" if run.reason else summary
            run.finished_at = now
        run.save()
        if created:
            transaction.on_commit(lambda: chunks_enqueue(created))


# The Celery task of each stage, by name: the tasks module imports these services, never
# the other way round. Routing to queues is by the same names (CELERY_TASK_ROUTES).
STAGE_TASKS = {Stage.INGEST: "tasks.ingest_chunk", Stage.PREDICT: "tasks.predict_chunk",
               Stage.RELEASE: "tasks.release_chunk"}


def chunks_enqueue(chunks: list[ProcessingChunk]) -> None:
    """Send the chunks' task messages, recording when (the reconciler resends lost ones)."""
    ProcessingChunk.objects.filter(pk__in=[c.pk for c in chunks]).update(queued_at=timezone.now())
    for chunk in chunks:
        current_app.tasks[STAGE_TASKS[chunk.stage]].delay(chunk.pk)


def processing_run_stop(*, run_id: int, reason: str) -> int:
    """Stop a run for a reason that no chunk can overcome (disk full, read-only store).

    Queued chunks are skipped, the run ends FAILED with ``reason``; chunks already running
    finish. Returns the number of chunks skipped.
    """
    with transaction.atomic():
        run = ProcessingRun.objects.select_for_update().get(pk=run_id)
        if run.is_finished:
            return 0
        skipped = run.chunks.filter(state=ProcessingChunk.State.QUEUED).update(
            state=ProcessingChunk.State.SKIPPED, error=f"run stopped: {reason}"[:4000])
        run.state = ProcessingRun.State.FAILED
        run.reason = f"stopped: {reason}"
        run.finished_at = timezone.now()
        run.save(update_fields=["state", "reason", "finished_at"])
    logger.error("run %s stopped: %s", run_id, reason)
    return skipped


def processing_run_cancel(*, run: ProcessingRun) -> int:
    """Stop a run: queued chunks are skipped; chunks already running finish. Returns skipped."""
    with transaction.atomic():
        locked = ProcessingRun.objects.select_for_update().get(pk=run.pk)
        if locked.is_finished:
            return 0
        skipped = locked.chunks.filter(state=ProcessingChunk.State.QUEUED).update(state=ProcessingChunk.State.SKIPPED)
        locked.state = ProcessingRun.State.CANCELLED
        locked.finished_at = timezone.now()
        locked.save(update_fields=["state", "finished_at"])
    return skipped


def processing_run_retry_failed(*, run: ProcessingRun) -> int:
    """Queue the failed chunks again and carry on from the earliest stage that failed.

    Later stages are planned again afterwards, incrementally (only what still lacks results).
    """
    with transaction.atomic():
        locked = ProcessingRun.objects.select_for_update().get(pk=run.pk)
        failed = list(locked.chunks.filter(state=ProcessingChunk.State.FAILED))
        if not failed:
            return 0
        if locked.state == ProcessingRun.State.RUNNING:
            raise RunConfigurationError("the run is still running: retry after it finishes")
        ProcessingChunk.objects.filter(pk__in=[c.pk for c in failed]).update(
            state=ProcessingChunk.State.QUEUED, error="", lost_deliveries=0, message="", heartbeat_at=None)
        locked.reason = ""
        locked.current_stage = min((c.stage for c in failed), key=ProcessingRun.STAGE_ORDER.index)
        locked.state = ProcessingRun.State.RUNNING
        locked.finished_at = None
        locked.stage_started_at = timezone.now()
        locked.save()
        retried = [c for c in failed if c.stage == locked.current_stage]
        transaction.on_commit(lambda: chunks_enqueue(retried))
        # Failed chunks of later stages are replanned when their stage comes round again.
        ProcessingChunk.objects.filter(pk__in=[c.pk for c in failed if c.stage != locked.current_stage]).update(
            state=ProcessingChunk.State.SKIPPED, error="superseded by a retry")
    return len(retried)


# The unit in which each stage's chunks are sized (``ProcessingChunk.size``) and its progress counted.
# -- chunk execution (called by the Celery tasks) ---------------------------------------

@cache
def _templates():
    from spectra.spectrum_model_files import rv_templates_load

    return rv_templates_load()


@cache
def _rv_catalog(path: str) -> dict:
    return rv_catalog_read(path)


def _run_ingest(run: ProcessingRun, chunk: ProcessingChunk) -> None:
    summary = spectra_ingest(
        paths=chunk.payload["paths"],
        rv_catalog=_rv_catalog(run.rv_catalog_path) if run.rv_catalog_path else None,
        templates=_templates() if run.measure_rv else None,
    )
    chunk.items = summary.spectra_written
    chunk.skipped_items = summary.files_unchanged
    chunk.failed_items = sum(summary.failures.values())


def _run_predict(run: ProcessingRun, chunk: ProcessingChunk) -> None:
    chunk.items = labelsets_predict(
        model_versions=[run.formal_model, run.alternate_model],
        id_range=(chunk.payload["first_id"], chunk.payload["last_id"]),
    )


def _run_release(run: ProcessingRun, chunk: ProcessingChunk) -> None:
    try:
        release = catalog_release_get_or_create(name=run.release_name, formal_model=run.formal_model,
                                                alternate_model=run.alternate_model, created_by=run.created_by)
    except ValueError as error:
        raise RunConfigurationError(str(error)) from error
    if release.is_published:
        # A redelivery after the release was published (its worker died before recording the
        # chunk): success when the published rows are what this build would write.
        expected = LabelSet.objects.filter(model_version=run.formal_model).count()
        published = release.entries.count()
        if published != expected:
            raise ReleaseImmutableError(
                f"release {release.name} is published with {published} rows and cannot change; this run would "
                f"build {expected}: build a new release")
        chunk.items = published
        return
    chunk.items = catalog_release_build(release=release)
    if not run.publish:
        return
    failed = run.chunks.filter(state=ProcessingChunk.State.FAILED).count()
    if failed and not run.publish_partial:
        # Never publish less than was asked without the operator saying so.
        ProcessingRun.objects.filter(pk=run.pk).update(reason=(
            f"release {release.name} built ({chunk.items} rows) but not published: {failed} chunks of earlier "
            "stages failed (retry them, or publish from the admin, or start the run with publish_partial)"))
        return
    catalog_release_publish(release=release)


_HANDLERS: dict[str, Callable[[ProcessingRun, ProcessingChunk], None]] = {
    Stage.INGEST: _run_ingest, Stage.PREDICT: _run_predict, Stage.RELEASE: _run_release,
}


def processing_chunk_claim(*, chunk_id: int, message: str = "", worker: str = "") -> ProcessingChunk | None:
    """Mark a chunk running; None if it needs no work (done, skipped, failed, or its run stopped).

    ``message`` names the task message delivering the chunk (``task id:retries``: the
    same for every redelivery of one message, new for a retry after an exception) and
    ``worker`` the process claiming it (``hostname/pid``).

    A chunk found RUNNING is claimed again, and its work redone idempotently: its worker
    died, or the message came back after a lost acknowledgement, or it is a retry after a
    transient error. When it is the very message that claimed it last, that delivery never
    finished: its worker process died (killed, out of memory, crashed). After
    ``PROCESSING_CHUNK_MAX_DELIVERIES`` such deaths the chunk is failed, naming the last
    worker, instead of killing one more; the run then goes on (and ends failed). Retries
    after a recorded exception are bounded by the task's ``max_retries`` instead.
    """
    lost = None
    with transaction.atomic():
        chunk = ProcessingChunk.objects.select_for_update(of=("self",)).select_related(
            "run__formal_model", "run__alternate_model").get(pk=chunk_id)
        if chunk.state in (ProcessingChunk.State.DONE, ProcessingChunk.State.SKIPPED, ProcessingChunk.State.FAILED):
            return None
        if chunk.run.state != ProcessingRun.State.RUNNING:
            chunk.state = ProcessingChunk.State.SKIPPED
            chunk.save(update_fields=["state"])
            return None
        now = timezone.now()
        if chunk.state == ProcessingChunk.State.RUNNING and message:
            same_task = chunk.message.split(":")[0] == message.split(":")[0]
            if chunk.message != message and not same_task and _alive(chunk, now):
                return None  # a second message for a chunk another worker is running: drop it
            if chunk.message == message or not same_task:
                # The same message again: its worker died mid-chunk. Another message while the
                # worker that claimed it is silent: that worker is gone too.
                chunk.lost_deliveries += 1
            if chunk.lost_deliveries >= settings.PROCESSING_CHUNK_MAX_DELIVERIES:
                chunk.state = ProcessingChunk.State.FAILED
                chunk.error = lost_delivery_error(chunk)
                chunk.finished_at = now
                chunk.save(update_fields=["state", "lost_deliveries", "error", "finished_at"])
                lost = chunk
        if lost is None:
            chunk.state = ProcessingChunk.State.RUNNING
            chunk.attempts += 1
            chunk.started_at = chunk.heartbeat_at = now
            chunk.message, chunk.worker = message[:100], worker[:255]
            chunk.save(update_fields=[
                "state", "attempts", "lost_deliveries", "started_at", "heartbeat_at", "message", "worker"])
            return chunk
    # The run row is locked after the chunk's lock is released (cancel locks run, then chunks).
    logger.error("chunk %s of run %s failed: %s", lost.pk, lost.run_id, lost.error)
    processing_run_advance(run_id=lost.run_id)
    return None


def _alive(chunk: ProcessingChunk, now) -> bool:
    """Whether the worker running a chunk gave a sign of life lately."""
    return chunk.heartbeat_at is not None and (now - chunk.heartbeat_at).total_seconds() < settings.PIPELINE_WORKER_LOST_SECONDS


def lost_delivery_error(chunk: ProcessingChunk) -> str:
    """The error of a chunk failed after PROCESSING_CHUNK_MAX_DELIVERIES lost deliveries."""
    return (f"worker lost: delivered {chunk.lost_deliveries} times, the worker process died each time "
            f"(last on {chunk.worker or 'an unknown worker'}); not delivered again "
            f"(PROCESSING_CHUNK_MAX_DELIVERIES={settings.PROCESSING_CHUNK_MAX_DELIVERIES})")


@contextmanager
def _heartbeat(chunk_id: int):
    """While the block runs, a thread writes the chunk's heartbeat every PIPELINE_HEARTBEAT_SECONDS.

    The thread has its own database connection, closed when it stops. Tasks run
    in-process (eager) need none: the process that waits is the one working.
    """
    if settings.CELERY_TASK_ALWAYS_EAGER:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.PIPELINE_HEARTBEAT_SECONDS):
                try:
                    ProcessingChunk.objects.filter(pk=chunk_id, state=ProcessingChunk.State.RUNNING).update(
                        heartbeat_at=timezone.now())
                except DatabaseError as error:  # the database may be briefly away: beat again later
                    logger.warning("heartbeat of chunk %s not written: %s", chunk_id, error)
                    connection.close()
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{chunk_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def processing_chunk_execute(*, chunk: ProcessingChunk) -> None:
    """Do a claimed chunk's work and record it done. Exceptions propagate to the task."""
    started = time.perf_counter()
    with _heartbeat(chunk.pk):
        _HANDLERS[chunk.stage](chunk.run, chunk)
    chunk.state = ProcessingChunk.State.DONE
    chunk.error = ""
    chunk.seconds = time.perf_counter() - started
    chunk.finished_at = timezone.now()
    chunk.peak_rss_mb = peak_rss_mb()
    chunk.save(update_fields=[
        "state", "items", "skipped_items", "failed_items", "error", "seconds", "finished_at", "peak_rss_mb"])


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB: ``VmHWM`` on Linux, else ``ru_maxrss``.

    Not ru_maxrss on Linux: a process started by exec inherits the value of the process it
    replaced. Pages a pool child shares with the worker that forked it count in both.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def processing_chunk_fail(*, chunk_id: int, error: str) -> None:
    ProcessingChunk.objects.filter(pk=chunk_id).exclude(state=ProcessingChunk.State.DONE).update(
        state=ProcessingChunk.State.FAILED, error=error[:4000], finished_at=timezone.now())
