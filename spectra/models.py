"""Stars, their spectra, and the curators' log.

Pixels never live in these rows: a spectrum points at its normalised arrays in an array
shard (``array_shard``, ``array_row``) and at the FITS file it came from (path, sha256).
"""

from django.conf import settings
from django.db import models

from core.flags import SPECTRUM_FLAGS


class Star(models.Model):
    """One object on the sky; it may have many spectra (exposures, nights, plans)."""

    designation = models.CharField(
        max_length=32, db_index=True, help_text="LAMOST designation, 'LAMOST Jhhmmss.ss+ddmmss.s'."
    )
    gaia_source_id = models.BigIntegerField(
        null=True, blank=True, db_index=True, help_text="Gaia DR2 source_id, when known."
    )
    ra = models.FloatField(help_text="Right ascension, J2000, degrees.")
    dec = models.FloatField(help_text="Declination, J2000, degrees.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["dec", "ra"], name="star_dec_ra_idx")]

    def __str__(self) -> str:
        return self.designation


class Spectrum(models.Model):
    """One two-arm MRS spectrum: a nightly coadd or a single exposure."""

    class Kind(models.TextChoices):
        COADD = "coadd", "Nightly coadd"
        EXPOSURE = "exposure", "Single exposure"

    class Status(models.TextChoices):
        INGESTED = "ingested", "Read, not yet preprocessed"
        PREPROCESSED = "preprocessed", "Preprocessed; arrays stored"
        REJECTED = "rejected", "Read, but not usable (see flags)"
        FAILED = "failed", "Preprocessing failed"

    class RVSource(models.TextChoices):
        NONE = "", "Not yet known"
        CATALOG = "catalog", "Supplied by an input catalog"
        MEASURED = "measured", "Measured by cross-correlation"

    star = models.ForeignKey(Star, on_delete=models.PROTECT, related_name="spectra")
    medres_specid = models.CharField(
        max_length=80,
        unique=True,
        help_text="Date-PlanID-SpectrographID-FiberID-LMJM-PipelineVersion.",
    )
    medid_blue = models.CharField(max_length=80, blank=True)
    medid_red = models.CharField(max_length=80, blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    obsid = models.BigIntegerField(null=True, blank=True, db_index=True)
    objname = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="OBJNAME of the input catalog."
    )
    plan_id = models.CharField(max_length=40, db_index=True)
    spectrograph = models.PositiveSmallIntegerField()
    fiber = models.PositiveSmallIntegerField()
    lmjd = models.PositiveIntegerField(help_text="Local modified Julian day of the night.")
    lmjm = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Local modified Julian minute of a single exposure."
    )
    exptime = models.FloatField(null=True, blank=True, help_text="Exposure time, s.")
    snr_blue = models.FloatField(null=True, blank=True, db_index=True)
    snr_red = models.FloatField(null=True, blank=True, db_index=True)
    rv_blue = models.FloatField(null=True, blank=True, help_text="km/s, uncalibrated.")
    rv_red = models.FloatField(null=True, blank=True, help_text="km/s, uncalibrated.")
    rv_blue_err = models.FloatField(null=True, blank=True)
    rv_red_err = models.FloatField(null=True, blank=True)
    rv_source = models.CharField(max_length=8, choices=RVSource.choices, blank=True)
    source_path = models.CharField(max_length=1024)
    source_sha256 = models.CharField(max_length=64, db_index=True)
    file_format = models.CharField(
        max_length=16, help_text="Layout of the source file, e.g. 'dr7' or 'dr9v1'."
    )
    data_release = models.CharField(max_length=32, blank=True, help_text="DATA_V of the file.")
    array_shard = models.CharField(
        max_length=255, blank=True, help_text="Array shard holding the normalised arrays."
    )
    array_row = models.PositiveIntegerField(null=True, blank=True)
    preprocessing_version = models.CharField(max_length=32, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.INGESTED, db_index=True
    )
    flags = models.BigIntegerField(default=0, help_text="Spectrum flag bits (docs/flags.md).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "spectra"
        indexes = [
            models.Index(fields=["plan_id", "spectrograph", "fiber", "lmjd"]),
            # Spectra of another preprocessing version than the models' or the installation's:
            # counted per version, and found, without reading the table.
            models.Index(fields=["preprocessing_version", "status"], name="spectrum_prepver_status_idx"),
        ]

    def __str__(self) -> str:
        return self.medres_specid

    @property
    def flag_names(self) -> list[str]:
        return SPECTRUM_FLAGS.names(self.flags)


class CurationRecord(models.Model):
    """Who flagged or unflagged what, when and why. Never edited."""

    class Action(models.TextChoices):
        FLAG = "flag", "Flagged bad"
        UNFLAG = "unflag", "Flag removed"

    class Target(models.TextChoices):
        SPECTRUM = "spectrum", "Spectrum"
        CATALOG_ENTRY = "catalog_entry", "Catalog entry"

    target_type = models.CharField(max_length=16, choices=Target.choices)
    target_id = models.BigIntegerField()
    action = models.CharField(max_length=8, choices=Action.choices)
    reason = models.TextField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="curation_records"
    )
    flags_before = models.BigIntegerField()
    flags_after = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type} {self.target_id}"


class SourceFile(models.Model):
    """A spectrum file seen by ingest: what it held, or why it could not be read.

    Keyed by content (sha256): re-ingesting the same bytes, under any path, changes nothing.
    """

    class Status(models.TextChoices):
        INGESTED = "ingested", "Ingested"
        FAILED = "failed", "Failed"

    sha256 = models.CharField(max_length=64, unique=True)
    path = models.CharField(max_length=1024, db_index=True)
    size = models.PositiveBigIntegerField()
    reader = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, db_index=True)
    error_kind = models.CharField(max_length=40, blank=True, db_index=True)
    error_message = models.TextField(blank=True)
    spectra_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.path


class SpectrumCopy(models.Model):
    """One spectrum as one source file holds it: every copy ingested is kept, used or not.

    The same spectrum (one ``medres_specid``) can arrive in several files: a re-delivered
    copy, a copy cut short, a copy from another mirror. The Spectrum row holds the best copy
    (``Spectrum.source_sha256``); a worse copy never replaces it, and its provenance stays here.
    """

    spectrum = models.ForeignKey(Spectrum, on_delete=models.CASCADE, related_name="copies")
    source_file = models.ForeignKey(SourceFile, on_delete=models.PROTECT, related_name="copies")
    status = models.CharField(max_length=16, choices=Spectrum.Status.choices, help_text="Status this copy gave.")
    flags = models.BigIntegerField(default=0, help_text="Flag bits this copy gave.")
    snr_blue = models.FloatField(null=True, blank=True)
    snr_red = models.FloatField(null=True, blank=True)
    preprocessing_version = models.CharField(
        max_length=32, blank=True, help_text="Version of the preprocessing that read this copy (blank: before they were recorded).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["spectrum", "source_file"], name="spectrum_copy_unique")]

    def __str__(self) -> str:
        return f"{self.spectrum_id} from {self.source_file_id}"
