"""The published catalog as CSV: paper Table 2's columns in its order, streamed.

On PostgreSQL the server writes the CSV itself (``COPY (query) TO STDOUT``), which a
helper thread hands over in blocks through a bounded queue: constant memory, and several
times faster than formatting floats in Python; a client that goes away cancels the
COPY on the server. Elsewhere rows come through a server-side cursor and Python's csv
writer. Either way, text cells that a spreadsheet would read as a formula are
neutralised.
"""

import csv
import io
import logging
import queue
import threading
from collections.abc import Iterable, Iterator

import psycopg2
from django.db import connection, transaction
from django.db.models import QuerySet

from spectra.flags import CATALOG_FLAGS, FlagLevel
from spectra.labels import LABELS

from .models import CatalogRelease

logger = logging.getLogger(__name__)

# (CSV header, entry field, unit or None), in the order of the paper's Table 2.
EXPORT_COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("starid", "designation", None),
    ("Gaia_source_id", "gaia_source_id", None),
    ("medres_specid", "medres_specid", None),
    ("medid_blue", "medid_blue", None),
    ("medid_red", "medid_red", None),
    ("RA", "ra", "deg (J2000)"),
    ("Dec", "dec", "deg (J2000)"),
    ("S/N_blue", "snr_blue", None),
    ("S/N_red", "snr_red", None),
    ("RV_blue", "rv_blue", "km/s, uncalibrated"),
    ("RV_red", "rv_red", "km/s, uncalibrated"),
    *((label.column, label.field, label.unit) for label in LABELS),
    ("Flag", "flag", "1 good, 0 bad"),
    ("Flag_bits", "flag_bits", "catalog flag bits, see below"),
)
TEXT_FIELDS = frozenset({"designation", "medres_specid", "medid_blue", "medid_red"})
# Cells starting with these are run as formulas by spreadsheet programs.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "|", "%")


def spreadsheet_safe(text: str) -> str:
    """Prefix a quote to text a spreadsheet would otherwise evaluate (OWASP CSV injection)."""
    if text and text.startswith(_FORMULA_PREFIXES):
        return "'" + text
    return text


def header_lines(release: CatalogRelease, filters: dict[str, object]) -> list[str]:
    """Comment lines (starting with '#') describing the release, the columns and the flags."""
    lines = [
        f"# SPCANet catalog of LAMOST-II MRS stellar labels, release {release.name} ({release.status})",
        f"# formal model {release.formal_model.name} ({release.formal_model.artifact_sha256[:12]}), "
        f"alternate model {release.alternate_model.name} ({release.alternate_model.artifact_sha256[:12]})",
        f"# published {release.published_at.isoformat() if release.published_at else 'not yet (draft)'}",
        f"# catalog rules: {', '.join(f'{k}={v:g}' for k, v in sorted(release.rules.items()))}",
        f"# filters: {', '.join(f'{k}={v}' for k, v in sorted(filters.items())) or 'none'}",
        "# an empty cell is no value (stars above "
        f"{release.rules.get('abundance_teff_max', 6500):g} K have no abundances: bit HOT_STAR_NO_ABUNDANCES)",
        "# columns:",
    ]
    lines += [f"#   {header}: {unit}" for header, _, unit in EXPORT_COLUMNS if unit]
    lines.append("#   abundance columns [X/H]: dex")
    lines.append("# Flag_bits (a row with Flag = 1 carries no 'reject' bit):")
    lines += [
        f"#   bit {flag.bit} (value {flag.mask}) {flag.name} [{flag.level.value}]: {flag.meaning}"
        for flag in CATALOG_FLAGS
    ]
    lines.append(f"#   reject bits: {', '.join(f.name for f in CATALOG_FLAGS if f.level is FlagLevel.REJECT)}")
    return lines


def _safe_rows(rows: Iterable[tuple], text_positions: list[int]) -> Iterator[tuple]:
    for row in rows:
        if any(row[i] and row[i].startswith(_FORMULA_PREFIXES) for i in text_positions):
            row = list(row)
            for i in text_positions:
                if row[i]:
                    row[i] = spreadsheet_safe(row[i])
        yield row


def stream_csv(release: CatalogRelease, entries: QuerySet, filters: dict, chunk_size: int) -> Iterator[str | bytes]:
    """Yield the comment header, the column header, then the CSV rows of ``entries`` in blocks."""
    yield "\n".join(header_lines(release, filters)) + "\n"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([header for header, _, _ in EXPORT_COLUMNS])
    yield buffer.getvalue()
    if connection.vendor == "postgresql":
        yield from _copy_rows(entries)
    else:
        yield from _python_rows(entries, chunk_size)


def _python_rows(entries: QuerySet, chunk_size: int) -> Iterator[str]:
    fields = [field for _, field, _ in EXPORT_COLUMNS]
    text_positions = [i for i, field in enumerate(fields) if field in TEXT_FIELDS]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    rows = entries.order_by("id").values_list(*fields).iterator(chunk_size=chunk_size)
    pending = 0
    for row in _safe_rows(rows, text_positions):
        writer.writerow(row)
        pending += 1
        if pending >= chunk_size:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


# Bytes handed over per block by the COPY path.
_COPY_BLOCK_BYTES = 1 << 20
# As SQL literals inside a statement that goes through mogrify (so '%' is doubled).
_SQL_FORMULA_PREFIXES = ", ".join(
    "E'\\t'" if p == "\t" else "E'\\r'" if p == "\r" else f"'{p.replace('%', '%%')}'" for p in _FORMULA_PREFIXES
)


def _copy_sql(entries: QuerySet) -> str:
    fields = [field for _, field, _ in EXPORT_COLUMNS]
    inner_sql, params = entries.order_by("id").values_list(*fields).query.sql_with_params()
    aliases = [f"c{i}" for i in range(len(fields))]
    outer = [
        (f"CASE WHEN left({alias}, 1) IN ({_SQL_FORMULA_PREFIXES}) THEN '''' || {alias} ELSE {alias} END")
        if field in TEXT_FIELDS
        else alias
        for alias, field in zip(aliases, fields, strict=True)
    ]
    with connection.cursor() as cursor:
        query = cursor.mogrify(f"SELECT {', '.join(outer)} FROM ({inner_sql}) AS rows ({', '.join(aliases)})", params)
    return f"COPY ({query.decode()}) TO STDOUT WITH (FORMAT csv)"


def _copy_rows(entries: QuerySet) -> Iterator[bytes]:
    """Run COPY TO STDOUT on this request's connection in a helper thread; yield its blocks.

    The request's own connection is used (the view does nothing else with it while the
    response streams), so the export sees exactly what the request sees. When the client
    goes away the WSGI server closes this generator: the COPY is then cancelled on the
    server (otherwise it would run on, and the next query on this connection would first
    have to read what is left of it), and inside a transaction the statement is rolled
    back to a savepoint, so the connection is at once ready for the next request.
    """
    sql = _copy_sql(entries)
    connection.ensure_connection()
    raw_connection = connection.connection
    # None outside a transaction (autocommit): a cancelled statement then fails alone.
    savepoint = transaction.savepoint()
    blocks: queue.Queue = queue.Queue(maxsize=4)
    abandoned = threading.Event()
    finished = object()

    class Sink:
        def __init__(self):
            self.parts: list[bytes] = []
            self.size = 0

        def write(self, data) -> None:
            if abandoned.is_set():
                # Discard what the server sent before the cancel took effect; raising here
                # would leave the COPY running (libpq cannot stop reading it on its own).
                return
            self.parts.append(data if isinstance(data, bytes) else data.encode())
            self.size += len(data)
            if self.size >= _COPY_BLOCK_BYTES:
                self.flush()

        def flush(self) -> None:
            if self.parts and not abandoned.is_set():
                blocks.put(b"".join(self.parts))
                self.parts, self.size = [], 0

    def run() -> None:
        sink = Sink()
        try:
            with raw_connection.cursor() as cursor:
                cursor.copy_expert(sql, sink)
            sink.flush()
            blocks.put(finished)
        except BaseException as error:  # handed to the consuming thread, which re-raises it
            blocks.put(error)

    worker = threading.Thread(target=run, name="csv-export-copy", daemon=True)
    worker.start()
    completed = False
    try:
        while True:
            block = blocks.get()
            if block is finished:
                completed = True
                return
            if isinstance(block, BaseException):
                raise block
            yield block
    finally:
        if worker.is_alive():
            abandoned.set()
            # A cancel request reaching the server after the COPY has ended is ignored there,
            # so it can never hit a later statement (PostgreSQL protocol docs,
            # "Canceling Requests in Progress").
            try:
                raw_connection.cancel()
            except psycopg2.Error as error:  # then the COPY ends on its own, as it would have
                logger.warning("could not cancel an abandoned CSV export: %s", error)
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                blocks.get(timeout=0.1)
            except queue.Empty:
                pass
        worker.join()
        if savepoint is not None:
            if completed:
                transaction.savepoint_commit(savepoint)
            else:
                transaction.savepoint_rollback(savepoint)
