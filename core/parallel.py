"""Work split over several database connections at once (one thread each).

A long write of independent chunks (a release build's entries or stars) is bound by one
PostgreSQL backend, which runs on one CPU core. Run on ``n`` connections, ``n`` backends
share the chunks. Each thread has its own Django connection (Django keeps one per thread)
and closes it when it ends, so its temporary tables and session settings go with it.
"""

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.db import connection

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


def map_on_connections(
    work: Callable[[T], R],
    items: Iterable[T],
    *,
    connections: int,
    setup: Callable[[], None] | None = None,
) -> Iterator[R]:
    """``work(item)`` for each item, on up to ``connections`` database connections at once.

    Yields the results in the order of ``items``. ``items`` is read in this thread, so
    whatever it does (drawing ids from a sequence) happens in order; at most
    ``2 * connections`` items are running, waiting for a worker or holding a result not
    yet yielded, and one more read (memory stays bounded whatever the number of items).
    Each item runs in a worker thread on that thread's own connection: ``work`` must
    commit its own writes (an atomic block of its own) and write nothing the other items
    read. ``setup`` runs once on each worker's own connection before its first item (a
    session setting); never on the caller's connection. The first error stops the reading
    of further items; it is raised here once the running items have ended. The workers'
    connections are closed when the generator ends, is closed, or is dropped (a ``for``
    loop over the call, left early, drops it).

    A caller inside a transaction (an atomic block), or ``connections`` <= 1, gets every
    item run here, one after another, on this connection: another connection would not
    see the transaction's rows.
    """
    if connections <= 1 or connection.in_atomic_block:
        for item in items:
            yield work(item)
        return
    inbox: queue.Queue = queue.Queue(maxsize=1)
    results: dict[int, object] = {}
    errors: list[BaseException] = []
    ready = threading.Condition()
    stop = threading.Event()

    def worker() -> None:
        from django.db import connection as own  # this thread's connection

        try:
            configured = False
            while True:
                entry = inbox.get()
                if entry is _DONE:
                    return
                index, item = entry
                if stop.is_set():
                    continue
                try:
                    if setup is not None and not configured:
                        setup()
                        configured = True
                    result = work(item)
                except BaseException as error:  # raised again in the caller's thread
                    with ready:
                        errors.append(error)
                        stop.set()
                        ready.notify_all()
                    continue
                with ready:
                    results[index] = result
                    ready.notify_all()
        finally:
            own.close()

    threads = [threading.Thread(target=worker, name=f"db-worker-{i}", daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    sent = received = 0
    try:
        for item in items:
            # At most 2 x connections items sent and not yet given back: a slow item holds
            # the results of the later ones, whose number this bounds.
            while sent - received >= 2 * connections and not stop.is_set():
                with ready:
                    ready.wait_for(lambda index=received: index in results or stop.is_set())
                while received in results:
                    yield results.pop(received)  # type: ignore[misc]
                    received += 1
            if stop.is_set():
                break
            inbox.put((sent, item))
            sent += 1
            while received in results:  # (only this thread removes results)
                yield results.pop(received)  # type: ignore[misc]
                received += 1
        while received < sent and not stop.is_set():
            with ready:
                ready.wait_for(lambda index=received: index in results or stop.is_set())
            while received in results:
                yield results.pop(received)  # type: ignore[misc]
                received += 1
    finally:
        stop.set()  # no further item starts (the caller may have stopped early)
        for _ in threads:
            inbox.put(_DONE)
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


@contextmanager
def beside(work: Callable[[], None]):
    """Run ``work()`` on a connection of its own, in a thread, while the ``with`` block runs.

    Leaving the block waits for ``work`` and raises its error, if any (the block's own
    error comes first, once ``work`` has ended). The thread's connection is closed when
    ``work`` ends. Inside a transaction (an atomic block) ``work`` runs here, on this
    connection, when the block has ended: another connection would not see the
    transaction's rows.
    """
    if connection.in_atomic_block:
        yield
        work()
        return
    errors: list[BaseException] = []

    def run() -> None:
        from django.db import connection as own  # this thread's connection

        try:
            work()
        except BaseException as error:  # raised again in the caller's thread
            errors.append(error)
        finally:
            own.close()

    thread = threading.Thread(target=run, name="db-beside", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if errors:
        raise errors[0]
