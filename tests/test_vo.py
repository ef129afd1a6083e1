"""The VO services over published releases, used as astronomers use them: pyvo (and
STILTS where installed) against a live server. Cone search 1.03, TAP 1.1 sync and async
(UWS), TAP_SCHEMA and VOSI, MAXREC overflow, the time limit and the read-only role."""

import io
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import pyvo
import requests
from astropy import units as u
from astropy.io import votable
from django.db import connection

from inference.columns import CATALOG_COLUMNS, COLUMNS_BY_NAME, STAR_COLUMNS
from spectra.models import Spectrum, Star
from vo.adql import Translation
from vo.tables import RELEASE_COLUMN

from .conftest import label_rows, make_spectra
from .test_readme_examples import README, localised

pytestmark = pytest.mark.django_db(transaction=True)

BIG_GAIA_ID = 1886955093649969280  # 19 digits: float64 cannot hold it exactly
CONE = "1=CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 10.0, 10.0, 1.5))"


@pytest.fixture
def release(release_factory):
    """Published r1: (10, 10) with a 19-digit Gaia id, (11, 11) without one and with no
    abundances, (12, 12); draft r2 at the same places, which no one may see."""
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0), (12.0, 12.0)])
    Star.objects.filter(pk=spectra[0].star_id).update(gaia_source_id=BIG_GAIA_ID)
    Star.objects.filter(pk=spectra[1].star_id).update(gaia_source_id=None)
    Spectrum.objects.filter(pk=spectra[0].pk).update(rv_blue_err=0.4321)
    formal = label_rows([4773.906621028786, 6700.0, 5000.0])
    formal[0, 1] = 2.61237
    published = release_factory(spectra, formal, label_rows([4800.0, 6700.0, 5300.0]))
    release_factory(spectra, formal, label_rows([4800.0, 6700.0, 5300.0]), name="r2", publish=False)
    return published


@pytest.fixture
def tap(live_server):
    return pyvo.dal.TAPService(f"{live_server.url}/tap")


# --- Simple Cone Search 1.03 ---------------------------------------------------------------


def test_cone_search_answers_the_rows_in_the_cone_as_a_votable(live_server, release):
    service = pyvo.dal.SCSService(f"{live_server.url}/vo/scs/r1/")
    results = service.search(pos=(10.0, 10.0), radius=1.5)
    table = results.to_table()
    # (11, 11) is 1.41 deg from (10, 10); (12, 12) is 2.82 deg away.
    assert sorted(np.asarray(table["ra"]).tolist()) == [10.0, 11.0]
    assert results.fieldname_with_ucd("ID_MAIN") == "medres_specid"
    assert results.fieldname_with_ucd("POS_EQ_RA_MAIN") == "ra"
    assert results.fieldname_with_ucd("POS_EQ_DEC_MAIN") == "dec"
    first = int(np.argmin(np.asarray(table["ra"])))
    assert table["gaia_source_id"].dtype == np.int64 and int(table["gaia_source_id"][first]) == BIG_GAIA_ID
    assert table["gaia_source_id"].mask[1 - first]  # no Gaia id: null, never a sentinel
    assert float(table["teff"][first]) == 4774.0  # rounded to the digits it carries
    assert str(table["teff"].unit) == "K"
    assert "fe_h_err" in table.colnames and "rv_blue_err" not in table.colnames  # VERB=2: principal columns


def _votable(url, params):
    response = requests.get(url, params)
    assert response.status_code == 200
    return votable.parse_single_table(io.BytesIO(response.content))


def test_cone_search_verbosity_levels(live_server, release):
    url = f"{live_server.url}/vo/scs/r1/"
    names = {}
    for verb in (1, 2, 3):
        answer = _votable(url, {"RA": 10, "DEC": 10, "SR": 0.5, "VERB": verb})
        names[verb] = [field.name for field in answer.fields]
        assert len(answer.array) == 1
    assert names[1] == ["medres_specid", "ra", "dec"]
    assert set(names[1]) < set(names[2]) < set(names[3])
    assert names[3] == [column.name for column in CATALOG_COLUMNS]
    column = COLUMNS_BY_NAME["rv_blue_err"]
    field = _votable(url, {"RA": 10, "DEC": 10, "SR": 0.5, "VERB": 3}).get_field_by_id("rv_blue_err")
    assert (field.unit, field.ucd, field.description) == (u.Unit(column.unit), column.ucd, column.description)


def test_cone_search_of_the_star_table(live_server, release):
    results = pyvo.dal.SCSService(f"{live_server.url}/vo/scs/r1/stars/").search(pos=(12.0, 12.0), radius=0.1,
                                                                                verbosity=3)
    table = results.to_table()
    assert len(table) == 1 and table.colnames == [column.name for column in STAR_COLUMNS]
    assert results.fieldname_with_ucd("ID_MAIN") == "designation"


def test_cone_search_errors_are_votables(live_server, release):
    service = pyvo.dal.SCSService(f"{live_server.url}/vo/scs/r1/")
    response = requests.get(f"{live_server.url}/vo/scs/r1/", {"RA": 10, "DEC": 100, "SR": 1})
    assert response.status_code == 200 and 'value="DEC must be within [-90, 90] (got 100)"' in response.text
    with pytest.raises(pyvo.dal.DALQueryError, match="SR must be within"):
        service.search(pos=(10.0, 10.0), radius=45.0)
    response = requests.get(f"{live_server.url}/vo/scs/r1/", {"RA": "ten", "DEC": 10, "SR": 1})
    assert response.status_code == 200 and 'name="Error"' in response.text and "RA must be a number" in response.text
    for name in ("r2", "nope"):  # a draft is as unknown as a missing release
        response = requests.get(f"{live_server.url}/vo/scs/{name}/", {"RA": 10, "DEC": 10, "SR": 1})
        assert response.status_code == 404 and "no published release" in response.text
    # SR=0: the table's metadata, no rows (what pyvo's describe() asks for).
    assert [column.name for column in service.columns][:3] == ["designation", "gaia_source_id", "medres_specid"]


# --- TAP sync ------------------------------------------------------------------------------


def test_tap_sync_cone_query_with_top(tap, release):
    results = tap.run_sync(f"SELECT TOP 5 release, designation, gaia_source_id, ra, dec, teff, logg, fe_h, flag "
                           f"FROM spcanet.entries WHERE {CONE} ORDER BY ra")
    table = results.to_table()
    assert table["release"].tolist() == ["r1", "r1"]  # the draft r2 is not there
    assert table["ra"].tolist() == [10.0, 11.0]
    assert table["gaia_source_id"].dtype == np.int64 and int(table["gaia_source_id"][0]) == BIG_GAIA_ID
    assert table["gaia_source_id"].mask[1]
    assert float(table["teff"][0]) == 4774.0 and float(table["logg"][0]) == pytest.approx(2.612, abs=1e-6)
    assert table["fe_h"].mask[1]  # the hot star has no abundances: null
    assert str(table["teff"].unit) == "K" and results.fieldname_with_ucd("phys.temperature.effective;meta.main")
    assert len(tap.run_sync("SELECT TOP 1 ra FROM spcanet.entries ORDER BY ra DESC")) == 1


def test_tap_distance_matches_astropy(tap, release):
    from astropy.coordinates import SkyCoord

    table = tap.run_sync("SELECT ra, dec, DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', 10.0, 10.0)) AS sep "
                         "FROM spcanet.entries WHERE DISTANCE(ra, dec, 10.0, 10.0) < 2 ORDER BY sep").to_table()
    assert table["ra"].tolist() == [10.0, 11.0]
    expected = SkyCoord(11.0, 11.0, unit="deg").separation(SkyCoord(10.0, 10.0, unit="deg")).deg
    assert table["sep"][0] == 0.0 and table["sep"][1] == pytest.approx(expected, rel=1e-12)


def test_tap_sees_published_releases_only(tap, release):
    counts = tap.run_sync("SELECT release, COUNT(*) AS n FROM spcanet.entries GROUP BY release").to_table()
    assert counts["release"].tolist() == ["r1"] and counts["n"].tolist() == [3]
    assert len(tap.run_sync("SELECT * FROM spcanet.stars")) == 3


def test_tap_schema_describes_every_published_table_and_column(tap, release):
    tables = tap.run_sync("SELECT table_name FROM TAP_SCHEMA.tables").to_table()["table_name"].tolist()
    assert {"spcanet.entries", "spcanet.stars", "tap_schema.columns"} <= set(tables)
    columns = tap.run_sync("SELECT column_name, unit, ucd, datatype, description FROM TAP_SCHEMA.columns "
                           "WHERE table_name = 'spcanet.entries' ORDER BY column_index").to_table()
    definition = (RELEASE_COLUMN, *CATALOG_COLUMNS)
    assert columns["column_name"].tolist() == [column.name for column in definition]
    teff = next(i for i, name in enumerate(columns["column_name"]) if name == "teff")
    assert (columns["unit"][teff], columns["ucd"][teff]) == ("K", COLUMNS_BY_NAME["teff"].ucd)
    assert columns["datatype"][columns["column_name"].tolist().index("gaia_source_id")] == "long"
    # VOSI tables (what TOPCAT and pyvo read) says the same.
    vosi = {table.name: table for table in tap.tables}
    assert [column.name for column in vosi["spcanet.stars"].columns] == ["release", *(c.name for c in STAR_COLUMNS)]
    assert u.Unit(next(c for c in vosi["spcanet.entries"].columns if c.name == "rv_red_err").unit) == u.km / u.s


def test_vosi_availability_and_capabilities(tap, live_server):
    assert tap.available
    assert tap.hardlimit == 200_000 and tap.maxrec == 10_000
    capability = next(c for c in tap.capabilities if c.standardid.startswith("ivo://ivoa.net/std/TAP"))
    assert "ADQL" in [language.name for language in capability.languages]


def test_maxrec_overflow_is_signalled(tap, release, live_server):
    with pytest.warns(pyvo.dal.DALOverflowWarning):
        results = tap.run_sync("SELECT ra FROM spcanet.entries", maxrec=2)
        results.check_overflow_warning(1)
    assert len(results) == 2 and results.query_status == "OVERFLOW"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact = tap.run_sync("SELECT ra FROM spcanet.entries", maxrec=3)
    assert len(exact) == 3 and exact.query_status == "OK"


def test_csv_results(live_server, release):
    response = requests.post(f"{live_server.url}/tap/sync", data={
        "REQUEST": "doQuery", "LANG": "ADQL", "RESPONSEFORMAT": "csv",
        "QUERY": "SELECT designation, gaia_source_id, teff, fe_h FROM spcanet.entries ORDER BY ra"})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    lines = response.text.splitlines()
    assert lines[0] == "designation,gaia_source_id,teff,fe_h"
    assert lines[1].split(",")[1:] == [str(BIG_GAIA_ID), "4774", "-0.200"]
    assert lines[2].split(",")[1:] == ["", "6700", ""]


def test_tap_refuses_auth_tables_and_writes(tap, release, live_server):
    for query in ("SELECT * FROM auth_user", "SELECT username FROM public.auth_user",
                  "INSERT INTO spcanet.entries (ra) VALUES (1)", "SELECT ra FROM spcanet.entries; DELETE FROM x",
                  "SELECT * FROM inference_catalogentry"):
        response = requests.post(f"{live_server.url}/tap/sync", data={"LANG": "ADQL", "QUERY": query})
        assert response.status_code == 400, query
        assert '<INFO name="QUERY_STATUS" value="ERROR">' in response.text
        with pytest.raises(pyvo.dal.DALQueryError):
            tap.run_sync(query)


def test_the_database_role_refuses_what_a_translation_would_let_through(release, monkeypatch):
    """Even SQL that the ADQL translation should never produce cannot read auth tables or write."""
    from vo import query
    from vo.adql import AdqlError

    def through(sql):
        monkeypatch.setattr(query, "translate", lambda adql: Translation(sql, ()))
        return query.run_query("ignored", maxrec=10, timeout_s=5)

    with pytest.raises(AdqlError, match="permission denied"):
        through("SELECT username, password FROM public.auth_user")
    with pytest.raises(AdqlError, match="permission denied|read-only"):
        through("SELECT nextval('public.inference_catalogentry_id_seq')")
    with pytest.raises(AdqlError, match="permission denied"):
        through("SELECT * FROM public.inference_catalogrelease")  # drafts are in there
    # The connection is the site's own again afterwards.
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user = session_user, current_setting('transaction_read_only')")
        assert cursor.fetchone() == (True, "off")
    assert through("SELECT COUNT(*) AS n FROM spcanet.entries").columns.data[0].tolist() == [3]


def test_a_long_query_hits_the_time_limit(tap, release, settings):
    settings.TAP_SYNC_TIMEOUT_S = 0.3
    slow = ("SELECT COUNT(*) FROM tap_schema.columns AS a, tap_schema.columns AS b, tap_schema.columns AS c, "
            "tap_schema.columns AS d")
    with pytest.raises(pyvo.dal.DALQueryError, match="time limit of 0.3 s"):
        tap.run_sync(slow)


# --- TAP async (UWS) -----------------------------------------------------------------------


def test_async_query_with_pyvo(tap, release):
    results = tap.run_async(f"SELECT designation, gaia_source_id, teff FROM spcanet.entries WHERE {CONE} "
                            "ORDER BY ra")
    table = results.to_table()
    assert len(table) == 2 and int(table["gaia_source_id"][0]) == BIG_GAIA_ID and table["gaia_source_id"].mask[1]


def test_async_job_lifecycle(tap, release, live_server):
    job = tap.submit_job("SELECT TOP 2 ra FROM spcanet.entries ORDER BY ra", maxrec=1)
    assert job.phase == "PENDING"
    assert job.execution_duration.sec == 600
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=30)
    assert job.phase == "COMPLETED"
    result = job.fetch_result()
    assert len(result) == 1 and result.query_status == "OVERFLOW"
    url = job.url
    assert job.url not in requests.get(f"{live_server.url}/tap/async").text  # anonymous jobs are never listed
    job.delete()
    assert requests.get(url).status_code == 404

    failed = tap.submit_job("SELECT * FROM public.auth_user")
    failed.run()
    failed.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=30)
    assert failed.phase == "ERROR"
    with pytest.raises(pyvo.dal.DALQueryError, match="permission denied"):
        failed.raise_if_error()
    assert "permission denied" in requests.get(f"{failed.url}/error").text

    pending = tap.submit_job("SELECT ra FROM spcanet.entries")
    pending.abort()
    assert pending.phase == "ABORTED"
    assert requests.post(f"{pending.url}/phase", data={"PHASE": "RUN"}).status_code == 400


def _job_id(response) -> str:
    assert response.status_code == 303, response.content[:300]
    return response["Location"].rstrip("/").rsplit("/", 1)[1]


def _listed_ids(client) -> list[str]:
    response = client.get("/tap/async")
    assert response.status_code == 200
    return _listed_ids_in(response.content.decode())


def _listed_ids_in(job_list: str) -> list[str]:
    return re.findall(r'<uws:jobref id="([^"]+)"', job_list)


_JOB_RESOURCES = ("", "/phase", "/executionduration", "/destruction", "/quote", "/owner", "/error", "/parameters",
                  "/results", "/results/result")


def test_async_jobs_are_seen_and_changed_by_their_owner_only(release, django_user_model):
    """UWS 1.1 ownership: user B, or an anonymous caller, can neither list, read, run,
    abort, change nor delete user A's job (each answers 404, as for no job); the job list
    shows the caller's own jobs, and anonymous jobs to no one."""
    from django.test import Client

    from vo.models import TapJob

    alice, bob = Client(), Client()
    alice.force_login(django_user_model.objects.create_user("alice", password="x"))
    bob.force_login(django_user_model.objects.create_user("bob", password="x"))
    anonymous = Client()
    query = {"LANG": "ADQL", "QUERY": "SELECT TOP 2 ra FROM spcanet.entries ORDER BY ra"}
    mine = _job_id(alice.post("/tap/async", query))
    base = f"/tap/async/{mine}"
    assert TapJob.objects.get(pk=mine).owner.username == "alice"
    assert _listed_ids(alice) == [mine]
    assert "<uws:ownerId>alice</uws:ownerId>" in alice.get("/tap/async").content.decode()
    assert "<uws:ownerId>alice</uws:ownerId>" in alice.get(base).content.decode()
    assert alice.get(f"{base}/owner").content == b"alice"

    for other in (bob, anonymous):
        assert _listed_ids(other) == []
        for resource in _JOB_RESOURCES:
            assert other.get(base + resource).status_code == 404, resource
        assert other.post(f"{base}/phase", {"PHASE": "RUN"}).status_code == 404
        assert other.post(f"{base}/phase", {"PHASE": "ABORT"}).status_code == 404
        assert other.post(f"{base}/executionduration", {"EXECUTIONDURATION": "1"}).status_code == 404
        assert other.post(f"{base}/destruction", {"DESTRUCTION": "2000-01-01T00:00:00Z"}).status_code == 404
        assert other.post(base, {"ACTION": "DELETE"}).status_code == 404
        assert other.delete(base).status_code == 404
    job = TapJob.objects.get(pk=mine)  # untouched by the others
    assert job.phase == "PENDING" and job.execution_duration == 600 and job.destruction.year > 2000

    assert alice.post(f"{base}/phase", {"PHASE": "RUN"}).status_code == 303  # runs at once (eager tasks)
    assert TapJob.objects.get(pk=mine).phase == "COMPLETED"
    assert alice.get(f"{base}/results/result").status_code == 200
    assert bob.get(f"{base}/results/result").status_code == 404

    # An anonymous job: reached by its id alone (by anyone who has it), listed to no one.
    theirs = _job_id(anonymous.post("/tap/async", query))
    assert TapJob.objects.get(pk=theirs).owner is None
    assert _listed_ids(anonymous) == [] and _listed_ids(bob) == [] and _listed_ids(alice) == [mine]
    detail = anonymous.get(f"/tap/async/{theirs}").content.decode()
    assert '<uws:ownerId xsi:nil="true"/>' in detail
    assert anonymous.get(f"/tap/async/{theirs}/owner").content == b""

    assert bob.delete(base).status_code == 404 and alice.delete(base).status_code == 303
    assert not TapJob.objects.filter(pk=mine).exists() and alice.get(base).status_code == 404


@pytest.mark.worker
def test_async_query_runs_on_a_celery_worker(tap, release, settings, tmp_path):
    from .test_pipeline import _send_to_workers, _stop, _worker, _worker_environment

    env, _ = _worker_environment(settings)
    env["SPCANET_VAR_DIR"] = str(tmp_path)
    _send_to_workers({"vo.run_tap_job": {"queue": env["CELERY_CPU_QUEUE"]}})
    settings.CELERY_CPU_QUEUE = env["CELERY_CPU_QUEUE"]
    worker = _worker(env, env["CELERY_CPU_QUEUE"])
    try:
        job = tap.submit_job("SELECT COUNT(*) AS n FROM spcanet.entries")
        job.run()
        job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=60)
        assert job.phase == "COMPLETED"
        assert job.fetch_result().to_table()["n"].tolist() == [3]
        from vo.models import TapJob

        assert TapJob.objects.get(pk=job.job_id).result_path.startswith(str(tmp_path))  # written by the worker
    finally:
        _send_to_workers(None)
        _stop(worker)


# --- README examples, STILTS ---------------------------------------------------------------


def _readme_section_blocks(section: str, language: str) -> list[str]:
    text = README.read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", body, flags=re.DOTALL)


def test_readme_pyvo_example(live_server, release):
    (block,) = [block for block in _readme_section_blocks("Opening a release", "python") if "pyvo" in block]
    namespace: dict = {}
    exec(compile(localised(block, live_server, release), "README.md", "exec"), namespace)
    table = namespace["table"]
    assert table["designation"].tolist() == [f"LAMOST J{i:06d}.00+000000.0" for i in (0, 1)]  # flag = 1, in the cone
    assert int(table["gaia_source_id"][0]) == BIG_GAIA_ID and table["gaia_source_id"].mask[1]
    assert len(namespace["cone"]) == 2


@pytest.mark.skipif(shutil.which("stilts") is None, reason="STILTS is not installed (Debian package `stilts`)")
def test_readme_stilts_tapquery_and_cone(live_server, release):
    (block,) = _readme_section_blocks("VO services", "bash")
    command = localised(block, live_server, release).replace("\\\n", " ")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    # tapquery: a header and the release's 3 rows; cone: a header and the 2 rows within 1.5 deg.
    assert lines[0] == "designation,gaia_source_id,teff" and len(lines) == 7
    assert f"LAMOST J000000.00+000000.0,{BIG_GAIA_ID},4774.0" in lines[1:4]
    assert lines[4].startswith("designation,gaia_source_id,medres_specid")


@pytest.mark.parametrize("params", [
    {"QUERY": "SELECT ra FROM spcanet.entries WHERE designation = 'a\x00b'"},
    {"QUERY": "SELECT " + "(" * 400 + "1" + ")" * 399 + " AS x FROM spcanet.entries"},
    {"QUERY": "SELECT set_config('role', 'postgres', true) AS x"},
    {"QUERY": "SELECT ra FROM spcanet.entries WHERE designation = E'\\'' OR 1 = 1"},
    {"QUERY": "SELECT 1/0 AS x FROM spcanet.entries"},
    {"QUERY": "SELECT ra FROM spcanet.entries", "MAXREC": "many"},
    {"QUERY": "SELECT ra FROM spcanet.entries", "MAXREC": "-1"},
    {"QUERY": "SELECT ra FROM spcanet.entries", "LANG": "SQL"},
    {"QUERY": "SELECT ra FROM spcanet.entries", "RESPONSEFORMAT": "fits"},
    {"QUERY": "SELECT ra FROM spcanet.entries WHERE 1=CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 1, 95, 1))"},
    {"QUERY": "SELECT ra FROM spcanet.entries WHERE 1=CONTAINS(POINT('ICRS', ra, dec), BOX('ICRS', 1, 2, 3, 4))"},
    {"QUERY": ""},
])
def test_bad_tap_requests_are_votable_errors(client, release, params):
    response = client.post("/tap/sync", {"LANG": "ADQL", **params})
    assert response.status_code == 400
    assert b'<INFO name="QUERY_STATUS" value="ERROR">' in response.content


def test_answers_read_and_written_in_blocks_are_the_same(client, release, monkeypatch):
    """Rows fetched, packed and base64-encoded a block at a time give the same VOTable."""
    from vo import query
    from vo import votable as vo_votable

    data = {"QUERY": "SELECT * FROM spcanet.entries ORDER BY ra", "MAXREC": "2"}
    whole = b"".join(client.post("/tap/sync", data).streaming_content)
    monkeypatch.setattr(query, "_FETCH_ROWS", 1)
    monkeypatch.setattr(vo_votable, "_ROWS_PER_BLOCK", 1)
    monkeypatch.setattr(vo_votable, "_BASE64_GROUP", 57)
    pieces = list(client.post("/tap/sync", data).streaming_content)
    assert b"".join(pieces) == whole and len(pieces) > 5
    table = votable.parse_single_table(io.BytesIO(whole)).to_table()
    assert table["ra"].tolist() == [10.0, 11.0] and int(table["gaia_source_id"][0]) == BIG_GAIA_ID
    assert b'<INFO name="QUERY_STATUS" value="OVERFLOW"/>' in whole.split(b"</TABLE>")[1]


@pytest.mark.django_db
def test_vo_queries_count_against_the_anonymous_rate_limit(client, release):
    from django.core.cache import cache
    from rest_framework.throttling import AnonRateThrottle

    cache.clear()
    saved = AnonRateThrottle.THROTTLE_RATES
    AnonRateThrottle.THROTTLE_RATES = {**saved, "anon": "2/min"}
    try:
        codes = [client.get(f"/vo/scs/{release.name}/", {"RA": 10, "DEC": 10, "SR": 1}).status_code for _ in range(2)]
        refused = client.get("/tap/sync", {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": "SELECT TOP 1 ra FROM spcanet.entries"})
    finally:
        AnonRateThrottle.THROTTLE_RATES = saved
        cache.clear()
    assert codes == [200, 200]
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert b"throttled" in refused.content and refused["Content-Type"].startswith("application/x-votable+xml")


def test_the_job_list_takes_the_uws_filters(release, django_user_model):
    """UWS 1.1 job-list filters: PHASE (repeatable), AFTER (creation time), LAST (most
    recently started first); a bad value is a 400 naming the parameter."""
    from django.test import Client

    from vo.models import TapJob

    alice = Client()
    alice.force_login(django_user_model.objects.create_user("alice", password="x"))
    query = {"LANG": "ADQL", "QUERY": "SELECT TOP 2 ra FROM spcanet.entries ORDER BY ra"}
    first, second, third = (_job_id(alice.post("/tap/async", query)) for _ in range(3))
    for job_id in (third, second):  # second started last
        assert alice.post(f"/tap/async/{job_id}/phase", {"PHASE": "RUN"}).status_code == 303
    assert TapJob.objects.get(pk=second).phase == TapJob.objects.get(pk=third).phase == "COMPLETED"

    def listed(params) -> list[str]:
        response = alice.get("/tap/async", params)
        assert response.status_code == 200, response.content
        return _listed_ids_in(response.content.decode())

    assert listed({}) == [first, second, third]  # in creation order
    assert listed({"PHASE": "PENDING"}) == [first]
    assert listed({"PHASE": "HELD"}) == []  # a UWS phase this service's jobs never reach
    assert listed({"phase": ["completed", "PENDING"]}) == [first, second, third]
    after = TapJob.objects.get(pk=first).created_at.isoformat()
    assert listed({"AFTER": after}) == [second, third]
    assert listed({"AFTER": "2000-01-01T00:00:00Z", "PHASE": "COMPLETED"}) == [second, third]
    assert listed({"LAST": 1}) == [second]
    assert listed({"LAST": 5}) == [second, third]  # started jobs only, most recent first
    for bad in ({"PHASE": "DONE"}, {"AFTER": "yesterday"}, {"LAST": "0"}, {"LAST": "x"}):
        response = alice.get("/tap/async", bad)
        assert response.status_code == 400 and next(iter(bad)) in response.content.decode()


def test_a_deleted_account_takes_its_jobs_and_their_result_files(release, django_user_model,
                                                                  django_capture_on_commit_callbacks):
    from pathlib import Path

    from django.test import Client

    from vo.models import TapJob

    carol = django_user_model.objects.create_user("carol", password="x")
    client = Client()
    client.force_login(carol)
    query = {"LANG": "ADQL", "QUERY": "SELECT TOP 2 ra FROM spcanet.entries ORDER BY ra", "PHASE": "RUN"}
    kept, gone = (_job_id(client.post("/tap/async", query)) for _ in range(2))
    paths = {job_id: Path(TapJob.objects.get(pk=job_id).result_path) for job_id in (kept, gone)}
    assert all(path.is_file() for path in paths.values())
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(f"/tap/async/{gone}").status_code == 303
    assert not paths[gone].exists() and paths[kept].is_file()
    with django_capture_on_commit_callbacks(execute=True):
        carol.delete()
    assert not TapJob.objects.filter(pk=kept).exists() and not paths[kept].exists()
