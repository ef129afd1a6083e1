"""Pseudo-continuum: a 4th-order polynomial fitted with asymmetric iterative rejection.

As in the SPCANet paper: fit, reject pixels more than 1 sigma below the fit (absorption
lines) or 4 sigma above (emission, cosmic rays), refit. The paper does not say when to
stop, and this asymmetric rejection never settles by itself (each pass drops roughly the
lowest 16% of what is left, climbing towards the upper envelope), so the number of
passes is a parameter: 10 passes put the median normalised flux of a real G/K-type
LAMOST coadd at 0.92 (blue) and 0.98 (red), near the true-continuum medians of a
solar-type model spectrum (0.93 and 0.99).
Masked pixels (ivar 0) never enter the fit. Solved for a whole batch at once through
the normal equations (one matrix product per iteration), on x scaled to [-1, 1].
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ContinuumConfig:
    order: int = 4
    reject_below: float = 1.0  # sigma
    reject_above: float = 4.0  # sigma
    max_iterations: int = 10  # passes of fit-and-reject (see the module docstring)
    min_kept_fraction: float = 0.05  # below this the fit is flagged CONTINUUM_FIT_POOR


def fit_continuum(
    flux: np.ndarray, ivar: np.ndarray, config: ContinuumConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fit the continuum of N spectra on one common grid.

    Parameters
    ----------
    flux, ivar : (N, M) float32
        Spectra on a common pixel grid; ivar 0 marks masked pixels.

    Returns
    -------
    continuum : (N, M) float32
    kept_fraction : (N,) float64
        Fraction of all M pixels kept in the final fit.

    Notes
    -----
    The basis is Legendre polynomials on x in [-1, 1]: on a uniform grid they are nearly
    orthogonal, so the normal equations stay well conditioned in float32. The result
    equals the ordinary 4th-order polynomial fit.
    """
    config = config or ContinuumConfig()
    n, m = flux.shape
    k = config.order + 1
    basis = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, m), config.order).astype(np.float32)  # (M, K)
    products = (basis[:, :, None] * basis[:, None, :]).reshape(m, k * k)
    continuum = np.empty((n, m), dtype=np.float32)
    kept_fraction = np.empty(n, dtype=np.float64)
    for start in range(0, n, ROWS_PER_BLOCK):  # blocks that stay in cache
        block = slice(start, start + ROWS_PER_BLOCK)
        continuum[block], kept_fraction[block] = _fit_block(
            np.asarray(flux[block], dtype=np.float32), ivar[block] > 0, basis, products, config
        )
    return continuum, kept_fraction


# Rows fitted together; sized so the working arrays stay in the CPU caches.
ROWS_PER_BLOCK = 128


def _fit_block(flux, usable, basis, products, config):
    n, m = flux.shape
    k = basis.shape[1]
    kept = usable
    continuum = np.zeros_like(flux)
    for _ in range(config.max_iterations):
        weights = kept.astype(np.float32)
        normal = (weights @ products).reshape(n, k, k).astype(np.float64) + 1e-6 * np.eye(k)
        rhs = ((weights * flux) @ basis).astype(np.float64)
        coefficients = np.linalg.solve(normal, rhs[:, :, None])[:, :, 0].astype(np.float32)
        continuum = coefficients @ basis.T
        residual = flux - continuum
        residual *= weights
        sigma = np.sqrt(np.einsum("ij,ij->i", residual, residual) / np.maximum(weights.sum(axis=1), 1.0))[:, None]
        residual = flux - continuum
        new_kept = usable & (residual > -config.reject_below * sigma) & (residual < config.reject_above * sigma)
        if np.array_equal(new_kept, kept):
            break
        kept = new_kept
    return continuum, kept.sum(axis=1) / m


def normalise(
    flux: np.ndarray, ivar: np.ndarray, continuum: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Divide by the continuum; masked pixels (or a non-positive continuum) get flux 1, ivar 0."""
    good = (ivar > 0) & (continuum > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.where(good, flux / continuum, 1.0).astype(np.float32)
        normalised_ivar = np.where(good, ivar * continuum**2, 0.0).astype(np.float32)
    return normalised, normalised_ivar
