"""S/N per arm as the LAMOST catalogs report it, and other per-row statistics."""

import numpy as np

from .batch import PackedArms


def masked_median(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Median of ``values`` over ``valid`` entries of each row; NaN for a row with none.

    One vectorised sort of the batch (invalid entries sorted to the end) instead of a
    per-row nanmedian.

    Parameters
    ----------
    values : ndarray, shape (N, L)
        Any real dtype.
    valid : ndarray, shape (N, L), bool
        Entries that count.

    Returns
    -------
    ndarray, shape (N,), float64
        Row medians (mean of the two middle values for an even count).
    """
    count = valid.sum(axis=1)
    ordered = np.sort(np.where(valid, values, np.inf), axis=1)
    rows = np.arange(values.shape[0])
    low = ordered[rows, np.maximum((count - 1) // 2, 0)]
    high = ordered[rows, np.maximum(count // 2, 0)]
    with np.errstate(invalid="ignore"):
        median = np.where(count > 0, (low.astype(np.float64) + high.astype(np.float64)) / 2.0, np.nan)
    return median


def arm_snr(arms: PackedArms) -> np.ndarray:
    """Median of flux * sqrt(ivar) over pixels with ivar > 0, per arm; NaN for a missing arm.

    For coadds this reproduces the SNR header keyword of the MRS tables to 0.1%; for
    single exposures the pipeline's header value is about 6% lower (it is computed some
    other way). The catalog reports the header value where there is one (see
    ``reported_snr``).

    Parameters
    ----------
    arms : PackedArms
        N arms on their native pixels.

    Returns
    -------
    ndarray, shape (N,), float64
        S/N per pixel; NaN for a row with no pixel of ivar > 0.
    """
    valid = arms.ivar > 0
    return masked_median(arms.flux * np.sqrt(np.where(valid, arms.ivar, 0)), valid)


def reported_snr(arms: list, packed: PackedArms) -> np.ndarray:
    """S/N as the LAMOST catalogs report it.

    The table's SNR header value when present, otherwise the median of flux * sqrt(ivar)
    (``arm_snr``), computed only for those rows.

    Parameters
    ----------
    arms : list of Arm or None
        The N arms (``spectra.io.types.Arm``, with ``header_snr``); None for a missing arm.
    packed : PackedArms
        The same arms packed (``pack_arms``).

    Returns
    -------
    ndarray, shape (N,), float64
        S/N per arm; NaN for a missing arm.
    """
    snr = np.array([np.nan if arm is None or arm.header_snr is None else arm.header_snr for arm in arms])
    missing = np.flatnonzero(np.isnan(snr) & packed.present)
    if missing.size:
        subset = PackedArms(
            packed.wavelength[missing], packed.flux[missing], packed.ivar[missing],
            packed.usable[missing], packed.length[missing],
        )
        snr[missing] = arm_snr(subset)
    return snr
