import csv
import hashlib
import json

import numpy as np
import pytest
from astropy.table import Table
from django.conf import settings
from django.core.management import call_command

from core.labels import LABELS
from spectra.io import read_spectrum_file
from spectra.mock.instrument import observe
from spectra.mock.labels import ELEMENTS, Isochrones
from spectra.mock.lines import LINES
from spectra.mock.survey import SURVEYS, MockSurveyConfig, _ArmModel, make_mock_survey
from spectra.processing.spectrum_model import CannonSpectrumModel, SpectrumModelError

from .shared_data import real_file


@pytest.fixture(scope="module")
def model():
    try:
        return CannonSpectrumModel.load(settings.SPECTRUM_MODEL_PATH)
    except SpectrumModelError as error:
        pytest.skip(f"spectrum model not available ({error}); scripts/test.sh fetches it")


@pytest.fixture(scope="module")
def isochrones():
    if not settings.ISOCHRONE_PATH.exists():
        pytest.skip(f"isochrone table {settings.ISOCHRONE_PATH} not available")
    return Isochrones.from_mist_csv(settings.ISOCHRONE_PATH)


@pytest.fixture(scope="module")
def survey(tmp_path_factory, model, isochrones):
    out = tmp_path_factory.mktemp("mock")
    config = MockSurveyConfig(n_stars=40, seed=3, dr9v1_fraction=0.3, bad_fibre_fraction=0.05)
    summary = make_mock_survey(out, config, model, isochrones)
    return out, summary


def test_files_read_like_real_ones(survey):
    out, summary = survey
    files = sorted((out / "fits").rglob("*.fits.gz"))
    assert len(files) == summary.files and summary.spectra > 3 * summary.files
    real = read_spectrum_file(real_file("med-58408-TD230151N343645T01_sp01-015.fits"))
    formats = set()
    for path in files:
        mock = read_spectrum_file(path)
        formats.add(mock.format)
        assert 2 <= len(mock.spectra) - 1 <= 9 and mock.spectra[0].kind == "coadd"
        assert mock.designation.startswith("LAMOST J") and mock.vacuum and mock.lmjd == mock.mjd + 1
        for spectrum, like in ((mock.spectra[0], real.spectra[0]), (mock.spectra[1], real.spectra[1])):
            for arm in ("blue", "red"):
                ours, theirs = spectrum.arm(arm), like.arm(arm)
                assert abs(ours.wavelength.size - theirs.wavelength.size) < 450
                assert abs(ours.wavelength[0] - theirs.wavelength[0]) < 40 and abs(ours.wavelength[-1] - theirs.wavelength[-1]) < 40
        coadd = mock.spectra[0]
        assert not coadd.blue.usable[-3:].any(), "coadds end in zero tails like the real ones"
    assert formats == {"lamost-mrs-dr7", "lamost-mrs-dr9v1"}


def test_noise_is_consistent_with_ivar():
    rng = np.random.default_rng(0)
    counts = np.full((200, 4000), 900.0)
    flux, ivar, mask = observe(rng, counts, cosmic_rays_per_arm=0.0, dead_pixels=np.array([10, 11]))
    chi = (flux - counts) * np.sqrt(ivar)
    good = mask == 0
    assert np.std(chi[good]) == pytest.approx(1.0, abs=0.01)
    assert np.all(ivar[:, [10, 11]] == 0) and np.all(mask[:, [10, 11]] == 2)


def test_each_element_changes_only_its_own_lines(model):
    arm = _ArmModel(model, "red", 7500.0)
    base = np.array([[4700.0, 2.5, -0.2] + [-0.2] * 12])
    for element in ("Ca", "Al", "S"):
        enhanced = base.copy()
        enhanced[0, 3 + ELEMENTS.index(element)] += 0.3
        difference = np.abs(arm.spectra(enhanced)[0] - arm.spectra(base)[0])
        wavelengths = arm.model.wavelength_air
        near = np.zeros(wavelengths.size, dtype=bool)
        for centre, _, _ in LINES[element]:
            near |= np.abs(wavelengths - centre) < 2.0
        assert difference[near].max() > 1e-3, element
        assert difference[~near].max() < 1e-6, element
    # Strong elements move the spectrum much more than the weak ones, as in real spectra.
    def response(element):
        enhanced = base.copy()
        enhanced[0, 3 + ELEMENTS.index(element)] += 0.3
        return np.abs(arm.spectra(enhanced)[0] - arm.spectra(base)[0]).sum()

    assert response("Ca") > 10 * response("S")


def test_reference_catalogs_carry_the_injected_offsets(survey):
    out, _ = survey
    truth = {int(r["star"]): r for r in csv.DictReader(open(out / "truth_stars.csv"))}
    by_gaia = {int(r["gaia_source_id"]): r for r in truth.values()}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["injected"]["apogee"]["bias"] == SURVEYS["apogee"].bias
    apogee = Table.read(out / "apogee_like.fits")
    clean = apogee[apogee["ASPCAPFLAG"] == 0]
    assert len(clean) > 5
    teff_offset = [row["TEFF"] - float(by_gaia[int(row["GAIA_SOURCE_ID"])]["teff"]) for row in clean]
    expected, scatter = SURVEYS["apogee"].bias["teff"], SURVEYS["apogee"].scatter["teff"]
    assert np.mean(teff_offset) == pytest.approx(expected, abs=4 * scatter / np.sqrt(len(clean)))
    assert "MG_FE" in apogee.colnames and "MG_H" not in apogee.colnames  # APOGEE reports [X/Fe]
    reference = list(csv.DictReader(open(out / "reference_labels.csv")))
    assert {"TEFF", "LOGG", "FE_H", "CU_H", "quality_flag"} <= set(reference[0])
    assert {r["quality_flag"] for r in reference} <= {"good", "bad"}
    rave = list(csv.DictReader(open(out / "rave_like.csv")))
    assert rave and "Algo_Conv_K" in rave[0] and "GAIA_SOURCE_ID" not in rave[0]


def test_same_seed_same_bytes(tmp_path, model, isochrones):
    config = MockSurveyConfig(n_stars=3, seed=11)
    make_mock_survey(tmp_path / "a", config, model, isochrones)
    make_mock_survey(tmp_path / "b", config, model, isochrones)

    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(tmp_path / "a") == digest(tmp_path / "b")


@pytest.mark.django_db
def test_command_writes_a_survey_the_ingest_accepts(tmp_path, settings, model, isochrones):
    from spectra.models import Spectrum, Star
    from spectra.services.ingest import spectra_ingest

    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    call_command("make_mock_survey", str(tmp_path / "survey"), "--stars", "6", "--seed", "5")
    catalog = {}
    for row in csv.DictReader(open(tmp_path / "survey" / "rv_catalog.csv")):
        catalog[(int(row["obsid"]), int(row["lmjm"]) if row["lmjm"] else None)] = (float(row["rv_blue"]), float(row["rv_red"]))
    summary = spectra_ingest(paths=[tmp_path / "survey" / "fits"], rv_catalog=catalog)
    truth = list(csv.DictReader(open(tmp_path / "survey" / "truth_spectra.csv")))
    assert summary.spectra_written == len(truth) == Spectrum.objects.count()
    assert Star.objects.count() == 6
    assert not summary.failures
    with pytest.raises(Exception, match="not empty"):
        call_command("make_mock_survey", str(tmp_path / "survey"), "--stars", "2")
    assert len(LABELS) == 15
