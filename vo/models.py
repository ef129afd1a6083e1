"""Asynchronous TAP jobs (IVOA UWS 1.1)."""

import uuid

from django.conf import settings
from django.db import models


class TapJob(models.Model):
    """One asynchronous TAP query: its parameters, phase, and where its result is."""

    class Phase(models.TextChoices):
        PENDING = "PENDING"
        QUEUED = "QUEUED"
        EXECUTING = "EXECUTING"
        COMPLETED = "COMPLETED"
        ERROR = "ERROR"
        ABORTED = "ABORTED"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run_id = models.CharField(max_length=200, blank=True, default="")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="tap_jobs",
        help_text="The user who created the job; none for an anonymous job, which only its id reaches and "
                  "no job list shows.")
    phase = models.CharField(max_length=10, choices=Phase.choices, default=Phase.PENDING, db_index=True)
    query = models.TextField()
    lang = models.CharField(max_length=20, default="ADQL")
    response_format = models.CharField(max_length=10, default="votable")
    maxrec = models.PositiveIntegerField()
    execution_duration = models.FloatField(help_text="Largest run time (s): the query's time limit.")
    destruction = models.DateTimeField(help_text="When the job and its result are deleted.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True, default="")
    result_path = models.CharField(max_length=500, blank=True, default="")
    result_rows = models.PositiveBigIntegerField(null=True, blank=True)
    overflow = models.BooleanField(default=False)
    celery_task_id = models.CharField(max_length=64, blank=True, default="")
    backend_pid = models.IntegerField(null=True, blank=True, help_text="Database backend running the query.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.id} {self.phase}"

    @property
    def is_final(self) -> bool:
        return self.phase in (self.Phase.COMPLETED, self.Phase.ERROR, self.Phase.ABORTED)
