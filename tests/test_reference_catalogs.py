"""Reference catalogs from the outside world: documented quality flags, repeated stars,
exact 64-bit Gaia ids, and Gaia-id matches only where the positions agree. Training labels
and validation surveys go through the same machinery (spectra.refcat), so both are tested."""

import csv

import numpy as np
import pytest
from astropy.table import Table, vstack
from django.conf import settings

from core.bulk import keyed_numeric_columns
from core.crossmatch import crossmatch, match_notes
from core.labels import LABEL_FIELDS
from inference.models import ReferenceCatalog, ReferenceLabel
from inference.selectors import training_set_select
from inference.services.reference import reference_catalog_import
from spectra.models import Spectrum, Star
from spectra.refcat.reading import CatalogReadError, exact_ids
from spectra.selectors import _declination_zones, _stars_positions, stars_crossmatch
from validation.formats import SurveyFormatError
from validation.models import ReferenceStar
from validation.quality import (
    APOGEE_ASPCAP_STAR_BAD,
    APOGEE_EXTRATARG_DUPLICATE,
    APOGEE_PARAMFLAG_BAD,
)
from validation.services import reference_survey_import, release_validate

from .conftest import label_rows, make_spectra

pytestmark = pytest.mark.django_db

GAIA_ID = 1886955093649969280  # float64 turns it into 1886955093649969152
N_STARS = 283
ELEMENTS = ["C", "N", "O", "MG", "AL", "SI", "S", "CA", "TI", "CR", "NI", "CU"]


def _bit(*positions: int) -> int:
    return sum(1 << p for p in positions)


def write_allstar_dr17(path, rng) -> dict:
    """An allStar-like DR17 table: 283 stars and one of them observed twice (EXTRATARG
    DUPLICATE on the lower-S/N row, written first), informational and warning bits on most
    rows as in the real file, documented BAD bits on 5 rows, bad element/parameter flags on
    a few labels."""
    n = N_STARS
    ids = [f"2M{i:08d}+{i:07d}" for i in range(n)]
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-60, 80, n)
    teff, logg, fe_h = rng.normal(4800, 300, n), rng.normal(2.5, 0.5, n), rng.normal(-0.2, 0.2, n)
    # Informational / warning bits that SDSS does not call bad, on many rows.
    aspcap = np.where(rng.random(n) < 0.7, _bit(7, 11), 0) | np.where(rng.random(n) < 0.3, _bit(0, 9), 0)
    starflag = np.where(rng.random(n) < 0.4, _bit(11, 16), 0) | np.where(rng.random(n) < 0.2, _bit(2, 24), 0)
    paramflag = np.zeros((n, 9), dtype=np.int64)
    paramflag[:, 7] = 1 << 16  # PARAM_FIXED: vsini fixed for giants
    paramflag[rng.random(n) < 0.5, 1] |= _bit(8, 25)  # GRIDEDGE_WARN, SPEC_RGB
    paramflag[rng.random(n) < 0.3, 0] |= _bit(9, 14)  # CALRANGE_WARN, ERR_WARN
    extratarg = np.where(rng.random(n) < 0.2, 1, 0)  # NOT_MAIN: an ancillary target, not a duplicate
    element_flags = {e: np.where(rng.random(n) < 0.3, _bit(14), 0) for e in ELEMENTS}  # ERR_WARN
    element_flags["FE"] = np.where(rng.random(n) < 0.3, _bit(12), 0)  # PARAM_MISMATCH_WARN
    # Documented BAD: 5 rows.
    bad_rows = [10, 20, 30, 40, 50]
    aspcap[10] |= APOGEE_ASPCAP_STAR_BAD
    starflag[20] |= 1  # BAD_PIXELS
    starflag[30] |= 1 << 22  # RV_FAIL
    aspcap[40] |= 1 << 31  # NO_ASPCAP_RESULT
    starflag[50] |= 1 << 3  # VERY_BRIGHT_NEIGHBOR
    # Per-label BAD on rows that otherwise pass: only that label goes.
    element_flags["MG"][60] |= 1 << 6  # TEFF_CUT on [Mg/Fe]
    paramflag[70, 1] |= 1 << 2  # OTHER_BAD on log g
    element_flags["FE"][80] |= 1 << 0  # GRIDEDGE_BAD on [Fe/H]: every [X/H] derived from it goes too
    snr = rng.uniform(80, 300, n)
    table = Table({
        "APOGEE_ID": ids, "RA": ra, "DEC": dec, "GAIAEDR3_SOURCE_ID": np.arange(n, dtype=np.int64) + 4 * 10**18 + 17,
        "SNR": snr, "TEFF": teff, "LOGG": logg, "FE_H": fe_h,
        **{f"{e}_FE": rng.normal(0.05, 0.1, n) for e in ELEMENTS},
        "ASPCAPFLAG": aspcap.astype(np.uint64), "STARFLAG": starflag.astype(np.int32), "PARAMFLAG": paramflag,
        "EXTRATARG": extratarg.astype(np.int16),
        **{f"{e}_FE_FLAG" if e != "FE" else "FE_H_FLAG": v.astype(np.int32) for e, v in element_flags.items()},
    })
    # Star 5 observed again in another field at lower S/N: DR17 marks that row DUPLICATE.
    twin = table[5:6].copy()
    twin["TEFF"], twin["SNR"], twin["EXTRATARG"] = 9999.0, 40.0, APOGEE_EXTRATARG_DUPLICATE | 1
    vstack([twin, table]).write(path, overwrite=True)
    return {"ids": ids, "ra": ra, "dec": dec, "teff": teff, "bad_rows": bad_rows}


def test_apogee_dr17_allstar_keeps_what_sdss_does_not_call_bad(tmp_path):
    truth = write_allstar_dr17(tmp_path / "allStar-dr17-synspec_rev1.fits", np.random.default_rng(3))
    survey = reference_survey_import(name="apogee-dr17", path=tmp_path / "allStar-dr17-synspec_rev1.fits",
                                     format_name="apogee-dr17")
    assert (survey.row_count, survey.clean_count, survey.duplicate_count) == (N_STARS, N_STARS - 5, 1)
    assert survey.import_notes["duplicates"] == [{"id": truth["ids"][5], "kept_row": 7, "dropped_rows": [1]}]
    kept = ReferenceStar.objects.get(survey=survey, source_id=truth["ids"][5])
    assert kept.teff == pytest.approx(truth["teff"][5])  # the main-survey row, not the lower-S/N duplicate
    rejected = set(ReferenceStar.objects.filter(survey=survey, passes_quality=False).values_list("source_id", flat=True))
    assert rejected == {truth["ids"][i] for i in truth["bad_rows"]}
    flagged = {s: set(f) for s, f in ReferenceStar.objects.filter(survey=survey).exclude(flagged_labels=[])
               .values_list("source_id", "flagged_labels")}
    derived_from_fe = set(LABEL_FIELDS[2:])  # [Fe/H] and every [X/H] = [X/Fe] + [Fe/H]
    assert flagged == {truth["ids"][60]: {"mg_h"}, truth["ids"][70]: {"logg"}, truth["ids"][80]: derived_from_fe}
    row = ReferenceStar.objects.get(survey=survey, source_id=truth["ids"][60])
    assert row.passes_quality and row.mg_h is not None  # stored as given; left out when the cut applies
    assert row.quality_flags["PARAMFLAG"][7] == 1 << 16 and "EXTRATARG" in row.quality_flags
    assert survey.import_notes["rows_written"] == N_STARS
    again = reference_survey_import(name="apogee-dr17", path=tmp_path / "allStar-dr17-synspec_rev1.fits",
                                    format_name="apogee-dr17")
    assert (again.import_notes["rows_written"], again.import_notes["rows_deleted"]) == (0, 0)  # nothing changed

    # The same file as training labels, through the same reader and rules.
    catalog_summary = reference_catalog_import(name="apogee-dr17-labels", path=tmp_path / "allStar-dr17-synspec_rev1.fits",
                                               mapping={"id": "APOGEE_ID", "ra": "RA", "dec": "DEC",
                                                        "gaia_source_id": "GAIAEDR3_SOURCE_ID",
                                                        "labels": {"teff": "TEFF", "logg": "LOGG", "fe_h": "FE_H",
                                                                   "mg_h": ["MG_FE", "x_fe"]},
                                                        "quality_cut": "apogee_clean"})
    assert (catalog_summary.rows, catalog_summary.good, catalog_summary.duplicates_dropped) == (N_STARS, N_STARS - 5, 1)
    assert ReferenceLabel.objects.get(source_id=truth["ids"][5]).teff == pytest.approx(truth["teff"][5])
    assert ReferenceLabel.objects.get(source_id=truth["ids"][10]).quality_value == "ASPCAPFLAG bad bits"


def test_per_label_flags_leave_that_label_out_of_validation_only(tmp_path, release_factory):
    spectra = make_spectra([(10.0 + i * 0.01, 5.0) for i in range(3)], gaia_start=6 * 10**18)
    ids = [f"2M0000000{i}" for i in range(3)]
    table = Table({"APOGEE_ID": ids, "RA": [10.0, 10.01, 10.02], "DEC": [5.0] * 3,
                   "GAIAEDR3_SOURCE_ID": np.array([6 * 10**18, 6 * 10**18 + 1, 6 * 10**18 + 2], dtype=np.int64),
                   "TEFF": [5000.0, 5100.0, 5200.0], "LOGG": [2.5] * 3, "FE_H": [-0.2] * 3, "MG_FE": [0.1] * 3,
                   "ASPCAPFLAG": np.zeros(3, dtype=np.int64), "STARFLAG": np.zeros(3, dtype=np.int32),
                   "MG_FE_FLAG": np.array([0, APOGEE_PARAMFLAG_BAD & 1, 0], dtype=np.int32)})
    table.write(tmp_path / "allStar.fits")
    survey = reference_survey_import(name="a", path=tmp_path / "allStar.fits", format_name="apogee-dr17")
    release = release_factory(spectra, label_rows([5000.0, 5100.0, 5200.0]), label_rows([5000.0, 5100.0, 5200.0]))
    by_label = {r.label: r for r in release_validate(release=release, surveys=[survey])}
    assert by_label["teff"].n_stars == 3 and by_label["mg_h"].n_stars == 2
    loose = {r.label: r for r in release_validate(release=release, surveys=[survey], apply_quality_cuts=False)}
    assert loose["mg_h"].n_stars == 3


def _write_labels_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["APOGEE_ID", "RA", "DEC", "GAIA_SOURCE_ID", "TEFF", "LOGG", "quality_flag"])
        writer.writerows(rows)


def test_gaia_ids_are_exact_from_csv_to_match(tmp_path):
    star = Star.objects.create(designation="LAMOST J000000.00+000000.0", ra=30.0, dec=5.0, gaia_source_id=GAIA_ID)
    # What float64 makes of the id, on a star nearby: an inexact reader would match this one.
    Star.objects.create(designation="LAMOST J000001.00+000000.0", ra=30.0, dec=5.0 + 4.5 / 3600,
                        gaia_source_id=1886955093649969152)
    # 4" away: beyond the positional radius (3"), within the Gaia-id limit (5"): only the id can match.
    _write_labels_csv(tmp_path / "labels.csv", [["2M1", "30.000000", f"{5.0 - 4.0 / 3600:.7f}", str(GAIA_ID), "5000",
                                                 "2.5", "good"]])
    summary = reference_catalog_import(name="exact", path=tmp_path / "labels.csv",
                                       mapping={"id": "APOGEE_ID", "ra": "RA", "dec": "DEC",
                                                "gaia_source_id": "GAIA_SOURCE_ID",
                                                "labels": {"teff": "TEFF", "logg": "LOGG"},
                                                "quality": {"column": "quality_flag", "good": ["good"]}})
    label = ReferenceLabel.objects.get(source_id="2M1")
    assert label.gaia_source_id == GAIA_ID
    assert (label.star_id, label.match_method, summary.matched_by_gaia) == (star.pk, "gaia", 1)

    # The survey dialect, CSV too.
    mapping = {"survey": "custom", "id_column": "APOGEE_ID", "ra_column": "RA", "dec_column": "DEC",
               "gaia_column": "GAIA_SOURCE_ID", "labels": {"teff": ["TEFF", "direct"]}}
    survey = reference_survey_import(name="exact", path=tmp_path / "labels.csv", mapping=mapping)
    reference = ReferenceStar.objects.get(survey=survey)
    assert (reference.gaia_source_id, reference.star_id, reference.match_method) == (GAIA_ID, star.pk, "gaia")


def test_an_imported_catalog_is_in_the_planners_statistics(tmp_path):
    import json

    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner statistics")
    n = 600
    rows = [[f"2M{i}", f"{10 + i * 0.01:.6f}", "5.0", "", "5000", "2.5", "good"] for i in range(n)]
    _write_labels_csv(tmp_path / "labels.csv", rows)
    mapping = {"id": "APOGEE_ID", "ra": "RA", "dec": "DEC", "labels": {"teff": "TEFF", "logg": "LOGG"},
               "quality": {"column": "quality_flag", "good": ["good"]}}
    reference_catalog_import(name="first", path=tmp_path / "labels.csv", mapping=mapping)
    reference_catalog_import(name="second", path=tmp_path / "labels.csv", mapping=mapping)
    survey = reference_survey_import(name="survey", path=tmp_path / "labels.csv", mapping={
        "survey": "custom", "id_column": "APOGEE_ID", "ra_column": "RA", "dec_column": "DEC",
        "labels": {"teff": ["TEFF", "direct"]}})

    def estimate(table: str, column: str, value: int) -> float:
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) SELECT id FROM {table} WHERE {column} = %s", [value])
            plan = cursor.fetchone()[0]
        return (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]["Plan Rows"]

    # Both tables' rows of the newest catalog are estimated as they are, not at a few rows.
    second = ReferenceCatalog.objects.get(name="second")
    assert estimate("inference_referencelabel", "catalog_id", second.pk) > n / 2
    assert estimate("validation_referencestar", "survey_id", survey.pk) > n / 2


def test_ids_that_cannot_be_exact_are_refused_not_rounded(tmp_path):
    assert exact_ids(np.array(["1886955093649969280", "", "-1", "17.0"]), "g") == [GAIA_ID, None, None, 17]
    assert exact_ids(np.array([GAIA_ID, 0], dtype=np.int64), "g") == [GAIA_ID, None]
    with pytest.raises(CatalogReadError, match="floating-point"):
        exact_ids(np.array([float(GAIA_ID)]), "g")
    table = Table({"APOGEE_ID": ["2M1"], "RA": [1.0], "DEC": [1.0], "GAIAEDR3_SOURCE_ID": [float(GAIA_ID)],
                   "ASPCAPFLAG": [0], "STARFLAG": [0]})
    table.write(tmp_path / "float_ids.fits")
    with pytest.raises(SurveyFormatError, match="floating-point"):
        reference_survey_import(name="f", path=tmp_path / "float_ids.fits", format_name="apogee-dr17")


def test_database_ids_come_back_exact(db):
    Star.objects.create(id=2**53 + 1, designation="LAMOST J000000.00+000000.0", ra=1.0, dec=2.0)
    keys, values = keyed_numeric_columns(Star.objects.filter(id=2**53 + 1), "id", ["ra", "dec"])
    assert keys.tolist() == [2**53 + 1] and values.tolist() == [[1.0, 2.0]]


def test_a_gaia_id_match_far_away_is_refused_and_the_reason_recorded(tmp_path, release_factory):
    """Our star at P with Gaia id G; one reference row 60" away with id G and a Teff 4256 K off,
    one at P without an id. Only the row at P may be compared (validation) or learned (training)."""
    (spectrum,) = make_spectra([(150.0, 20.0)], gaia_start=GAIA_ID)
    star = spectrum.star
    rows = [["2M-FAR", "150.000000", f"{20.0 + 60 / 3600:.7f}", str(GAIA_ID), "9256", "2.5", "good"],
            ["2M-HERE", "150.000000", "20.000000", "", "5000", "2.5", "good"]]
    _write_labels_csv(tmp_path / "ref.csv", rows)
    mapping = {"survey": "custom", "id_column": "APOGEE_ID", "ra_column": "RA", "dec_column": "DEC",
               "gaia_column": "GAIA_SOURCE_ID", "labels": {"teff": ["TEFF", "direct"], "logg": ["LOGG", "direct"]}}
    survey = reference_survey_import(name="near-and-far", path=tmp_path / "ref.csv", mapping=mapping)
    far = ReferenceStar.objects.get(survey=survey, source_id="2M-FAR")
    here = ReferenceStar.objects.get(survey=survey, source_id="2M-HERE")
    assert far.star_id is None and far.match_method == ""
    assert far.match_note == 'Gaia id match 60.0" away (limit 5"): refused; no star within 3"'
    assert (here.star_id, here.match_method) == (star.pk, "position")
    release = release_factory([spectrum], label_rows([5000.0]), label_rows([5000.0]))
    teff = next(r for r in release_validate(release=release, surveys=[survey]) if r.label == "teff")
    assert teff.n_stars == 1 and abs(teff.bias) < 1.0  # not -4256
    assert teff.options["matched_gaia_refused"] == 1

    # Training labels: the same matcher, the same outcome.
    from spectra.processing.pipeline import PREPROCESSING_VERSION

    Spectrum.objects.filter(pk=spectrum.pk).update(status=Spectrum.Status.PREPROCESSED, array_shard="s", array_row=0,
                                                   preprocessing_version=PREPROCESSING_VERSION)
    summary = reference_catalog_import(name="near-and-far", path=tmp_path / "ref.csv",
                                       mapping={"id": "APOGEE_ID", "ra": "RA", "dec": "DEC",
                                                "gaia_source_id": "GAIA_SOURCE_ID",
                                                "labels": {"teff": "TEFF", "logg": "LOGG"},
                                                "quality": {"column": "quality_flag", "good": ["good"]}})
    assert (summary.matched, summary.matched_by_gaia, summary.gaia_refused) == (1, 0, 1)
    assert "refused" in ReferenceLabel.objects.get(source_id="2M-FAR").match_note
    data = training_set_select(catalog=ReferenceCatalog.objects.get(name="near-and-far"))
    assert data.labels[:, 0].tolist() == [5000.0]
    # Re-matching with nothing changed writes nothing.
    from spectra.refcat.matching import reference_rows_match

    assert reference_rows_match(rows=ReferenceStar.objects.filter(survey=survey)).changed == 0


def test_repeated_ids_without_a_duplicate_flag_keep_the_first_row(tmp_path):
    _write_labels_csv(tmp_path / "rep.csv", [["2M1", "10.0", "5.0", "", "5000", "2.5", "good"],
                                             ["2M1", "10.0", "5.0", "", "6000", "2.5", "good"],
                                             ["2M2", "11.0", "5.0", "", "5500", "2.5", "good"]])
    summary = reference_catalog_import(name="rep", path=tmp_path / "rep.csv",
                                       mapping={"id": "APOGEE_ID", "ra": "RA", "dec": "DEC",
                                                "labels": {"teff": "TEFF", "logg": "LOGG"},
                                                "quality": {"column": "quality_flag", "good": ["good"]}})
    assert (summary.rows, summary.duplicates_dropped) == (2, 1)
    assert ReferenceLabel.objects.get(source_id="2M1").teff == 5000.0
    catalog = ReferenceCatalog.objects.get(name="rep")
    assert catalog.import_notes["duplicates"] == [{"id": "2M1", "kept_row": 1, "dropped_rows": [2]}]
    assert "first row" in catalog.import_notes["duplicate_rule"]


def test_galah_dr3_columns_as_published_and_its_per_label_flags(tmp_path):
    """GALAH DR3 spells abundances Mg_fe / flag_Mg_fe; flag_sp and flag_fe_h reject a row,
    flag_X_fe or snr_c3_iraf <= 30 reject that abundance (galah-survey.org/dr3/flags)."""
    n = 5
    table = Table({"sobject_id": np.arange(n, dtype=np.int64) + 131216001101000, "ra_dr2": np.arange(n) + 10.0,
                   "dec_dr2": np.full(n, -20.0), "dr3_source_id": np.arange(n, dtype=np.int64) + GAIA_ID,
                   "teff": np.full(n, 5000.0), "logg": np.full(n, 4.0), "fe_h": np.full(n, -0.1),
                   "Mg_fe": np.full(n, 0.2), "flag_Mg_fe": np.array([0, 0, 1, 0, 0]),
                   "Si_fe": np.full(n, 0.1), "flag_Si_fe": np.zeros(n, dtype=int),
                   "snr_c3_iraf": np.array([50.0, 50.0, 50.0, 20.0, 50.0]),
                   "flag_sp": np.array([0, 1, 0, 0, 0]), "flag_fe_h": np.array([0, 0, 0, 0, 4])})
    table.write(tmp_path / "GALAH_DR3_main_allstar_v2.fits")
    survey = reference_survey_import(name="galah-dr3", path=tmp_path / "GALAH_DR3_main_allstar_v2.fits",
                                     format_name="galah-dr3")
    stars = {s.source_id: s for s in ReferenceStar.objects.filter(survey=survey)}
    ids = [str(131216001101000 + i) for i in range(n)]
    assert [stars[i].passes_quality for i in ids] == [True, False, True, True, False]
    assert stars[ids[0]].mg_h == pytest.approx(0.1) and stars[ids[0]].gaia_source_id == GAIA_ID
    assert stars[ids[2]].flagged_labels == ["mg_h"]
    assert stars[ids[3]].flagged_labels == ["mg_h", "si_h"]  # snr_c3_iraf <= 30: too low for abundances


def test_the_match_zone_by_zone_in_declination_equals_the_whole_table_match():
    """Stars across the sky, reference rows at them, beside them, at zone edges, sharing Gaia
    ids (one partner far away in another zone, one id on two stars): matched with zones of
    7 stars, the result is the whole-table match, star by star, notes included."""
    rng = np.random.default_rng(5)
    n = 60
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    dec[:6] = [89.9995, -89.9995, 0.0, 0.0, 30.0, 30.0]
    ra[2:4] = [359.9999, 0.0001]  # two stars across RA 0
    gaia = [int(1e18) + i if i % 3 else None for i in range(n)]
    gaia[10] = gaia[11]  # one Gaia id on two stars
    stars = Star.objects.bulk_create([Star(designation=f"S{i}", gaia_source_id=g, ra=float(r), dec=float(d))
                                      for i, (g, r, d) in enumerate(zip(gaia, ra, dec, strict=True))])
    edges = _declination_zones(7)
    assert edges.size - 1 >= 8  # the test crosses zones
    ref_ra, ref_dec, ref_gaia = [], [], []
    for i, star in enumerate(stars):
        offset = rng.uniform(0, 2.5) / 3600.0 if i % 2 else rng.uniform(3.5, 6) / 3600.0
        ref_ra.append(star.ra)
        ref_dec.append(float(np.clip(star.dec + offset, -90, 90)))
        ref_gaia.append(star.gaia_source_id if i % 4 else None)
    for edge in edges[1:-1]:  # rows on both sides of every zone edge, at a star on the other side
        below = Star.objects.create(designation="edge", ra=100.0, dec=float(edge - 1.0 / 3600.0))
        ref_ra += [100.0, 100.0]
        ref_dec += [float(edge + 1.0 / 3600), float(edge - 0.5 / 3600)]
        ref_gaia += [None, below.gaia_source_id]
    for at, partner in ((20, gaia[40]), (10, gaia[11])):  # an id whose star is far away; the id on two stars
        ref_ra.append(float(ra[at]))
        ref_dec.append(float(dec[at]))
        ref_gaia.append(partner)
    ref_ra, ref_dec = np.array(ref_ra), np.array(ref_dec)

    zoned = stars_crossmatch(gaia=ref_gaia, ra=ref_ra, dec=ref_dec, zone_stars=7)
    everything = _stars_positions()
    radius, gaia_max = settings.REFERENCE_MATCH_RADIUS_ARCSEC, settings.REFERENCE_GAIA_MATCH_MAX_ARCSEC
    whole = crossmatch(np.array([g or 0 for g in ref_gaia]), ref_ra, ref_dec, everything["gaia_source_id"],
                       everything["ra"], everything["dec"], radius_arcsec=radius, gaia_max_arcsec=gaia_max)
    expected_star = np.where(whole.star_index >= 0, everything["id"][whole.star_index], -1)
    assert zoned.star_id.tolist() == expected_star.tolist()
    assert [m for m in zoned.method] == [["", "gaia", "position"][k] for k in whole.method]
    np.testing.assert_allclose(zoned.separation_arcsec, whole.separation_arcsec, rtol=0, atol=1e-9)
    assert zoned.note.tolist() == match_notes(whole, radius, gaia_max).tolist()
    assert zoned.by_gaia > 5 and zoned.by_position > 5 and zoned.gaia_refused >= 1
    assert (zoned.star_id == -1).sum() > 5


def test_a_catalogs_label_errors_are_read_checked_and_stored(tmp_path):
    """Errors in the labels' convention: a [X/Fe] error combines with the [Fe/H] error in
    quadrature; a sentinel, a blank or a non-positive error is NULL, never a number."""
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["APOGEE_ID", "RA", "DEC", "TEFF", "TEFF_ERR", "LOGG", "LOGG_ERR", "FE_H", "FE_H_ERR",
                         "MG_FE", "MG_FE_ERR", "quality_flag"])
        writer.writerow(["2M1", "10.0", "5.0", "5000", "35.5", "2.5", "0.06", "-0.2", "0.03", "0.1", "0.04", "good"])
        writer.writerow(["2M2", "10.1", "5.0", "5100", "-9999", "2.6", "-0.05", "-0.1", "", "0.2", "0.05", "good"])
        writer.writerow(["2M3", "10.2", "5.0", "5200", "0", "2.7", "inf", "0.0", "0.02", "0.1", "", "good"])
    mapping = {"id": "APOGEE_ID", "ra": "RA", "dec": "DEC",
               "labels": {"teff": "TEFF", "logg": "LOGG", "fe_h": "FE_H", "mg_h": ["MG_FE", "x_fe"]},
               "errors": {"teff": "TEFF_ERR", "logg": "LOGG_ERR", "fe_h": "FE_H_ERR", "mg_h": "MG_FE_ERR"},
               "quality": {"column": "quality_flag", "good": ["good"]}}
    summary = reference_catalog_import(name="errors", path=tmp_path / "labels.csv", mapping=mapping)
    assert summary.errors_absent == () and "no error column" not in str(summary)
    rows = {row.source_id: row for row in ReferenceLabel.objects.all()}
    first = rows["2M1"]
    assert (first.teff_err, first.logg_err, first.fe_h_err) == (35.5, 0.06, 0.03)
    assert first.mg_h == pytest.approx(-0.1) and first.mg_h_err == pytest.approx(np.hypot(0.04, 0.03))
    second, third = rows["2M2"], rows["2M3"]
    assert second.teff_err is None and second.logg_err is None and second.fe_h_err is None
    assert second.mg_h_err is None  # [Mg/H]'s error needs [Fe/H]'s, which the row lacks
    assert third.teff_err is None and third.logg_err is None and third.mg_h_err is None
    assert third.fe_h_err == 0.02 and third.teff == 5200.0
    catalog = ReferenceCatalog.objects.get(name="errors")
    assert catalog.import_notes["errors_read"] == ["teff", "logg", "fe_h", "mg_h"]
    assert catalog.import_notes["errors_absent"] == {}

    # An error column the file lacks: the catalog imports, and says which errors it lacks.
    summary = reference_catalog_import(name="errors", path=tmp_path / "labels.csv",
                                       mapping={**mapping, "errors": {**mapping["errors"], "logg": "E_LOGG"}})
    assert summary.errors_absent == ("logg",) and "no error column for logg" in str(summary)
    assert ReferenceCatalog.objects.get(name="errors").import_notes["errors_absent"] == {"logg": "E_LOGG"}
    assert ReferenceLabel.objects.get(source_id="2M1").logg_err is None  # not kept from the earlier import

    # Without the [Fe/H] error an [X/Fe] label's [X/H] error cannot be formed: said, not hidden.
    for errors, reason in (({**mapping["errors"], "fe_h": "E_FEH"}, "column E_FEH is absent"),
                           ({k: v for k, v in mapping["errors"].items() if k != "fe_h"}, "names no [Fe/H] error")):
        summary = reference_catalog_import(name="errors", path=tmp_path / "labels.csv", mapping={**mapping, "errors": errors})
        notes = ReferenceCatalog.objects.get(name="errors").import_notes
        assert "mg_h" in summary.errors_absent and "mg_h" not in notes["errors_read"]
        assert reason in notes["errors_absent"]["mg_h"]
        assert ReferenceLabel.objects.get(source_id="2M1").mg_h_err is None

    with pytest.raises(Exception, match="errors for \\['ca_h'\\] but not their labels"):
        reference_catalog_import(name="errors", path=tmp_path / "labels.csv",
                                 mapping={**mapping, "errors": {"ca_h": "CA_FE_ERR"}})
    with pytest.raises(Exception, match="is not a number"):
        reference_catalog_import(name="errors", path=tmp_path / "labels.csv",
                                 mapping={**mapping, "errors": {"teff": "quality_flag"}})
