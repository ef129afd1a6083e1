"""Settings of the VO services, with their defaults (override any in the Django settings)."""

from django.conf import settings

_DEFAULTS = {
    # The PostgreSQL role TAP queries run as: SELECT on the VO schemas only (vo/setup.py).
    "TAP_DB_ROLE": "spcanet_tap",
    # Rows a TAP query returns unless MAXREC says otherwise, and the most it may ask for.
    "TAP_MAXREC_DEFAULT": 10_000,
    "TAP_MAXREC_LIMIT": 200_000,
    # Time limits (s): a synchronous query; an asynchronous job's default and largest
    # execution duration (UWS executionduration).
    "TAP_SYNC_TIMEOUT_S": 30.0,
    "TAP_ASYNC_TIMEOUT_S": 600.0,
    # Asynchronous jobs and their results are deleted this long after their creation.
    "TAP_JOB_RETENTION_S": 7 * 24 * 3600,
    # Simple Cone Search: the largest radius (deg) and the most rows of one answer.
    "SCS_MAX_SR": 10.0,
    "SCS_MAX_ROWS": 100_000,
}


def vo_setting(name: str):
    return getattr(settings, name, _DEFAULTS[name])


def tap_results_dir():
    from pathlib import Path

    return Path(getattr(settings, "TAP_RESULTS_DIR", Path(settings.VAR_DIR) / "tap-results"))
