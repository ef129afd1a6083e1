"""Import reference surveys and validate releases against them."""

import hashlib
from pathlib import Path

import numpy as np
from django.db import transaction

from core.bulk import keyed_numeric_columns
from core.labels import LABEL_FIELDS
from inference.models import CatalogEntry, CatalogRelease
from spectra.refcat.matching import reference_rows_match
from spectra.refcat.storage import reference_rows_store

from .formats import SURVEY_FORMATS, SurveyFormatError, survey_format_from_mapping, survey_table_read
from .models import ReferenceStar, ReferenceSurvey, ValidationResult
from .statistics import ABUNDANCE_EDGES, VALUE_EDGES, compare_label

# Repeated identifiers listed in a survey's import notes (all are counted).
DUPLICATES_RECORDED = 100


def reference_survey_import(
    *, name: str, path: str | Path, format_name: str | None = None, mapping: dict | None = None
) -> ReferenceSurvey:
    """Import (or re-import in place) a survey catalog, apply its quality cut, match its stars;
    only new and changed rows are written.

    A star listed twice (APOGEE: one APOGEE_ID observed in two fields) keeps one row, chosen
    by the cut's duplicate policy; the others are dropped and counted, never an error.
    """
    if (format_name is None) == (mapping is None):
        raise SurveyFormatError("give a known format or a column mapping, not both")
    survey_format = SURVEY_FORMATS.get(format_name) if format_name else survey_format_from_mapping(mapping)
    if survey_format is None:
        raise SurveyFormatError(f"unknown format {format_name!r}; known: {', '.join(SURVEY_FORMATS)}")
    path = Path(path)
    table = survey_table_read(path, survey_format)
    n = len(table.source_ids)
    with transaction.atomic():
        survey, _ = ReferenceSurvey.objects.update_or_create(
            name=name,
            defaults={"survey": survey_format.survey, "data_release": survey_format.data_release,
                      "catalog_format": format_name or "mapping", "source_path": str(path),
                      "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                      "column_mapping": survey_format.as_dict(), "quality_cut": survey_format.quality.name,
                      "row_count": n, "clean_count": int(table.row_ok.sum()),
                      "duplicate_count": table.duplicates_dropped,
                      "import_notes": {"rows_in_file": table.rows_in_file, "duplicate_rule": table.duplicate_rule,
                                       "duplicates": table.duplicate_groups[:DUPLICATES_RECORDED]}},
        )
        columns = {
            "source_id": table.source_ids,
            "ra": table.ra,
            "dec": table.dec,
            "gaia_source_id": table.gaia,
            "quality_flags": table.recorded_flags,
            "passes_quality": table.row_ok.tolist(),
            "flagged_labels": table.flagged_labels,
            **{field: table.labels[:, k] for k, field in enumerate(LABEL_FIELDS)},
        }
        stored = reference_rows_store(model=ReferenceStar, parent_field="survey_id", parent_id=survey.pk, columns=columns)
        survey.import_notes = {**survey.import_notes, "rows_written": stored["written"], "rows_deleted": stored["deleted"]}
        survey.save(update_fields=["import_notes"])
    reference_survey_match(survey=survey)
    survey.refresh_from_db()
    return survey


def reference_survey_match(*, survey: ReferenceSurvey) -> dict[str, int]:
    """(Re)match a survey's stars to ours (``spectra.refcat.matching``): Gaia source id
    within REFERENCE_GAIA_MATCH_MAX_ARCSEC, then position; only changed rows are written."""
    with transaction.atomic():
        summary = reference_rows_match(rows=ReferenceStar.objects.filter(survey=survey))
        survey.matched_count = summary.matched
        survey.save(update_fields=["matched_count", "imported_at"])
    return summary.as_dict()


def _value_edges(field: str):
    return VALUE_EDGES.get(field, ABUNDANCE_EDGES)


def release_validate(
    *,
    release: CatalogRelease,
    surveys: list[ReferenceSurvey] | None = None,
    apply_quality_cuts: bool = True,
    good_only: bool = True,
    rematch: bool = True,
) -> list[ValidationResult]:
    """Compare a release with each survey, per label and spectrum; store and return the results.

    Every compared spectrum counts (a star observed several times is compared several
    times, as in the paper); per-star summaries are stored beside. Only Flag = 1 rows are
    compared unless ``good_only`` is False; labels without a value (NULL: hot stars'
    abundances, labels a survey does not give) are left out, not zero.
    """
    surveys = surveys if surveys is not None else list(ReferenceSurvey.objects.all())
    results = []
    for survey in surveys:
        match = reference_survey_match(survey=survey) if rematch else {}
        refs = ReferenceStar.objects.filter(survey=survey, star__isnull=False)
        if apply_quality_cuts:
            refs = refs.filter(passes_quality=True)
        # A star matched by several rows keeps one: a Gaia-id match before a positional one,
        # then the nearest. Labels a per-label flag rejects are left out when the cut applies.
        ref_rows = list(refs.order_by("star_id", "match_method", "match_separation_arcsec", "id").values_list(
            "star_id", "flagged_labels", *LABEL_FIELDS))
        if ref_rows:
            ref_star = np.array([r[0] for r in ref_rows], dtype=np.int64)
            first = np.r_[True, ref_star[1:] != ref_star[:-1]]
            ref_star = ref_star[first]
            ref_labels = np.array([r[2:] for r in ref_rows], dtype=np.float64)[first]
            if apply_quality_cuts:
                for i, flagged in enumerate(r[1] for r, keep in zip(ref_rows, first, strict=True) if keep):
                    for name in flagged or ():
                        ref_labels[i, LABEL_FIELDS.index(name)] = np.nan
        else:
            ref_star, ref_labels = np.empty(0, dtype=np.int64), np.empty((0, len(LABEL_FIELDS)))
        entries = CatalogEntry.objects.filter(release=release, spectrum__star_id__in=refs.values("star_id"))
        if good_only:
            entries = entries.filter(flag=1)
        star_ids, columns = keyed_numeric_columns(entries.order_by(), "spectrum__star_id",
                                                  ["snr_blue", "snr_red", *LABEL_FIELDS])
        snr = np.fmin(columns[:, 0], columns[:, 1])
        ours = columns[:, 2:]
        theirs = ref_labels[np.searchsorted(ref_star, star_ids)] if star_ids.size else np.empty((0, len(LABEL_FIELDS)))
        options = {"quality_cut": survey.quality_cut if apply_quality_cuts else "none", "good_only": good_only,
                   "reference_stars_matched": int(ref_star.size), **{f"matched_{k}": v for k, v in match.items()}}
        with transaction.atomic():
            ValidationResult.objects.filter(release=release, survey=survey).delete()
            for k, field in enumerate(LABEL_FIELDS):
                stats = compare_label(ours[:, k], theirs[:, k], star_ids, snr, _value_edges(field))
                if stats is None:
                    continue
                results.append(ValidationResult.objects.create(
                    release=release, survey=survey, label=field, options=options, **stats))
    return results
