"""Masked and outlying pixels filled from a low-rank model of the training spectra (inference/network/inputs.py)."""

import numpy as np
import pytest

from inference.network import inputs
from inference.network.artifact import Artifact, artifact_read, artifact_write
from inference.network.inputs import (
    FillBasis,
    fill_interpolate,
    fill_masked,
    fill_masked_reference,
    fit_fill_basis,
    reconstruct,
    reconstruct_reference,
)

PIXELS = 400  # per arm
NOISE = 0.01  # per-pixel noise of the synthetic spectra (S/N 100)


def low_rank_spectra(n: int, seed: int, rank: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2, PIXELS) noise-free normalised spectra: a mean of absorption lines plus
    ``rank`` line-depth patterns with random coefficients; and the same with noise."""
    rng = np.random.default_rng(seed)
    x = np.arange(2 * PIXELS)
    centres = np.random.default_rng(99).uniform(0, 2 * PIXELS, (rank + 1, 12))
    patterns = np.array([np.exp(-0.5 * ((x[:, None] - c) / 2.5) ** 2).sum(axis=1) for c in centres])
    mean = 1.0 - 0.3 * patterns[0]
    clean = mean - 0.1 * rng.normal(size=(n, rank)) @ patterns[1:]
    noisy = clean + rng.normal(0.0, NOISE, clean.shape)
    return clean.reshape(n, 2, PIXELS).astype(np.float32), noisy.reshape(n, 2, PIXELS).astype(np.float32)


def masked_like_the_pipeline(flux: np.ndarray, seed: int, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Flux 1 and ivar 0 on random pixels, ivar 1 / NOISE^2 elsewhere, as the preprocessing writes them."""
    rng = np.random.default_rng(seed)
    ivar = np.full(flux.shape, 1.0 / NOISE**2, dtype=np.float32)
    ivar[rng.random(flux.shape) < fraction] = 0.0
    return np.where(ivar > 0, flux, 1.0).astype(np.float32), ivar


def test_fill_recovers_a_masked_block_of_a_low_rank_spectrum_within_its_noise():
    _, train = low_rank_spectra(300, seed=1)
    train_flux, train_ivar = masked_like_the_pipeline(train, seed=2)
    basis = fit_fill_basis(train_flux, train_ivar, n_components=4)
    assert basis.components.shape == (4, 2 * PIXELS) and basis.mean.dtype == np.float32
    clean, noisy = low_rank_spectra(20, seed=3)
    flux, ivar = noisy.copy(), np.full(noisy.shape, 1.0 / NOISE**2, dtype=np.float32)
    flux[:, 0, 100:220], ivar[:, 0, 100:220] = 1.0, 0.0  # a 12 A block with its lines, written as flux 1
    filled = fill_masked(flux, ivar, basis)
    error = filled[:, 0, 100:220] - clean[:, 0, 100:220]
    assert np.sqrt(np.mean(error**2)) < NOISE  # the fill is the model: better than one noisy pixel
    assert np.sqrt(np.mean((flux[:, 0, 100:220] - clean[:, 0, 100:220]) ** 2)) > 5 * NOISE  # flux 1 was far off
    assert np.array_equal(filled[ivar > 0], flux[ivar > 0])  # measured pixels are kept as they are
    # The simpler fills the benchmark compares: the per-pixel mean (k = 0) and interpolation are worse here.
    mean_fill = fill_masked(flux, ivar, fit_fill_basis(train_flux, train_ivar, n_components=0))
    interpolated = fill_interpolate(flux, ivar)
    for other in (mean_fill, interpolated):
        assert np.sqrt(np.mean((other[:, 0, 100:220] - clean[:, 0, 100:220]) ** 2)) > 2 * NOISE


def test_a_spectrum_the_model_describes_less_well_keeps_its_pixels_and_still_loses_its_junk():
    # A star unlike the training spectra, at high S/N (a real coadd against a basis learned
    # from mock spectra): lines the basis does not have, 2% deep, at S/N 1000. Judged
    # against its noise alone, most pixels of those lines would be outliers (69% of the
    # good pixels went); judged against the arm's own residual spread, only the junk and a
    # few line cores.
    _, train = low_rank_spectra(300, seed=11)
    train_flux, train_ivar = masked_like_the_pipeline(train, seed=12, fraction=0.02)
    basis = fit_fill_basis(train_flux, train_ivar, n_components=4, outlier_sigma=5.0)
    clean, _ = low_rank_spectra(8, seed=13)
    rng = np.random.default_rng(14)
    x = np.arange(PIXELS)
    foreign = 0.02 * np.exp(-0.5 * ((x[None, :] - rng.uniform(0, PIXELS, (60, 1))) / 2.0) ** 2).sum(axis=0)
    flux = (clean - foreign + rng.normal(0.0, 0.001, clean.shape)).astype(np.float32)
    ivar = np.full(flux.shape, 1.0 / 0.001**2, dtype=np.float32)
    flux[:, 0, 123] += 0.5  # an unflagged cosmic ray
    flux[:, 1, 200:220] = 0.0  # a zero-flux block with its ivar kept
    for compiled in (True, False):
        _, good = reconstruct(flux, ivar, basis) if compiled else reconstruct_reference(flux, ivar, basis)
        assert not good[:, 0, 123].any() and not good[:, 1, 200:220].any()
        kept = np.ones(flux.shape, dtype=bool)
        kept[:, 0, 123], kept[:, 1, 200:220] = False, False
        assert good[kept].mean() > 0.93, good[kept].mean()
        # The same spectrum's pixels judged against its noise alone: most of the foreign lines go.
        residual = flux - reconstruct(flux, ivar, basis)[0]
        assert (np.abs(residual[kept.reshape(flux.shape)]) * 1000 > 5).mean() > 0.2


def test_a_large_zero_flux_block_is_dropped_whole_and_does_not_inflate_the_spread():
    # Junk over a third of an arm drags the first fit; the spread comes from the fit made
    # without what the first (noise-only) rejection dropped, so the block still goes.
    _, train = low_rank_spectra(300, seed=15)
    train_flux, train_ivar = masked_like_the_pipeline(train, seed=16, fraction=0.02)
    basis = fit_fill_basis(train_flux, train_ivar, n_components=4, outlier_sigma=5.0)
    _, noisy = low_rank_spectra(6, seed=17)
    ivar = np.full(noisy.shape, 1.0 / NOISE**2, dtype=np.float32)
    for length in (150, 190):  # (up to half the arm: beyond, the median is the junk's)
        flux = noisy.copy()
        flux[:, 1, 100 : 100 + length] = 0.0
        for compiled in (True, False):
            _, good = reconstruct(flux, ivar, basis) if compiled else reconstruct_reference(flux, ivar, basis)
            assert not good[:, 1, 100 : 100 + length].any(), (length, compiled)
            assert good[:, 0].mean() > 0.98


def test_the_kernels_median_is_the_lower_median():
    rng = np.random.default_rng(21)
    histogram = np.empty(inputs._MEDIAN_BINS + 1, dtype=np.int64)
    in_bin = np.empty(4000, dtype=np.float32)
    for values in (np.abs(rng.normal(0, 1, 4000)), np.abs(rng.normal(0, 40, 3999)), rng.exponential(0.01, 17),
                   np.full(10, 2.0), np.array([0.5]), np.concatenate([np.zeros(7), np.full(3, 1e9)]),
                   np.concatenate([np.full(5, 1e20), np.full(4, np.inf), np.ones(2)]), np.full(6, 3e38),
                   np.concatenate([np.full(9, np.nan), np.ones(3)])):
        values = values.astype(np.float32)
        expected = np.sort(values)[(values.size - 1) // 2]
        assert np.array_equal(inputs._lower_median(values, values.size, histogram, in_bin), expected, equal_nan=True)


def test_outliers_are_caught_and_filled_and_a_clean_spectrum_is_left_unchanged():
    _, train = low_rank_spectra(300, seed=4)
    train_flux, train_ivar = masked_like_the_pipeline(train, seed=5, fraction=0.02)
    train_flux[::10, 1, 50] += 0.5  # cosmic rays in some training spectra too
    basis = fit_fill_basis(train_flux, train_ivar, n_components=4, outlier_sigma=5.0)
    clean, noisy = low_rank_spectra(10, seed=6)
    ivar = np.full(noisy.shape, 1.0 / NOISE**2, dtype=np.float32)
    assert np.array_equal(fill_masked(noisy, ivar, basis), noisy)  # nothing masked, nothing off: unchanged
    hit = noisy.copy()
    spikes = [(0, 0, 30), (1, 1, 310), (2, 0, 399), (3, 1, 5)]
    for i, arm, pixel in spikes:
        hit[i, arm, pixel] += 0.3  # 30 sigma, unflagged
    hit[4, 0, 200:240] = 0.0  # a zero-flux block with its ivar kept
    _, good = reconstruct(hit, ivar, basis)
    for i, arm, pixel in spikes:
        assert not good[i, arm, pixel]
    assert not good[4, 0, 200:240].any()
    assert good.mean() > 0.98  # and little else
    filled = fill_masked(hit, ivar, basis)
    assert np.max(np.abs(filled[4, 0, 200:240] - clean[4, 0, 200:240])) < 4 * NOISE
    for i, arm, pixel in spikes:
        assert abs(filled[i, arm, pixel] - clean[i, arm, pixel]) < 4 * NOISE
    # Without the rejection the same spikes stay.
    plain = FillBasis(basis.mean, basis.components, basis.model_sigma, outlier_sigma=0.0)
    assert np.array_equal(fill_masked(hit, ivar, plain), hit)


@pytest.mark.parametrize(("components", "outlier_sigma", "iterations"), [(6, 5.0, 2), (6, 0.0, 2), (0, 5.0, 2), (6, 3.0, 3)])
def test_compiled_fill_matches_the_plain_numpy_reference(components, outlier_sigma, iterations, monkeypatch):
    rng = np.random.default_rng(21)
    _, train = low_rank_spectra(200, seed=22, rank=6)
    basis = fit_fill_basis(*masked_like_the_pipeline(train, seed=23), n_components=components,
                           outlier_sigma=outlier_sigma)
    _, noisy = low_rank_spectra(120, seed=24, rank=6)
    ivar = (rng.uniform(0.2, 3.0, (120, 1, 1)) / NOISE**2 * rng.uniform(0.7, 1.3, noisy.shape)).astype(np.float32)
    flux = noisy + (rng.normal(size=noisy.shape) * (1 / np.sqrt(ivar) - NOISE)).astype(np.float32)
    # Masks as the pipeline writes them (some spectra masked heavily), unflagged spikes, a
    # zero-flux block with its ivar kept, and values the reader would have caught.
    heavy = rng.random((120, 1, 1)) < 0.3
    masked = rng.random(flux.shape) < np.where(heavy, 0.25, 0.02)
    flux[masked], ivar[masked] = 1.0, 0.0
    flux[rng.random(flux.shape) < 0.003] += 0.4
    flux[5, 0, 100:160] = 0.0
    flux[6, 1, 7], ivar[7, 0, 9], ivar[8, 1, 11], ivar[9, 0, 13] = np.nan, np.inf, -1.0, np.nan
    ivar[10] = 0.0  # nothing measured at all
    arrays = np.stack([flux, ivar], axis=1)  # the network passes views of (n, 2, 2, pixels) arrays
    model, good = reconstruct(arrays[:, 0], arrays[:, 1], basis, iterations)
    expected_model, expected_good = reconstruct_reference(flux, ivar, basis, iterations)
    assert model.dtype == np.float32 and good.dtype == bool and model.shape == flux.shape
    assert np.all(np.isfinite(model))
    assert np.max(np.abs(model - expected_model)) < 2e-5  # float32 rounding (values near 1)
    assert np.count_nonzero(good != expected_good) <= 2  # a pixel on the threshold may fall either way
    assert np.count_nonzero(~expected_good) > 0.05 * good.size
    filled = fill_masked(arrays[:, 0], arrays[:, 1], basis) if iterations == 2 else None
    if filled is not None:
        # Rows on numba's threads give the same bytes as one thread.
        monkeypatch.setattr(inputs, "_CHUNK", 8)
        for parallel in (False, True):
            monkeypatch.setattr(inputs, "PARALLEL", parallel)
            assert np.array_equal(fill_masked(arrays[:, 0], arrays[:, 1], basis), filled)
        expected = fill_masked_reference(flux, ivar, basis)
        same = good == expected_good
        assert np.max(np.abs(filled - expected)[same]) < 2e-5
        assert np.all(np.isfinite(filled))


def test_fill_rejects_arrays_of_another_shape():
    basis = fit_fill_basis(*masked_like_the_pipeline(low_rank_spectra(50, seed=7)[1], seed=8), n_components=2)
    with pytest.raises(ValueError, match="pixels"):
        fill_masked(np.ones((3, 2, 100), np.float32), np.ones((3, 2, 100), np.float32), basis)
    with pytest.raises(ValueError, match="one shape"):
        fill_masked(np.ones((3, 2, PIXELS), np.float32), np.ones((3, 2, 10), np.float32), basis)


def test_artifact_round_trips_the_fill_basis_and_old_artifacts_keep_their_bytes(tmp_path):
    basis = fit_fill_basis(*masked_like_the_pipeline(low_rank_spectra(60, seed=9)[1], seed=10), n_components=3,
                           outlier_sigma=5.0)
    weights = [np.ones((2, 3), np.float32)]
    relative, sha256 = artifact_write(tmp_path, Artifact(manifest={"preprocessing_version": "1.0"}, weights=weights,
                                                         arrays=basis.arrays()))
    loaded = artifact_read(tmp_path / relative, expected_sha256=sha256, preprocessing_version="1.0")
    again = FillBasis.from_arrays(loaded.arrays, 5.0)
    for name in ("mean", "components", "model_sigma"):
        assert np.array_equal(getattr(again, name), getattr(basis, name))
    # An artifact without arrays is written exactly as before they existed, and reads with none.
    relative, sha256 = artifact_write(tmp_path, Artifact(manifest={"preprocessing_version": "1.0"}, weights=weights))
    loaded = artifact_read(tmp_path / relative, expected_sha256=sha256, preprocessing_version="1.0")
    assert loaded.arrays == {} and "array_names" not in loaded.manifest


def test_network_fills_with_the_basis_it_learned_and_old_models_predict_as_before(tmp_path):
    from dataclasses import replace

    from inference.network.config import NetworkConfig, TrainingConfig
    from inference.network.estimator import SPCANet

    rng = np.random.default_rng(11)
    clean, noisy = low_rank_spectra(160, seed=12)
    labels = np.repeat(rng.normal(size=(160, 1)), 3, axis=1)
    flux, ivar = masked_like_the_pipeline(noisy, seed=13)
    arrays = np.stack([flux, ivar], axis=1)  # (n, 2, 2, pixels) as the array shards hold them
    config = NetworkConfig(pixels_per_arm=PIXELS, n_labels=3, filters=(2, 2), pool_size=16, dense_units=(8, 4),
                           fill_components=4)
    net = SPCANet(config, TrainingConfig(max_epochs=1, seed=1), ["a", "b", "c"])
    net.fit(arrays[:100], labels[:100], cv_flux=arrays[100:130], cv_labels=labels[100:130])
    assert net.fill_basis is not None and net.fill_basis.n_components == 4
    predicted = net.predict(arrays[130:])
    with pytest.raises(ValueError, match="needs the ivar"):
        net.predict(flux[130:])
    relative, sha256 = artifact_write(tmp_path, net.to_artifact(preprocessing_version="1.0"))
    reloaded = SPCANet.from_artifact(artifact_read(tmp_path / relative, expected_sha256=sha256,
                                                   preprocessing_version="1.0"))
    assert np.array_equal(reloaded.fill_basis.components, net.fill_basis.components)
    assert np.allclose(reloaded.predict(arrays[130:]), predicted, atol=1e-4)
    # A model from before the fill (no basis, manifest without the settings) reads flux alone, as before.
    old = SPCANet(replace(config, fill_components=0, fill_outlier_sigma=0.0), TrainingConfig(max_epochs=1, seed=1),
                  ["a", "b", "c"])
    old.fit(flux[:100], labels[:100], cv_flux=flux[100:130], cv_labels=labels[100:130])
    artifact = old.to_artifact(preprocessing_version="1.0")
    for key in ("fill_components", "fill_outlier_sigma"):
        del artifact.manifest["network"][key]
    assert artifact.arrays == {}
    loaded = SPCANet.from_artifact(artifact)
    assert loaded.fill_basis is None and loaded.network.fill_components == 0
    assert np.allclose(loaded.predict(flux[130:]), old.predict(flux[130:]), atol=1e-4)
    assert np.allclose(loaded.predict(arrays[130:]), old.predict(flux[130:]), atol=1e-4)  # ivar given: ignored
