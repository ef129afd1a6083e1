"""Bulk upserts keyed on a unique constraint, so every step can be re-run safely.

On PostgreSQL rows are streamed with COPY into a temporary table and merged with
``INSERT ... ON CONFLICT DO UPDATE``: an order of magnitude faster than multi-row INSERTs
for the label and catalog tables. Other databases (the SQLite embedded default) use
Django's ``bulk_create(update_conflicts=True)``, which has the same semantics.
"""

import csv
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from django.db import connection, models, transaction

# Rows sent per COPY / bulk_create round trip; bounds memory on very large writes.
UPSERT_BATCH_ROWS = 20_000


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
    columns. Returns the number of rows written.
    """
    names = list(columns)
    lengths = {len(columns[name]) for name in names}
    if len(lengths) != 1:
        raise ValueError(f"columns of unequal length: { {n: len(columns[n]) for n in names} }")
    (total,) = lengths
    missing = set(unique_fields) - set(names)
    if missing:
        raise ValueError(f"unique fields {sorted(missing)} are not among the columns")
    use_copy = connection.vendor == "postgresql"
    null = COPY_NULL if use_copy else None
    python_columns = {name: _as_python_column(columns[name], null) for name in names}
    update_fields = [name for name in names if name not in unique_fields]
    with transaction.atomic():
        for start in range(0, total, batch_rows):
            stop = min(start + batch_rows, total)
            batch = {name: python_columns[name][start:stop] for name in names}
            if use_copy:
                _copy_upsert(model, batch, unique_fields, update_fields)
            else:
                _orm_upsert(model, batch, unique_fields, update_fields)
    return total


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


def _copy_upsert(model, batch, unique_fields, update_fields) -> None:
    table = connection.ops.quote_name(model._meta.db_table)
    names = list(batch)
    column_sql = ", ".join(connection.ops.quote_name(name) for name in names)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(zip(*(batch[n] for n in names), strict=True))
    buffer.seek(0)
    if update_fields:
        assignments = ", ".join(
            f"{connection.ops.quote_name(n)} = EXCLUDED.{connection.ops.quote_name(n)}" for n in update_fields
        )
        conflict = f"DO UPDATE SET {assignments}"
    else:
        conflict = "DO NOTHING"
    conflict_target = ", ".join(connection.ops.quote_name(n) for n in unique_fields)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE _bulk_upsert AS SELECT {column_sql} FROM {table} WITH NO DATA")
        cursor.cursor.copy_expert(
            f"COPY _bulk_upsert ({column_sql}) FROM STDIN WITH (FORMAT csv, NULL '{COPY_NULL}')", buffer
        )
        cursor.execute(
            f"INSERT INTO {table} ({column_sql}) SELECT {column_sql} FROM _bulk_upsert "
            f"ON CONFLICT ({conflict_target}) {conflict}"
        )
        cursor.execute("DROP TABLE _bulk_upsert")
