"""Radial velocity per arm by cross-correlation against a bank of template spectra.

Each observed arm is resampled onto a grid uniform in ln(wavelength) (a constant
velocity step), continuum-normalised like the network input, and correlated through
FFTs with every template on the same grid. Around each template's peak the template is
normalised lag by lag over the pixels the observed arm has (masked pixels left out of
both), so a masked block on one side of a strong line does not pull the peak towards
it. The best template is the
one with the highest normalised correlation peak; the peak is refined by a least-squares
parabola through the steps around its maximum, and its uncertainty follows Zucker (2003,
MNRAS 342, 1291): sigma^2 = -[N C''(s) / C(s) * C(s)^2 / (1 - C(s)^2)]^-1.

Wavelengths are vacuum throughout, as in the LAMOST MRS files; a template bank built
from an air-wavelength model converts it first (``air_to_vacuum``).
"""

from dataclasses import dataclass

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft

from .batch import PackedArms
from .continuum import fit_continuum
from .grids import WINDOWS
from .kernels import C_KMS, covered_power_rows
from .resample import resample_to_grid

# Velocity step of the correlation grid and the largest |RV| searched, km/s.
VELOCITY_STEP = 4.0  # native pixels are ~7 km/s; the parabola refines below the step
MAX_VELOCITY = 600.0
# Observed pixels used: the arm's grid window, trimmed by this much (Angstrom).
WINDOW_TRIM = 10.0
# Rows correlated at once: bounds the FFT work arrays to a few hundred MB.
ROWS_PER_BLOCK = 256
# Steps either side of the correlation maximum used to locate the peak.
PEAK_FIT_HALF_WIDTH = 3
# Steps either side of each template's peak where the template is normalised over the
# observed arm's usable pixels (32 km/s).
MASKED_NORM_HALF_WIDTH = 8


def air_to_vacuum(wavelength_air: np.ndarray) -> np.ndarray:
    """Air to vacuum wavelengths (Angstrom), IAU standard (Morton 2000, Ciddor 1996).

    Parameters
    ----------
    wavelength_air : array_like
        Air wavelengths, Angstrom, any shape.

    Returns
    -------
    ndarray, float64
        Vacuum wavelengths, Angstrom, same shape.
    """
    sigma2 = (1.0e4 / np.asarray(wavelength_air, dtype=np.float64)) ** 2
    n = 1.0 + 8.336624212083e-5 + 2.408926869968e-2 / (1.301065924522e2 - sigma2) + 1.599740894897e-4 / (
        3.892568793293e1 - sigma2
    )
    return wavelength_air * n


def vacuum_to_air(wavelength_vacuum: np.ndarray) -> np.ndarray:
    """Vacuum to air wavelengths (Angstrom), Morton (2000).

    Parameters
    ----------
    wavelength_vacuum : array_like
        Vacuum wavelengths, Angstrom, any shape.

    Returns
    -------
    ndarray, float64
        Air wavelengths, Angstrom, same shape.
    """
    sigma2 = (1.0e4 / np.asarray(wavelength_vacuum, dtype=np.float64)) ** 2
    n = 1.0 + 0.0000834254 + 0.02406147 / (130.0 - sigma2) + 0.00015998 / (38.9 - sigma2)
    return wavelength_vacuum / n


def log_grid(arm: str) -> np.ndarray:
    """The arm's correlation grid: uniform in ln(wavelength) with VELOCITY_STEP spacing.

    Parameters
    ----------
    arm : {"blue", "red"}
        The arm; its grid window trimmed by ``WINDOW_TRIM`` at each end.

    Returns
    -------
    ndarray, shape (P,), float64
        Vacuum wavelengths, Angstrom, a ``VELOCITY_STEP`` (km/s) apart.

    Raises
    ------
    KeyError
        If ``arm`` is not "blue" or "red".
    """
    low, high = WINDOWS[arm]
    step = np.log1p(VELOCITY_STEP / C_KMS)
    count = int(np.floor((np.log(high - WINDOW_TRIM) - np.log(low + WINDOW_TRIM)) / step)) + 1
    return np.exp(np.log(low + WINDOW_TRIM) + step * np.arange(count))


@dataclass(frozen=True)
class TemplateBank:
    """Normalised template spectra per arm, on that arm's grid extended by the velocity range.

    Parameters
    ----------
    flux : dict of str to ndarray
        Arm -> (T, P) float64 normalised flux (continuum 1) on ``extended_grid(arm)``,
        vacuum wavelengths.
    labels : ndarray, shape (T, 3), float64
        Teff (K), log g (dex), [Fe/H] (dex) of each template.
    """

    flux: dict[str, np.ndarray]  # arm -> (T, P) float64 on extended_grid(arm)
    labels: np.ndarray

    @staticmethod
    def extended_grid(arm: str) -> np.ndarray:
        """The arm's ``log_grid`` extended at both ends by ``MAX_VELOCITY`` and two steps.

        Parameters
        ----------
        arm : {"blue", "red"}
            The arm.

        Returns
        -------
        ndarray, shape (P + 2 pad,), float64
            Vacuum wavelengths, Angstrom, uniform in ln(wavelength).
        """
        grid = log_grid(arm)
        step = np.log1p(VELOCITY_STEP / C_KMS)
        pad = int(np.ceil(np.log1p(MAX_VELOCITY / C_KMS) / step)) + 2
        return np.exp(np.log(grid[0]) + step * np.arange(-pad, grid.size + pad))

    @classmethod
    def from_spectra(cls, wavelength_vacuum: np.ndarray, flux: np.ndarray, labels: np.ndarray) -> "TemplateBank":
        """Build from normalised templates on any increasing vacuum grid.

        Parameters
        ----------
        wavelength_vacuum : ndarray, shape (P,), float64
            Increasing vacuum wavelengths, Angstrom, covering both arms' extended grids
            (outside it the edge value is repeated).
        flux : ndarray, shape (T, P)
            Normalised template flux.
        labels : array_like, shape (T, 3)
            Teff (K), log g (dex), [Fe/H] (dex) of each template.

        Returns
        -------
        TemplateBank
            The templates linearly interpolated onto each arm's ``extended_grid``.
        """
        banks = {}
        for arm in WINDOWS:
            target = cls.extended_grid(arm)
            banks[arm] = np.stack([np.interp(target, wavelength_vacuum, row) for row in flux])
        return cls(flux=banks, labels=np.asarray(labels, dtype=np.float64))


@dataclass
class RVResult:
    """Radial velocities of a set of arms.

    Parameters
    ----------
    rv : ndarray, shape (n,), float64
        Radial velocity, km/s; NaN when there is no usable correlation.
    rv_err : ndarray, shape (n,), float64
        Its 1-sigma uncertainty (Zucker 2003), km/s; NaN with ``rv``.
    template : ndarray, shape (n,), int64
        Index of the best template in the bank.
    peak : ndarray, shape (n,), float64
        Normalised correlation peak, <= 1.
    """

    rv: np.ndarray  # (n,) km/s; NaN when no usable correlation
    rv_err: np.ndarray  # (n,) km/s
    template: np.ndarray  # (n,) int64 index of the best template
    peak: np.ndarray  # (n,) normalised correlation peak


def _prepared_signal(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised, mean-subtracted, tapered signal (n, P) float64, zero where unusable, and
    the usable pixels (n, P) bool."""
    continuum, _, _, _ = fit_continuum(flux, ivar)
    good = (ivar > 0) & (continuum > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        signal = np.where(good, flux / continuum - 1.0, 0.0)
    taper = np.hanning(max(signal.shape[1] // 10, 2) * 2)
    half = taper.size // 2
    window = np.ones(signal.shape[1])
    window[:half], window[-half:] = taper[:half], taper[half:]
    signal = (signal - np.where(good, signal, 0).sum(axis=1, keepdims=True) / np.maximum(good.sum(axis=1, keepdims=True), 1)) * good
    return signal * window, good


def measure_rv(arms: PackedArms, bank: TemplateBank, arm: str, *, rows: np.ndarray | None = None) -> RVResult:
    """Measure the RV of the given ``rows`` of ``arms`` (all rows by default).

    Parameters
    ----------
    arms : PackedArms
        Arms on their native (observed, vacuum) pixels.
    bank : TemplateBank
        The templates.
    arm : {"blue", "red"}
        Which arm ``arms`` holds.
    rows : array_like of int, optional
        Row indices into ``arms``.

    Returns
    -------
    RVResult
        One entry per row, in the order of ``rows``. RV is NaN when 100 or fewer pixels are
        usable, or the correlation has no positive, curved peak, or its maximum normalised
        over the usable pixels lies on the edge of the lags searched around the peak
        normalised over the whole window; |RV| is searched up to ``MAX_VELOCITY`` km/s.

    Notes
    -----
    Cross-correlation against templates as the SPCANet paper took its RVs (Wang et al.
    2020, ApJ 891, 23, sect. 2.1.2, against Kurucz templates; SCIENCE.md); the
    uncertainty is Zucker (2003, MNRAS 342, 1291). The template's norm at each lag is
    taken over the observed arm's usable pixels only (a masked normalised
    cross-correlation, Padfield 2012, IEEE Trans. Image Process. 21, 2706): with the
    template's norm over the whole window, a masked block on one wing of a strong line
    (a coadd's ORMASK over part of H-alpha) moved the peak by 2.8 km/s on a real
    LAMOST coadd at S/N 281 (docs/preprocessing.md, "Radial velocities of masked arms").
    """
    rows = np.arange(arms.wavelength.shape[0]) if rows is None else np.asarray(rows)
    grid = log_grid(arm)
    templates = bank.flux[arm]  # (T, P + 2 pad) on the extended grid
    pad = (templates.shape[1] - grid.size) // 2
    template_signal = templates - 1.0
    template_signal -= template_signal.mean(axis=1, keepdims=True)
    # Lags stay within +-pad and the observed signal is zero past its end, so a length of
    # len(template) avoids wrap-around.
    size = next_fast_len(templates.shape[1], real=True)
    template_fft = np.conj(rfft(template_signal, n=size, axis=1))  # (T, F)
    window_norm = np.sqrt((template_signal[:, pad : pad + grid.size] ** 2).sum(axis=1))  # (T,)
    power = np.zeros((templates.shape[0], templates.shape[1] + 1))  # exclusive running sums of the squares
    np.cumsum(template_signal**2, axis=1, out=power[:, 1:])
    max_lag = int(np.floor(np.log1p(MAX_VELOCITY / C_KMS) / np.log1p(VELOCITY_STEP / C_KMS)))
    lags = np.arange(-max_lag, max_lag + 1)
    width = 2 * MASKED_NORM_HALF_WIDTH + 1
    result = RVResult(
        rv=np.full(rows.size, np.nan), rv_err=np.full(rows.size, np.nan),
        template=np.zeros(rows.size, dtype=np.int64), peak=np.zeros(rows.size),
    )
    for start in range(0, rows.size, ROWS_PER_BLOCK):
        block = rows[start : start + ROWS_PER_BLOCK]
        sub = PackedArms(
            arms.wavelength[block], arms.flux[block], arms.ivar[block], arms.usable[block], arms.length[block]
        )
        flux, ivar = resample_to_grid(sub, grid, np.zeros(block.size))
        signal, good = _prepared_signal(flux, ivar)
        usable_pixels = (ivar > 0).sum(axis=1)
        signal_norm = np.sqrt((signal**2).sum(axis=1))
        # c[j] = sum_i tmpl[i] obs[i + j]. Observed pixel i sits at template pixel i + pad,
        # so a redshift of s pixels peaks at j = s - pad.
        at_lags = (lags - pad) % size
        correlation = irfft(rfft(signal, n=size, axis=1)[:, None, :] * template_fft[None, :, :], n=size, axis=2)
        correlation = correlation[:, :, at_lags]  # (n, T, lags)
        # The template's power over the observed arm's usable pixels, lag by lag (observed
        # pixel i meets template pixel i + pad - lag), in a window of lags around each
        # template's peak normalised over the whole window: the mask moves a peak by a
        # few km/s, far less than the window's half-width.
        with np.errstate(divide="ignore", invalid="ignore"):
            whole = correlation / (signal_norm[:, None, None] * window_norm[None, :, None])
        first = np.clip(np.nan_to_num(whole, nan=-1.0).argmax(axis=2) - MASKED_NORM_HALF_WIDTH, 0, lags.size - width)
        window_lags = first[:, :, None] + np.arange(width)  # (n, T, width)
        covered = np.empty(window_lags.shape)
        covered_power_rows(good, power, pad - lags, first, covered)
        with np.errstate(divide="ignore", invalid="ignore"):
            local = np.take_along_axis(correlation, window_lags, axis=2)
            local /= signal_norm[:, None, None] * np.sqrt(np.where(covered > 0, covered, np.nan))
        local = np.nan_to_num(local, nan=-1.0)
        best_template = local.max(axis=2).argmax(axis=1)
        i = np.arange(block.size)
        ccf, ccf_lags = local[i, best_template], window_lags[i, best_template]  # (n, width)
        # Sub-step peak: a least-squares quadratic over PEAK_FIT_HALF_WIDTH steps either
        # side of the maximum. The peak spans several steps, so a 3-point fit would depend
        # on where the velocity grid happens to fall.
        h = PEAK_FIT_HALF_WIDTH
        maximum = ccf.argmax(axis=1)
        # A maximum on the window's edge (not the search range's) lies beyond it: no RV.
        window_start = first[i, best_template]
        inside = ~(((maximum == 0) & (window_start > 0)) | ((maximum == width - 1) & (window_start + width < lags.size)))
        peak_index = np.clip(maximum, h, width - 1 - h)
        offsets = np.arange(-h, h + 1)
        samples = ccf[i[:, None], peak_index[:, None] + offsets[None, :]]  # (n, 2h+1)
        design = np.stack([np.ones_like(offsets), offsets, offsets**2], axis=1).astype(np.float64)
        c0, c1, c2 = (np.linalg.pinv(design) @ samples.T)  # each (n,)
        with np.errstate(divide="ignore", invalid="ignore"):
            offset = np.where(c2 < 0, np.clip(-c1 / (2 * c2), -h, h), 0.0)
            peak_value = c0 + c1 * offset + c2 * offset**2
            lag = lags[ccf_lags[i, peak_index]] + offset
            second_derivative = 2 * c2 / peak_value  # C''/C per step^2
            variance = -1.0 / (usable_pixels * second_derivative * peak_value**2 / (1.0 - peak_value**2))
        curvature = c2
        velocity = C_KMS * np.expm1(lag * np.log1p(VELOCITY_STEP / C_KMS))
        ok = (usable_pixels > 100) & inside & (curvature < 0) & (peak_value > 0) & np.isfinite(variance) & (variance > 0)
        out = slice(start, start + block.size)
        result.rv[out] = np.where(ok, velocity, np.nan)
        result.rv_err[out] = np.where(ok, np.sqrt(np.abs(variance)) * VELOCITY_STEP, np.nan)
        result.template[out] = best_template
        result.peak[out] = peak_value
    return result
