"""Preprocessed arrays against the ideal arrays of a mock survey (``ideal.py``): the measures
of ``benchmarks/fidelity_bench.py`` and the repairs that show which stage costs what.

All functions take batches on the 0.1 A rest-frame grid of one arm: (n, M) float arrays of
normalised flux and inverse variance (1/flux^2 units, 0 = masked). numpy/scipy only.
"""

import warnings

import numpy as np
from scipy.ndimage import uniform_filter1d

CONTINUUM_SCALE = 300  # pixels: 30 A on the 0.1 A grid (the scale of the continuum error found on an independent emulated survey)
DEFECT_SIGMA = 5.0
MIN_WINDOW_SHARE = 0.3  # running means over windows with fewer usable pixels are left out


def running_mean(values: np.ndarray, use: np.ndarray, width: int = CONTINUUM_SCALE) -> np.ndarray:
    """Mean of ``values`` over the usable pixels of a ``width``-pixel window around each pixel.

    Parameters
    ----------
    values : (n, M) float
        Values to average.
    use : (n, M) bool
        Pixels that enter the means.
    width : int
        Window in pixels.

    Returns
    -------
    (n, M) float64
        NaN where fewer than MIN_WINDOW_SHARE of the window's pixels are usable.
    """
    weight = uniform_filter1d(use.astype(np.float64), width, axis=-1, mode="constant")
    total = uniform_filter1d(np.where(use, values, 0.0).astype(np.float64), width, axis=-1, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight >= MIN_WINDOW_SHARE, total / weight, np.nan)


def continuum_ratio(flux: np.ndarray, reference: np.ndarray, use: np.ndarray) -> np.ndarray:
    """flux / reference on 30 A scales (running means over usable pixels).

    Parameters
    ----------
    flux, reference : ndarray, shape (n, M), float
        Normalised flux, preprocessed and ideal.
    use : ndarray, shape (n, M), bool
        Pixels that enter the running means.

    Returns
    -------
    ndarray, shape (n, M), float64
        The ratio; NaN where a window has too few usable pixels.
    """
    return running_mean(flux, use) / running_mean(reference, use)


def continuum_error(flux: np.ndarray, reference: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 30 A continuum error of each row: continuum_ratio - 1 over the row's pixels.

    Parameters
    ----------
    flux, reference : ndarray, shape (n, M), float
        Normalised flux, preprocessed and ideal.
    use : ndarray, shape (n, M), bool
        Pixels that enter the running means.

    Returns
    -------
    rms : ndarray, shape (n,), float64
        Its rms.
    offset : ndarray, shape (n,), float64
        Its median (a level offset).
    shape_rms : ndarray, shape (n,), float64
        Its rms about that median (the shape error). All three are fractions, NaN for a
        row without usable windows.
    """
    ratio = continuum_ratio(flux, reference, use) - 1.0
    with warnings.catch_warnings():  # rows without any usable window give NaN, as documented
        warnings.simplefilter("ignore", RuntimeWarning)
        offset = np.nanmedian(ratio, axis=1)
        rms = np.sqrt(np.nanmean(ratio**2, axis=1))
        shape = np.sqrt(np.nanmean((ratio - offset[:, None]) ** 2, axis=1))
    return rms, offset, shape


def defect_pixels(flux: np.ndarray, reference: np.ndarray, reference_ivar: np.ndarray, threshold: float = DEFECT_SIGMA) -> np.ndarray:
    """Pixels where ``flux`` differs from the noisy ideal ``reference`` by more than ``threshold`` sigma.

    ``flux`` has its 30 A continuum brought to the reference's first; the reference has the
    same noise draw. Masked pixels (flux exactly 1 with ivar 0) are the caller's to
    exclude; pixels without ideal data (reference_ivar 0) are never defects.

    Parameters
    ----------
    flux, reference : ndarray, shape (n, M), float
        Normalised flux, preprocessed and noisy ideal.
    reference_ivar : ndarray, shape (n, M), float
        Inverse variance of ``reference`` (1/flux^2 units); 0 where there is no ideal data.
    threshold : float, optional
        Sigma of a defect.

    Returns
    -------
    ndarray, shape (n, M), bool
        True on defect pixels.
    """
    has = reference_ivar > 0
    ratio = np.nan_to_num(continuum_ratio(flux, reference, has), nan=1.0)
    difference = (flux / ratio - reference) * np.sqrt(reference_ivar)
    return has & (np.abs(difference) > threshold)


def repair(
    flux: np.ndarray, ivar: np.ndarray, reference: np.ndarray, reference_ivar: np.ndarray, what: tuple[str, ...]
) -> np.ndarray:
    """Preprocessed flux with some defects repaired from the noisy ideal ``reference``.

    Pixels the reference has no data for are left alone.

    Parameters
    ----------
    flux, ivar : ndarray, shape (n, M), float
        Preprocessed normalised flux and its inverse variance (0 = masked).
    reference, reference_ivar : ndarray, shape (n, M), float
        The noisy ideal flux and its inverse variance (0 = no data).
    what : tuple of str
        Any of "masked" (masked pixels, written as 1, get the reference's value),
        "continuum" (the 30 A continuum ratio to the reference divided out) and "unmarked"
        (unmasked pixels more than 5 sigma off get the reference's value).

    Returns
    -------
    ndarray, shape (n, M), float32
        The repaired flux.
    """
    masked = ivar <= 0
    has = reference_ivar > 0
    bad = defect_pixels(flux, reference, reference_ivar) & ~masked
    ratio = np.nan_to_num(continuum_ratio(flux, reference, has & ~masked & ~bad), nan=1.0)
    out = np.array(flux, dtype=np.float64)
    if "continuum" in what:
        out = np.where(masked, out, out / ratio)
        ratio = np.ones_like(ratio)
    if "unmarked" in what:
        out = np.where(bad, reference * ratio, out)
    if "masked" in what:
        out = np.where(masked & has, reference * ratio, out)
    return out.astype(np.float32)


def line_shift(flux: np.ndarray, reference: np.ndarray, use: np.ndarray, max_lag: int = 5) -> np.ndarray:
    """Shift that best aligns the lines of ``flux`` with those of ``reference``.

    By cross-correlation of their 30 A high-passed versions over the ``use`` pixels (leave
    masked and defect pixels out: one cosmic ray outweighs every line), the reference
    normalised at each lag over the same pixels (so a masked block on one side of a line
    does not pull the shift towards it; as ``spectra.processing.rv.measure_rv``), refined
    by a parabola through the peak.

    Parameters
    ----------
    flux, reference : ndarray, shape (n, M), float
        Normalised flux, preprocessed and ideal.
    use : ndarray, shape (n, M), bool
        Pixels of ``flux`` that count.
    max_lag : int, optional
        Largest shift searched, pixels.

    Returns
    -------
    ndarray, shape (n,), float64
        Shift in pixels (0.1 Angstrom each); positive: ``flux``'s lines lie redwards.
    """
    a = np.where(use, flux - np.nan_to_num(running_mean(flux, use), nan=1.0), 0.0)
    b = reference - running_mean(reference, np.ones_like(use))
    b = np.nan_to_num(b)
    m = flux.shape[1]
    inner = slice(max_lag, m - max_lag)
    lags = np.arange(-max_lag, max_lag + 1)
    kept = use[:, inner]
    correlation = np.stack([
        (a[:, inner] * b[:, max_lag - lag : m - max_lag - lag]).sum(axis=1)
        / np.sqrt(np.maximum((kept * b[:, max_lag - lag : m - max_lag - lag] ** 2).sum(axis=1), 1e-300))
        for lag in lags], axis=1)
    best = np.clip(np.argmax(correlation, axis=1), 1, lags.size - 2)
    rows = np.arange(flux.shape[0])
    left, centre, right = correlation[rows, best - 1], correlation[rows, best], correlation[rows, best + 1]
    curvature = left - 2 * centre + right
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    return lags[best] + offset


def smooth_residual_spread(flux: np.ndarray, reference: np.ndarray, ivar: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Robust spread per row of the small-scale residual (flux - reference) in units of its noise.

    The residual has its 30 A running mean removed and is multiplied by sqrt(ivar).

    Parameters
    ----------
    flux, reference : ndarray, shape (n, M), float
        Normalised flux, preprocessed and ideal.
    ivar : ndarray, shape (n, M), float
        Inverse variance of ``flux`` (0 = masked, left out).
    use : ndarray, shape (n, M), bool
        Pixels that count.

    Returns
    -------
    ndarray, shape (n,), float64
        1.4826 MAD; 1 when the small-scale residual is the noise that ivar describes; NaN
        for a row with no pixel.
    """
    difference = flux - reference
    small = (difference - np.nan_to_num(running_mean(difference, use))) * np.sqrt(ivar)
    small = np.where(use & (ivar > 0), small, np.nan)
    centre = np.nanmedian(small, axis=1, keepdims=True)
    return 1.4826 * np.nanmedian(np.abs(small - centre), axis=1)
