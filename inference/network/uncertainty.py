"""Per-label uncertainties: a noise model in S/N, calibrated on held-out spectra.

Method: the residual scatter of a trained network on spectra it did not learn from grows
as the S/N falls. Per label we model its variance as ``floor**2 + (slope / snr)**2``
(a systematic floor plus photon noise scaling as 1/S/N), with ``snr`` the weaker arm's
S/N. The two coefficients are fitted on the cross-validation set (never the test set),
from the variances of the residuals in S/N bins, by non-negative least squares weighted by
the number of spectra per bin. Plain variances, not robust ones: the residuals have
heavier tails than a Gaussian (a few stars are fitted badly), and the uncertainty is meant
to give (prediction - truth) / uncertainty a spread of 1, which a MAD-based width does not
(on the benchmark survey it left z spreads up to 1.9; plain variances, 0.85-1.27). The test set then checks the calibration: the
spread of (prediction - truth) / uncertainty should be close to 1.

Why not Monte Carlo dropout: it costs tens of forward passes per spectrum, which the
survey throughput cannot afford, and the spread of its samples reflects the dropout of
the dense layers, not the network's error on stars it has not seen. The S/N model costs nothing at prediction time and is
checked on unseen spectra.
"""

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

CALIBRATION_SNR_EDGES = np.array([10.0, 15.0, 20.0, 30.0, 45.0, 70.0, 100.0, 200.0, np.inf])
_MIN_PER_BIN = 8


def robust_std(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """1.4826 x the median absolute deviation, ignoring NaN."""
    median = np.nanmedian(values, axis=axis, keepdims=True)
    return 1.4826 * np.nanmedian(np.abs(values - median), axis=axis)


@dataclass(frozen=True)
class SnrNoiseModel:
    floor: np.ndarray  # (n_labels,) float64, label units
    slope: np.ndarray  # (n_labels,) float64, label units x S/N

    @classmethod
    def fit(cls, residuals: np.ndarray, snr: np.ndarray) -> "SnrNoiseModel":
        """Fit per label on residuals (n, n_labels) = prediction - truth, NaN where unknown."""
        residuals = np.asarray(residuals, dtype=np.float64)
        snr = np.asarray(snr, dtype=np.float64)
        n_labels = residuals.shape[1]
        floor = np.zeros(n_labels)
        slope = np.zeros(n_labels)
        bin_index = np.digitize(snr, CALIBRATION_SNR_EDGES) - 1
        for k in range(n_labels):
            rows, targets, weights = [], [], []
            for b in range(CALIBRATION_SNR_EDGES.size - 1):
                chosen = (bin_index == b) & np.isfinite(residuals[:, k])
                if chosen.sum() < _MIN_PER_BIN:
                    continue
                variance = np.var(residuals[chosen, k], ddof=1)
                inverse_snr2 = np.mean(1.0 / snr[chosen] ** 2)
                rows.append([1.0, inverse_snr2])
                targets.append(variance)
                # Relative error of a variance estimate ~ sqrt(2 / n): weight by
                # sqrt(n) / variance so that bins count by their precision.
                weights.append(np.sqrt(chosen.sum()) / max(variance, 1e-12))
            if not rows:
                finite = residuals[np.isfinite(residuals[:, k]), k]
                floor[k] = np.std(finite, ddof=1) if finite.size > 1 else np.nan
                continue
            design = np.asarray(rows) * np.asarray(weights)[:, None]
            solution, _ = nnls(design, np.asarray(targets) * np.asarray(weights))
            floor[k], slope[k] = np.sqrt(solution)
        return cls(floor=floor, slope=slope)

    def sigma(self, snr: np.ndarray) -> np.ndarray:
        """(n, n_labels) float64 uncertainties for spectra of the given S/N."""
        snr = np.asarray(snr, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = np.where(snr > 0, 1.0 / snr, np.nan)
        return np.sqrt(self.floor**2 + (self.slope * inverse[:, None]) ** 2)

    def as_dict(self) -> dict:
        return {"method": "snr-noise-model", "floor": self.floor.tolist(), "slope": self.slope.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> "SnrNoiseModel":
        return cls(floor=np.asarray(values["floor"], dtype=np.float64), slope=np.asarray(values["slope"], dtype=np.float64))


def calibration_summary(predicted: np.ndarray, truth: np.ndarray, sigma: np.ndarray, names: list[str]) -> dict:
    """Per label: spread of (prediction - truth) / sigma, and the share inside 1 sigma.

    A calibrated uncertainty has ``z_std`` and ``z_robust_std`` near 1 and ``within_1sigma``
    near 0.683.
    """
    z = (np.asarray(predicted, dtype=np.float64) - truth) / sigma
    summary = {}
    for k, name in enumerate(names):
        finite = z[np.isfinite(z[:, k]), k]
        summary[name] = {
            "n": int(finite.size),
            "z_std": float(np.std(finite)) if finite.size else None,
            "z_robust_std": float(robust_std(finite)) if finite.size else None,
            "within_1sigma": float(np.mean(np.abs(finite) < 1.0)) if finite.size else None,
        }
    return summary
