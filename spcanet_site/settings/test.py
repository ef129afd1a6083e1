"""Settings for the test suite: a real PostgreSQL and a real Redis.

Tasks run eagerly unless a test starts a worker itself; tests that are about the worker
start one against ``CELERY_BROKER_URL``.
"""

import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import DATABASE_CONNECT_TIMEOUT, env, postgresql_connect_timeout

DEBUG = False
SECRET_KEY = "test-only-not-secret-5d1e0b7a93c24f68"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

DATABASES = {"default": env.db("DATABASE_URL", default="postgres:///spcanet")}
DATABASES["default"]["CONN_MAX_AGE"] = 0
postgresql_connect_timeout(DATABASES["default"], DATABASE_CONNECT_TIMEOUT)

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/15")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)  # false in worker processes
CELERY_TASK_EAGER_PROPAGATES = True

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
_TEST_VAR = Path(tempfile.mkdtemp(prefix="spcanet-test-"))
SPECTRA_ARRAY_ROOT = Path(env.str("SPECTRA_ARRAY_ROOT", default=str(_TEST_VAR / "arrays")))
MODEL_ARTIFACT_ROOT = Path(env.str("MODEL_ARTIFACT_ROOT", default=str(_TEST_VAR / "models")))
RELEASE_FILES_ROOT = Path(env.str("RELEASE_FILES_ROOT", default=str(_TEST_VAR / "releases")))
# Tests that publish write no release files unless they test them.
RELEASE_FILES_ON_PUBLISH = env.bool("RELEASE_FILES_ON_PUBLISH", default=False)
STATIC_ROOT = _TEST_VAR / "static"
STATIC_ROOT.mkdir()
