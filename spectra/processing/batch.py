"""Arms of many spectra packed into rectangular arrays, so that every step is vectorised."""

from dataclasses import dataclass

import numpy as np

# Padding wavelength beyond any real one; keeps each padded row increasing.
PAD_WAVELENGTH = 9.0e4


@dataclass
class PackedArms:
    """N arms on their native pixels, padded to the longest.

    Parameters
    ----------
    wavelength : ndarray, shape (N, L), float64
        Vacuum wavelengths, Angstrom, increasing per row (padding: ``PAD_WAVELENGTH``).
    flux : ndarray, shape (N, L), float32
        Flux in the file's units (0 on padding).
    ivar : ndarray, shape (N, L), float32
        Inverse variance of the flux (0 on padding and unusable pixels).
    usable : ndarray, shape (N, L), bool
        Finite positive ivar, finite flux and no mask bit (``spectra.io.types.Arm.usable``);
        on the rows of ``mask_kept``, a masked pixel with positive flux too.
    length : ndarray, shape (N,), int64
        Real pixels per row (0 for a missing arm).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    usable: np.ndarray
    length: np.ndarray

    @property
    def present(self) -> np.ndarray:
        """Which rows hold an arm (more than one real pixel).

        Returns
        -------
        ndarray, shape (N,), bool
        """
        return self.length > 1


def pack_arms(arms: list, mask_kept: np.ndarray | None = None) -> PackedArms:
    """Pack ``spectra.io.Arm`` objects (None for a missing arm) into arrays.

    Parameters
    ----------
    arms : list of Arm or None
        N arms on their native pixels (``spectra.io.types.Arm``); None for a missing arm.
    mask_kept : ndarray, shape (N,), bool, optional
        Rows whose mask bits do not by themselves make a pixel unusable: there a pixel
        with a mask bit stays usable when its flux is finite and positive and its ivar
        positive (``PreprocessConfig.coadd_ormask_excludes``). None: every mask bit
        makes its pixel unusable.

    Returns
    -------
    PackedArms
        Padded to the longest arm (at least 2 pixels), dtypes as documented there.
    """
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
    if mask_kept is not None and np.any(mask_kept):
        rows = np.flatnonzero(np.asarray(mask_kept, dtype=bool))
        usable[rows] |= (ivar[rows] > 0) & (flux[rows] > 0) & np.isfinite(flux[rows])
    return PackedArms(wavelength, flux, ivar, usable, length)
