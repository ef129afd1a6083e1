"""Processing runs: the database record of a bulk run through the Celery pipeline.

A run covers a set of inputs (files to ingest, spectra to predict, a release to build),
is split into chunks that workers process independently, and moves stage by stage:
ingest -> predict -> release. Each chunk records its state, attempts, timing and error,
so a run can be followed, cancelled, and its failed part retried; it also records which
worker process and which task message claimed it, so that a message redelivered because
its worker died is told apart from a fresh one and counted.
"""

from django.conf import settings
from django.db import models

from inference.models import ModelVersion


class ProcessingRun(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIAL = "partial", "Finished; some chunks failed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Stage(models.TextChoices):
        INGEST = "ingest", "Ingest"
        PREDICT = "predict", "Predict"
        RELEASE = "release", "Release"

    STAGE_ORDER = (Stage.INGEST, Stage.PREDICT, Stage.RELEASE)

    name = models.CharField(max_length=120, blank=True)
    stages = models.JSONField(help_text="The stages this run performs, in order.")
    paths = models.JSONField(default=list, blank=True, help_text="Files and directories to ingest.")
    rv_catalog_path = models.CharField(max_length=1024, blank=True)
    measure_rv = models.BooleanField(default=True, help_text="Cross-correlate arms without a catalog RV.")
    formal_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    alternate_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    release_name = models.SlugField(max_length=80, blank=True)
    publish = models.BooleanField(default=False)
    publish_partial = models.BooleanField(
        default=False, help_text="Publish the release even when chunks of earlier stages failed.")
    chunk_files = models.PositiveIntegerField(default=256, help_text="Files per ingest chunk.")
    chunk_spectra = models.PositiveIntegerField(default=4096, help_text="Spectra per prediction chunk.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING, db_index=True)
    current_stage = models.CharField(max_length=10, choices=Stage.choices, blank=True)
    stage_seconds = models.JSONField(default=dict, blank=True, help_text="Wall time per finished stage.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="Why the run stopped, or what it left undone.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name or f"run {self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.SUCCEEDED, self.State.PARTIAL, self.State.FAILED, self.State.CANCELLED)


class ProcessingChunk(models.Model):
    """One unit of work: a list of files to ingest, a range of spectra to predict, a release."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    run = models.ForeignKey(ProcessingRun, on_delete=models.CASCADE, related_name="chunks")
    stage = models.CharField(max_length=10, choices=ProcessingRun.Stage.choices)
    index = models.PositiveIntegerField()
    payload = models.JSONField(help_text="What the chunk covers: file paths, or a spectrum id range.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED, db_index=True)
    size = models.PositiveIntegerField(
        default=0, help_text="What the chunk covers, from its plan: files (ingest), spectra (predict), 1 (release).")
    items = models.PositiveIntegerField(default=0, help_text="Spectra written or predicted.")
    skipped_items = models.PositiveIntegerField(default=0, help_text="Files unchanged since an earlier ingest.")
    failed_items = models.PositiveIntegerField(default=0, help_text="Files that failed to read.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Deliveries that started the chunk's work.")
    lost_deliveries = models.PositiveSmallIntegerField(
        default=0, help_text="Deliveries whose worker process died before finishing; reset by a retry.")
    worker = models.CharField(max_length=255, blank=True, help_text="hostname/pid of the process that claimed it last.")
    message = models.CharField(
        max_length=100, blank=True, help_text="The task message (id:retries) that claimed it last.")
    error = models.TextField(blank=True)
    seconds = models.FloatField(null=True, blank=True)
    peak_rss_mb = models.FloatField(
        null=True, blank=True, help_text="Peak resident memory (VmHWM) of the process that did it, when done, MB.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(
        null=True, blank=True, help_text="When its task message was last sent (the reconciler re-sends lost ones).")
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life of the worker running it (every PIPELINE_HEARTBEAT_SECONDS).")

    class Meta:
        ordering = ["run", "stage", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "stage", "index"], name="chunk_unique_run_stage_index")]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.stage}:{self.index}"
