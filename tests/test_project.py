"""Project-level guarantees: migrations, deploy settings, Docker files, the real worker."""

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_no_missing_migrations(db):
    result = manage("makemigrations", "--check", "--dry-run", env={**os.environ, "DJANGO_SETTINGS_MODULE": "spcanet_site.settings.test"})
    assert result.returncode == 0, result.stdout + result.stderr


PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "spcanet_site.settings.production",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "catalog.example.org",
    "DATABASE_URL": "postgres://catalog@db.example.org/catalog",
    "CELERY_BROKER_URL": "redis://broker.example.org:6379/0",
}


def test_production_settings_pass_the_deploy_check():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_"))}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env={**env, **PRODUCTION_ENV})
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "CELERY_BROKER_URL"])
def test_production_secrets_have_no_default(missing):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_"))}
    env.update({k: v for k, v in PRODUCTION_ENV.items() if k != missing})
    result = manage("check", env=env)
    assert result.returncode != 0 and missing in result.stderr


def test_a_database_that_never_answers_fails_the_connection_within_its_timeout():
    """A server that takes the TCP connection but never answers (a stalled or half-dead
    database) makes the connection fail after DATABASE_CONNECT_TIMEOUT seconds, instead of
    holding the process (a worker warming its models, a request) for as long as the
    operating system waits."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nothing ever answers
    port = silent.getsockname()[1]
    code = ("import time; from django.db import connection; start = time.monotonic()\n"
            "print('timeout', connection.settings_dict['OPTIONS'].get('connect_timeout'))\n"
            "try:\n    connection.ensure_connection()\nexcept Exception as error:\n"
            "    print('failed', type(error).__name__, round(time.monotonic() - start, 1))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_",))}
    try:
        result = manage("shell", "-c", code, env={**env, "DJANGO_SETTINGS_MODULE": "spcanet_site.settings.test",
                                                  "DATABASE_URL": f"postgres://nobody@127.0.0.1:{port}/nothing",
                                                  "DATABASE_CONNECT_TIMEOUT": "2"})
        settings_only = code.split("\n")[0] + "\n" + code.split("\n")[1]
        production = {**env, "DJANGO_SETTINGS_MODULE": "spcanet_site.settings.production", **PRODUCTION_ENV}
        default = manage("shell", "-c", settings_only, env=production)
        given = manage("shell", "-c", settings_only,
                       env={**production, "DATABASE_URL": "postgres://catalog@db.example.org/catalog?connect_timeout=3"})
    finally:
        silent.close()
    assert result.returncode == 0, result.stderr
    printed = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.strip()}
    assert printed["timeout"] == ["2"], result.stdout
    assert "failed" in printed, f"the connection to a silent server did not fail: {result.stdout}"
    error, seconds = printed["failed"]
    assert error == "OperationalError" and 1.5 <= float(seconds) < 20, result.stdout
    assert default.returncode == 0 and "timeout 10" in default.stdout.splitlines(), default.stdout + default.stderr
    # A connect_timeout in the URL wins over the setting.
    assert given.returncode == 0 and "timeout 3" in given.stdout.splitlines(), given.stdout + given.stderr


def test_compose_file_matches_the_settings():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"web", "worker-cpu", "worker-gpu", "postgres", "redis"} <= set(services)
    for name in ("web", "worker-cpu", "worker-gpu"):
        service = services[name]
        environment = {**compose.get("x-app-environment", {}), **service.get("environment", {})}
        assert environment["DJANGO_SETTINGS_MODULE"] == "spcanet_site.settings.production"
        for key in ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "CELERY_BROKER_URL"):
            assert key in environment, (name, key)
        dockerfile = ROOT / "docker" / Path(service["build"]["dockerfile"]).name
        assert dockerfile.exists()
    assert "gpu" in str(services["worker-gpu"]["deploy"]).lower()
    assert "celery" in " ".join(services["worker-cpu"]["command"])


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_a_task_against_redis_and_postgres(settings):
    from django.db import connection

    from inference.models import ModelVersion
    from spectra.models import Star
    from tasks.tasks import catalog_counts_task

    from .conftest import make_model

    Star.objects.create(designation="LAMOST J000000.00+000000.0", ra=0.0, dec=0.0)
    make_model(ModelVersion.Role.FORMAL)
    db = connection.settings_dict
    database_url = f"postgres://{db['USER'] or ''}@{db['HOST'] or ''}:{db['PORT'] or 5432}/{db['NAME']}"
    if not db["HOST"]:
        database_url = f"postgres:///{db['NAME']}"
    queue = f"test-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "spcanet_site.settings.test", "DATABASE_URL": database_url,
           "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "spcanet_site", "worker", "-Q", queue, "-c", "1", "-P", "solo",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        from spcanet_site.celery import app

        app.conf.task_always_eager = False
        result = catalog_counts_task.apply_async(queue=queue)
        counts = result.get(timeout=60)
    finally:
        app.conf.task_always_eager = True
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert counts["stars"] == 1, output
    assert counts["catalog_entries"] == 0
