"""Numeric rows read through a binary COPY, block by block (core.bulk)."""

import numpy as np
import pytest

import core.bulk
from core.bulk import keyed_numeric_columns, query_numeric_records
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
