"""The context noise model: sigma from S/N, kind and masked fraction."""

import numpy as np
import pytest

from inference.network.uncertainty import (
    ContextNoiseModel,
    SnrNoiseModel,
    calibration_cells,
    cross_fitted_sigma,
    fit_noise_model,
    masked_fraction,
    noise_model_from_dict,
    noise_sigma,
)


def _synthetic(n: int, seed: int):
    """Residuals whose spread depends on S/N, kind and masked fraction: exposures 0.75x
    the S/N law, coadds 1.3x, both times exp(2 x masked fraction); coadds carry 5-35%
    masked pixels, exposures 0-6%."""
    rng = np.random.default_rng(seed)
    snr = np.exp(rng.uniform(np.log(10.0), np.log(300.0), n))
    coadd = rng.random(n) < 0.4
    masked = np.where(coadd, rng.uniform(0.05, 0.35, n), rng.uniform(0.0, 0.06, n))
    base = np.sqrt(np.array([30.0, 0.05]) ** 2 + (np.array([2000.0, 3.0]) / snr[:, None]) ** 2)
    true_sigma = base * (np.where(coadd, 1.3, 0.75) * np.exp(2.0 * masked))[:, None]
    residuals = rng.normal(size=(n, 2)) * true_sigma
    return residuals, snr, masked, coadd, true_sigma


def _cell_spreads(model, residuals, snr, masked, coadd):
    sigma = noise_sigma(model, snr, masked, coadd)
    cells = calibration_cells(residuals, np.zeros_like(residuals), sigma, snr, masked, coadd,
                              ["teff", "logg"], min_count=150)
    return cells, [cell["labels"][name]["z_std"] for cell in cells for name in ("teff", "logg")]


def test_context_model_is_calibrated_in_every_cell_where_snr_only_is_not():
    residuals, snr, masked, coadd, _ = _synthetic(20000, seed=1)
    test = _synthetic(20000, seed=2)
    context = ContextNoiseModel.fit(residuals, snr, masked, coadd)
    snr_only = SnrNoiseModel.fit(residuals, snr)
    cells, spreads = _cell_spreads(context, *test[:4])
    assert len(cells) >= 12  # S/N bins x kinds x masked bins with enough spectra
    assert all(0.9 <= s <= 1.1 for s in spreads), spreads
    within = [cell["labels"][name]["within_1sigma"] for cell in cells for name in ("teff", "logg")]
    assert all(0.60 <= w <= 0.76 for w in within), within
    _, naive = _cell_spreads(snr_only, *test[:4])
    assert min(naive) < 0.9 and max(naive) > 1.1, naive
    # The fitted factors: coadds / exposures ~1.3 / 0.75, and exp(2) per unit masked fraction.
    assert context.coefficients[:, 2] == pytest.approx(np.log(1.3 / 0.75), abs=0.12)
    assert context.coefficients[:, 1] == pytest.approx(2.0, abs=0.6)


def test_context_model_does_not_invent_a_kind_effect_it_cannot_see():
    rng = np.random.default_rng(3)
    snr = np.exp(rng.uniform(np.log(10.0), np.log(300.0), 3000))
    residuals = rng.normal(size=(3000, 1)) * np.sqrt(20.0**2 + (1500.0 / snr[:, None]) ** 2)
    model = ContextNoiseModel.fit(residuals, snr, np.zeros(3000), np.zeros(3000, dtype=bool))
    assert model.coefficients[0, 1:] == pytest.approx([0.0, 0.0], abs=1e-6)  # no coadds, no masking: no factor
    assert model.sigma(snr) == pytest.approx(SnrNoiseModel.fit(residuals, snr).sigma(snr), rel=0.05)


def test_noise_models_round_trip_and_old_manifests_keep_the_snr_model():
    residuals, snr, masked, coadd, _ = _synthetic(3000, seed=4)
    context = ContextNoiseModel.fit(residuals, snr, masked, coadd)
    again = noise_model_from_dict(context.as_dict())
    assert isinstance(again, ContextNoiseModel)
    np.testing.assert_allclose(again.sigma(snr, masked, coadd), context.sigma(snr, masked, coadd))
    old = {"method": "snr-noise-model", "floor": [30.0, 0.05], "slope": [2000.0, 3.0]}
    loaded = noise_model_from_dict(old)
    assert isinstance(loaded, SnrNoiseModel)
    # An S/N-only model ignores the context: the same sigma for a masked coadd.
    np.testing.assert_allclose(noise_sigma(loaded, np.array([50.0]), np.array([0.3]), np.array([True])),
                               [[np.hypot(30.0, 40.0), np.hypot(0.05, 0.06)]])
    with pytest.raises(ValueError, match="unknown noise model"):
        noise_model_from_dict({"method": "dropout"})


def test_masked_fraction_counts_zero_and_nonfinite_ivar():
    ivar = np.ones((2, 2, 10), dtype=np.float32)
    ivar[0, 0, :5] = 0.0
    ivar[1, 1, 0] = np.nan
    np.testing.assert_allclose(masked_fraction(ivar), [0.25, 0.05])
    with pytest.raises(ValueError, match="arms, pixels"):
        masked_fraction(np.ones(10))


def test_artifacts_keep_their_noise_model_old_ones_the_snr_model():
    """An artifact calibrated before the context model (``snr-noise-model``) loads with the
    S/N-only uncertainties; a new one carries the context model through the artifact."""
    from inference.network.config import NetworkConfig, TrainingConfig
    from inference.network.estimator import SPCANet

    rng = np.random.default_rng(0)
    flux = (1 + rng.normal(0, 0.02, size=(96, 2, 4000))).astype(np.float32)
    labels = np.column_stack([rng.normal(5000, 400, 96), rng.normal(3, 1, 96), rng.normal(-0.2, 0.2, 96)])
    net = SPCANet(NetworkConfig(n_labels=3, filters=(2, 2), dense_units=(8, 8)),
                  TrainingConfig(max_epochs=1, patience=1, seed=0), ["teff", "logg", "fe_h"])
    net.fit(flux[:32], labels[:32], cv_flux=flux[32:48], cv_labels=labels[32:48])
    snr = np.linspace(10.0, 100.0, 64)
    masked = np.where(np.arange(64) % 2 == 0, 0.25, 0.0)
    coadd = np.arange(64) % 2 == 0
    old = SPCANet.from_artifact(net.calibrate(flux[32:], labels[32:], snr).to_artifact())
    assert isinstance(old.noise_model, SnrNoiseModel)
    _, sigma, _ = old.predict_with_uncertainty(flux[:4], snr[:4], masked[:4], coadd[:4])
    np.testing.assert_allclose(sigma, old.noise_model.sigma(snr[:4]))
    new = SPCANet.from_artifact(net.calibrate(flux[32:], labels[32:], snr, masked, coadd).to_artifact())
    assert isinstance(new.noise_model, ContextNoiseModel)
    _, sigma, _ = new.predict_with_uncertainty(flux[:4], snr[:4], masked[:4], coadd[:4])
    np.testing.assert_allclose(sigma, net.noise_model.sigma(snr[:4], masked[:4], coadd[:4]))


def _with_reference_errors(seed: int, n: int = 20000):
    """Residuals against a reference whose labels carry errors of their own (0.5-1.5x 30 K
    and 0.05 dex per star, as the catalog states them): the network's error (the target)
    and the reference's add in quadrature."""
    residuals, snr, masked, coadd, true_sigma = _synthetic(n, seed)
    rng = np.random.default_rng(seed + 100)
    errors = np.array([30.0, 0.05]) * rng.uniform(0.5, 1.5, (n, 2))
    errors[rng.random(n) < 0.1, 0] = np.nan  # some stars without a stated Teff error
    against_reference = residuals + rng.normal(size=(n, 2)) * np.nan_to_num(errors)
    return against_reference, snr, masked, coadd, errors, residuals, true_sigma


@pytest.mark.parametrize("kind", ["snr", "context"])
def test_the_references_own_errors_are_taken_out_of_the_uncertainty(kind):
    against_reference, snr, masked, coadd, errors, _, true_sigma = _with_reference_errors(seed=4)
    if kind == "snr":
        exposures = ~coadd
        args = (against_reference[exposures], snr[exposures])
        with_errors = SnrNoiseModel.fit(*args, errors[exposures])
        without = SnrNoiseModel.fit(*args)
        truth_sigma = true_sigma[exposures]
        sigma_with, sigma_without = with_errors.sigma(snr[exposures]), without.sigma(snr[exposures])
        high = snr[exposures] > 100
    else:
        with_errors = ContextNoiseModel.fit(against_reference, snr, masked, coadd, reference_errors=errors)
        without = ContextNoiseModel.fit(against_reference, snr, masked, coadd)
        truth_sigma = true_sigma
        sigma_with, sigma_without = noise_sigma(with_errors, snr, masked, coadd), noise_sigma(without, snr, masked, coadd)
        high = snr > 100
    # With the errors the model gives the network's own error (against the truth); without
    # them it also holds the reference's, most where the network is best (high S/N).
    ratio_with = np.median(sigma_with[high] / truth_sigma[high], axis=0)
    ratio_without = np.median(sigma_without[high] / truth_sigma[high], axis=0)
    assert ratio_with == pytest.approx([1.0, 1.0], abs=0.07)
    assert np.all(ratio_without > 1.25), ratio_without


def test_with_reference_errors_the_context_model_is_calibrated_against_truth_and_reference():
    fit = _with_reference_errors(seed=5)
    model = ContextNoiseModel.fit(fit[0], fit[1], fit[2], fit[3], reference_errors=fit[4])
    against_reference, snr, masked, coadd, errors, residuals, _ = _with_reference_errors(seed=6)
    sigma = noise_sigma(model, snr, masked, coadd)
    truth_cells = calibration_cells(residuals, np.zeros_like(residuals), sigma, snr, masked, coadd,
                                    ["teff", "logg"], min_count=150)
    spreads = [cell["labels"][name]["z_std"] for cell in truth_cells for name in ("teff", "logg")]
    assert len(truth_cells) >= 12 and all(0.9 <= s <= 1.1 for s in spreads), spreads
    # Against the reference, the uncertainty and the reference's error in quadrature.
    combined = np.hypot(sigma, np.nan_to_num(errors))
    reference_cells = calibration_cells(against_reference, np.zeros_like(residuals), combined, snr, masked, coadd,
                                        ["teff", "logg"], min_count=150)
    spreads = [cell["labels"][name]["z_std"] for cell in reference_cells for name in ("teff", "logg")]
    assert all(0.9 <= s <= 1.1 for s in spreads), spreads


def test_stated_errors_larger_than_the_scatter_leave_an_uncertainty_above_zero():
    rng = np.random.default_rng(7)
    snr = np.exp(rng.uniform(np.log(10.0), np.log(300.0), 4000))
    residuals = rng.normal(size=(4000, 1)) * 20.0
    overstated = np.full((4000, 1), 60.0)  # three times the residuals' whole scatter
    for model in (SnrNoiseModel.fit(residuals, snr, overstated),
                  ContextNoiseModel.fit(residuals, snr, np.zeros(4000), np.zeros(4000, dtype=bool),
                                        reference_errors=overstated)):
        sigma = noise_sigma(model, snr, np.zeros(4000), np.zeros(4000, dtype=bool))
        assert np.all(np.isfinite(sigma)) and sigma.min() > 0.25 * 20.0
    few = SnrNoiseModel.fit(residuals[:5], snr[:5], overstated[:5])  # too few for a bin: the overall spread
    assert few.floor[0] > 0
    with pytest.raises(ValueError, match="shaped like the residuals"):
        SnrNoiseModel.fit(residuals, snr, overstated[:, 0])


def test_overstated_errors_leave_the_context_factors_and_one_wild_error_leaves_the_bin():
    rng = np.random.default_rng(8)
    n = 6000
    snr = np.exp(rng.uniform(np.log(10.0), np.log(300.0), n))
    coadd = rng.random(n) < 0.4
    masked = np.where(coadd, rng.uniform(0.05, 0.35, n), rng.uniform(0.0, 0.06, n))
    true_sigma = 20.0 * np.exp(1.5 * masked + 0.4 * coadd)
    residuals = (rng.normal(size=n) * true_sigma)[:, None]
    plain = ContextNoiseModel.fit(residuals, snr, masked, coadd)
    overstated = ContextNoiseModel.fit(residuals, snr, masked, coadd, reference_errors=np.full((n, 1), 60.0))
    # Errors three times the scatter: the guard keeps the model finite and its factors
    # those the residuals show, instead of an intercept run off to minus infinity.
    assert overstated.coefficients[0, 1:] == pytest.approx(plain.coefficients[0, 1:], abs=0.25)
    assert overstated.coefficients[0, 0] > -3 and overstated.base.floor[0] < 1e3
    # One placeholder error of 9999 K among 30 K ones moves the S/N model by little.
    errors = np.full((n, 1), 5.0)
    wild = errors.copy()
    wild[np.argmax(snr)] = 9999.0
    sigma, sigma_wild = (SnrNoiseModel.fit(residuals, snr, e).sigma(snr) for e in (errors, wild))
    assert np.max(np.abs(sigma_wild / sigma - 1)) < 0.02


def test_few_stars_bound_how_much_of_the_variance_the_reference_errors_take_out():
    """A bin of n stars knows its variance to sqrt(2 / n): the subtraction leaves the network
    at least that share, so a calibration set of a dozen stars cannot claim a network
    far better than its reference."""
    from inference.network.uncertainty import network_share

    assert network_share(np.array([1, 2, 8, 50, 200, 100000])) == pytest.approx(
        [1.0, 1.0, 0.5, 0.2, 0.1, 0.1])
    rng = np.random.default_rng(9)
    stars = np.repeat(np.arange(12), 6)
    snr = np.full(stars.size, 50.0)
    # Residuals that the stated errors (30 K) fully explain: nothing is left for the network.
    residuals = (rng.normal(size=12)[stars] * 30.0)[:, None]
    errors = np.full((stars.size, 1), 30.0)
    by_star = SnrNoiseModel.fit(residuals, snr, errors, stars).sigma(snr)[0, 0]
    by_spectrum = SnrNoiseModel.fit(residuals, snr, errors).sigma(snr)[0, 0]
    spread = np.std(residuals, ddof=1)
    assert by_star == pytest.approx(np.sqrt(network_share(12)) * spread, rel=1e-6)
    assert by_spectrum == pytest.approx(np.sqrt(network_share(72)) * spread, rel=1e-6)
    context = ContextNoiseModel.fit(residuals, snr, np.zeros(stars.size), np.zeros(stars.size, dtype=bool),
                                    reference_errors=errors, groups=stars)
    assert noise_sigma(context, snr)[0, 0] >= 0.95 * by_star


def test_groups_must_describe_the_residuals():
    residuals = np.random.default_rng(10).normal(size=(40, 1))
    snr = np.full(40, 30.0)
    for bad in (np.arange(39), np.array([1, "a"] * 20, dtype=object), 7):
        with pytest.raises(ValueError, match="groups"):
            SnrNoiseModel.fit(residuals, snr, None, bad)
        with pytest.raises(ValueError, match="groups"):
            ContextNoiseModel.fit(residuals, snr, np.zeros(40), np.zeros(40, dtype=bool), groups=bad)
    as_text = SnrNoiseModel.fit(residuals, snr, np.full((40, 1), 0.5), np.repeat([f"s{i}" for i in range(8)], 5))
    as_ints = SnrNoiseModel.fit(residuals, snr, np.full((40, 1), 0.5), np.repeat(np.arange(8), 5))
    assert np.array_equal(as_text.floor, as_ints.floor) and np.array_equal(as_text.slope, as_ints.slope)


def test_cross_fitted_uncertainties_come_from_models_fitted_without_the_star():
    residuals, snr, masked, coadd, _ = _synthetic(3000, seed=12)
    stars = np.arange(3000) // 3  # three spectra per star
    scored = stars >= 700  # the last 300 stars are scored; the first 700 always calibrate
    odd = stars == 900
    residuals[odd] *= 200.0  # one star far off: it must not widen its own uncertainties
    sigma = cross_fitted_sigma(residuals, snr, masked, coadd, None, stars, scored, folds=4, seed=3)
    assert sigma.shape == (scored.sum(), 2) and np.all(np.isfinite(sigma))
    own = sigma[stars[scored] == 900]
    with_it = noise_sigma(fit_noise_model(residuals, snr, masked, coadd), snr[odd], masked[odd], coadd[odd])
    without = noise_sigma(fit_noise_model(residuals[~odd], snr[~odd], masked[~odd], coadd[~odd]),
                          snr[odd], masked[odd], coadd[odd])
    assert np.mean(own / with_it) < 0.7, own / with_it
    assert own == pytest.approx(without, rel=0.03)
    # A scored star's unscored spectra (its CV spectra under a split by spectrum) leave
    # its fold's fit with it: scoring one spectrum of the odd star gives the same sigma.
    one = scored & ~(odd & (np.arange(3000) % 3 > 0))
    alone = cross_fitted_sigma(residuals, snr, masked, coadd, None, stars, one, folds=4, seed=3)
    assert alone[stars[one] == 900] == pytest.approx(own[:1], rel=1e-12)
    # Unknown residuals calibrate nothing but can still be scored.
    residuals[scored & (stars % 2 == 0)] = np.nan
    assert np.all(np.isfinite(cross_fitted_sigma(residuals, snr, masked, coadd, None, stars, scored, folds=4)))
    for bad in ({"folds": 1}, {"folds": 2.5}, {"scored": scored.astype(int)}, {"scored": scored[1:]}):
        with pytest.raises(ValueError):
            cross_fitted_sigma(residuals, snr, masked, coadd, None, stars, **{"folds": 4, "scored": scored, **bad})



def _cells_of(z: np.ndarray, snr: np.ndarray, groups=None, resamples: int = 1000):
    return calibration_cells(z, np.zeros_like(z), np.ones_like(z), snr, np.zeros(len(snr)),
                             np.zeros(len(snr), dtype=bool), ["teff"], min_count=10, groups=groups,
                             resamples=resamples)


def test_calibration_intervals_tell_a_miscalibration_from_the_noise_of_a_small_cell():
    rng = np.random.default_rng(11)
    # Calibrated z in 120 cells of 12-40 spectra, eight cells (one per S/N bin) at a time:
    # many miss 0.9-1.1 by chance, and the intervals hold 1 in about 95% of them.
    bins = np.array([12.0, 17.0, 25.0, 35.0, 50.0, 80.0, 150.0, 300.0])
    labels = []
    for _ in range(15):
        sizes = rng.choice([12, 20, 40], size=bins.size)
        cells = _cells_of(rng.normal(size=(sizes.sum(), 1)), np.repeat(bins, sizes))
        assert [cell["n"] for cell in cells] == sizes.tolist()
        labels += [cell["labels"]["teff"] for cell in cells]
    assert all(label["z_std_interval"][0] < label["z_std"] < label["z_std_interval"][1] for label in labels)
    held = sum(label["z_std_interval"][0] < 1.0 < label["z_std_interval"][1] for label in labels)
    verdicts = [label["verdict"] for label in labels]
    assert held >= 0.9 * len(labels) and verdicts.count("missed beyond noise") <= 0.05 * len(labels), (held, verdicts)
    assert verdicts.count("missed") >= 0.3 * len(labels)  # the point figures alone would call these miscalibrated
    # 1.4x too small uncertainties in a cell of 2,000: a miss no sampling explains.
    wide = _cells_of(1.4 * rng.normal(size=(2000, 1)), np.full(2000, 25.0))[0]["labels"]["teff"]
    assert wide["z_std_interval"][0] > 1.1 and wide["verdict"] == "missed beyond noise"
    # The same spread in a cell of 12 spectra is only missed.
    small = _cells_of(1.4 * rng.normal(size=(12, 1)), np.full(12, 25.0))[0]["labels"]["teff"]
    assert small["verdict"] == "missed" and small["z_std_interval"][0] < 1.1
    # Without resamples: no intervals, and a miss cannot be called beyond noise.
    plain = _cells_of(1.4 * rng.normal(size=(2000, 1)), np.full(2000, 25.0), resamples=0)[0]["labels"]["teff"]
    assert plain["z_std_interval"] is None and plain["verdict"] == "missed"


def test_calibration_intervals_resample_stars_not_spectra():
    # 50 stars of 20 spectra each, whose errors are mostly the star's own: the spectra of a
    # star are not independent, and the interval over stars is the wider one.
    rng = np.random.default_rng(12)
    star = np.repeat(np.arange(50), 20)
    z = (0.9 * rng.normal(size=50)[star] + 0.44 * rng.normal(size=1000))[:, None]
    snr = np.full(1000, 25.0)
    by_star = _cells_of(z, snr, groups=star)[0]
    by_spectrum = _cells_of(z, snr)[0]
    assert by_star["stars"] == 50 and by_spectrum["stars"] == 1000
    width = {name: np.diff(cells["labels"]["teff"]["z_std_interval"])[0]
             for name, cells in (("star", by_star), ("spectrum", by_spectrum))}
    assert width["star"] > 2 * width["spectrum"], width
    with pytest.raises(ValueError):
        _cells_of(z, snr, groups=star[:10])
    # One star's 12 spectra: no spread across stars to measure, so no interval, and a miss
    # is never called beyond noise.
    one = _cells_of(1.6 * np.random.default_rng(0).normal(size=(12, 1)), np.full(12, 25.0),
                    groups=np.full(12, 7))[0]
    assert one["stars"] == 1 and one["labels"]["teff"]["z_std"] > 1.1
    assert one["labels"]["teff"]["z_std_interval"] is None and one["labels"]["teff"]["verdict"] == "missed"
