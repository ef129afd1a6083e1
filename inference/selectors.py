"""Reads of the inference app."""

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet

from core.bulk import key_range_bounds, query_numeric_records
from core.flags import SPECTRUM_FLAGS
from core.labels import LABEL_ERROR_FIELDS, LABEL_FIELDS
from core.rules import CatalogRules
from spectra.models import Spectrum, Star

from .catalog_rules import AGREEMENT_COLUMNS
from .models import CatalogEntry, CatalogRelease, CatalogStar, LabelSet, ModelVersion, ReferenceCatalog, ReferenceLabel

# Release names are slugs (CatalogRelease.name).
_SLUG = re.compile(r"[-a-zA-Z0-9_]+")

_IDENTITY_SOURCES = {
    "designation": "spectrum__star__designation",
    "gaia_source_id": "spectrum__star__gaia_source_id",
    "medres_specid": "spectrum__medres_specid",
    "medid_blue": "spectrum__medid_blue",
    "medid_red": "spectrum__medid_red",
    "ra": "spectrum__star__ra",
    "dec": "spectrum__star__dec",
    "snr_blue": "spectrum__snr_blue",
    "snr_red": "spectrum__snr_red",
    "rv_blue": "spectrum__rv_blue",
    "rv_red": "spectrum__rv_red",
    "rv_blue_err": "spectrum__rv_blue_err",
    "rv_red_err": "spectrum__rv_red_err",
}


@dataclass
class ReleaseBuildChunk:
    spectrum_ids: np.ndarray  # (n,) int64
    formal_ids: np.ndarray  # (n,) int64
    alternate_ids: list  # LabelSet ids or None
    formal: np.ndarray  # (n, 15) float64
    formal_errors: np.ndarray
    alternate: np.ndarray  # NaN where the alternate model has no labels
    snr_blue: np.ndarray
    snr_red: np.ndarray
    spectrum_flags: np.ndarray  # int64
    identity: dict  # columns copied into the entry (designation, ra, ...)


def release_build_chunks(*, release: CatalogRelease, chunk_size: int) -> Iterator[ReleaseBuildChunk]:
    """The inputs of a release, chunk by chunk in spectrum order (keyset pagination).

    Only spectra whose arrays are of the models' preprocessing version: a spectrum
    preprocessed again since it was predicted no longer has the arrays its labels were
    read from, and waits for the models of its version.
    """
    version = release.formal_model.preprocessing_version
    n_labels = len(LABEL_FIELDS)
    formal_fields = ["id", "spectrum_id", *LABEL_FIELDS, *LABEL_ERROR_FIELDS, "spectrum__flags"]
    identity_names = list(_IDENTITY_SOURCES)
    formal_fields += [_IDENTITY_SOURCES[name] for name in identity_names]
    last_spectrum = 0
    while True:
        rows = list(
            LabelSet.objects.filter(model_version=release.formal_model_id, spectrum_id__gt=last_spectrum,
                                    spectrum__preprocessing_version=version)
            .order_by("spectrum_id")
            .values_list(*formal_fields)[:chunk_size]
        )
        if not rows:
            return
        last_spectrum = rows[-1][1]
        columns = list(zip(*rows, strict=True))
        spectrum_ids = np.asarray(columns[1], dtype=np.int64)
        numeric = np.array([col for col in columns[2 : 2 + 2 * n_labels]], dtype=np.float64).T
        alternate_rows = {
            row[0]: row[1:]
            for row in LabelSet.objects.filter(
                model_version=release.alternate_model_id, spectrum_id__in=spectrum_ids.tolist()
            ).values_list("spectrum_id", "id", *LABEL_FIELDS)
        }
        missing = (None,) * (n_labels + 1)
        alternate_block = [alternate_rows.get(int(sid), missing) for sid in spectrum_ids]
        alternate_ids = [row[0] for row in alternate_block]
        alternate = np.array([row[1:] for row in alternate_block], dtype=np.float64).reshape(-1, n_labels)
        offset = 2 + 2 * n_labels
        identity = {
            name: list(columns[offset + 1 + i]) for i, name in enumerate(identity_names)
        }
        yield ReleaseBuildChunk(
            spectrum_ids=spectrum_ids,
            formal_ids=np.asarray(columns[0], dtype=np.int64),
            alternate_ids=alternate_ids,
            formal=numeric[:, :n_labels],
            formal_errors=numeric[:, n_labels:],
            alternate=alternate,
            snr_blue=np.array(identity["snr_blue"], dtype=np.float64),
            snr_red=np.array(identity["snr_red"], dtype=np.float64),
            spectrum_flags=np.asarray(columns[offset], dtype=np.int64),
            identity=identity,
        )


@dataclass
class ReleaseNumericChunk:
    """What the catalog rules read of a run of spectra (PostgreSQL's build).

    The published values are copied from the formal label set inside the database; the
    rules need only the labels the Flag depends on (``catalog_rules.AGREEMENT_COLUMNS``).
    """

    spectrum_ids: np.ndarray  # (n,) int64, increasing
    formal_ids: np.ndarray  # (n,) int64
    alternate_ids: np.ndarray  # (n,) int64, 0 where the alternate model has no labels
    formal: np.ndarray  # (n, 3) float64: Teff, log g, [Fe/H]; NaN where none
    alternate: np.ndarray  # (n, 3) float64, NaN where the alternate model has no labels
    snr_blue: np.ndarray  # (n,) float64
    snr_red: np.ndarray  # (n,) float64
    spectrum_flags: np.ndarray  # (n,) int64


def release_build_chunk_bounds(*, release: CatalogRelease, chunk_size: int) -> list[tuple[int, int, int]]:
    """The spectrum-id ranges a build reads, ``chunk_size`` formal label sets each (PostgreSQL only).

    Returns ``(low, high, n)`` per chunk: the chunk is the formal model's label sets with
    ``low < spectrum_id <= high``, ``n`` of them when this was read
    (``core.bulk.key_range_bounds``: one index-only scan of the formal model's
    (model_version, spectrum) index). The last range reaches the largest bigint, so
    spectra given labels while the build runs are in it; the chunks can be read in any
    order and at once (:func:`release_build_numeric_chunk`).
    """
    return key_range_bounds(
        f"SELECT spectrum_id::bigint AS key FROM {LabelSet._meta.db_table} WHERE model_version_id = %s",
        [release.formal_model_id], chunk_size, last_open=True)


def release_build_numeric_chunk(*, release: CatalogRelease, low: int, high: int) -> ReleaseNumericChunk:
    """What the catalog rules read of the spectra with ``low < id <= high`` (PostgreSQL only).

    One query read by a binary COPY into numpy (no Python row objects): the ids of the
    formal model's label set and of the alternate model's (LEFT JOIN) and their Teff,
    log g and [Fe/H], the spectrum's flags and S/N, in spectrum order; only spectra of the
    models' preprocessing version (as :func:`release_build_chunks`). The other labels
    and the text identity columns never leave the database: the writer copies them.
    """
    quote = connection.ops.quote_name
    agreement = LABEL_FIELDS[:AGREEMENT_COLUMNS]
    formal = [f"COALESCE(f.{quote(c)}, 'NaN'::float8)" for c in agreement]
    alternate = [f"COALESCE(a.{quote(c)}, 'NaN'::float8)" for c in agreement]
    sql = (
        "SELECT f.spectrum_id::bigint, f.id::bigint, COALESCE(a.id, 0)::bigint, s.flags::bigint, "
        "COALESCE(s.snr_blue, 'NaN'::float8), COALESCE(s.snr_red, 'NaN'::float8), "
        + ", ".join(formal + alternate)
        + f" FROM {LabelSet._meta.db_table} f"
        f" JOIN {Spectrum._meta.db_table} s ON s.id = f.spectrum_id"
        f" LEFT JOIN {LabelSet._meta.db_table} a ON a.spectrum_id = f.spectrum_id AND a.model_version_id = %s"
        " AND a.spectrum_id > %s AND a.spectrum_id <= %s"
        # The bounds on every side of the joins: without them a merge join reads the spectra
        # and the alternate labels from the first one on, every chunk (quadratic in chunks).
        " WHERE f.model_version_id = %s AND f.spectrum_id > %s AND f.spectrum_id <= %s AND s.id > %s AND s.id <= %s"
        " AND s.preprocessing_version = %s ORDER BY f.spectrum_id"
    )
    dtypes = [("spectrum_id", "i8"), ("formal_id", "i8"), ("alternate_id", "i8"), ("flags", "i8"),
              ("snr_blue", "f8"), ("snr_red", "f8")]
    dtypes += [(f"v{i}", "f8") for i in range(2 * AGREEMENT_COLUMNS)]
    rows = query_numeric_records(
        sql, [release.alternate_model_id, low, high, release.formal_model_id, low, high, low, high,
              release.formal_model.preprocessing_version], dtypes)
    labels = np.column_stack([rows[f"v{i}"] for i in range(2 * AGREEMENT_COLUMNS)]).reshape(
        rows.size, 2 * AGREEMENT_COLUMNS)
    return ReleaseNumericChunk(
        spectrum_ids=rows["spectrum_id"].copy(),
        formal_ids=rows["formal_id"].copy(),
        alternate_ids=rows["alternate_id"].copy(),
        formal=labels[:, :AGREEMENT_COLUMNS],
        alternate=labels[:, AGREEMENT_COLUMNS:],
        snr_blue=rows["snr_blue"].copy(),
        snr_red=rows["snr_red"].copy(),
        spectrum_flags=rows["flags"].copy(),
    )


def release_entries(*, release: CatalogRelease) -> QuerySet[CatalogEntry]:
    return CatalogEntry.objects.filter(release=release)


def release_stars(*, release: CatalogRelease) -> QuerySet[CatalogStar]:
    """The star table of a release: one row per star."""
    return CatalogStar.objects.filter(release=release)


def spectra_visible(*, user) -> QuerySet[Spectrum]:
    """Spectra whose arrays ``user`` may read: for everyone, those with an entry in a
    published release; every spectrum for staff (the rule of :func:`releases_visible`)."""
    spectra = Spectrum.objects.select_related("star")
    if user_sees_unpublished(user):
        return spectra
    published = CatalogEntry.objects.filter(
        spectrum=OuterRef("pk"), release__status=CatalogRelease.Status.PUBLISHED
    )
    return spectra.filter(Exists(published))


def user_sees_unpublished(user) -> bool:
    """Staff see drafts and models in no published release; everyone else does not."""
    return bool(user is not None and user.is_authenticated and user.is_staff)


def releases_visible(*, user) -> QuerySet[CatalogRelease]:
    """Releases ``user`` may read: published ones for everyone, drafts too for staff.

    The one visibility rule of the public API; the model versions and label sets that
    may be read follow from it (:func:`model_versions_visible`, :func:`label_sets_visible`).
    """
    releases = CatalogRelease.objects.select_related("formal_model", "alternate_model")
    if not user_sees_unpublished(user):
        releases = releases.filter(status=CatalogRelease.Status.PUBLISHED)
    return releases


def release_visible_by_name(*, user, name: str) -> CatalogRelease | None:
    """The release named ``name`` if ``user`` may read it; None for any other string
    (a name that is not a slug, such as one with a NUL byte, matches no release)."""
    if not _SLUG.fullmatch(name or ""):
        return None
    return releases_visible(user=user).filter(name=name).first()


def model_versions_visible(*, user) -> QuerySet[ModelVersion]:
    """Model versions ``user`` may read: for everyone, those that are the formal or the
    alternate model of a published release; every model for staff."""
    versions = ModelVersion.objects.all()
    if user_sees_unpublished(user):
        return versions
    published = CatalogRelease.objects.filter(status=CatalogRelease.Status.PUBLISHED)
    return versions.filter(
        Q(pk__in=published.values("formal_model_id")) | Q(pk__in=published.values("alternate_model_id"))
    )


def label_sets_visible(*, user) -> QuerySet[LabelSet]:
    """Label sets ``user`` may read: those of the model versions they may read."""
    label_sets = LabelSet.objects.all()
    if user_sees_unpublished(user):
        return label_sets
    return label_sets.filter(model_version__in=model_versions_visible(user=user))


def catalog_counts() -> dict[str, int]:
    """Row counts of the catalog tables."""
    return {
        "stars": Star.objects.count(),
        "spectra": Spectrum.objects.count(),
        "label_sets": LabelSet.objects.count(),
        "catalog_entries": CatalogEntry.objects.count(),
    }


def release_flag_counts(*, release: CatalogRelease) -> dict[str, int]:
    """Number of entries of a release carrying each catalog flag bit (bits with none omitted)."""
    from django.db.models import Count, F, Q

    from core.flags import CATALOG_FLAGS

    entries = CatalogEntry.objects.filter(release=release)
    annotations = {flag.name: Count("pk", filter=Q(**{f"bit_{flag.name}__gt": 0})) for flag in CATALOG_FLAGS}
    bits = {f"bit_{flag.name}": F("flag_bits").bitand(flag.mask) for flag in CATALOG_FLAGS}
    counts = entries.annotate(**bits).aggregate(**annotations)
    return {name: count for name, count in counts.items() if count}


def _models_preprocessing_version(model_versions: list[ModelVersion]) -> str | None:
    """The preprocessing version the models share; None where they differ."""
    versions = {version.preprocessing_version for version in model_versions}
    return versions.pop() if len(versions) == 1 else None


def spectra_to_predict(*, model_versions: list[ModelVersion], only_missing: bool = True):
    """Preprocessed spectra with arrays made by the models' preprocessing version; with
    ``only_missing``, those lacking a LabelSet from any of the given models, or whose
    spectrum changed (re-ingested from a changed file, or preprocessed again) after it was
    predicted.

    A model reads only arrays of the preprocessing it was trained on: spectra of another
    version (:func:`spectra_other_preprocessing`) are left out, and none are given to
    models whose versions differ.
    """
    version = _models_preprocessing_version(model_versions)
    if version is None:
        return Spectrum.objects.none()
    queryset = Spectrum.objects.filter(status=Spectrum.Status.PREPROCESSED, array_shard__isnull=False,
                                       preprocessing_version=version)
    if only_missing:
        missing = None
        for version in model_versions:
            lacks = ~Exists(LabelSet.objects.filter(spectrum=OuterRef("pk"), model_version=version,
                                                    predicted_at__gte=OuterRef("updated_at")))
            missing = lacks if missing is None else missing | lacks
        queryset = queryset.filter(missing)
    return queryset


def spectra_other_preprocessing(*, model_versions: list[ModelVersion]) -> dict[str, int]:
    """Preprocessed spectra with arrays that the models do not read because another
    preprocessing version made them: version -> number of spectra (empty when none).
    ``ingest_spectra --stale`` preprocesses the older ones again."""
    version = _models_preprocessing_version(model_versions)
    queryset = Spectrum.objects.filter(status=Spectrum.Status.PREPROCESSED, array_shard__isnull=False).exclude(
        array_shard="")
    if version is not None:
        queryset = queryset.exclude(preprocessing_version=version)
    rows = queryset.values("preprocessing_version").annotate(n=Count("pk")).order_by("preprocessing_version")
    return {row["preprocessing_version"]: row["n"] for row in rows}


class TrainingSetError(Exception):
    """Too few usable spectra with reference labels to train."""


@dataclass
class TrainingSet:
    spectrum_ids: np.ndarray  # (n,) int64
    star_ids: np.ndarray  # (n,) int64
    medres_specids: list[str]
    shards: np.ndarray  # (n,) object
    rows: np.ndarray  # (n,) int64
    snr: np.ndarray  # (n,) float64, the weaker arm's S/N
    labels: np.ndarray  # (n, 15) float64, NaN where the reference has none
    coadd: np.ndarray  # (n,) bool, nightly coadd (else single exposure)
    label_errors: np.ndarray  # (n, 15) float64 reference 1-sigma errors, NaN where unknown

    def __len__(self) -> int:
        return int(self.spectrum_ids.shape[0])

    def content_hash(self, codes: np.ndarray | None = None) -> str:
        """sha256 of what the network learns from: spectrum ids (by name), labels, split."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.medres_specids).encode())
        digest.update(np.ascontiguousarray(self.labels, dtype="<f8").tobytes())
        if np.isfinite(self.label_errors).any():
            digest.update(np.ascontiguousarray(self.label_errors, dtype="<f8").tobytes())
        if codes is not None:
            digest.update(np.ascontiguousarray(codes, dtype=np.int8).tobytes())
        return digest.hexdigest()


def training_set_select(*, catalog: ReferenceCatalog, min_snr: float = CatalogRules.min_snr) -> TrainingSet:
    """Preprocessed spectra of this installation's preprocessing version, S/N above
    ``min_snr`` in both arms and no REJECT flag, of stars whose reference labels pass the
    reference's quality flag, with the reference's errors of those labels (NaN where it
    gives none). Spectra older code preprocessed are left out: the model will read only
    arrays of the version it is trained on."""
    from spectra.processing.pipeline import PREPROCESSING_VERSION

    n_labels = len(LABEL_FIELDS)
    label_rows = (
        ReferenceLabel.objects.filter(catalog=catalog, quality_ok=True, star__isnull=False)
        .order_by("star_id", "match_method", "match_separation_arcsec", "id")
        .values_list("star_id", "flagged_labels", *LABEL_FIELDS, *LABEL_ERROR_FIELDS)
    )
    labels_by_star: dict[int, tuple] = {}
    for star_id, flagged, *values in label_rows:
        if star_id in labels_by_star:  # a star matched twice keeps its Gaia-id match, else the nearest row
            continue
        for name in flagged or ():  # a label the reference's own flags reject is not learned from
            k = LABEL_FIELDS.index(name)
            values[k] = values[n_labels + k] = None
        labels_by_star[star_id] = tuple(values)
    spectra = list(
        Spectrum.objects.filter(status=Spectrum.Status.PREPROCESSED, star_id__in=list(labels_by_star),
                                snr_blue__gt=min_snr, snr_red__gt=min_snr, array_shard__isnull=False,
                                preprocessing_version=PREPROCESSING_VERSION)
        .annotate(rejected=F("flags").bitand(SPECTRUM_FLAGS.reject_mask()))
        .filter(rejected=0)
        .order_by("id")
        .values_list("id", "star_id", "medres_specid", "array_shard", "array_row", "snr_blue", "snr_red", "kind")
    )
    if not spectra:
        raise TrainingSetError(f"no usable spectra of stars with good labels in reference catalog {catalog.name}")
    ids, stars, names, shards, rows, snr_blue, snr_red, kinds = zip(*spectra, strict=True)
    star_ids = np.asarray(stars, dtype=np.int64)
    values = np.array([labels_by_star[s] for s in stars], dtype=np.float64)  # None reads as NaN
    return TrainingSet(
        spectrum_ids=np.asarray(ids, dtype=np.int64),
        star_ids=star_ids,
        medres_specids=list(names),
        shards=np.asarray(shards, dtype=object),
        rows=np.asarray(rows, dtype=np.int64),
        snr=np.minimum(np.asarray(snr_blue, dtype=np.float64), np.asarray(snr_red, dtype=np.float64)),
        labels=values[:, :n_labels],
        coadd=np.asarray(kinds, dtype=object) == Spectrum.Kind.COADD,
        label_errors=values[:, n_labels:],
    )
