"""The linear part of SPCANet's output: a ridge regression from the input pixels to the labels.

Why it is there: on training sets of a few thousand spectra of a few hundred stars the
convolutional branches and dense layers learn the smooth, nearly linear part of the
label-spectrum relation worse than a ridge regression on the same pixels does (on the
benchmark survey: Teff scatter 82 K for the network alone, 51 K for the ridge, 48 K for
both, the network learning what the ridge leaves; docs/network.md). The ridge is solved in
closed form before the network trains, its regularisation chosen per label on the
cross-validation spectra, and it becomes a frozen Dense layer added to the network's output.

Pure numpy and scipy, no Django. The solve is in whichever of the two equivalent forms is
smaller: the Gram matrix of the spectra (n x n) when there are fewer spectra than pixels,
the pixel covariance (pixels x pixels, accumulated in blocks) otherwise, so the working
memory is a few arrays of at most pixels^2 float64 (512 MB each for 2 x 4000 pixels)
whatever the size of the training set.
"""

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

# Rows per block when accumulating the pixel covariance of a large training set.
_BLOCK = 4096


@dataclass(frozen=True)
class RidgeFit:
    """A fitted ridge regression from the input pixels to the labels.

    Parameters
    ----------
    weights : ndarray, shape (pixels, n_labels), float64
        Regression weights, label units per input unit.
    intercept : ndarray, shape (n_labels,), float64
        Unpenalised intercepts, label units.
    lambdas : ndarray, shape (n_labels,), float64
        The regularisation chosen for each label.
    cv_rmse : ndarray, shape (n_labels,), float64
        Its RMS error on the cross-validation spectra, label units; NaN where there were none.
    """

    weights: np.ndarray  # (pixels, n_labels) float64
    intercept: np.ndarray  # (n_labels,) float64
    lambdas: np.ndarray  # (n_labels,) float64, the regularisation chosen for each label
    cv_rmse: np.ndarray  # (n_labels,) float64, its RMS error on the cross-validation spectra (NaN: none)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Labels from the network's input pixels.

        Parameters
        ----------
        pixels : array_like, shape (n, pixels)
            Inputs, the arms side by side, as for ``fit_ridge``.

        Returns
        -------
        ndarray, shape (n, n_labels), float64
            Labels in physical units (Teff K, the rest dex).
        """
        return np.asarray(pixels, dtype=np.float64) @ self.weights + self.intercept


def fit_ridge(
    pixels: np.ndarray,
    labels: np.ndarray,
    cv_pixels: np.ndarray,
    cv_labels: np.ndarray,
    lambdas: tuple[float, ...],
) -> RidgeFit:
    """Ridge regression of each label on the pixels, with an unpenalised intercept.

    Parameters
    ----------
    pixels : ndarray, shape (n, p), float
        Training inputs (the network's input transform of the normalised flux, arms side by side).
    labels : (n, k) float
        Training labels, NaN where the reference has none: each label is fitted on the
        spectra that have it.
    cv_pixels, cv_labels : (m, p), (m, k)
        Cross-validation spectra: for each label the lambda with the smallest RMS error on
        them is kept. A label with fewer than two CV values gets the middle lambda of the grid.
    lambdas : tuple of float
        Grid of penalties on the squared weights (sum-of-squares loss, raw pixel units), > 0.

    Returns
    -------
    RidgeFit
        Weights, intercepts, the chosen lambdas and their CV RMS errors.

    Raises
    ------
    ValueError
        If ``lambdas`` is empty or not all positive, or a label has fewer than two finite
        training values.
    """
    labels = np.asarray(labels, dtype=np.float64)
    cv_pixels = np.asarray(cv_pixels, dtype=np.float64)
    cv_labels = np.asarray(cv_labels, dtype=np.float64)
    grid = np.asarray(sorted(lambdas), dtype=np.float64)
    if grid.size == 0 or np.any(grid <= 0):
        raise ValueError("the ridge needs at least one positive lambda")
    n, p = pixels.shape
    k = labels.shape[1]
    known = np.isfinite(labels)
    counts = known.sum(axis=0)
    if np.any(counts < 2):
        raise ValueError(f"labels at positions {np.flatnonzero(counts < 2).tolist()} have fewer than two finite values")
    means = np.where(known, labels, 0.0).sum(axis=0) / counts
    targets = np.where(known, labels - means, 0.0)  # centred; 0 where missing, so those rows add nothing
    centre = _blockwise_mean(pixels)
    # One matrix serves every label: each takes its own rows out of it and is re-centred on
    # them, so that the intercept is exact when labels are missing.
    if n <= p:
        centred = np.asarray(pixels, dtype=np.float64) - centre  # at most p x p float64
        gram = centred @ centred.T
    else:
        covariance = np.zeros((p, p), dtype=np.float64)
        cross = np.zeros((p, k), dtype=np.float64)
        for start in range(0, n, _BLOCK):
            block = np.asarray(pixels[start : start + _BLOCK], dtype=np.float64) - centre
            covariance += block.T @ block
            cross += block.T @ targets[start : start + _BLOCK]

    weights = np.zeros((p, k), dtype=np.float64)
    intercept = np.zeros(k, dtype=np.float64)
    chosen = np.empty(k, dtype=np.float64)
    cv_rmse = np.full(k, np.nan, dtype=np.float64)
    row_set = None
    for j in range(k):
        rows = known[:, j]
        if row_set is None or not np.array_equal(rows, row_set.rows):  # labels with the same rows share factors
            if n <= p:
                row_set = _DualRows(centred, gram, targets, rows)
            else:
                row_set = _PrimalRows(pixels, centre, covariance, cross, rows)

        def fitted(index: int, j: int = j, row_set=row_set) -> tuple[np.ndarray, float]:
            w = row_set.weights(grid[index], j)
            return w, means[j] - (centre + row_set.shift) @ w

        cv_rows = np.isfinite(cv_labels[:, j])
        middle = grid.size // 2
        if cv_rows.sum() < 2:
            chosen[j] = grid[middle]
            weights[:, j], intercept[j] = fitted(middle)
            continue
        cv_x, cv_y = cv_pixels[cv_rows], cv_labels[cv_rows, j]
        scores: dict[int, float] = {}

        def score(index: int, cv_x=cv_x, cv_y=cv_y, scores=scores, fitted=fitted) -> float:
            w, b = fitted(index)
            scores[index] = float(np.sqrt(np.mean((cv_x @ w + b - cv_y) ** 2)))
            return scores[index]

        # The CV error is close to U-shaped in log lambda: walk from the middle of the grid
        # towards the better neighbour until it stops improving (3-4 solves, not the whole grid).
        score(middle)
        for step in (-1, 1):
            index = middle
            while 0 <= index + step < grid.size and score(index + step) < scores[index]:
                index += step
            if index != middle:
                break
        best = min(scores, key=scores.get)
        chosen[j], cv_rmse[j] = grid[best], scores[best]
        weights[:, j], intercept[j] = fitted(best)
    return RidgeFit(weights=weights, intercept=intercept, lambdas=chosen, cv_rmse=cv_rmse)


def _blockwise_mean(pixels: np.ndarray) -> np.ndarray:
    total = np.zeros(pixels.shape[1], dtype=np.float64)
    for start in range(0, pixels.shape[0], _BLOCK):
        total += np.asarray(pixels[start : start + _BLOCK], dtype=np.float64).sum(axis=0)
    return total / pixels.shape[0]


class _RowSet:
    """The regression system of one set of rows (the spectra one label has), re-centred on
    them, with its Cholesky factors cached per lambda."""

    rows: np.ndarray
    shift: np.ndarray  # the mean of these rows' centred pixels
    system: np.ndarray

    def _factor(self, lam: float) -> tuple:
        if lam not in self.factors:
            self.factors[lam] = cho_factor(self.system + lam * np.eye(len(self.system)), check_finite=False)
        return self.factors[lam]


class _DualRows(_RowSet):
    """Gram form: solves (x x^T + lambda) a = y, w = x^T a, with x these rows' re-centred pixels."""

    def __init__(self, centred: np.ndarray, gram: np.ndarray, targets: np.ndarray, rows: np.ndarray):
        self.rows = rows
        self.x = centred[rows]
        self.shift = self.x.mean(axis=0)
        self.x -= self.shift
        g = gram[np.ix_(rows, rows)]
        means = g.mean(axis=0)
        self.system = g - means[:, None] - means[None, :] + means.mean()  # equals x x^T after re-centring
        self.targets = targets[rows]
        self.factors: dict[float, tuple] = {}

    def weights(self, lam: float, label: int) -> np.ndarray:
        return self.x.T @ cho_solve(self._factor(lam), self.targets[:, label], check_finite=False)


class _PrimalRows(_RowSet):
    """Covariance form: the full pixel covariance less the rows this label lacks, re-centred;
    solves (x^T x + lambda) w = x^T y."""

    def __init__(self, pixels: np.ndarray, centre: np.ndarray, covariance: np.ndarray, cross: np.ndarray,
                 rows: np.ndarray):
        self.rows = rows
        missing = np.asarray(pixels[~rows], dtype=np.float64) - centre
        count = int(rows.sum())
        self.shift = -missing.sum(axis=0) / count  # the centred pixels sum to 0 over all rows
        self.system = covariance - missing.T @ missing - count * np.outer(self.shift, self.shift)
        self.cross = cross  # x^T y per label; missing labels were zeros, so they add nothing
        self.factors: dict[float, tuple] = {}

    def weights(self, lam: float, label: int) -> np.ndarray:
        return cho_solve(self._factor(lam), self.cross[:, label], check_finite=False)
