"""The reconciler: every running run reaches a final state, whatever was lost on the way.

Runs move forward when a chunk finishes (``processing_run_advance``). Three faults break
that chain, and the reconciler repairs each from the database's record, idempotently:

- the stage advance after the last chunk of a stage did not happen (the database or the
  worker went away in between): a stage with no open chunk is advanced;
- a running chunk's worker is gone (killed, its machine lost) and its message would only
  come back after the broker's visibility timeout: a chunk without a heartbeat for
  ``PIPELINE_WORKER_LOST_SECONDS`` is sent again as a lost delivery, and failed once
  ``PROCESSING_CHUNK_MAX_DELIVERIES`` are lost;
- a queued chunk's message is gone (a Redis restarted without persistence, a flushed
  queue): a chunk queued for ``PIPELINE_MESSAGE_LOST_SECONDS`` whose message is in no
  queue and in no worker's unacknowledged set is sent again (Redis brokers; others are
  not inspected).

It runs every ``PIPELINE_RECONCILE_SECONDS`` under Celery beat (task
``tasks.reconcile_runs``), when a worker starts, and while ``run_pipeline --follow``
waits. A message sent twice is harmless: a chunk is claimed once, and a second message
for a chunk that is running or done is dropped.
"""

import base64
import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import ProcessingChunk, ProcessingRun
from .services import chunks_enqueue, lost_delivery_error, processing_run_advance

logger = logging.getLogger(__name__)

CHUNK_TASKS = ("tasks.ingest_chunk", "tasks.predict_chunk", "tasks.release_chunk")
# kombu's Redis transport keeps messages of priority p > 0 under "<queue>\x06\x16<p>".
_PRIORITY_SEPARATOR = "\x06\x16"


@dataclass
class ReconcileSummary:
    advanced: list[int] = field(default_factory=list)  # runs whose stage was advanced
    requeued_lost_workers: list[int] = field(default_factory=list)  # chunk ids
    failed_lost_workers: list[int] = field(default_factory=list)
    resent_lost_messages: list[int] = field(default_factory=list)
    broker_inspected: bool = False

    def lines(self) -> list[str]:
        return [
            f"stages advanced: runs {self.advanced}" if self.advanced else "",
            f"chunks whose worker was lost, sent again: {self.requeued_lost_workers}" if self.requeued_lost_workers else "",
            f"chunks failed after losing their workers: {self.failed_lost_workers}" if self.failed_lost_workers else "",
            f"chunks whose message was lost, sent again: {self.resent_lost_messages}" if self.resent_lost_messages else "",
        ]


def processing_runs_reconcile(*, inspect_broker: bool = True) -> ReconcileSummary:
    """Repair every running run: advance stalled stages, resend chunks whose worker or message is gone."""
    summary = ReconcileSummary()
    now = timezone.now()
    running = list(ProcessingRun.objects.filter(state=ProcessingRun.State.RUNNING).values_list("pk", flat=True))
    if not running:
        return summary
    _requeue_silent_chunks(running, now, summary)
    if inspect_broker and not _eager():
        _resend_lost_messages(running, now, summary)
    open_states = [ProcessingChunk.State.QUEUED, ProcessingChunk.State.RUNNING]
    for run_id in running:
        run = ProcessingRun.objects.filter(pk=run_id).values("current_stage").first()
        if run is None:
            continue
        if not ProcessingChunk.objects.filter(run_id=run_id, stage=run["current_stage"], state__in=open_states).exists():
            processing_run_advance(run_id=run_id)
            summary.advanced.append(run_id)
    for line in filter(None, summary.lines()):
        logger.warning("reconcile: %s", line)
    return summary


def _eager() -> bool:
    return bool(current_app.conf.task_always_eager)


def _requeue_silent_chunks(run_ids: list[int], now, summary: ReconcileSummary) -> None:
    """Running chunks whose worker stopped beating: send again, or fail past the delivery limit."""
    cutoff = now - timedelta(seconds=settings.PIPELINE_WORKER_LOST_SECONDS)
    silent = ProcessingChunk.objects.filter(run_id__in=run_ids, state=ProcessingChunk.State.RUNNING, heartbeat_at__lt=cutoff)
    for chunk_id in list(silent.values_list("pk", flat=True)):
        with transaction.atomic():
            chunk = ProcessingChunk.objects.select_for_update().filter(
                pk=chunk_id, state=ProcessingChunk.State.RUNNING, heartbeat_at__lt=cutoff).first()
            if chunk is None:
                continue  # it finished, or beat, in the meantime
            chunk.lost_deliveries += 1
            if chunk.lost_deliveries >= settings.PROCESSING_CHUNK_MAX_DELIVERIES:
                chunk.state = ProcessingChunk.State.FAILED
                chunk.error = lost_delivery_error(chunk)
                chunk.finished_at = now
                summary.failed_lost_workers.append(chunk.pk)
            else:
                chunk.state = ProcessingChunk.State.QUEUED
                chunk.error = (f"worker {chunk.worker or '?'} silent for more than "
                               f"{settings.PIPELINE_WORKER_LOST_SECONDS:g} s: sent again")
                summary.requeued_lost_workers.append(chunk.pk)
                transaction.on_commit(lambda chunk=chunk: chunks_enqueue([chunk]))
            chunk.message = ""  # a late return of the old message is a duplicate, not a death
            chunk.save(update_fields=["state", "lost_deliveries", "error", "finished_at", "message"])


def _resend_lost_messages(run_ids: list[int], now, summary: ReconcileSummary) -> None:
    cutoff = now - timedelta(seconds=settings.PIPELINE_MESSAGE_LOST_SECONDS)
    waiting = list(ProcessingChunk.objects.filter(
        run_id__in=run_ids, state=ProcessingChunk.State.QUEUED, queued_at__lt=cutoff).values_list("pk", "stage"))
    if not waiting:
        return
    present = broker_chunk_ids()
    if present is None:
        return
    summary.broker_inspected = True
    lost = [pk for pk, _ in waiting if pk not in present]
    if not lost:
        return
    # Still queued (not claimed since the broker was read), then resent.
    with transaction.atomic():
        chunks = list(ProcessingChunk.objects.select_for_update().filter(
            pk__in=lost, state=ProcessingChunk.State.QUEUED, queued_at__lt=cutoff))
        if chunks:
            transaction.on_commit(lambda: chunks_enqueue(chunks))
    summary.resent_lost_messages += [c.pk for c in chunks]


def broker_chunk_ids() -> set[int] | None:
    """Chunk ids of every chunk-task message the broker holds, queued or delivered but not
    acknowledged; None when the broker is not Redis (not inspected)."""
    app = current_app

    if not str(app.conf.broker_url or "").startswith(("redis://", "rediss://", "unix://")):
        return None
    queues = {settings.CELERY_CPU_QUEUE, settings.CELERY_GPU_QUEUE, app.conf.task_default_queue or "celery"}
    for route in (app.conf.task_routes or {}).values():
        if isinstance(route, dict) and route.get("queue"):
            queues.add(route["queue"])
    ids: set[int] = set()
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        client = channel.client
        raw = []
        for queue in queues:
            for key in [queue, *(f"{queue}{_PRIORITY_SEPARATOR}{p}" for p in range(1, 10))]:
                raw += client.lrange(key, 0, -1)
        unacked_key = getattr(channel, "unacked_key", "unacked")
        raw += [json.dumps(json.loads(value)[0]).encode() for value in client.hvals(unacked_key)]
    for payload in raw:
        chunk_id = _chunk_id(payload)
        if chunk_id is not None:
            ids.add(chunk_id)
    return ids


def _chunk_id(payload: bytes) -> int | None:
    """The chunk id of a chunk-task message (kombu's JSON envelope, body base64 JSON)."""
    try:
        message = json.loads(payload)
        if message.get("headers", {}).get("task") not in CHUNK_TASKS:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return int(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
