"""SPCANet as an estimator: ``fit`` on normalised spectra and labels, ``predict`` labels.

Follows the scikit-learn conventions (the constructor stores parameters, ``fit`` returns
self). Spectra are the normalised arrays of the preprocessing, (n, 2, 2, 4000) float32
[flux, ivar] x [blue, red] as the array shards hold them, or (n, 2, 4000) flux alone;
masked pixels (ivar 0) and outliers are filled from a low-rank model of the training
spectra (``inputs``, ``NetworkConfig.fill_components``), which needs the ivar. Labels
are (n, 15) in ``core.labels`` order, NaN where the reference has
no value (left out of the loss, not treated as zero).
"""

import platform
import time
from collections.abc import Callable

import keras
import numpy as np

from .architecture import BLUE_INPUT, RED_INPUT, build_spcanet
from .artifact import Artifact
from .config import NetworkConfig, TrainingConfig
from .inputs import FillBasis, fill_masked_shifted, fit_fill_basis
from .linear import fit_ridge
from .scaling import LabelScaler
from .uncertainty import ContextNoiseModel, SnrNoiseModel, fit_noise_model, noise_model_from_dict, noise_sigma


def network_inputs(flux: np.ndarray, clip: float) -> dict[str, np.ndarray]:
    """The network's input dict from (n, 2, pixels) normalised flux (continuum -> 0).

    Parameters
    ----------
    flux : array_like, shape (n, 2, pixels)
        Continuum-normalised flux, [blue, red]; masked pixels already filled or at 1.
    clip : float
        Inputs are ``flux - 1`` clipped to [-clip, clip]; non-finite values become 0.

    Returns
    -------
    dict of str to ndarray
        ``{"blue": (n, pixels, 1), "red": (n, pixels, 1)}``, float32.

    Raises
    ------
    ValueError
        If ``flux`` is not (n, 2, pixels).
    """
    flux = np.asarray(flux, dtype=np.float32)
    if flux.ndim != 3 or flux.shape[1] != 2:
        raise ValueError(f"expected (n, 2, pixels) normalised flux, got shape {flux.shape}")
    shifted = np.clip(flux - np.float32(1.0), -clip, clip, dtype=np.float32)
    shifted[~np.isfinite(shifted)] = 0.0
    return {BLUE_INPUT: shifted[:, 0, :, None], RED_INPUT: shifted[:, 1, :, None]}


def _pixels(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """(n, 2 x pixels) blue then red, as the ``pixels`` layer concatenates them."""
    return np.concatenate([inputs[BLUE_INPUT][:, :, 0], inputs[RED_INPUT][:, :, 0]], axis=1)


def masked_mse(y_true, y_pred):
    """Mean squared error over the labels the reference gives (NaN = missing).

    Parameters
    ----------
    y_true : tensor, shape (batch, n_labels), float32
        Standardised reference labels; NaN where the reference has no value.
    y_pred : tensor, shape (batch, n_labels), float32
        Standardised predictions.

    Returns
    -------
    tensor, shape (batch,), float32
        Mean of the squared differences over the known labels of each spectrum (0 when
        none is known).
    """
    known = keras.ops.logical_not(keras.ops.isnan(y_true))
    difference = keras.ops.where(known, y_pred - keras.ops.where(known, y_true, 0.0), 0.0)
    count = keras.ops.maximum(keras.ops.sum(keras.ops.cast(known, "float32"), axis=-1), 1.0)
    return keras.ops.sum(keras.ops.square(difference), axis=-1) / count


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that produce the model, for its manifest.

    Returns
    -------
    dict of str to str
        Keys ``python``, ``numpy``, ``keras``, ``tensorflow``.
    """
    import tensorflow as tf

    return {"python": platform.python_version(), "numpy": np.__version__, "keras": keras.__version__,
            "tensorflow": tf.__version__}


# Artifacts written before these settings existed used per-pixel standardisation and no
# pooling, L2, input noise or linear part; their manifests lack the keys.
NETWORK_SETTINGS_OF_OLD_ARTIFACTS = {"standardise": "pixel", "pool_size": 1, "l2": 0.0, "input_noise": 0.0,
                                     "ridge_lambdas": (), "fill_components": 0, "fill_outlier_sigma": 0.0}


def _split_arrays(arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(flux, ivar) from (n, 2, 2, pixels) [flux, ivar] arrays; (flux, None) from (n, 2, pixels) flux."""
    arrays = np.asarray(arrays)
    if arrays.ndim == 4 and arrays.shape[1] == 2:
        return arrays[:, 0], arrays[:, 1]
    return arrays, None


class SPCANet:
    """SPCANet as an estimator: ``fit`` on normalised spectra and labels, ``predict`` labels.

    Parameters
    ----------
    network : NetworkConfig, optional
        The network's hyperparameters; the defaults when None.
    training : TrainingConfig, optional
        The training's hyperparameters; the defaults when None.
    label_names : sequence of str
        Names of the outputs, in ``core.labels`` order; ``fit`` needs ``n_labels`` of them.

    Notes
    -----
    Spectra are (n, 2, 2, pixels) float32 [flux, ivar] x [blue, red] arrays, or (n, 2,
    pixels) flux alone; labels (n, n_labels) in physical units (Teff K, the rest dex),
    NaN where missing. The network is the SPCANet paper's (Wang et al. 2020, ApJ 891, 23,
    Fig. 5), trained with Adam on standardised labels.
    """

    def __init__(
        self,
        network: NetworkConfig | None = None,
        training: TrainingConfig | None = None,
        label_names: list[str] | tuple[str, ...] = (),
    ):
        self.network = network or NetworkConfig()
        self.training = training or TrainingConfig()
        self.label_names = list(label_names)
        self.scaler: LabelScaler | None = None
        self.noise_model: ContextNoiseModel | SnrNoiseModel | None = None
        self.label_ranges: np.ndarray | None = None  # (2, n_labels) training min / max
        self.fill_basis: FillBasis | None = None
        self.history: dict = {}
        self._model: keras.Model | None = None

    # -- training -------------------------------------------------------------------
    def fit(
        self,
        flux: np.ndarray,
        labels: np.ndarray,
        *,
        cv_flux: np.ndarray,
        cv_labels: np.ndarray,
        on_epoch: Callable[[int, dict], None] | None = None,
    ) -> "SPCANet":
        """Train with Adam on standardised labels; early stopping on the CV loss.

        Parameters
        ----------
        flux : ndarray, shape (n, 2, 2, pixels) or (n, 2, pixels), float32
            Training spectra, [flux, ivar] x [blue, red] or flux alone (then no
            masked-pixel fill is learned).
        labels : array_like, shape (n, n_labels), float64
            Reference labels (Teff K, the rest dex); NaN where missing (left out of the loss).
        cv_flux : ndarray, shape (n_cv, ...), float32
            Cross-validation spectra, as ``flux``; for early stopping and the ridge penalties.
        cv_labels : array_like, shape (n_cv, n_labels), float64
            Their labels.
        on_epoch : callable, optional
            Called as ``on_epoch(epoch, logs)`` after each epoch.

        Returns
        -------
        SPCANet
            self, trained; ``history`` holds the losses and timings.

        Raises
        ------
        ValueError
            If ``labels`` is not (n, n_labels) or there are not ``n_labels`` label names.
        """
        labels = np.asarray(labels, dtype=np.float64)
        if labels.shape != (flux.shape[0], self.network.n_labels):
            raise ValueError(f"labels must be ({flux.shape[0]}, {self.network.n_labels}), got {labels.shape}")
        if len(self.label_names) != self.network.n_labels:
            raise ValueError(f"{len(self.label_names)} label names for {self.network.n_labels} outputs")
        keras.utils.set_random_seed(self.training.seed)
        self.label_ranges = np.vstack([np.nanmin(labels, axis=0), np.nanmax(labels, axis=0)])
        fill = {}
        train_flux, train_ivar = _split_arrays(flux)
        if self.network.fill_components and train_ivar is not None:
            started = time.perf_counter()
            self.fill_basis = fit_fill_basis(train_flux, train_ivar, self.network.fill_components,
                                             outlier_sigma=self.network.fill_outlier_sigma)
            fill = {"components": self.network.fill_components, "seconds": time.perf_counter() - started}
        else:
            self.fill_basis = None  # flux alone: masked pixels stay flux 1, as before the fill
        inputs = self._inputs(flux)
        cv_inputs = self._inputs(cv_flux)
        linear = {}
        if self.network.ridge_lambdas:
            started = time.perf_counter()
            pixels = _pixels(inputs)
            ridge = fit_ridge(pixels, labels, _pixels(cv_inputs), cv_labels, self.network.ridge_lambdas)
            # The network's outputs are standardised by the spread of what the ridge leaves,
            # so every label's residual weighs alike in the loss.
            self.scaler = LabelScaler.fit(labels - ridge.predict(pixels))
            del pixels
            linear = {"lambdas": ridge.lambdas.tolist(), "cv_rmse": ridge.cv_rmse.tolist(),
                      "seconds": time.perf_counter() - started}
        else:
            self.scaler = LabelScaler.fit(labels)
        self._model = build_spcanet(self.network)
        if self.network.ridge_lambdas:
            # Output z = linear + network, labels = z * std + mean: the layer holds ridge / std.
            self._model.get_layer("linear").set_weights([(ridge.weights / self.scaler.std).astype(np.float32),
                                                         (ridge.intercept / self.scaler.std).astype(np.float32)])
        for name, values in inputs.items():
            self._model.get_layer(f"{name}_standardise").adapt(values)
        # XLA compilation doubles the CPU throughput of the small-channel convolutions.
        self._model.compile(optimizer=keras.optimizers.Adam(self.training.learning_rate), loss=masked_mse,
                            jit_compile=True)
        callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.training.patience,
                                                   restore_best_weights=True)]
        if self.training.lr_reduce_factor < 1:
            callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=self.training.lr_reduce_factor,
                                                               patience=self.training.lr_reduce_patience))
        if on_epoch is not None:
            callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_epoch(epoch, logs or {})))
        started = time.perf_counter()
        result = self._model.fit(
            inputs,
            self.scaler.transform(labels),
            validation_data=(cv_inputs, self.scaler.transform(cv_labels)),
            batch_size=self.training.batch_size,
            epochs=self.training.max_epochs,
            shuffle=True,
            callbacks=callbacks,
            verbose=0,
        )
        losses = [float(v) for v in result.history["loss"]]
        val_losses = [float(v) for v in result.history["val_loss"]]
        self.history = {
            "epochs": len(losses),
            "best_epoch": int(np.argmin(val_losses)) + 1,
            "loss": losses,
            "val_loss": val_losses,
            # The learning rate each epoch ran at (changes only with ``lr_reduce_factor`` < 1).
            "learning_rate": [float(v) for v in result.history.get("learning_rate", [self.training.learning_rate] * len(losses))],
            "seconds": time.perf_counter() - started,
            "n_train": int(flux.shape[0]),
            "n_cv": int(cv_flux.shape[0]),
            "linear": linear,
            "fill": fill,
        }
        return self

    def calibrate(self, cv_flux: np.ndarray, cv_labels: np.ndarray, cv_snr: np.ndarray,
                  cv_masked: np.ndarray | None = None, cv_coadd: np.ndarray | None = None,
                  cv_label_errors: np.ndarray | None = None, cv_groups: np.ndarray | None = None) -> "SPCANet":
        """Fit the uncertainty model on the cross-validation spectra (see ``uncertainty``).

        With ``cv_masked`` and ``cv_coadd``, the context model (S/N, masked fraction,
        kind); without them, the S/N-only model.

        Parameters
        ----------
        cv_flux : ndarray, shape (n, 2, 2, pixels) or (n, 2, pixels), float32
            Cross-validation spectra, as for ``fit``.
        cv_labels : array_like, shape (n, n_labels), float64
            Their reference labels; NaN where missing.
        cv_snr : array_like, shape (n,), float64
            S/N of each spectrum.
        cv_masked : array_like, shape (n,), float64, optional
            Masked fraction of each input, 0-1.
        cv_coadd : array_like, shape (n,), bool, optional
            True for coadds, False for single exposures.
        cv_label_errors : array_like, shape (n, n_labels), float64, optional
            The reference labels' own 1-sigma errors, NaN where unknown; subtracted from
            the residuals' variance in quadrature, so that the uncertainties describe the
            error against the truth, not against the reference.
        cv_groups : array_like, shape (n,), optional
            The star of each spectrum: how many independent residuals back each S/N bin,
            which bounds how much of its variance the errors may take out.

        Returns
        -------
        SPCANet
            self, with ``noise_model`` set.

        Raises
        ------
        RuntimeError
            If the network is not trained or loaded.
        """
        residuals = self.predict(cv_flux) - np.asarray(cv_labels, dtype=np.float64)
        self.noise_model = fit_noise_model(residuals, cv_snr, cv_masked, cv_coadd, cv_label_errors, cv_groups)
        return self

    # -- prediction -----------------------------------------------------------------
    def _require_model(self) -> keras.Model:
        if self._model is None or self.scaler is None:
            raise RuntimeError("the network is not trained or loaded")
        return self._model

    def _inputs(self, arrays: np.ndarray) -> dict[str, np.ndarray]:
        """The network's inputs from (n, 2, 2, pixels) [flux, ivar] or (n, 2, pixels) flux.

        With a fill basis the fill's kernel writes the inputs themselves
        (``fill_masked_shifted``: the values of ``network_inputs`` of the filled flux).

        Raises
        ------
        ValueError
            If the model fills masked pixels (it has a fill basis) and no ivar is given.
        """
        flux, ivar = _split_arrays(arrays)
        if self.fill_basis is not None:
            if ivar is None:
                raise ValueError("this model fills masked pixels from its spectrum basis and needs the ivar: "
                                 "give (n, 2, 2, pixels) [flux, ivar] arrays, as the array shards hold them")
            shifted = fill_masked_shifted(flux, ivar, self.fill_basis, self.network.input_clip)
            return {BLUE_INPUT: shifted[:, 0, :, None], RED_INPUT: shifted[:, 1, :, None]}
        return network_inputs(flux, self.network.input_clip)

    def predict(self, flux: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Labels in physical units from normalised spectra.

        Parameters
        ----------
        flux : ndarray, shape (n, 2, 2, pixels) or (n, 2, pixels), float32
            [flux, ivar] x [blue, red] arrays, or flux alone for a model without a fill basis.
        batch_size : int, optional
            Spectra per forward pass. Each batch's inputs (masked pixels filled) are made
            just before its pass, so a chunk is never held whole as network inputs; the
            labels do not depend on it beyond rounding.

        Returns
        -------
        ndarray, shape (n, n_labels), float64
            Labels, Teff in K, the rest in dex.

        Raises
        ------
        RuntimeError
            If the network is not trained or loaded.
        ValueError
            If the model fills masked pixels and ``flux`` has no ivar.
        """
        model = self._require_model()
        n = flux.shape[0]
        if n == 0:
            return np.empty((0, self.network.n_labels))
        # Batch by batch with ``predict_on_batch``, filling each batch just before its pass,
        # not the whole chunk filled and then ``Model.predict`` (whose input pipeline runs
        # threads of its own beside TensorFlow's pools). On 2 cores: 31% faster for one
        # process on both cores, 20-29% for two single-threaded processes side by side,
        # -1% to +8% for one single-threaded process alone (benchmarks/batch_bench.py;
        # docs/capacity.md has the figures).
        standardised = np.empty((n, self.network.n_labels), dtype=np.float32)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            standardised[start:stop] = model.predict_on_batch(self._inputs(flux[start:stop]))
        return self.scaler.inverse(standardised)

    def predict_with_uncertainty(self, flux: np.ndarray, snr: np.ndarray, masked: np.ndarray | None = None,
                                 coadd: np.ndarray | None = None, batch_size: int = 1024,
                                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels, their 1-sigma uncertainties, and whether any label is outside the training range.

        Parameters
        ----------
        flux : ndarray, shape (n, 2, 2, pixels) or (n, 2, pixels), float32
            As for ``predict``.
        snr : array_like, shape (n,), float64
            S/N of each spectrum.
        masked : array_like, shape (n,), float64, optional
            Masked fraction of each input, 0-1; feeds the context noise model.
        coadd : array_like, shape (n,), bool, optional
            True for coadds; feeds the context noise model. An S/N-only model (older
            artifacts) ignores ``masked`` and ``coadd``.
        batch_size : int, optional
            Spectra per forward pass, as for ``predict``.

        Returns
        -------
        values : ndarray, shape (n, n_labels), float64
            Labels, Teff in K, the rest in dex.
        sigma : ndarray, shape (n, n_labels), float64
            Their 1-sigma uncertainties, same units (``uncertainty.noise_sigma``).
        outside : ndarray, shape (n,), bool
            Any label outside the training set's [min, max].

        Raises
        ------
        RuntimeError
            If the network has no calibrated uncertainty model, or is not trained or loaded.
        """
        if self.noise_model is None:
            raise RuntimeError("the network has no calibrated uncertainty model")
        values = self.predict(flux, batch_size)
        sigma = noise_sigma(self.noise_model, snr, masked, coadd)
        outside = np.any((values < self.label_ranges[0]) | (values > self.label_ranges[1]), axis=1)
        return values, sigma, outside

    # -- persistence ----------------------------------------------------------------
    def to_artifact(self, **provenance) -> Artifact:
        """Everything needed to use the model again.

        Parameters
        ----------
        **provenance
            Further manifest entries, e.g. the training-set hash and preprocessing version.

        Returns
        -------
        Artifact
            Manifest (configurations, label names, scaler, ranges, uncertainty model,
            history, seed, library versions), the weights, and the fill basis's arrays.

        Raises
        ------
        RuntimeError
            If the network is not trained or loaded.
        """
        model = self._require_model()
        manifest = {
            "network": self.network.as_dict(),
            "training": self.training.as_dict(),
            "label_names": self.label_names,
            "label_scaler": self.scaler.as_dict(),
            "label_ranges": self.label_ranges.tolist(),
            "uncertainty": self.noise_model.as_dict() if self.noise_model else None,
            "history": self.history,
            "seed": self.training.seed,
            "library_versions": library_versions(),
            **provenance,
        }
        return Artifact(manifest=manifest, weights=[np.asarray(w) for w in model.get_weights()],
                        arrays=self.fill_basis.arrays() if self.fill_basis is not None else {})

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> "SPCANet":
        """The estimator an artifact holds, ready to predict.

        Parameters
        ----------
        artifact : Artifact
            As read by ``artifact_read`` (already verified).

        Returns
        -------
        SPCANet
            Manifests of older artifacts without the newer network settings read with
            ``NETWORK_SETTINGS_OF_OLD_ARTIFACTS``.

        Raises
        ------
        ValueError
            If the weights' shapes do not fit the network the configuration describes.
        """
        manifest = artifact.manifest
        estimator = cls(
            NetworkConfig.from_mapping({**NETWORK_SETTINGS_OF_OLD_ARTIFACTS, **manifest["network"]}),
            TrainingConfig.from_mapping(manifest["training"]),
            manifest["label_names"],
        )
        estimator.scaler = LabelScaler.from_dict(manifest["label_scaler"])
        estimator.label_ranges = np.asarray(manifest["label_ranges"], dtype=np.float64)
        if manifest.get("uncertainty"):
            estimator.noise_model = noise_model_from_dict(manifest["uncertainty"])
        estimator.history = manifest.get("history", {})
        model = build_spcanet(estimator.network)
        expected = [tuple(w.shape) for w in model.get_weights()]
        actual = [tuple(w.shape) for w in artifact.weights]
        if expected != actual:
            raise ValueError("the artifact's weights do not fit the network its configuration describes")
        model.set_weights(artifact.weights)
        for layer in model.layers:
            if isinstance(layer, keras.layers.Normalization):
                layer.finalize_state()  # set_weights does not refresh the adapted mean and variance
        model.compile(optimizer=keras.optimizers.Adam(estimator.training.learning_rate), loss=masked_mse,
                      jit_compile=True)
        if artifact.arrays.get("fill_mean") is not None:
            estimator.fill_basis = FillBasis.from_arrays(artifact.arrays, estimator.network.fill_outlier_sigma)
        estimator._model = model
        return estimator
