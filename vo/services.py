"""Asynchronous TAP jobs: running one (on a Celery worker), aborting, expiring."""

import os
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .adql import AdqlError
from .conf import tap_results_dir, vo_setting
from .models import TapJob
from .query import TapUnavailable, run_query
from .votable import results_csv, results_votable_pieces

Phase = TapJob.Phase


def job_create(*, query: str, lang: str, response_format: str, maxrec: int, run_id: str = "", owner=None) -> TapJob:
    """A PENDING job; ``owner`` is the authenticated user creating it (None: anonymous)."""
    expire_jobs()
    return TapJob.objects.create(
        query=query, lang=lang, response_format=response_format, maxrec=maxrec, run_id=run_id[:200], owner=owner,
        execution_duration=float(vo_setting("TAP_ASYNC_TIMEOUT_S")),
        destruction=timezone.now() + timedelta(seconds=vo_setting("TAP_JOB_RETENTION_S")),
    )


def job_start(job: TapJob) -> bool:
    """PENDING -> QUEUED, and the job sent to the workers (the CPU queue). False when the
    job was not pending."""
    if not TapJob.objects.filter(pk=job.pk, phase=Phase.PENDING).update(phase=Phase.QUEUED):
        return False
    from .tasks import run_tap_job

    def send():
        result = run_tap_job.apply_async(args=[str(job.pk)], queue=settings.CELERY_CPU_QUEUE)
        TapJob.objects.filter(pk=job.pk).update(celery_task_id=result.id or "")

    transaction.on_commit(send)
    return True


def job_abort(job: TapJob) -> None:
    """Any unfinished job -> ABORTED; a running query is cancelled in the database."""
    pid = None
    if job.phase == Phase.EXECUTING:
        pid = TapJob.objects.filter(pk=job.pk).values_list("backend_pid", flat=True).first()
    changed = TapJob.objects.filter(pk=job.pk, phase__in=[Phase.PENDING, Phase.QUEUED, Phase.EXECUTING]).update(
        phase=Phase.ABORTED, ended_at=timezone.now())
    if changed and pid and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_cancel_backend(%s)", [pid])


def job_delete(job: TapJob) -> None:
    job_abort(job)
    job.refresh_from_db(fields=["phase"])  # aborted: its query is cancelled already
    job.delete()


def job_result_discard(job: TapJob) -> None:
    """After a job's row is deleted (by :func:`job_delete`, by its expiry, or with its
    owner's account): cancel its query if it still runs, and remove its result file once
    the deletion commits."""
    if job.phase == Phase.EXECUTING and job.backend_pid and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_cancel_backend(%s)", [job.backend_pid])
    if job.result_path:
        path = Path(job.result_path)
        transaction.on_commit(lambda: path.unlink(missing_ok=True))


def expire_jobs() -> int:
    """Delete the jobs past their destruction time, with their results."""
    expired = list(TapJob.objects.filter(destruction__lt=timezone.now()))
    for job in expired:
        job_delete(job)
    return len(expired)


def _finish(job_id, **fields) -> bool:
    return bool(TapJob.objects.filter(pk=job_id, phase=Phase.EXECUTING).update(ended_at=timezone.now(), **fields))


def job_run(job_id: str) -> str:
    """Run a QUEUED job to COMPLETED (its result in a file) or ERROR; a job aborted
    meanwhile stays ABORTED and keeps no result. Returns the final phase."""
    job = TapJob.objects.filter(pk=job_id).first()
    if job is None:
        return "DELETED"
    pid = None
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
    if not TapJob.objects.filter(pk=job_id, phase=Phase.QUEUED).update(
            phase=Phase.EXECUTING, started_at=timezone.now(), backend_pid=pid):
        return TapJob.objects.filter(pk=job_id).values_list("phase", flat=True).first() or "DELETED"
    try:
        result = run_query(job.query, maxrec=job.maxrec, timeout_s=job.execution_duration)
    except (AdqlError, TapUnavailable) as error:
        _finish(job_id, phase=Phase.ERROR, error_message=str(error))
        return TapJob.objects.get(pk=job_id).phase
    except Exception as error:
        _finish(job_id, phase=Phase.ERROR, error_message=f"internal error: {type(error).__name__}: {error}")
        raise
    directory = tap_results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    extension = "csv" if job.response_format == "csv" else "vot"
    path = directory / f"{job_id}.{extension}"
    pieces = ([results_csv(result.fields, result.columns)] if extension == "csv" else
              results_votable_pieces(result.fields, result.columns, overflow=result.overflow,
                                     infos=[("QUERY", job.query)]))
    partial = path.with_suffix(path.suffix + ".part")
    with partial.open("wb") as handle:
        for piece in pieces:
            handle.write(piece)
    os.replace(partial, path)
    if not _finish(job_id, phase=Phase.COMPLETED, result_path=str(path), result_rows=result.n_rows,
                   overflow=result.overflow):
        path.unlink(missing_ok=True)  # aborted or deleted meanwhile
    return TapJob.objects.filter(pk=job_id).values_list("phase", flat=True).first() or "DELETED"


def job_execution_duration_set(*, job: TapJob, seconds: float) -> TapJob:
    """Set a PENDING job's time limit (UWS EXECUTIONDURATION): at most the async timeout
    ``TAP_ASYNC_TIMEOUT_S``, which is also what 0 or a negative value means."""
    hard = float(vo_setting("TAP_ASYNC_TIMEOUT_S"))
    job.execution_duration = hard if seconds <= 0 else min(seconds, hard)
    job.save(update_fields=["execution_duration"])
    return job


def job_destruction_set(*, job: TapJob, when) -> TapJob:
    """Set a job's destruction time (UWS DESTRUCTION): at most ``TAP_JOB_RETENTION_S``
    after it was created."""
    latest = job.created_at + timedelta(seconds=vo_setting("TAP_JOB_RETENTION_S"))
    job.destruction = min(when, latest)
    job.save(update_fields=["destruction"])
    return job
