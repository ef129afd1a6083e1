"""Celery tasks: thin interfaces over services and selectors.

Routing (settings ``CELERY_TASK_ROUTES``): ingest and release chunks go to the ``cpu``
queue, prediction chunks to the ``gpu`` queue (a worker started with ``-Q gpu`` on a GPU
machine; on a CPU machine the same queue works, slower). Every task is acknowledged late
and is idempotent, so a message redelivered after a worker died redoes its chunk without
duplicating a row. Transient errors (database or broker briefly away) are retried with
exponential backoff; any other error fails the chunk alone, recorded with its message.
"""

import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from inference.selectors import catalog_counts

from .services import (
    processing_chunk_claim,
    processing_chunk_execute,
    processing_chunk_fail,
    processing_run_advance,
)

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, InterfaceError, BrokerOperationalError, RedisConnectionError)


@shared_task(name="tasks.catalog_counts", acks_late=True)
def catalog_counts_task() -> dict[str, int]:
    """Row counts of the catalog tables: a health check that crosses broker, worker and database."""
    return catalog_counts()


class ChunkTask(Task):
    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 5
    retry_backoff_max = 300
    retry_jitter = True
    max_retries = 6

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # Out of retries for a transient error: record it so that the run can finish and
        # the chunk can be retried from the admin, the API or the command.
        if isinstance(exc, TRANSIENT_ERRORS):
            processing_chunk_fail(chunk_id=args[0], error=f"{type(exc).__name__}: {exc} (after retries)")
            processing_run_advance(run_id=_run_of(args[0]))


def _run_of(chunk_id: int) -> int:
    from .models import ProcessingChunk

    return ProcessingChunk.objects.values_list("run_id", flat=True).get(pk=chunk_id)


def _process(chunk_id: int) -> str:
    chunk = processing_chunk_claim(chunk_id=chunk_id)
    if chunk is None:
        return "nothing to do"
    try:
        processing_chunk_execute(chunk=chunk)
    except TRANSIENT_ERRORS:
        raise
    except (Exception, SoftTimeLimitExceeded) as error:  # a poisoned chunk fails alone
        logger.exception("chunk %s failed", chunk_id)
        processing_chunk_fail(chunk_id=chunk_id, error=f"{type(error).__name__}: {error}")
    processing_run_advance(run_id=chunk.run_id)
    return "processed"


@shared_task(base=ChunkTask, name="tasks.ingest_chunk")
def ingest_chunk(chunk_id: int) -> str:
    """Read, preprocess and store the files of one chunk."""
    return _process(chunk_id)


@shared_task(base=ChunkTask, name="tasks.predict_chunk")
def predict_chunk(chunk_id: int) -> str:
    """Predict a range of spectra with both models (each loaded once per worker process)."""
    return _process(chunk_id)


@shared_task(base=ChunkTask, name="tasks.release_chunk")
def release_chunk(chunk_id: int) -> str:
    """Build (or extend) the run's release, and publish it when asked."""
    return _process(chunk_id)


def chunk_task_for(stage: str):
    return {"ingest": ingest_chunk, "predict": predict_chunk, "release": release_chunk}[stage]
