"""Hyperparameters of the network and of its training, with the reasons for the defaults.

The paper (Fig. 5) fixes the shape: two branches of three Conv1D layers with batch
normalisation and a residual addition of the branch input, concatenation, two dense
layers each followed by dropout, 15 outputs. It does not give filter counts, kernel
sizes, units or the dropout rate; the defaults below are chosen and explained here, and
every one can be changed (``NetworkConfig.from_mapping``) and is stored in the artifact.
"""

from dataclasses import asdict, dataclass, fields


class _MappingConfig:
    """A configuration dataclass read from and written to a plain mapping (the artifact's
    manifest, a command's options)."""

    @classmethod
    def from_mapping(cls, values: dict):
        """The configuration from stored or user-given settings.

        Parameters
        ----------
        values : dict
            Field name to value; missing fields take the default; lists become tuples and
            other values are converted to the default's type.

        Returns
        -------
        The configuration, of the class it is called on.

        Raises
        ------
        ValueError
            If a name is not a field, or a value is out of range.
        """
        return _from_mapping(cls, values)

    def as_dict(self) -> dict:
        """The fields as a dict (tuples stay tuples), as stored in the artifact's manifest.

        Returns
        -------
        dict
            Field name to value.
        """
        return asdict(self)


@dataclass(frozen=True)
class NetworkConfig(_MappingConfig):
    """Hyperparameters of the network; the reason for each default is in the comment next to it.

    Parameters
    ----------
    pixels_per_arm : int
        Pixels per arm (4000: 0.1 Angstrom grids, blue 4950.0-5349.9, red 6350.0-6749.9).
    n_labels : int
        Outputs (15 labels, ``core.labels.LABELS``).
    filters : tuple of (int, int)
        Conv1D filters of the first two layers of each branch (the third has one).
    kernel_size : int
        Conv1D kernel width, pixels.
    pool_size : int
        Pixels averaged per branch output before the dense layers; must divide
        ``pixels_per_arm``; 1 = no pooling.
    dense_units : tuple of (int, int)
        Units of the two dense layers.
    dropout : float
        Dropout rate after each dense layer, in [0, 1).
    l2 : float
        L2 penalty on the dense weights, >= 0.
    standardise : {"global", "pixel"}
        Input standardisation: one mean and spread per arm, or per pixel.
    input_noise : float
        Gaussian noise added to the standardised inputs in training, >= 0; 0 = off.
    ridge_lambdas : tuple of float
        Grid of ridge penalties (> 0) for the frozen linear part; () = no linear part.
    input_clip : float
        Inputs are flux - 1 clipped to +-``input_clip``.
    fill_components : int
        Principal components of the masked-pixel fill, >= 0; 0 = masked pixels stay flux 1.
    fill_outlier_sigma : float
        Pixels this many sigma off the fill model are filled too, >= 0.

    Raises
    ------
    ValueError
        If a value is outside the ranges above.

    Notes
    -----
    The shape is the SPCANet paper's Fig. 5 (Wang et al. 2020, ApJ 891, 23); the paper
    gives no filter counts, kernel sizes, units or dropout rate. The measured effects of
    the choices are in docs/network.md and docs/preprocessing.md.
    """

    pixels_per_arm: int = 4000  # 0.1 A grids, blue 4950.0-5349.9 and red 6350.0-6749.9
    n_labels: int = 15
    # Conv1D filters of the first two layers of each branch. Eight filters are enough to
    # learn line-shape detectors at R ~ 7500 and keep a batch of 10,000 spectra cheap on
    # CPU; the third layer has one filter so that its output can be added to the
    # one-channel branch input, as Fig. 5 draws it.
    filters: tuple[int, int] = (8, 8)
    # Five pixels (0.5 A) per layer; three stacked layers see 13 pixels (1.3 A), more than
    # a resolution element at 5000-6700 A (0.7-0.9 A FWHM), so each can shape a line.
    kernel_size: int = 5
    # Each branch's output (the residual sum, one channel) is averaged over this many
    # pixels (1.6 A) before the dense layers. Not in the paper: with the full 2 x 4000
    # pixels the first dense layer has 2 million weights, and on training sets of a few
    # thousand spectra (a few hundred stars) it memorises the stars. On the benchmark
    # survey pooling by 16 or 32 cut the test-set scatter from 149 K to 81-82 K in Teff
    # and from 0.25 to 0.16 in log g; with the linear part below, 16 did a little better
    # than 32 at S/N above 30 (docs/network.md). 1 = no pooling.
    pool_size: int = 16
    # Two dense layers after the concatenation: 2 x 4000 / pool_size inputs (500) into 256
    # then 128 units.
    dense_units: tuple[int, int] = (256, 128)
    # Dropout after each dense layer and an L2 penalty on the dense weights: both measured
    # on the benchmark survey, where the network overfits within a few epochs without them.
    dropout: float = 0.3
    l2: float = 1e-3
    # Input standardisation before the branches: "global" subtracts the training set's mean
    # and divides by its spread, one number per arm; "pixel" does it pixel by pixel, which
    # gives pure-noise continuum pixels the same weight as line cores and generalised worse
    # on the benchmark survey.
    standardise: str = "global"
    # Gaussian noise (in standardised units) added to the inputs while training only, a
    # regulariser against memorising each spectrum's noise. Off by default: with pooling
    # by 32 it was not measured; with pooling by 8 it helped Teff and log g, with pooling
    # by 16 it helped Teff and hurt log g (docs/network.md). 0 = off.
    input_noise: float = 0.0
    # A linear part of the output: a ridge regression from the input pixels to the labels,
    # solved in closed form before training and frozen; the network learns what it leaves
    # (``linear``). Not in the paper: on the benchmark survey it brought the test-set
    # scatter from 82 K to 48 K in Teff and from 0.161 to 0.095 in log g, where the ridge
    # alone gave 51 K and 0.098 (docs/network.md).
    # The penalty of each label is the value of this grid (sum-of-squares loss, input
    # pixel units) with the smallest error on the cross-validation spectra. Steps of about
    # 2: with steps of 3 the benchmark's Teff took 10 where 20-30 was better. () = no linear part.
    ridge_lambdas: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
    # Input transform: flux - 1, clipped, so that the continuum is 0 and a missed cosmic
    # ray cannot dominate a batch; masked pixels arrive as flux 1 (ivar 0), hence 0.
    input_clip: float = 1.0
    # Masked pixels (ivar 0) filled from a low-rank model of the normalised spectra with
    # this many principal components, learned from the training spectra and stored in the
    # artifact (``inputs``), instead of flux 1; pixels more than ``fill_outlier_sigma``
    # sigma (noise and model error together) off that model are filled too. Measured with
    # benchmarks/fidelity_bench.py (docs/preprocessing.md): on the harsh mock the ridge's
    # Teff went from 198 K to 75 K (coadds) with the fill and to 36 K with the rejection
    # at 5 sigma. 0 = masked pixels stay flux 1 (artifacts from before the fill).
    fill_components: int = 20
    fill_outlier_sigma: float = 5.0

    def __post_init__(self):
        if self.standardise not in ("global", "pixel"):
            raise ValueError(f"standardise must be 'global' or 'pixel', got {self.standardise!r}")
        if self.pool_size < 1 or self.pixels_per_arm % self.pool_size:
            raise ValueError(f"pool_size must divide pixels_per_arm ({self.pixels_per_arm}), got {self.pool_size}")
        if any(value <= 0 for value in self.ridge_lambdas):
            raise ValueError(f"ridge_lambdas must be positive, got {self.ridge_lambdas}")
        if self.fill_components < 0 or self.fill_outlier_sigma < 0:
            raise ValueError("fill_components and fill_outlier_sigma must not be negative")
        if not 0 <= self.dropout < 1 or self.l2 < 0 or self.input_noise < 0:
            raise ValueError("dropout must be in [0, 1); l2 and input_noise must not be negative")


@dataclass(frozen=True)
class TrainingConfig(_MappingConfig):
    """Hyperparameters of the training.

    Parameters
    ----------
    learning_rate : float
        Adam's learning rate.
    batch_size : int
        Spectra per batch.
    max_epochs : int
        Most epochs trained.
    patience : int
        Epochs without improvement of the cross-validation loss before stopping (the best
        weights are kept).
    lr_reduce_factor : float
        When the cross-validation loss has not improved for ``lr_reduce_patience`` epochs,
        the learning rate is multiplied by this factor (Keras ``ReduceLROnPlateau``);
        1.0 = a constant learning rate, as the paper's.
    lr_reduce_patience : int
        Epochs without improvement before the learning rate is reduced.
    seed : int
        Seed of the split, the weights' initialisation and the shuffling.
    split_by : {"star", "spectrum"}
        "star" keeps every spectrum of a star on one side; "spectrum" is the paper's split.
    split_fractions : tuple of (float, float, float)
        Training / test / cross-validation proportions, > 0 (the paper's 6:2:1).

    Raises
    ------
    ValueError
        If ``split_by`` or ``split_fractions`` is not as above.

    Notes
    -----
    Adam and the 6:2:1 split at random over spectra are the SPCANet paper's (Wang et al.
    2020, ApJ 891, 23, sect. 3.2; SCIENCE.md "The network").
    """

    learning_rate: float = 1e-3  # Adam's usual default, as in the paper's Keras setup
    batch_size: int = 64
    max_epochs: int = 60
    # Early stopping on the cross-validation loss: stop after this many epochs without
    # improvement and keep the best weights.
    patience: int = 8
    # Learning rate reduced on a plateau of the CV loss (docs/network.md, "Training").
    lr_reduce_factor: float = 1.0
    lr_reduce_patience: int = 3
    seed: int = 20190601
    # Split: 6:2:1 training / test / cross-validation (paper). "star" keeps every spectrum
    # of a star on one side (honest default); "spectrum" reproduces the paper's split.
    split_by: str = "star"
    split_fractions: tuple[float, float, float] = (6.0, 2.0, 1.0)

    def __post_init__(self):
        if self.split_by not in ("star", "spectrum"):
            raise ValueError(f"split_by must be 'star' or 'spectrum', got {self.split_by!r}")
        if len(self.split_fractions) != 3 or min(self.split_fractions) <= 0:
            raise ValueError("split_fractions must be three positive numbers (train, test, cv)")
        if not 0 < self.lr_reduce_factor <= 1 or self.lr_reduce_patience < 1:
            raise ValueError("lr_reduce_factor must be in (0, 1] and lr_reduce_patience at least 1")


def _from_mapping(cls, values: dict):
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings: {sorted(unknown)}")
    converted = {}
    for name, value in values.items():
        default = getattr(cls, name, None)
        converted[name] = tuple(value) if isinstance(default, tuple) else type(default)(value)
    return cls(**converted)
