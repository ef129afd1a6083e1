"""Import reference surveys and validate releases against them."""

import hashlib
from pathlib import Path

import numpy as np
from django.db import transaction

from inference.models import CatalogEntry, CatalogRelease
from spectra.bulk import bulk_upsert, numeric_columns, table_analyze
from spectra.labels import LABEL_FIELDS
from spectra.selectors import stars_crossmatch

from .formats import SURVEY_FORMATS, SurveyFormat, SurveyFormatError, survey_table_read
from .models import ReferenceStar, ReferenceSurvey, ValidationResult
from .quality import QUALITY_CUTS
from .statistics import ABUNDANCE_EDGES, VALUE_EDGES, compare_label


def reference_survey_import(
    *, name: str, path: str | Path, format_name: str | None = None, mapping: dict | None = None
) -> ReferenceSurvey:
    """Import (or re-import in place) a survey catalog, apply its quality cut, match its stars."""
    if (format_name is None) == (mapping is None):
        raise SurveyFormatError("give a known format or a column mapping, not both")
    survey_format = SURVEY_FORMATS.get(format_name) if format_name else SurveyFormat.from_mapping(mapping)
    if survey_format is None:
        raise SurveyFormatError(f"unknown format {format_name!r}; known: {', '.join(SURVEY_FORMATS)}")
    if survey_format.quality_cut not in QUALITY_CUTS:
        raise SurveyFormatError(f"unknown quality cut {survey_format.quality_cut!r}; known: {', '.join(QUALITY_CUTS)}")
    path = Path(path)
    table = survey_table_read(path, survey_format)
    n = len(table.source_ids)
    try:
        clean = QUALITY_CUTS[survey_format.quality_cut](table.flags, n)
    except KeyError as error:
        raise SurveyFormatError(f"{path}: {error.args[0]}") from error
    flag_rows = [dict(zip(table.flags, values, strict=True)) for values in zip(*(
        np.asarray(column).reshape(n, -1).tolist() for column in table.flags.values()), strict=True)] if table.flags else [{}] * n
    with transaction.atomic():
        survey, _ = ReferenceSurvey.objects.update_or_create(
            name=name,
            defaults={"survey": survey_format.survey, "data_release": survey_format.data_release,
                      "catalog_format": format_name or "mapping", "source_path": str(path),
                      "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                      "column_mapping": survey_format.as_dict(), "quality_cut": survey_format.quality_cut,
                      "row_count": n, "clean_count": int(clean.sum())},
        )
        columns = {
            "survey_id": np.full(n, survey.pk, dtype=np.int64),
            "source_id": table.source_ids,
            "ra": table.ra,
            "dec": table.dec,
            "gaia_source_id": [int(g) if g > 0 else None for g in table.gaia],
            "quality_flags": flag_rows,
            "passes_quality": clean.tolist(),
            **{field: table.labels[:, k] for k, field in enumerate(LABEL_FIELDS)},
        }
        bulk_upsert(ReferenceStar, columns, unique_fields=["survey_id", "source_id"])
        ReferenceStar.objects.filter(survey=survey).exclude(source_id__in=table.source_ids).delete()
    table_analyze(ReferenceStar)  # fresh statistics, or the planner guesses a few rows and loops
    reference_survey_match(survey=survey)
    survey.refresh_from_db()
    return survey


def reference_survey_match(*, survey: ReferenceSurvey) -> dict[str, int]:
    """(Re)match a survey's stars to ours: Gaia source id first, then position.

    The match is recomputed in memory every time (stars may have been added) and only the
    rows whose match changed are written.
    """
    refs = list(ReferenceStar.objects.filter(survey=survey).order_by("id").values_list(
        "id", "gaia_source_id", "ra", "dec", "star_id", "match_method"))
    ids, gaia, ra, dec, old_star, old_method = (list(c) for c in zip(*refs, strict=True)) if refs else ([],) * 6
    matches = stars_crossmatch(gaia=gaia, ra=np.asarray(ra), dec=np.asarray(dec))
    old_star = np.array([-1 if s is None else s for s in old_star], dtype=np.int64)
    changed = (old_star != matches.star_id) | (np.asarray(old_method, dtype=object) != matches.method)
    ref_ids = np.asarray(ids, dtype=np.int64)
    with transaction.atomic():
        unmatched = ref_ids[changed & ~matches.matched]
        for start in range(0, unmatched.size, 50_000):
            ReferenceStar.objects.filter(pk__in=unmatched[start : start + 50_000].tolist()).update(
                star=None, match_method="", match_separation_arcsec=None)
        for method in (ReferenceStar.Match.GAIA, ReferenceStar.Match.POSITION):
            chosen = changed & (matches.method == method)
            if chosen.any():
                _update_matches(ref_ids[chosen], matches.star_id[chosen], method, matches.separation_arcsec[chosen])
        survey.matched_count = int(matches.matched.sum())
        survey.save(update_fields=["matched_count", "imported_at"])
    return {"matched": survey.matched_count, "by_gaia": matches.by_gaia, "by_position": matches.by_position,
            "changed": int(changed.sum())}


def _update_matches(ref_ids: np.ndarray, star_ids: np.ndarray, method: str, separation: np.ndarray) -> None:
    """One UPDATE ... FROM (VALUES ...) per batch instead of one per row."""
    from django.db import connection

    table = ReferenceStar._meta.db_table
    rows = list(zip(ref_ids.tolist(), star_ids.tolist(), separation.tolist(), strict=True))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 10_000):
            batch = rows[start : start + 10_000]
            placeholders = ", ".join(["(%s, %s, %s)"] * len(batch))
            params = [value for row in batch for value in row]
            if connection.vendor == "postgresql":
                cursor.execute(
                    f"UPDATE {table} AS r SET star_id = v.star_id::bigint, match_method = %s, "
                    f"match_separation_arcsec = v.sep::double precision FROM (VALUES {placeholders}) "
                    f"AS v(id, star_id, sep) WHERE r.id = v.id::bigint", [method, *params])
            else:
                for ref_id, star_id, sep in batch:
                    cursor.execute(f"UPDATE {table} SET star_id = %s, match_method = %s, match_separation_arcsec = %s "
                                   f"WHERE id = %s", [star_id, method, sep, ref_id])


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
        ref_rows = list(refs.order_by("star_id", "id").values_list("star_id", *LABEL_FIELDS))
        if ref_rows:
            ref_star = np.array([r[0] for r in ref_rows], dtype=np.int64)
            first = np.r_[True, ref_star[1:] != ref_star[:-1]]  # a star matched twice keeps its first row
            ref_star = ref_star[first]
            ref_labels = np.array([r[1:] for r in ref_rows], dtype=np.float64)[first]
        else:
            ref_star, ref_labels = np.empty(0, dtype=np.int64), np.empty((0, len(LABEL_FIELDS)))
        entries = CatalogEntry.objects.filter(release=release, spectrum__star_id__in=refs.values("star_id"))
        if good_only:
            entries = entries.filter(flag=1)
        columns = numeric_columns(entries.order_by(), ["spectrum__star_id", "snr_blue", "snr_red", *LABEL_FIELDS])
        star_ids = columns[:, 0].astype(np.int64)
        snr = np.fmin(columns[:, 1], columns[:, 2])
        ours = columns[:, 3:]
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
