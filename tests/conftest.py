import numpy as np
import pytest
from django.contrib.auth import get_user_model

from core.labels import LABELS
from inference.models import CatalogRelease, ModelVersion
from inference.services.prediction import labelsets_upsert
from inference.services.release import (
    catalog_release_build,
    catalog_release_create,
    catalog_release_publish,
)
from spectra.models import Spectrum, Star


@pytest.fixture
def curator(db):
    return get_user_model().objects.create_user("curator", password="curator-pass-1234", is_staff=True, is_superuser=True)


def make_model(role: str, name: str | None = None) -> ModelVersion:
    name = name or f"test-{role}"
    return ModelVersion.objects.create(
        name=name, role=role, artifact_uri=f"file:///models/{name}", artifact_sha256=f"{name:0>64}"[-64:],
        config={}, training_set_hash="0" * 64, code_version="test", preprocessing_version="test",
    )


def make_spectra(positions: list[tuple[float, float]], *, snr: float = 50.0, gaia_start: int = 1000) -> list[Spectrum]:
    spectra = []
    for i, (ra, dec) in enumerate(positions):
        star = Star.objects.create(designation=f"LAMOST J{i:06d}.00+000000.0", gaia_source_id=gaia_start + i, ra=ra, dec=dec)
        spectra.append(
            Spectrum.objects.create(
                star=star, medres_specid=f"20180101-PLAN-01-{i:03d}-coadd-test", medid_blue=f"B{i}", medid_red=f"R{i}",
                kind=Spectrum.Kind.COADD, plan_id="PLAN", spectrograph=1, fiber=i % 250 + 1, lmjd=58000,
                snr_blue=snr, snr_red=snr * 2, rv_blue=1.5, rv_red=1.0, source_path="/data/x.fits",
                source_sha256="a" * 64, file_format="dr7", preprocessing_version="test",  # (make_model's)
            )
        )
    return spectra


def label_rows(teff: list[float], feh: float = -0.2) -> np.ndarray:
    values = np.zeros((len(teff), len(LABELS)))
    values[:, 0] = teff
    values[:, 1] = 2.5
    values[:, 2:] = feh
    return values


@pytest.fixture
def release_factory(db):
    """Build and optionally publish a release over the given spectra and label arrays."""

    def build(spectra, formal_values, alternate_values, *, name="r1", publish=True) -> CatalogRelease:
        formal = make_model(ModelVersion.Role.FORMAL, f"{name}-formal")
        alternate = make_model(ModelVersion.Role.ALTERNATE, f"{name}-alternate")
        ids = np.array([s.pk for s in spectra])
        errors = np.full_like(formal_values, 0.05)
        labelsets_upsert(model_version=formal, spectrum_ids=ids, values=formal_values, errors=errors)
        labelsets_upsert(model_version=alternate, spectrum_ids=ids, values=alternate_values, errors=errors)
        release = catalog_release_create(name=name, formal_model=formal, alternate_model=alternate)
        catalog_release_build(release=release)
        release.refresh_from_db()
        return catalog_release_publish(release=release) if publish else release

    return build


_TINY_ARTIFACTS: dict[str, object] = {}


def make_trained_models(artifact_root, prefix: str = "tiny") -> tuple[ModelVersion, ModelVersion]:
    """Two small real networks (trained briefly on random spectra), registered as model versions.

    Trained once per test process; the artifacts are written under ``artifact_root``.
    """
    from core.labels import LABEL_FIELDS
    from inference.network.artifact import artifact_write
    from inference.network.config import NetworkConfig, TrainingConfig
    from inference.network.estimator import SPCANet
    from spectra.processing.pipeline import PREPROCESSING_VERSION

    rng = np.random.default_rng(0)
    versions = []
    for offset, role in enumerate((ModelVersion.Role.FORMAL, ModelVersion.Role.ALTERNATE)):
        if role not in _TINY_ARTIFACTS:
            flux = (1 + rng.normal(0, 0.02, size=(48, 2, 4000))).astype(np.float32)
            labels = np.column_stack([rng.normal(5000, 400, 48), rng.normal(3, 1, 48), rng.normal(-0.2, 0.2, (48, 13))])
            net = SPCANet(NetworkConfig(filters=(2, 2), dense_units=(8, 8)),
                          TrainingConfig(max_epochs=1, patience=1, seed=offset), LABEL_FIELDS)
            net.fit(flux[:32], labels[:32], cv_flux=flux[32:], cv_labels=labels[32:])
            net.calibrate(flux[32:], labels[32:], np.full(16, 30.0))
            _TINY_ARTIFACTS[role] = net.to_artifact(preprocessing_version=PREPROCESSING_VERSION, role=role)
        relative, sha256 = artifact_write(artifact_root, _TINY_ARTIFACTS[role])
        versions.append(ModelVersion.objects.create(
            name=f"{prefix}-{role}", role=role, artifact_uri=relative, artifact_sha256=sha256, config={},
            training_set_hash="0" * 64, code_version="test", preprocessing_version=PREPROCESSING_VERSION))
    return versions[0], versions[1]
