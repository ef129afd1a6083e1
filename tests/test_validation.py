"""Cross-survey validation: formats, quality cuts, cross-match, and recovery of a known answer."""

import numpy as np
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from core.labels import LABEL_FIELDS
from spectra.mock.survey import SURVEYS, _write_survey
from spectra.models import Spectrum, Star
from spectra.refcat.quality import QualityRuleError, quality_evaluate
from validation.formats import SurveyFormatError
from validation.models import ReferenceStar, ValidationResult
from validation.quality import APOGEE, APOGEE_ASPCAP_STAR_BAD, GALAH_DR2, RAVE_DR5
from validation.services import reference_survey_import, release_validate

from .conftest import make_spectra

pytestmark = pytest.mark.django_db

N_STARS = 700
N_EXTRA = 40  # reference stars that are not in our catalog


def _cut(cut, flags: dict, n: int, labels: dict | None = None):
    labels = labels or {}
    return quality_evaluate(cut, flags.get, n, labels, LABEL_FIELDS)


def test_quality_cuts_reject_only_what_the_surveys_document_as_bad():
    flags = {"ASPCAPFLAG": np.array([0, APOGEE_ASPCAP_STAR_BAD, 1 | 1 << 7 | 1 << 11, 0]),
             "STARFLAG": np.array([0, 0, 1 << 9 | 1 << 16, 8])}
    # A warning bit (TEFF_WARN, STAR_WARN, SN_WARN; PERSIST_HIGH, SUSPECT_RV_COMBINATION) is not
    # STAR_BAD; VERY_BRIGHT_NEIGHBOR (STARFLAG 8) is documented as bad.
    assert _cut(APOGEE, flags, 4).row_ok.tolist() == [True, False, True, False]
    flags["PARAMFLAG"] = np.array([[0, 0], [0, 0], [0, 1 << 2], [1 << 16, 1 << 8]])
    result = _cut(APOGEE, flags, 4, {"teff": ("TEFF", "direct"), "logg": ("LOGG", "direct")})
    assert result.row_ok.tolist() == [True, False, True, False]  # a bad PARAMFLAG bit rejects a label, not the row
    assert result.label_ok[:, :2].tolist() == [[True, True], [True, True], [True, False], [True, True]]
    assert _cut(GALAH_DR2, {"flag_cannon": np.array([0, 1, 4])}, 3).row_ok.tolist() == [True, False, False]
    assert _cut(RAVE_DR5, {"Algo_Conv_K": np.array([0, 1])}, 2).row_ok.tolist() == [True, False]
    with pytest.raises(QualityRuleError, match="Algo_Conv_K"):
        _cut(RAVE_DR5, {}, 2)


@pytest.fixture
def world(tmp_path, release_factory):
    """A release whose labels are the truth, and APOGEE/GALAH/RAVE-like catalogs of its stars
    written by the mock survey's writers, with the mock's injected bias and scatter."""
    rng = np.random.default_rng(11)
    n = N_STARS + N_EXTRA
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-70, 85, n)
    ra[:3], dec[:3] = [359.9996, 0.0004, 77.0], [12.0, 12.0, 89.9996]  # across RA 0/360 and at the pole
    spectra = make_spectra(list(zip(ra[:N_STARS], dec[:N_STARS], strict=True)), snr=40.0, gaia_start=4 * 10**18)
    Star.objects.filter(pk__in=[s.star_id for s in spectra[:100]]).update(gaia_source_id=None)  # position only
    truth = np.column_stack([rng.normal(4900, 450, n), rng.normal(2.8, 0.8, n), rng.normal(-0.25, 0.25, (n, 13))])
    truth[5, 0] = 6900.0  # a hot star: its abundances are NULL and must be left out
    extra = []
    for i, spectrum in enumerate(spectra[:150]):  # 150 stars observed twice
        extra.append(Spectrum.objects.create(
            star_id=spectrum.star_id, medres_specid=f"{spectrum.medres_specid}-2", kind=spectrum.kind,
            plan_id="P2", spectrograph=1, fiber=i % 250 + 1, lmjd=58001, snr_blue=25.0, snr_red=30.0,
            source_path="/y.fits", source_sha256="c" * 64, file_format="dr7", preprocessing_version="test"))
    every = spectra + extra
    per_spectrum = np.vstack([truth[:N_STARS], truth[:150]])
    release = release_factory(every, per_spectrum, per_spectrum, name="truth")
    star_rows = Star.objects.in_bulk([s.star_id for s in spectra])
    stars = {
        "ra": ra, "dec": dec,
        "gaia": np.array([star_rows[s.star_id].gaia_source_id or 0 for s in spectra]
                         + list(range(7 * 10**18, 7 * 10**18 + N_EXTRA)), dtype=np.int64),
        "designation": [star_rows[s.star_id].designation for s in spectra]
                       + [f"LAMOST J9{i:05d}.00+000000.0" for i in range(N_EXTRA)],
    }
    # The extra stars sit 1 degree away from everything we have.
    stars["dec"][N_STARS:] = np.clip(stars["dec"][N_STARS:] + 1.0, -89, 89)
    members, flagged_by_survey = {}, {}
    for survey in SURVEYS:
        members[survey] = np.flatnonzero(rng.random(n) < 0.5)
        injection = SURVEYS[survey]
        values = {name: truth[members[survey], LABEL_FIELDS.index(name)] + injection.bias[name]
                  + rng.normal(0, injection.scatter[name], members[survey].size) for name in injection.bias}
        flagged = rng.random(members[survey].size) < 0.1
        values = {k: np.where(flagged, v + rng.normal(0, 5 * injection.scatter[k], v.size), v) for k, v in values.items()}
        _write_survey(survey, tmp_path, stars, members[survey], values, flagged, rng)
        flagged_by_survey[survey] = flagged
    imported = {
        "apogee": reference_survey_import(name="apogee-like", path=tmp_path / "apogee_like.fits", format_name="apogee-dr14"),
        "galah": reference_survey_import(name="galah-like", path=tmp_path / "galah_like.fits", format_name="galah-dr2"),
        "rave": reference_survey_import(name="rave-like", path=tmp_path / "rave_like.csv", format_name="rave-dr5"),
    }
    return release, imported, members, flagged_by_survey


def test_validation_recovers_the_injected_bias_and_scatter(world):
    release, imported, members, flagged = world
    results = release_validate(release=release)
    by_key = {(r.survey.survey, r.label): r for r in results}
    for survey, injection in SURVEYS.items():
        for label, injected_bias in injection.bias.items():
            result = by_key[(survey, label)]
            # Ours is the truth and the survey is truth + bias + noise: ours - theirs = -bias.
            assert abs(result.bias + injected_bias) < 4 * result.bias_error, (survey, label, result.bias)
            assert result.scatter == pytest.approx(injection.scatter[label], rel=0.2), (survey, label)
            assert result.robust_scatter == pytest.approx(injection.scatter[label], rel=0.25), (survey, label)
        assert {r.label for r in results if r.survey.survey == survey} == set(injection.bias)  # missing: left out


def test_cross_match_and_quality_cuts_count_what_they_should(world):
    release, imported, members, flagged = world
    for survey, reference in imported.items():
        in_catalog = members[survey] < N_STARS
        assert reference.row_count == members[survey].size
        assert reference.clean_count == int((~flagged[survey]).sum())
        assert reference.matched_count == int(in_catalog.sum())  # the extra stars find no partner
        methods = set(ReferenceStar.objects.filter(survey=reference, star__isnull=False).values_list("match_method", flat=True))
        assert methods == ({"position"} if survey == "rave" else {"gaia", "position"})
    results = release_validate(release=release, surveys=[imported["apogee"]])
    teff = next(r for r in results if r.label == "teff")
    clean = members["apogee"][~flagged["apogee"] & (members["apogee"] < N_STARS)]
    assert teff.n_stars == clean.size
    assert teff.n_spectra == clean.size + int(np.sum(clean < 150))  # every spectrum of a star is compared
    mg = next(r for r in results if r.label == "mg_h")
    assert mg.n_spectra == teff.n_spectra - int(5 in clean)  # the hot star's NULL abundance is not compared
    loose = release_validate(release=release, surveys=[imported["apogee"]], apply_quality_cuts=False)
    loose_teff = next(r for r in loose if r.label == "teff")
    assert loose_teff.n_stars == int(np.sum(members["apogee"] < N_STARS)) > teff.n_stars
    assert loose_teff.scatter > 1.5 * teff.scatter
    assert loose_teff.options["quality_cut"] == "none"
    release_validate(release=release, surveys=[imported["apogee"]])
    assert ValidationResult.objects.filter(release=release, survey=imported["apogee"]).count() == 14  # no duplicates


def test_xfe_is_converted_to_xh(world, tmp_path):
    release, imported, members, flagged = world
    star = ReferenceStar.objects.filter(survey=imported["apogee"]).first()
    from astropy.table import Table

    row = Table.read(tmp_path / "apogee_like.fits")[list(Table.read(tmp_path / "apogee_like.fits")["APOGEE_ID"]).index(star.source_id)]
    assert star.mg_h == pytest.approx(row["MG_FE"] + row["FE_H"])
    assert star.cu_h is None  # APOGEE-like catalogs have no copper


def test_validation_api_page_csv_and_plots(world):
    release, imported, members, flagged = world
    release_validate(release=release)
    client = APIClient()
    table = client.get("/api/v1/releases/truth/validation/").json()
    assert table["surveys"] == ["apogee-like", "galah-like", "rave-like"]
    teff = table["labels"][0]
    assert teff["column"] == "Teff" and teff["rave-like"]["n_stars"] > 0
    assert client.get("/api/v1/releases/truth/validation/", {"compare": "nope"}).status_code == 400
    assert client.get("/api/v1/releases/truth/validation/", {"compare": "truth"}).json()["compare"]["release"] == "truth"
    lines = client.get("/api/v1/releases/truth/validation.csv").content.decode().splitlines()
    assert lines[0].startswith("release,survey,label,n_stars") and len(lines) == 1 + 14 + 13 + 8
    image = client.get("/api/v1/releases/truth/validation/galah-like.png")
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    assert client.get("/api/v1/releases/truth/validation/unknown.png").status_code == 404
    page = client.get("/releases/truth/validation/")
    assert page.status_code == 200 and b"galah-like" in page.content
    call_command("validate_release", "truth", "--survey", "rave-like")


def test_bad_survey_files_are_clear_errors(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SurveyFormatError, match="no column"):
        reference_survey_import(name="x", path=tmp_path / "x.csv", format_name="rave-dr5")
    with pytest.raises(SurveyFormatError, match="unknown format"):
        reference_survey_import(name="x", path=tmp_path / "x.csv", format_name="sdss-dr1")
    with pytest.raises(SurveyFormatError, match="cannot read"):
        reference_survey_import(name="x", path=tmp_path / "missing.fits", format_name="apogee-dr17")
    mapping = {"survey": "custom", "id_column": "a", "ra_column": "b", "dec_column": "b", "labels": {"vmicro": ["c", "direct"]}}
    with pytest.raises(SurveyFormatError, match="unknown labels"):
        reference_survey_import(name="x", path=tmp_path / "x.csv", mapping=mapping)


def test_numeric_columns_read_through_copy_match_the_orm(release_factory):
    from core.bulk import numeric_columns
    from inference.models import CatalogEntry

    from .conftest import label_rows

    spectra = make_spectra([(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)])
    Spectrum.objects.filter(pk=spectra[1].pk).update(snr_red=None)
    release = release_factory(spectra, label_rows([4000.0, 5000.0, 6900.0]), label_rows([4000.0, 5000.0, 6900.0]))
    fields = ["spectrum__star_id", "snr_blue", "snr_red", "teff", "mg_h"]
    entries = CatalogEntry.objects.filter(release=release).order_by("spectrum_id")
    expected = np.array(list(entries.values_list(*fields)), dtype=np.float64)
    assert np.array_equal(numeric_columns(entries, fields), expected, equal_nan=True)
    assert numeric_columns(entries.filter(teff__gt=1e9), fields).shape == (0, 5)
