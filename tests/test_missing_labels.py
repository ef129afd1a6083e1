"""A label without a value is NULL: never matched by a range filter, never counted in a mean.

Hot stars (Teff above ``abundance_teff_max``) have no abundances in a release: NULL in the
database, null in JSON, an empty CSV cell, and no part of any statistic.
"""

import csv
import importlib

import numpy as np
import pytest
from django.apps import apps
from django.db.models import Avg, Count
from django.test import Client
from rest_framework.test import APIClient

from core.flags import CATALOG_FLAGS
from core.labels import ABUNDANCE_FIELDS, LABEL_ERROR_FIELDS, LABEL_FIELDS, LABELS
from inference.models import CatalogEntry, LabelSet, ReferenceCatalog, ReferenceLabel
from inference.plots import kiel_cells

from .conftest import label_rows, make_spectra

pytestmark = pytest.mark.django_db

COOL_TEFF = [4600.0, 4800.0, 5000.0, 5200.0]
HOT_TEFF = [6700.0, 7200.0, 7600.0]
COOL_C_H = [-0.5, -0.1, 0.1, 0.3]  # mean -0.05


@pytest.fixture
def release(release_factory):
    teff = COOL_TEFF + HOT_TEFF
    spectra = make_spectra([(10.0 + i, 5.0) for i in range(len(teff))])
    values = label_rows(teff)
    values[:4, LABEL_FIELDS.index("c_h")] = COOL_C_H
    return release_factory(spectra, values, values.copy(), name="hot")


def _entries(release, **params):
    response = APIClient().get(f"/api/v1/releases/{release.name}/entries/", params)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_hot_abundances_are_null_in_the_database_and_json(release):
    hot = CatalogEntry.objects.filter(release=release, teff__gt=6500)
    assert hot.count() == 3
    assert all(CATALOG_FLAGS.names(bits) == ["HOT_STAR_NO_ABUNDANCES"] for bits in hot.values_list("flag_bits", flat=True))
    for field in ABUNDANCE_FIELDS:
        assert hot.filter(**{f"{field}__isnull": True, f"{field}_err__isnull": True}).count() == 3, field
    assert not CatalogEntry.objects.filter(release=release, teff__lt=6500, fe_h__isnull=True).exists()
    rows = _entries(release, teff_min=6500)
    assert len(rows) == 3
    for row in rows:
        assert [row[field] for field in ABUNDANCE_FIELDS] == [None] * 13
        assert [row[f"{field}_err"] for field in ABUNDANCE_FIELDS] == [None] * 13
        assert row["logg"] == 2.5 and row["flag"] == 1
    assert all(value != -9999 for row in _entries(release) for value in row.values())


@pytest.mark.parametrize("field", ABUNDANCE_FIELDS)
def test_range_filters_never_match_a_missing_abundance(release, field):
    assert _entries(release, **{f"{field}_max": -3}) == []
    at_least = _entries(release, **{f"{field}_min": -10})
    assert sorted(row["teff"] for row in at_least) == COOL_TEFF


def test_export_filtered_on_an_abundance_has_no_hot_rows(release):
    response = Client().get(f"/api/v1/releases/{release.name}/export.csv", {"fe_h_max": -3})
    text = b"".join(response.streaming_content).decode()
    rows = list(csv.reader(line for line in text.splitlines() if not line.startswith("#")))
    assert rows[1:] == []
    response = Client().get(f"/api/v1/releases/{release.name}/export.csv", {"teff_min": 7000})
    text = b"".join(response.streaming_content).decode()
    header, *rows = list(csv.reader(line for line in text.splitlines() if not line.startswith("#")))
    assert len(rows) == 2
    for row in rows:
        assert [row[header.index(label.field)] for label in LABELS if label.is_abundance] == [""] * 13


def test_means_over_a_release_count_only_rows_with_a_value(release):
    entries = CatalogEntry.objects.filter(release=release)
    summary = entries.aggregate(mean=Avg("c_h"), n=Count("c_h"), mean_teff=Avg("teff"))
    assert summary["mean"] == pytest.approx(np.mean(COOL_C_H))  # -0.05, not near -4285
    assert summary["n"] == 4
    assert summary["mean_teff"] == pytest.approx(np.mean(COOL_TEFF + HOT_TEFF))  # Teff is still published
    by_label = entries.aggregate(**{field: Avg(field) for field in ABUNDANCE_FIELDS})
    assert all(-1 < value < 1 for value in by_label.values()), by_label


def test_kiel_cells_leave_out_rows_without_feh():
    rows = np.array([[5000.0, 2.5, -0.2], [5001.0, 2.5, -0.4], [5002.0, 2.5, np.nan], [7000.0, 4.0, np.nan]])
    mean, without, teff_edges, logg_edges = kiel_cells(rows)
    cool = (np.searchsorted(teff_edges, 5000.0, side="right") - 1, np.searchsorted(logg_edges, 2.5, side="right") - 1)
    hot = (np.searchsorted(teff_edges, 7000.0, side="right") - 1, np.searchsorted(logg_edges, 4.0, side="right") - 1)
    assert mean[cool] == pytest.approx(-0.3)
    assert np.isnan(mean[hot]) and without[hot] and not without[cool]
    assert np.count_nonzero(np.isfinite(mean)) == 1 and np.count_nonzero(without) == 1


def test_kiel_diagram_draws_a_release_with_hot_stars(release):
    response = APIClient().get(f"/api/v1/releases/{release.name}/kiel.png")
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")


def test_migration_turns_old_sentinels_into_null(release):
    migration = importlib.import_module("inference.migrations.0003_label_sentinels_to_null")
    hot = CatalogEntry.objects.filter(release=release, teff__gt=6500)
    hot.update(**{field: -9999.0 for field in ABUNDANCE_FIELDS})  # as releases built before were stored
    CatalogEntry.objects.filter(release=release, teff=4600.0).update(c_h=-9999.99, c_h_err=-9999.0)
    label_set = LabelSet.objects.filter(model_version=release.formal_model, spectrum__catalog_entries__teff=4800.0).get()
    LabelSet.objects.filter(pk=label_set.pk).update(o_h=-9999.0)
    catalog = ReferenceCatalog.objects.create(name="ref", source_path="/r.csv", source_sha256="0" * 64, column_mapping={})
    reference = ReferenceLabel.objects.create(
        catalog=catalog, source_id="1", ra=1.0, dec=1.0, quality_ok=True, teff=5000.0, fe_h=-9999.0, mg_h=0.1
    )
    assert CatalogEntry.objects.filter(release=release).aggregate(mean=Avg("c_h"))["mean"] < -1000

    migration.sentinels_to_null(apps, None)

    entries = CatalogEntry.objects.filter(release=release)
    for field in (*LABEL_FIELDS, *LABEL_ERROR_FIELDS):
        assert not entries.filter(**{f"{field}__lte": -9990}).exists(), field
    assert hot.filter(fe_h__isnull=True, cu_h__isnull=True).count() == 3
    cool = entries.get(teff=4600.0)
    assert cool.c_h is None and cool.c_h_err is None and cool.fe_h == -0.2  # other columns kept
    assert entries.aggregate(mean=Avg("c_h"))["mean"] == pytest.approx(np.mean(COOL_C_H[1:]))
    label_set.refresh_from_db()
    assert label_set.o_h is None and label_set.teff == 4800.0 and label_set.fe_h == -0.2
    reference.refresh_from_db()
    assert reference.fe_h is None and reference.mg_h == 0.1 and reference.teff == 5000.0
