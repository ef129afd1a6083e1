"""Store the rows of an imported reference catalog, writing only what changed.

Used for training labels (``ReferenceLabel``, keyed on catalog and source id) and
validation surveys (``ReferenceStar``, keyed on survey and source id): new and changed
rows are upserted, rows no longer in the file are deleted, unchanged rows are left alone
(a re-import of the same file writes nothing).
"""

import math
from collections.abc import Sequence

import numpy as np
from django.db import transaction

from core.bulk import bulk_upsert, table_analyze


def _python(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _column_values(values: Sequence | np.ndarray) -> list:
    if isinstance(values, np.ndarray):
        return [_python(v) for v in values.tolist()]
    return [_python(v) for v in values]


def reference_rows_store(*, model, parent_field: str, parent_id: int, columns: dict) -> dict[str, int]:
    """Upsert the new and changed rows of one catalog, delete the rows it no longer has, and
    refresh the table's planner statistics when any row changed.

    Parameters
    ----------
    model : the row model (unique on ``parent_field`` and ``source_id``)
    parent_field : attname of the catalog foreign key (``"catalog_id"``, ``"survey_id"``)
    parent_id : the catalog's primary key
    columns : field attname -> (n,) values; must include ``source_id``; NaN is NULL

    Returns
    -------
    dict
        ``written`` (new or changed rows), ``unchanged``, ``deleted``.
    """
    names = [name for name in columns if name != "source_id"]
    source_ids = list(columns["source_id"])
    incoming = list(zip(*(_column_values(columns[name]) for name in names), strict=True)) if names else []
    existing = {row[0]: tuple(row[1:]) for row in model.objects.filter(**{parent_field: parent_id})
                .values_list("source_id", *names).iterator(chunk_size=20_000)}
    changed = np.array([existing.get(sid) != values for sid, values in zip(source_ids, incoming, strict=True)],
                       dtype=bool)
    chosen = np.flatnonzero(changed)
    with transaction.atomic():
        if chosen.size:
            subset = {name: (values[chosen] if isinstance(values, np.ndarray) else [values[i] for i in chosen])
                      for name, values in columns.items()}
            subset[parent_field] = np.full(chosen.size, parent_id, dtype=np.int64)
            bulk_upsert(model, subset, unique_fields=[parent_field, "source_id"])
        gone = set(existing) - set(source_ids)
        deleted = 0
        if gone:
            gone_list = sorted(gone)
            for start in range(0, len(gone_list), 50_000):
                deleted += model.objects.filter(**{parent_field: parent_id},
                                                source_id__in=gone_list[start : start + 50_000]).delete()[0]
    if chosen.size or deleted:
        # Fresh statistics, or the planner guesses a few rows for a new catalog's and loops
        # (the training set's and the validation's joins read them next).
        table_analyze(model)
    return {"written": int(chosen.size), "unchanged": int(len(source_ids) - chosen.size), "deleted": deleted}
