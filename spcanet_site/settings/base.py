"""Settings shared by every environment.

Every value that differs between machines comes from the environment through one
``env`` object (django-environ); an optional ``.env`` file at the project root is read
first. Limits live here too, so that they are settings, not magic numbers in code; the
catalog rules are defined in ``core.rules`` and only their overrides come from here.
"""

import os
from pathlib import Path

import environ

from core.rules import CatalogRules, env_overrides

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Where the embedded default keeps its database, array shards and generated files.
VAR_DIR = Path(env.str("SPCANET_VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
ALLOWED_HOSTS: list[str] = env.list("DJANGO_ALLOWED_HOSTS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc served by the site (no CDN)
    "spectra",
    "inference",
    "validation",
    "tasks",
    "vo",  # IVOA services: cone search, TAP (vo/)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "spcanet_site.urls"
WSGI_APPLICATION = "spcanet_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL in production and tests; SQLite when nothing is configured, so that a
# newcomer's first run needs no server.
DATABASES = {
    "default": env.db(
        "DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'spcanet.sqlite3'}"
    )
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))


def postgresql_connect_timeout(database: dict, seconds: int) -> dict:
    """Give a PostgreSQL connection a bound on how long it waits to be established.

    Parameters
    ----------
    database : dict
        One entry of ``DATABASES``; changed in place. Engines other than Django's
        PostgreSQL and PostGIS backends are left alone.
    seconds : int
        libpq's ``connect_timeout``; a ``connect_timeout`` already in the entry's
        ``OPTIONS`` (given in the URL's query) wins.

    Returns
    -------
    dict
        ``database``.

    Notes
    -----
    Without it, libpq waits for the TCP connection as long as the operating system does
    (about two minutes when the server's packets are dropped) and, on a server that takes
    the connection but never answers, without end; so does every process that connects:
    a worker warming its models, a request.
    """
    if database.get("ENGINE", "").rsplit(".", 1)[-1] in ("postgresql", "postgis"):
        database.setdefault("OPTIONS", {}).setdefault("connect_timeout", seconds)
    return database


# Seconds a PostgreSQL connection may take to be established before it fails (libpq's
# connect_timeout); 0 waits as long as the operating system does.
DATABASE_CONNECT_TIMEOUT = env.int("DATABASE_CONNECT_TIMEOUT", default=10)
postgresql_connect_timeout(DATABASES["default"], DATABASE_CONNECT_TIMEOUT)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Array storage: normalised spectra live in shards, not in table rows ----------------
SPECTRA_ARRAY_ROOT = Path(env.str("SPECTRA_ARRAY_ROOT", default=str(VAR_DIR / "arrays")))
MODEL_ARTIFACT_ROOT = Path(env.str("MODEL_ARTIFACT_ROOT", default=str(VAR_DIR / "models")))

# --- REST API ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    # Session only (the admin login; the browsable API). Basic authentication is off: it
    # ran the password hasher (0.37 s of CPU measured) on every request carrying a header,
    # and a wrong password was refused before throttling, so guesses were unlimited. An
    # Authorization header is now ignored and the request is throttled as anonymous.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.CatalogCursorPagination",
    "PAGE_SIZE": 100,
    # drf-spectacular's, plus the error responses (400/403/404/406/429) the API answers.
    "DEFAULT_SCHEMA_CLASS": "core.api.openapi.CatalogAutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": env.str("API_ANON_THROTTLE_RATE", default="") or None},
    # Reverse proxies in front of the site. With DRF's default (None) the throttle keyed
    # anonymous clients on whatever X-Forwarded-For they sent, so a new value per request
    # was never throttled; 0 keys on the connection's address, N on the N-th last hop.
    "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
    "EXCEPTION_HANDLER": "core.api.errors.catalog_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SPCANet catalog API",
    "DESCRIPTION": (
        "Stellar labels (Teff, log g and 13 abundances) of LAMOST-II MRS spectra derived "
        "by SPCANet. The catalog is read-only and public; processing runs are for staff. "
        "The flag bits are listed at /api/v1/flags/."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # A run's current stage and its list of stages share one choice set.
    "ENUM_NAME_OVERRIDES": {"ProcessingStageEnum": "tasks.models.ProcessingRun.Stage"},
}
# The docs pages load Swagger UI and Redoc from the site's own static files
# (drf-spectacular-sidecar), so they work without internet access.
SPECTACULAR_SETTINGS.update({
    "SWAGGER_UI_DIST": "SIDECAR", "SWAGGER_UI_FAVICON_HREF": "SIDECAR", "REDOC_DIST": "SIDECAR",
})

# Largest cone-search radius the API accepts, in degrees.
CONE_SEARCH_MAX_RADIUS_DEG = env.float("CONE_SEARCH_MAX_RADIUS_DEG", default=5.0)
API_MAX_PAGE_SIZE = env.int("API_MAX_PAGE_SIZE", default=1000)
# Rows fetched per database round trip while streaming an export.
EXPORT_CHUNK_SIZE = env.int("EXPORT_CHUNK_SIZE", default=5000)
# Connections a release build writes its chunks on at once (entries, then stars), each a
# PostgreSQL backend and so a CPU core of the database server; the build holds one more
# for itself and one for the entries' indexes. 1: one connection, one chunk after another.
RELEASE_BUILD_CONNECTIONS = env.int("RELEASE_BUILD_CONNECTIONS", default=2)
# A published release's whole tables in every download format, written once by the workers
# (inference.services.release_files). Shared by the workers and the web servers.
RELEASE_FILES_ROOT = Path(env.str("RELEASE_FILES_ROOT", default=str(VAR_DIR / "releases")))
RELEASE_FILES_ON_PUBLISH = env.bool("RELEASE_FILES_ON_PUBLISH", default=True)

# --- Celery -----------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=None) or None
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=30 * 60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=35 * 60)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE
# Preprocessing on CPU workers, inference on GPU workers (docs: README, "Bulk processing").
CELERY_CPU_QUEUE = env.str("CELERY_CPU_QUEUE", default="cpu")
CELERY_GPU_QUEUE = env.str("CELERY_GPU_QUEUE", default="gpu")
CELERY_TASK_ROUTES = {
    "tasks.ingest_chunk": {"queue": CELERY_CPU_QUEUE},
    "tasks.reconcile_runs": {"queue": CELERY_CPU_QUEUE},
    "tasks.release_chunk": {"queue": CELERY_CPU_QUEUE},
    "tasks.release_file_write": {"queue": CELERY_CPU_QUEUE},
    "tasks.predict_chunk": {"queue": CELERY_GPU_QUEUE},
}
# A worker consuming the prediction queue warms its networks in each process it starts
# with, before the process takes work (tasks.tasks): the models named in
# WORKER_WARM_MODEL_NAMES, then those of the unfinished runs that predict, newest first, at
# most WORKER_WARM_MAX_MODELS of them (each process holds what it warms for its lifetime).
WORKER_WARM_MODELS = env.bool("WORKER_WARM_MODELS", default=True)
WORKER_WARM_MODEL_NAMES = env.list("WORKER_WARM_MODEL_NAMES", default=[])
WORKER_WARM_MAX_MODELS = env.int("WORKER_WARM_MAX_MODELS", default=4)
# A message a worker took but never acknowledged (it died) goes back to the queue after
# this many seconds. Longer than any chunk's hard time limit, or a slow chunk runs twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=CELERY_TASK_TIME_LIMIT + 5 * 60),
}
# A chunk whose worker process died (killed, out of memory, crashed) while running it on
# this many deliveries is failed instead of being delivered again (tasks.services,
# processing_chunk_claim); `run_pipeline --retry-failed` tries it again.
PROCESSING_CHUNK_MAX_DELIVERIES = env.int("PROCESSING_CHUNK_MAX_DELIVERIES", default=3)
# Liveness of runs (tasks.reconcile). A worker running a chunk writes a heartbeat every
# PIPELINE_HEARTBEAT_SECONDS; a running chunk without one for PIPELINE_WORKER_LOST_SECONDS
# lost its worker and is sent again (a lost delivery, bounded as above), instead of waiting
# for the broker's visibility timeout. A queued chunk whose message is in no queue of the
# broker after PIPELINE_MESSAGE_LOST_SECONDS (a flushed or restarted Redis) is sent again.
# The reconciler runs every PIPELINE_RECONCILE_SECONDS under Celery beat, when a worker
# starts, and while `run_pipeline --follow` waits.
PIPELINE_HEARTBEAT_SECONDS = env.float("PIPELINE_HEARTBEAT_SECONDS", default=5.0)
PIPELINE_WORKER_LOST_SECONDS = env.float("PIPELINE_WORKER_LOST_SECONDS", default=30.0)
PIPELINE_MESSAGE_LOST_SECONDS = env.float("PIPELINE_MESSAGE_LOST_SECONDS", default=30.0)
PIPELINE_RECONCILE_SECONDS = env.float("PIPELINE_RECONCILE_SECONDS", default=15.0)
CELERY_BEAT_SCHEDULE = {
    "reconcile-processing-runs": {"task": "tasks.reconcile_runs", "schedule": PIPELINE_RECONCILE_SECONDS},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Catalog rules ----------------------------------------------------------------------
# The thresholds are defined once, in core.rules.CatalogRules (paper section 4); a
# CATALOG_<FIELD> environment variable overrides one (CATALOG_MAX_DELTA_TEFF=150). A release
# records the rules it applied.
CATALOG_RULES = env_overrides(CatalogRules, "CATALOG_", os.environ)

# --- Ingest -----------------------------------------------------------------------------
# Spectra closer than this on the sky belong to the same star (designations of one star
# differ by a few tenths of an arcsecond between plans).
STAR_MATCH_RADIUS_ARCSEC = env.float("STAR_MATCH_RADIUS_ARCSEC", default=1.5)
# Largest separation for matching a reference catalog (training labels, other surveys)
# to our stars when no Gaia source id links them.
REFERENCE_MATCH_RADIUS_ARCSEC = env.float("REFERENCE_MATCH_RADIUS_ARCSEC", default=3.0)
# Reference catalogs: largest separation at which a shared Gaia source id is trusted. The
# same star's catalog positions differ by its proper motion between epochs (2MASS J2000
# against Gaia J2015.5/J2016: 1.6" at 100 mas/yr, 4.8" at 300 mas/yr); a shared id further
# away is a wrong id or position, and the row falls back to position (the reason recorded).
REFERENCE_GAIA_MATCH_MAX_ARCSEC = env.float("REFERENCE_GAIA_MATCH_MAX_ARCSEC", default=5.0)
# Largest spectrum file accepted, on disk and after gunzip (MRS files are 1-5 MB): a larger
# file or a gzip bomb is recorded as corrupt after reading at most this many bytes.
SPECTRUM_FILE_MAX_BYTES = env.int("SPECTRUM_FILE_MAX_BYTES", default=64 * 2**20)
# Threads that parse and preprocess files while the main thread writes to the database.
INGEST_THREADS = env.int("INGEST_THREADS", default=2)
# The Cannon spectrum model used for RV templates and the mock survey (fetch_spectrum_model).
SPECTRUM_MODEL_PATH = Path(
    env.str(
        "SPECTRUM_MODEL_PATH",
        default=str(Path.home() / ".cache" / "spcanet" / "cannongrid_3000_18000_coolstars_norm_cubic_model.pkl"),
    )
)
# MIST isochrones (columns teff_<[Fe/H]> in log10 K, logg_<[Fe/H]>): mock-survey labels
# and the Kiel diagrams of releases.
ISOCHRONE_PATH = Path(
    env.str("ISOCHRONE_PATH", default=str(BASE_DIR.parent / "shared" / "data" / "isochrones" / "MIST_iso_7Gyr.csv"))
)
