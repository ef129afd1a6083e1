"""Trained networks, their predictions, and the published catalog.

Labels are typed columns, one per label and one per uncertainty (see core.labels),
never JSON blobs.
"""

from django.conf import settings
from django.db import models

from core.labels import LABELS
from spectra.models import Spectrum


class LabelValues(models.Model):
    """The 15 labels as typed columns (fields added from core.labels.LABELS below)."""

    class Meta:
        abstract = True


class LabelErrors(models.Model):
    """The 15 labels' 1-sigma uncertainties as typed columns (fields added below)."""

    class Meta:
        abstract = True


for _label in LABELS:
    LabelValues.add_to_class(
        _label.field, models.FloatField(null=True, blank=True, help_text=f"{_label.description} ({_label.unit}).")
    )
for _label in LABELS:
    LabelErrors.add_to_class(
        _label.error_field,
        models.FloatField(null=True, blank=True, help_text=f"1-sigma uncertainty of {_label.column} ({_label.unit})."),
    )
del _label


class ModelVersion(models.Model):
    """One trained network, registered with everything needed to trust and reuse it."""

    class Role(models.TextChoices):
        FORMAL = "formal", "Formal"
        ALTERNATE = "alternate", "Alternate"

    name = models.SlugField(max_length=80, unique=True)
    role = models.CharField(max_length=10, choices=Role.choices, db_index=True)
    artifact_uri = models.CharField(max_length=1024)
    artifact_sha256 = models.CharField(max_length=64, unique=True)
    config = models.JSONField(default=dict, help_text="Network and training hyperparameters.")
    training_set_hash = models.CharField(max_length=64)
    metrics = models.JSONField(
        default=dict, blank=True, help_text="Test-set accuracy and precision per label and S/N bin."
    )
    code_version = models.CharField(max_length=64)
    preprocessing_version = models.CharField(max_length=32)
    reference_catalog = models.ForeignKey(
        "ReferenceCatalog", null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.role})"


class LabelSet(LabelValues, LabelErrors):
    """One model's labels for one spectrum."""

    spectrum = models.ForeignKey(Spectrum, on_delete=models.CASCADE, related_name="label_sets")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="label_sets")
    flags = models.BigIntegerField(default=0, help_text="Label-set flag bits (docs/flags.md).")
    inference_seconds = models.FloatField(
        null=True, blank=True, help_text="Wall time of the prediction, per spectrum (s)."
    )
    predicted_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["spectrum", "model_version"], name="labelset_unique_spectrum_model")
        ]
        indexes = [models.Index(fields=["model_version", "spectrum"])]

    def __str__(self) -> str:
        return f"{self.spectrum_id} by {self.model_version_id}"


class CatalogRelease(models.Model):
    """A named, versioned catalog: the two models' results combined by the catalog rules.

    A release is immutable once published; a new model means a new release.
    """

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"

    name = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    formal_model = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    alternate_model = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    rules = models.JSONField(default=dict, help_text="The catalog-rule thresholds applied.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    entry_count = models.PositiveBigIntegerField(default=0)
    good_count = models.PositiveBigIntegerField(default=0)
    star_count = models.PositiveBigIntegerField(default=0, help_text="Rows of the star table.")
    good_star_count = models.PositiveBigIntegerField(default=0, help_text="Stars with a Flag = 1 spectrum.")
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_published(self) -> bool:
        return self.status == self.Status.PUBLISHED


class CatalogEntry(LabelValues, LabelErrors):
    """One published row: a spectrum's labels in a release (paper Table 2).

    The identity, position, S/N and RV columns are copied from the spectrum and star when
    the release is built, so a published row never changes after publication and the
    catalog can be filtered and exported from this one table.
    """

    # No index of its own: every index of the table leads with the release (and each
    # release's rows are a partition of their own on PostgreSQL).
    release = models.ForeignKey(CatalogRelease, on_delete=models.CASCADE, related_name="entries", db_index=False)
    spectrum = models.ForeignKey(Spectrum, on_delete=models.PROTECT, related_name="catalog_entries")
    formal_labels = models.ForeignKey(LabelSet, null=True, on_delete=models.PROTECT, related_name="+")
    alternate_labels = models.ForeignKey(LabelSet, null=True, on_delete=models.PROTECT, related_name="+")
    designation = models.CharField(max_length=32)
    gaia_source_id = models.BigIntegerField(null=True, blank=True)
    medres_specid = models.CharField(max_length=80)
    medid_blue = models.CharField(max_length=80, blank=True)
    medid_red = models.CharField(max_length=80, blank=True)
    ra = models.FloatField()
    dec = models.FloatField()
    snr_blue = models.FloatField(null=True, blank=True)
    snr_red = models.FloatField(null=True, blank=True)
    rv_blue = models.FloatField(null=True, blank=True)
    rv_red = models.FloatField(null=True, blank=True)
    rv_blue_err = models.FloatField(null=True, blank=True, help_text="Uncertainty of rv_blue (km/s).")
    rv_red_err = models.FloatField(null=True, blank=True, help_text="Uncertainty of rv_red (km/s).")
    flag = models.PositiveSmallIntegerField(
        choices=[(1, "1 good"), (0, "0 bad")], help_text="1 good, 0 bad (paper Table 2)."
    )
    flag_bits = models.BigIntegerField(default=0, help_text="Catalog flag bits: the reasons (docs/flags.md).")

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "catalog entries"
        constraints = [
            models.UniqueConstraint(fields=["release", "spectrum"], name="entry_unique_release_spectrum")
        ]
        indexes = [
            # A page's ids come from an index alone (an index-only scan) for the common selection
            # (Flag, Teff, log g, [Fe/H], S/N) and for a cone; then only the page's rows are read
            # (core/api/pagination.py).
            models.Index(fields=["release", "flag", "teff"], include=["logg", "fe_h", "snr_blue", "snr_red", "id"],
                         name="entry_rel_flag_teff_idx"),
            models.Index(fields=["release", "dec", "ra"], include=["id"], name="entry_rel_dec_ra_idx"),
            models.Index(fields=["release", "gaia_source_id"], name="entry_rel_gaia_idx"),
            models.Index(fields=["release", "designation"], name="entry_rel_desig_idx"),
            models.Index(fields=["release", "medres_specid"], name="entry_rel_specid_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.release_id}:{self.medres_specid}"


class LabelChi2(models.Model):
    """The reduced chi-square of a star's Flag = 1 values of each label (fields added below)."""

    class Meta:
        abstract = True


for _label in LABELS:
    LabelChi2.add_to_class(
        f"{_label.field}_chi2r",
        models.FloatField(
            null=True, blank=True,
            help_text=f"Reduced chi-square of the star's Flag = 1 {_label.column} values about their mean "
            "(NULL below two spectra).",
        ),
    )
del _label


class CatalogStar(LabelValues, LabelErrors, LabelChi2):
    """One star of a release: its Flag = 1 spectra combined (inference/star_combine.py).

    Labels are inverse-variance weighted means with uncertainty 1/sqrt(sum of weights),
    NULL where no Flag = 1 spectrum of the star has the label. Built with the release's
    entries (``catalog_release_build``) and, like them, never changed after publication.
    Identity and position are the star's when the table was built.
    """

    # No index of its own: every index of the table leads with the release.
    release = models.ForeignKey(CatalogRelease, on_delete=models.CASCADE, related_name="stars", db_index=False)
    star = models.ForeignKey(
        "spectra.Star", null=True, blank=True, on_delete=models.PROTECT, related_name="catalog_rows",
        help_text="NULL only in a published release whose star was later merged into one that has its own row.",
    )
    designation = models.CharField(max_length=32)
    gaia_source_id = models.BigIntegerField(null=True, blank=True)
    ra = models.FloatField()
    dec = models.FloatField()
    n_spectra = models.PositiveIntegerField(help_text="Flag = 1 spectra of the star, combined here.")
    n_spectra_all = models.PositiveIntegerField(help_text="Spectra of the star in the release, any flag.")
    flag = models.PositiveSmallIntegerField(
        choices=[(1, "1 good"), (0, "0 bad")], help_text="1 when at least one spectrum of the star has Flag = 1."
    )
    best_spectrum = models.ForeignKey(
        Spectrum, on_delete=models.PROTECT, related_name="+",
        help_text="The Flag = 1 spectrum with the highest S/N in the weaker arm (any flag when none is Flag = 1).",
    )
    best_medres_specid = models.CharField(max_length=80)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["release", "star"], name="catalogstar_unique_release_star")]
        indexes = [
            models.Index(fields=["release", "flag", "teff"], include=["logg", "fe_h", "id"],
                         name="cstar_rel_flag_teff_idx"),
            models.Index(fields=["release", "dec", "ra"], include=["id"], name="cstar_rel_dec_ra_idx"),
            models.Index(fields=["release", "gaia_source_id"], name="cstar_rel_gaia_idx"),
            models.Index(fields=["release", "designation"], name="cstar_rel_desig_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.release_id}:{self.designation}"


class ReferenceCatalog(models.Model):
    """An imported catalog of trusted labels (APOGEE-Payne-like) used to train the networks."""

    name = models.SlugField(max_length=80, unique=True)
    source_path = models.CharField(max_length=1024)
    source_sha256 = models.CharField(max_length=64)
    column_mapping = models.JSONField(help_text="Which source column is which label, id, position and flag.")
    row_count = models.PositiveIntegerField(default=0)
    good_count = models.PositiveIntegerField(default=0, help_text="Rows passing the catalog's quality flag.")
    matched_count = models.PositiveIntegerField(default=0, help_text="Rows matched to a star of the catalog.")
    duplicate_count = models.PositiveIntegerField(
        default=0, help_text="Rows dropped at import because their identifier repeats a kept row's.")
    import_notes = models.JSONField(default=dict, blank=True, help_text="Which rows were dropped as duplicates, and why.")
    imported_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ReferenceLabel(LabelValues, LabelErrors):
    """One star's reference labels and their 1-sigma errors; NULL where the reference gives no value."""

    class Match(models.TextChoices):
        GAIA = "gaia", "Gaia source id"
        POSITION = "position", "Position"
        NONE = "", "Not matched"

    catalog = models.ForeignKey(ReferenceCatalog, on_delete=models.CASCADE, related_name="labels")
    source_id = models.CharField(max_length=64, help_text="The star's identifier in the reference catalog.")
    ra = models.FloatField()
    dec = models.FloatField()
    gaia_source_id = models.BigIntegerField(null=True, blank=True)
    quality_ok = models.BooleanField(help_text="Passes the reference catalog's quality flag.")
    quality_value = models.CharField(max_length=64, blank=True, help_text="The raw quality flag.")
    flagged_labels = models.JSONField(
        default=list, blank=True, help_text="Labels the reference's per-label flags reject: not trained on.")
    star = models.ForeignKey(
        "spectra.Star", null=True, blank=True, on_delete=models.SET_NULL, related_name="reference_labels"
    )
    match_method = models.CharField(max_length=8, choices=Match.choices, blank=True, default="")
    match_separation_arcsec = models.FloatField(null=True, blank=True)
    match_note = models.CharField(max_length=200, blank=True, default="",
                                  help_text="Why the row is matched as it is, e.g. a Gaia-id match refused as too far.")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["catalog", "source_id"], name="reference_unique_catalog_source")
        ]
        indexes = [models.Index(fields=["catalog", "star"])]

    def __str__(self) -> str:
        return f"{self.catalog_id}:{self.source_id}"
