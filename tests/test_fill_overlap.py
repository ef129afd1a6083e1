"""Prediction fills batch k + 1 on a worker thread while the network predicts batch k
(inference/network/estimator.py): the same fill bytes and the same predictions as filling
all spectra first and predicting them in one call."""

import threading

import numpy as np
import pytest

from inference.network import estimator as estimator_module
from inference.network.inputs import fill_masked, fit_fill_basis
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


def test_overlapped_prediction_equals_filling_everything_first(network, monkeypatch):
    arrays = _arrays(75, seed=43)
    batch_size = 16  # 5 batches, the last one short
    calls = []

    def recording_fill(flux, ivar, basis, *, parallel=None):
        calls.append((flux.shape[0], parallel, threading.current_thread() is threading.main_thread()))
        return fill_masked(flux, ivar, basis, parallel=parallel)

    monkeypatch.setattr(estimator_module, "fill_masked", recording_fill)
    predicted = network.predict(arrays, batch_size=batch_size)
    # Each batch filled on the worker thread, on that thread alone.
    assert calls == [(16, False, False)] * 4 + [(11, False, False)]
    calls.clear()
    inputs = network._inputs(arrays)  # all spectra filled at once (numba's threads), then one predict
    assert calls == [(75, None, True)]
    expected = network.scaler.inverse(network._require_model().predict(inputs, batch_size=batch_size, verbose=0))
    assert predicted.shape == (75, 3)
    assert np.array_equal(predicted, expected)


def test_overlapped_prediction_still_needs_the_ivar(network):
    arrays = _arrays(40, seed=44)
    with pytest.raises(ValueError, match="needs the ivar"):
        network.predict(arrays[:, 0], batch_size=16)
    # A batch as large as the input: one call, as before.
    assert network.predict(arrays, batch_size=64).shape == (40, 3)
