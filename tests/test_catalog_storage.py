import time

import numpy as np
import pytest
from django.db import IntegrityError, OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext

from core.flags import CATALOG_FLAGS
from inference.models import CatalogEntry, CatalogStar, LabelSet, ModelVersion
from inference.services.prediction import labelsets_upsert
from inference.services.release import (
    ReleaseImmutableError,
    catalog_entries_curate,
    catalog_release_build,
    catalog_release_create,
    catalog_release_publish,
)
from spectra.models import CurationRecord, Spectrum

from .conftest import label_rows, make_model, make_spectra

pytestmark = pytest.mark.django_db


def test_labelset_upsert_never_duplicates_and_stores_nan_as_null():
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0), (12.0, 12.0)])
    model = make_model(ModelVersion.Role.FORMAL)
    ids = np.array([s.pk for s in spectra])
    values = label_rows([4800.0, 4900.0, 5000.0])
    values[1, 5] = np.nan
    labelsets_upsert(model_version=model, spectrum_ids=ids, values=values, errors=np.full_like(values, 0.1))
    values[:, 0] += 10.0
    labelsets_upsert(model_version=model, spectrum_ids=ids, values=values, errors=np.full_like(values, 0.1))
    rows = LabelSet.objects.filter(model_version=model).order_by("spectrum_id")
    assert rows.count() == 3
    assert [r.teff for r in rows] == [4810.0, 4910.0, 5010.0]
    assert rows[1].o_h is None and rows[0].o_h == pytest.approx(-0.2)


def test_a_build_refreshes_the_planner_statistics_of_label_sets_written_since_they_were_taken(release_factory):
    import json

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner statistics")
    n = 400
    spectra = make_spectra([(10.0 + 0.01 * i, 10.0) for i in range(n)])
    values = label_rows([5000.0] * n)
    release_factory(spectra, values, values, name="old", publish=False)  # (its build takes the statistics)
    # A new pair of models predicts the same spectra: the statistics have never seen their label sets.
    formal, alternate = make_model(ModelVersion.Role.FORMAL, "new-formal"), make_model(ModelVersion.Role.ALTERNATE, "new-alt")
    ids = np.array([s.pk for s in spectra])
    for model in (formal, alternate):
        labelsets_upsert(model_version=model, spectrum_ids=ids, values=values, errors=np.full_like(values, 0.05))

    def estimate() -> float:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (FORMAT JSON) SELECT id FROM inference_labelset WHERE model_version_id = %s",
                           [formal.pk])
            plan = cursor.fetchone()[0]
        return (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]["Plan Rows"]

    assert estimate() < n / 10  # what made the build join every pair of label sets (README, "Release build")
    release = catalog_release_create(name="new", formal_model=formal, alternate_model=alternate)
    assert catalog_release_build(release=release) == n
    assert estimate() > n / 2


def test_labelset_upsert_rejects_wrong_shapes():
    spectra = make_spectra([(10.0, 10.0)])
    with pytest.raises(ValueError, match="must be"):
        labelsets_upsert(
            model_version=make_model(ModelVersion.Role.FORMAL), spectrum_ids=np.array([spectra[0].pk]),
            values=np.zeros((1, 3)), errors=np.zeros((1, 3)),
        )


def test_release_build_copies_identity_and_keeps_spectra_without_alternate(release_factory):
    spectra = make_spectra([(10.0, 10.0), (20.0, 20.0)])
    formal = label_rows([5000.0, 5000.0])
    alternate = label_rows([5050.0, 5050.0])
    release = release_factory(spectra[:1], formal[:1], alternate[:1], publish=False)
    labelsets_upsert(
        model_version=release.formal_model, spectrum_ids=np.array([spectra[1].pk]),
        values=formal[1:], errors=np.full((1, 15), 0.1),
    )
    written = catalog_release_build(release=release)
    assert written == 2
    entries = {e.spectrum_id: e for e in CatalogEntry.objects.filter(release=release)}
    good, lonely = entries[spectra[0].pk], entries[spectra[1].pk]
    assert (good.flag, good.designation, good.ra, good.snr_red) == (1, spectra[0].star.designation, 10.0, 100.0)
    assert lonely.flag == 0 and lonely.alternate_labels_id is None
    assert "MODELS_DISAGREE_TEFF" in CATALOG_FLAGS.names(lonely.flag_bits)
    catalog_release_build(release=release)  # re-running rewrites, never duplicates
    assert CatalogEntry.objects.filter(release=release).count() == 2
    # A spectrum preprocessed again since it was predicted: its labels were read from arrays
    # it no longer has, and leave the release (both builds: PostgreSQL's and the ORM's reads).
    from inference.selectors import release_build_chunks

    Spectrum.objects.filter(pk=spectra[1].pk).update(preprocessing_version="1.2")
    assert catalog_release_build(release=release) == 1
    assert list(CatalogEntry.objects.filter(release=release).values_list("spectrum_id", flat=True)) == [spectra[0].pk]
    assert [c.spectrum_ids.tolist() for c in release_build_chunks(release=release, chunk_size=10)] == [[spectra[0].pk]]
    # The ORM's build (SQLite) drops the entry too, as the swap does here.
    from core.rules import CatalogRules
    from inference.services.release import _entries_build_orm

    Spectrum.objects.filter(pk=spectra[1].pk).update(preprocessing_version="test")
    catalog_release_build(release=release)
    assert CatalogEntry.objects.filter(release=release).count() == 2
    Spectrum.objects.filter(pk=spectra[1].pk).update(preprocessing_version="1.2")
    assert _entries_build_orm(release, CatalogRules(), np.zeros(0, dtype=np.int64), 10, None) == 1
    assert list(CatalogEntry.objects.filter(release=release).values_list("spectrum_id", flat=True)) == [spectra[0].pk]


def _partition_rows(release, model=CatalogEntry) -> list[tuple[int, int]]:
    from inference.partitions import partition_name

    key = "spectrum_id" if model is CatalogEntry else "star_id"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {key} FROM ONLY {partition_name(model, release.pk)} ORDER BY id")
        return cursor.fetchall()


def _index_count(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", [table])
        return cursor.fetchone()[0]


def test_a_release_build_swaps_in_a_partition_of_its_own_and_keeps_row_ids(release_factory):
    from inference.partitions import partition_name, partitioned

    if not partitioned(CatalogEntry):
        pytest.skip("the entry table is partitioned on PostgreSQL only")
    spectra = make_spectra([(10.0, 10.0), (20.0, 20.0), (30.0, 30.0)])
    values = label_rows([5000.0, 5100.0, 5200.0])
    other = release_factory(spectra, values, values, name="other")
    release = release_factory(spectra[:2], values[:2], values[:2], publish=False)
    first, first_stars = _partition_rows(release), _partition_rows(release, CatalogStar)
    assert [spectrum for _, spectrum in first] == [spectra[0].pk, spectra[1].pk]  # ids in spectrum order
    assert [star for _, star in first_stars] == [spectra[0].star_id, spectra[1].star_id]
    # Every index of the tables, and the same ones on the other release's partitions.
    for model, count in ((CatalogEntry, 10), (CatalogStar, 8)):
        assert _index_count(partition_name(model, release.pk)) == _index_count(model._meta.db_table) == count
        assert _index_count(partition_name(model, other.pk)) == count
    other_rows, other_stars = _partition_rows(other), _partition_rows(other, CatalogStar)

    # A newly predicted spectrum: the rebuild keeps the ids of the entries it keeps, in spectrum order.
    labelsets_upsert(model_version=release.formal_model, spectrum_ids=np.array([spectra[2].pk]),
                     values=values[2:], errors=np.full((1, 15), 0.1))
    assert catalog_release_build(release=release) == 3
    second = _partition_rows(release)
    assert second[:2] == first and second[2][1] == spectra[2].pk and second[2][0] > first[1][0]
    stars = _partition_rows(release, CatalogStar)
    assert stars[:2] == first_stars and stars[2][1] == spectra[2].star_id
    assert CatalogEntry.objects.filter(release=release).count() == 3
    assert CatalogStar.objects.filter(release=release).count() == 3
    # another release's rows are never touched
    assert (_partition_rows(other), _partition_rows(other, CatalogStar)) == (other_rows, other_stars)
    pk = release.pk
    with connection.cursor() as cursor:
        for model in (CatalogEntry, CatalogStar):
            cursor.execute("SELECT count(*) FROM pg_class WHERE relname LIKE %s", [partition_name(model, pk) + "%"])
            assert cursor.fetchone()[0] == 1  # no table of the build left behind
        release.delete()
        for model in (CatalogEntry, CatalogStar):
            cursor.execute("SELECT to_regclass(%s)", [partition_name(model, pk)])
            assert cursor.fetchone()[0] is None  # the partitions went with the release
    assert CatalogEntry.objects.filter(release=other).count() == 3


def test_a_build_in_small_chunks_writes_what_one_chunk_writes(release_factory):
    from inference.services.release import catalog_stars_build

    spectra = make_spectra([(10.0 + i, 10.0) for i in range(7)])
    values = label_rows([4800.0 + 50 * i for i in range(7)])
    release = release_factory(spectra[:5], values[:5], values[:5] + 10.0, publish=False)
    labelsets_upsert(  # two spectra of the formal model alone, in the middle of the id range
        model_version=release.formal_model, spectrum_ids=np.array([spectra[5].pk, spectra[6].pk]),
        values=values[5:], errors=np.full((2, 15), 0.1))
    columns = ["spectrum_id", "formal_labels_id", "alternate_labels_id", "designation", "flag", "flag_bits", "teff"]

    def state():
        entries = list(CatalogEntry.objects.filter(release=release).order_by("spectrum_id").values_list(*columns))
        stars = list(CatalogStar.objects.filter(release=release).order_by("star_id")
                     .values_list("star_id", "n_spectra", "best_spectrum_id", "best_medres_specid", "teff"))
        return entries, stars

    catalog_release_build(release=release)
    whole = state()
    assert len(whole[0]) == 7 and sum(1 for row in whole[0] if row[2] is None) == 2
    catalog_release_build(release=release, chunk_size=2)  # 4 chunks: each bounds its joins to its own ids
    catalog_stars_build(release=release, chunk_stars=2, chunk_rows=2)
    assert state() == whole
    # Stars of several spectra, cut by rows (a star's entries and its own row): ranges of
    # one to three stars, a star never split between two.
    Spectrum.objects.filter(pk__in=[spectra[1].pk, spectra[2].pk]).update(star_id=spectra[0].star_id)
    Spectrum.objects.filter(pk=spectra[4].pk).update(star_id=spectra[3].star_id)
    catalog_release_build(release=release)
    whole = state()
    assert list(CatalogStar.objects.filter(release=release).order_by("star_id")
                .values_list("n_spectra_all", flat=True)) == [3, 2, 1, 1]
    for rows in (2, 4, 5, 9):
        catalog_stars_build(release=release, chunk_rows=rows)
        assert state() == whole, rows


@pytest.mark.django_db(transaction=True)  # the reader is another connection: the release must be committed
def test_a_rebuild_gives_way_to_a_long_reader_instead_of_queueing_every_reader(release_factory, monkeypatch):
    import psycopg2

    from inference import partitions

    if not partitions.partitioned(CatalogEntry):
        pytest.skip("the entry table is partitioned on PostgreSQL only")
    monkeypatch.setattr(partitions, "SWAP_LOCK_TIMEOUT_MS", 200)
    monkeypatch.setattr(partitions, "SWAP_ATTEMPTS", 2)
    monkeypatch.setattr(partitions, "SWAP_RETRY_PAUSE_S", 0.05)
    spectra = make_spectra([(10.0, 10.0), (20.0, 20.0)])
    values = label_rows([5000.0, 5100.0])
    release = release_factory(spectra, values, values, publish=False)
    before = _partition_rows(release)
    settings = connection.settings_dict
    reader = psycopg2.connect(dbname=settings["NAME"], user=settings["USER"], password=settings["PASSWORD"],
                              host=settings["HOST"] or None, port=settings["PORT"] or None)
    try:
        # A long download reading the entry table, or a reader of the spectra (dropping the old
        # partition drops its key's triggers on the tables it references): the build gives
        # way after its attempts, and its cleanup does not wait either.
        for table in ("inference_catalogentry", "spectra_spectrum"):
            with reader.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {table} IN ACCESS SHARE MODE")
            start = time.perf_counter()
            with pytest.raises(OperationalError, match="lock timeout"):
                catalog_release_build(release=release)
            assert time.perf_counter() - start < 30
            assert _partition_rows(release) == before
            reader.rollback()
    finally:
        reader.close()
    assert catalog_release_build(release=release) == 2  # once the reader is gone
    assert _partition_rows(release) == before
    # Deleting the release drops its partitions: with a long reader of the entries, that gives way too.
    reader = psycopg2.connect(dbname=settings["NAME"], user=settings["USER"], password=settings["PASSWORD"],
                              host=settings["HOST"] or None, port=settings["PORT"] or None)
    try:
        with reader.cursor() as cursor:
            cursor.execute("LOCK TABLE inference_catalogentry IN ACCESS SHARE MODE")
        with pytest.raises(OperationalError, match="lock timeout"):
            release.delete()
    finally:
        reader.close()
    assert _partition_rows(release) == before  # the deletion was undone whole
    release.delete()
    assert not CatalogEntry.objects.exists()


@pytest.mark.django_db(transaction=True)  # built outside a transaction: its build lock is released when it ends
def test_a_curation_waits_for_a_build_of_its_release_before_touching_rows(release_factory, curator):
    import psycopg2

    from inference import partitions

    if connection.vendor != "postgresql":
        pytest.skip("builds take a PostgreSQL advisory lock")
    spectra = make_spectra([(10.0, 10.0)])
    release = release_factory(spectra, label_rows([5000.0]), label_rows([5000.0]), publish=False)
    entry = CatalogEntry.objects.get(release=release)
    settings = connection.settings_dict
    builder = psycopg2.connect(dbname=settings["NAME"], user=settings["USER"], password=settings["PASSWORD"],
                               host=settings["HOST"] or None, port=settings["PORT"] or None)
    try:
        with builder.cursor() as cursor:  # a build of the release holds its lock
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [partitions._BUILD_LOCK_SPACE, release.pk])
        with CaptureQueriesContext(connection) as queries, pytest.raises(OperationalError, match="lock timeout"), \
                transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = 300")
            catalog_entries_curate(user=curator, ids=[entry.pk], flagged=True, reason="during a build")
    finally:
        builder.close()
    # It waited before locking any row: the build's swap and a row lock taken first would
    # wait for each other.
    assert not any("FOR UPDATE" in query["sql"] or "UPDATE " in query["sql"] for query in queries.captured_queries)
    entry.refresh_from_db()
    assert entry.flag == 1 and CurationRecord.objects.count() == 0  # nothing was touched
    assert catalog_entries_curate(user=curator, ids=[entry.pk], flagged=True, reason="after the build") == 1


@pytest.mark.django_db(transaction=True)  # the builder is another connection: the release must be committed
def test_a_release_being_built_is_not_deleted_and_a_build_after_its_deletion_says_so(release_factory, curator):
    import threading

    import psycopg2
    from django.contrib.messages import get_messages
    from django.test import Client

    from inference import partitions
    from inference.models import CatalogRelease
    from inference.partitions import ReleaseBusyError

    if connection.vendor != "postgresql":
        pytest.skip("builds take a PostgreSQL advisory lock")
    *spectra, last = make_spectra([(10.0, 10.0), (20.0, 20.0), (30.0, 30.0)])
    values = label_rows([5000.0, 5100.0])
    release = release_factory(spectra, values, values, publish=False)
    before = _partition_rows(release)
    settings = connection.settings_dict

    def other_connection():
        return psycopg2.connect(dbname=settings["NAME"], user=settings["USER"], password=settings["PASSWORD"],
                                host=settings["HOST"] or None, port=settings["PORT"] or None)

    builder = other_connection()
    client = Client()
    client.force_login(curator)
    try:
        with builder.cursor() as cursor:  # a build of the release holds its lock
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [partitions._BUILD_LOCK_SPACE, release.pk])
        with pytest.raises(ReleaseBusyError, match=f"release {release.name} is being built"):
            release.delete()
        # The admin's page and its bulk action say why, and delete nothing.
        response = client.post(f"/admin/inference/catalogrelease/{release.pk}/delete/", {"post": "yes"})
        assert response.status_code == 302 and response.url.endswith(f"/catalogrelease/{release.pk}/change/")
        assert any("is being built" in str(m) for m in get_messages(response.wsgi_request))
        response = client.post("/admin/inference/catalogrelease/", {
            "action": "delete_selected", "_selected_action": [str(release.pk)], "post": "yes"})
        assert response.status_code == 302
        assert any("is being built" in str(m) for m in get_messages(response.wsgi_request))
        assert CatalogRelease.objects.filter(pk=release.pk).exists() and _partition_rows(release) == before
    finally:
        builder.close()

    # A build asked for while the release is being deleted waits for the deletion, then says
    # the release is gone (not that a table of the build is missing); the star table's too.
    from inference.services.release import catalog_stars_build

    other = release_factory([last], label_rows([5000.0]), label_rows([5000.0]), name="other", publish=False)
    for doomed, builder, said in ((release, catalog_release_build, "was deleted before its build began"),
                                  (other, catalog_stars_build, "was deleted before its star table was built")):
        deleted, finish, errors = threading.Event(), threading.Event(), []

        def delete(doomed=doomed, deleted=deleted, finish=finish):
            try:
                with transaction.atomic():
                    CatalogRelease.objects.get(pk=doomed.pk).delete()
                    deleted.set()
                    finish.wait(30)  # (the deletion's transaction stays open meanwhile)
            finally:
                connection.close()

        def build(doomed=doomed, builder=builder, errors=errors):
            try:
                builder(release=doomed)
            except Exception as error:  # noqa: BLE001 (what the build says is the point)
                errors.append(error)
            finally:
                connection.close()

        deleting = threading.Thread(target=delete)
        deleting.start()
        assert deleted.wait(30)
        building = threading.Thread(target=build)
        building.start()
        time.sleep(0.5)
        assert building.is_alive()  # waiting for the deletion's transaction
        finish.set()
        deleting.join(30)
        building.join(30)
        assert len(errors) == 1 and isinstance(errors[0], CatalogRelease.DoesNotExist), errors
        assert f"release {doomed.name} {said}" in str(errors[0])
    assert not CatalogEntry.objects.exists() and not CatalogStar.objects.exists()


@pytest.mark.django_db(transaction=True)  # VACUUM runs outside a transaction only
def test_a_large_build_vacuums_its_own_partitions(release_factory, monkeypatch):
    from inference import partitions
    from inference.services import release as release_service

    if not partitions.partitioned(CatalogEntry):
        pytest.skip("the entry table is partitioned on PostgreSQL only")
    monkeypatch.setattr(release_service, "ANALYZE_AFTER_ROWS", 1)  # a build this small counts as large
    spectra = make_spectra([(10.0 + i, 10.0) for i in range(3)])
    values = label_rows([5000.0, 5100.0, 5200.0])
    release = release_factory(spectra, values, values, publish=False)
    with connection.cursor() as cursor:
        for model in (CatalogEntry, CatalogStar):
            # Its pages are all-visible (only VACUUM sets that), so index-only scans read no rows.
            cursor.execute("SELECT relallvisible FROM pg_class WHERE relname = %s",
                           [partitions.partition_name(model, release.pk)])
            assert cursor.fetchone()[0] > 0


def test_rows_the_orm_wrote_before_a_build_are_replaced_by_it():
    from inference.services.release import catalog_release_create

    spectra = make_spectra([(10.0, 10.0), (20.0, 20.0)])
    formal, alternate = make_model(ModelVersion.Role.FORMAL), make_model(ModelVersion.Role.ALTERNATE)
    values = label_rows([5000.0, 5100.0])
    for model in (formal, alternate):
        labelsets_upsert(model_version=model, spectrum_ids=np.array([s.pk for s in spectra]), values=values,
                         errors=np.full((2, 15), 0.1))
    release = catalog_release_create(name="orm", formal_model=formal, alternate_model=alternate)
    CatalogEntry.objects.create(  # before any build: on PostgreSQL, into the default partition
        release=release, spectrum=spectra[0], designation="stale", medres_specid="x", medid_blue="x", medid_red="x",
        ra=0.0, dec=0.0, flag=0, flag_bits=0)
    assert catalog_release_build(release=release) == 2
    entries = CatalogEntry.objects.filter(release=release).order_by("spectrum_id")
    assert [e.spectrum_id for e in entries] == [spectra[0].pk, spectra[1].pk]
    assert entries[0].designation == spectra[0].star.designation and entries[0].flag == 1


def test_a_build_whose_keys_do_not_hold_leaves_the_release_as_it_was(release_factory):
    from inference.partitions import partitioned, staging_attach, staging_create

    if not partitioned(CatalogEntry):
        pytest.skip("the entry table is partitioned on PostgreSQL only")
    spectra = make_spectra([(10.0, 10.0)])
    release = release_factory(spectra, label_rows([5000.0]), label_rows([5000.0]), publish=False)
    before = _partition_rows(release)
    staging = staging_create(CatalogEntry, release.pk)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {staging} (id, release_id, spectrum_id, designation, medres_specid, medid_blue, medid_red, "
            "ra, dec, flag, flag_bits) VALUES (nextval(pg_get_serial_sequence('inference_catalogentry', 'id')), "
            "%s, %s, 'x', 'x', 'x', 'x', 0, 0, 0, 0)", [release.pk, spectra[0].pk + 10_000])
    with pytest.raises(IntegrityError), transaction.atomic():
        staging_attach(CatalogEntry, release.pk)
    assert _partition_rows(release) == before


def test_published_release_is_immutable(release_factory, curator):
    spectra = make_spectra([(10.0, 10.0)])
    release = release_factory(spectra, label_rows([5000.0]), label_rows([5000.0]))
    with pytest.raises(ReleaseImmutableError):
        catalog_release_build(release=release)
    with pytest.raises(ReleaseImmutableError):
        catalog_release_publish(release=release)
    entry = CatalogEntry.objects.get(release=release)
    with pytest.raises(ValueError, match="published"):
        catalog_entries_curate(user=curator, ids=[entry.pk], flagged=True, reason="bad sky")
    assert CurationRecord.objects.count() == 0


def test_curating_a_draft_entry_recomputes_flag_and_logs(release_factory, curator):
    spectra = make_spectra([(10.0, 10.0)])
    release = release_factory(spectra, label_rows([5000.0]), label_rows([5000.0]), publish=False)
    entry = CatalogEntry.objects.get(release=release)
    assert catalog_entries_curate(user=curator, ids=[entry.pk], flagged=True, reason="satellite trail") == 1
    entry.refresh_from_db()
    assert entry.flag == 0 and "CURATOR_FLAGGED" in CATALOG_FLAGS.names(entry.flag_bits)
    assert catalog_entries_curate(user=curator, ids=[entry.pk], flagged=True, reason="again") == 0
    catalog_entries_curate(user=curator, ids=[entry.pk], flagged=False, reason="trail was elsewhere")
    entry.refresh_from_db()
    assert entry.flag == 1 and entry.flag_bits == 0
    log = list(CurationRecord.objects.order_by("id").values_list("action", "reason", "user__username"))
    assert log == [("flag", "satellite trail", "curator"), ("unflag", "trail was elsewhere", "curator")]


def test_bulk_upsert_fills_timestamps_and_defaults_like_save():
    from core.bulk import bulk_upsert
    from spectra.models import Spectrum, Star

    star = Star.objects.create(designation="LAMOST J000000.00+000000.0", ra=0.0, dec=0.0)
    row = {
        "star_id": [star.pk], "medres_specid": ["20180101-P-01-001-coadd-v1"], "kind": ["coadd"], "plan_id": ["P"],
        "spectrograph": [1], "fiber": [1], "lmjd": [58000], "source_path": ["/x.fits"], "source_sha256": ["b" * 64],
        "file_format": ["dr7"], "snr_blue": [12.5],
    }
    bulk_upsert(Spectrum, row, unique_fields=["medres_specid"])
    first = Spectrum.objects.get()
    assert first.created_at is not None and first.status == Spectrum.Status.INGESTED and first.flags == 0
    assert first.medid_blue == "" and first.lmjm is None
    Spectrum.objects.filter(pk=first.pk).update(status=Spectrum.Status.PREPROCESSED)
    bulk_upsert(Spectrum, {**row, "snr_blue": [13.0]}, unique_fields=["medres_specid"])
    second = Spectrum.objects.get()
    assert second.snr_blue == 13.0 and second.created_at == first.created_at and second.updated_at >= first.updated_at
    assert second.status == Spectrum.Status.PREPROCESSED  # omitted fields keep their value on update


def test_bulk_upsert_stores_hostile_text_nulls_and_numbers_exactly():
    from core.bulk import bulk_upsert
    from spectra.models import Spectrum, Star

    star = Star.objects.create(designation="LAMOST J000000.00+000000.0", ra=0.0, dec=0.0)
    texts = ['a"b', "back\\slash\\", "{brace},comma}", "NULL", "", "\u00fcn\u00ef \u661f", "new\nline\ttab", "quote's"]
    n = len(texts)
    rows = {
        "star_id": [star.pk] * n, "medres_specid": [f"2018-P-{i}" for i in range(n)], "kind": ["coadd"] * n,
        "objname": texts, "source_path": [f"/{t}.fits" for t in texts], "plan_id": ["P"] * n,
        "spectrograph": np.arange(n, dtype=np.int64), "fiber": [1] * n,
        "lmjd": np.full(n, 58000.0),  # integral floats for an integer column
        "lmjm": [None, 5] + [7] * (n - 2), "source_sha256": ["b" * 64] * n, "file_format": ["dr7"] * n,
        "snr_blue": np.array([np.nan, np.inf, 1e-300, 0.1 + 0.2, -0.0, 12.5, 3.0, 1e17]),
        "rv_source": [Spectrum.RVSource.MEASURED] * n,
        "exptime": [np.float32("nan"), np.float32(600.0)] + [None] * (n - 2),  # numpy scalars in a list
    }
    bulk_upsert(Spectrum, rows, unique_fields=["medres_specid"])
    stored = {s.medres_specid: s for s in Spectrum.objects.all()}
    assert len(stored) == n
    for i, text in enumerate(texts):
        spectrum = stored[f"2018-P-{i}"]
        assert spectrum.objname == text and spectrum.source_path == f"/{text}.fits"
        assert spectrum.spectrograph == i and spectrum.lmjd == 58000 and spectrum.rv_source == "measured"
    assert stored["2018-P-0"].lmjm is None and stored["2018-P-1"].lmjm == 5
    assert stored["2018-P-0"].exptime is None and stored["2018-P-1"].exptime == 600.0
    snr = [stored[f"2018-P-{i}"].snr_blue for i in range(n)]
    assert snr[0] is None  # NaN is stored as NULL
    assert snr[1:] == [float("inf"), 1e-300, 0.1 + 0.2, -0.0, 12.5, 3.0, 1e17]  # exactly
    assert np.signbit(snr[4])


@pytest.mark.parametrize("rows", [8, 300])  # one INSERT of arrays; COPY through a temporary table
def test_bulk_upsert_refuses_text_longer_than_its_column_on_either_path(rows):
    from django.db import DataError

    from core.bulk import SMALL_UPSERT_ROWS, _array_literal, bulk_upsert
    from spectra.models import Spectrum, Star

    assert (rows <= SMALL_UPSERT_ROWS) == (rows == 8)
    star = Star.objects.create(designation="LAMOST J000000.00+000000.0", ra=0.0, dec=0.0)
    too_long = "P" * (Spectrum._meta.get_field("plan_id").max_length + 1)
    columns = {
        "star_id": [star.pk] * rows, "medres_specid": [f"2018-P-{i}" for i in range(rows)], "kind": ["coadd"] * rows,
        "plan_id": [too_long] + ["P"] * (rows - 1), "spectrograph": [1] * rows, "fiber": [1] * rows,
        "lmjd": [58000] * rows, "source_path": ["/x.fits"] * rows, "source_sha256": ["b" * 64] * rows,
        "file_format": ["dr7"] * rows,
    }
    with pytest.raises(DataError, match="too long"), transaction.atomic():
        bulk_upsert(Spectrum, columns, unique_fields=["medres_specid"])
    assert not Spectrum.objects.exists()  # never cut short and stored
    with pytest.raises(TypeError, match="bytes"):
        _array_literal([b"raw"], "text")


def test_repeated_keys_in_one_upsert_keep_the_last_row():
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0)])
    model = make_model(ModelVersion.Role.FORMAL)
    ids = np.array([spectra[0].pk, spectra[1].pk, spectra[0].pk])
    values = label_rows([4000.0, 4100.0, 4200.0])
    labelsets_upsert(model_version=model, spectrum_ids=ids, values=values, errors=np.full_like(values, 0.1))
    rows = dict(LabelSet.objects.filter(model_version=model).values_list("spectrum_id", "teff"))
    assert rows == {spectra[0].pk: 4200.0, spectra[1].pk: 4100.0}


@pytest.mark.django_db(transaction=True)  # the build's workers are other connections: the rows must be committed
def test_a_build_on_several_connections_writes_the_rules_values_in_spectrum_order(monkeypatch, settings):
    import threading

    from core.rules import CatalogRules
    from inference.catalog_rules import combine_models
    from inference.partitions import partition_name, partitioned
    from inference.services import release as release_service
    from inference.services.release import catalog_release_create

    if not partitioned(CatalogEntry):
        pytest.skip("the parallel build is PostgreSQL's")
    spectra = make_spectra([(10.0 + i, 10.0) for i in range(9)])
    formal = label_rows([4800.0, 5000.0, 7000.0, 5200.0, 3000.0, 5400.0, 5600.0, 6900.0, 5100.0])
    formal[3, 7] = np.nan  # a label the model did not give
    alternate = formal + 10.0
    alternate[5, 0] += 400.0  # the models disagree
    ids = np.array([s.pk for s in spectra])
    errors = np.full_like(formal, 0.05)
    models = make_model(ModelVersion.Role.FORMAL, "p-formal"), make_model(ModelVersion.Role.ALTERNATE, "p-alternate")
    labelsets_upsert(model_version=models[0], spectrum_ids=ids, values=formal, errors=errors)
    labelsets_upsert(model_version=models[1], spectrum_ids=ids[:8], values=alternate[:8], errors=errors[:8])
    release = catalog_release_create(name="parallel", formal_model=models[0], alternate_model=models[1])
    threads = set()
    chunk_read = release_service.release_build_numeric_chunk

    def recorded(**kwargs):
        threads.add(threading.current_thread().name)
        return chunk_read(**kwargs)

    monkeypatch.setattr(release_service, "release_build_numeric_chunk", recorded)
    settings.RELEASE_BUILD_CONNECTIONS = 2
    assert catalog_release_build(release=release, chunk_size=2) == 9  # 5 chunks on 2 connections
    assert len(threads) == 2 and threading.current_thread().name not in threads

    expected = combine_models(formal, np.where(np.arange(9)[:, None] < 8, alternate, np.nan), errors,
                              np.full(9, 50.0), np.full(9, 100.0), np.zeros(9, dtype=np.int64), CatalogRules())
    from core.labels import LABEL_ERROR_FIELDS, LABEL_FIELDS

    entries = list(CatalogEntry.objects.filter(release=release).order_by("spectrum_id"))
    assert [e.spectrum_id for e in entries] == ids.tolist()
    assert sorted(e.pk for e in entries) == [e.pk for e in entries]  # new ids in spectrum order
    for i, entry in enumerate(entries):
        assert (entry.flag, entry.flag_bits) == (expected.flag[i], expected.bits[i])
        for j, field in enumerate(LABEL_FIELDS):
            want = expected.values[i, j]
            assert getattr(entry, field) == (None if np.isnan(want) else pytest.approx(want)), (i, field)
        for j, field in enumerate(LABEL_ERROR_FIELDS):
            want = expected.errors[i, j]
            assert getattr(entry, field) == (None if np.isnan(want) else pytest.approx(want)), (i, field)
    assert entries[2].c_h is None and entries[2].c_h_err is None and entries[2].teff == 7000.0  # hot: withheld
    assert entries[8].alternate_labels_id is None and entries[8].flag == 0

    def state():
        rows = list(CatalogEntry.objects.filter(release=release).order_by("spectrum_id").values_list(
            "id", "spectrum_id", "flag", "flag_bits", *LABEL_FIELDS, *LABEL_ERROR_FIELDS))
        stars = list(CatalogStar.objects.filter(release=release).order_by("star_id").values_list(
            "id", "star_id", "n_spectra", "best_spectrum_id", "best_medres_specid", "teff", "teff_err", "flag"))
        return rows, stars

    release.refresh_from_db()
    parallel = state()
    assert (release.entry_count, release.good_count) == (9, int(expected.flag.sum()))
    assert (release.star_count, release.good_star_count) == (9, int(expected.flag.sum()))
    with transaction.atomic():  # inside a transaction: one connection, one chunk after another
        catalog_release_build(release=release)
    assert state() == parallel  # and the rebuild kept every id
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname LIKE %s OR relname LIKE %s",
                       [partition_name(CatalogEntry, release.pk) + "_%", partition_name(CatalogStar, release.pk) + "_%"])
        assert cursor.fetchone()[0] == 0  # no table of the build left behind


def _slowed_chunks(monkeypatch, seconds: float) -> None:
    from inference.services import release as release_service

    read = release_service.release_build_numeric_chunk

    def slow(**kwargs):
        time.sleep(seconds)
        return read(**kwargs)

    monkeypatch.setattr(release_service, "release_build_numeric_chunk", slow)


def _in_thread(work):
    import threading

    outcome: dict = {}

    def run():
        from django.db import connection as own

        try:
            outcome["result"] = work()
        except BaseException as error:  # noqa: BLE001 (read by the test)
            outcome["error"] = error
        finally:
            own.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _build_in_thread(release):
    from inference.models import CatalogRelease

    return _in_thread(lambda: catalog_release_build(release=CatalogRelease.objects.get(pk=release.pk), chunk_size=2))


@pytest.mark.django_db(transaction=True)  # a build on other connections, and concurrent sessions
def test_a_merge_or_a_curation_during_a_build_waits_for_it_and_both_succeed(release_factory, curator, monkeypatch,
                                                                            settings):
    from spectra.services.star_identity import stars_merge_duplicates

    settings.RELEASE_BUILD_CONNECTIONS = 2
    # Spectra 0 and 1 are of one star ingested twice (0.36 arcsec apart): a merge moves spectrum 1.
    spectra = make_spectra([(10.0, 10.0), (10.0, 10.0001), *((20.0 + i, 20.0) for i in range(8))])
    values = label_rows([5000.0 + 10 * i for i in range(10)])
    release = release_factory(spectra, values, values, publish=False)
    entry = CatalogEntry.objects.filter(release=release, spectrum=spectra[5]).get()
    _slowed_chunks(monkeypatch, 0.3)  # 5 chunks on 2 connections: about a second of writing

    build, built = _build_in_thread(release)
    time.sleep(0.4)
    merge, merged = _in_thread(lambda: stars_merge_duplicates(radius_arcsec=1.0))
    build.join(60)
    merge.join(60)
    assert not build.is_alive() and not merge.is_alive()
    assert "error" not in built and "error" not in merged, (built, merged)
    assert merged["result"]["spectra_moved"] == 1
    # The merge ran after the build: the star table follows it.
    stars = dict(CatalogStar.objects.filter(release=release).values_list("star_id", "n_spectra"))
    assert stars[spectra[0].star_id] == 2 and spectra[1].star_id not in stars

    build, built = _build_in_thread(release)
    time.sleep(0.4)  # the curation comes while the chunks are written
    curated = catalog_entries_curate(user=curator, ids=[entry.pk], flagged=True, reason="bad sky subtraction")
    build.join(60)
    assert "error" not in built, built
    assert curated == 1
    entry.refresh_from_db()
    assert entry.flag == 0 and entry.flag_bits & CATALOG_FLAGS["CURATOR_FLAGGED"].mask


@pytest.mark.django_db(transaction=True)  # the advisory locks are looked up from another transaction
def test_a_failed_build_inside_a_transaction_raises_its_own_error_and_keeps_no_lock(release_factory, monkeypatch):
    from inference.services import release as release_service

    spectra = make_spectra([(10.0 + i, 10.0) for i in range(6)])
    values = label_rows([5000.0 + 10 * i for i in range(6)])
    release = release_factory(spectra, values, values, publish=False)
    read, calls = release_service.release_build_numeric_chunk, []

    def failing(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 / 0")  # fails the transaction: no statement runs after it
        return read(**kwargs)

    monkeypatch.setattr(release_service, "release_build_numeric_chunk", failing)
    with pytest.raises(Exception, match="division by zero"):
        with transaction.atomic():
            catalog_release_build(release=release, chunk_size=2)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert cursor.fetchone()[0] == 0
    monkeypatch.undo()
    assert catalog_release_build(release=release) == 6  # the release can be built again
