"""Label standardisation: the network is trained on (label - mean) / std per label."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelScaler:
    """Per-label standardisation, ``(label - mean) / std``.

    Parameters
    ----------
    mean : ndarray, shape (n_labels,), float64
        Mean of each label, in its unit (Teff K, the rest dex).
    std : ndarray, shape (n_labels,), float64
        Standard deviation of each label, same unit; 1 where it was 0.
    """

    mean: np.ndarray  # (n_labels,) float64
    std: np.ndarray  # (n_labels,) float64

    @classmethod
    def fit(cls, labels: np.ndarray) -> "LabelScaler":
        """Mean and standard deviation per label, ignoring NaN (missing reference labels).

        Parameters
        ----------
        labels : array_like, shape (n, n_labels), float64
            Labels in physical units; NaN where missing.

        Returns
        -------
        LabelScaler
            A zero spread is replaced by 1.

        Raises
        ------
        ValueError
            If a label has fewer than two finite values.
        """
        labels = np.asarray(labels, dtype=np.float64)
        counts = np.sum(np.isfinite(labels), axis=0)
        if np.any(counts < 2):
            missing = np.flatnonzero(counts < 2).tolist()
            raise ValueError(f"labels at positions {missing} have fewer than two finite values")
        mean = np.nanmean(labels, axis=0)
        std = np.nanstd(labels, axis=0)
        return cls(mean=mean, std=np.where(std > 0, std, 1.0))

    def transform(self, labels: np.ndarray) -> np.ndarray:
        """Standardise labels.

        Parameters
        ----------
        labels : array_like, shape (n, n_labels), float64
            Labels in physical units; NaN stays NaN.

        Returns
        -------
        ndarray, shape (n, n_labels), float32
            ``(labels - mean) / std``.
        """
        return ((np.asarray(labels, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def inverse(self, standardised: np.ndarray) -> np.ndarray:
        """Labels in physical units from standardised ones.

        Parameters
        ----------
        standardised : array_like, shape (n, n_labels)
            Standardised labels (the network's output).

        Returns
        -------
        ndarray, shape (n, n_labels), float64
            ``standardised * std + mean``.
        """
        return np.asarray(standardised, dtype=np.float64) * self.std + self.mean

    def as_dict(self) -> dict:
        """The scaler as JSON-serialisable lists, for the artifact's manifest.

        Returns
        -------
        dict
            ``{"mean": [...], "std": [...]}``.
        """
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> "LabelScaler":
        """The scaler ``as_dict`` wrote.

        Parameters
        ----------
        values : dict
            ``{"mean": [...], "std": [...]}``.

        Returns
        -------
        LabelScaler
        """
        return cls(mean=np.asarray(values["mean"], dtype=np.float64), std=np.asarray(values["std"], dtype=np.float64))
