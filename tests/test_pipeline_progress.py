"""Per-run progress: done/total per stage in its unit, rates from the chunks' timings, the ETA;
as the services compute them and as `run_pipeline --follow`, the runs API and the admin show them."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from tasks.models import ProcessingChunk, ProcessingRun
from tasks.selectors import duration_text, processing_run_progress, progress_lines
from tasks.services import (
    processing_run_create,
    processing_run_start,
)

from .conftest import make_trained_models
from .test_pipeline import _spectra_with_arrays

pytestmark = pytest.mark.django_db

State = ProcessingChunk.State


def _chunk(run, stage, index, state, size, *, items=0, seconds=None, peak=None, failed_items=0):
    return ProcessingChunk(run=run, stage=stage, index=index, payload={}, state=state, size=size, items=items,
                           seconds=seconds, peak_rss_mb=peak, failed_items=failed_items)


def _run_in_predict(now) -> ProcessingRun:
    """Ingest finished in 50 s; predict has 3 chunks done, 2 running and 5 queued."""
    run = ProcessingRun.objects.create(
        stages=["ingest", "predict", "release"], paths=["/survey"], state=ProcessingRun.State.RUNNING,
        current_stage="predict", started_at=now - timedelta(seconds=100), stage_started_at=now - timedelta(seconds=50),
        stage_seconds={"ingest": 50.0})
    chunks = [
        # ingest: 350 files done in chunks timed 10+10+10+5 s (35 s of process time), one chunk of
        # 100 files failed, one skipped (a cancelled retry): neither is timed nor counted done.
        _chunk(run, "ingest", 0, State.DONE, 100, items=800, seconds=10.0, peak=300.0),
        _chunk(run, "ingest", 1, State.DONE, 100, items=800, seconds=10.0, peak=320.0),
        _chunk(run, "ingest", 2, State.DONE, 100, items=800, seconds=10.0, peak=310.0),
        _chunk(run, "ingest", 3, State.DONE, 50, items=400, seconds=5.0, peak=305.0),
        _chunk(run, "ingest", 4, State.FAILED, 100, failed_items=100),
        _chunk(run, "ingest", 5, State.SKIPPED, 100),
        # predict: 3 x 1,000 spectra done in 2 s each (500 spectra/s per process), 2 running, 5 queued
        *[_chunk(run, "predict", i, State.DONE, 1000, items=1000, seconds=2.0, peak=p)
          for i, p in enumerate((400.0, 451.25, 410.0))],
        *[_chunk(run, "predict", 3 + i, State.RUNNING, 1000) for i in range(2)],
        *[_chunk(run, "predict", 5 + i, State.QUEUED, 1000) for i in range(5)],
    ]
    ProcessingChunk.objects.bulk_create(chunks)
    return run


def test_progress_counts_units_and_measures_rates_from_the_chunk_records():
    now = timezone.now()
    run = _run_in_predict(now)
    progress = processing_run_progress(run=run, now=now)

    ingest = progress["stages"]["ingest"]
    assert ingest["unit"] == "files"
    assert (ingest["units_total"], ingest["units_done"], ingest["units_failed"], ingest["units_left"]) == (450, 350, 100, 0)
    assert ingest["rate_per_process"] == 10.0  # 350 files / 35 s of chunk time
    assert ingest["spectra_per_second_per_process"] == 80.0  # 2,800 spectra / 35 s
    assert ingest["rate"] == 7.0 and ingest["spectra_per_second"] == 56.0  # finished: over its 50 s of wall time
    assert ingest["eta_seconds"] is None and ingest["peak_rss_mb"] == 320.0

    predict = progress["stages"]["predict"]
    assert predict["unit"] == "spectra"
    assert (predict["units_total"], predict["units_done"], predict["units_left"]) == (10_000, 3_000, 7_000)
    assert predict["rate_per_process"] == 500.0  # 3,000 spectra / 6 s
    assert predict["workers"] == 2 and predict["rate"] == 1000.0  # two chunks running
    assert predict["eta_seconds"] == 7.0  # 7,000 spectra left at 1,000/s
    assert predict["peak_rss_mb"] == 451.25
    assert progress["eta_seconds"] == 7.0 and progress["elapsed_seconds"] == 100.0
    assert progress["chunks"] == {"queued": 5, "running": 2, "done": 7, "failed": 1, "skipped": 1}

    # One chunk more done and one fewer queued: the rate stays, the ETA follows.
    ProcessingChunk.objects.filter(run=run, stage="predict", index=5).update(state=State.DONE, items=1000, seconds=4.0)
    predict = processing_run_progress(run=run, now=now)["stages"]["predict"]
    assert predict["rate_per_process"] == 400.0  # 4,000 spectra / 10 s
    assert predict["eta_seconds"] == 7.5  # 6,000 left at 2 x 400/s

    lines = progress_lines(progress)
    assert lines[0] == ("ingest: 350/450 files (100 failed); 7.0 files/s (56.0 spectra/s); "
                        "10.0 files/s per process; in 50 s; peak 320 MB per process")
    assert lines[1] == ("predict: 3,000/10,000 spectra; 1,000.0 spectra/s; 500.0 spectra/s per process; "
                        "2 running; ETA 7 s; peak 451 MB per process")


def test_before_any_chunk_is_done_there_is_no_rate_and_no_eta():
    now = timezone.now()
    run = ProcessingRun.objects.create(stages=["predict"], state=ProcessingRun.State.RUNNING, current_stage="predict",
                                       started_at=now)
    ProcessingChunk.objects.bulk_create([_chunk(run, "predict", 0, State.RUNNING, 4096),
                                         _chunk(run, "predict", 1, State.QUEUED, 904)])
    progress = processing_run_progress(run=run, now=now)
    predict = progress["stages"]["predict"]
    assert (predict["units_total"], predict["units_left"]) == (5000, 5000)
    assert predict["rate"] is None and predict["eta_seconds"] is None and progress["eta_seconds"] is None
    assert progress_lines(progress) == ["predict: 0/5,000 spectra; 1 running; ETA ?"]


@pytest.mark.parametrize(("seconds", "text"), [(None, "?"), (0.4, "0 s"), (59.4, "59 s"), (61, "1 min 01 s"),
                                               (3 * 3600 + 5 * 60 + 20, "3 h 05 min")])
def test_durations_read_as_an_operator_expects(seconds, text):
    assert duration_text(seconds) == text


def test_the_api_and_the_admin_show_rates_and_the_eta(curator):
    run = _run_in_predict(timezone.now())
    client = APIClient()
    client.force_authenticate(curator)
    body = client.get(f"/api/v1/processing-runs/{run.pk}/").json()
    predict = body["progress"]["stages"]["predict"]
    assert (predict["units_done"], predict["units_total"], predict["rate"], predict["eta_seconds"]) == (
        3000, 10_000, 1000.0, 7.0)
    assert body["progress"]["eta_seconds"] == 7.0

    admin = Client()
    admin.force_login(curator)
    page = admin.get(f"/admin/tasks/processingrun/{run.pk}/change/").content.decode()
    assert "predict: 3,000/10,000 spectra; 1,000.0 spectra/s; 500.0 spectra/s per process; 2 running; ETA 7 s" in page
    assert "ingest: 350/450 files (100 failed); 7.0 files/s (56.0 spectra/s)" in page
    listing = admin.get("/admin/tasks/processingrun/").content.decode()
    assert "ETA of predict: 7 s" in listing


def test_a_real_run_records_chunk_sizes_timings_and_memory_and_follow_reports_the_rates(
        tmp_path, settings, django_capture_on_commit_callbacks):
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    _spectra_with_arrays(45)
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    run = processing_run_create(stages=["predict", "release"], formal_model=formal, alternate_model=alternate,
                                release_name="progress-1", chunk_spectra=20)
    with django_capture_on_commit_callbacks(execute=True):
        processing_run_start(run=run)
    run.refresh_from_db()
    assert run.state == ProcessingRun.State.SUCCEEDED
    chunks = list(run.chunks.filter(stage="predict").order_by("index"))
    assert [c.size for c in chunks] == [20, 20, 5] == [c.items for c in chunks]
    assert all(c.seconds > 0 and c.peak_rss_mb > 50 for c in chunks)
    assert run.chunks.get(stage="release").size == 1

    predict = processing_run_progress(run=run)["stages"]["predict"]
    assert predict["rate_per_process"] == pytest.approx(45 / sum(c.seconds for c in chunks), rel=0.01)
    assert predict["rate"] == pytest.approx(45 / run.stage_seconds["predict"], rel=0.01)
    assert predict["eta_seconds"] is None and predict["units_done"] == predict["units_total"] == 45

    out = StringIO()
    call_command("run_pipeline", "--follow", str(run.pk), stdout=out, stderr=StringIO())
    text = out.getvalue()
    assert f"run {run.pk}: succeeded after " in text
    assert f"    predict: 45/45 spectra; {predict['rate']:,.1f} spectra/s; " in text
    assert "    release: 1/1 builds; " in text
