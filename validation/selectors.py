"""Reads of the validation app: the Table-1-like matrix of a release."""

from core.labels import LABELS

from .models import ValidationResult

TABLE_FIELDS = ("n_stars", "n_spectra", "bias", "scatter", "median_offset", "robust_scatter", "bias_error",
                "star_bias", "star_scatter", "slope", "intercept")


def validation_table(*, release) -> dict:
    """``{"surveys": [...], "labels": [{"label", "column", "<survey>": {bias, scatter, ...}}]}``."""
    results = list(ValidationResult.objects.filter(release=release).select_related("survey"))
    surveys = sorted({r.survey.name for r in results})
    by_key = {(r.label, r.survey.name): r for r in results}
    rows = []
    for label in LABELS:
        row = {"label": label.field, "column": label.column, "unit": label.unit}
        for survey in surveys:
            result = by_key.get((label.field, survey))
            row[survey] = {field: getattr(result, field) for field in TABLE_FIELDS} if result else None
        rows.append(row)
    return {"release": release.name, "surveys": surveys, "labels": rows}
