"""The pure numerical core of SPCANet: splits, scaling, uncertainties, evaluation, artifacts, network."""

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from core.crossmatch import MATCH_GAIA, MATCH_NONE, MATCH_POSITION, crossmatch, match_notes
from inference.network.artifact import Artifact, ArtifactError, artifact_read, artifact_write
from inference.network.config import NetworkConfig, TrainingConfig
from inference.network.evaluation import accuracy_precision
from inference.network.scaling import LabelScaler
from inference.network.splits import CV, TEST, TRAIN, split_groups, split_two_models
from inference.network.uncertainty import SnrNoiseModel, calibration_summary

NAMES = [f"label{i}" for i in range(15)]


def test_split_by_star_keeps_each_star_on_one_side_in_6_2_1():
    groups = np.repeat(np.arange(900), 7)
    codes = split_groups(groups, (6, 2, 1), seed=3)
    per_star = codes.reshape(900, 7)
    assert np.all(per_star == per_star[:, :1])
    counts = np.bincount(per_star[:, 0], minlength=3)
    assert counts.tolist() == [600, 200, 100]
    # Deterministic and independent of the order of the items.
    order = np.random.default_rng(0).permutation(groups.size)
    assert np.array_equal(split_groups(groups[order], (6, 2, 1), seed=3), codes[order])
    assert not np.array_equal(split_groups(groups, (6, 2, 1), seed=4), codes)


def test_two_model_split_shares_the_test_set_and_differs_in_training():
    groups = np.repeat(np.arange(450), 4)
    split = split_two_models(groups, (6, 2, 1), seed=1)
    assert np.isclose(split.test.mean(), 2 / 9, atol=0.01)
    for codes in (split.formal, split.alternate):
        assert np.all(codes[split.test] == TEST)
        assert not np.any(codes[~split.test] == TEST)
        assert np.isclose(np.mean(codes == TRAIN), 6 / 9, atol=0.01)
        assert np.isclose(np.mean(codes == CV), 1 / 9, atol=0.01)
        # No star on both sides of training and test.
        assert not set(groups[codes == TRAIN]) & set(groups[split.test])
    assert not np.array_equal(split.formal, split.alternate)


def test_label_scaler_ignores_missing_labels_and_round_trips():
    labels = np.random.default_rng(0).normal(5000, 500, size=(200, 15))
    labels[::7, 4] = np.nan
    scaler = LabelScaler.fit(labels)
    standardised = scaler.transform(labels)
    assert np.allclose(np.nanmean(standardised, axis=0), 0, atol=1e-5)
    assert np.isnan(standardised[0, 4])
    assert np.allclose(scaler.inverse(standardised), labels, rtol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="fewer than two"):
        LabelScaler.fit(np.full((5, 15), np.nan))


def test_snr_noise_model_recovers_floor_and_slope_and_is_calibrated():
    rng = np.random.default_rng(2)
    snr = rng.uniform(10, 150, size=40_000)
    floor = np.linspace(10, 50, 15)
    slope = np.linspace(100, 1500, 15)
    true_sigma = np.sqrt(floor**2 + (slope / snr[:, None]) ** 2)
    residuals = rng.standard_normal(true_sigma.shape) * true_sigma
    model = SnrNoiseModel.fit(residuals[:20_000], snr[:20_000])
    assert np.allclose(model.floor, floor, rtol=0.15)
    assert np.allclose(model.slope, slope, rtol=0.25)
    summary = calibration_summary(residuals[20_000:], np.zeros_like(residuals[20_000:]), model.sigma(snr[20_000:]), NAMES)
    for values in summary.values():
        assert 0.95 < values["z_std"] < 1.05
        assert 0.65 < values["within_1sigma"] < 0.71
    # A model that ignores the S/N would be badly calibrated at low S/N: the check can fail.
    flat = SnrNoiseModel(floor=np.full(15, 20.0), slope=np.zeros(15))
    faint = snr[20_000:] < 20
    bad = calibration_summary(residuals[20_000:][faint], np.zeros((faint.sum(), 15)), flat.sigma(snr[20_000:][faint]), NAMES)
    assert bad["label14"]["z_std"] > 2


def test_snr_noise_model_stays_calibrated_when_residuals_have_heavy_tails():
    """Residuals of real networks have heavier tails than a Gaussian; the uncertainty must
    still give z a spread of 1 (a MAD-based width gives about 1.2 here)."""
    rng = np.random.default_rng(8)
    snr = rng.uniform(10, 150, size=40_000)
    true_scale = np.sqrt(30.0**2 + (800.0 / snr[:, None]) ** 2) * np.ones((1, 15))
    residuals = rng.standard_t(5, size=true_scale.shape) * true_scale
    model = SnrNoiseModel.fit(residuals[:20_000], snr[:20_000])
    summary = calibration_summary(residuals[20_000:], np.zeros_like(residuals[20_000:]), model.sigma(snr[20_000:]), NAMES)
    for values in summary.values():
        assert 0.92 < values["z_std"] < 1.08, values


def test_accuracy_and_precision_per_snr_bin():
    snr = np.array([5, 15, 15, 15, 25, 25, 200], dtype=float)
    truth = np.zeros((7, 15))
    predicted = np.zeros((7, 15))
    predicted[:, 0] = [99, 1, 2, 3, 10, 20, 7]
    truth[2, 1] = np.nan
    result = accuracy_precision(predicted, truth, snr, NAMES)
    first = result["by_snr"]["label0"]
    assert first[0] == {"n": 3, "bias": 2.0, "std": pytest.approx(np.std([1, 2, 3])), "robust_std": pytest.approx(1.4826)}
    assert first[1]["bias"] == 15.0
    assert first[-1]["n"] == 1
    assert result["overall"]["label0"]["n"] == 6  # S/N 5 is below the first edge
    assert result["by_snr"]["label1"][0]["n"] == 2  # the missing reference value is left out


def test_crossmatch_by_gaia_then_position_across_ra_zero_and_the_pole():
    star_ra = np.array([359.9999, 10.0, 180.0, 45.0, 200.0])
    star_dec = np.array([0.0, 89.9999, -30.0, 10.0, 5.0])
    star_gaia = np.array([0, 0, 777, 0, 888], dtype=np.int64)
    ref_ra = np.array([0.0002, 190.0, 180.5, 45.0, 45.1, 123.0, 200.0])
    ref_dec = np.array([0.0, 89.9999, -30.0, 10.0 + 2.5 / 3600, 10.0, 0.0, 5.0 + 4.0 / 3600])
    ref_gaia = np.array([0, 0, 777, 0, 0, 999, 888], dtype=np.int64)
    result = crossmatch(ref_gaia, ref_ra, ref_dec, star_gaia, star_ra, star_dec, radius_arcsec=3.0, gaia_max_arcsec=5.0)
    assert result.star_index.tolist() == [0, 1, -1, 3, -1, -1, 4]
    assert result.method.tolist() == [MATCH_POSITION, MATCH_POSITION, MATCH_NONE, MATCH_POSITION, MATCH_NONE, MATCH_NONE,
                                      MATCH_GAIA]
    assert result.separation_arcsec[0] == pytest.approx(1.08, abs=0.01)  # 0.0003 deg across RA 0
    assert result.separation_arcsec[1] < 1.0  # RA differs by 180 deg, but at the pole
    assert result.separation_arcsec[6] == pytest.approx(4.0, abs=0.01)  # by id, 4" away: within the limit
    # The same Gaia id 0.43 deg away is a wrong id or position: refused, and nothing is within 3".
    assert result.gaia_rejected_arcsec[2] > 1000 and np.isnan(result.gaia_rejected_arcsec[[0, 1, 3, 4, 5, 6]]).all()
    assert "refused; no star within 3\"" in match_notes(result, 3.0, 5.0)[2]
    assert np.isnan(result.separation_arcsec[4])
    with pytest.raises(TypeError, match="float64 loses digits"):
        crossmatch(ref_gaia.astype(float), ref_ra, ref_dec, star_gaia, star_ra, star_dec, radius_arcsec=3.0,
                   gaia_max_arcsec=5.0)


def _artifact() -> Artifact:
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, dtype=np.float32)]
    return Artifact(manifest={"preprocessing_version": "1.0", "label_names": NAMES}, weights=weights)


def test_artifact_is_content_addressed_verified_and_version_checked(tmp_path):
    relative, sha256 = artifact_write(tmp_path, _artifact())
    assert artifact_write(tmp_path, _artifact()) == (relative, sha256)  # same model, same bytes
    path = tmp_path / relative
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    loaded = artifact_read(path, expected_sha256=sha256, preprocessing_version="1.0")
    assert loaded.manifest["label_names"] == NAMES
    assert [w.tolist() for w in loaded.weights] == [w.tolist() for w in _artifact().weights]
    with pytest.raises(ArtifactError, match="preprocessing version"):
        artifact_read(path, expected_sha256=sha256, preprocessing_version="2.0")
    payload = bytearray(path.read_bytes())
    payload[-40] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(ArtifactError, match="sha256"):
        artifact_read(path, expected_sha256=sha256, preprocessing_version="1.0")
    with pytest.raises(ArtifactError, match="cannot read"):
        artifact_read(tmp_path / "missing.zip", expected_sha256=sha256, preprocessing_version="1.0")


def test_configs_reject_unknown_or_invalid_settings():
    with pytest.raises(ValueError, match="unknown"):
        NetworkConfig.from_mapping({"filterz": 3})
    with pytest.raises(ValueError, match="split_by"):
        TrainingConfig(split_by="night")
    assert NetworkConfig.from_mapping(NetworkConfig().as_dict()) == NetworkConfig()
    with pytest.raises(ValueError, match="pool_size"):
        NetworkConfig(pool_size=3)  # 4000 pixels do not split into groups of 3
    with pytest.raises(ValueError, match="standardise"):
        NetworkConfig(standardise="robust")
    with pytest.raises(ValueError, match="dropout"):
        NetworkConfig(dropout=1.0)
    with pytest.raises(ValueError, match="lr_reduce_factor"):
        TrainingConfig(lr_reduce_factor=0.0)
    with pytest.raises(ValueError, match="lr_reduce_factor"):
        TrainingConfig(lr_reduce_factor=0.5, lr_reduce_patience=0)
    # Settings stored before the schedule existed load as a constant learning rate.
    stored = TrainingConfig().as_dict()
    del stored["lr_reduce_factor"], stored["lr_reduce_patience"]
    assert TrainingConfig.from_mapping(stored).lr_reduce_factor == 1.0


# -- the Keras network ----------------------------------------------------------------

PIXELS = 400  # a short grid keeps the training test quick; the network is the same


def synthetic_spectra(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectra whose line depths encode the labels: one line per label, depth 0.3 + 0.1 x label."""
    rng = np.random.default_rng(seed)
    labels = rng.normal(0.0, 1.0, size=(n, 15))
    flux = np.ones((n, 2, PIXELS), dtype=np.float32) + rng.normal(0, 0.01, size=(n, 2, PIXELS)).astype(np.float32)
    pixels = np.arange(PIXELS)
    for k in range(15):
        arm = k % 2
        centre = 25 * (k // 2) + 20 + 5 * arm
        profile = np.exp(-0.5 * ((pixels - centre) / 2.0) ** 2).astype(np.float32)
        flux[:, arm, :] -= (0.3 + 0.1 * labels[:, k, None]).astype(np.float32) * profile
    return flux, labels


SMALL = NetworkConfig(pixels_per_arm=PIXELS, filters=(4, 4), pool_size=16, dense_units=(32, 16), dropout=0.05)


def test_network_has_the_shape_of_fig5():
    from inference.network.architecture import build_spcanet

    model = build_spcanet(NetworkConfig())
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds.count("Conv1D") == 6 and kinds.count("BatchNormalization") == 6
    # two residual additions, the arms, and the linear part added to the dense layers' output
    assert kinds.count("Add") == 3 and kinds.count("Concatenate") == 2
    assert kinds.count("Dense") == 4 and kinds.count("Dropout") == 2
    assert not model.get_layer("linear").trainable and model.get_layer("linear").input.shape == (None, 8000)
    assert "linear" not in [layer.name for layer in build_spcanet(NetworkConfig(ridge_lambdas=())).layers]
    assert model.output_shape == (None, 15)
    for arm in ("blue", "red"):
        sources = {tensor._keras_history.operation.name for tensor in model.get_layer(f"{arm}_residual").input}
        assert sources == {f"{arm}_standardise", f"{arm}_bn3"}  # the third layer plus the branch input
    pooled = NetworkConfig().pixels_per_arm // NetworkConfig().pool_size
    assert model.get_layer("dense1").input.shape == (None, 2 * pooled)
    assert model.get_layer("blue_standardise").mean.shape.num_elements() == 1  # one mean and spread per arm
    unpooled = build_spcanet(NetworkConfig(pool_size=1, standardise="pixel", input_noise=0.1))
    assert unpooled.get_layer("dense1").input.shape == (None, 2 * 4000)
    assert unpooled.get_layer("blue_standardise").mean.shape[-2] == 4000
    # with input noise, the branch input added back is the standardised input plus the noise
    assert {t._keras_history.operation.name for t in unpooled.get_layer("red_residual").input} == {
        "red_input_noise", "red_bn3"}


def test_network_learns_labels_ignores_missing_ones_and_reloads_identically(tmp_path):
    from inference.network.estimator import SPCANet

    flux, labels = synthetic_spectra(700, seed=0)
    labels_with_gaps = labels.copy()
    labels_with_gaps[::5, 7] = np.nan
    net = SPCANet(SMALL, TrainingConfig(max_epochs=40, patience=8, batch_size=32, seed=7), NAMES)
    net.fit(flux[:500], labels_with_gaps[:500], cv_flux=flux[500:600], cv_labels=labels_with_gaps[500:600])
    assert np.all(np.isfinite(net.history["loss"]))
    net.calibrate(flux[500:600], labels[500:600], np.full(100, 50.0))
    predicted, sigma, outside = net.predict_with_uncertainty(flux[600:], np.full(100, 50.0))
    rms = np.sqrt(np.mean((predicted - labels[600:]) ** 2, axis=0))
    # The labels have unit spread, so predicting their mean gives an RMS of 1.
    assert np.mean(rms) < 0.75 and np.all(rms < 0.9), rms
    assert np.all(sigma > 0) and sigma.shape == (100, 15)
    assert outside.dtype == bool
    relative, sha256 = artifact_write(tmp_path, net.to_artifact(preprocessing_version="1.0"))
    from inference.network.artifact import artifact_read

    reloaded = SPCANet.from_artifact(artifact_read(tmp_path / relative, expected_sha256=sha256, preprocessing_version="1.0"))
    assert np.allclose(reloaded.predict(flux[600:]), predicted, atol=1e-4)
    assert reloaded.to_artifact(preprocessing_version="1.0").manifest["label_scaler"] == net.scaler.as_dict()
    # The forward pass's batch size changes nothing beyond rounding.
    for batch_size in (1, 7, 128, 1024):
        assert np.allclose(reloaded.predict(flux[600:], batch_size=batch_size), predicted, rtol=1e-5, atol=1e-3)


def test_learning_rate_is_reduced_on_a_plateau_of_the_cv_loss_and_recorded():
    from inference.network.estimator import SPCANet

    flux, labels = synthetic_spectra(300, seed=3)
    constant = SPCANet(SMALL, TrainingConfig(max_epochs=3, seed=4), NAMES)
    constant.fit(flux[:200], labels[:200], cv_flux=flux[200:], cv_labels=labels[200:])
    assert constant.history["learning_rate"] == [1e-3] * constant.history["epochs"]
    training = TrainingConfig(max_epochs=15, patience=15, lr_reduce_factor=0.5, lr_reduce_patience=1, seed=4)
    net = SPCANet(SMALL, training, NAMES)
    net.fit(flux[:200], labels[:200], cv_flux=flux[200:], cv_labels=labels[200:])
    rates, val = np.array(net.history["learning_rate"]), np.array(net.history["val_loss"])
    assert len(rates) == net.history["epochs"] == 15 and rates[0] == pytest.approx(1e-3)
    halvings = np.log2(rates[0] / rates)
    assert np.allclose(halvings, np.round(halvings), atol=1e-4) and np.all(np.diff(halvings) >= -1e-6)
    assert halvings[-1] >= 1, "the CV loss never stalled for an epoch in 15; the schedule did nothing"
    # Keras lowers the rate after an epoch whose CV loss did not improve on the best before it.
    for epoch in np.flatnonzero(np.diff(np.round(halvings)) > 0):
        assert val[epoch] > val[:epoch].min() - 1e-4  # Keras counts gains under min_delta 1e-4 as none


def test_artifacts_from_before_pooling_still_load(tmp_path):
    """Manifests written before the pooling, L2, standardisation, noise and linear-part
    settings lack those keys; they describe per-pixel standardisation without pooling."""
    from inference.network.estimator import SPCANet

    flux, labels = synthetic_spectra(96, seed=2)
    old = replace(SMALL, standardise="pixel", pool_size=1, l2=0.0, input_noise=0.0, ridge_lambdas=())
    net = SPCANet(old, TrainingConfig(max_epochs=1, seed=1), NAMES)
    net.fit(flux[:64], labels[:64], cv_flux=flux[64:], cv_labels=labels[64:])
    artifact = net.to_artifact(preprocessing_version="1.0")
    for key in ("standardise", "pool_size", "l2", "input_noise", "ridge_lambdas"):
        del artifact.manifest["network"][key]
    reloaded = SPCANet.from_artifact(artifact)
    assert reloaded.network == old
    assert np.allclose(reloaded.predict(flux[64:]), net.predict(flux[64:]), atol=1e-4)


@pytest.mark.parametrize("n_spectra", [40, 300])  # fewer spectra than pixels (Gram form), more (covariance form)
def test_ridge_equals_the_normal_equations_per_label_with_missing_values(n_spectra):
    from inference.network.linear import fit_ridge

    rng = np.random.default_rng(n_spectra)
    pixels = (rng.normal(size=(n_spectra, 60)) + 3.0).astype(np.float32)
    labels = pixels[:, :4] @ rng.normal(size=(4, 3)) + rng.normal(size=(n_spectra, 3)) * 0.1 + 5.0
    labels[[3, 8], 1] = np.nan
    labels[11, 2] = np.nan
    fit = fit_ridge(pixels, labels, pixels[:10], labels[:10], (2.0,))
    for j in range(3):
        rows = np.isfinite(labels[:, j])
        centred = pixels[rows].astype(np.float64) - pixels[rows].mean(axis=0)
        design = np.hstack([centred, np.ones((rows.sum(), 1))])
        penalty = np.diag([2.0] * 60 + [0.0])  # the intercept is not penalised
        solution = np.linalg.solve(design.T @ design + penalty, design.T @ labels[rows, j])
        assert np.allclose(fit.weights[:, j], solution[:60], atol=1e-7)
        assert fit.intercept[j] == pytest.approx(solution[60] - pixels[rows].mean(axis=0) @ solution[:60], abs=1e-6)
    assert np.allclose(fit.predict(pixels[:5]), pixels[:5].astype(np.float64) @ fit.weights + fit.intercept)


def test_ridge_keeps_the_penalty_with_the_smallest_cross_validation_error():
    from inference.network.linear import fit_ridge

    rng = np.random.default_rng(4)
    pixels = rng.normal(size=(240, 80)).astype(np.float32)
    truth = rng.normal(size=(80, 2)) * np.array([1.0, 0.05])  # a strong and a weak signal under the same noise
    labels = pixels @ truth + rng.normal(size=(240, 2))
    grid = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
    fit = fit_ridge(pixels[:160], labels[:160], pixels[160:], labels[160:], grid)
    for j in range(2):
        errors = []
        for lam in grid:
            single = fit_ridge(pixels[:160], labels[:160], pixels[160:], labels[160:], (lam,))
            errors.append(np.sqrt(np.mean((single.predict(pixels[160:])[:, j] - labels[160:, j]) ** 2)))
        assert fit.lambdas[j] == grid[int(np.argmin(errors))]
        assert fit.cv_rmse[j] == pytest.approx(min(errors))
    assert fit.lambdas[1] > fit.lambdas[0]  # the weak signal is shrunk harder
    with pytest.raises(ValueError, match="positive"):
        fit_ridge(pixels, labels, pixels, labels, (0.0,))


def test_the_linear_part_is_the_ridge_fit_and_stays_frozen_while_the_network_trains():
    from inference.network.estimator import SPCANet, _pixels, network_inputs
    from inference.network.linear import fit_ridge

    flux, labels = synthetic_spectra(160, seed=5)
    net = SPCANet(SMALL, TrainingConfig(max_epochs=3, seed=2), NAMES)
    net.fit(flux[:120], labels[:120], cv_flux=flux[120:], cv_labels=labels[120:])
    ridge = fit_ridge(_pixels(network_inputs(flux[:120], SMALL.input_clip)), labels[:120],
                      _pixels(network_inputs(flux[120:], SMALL.input_clip)), labels[120:], SMALL.ridge_lambdas)
    kernel, bias = net._model.get_layer("linear").get_weights()
    assert np.allclose(kernel * net.scaler.std, ridge.weights, rtol=1e-4, atol=1e-6)
    assert np.allclose(bias * net.scaler.std, ridge.intercept, rtol=1e-4, atol=1e-5)
    assert net.history["linear"]["lambdas"] == ridge.lambdas.tolist()
    # the labels are standardised by the spread of what the ridge leaves, not by their own
    assert np.all(net.scaler.std < np.nanstd(labels[:120], axis=0))
