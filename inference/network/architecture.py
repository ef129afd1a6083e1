"""The SPCANet graph (paper Fig. 5), built with the Keras functional API."""

import keras

from .config import NetworkConfig

BLUE_INPUT = "blue"
RED_INPUT = "red"


def _branch(spectrum: keras.KerasTensor, config: NetworkConfig, arm: str) -> keras.KerasTensor:
    """Standardisation, then three Conv1D layers, each with batch normalisation, plus the
    (standardised) branch input, averaged over ``pool_size`` pixels."""
    # Line-depth changes of a few per cent are the signal; standardising by the training
    # set's mean and spread (set by ``adapt`` before training, stored with the weights)
    # puts them on the unit scale the optimiser works well with.
    axis = 1 if config.standardise == "pixel" else None
    inputs = keras.layers.Normalization(axis=axis, name=f"{arm}_standardise")(spectrum)
    if config.input_noise > 0:
        inputs = keras.layers.GaussianNoise(config.input_noise, name=f"{arm}_input_noise")(inputs)
    hidden = inputs
    for i, filters in enumerate(config.filters, start=1):
        hidden = keras.layers.Conv1D(filters, config.kernel_size, padding="same", name=f"{arm}_conv{i}")(hidden)
        hidden = keras.layers.BatchNormalization(name=f"{arm}_bn{i}")(hidden)
        hidden = keras.layers.Activation("relu", name=f"{arm}_relu{i}")(hidden)
    # The third layer maps back to one channel so that it can be added to the input: the
    # branch learns a correction to the spectrum (a residual), not a replacement of it.
    hidden = keras.layers.Conv1D(1, config.kernel_size, padding="same", name=f"{arm}_conv3")(hidden)
    hidden = keras.layers.BatchNormalization(name=f"{arm}_bn3")(hidden)
    residual = keras.layers.Add(name=f"{arm}_residual")([inputs, hidden])
    if config.pool_size > 1:
        residual = keras.layers.AveragePooling1D(config.pool_size, name=f"{arm}_pool")(residual)
    return keras.layers.Flatten(name=f"{arm}_flatten")(residual)


def build_spcanet(config: NetworkConfig) -> keras.Model:
    """An uncompiled SPCANet with inputs ``blue`` and ``red`` of shape (pixels, 1).

    The shape is the SPCANet paper's Fig. 5 (Wang et al. 2020, ApJ 891, 23): per arm three
    Conv1D layers with batch normalisation and a residual addition of the branch input;
    concatenation; two dense layers each followed by dropout; one output per label. Input
    standardisation, pooling and the frozen linear part are this project's additions
    (``NetworkConfig``).

    Parameters
    ----------
    config : NetworkConfig
        Layer sizes and options.

    Returns
    -------
    keras.Model
        Inputs ``{"blue": (batch, pixels_per_arm, 1), "red": (batch, pixels_per_arm, 1)}``
        float32 (normalised flux, prepared by ``estimator.network_inputs``); output
        (batch, n_labels) float32, labels in standardised units (``LabelScaler``).
    """
    blue = keras.Input(shape=(config.pixels_per_arm, 1), name=BLUE_INPUT, dtype="float32")
    red = keras.Input(shape=(config.pixels_per_arm, 1), name=RED_INPUT, dtype="float32")
    hidden = keras.layers.Concatenate(name="arms")([_branch(blue, config, "blue"), _branch(red, config, "red")])
    for i, units in enumerate(config.dense_units, start=1):
        regulariser = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
        hidden = keras.layers.Dense(units, activation="relu", kernel_regularizer=regulariser, name=f"dense{i}")(hidden)
        hidden = keras.layers.Dropout(config.dropout, name=f"dropout{i}")(hidden)
    outputs = keras.layers.Dense(config.n_labels, name="labels")(hidden)
    if config.ridge_lambdas:
        # The ridge regression of ``linear``, set by ``fit`` before training and never trained:
        # the layers above learn the residual of the labels from it.
        pixels = keras.layers.Concatenate(name="pixels")(
            [keras.layers.Flatten(name="blue_pixels")(blue), keras.layers.Flatten(name="red_pixels")(red)])
        linear = keras.layers.Dense(config.n_labels, kernel_initializer="zeros", trainable=False,
                                    name="linear")(pixels)
        outputs = keras.layers.Add(name="labels_plus_linear")([outputs, linear])
    return keras.Model(inputs={BLUE_INPUT: blue, RED_INPUT: red}, outputs=outputs, name="spcanet")
