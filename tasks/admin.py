from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html_join

from core.admin import ReadOnlyAdmin

from .models import ProcessingChunk, ProcessingRun
from .selectors import duration_text, processing_run_progress, progress_lines
from .services import (
    RunConfigurationError,
    processing_run_cancel,
    processing_run_check,
    processing_run_create,
    processing_run_retry_failed,
    processing_run_start,
)


class ChunkInline(admin.TabularInline):
    model = ProcessingChunk
    fields = ["stage", "index", "state", "size", "items", "skipped_items", "failed_items", "attempts", "lost_deliveries",
              "worker", "heartbeat_at", "seconds", "peak_rss_mb", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0
    show_change_link = False

    def get_queryset(self, request):  # failures first, then the latest
        return super().get_queryset(request).order_by("-state", "stage", "index")[:200]


CONFIGURATION = ["name", "stages", "paths", "rv_catalog_path", "measure_rv", "formal_model", "alternate_model",
                 "release_name", "publish", "publish_partial", "chunk_files", "chunk_spectra"]


class ProcessingRunAdminForm(forms.ModelForm):
    class Meta:
        model = ProcessingRun
        fields = CONFIGURATION

    def clean(self):
        data = super().clean()
        if self.instance.pk is None and not self.errors:
            stages = data.get("stages") or []
            run = ProcessingRun(**{name: data.get(name) for name in CONFIGURATION})
            try:
                processing_run_check(run=run, requested=stages if isinstance(stages, list) else [stages])
            except RunConfigurationError as error:
                raise forms.ValidationError(str(error)) from error
        return data


@admin.register(ProcessingRun)
class ProcessingRunAdmin(admin.ModelAdmin):
    form = ProcessingRunAdminForm
    list_display = ["__str__", "state", "current_stage", "stages", "release_name", "created_at", "finished_at", "progress"]
    list_filter = ["state"]
    readonly_fields = ["state", "current_stage", "reason", "stage_seconds", "created_at", "started_at", "finished_at",
                       "stage_started_at", "created_by", "progress", "rates_and_eta"]
    fields = [*CONFIGURATION, *readonly_fields]
    actions = ["start", "cancel", "retry_failed"]

    @admin.display(description="progress")
    def progress(self, run: ProcessingRun) -> str:
        if run.pk is None:
            return "-"
        progress = processing_run_progress(run=run)
        text = ", ".join(f"{count} {state}" for state, count in progress["chunks"].items() if count) or "-"
        if run.state == ProcessingRun.State.RUNNING:
            text += f"; ETA of {run.current_stage}: {duration_text(progress['eta_seconds'])}"
        return text

    @admin.display(description="rates and ETA")
    def rates_and_eta(self, run: ProcessingRun) -> str:
        """Per stage: done/total in its unit, the rates measured from the chunks done, the ETA."""
        if run.pk is None:
            return "-"
        lines = progress_lines(processing_run_progress(run=run))
        if not lines:
            return "-"
        return format_html_join("\n", "<div>{}</div>", ((line,) for line in lines))

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a run and its chunks are the record of what was processed; cancel it instead

    def get_readonly_fields(self, request, obj=None):
        # A run's configuration is the record of what it was asked to do: fixed once created.
        return [*self.fields] if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return  # nothing of a run can be edited here (get_readonly_fields); actions act on it
        # A new run is made by its service: stages in pipeline order, chunk defaults, checks.
        created = processing_run_create(**{name: form.cleaned_data[name] for name in CONFIGURATION},
                                         created_by=request.user)
        obj.pk, obj.stages, obj.created_at, obj.created_by = created.pk, created.stages, created.created_at, created.created_by
        obj._state.adding = False

    def _each(self, request, queryset, action, verb: str):
        for run in queryset:
            try:
                action(run=run)
            except RunConfigurationError as error:
                self.message_user(request, f"run {run.pk}: {error}", messages.ERROR)
                continue
            self.message_user(request, f"run {run.pk}: {verb}")

    @admin.action(description="Start selected pending runs")
    def start(self, request, queryset):
        self._each(request, queryset, processing_run_start, "started")

    @admin.action(description="Cancel selected runs")
    def cancel(self, request, queryset):
        self._each(request, queryset, processing_run_cancel, "cancelled")

    @admin.action(description="Retry the failed chunks of selected runs")
    def retry_failed(self, request, queryset):
        self._each(request, queryset, processing_run_retry_failed, "failed chunks queued again")


@admin.register(ProcessingChunk)
class ProcessingChunkAdmin(ReadOnlyAdmin):
    list_display = ["run", "stage", "index", "state", "items", "attempts", "seconds", "error"]
    list_filter = ["state", "stage"]
    search_fields = ["=run__id"]
