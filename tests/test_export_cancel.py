"""An abandoned CSV export cancels its COPY on the server and leaves the connection ready.

Before, a client that read part of a large export and hung up left the ``COPY`` running
(blocked on a full socket) until the next query on that connection had read the rest of
it: the next request on the worker paid for the whole export.
"""

import socket
import threading
import time

import numpy as np
import psycopg2
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
from django.db import connection, connections

import inference.export
from core.bulk import bulk_upsert
from core.labels import LABEL_ERROR_FIELDS, LABEL_FIELDS
from inference.export import stream_csv
from inference.models import CatalogEntry, CatalogRelease, ModelVersion
from inference.services.release import catalog_release_create
from spectra.models import Spectrum, Star

from .conftest import make_model

# Rows of the large release: about 20 MB of CSV, far more than the socket buffers and the
# export's queue hold, so that the COPY is still running when the client hangs up.
LARGE_ROWS = 40_000
BLOCK_BYTES = 64 * 1024


def large_release(n_rows: int = LARGE_ROWS) -> CatalogRelease:
    """A published release of ``n_rows`` entries, written in bulk (a few seconds)."""
    star = Star.objects.create(designation="LAMOST J000000.00+000000.0", gaia_source_id=1, ra=1.0, dec=1.0)
    specids = [f"20180101-BIG-01-{i:06d}-coadd-test" for i in range(n_rows)]
    bulk_upsert(
        Spectrum,
        {
            "star_id": np.full(n_rows, star.pk, dtype=np.int64),
            "medres_specid": specids,
            "medid_blue": [f"{s}-B" for s in specids],
            "medid_red": [f"{s}-R" for s in specids],
            "kind": [Spectrum.Kind.COADD] * n_rows,
            "plan_id": ["BIG"] * n_rows,
            "spectrograph": np.ones(n_rows, dtype=np.int64),
            "fiber": np.arange(n_rows, dtype=np.int64) % 250 + 1,
            "lmjd": np.full(n_rows, 58000, dtype=np.int64),
            "snr_blue": np.full(n_rows, 50.0),
            "snr_red": np.full(n_rows, 80.0),
            "source_path": ["/data/big.fits"] * n_rows,
            "source_sha256": ["b" * 64] * n_rows,
            "file_format": ["dr7"] * n_rows,
        },
        unique_fields=["medres_specid"],
    )
    release = catalog_release_create(
        name="large",
        formal_model=make_model(ModelVersion.Role.FORMAL, "large-formal"),
        alternate_model=make_model(ModelVersion.Role.ALTERNATE, "large-alternate"),
    )
    numbers = ", ".join(f'"{field}"' for field in (*LABEL_FIELDS, *LABEL_ERROR_FIELDS))
    values = ", ".join(["random()"] * (2 * len(LABEL_FIELDS)))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO inference_catalogentry (release_id, spectrum_id, designation, gaia_source_id, medres_specid, "
            f"medid_blue, medid_red, ra, dec, snr_blue, snr_red, rv_blue, rv_red, {numbers}, flag, flag_bits) "
            "SELECT %s, s.id, 'LAMOST J000000.00+000000.0', 1, s.medres_specid, s.medid_blue, s.medid_red, "
            f"random() * 360, random() * 90, s.snr_blue, s.snr_red, random(), random(), {values}, 1, 0 "
            "FROM spectra_spectrum s WHERE s.star_id = %s",
            [release.pk, star.pk],
        )
    CatalogRelease.objects.filter(pk=release.pk).update(
        status=CatalogRelease.Status.PUBLISHED, entry_count=n_rows, good_count=n_rows
    )
    return CatalogRelease.objects.get(pk=release.pk)


def observer():
    """A second connection to the test database, outside the test's transaction."""
    settings = connection.settings_dict
    observing = psycopg2.connect(
        dbname=settings["NAME"], user=settings["USER"] or None, host=settings["HOST"] or None,
        port=settings["PORT"] or None, password=settings["PASSWORD"] or None,
    )
    observing.autocommit = True
    return observing


def running_copies(observing, pid: int | None = None) -> list[tuple]:
    """Exports of this database still running on the server (another backend's COPY)."""
    with observing.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state, wait_event FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE 'COPY (SELECT%%'"
            + (" AND pid = %s" if pid is not None else ""),
            [pid] if pid is not None else [],
        )
        return cursor.fetchall()


def wait_until(condition, timeout: float) -> float | None:
    """Seconds until ``condition()`` held, or None if it never did within ``timeout``."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if condition():
            return time.perf_counter() - start
        time.sleep(0.05)
    return None


@pytest.mark.django_db
def test_closing_the_export_cancels_its_copy_and_keeps_the_transaction_usable(monkeypatch):
    monkeypatch.setattr(inference.export, "_COPY_BLOCK_BYTES", BLOCK_BYTES)
    release = large_release()
    entries = CatalogEntry.objects.filter(release=release)
    connection.ensure_connection()
    pid = connection.connection.get_backend_pid()
    observing = observer()
    try:
        stream = stream_csv(release, entries, {}, 1000)
        read = 0
        while read < 4 * BLOCK_BYTES:
            read += len(next(stream))
        assert running_copies(observing, pid), "the export's COPY should be running while the client reads"
        started = time.perf_counter()
        stream.close()  # the client went away
        closed_in = time.perf_counter() - started
        assert wait_until(lambda: not running_copies(observing, pid), timeout=2.0) is not None
        assert closed_in < 2.0
        # The same connection, inside the test's transaction, answers at once.
        assert entries.count() == LARGE_ROWS
    finally:
        observing.close()


@pytest.mark.django_db
def test_an_export_read_to_the_end_is_whole_and_leaves_the_transaction_usable(monkeypatch):
    monkeypatch.setattr(inference.export, "_COPY_BLOCK_BYTES", BLOCK_BYTES)
    release = large_release(5_000)
    entries = CatalogEntry.objects.filter(release=release)
    blocks = list(stream_csv(release, entries, {}, 1000))
    assert len(blocks) > 10  # streamed in blocks, not at once
    text = b"".join(block if isinstance(block, bytes) else block.encode() for block in blocks)
    lines = [line for line in text.split(b"\n") if line and not line.startswith(b"#")]
    assert len(lines) == 1 + 5_000 and len(set(lines)) == 1 + 5_000
    assert entries.filter(flag=1).count() == 5_000


class _Server:
    """Django behind a one-thread WSGI server, like a sync gunicorn worker: one database
    connection kept between requests (CONN_MAX_AGE > 0), and close() called on the response
    when the client goes away."""

    def __init__(self):
        self.httpd = WSGIServer(("127.0.0.1", 0), WSGIRequestHandler, ipv6=False)
        self.httpd.set_app(WSGIHandler())
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        try:
            self.httpd.serve_forever(poll_interval=0.05)
        finally:
            connections.close_all()  # this thread's connection, kept open between requests

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def http_get(port: int, path: str, read_bytes: int | None = None, before_hangup=None) -> bytes:
    """GET ``path``; read the whole response, or only ``read_bytes`` and hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while read_bytes is None or len(received) < read_bytes:
            data = client.recv(65536)
            if not data:
                break
            received += data
        if before_hangup is not None:
            before_hangup()
        return received


@pytest.mark.django_db(transaction=True)
def test_a_client_hanging_up_mid_export_leaves_no_copy_running(monkeypatch):
    monkeypatch.setattr(inference.export, "_COPY_BLOCK_BYTES", BLOCK_BYTES)
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 60)  # as in production
    release = large_release()
    observing = observer()
    running_at_hangup = []
    try:
        with _Server() as server:
            assert http_get(server.port, "/api/v1/releases/").startswith(b"HTTP/1.1 200")  # the worker's connection
            received = http_get(
                server.port, f"/api/v1/releases/{release.name}/export.csv", read_bytes=1 << 20,
                before_hangup=lambda: running_at_hangup.extend(running_copies(observing)),
            )
            assert received.startswith(b"HTTP/1.1 200") and len(received) >= 1 << 20
            assert running_at_hangup, "the export's COPY should be running when the client hangs up"
            idle_after = wait_until(lambda: not running_copies(observing), timeout=2.0)
            assert idle_after is not None, f"the export's COPY still runs: {running_copies(observing)}"
            # The next request on the same worker and connection is answered, with nothing to drain.
            response = http_get(server.port, f"/api/v1/releases/{release.name}/entries/?page_size=1")
            assert response.startswith(b"HTTP/1.1 200") and b'"results"' in response
    finally:
        observing.close()
