"""Label standardisation: the network is trained on (label - mean) / std per label."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelScaler:
    mean: np.ndarray  # (n_labels,) float64
    std: np.ndarray  # (n_labels,) float64

    @classmethod
    def fit(cls, labels: np.ndarray) -> "LabelScaler":
        """Mean and standard deviation per label, ignoring NaN (missing reference labels)."""
        labels = np.asarray(labels, dtype=np.float64)
        counts = np.sum(np.isfinite(labels), axis=0)
        if np.any(counts < 2):
            missing = np.flatnonzero(counts < 2).tolist()
            raise ValueError(f"labels at positions {missing} have fewer than two finite values")
        mean = np.nanmean(labels, axis=0)
        std = np.nanstd(labels, axis=0)
        return cls(mean=mean, std=np.where(std > 0, std, 1.0))

    def transform(self, labels: np.ndarray) -> np.ndarray:
        return ((np.asarray(labels, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def inverse(self, standardised: np.ndarray) -> np.ndarray:
        return np.asarray(standardised, dtype=np.float64) * self.std + self.mean

    def as_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> "LabelScaler":
        return cls(mean=np.asarray(values["mean"], dtype=np.float64), std=np.asarray(values["std"], dtype=np.float64))
