"""Work on several database connections at once (core.parallel), against the real PostgreSQL."""

import threading
import time

import pytest
from django.db import connection, transaction

from core.parallel import beside, map_on_connections

# Worker threads open connections of their own: they see committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)


def _backend() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _alive(pids) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)])
        return {pid for (pid,) in cursor.fetchall()}


def test_items_run_on_other_connections_at_once_and_come_back_in_order():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    main = _backend()
    read: list[int] = []
    running, most = [0], [0]
    lock = threading.Lock()

    def items():
        for i in range(8):
            read.append(i)
            yield i

    def work(i):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05 * (i % 3))  # later items often end first
        pid = _backend()
        with lock:
            running[0] -= 1
        return i, pid, len(read)

    results = list(map_on_connections(work, items(), connections=3))
    assert [i for i, _, _ in results] == list(range(8))
    pids = {pid for _, pid, _ in results}
    assert main not in pids and 2 <= len(pids) <= 3
    assert most[0] >= 2
    # At most 2 x 3 items out and one more read, whatever finishes first: bounded memory.
    assert all(seen <= i + 2 * 3 + 1 for i, _, seen in results)
    time.sleep(0.2)
    assert not _alive(pids)  # the workers' connections are closed


def test_setup_runs_once_on_each_worker_connection():
    def setup():
        with connection.cursor() as cursor:
            cursor.execute("SET application_name = 'spcanet-worker'")

    def work(_):
        with connection.cursor() as cursor:
            cursor.execute("SHOW application_name")
            return cursor.fetchone()[0]

    assert set(map_on_connections(work, range(4), connections=2, setup=setup)) == {"spcanet-worker"}
    assert work(None) != "spcanet-worker"  # never on the caller's connection


def test_the_first_error_is_raised_and_stops_further_items():
    started: list[int] = []

    def work(i):
        started.append(i)
        if i == 2:
            raise ValueError("item 2 is bad")
        time.sleep(0.02)
        return i

    seen = []
    with pytest.raises(ValueError, match="item 2 is bad"):
        for result in map_on_connections(work, range(50), connections=2):
            seen.append(result)
    assert seen == sorted(seen) and 2 not in seen
    assert len(started) < 10  # the dispatch stopped


def test_inside_a_transaction_everything_runs_here():
    main = _backend()
    with transaction.atomic():
        assert [pid for pid in map_on_connections(lambda _: _backend(), range(3), connections=2)] == [main] * 3


def test_beside_runs_while_the_block_runs_and_raises_its_error():
    main = _backend()
    ran = {}
    release = threading.Event()

    def work():
        ran["pid"] = _backend()
        release.wait(5)

    with beside(work):
        time.sleep(0.1)
        assert "pid" in ran  # running already, while the block runs
        release.set()
    assert ran["pid"] != main

    def failing():
        raise RuntimeError("index failed")

    with pytest.raises(RuntimeError, match="index failed"):
        with beside(failing):
            pass
    order = []
    with transaction.atomic():
        with beside(lambda: order.append("work")):
            order.append("block")
    assert order == ["block", "work"]  # inside a transaction: here, after the block
