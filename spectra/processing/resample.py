"""Shift to the rest frame and resample onto the 0.1 A grids, carrying ivar and the mask.

Linear interpolation between the two native pixels around each grid point (found by
walking both grids together in the compiled kernel ``kernels.resample_rows``); the
variance is propagated as ``(1-w)^2 / ivar_left + w^2 / ivar_right``. A grid pixel is
masked (ivar 0) when either neighbour is unusable (masked, zero ivar, non-finite) or
when it falls outside the arm's native coverage, so bad pixels never leak into
good ones and nothing is extrapolated.
"""

import numpy as np

from .batch import PackedArms
from .kernels import resample_rows


def resample_to_grid(
    arms: PackedArms, grid: np.ndarray, rv_kms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Resample N arms onto ``grid`` (rest frame, Angstrom) given their RVs (km/s).

    Parameters
    ----------
    arms : PackedArms
        N arms on their native (observed-frame, vacuum) pixels.
    grid : ndarray, shape (G,), float64
        Increasing rest-frame vacuum wavelengths, Angstrom (e.g. ``grids.GRIDS[arm]``).
    rv_kms : array_like, shape (N,), float64
        Radial velocity of each arm, km/s; NaN reads as 0 (no shift). The rest frame is
        ``lambda_obs / (1 + RV / c)`` (SCIENCE.md, preprocessing step 1).

    Returns
    -------
    flux : ndarray, shape (N, G), float32
        Resampled flux, the input's units; 0 on masked pixels.
    ivar : ndarray, shape (N, G), float32
        Its inverse variance; 0 on masked pixels (an unusable neighbour, or outside the
        arm's coverage).
    """
    n = arms.wavelength.shape[0]
    rv = np.nan_to_num(np.asarray(rv_kms, dtype=np.float64), nan=0.0)
    flux = np.empty((n, grid.size), dtype=np.float32)
    ivar = np.empty((n, grid.size), dtype=np.float32)
    resample_rows(
        arms.wavelength, arms.flux, arms.ivar, arms.usable, arms.length,
        np.asarray(grid, dtype=np.float64), rv, flux, ivar,
    )
    return flux, ivar
