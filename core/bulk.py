"""Bulk upserts keyed on a unique constraint, so every step can be re-run safely.

On PostgreSQL rows are streamed with COPY into a temporary table and merged with
``INSERT ... ON CONFLICT DO UPDATE``: an order of magnitude faster than multi-row INSERTs
for the label and catalog tables. A batch of at most ``SMALL_UPSERT_ROWS`` rows (ingest's
writes) is one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT`` with an array literal
per column instead. Other databases (the SQLite embedded default) use Django's
``bulk_create(update_conflicts=True)``, which has the same semantics.
"""

import csv
import io
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import numpy as np
from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone

# Rows sent per COPY / bulk_create round trip; bounds memory on very large writes.
UPSERT_BATCH_ROWS = 20_000
# Up to this many rows one INSERT of a literal array per column (``_array_upsert``) costs
# PostgreSQL no more than COPY through a temporary table (four statements, and a temporary
# table's catalog rows written and removed each time), and much less for a few rows; above
# it COPY costs less. Backend CPU s per 51,169 ingest-shaped spectrum rows, array / COPY:
# 4.3-4.8 / 6.6-8.0 in batches of 20, 2.2-2.3 / 2.7-3.2 of 100, 2.0-2.7 / 2.1-2.3 of 209,
# 2.3-2.8 / 1.8-2.5 of 500, 1.9-2.1 / 1.5-1.6 of 4,096 (a multi-row VALUES list: 4.1-4.6 of
# 209). docs/capacity.md, "Database writes".
SMALL_UPSERT_ROWS = 250


# Bytes of a binary COPY parsed at a time when reading numeric rows (_CopyRecords).
COPY_BLOCK_BYTES = 1 << 22

# How COPY spells SQL NULL; an empty field stays an empty string.
COPY_NULL = r"\N"


def _as_python_column(values: Sequence | np.ndarray, null: object) -> list:
    """A column as a list of Python values, with None and NaN replaced by ``null``."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "f":
            as_object = values.astype(object)
            as_object[np.isnan(values)] = null
            return as_object.tolist()
        if values.dtype.kind != "O":
            return values.tolist()
    return [null if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]


def bulk_upsert(
    model: type[models.Model],
    columns: Mapping[str, Sequence | np.ndarray],
    *,
    unique_fields: Sequence[str],
    batch_rows: int = UPSERT_BATCH_ROWS,
) -> int:
    """Insert rows, or update the existing row with the same ``unique_fields``.

    ``columns`` maps model field attnames (``spectrum_id``, ``teff``...) to equal-length
    columns. Omitted fields take their defaults on insert and keep their value on
    update; ``auto_now`` fields are set on both. Rows repeating a key keep only the last
    (one statement cannot update a row twice). Returns the number of rows written.
    """
    names = list(columns)
    lengths = {len(columns[name]) for name in names}
    if len(lengths) != 1:
        raise ValueError(f"columns of unequal length: { {n: len(columns[n]) for n in names} }")
    (total,) = lengths
    missing = set(unique_fields) - set(names)
    if missing:
        raise ValueError(f"unique fields {sorted(missing)} are not among the columns")
    keep = _last_of_each_key([columns[name] for name in unique_fields], total)
    if keep is not None:
        columns = {name: (values[keep] if isinstance(values, np.ndarray) else [values[i] for i in keep]) for name, values in columns.items()}
        total = keep.size
    # COPY bypasses Model.save(): supply what Django would, namely timestamps of
    # auto_now / auto_now_add fields and Python-side defaults of omitted fields.
    now = timezone.now()
    created_only: set[str] = set()
    extra: dict[str, list] = {}
    for field in model._meta.concrete_fields:
        if field.primary_key or field.attname in columns:
            continue
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            extra[field.attname] = [now] * total
            if not field.auto_now:
                created_only.add(field.attname)
        else:  # what Model.save() would store: the default, '' or None
            extra[field.attname] = [field.get_default()] * total
            created_only.add(field.attname)
    columns = {**columns, **extra}
    names += list(extra)
    update_fields = [name for name in names if name not in unique_fields and name not in created_only]
    use_copy = connection.vendor == "postgresql"
    with transaction.atomic():
        for start in range(0, total, batch_rows):
            batch = {name: columns[name][start : start + batch_rows] for name in names}
            if use_copy and total <= SMALL_UPSERT_ROWS and not _has_json(model, batch):
                _array_upsert(model, batch, unique_fields, update_fields)
            elif use_copy:
                _copy_upsert(model, batch, unique_fields, update_fields)
            else:
                python_batch = {name: _as_python_column(values, None) for name, values in batch.items()}
                _orm_upsert(model, python_batch, unique_fields, update_fields)
    return total


def _last_of_each_key(key_columns: list, total: int) -> np.ndarray | None:
    """Row indices keeping the last row of each repeated key, or None when keys are unique."""
    if all(isinstance(c, np.ndarray) and c.dtype.kind in "iu" for c in key_columns):
        keys = np.stack(key_columns, axis=1) if len(key_columns) > 1 else key_columns[0][:, None]
        _, first_from_end = np.unique(keys[::-1], axis=0, return_index=True)
        if first_from_end.size == total:
            return None
        return np.sort(total - 1 - first_from_end)
    last = {key: i for i, key in enumerate(zip(*key_columns, strict=True))}
    return None if len(last) == total else np.array(sorted(last.values()), dtype=np.int64)


def _orm_upsert(model, batch, unique_fields, update_fields) -> None:
    names = list(batch)
    field_by_attname = {f.attname: f.name for f in model._meta.concrete_fields}
    rows = zip(*(batch[name] for name in names), strict=True)
    objects = [model(**dict(zip(names, row, strict=True))) for row in rows]
    model.objects.bulk_create(
        objects,
        update_conflicts=bool(update_fields),
        ignore_conflicts=not update_fields,
        unique_fields=[field_by_attname[name] for name in unique_fields],
        update_fields=[field_by_attname[name] for name in update_fields] or None,
    )


# PostgreSQL column types that the binary COPY path writes, as big-endian numpy types.
_BINARY_COPY_TYPES = {"double precision": ">f8", "bigint": ">i8", "integer": ">i4", "smallint": ">i2"}
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _binary_copy_payload(model, columns: Mapping[str, Sequence | np.ndarray]) -> tuple[bytes, set[str]] | None:
    """The rows in PostgreSQL's binary COPY format, built with numpy; None if not all numeric.

    Float columns carry NaN for missing values (turned into NULL by the merge); integer
    and timestamp columns must be complete. Returns the payload and the float columns.
    """
    fields = {field.attname: field for field in model._meta.concrete_fields}
    layout, values, float_columns = [("count", ">i2")], [], set()
    for i, (name, column) in enumerate(columns.items()):
        field = fields[name]
        db_type = field.db_type(connection)
        if db_type == "timestamp with time zone":
            if not column or any(not isinstance(v, datetime) for v in column):
                return None
            first = column[0]
            if all(v is first for v in column):  # one timestamp for the batch: the common case
                array = np.full(len(column), (first - _PG_EPOCH) // timedelta(microseconds=1), dtype=np.int64)
            else:
                array = np.array([(v - _PG_EPOCH) // timedelta(microseconds=1) for v in column], dtype=np.int64)
            numpy_type = ">i8"
        else:
            numpy_type = _BINARY_COPY_TYPES.get(db_type)
            array = np.asarray(column)
            if numpy_type is None or array.dtype.kind not in ("f" if numpy_type == ">f8" else "iu"):
                return None
            if numpy_type == ">f8":
                float_columns.add(name)
        layout += [(f"length{i}", ">i4"), (f"value{i}", numpy_type)]
        values.append((i, np.dtype(numpy_type).itemsize, array))
    records = np.empty(len(next(iter(columns.values()))), dtype=np.dtype(layout))
    records["count"] = len(values)
    for i, size, array in values:
        records[f"length{i}"] = size
        records[f"value{i}"] = array
    header = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
    return header + records.tobytes() + struct.pack(">h", -1), float_columns


def _has_json(model, batch) -> bool:
    return any(isinstance(f, models.JSONField) for f in model._meta.concrete_fields if f.attname in batch)


def _conflict_sql(unique_fields, update_fields) -> str:
    quote = connection.ops.quote_name
    target = ", ".join(quote(n) for n in unique_fields)
    if not update_fields:
        return f"ON CONFLICT ({target}) DO NOTHING"
    return f"ON CONFLICT ({target}) DO UPDATE SET " + ", ".join(f"{quote(n)} = EXCLUDED.{quote(n)}" for n in update_fields)


def _array_literal(values: Sequence | np.ndarray, db_type: str) -> str:
    """A column as one PostgreSQL array literal (``{1,NULL,"a\\"b"}``); None and NaN are NULL.

    Parameters
    ----------
    values : (n,) sequence or ndarray
        The column's values: None, bool, int, float, str, datetime or date (numpy scalars
        of those kinds, and ``TextChoices`` members, included).
    db_type : str
        The column's PostgreSQL type (``Field.db_type``): an integral float bound for an
        integer column is written as an integer; any other float there is an error of the
        database's, as on the COPY path.

    Returns
    -------
    str
        Numbers in Python's shortest round-trip form, booleans as t/f, datetimes and dates
        in ISO 8601 (with their offset), text in double quotes with backslashes and quotes
        escaped (PostgreSQL's array input syntax), so that no value can end its element or
        the array.

    Raises
    ------
    TypeError
        For a value of another type (bytes, a duration...), which has no array text here.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return "{" + ",".join(map(str, values.tolist())) + "}"
    integer = db_type in ("bigint", "integer", "smallint")
    items = []
    for v in _as_python_column(values, None):
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or (isinstance(v, float) and math.isnan(v)):
            items.append("NULL")
        elif isinstance(v, bool):
            items.append("t" if v else "f")
        elif isinstance(v, int):
            items.append(str(int(v)))  # (an IntegerChoices member: its number)
        elif isinstance(v, float):
            v = float(v)
            if integer and v.is_integer():
                items.append(str(int(v)))
            else:
                items.append(repr(v) if math.isfinite(v) else f'"{v}"')
        elif isinstance(v, str | datetime | date):
            text = v.isoformat() if isinstance(v, datetime | date) else str(v)
            items.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            raise TypeError(f"no array text for a value of type {type(v).__name__}: {v!r}")
    return "{" + ",".join(items) + "}"


_TYPE_MODIFIER = re.compile(r"\(\d+(,\s*\d+)?\)$")  # varchar(64) -> varchar, numeric(10, 2) -> numeric


def _array_upsert(model, batch, unique_fields, update_fields) -> None:
    """Rows as one array per column in ``INSERT ... SELECT FROM unnest(...) ON CONFLICT``.

    One statement of constant shape whatever the number of rows: PostgreSQL parses and
    plans one literal per column instead of one per value (a multi-row VALUES list).
    """
    names = list(batch)
    quote = connection.ops.quote_name
    fields = {field.attname: field for field in model._meta.concrete_fields}
    types = [fields[name].db_type(connection) for name in names]
    # The arrays of the types without their length (varchar, not varchar(64)): an explicit
    # cast would cut an over-long value short; the insert's own cast to the column raises.
    casts = ", ".join(f"%s::{_TYPE_MODIFIER.sub('', db_type)}[]" for db_type in types)
    sql = (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(n) for n in names)}) "
           f"SELECT * FROM unnest({casts}) {_conflict_sql(unique_fields, update_fields)}")
    with connection.cursor() as cursor:
        cursor.execute(sql, [_array_literal(batch[name], db_type) for name, db_type in zip(names, types, strict=True)])


def _copy_upsert(model, batch, unique_fields, update_fields) -> None:
    table = connection.ops.quote_name(model._meta.db_table)
    names = list(batch)
    quote = connection.ops.quote_name
    column_sql = ", ".join(quote(name) for name in names)
    binary = _binary_copy_payload(model, batch)
    if binary is not None:
        payload, float_columns = binary
        buffer = io.BytesIO(payload)
        copy_options = "FORMAT binary"
        select_sql = ", ".join(
            f"NULLIF({quote(n)}, 'NaN'::float8)" if n in float_columns else quote(n) for n in names
        )
    else:
        json_fields = {f.attname for f in model._meta.concrete_fields if isinstance(f, models.JSONField)}
        text_columns = [
            [json.dumps(v) for v in batch[n]] if n in json_fields else _as_python_column(batch[n], COPY_NULL)
            for n in names
        ]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(zip(*text_columns, strict=True))
        buffer.seek(0)
        copy_options = f"FORMAT csv, NULL '{COPY_NULL}'"
        select_sql = column_sql
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE _bulk_upsert AS SELECT {column_sql} FROM {table} WITH NO DATA")
        with connection.wrap_database_errors:  # (Django's errors, as the other statements raise)
            cursor.cursor.copy_expert(f"COPY _bulk_upsert ({column_sql}) FROM STDIN WITH ({copy_options})", buffer)
        cursor.execute(
            f"INSERT INTO {table} ({column_sql}) SELECT {select_sql} FROM _bulk_upsert "
            f"{_conflict_sql(unique_fields, update_fields)}"
        )
        cursor.execute("DROP TABLE _bulk_upsert")


@contextmanager
def postgresql_jit_off():
    """PostgreSQL's JIT compilation off on this connection while the block runs (restored after).

    A build's chunk queries read tens of thousands of rows each, so their estimated cost
    passes ``jit_above_cost``; compiling them costs more than it saves (a million-entry
    release build: 65.0 s with JIT, 57.7 s without; README, "Release build and survey
    scale"). Other databases: nothing is changed.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('jit'), set_config('jit', 'off', false)")
        before = cursor.fetchone()[0]
    with statement_after(f"SELECT set_config('jit', '{before}', false)"):
        yield


@contextmanager
def statement_after(sql: str):
    """Run ``sql`` on this connection when the block ends (a cleanup).

    When the block raised, a failure of ``sql`` is ignored, so that it never hides the
    block's error (in a failed transaction no statement can run; its rollback undoes
    what the block did in it).
    """
    try:
        yield
    except BaseException:
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        except DatabaseError:
            pass
        raise
    with connection.cursor() as cursor:
        cursor.execute(sql)


# Temporary buffers of a connection that only moves chunks through temporary tables: a
# chunk's table (about 16 MB for 50,000 catalog entries) stays in memory; PostgreSQL's
# default, 8 MB, writes it to disk and reads it back. A connection's own memory, taken as used.
BULK_TEMP_BUFFERS = "64MB"


def postgresql_bulk_session(lock_timeout_ms: int | None = None) -> None:
    """Set up a fresh connection that writes chunks through temporary tables (a worker's own).

    JIT off (:func:`postgresql_jit_off`) and ``temp_buffers`` of ``BULK_TEMP_BUFFERS``
    for the rest of the session, and ``lock_timeout_ms`` when given (a worker's wait for a
    lock is a wait PostgreSQL's deadlock detector cannot see whole: the caller waits for
    the worker in Python). PostgreSQL refuses ``temp_buffers`` once the session has
    touched a temporary table: call it before. Other databases: nothing is changed.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET jit = off")
            cursor.execute("SET temp_buffers = %s", [BULK_TEMP_BUFFERS])
            if lock_timeout_ms is not None:
                cursor.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")


def table_analyze(model: type[models.Model]) -> None:
    """Refresh PostgreSQL's planner statistics of a table after a large bulk write."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


def planner_statistics_refresh(columns: dict[type[models.Model], Sequence[str]]) -> None:
    """ANALYZE these columns of these tables (PostgreSQL), before a bulk read joins them.

    ``columns`` maps a model to the columns its joins and range conditions use. Rows
    written just before (a prediction run's label sets, an ingest's spectra) are not in
    the planner's statistics until autovacuum gets to them, and a model version or an id
    range the statistics have never seen is estimated at a row or two: the planner then
    joins tens of thousands of label sets by a nested loop that compares every pair (a
    release build of 31,275 spectra: 12.4 s, 0.5 s once analysed). Autovacuum's own
    threshold (10% of a table changed) never fires for a new data release's label sets in
    a table that already holds many times as many. ANALYZE samples a fixed number of rows
    (300 x ``default_statistics_target``), so its cost does not grow with the table. It
    needs the tables' owner (the role that ran the migrations): for another role PostgreSQL
    skips it with a warning and the statistics stay as they were. Other databases: nothing
    is done.
    """
    if connection.vendor != "postgresql":
        return
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for model, names in columns.items():
            cursor.execute(f"ANALYZE {quote(model._meta.db_table)} ({', '.join(quote(n) for n in names)})")


def tables_vacuum(*tables: type[models.Model] | str) -> bool:
    """VACUUM tables on PostgreSQL after a large bulk insert, so that their pages are marked
    all-visible and index-only scans read no rows (an insert alone leaves that to
    autovacuum, later). ``tables`` are models or table names (a partition). VACUUM cannot
    run inside a transaction (an atomic block, or autocommit turned off): there it is left
    to autovacuum and False is returned; True when it ran."""
    if connection.vendor != "postgresql" or connection.in_atomic_block or not connection.get_autocommit():
        return False
    names = [table if isinstance(table, str) else table._meta.db_table for table in tables]
    with connection.cursor() as cursor:
        cursor.execute("VACUUM " + ", ".join(connection.ops.quote_name(name) for name in names))
    return True


def numeric_columns(queryset, fields: Sequence[str]) -> np.ndarray:
    """(n, len(fields)) float64 of a queryset's numeric columns, NULL as NaN.

    On PostgreSQL the rows come through a binary COPY parsed by numpy, not as Python
    tuples: several times faster for the hundreds of thousands of rows of a validation.
    Not for ids: a 64-bit integer above 2**53 does not survive float64; read those with
    ``keyed_numeric_columns``.
    """
    return keyed_numeric_columns(queryset, None, fields)[1]


def keyed_numeric_columns(queryset, key: str | None, fields: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """A non-NULL integer key column as exact int64 (n,) and numeric columns as float64
    (n, len(fields)), NULL as NaN; ``key`` None gives an empty key array.

    On PostgreSQL the rows come through one binary COPY, parsed block by block as they
    arrive (:class:`_CopyRecords`), so memory holds the result and one block, not the
    whole COPY as well.
    """
    names = ([key] if key else []) + list(fields)
    queryset = queryset.values_list(*names)
    offset = 1 if key else 0
    if connection.vendor != "postgresql":
        rows = list(queryset)
        keys = np.array([row[0] for row in rows], dtype=np.int64) if key else np.empty(0, dtype=np.int64)
        values = np.array([row[offset:] for row in rows], dtype=np.float64).reshape(-1, len(fields))
        return keys, values
    sql, params = queryset.query.sql_with_params()
    aliases = [f"c{i}" for i in range(len(names))]
    select = ", ".join(
        f"CAST(t.{alias} AS bigint)" if i < offset else f"COALESCE(CAST(t.{alias} AS double precision), 'NaN'::float8)"
        for i, alias in enumerate(aliases)
    )
    dtypes = [(alias, "i8" if i < offset else "f8") for i, alias in enumerate(aliases)]

    def columns(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.empty((records.size, len(fields)), dtype=np.float64)
        for j, (alias, _) in enumerate(dtypes[offset:]):
            values[:, j] = records[alias]
        keys = records[aliases[0]].astype(np.int64) if key else np.empty(0, dtype=np.int64)
        return keys, values

    blocks = _copy_blocks(f"SELECT {select} FROM ({{inner}}) AS t({', '.join(aliases)})", sql, params, dtypes,
                          columns)
    if not blocks:
        return np.empty(0, dtype=np.int64), np.empty((0, len(fields)), dtype=np.float64)
    return np.concatenate([k for k, _ in blocks]), np.concatenate([v for _, v in blocks])


class _CopyRecords(io.RawIOBase):
    """The receiving end of a binary ``COPY ... TO STDOUT``: whole rows become numpy blocks
    (``convert`` of the wire records) as the bytes arrive, about ``block_bytes`` at a time.

    Every row must hold the ``dtypes`` given, 8 bytes each and no NULL; anything else
    raises RuntimeError (PostgreSQL's binary COPY format: a 19-byte header and its
    extension area; per row a 16-bit field count and per field a 32-bit length; a 16-bit
    -1 at the end).
    """

    def __init__(self, dtypes: Sequence[tuple[str, str]], convert, block_bytes: int | None = None):
        self.wire = np.dtype([("count", ">i2")] + [
            item for name, code in dtypes for item in ((f"_l_{name}", ">i4"), (name, f">{code}"))
        ])
        self.names = [name for name, _ in dtypes]
        self.convert, self.block_bytes = convert, block_bytes or COPY_BLOCK_BYTES
        self.pending = bytearray()
        self.header_read = False
        self.blocks: list = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.pending += data
        if len(self.pending) >= self.block_bytes:
            self._rows(final=False)
        return len(data)

    def finish(self) -> list:
        self._rows(final=True)
        if bytes(self.pending) != b"\xff\xff":
            raise RuntimeError("the binary COPY's rows are not of the expected layout (a NULL or another type)")
        return self.blocks

    def _rows(self, *, final: bool) -> None:
        if not self.header_read:
            if len(self.pending) < 19:
                return
            header = 19 + struct.unpack(">i", self.pending[15:19])[0]
            if len(self.pending) < header:
                return
            del self.pending[:header]
            self.header_read = True
        available = len(self.pending) - (2 if final else 0)
        n = max(available, 0) // self.wire.itemsize
        if not n:
            return
        records = np.frombuffer(bytes(self.pending[:n * self.wire.itemsize]), dtype=self.wire)
        if np.any(records["count"] != len(self.names)) or any(
            np.any(records[f"_l_{name}"] != 8) for name in self.names
        ):
            raise RuntimeError("the binary COPY's rows are not of the expected layout (a NULL or another type)")
        del self.pending[:n * self.wire.itemsize]
        self.blocks.append(self.convert(records))


def _copy_blocks(select: str, sql: str, params: Sequence, dtypes: Sequence[tuple[str, str]], convert) -> list:
    """The blocks ``convert`` makes of ``COPY (select) TO STDOUT WITH (FORMAT binary)``, where
    ``{inner}`` in ``select`` stands for ``sql`` with its ``params``."""
    sink = _CopyRecords(dtypes, convert)
    with connection.cursor() as cursor:
        inner = cursor.cursor.mogrify(sql, params).decode()
        # replace, not format: the query's own text may hold braces
        cursor.cursor.copy_expert(f"COPY ({select.replace('{inner}', inner)}) TO STDOUT WITH (FORMAT binary)", sink)
    return sink.finish()


# numpy dtypes of the columns that temp_table_fill writes, and their PostgreSQL types.
_TEMP_TABLE_TYPES = {"f8": "double precision", "i8": "bigint", "i4": "integer", "i2": "smallint"}


def temp_table_fill(name: str, columns: Mapping[str, np.ndarray]) -> int:
    """(Re)create the session's temporary table ``name`` holding ``columns`` (PostgreSQL).

    One binary COPY, built with numpy: the rows never become Python objects. Columns are
    equal-length numeric arrays (float64, int64, int32, int16, their names the table's
    columns); NaN stays NaN, so the caller's ``INSERT ... SELECT`` turns it into NULL
    with ``NULLIF(column, 'NaN')``. Returns the number of rows.
    """
    quote = connection.ops.quote_name
    arrays = {column: np.asarray(values) for column, values in columns.items()}
    lengths = {array.shape for array in arrays.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(f"columns must be equal-length 1-d arrays, got { {c: a.shape for c, a in arrays.items()} }")
    types = {}
    for column, array in arrays.items():
        code = f"{array.dtype.kind}{array.dtype.itemsize}"
        if code not in _TEMP_TABLE_TYPES:
            raise ValueError(f"column {column} has dtype {array.dtype}; expected float64, int64, int32 or int16")
        types[column] = code
    n = next(iter(lengths))[0]
    layout = [("count", ">i2")] + [
        item for i, column in enumerate(arrays) for item in ((f"l{i}", ">i4"), (f"v{i}", f">{types[column]}"))
    ]
    records = np.empty(n, dtype=np.dtype(layout))
    records["count"] = len(arrays)
    for i, array in enumerate(arrays.values()):
        records[f"l{i}"] = array.dtype.itemsize
        records[f"v{i}"] = array
    payload = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0) + records.tobytes() + struct.pack(">h", -1)
    definition = ", ".join(f"{quote(column)} {_TEMP_TABLE_TYPES[types[column]]}" for column in arrays)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {quote(name)}")
        cursor.execute(f"CREATE TEMP TABLE {quote(name)} ({definition})")
        cursor.cursor.copy_expert(f"COPY {quote(name)} FROM STDIN WITH (FORMAT binary)", io.BytesIO(payload))
    return n


# The largest bigint: the upper bound of a last key range left open.
LARGEST_BIGINT = 2**63 - 1


def key_range_bounds(keys_sql: str, params: Sequence, chunk_size: int, *, last_open: bool = False,
                     weighted: bool = False) -> list[tuple]:
    """Cut a set of keys into ranges of ``chunk_size`` keys, counted in PostgreSQL.

    ``keys_sql`` selects one column, ``key`` (bigint, distinct, never NULL). Returns
    ``(low, high, n)`` per range, in key order: the range holds the keys with
    ``low < key <= high``, ``n`` of them when this was read; the first ``low`` is 0 (keys
    are positive ids). With ``last_open`` the last range reaches the largest bigint, so
    keys added meanwhile fall in it. With ``weighted``, ``keys_sql`` also selects
    ``weight`` (a positive bigint per key, e.g. the rows a key stands for) and a range
    holds keys of about ``chunk_size`` weight instead: a key joins the range in which its
    first unit of weight falls, so a range weighs within the largest key's weight of
    ``chunk_size`` (the last one less), and a key never spans two. Only the bounds leave the database (one row per range), so memory does
    not grow with the number of keys; the ranges can be read in any order and at once.
    Raises ValueError for a ``chunk_size`` below 1.
    """
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if weighted:
        ends = query_numeric_records(
            "SELECT max(key)::bigint AS key, count(*)::bigint AS n FROM (SELECT key, "
            "((sum(weight) OVER (ORDER BY key))::bigint - weight) / %s AS part "
            f"FROM ({keys_sql}) AS k) AS x GROUP BY part ORDER BY part",
            [int(chunk_size), *params], [("key", "i8"), ("n", "i8")])
        counts = ends["n"].tolist()
    else:
        ends = query_numeric_records(
            "SELECT key, n FROM (SELECT key, row_number() OVER (ORDER BY key) AS n, count(*) OVER () AS total "
            f"FROM ({keys_sql}) AS k) AS x WHERE n %% %s = 0 OR n = total",
            [*params, int(chunk_size)], [("key", "i8"), ("n", "i8")])
        counts = np.diff(ends["n"], prepend=0).tolist()
    bounds, low = [], 0
    for i, (high, n) in enumerate(zip(ends["key"].tolist(), counts, strict=True)):
        bounds.append((low, LARGEST_BIGINT if last_open and i == ends.size - 1 else high, n))
        low = high
    return bounds


def query_numeric_records(sql: str, params: Sequence, dtypes: Sequence[tuple[str, str]]) -> np.ndarray:
    """The rows of a PostgreSQL ``SELECT`` as a numpy record array, through one binary COPY
    parsed block by block as it arrives.

    ``dtypes`` names each selected column and its type, ``"i8"`` (bigint) or ``"f8"``
    (double precision), in the order selected; the query must give exactly those types
    and no NULL (``COALESCE`` them: NaN for floats, a value the caller knows for ids).
    Returns (n,) records with those fields in native byte order. Raises RuntimeError where
    a row is of another layout.
    """
    native = np.dtype([(name, f"={code}") for name, code in dtypes])

    def records_native(records: np.ndarray) -> np.ndarray:
        out = np.empty(records.size, dtype=native)
        for name, _ in dtypes:
            out[name] = records[name]
        return out

    blocks = _copy_blocks("{inner}", sql, params, dtypes, records_native)
    return np.concatenate(blocks) if blocks else np.empty(0, dtype=native)
