import copy

import numpy as np
import pytest
from django.conf import settings

from core.flags import SPECTRUM_FLAGS
from spectra.io import Arm, RawSpectrum, read_spectrum_file
from spectra.processing.batch import pack_arms
from spectra.processing.continuum import ContinuumConfig, fit_continuum
from spectra.processing.grids import GRIDS, PIXELS_PER_ARM
from spectra.processing.kernels import C_KMS
from spectra.processing.pipeline import PreprocessConfig, preprocess
from spectra.processing.resample import resample_to_grid
from spectra.processing.rv import TemplateBank, air_to_vacuum, measure_rv, vacuum_to_air
from spectra.processing.snr import arm_snr

from .shared_data import JUNK_FILES, real_file, real_files

CLEAN = "med-58408-TD230151N343645T01_sp01-015.fits"


def linear_arm(start=4900.0, stop=5400.0, size=4136, slope=2.0, ivar=4.0):
    wavelength = np.linspace(start, stop, size)
    return Arm(
        wavelength=wavelength,
        flux=(1000.0 + slope * (wavelength - 5000.0)).astype(np.float32),
        ivar=np.full(size, ivar, dtype=np.float32),
        mask=np.zeros(size, dtype=np.int32),
    )


def test_resampling_is_exact_for_a_linear_spectrum_and_shifts_by_the_rv():
    arm = linear_arm()
    for rv in (0.0, 42.0):
        flux, ivar = resample_to_grid(pack_arms([arm]), GRIDS["blue"], np.array([rv]))
        observed = GRIDS["blue"] * (1 + rv / C_KMS)
        np.testing.assert_allclose(flux[0], 1000.0 + 2.0 * (observed - 5000.0), rtol=1e-5)
        # Interpolating between two pixels of ivar 4 lowers the variance: ivar in [4, 8].
        assert np.all((ivar[0] >= 4.0 - 1e-3) & (ivar[0] <= 8.0 + 1e-3))


def test_masked_pixels_and_missing_coverage_are_carried_not_filled():
    arm = linear_arm(start=4960.0)  # starts inside the grid window
    arm.mask[2000] = 1
    bad_wave = arm.wavelength[2000]
    flux, ivar = resample_to_grid(pack_arms([arm]), GRIDS["blue"], np.zeros(1))
    grid = GRIDS["blue"]
    assert np.all(ivar[0, grid < 4960.0] == 0) and np.all(flux[0, grid < 4960.0] == 0)
    step = arm.wavelength[1] - arm.wavelength[0]
    near = np.abs(grid - bad_wave) < step  # grid pixels with the bad pixel as a neighbour
    assert near.any() and np.all(ivar[0, near] == 0)
    assert np.all(ivar[0, (grid > 4961) & ~near] > 0)


def test_coadd_ormask_keeps_positive_pixels_only_when_asked_and_never_in_exposures():
    rng = np.random.default_rng(3)

    def arm_with_masks():
        arm = linear_arm(start=4960.0, ivar=0.01)
        arm.flux += rng.normal(0.0, 10.0, arm.flux.size).astype(np.float32)  # S/N ~100, the noise its ivar says
        arm.mask[1000:1010] = 1  # masked, flux still good
        arm.mask[2000:2010] = 1
        arm.flux[2000:2010] = 0.0  # masked zero-flux block (seen in real coadds), ivar kept
        return arm

    packed = pack_arms([arm_with_masks(), arm_with_masks()], np.array([True, False]))
    assert packed.usable[0, 1000:1010].all() and not packed.usable[0, 2000:2010].any()
    assert not packed.usable[1, 1000:1010].any() and not packed.usable[1, 2000:2010].any()
    assert not pack_arms([arm_with_masks()]).usable[0, 1000:1010].any()

    def spectrum(kind):
        red = linear_arm(start=6300.0, stop=6850.0, ivar=0.01)
        red.flux += rng.normal(0.0, 10.0, red.flux.size).astype(np.float32)
        return RawSpectrum(kind, None if kind == "coadd" else 1, None, arm_with_masks(), red)

    spectra = [spectrum("coadd"), spectrum("exposure")]
    rv = np.zeros((2, 2))
    # Symmetric rejection: on a featureless noisy line the paper's 1-sigma-below rejection runs away.
    continuum = ContinuumConfig(reject_below=3.0, reject_above=3.0)
    default = preprocess(spectra, rv_supplied=rv, config=PreprocessConfig(continuum=continuum))
    assert default.flags.tolist() == [0, 0]
    masked_default = (default.ivar[:, 0] == 0).sum(axis=1)
    kept = preprocess(spectra, rv_supplied=rv, config=PreprocessConfig(continuum=continuum, coadd_ormask_excludes=False))
    masked_kept = (kept.ivar[:, 0] == 0).sum(axis=1)
    assert masked_kept[0] < masked_default[0]  # the coadd's good masked pixels are back
    assert masked_kept[1] == masked_default[1]  # an exposure's PIXMASK always masks
    at_block = np.abs(GRIDS["blue"] - spectra[0].blue.wavelength[2005]) < 0.3
    assert np.all(kept.ivar[0, 0, at_block] == 0)  # the zero-flux block stays masked


def test_a_coadds_masked_pixels_are_filled_from_the_exposures_of_its_own_file():
    from spectra.processing.coadd import coadd_masked_fill

    rng = np.random.default_rng(5)
    m = 400
    truth = 1.0 - 0.3 * np.exp(-0.5 * ((np.arange(m) - 200) / 3.0) ** 2)  # a line
    # File 0: a coadd and three exposures; file 1: a coadd alone; file 2: two exposures.
    kinds = np.array([True, False, False, False, True, False, False])
    files = np.array([0, 0, 0, 0, 1, 2, 2])
    n = kinds.size
    ivar = np.full((n, 2, m), 1e4, dtype=np.float32)  # S/N 100 per pixel
    flux = (truth + rng.normal(0.0, 0.01, (n, 2, m))).astype(np.float32)
    flux[0] *= 0.98  # the coadd's own continuum sits 2% lower (another S/N)
    flux[0, 0, 190:210] = 1.0  # masked (ORMASK) in the coadd: a line under it
    ivar[0, 0, 190:210] = 0.0
    flux[4, 0, 50:60], ivar[4, 0, 50:60] = 1.0, 0.0
    flux[3, 0, 195] = 3.0  # a cosmic ray in one exposure, no mask bit
    ivar[2, 0, 192:194] = 0.0  # masked in one exposure: the others fill it
    ivar[1, 0, 205] = 0.0  # two of the three have it, and one of those a cosmic ray
    flux[2, 0, 205] = 2.5
    flux[1:4, 0, 100] = 0.0  # the exposures' mean exactly 0 where the coadd has data: no ratio, no error
    ivar[0, 1, :] = 0.0  # a whole arm masked: nothing to match the level with, left alone
    before_flux, before_ivar = flux.copy(), ivar.copy()

    filled = coadd_masked_fill(flux, ivar, kinds, files, np.ones(n, dtype=bool))

    assert filled.tolist() == [True, False, False, False, False, False, False]
    # Everything but the coadd's masked blue pixels is as it was, to the bit.
    hole = np.zeros((n, 2, m), dtype=bool)
    hole[0, 0, 190:210] = True
    assert np.array_equal(flux[~hole], before_flux[~hole]) and np.array_equal(ivar[~hole], before_ivar[~hole])
    # The hole holds the exposures' mean at the coadd's level, the cosmic ray left out.
    own = (before_ivar[0, 0] > 0) & (before_flux[1:4, 0].sum(axis=0) != 0)
    level = np.median(before_flux[0, 0, own] / before_flux[1:4, 0, own].mean(axis=0))
    assert level == pytest.approx(0.98, abs=0.003)
    np.testing.assert_allclose(flux[0, 0, 190:210], 0.98 * truth[190:210], atol=0.02)
    assert flux[0, 0, 195] == pytest.approx(level * before_flux[1:3, 0, 195].mean(), rel=1e-5)
    assert ivar[0, 0, 195] == pytest.approx(2e4 / level**2, rel=1e-5)  # two exposures kept
    assert ivar[0, 0, 192] == pytest.approx(2e4 / level**2, rel=1e-5)  # two exposures have it
    assert ivar[0, 0, 200] == pytest.approx(3e4 / level**2, rel=1e-5)
    assert flux[0, 0, 205] == pytest.approx(level * before_flux[3, 0, 205], rel=1e-5)
    assert ivar[0, 0, 205] == pytest.approx(1e4 / level**2, rel=1e-5)
    # Two exposures that disagree: the higher one (a cosmic ray) is left out.
    two = np.stack([before_flux[0], before_flux[5], before_flux[6]])
    two_ivar = np.stack([before_ivar[0], before_ivar[5], before_ivar[6]])
    two[2, 0, 200] = 5.0
    coadd_masked_fill(two, two_ivar, np.array([True, False, False]), np.zeros(3, dtype=np.int64), np.ones(3, dtype=bool))
    assert two[0, 0, 200] == pytest.approx(before_flux[5, 0, 200] * 0.98, abs=0.01)
    assert two_ivar[0, 0, 200] == pytest.approx(1e4 / 0.98**2, rel=0.01)
    # Spectra not usable are neither filled nor used.
    again_flux, again_ivar = before_flux.copy(), before_ivar.copy()
    usable = np.ones(n, dtype=bool)
    usable[1:4] = False
    assert not coadd_masked_fill(again_flux, again_ivar, kinds, files, usable).any()
    assert np.array_equal(again_flux, before_flux)
    with pytest.raises(ValueError, match="do not match"):
        coadd_masked_fill(flux, ivar[:, :, :10], kinds, files, usable)


def test_a_coadds_unmasked_junk_is_replaced_from_its_exposures_only_when_asked():
    from spectra.processing.coadd import coadd_masked_fill

    rng = np.random.default_rng(6)
    m = 400
    truth = 1.0 - 0.3 * np.exp(-0.5 * ((np.arange(m) - 200) / 3.0) ** 2)
    kinds = np.array([True, False, False, False])  # a coadd of three exposures
    files = np.zeros(4, dtype=np.int64)
    usable = np.ones(4, dtype=bool)
    ivar = np.full((4, 2, m), 1e4, dtype=np.float32)
    ivar[0] = 3e4
    flux = (truth + rng.normal(0.0, 0.01, (4, 2, m))).astype(np.float32)
    flux[0] = (0.97 * truth + rng.normal(0.0, 0.006, (2, m))).astype(np.float32)
    flux[3, 0, 120] += 3.0  # an unflagged cosmic ray in one exposure ...
    flux[0, 0, 120] += 1.0  # ... leaking into the coadd at a third of its height
    flux[0, 1, 300:310] = 0.0  # FLUX 0 with IVAR kept, no mask bit
    before_flux, before_ivar = flux.copy(), ivar.copy()

    assert not coadd_masked_fill(flux, ivar, kinds, files, usable).any()  # nothing masked
    assert np.array_equal(flux, before_flux) and np.array_equal(ivar, before_ivar)

    assert coadd_masked_fill(flux, ivar, kinds, files, usable, replace_sigma=5.0).tolist() == [True, False, False, False]
    changed = (flux != before_flux) | (ivar != before_ivar)
    expected = np.zeros_like(changed)
    expected[0, 0, 120] = True
    expected[0, 1, 300:310] = True
    assert np.array_equal(changed, expected)  # the junk, and only the junk
    level = 0.97
    assert flux[0, 0, 120] == pytest.approx(level * before_flux[1:3, 0, 120].mean(), abs=0.02)  # the cosmic ray left out
    assert ivar[0, 0, 120] == pytest.approx(2e4 / level**2, rel=0.02)
    np.testing.assert_allclose(flux[0, 1, 300:310], level * truth[300:310], atol=0.04)
    # Where fewer than two exposures' values are left (one exposure has the pixel, or two
    # that disagree, one of them junk, high or low), nothing judges the coadd's pixel: it stays.
    flux, ivar = before_flux.copy(), before_ivar.copy()
    ivar[3, :, 50:80] = 0.0  # two exposures have these pixels ...
    flux[2, 0, 60] = 0.0  # ... and they disagree: FLUX 0 with IVAR kept in one
    flux[2, 0, 65] += 3.0  # a cosmic ray in one
    flux[0, 0, 65] += 1.5
    ivar[2, 0, 70] = 0.0  # one exposure has this one
    flux[1, 0, 70] = 0.5
    kept_flux = flux.copy()
    coadd_masked_fill(flux, ivar, kinds, files, usable, replace_sigma=5.0)
    assert [flux[0, 0, p] == kept_flux[0, 0, p] for p in (60, 65, 70)] == [True, True, True]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="replace_sigma"):
            coadd_masked_fill(flux, ivar, kinds, files, usable, replace_sigma=bad)


def test_preprocess_fills_a_real_coadd_from_its_exposures_only_when_told_their_file():
    spectra = read_spectrum_file(real_file(CLEAN)).spectra
    rv = np.full((len(spectra), 2), -20.0)
    plain = preprocess(spectra, rv_supplied=rv)
    filled = preprocess(spectra, rv_supplied=rv, files=np.zeros(len(spectra), dtype=np.int64))
    coadd = next(i for i, s in enumerate(spectra) if s.kind == "coadd")
    mask = SPECTRUM_FLAGS["COADD_MASK_FILLED"].mask
    assert plain.flags[coadd] & mask == 0 and filled.flags[coadd] & mask
    assert ((filled.flags & mask) != 0).sum() == 1  # exposures are never filled
    hole = (plain.ivar[coadd] == 0) & (filled.ivar[coadd] > 0)
    assert hole.sum() > 20 and (filled.ivar[coadd] == 0).sum() < (plain.ivar[coadd] == 0).sum()
    # The filled pixels follow the star: within 5 sigma of the mean of its exposures at
    # the coadd's level, the unmasked pixels untouched.
    kept = plain.ivar[coadd] > 0
    assert np.array_equal(filled.flux[coadd][kept], plain.flux[coadd][kept])
    exposures = [i for i, s in enumerate(spectra) if s.kind != "coadd"]
    mean = plain.flux[exposures].mean(axis=0)
    level = np.median(plain.flux[coadd][kept] / mean[kept])
    off = np.abs(filled.flux[coadd][hole] - level * mean[hole]) * np.sqrt(filled.ivar[coadd][hole])
    assert np.median(off) < 2.0
    flags = preprocess(spectra, rv_supplied=rv, files=np.zeros(len(spectra), dtype=np.int64),
                       config=PreprocessConfig(coadd_fill_from_exposures=False))
    assert flags.flux.tobytes() == plain.flux.tobytes() and flags.flags.tolist() == plain.flags.tolist()
    # An exposure whose RV is not to be trusted takes no part (a low S/N would only weigh less).
    from spectra.processing.coadd import coadd_masked_fill_reference

    doubtful = rv.copy()
    doubtful[exposures[0]] = (-20.0, 40.0)  # arms 60 km/s apart: RV_UNRELIABLE, still processed
    result = preprocess(spectra, rv_supplied=doubtful, files=np.zeros(len(spectra), dtype=np.int64))
    assert result.processed[exposures[0]] and result.flags[exposures[0]] & SPECTRUM_FLAGS["RV_UNRELIABLE"].mask
    unfilled = preprocess(spectra, rv_supplied=doubtful)
    usable = unfilled.processed.copy()
    usable[exposures[0]] = False
    kinds = np.array([s.kind == "coadd" for s in spectra])
    coadd_masked_fill_reference(unfilled.flux, unfilled.ivar, kinds, np.zeros(len(spectra), dtype=np.int64), usable)
    np.testing.assert_allclose(result.flux[coadd], unfilled.flux[coadd], rtol=1e-5)


def test_rows_of_a_batch_do_not_influence_each_other():
    a, b = linear_arm(slope=1.0), linear_arm(start=4890.0, stop=5410.0, size=3900, slope=-1.0)
    together = resample_to_grid(pack_arms([a, b]), GRIDS["blue"], np.array([10.0, -30.0]))
    alone = resample_to_grid(pack_arms([b]), GRIDS["blue"], np.array([-30.0]))
    np.testing.assert_array_equal(together[0][1], alone[0][0])
    np.testing.assert_array_equal(together[1][1], alone[1][0])


def test_continuum_recovers_a_polynomial_under_absorption_lines():
    x = np.linspace(-1, 1, PIXELS_PER_ARM)
    continuum = 1000.0 * (1 + 0.2 * x - 0.1 * x**2 + 0.05 * x**3 - 0.02 * x**4)
    rng = np.random.default_rng(1)
    lines = np.ones(PIXELS_PER_ARM)
    for centre in rng.uniform(-1, 1, 40):
        lines -= 0.5 * np.exp(-0.5 * ((x - centre) / 0.002) ** 2)
    flux = (continuum * lines + rng.normal(0, 5.0, PIXELS_PER_ARM)).astype(np.float32)[None, :]
    ivar = np.full_like(flux, 1 / 25.0)
    ivar[0, :50] = 0  # masked pixels never enter the fit
    flux[0, :50] = 1e6
    fitted, normalised, normalised_ivar, kept = fit_continuum(flux, ivar, ContinuumConfig(max_iterations=3))
    assert np.max(np.abs(fitted[0, 50:] / continuum[50:] - 1)) < 0.01
    assert 0.05 < kept[0] < 0.9
    assert np.all(normalised[0, :50] == 1.0) and np.all(normalised_ivar[0, :50] == 0)
    np.testing.assert_allclose(normalised[0, 50:], flux[0, 50:] / fitted[0, 50:], rtol=1e-6)
    np.testing.assert_allclose(normalised_ivar[0, 50:], ivar[0, 50:] * fitted[0, 50:] ** 2, rtol=1e-6)


def test_air_vacuum_conversion_round_trips():
    wavelength = np.array([4950.0, 5350.0, 6562.8])
    np.testing.assert_allclose(vacuum_to_air(air_to_vacuum(wavelength)), wavelength, atol=2e-4)
    assert 1.3 < air_to_vacuum(np.array([5000.0]))[0] - 5000.0 < 1.5


def _real_spectra():
    spectra = []
    for path in real_files():
        spectra += read_spectrum_file(path).spectra
    return spectra


def test_snr_matches_the_header_and_low_snr_is_flagged_not_dropped():
    spectra = _real_spectra()
    result = preprocess(spectra, rv_supplied=np.zeros((len(spectra), 2)))
    assert result.flux.shape == (len(spectra), 2, PIXELS_PER_ARM) and result.flux.dtype == np.float32
    packed = {name: pack_arms([s.arm(name) for s in spectra]) for name in ("blue", "red")}
    computed = {name: arm_snr(arms) for name, arms in packed.items()}
    for i, spectrum in enumerate(spectra):
        for a, arm in enumerate((spectrum.blue, spectrum.red)):
            assert result.snr[i, a] == pytest.approx(arm.header_snr)  # reported as LAMOST reports it
            if spectrum.kind == "coadd" and arm.header_snr > 20:  # and it is the median of flux*sqrt(ivar)
                assert computed[("blue", "red")[a]][i] == pytest.approx(arm.header_snr, rel=0.01)
        names = SPECTRUM_FLAGS.names(int(result.flags[i]))
        assert ("LOW_SNR_BLUE" in names) == (not result.snr[i, 0] > 10)
    assert result.processed.all()


def test_junk_files_are_flagged_bad_not_crashed():
    spectra = []
    for name in JUNK_FILES:
        spectra += read_spectrum_file(real_file(name)).spectra
    result = preprocess(spectra, rv_supplied=np.zeros((len(spectra), 2)))
    reject = SPECTRUM_FLAGS.reject_mask()
    assert np.all(result.flags & reject)
    assert any("BAD_FLUX" in SPECTRUM_FLAGS.names(int(f)) for f in result.flags)


def test_preprocessing_is_deterministic_and_normalises_near_one():
    spectra = read_spectrum_file(real_file(CLEAN)).spectra
    rv = np.full((len(spectra), 2), -50.0)
    first = preprocess(spectra, rv_supplied=rv)
    second = preprocess(copy.deepcopy(spectra), rv_supplied=rv)
    assert first.flux.tobytes() == second.flux.tobytes() and first.ivar.tobytes() == second.ivar.tobytes()
    median = np.median(first.flux[0], axis=1)
    assert 0.85 < median[0] < 1.0 and 0.93 < median[1] < 1.02


def test_missing_arm_and_missing_rv_leave_the_spectrum_unprocessed_and_flagged():
    spectrum = read_spectrum_file(real_file(CLEAN)).spectra[1]
    no_red = RawSpectrum("exposure", 1, 1.0, spectrum.blue, None, {"blue": [], "red": ["missing"]})
    result = preprocess([no_red, spectrum], rv_supplied=np.array([[0.0, np.nan], [np.nan, np.nan]]))
    assert not result.processed[0] and "MISSING_RED_ARM" in SPECTRUM_FLAGS.names(int(result.flags[0]))
    assert not result.processed[1] and "RV_UNRELIABLE" in SPECTRUM_FLAGS.names(int(result.flags[1]))
    assert np.all(result.flux[~result.processed] == 1.0) and np.all(result.ivar[~result.processed] == 0)


@pytest.fixture(scope="module")
def templates():
    from spectra.processing.spectrum_model import SpectrumModelError
    from spectra.spectrum_model_files import rv_templates_load

    try:
        return rv_templates_load()
    except SpectrumModelError as error:
        pytest.skip(f"spectrum model not available ({error}); scripts/test.sh fetches it")


def test_cross_correlation_recovers_injected_velocities(templates):
    spectrum = read_spectrum_file(real_file(CLEAN)).spectra[0]
    base = {arm: measure_rv(pack_arms([spectrum.arm(arm)]), templates, arm) for arm in ("blue", "red")}
    for arm in ("blue", "red"):
        assert base[arm].peak[0] > 0.7 and base[arm].rv_err[0] < 1.0
    for shift in (-150.0, 27.5):
        moved = copy.deepcopy(spectrum)
        for arm in (moved.blue, moved.red):
            arm.wavelength = arm.wavelength * (1 + shift / C_KMS)
        for arm in ("blue", "red"):
            measured = measure_rv(pack_arms([moved.arm(arm)]), templates, arm)
            # Re-gridding the shifted pixels resamples their noise: compare within 3 sigma.
            tolerance = 3 * np.hypot(measured.rv_err[0], base[arm].rv_err[0])
            assert measured.rv[0] - base[arm].rv[0] == pytest.approx(shift, abs=tolerance)


def test_a_masked_block_on_one_wing_of_a_line_does_not_move_the_rv(templates):
    # A spectrum made from one of the templates (no template mismatch), shifted by a known
    # RV, on a real exposure's red pixels: masking either half of H-alpha's core must not
    # pull the peak towards the hole (the template's norm is taken over the pixels kept).
    exposure = read_spectrum_file(real_file(CLEAN)).spectra[1].red
    # A metal-poor giant's template, whose red arm H-alpha dominates.
    giant = np.argmin(np.abs(templates.labels - [5000.0, 3.0, -1.0]) @ [1 / 500, 1, 1])
    rest, template = TemplateBank.extended_grid("red"), templates.flux["red"][giant]
    velocity = -49.5
    flux = np.interp(exposure.wavelength / (1 + velocity / C_KMS), rest, template)
    flux = flux * 1.0e4 * (1 + 0.2 * (exposure.wavelength - 6560.0) / 300.0)
    made = Arm(wavelength=exposure.wavelength, flux=flux, ivar=1.0 / flux, mask=np.zeros(flux.size, dtype=np.int64))
    base = measure_rv(pack_arms([made]), templates, "red")
    assert base.rv[0] == pytest.approx(velocity, abs=0.3)
    core = 6564.61 * (1 + velocity / C_KMS)  # H-alpha, vacuum
    for low, high in ((core + 0.2, core + 2.2), (core - 2.2, core - 0.2), (core, core + 0.5)):
        masked = copy.deepcopy(made)
        masked.mask = ((masked.wavelength > low) & (masked.wavelength < high)).astype(np.int64)
        moved = measure_rv(pack_arms([masked]), templates, "red")
        assert moved.rv[0] == pytest.approx(velocity, abs=0.5), (low - core, high - core)


def test_covered_template_power_equals_the_sum_over_the_usable_pixels():
    from spectra.processing.kernels import covered_power_rows

    rng = np.random.default_rng(3)
    good = rng.random((4, 300)) > 0.3
    good[0] = True
    good[1] = False
    good[2, :150] = False
    power = rng.random((3, 400))
    cumulative = np.concatenate([np.zeros((3, 1)), np.cumsum(power, axis=1)], axis=1)
    offsets = np.arange(100, -1, -1, dtype=np.int64)
    first = rng.integers(0, offsets.size - 11, size=(4, 3))
    out = np.empty((4, 3, 11))
    covered_power_rows(good, cumulative, offsets, first, out)
    for r in range(4):
        for t in range(3):
            for k in range(11):
                start = offsets[first[r, t] + k]
                assert out[r, t, k] == pytest.approx((good[r] * power[t, start : start + 300]).sum(), abs=1e-9)


def test_a_real_coadd_with_part_of_h_alpha_masked_agrees_with_its_exposures(templates):
    # This night's coadd has ORMASK over four pixels of H-alpha's core and a block on its
    # blue wing; its raw pixels line up with its seven exposures' to 0.4 km/s, so its red
    # RV must agree with theirs (it was 2.8 km/s off with the template normalised over the
    # whole window).
    spectra = read_spectrum_file(real_file(CLEAN)).spectra
    assert spectra[0].kind == "coadd" and np.count_nonzero(spectra[0].red.mask) > 0
    red = measure_rv(pack_arms([s.red for s in spectra]), templates, "red")
    assert abs(red.rv[0] - np.median(red.rv[1:])) < 1.0
    assert np.ptp(red.rv[1:]) < 1.5


def test_exposures_of_one_night_agree_and_junk_is_unreliable(templates):
    good = read_spectrum_file(real_file(CLEAN)).spectra
    junk = read_spectrum_file(real_file(JUNK_FILES[0])).spectra
    result = preprocess(good + junk, templates=templates)
    assert result.rv_measured.all()
    assert np.ptp(result.rv[: len(good), 0]) < 2.0 and np.all(result.rv_err[: len(good)] < 1.0)
    flagged = ["RV_UNRELIABLE" in SPECTRUM_FLAGS.names(int(f)) for f in result.flags[len(good) :]]
    assert sum(flagged) >= len(junk) - 1
    assert settings.SPECTRUM_MODEL_PATH.exists()


@pytest.mark.parametrize("replace_sigma", [None, 5.0])
def test_the_compiled_coadd_fill_matches_the_numpy_reference(replace_sigma):
    from spectra.processing.coadd import coadd_masked_fill, coadd_masked_fill_reference

    rng = np.random.default_rng(11)
    n, m = 60, 500
    files = np.sort(rng.integers(0, 12, n))  # 12 files of 2 to 10 spectra, one coadd or none
    is_coadd = np.zeros(n, dtype=bool)
    for f in np.unique(files):
        if rng.random() < 0.8:
            is_coadd[np.flatnonzero(files == f)[0]] = True
    flux = (1.0 + rng.normal(0.0, 0.02, (n, 2, m))).astype(np.float32)
    ivar = rng.choice(np.array([0.0, 900.0, 2500.0], dtype=np.float32), (n, 2, m), p=[0.15, 0.45, 0.4])
    flux[rng.random((n, 2, m)) < 0.01] += 1.5  # cosmic rays, unmasked
    flux[is_coadd] *= 0.97
    ivar[3, 1, :] = np.nan  # non-finite ivar counts as masked
    ivar[np.flatnonzero(is_coadd)[:2], 0, 7] = np.nan  # (in a coadd too)
    ivar[np.flatnonzero(is_coadd)[2], 1, :] = 2500.0  # a coadd arm without a masked pixel
    usable = rng.random(n) < 0.9
    a_flux, a_ivar, b_flux, b_ivar = flux.copy(), ivar.copy(), flux.copy(), ivar.copy()
    compiled = coadd_masked_fill(a_flux, a_ivar, is_coadd, files, usable, replace_sigma=replace_sigma)
    reference = coadd_masked_fill_reference(b_flux, b_ivar, is_coadd, files, usable, replace_sigma=replace_sigma)
    assert compiled.any() and compiled.tolist() == reference.tolist()
    assert np.array_equal(np.nan_to_num(a_ivar) > 0, np.nan_to_num(b_ivar) > 0)
    np.testing.assert_allclose(a_flux, b_flux, rtol=2e-6)
    np.testing.assert_allclose(np.nan_to_num(a_ivar), np.nan_to_num(b_ivar), rtol=2e-6)
    assert (a_ivar[is_coadd & usable] > 0).mean() > (ivar[is_coadd & usable] > 0).mean()
    had = np.nan_to_num(ivar) > 0  # pixels a spectrum has: replaced only when asked
    assert (a_flux[had] != flux[had]).any() == bool(replace_sigma)
