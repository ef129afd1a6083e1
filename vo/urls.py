from django.urls import path

from . import scs, tap
from .throttling import throttled

urlpatterns = [
    # Queries count against the anonymous rate limit, as API requests do.
    path("vo/scs/<slug:release_name>/", throttled(scs.cone_search), name="vo-scs"),
    path("vo/scs/<slug:release_name>/stars/", throttled(scs.cone_search), {"kind": "stars"}, name="vo-scs-stars"),
    path("tap/sync", throttled(tap.sync), name="tap-sync"),
    path("tap/async", throttled(tap.job_list), name="tap-async"),
    path("tap/async/<uuid:job_id>", tap.job_detail, name="tap-job"),
    path("tap/async/<uuid:job_id>/phase", tap.job_phase),
    path("tap/async/<uuid:job_id>/executionduration", tap.job_execution_duration),
    path("tap/async/<uuid:job_id>/destruction", tap.job_destruction),
    path("tap/async/<uuid:job_id>/quote", tap.job_quote),
    path("tap/async/<uuid:job_id>/owner", tap.job_owner),
    path("tap/async/<uuid:job_id>/error", tap.job_error),
    path("tap/async/<uuid:job_id>/parameters", tap.job_parameters),
    path("tap/async/<uuid:job_id>/results", tap.job_results),
    path("tap/async/<uuid:job_id>/results/result", tap.job_result),
    path("tap/availability", tap.availability, name="tap-availability"),
    path("tap/capabilities", tap.capabilities, name="tap-capabilities"),
    path("tap/tables", tap.tables, name="tap-tables"),
]
