"""TAP 1.1 endpoints: /tap/sync, /tap/async (UWS 1.1), VOSI availability, capabilities
and tables. Plain Django views (the VO protocols are not the REST API's)."""

import time
from datetime import UTC
from xml.sax.saxutils import escape, quoteattr

from django.db import connection
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt

from . import vosi
from .adql import AdqlError
from .conf import vo_setting
from .models import TapJob
from .query import TapUnavailable, run_query
from .services import (
    expire_jobs,
    job_abort,
    job_create,
    job_delete,
    job_destruction_set,
    job_execution_duration_set,
    job_start,
)
from .votable import CSV_CONTENT_TYPE, VOTABLE_CONTENT_TYPE, error_votable, results_csv, results_votable_pieces

Phase = TapJob.Phase
_FORMATS = {"votable": "votable", "application/x-votable+xml": "votable", "text/xml": "votable",
            "votable/td": "votable", "votable/b2": "votable", "csv": "csv", "text/csv": "csv"}
_XML = "text/xml; charset=utf-8"
_UWS_NS = ('xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0" xmlns:xlink="http://www.w3.org/1999/xlink" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"')


def _error(message: str, status: int = 400) -> HttpResponse:
    return HttpResponse(error_votable(message), content_type=VOTABLE_CONTENT_TYPE, status=status)


def _params(request) -> dict[str, str]:
    """Request parameters, names upper-cased (TAP parameter names are case-insensitive)."""
    params = {}
    for source in (request.GET, request.POST):
        for key, value in source.items():
            params[key.upper()] = value
    return params


def _query_spec(params: dict[str, str]) -> dict:
    """The query parameters of a TAP request (TAP 1.1 section 2.3), checked."""
    if params.get("REQUEST", "doQuery") != "doQuery":
        raise AdqlError("REQUEST must be doQuery")
    lang = params.get("LANG", "ADQL")
    if lang.upper() not in ("ADQL", "ADQL-2.0"):
        raise AdqlError(f"LANG {lang!r} is not supported: use ADQL")
    if params.get("UPLOAD"):
        raise AdqlError("UPLOAD is not supported")
    fmt_text = params.get("RESPONSEFORMAT") or params.get("FORMAT") or "votable"
    fmt = _FORMATS.get(fmt_text.split(";")[0].strip().lower())
    if fmt is None:
        raise AdqlError(f"RESPONSEFORMAT {fmt_text!r} is not supported: use votable or csv")
    limit = vo_setting("TAP_MAXREC_LIMIT")
    maxrec_text = params.get("MAXREC", "")
    try:
        maxrec = vo_setting("TAP_MAXREC_DEFAULT") if maxrec_text == "" else int(maxrec_text)
    except ValueError:
        raise AdqlError(f"MAXREC must be an integer (got {maxrec_text!r})") from None
    if maxrec < 0:
        raise AdqlError("MAXREC must be >= 0")
    query = params.get("QUERY", "")
    if not query.strip():
        raise AdqlError("QUERY is required")
    return {"query": query, "lang": lang, "response_format": fmt, "maxrec": min(maxrec, limit)}


@csrf_exempt
def sync(request):
    if request.method not in ("GET", "POST"):
        return _error("use GET or POST", 405)
    try:
        spec = _query_spec(_params(request))
        result = run_query(spec["query"], maxrec=spec["maxrec"], timeout_s=vo_setting("TAP_SYNC_TIMEOUT_S"))
    except TapUnavailable as error:
        return _error(str(error), 501)
    except AdqlError as error:
        return _error(str(error), 400)
    if spec["response_format"] == "csv":
        return HttpResponse(results_csv(result.fields, result.columns), content_type=CSV_CONTENT_TYPE)
    pieces = results_votable_pieces(result.fields, result.columns, overflow=result.overflow,
                                    infos=[("QUERY", spec["query"])])
    return StreamingHttpResponse(pieces, content_type=VOTABLE_CONTENT_TYPE)


def availability(request):
    if connection.vendor != "postgresql":
        return HttpResponse(vosi.availability(False, "TAP needs PostgreSQL"), content_type=_XML)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM tap_schema.tables LIMIT 1")
        available, note = True, "service is accepting queries"
    except Exception:  # noqa: BLE001 - any failure means unavailable
        available, note = False, "TAP_SCHEMA is missing: run manage.py vo_setup"
    return HttpResponse(vosi.availability(available, note), content_type=_XML)


def capabilities(request):
    base = request.build_absolute_uri("/tap").rstrip("/")
    return HttpResponse(vosi.capabilities(base), content_type=_XML)


def tables(request):
    return HttpResponse(vosi.tableset(), content_type=_XML)


# --- UWS ------------------------------------------------------------------------------------
#
# Ownership, as UWS 1.1 (section 2.2.2) and DaCHS/daiquiri do it: a job records the
# authenticated user who created it (ownerId); an anonymous caller's job has no owner. The
# job list shows the caller's own jobs only (none to an anonymous caller, so anonymous
# jobs are never listed); a job with an owner answers 404 to everyone else, as though it
# did not exist; an anonymous job is reached by its URL alone (a random UUID, 122 bits).


def _caller(request):
    """The authenticated user making the request, or None."""
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def _iso(value) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if value else None


def _element(name: str, value) -> str:
    if value is None or value == "":
        return f'  <uws:{name} xsi:nil="true"/>\n'
    return f"  <uws:{name}>{escape(str(value))}</uws:{name}>\n"


def _job_url(request, job: TapJob) -> str:
    return request.build_absolute_uri(f"/tap/async/{job.pk}")


def _result_elements(request, job: TapJob) -> str:
    if job.phase != Phase.COMPLETED:
        return ""
    href = quoteattr(_job_url(request, job) + "/results/result")
    mime = "text/csv" if job.response_format == "csv" else VOTABLE_CONTENT_TYPE
    return f'    <uws:result id="result" xlink:type="simple" xlink:href={href} mime-type="{mime}"/>\n'


def _parameter_elements(job: TapJob) -> str:
    values = {"query": job.query, "lang": job.lang, "request": "doQuery", "responseformat": job.response_format,
              "maxrec": job.maxrec}
    return "".join(f'    <uws:parameter id="{key}">{escape(str(value))}</uws:parameter>\n'
                   for key, value in values.items())


def _results_xml(request, job: TapJob) -> str:
    return f"  <uws:results>\n{_result_elements(request, job)}  </uws:results>\n"


def _parameters_xml(job: TapJob) -> str:
    return f"  <uws:parameters>\n{_parameter_elements(job)}  </uws:parameters>\n"


def _job_xml(request, job: TapJob) -> str:
    error = ""
    if job.phase == Phase.ERROR:
        error = (f'  <uws:errorSummary type="fatal" hasDetail="true">\n'
                 f"    <uws:message>{escape(job.error_message)}</uws:message>\n  </uws:errorSummary>\n")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:job {_UWS_NS} version="1.1">\n'
        + _element("jobId", job.pk) + _element("runId", job.run_id) + _element("ownerId", _owner_id(job))
        + _element("phase", job.phase) + _element("quote", None)
        + _element("creationTime", _iso(job.created_at)) + _element("startTime", _iso(job.started_at))
        + _element("endTime", _iso(job.ended_at)) + _element("executionDuration", int(job.execution_duration))
        + _element("destruction", _iso(job.destruction)) + _parameters_xml(job) + _results_xml(request, job)
        + error + "</uws:job>\n"
    )


def _owner_id(job: TapJob) -> str | None:
    return job.owner.get_username() if job.owner_id is not None else None


def _job(request, job_id) -> TapJob:
    """The job, if the caller may see it: its owner, or anyone for an anonymous job;
    404 otherwise."""
    job = get_object_or_404(TapJob.objects.select_related("owner"), pk=job_id)
    if job.owner_id is not None:
        caller = _caller(request)
        if caller is None or caller.pk != job.owner_id:
            raise Http404("no such job")
    return job


JOB_LIST_MAX = 1000
# Every phase UWS 1.1 names; this service's jobs are never HELD, SUSPENDED, ARCHIVED or UNKNOWN.
UWS_PHASES = ("PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "UNKNOWN", "HELD", "SUSPENDED",
              "ARCHIVED")


def _jobs_filtered(jobs, query) -> list[TapJob]:
    """The job list's filters (UWS 1.1, 2.2.3.1), parameter names in any case: ``PHASE``
    (repeatable, any of them), ``AFTER`` (created after an ISO 8601 time), ``LAST`` (the
    most recently started jobs, most recent first); without LAST, the ``JOB_LIST_MAX``
    most recently created, oldest first."""
    params: dict[str, list[str]] = {}
    for key, values in query.lists():
        params.setdefault(key.upper(), []).extend(values)
    phases = [phase.upper() for phase in params.get("PHASE", [])]
    unknown = sorted(set(phases) - set(UWS_PHASES))
    if unknown:
        raise ValueError(f"PHASE must be one of {', '.join(UWS_PHASES)}, got {', '.join(unknown)[:80]}")
    if phases:
        jobs = jobs.filter(phase__in=phases)
    if params.get("AFTER"):
        after = parse_datetime(params["AFTER"][-1].strip())
        if after is None:
            raise ValueError(f"AFTER must be an ISO 8601 time, got {params['AFTER'][-1][:40]!r}")
        if timezone.is_naive(after):
            after = timezone.make_aware(after, UTC)
        jobs = jobs.filter(created_at__gt=after)
    if params.get("LAST"):
        try:
            last = int(params["LAST"][-1])
        except ValueError:
            last = -1
        if last < 1:
            raise ValueError(f"LAST must be a positive integer, got {params['LAST'][-1][:40]!r}")
        return list(jobs.filter(started_at__isnull=False).order_by("-started_at")[:min(last, JOB_LIST_MAX)])
    return list(jobs.order_by("-created_at")[:JOB_LIST_MAX])[::-1]  # the most recent, oldest first


@csrf_exempt
def job_list(request):
    if request.method == "POST":
        params = _params(request)
        try:
            spec = _query_spec(params)
        except AdqlError as error:
            return _error(str(error), 400)
        job = job_create(run_id=params.get("RUNID", ""), owner=_caller(request), **spec)
        if params.get("PHASE", "").upper() == "RUN":
            job_start(job)
        return HttpResponseRedirect(_job_url(request, job), status=303)
    expire_jobs()
    caller = _caller(request)
    try:
        mine = _jobs_filtered(TapJob.objects.filter(owner=caller), request.GET) if caller is not None else []
    except ValueError as error:
        return _error(str(error), 400)
    refs = "".join(
        f'  <uws:jobref id="{job.pk}" xlink:href={quoteattr(_job_url(request, job))}>'
        f"<uws:phase>{job.phase}</uws:phase><uws:ownerId>{escape(caller.get_username())}</uws:ownerId>"
        f"<uws:creationTime>{_iso(job.created_at)}</uws:creationTime></uws:jobref>\n"
        for job in mine
    )
    return HttpResponse(f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:jobs {_UWS_NS} version="1.1">\n{refs}'
                        "</uws:jobs>\n", content_type=_XML)


def _wait(job: TapJob, params: dict[str, str]) -> TapJob:
    """UWS 1.1 blocking: with WAIT, answer when the phase changes or after WAIT seconds
    (at most 30)."""
    try:
        seconds = float(params.get("WAIT", ""))
    except ValueError:
        return job
    if job.is_final or job.phase == Phase.PENDING:
        return job
    seconds = 30.0 if seconds < 0 else min(seconds, 30.0)
    deadline = time.monotonic() + seconds
    phase = job.phase
    while time.monotonic() < deadline:
        time.sleep(0.1)
        job.refresh_from_db()
        if job.phase != phase:
            break
    return job


@csrf_exempt
def job_detail(request, job_id):
    job = _job(request, job_id)
    params = _params(request)
    if request.method == "DELETE" or (request.method == "POST" and params.get("ACTION", "").upper() == "DELETE"):
        job_delete(job)
        return HttpResponseRedirect(request.build_absolute_uri("/tap/async"), status=303)
    if request.method == "POST":
        return _error("POST ACTION=DELETE or use the job's phase, executionduration or destruction", 400)
    return HttpResponse(_job_xml(request, _wait(job, params)), content_type=_XML)


def _text(value) -> HttpResponse:
    return HttpResponse("" if value is None else str(value), content_type="text/plain; charset=utf-8")


@csrf_exempt
def job_phase(request, job_id):
    job = _job(request, job_id)
    if request.method == "POST":
        phase = _params(request).get("PHASE", "").upper()
        if phase == "RUN":
            if job.phase != Phase.PENDING:
                return _error(f"the job is {job.phase}: only a PENDING job can be run", 400)
            job_start(job)
        elif phase == "ABORT":
            job_abort(job)
        else:
            return _error("PHASE must be RUN or ABORT", 400)
        return HttpResponseRedirect(_job_url(request, job), status=303)
    return _text(job.phase)


@csrf_exempt
def job_execution_duration(request, job_id):
    job = _job(request, job_id)
    if request.method == "POST":
        try:
            value = float(_params(request).get("EXECUTIONDURATION", ""))
        except ValueError:
            return _error("EXECUTIONDURATION must be a number of seconds", 400)
        if job.phase != Phase.PENDING:
            return _error("only a PENDING job can be changed", 400)
        job_execution_duration_set(job=job, seconds=value)
        return HttpResponseRedirect(_job_url(request, job), status=303)
    return _text(int(job.execution_duration))


@csrf_exempt
def job_destruction(request, job_id):
    job = _job(request, job_id)
    if request.method == "POST":
        value = parse_datetime(_params(request).get("DESTRUCTION", ""))
        if value is None:
            return _error("DESTRUCTION must be an ISO 8601 time", 400)
        if timezone.is_naive(value):
            value = timezone.make_aware(value, UTC)
        job_destruction_set(job=job, when=value)
        return HttpResponseRedirect(_job_url(request, job), status=303)
    return _text(_iso(job.destruction))


def job_quote(request, job_id):
    _job(request, job_id)
    return _text("")


def job_owner(request, job_id):
    return _text(_owner_id(_job(request, job_id)))


def job_error(request, job_id):
    job = _job(request, job_id)
    if job.phase != Phase.ERROR:
        return _error(f"the job is {job.phase}, not in ERROR", 404)
    return HttpResponse(error_votable(job.error_message), content_type=VOTABLE_CONTENT_TYPE)


def job_parameters(request, job_id):
    job = _job(request, job_id)
    return HttpResponse(f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:parameters {_UWS_NS}>\n'
                        f"{_parameter_elements(job)}</uws:parameters>\n", content_type=_XML)


def job_results(request, job_id):
    job = _job(request, job_id)
    return HttpResponse(f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:results {_UWS_NS}>\n'
                        f"{_result_elements(request, job)}</uws:results>\n", content_type=_XML)


def job_result(request, job_id):
    job = _job(request, job_id)
    if job.phase != Phase.COMPLETED or not job.result_path:
        return _error(f"the job is {job.phase}: no result", 404)
    try:
        handle = open(job.result_path, "rb")  # noqa: SIM115 - FileResponse closes it
    except FileNotFoundError:
        return _error("the result is no longer kept", 404)
    content_type = CSV_CONTENT_TYPE if job.response_format == "csv" else VOTABLE_CONTENT_TYPE
    return FileResponse(handle, content_type=content_type)
