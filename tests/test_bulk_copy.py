"""Numeric rows read through a binary COPY, block by block (core.bulk)."""

import numpy as np
import pytest

import core.bulk
from core.bulk import key_range_bounds, keyed_numeric_columns, query_numeric_records
from spectra.models import Star

pytestmark = pytest.mark.django_db


@pytest.fixture
def stars():
    rng = np.random.default_rng(3)
    Star.objects.bulk_create([
        Star(designation=f"J{i:06d}{{'{i}'}}", gaia_source_id=2**60 + i,
             ra=float(rng.uniform(0, 360)), dec=float(rng.uniform(-10, 60)))
        for i in range(257)
    ])
    return Star.objects.filter(designation__contains="{'").order_by("id")


@pytest.mark.parametrize("block_bytes", [1, 100, 1 << 22])
def test_rows_split_across_blocks_read_as_the_orm_reads_them(stars, monkeypatch, block_bytes):
    monkeypatch.setattr(core.bulk, "COPY_BLOCK_BYTES", block_bytes)  # a row cut at every place
    expected = list(stars.values_list("gaia_source_id", "ra", "dec"))
    keys, values = keyed_numeric_columns(stars, "gaia_source_id", ["ra", "dec"])  # braces in the query's text
    assert keys.dtype == np.int64 and keys.tolist() == [row[0] for row in expected]
    assert values.tolist() == [[row[1], row[2]] for row in expected]
    records = query_numeric_records(
        "SELECT gaia_source_id, ra FROM spectra_star WHERE designation LIKE %s ORDER BY id", ["%{'%"],
        [("gaia_source_id", "i8"), ("ra", "f8")])
    assert records["gaia_source_id"].tolist() == keys.tolist() and records["ra"].tolist() == values[:, 0].tolist()


def test_an_empty_result_and_a_null_in_the_rows(stars):
    keys, values = keyed_numeric_columns(stars.filter(pk=-1), "id", ["ra", "dec"])
    assert keys.shape == (0,) and values.shape == (0, 2)
    assert query_numeric_records("SELECT id FROM spectra_star WHERE id < 0", [], [("id", "i8")]).shape == (0,)
    Star.objects.filter(pk=stars.first().pk).update(gaia_source_id=None)
    with pytest.raises(RuntimeError, match="not of the expected layout"):
        query_numeric_records("SELECT gaia_source_id FROM spectra_star ORDER BY id", [], [("gaia_source_id", "i8")])


def test_key_ranges_by_count_and_by_weight(stars):
    ids = list(stars.values_list("id", flat=True))
    keys_sql = "SELECT id::bigint AS key FROM spectra_star WHERE designation LIKE %s"
    by_count = key_range_bounds(keys_sql, ["%{'%"], 100)
    assert [n for _, _, n in by_count] == [100, 100, 57]
    assert by_count[0][0] == 0 and by_count[-1][1] == ids[-1]
    assert [low for low, _, _ in by_count[1:]] == [high for _, high, _ in by_count[:-1]]  # ranges touch
    # Weighted: star i weighs 1 + (i % 7) x 10 (rows it stands for); ranges of about 300.
    weights = {key: 1 + (i % 7) * 10 for i, key in enumerate(ids)}
    weighted_sql = ("SELECT id::bigint AS key, (1 + ((row_number() OVER (ORDER BY id) - 1) %% 7) * 10)::bigint "
                    "AS weight FROM spectra_star WHERE designation LIKE %s")
    bounds = key_range_bounds(weighted_sql, ["%{'%"], 300, weighted=True)
    assert sum(n for _, _, n in bounds) == len(ids)
    for low, high, n in bounds:
        members = [key for key in ids if low < key <= high]
        assert len(members) == n
        # Each range weighs within the largest key's weight (61) of the size; the last less.
        assert sum(weights[key] for key in members) < 300 + 61
    assert all(sum(weights[key] for key in ids if low < key <= high) > 300 - 61 for low, high, _ in bounds[:-1])
    assert len(bounds) == -(-sum(weights.values()) // 300)
    assert key_range_bounds(weighted_sql, ["none"], 300, weighted=True) == []
    with pytest.raises(ValueError, match="at least 1"):
        key_range_bounds(weighted_sql, ["%{'%"], -300, weighted=True)


@pytest.mark.django_db(transaction=True)
def test_vacuum_marks_inserted_pages_all_visible_and_is_left_to_autovacuum_inside_a_transaction():
    """After a bulk insert, an index-only scan reads no row once the table is vacuumed
    (core.bulk.tables_vacuum); inside a transaction VACUUM cannot run and is not tried."""
    from django.db import connection, transaction

    from core.bulk import tables_vacuum

    Star.objects.bulk_create([Star(designation=f"V{i}", ra=1.0, dec=float(i) / 100) for i in range(2000)])

    def heap_fetches() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) SELECT dec, ra FROM spectra_star WHERE dec >= 0")
            plan = cursor.fetchone()[0][0]["Plan"]
            cursor.execute("RESET enable_seqscan; RESET enable_bitmapscan")
        assert plan["Node Type"] == "Index Only Scan", plan["Node Type"]
        return plan["Heap Fetches"]

    assert heap_fetches() >= 2000
    with transaction.atomic():
        assert tables_vacuum(Star) is False
    transaction.set_autocommit(False)
    try:
        assert tables_vacuum(Star) is False  # a transaction open outside atomic()
    finally:
        transaction.rollback()
        transaction.set_autocommit(True)
    assert tables_vacuum(Star) is True
    assert heap_fetches() == 0
