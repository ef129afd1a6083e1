"""The fill's kernel writes the network's inputs itself (inference/network/inputs.py,
estimator.py): the same fill bytes on one thread or numba's, and the same inputs and
predictions as filling the spectra, then shifting and clipping them (network_inputs)."""

import numpy as np
import pytest

from inference.network.architecture import BLUE_INPUT, RED_INPUT
from inference.network.estimator import network_inputs
from inference.network.inputs import fill_masked, fill_masked_shifted, fit_fill_basis
from tests.test_network_inputs import PIXELS, low_rank_spectra, masked_like_the_pipeline


def _arrays(n: int, seed: int) -> np.ndarray:
    """(n, 2, 2, PIXELS) [flux, ivar] with masks, unflagged spikes and a zero-flux block."""
    rng = np.random.default_rng(seed)
    _, noisy = low_rank_spectra(n, seed=seed)
    flux, ivar = masked_like_the_pipeline(noisy, seed=seed + 1, fraction=0.08)
    flux[rng.random(flux.shape) < 0.003] += 0.4
    flux[3, 1, 50:90] = 0.0
    return np.stack([flux, ivar], axis=1)


def test_fill_on_the_calling_thread_alone_gives_the_same_bytes_as_on_numbas_threads():
    basis = fit_fill_basis(*masked_like_the_pipeline(low_rank_spectra(200, seed=31)[1], seed=32), n_components=5,
                           outlier_sigma=5.0)
    arrays = _arrays(300, seed=33)  # >= 2 chunks of 64 rows: the threaded kernel is used
    threaded = fill_masked(arrays[:, 0], arrays[:, 1], basis, parallel=True)
    alone = fill_masked(arrays[:, 0], arrays[:, 1], basis, parallel=False)
    assert np.array_equal(alone, threaded)
    assert np.array_equal(fill_masked(arrays[:, 0], arrays[:, 1], basis), threaded)
    assert not np.array_equal(threaded, arrays[:, 0])  # something was filled


@pytest.mark.parametrize("parallel", [False, True])
def test_fill_written_as_network_inputs_equals_the_fill_shifted_and_clipped(parallel):
    basis = fit_fill_basis(*masked_like_the_pipeline(low_rank_spectra(200, seed=34)[1], seed=35), n_components=5,
                           outlier_sigma=5.0)
    arrays = _arrays(300, seed=36)
    flux, ivar = arrays[:, 0].copy(), arrays[:, 1]
    flux[5, 1, 30] = np.nan  # non-finite: treated as masked, filled
    for clip in (1.0, 0.2):
        shifted = fill_masked_shifted(flux, ivar, basis, clip, parallel=parallel)
        expected = network_inputs(fill_masked(flux, ivar, basis, parallel=parallel), clip)
        assert shifted.dtype == np.float32 and shifted.shape == flux.shape
        assert np.array_equal(shifted[:, 0, :, None], expected[BLUE_INPUT])
        assert np.array_equal(shifted[:, 1, :, None], expected[RED_INPUT])
        assert np.all(np.isfinite(shifted)) and np.all(np.abs(shifted) <= np.float32(clip))
        assert np.any(shifted == -np.float32(clip)) == (clip < 0.5)  # line cores deeper than 0.2, none deeper than 1
    with pytest.raises(ValueError, match="clip"):
        fill_masked_shifted(flux, ivar, basis, 0.0)


@pytest.fixture(scope="module")
def network():
    from inference.network.config import NetworkConfig, TrainingConfig
    from inference.network.estimator import SPCANet

    arrays = _arrays(160, seed=41)
    labels = np.repeat(np.random.default_rng(42).normal(size=(160, 1)), 3, axis=1)
    config = NetworkConfig(pixels_per_arm=PIXELS, n_labels=3, filters=(2, 2), pool_size=16, dense_units=(8, 4),
                           fill_components=4, fill_outlier_sigma=5.0)
    net = SPCANet(config, TrainingConfig(max_epochs=1, seed=1), ["a", "b", "c"])
    net.fit(arrays[:100], labels[:100], cv_flux=arrays[100:130], cv_labels=labels[100:130])
    assert net.fill_basis is not None
    return net


def test_prediction_equals_filling_then_shifting_and_clipping(network):
    arrays = _arrays(75, seed=43)
    for batch_size in (16, 1024):  # 5 batches, the last one short; one batch
        predicted = network.predict(arrays, batch_size=batch_size)
        inputs = network_inputs(fill_masked(arrays[:, 0], arrays[:, 1], network.fill_basis), network.network.input_clip)
        expected = network.scaler.inverse(network._require_model().predict(inputs, batch_size=batch_size, verbose=0))
        assert predicted.shape == (75, 3)
        assert np.array_equal(predicted, expected)
    with pytest.raises(ValueError, match="needs the ivar"):
        network.predict(arrays[:, 0], batch_size=16)
