"""The embedded default: SQLite, Celery tasks run in-process, debug on."""

from .base import *  # noqa: F403
from .base import VAR_DIR, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str(
    "DJANGO_SECRET_KEY", default="local-development-only-not-secret-0f3c9a7e51b2d84c"
)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

# Without a broker the pipeline runs eagerly in this process.
CELERY_TASK_ALWAYS_EAGER = env.bool(
    "CELERY_TASK_ALWAYS_EAGER", default=env.str("CELERY_BROKER_URL", default="") == ""
)

VAR_DIR.mkdir(parents=True, exist_ok=True)

# Serve static files straight from the apps while developing, without collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
