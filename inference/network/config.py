"""Hyperparameters of the network and of its training, with the reasons for the defaults.

The paper (Fig. 5) fixes the shape: two branches of three Conv1D layers with batch
normalisation and a residual addition of the branch input, concatenation, two dense
layers each followed by dropout, 15 outputs. It does not give filter counts, kernel
sizes, units or the dropout rate; the defaults below are chosen and explained here, and
every one can be changed (``NetworkConfig.from_mapping``) and is stored in the artifact.
"""

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class NetworkConfig:
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
    # Two dense layers after the concatenation: 2 x 4000 inputs into 256 then 128 units.
    dense_units: tuple[int, int] = (256, 128)
    # Dropout after each dense layer; 0.1 regularises without slowing convergence much on
    # training sets of 10^4-10^5 spectra.
    dropout: float = 0.1
    # Input transform: flux - 1, clipped, so that the continuum is 0 and a missed cosmic
    # ray cannot dominate a batch; masked pixels arrive as flux 1 (ivar 0), hence 0.
    input_clip: float = 1.0

    @classmethod
    def from_mapping(cls, values: dict) -> "NetworkConfig":
        return _from_mapping(cls, values)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainingConfig:
    learning_rate: float = 1e-3  # Adam's usual default, as in the paper's Keras setup
    batch_size: int = 64
    max_epochs: int = 60
    # Early stopping on the cross-validation loss: stop after this many epochs without
    # improvement and keep the best weights.
    patience: int = 8
    seed: int = 20190601
    # Split: 6:2:1 training / test / cross-validation (paper). "star" keeps every spectrum
    # of a star on one side (honest default); "spectrum" reproduces the paper's split.
    split_by: str = "star"
    split_fractions: tuple[float, float, float] = (6.0, 2.0, 1.0)

    @classmethod
    def from_mapping(cls, values: dict) -> "TrainingConfig":
        return _from_mapping(cls, values)

    def as_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self):
        if self.split_by not in ("star", "spectrum"):
            raise ValueError(f"split_by must be 'star' or 'spectrum', got {self.split_by!r}")
        if len(self.split_fractions) != 3 or min(self.split_fractions) <= 0:
            raise ValueError("split_fractions must be three positive numbers (train, test, cv)")


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
