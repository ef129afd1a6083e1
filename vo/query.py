"""Running a TAP query: ADQL translated (vo/adql.py), then run in a transaction as the
read-only role, with a time limit, returning at most MAXREC rows and whether more matched.

Each query runs inside a savepoint that is always rolled back: ``SET LOCAL ROLE`` to the
role that may only SELECT the VO schemas, ``SET LOCAL statement_timeout``,
``SET LOCAL transaction_read_only`` and a search path of those schemas. Whatever the
translation lets through, the database refuses writes and the tables the role may not
read (auth, sessions, drafts); the rollback returns the connection to the site's role.
"""

import time
from dataclasses import dataclass

from django.db import DatabaseError, connection, transaction

from .adql import AdqlError, translate
from .conf import vo_setting
from .setup import TAP_SCHEMA, allowed_tables
from .tables import SCHEMA, TABLES_BY_NAME, known_column
from .votable import Columns, ResultField, field_for_database_column


class TapUnavailable(RuntimeError):
    """The service cannot answer here (not PostgreSQL, or not set up)."""


@dataclass
class QueryResult:
    fields: list[ResultField]
    columns: Columns
    overflow: bool  # more rows matched than MAXREC
    sql: str

    @property
    def n_rows(self) -> int:
        return self.columns.n_rows


_FETCH_ROWS = 5_000


_TABLES_HINT = "the tables are " + ", ".join(sorted(allowed_tables()))


def _message(error: DatabaseError, timeout_s: float) -> str:
    cause = getattr(error, "__cause__", None)
    code = getattr(cause, "pgcode", None)
    if code == "57014":
        return f"query exceeded the time limit of {timeout_s:g} s"
    if code == "42501":
        return f"permission denied: only the tables listed in TAP_SCHEMA.tables can be read ({_TABLES_HINT})"
    if code == "42P01":
        return f"no such table: {_first_line(cause)} ({_TABLES_HINT})"
    if code == "25006":
        return "this service is read-only: only SELECT queries are allowed"
    return f"query failed: {_first_line(cause or error)}"


def _first_line(error) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def run_query(adql: str, *, maxrec: int, timeout_s: float) -> QueryResult:
    """Run one ADQL query; :class:`AdqlError` for a query that cannot run (bad ADQL, a
    table that is not published, the time limit, a write), :class:`TapUnavailable` where
    TAP cannot answer at all."""
    if connection.vendor != "postgresql":
        raise TapUnavailable("TAP needs PostgreSQL: this site runs on the embedded SQLite database "
                             "(set DATABASE_URL to a PostgreSQL database and migrate)")
    translation = translate(adql)
    sql = f"SELECT * FROM ({translation.sql}) AS tap_query LIMIT {int(maxrec) + 1}"
    role = vo_setting("TAP_DB_ROLE").replace('"', '""')
    with transaction.atomic():
        savepoint = transaction.savepoint()
        try:
            with connection.cursor() as cursor:
                try:
                    cursor.execute(f'SET LOCAL ROLE "{role}"')
                except DatabaseError:
                    raise TapUnavailable("the TAP database role is missing: run `manage.py vo_setup`") from None
                cursor.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
                cursor.execute("SET LOCAL transaction_read_only = on")
                # The tokenizer of vo/adql.py reads strings as standard SQL does.
                cursor.execute("SET LOCAL standard_conforming_strings = on")
                cursor.execute(f"SET LOCAL search_path = {SCHEMA}, {TAP_SCHEMA}")
            # A server-side cursor (DECLARE ... CURSOR FOR: one SELECT, nothing else), read in
            # blocks that become numpy columns at once, so memory follows the answer's
            # size in numbers, not in Python objects.
            with connection.chunked_cursor() as stream:
                try:
                    started = time.monotonic()
                    stream.execute(sql)
                    blocks, fields = [], None
                    while True:
                        # statement_timeout bounds each FETCH; this bounds them all together.
                        if time.monotonic() - started > timeout_s:
                            raise AdqlError(f"query exceeded the time limit of {timeout_s:g} s")
                        block = stream.fetchmany(_FETCH_ROWS)
                        if fields is None:
                            fields = _fields(stream.description, translation.tables)
                        if not block:
                            break
                        blocks.append(Columns.from_rows(fields, block))
                except DatabaseError as error:
                    raise AdqlError(_message(error, timeout_s)) from None
                except ValueError as error:  # e.g. a NUL character, which PostgreSQL cannot take
                    raise AdqlError(f"query refused: {error}") from None
        finally:
            transaction.savepoint_rollback(savepoint)
    columns = Columns.concatenate(blocks, len(fields))
    overflow = columns.n_rows > maxrec
    return QueryResult(fields, columns.head(maxrec) if overflow else columns, overflow, translation.sql)


def _fields(description, table_names) -> list[ResultField]:
    tables = [TABLES_BY_NAME[name] for name in table_names if name in TABLES_BY_NAME]
    return [field_for_database_column(column.name, column.type_code, known_column(column.name, tables) if tables
                                      else None) for column in description]
