"""Prediction workers warm their networks when they start: which models, how, and that a
model that cannot be warmed does not stop a worker."""

import logging
import os
import re
import signal
import time

import pytest

from inference.models import ModelVersion
from inference.services import prediction
from inference.services.prediction import model_load, model_versions_warm
from tasks.models import ProcessingRun
from tasks.selectors import model_versions_in_demand
from tasks.services import processing_run_create, processing_run_start

from .conftest import make_trained_models
from .test_pipeline import _send_to_workers, _spectra_with_arrays, _stop, _worker, _worker_environment
from .test_pipeline_faults import _chunk_states, _follow


def _version(name: str) -> ModelVersion:
    return ModelVersion.objects.create(
        name=name, role=ModelVersion.Role.FORMAL, artifact_uri=f"{name}.npz", artifact_sha256=name.ljust(64, "0"),
        config={}, training_set_hash="0" * 64, code_version="test", preprocessing_version="1.0")


@pytest.mark.django_db
def test_the_models_in_demand_are_those_named_and_those_of_unfinished_runs_that_predict():
    v = {name: _version(name) for name in ("f1", "a1", "f2", "a2", "f3", "a3", "f4", "a4", "named")}
    older = processing_run_create(stages=["ingest", "predict", "release"], paths=["/x"], formal_model=v["f1"],
                                  alternate_model=v["a1"], release_name="r1")
    ProcessingRun.objects.filter(pk=older.pk).update(state=ProcessingRun.State.RUNNING)
    processing_run_create(stages=["predict"], formal_model=v["f2"], alternate_model=v["a2"])
    done = processing_run_create(stages=["predict"], formal_model=v["f3"], alternate_model=v["a3"])
    ProcessingRun.objects.filter(pk=done.pk).update(state=ProcessingRun.State.SUCCEEDED)
    processing_run_create(stages=["release"], formal_model=v["f4"], alternate_model=v["a4"], release_name="r4")
    processing_run_create(stages=["predict"], formal_model=v["f1"], alternate_model=v["a1"])  # the same pair again

    names = [m.name for m in model_versions_in_demand(names=["named", "no-such-model", "a4"])]

    assert names == ["named", "a4", "f1", "a1", "f2", "a2"]
    assert [m.name for m in model_versions_in_demand(names=["a4", "named"])][:2] == ["a4", "named"]
    assert model_versions_in_demand() == [v["f1"], v["a1"], v["f2"], v["a2"]]


@pytest.mark.django_db
def test_warming_loads_each_network_into_the_process_and_runs_it(tmp_path, settings):
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT, prefix="warm")
    prediction._loaded.pop(formal.artifact_sha256, None)
    prediction._loaded.pop(alternate.artifact_sha256, None)

    spent = model_versions_warm(model_versions=[formal, alternate], batch_size=8)

    assert set(spent) == {"warm-formal", "warm-alternate"}
    assert all(seconds > 0 for seconds in spent.values())
    network = prediction._loaded[formal.artifact_sha256]
    assert model_load(formal) is network  # the chunk's load finds it
    assert alternate.artifact_sha256 in prediction._loaded


@pytest.mark.django_db
def test_a_model_that_cannot_be_warmed_is_logged_by_name_and_the_others_are_warmed(tmp_path, settings, caplog):
    from tasks.tasks import _warm_models

    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT, prefix="after-a-bad-one")
    for version in (formal, alternate):
        prediction._loaded.pop(version.artifact_sha256, None)
    _version("gone")  # registered, but no artifact on disk
    processing_run_create(stages=["predict"], formal_model=formal, alternate_model=alternate)
    settings.WORKER_WARM_MODEL_NAMES = ["gone"]  # named models come first

    with caplog.at_level(logging.INFO, logger="tasks.tasks"):
        _warm_models()  # must not raise: the first chunk that needs "gone" fails on its own terms

    assert "could not warm model gone" in caplog.text
    assert "warmed 2 model(s)" in caplog.text and "not warmed: gone" in caplog.text
    assert formal.artifact_sha256 in prediction._loaded and alternate.artifact_sha256 in prediction._loaded


@pytest.mark.django_db
def test_a_worker_warms_at_most_worker_warm_max_models(tmp_path, settings, caplog):
    from tasks.tasks import _warm_models

    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT, prefix="capped")
    processing_run_create(stages=["predict"], formal_model=formal, alternate_model=alternate)
    settings.WORKER_WARM_MAX_MODELS = 1

    with caplog.at_level(logging.INFO, logger="tasks.tasks"):
        _warm_models()

    assert "warmed 1 model(s)" in caplog.text and "capped-formal" in caplog.text
    assert "capped-alternate" not in caplog.text


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("pool", "processes"), [("prefork", 2), ("solo", 1)])
def test_a_prediction_worker_warms_the_models_of_pending_runs_before_it_takes_work(tmp_path, settings, pool, processes):
    """A run created before its workers start: each process that runs tasks (a prefork
    worker's pool processes, a solo worker itself) logs both models warmed, and the predict
    chunks are done by those processes."""
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    n = 400
    _spectra_with_arrays(n)
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    run = processing_run_create(stages=["predict"], formal_model=formal, alternate_model=alternate, chunk_spectra=100)
    env, routes = _worker_environment(settings)
    _send_to_workers(routes)
    log = tmp_path / "worker.log"
    worker = _worker(env, f"{env['CELERY_CPU_QUEUE']},{env['CELERY_GPU_QUEUE']}", pool=pool, concurrency=processes,
                     logfile=log)
    try:
        deadline = time.monotonic() + 180
        warmed = []
        while time.monotonic() < deadline and len(warmed) < processes and worker.poll() is None:
            text = log.read_text() if log.exists() else ""
            warmed = re.findall(r"process (\d+) warmed 2 model\(s\)", text)
            time.sleep(0.2)
        assert len(warmed) == processes, log.read_text() if log.exists() else "no log"
        assert "tiny-formal" in text and "tiny-alternate" in text
        processing_run_start(run=run)
        _follow(run, 180)
        assert run.state == ProcessingRun.State.SUCCEEDED, _chunk_states(run)
    finally:
        _send_to_workers(None)
        _stop(worker)
    chunk_pids = {worker.rsplit("/", 1)[-1] for worker in run.chunks.filter(stage="predict").values_list(
        "worker", flat=True)}
    assert chunk_pids and chunk_pids <= set(warmed)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_replacement_pool_process_does_not_warm_and_loads_its_models_on_its_first_chunk(tmp_path, settings):
    """Celery gives a pool process forked after the worker is up a few seconds to start:
    a replacement must not warm (it would be killed and replaced again and again); it loads
    its models on its first chunk, and the run finishes."""
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    _spectra_with_arrays(200)
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    run = processing_run_create(stages=["predict"], formal_model=formal, alternate_model=alternate, chunk_spectra=100)
    env, routes = _worker_environment(settings)
    _send_to_workers(routes)
    log = tmp_path / "worker.log"
    worker = _worker(env, f"{env['CELERY_CPU_QUEUE']},{env['CELERY_GPU_QUEUE']}", pool="prefork", logfile=log)
    try:
        deadline = time.monotonic() + 180
        warmed = []
        while time.monotonic() < deadline and not warmed and worker.poll() is None:
            warmed = re.findall(r"process (\d+) warmed 2 model\(s\)", log.read_text() if log.exists() else "")
            time.sleep(0.2)
        assert warmed, log.read_text() if log.exists() else "no log"
        while time.monotonic() < deadline and "ready." not in log.read_text():
            time.sleep(0.2)
        os.kill(int(warmed[0]), signal.SIGKILL)  # the pool forks a replacement
        time.sleep(8)  # past Celery's 4 s for a new process to report itself up
        processing_run_start(run=run)
        _follow(run, 180)
        text = log.read_text()
        assert run.state == ProcessingRun.State.SUCCEEDED, (_chunk_states(run), text)
    finally:
        _send_to_workers(None)
        _stop(worker)
    assert len(re.findall(r"warmed \d+ model\(s\)", text)) == 1, text
    assert "Timed out waiting for UP message" not in text
    pids = {w.rsplit("/", 1)[-1] for w in run.chunks.values_list("worker", flat=True)}
    assert pids and warmed[0] not in pids
