import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from rest_framework.test import APIClient

from core.flags import CATALOG_FLAGS

from .conftest import label_rows, make_spectra

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    return APIClient()


@pytest.fixture
def release(release_factory):
    # Five spectra: three agree (good), one disagrees in Teff, one is at low S/N.
    spectra = make_spectra([(10.0, 10.0), (10.001, 10.0), (200.0, -5.0), (359.9, 0.0), (0.05, 0.0)])
    spectra[4].snr_red = 8.0
    spectra[4].save()
    formal = label_rows([4600.0, 4800.0, 5200.0, 4700.0, 4900.0])
    alternate = label_rows([4650.0, 4800.0, 5200.0, 4900.0, 4900.0])
    return release_factory(spectra, formal, alternate)


def entries(client, release, **params):
    response = client.get(f"/api/v1/releases/{release.name}/entries/", params)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_entries_filter_on_labels_snr_flag_and_bits(client, release):
    assert len(entries(client, release)) == 5
    rows = entries(client, release, teff_min=4500, teff_max=5000, snr_min=20, flag=1)
    assert sorted(r["teff"] for r in rows) == [4600.0, 4800.0]
    bad = entries(client, release, flag=0)
    assert {tuple(r["flag_names"]) for r in bad} == {("MODELS_DISAGREE_TEFF",), ("LOW_SNR",)}
    assert [r["teff"] for r in entries(client, release, flags_all="low_snr")] == [4900.0]
    assert len(entries(client, release, flags_none="LOW_SNR,MODELS_DISAGREE_TEFF")) == 3
    assert len(entries(client, release, gaia_source_id=1002)) == 1


def test_entry_detail_shows_both_models(client, release):
    first = entries(client, release, flags_any="MODELS_DISAGREE_TEFF")[0]
    detail = client.get(f"/api/v1/releases/{release.name}/entries/{first['id']}/").json()
    assert detail["formal_labels"]["teff"] == 4700.0 and detail["alternate_labels"]["teff"] == 4900.0
    assert detail["formal_labels"]["model_version"].endswith("formal")


def test_cursor_pagination_walks_every_row_once(client, release):
    seen, url = [], f"/api/v1/releases/{release.name}/entries/?page_size=2"
    while url:
        page = client.get(url).json()
        seen += [row["id"] for row in page["results"]]
        url = page["next"]
    assert len(seen) == 5 == len(set(seen))


def test_filtered_pages_forward_and_back_hold_what_one_query_returns(client, release_factory):
    """Pages read as ids first, rows after (core/api/pagination.py): a filtered walk with
    pages of 3, forward then back, holds exactly the filtered rows in id order, each row
    whole; the rows are read by primary key, the page's ids only."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from inference.models import CatalogEntry

    teff = [4500.0 + 37.0 * i for i in range(20)]
    spectra = make_spectra([(10.0 + i, 5.0) for i in range(20)])
    release = release_factory(spectra, label_rows(teff), label_rows(teff))
    wanted = list(CatalogEntry.objects.filter(release=release, teff__gte=4600, teff__lte=5100, flag=1)
                  .order_by("id").values("id", "teff", "medres_specid"))
    assert 8 <= len(wanted) < 20
    url, forward = f"/api/v1/releases/{release.name}/entries/?page_size=3&teff_min=4600&teff_max=5100&flag=1", []
    while url:
        with CaptureQueriesContext(connection) as queries:
            page = client.get(url).json()
        forward.append(page)
        url = page["next"]
    rows = [row for page in forward for row in page["results"]]
    assert [(r["id"], r["teff"], r["medres_specid"]) for r in rows] == [tuple(w.values()) for w in wanted]
    statements = [q["sql"] for q in queries.captured_queries if 'FROM "inference_catalogentry"' in q["sql"]]
    assert len(statements) == 2  # the last page: its ids, then its rows by id
    assert statements[0].startswith('SELECT "inference_catalogentry"."id" AS "pk" FROM')
    assert '"inference_catalogentry"."id" IN (' in statements[1]
    backward, url = [], forward[-1]["previous"]
    while url:
        page = client.get(url).json()
        backward = page["results"] + backward
        url = page["previous"]
    assert [r["id"] for r in backward + forward[-1]["results"]] == [w["id"] for w in wanted]


class _AfterTheIds:
    """Runs ``statement`` right after a page's ids statement: a change another transaction
    commits between the two statements of a page."""

    def __init__(self, table: str, statement: str, params: list):
        self.marker, self.statement, self.params, self.done = f'SELECT "{table}"."id" AS "pk"', statement, params, False

    def __call__(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not self.done and sql.startswith(self.marker):
            self.done = True
            with context["connection"].cursor() as cursor:
                cursor.execute(self.statement, self.params)
        return result


@pytest.mark.parametrize("change", ["delete", "leave the filter"])
def test_a_row_changed_between_a_page_s_two_statements_does_not_end_the_pagination(client, release_factory, change):
    """A page whose row was deleted, or stopped matching, after its ids were read is read
    again in one statement: a full page and its next link, not a short last page."""
    from django.db import connection

    teff = [4500.0 + 10.0 * i for i in range(10)]
    release = release_factory(make_spectra([(10.0 + i, 5.0) for i in range(10)]), label_rows(teff), label_rows(teff))
    victim = release.entries.order_by("id")[1].pk
    statement = ("DELETE FROM inference_catalogentry WHERE id = %s" if change == "delete"
                 else "UPDATE inference_catalogentry SET teff = 9000 WHERE id = %s")
    wrapper = _AfterTheIds("inference_catalogentry", statement, [victim])
    with connection.execute_wrapper(wrapper):
        page = client.get(f"/api/v1/releases/{release.name}/entries/?page_size=3&teff_max=5000").json()
    assert wrapper.done
    expected = list(release.entries.filter(teff__lte=5000).order_by("id").values_list("id", flat=True))
    assert len(expected) == 9
    assert [row["id"] for row in page["results"]] == expected[:3] and page["next"] is not None


@pytest.mark.parametrize(
    ("centre", "radius"),
    [((10.0, 10.0), 0.01), ((0.0, 0.0), 0.2), ((359.95, 0.0), 0.11), ((200.0, -5.0), 3.0), ((123.0, 89.9), 5.0)],
)
def test_cone_search_matches_astropy(client, release, centre, radius):
    rows = entries(client, release, cone_ra=centre[0], cone_dec=centre[1], cone_radius=radius)
    all_rows = entries(client, release)
    coords = SkyCoord([r["ra"] for r in all_rows] * u.deg, [r["dec"] for r in all_rows] * u.deg)
    inside = coords.separation(SkyCoord(centre[0] * u.deg, centre[1] * u.deg)) <= radius * u.deg
    expected = sorted(r["id"] for r, keep in zip(all_rows, inside, strict=True) if keep)
    assert sorted(r["id"] for r in rows) == expected


def test_cone_search_across_ra_zero_and_at_the_pole(client, db):
    make_spectra([(359.99, 45.0), (0.01, 45.0), (180.0, 89.99), (0.0, 89.99), (90.0, 45.0)])
    stars = client.get("/api/v1/stars/", {"cone_ra": 0.0, "cone_dec": 45.0, "cone_radius": 0.02}).json()["results"]
    assert sorted(s["ra"] for s in stars) == [0.01, 359.99]
    polar = client.get("/api/v1/stars/", {"cone_ra": 270.0, "cone_dec": 90.0, "cone_radius": 0.05}).json()["results"]
    assert sorted(s["ra"] for s in polar) == [0.0, 180.0]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"teff_min": "abc"}, "number"),
        ({"teff_min": "nan"}, "number"),
        ({"teff_min": 5000, "teff_max": 4000}, "greater than teff_max"),
        ({"cone_ra": 10, "cone_dec": 10, "cone_radius": -1}, "greater than 0"),
        ({"cone_ra": 10, "cone_dec": 10, "cone_radius": 1000}, "at most"),
        ({"cone_ra": 10, "cone_dec": 10}, "together"),
        ({"cone_ra": 400, "cone_dec": 10, "cone_radius": 1}, "less than or equal"),
        ({"tef_min": 4000}, "unknown query parameter"),
        ({"flags_all": "NOT_A_FLAG"}, "unknown catalog flag"),
        ({"flag": "2"}, "valid choice"),
        ({"page_size": "0"}, "between"),
        ({"page_size": "x"}, "integer"),
        ({"cursor": "garbage"}, "cursor"),
    ],
)
def test_bad_requests_get_400_with_a_reason(client, release, params, message):
    response = client.get(f"/api/v1/releases/{release.name}/entries/", params)
    assert response.status_code in (400, 404), response.content
    if response.status_code == 400:
        assert message.lower() in response.content.decode().lower()
    else:  # DRF answers an undecodable cursor with 404 "Invalid cursor"
        assert message == "cursor" and b"Invalid cursor" in response.content


def test_spectra_filters_and_flags_endpoint(client, release):
    spectra = client.get("/api/v1/spectra/", {"snr_red_max": 10}).json()["results"]
    assert [s["snr_red"] for s in spectra] == [8.0]
    assert client.get("/api/v1/spectra/", {"flags_any": "LOW_SNR_BLUE"}).json()["results"] == []
    flags = client.get("/api/v1/flags/").json()
    assert [b["name"] for b in flags["catalog"]["bits"]] == [f.name for f in CATALOG_FLAGS]


def test_reads_are_public_and_writes_are_refused(client, release):
    assert client.get("/api/v1/releases/").status_code == 200
    for url in ("/api/v1/releases/", "/api/v1/stars/", f"/api/v1/releases/{release.name}/entries/"):
        assert client.post(url, {"name": "x"}).status_code in (401, 403, 405)
    assert client.delete(f"/api/v1/releases/{release.name}/").status_code in (401, 403, 405)


def test_draft_releases_are_hidden_from_the_public(client, release_factory, curator):
    spectra = make_spectra([(1.0, 1.0)], gaia_start=9000)
    draft = release_factory(spectra, label_rows([5000.0]), label_rows([5000.0]), name="draft", publish=False)
    assert client.get(f"/api/v1/releases/{draft.name}/entries/").status_code == 404
    assert client.get(f"/api/v1/releases/{draft.name}/export.csv").status_code == 404
    client.force_authenticate(curator)
    assert client.get(f"/api/v1/releases/{draft.name}/entries/").status_code == 200


def test_schema_and_docs_are_served(client, db):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"teff_min" in schema.content and b"cone_radius" in schema.content
    assert client.get("/api/docs/").status_code == 200


def test_rows_read_straight_off_the_model_equal_drf_s_own_representation(release):
    """The entry and star serializers read plain fields directly (core.api.serializers);
    every row, nulls included, must equal what DRF's generic path gives."""
    from rest_framework import serializers
    from rest_framework.request import Request
    from rest_framework.reverse import reverse
    from rest_framework.test import APIRequestFactory

    from inference.models import CatalogEntry, CatalogStar
    from inference.serializers import CatalogEntrySerializer, CatalogStarSerializer

    request = Request(APIRequestFactory().get("/api/v1/releases/r1/entries/"))
    for serializer_class, rows in ((CatalogEntrySerializer, CatalogEntry.objects.filter(release=release)),
                                   (CatalogStarSerializer, CatalogStar.objects.filter(release=release))):
        rows = list(rows.order_by("id"))
        assert len(rows) >= 3
        direct = serializer_class(rows, many=True, context={"request": request}).data
        generic = [serializers.ModelSerializer.to_representation(serializer_class(context={"request": request}), row)
                   for row in rows]
        assert [dict(row) for row in direct] == [dict(row) for row in generic]
        assert any(value is None for row in direct for value in row.values())  # nulls were compared
        assert all(row["id"] == obj.pk for row, obj in zip(direct, rows, strict=True))
        if serializer_class is CatalogEntrySerializer:
            entry_rows = direct
    for row, entry in zip(entry_rows, CatalogEntry.objects.filter(release=release).order_by("id"), strict=True):
        for fmt in ("json", "fits"):  # the link reversed once per request, filled in per row
            assert row[f"spectrum_arrays_{fmt}"] == reverse(
                f"spectrum-arrays-{fmt}", kwargs={"pk": entry.spectrum_id}, request=request)
