"""The project's Celery app for worker tests, whose worker processes die on a poisoned file.

A test starts ``celery -A tests.poison_worker worker``: the real app and tasks, except
that an ingest chunk over a file beginning with ``POISON`` kills the process reading it
with SIGKILL, as a reader crashing in C or the kernel's out-of-memory killer would, and
one over a file beginning with ``HANG`` blocks, deaf to the soft time limit (SIGUSR1), as
a call stuck in C would. Nothing in the project imports this module.
"""

import os
import signal
import time

import django

from spcanet_site.celery import app

# Tests write these (they do not import this module).
POISON = b"POISON: this file kills the process that ingests it\n"
HANG = b"HANG: this file blocks the process that ingests it\n"

django.setup()

import tasks.services as services  # noqa: E402  (after django.setup: it imports models)

_spectra_ingest = services.spectra_ingest


def _spectra_ingest_or_die(*, paths, **kwargs):
    for path in paths:
        with open(path, "rb") as handle:
            head = handle.read(max(len(POISON), len(HANG)))
        if head.startswith(POISON):
            os.kill(os.getpid(), signal.SIGKILL)
        if head.startswith(HANG):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
            time.sleep(3600)
    return _spectra_ingest(paths=paths, **kwargs)


services.spectra_ingest = _spectra_ingest_or_die

__all__ = ["app"]
