"""The published catalog as CSV, streamed: one header row, then RFC 4180 rows.

Columns come from :data:`inference.columns.CATALOG_COLUMNS` (names usable in TOPCAT
expressions, each label followed by its uncertainty, floats rounded to the digits they
carry, an empty cell for no value). The release's metadata is in a sidecar
(``export.csv-metadata.json``, CSV on the Web) and in the typed formats
(:mod:`inference.downloads`), never in comment lines, which CSV readers such as STILTS's
refuse. The paper-format CSV (``paper=True``) keeps Table 2's names and order and writes
-9999 for no value.

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
from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import QuerySet

from .columns import CATALOG_COLUMNS, PAPER_COLUMNS, PAPER_MISSING, STAR_COLUMNS, CatalogColumn, paper_header
from .models import CatalogRelease, CatalogStar

logger = logging.getLogger(__name__)

# Cells starting with these are run as formulas by spreadsheet programs.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "|", "%")


def spreadsheet_safe(text: str) -> str:
    """Prefix a quote to text a spreadsheet would otherwise evaluate (OWASP CSV injection)."""
    if text and text.startswith(_FORMULA_PREFIXES):
        return "'" + text
    return text


def csv_columns(*, paper: bool = False) -> tuple[CatalogColumn, ...]:
    return PAPER_COLUMNS if paper else CATALOG_COLUMNS


def table_columns(rows: QuerySet) -> tuple[CatalogColumn, ...]:
    """The columns of a download of ``rows``: the star table's (:data:`STAR_COLUMNS`) for
    CatalogStar rows, the entries' (:data:`CATALOG_COLUMNS`) otherwise."""
    return STAR_COLUMNS if rows.model is CatalogStar else CATALOG_COLUMNS


def csv_header(*, paper: bool = False) -> list[str]:
    return [paper_header(column) if paper else column.name for column in csv_columns(paper=paper)]


def stream_csv(
    release: CatalogRelease, entries: QuerySet, filters: dict, chunk_size: int, *, paper: bool = False
) -> Iterator[str | bytes]:
    """Yield the header row, then the CSV rows of ``entries`` in blocks.

    ``release`` and ``filters`` are described by the sidecar, not in the file (they stay in
    the signature so that every format's writer is called alike).
    """
    if paper and entries.model is CatalogStar:
        raise ValueError("the paper's layout is the entries' (Table 2); the star table has none")
    columns = csv_columns(paper=paper) if paper else table_columns(entries)
    buffer = io.StringIO()
    header = [paper_header(column) for column in columns] if paper else [column.name for column in columns]
    csv.writer(buffer, lineterminator="\n").writerow(header)
    yield buffer.getvalue()
    yield from csv_rows(entries, columns, chunk_size, paper=paper, spreadsheet=True)


def copy_available() -> bool:
    """Whether rows can come from a COPY (PostgreSQL) rather than a cursor (SQLite)."""
    return connection.vendor == "postgresql"


def csv_rows(entries: QuerySet, columns: tuple[CatalogColumn, ...], chunk_size: int, *, paper: bool = False,
             spreadsheet: bool = True) -> Iterator[str | bytes]:
    """The CSV rows (no header) of ``entries`` in id order, in blocks."""
    if copy_available():
        yield from copy_blocks(copy_sql(entries, columns, paper=paper, spreadsheet=spreadsheet))
    else:
        yield from _python_rows(entries, columns, chunk_size, paper=paper, spreadsheet=spreadsheet)


def _python_cell(value, column: CatalogColumn, *, paper: bool, spreadsheet: bool):
    if value is None:
        return PAPER_MISSING if paper and column.nullable else ""
    if column.is_float:
        return python_rounded(value, column.decimals)
    if column.dtype == "str" and spreadsheet:
        return spreadsheet_safe(value)
    return value


def _python_rows(entries: QuerySet, columns: tuple[CatalogColumn, ...], chunk_size: int, *, paper: bool,
                 spreadsheet: bool) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    rows = entries.order_by("id").values_list(*(column.field for column in columns)).iterator(chunk_size=chunk_size)
    for block in _batched(rows, chunk_size):
        writer.writerows(
            [_python_cell(value, column, paper=paper, spreadsheet=spreadsheet)
             for value, column in zip(row, columns, strict=True)]
            for row in block
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def _batched(rows: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    block: list[tuple] = []
    for row in rows:
        block.append(row)
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block


# Bytes handed over per block by the COPY path.
_COPY_BLOCK_BYTES = 1 << 20
# As SQL literals inside a statement that goes through mogrify (so '%' is doubled).
_SQL_FORMULA_PREFIXES = ", ".join(
    "E'\\t'" if p == "\t" else "E'\\r'" if p == "\r" else f"'{p.replace('%', '%%')}'" for p in _FORMULA_PREFIXES
)


def rounded_sql(expression: str, decimals: int) -> str:
    """``expression`` (double precision) rounded to ``decimals`` digits, still a double.

    PostgreSQL writes a double in its shortest exact form (``extra_float_digits`` >= 1,
    the default since version 12), and ``round(x * 10^d) / 10^d`` is the double nearest
    to the rounded decimal, so it prints as that decimal ("2.612", "-0.2", "4774"). Four
    times faster than rounding through ``numeric``. ``+ 0.0`` turns -0 into 0.
    """
    if decimals == 0:
        return f"(round({expression}) + float8 '0')"
    scale = f"float8 '1e{decimals}'"  # a bare 1e3 or 0.0 would be numeric, and so the arithmetic
    return f"(round({expression} * {scale}) / {scale} + float8 '0')"


def python_rounded(value: float, decimals: int) -> str:
    """The text :func:`rounded_sql` gives in PostgreSQL, for the Python path."""
    if decimals == 0:
        return str(int(round(value)))
    scale = 10.0**decimals
    text = repr(round(value * scale) / scale + 0.0)
    return text[:-2] if text.endswith(".0") else text  # PostgreSQL writes 10, not 10.0


def _column_sql(alias: str, column: CatalogColumn, *, paper: bool, spreadsheet: bool) -> str:
    if column.dtype == "str":
        if spreadsheet:
            return f"CASE WHEN left({alias}, 1) IN ({_SQL_FORMULA_PREFIXES}) THEN '''' || {alias} ELSE {alias} END"
        return alias
    expression = rounded_sql(alias, column.decimals) if column.is_float else alias
    if paper and column.nullable:
        return f"coalesce(({expression})::text, '{PAPER_MISSING}')"
    return expression


def select_sql(entries: QuerySet, fields: list[str]) -> tuple[str, tuple]:
    """The SQL of ``entries``' ``fields`` in id order. A filter that Django knows matches
    nothing (an integer bound outside its column's range) has no SQL of its own
    (EmptyResultSet): it becomes a query that returns no rows."""
    try:
        return entries.order_by("id").values_list(*fields).query.sql_with_params()
    except EmptyResultSet:
        return entries.model.objects.filter(pk__isnull=True).values_list(*fields).query.sql_with_params()


def copy_sql(entries: QuerySet, columns: tuple[CatalogColumn, ...], *, paper: bool = False,
             spreadsheet: bool = True) -> str:
    """``COPY (SELECT ...) TO STDOUT`` of ``entries`` in id order: floats rounded to their
    decimals, NULL an empty cell (-9999 with ``paper``), text that a spreadsheet would run
    as a formula prefixed with ``'`` when ``spreadsheet``."""
    fields = [column.field for column in columns]
    inner_sql, params = select_sql(entries, fields)
    aliases = [f"c{i}" for i in range(len(fields))]
    outer = [
        _column_sql(alias, column, paper=paper, spreadsheet=spreadsheet)
        for alias, column in zip(aliases, columns, strict=True)
    ]
    with connection.cursor() as cursor:
        query = cursor.mogrify(f"SELECT {', '.join(outer)} FROM ({inner_sql}) AS rows ({', '.join(aliases)})", params)
    return f"COPY ({query.decode()}) TO STDOUT WITH (FORMAT csv)"


def copy_blocks(sql: str) -> Iterator[bytes]:
    """Run ``sql`` (a COPY TO STDOUT) on this request's connection in a helper thread; yield its blocks.

    The request's own connection is used (the view does nothing else with it while the
    response streams), so the export sees exactly what the request sees. When the client
    goes away the WSGI server closes this generator: the COPY is then cancelled on the
    server (otherwise it would run on, and the next query on this connection would first
    have to read what is left of it), and inside a transaction the statement is rolled
    back to a savepoint, so the connection is at once ready for the next request.
    """
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
