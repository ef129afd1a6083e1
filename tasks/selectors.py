"""Reads of the tasks app: a run's progress, rates and ETA, from its chunks' records."""

from collections.abc import Iterable

from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from inference.models import ModelVersion

from .models import ProcessingChunk, ProcessingRun

Stage = ProcessingRun.Stage

STAGE_UNITS = {Stage.INGEST: "files", Stage.PREDICT: "spectra", Stage.RELEASE: "builds"}


def processing_run_progress(*, run: ProcessingRun, now=None) -> dict:
    """Counts of chunks by state and spectra done, per stage and overall, with measured rates and an ETA.

    Per stage: chunks by state (``queued``, ``running``, ``done``, ``failed``, ``skipped``);
    ``spectra`` written or predicted, ``files_unchanged``, ``files_failed`` (sums over its
    chunks); and, in the stage's ``unit`` (files for ingest, spectra for predict, builds for
    release; a chunk's ``size``): ``units_total`` (chunks not skipped), ``units_done``,
    ``units_failed`` and ``units_left`` (queued or running). Rates come from the chunks'
    own timings (``seconds``, from claim to done, of the done chunks):

    - ``rate_per_process``: units per second of one worker process, the done chunks' units
      over their seconds; ``spectra_per_second_per_process`` likewise with spectra written
      or predicted. None until a chunk of the stage is done.
    - ``workers``: the stage's chunks running now.
    - ``rate`` and ``spectra_per_second``: the whole stage's rate. A finished stage: what it
      did over its wall time (``stage_seconds``). The stage in progress: the rate per process
      times the chunks running now (at least one).
    - ``eta_seconds``: the stage in progress only: ``units_left`` over ``rate`` (None before
      a chunk is done). The chunks running now count as left whole, so it errs long by at
      most one chunk per worker.
    - ``peak_rss_mb``: the highest peak memory that a process doing one of its chunks reported.

    Overall: ``chunks`` (counts by state), ``eta_seconds`` (the current stage's; later stages
    are planned when it ends, so their size is not known yet) and ``elapsed_seconds``.
    """
    now = now or timezone.now()
    done, running = ProcessingChunk.State.DONE, ProcessingChunk.State.RUNNING
    timed = Q(state=done, seconds__gt=0)
    rows = run.chunks.values("stage").annotate(
        queued=Count("pk", filter=Q(state=ProcessingChunk.State.QUEUED)),
        running=Count("pk", filter=Q(state=running)),
        done=Count("pk", filter=Q(state=done)),
        failed=Count("pk", filter=Q(state=ProcessingChunk.State.FAILED)),
        skipped=Count("pk", filter=Q(state=ProcessingChunk.State.SKIPPED)),
        spectra=Sum("items"), files_unchanged=Sum("skipped_items"), files_failed=Sum("failed_items"),
        units_total=Sum("size", filter=~Q(state=ProcessingChunk.State.SKIPPED)),
        units_done=Sum("size", filter=Q(state=done)),
        units_failed=Sum("size", filter=Q(state=ProcessingChunk.State.FAILED)),
        units_left=Sum("size", filter=Q(state__in=[ProcessingChunk.State.QUEUED, running])),
        timed_units=Sum("size", filter=timed), timed_spectra=Sum("items", filter=timed),
        timed_seconds=Sum("seconds", filter=timed), peak_rss_mb=Max("peak_rss_mb"),
    )
    stages = {}
    for row in sorted(rows, key=lambda r: ProcessingRun.STAGE_ORDER.index(r["stage"])):
        stage = row.pop("stage")
        timed_units, timed_spectra, timed_seconds = (row.pop(k) or 0 for k in (
            "timed_units", "timed_spectra", "timed_seconds"))
        for key in ("units_total", "units_done", "units_failed", "units_left"):
            row[key] = row[key] or 0
        in_progress = run.state == ProcessingRun.State.RUNNING and stage == run.current_stage
        per_process = timed_units / timed_seconds if timed_seconds else None
        spectra_per_process = timed_spectra / timed_seconds if timed_seconds else None
        wall = run.stage_seconds.get(stage)
        if in_progress:
            workers = max(row["running"], 1)
            rate = per_process * workers if per_process is not None else None
            spectra_rate = spectra_per_process * workers if spectra_per_process is not None else None
            eta = row["units_left"] / rate if rate else None
        else:
            rate = row["units_done"] / wall if wall else None
            spectra_rate = (row["spectra"] or 0) / wall if wall else None
            eta = None
        stages[stage] = {
            **row, "unit": STAGE_UNITS[stage], "workers": row["running"],
            "rate_per_process": _rounded(per_process), "spectra_per_second_per_process": _rounded(spectra_per_process),
            "rate": _rounded(rate), "spectra_per_second": _rounded(spectra_rate), "eta_seconds": _rounded(eta),
        }
    totals = {key: sum(s[key] or 0 for s in stages.values())
              for key in ("queued", "running", "done", "failed", "skipped")}
    current = stages.get(run.current_stage) if run.state == ProcessingRun.State.RUNNING else None
    elapsed = ((run.finished_at or now) - run.started_at).total_seconds() if run.started_at else None
    return {"state": run.state, "current_stage": run.current_stage, "chunks": totals, "stages": stages,
            "stage_seconds": run.stage_seconds, "eta_seconds": current["eta_seconds"] if current else None,
            "elapsed_seconds": _rounded(elapsed)}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def duration_text(seconds: float | None) -> str:
    """``3 h 05 min``, ``4 min 10 s``, ``42 s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def progress_lines(progress: dict) -> list[str]:
    """One line per stage: done/total in its unit, the measured rates, and the ETA of the stage in progress."""
    lines = []
    for stage, s in progress["stages"].items():
        unit = s["unit"]
        line = f"{stage}: {s['units_done']:,}/{s['units_total']:,} {unit}"
        if s["units_failed"]:
            line += f" ({s['units_failed']:,} failed)"
        if s["rate"] is not None:
            line += f"; {s['rate']:,.1f} {unit}/s"
            if unit != "spectra" and s["spectra_per_second"] is not None:
                line += f" ({s['spectra_per_second']:,.1f} spectra/s)"
        if s["rate_per_process"] is not None:
            line += f"; {s['rate_per_process']:,.1f} {unit}/s per process"
        if progress["state"] == ProcessingRun.State.RUNNING and stage == progress["current_stage"]:
            line += f"; {s['workers']} running; ETA {duration_text(s['eta_seconds'])}"
        elif stage in progress["stage_seconds"]:
            line += f"; in {duration_text(progress['stage_seconds'][stage])}"
        if s["peak_rss_mb"] is not None:
            line += f"; peak {s['peak_rss_mb']:,.0f} MB per process"
        lines.append(line)
    return lines


def model_versions_in_demand(*, names: Iterable[str] = ()) -> list[ModelVersion]:
    """The model versions that prediction chunks will ask for next.

    Those named, in the order named, then the formal and alternate models of every
    unfinished run (pending or running) with a predict stage, newest run first; each
    version once. What a prediction worker warms when it starts (``WORKER_WARM_MODELS``,
    tasks.tasks). A name that no version has is skipped.
    """
    names = list(names)
    wanted = sorted(ModelVersion.objects.filter(name__in=names), key=lambda version: names.index(version.name))
    runs = ProcessingRun.objects.filter(state__in=(ProcessingRun.State.PENDING, ProcessingRun.State.RUNNING))
    for run in runs.select_related("formal_model", "alternate_model").order_by("-created_at", "-id"):
        if Stage.PREDICT in run.stages:  # a JSON list: filtered here, as SQLite has no JSON containment
            wanted += [model for model in (run.formal_model, run.alternate_model) if model is not None]
    unique = {}
    for version in wanted:
        unique.setdefault(version.pk, version)
    return list(unique.values())
