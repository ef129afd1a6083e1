"""The star table (one row per star and release) and access to a spectrum's arrays."""

import io
import json

import numpy as np
import pytest
from astropy.io import fits
from django.core.management import call_command
from django.test import Client

from core.labels import ABUNDANCE_FIELDS, LABEL_FIELDS, LABELS
from inference.models import CatalogEntry, CatalogStar
from inference.services.prediction import labelsets_upsert
from inference.services.release import (
    ReleaseImmutableError,
    catalog_entries_curate,
    catalog_release_build,
    catalog_release_publish,
    catalog_stars_build,
)
from inference.star_combine import stars_combine
from spectra.array_store import ArrayStore
from spectra.models import Spectrum, Star
from spectra.processing.grids import GRIDS

N_LABELS = len(LABELS)


def make_star(i: int, ra: float, dec: float, gaia: int | None) -> Star:
    return Star.objects.create(designation=f"LAMOST J{i:06d}.00+100000.0", gaia_source_id=gaia, ra=ra, dec=dec)


def make_spectrum(star: Star, i: int, snr_blue: float, snr_red: float) -> Spectrum:
    return Spectrum.objects.create(
        star=star, medres_specid=f"20190101-PLAN-02-{i:03d}-coadd-star", medid_blue=f"B{i}", medid_red=f"R{i}",
        kind=Spectrum.Kind.COADD, plan_id="PLAN", spectrograph=2, fiber=i + 1, lmjd=58500,
        snr_blue=snr_blue, snr_red=snr_red, rv_blue=3.0, rv_red=2.5, source_path=f"/survey/mrs/file-{i}.fits.gz",
        source_sha256=f"{i:064x}", file_format="dr7", preprocessing_version="test",  # (conftest.make_model's)
    )


# Star A: three Flag = 1 spectra and a low-S/N one (Flag = 0) whose labels must not count.
A_TEFF = [5000.0, 5040.0, 5100.0, 5400.0]
A_TEFF_ERR = [50.0, 100.0, 25.0, 10.0]
A_SNR = [(40.0, 80.0), (100.0, 20.0), (60.0, 60.0), (5.0, 200.0)]  # best by the weaker arm: the third
# Star B: two hot spectra (no abundances). Star C: one spectrum the models disagree on.
B_TEFF = [7000.0, 7100.0]
GAIA_A = 4_295_806_720_000_000_001  # above 2**53: must come back exact


@pytest.fixture
def star_release(release_factory):
    """A draft release over stars A (4 spectra), B (2 hot spectra) and C (1 spectrum, Flag = 0),
    with per-spectrum uncertainties that differ."""
    star_a = make_star(1, 150.0, 10.0, GAIA_A)
    star_b = make_star(2, 150.1, 10.0, 77)
    star_c = make_star(3, 200.0, -30.0, None)
    spectra = [make_spectrum(star_a, i, *snr) for i, snr in enumerate(A_SNR)]
    spectra += [make_spectrum(star_b, 10 + i, 50.0, 50.0) for i in range(2)]
    spectra += [make_spectrum(star_c, 20, 50.0, 50.0)]
    rng = np.random.default_rng(3)
    formal = np.zeros((7, N_LABELS))
    formal[:, 0] = A_TEFF + B_TEFF + [5200.0]
    formal[:, 1] = [2.5, 2.6, 2.4, 3.5, 4.0, 4.1, 3.0]
    formal[:, 2:] = rng.normal(-0.2, 0.1, size=(7, N_LABELS - 2))
    errors = rng.uniform(0.02, 0.2, size=(7, N_LABELS))
    errors[:, 0] = A_TEFF_ERR + [80.0, 120.0, 60.0]
    alternate = formal.copy()
    alternate[6, 0] += 500.0  # star C: the models disagree, Flag = 0
    release = release_factory(spectra, formal, alternate, name="stars", publish=False)
    labelsets_upsert(model_version=release.formal_model, spectrum_ids=np.array([s.pk for s in spectra]),
                     values=formal, errors=errors)
    catalog_release_build(release=release)
    release.refresh_from_db()
    return release, (star_a, star_b, star_c), spectra, formal, errors


def weighted(values, errors):
    w = 1.0 / np.asarray(errors) ** 2
    mean = np.sum(w * values) / np.sum(w)
    chi2r = np.sum(w * (np.asarray(values) - mean) ** 2) / (len(values) - 1) if len(values) > 1 else None
    return mean, 1.0 / np.sqrt(np.sum(w)), chi2r


def test_star_labels_are_the_inverse_variance_weighted_means_of_flag1_spectra(star_release):
    release, (star_a, _, _), spectra, formal, errors = star_release
    assert release.star_count == 3 and release.good_star_count == 2
    row = CatalogStar.objects.get(release=release, star=star_a)
    # By hand: w = 1/50^2, 1/100^2, 1/25^2 = 4e-4, 1e-4, 16e-4; the S/N 5 spectrum is Flag = 0.
    assert row.teff == pytest.approx((5000 * 4e-4 + 5040 * 1e-4 + 5100 * 16e-4) / 21e-4, rel=1e-12)
    assert row.teff == pytest.approx(5078.095238095238, rel=1e-12)
    assert row.teff_err == pytest.approx(1 / np.sqrt(21e-4), rel=1e-12)  # 21.82 K
    good = slice(0, 3)
    for i, label in enumerate(LABELS):
        mean, error, chi2r = weighted(formal[good, i], errors[good, i])
        assert getattr(row, label.field) == pytest.approx(mean, rel=1e-12), label.field
        assert getattr(row, label.error_field) == pytest.approx(error, rel=1e-12), label.field
        assert getattr(row, f"{label.field}_chi2r") == pytest.approx(chi2r, rel=1e-9), label.field
    assert (row.n_spectra, row.n_spectra_all, row.flag) == (3, 4, 1)
    assert row.best_spectrum_id == spectra[2].pk  # weaker-arm S/N 60 beats 40 and 20 (and Flag = 0's 5)
    assert row.best_medres_specid == spectra[2].medres_specid
    assert (row.designation, row.gaia_source_id, row.ra, row.dec) == (star_a.designation, GAIA_A, 150.0, 10.0)


def test_a_star_with_only_hot_spectra_has_null_abundances(star_release, client):
    release, (_, star_b, _), _, formal, errors = star_release
    row = CatalogStar.objects.get(release=release, star=star_b)
    assert row.n_spectra == 2
    for field in ABUNDANCE_FIELDS:
        assert getattr(row, field) is None and getattr(row, f"{field}_err") is None and getattr(row, f"{field}_chi2r") is None
    assert row.teff == pytest.approx(weighted(formal[4:6, 0], errors[4:6, 0])[0], rel=1e-12)
    catalog_release_publish(release=release)
    api_row = client.get(f"/api/v1/releases/{release.name}/stars/", {"star": star_b.pk}).json()["results"][0]
    assert api_row["fe_h"] is None and api_row["fe_h_err"] is None and api_row["teff"] == pytest.approx(row.teff)
    assert -9999 not in api_row.values()


def test_a_star_without_a_flag1_spectrum_has_null_labels_and_its_best_spectrum(star_release):
    release, (_, _, star_c), spectra, _, _ = star_release
    row = CatalogStar.objects.get(release=release, star=star_c)
    assert (row.n_spectra, row.n_spectra_all, row.flag) == (0, 1, 0)
    assert row.best_spectrum_id == spectra[6].pk and row.gaia_source_id is None
    assert all(getattr(row, field) is None for field in LABEL_FIELDS)


def star_rows(release, *, with_id: bool = True) -> list[tuple]:
    fields = [f.attname for f in CatalogStar._meta.concrete_fields if with_id or f.attname != "id"]
    return list(CatalogStar.objects.filter(release=release).order_by("star_id").values_list(*fields))


def test_rebuilding_a_draft_twice_gives_the_same_star_rows(star_release):
    release = star_release[0]
    before = star_rows(release)
    assert len(before) == 3
    catalog_release_build(release=release)
    catalog_release_build(release=release)
    assert star_rows(release) == before
    assert CatalogStar.objects.filter(release=release).count() == 3


def test_curating_an_entry_recombines_its_star(star_release, curator):
    release, (star_a, _, _), spectra, formal, errors = star_release
    entry = CatalogEntry.objects.get(release=release, spectrum=spectra[2])
    catalog_entries_curate(user=curator, ids=[entry.pk], flagged=True, reason="cosmic ray on H alpha")
    row = CatalogStar.objects.get(release=release, star=star_a)
    assert row.n_spectra == 2 and row.best_spectrum_id == spectra[0].pk  # weaker arm 40 beats 20
    assert row.teff == pytest.approx(weighted(formal[:2, 0], errors[:2, 0])[0], rel=1e-12)
    catalog_release_build(release=release)  # the curator's flag holds through a rebuild
    assert CatalogStar.objects.get(release=release, star=star_a).n_spectra == 2


def test_a_published_star_table_is_built_once_and_never_changed(star_release):
    release = star_release[0]
    expected = star_rows(release, with_id=False)
    release = catalog_release_publish(release=release)
    with pytest.raises(ReleaseImmutableError):
        catalog_stars_build(release=release)
    CatalogStar.objects.filter(release=release).delete()  # a release published before star tables existed
    out = io.StringIO()
    call_command("build_star_tables", stdout=out)
    assert "stars (published): 3 star rows, 2 with a Flag = 1 spectrum" in out.getvalue()
    assert star_rows(release, with_id=False) == expected
    out = io.StringIO()
    call_command("build_star_tables", stdout=out)
    assert "every release has its star table" in out.getvalue()


def test_stars_combine_ignores_rows_without_a_usable_uncertainty_and_any_order():
    star = np.array([9, 4, 9, 9, 4])
    spectrum = np.array([5, 1, 2, 3, 4])
    flag = np.array([1, 1, 1, 1, 0])
    values = np.array([[1.0], [7.0], [3.0], [np.nan], [100.0]])
    errors = np.array([[1.0], [0.5], [np.nan], [1.0], [0.1]])
    snr = np.array([10.0, 10.0, 30.0, np.nan, 99.0])
    result = stars_combine(star, spectrum, flag, snr, snr, values, errors)
    assert result.star_ids.tolist() == [4, 9]
    assert result.values[:, 0].tolist() == [7.0, 1.0]  # the Flag = 0 row and unusable rows do not count
    assert result.errors[:, 0].tolist() == [0.5, 1.0]
    assert np.isnan(result.chi2r).all()
    assert result.n_spectra.tolist() == [1, 3] and result.n_spectra_all.tolist() == [2, 3]
    assert result.best_spectrum_ids.tolist() == [1, 2]  # Flag = 1 first; NaN S/N ranks last
    # One spectrum, or equal values, give the value itself, not a rounding of w x / w.
    one = stars_combine(np.array([1, 2, 2]), np.array([1, 2, 3]), np.ones(3), np.ones(3), np.ones(3),
                        np.array([[-0.1], [0.1], [0.1]]), np.array([[0.05], [0.07], [0.11]]))
    assert one.values[:, 0].tolist() == [-0.1, 0.1]
    empty = stars_combine(np.empty(0), np.empty(0), np.empty(0), np.empty(0), np.empty(0),
                          np.empty((0, 2)), np.empty((0, 2)))
    assert empty.values.shape == (0, 2)


# --- API ------------------------------------------------------------------------------------

def stars(client, release, **params):
    response = client.get(f"/api/v1/releases/{release.name}/stars/", params)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_the_api_lists_stars_with_filters(star_release, client):
    release, (star_a, star_b, star_c), spectra, _, _ = star_release
    catalog_release_publish(release=release)
    assert [r["star"] for r in stars(client, release)] == [star_a.pk, star_b.pk, star_c.pk]
    assert [r["star"] for r in stars(client, release, teff_min=5050, teff_max=5200)] == [star_a.pk]
    assert [r["star"] for r in stars(client, release, flag=0)] == [star_c.pk]
    assert [r["star"] for r in stars(client, release, n_spectra_min=2, n_spectra_max=2)] == [star_b.pk]
    only_a = stars(client, release, gaia_source_id=GAIA_A)
    assert [r["star"] for r in only_a] == [star_a.pk] and only_a[0]["gaia_source_id"] == GAIA_A
    by_name = stars(client, release, designation=star_b.designation.replace("+", " "))  # '+' sent raw
    assert [r["star"] for r in by_name] == [star_b.pk]
    assert [r["star"] for r in stars(client, release, cone_ra=150.05, cone_dec=10.0, cone_radius=0.06)] == [
        star_a.pk, star_b.pk]
    assert [r["star"] for r in stars(client, release, fe_h_min=-5)] == [star_a.pk]  # hot B: no [Fe/H]
    first = client.get(f"/api/v1/releases/{release.name}/stars/", {"page_size": 2}).json()
    second = client.get(first["next"]).json()
    assert len(first["results"]) == 2 and [r["star"] for r in second["results"]] == [star_c.pk]
    detail = client.get(f"/api/v1/releases/{release.name}/stars/{first['results'][0]['id']}/").json()
    assert detail["best_spectrum"] == spectra[2].pk and detail["n_spectra"] == 3
    assert detail["best_spectrum_arrays_json"].endswith(f"/api/v1/spectra/{spectra[2].pk}/arrays.json")
    for bad in ({"teff_min": "hot"}, {"gaia_source_id": "1.5"}, {"n_spectra_min": 3, "n_spectra_max": 1},
                {"cone_ra": 10}, {"medres_specid": "x"}):
        response = client.get(f"/api/v1/releases/{release.name}/stars/", bad)
        assert response.status_code == 400, bad
    release_row = client.get(f"/api/v1/releases/{release.name}/").json()
    assert (release_row["star_count"], release_row["good_star_count"]) == (3, 2)
    assert len(client.get(release_row["stars"]).json()["results"]) == 3
    assert len(client.get(release_row["entries"]).json()["results"]) == 7


def test_anonymous_users_see_the_stars_of_published_releases_only(star_release, curator):
    release = star_release[0]
    anonymous, staff = Client(), Client()
    staff.force_login(curator)
    url = f"/api/v1/releases/{release.name}/stars/"
    assert anonymous.get(url).status_code == 404
    assert len(staff.get(url).json()["results"]) == 3
    catalog_release_publish(release=release)
    assert len(anonymous.get(url).json()["results"]) == 3


# --- spectrum arrays -----------------------------------------------------------------------

def store_arrays(settings, tmp_path, spectra: list[Spectrum]) -> np.ndarray:
    """Write a shard for ``spectra``; returns the stored (n, 2, 2, 4000) float32 array."""
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    rng = np.random.default_rng(7)
    n = len(spectra)
    flux = (1 + rng.normal(0, 0.05, size=(n, 2, 4000))).astype(np.float32)
    ivar = rng.uniform(100, 900, size=(n, 2, 4000)).astype(np.float32)
    ivar[:, 0, :25] = 0.0  # masked: a roll-off edge
    flux[:, 0, :25] = 1.0
    ivar[:, 1, 2000] = 0.0
    flux[:, 1, 2000] = 1.0
    shard = ArrayStore(settings.SPECTRA_ARRAY_ROOT).write(flux, ivar)
    for row, spectrum in enumerate(spectra):
        spectrum.array_shard, spectrum.array_row, spectrum.preprocessing_version = shard, row, "1.0"
        spectrum.status = Spectrum.Status.PREPROCESSED
        spectrum.save()
    return ArrayStore(settings.SPECTRA_ARRAY_ROOT).read(shard)


def test_the_arrays_endpoints_return_the_stored_arrays(star_release, settings, tmp_path, client):
    release, _, spectra, _, _ = star_release
    stored = store_arrays(settings, tmp_path, spectra)
    catalog_release_publish(release=release)
    spectrum = spectra[1]
    response = client.get(f"/api/v1/spectra/{spectrum.pk}/arrays.json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    document = json.loads(response.content)
    assert document["source_path"] == "/survey/mrs/file-1.fits.gz" and document["source_sha256"] == f"{1:064x}"
    assert document["preprocessing_version"] == "1.0" and document["medres_specid"] == spectrum.medres_specid
    assert document["wavelength_unit"] == "Angstrom"
    assert document["fits"].endswith(f"/api/v1/spectra/{spectrum.pk}/arrays.fits")
    for arm_index, arm in enumerate(("blue", "red")):
        got = document["arms"][arm]
        assert np.array_equal(np.array(got["wavelength"]), GRIDS[arm])
        assert np.array_equal(np.array(got["flux"], dtype=np.float32), stored[1, 0, arm_index])
        assert np.array_equal(np.array(got["ivar"], dtype=np.float32), stored[1, 1, arm_index])
        assert np.array_equal(np.array(got["mask"]), stored[1, 1, arm_index] == 0)
    assert document["arms"]["blue"]["mask"][:26] == [True] * 25 + [False]
    assert document["arms"]["blue"]["wavelength"][0] == 4950.0 and document["arms"]["red"]["wavelength"][-1] == 6749.9

    response = client.get(f"/api/v1/spectra/{spectrum.pk}/arrays.fits")
    assert response.status_code == 200 and response["Content-Type"] == "application/fits"
    with fits.open(io.BytesIO(response.content)) as hdus:
        header = hdus[0].header
        assert header["SRCPATH"] == "/survey/mrs/file-1.fits.gz" and header["SRCSHA"] == f"{1:064x}"
        assert header["PREPVER"] == "1.0" and header["SPECID"] == spectrum.medres_specid
        assert header["GAIA_ID"] == GAIA_A and header["AIRORVAC"] == "vac"
        for arm_index, arm in enumerate(("BLUE", "RED")):
            table = hdus[arm].data
            assert hdus[arm].header["TUNIT1"] == "Angstrom"
            assert np.array_equal(table["wavelength"], GRIDS[arm.lower()])
            assert table["flux"].dtype.kind == "f" and np.array_equal(table["flux"], stored[1, 0, arm_index])
            assert np.array_equal(table["ivar"], stored[1, 1, arm_index])
            assert np.array_equal(table["mask"], stored[1, 1, arm_index] == 0)
    from astropy.table import Table

    blue = Table.read(io.BytesIO(response.content), format="fits", hdu="BLUE")
    assert str(blue["wavelength"].unit) == "Angstrom"


def test_catalog_rows_link_to_their_arrays(star_release, settings, tmp_path, client):
    release, _, spectra, _, _ = star_release
    stored = store_arrays(settings, tmp_path, spectra)
    catalog_release_publish(release=release)
    entry = client.get(f"/api/v1/releases/{release.name}/entries/", {"medres_specid": spectra[3].medres_specid})
    link = entry.json()["results"][0]["spectrum_arrays_json"]
    document = client.get(link).json()
    assert np.array_equal(np.array(document["arms"]["red"]["flux"], dtype=np.float32), stored[3, 0, 1])
    fits_link = entry.json()["results"][0]["spectrum_arrays_fits"]
    assert client.get(fits_link).status_code == 200
    star_row = stars(client, release)[0]
    assert client.get(star_row["best_spectrum_arrays_fits"]).status_code == 200


def test_a_missing_shard_is_a_json_404_naming_the_problem(star_release, settings, tmp_path, client):
    release, _, spectra, _, _ = star_release
    store_arrays(settings, tmp_path, spectra[:1])
    catalog_release_publish(release=release)
    ArrayStore(settings.SPECTRA_ARRAY_ROOT).path(spectra[0].array_shard).unlink()
    for suffix in ("json", "fits"):
        response = client.get(f"/api/v1/spectra/{spectra[0].pk}/arrays.{suffix}")
        assert response.status_code == 404 and response["Content-Type"] == "application/json"
        assert "is missing from the array store" in response.json()["detail"]
        assert spectra[0].array_shard in response.json()["detail"]
        no_arrays = client.get(f"/api/v1/spectra/{spectra[1].pk}/arrays.{suffix}")
        assert no_arrays.status_code == 404 and "has no stored arrays" in no_arrays.json()["detail"]
    assert client.get("/api/v1/spectra/99999999999999999999/arrays.json").status_code == 404


def test_anonymous_users_reach_only_the_spectra_of_published_releases(star_release, settings, tmp_path, curator):
    release, (star_a, _, _), spectra, _, _ = star_release
    outside = make_spectrum(star_a, 40, 50.0, 50.0)  # in no release
    store_arrays(settings, tmp_path, [*spectra, outside])
    anonymous, staff = Client(), Client()
    staff.force_login(curator)
    for spectrum in (spectra[0], outside):
        for suffix in ("json", "fits"):
            url = f"/api/v1/spectra/{spectrum.pk}/arrays.{suffix}"
            assert anonymous.get(url).status_code == 404 and anonymous.get(url)["Content-Type"] == "application/json"
            assert staff.get(url).status_code == 200
    catalog_release_publish(release=release)
    assert Client().get(f"/api/v1/spectra/{spectra[0].pk}/arrays.json").status_code == 200
    assert Client().get(f"/api/v1/spectra/{outside.pk}/arrays.json").status_code == 404


def test_the_star_table_is_read_only_in_the_admin(star_release, curator, django_assert_max_num_queries):
    release, (star_a, _, _), _, _, _ = star_release
    client = Client()
    client.force_login(curator)
    with django_assert_max_num_queries(12):
        page = client.get("/admin/inference/catalogstar/", {"release__id__exact": release.pk, "flag__exact": 1})
    assert page.status_code == 200 and star_a.designation in page.content.decode()
    found = client.get("/admin/inference/catalogstar/", {"q": star_a.designation}).content.decode()
    assert "LAMOST J000002.00+100000.0" not in found and star_a.designation in found
    row = CatalogStar.objects.get(release=release, star=star_a)
    assert client.get(f"/admin/inference/catalogstar/{row.pk}/change/").status_code == 200
    teff = row.teff
    client.post(f"/admin/inference/catalogstar/{row.pk}/change/", {"teff": "1"})
    assert client.post(f"/admin/inference/catalogstar/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    row.refresh_from_db()
    assert row.teff == teff


# --- downloads of the star table -----------------------------------------------------------

def star_download(release, fmt: str | None = None, url: str | None = None, **filters) -> tuple[bytes, object]:
    params = {**({"format": fmt} if fmt else {}), **filters}
    response = Client().get(url or f"/api/v1/releases/{release.name}/stars/export/", params)
    assert response.status_code == 200, response.content[:500]
    return b"".join(response.streaming_content), response


def test_the_star_table_downloads_in_every_format(star_release):
    import pandas as pd
    import pyarrow.parquet as pq
    from astropy.io import votable
    from astropy.table import Table

    from inference.columns import STAR_COLUMNS

    release, (star_a, star_b, star_c), spectra, _, _ = star_release
    catalog_release_publish(release=release)
    names = [column.name for column in STAR_COLUMNS]
    row_a = CatalogStar.objects.get(release=release, star=star_a)
    expected_fe_h = round(row_a.fe_h, 3)

    body, response = star_download(release, "csv")
    assert response["Content-Disposition"] == 'attachment; filename="spcanet-stars-stars.csv"'
    assert "stars/export.csv-metadata.json" in response["Link"]
    assert body.decode().splitlines()[0].split(",") == names
    frame = pd.read_csv(io.BytesIO(body), dtype={"gaia_source_id": "Int64"})
    assert frame["star"].tolist() == [star_a.pk, star_b.pk, star_c.pk]
    assert frame["gaia_source_id"][0] == GAIA_A and pd.isna(frame["gaia_source_id"][2])
    assert frame["teff"][0] == round(row_a.teff) and frame["fe_h"][0] == expected_fe_h
    assert pd.isna(frame["fe_h"][1]) and pd.isna(frame["teff"][2])  # hot star B; star C has no Flag = 1
    assert frame["best_medres_specid"][0] == spectra[2].medres_specid and frame["n_spectra_all"].tolist() == [4, 2, 1]

    body, _ = star_download(release, "ecsv")
    table = Table.read(body.decode(), format="ascii.ecsv")
    assert table.colnames == names and int(table["gaia_source_id"][0]) == GAIA_A
    assert str(table["teff"].unit) == "K" and table["fe_h"].mask[1] and table["teff_chi2r"].mask[1] == False  # noqa: E712

    body, response = star_download(release, "fits")
    assert response["Content-Type"] == "application/fits"
    with fits.open(io.BytesIO(body)) as hdus:
        assert hdus[1].name == "STARS" and hdus[1].header["RELEASE"] == release.name
        assert hdus[1].header["TUNIT" + str(names.index("teff") + 1)] == "K"
    table = Table.read(io.BytesIO(body), format="fits", hdu="STARS")
    assert table.colnames == names and int(table["gaia_source_id"][0]) == GAIA_A and table["gaia_source_id"].mask[2]
    assert table["best_spectrum"].tolist() == [spectra[2].pk, spectra[4].pk, spectra[6].pk]
    assert np.ma.is_masked(table["fe_h"][1]) and table["fe_h"][0] == pytest.approx(expected_fe_h, abs=1e-6)

    body, _ = star_download(release, "votable")
    table = votable.parse_single_table(io.BytesIO(body)).to_table()
    assert table.colnames == names and int(table["gaia_source_id"][0]) == GAIA_A and table["gaia_source_id"].mask[2]
    assert table["fe_h"].mask[1] and str(table["ra"].unit) == "deg"

    body, _ = star_download(release, "parquet")
    parquet = pq.read_table(io.BytesIO(body))
    assert parquet.column_names == names and parquet.column("gaia_source_id").to_pylist() == [GAIA_A, 77, None]
    assert parquet.column("fe_h").to_pylist()[1] is None
    assert json.loads(parquet.schema.metadata[b"spcanet"])["release"] == release.name

    for extension in ("csv", "ecsv", "fits", "vot", "parquet"):
        star_download(release, url=f"/api/v1/releases/{release.name}/stars/export.{extension}")
    body, _ = star_download(release, "csv", flag=1, teff_max=6000)
    assert pd.read_csv(io.BytesIO(body))["star"].tolist() == [star_a.pk]
    sidecar = Client().get(f"/api/v1/releases/{release.name}/stars/export.csv-metadata.json").json()
    assert [column["name"] for column in sidecar["tableSchema"]["columns"]] == names
    assert sidecar["url"].endswith(f"/api/v1/releases/{release.name}/stars/export.csv")
    refused = Client().get(f"/api/v1/releases/{release.name}/stars/export/", {"format": "csv-paper"})
    assert refused.status_code == 400 and "format" in refused.json()
    assert Client().get(f"/api/v1/releases/{release.name}/stars/export/", {"medres_specid": "x"}).status_code == 400


def test_anonymous_users_download_the_star_tables_of_published_releases_only(star_release, curator):
    release = star_release[0]
    staff = Client()
    staff.force_login(curator)
    url = f"/api/v1/releases/{release.name}/stars/export.csv"
    assert Client().get(url).status_code == 404
    assert staff.get(url).status_code == 200


@pytest.mark.parametrize("fmt", ["csv", "ecsv", "fits", "votable", "parquet"])
def test_the_star_table_python_path_writes_what_the_copy_path_writes(star_release, monkeypatch, fmt):
    """SQLite (the embedded default) has no COPY: the star table's rows come through a cursor."""
    import inference.downloads
    import inference.export

    from .test_downloads import read_rows

    release = star_release[0]
    catalog_release_publish(release=release)
    copy_body, _ = star_download(release, fmt)
    monkeypatch.setattr(inference.export, "copy_available", lambda: False)
    monkeypatch.setattr(inference.downloads, "copy_available", lambda: False)
    python_body, _ = star_download(release, fmt)
    if fmt == "csv":
        assert python_body == copy_body
    else:
        assert read_rows(fmt, python_body) == read_rows(fmt, copy_body)


# --- merged duplicate stars ----------------------------------------------------------------

def add_to_release(release, spectrum: Spectrum, teff: float, teff_err: float) -> None:
    values = np.full((1, N_LABELS), -0.1)
    values[0, :2] = teff, 3.0
    errors = np.full((1, N_LABELS), 0.05)
    errors[0, 0] = teff_err
    for model in (release.formal_model, release.alternate_model):
        labelsets_upsert(model_version=model, spectrum_ids=np.array([spectrum.pk]), values=values, errors=errors)


def test_merging_duplicate_stars_recombines_draft_star_tables(star_release):
    from spectra.services.star_identity import stars_merge_duplicates

    release, (star_a, _, _), spectra, formal, errors = star_release
    twin = make_star(9, 150.0 + 0.3 / 3600, 10.0, None)  # star A ingested twice
    extra = make_spectrum(twin, 30, 70.0, 70.0)
    add_to_release(release, extra, 5060.0, 40.0)
    catalog_release_build(release=release)
    assert CatalogStar.objects.filter(release=release).count() == 4
    stars_merge_duplicates(radius_arcsec=1.0)
    assert not Star.objects.filter(pk=twin.pk).exists()
    assert CatalogStar.objects.filter(release=release).count() == 3
    row = CatalogStar.objects.get(release=release, star=star_a)
    assert (row.n_spectra, row.n_spectra_all, row.best_spectrum_id) == (4, 5, extra.pk)  # weaker arm 70 > 60
    teff = weighted(np.r_[formal[:3, 0], 5060.0], np.r_[errors[:3, 0], 40.0])[0]
    assert row.teff == pytest.approx(teff, rel=1e-12)


def test_merging_duplicate_stars_leaves_published_star_rows_as_published(star_release):
    from spectra.services.star_identity import stars_merge_duplicates

    release, (star_a, _, _), _, _, _ = star_release
    twin = make_star(9, 150.0 + 0.3 / 3600, 10.0, None)
    add_to_release(release, make_spectrum(twin, 30, 70.0, 70.0), 5060.0, 40.0)
    lonely = make_star(10, 20.0, 20.0, 555)  # a star with no spectrum in the release...
    twin_of_lonely = make_star(11, 20.0 + 0.3 / 3600, 20.0, None)  # ...and its twin, which has one
    add_to_release(release, make_spectrum(twin_of_lonely, 31, 50.0, 50.0), 4500.0, 30.0)
    catalog_release_build(release=release)
    release = catalog_release_publish(release=CatalogStar.objects.first().release)
    before = star_rows(release, with_id=False)
    stars_merge_duplicates(radius_arcsec=1.0)
    rows = star_rows(release, with_id=False)
    star_field = [f.attname for f in CatalogStar._meta.concrete_fields if f.attname != "id"].index("star_id")
    assert len(rows) == len(before) == 5
    def values(table):  # every column but the star link, in a fixed order
        return sorted((row[:star_field] + row[star_field + 1:] for row in table), key=repr)

    assert values(rows) == values(before)  # every published value as it was
    assert CatalogStar.objects.get(release=release, designation=twin.designation, star__isnull=True).teff == 5060.0
    assert CatalogStar.objects.get(release=release, star=lonely).teff == 4500.0  # followed its star
    assert CatalogStar.objects.get(release=release, star=star_a).n_spectra == 3
    listed = stars(Client(), release, cone_ra=150.0, cone_dec=10.0, cone_radius=0.001)
    assert {row["star"] for row in listed} == {star_a.pk, None}
