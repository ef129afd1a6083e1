"""One row per star: a release's Flag = 1 spectra of each star combined (pure numpy).

The labels of a star are the inverse-variance weighted means of its Flag = 1 spectra,

    x_star = sum(w_i x_i) / sum(w_i),   sigma_star = 1 / sqrt(sum(w_i)),   w_i = 1 / sigma_i**2,

the standard combination of independent Gaussian measurements (Bevington & Robinson,
*Data Reduction and Error Analysis*, 3rd ed., eqs. 4.17-4.19). A spectrum counts for a
label only where it has both a finite value and a finite, positive uncertainty; a star
where no Flag = 1 spectrum has the label gets NaN (NULL), never a sentinel: hot stars,
whose abundances are NULL in every entry, have no abundances here either.

The spread of the spectra about the mean is given as the reduced chi-square,
``sum(w_i (x_i - x_star)**2) / (n - 1)`` over the n spectra counted (NaN below two): about 1
when the spectra agree within their uncertainties, well above 1 when they do not (a
variable star, a bad spectrum, underestimated uncertainties); ``sigma_star *
sqrt(max(1, chi2r))`` is then the more honest uncertainty.

The best spectrum of a star is its Flag = 1 spectrum with the highest S/N in the weaker
arm (the catalog's S/N rule applies to both arms); a star with no Flag = 1 spectrum gets
its highest-S/N spectrum of any flag, so every row links to a spectrum. Ties go to the
lower spectrum id; an unknown S/N ranks below every known one.

No Django here: the service reads the columns and writes the rows.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StarCombination:
    """The combined rows, one per distinct star id, in increasing star id.

    Parameters
    ----------
    star_ids : ndarray, shape (m,), int64
        The distinct star ids, increasing.
    n_spectra : (m,) int64
        Flag = 1 spectra of the star (those combined).
    n_spectra_all : (m,) int64
        Every spectrum of the star in the release, any flag.
    best_spectrum_ids : (m,) int64
        See the module docstring.
    values, errors : (m, k) float64
        Weighted means and their 1-sigma uncertainties, in the units of the input; NaN
        where no Flag = 1 spectrum has the label.
    chi2r : (m, k) float64
        Reduced chi-square of the spectra about the mean; NaN where fewer than two count.
    """

    star_ids: np.ndarray
    n_spectra: np.ndarray
    n_spectra_all: np.ndarray
    best_spectrum_ids: np.ndarray
    values: np.ndarray
    errors: np.ndarray
    chi2r: np.ndarray


def stars_combine(
    star_ids: np.ndarray,
    spectrum_ids: np.ndarray,
    flag: np.ndarray,
    snr_blue: np.ndarray,
    snr_red: np.ndarray,
    values: np.ndarray,
    errors: np.ndarray,
) -> StarCombination:
    """Combine catalog entries (one per spectrum) into one row per star.

    Parameters
    ----------
    star_ids, spectrum_ids : (n,) int64
        The star of each entry and its spectrum; rows may come in any order.
    flag : (n,) int
        Catalog Flag, 1 good, 0 bad.
    snr_blue, snr_red : (n,) float64
        S/N per arm; NaN where unknown.
    values, errors : (n, k) float64
        Labels and their 1-sigma uncertainties; NaN where missing.

    Returns
    -------
    StarCombination
        Empty arrays (m = 0) for no entries.

    Raises
    ------
    ValueError
        If ``values`` and ``errors`` are not both (n, k), or another column is not (n,).

    Notes
    -----
    Inverse-variance weighted means (Bevington & Robinson, *Data Reduction and Error
    Analysis*, 3rd ed., eqs. 4.17-4.19); see the module docstring.
    """
    star_ids = np.asarray(star_ids, dtype=np.int64)
    spectrum_ids = np.asarray(spectrum_ids, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    n = star_ids.shape[0]
    if values.ndim != 2 or values.shape[0] != n or errors.shape != values.shape:
        raise ValueError(f"values and errors must both be ({n}, k), got {values.shape} and {errors.shape}")
    for name, column in (("spectrum_ids", spectrum_ids), ("flag", flag), ("snr_blue", snr_blue), ("snr_red", snr_red)):
        if np.shape(column) != (n,):
            raise ValueError(f"{name} must be ({n},), got {np.shape(column)}")
    k = values.shape[1]
    good = np.asarray(flag) == 1

    # Rows grouped by star; reduceat sums each contiguous group.
    order = np.argsort(star_ids, kind="stable")
    sorted_stars = star_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_stars[1:] != sorted_stars[:-1]]) if n else np.empty(0, np.int64)
    m = starts.size
    if m == 0:
        empty = np.empty((0, k), dtype=np.float64)
        none = np.empty(0, dtype=np.int64)
        return StarCombination(none, none, none, none, empty, empty.copy(), empty.copy())
    group = np.repeat(np.arange(m), np.diff(np.r_[starts, n]))  # (n,) star index of each sorted row

    x = values[order]
    sigma = errors[order]
    usable = good[order][:, None] & np.isfinite(x) & np.isfinite(sigma) & (sigma > 0)
    with np.errstate(divide="ignore"):
        weight = np.where(usable, 1.0 / np.where(usable, sigma, 1.0) ** 2, 0.0)
    sum_w = np.add.reduceat(weight, starts, axis=0)
    counted = np.add.reduceat(usable.astype(np.int64), starts, axis=0)
    has = counted > 0
    # Offsets from a value of the star's own (its largest): no cancellation against a
    # large Teff, and a star with one spectrum, or equal values, gets that value exactly.
    reference = np.where(has, np.maximum.reduceat(np.where(usable, x, -np.inf), starts, axis=0), 0.0)
    offset = np.where(usable, weight * (np.where(usable, x, 0.0) - reference[group]), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(has, reference + np.add.reduceat(offset, starts, axis=0) / sum_w, np.nan)
        error = np.where(has, 1.0 / np.sqrt(sum_w), np.nan)
        residual = np.where(usable, x - mean[group], 0.0)
        chi2 = np.add.reduceat(weight * residual**2, starts, axis=0)
        chi2r = np.where(counted >= 2, chi2 / (counted - 1), np.nan)

    good_sorted = good[order]
    n_spectra = np.add.reduceat(good_sorted.astype(np.int64), starts)
    n_all = np.diff(np.r_[starts, n]).astype(np.int64)

    # Best spectrum: Flag = 1 first, then the higher weaker-arm S/N, then the lower id.
    weaker = np.minimum(
        np.where(np.isnan(snr_blue), -np.inf, np.asarray(snr_blue, dtype=np.float64)),
        np.where(np.isnan(snr_red), -np.inf, np.asarray(snr_red, dtype=np.float64)),
    )
    ranked = np.lexsort((spectrum_ids, -weaker, ~good, star_ids))
    ranked_stars = star_ids[ranked]
    firsts = ranked[np.r_[True, ranked_stars[1:] != ranked_stars[:-1]]]
    return StarCombination(
        star_ids=sorted_stars[starts],
        n_spectra=n_spectra,
        n_spectra_all=n_all,
        best_spectrum_ids=spectrum_ids[firsts],
        values=mean,
        errors=error,
        chi2r=chi2r,
    )
