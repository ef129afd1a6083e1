import numpy as np
import pytest

from core.flags import CATALOG_FLAGS
from inference.models import CatalogEntry, LabelSet, ModelVersion
from inference.services.prediction import labelsets_upsert
from inference.services.release import (
    ReleaseImmutableError,
    catalog_entries_curate,
    catalog_release_build,
    catalog_release_publish,
)
from spectra.models import CurationRecord

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


def test_repeated_keys_in_one_upsert_keep_the_last_row():
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0)])
    model = make_model(ModelVersion.Role.FORMAL)
    ids = np.array([spectra[0].pk, spectra[1].pk, spectra[0].pk])
    values = label_rows([4000.0, 4100.0, 4200.0])
    labelsets_upsert(model_version=model, spectrum_ids=ids, values=values, errors=np.full_like(values, 0.1))
    rows = dict(LabelSet.objects.filter(model_version=model).values_list("spectrum_id", "teff"))
    assert rows == {spectra[0].pk: 4200.0, spectra[1].pk: 4100.0}
