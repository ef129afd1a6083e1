"""Arms of many spectra packed into rectangular arrays, so that every step is vectorised."""

from dataclasses import dataclass

import numpy as np

# Padding wavelength beyond any real one; keeps each padded row increasing.
PAD_WAVELENGTH = 9.0e4


@dataclass
class PackedArms:
    """N arms on their native pixels, padded to the longest.

    wavelength (N, L) float64 increasing per row (padding: PAD_WAVELENGTH);
    flux, ivar (N, L) float32; usable (N, L) bool; length (N,) int64 real pixels per row
    (0 for a missing arm).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    usable: np.ndarray
    length: np.ndarray

    @property
    def present(self) -> np.ndarray:
        return self.length > 1


def pack_arms(arms: list) -> PackedArms:
    """Pack ``spectra.io.Arm`` objects (None for a missing arm) into arrays."""
    n = len(arms)
    length = np.array([0 if arm is None else arm.wavelength.size for arm in arms], dtype=np.int64)
    longest = max(int(length.max(initial=0)), 2)
    wavelength = np.full((n, longest), PAD_WAVELENGTH, dtype=np.float64)
    flux = np.zeros((n, longest), dtype=np.float32)
    ivar = np.zeros((n, longest), dtype=np.float32)
    mask = np.zeros((n, longest), dtype=np.int32)
    for row, arm in enumerate(arms):  # copying into the packed block; the math is batched below
        if arm is not None:
            size = length[row]
            wavelength[row, :size] = arm.wavelength
            flux[row, :size] = arm.flux
            ivar[row, :size] = arm.ivar
            mask[row, :size] = arm.mask
    usable = (ivar > 0) & (mask == 0) & np.isfinite(flux)  # Arm.usable, for the whole block
    return PackedArms(wavelength, flux, ivar, usable, length)
