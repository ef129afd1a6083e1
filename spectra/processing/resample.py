"""Shift to the rest frame and resample onto the 0.1 A grids, carrying ivar and the mask.

Linear interpolation between the two native pixels around each grid point; the
variance is propagated as ``(1-w)^2 / ivar_left + w^2 / ivar_right``. A grid pixel is
masked (ivar 0) when either neighbour is unusable (masked, zero ivar, non-finite) or
when it falls outside the arm's native coverage, so bad pixels never leak into
good ones and nothing is extrapolated.
"""

import numpy as np

from .batch import PackedArms

C_KMS = 299_792.458


def locate(wavelength: np.ndarray, length: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index i per target with wavelength[i] <= target < wavelength[i + 1], batched.

    A dispersion solution is smooth, so a cubic fit of pixel index against wavelength
    (on every 16th pixel of each row) lands within a pixel or two; vectorised correction
    sweeps then make the index exact. Rows are (N, L) increasing; targets (N, M).
    """
    n, _ = wavelength.shape
    rows = np.arange(n)[:, None]
    last = np.maximum(length - 1, 1)
    upper = (last - 1)[:, None]
    # Cubic index(wavelength) per row, on x scaled to [-1, 1] for conditioning.
    anchors = np.minimum(np.arange(0, wavelength.shape[1], 16)[None, :], last[:, None])
    anchor_wave = wavelength[rows, anchors]
    low, high = wavelength[:, :1], wavelength[np.arange(n), last][:, None]
    span = np.where(high > low, high - low, 1.0)
    x = 2.0 * (anchor_wave - low) / span - 1.0
    basis = np.stack([np.ones_like(x), x, x**2, x**3], axis=2)  # (N, A, 4)
    normal = np.einsum("nai,naj->nij", basis, basis) + 1e-9 * np.eye(4)
    rhs = np.einsum("nai,na->ni", basis, anchors.astype(np.float64))
    coefficients = np.linalg.solve(normal, rhs[:, :, None])[:, :, 0]
    xt = 2.0 * (targets - low) / span - 1.0
    guess = coefficients[:, :1] + xt * (coefficients[:, 1:2] + xt * (coefficients[:, 2:3] + xt * coefficients[:, 3:4]))
    index = np.clip(np.floor(guess).astype(np.int64), 0, upper)
    for _ in range(wavelength.shape[1]):
        too_high = (wavelength[rows, index] > targets) & (index > 0)
        too_low = (wavelength[rows, index + 1] <= targets) & (index < upper)
        if not (too_high.any() or too_low.any()):
            break
        index = index - too_high + too_low
    return index


# Rows resampled together; sized so the working arrays stay in the CPU caches.
ROWS_PER_BLOCK = 128


def resample_to_grid(
    arms: PackedArms, grid: np.ndarray, rv_kms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Resample N arms onto ``grid`` (rest frame, Angstrom) given their RVs (km/s).

    Returns flux and ivar, each (N, len(grid)) float32; ivar is 0 on masked pixels and
    flux there is 0.
    """
    n = arms.wavelength.shape[0]
    rv = np.nan_to_num(np.asarray(rv_kms, dtype=np.float64), nan=0.0)
    flux = np.empty((n, grid.size), dtype=np.float32)
    ivar = np.empty((n, grid.size), dtype=np.float32)
    for start in range(0, n, ROWS_PER_BLOCK):
        block = slice(start, start + ROWS_PER_BLOCK)
        flux[block], ivar[block] = _resample_block(
            arms.wavelength[block], arms.flux[block], arms.ivar[block], arms.usable[block],
            arms.length[block], grid, rv[block],
        )
    return flux, ivar


def _resample_block(wavelength, flux, ivar, usable, length, grid, rv):
    n, width = wavelength.shape
    observed = grid[None, :] * (1.0 + rv[:, None] / C_KMS)  # lambda_obs = lambda_rest (1 + v/c)
    left = locate(wavelength, length, observed)
    flat_left = (left + (np.arange(n) * width)[:, None]).ravel()
    flat_right = flat_left + 1

    def take(values, index):
        return np.take(values.ravel(), index).reshape(n, grid.size)

    wave_left, wave_right = take(wavelength, flat_left), take(wavelength, flat_right)
    with np.errstate(divide="ignore", invalid="ignore"):  # padding of missing arms
        weight = ((observed - wave_left) / (wave_right - wave_left)).astype(np.float32)
    last_wave = wavelength[np.arange(n), np.maximum(length - 1, 0)][:, None]
    good = (observed >= wavelength[:, :1]) & (observed <= last_wave) & (length > 1)[:, None]
    good &= take(usable, flat_left) & take(usable, flat_right)
    flux_left, flux_right = take(flux, flat_left), take(flux, flat_right)
    ivar_left, ivar_right = take(ivar, flat_left), take(ivar, flat_right)
    with np.errstate(divide="ignore", invalid="ignore"):
        out_flux = flux_left + weight * (flux_right - flux_left)
        variance = (1 - weight) ** 2 / ivar_left + weight**2 / ivar_right
        out_ivar = np.where(good, 1.0 / variance, 0.0).astype(np.float32)
    out_flux = np.where(good, out_flux, 0.0).astype(np.float32)
    return out_flux, out_ivar
