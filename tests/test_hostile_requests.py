"""Inputs from the outside world: malformed query parameters and cursors, attempts to
delete pipeline data in the admin, unpublished models, image endpoints' errors, and
Authorization headers."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import django_filters
import numpy as np
import pytest
from django.contrib import admin
from django.core.cache import cache
from django.test import Client, RequestFactory
from rest_framework.test import APIClient
from rest_framework.throttling import AnonRateThrottle

from core.api.filters import INT64_MAX, INT64_MIN, IntegerFilter, designation_normalise, int64_parse
from core.flags import CATALOG_FLAGS
from inference.filters import CatalogEntryFilterSet, LabelSetFilterSet, ModelVersionFilterSet
from inference.models import CatalogEntry, CatalogRelease, LabelSet, ModelVersion
from inference.selectors import label_sets_visible, model_versions_visible, releases_visible
from inference.services.prediction import labelsets_upsert
from inference.services.release import catalog_release_build, catalog_release_publish
from spcanet_site.urls import router
from spectra.api import SpectrumFilterSet, StarFilterSet
from spectra.models import CurationRecord, Spectrum, Star

from .conftest import label_rows, make_model, make_spectra

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
DESIGNATION = "LAMOST J230311.44+321335.5"


@pytest.fixture
def client():
    return APIClient()


@pytest.fixture
def staff_client(curator):
    client = APIClient()
    client.force_authenticate(curator)
    return client


@pytest.fixture
def release(release_factory):
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0), (345.797, 32.226)])
    Star.objects.filter(pk=spectra[2].star_id).update(designation=DESIGNATION)
    return release_factory(spectra, label_rows([4800.0, 5000.0, 5100.0]), label_rows([4800.0, 5000.0, 5100.0]))


@pytest.fixture
def throttled():
    """Anonymous requests limited to 2 a minute (the setting is empty by default)."""
    cache.clear()
    saved = AnonRateThrottle.THROTTLE_RATES
    AnonRateThrottle.THROTTLE_RATES = {**saved, "anon": "2/min"}
    yield
    AnonRateThrottle.THROTTLE_RATES = saved
    cache.clear()


def _cursor(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- 9. bad query parameters ------------------------------------------------------------

def test_int64_parse_accepts_whole_numbers_in_range_only():
    assert int64_parse("42") == 42 and int64_parse(" -7 ") == -7 and int64_parse("+3") == 3
    assert int64_parse(str(INT64_MAX)) == INT64_MAX and int64_parse(str(INT64_MIN)) == INT64_MIN
    for text in ("1.5", "1.0", "1e3", "0x10", "1_000", "", "\u0661\u0662", "12\x00", "nan"):
        with pytest.raises(ValueError, match="whole number"):
            int64_parse(text)
    for text in (str(INT64_MAX + 1), str(INT64_MIN - 1), "12345678901234567890"):
        with pytest.raises(ValueError, match="between -9223372036854775808 and 9223372036854775807"):
            int64_parse(text)


@pytest.mark.parametrize(
    ("url", "params", "parameter", "message"),
    [
        ("/api/v1/stars/", {"gaia_source_id": "1000.9"}, "gaia_source_id", "whole number"),
        ("/api/v1/stars/", {"gaia_source_id": "12345678901234567890"}, "gaia_source_id", "between"),
        ("/api/v1/stars/", {"gaia_source_id": "-9223372036854775809"}, "gaia_source_id", "between"),
        ("/api/v1/spectra/", {"gaia_source_id": "1e3"}, "gaia_source_id", "whole number"),
        ("/api/v1/spectra/", {"gaia_source_id": "99999999999999999999"}, "gaia_source_id", "between"),
        ("/api/v1/label-sets/", {"spectrum": "1.5"}, "spectrum", "whole number"),
        ("/api/v1/label-sets/", {"spectrum": "12345678901234567890"}, "spectrum", "between"),
        ("/api/v1/label-sets/", {"spectrum": "\u0661"}, "spectrum", "whole number"),
        ("/api/v1/releases/r1/entries/", {"gaia_source_id": "1000.9"}, "gaia_source_id", "whole number"),
        ("/api/v1/releases/r1/entries/", {"gaia_source_id": "12345678901234567890"}, "gaia_source_id", "between"),
        ("/api/v1/releases/r1/export.csv", {"gaia_source_id": "1000.9"}, "gaia_source_id", "whole number"),
        ("/api/v1/stars/", {"page_size": "1.5"}, "page_size", "integer"),
        ("/api/v1/releases/r1/validation/", {"compare": "r1\x00"}, "compare", "no release named"),
    ],
)
def test_malformed_integers_get_400_naming_the_parameter(client, release, url, params, parameter, message):
    response = client.get(url, params)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert parameter in body and message in json.dumps(body[parameter])


def test_fractional_ids_never_truncate_to_a_real_row(client, release):
    spectrum = Spectrum.objects.order_by("pk").first()
    assert client.get("/api/v1/label-sets/", {"spectrum": f"{spectrum.pk}.5"}).status_code == 400
    assert client.get("/api/v1/stars/", {"gaia_source_id": f"{spectrum.star.gaia_source_id}.9"}).status_code == 400
    whole = client.get("/api/v1/label-sets/", {"spectrum": str(spectrum.pk)}).json()["results"]
    assert {row["spectrum"] for row in whole} == {spectrum.pk}
    for edge in (INT64_MAX, INT64_MIN):  # in range: a valid query that matches nothing
        response = client.get("/api/v1/stars/", {"gaia_source_id": str(edge)})
        assert response.status_code == 200 and response.json()["results"] == []


def test_integer_filters_are_checked_before_any_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        filterset = LabelSetFilterSet(data={"spectrum": "12345678901234567890"}, queryset=LabelSet.objects.none())
        assert not filterset.is_valid()
    assert "between -9223372036854775808 and 9223372036854775807" in filterset.errors["spectrum"][0]


@pytest.mark.parametrize(
    "filterset_class",
    [StarFilterSet, SpectrumFilterSet, CatalogEntryFilterSet, LabelSetFilterSet, ModelVersionFilterSet],
)
def test_every_integer_column_is_filtered_with_the_strict_integer_filter(filterset_class):
    from django.db import models
    from django_filters.utils import get_model_field

    model = filterset_class._meta.model
    for name, declared in filterset_class.base_filters.items():
        assert type(declared) is not django_filters.NumberFilter, f"{filterset_class.__name__}.{name}"
        field = get_model_field(model, declared.field_name) if declared.method is None else None
        integer_column = isinstance(field, models.IntegerField | models.ForeignKey | models.AutoField)
        if integer_column and isinstance(declared, django_filters.NumberFilter):
            assert isinstance(declared, IntegerFilter), f"{filterset_class.__name__}.{name}"


def test_out_of_range_ids_are_400_on_sqlite_too(tmp_path):
    """The same requests on the embedded default (SQLite), where a 20-digit id used to raise
    OverflowError (a 500) inside the database driver."""
    script = """
import json, django
django.setup()
from django.contrib.auth import get_user_model
from django.core.management import call_command
call_command("migrate", verbosity=0)
import numpy as np
from rest_framework.test import APIClient
from inference.models import ModelVersion
from inference.services.prediction import labelsets_upsert
from tests.conftest import label_rows, make_model, make_spectra
spectrum = make_spectra([(1.0, 1.0)])[0]
model = make_model(ModelVersion.Role.FORMAL)
labelsets_upsert(model_version=model, spectrum_ids=np.array([spectrum.pk]), values=label_rows([5000.0]),
                 errors=label_rows([1.0]))
client = APIClient(raise_request_exception=False)
client.force_authenticate(get_user_model().objects.create_user("staff", is_staff=True))  # the model is unreleased
requests = {
    "huge spectrum": "/api/v1/label-sets/?spectrum=12345678901234567890",
    "fractional spectrum": "/api/v1/label-sets/?spectrum=1.5",
    "huge gaia": "/api/v1/stars/?gaia_source_id=12345678901234567890",
    "huge cursor": "/api/v1/spectra/?cursor=cD05OTk5OTk5OTk5OTk5OTk5OTk5OQ==",
    "valid": "/api/v1/label-sets/?spectrum=%d" % spectrum.pk,
}
out = {}
for name, url in requests.items():
    response = client.get(url)
    out[name] = [response.status_code, response.content.decode()]
print(json.dumps(out))
"""
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(DJANGO_SETTINGS_MODULE="spcanet_site.settings.local", SPCANET_VAR_DIR=str(tmp_path),
               DJANGO_ALLOWED_HOSTS="testserver", PYTHONPATH=str(ROOT), DJANGO_DEBUG="false")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["huge spectrum"][0] == 400 and "between" in json.loads(out["huge spectrum"][1])["spectrum"][0]
    assert out["fractional spectrum"][0] == 400 and "whole number" in out["fractional spectrum"][1]
    assert out["huge gaia"][0] == 400 and "gaia_source_id" in out["huge gaia"][1]
    assert out["huge cursor"][0] == 404 and "Invalid cursor" in out["huge cursor"][1]
    assert out["valid"][0] == 200 and '"teff":5000.0' in out["valid"][1]


_BAD_CURSORS = ["garbage", "%%%", _cursor("p=abc"), _cursor("p=1.5"), _cursor("p=99999999999999999999"),
                _cursor("p=-99999999999999999999"), _cursor("p=1\x00"), _cursor("r=x"), _cursor("o=-1")]


@pytest.mark.parametrize("cursor", _BAD_CURSORS)
def test_every_cursor_paginated_endpoint_answers_a_bad_cursor_with_404(staff_client, release, cursor):
    urls = []
    for prefix, viewset, _ in router.registry:
        if getattr(viewset, "pagination_class", None) is not None:
            urls.append("/api/v1/" + prefix.replace("(?P<release_name>[-\\w]+)", release.name) + "/")
    assert len(urls) == len(router.registry) == 9
    for url in urls:
        response = staff_client.get(url, {"cursor": cursor})
        assert response.status_code == 404, (url, response.content)
        assert response.json()["detail"].startswith("Invalid cursor"), url


def test_a_good_cursor_still_walks_every_row(client, release):
    seen, url = [], "/api/v1/stars/?page_size=1"
    while url:
        page = client.get(url).json()
        seen += [row["id"] for row in page["results"]]
        url = page["next"]
    assert sorted(seen) == sorted(Star.objects.values_list("pk", flat=True))


def test_a_raw_plus_in_a_designation_is_read_as_plus(client, release):
    raw = "designation=LAMOST%20J230311.44+321335.5"  # '+' unencoded: the query string makes it a space
    for url in ("/api/v1/stars/", "/api/v1/spectra/", f"/api/v1/releases/{release.name}/entries/"):
        response = client.get(f"{url}?{raw}")
        assert response.status_code == 200, response.content
        assert len(response.json()["results"]) == 1, url
    stars = client.get("/api/v1/stars/", {"designation": DESIGNATION}).json()["results"]  # encoded as %2B
    assert [s["designation"] for s in stars] == [DESIGNATION]
    assert client.get("/api/v1/stars/?designation=LAMOST%20J230311.44-321335.5").json()["results"] == []
    assert designation_normalise("LAMOST J230311.44 321335.5") == DESIGNATION
    assert designation_normalise("LAMOST J230311.44-321335.5") == "LAMOST J230311.44-321335.5"
    assert designation_normalise("some object name") == "some object name"


def test_a_nul_byte_in_a_release_name_is_no_release(client, release):
    page = client.get(f"/releases/{release.name}/validation/", {"compare": "r1\x00"})
    assert page.status_code == 200  # compared with nothing, as for any unknown name
    api = client.get(f"/api/v1/releases/{release.name}/validation/", {"compare": "r1\x00"})
    assert api.status_code == 400 and "no release named" in api.json()["compare"]


def test_admin_search_reads_a_space_in_the_sign_position_as_plus(curator, release):
    client = Client()
    client.force_login(curator)
    page = client.get("/admin/spectra/star/", {"q": "LAMOST J230311.44 321335.5"}).content.decode()
    assert DESIGNATION in page and "LAMOST J000000.00+000000.0" not in page


# --- 10. no deletion of pipeline data in the admin ----------------------------------------

def test_no_admin_can_delete_pipeline_rows(curator):
    request = RequestFactory().get("/admin/")
    request.user = curator
    pipeline_models = {
        "spectra": {"star", "spectrum", "sourcefile", "curationrecord"},
        "inference": {"modelversion", "labelset", "catalogentry", "catalogstar", "referencecatalog", "referencelabel"},
        "validation": {"referencesurvey", "referencestar", "validationresult"},
        "tasks": {"processingrun", "processingchunk"},
    }
    seen = set()
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        if meta.app_label not in pipeline_models:
            continue
        seen.add((meta.app_label, meta.model_name))
        if meta.model_name == "catalogrelease":
            continue  # curators make draft releases here; see the next test
        assert meta.model_name in pipeline_models[meta.app_label], f"decide whether {meta.label} is pipeline data"
        assert not model_admin.has_delete_permission(request), meta.label
        assert "delete_selected" not in model_admin.get_actions(request), meta.label
    assert {name for _, name in seen} >= set().union(*pipeline_models.values())


def test_curators_delete_draft_releases_but_never_published_ones(curator, release_factory):
    request = RequestFactory().get("/admin/")
    request.user = curator
    model_admin = admin.site._registry[CatalogRelease]
    first, second = make_spectra([(1.0, 1.0), (2.0, 2.0)])
    draft = release_factory([first], label_rows([5000.0]), label_rows([5000.0]), name="draft", publish=False)
    published = release_factory([second], label_rows([5000.0]), label_rows([5000.0]), name="pub")
    assert model_admin.has_delete_permission(request, draft)
    assert not model_admin.has_delete_permission(request, published)
    client = Client()
    client.force_login(curator)
    # The confirmation page counts the rows that go with a release instead of listing them.
    page = client.get(f"/admin/inference/catalogrelease/{draft.pk}/delete/")
    assert page.status_code == 200 and "Catalog entries: 1" in page.content.decode()
    # The bulk action refuses a selection holding a published release, whole.
    response = client.post("/admin/inference/catalogrelease/", {
        "action": "delete_selected", "_selected_action": [str(draft.pk), str(published.pk)], "post": "yes"})
    assert response.status_code == 403
    assert client.post(f"/admin/inference/catalogrelease/{published.pk}/delete/", {"post": "yes"}).status_code == 403
    assert CatalogRelease.objects.filter(pk__in=[draft.pk, published.pk]).count() == 2
    # A draft and its rows go (its entries, which no admin deletes one by one, with it).
    response = client.post(f"/admin/inference/catalogrelease/{draft.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not CatalogRelease.objects.filter(pk=draft.pk).exists()
    assert not CatalogEntry.objects.filter(release_id=draft.pk).exists()
    assert CatalogEntry.objects.filter(release=published).count() == 1


def test_a_release_published_after_the_admin_checked_it_is_not_deleted(curator, release_factory, monkeypatch):
    from django.contrib.admin.models import LogEntry
    from django.contrib.messages import get_messages

    model_admin = admin.site._registry[CatalogRelease]
    first, second = make_spectra([(1.0, 1.0), (2.0, 2.0)])
    draft = release_factory([first], label_rows([5000.0]), label_rows([5000.0]), name="d1", publish=False)
    other = release_factory([second], label_rows([5000.0]), label_rows([5000.0]), name="d2", publish=False)
    logged = model_admin.log_deletions

    def publish_meanwhile(request, queryset):  # (after the page's checks, before the deletion)
        logged(request, queryset)
        CatalogRelease.objects.filter(pk=draft.pk).update(status=CatalogRelease.Status.PUBLISHED)

    monkeypatch.setattr(model_admin, "log_deletions", publish_meanwhile)
    client = Client()
    client.force_login(curator)
    for post in ({"url": f"/admin/inference/catalogrelease/{draft.pk}/delete/", "data": {"post": "yes"}},
                 {"url": "/admin/inference/catalogrelease/", "data": {
                     "action": "delete_selected", "_selected_action": [str(draft.pk), str(other.pk)], "post": "yes"}}):
        CatalogRelease.objects.filter(pk=draft.pk).update(status=CatalogRelease.Status.DRAFT)
        response = client.post(post["url"], post["data"])
        assert response.status_code == 302
        assert any("is published and cannot be deleted" in str(m) for m in get_messages(response.wsgi_request))
        assert CatalogRelease.objects.filter(pk__in=[draft.pk, other.pk]).count() == 2  # undone whole
        assert CatalogEntry.objects.filter(release=draft).count() == 1
        assert not LogEntry.objects.exists()  # nor logged as deleted


def test_staff_without_the_delete_permission_delete_no_release(django_user_model, release_factory):
    from django.contrib.auth.models import Permission

    (spectrum,) = make_spectra([(1.0, 1.0)])
    draft = release_factory([spectrum], label_rows([5000.0]), label_rows([5000.0]), name="draft", publish=False)
    viewer = django_user_model.objects.create_user("viewer", password="viewer-pass-1234", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_catalogrelease"))
    client = Client()
    client.force_login(viewer)
    assert client.get(f"/admin/inference/catalogrelease/{draft.pk}/delete/").status_code == 403
    assert client.post(f"/admin/inference/catalogrelease/{draft.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post("/admin/inference/catalogrelease/", {
        "action": "delete_selected", "_selected_action": [str(draft.pk)], "post": "yes"})
    assert CatalogRelease.objects.filter(pk=draft.pk).exists() and CatalogEntry.objects.filter(release=draft).exists()


def test_delete_urls_and_the_bulk_delete_action_are_refused(curator, release):
    client = Client()
    client.force_login(curator)
    spectrum, entry = Spectrum.objects.first(), CatalogEntry.objects.first()
    assert client.post(f"/admin/spectra/spectrum/{spectrum.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.post(f"/admin/inference/catalogentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    label_set = LabelSet.objects.first()
    assert client.post(f"/admin/inference/labelset/{label_set.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post("/admin/spectra/spectrum/", {"action": "delete_selected", "_selected_action": [str(spectrum.pk)],
                                             "post": "yes"})
    assert Spectrum.objects.filter(pk=spectrum.pk).exists() and LabelSet.objects.filter(pk=label_set.pk).exists()
    page = client.get(f"/admin/spectra/spectrum/{spectrum.pk}/change/").content.decode()
    assert f"/admin/spectra/spectrum/{spectrum.pk}/delete/" not in page


def test_a_spectrum_leaves_a_draft_release_through_the_logged_curation_action(curator, release_factory, client):
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0)])
    draft = release_factory(spectra, label_rows([4800.0, 5000.0]), label_rows([4800.0, 5000.0]), publish=False)
    entry = CatalogEntry.objects.get(release=draft, spectrum=spectra[1])
    admin_client = Client()
    admin_client.force_login(curator)
    admin_client.post("/admin/inference/catalogentry/",
                      {"action": "flag_bad", "_selected_action": [str(entry.pk)], "reason": "fibre crosstalk"})
    record = CurationRecord.objects.get()
    assert (record.user, record.target_id, record.action, record.reason) == (curator, entry.pk, "flag", "fibre crosstalk")
    catalog_release_build(release=draft)  # a rebuild keeps the curator's decision
    entry.refresh_from_db()
    assert entry.flag == 0 and "CURATOR_FLAGGED" in CATALOG_FLAGS.names(entry.flag_bits)
    catalog_release_publish(release=draft)
    rows = client.get(f"/api/v1/releases/{draft.name}/entries/", {"flag": 1}).json()["results"]
    assert [row["medres_specid"] for row in rows] == [spectra[0].medres_specid]


# --- 11. unreleased models are not public ---------------------------------------------------

@pytest.fixture
def models_world(release_factory):
    """A published release, a draft one, and a model in no release at all."""
    first, second = make_spectra([(1.0, 1.0), (2.0, 2.0)])
    published = release_factory([first], label_rows([5000.0]), label_rows([5000.0]), name="pub")
    draft = release_factory([second], label_rows([5000.0]), label_rows([5000.0]), name="draft", publish=False)
    orphan = make_model(ModelVersion.Role.FORMAL, "orphan")
    labelsets_upsert(model_version=orphan, spectrum_ids=np.array([Spectrum.objects.first().pk]),
                     values=label_rows([6000.0]), errors=label_rows([1.0]))
    return published, draft, orphan


def _names(response):
    assert response.status_code == 200, response.content
    return sorted(row["name"] if "name" in row else row["model_version"] for row in response.json()["results"])


def test_anonymous_users_see_only_models_and_labels_of_published_releases(client, models_world):
    assert _names(client.get("/api/v1/model-versions/")) == ["pub-alternate", "pub-formal"]
    assert sorted(set(_names(client.get("/api/v1/label-sets/")))) == ["pub-alternate", "pub-formal"]
    for hidden in ("draft-formal", "draft-alternate", "orphan"):
        response = client.get(f"/api/v1/model-versions/{hidden}/")
        assert response.status_code == 404
        plot = client.get(f"/api/v1/model-versions/{hidden}/evaluation.png")
        assert plot.status_code == 404 and plot["Content-Type"] == "application/json"
        assert client.get("/api/v1/label-sets/", {"model_version": hidden}).json()["results"] == []
    hidden_id = LabelSet.objects.get(model_version__name="orphan").pk
    assert client.get(f"/api/v1/label-sets/{hidden_id}/").status_code == 404
    assert client.get("/api/v1/releases/draft/").status_code == 404
    assert client.get("/api/v1/model-versions/pub-alternate/evaluation.png")["Content-Type"] == "image/png"


def test_staff_see_every_model_and_label(staff_client, models_world):
    every = ["draft-alternate", "draft-formal", "orphan", "pub-alternate", "pub-formal"]
    assert _names(staff_client.get("/api/v1/model-versions/")) == every
    assert sorted(set(_names(staff_client.get("/api/v1/label-sets/")))) == every
    assert staff_client.get("/api/v1/model-versions/orphan/").status_code == 200
    assert staff_client.get("/api/v1/model-versions/orphan/evaluation.png")["Content-Type"] == "image/png"


def test_one_visibility_rule_in_the_selectors(models_world, curator):
    from django.contrib.auth.models import AnonymousUser

    for anonymous in (None, AnonymousUser()):
        assert [r.name for r in releases_visible(user=anonymous)] == ["pub"]
        assert sorted(m.name for m in model_versions_visible(user=anonymous)) == ["pub-alternate", "pub-formal"]
        assert {ls.model_version.name for ls in label_sets_visible(user=anonymous)} == {"pub-alternate", "pub-formal"}
    assert releases_visible(user=curator).count() == 2
    assert model_versions_visible(user=curator).count() == 5
    assert label_sets_visible(user=curator).count() == LabelSet.objects.count() == 5


# --- 12. image endpoints answer errors in JSON; Authorization headers ------------------------

@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("/api/v1/model-versions/nope/evaluation.png", "No ModelVersion matches"),
        ("/api/v1/releases/nope/kiel.png", "No CatalogRelease matches"),
        ("/api/v1/releases/draft/kiel.png", "No CatalogRelease matches"),
        ("/api/v1/releases/nope/validation/apogee.png", "No CatalogRelease matches"),
        ("/api/v1/releases/pub/validation/apogee.png", "no validation against a survey named 'apogee'"),
        ("/api/v1/releases/pub/validation/a.b.png", "no API endpoint at /api/v1/releases/pub/validation/a.b.png"),
    ],
)
@pytest.mark.parametrize("accept", [None, "image/png", "image/avif,image/webp,*/*;q=0.8"])
def test_a_plot_404_is_json(client, models_world, url, detail, accept):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = client.get(url, **headers)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert detail in response.json()["detail"]


def test_a_plot_asked_for_json_or_throttled_answers_json(client, models_world, throttled):
    refused = client.get("/api/v1/releases/pub/kiel.png", HTTP_ACCEPT="application/json")
    assert refused.status_code == 406 and refused["Content-Type"] == "application/json"
    assert "Accept" in refused.json()["detail"]
    for _ in range(2):
        assert client.get("/api/v1/releases/pub/kiel.png")["Content-Type"] == "image/png"
    throttled_response = client.get("/api/v1/releases/pub/kiel.png")
    assert throttled_response.status_code == 429 and throttled_response["Content-Type"] == "application/json"
    assert "throttled" in throttled_response.json()["detail"]


def test_the_admin_spectrum_figure_answers_errors_in_json(curator, release):
    client = Client()
    client.force_login(curator)
    missing = client.get("/admin/spectra/spectrum/99999999999999999999/figure.png")
    assert missing.status_code == 404 and missing["Content-Type"] == "application/json"
    assert "no spectrum with id" in missing.json()["detail"]
    spectrum = Spectrum.objects.first()  # made without preprocessing: no stored arrays
    unreachable = client.get(f"/admin/spectra/spectrum/{spectrum.pk}/figure.png")
    assert unreachable.status_code == 404 and unreachable["Content-Type"] == "application/json"
    assert f"spectrum {spectrum.pk} has no stored arrays" in unreachable.json()["detail"]


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_an_authorization_header_does_not_authenticate_and_is_throttled(client, curator, models_world, throttled):
    header = _basic("curator", "curator-pass-1234")  # the right password: Basic is not an API login
    assert client.get("/api/v1/releases/draft/", HTTP_AUTHORIZATION=header).status_code == 404
    assert client.get("/api/v1/flags/", HTTP_AUTHORIZATION=_basic("curator", "guess")).status_code == 200
    third = client.get("/api/v1/flags/", HTTP_AUTHORIZATION=_basic("curator", "guess-2"))
    assert third.status_code == 429 and third["Content-Type"] == "application/json"


def test_a_new_forwarded_for_address_per_request_is_still_throttled(client, throttled):
    codes = [client.get("/api/v1/flags/", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}").status_code for i in range(3)]
    assert codes == [200, 200, 429]


def test_staff_log_in_with_a_session(models_world, curator, throttled):
    client = APIClient()
    assert client.login(username="curator", password="curator-pass-1234")
    for _ in range(3):  # authenticated users are not throttled as anonymous
        assert client.get("/api/v1/releases/draft/").status_code == 200
