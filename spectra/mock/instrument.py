"""From normalised model spectra to what the MRS records: the instrument part of the mock.

R ~ 7500 line spread, the stellar continuum (a blackbody slope) times a smooth
instrument response with edge roll-off, Doppler shift, sampling on MRS pixel grids,
photon plus read noise consistent with the written IVAR, cosmic rays, dead pixels.
Everything is vectorised over a batch of spectra.
"""

from dataclasses import dataclass

import numpy as np

from ..processing.kernels import C_KMS, resample_rows

READ_NOISE = 6.0  # counts per pixel
H_C_OVER_K = 1.438777e8  # Angstrom K


@dataclass(frozen=True)
class PixelGrid:
    """A native MRS pixel grid of one arm (vacuum Angstrom, increasing)."""

    wavelength: np.ndarray


# The real files: coadds on a log grid (step 1e-5 in log10), exposures 4136 pixels,
# blue ~4894-5397 A, red ~6270-6877 A (../shared/data/README.md).
COADD_GRIDS = {
    "blue": PixelGrid(10.0 ** (np.log10(4896.0) + 1e-5 * np.arange(4110))),
    "red": PixelGrid(10.0 ** (np.log10(6290.0) + 1e-5 * np.arange(3830))),
}
# Exposures start where the coadds do and stop about 1 A short of their end, which
# leaves the real coadds' short zero tails at the red end of each arm.
EXPOSURE_GRIDS = {
    arm: PixelGrid(np.linspace(grid.wavelength[0], grid.wavelength[-1] - 0.9, 4136)) for arm, grid in COADD_GRIDS.items()
}


def planck_shape(wavelength: np.ndarray, teff: np.ndarray) -> np.ndarray:
    """Blackbody B_lambda(T) over a grid, divided by its value at the grid's middle.

    Parameters
    ----------
    wavelength : ndarray, shape (P,), float64
        Wavelengths, Angstrom.
    teff : ndarray, shape (n,), float64
        Effective temperatures, K.

    Returns
    -------
    ndarray, shape (n, P), float64
        The Planck shape, 1 at ``wavelength[P // 2]``.
    """
    lam = wavelength[None, :]
    middle = wavelength[wavelength.size // 2]
    x = H_C_OVER_K / (lam * teff[:, None])
    x0 = H_C_OVER_K / (middle * teff[:, None])
    return (middle / lam) ** 5 * np.expm1(x0) / np.expm1(x)


def instrument_response(rng: np.random.Generator, wavelength: np.ndarray, n: int) -> np.ndarray:
    """A smooth response per fibre (blaze-like curvature, a tilt, and edge roll-off).

    Parameters
    ----------
    rng : numpy.random.Generator
        The random stream.
    wavelength : ndarray, shape (P,), float64
        The arm's pixel wavelengths, Angstrom (only their number is used).
    n : int
        Fibres (rows).

    Returns
    -------
    ndarray, shape (n, P), float64
        Relative response, >= 1e-3.
    """
    x = np.linspace(-1.0, 1.0, wavelength.size)[None, :]
    tilt = rng.normal(0.0, 0.12, (n, 1))
    curvature = rng.uniform(0.25, 0.45, (n, 1))
    ripple = rng.normal(0.0, 0.02, (n, 1)) * np.sin(np.pi * (1.5 * x + rng.uniform(0, 2, (n, 1))))
    edges = (1 - np.exp(-(x + 1.0) / 0.04)) * (1 - np.exp(-(1.0 - x) / 0.04))
    return np.clip((1.0 + tilt * x - curvature * x**2 + ripple) * edges, 1e-3, None)


def sample_on_grid(model_wave_vacuum: np.ndarray, model_flux: np.ndarray, grid: PixelGrid, rv_kms: np.ndarray) -> np.ndarray:
    """The rest-frame model seen at the grid's pixels for the given radial velocities.

    Parameters
    ----------
    model_wave_vacuum : ndarray, shape (P,), float64
        Rest-frame vacuum wavelengths of the model, Angstrom, increasing.
    model_flux : ndarray, shape (n, P), float
        Model flux.
    grid : PixelGrid
        The observed pixel grid (vacuum Angstrom).
    rv_kms : array_like, shape (n,), float64
        Radial velocities, km/s; pixel lambda_obs shows lambda_obs / (1 + v/c).

    Returns
    -------
    ndarray, shape (n, G), float32
        Linearly interpolated flux; 0 outside the model's coverage.
    """
    n = model_flux.shape[0]
    flux = np.empty((n, grid.wavelength.size), dtype=np.float32)
    ivar = np.empty_like(flux)
    # Pixel lambda_obs shows the rest-frame wavelength lambda_obs / (1 + v/c); the kernel
    # interpolates at grid * (1 + rv'/c), so rv' = c (1 / (1 + v/c) - 1).
    factor = C_KMS * (1.0 / (1.0 + np.asarray(rv_kms, dtype=np.float64) / C_KMS) - 1.0)
    source_wave = np.broadcast_to(model_wave_vacuum, (n, model_wave_vacuum.size))
    resample_rows(
        np.ascontiguousarray(source_wave), np.ascontiguousarray(model_flux, dtype=np.float32),
        np.ones_like(model_flux, dtype=np.float32), np.ones(model_flux.shape, dtype=np.bool_),
        np.full(n, model_wave_vacuum.size, dtype=np.int64), grid.wavelength, factor, flux, ivar,
    )
    return flux


def observe(
    rng: np.random.Generator, counts: np.ndarray, *, cosmic_rays_per_arm: float, dead_pixels: np.ndarray | None,
    return_noise: bool = False, noise_scale: float = 1.0,
) -> tuple[np.ndarray, ...]:
    """Noisy counts, their inverse variance and the pixel mask for expected ``counts`` (n, G).

    Noise is Poisson (as a Gaussian of variance = counts) plus read noise; the written
    IVAR is the inverse of that variance, so the noise is consistent with it. Cosmic rays
    hit random pixels; most are found and masked (mask bit 1), some are not. Dead pixels
    (a fixed set per spectrograph) carry zero flux, zero IVAR and mask bit 2.
    With ``return_noise`` a fourth array follows: the Gaussian noise alone (n, G) float64
    counts, without cosmic rays or dead pixels (for the ideal arrays, ``ideal.py``).
    ``noise_scale`` scales the noise drawn (0: noise-free counts, for tests); IVAR still
    describes the full noise model.

    Parameters
    ----------
    rng : numpy.random.Generator
        The random stream.
    counts : ndarray, shape (n, G), float64
        Expected counts per pixel.
    cosmic_rays_per_arm : float
        Mean cosmic-ray hits per row (Poisson); 80% are masked.
    dead_pixels : ndarray of int or None
        Column indices of dead pixels.
    return_noise : bool, optional
        Also return the Gaussian noise alone.
    noise_scale : float, optional
        Factor on the noise drawn.

    Returns
    -------
    flux : ndarray, shape (n, G), float32
        Noisy counts.
    ivar : ndarray, shape (n, G), float32
        1 / (counts + READ_NOISE**2), counts^-2; 0 on dead pixels.
    mask : ndarray, shape (n, G), int16
        Bit 1 found cosmic rays, bit 2 dead pixels.
    noise : ndarray, shape (n, G), float64
        Only with ``return_noise``: the Gaussian noise, counts.
    """
    variance = np.clip(counts, 0.0, None) + READ_NOISE**2
    noise = rng.standard_normal(counts.shape) * np.sqrt(variance)
    if noise_scale != 1.0:
        noise = noise * noise_scale
    flux = counts + noise
    ivar = (1.0 / variance).astype(np.float32)
    mask = np.zeros(counts.shape, dtype=np.int16)
    n, size = counts.shape
    hits = rng.poisson(cosmic_rays_per_arm, n)
    rows = np.repeat(np.arange(n), hits)
    columns = rng.integers(2, size - 2, rows.size)
    amplitude = rng.uniform(5.0, 60.0, rows.size) * np.sqrt(variance[rows, columns])
    flux[rows, columns] += amplitude
    flux[rows, columns + 1] += 0.4 * amplitude
    found = rng.random(rows.size) < 0.8
    mask[rows[found], columns[found]] |= 1
    mask[rows[found], columns[found] + 1] |= 1
    if dead_pixels is not None and dead_pixels.size:
        flux[:, dead_pixels] = 0.0
        ivar[:, dead_pixels] = 0.0
        mask[:, dead_pixels] |= 2
    if return_noise:
        return flux.astype(np.float32), ivar, mask, noise
    return flux.astype(np.float32), ivar, mask
