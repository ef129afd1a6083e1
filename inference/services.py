"""Writes of the inference app: label sets, catalog releases and their entries."""

from collections.abc import Callable

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from spectra.bulk import bulk_upsert
from spectra.flags import CATALOG_FLAGS
from spectra.labels import LABEL_ERROR_FIELDS, LABEL_FIELDS, LABELS
from spectra.models import CurationRecord
from spectra.services import curation_records_write

from .catalog_rules import CatalogRules, combine_models
from .models import CatalogEntry, CatalogRelease, LabelSet, ModelVersion
from .selectors import release_build_chunks


class ReleaseImmutableError(Exception):
    """Raised on any attempt to change a published release."""


def labelsets_upsert(
    *,
    model_version: ModelVersion,
    spectrum_ids: np.ndarray,
    values: np.ndarray,
    errors: np.ndarray,
    flags: np.ndarray | None = None,
    inference_seconds: float | None = None,
) -> int:
    """Write one model's labels for many spectra; re-running overwrites, never duplicates.

    ``values`` and ``errors`` are (n, 15) in ``spectra.labels.LABELS`` order; NaN is
    stored as NULL.
    """
    spectrum_ids = np.asarray(spectrum_ids, dtype=np.int64)
    n = spectrum_ids.shape[0]
    values = np.asarray(values, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    if values.shape != (n, len(LABELS)) or errors.shape != (n, len(LABELS)):
        raise ValueError(f"values and errors must be ({n}, {len(LABELS)}), got {values.shape}, {errors.shape}")
    if flags is None:
        flags = np.zeros(n, dtype=np.int64)
    now = timezone.now()
    columns: dict = {
        "spectrum_id": spectrum_ids,
        "model_version_id": np.full(n, model_version.pk, dtype=np.int64),
        "flags": np.asarray(flags, dtype=np.int64),
        "inference_seconds": np.full(n, np.nan if inference_seconds is None else inference_seconds),
        "predicted_at": [now] * n,
    }
    for i, field in enumerate(LABEL_FIELDS):
        columns[field] = values[:, i]
    for i, field in enumerate(LABEL_ERROR_FIELDS):
        columns[field] = errors[:, i]
    return bulk_upsert(LabelSet, columns, unique_fields=["spectrum_id", "model_version_id"])


def catalog_rules_current() -> CatalogRules:
    return CatalogRules.from_mapping(settings.CATALOG_RULES)


def catalog_release_models_check(*, formal_model: ModelVersion, alternate_model: ModelVersion) -> None:
    """Raise ValueError unless the two models can make a release together."""
    if formal_model.pk == alternate_model.pk:
        raise ValueError("a release needs two different models (formal and alternate)")
    if formal_model.role != ModelVersion.Role.FORMAL or alternate_model.role != ModelVersion.Role.ALTERNATE:
        raise ValueError(
            f"model roles must be formal and alternate, got {formal_model.role} and {alternate_model.role}"
        )
    if formal_model.preprocessing_version != alternate_model.preprocessing_version:
        raise ValueError("the two models were trained on differently preprocessed spectra")


def catalog_release_create(
    *,
    name: str,
    formal_model: ModelVersion,
    alternate_model: ModelVersion,
    description: str = "",
    created_by=None,
    rules: CatalogRules | None = None,
) -> CatalogRelease:
    """Register a draft release of the two models' combined labels."""
    catalog_release_models_check(formal_model=formal_model, alternate_model=alternate_model)
    rules = rules or catalog_rules_current()
    return CatalogRelease.objects.create(
        name=name,
        description=description,
        formal_model=formal_model,
        alternate_model=alternate_model,
        rules=rules.as_dict(),
        created_by=created_by,
    )


def catalog_release_build(
    *,
    release: CatalogRelease,
    chunk_size: int = 20_000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """(Re)compute the entries of a draft release from the two models' label sets.

    Every spectrum predicted by the formal model gets an entry; one the alternate model
    has not predicted fails the agreement rules (Flag = 0) instead of being dropped.
    An entry a curator flagged in this draft (``catalog_entries_curate``) keeps its
    CURATOR_FLAGGED bit and Flag = 0 through the rebuild. Returns the number of entries
    written.
    """
    if release.is_published:
        raise ReleaseImmutableError(f"release {release.name} is published and cannot be rebuilt")
    rules = CatalogRules.from_mapping(release.rules)
    curator_mask = np.int64(CATALOG_FLAGS["CURATOR_FLAGGED"].mask)
    curated = np.fromiter(
        CatalogEntry.objects.filter(release=release)
        .alias(_curated=F("flag_bits").bitand(int(curator_mask)))
        .exclude(_curated=0)
        .values_list("spectrum_id", flat=True),
        dtype=np.int64,
    )
    written = 0
    for chunk in release_build_chunks(release=release, chunk_size=chunk_size):
        combined = combine_models(
            chunk.formal, chunk.alternate, chunk.formal_errors,
            chunk.snr_blue, chunk.snr_red, chunk.spectrum_flags, rules,
        )
        if curated.size:
            kept = np.isin(chunk.spectrum_ids, curated)
            combined.bits[kept] |= curator_mask
            combined.flag[kept] = 0
        n = chunk.spectrum_ids.shape[0]
        columns: dict = {
            "release_id": np.full(n, release.pk, dtype=np.int64),
            "spectrum_id": chunk.spectrum_ids,
            "formal_labels_id": chunk.formal_ids,
            "alternate_labels_id": chunk.alternate_ids,
            **chunk.identity,
            "flag": combined.flag,
            "flag_bits": combined.bits,
        }
        for i, field in enumerate(LABEL_FIELDS):
            columns[field] = combined.values[:, i]
        for i, field in enumerate(LABEL_ERROR_FIELDS):
            columns[field] = combined.errors[:, i]
        written += bulk_upsert(CatalogEntry, columns, unique_fields=["release_id", "spectrum_id"])
        if progress is not None:
            progress(n)
    entries = CatalogEntry.objects.filter(release=release)
    release.entry_count = entries.count()
    release.good_count = entries.filter(flag=1).count()
    release.save(update_fields=["entry_count", "good_count"])
    return written


@transaction.atomic
def catalog_release_publish(*, release: CatalogRelease) -> CatalogRelease:
    """Freeze a release. Published releases are never changed again."""
    locked = CatalogRelease.objects.select_for_update().get(pk=release.pk)
    if locked.is_published:
        raise ReleaseImmutableError(f"release {locked.name} is already published")
    if locked.entry_count == 0:
        raise ValueError(f"release {locked.name} has no entries: build it before publishing")
    locked.status = CatalogRelease.Status.PUBLISHED
    locked.published_at = timezone.now()
    locked.save(update_fields=["status", "published_at"])
    return locked


@transaction.atomic
def catalog_entries_curate(*, user, ids: list[int], flagged: bool, reason: str) -> int:
    """Set or clear CURATOR_FLAGGED on entries of draft releases, recomputing Flag.

    Entries of a published release are refused: a published release never changes.
    """
    if not reason.strip():
        raise ValueError("a curation needs a reason")
    published = set(
        CatalogEntry.objects.filter(pk__in=ids, release__status=CatalogRelease.Status.PUBLISHED).values_list(
            "release__name", flat=True
        )
    )
    if published:
        raise ValueError(f"entries of published release(s) {', '.join(sorted(published))} cannot change")
    mask = CATALOG_FLAGS["CURATOR_FLAGGED"].mask
    reject = CATALOG_FLAGS.reject_mask()
    changes, updated = [], []
    for entry in CatalogEntry.objects.select_for_update().filter(pk__in=ids).only("pk", "flag_bits", "flag"):
        before = entry.flag_bits
        after = before | mask if flagged else before & ~mask
        if after != before:
            changes.append((entry.pk, before, after))
            entry.flag_bits = after
            entry.flag = 0 if after & reject else 1
            updated.append(entry)
    CatalogEntry.objects.bulk_update(updated, ["flag_bits", "flag"])
    curation_records_write(
        user=user, target_type=CurationRecord.Target.CATALOG_ENTRY, changes=changes, flagged=flagged, reason=reason
    )
    return len(changes)
