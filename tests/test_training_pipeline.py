"""Reference labels, training both models, prediction and a release, through the database."""

import csv

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from core.flags import LABEL_FLAGS, SPECTRUM_FLAGS
from core.labels import LABEL_FIELDS
from inference.management.commands.train_models import Command as TrainModelsCommand
from inference.models import CatalogEntry, LabelSet, ModelVersion, ReferenceCatalog, ReferenceLabel
from inference.network.artifact import ArtifactError
from inference.network.config import NetworkConfig, TrainingConfig
from inference.network.splits import TEST, split_two_models
from inference.selectors import TrainingSetError, training_set_select
from inference.services.prediction import _loaded, labelsets_predict
from inference.services.reference import ReferenceImportError, reference_catalog_import
from inference.services.release import catalog_release_build, catalog_release_create, catalog_release_publish
from inference.services.training import models_train
from spectra.array_store import ArrayStore
from spectra.models import Spectrum, Star
from spectra.processing.pipeline import PREPROCESSING_VERSION

pytestmark = pytest.mark.django_db

TINY = NetworkConfig(filters=(2, 2), dense_units=(8, 8))
QUICK = TrainingConfig(max_epochs=2, patience=1, batch_size=32)
ELEMENTS = [field[:-2].upper() for field in LABEL_FIELDS[2:]]


def write_reference(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["APOGEE_ID", "RA", "DEC", "GAIA_SOURCE_ID", "TEFF", "LOGG", *(f"{e}_H" for e in ELEMENTS), "quality_flag"])
        writer.writerows(rows)


@pytest.fixture
def survey(tmp_path, settings):
    """40 stars with 4 spectra each and arrays in the store; 30 stars with reference labels."""
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    rng = np.random.default_rng(0)
    n_stars, per_star = 40, 4
    flux = (1 + rng.normal(0, 0.02, size=(n_stars * per_star, 2, 4000))).astype(np.float32)
    shard = ArrayStore(settings.SPECTRA_ARRAY_ROOT).write(flux, np.ones_like(flux))
    reference_rows = []
    for s in range(n_stars):
        ra, dec = 30.0 + s * 0.01, 5.0
        # Half the stars carry their Gaia id; the others are matched by position.
        star = Star.objects.create(designation=f"LAMOST J{s:06d}.00+050000.0", ra=ra, dec=dec,
                                   gaia_source_id=5000 + s if s % 2 else None)
        for k in range(per_star):
            row = s * per_star + k
            Spectrum.objects.create(
                star=star, medres_specid=f"20190101-P-01-{s:03d}-{k}", kind=Spectrum.Kind.EXPOSURE, plan_id="P",
                spectrograph=1, fiber=s + 1, lmjd=58484, lmjm=k, snr_blue=15.0 + 10 * k, snr_red=40.0,
                source_path="/x.fits", source_sha256="b" * 64, file_format="dr7",
                status=Spectrum.Status.PREPROCESSED, array_shard=shard, array_row=row, preprocessing_version=PREPROCESSING_VERSION,
            )
        if s < 30:
            labels = [f"{4500 + 20 * s}", f"{2.0 + 0.05 * s:.2f}", *[f"{-0.2 + 0.01 * s:.3f}"] * 13]
            labels[4] = "" if s == 3 else labels[4]  # a missing [N/H]
            reference_rows.append([f"2M{s:08d}", f"{ra + 0.5 / 3600:.6f}", f"{dec:.6f}", 5000 + s,
                                   *labels, "bad" if s == 29 else "good"])
    write_reference(tmp_path / "reference.csv", reference_rows)
    # One spectrum below the S/N limit and one rejected: neither may be used for training.
    Spectrum.objects.filter(medres_specid="20190101-P-01-000-0").update(snr_blue=8.0)
    Spectrum.objects.filter(medres_specid="20190101-P-01-001-1").update(flags=SPECTRUM_FLAGS.mask("BAD_FLUX"))
    return tmp_path


def test_reference_import_maps_columns_matches_stars_and_is_idempotent(survey):
    summary = reference_catalog_import(name="payne", path=survey / "reference.csv")
    assert (summary.rows, summary.good, summary.matched) == (30, 29, 30)
    assert summary.matched_by_gaia == 15 and summary.matched_by_position == 15
    again = reference_catalog_import(name="payne", path=survey / "reference.csv")
    assert again == summary and ReferenceLabel.objects.count() == 30
    missing = ReferenceLabel.objects.get(source_id="2M00000003")
    assert missing.n_h is None and missing.o_h == pytest.approx(-0.17)
    assert ReferenceLabel.objects.get(source_id="2M00000002").match_separation_arcsec == pytest.approx(0.5, abs=0.01)
    catalog = ReferenceCatalog.objects.get(name="payne")
    assert (catalog.row_count, catalog.good_count, catalog.matched_count) == (30, 29, 30)


def test_reference_import_refuses_a_catalog_that_does_not_fit_its_mapping(survey):
    with pytest.raises(ReferenceImportError, match="no column 'NOPE'"):
        reference_catalog_import(name="bad", path=survey / "reference.csv",
                                 mapping={"id": "APOGEE_ID", "ra": "RA", "dec": "DEC",
                                          "labels": {"teff": "TEFF", "logg": "NOPE"}})
    with pytest.raises(ReferenceImportError, match="unknown labels"):
        reference_catalog_import(name="bad", path=survey / "reference.csv",
                                 mapping={"id": "APOGEE_ID", "ra": "RA", "dec": "DEC", "labels": {"vsini": "X"}})
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_reference_labels", str(survey / "missing.csv"), "--name", "x")


def test_training_set_leaves_out_bad_quality_low_snr_and_rejected_spectra(survey):
    reference_catalog_import(name="payne", path=survey / "reference.csv")
    data = training_set_select(catalog=ReferenceCatalog.objects.get(name="payne"))
    assert len(data) == 29 * 4 - 2
    assert "20190101-P-01-029-0" not in data.medres_specids  # the star flagged bad by the reference
    assert "20190101-P-01-000-0" not in data.medres_specids and "20190101-P-01-001-1" not in data.medres_specids
    assert np.isnan(data.labels[np.asarray(data.medres_specids) == "20190101-P-01-003-2", 4]).all()
    assert np.all(data.snr > 10) and data.snr.max() == 40.0  # the weaker arm's S/N
    # Arrays older code made are not learnt from: the model will read only its own version's.
    Spectrum.objects.filter(medres_specid="20190101-P-01-005-2").update(preprocessing_version="1.0")
    again = training_set_select(catalog=ReferenceCatalog.objects.get(name="payne"))
    assert len(again) == len(data) - 1 and "20190101-P-01-005-2" not in again.medres_specids


def test_train_predict_release_end_to_end(survey, settings):
    reference_catalog_import(name="payne", path=survey / "reference.csv")
    catalog = ReferenceCatalog.objects.get(name="payne")
    epochs = []
    trained = models_train(catalog=catalog, name_prefix="t1", network=TINY, training=QUICK,
                           on_epoch=lambda role, epoch, logs: epochs.append(role))
    formal, alternate = trained.formal, trained.alternate
    assert (formal.role, alternate.role) == ("formal", "alternate")
    assert set(epochs) == {"formal", "alternate"}
    assert formal.training_set_hash != alternate.training_set_hash  # different training subsets
    assert formal.reference_catalog == catalog and formal.preprocessing_version == PREPROCESSING_VERSION
    for version in (formal, alternate):
        assert (settings.MODEL_ARTIFACT_ROOT / version.artifact_uri).name.startswith(version.artifact_sha256)
        metrics = version.metrics
        assert set(metrics["overall"]) == set(LABEL_FIELDS)
        assert len(metrics["by_snr"]["teff"]) == len(metrics["snr_edges"]) - 1
        assert metrics["overall"]["teff"]["n"] == metrics["training"]["n_test"] > 0
        assert metrics["calibration"]["teff"]["n"] > 0
        # The noise model is fitted on the CV and test spectra; the test set's check is cross-fitted.
        assert metrics["calibration_set"]["test"] == metrics["training"]["n_test"]
        assert metrics["calibration_set"]["cv"] > 0 and "cross-fitted" in metrics["calibration_set"]["check"]
        # Each calibration cell says how many stars it holds and where each label stands,
        # with the 95% intervals over those stars.
        for cell in metrics["calibration_cells"]:
            assert 0 < cell["stars"] <= cell["n"]
            for label in cell["labels"].values():
                assert label["verdict"] in ("met", "missed", "missed beyond noise", "unknown")
                if label["z_std"] is not None:
                    low, high = label["z_std_interval"]
                    assert low <= label["z_std"] <= high
        summary = TrainModelsCommand._summary(version)
        assert f"of {len(metrics['calibration_cells'])} within the goal for every label" in summary
    with pytest.raises(ValueError, match="exists"):
        models_train(catalog=catalog, name_prefix="t1", network=TINY, training=QUICK)

    done = labelsets_predict(model_versions=[formal, alternate])
    predictable = Spectrum.objects.filter(status=Spectrum.Status.PREPROCESSED).count()
    assert done == predictable == 160
    assert LabelSet.objects.count() == 2 * predictable
    assert labelsets_predict(model_versions=[formal, alternate]) == 0  # nothing missing: nothing done
    changed = Spectrum.objects.get(medres_specid="20190101-P-01-002-3")
    changed.save()  # as a re-ingest of a changed file does: its labels are out of date
    assert labelsets_predict(model_versions=[formal, alternate]) == 1
    assert labelsets_predict(model_versions=[formal], only_missing=False) == predictable
    assert LabelSet.objects.count() == 2 * predictable  # re-predicting overwrote, never duplicated
    errors = np.array(LabelSet.objects.values_list(*[f"{f}_err" for f in LABEL_FIELDS]), dtype=float)
    assert np.all(np.isfinite(errors)) and np.all(errors > 0)
    rejected = LabelSet.objects.get(model_version=formal, spectrum__medres_specid="20190101-P-01-001-1")
    assert rejected.flags & LABEL_FLAGS["INPUT_FLAGGED"].mask

    release = catalog_release_create(name="rel-1", formal_model=formal, alternate_model=alternate)
    assert catalog_release_build(release=release) == predictable
    release = catalog_release_publish(release=release)
    assert CatalogEntry.objects.filter(release=release).count() == predictable

    client = APIClient()
    response = client.get(f"/api/v1/model-versions/{formal.name}/")
    assert response.status_code == 200 and response.json()["reference_catalog"] == "payne"
    for url in (f"/api/v1/model-versions/{formal.name}/evaluation.png", "/api/v1/releases/rel-1/kiel.png"):
        image = client.get(url)
        assert image.status_code == 200 and image["Content-Type"] == "image/png"
        assert image.content[:8] == b"\x89PNG\r\n\x1a\n"

    # A changed artifact is refused, not used.
    _loaded.clear()
    path = settings.MODEL_ARTIFACT_ROOT / formal.artifact_uri
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(ArtifactError, match="sha256"):
        labelsets_predict(model_versions=[formal], only_missing=False)


def test_split_by_star_keeps_training_and_test_stars_apart(survey):
    reference_catalog_import(name="payne", path=survey / "reference.csv")
    data = training_set_select(catalog=ReferenceCatalog.objects.get(name="payne"))
    split = split_two_models(data.star_ids, (6, 2, 1), seed=QUICK.seed)
    for codes in (split.formal, split.alternate):
        assert not set(data.star_ids[codes != TEST]) & set(data.star_ids[split.test])


def test_training_without_usable_spectra_is_a_clear_error(survey):
    reference_catalog_import(name="payne", path=survey / "reference.csv")
    Spectrum.objects.update(snr_red=5.0)
    with pytest.raises(TrainingSetError, match="no usable spectra"):
        models_train(catalog=ReferenceCatalog.objects.get(name="payne"), name_prefix="t2", network=TINY, training=QUICK)
    assert not ModelVersion.objects.exists()


def test_the_references_errors_reach_the_training_set_and_the_noise_model(survey):
    """The default mapping reads APOGEE-Payne's *_ERR columns; a file without them imports
    with the errors recorded as absent, and its noise model is fitted without them."""
    without = reference_catalog_import(name="plain", path=survey / "reference.csv")
    assert "teff" in without.errors_absent and "no error column for teff" in str(without)
    assert np.isnan(training_set_select(catalog=ReferenceCatalog.objects.get(name="plain")).label_errors).all()

    with open(survey / "reference.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    names = rows[0][4:-1]
    errors = [f"{30.0 + i:.1f}" if name == "TEFF" else "0.05" for i, name in enumerate(names)]
    with open(survey / "with_errors.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*rows[0][:-1], *(f"{name}_ERR" for name in names), rows[0][-1]])
        for s, row in enumerate(rows[1:]):
            row_errors = [("" if s == 5 and name == "TEFF" else e) for name, e in zip(names, errors, strict=True)]
            writer.writerow([*row[:-1], *row_errors, row[-1]])
    summary = reference_catalog_import(name="with-errors", path=survey / "with_errors.csv")
    assert summary.errors_absent == ()
    catalog = ReferenceCatalog.objects.get(name="with-errors")
    data = training_set_select(catalog=catalog)
    teff_error = data.label_errors[:, 0]
    star_five = np.asarray(data.medres_specids) == "20190101-P-01-005-0"
    assert np.isnan(teff_error[star_five]).all() and np.nanmax(teff_error) == 30.0
    # Star 3's [N/H] is missing: its error, given in the file, is dropped with it.
    assert np.array_equal(np.isnan(data.label_errors[:, 1:]), np.isnan(data.labels[:, 1:]))
    assert np.isnan(data.labels[:, 4]).any() and np.all(data.label_errors[np.isfinite(data.labels[:, 1:])
                                                                           .all(axis=1), 1:] == 0.05)
    assert data.content_hash() != training_set_select(catalog=ReferenceCatalog.objects.get(name="plain")).content_hash()

    trained = models_train(catalog=catalog, name_prefix="err", network=TINY, training=QUICK)
    assert trained.formal.metrics["reference_errors"] == list(LABEL_FIELDS)
