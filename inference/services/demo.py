"""A synthetic demo catalog: rows with plausible labels, for a first look at the site.

It exercises the catalog's storage, rules, admin, API and export without any FITS file
or trained network. Its two model versions are marked ``synthetic`` in their config and
their artifact URIs, so they are never mistaken for trained networks. Labels are drawn
from the reference-set distributions of the paper (see docs/SCIENCE notes in the README)
and the two "models" are the truth plus independent noise that shrinks with S/N, so the
agreement rules flag a realistic share of rows.
"""

import hashlib
from dataclasses import dataclass

import numpy as np
from django.db import transaction

from core.bulk import bulk_upsert
from core.labels import LABELS
from spectra.identifiers import designations_from_radec, medres_specid, night_date
from spectra.models import Spectrum, Star

from ..models import CatalogRelease, ModelVersion
from .prediction import labelsets_upsert
from .release import catalog_release_build, catalog_release_create, catalog_release_publish

# Reference-set mean and spread of each label (SCIENCE.md, LAMOST MRS x APOGEE-Payne).
_REFERENCE_MEAN = np.array([5055, 3.40, -0.19, -0.30, -0.08, -0.09, -0.09, -0.09, -0.09, -0.12, -0.15, -0.15, -0.18, -0.17, -0.31])
_REFERENCE_STD = np.array([571, 0.92, 0.27, 0.25, 0.33, 0.22, 0.22, 0.30, 0.22, 0.23, 0.24, 0.26, 0.30, 0.29, 0.36])
# Paper test-set precision at S/N > 10; the synthetic models' noise at S/N = 30.
_PRECISION = np.array([118.7, 0.1657, 0.0624, 0.0885, 0.1239, 0.1174, 0.0669, 0.0888, 0.0686, 0.1060, 0.0687, 0.1250, 0.1141, 0.0828, 0.1910])


@dataclass(frozen=True)
class DemoCatalog:
    release: CatalogRelease
    stars: int
    spectra: int


def demo_synthetic_model(role: str, seed: int) -> ModelVersion:
    digest = hashlib.sha256(f"synthetic-demo-{role}-{seed}".encode()).hexdigest()
    model, _ = ModelVersion.objects.get_or_create(
        artifact_sha256=digest,
        defaults={
            "name": f"synthetic-demo-{role}-{seed}",
            "role": role,
            "artifact_uri": f"synthetic://demo/{role}/{seed}",
            "config": {"synthetic": True, "seed": seed},
            "training_set_hash": hashlib.sha256(f"synthetic-demo-{seed}".encode()).hexdigest(),
            "code_version": "synthetic",
            "preprocessing_version": "synthetic",
        },
    )
    return model


def demo_catalog_create(*, n_stars: int, seed: int = 0, release_name: str | None = None, chunk: int = 100_000) -> DemoCatalog:
    """Create stars, spectra, two synthetic models' labels, and a published release."""
    rng = np.random.default_rng(seed)
    release_name = release_name or f"demo-{seed}"
    if CatalogRelease.objects.filter(name=release_name).exists():
        raise ValueError(f"release {release_name} already exists")
    formal = demo_synthetic_model(ModelVersion.Role.FORMAL, seed)
    alternate = demo_synthetic_model(ModelVersion.Role.ALTERNATE, seed)
    n_spectra = 0
    for start in range(0, n_stars, chunk):
        with transaction.atomic():
            observations = demo_observations_create(rng, first_star=start, n_stars=min(chunk, n_stars - start), seed=seed)
            for model, values, errors in zip((formal, alternate), *demo_model_labels(rng, observations), strict=True):
                labelsets_upsert(model_version=model, spectrum_ids=observations.spectrum_ids, values=values, errors=errors)
            n_spectra += observations.spectrum_ids.shape[0]
    release = catalog_release_create(
        name=release_name, formal_model=formal, alternate_model=alternate,
        description="Synthetic demo catalog: labels drawn at random, not measured.",
    )
    catalog_release_build(release=release)
    release = catalog_release_publish(release=release)
    return DemoCatalog(release=release, stars=n_stars, spectra=n_spectra)


@dataclass(frozen=True)
class DemoObservations:
    spectrum_ids: np.ndarray  # (m,) int64
    truth: np.ndarray  # (m, 15) true labels of each spectrum's star
    snr: np.ndarray  # (m,) blue-arm S/N


def demo_observations_create(rng: np.random.Generator, *, first_star: int, n_stars: int, seed: int) -> DemoObservations:
    """Create ``n_stars`` stars with 1-6 spectra each; return the spectra and true labels."""
    n = n_stars
    # Positions over the LAMOST sky (declination -10 to +70), uniform on the sphere.
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-10.0)), np.sin(np.radians(70.0)), n)))
    gaia = rng.integers(10**15, 6 * 10**18, n, dtype=np.int64)
    stars = Star.objects.bulk_create(
        [
            Star(designation=d, gaia_source_id=g, ra=r, dec=de)
            for d, g, r, de in zip(designations_from_radec(ra, dec), gaia.tolist(), ra.tolist(), dec.tolist(), strict=True)
        ]
    )
    star_ids = np.array([star.pk for star in stars], dtype=np.int64)
    exposures = rng.integers(1, 7, n)  # spectra per star (a coadd and exposures)
    star_of_spectrum = np.repeat(np.arange(n), exposures)
    m = star_of_spectrum.shape[0]
    fiber = (first_star + star_of_spectrum) % 250 + 1
    spectrograph = (first_star + star_of_spectrum) // 250 % 16 + 1
    lmjd = 58000 + rng.integers(0, 900, n)[star_of_spectrum]
    index_in_star = np.arange(m) - np.repeat(np.cumsum(exposures) - exposures, exposures)
    lmjm = lmjd * 1440 + 1200 + 25 * index_in_star
    snr = np.exp(rng.normal(np.log(35.0), 0.7, m))
    plans = [f"DEMO{seed:02d}{s:06d}" for s in (first_star + star_of_spectrum) // 4000]
    specids = [
        medres_specid(date=night_date(d - 1), plan_id=p, spectrograph=s, fiber=f, lmjm=t, pipeline="synthetic")
        for d, p, s, f, t in zip(lmjd.tolist(), plans, spectrograph.tolist(), fiber.tolist(), lmjm.tolist(), strict=True)
    ]
    bulk_upsert(
        Spectrum,
        {
            "star_id": star_ids[star_of_spectrum],
            "medres_specid": specids,
            "medid_blue": [f"{s}-B" for s in specids],
            "medid_red": [f"{s}-R" for s in specids],
            "kind": [Spectrum.Kind.EXPOSURE] * m,
            "objname": [""] * m,
            "plan_id": plans,
            "spectrograph": spectrograph,
            "fiber": fiber,
            "lmjd": lmjd,
            "lmjm": lmjm,
            "snr_blue": snr,
            "snr_red": snr * rng.uniform(1.2, 2.0, m),
            "rv_blue": rng.normal(0.0, 40.0, m),
            "rv_red": rng.normal(0.0, 40.0, m),
            "rv_source": [Spectrum.RVSource.CATALOG] * m,
            "source_path": ["synthetic"] * m,
            "source_sha256": [""] * m,
            "file_format": ["synthetic"] * m,
            "data_release": [""] * m,
            "array_shard": [""] * m,
            "preprocessing_version": ["synthetic"] * m,  # (the demo models' own: no arrays to read)
            "status": [Spectrum.Status.PREPROCESSED] * m,
            "flags": np.zeros(m, dtype=np.int64),
        },
        unique_fields=["medres_specid"],
    )
    spectrum_ids = np.array(
        [pk for pk, in Spectrum.objects.filter(star_id__in=star_ids.tolist()).order_by("id").values_list("id")],
        dtype=np.int64,
    )
    truth = _REFERENCE_MEAN + _REFERENCE_STD * rng.standard_normal((n, len(LABELS)))
    truth[:, 3:] = truth[:, 2:3] + (truth[:, 3:] - _REFERENCE_MEAN[3:]) * 0.3 + (_REFERENCE_MEAN[3:] - _REFERENCE_MEAN[2])
    return DemoObservations(spectrum_ids=spectrum_ids, truth=truth[star_of_spectrum], snr=snr)


def demo_model_labels(rng: np.random.Generator, observations: DemoObservations):
    """The two synthetic models' labels and the shared uncertainties: ((formal, alternate), (errors, errors))."""
    truth = observations.truth
    noise_scale = _PRECISION * (30.0 / np.clip(observations.snr, 5.0, None))[:, None]
    # Two networks trained on similar data share most of their error: 80% of the
    # variance is common, the rest is each model's own.
    shared = np.sqrt(0.8) * noise_scale * rng.standard_normal(truth.shape)
    formal, alternate = (truth + shared + np.sqrt(0.2) * noise_scale * rng.standard_normal(truth.shape) for _ in range(2))
    return (formal, alternate), (noise_scale, noise_scale)
