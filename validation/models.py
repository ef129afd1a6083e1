"""Reference surveys and cross-survey validation results.

Labels of a reference star are typed columns, converted to our convention ([X/H]) at
import; the raw quality-flag columns are kept as the survey gives them (``quality_flags``)
so that a quality cut can be re-applied or switched off at validation time.
"""

from django.db import models

from inference.models import CatalogRelease, LabelValues
from spectra.models import Star


class ReferenceSurvey(models.Model):
    """One imported catalog of another survey (APOGEE, GALAH, RAVE, or a mapped catalog)."""

    name = models.SlugField(max_length=80, unique=True)
    survey = models.CharField(max_length=32, help_text="apogee, galah, rave, or the mapping's survey name.")
    data_release = models.CharField(max_length=32, blank=True)
    catalog_format = models.CharField(max_length=32, help_text="The column layout it was read with.")
    source_path = models.CharField(max_length=1024)
    source_sha256 = models.CharField(max_length=64)
    column_mapping = models.JSONField(help_text="Columns, units and conventions used to read it.")
    quality_cut = models.CharField(max_length=64, blank=True, help_text="Name of the quality cut (validation.quality).")
    row_count = models.PositiveIntegerField(default=0)
    clean_count = models.PositiveIntegerField(default=0, help_text="Rows passing the quality cut.")
    matched_count = models.PositiveIntegerField(default=0)
    duplicate_count = models.PositiveIntegerField(
        default=0, help_text="Rows dropped at import because their identifier repeats a kept row's.")
    import_notes = models.JSONField(default=dict, blank=True, help_text="Which rows were dropped as duplicates, and why.")
    imported_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ReferenceStar(LabelValues):
    """One star of a reference survey, labels as [X/H] (NULL where the survey has none)."""

    class Match(models.TextChoices):
        GAIA = "gaia", "Gaia source id"
        POSITION = "position", "Position"
        NONE = "", "Not matched"

    survey = models.ForeignKey(ReferenceSurvey, on_delete=models.CASCADE, related_name="stars")
    source_id = models.CharField(max_length=64)
    ra = models.FloatField()
    dec = models.FloatField()
    gaia_source_id = models.BigIntegerField(null=True, blank=True)
    quality_flags = models.JSONField(default=dict, help_text="The survey's raw quality-flag values.")
    passes_quality = models.BooleanField(help_text="Passes the survey's per-row quality tests.")
    flagged_labels = models.JSONField(
        default=list, blank=True, help_text="Labels the survey's per-label flags reject (left out when the cut applies).")
    star = models.ForeignKey(Star, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    match_method = models.CharField(max_length=8, choices=Match.choices, blank=True, default="")
    match_separation_arcsec = models.FloatField(null=True, blank=True)
    match_note = models.CharField(max_length=200, blank=True, default="",
                                  help_text="Why the row is matched as it is, e.g. a Gaia-id match refused as too far.")

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["survey", "source_id"], name="refstar_unique_survey_source")]
        indexes = [models.Index(fields=["survey", "star"])]

    def __str__(self) -> str:
        return f"{self.survey_id}:{self.source_id}"


class ValidationResult(models.Model):
    """Our labels minus a survey's, for one label of one release (paper Table 1)."""

    release = models.ForeignKey(CatalogRelease, on_delete=models.CASCADE, related_name="validation_results")
    survey = models.ForeignKey(ReferenceSurvey, on_delete=models.CASCADE, related_name="results")
    label = models.CharField(max_length=16)
    n_stars = models.PositiveIntegerField()
    n_spectra = models.PositiveIntegerField()
    bias = models.FloatField(null=True, help_text="Mean of ours minus theirs, over spectra.")
    scatter = models.FloatField(null=True, help_text="Standard deviation of ours minus theirs.")
    median_offset = models.FloatField(null=True)
    robust_scatter = models.FloatField(null=True, help_text="1.4826 x median absolute deviation.")
    bias_error = models.FloatField(null=True, help_text="Statistical error of the bias (scatter / sqrt(n_stars)).")
    star_bias = models.FloatField(null=True, help_text="Mean over stars of each star's mean difference.")
    star_scatter = models.FloatField(null=True)
    slope = models.FloatField(null=True, help_text="Regression of the difference on our value.")
    intercept = models.FloatField(null=True)
    by_value = models.JSONField(default=dict, help_text="Bias and scatter binned by our label value.")
    by_snr = models.JSONField(default=dict, help_text="Bias and scatter binned by S/N (weaker arm).")
    sample = models.JSONField(default=dict, help_text="Up to 5,000 (ours, difference) pairs for the plot.")
    options = models.JSONField(default=dict, help_text="Quality cut applied, Flag filter, match counts.")
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["release", "survey", "id"]
        constraints = [
            models.UniqueConstraint(fields=["release", "survey", "label"], name="validation_unique_release_survey_label")
        ]

    def __str__(self) -> str:
        return f"{self.release_id}/{self.survey_id}/{self.label}"
