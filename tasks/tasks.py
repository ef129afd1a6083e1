"""Celery tasks: thin interfaces over services and selectors.

Routing (settings ``CELERY_TASK_ROUTES``): ingest and release chunks go to the ``cpu``
queue, prediction chunks to the ``gpu`` queue (a worker started with ``-Q gpu`` on a GPU
machine; on a CPU machine the same queue works, slower). Every task is acknowledged late
and is idempotent, so a message redelivered after a worker died redoes its chunk without
duplicating a row; a chunk whose worker died on ``PROCESSING_CHUNK_MAX_DELIVERIES``
deliveries is failed instead of being delivered again (``processing_chunk_claim``).
Transient errors (database or broker briefly away) are retried with exponential backoff;
any other error fails the chunk alone, recorded with its message, and so does a chunk
killed at the hard time limit or still failing transiently after the retries.
"""

import logging
import os
import socket
import time

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import celeryd_after_setup, worker_process_init, worker_ready
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from inference.models import CatalogRelease
from inference.selectors import catalog_counts
from inference.services.prediction import model_versions_warm
from inference.services.release_files import release_files_write
from spectra.array_store import ArrayStoreError

from .reconcile import processing_runs_reconcile
from .selectors import model_versions_in_demand
from .services import (
    processing_chunk_claim,
    processing_chunk_execute,
    processing_chunk_fail,
    processing_run_advance,
    processing_run_stop,
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
        # The task ended without recording its chunk: out of retries for a transient error,
        # killed at the hard time limit (then called in the worker's main process, the
        # message acknowledged), or an error outside the chunk's work. Record it, so that
        # the run can finish and the chunk can be retried from the admin, the API or the command.
        if isinstance(exc, TimeLimitExceeded):
            limit = exc.args[0] if exc.args else "?"
            error = f"TimeLimitExceeded: killed at the hard time limit ({limit} s, CELERY_TASK_TIME_LIMIT)"
        elif isinstance(exc, TRANSIENT_ERRORS):
            error = f"{type(exc).__name__}: {exc} (after retries)"
        else:
            error = f"{type(exc).__name__}: {exc}"
        processing_chunk_fail(chunk_id=args[0], error=error)
        run_id = _run_of(args[0])
        if run_id is not None:
            processing_run_advance(run_id=run_id)


def _run_of(chunk_id: int) -> int | None:
    from .models import ProcessingChunk

    return ProcessingChunk.objects.filter(pk=chunk_id).values_list("run_id", flat=True).first()


def _process(request, chunk_id: int) -> str:
    chunk = processing_chunk_claim(
        chunk_id=chunk_id, message=f"{request.id}:{request.retries or 0}" if request.id else "",
        worker=f"{request.hostname or socket.gethostname()}/{os.getpid()}")
    if chunk is None:
        # Done, skipped or running elsewhere. The advance is idempotent: a stage whose last
        # chunk was recorded done just before a connection dropped moves on here.
        processing_run_advance(run_id=_run_of(chunk_id))
        return "nothing to do"
    try:
        processing_chunk_execute(chunk=chunk)
    except TRANSIENT_ERRORS:
        raise
    except ArrayStoreError as error:  # no chunk can succeed: stop the run, say why
        logger.error("chunk %s: %s", chunk_id, error)
        processing_chunk_fail(chunk_id=chunk_id, error=f"{type(error).__name__}: {error}")
        processing_run_stop(run_id=chunk.run_id, reason=str(error))
    except (Exception, SoftTimeLimitExceeded) as error:  # a poisoned chunk fails alone
        logger.exception("chunk %s failed", chunk_id)
        processing_chunk_fail(chunk_id=chunk_id, error=f"{type(error).__name__}: {error}")
    processing_run_advance(run_id=chunk.run_id)
    return "processed"


@shared_task(base=ChunkTask, bind=True, name="tasks.ingest_chunk")
def ingest_chunk(self, chunk_id: int) -> str:
    """Read, preprocess and store the files of one chunk."""
    return _process(self.request, chunk_id)


@shared_task(base=ChunkTask, bind=True, name="tasks.predict_chunk")
def predict_chunk(self, chunk_id: int) -> str:
    """Predict a range of spectra with both models (each loaded once per worker process)."""
    return _process(self.request, chunk_id)


@shared_task(base=ChunkTask, bind=True, name="tasks.release_chunk")
def release_chunk(self, chunk_id: int) -> str:
    """Build (or extend) the run's release, and publish it when asked."""
    return _process(self.request, chunk_id)


@shared_task(name="tasks.reconcile_runs", acks_late=True, ignore_result=True)
def reconcile_runs() -> dict[str, list[int]]:
    """Advance stalled stages and resend chunks whose worker or message is gone (tasks.reconcile)."""
    summary = processing_runs_reconcile()
    return {"advanced": summary.advanced, "requeued": summary.requeued_lost_workers,
            "failed": summary.failed_lost_workers, "resent": summary.resent_lost_messages}


@shared_task(name="tasks.release_file_write", acks_late=True, ignore_result=True,
             autoretry_for=TRANSIENT_ERRORS, retry_backoff=True, retry_backoff_max=300, max_retries=5)
def release_file_write(release_id: int, table: str, format_name: str) -> str | None:
    """Write one whole-table file of a published release (inference.services.release_files).
    A release deleted meanwhile is skipped; until the file exists, its downloads stream."""
    release = CatalogRelease.objects.filter(pk=release_id).first()
    if release is None or not release.is_published:
        return None
    written = release_files_write(release=release, tables=(table,), formats=(format_name,))
    return written[0].name if written else None


@worker_ready.connect
def _reconcile_when_a_worker_starts(sender, **kwargs) -> None:
    """A worker that starts after a crash, a broker restart or a database outage heals the
    runs it finds at once, in one of its pool processes (not in the main process, which
    forks the pool and so keeps no database connection)."""
    try:
        reconcile_runs.apply_async(queue=settings.CELERY_CPU_QUEUE)
    except Exception:  # noqa: BLE001  (a broker hiccup at start must not stop the worker)
        logger.warning("could not queue the start-up reconcile", exc_info=True)


# Set in a worker's main process once its pool is up: a pool process forked after that (a
# replacement for one that died or reached its task limit) does not warm its models (below).
_pool_started = False


@celeryd_after_setup.connect
def _warm_models_in_prediction_workers(sender, instance, **kwargs) -> None:
    """A worker that consumes the prediction queue warms its networks before it takes work
    (``WORKER_WARM_MODELS``).

    A prefork worker warms them in each pool process it starts with, never in its main
    process (TensorFlow is not fork-safe once initialised): the handler is connected here,
    once the queues are known and after Celery's Django fixup connected its own
    ``worker_process_init`` handler (which drops the database connections a child
    inherits), so it runs after that one, on a connection of the child's own; the pool
    sends a process no task before its start-up is done. A replacement process, forked
    once the worker is up, loads its models on its first prediction chunk instead: Celery
    gives a replacement a few seconds (``worker_proc_alive_timeout``) to start, less than
    a warm-up takes. A solo or thread pool (a GPU worker: ``-P solo``) runs its tasks in
    this process, which warms them now, before it starts consuming. (A pool that spawns
    instead of forking does not run this handler in its processes, which then load their
    models on their first chunk.)
    """
    if not (settings.WORKER_WARM_MODELS and settings.CELERY_GPU_QUEUE in instance.app.amqp.queues.consume_from):
        return
    from celery.concurrency.prefork import TaskPool as PreforkPool

    if isinstance(instance.pool_cls, type) and issubclass(instance.pool_cls, PreforkPool):
        worker_process_init.connect(_warm_models_unless_a_replacement, weak=False, dispatch_uid="tasks.warm_models")
    else:
        _warm_models()


@worker_ready.connect
def _mark_pool_started(sender, **kwargs) -> None:
    global _pool_started
    _pool_started = True


def _warm_models_unless_a_replacement(**kwargs) -> None:
    if not _pool_started:
        _warm_models()


def _warm_models() -> None:
    """Load and run once, in the process that will run the tasks, the models prediction will
    ask for next (``model_versions_in_demand``, at most ``WORKER_WARM_MAX_MODELS``). Runs
    before the process takes work, so no chunk waits on it. A model that cannot be warmed
    is logged by name and left to the first chunk that needs it, which then fails or
    succeeds on its own terms; the others are warmed all the same."""
    started = time.perf_counter()
    spent, failed = {}, []
    try:
        versions = model_versions_in_demand(names=settings.WORKER_WARM_MODEL_NAMES)[: settings.WORKER_WARM_MAX_MODELS]
        for version in versions:
            try:
                spent.update(model_versions_warm(model_versions=[version]))
            except Exception:  # noqa: BLE001  (a worker must start even when a model cannot be warmed)
                failed.append(version.name)
                logger.warning("process %s: could not warm model %s", os.getpid(), version.name, exc_info=True)
    except Exception:  # noqa: BLE001  (the database away: the worker starts, the chunks load their models)
        logger.warning("process %s: could not find the prediction models to warm", os.getpid(), exc_info=True)
        return
    finally:
        connections.close_all()
    logger.info("process %s warmed %d model(s) in %.1f s: %s%s", os.getpid(), len(spent), time.perf_counter() - started,
                ", ".join(f"{name} {seconds:.1f} s" for name, seconds in spent.items()) or "none in demand",
                f"; not warmed: {', '.join(failed)}" if failed else "")
