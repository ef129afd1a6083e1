from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from core.admin import ReadOnlyAdmin

from .models import ReferenceStar, ReferenceSurvey, ValidationResult


@admin.register(ReferenceSurvey)
class ReferenceSurveyAdmin(ReadOnlyAdmin):
    list_display = ["name", "survey", "data_release", "catalog_format", "quality_cut", "row_count", "clean_count",
                    "matched_count", "imported_at"]
    search_fields = ["name"]


@admin.register(ReferenceStar)
class ReferenceStarAdmin(ReadOnlyAdmin):
    list_display = ["source_id", "survey", "star", "match_method", "match_separation_arcsec", "passes_quality",
                    "teff", "logg", "fe_h"]
    list_select_related = ["survey", "star"]
    list_filter = ["survey", "passes_quality", "match_method"]
    search_fields = ["=source_id", "=gaia_source_id", "^star__designation"]
    raw_id_fields = ["star"]


@admin.register(ValidationResult)
class ValidationResultAdmin(ReadOnlyAdmin):
    list_display = ["release", "survey", "label", "n_stars", "n_spectra", "bias", "scatter", "robust_scatter",
                    "table_page"]
    list_select_related = ["release", "survey"]
    list_filter = ["release", "survey", "label"]
    readonly_fields = ["plot"]

    @admin.display(description="Table 1")
    def table_page(self, result: ValidationResult) -> str:
        url = reverse("release-validation-page", kwargs={"name": result.release.name})
        return format_html('<a href="{}">table</a>', url)

    @admin.display(description="differences against our value")
    def plot(self, result: ValidationResult) -> str:
        url = reverse("release-validation-plot", kwargs={"name": result.release.name, "survey": result.survey.name})
        return format_html('<img src="{}" alt="validation plot" style="max-width:100%">', url)
