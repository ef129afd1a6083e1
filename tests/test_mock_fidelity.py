"""Ideal arrays, Cramer-Rao bounds and harsh options of the mock survey."""

import csv

import numpy as np
import pytest
from astropy.io import fits
from django.conf import settings

from core.flags import SPECTRUM_FLAGS
from core.labels import LABELS
from spectra.io import read_spectrum_file
from spectra.mock.fidelity import continuum_error, continuum_ratio, defect_pixels, line_shift, repair
from spectra.mock.harsh import SKY_LINES, HarshOptions
from spectra.mock.ideal import cramer_rao_bound, finite_difference_jacobian, load_ideal
from spectra.mock.labels import Isochrones
from spectra.mock.survey import MockSurveyConfig, make_mock_survey
from spectra.processing.grids import WINDOWS
from spectra.processing.pipeline import preprocess
from spectra.processing.spectrum_model import CannonSpectrumModel, SpectrumModelError

# --- the bound's maths (no model needed) -------------------------------------------------


def test_crb_of_a_linear_model_is_the_analytic_one():
    rng = np.random.default_rng(0)
    jacobian = rng.normal(size=(2, 300, 4))
    ivar = rng.uniform(50.0, 200.0, (2, 300))
    expected = np.array([np.sqrt(np.diag(np.linalg.inv(j.T @ (w[:, None] * j)))) for j, w in zip(jacobian, ivar, strict=True)])
    assert cramer_rao_bound(jacobian, ivar) == pytest.approx(expected, rel=1e-9)
    # Orthogonal columns: sigma_k = 1 / sqrt(sum_p ivar_p J_pk^2).
    orthogonal = np.zeros((1, 300, 2))
    orthogonal[0, :150, 0] = 0.3
    orthogonal[0, 150:, 1] = 0.1
    flat = np.full((1, 300), 100.0)
    assert cramer_rao_bound(orthogonal, flat)[0] == pytest.approx([1 / np.sqrt(150 * 100 * 0.09), 1 / np.sqrt(150 * 100 * 0.01)])


def test_crb_scales_as_one_over_snr_and_marks_blind_labels():
    rng = np.random.default_rng(1)
    jacobian = rng.normal(size=(1, 200, 3))
    ivar = rng.uniform(10.0, 20.0, (1, 200))
    base = cramer_rao_bound(jacobian, ivar)
    assert cramer_rao_bound(jacobian, ivar * 4.0) == pytest.approx(base / 2.0)  # S/N x 2 -> sigma / 2
    # Shared Jacobians through ``rows``: the same answer, spectrum by spectrum.
    both = cramer_rao_bound(jacobian, np.vstack([ivar, ivar * 9.0]), rows=np.array([0, 0]))
    assert both[1] == pytest.approx(base[0] / 3.0)
    blind = jacobian.copy()
    blind[0, :, 2] = 0.0  # a label the spectrum does not depend on
    sigma = cramer_rao_bound(blind, ivar)[0]
    assert np.isinf(sigma[2]) and np.all(np.isfinite(sigma[:2]))
    with pytest.raises(ValueError, match="non-negative"):
        cramer_rao_bound(jacobian, -ivar)


def test_finite_differences_are_exact_for_a_quadratic():
    a = np.array([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]])  # (P, L)

    def model(labels):
        return labels @ a.T + (labels[:, :1] ** 2) * np.array([1.0, 0.0, 2.0])

    labels = np.array([[1.0, 2.0], [-0.5, 0.3]])
    jacobian = finite_difference_jacobian(model, labels, np.array([0.1, 0.1]))
    expected = np.broadcast_to(a, (2, 3, 2)).copy()
    expected[:, :, 0] += 2 * labels[:, :1] * np.array([1.0, 0.0, 2.0])
    assert jacobian == pytest.approx(expected)


# --- fidelity measures on small synthetic arrays -------------------------------------------


def test_fidelity_measures_recover_known_defects():
    rng = np.random.default_rng(2)
    x = np.arange(4000)
    ideal = np.tile(1.0 - 0.5 * np.exp(-0.5 * ((x[None, :] % 200 - 100) / 2.0) ** 2), (3, 1))
    ivar = np.full(ideal.shape, 1e4)
    noise = rng.normal(0.0, 0.01, ideal.shape)
    tilt = 1.0 + 0.03 * np.sin(2 * np.pi * x / 1000.0)[None, :]  # a continuum error on ~50 A scales
    flux = (ideal + noise) * tilt
    flux[:, 1000:1100] = 1.0  # masked, written as 1
    pre_ivar = ivar.copy()
    pre_ivar[:, 1000:1100] = 0.0
    flux[:, 2050] += 0.5  # an unmarked cosmic ray
    rms, offset, shape = continuum_error(flux, ideal + noise, pre_ivar > 0)
    assert rms == pytest.approx(0.03 / np.sqrt(2), rel=0.25) and np.abs(offset).max() < 0.01
    bad = defect_pixels(flux, ideal + noise, ivar) & (pre_ivar > 0)
    assert bad[:, 2050].all() and bad.sum() == 3
    repaired = repair(flux, pre_ivar, ideal + noise, ivar, ("masked", "continuum", "unmarked"))
    # The 30 A running means smooth a 100 A sine by sinc(0.3) = 0.86: 0.4% of it stays.
    left = repaired - (ideal + noise)
    assert np.sqrt(np.mean(left**2)) < 0.005 and np.abs(left).max() < 0.02
    assert np.abs(left[:, 1000:1100]).max() < 0.01 and np.abs(left[:, 2050]).max() < 0.01
    shifted = np.roll(ideal, 2, axis=1)
    assert line_shift(shifted, ideal, ivar > 0) == pytest.approx(2.0, abs=0.05)
    # Pixels left out on one wing of every line do not pull the lines towards the gap.
    wing = (x % 200 >= 101) & (x % 200 <= 104)
    for use in (~wing, ~np.roll(wing, -5)):
        assert line_shift(ideal, ideal, np.tile(use, (3, 1))) == pytest.approx(0.0, abs=0.1)  # (1.1 px before)
    assert continuum_ratio(flux, ideal + noise, pre_ivar > 0).shape == flux.shape


# --- the mock survey's ideal arrays and harsh options ---------------------------------------


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
def build(tmp_path_factory, model, isochrones):
    made = {}

    def survey(name: str, **options):
        if name not in made:
            out = tmp_path_factory.mktemp(name.replace(" ", "-"))
            harsh = HarshOptions(**options.pop("harsh", {}))
            config = MockSurveyConfig(n_stars=options.pop("stars", 5), seed=options.pop("seed", 2), harsh=harsh, **options)
            make_mock_survey(out, config, model, isochrones)
            made[name] = out
        return made[name]

    return survey


def read_all(out):
    """{(file, kind, lmjm): RawSpectrum} of a survey, and the truth rows by the same key."""
    spectra = {}
    for path in sorted((out / "fits").rglob("*.fits.gz")):
        name = path.relative_to(out).as_posix()
        for spectrum in read_spectrum_file(path).spectra:
            spectra[(name, spectrum.kind, int(spectrum.lmjm or 0))] = spectrum
    truth = {(r["file"], r["kind"], int(r["lmjm"] or 0)): r for r in csv.DictReader(open(out / "truth_spectra.csv"))}
    return spectra, truth


def test_ideal_arrays_and_bounds_exist_for_every_spectrum(build):
    out = build("plain")
    spectra, truth = read_all(out)
    ideal = load_ideal(out)
    assert set(ideal.index()) == set(spectra) == set(truth)
    assert ideal.flux.shape == (len(truth), 2, 4000) and ideal.noise.shape == ideal.ivar.shape == ideal.flux.shape
    assert ideal.flux.min() >= 0.0 and ideal.flux.max() <= 1.0
    # The noise drawn is the noise the ivar describes (exposures: one resampling).
    exposures = ideal.kind == "exposure"
    good = ideal.ivar[exposures] > 0
    chi = ideal.noise[exposures][good] * np.sqrt(ideal.ivar[exposures][good])
    assert np.std(chi) == pytest.approx(1.0, abs=0.03)
    # The bound: finite for the strong labels, tighter for a coadd than for its exposures.
    bounds = list(csv.DictReader(open(out / "truth_crb.csv")))
    assert [key for key in bounds[0] if key.startswith("crb_")] == [f"crb_{label.field}" for label in LABELS]
    assert len(bounds) == len(truth)
    by_file: dict[str, dict] = {}
    for row in bounds:
        by_file.setdefault(row["file"], {}).setdefault(row["kind"], []).append(float(row["crb_teff"]))
    for kinds in by_file.values():
        assert 0 < kinds["coadd"][0] < min(kinds["exposure"])
        # A coadd holds its exposures' information, no more (their Fisher matrices add up;
        # the exposures of one night differ only in level, so their bounds combine as
        # 1 / sqrt(sum 1 / sigma^2)).
        combined = 1 / np.sqrt(np.sum(1 / np.array(kinds["exposure"]) ** 2))
        assert kinds["coadd"][0] == pytest.approx(combined, rel=2e-3)
    assert np.allclose(ideal.crb[:, 0], [float(r["crb_teff"]) for r in bounds], rtol=1e-4)


def test_the_bound_is_reached_by_a_linear_fit_to_the_ideal_arrays(build, model):
    """Fitted from the truth with the ideal ivar as weights (one Gauss-Newton step on the
    ideal flux + the noise drawn), the labels scatter as the bound says: the bound uses
    the information the noise really leaves, for exposures and coadds alike."""
    from spectra.mock.survey import ARMS, CRB_STEPS, _ArmModel

    out = build("bound check", stars=12, seed=4)
    ideal = load_ideal(out)
    stars = {int(r["star"]): r for r in csv.DictReader(open(out / "truth_stars.csv"))}
    arms = {arm: _ArmModel(model, arm, 7500.0) for arm in ARMS}
    unique, which = np.unique(ideal.star, return_inverse=True)
    labels = np.array([[float(stars[int(s)][label.field]) for label in LABELS] for s in unique])
    jacobian = finite_difference_jacobian(
        lambda v: np.concatenate([arms[arm].on_grid(arms[arm].spectra(v)) for arm in ARMS], axis=1), labels, CRB_STEPS
    )
    weights = ideal.ivar.reshape(len(ideal.star), -1).astype(np.float64)
    noise = ideal.noise.reshape(len(ideal.star), -1).astype(np.float64)
    for kind in ("coadd", "exposure"):
        z = []
        for i in np.flatnonzero(ideal.kind == kind):
            j, w = jacobian[which[i]], weights[i]
            z.append(np.linalg.solve(j.T @ (w[:, None] * j), j.T @ (w * noise[i])) / ideal.crb[i])
        assert np.std(np.array(z)) == pytest.approx(1.0, abs=0.12), kind


def test_noise_free_spectrum_preprocessed_recovers_its_ideal_array(build):
    """Preprocessing with the true RVs a noise-free plain spectrum gives its ideal array to
    within the resampling's smoothing once the 30 A continuum ratio is divided out
    (measured: rms 0.3-0.7%, 99th percentile 0.3-0.9% of the continuum)."""
    out = build("noise free", noise_scale=0.0)
    spectra, truth = read_all(out)
    ideal = load_ideal(out)
    index = ideal.index()
    keys = [key for key in spectra if truth[key]["bad_fibre"] == "0"]
    rows = np.array([index[key] for key in keys])
    rv = np.array([(float(truth[key]["rv_blue"]), float(truth[key]["rv_red"])) for key in keys])
    result = preprocess([spectra[key] for key in keys], rv_supplied=rv)
    assert (ideal.noise[rows] == 0).all()
    # Without noise the continuum's rejection in units of the (noise model's) sigma runs
    # away on many spectra; the pipeline flags those, and they are left out.
    fitted = (result.flags & SPECTRUM_FLAGS["CONTINUUM_FIT_POOR"].mask) == 0
    assert fitted.sum() >= 10
    for arm in range(2):
        flux, reference, reference_ivar = result.flux[fitted, arm], ideal.flux[rows[fitted], arm], ideal.ivar[rows[fitted], arm]
        use = (result.ivar[fitted, arm] > 0) & (reference_ivar > 0)
        use &= ~defect_pixels(flux, reference, reference_ivar)  # the plain mock's unflagged cosmic rays
        ratio = np.nan_to_num(continuum_ratio(flux, reference, use), nan=1.0)
        difference = (flux / ratio - reference)[use]
        assert np.sqrt(np.mean(difference**2)) < 0.01
        assert np.percentile(np.abs(difference), 99) < 0.02
        assert np.abs(line_shift(flux, reference, use)).max() < 0.3  # pixels: < 0.03 A


def test_default_options_leave_the_plain_survey_unchanged(build):
    plain, harsh_off = build("plain"), build("explicitly off", harsh={})
    for path in sorted((plain / "fits").rglob("*.fits.gz")):
        assert path.read_bytes() == (harsh_off / path.relative_to(plain)).read_bytes()
    assert "harsh" not in (plain / "manifest.json").read_text()


def _arms(out, kind):
    spectra, _ = read_all(out)
    return {(key, arm): spectrum.arm(arm) for key, spectrum in spectra.items() if key[1] == kind for arm in ("blue", "red")}


def _masked_share(arms):
    shares = []
    for (_, arm), data in arms.items():
        low, high = WINDOWS[arm]
        inside = (data.wavelength >= low) & (data.wavelength <= high)
        shares.append(np.mean(data.mask[inside] != 0))
    return np.median(shares)


def test_generous_coadd_masks(build):
    plain = build("plain")
    harsh = build("masks", harsh={"cosmic_rays": 24.0, "coadd_mask_dilate": 2})
    assert _masked_share(_arms(plain, "coadd")) < 0.03
    assert 0.15 < _masked_share(_arms(harsh, "coadd")) < 0.30  # ~20%, as on the independent emulated survey
    assert 0.008 < _masked_share(_arms(harsh, "exposure")) < 0.02  # ~1.3%
    # ORMASK is the union of the exposures' masks, dilated: the coadd flux under it is still data.
    plain_coadds, harsh_coadds = _arms(plain, "coadd"), _arms(harsh, "coadd")
    # (Its level can step by a few per cent where an exposure drops out: the mock's exposures
    # differ in level by their S/N scatter and are not rescaled before the coadd.)
    change = []
    for key, data in harsh_coadds.items():
        extra = (data.mask != 0) & (plain_coadds[key].mask == 0) & (data.ivar > 0) & (plain_coadds[key].flux > 0)
        change.append(np.abs(data.flux[extra] / plain_coadds[key].flux[extra] - 1))
    assert np.median(np.concatenate(change)) < 0.03


def test_unflagged_cosmic_rays_leak_into_two_exposure_coadds_only(build):
    options = {"exposures": (2, 3), "stars": 8}
    plain = build("two-three", **options)
    harsh = build("unflagged", harsh={"unflagged_cosmics": 6.0}, **options)
    plain_exposures, harsh_exposures = _arms(plain, "exposure"), _arms(harsh, "exposure")
    hit = 0
    for key, data in harsh_exposures.items():
        changed = data.flux != plain_exposures[key].flux
        assert np.all(data.mask[changed] == plain_exposures[key].mask[changed])  # no mask bit marks them
        hit += changed.sum()
    assert hit > 2 * 6 * len(harsh_exposures) * 0.5
    _, truth = read_all(harsh)
    exposures_per_file = {}
    for key in truth:
        exposures_per_file[key[0]] = exposures_per_file.get(key[0], 0) + (key[1] == "exposure")
    leaked = {2: 0, 3: 0}
    plain_coadds = _arms(plain, "coadd")
    for key, data in _arms(harsh, "coadd").items():
        sigma = 1 / np.sqrt(np.where(data.ivar > 0, data.ivar, np.inf))
        jump = (np.abs(data.flux - plain_coadds[key].flux) > 5 * sigma) & (data.mask == 0)
        leaked[exposures_per_file[key[0][0]]] += int(jump.sum())
    assert leaked[2] > 0 and leaked[3] == 0


def test_edge_junk_is_flagged_only_in_part(build):
    plain = build("plain")
    harsh = build("edge junk", harsh={"edge_junk": 400})
    plain_exposures = _arms(plain, "exposure")
    flagged = unflagged = 0
    for key, data in _arms(harsh, "exposure").items():
        changed = np.flatnonzero(data.flux != plain_exposures[key].flux)
        if changed.size:
            assert np.all((changed < 400) | (changed >= data.flux.size - 400))  # only at the arm ends
        new_bits = (data.mask & 4) != 0
        flagged += int(new_bits.sum())
        unflagged += int(((data.flux != plain_exposures[key].flux) & ~new_bits).sum())
    assert flagged > 0 and unflagged > flagged / 2


def test_sky_residuals_sit_at_sky_lines_without_a_mask(build):
    plain = build("plain")
    harsh = build("sky", harsh={"sky_residuals": 1.0})
    plain_exposures = _arms(plain, "exposure")
    for key, data in _arms(harsh, "exposure").items():
        changed = np.abs(data.flux - plain_exposures[key].flux) > 1e-3
        assert changed.any() or key[1] == "blue"
        near = np.min(np.abs(data.wavelength[:, None] - SKY_LINES[None, :, 0]), axis=1) < 2.5
        assert not (changed & ~near).any()
        assert np.all(data.mask == plain_exposures[key].mask)


def test_response_with_higher_order_structure(build):
    plain = build("noise free", noise_scale=0.0)
    harsh = build("response", noise_scale=0.0, harsh={"response_order": 12})
    plain_exposures = _arms(plain, "exposure")
    residuals = []
    for key, data in _arms(harsh, "exposure").items():
        good = (data.ivar > 0) & (plain_exposures[key].flux > 0) & (data.mask == 0) & (plain_exposures[key].mask == 0)
        ratio = data.flux[good] / plain_exposures[key].flux[good]
        x = np.linspace(-1, 1, data.flux.size)[good]
        fit = np.polynomial.legendre.legfit(x, ratio, 4)
        left = ratio - np.polynomial.legendre.legval(x, fit)
        residuals.append(1.4826 * np.median(np.abs(left - np.median(left))))  # robust: unflagged cosmic rays differ too
    # Structure a 4th-order continuum cannot follow: ~0.3 x 0.015 x sqrt(8) rms.
    assert 0.004 < np.median(residuals) < 0.03


def test_andmask_blocks_of_zero_flux_with_ivar_kept(build):
    harsh = build("andmask", harsh={"andmask_zero_flux": 1.0}, stars=8)
    blocks = unflagged = and_flagged = 0
    for path in sorted((harsh / "fits").rglob("*.fits.gz")):
        with fits.open(path) as hdul:
            for name in ("COADD_B", "COADD_R"):
                if "ANDMASK" not in hdul[name].columns.names:  # the DR9 v1 layout has none
                    continue
                table = hdul[name].data
                zero = (table["FLUX"] == 0) & (table["IVAR"] > 0)
                assert 5 <= zero.sum() <= 9
                blocks += 1
                unflagged += int(not (table["ORMASK"][zero] != 0).any())
                and_flagged += int((table["ANDMASK"][zero] != 0).any())
    assert blocks > 5 and unflagged > 0 and and_flagged > 0
    assert and_flagged <= blocks - unflagged  # ANDMASK only where ORMASK is set


def test_harsh_preset_and_manifest(build):
    harsh = build("all harsh", harsh=HarshOptions.harsh().__dict__)
    manifest = (harsh / "manifest.json").read_text()
    assert '"harsh"' in manifest and '"response_order": 12' in manifest
    assert HarshOptions.harsh(edge_junk=0).edge_junk == 0 and HarshOptions.harsh().enabled and not HarshOptions().enabled


def test_command_options(tmp_path, model, isochrones):
    import json

    from django.core.management import CommandError, call_command

    call_command("make_mock_survey", str(tmp_path / "a"), "--stars", "2", "--harsh", "--edge-junk", "0", "--no-ideal")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["harsh"]["response_order"] == 12 and "edge_junk" not in manifest["harsh"]
    assert not (tmp_path / "a" / "ideal").exists() and not (tmp_path / "a" / "truth_crb.csv").exists()
    call_command("make_mock_survey", str(tmp_path / "b"), "--stars", "2", "--coadd-mask-dilate", "3")
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["harsh"] == {"coadd_mask_dilate": 3}
    with pytest.raises(CommandError, match="negative"):
        call_command("make_mock_survey", str(tmp_path / "c"), "--stars", "2", "--sky-residuals", "-1")
