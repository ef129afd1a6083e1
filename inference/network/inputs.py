"""Masked and bad pixels of the normalised spectra, filled from a low-rank spectrum model.

The preprocessing writes masked pixels as flux 1 and ivar 0 (``spectra/processing``).
On a survey whose coadds mask ~20% of their pixels (an independent emulated MRS survey,
and ``make_mock_survey --harsh``), those constant pixels cost the regression
most of its precision: a linear model reads a masked line core as a missing line. Here
a spectrum's masked pixels are filled with what a low-rank model of normalised spectra,
learned from the training spectra, predicts from the spectrum's own unmasked pixels;
pixels far off that prediction (cosmic rays and junk no mask marks, zero-flux blocks
with their ivar kept) are treated as masked too. Measured choices (number of
components, rejection threshold) are in docs/preprocessing.md.

Arrays are the preprocessing's: flux and ivar (n, 2, pixels) float32, [blue, red],
normalised (continuum 1), ivar 0 where masked. The model works on the two arms
concatenated, (n, 2 x pixels).
"""

import math
import threading
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from spectra.processing.kernels import solve_small

# Weighted least squares for the coefficients: a small penalty (relative to the mean
# diagonal of the normal matrix) keeps a nearly fully masked spectrum's fit finite.
_RIDGE = 1e-6
# Spectra used for the principal components (an SVD of (this, 2 x pixels)).
_SVD_SPECTRA = 4000
# numba's fastmath without the no-NaN/no-inf assumptions: reductions may be reordered
# (vectorised), while the kernels' isfinite tests keep their meaning.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
# Fill on numba's threads (rows in chunks of _CHUNK) rather than on one core: measured
# faster (benchmarks/fill_bench.py, docs/preprocessing.md); rows are independent, so the
# result is the same either way.
PARALLEL = True
_CHUNK = 64
_PARALLEL_LOCK = threading.Lock()
# Outliers are judged against the noise and the model's error, scaled per arm by the
# residuals' robust spread (this times the lower median of their absolute values, in those
# units) where it exceeds 1. The spread is the second fit's, made without the pixels the
# first, unscaled rejection dropped, so that large junk does not inflate it. Without it a
# spectrum the model describes less well than its training spectra (a real star at high
# S/N, against a basis learned from mock spectra) lost a quarter of its good pixels to the
# rejection, the more the higher its S/N, and coadds read differently from their own
# exposures (docs/preprocessing.md, "Outliers judged against each spectrum's own residuals").
ROBUST_SPREAD = 1.4826
# The spread is taken over every fourth pixel of an arm (about a thousand), which keeps
# its cost to a quarter (measured: docs/preprocessing.md).
_SPREAD_STRIDE = 4
# The compiled kernel's median: a histogram of the values in units of sigma, then a sort
# of the one bin that holds the median.
_MEDIAN_BINS = 256
_MEDIAN_BINS_PER_SIGMA = np.float32(32.0)


@dataclass(frozen=True)
class FillBasis:
    """A low-rank model of normalised spectra: mean + coefficients @ components.

    Parameters
    ----------
    mean : (2 x pixels,) float32
        Per-pixel mean of the training spectra's well-measured pixels.
    components : (k, 2 x pixels) float32
        Orthonormal principal components of the training spectra about ``mean``
        (k = 0: the fill is the per-pixel mean).
    model_sigma : (2 x pixels,) float32
        Per-pixel rms of the model's own error (training residual beyond the noise);
        added in quadrature to the noise when weighting and when judging outliers.
    outlier_sigma : float
        Pixels more than this many sigma off the model are treated as masked; 0 = off.
        Sigma is the noise and ``model_sigma`` together, scaled up per arm by the robust
        spread of that arm's residuals where they spread wider than that (``ROBUST_SPREAD``).
    """

    mean: np.ndarray
    components: np.ndarray
    model_sigma: np.ndarray
    outlier_sigma: float = 0.0

    @property
    def n_components(self) -> int:
        """The model's rank k (rows of ``components``; 0: the fill is the per-pixel mean)."""
        return int(self.components.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store in a model artifact (``from_arrays`` reads them back).

        Returns
        -------
        dict of str to ndarray
            ``fill_mean``, ``fill_components`` and ``fill_model_sigma``: ``mean``,
            ``components`` and ``model_sigma`` themselves (not copies).
            ``outlier_sigma`` is not among them.
        """
        return {"fill_mean": self.mean, "fill_components": self.components, "fill_model_sigma": self.model_sigma}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], outlier_sigma: float) -> "FillBasis":
        """The basis stored by ``arrays``, read back.

        Parameters
        ----------
        arrays : dict of str to ndarray
            Holding ``fill_mean`` (2 x pixels,), ``fill_components`` (any shape with
            k x 2 x pixels elements, reshaped to (k, 2 x pixels)) and ``fill_model_sigma``
            (2 x pixels,); cast to float32.
        outlier_sigma : float
            The outlier threshold, which ``arrays`` does not hold.

        Returns
        -------
        FillBasis

        Raises
        ------
        KeyError
            If one of the three arrays is missing.
        """
        return cls(mean=np.asarray(arrays["fill_mean"], dtype=np.float32),
                   components=np.asarray(arrays["fill_components"], dtype=np.float32).reshape(-1, arrays["fill_mean"].size),
                   model_sigma=np.asarray(arrays["fill_model_sigma"], dtype=np.float32),
                   outlier_sigma=float(outlier_sigma))


def _flat(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flux = np.asarray(flux, dtype=np.float32)
    ivar = np.asarray(ivar, dtype=np.float32)
    if flux.shape != ivar.shape or flux.ndim != 3 or flux.shape[1] != 2:
        raise ValueError(f"expected flux and ivar of one shape (n, 2, pixels), got {flux.shape} and {ivar.shape}")
    n = flux.shape[0]
    x = flux.reshape(n, -1)
    w = np.where(np.isfinite(x) & np.isfinite(ivar.reshape(n, -1)), ivar.reshape(n, -1), 0.0).astype(np.float32)
    w = np.maximum(w, 0.0)
    return np.where(w > 0, x, 0.0).astype(np.float32), w


def _coefficients(x: np.ndarray, weight: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """(n, k) weighted least-squares coefficients of (x - mean) on the components.

    Each arm's pixels get one weight, the mean of ``weight`` over its pixels with weight
    > 0 (pixels with weight 0 are left out): then each spectrum's normal matrix is the
    full arms' C C^T, fixed, less the outer products of its few left-out pixels, a sparse
    product, instead of a (pixels x k^2) product per spectrum that cost as much as the
    network's prediction. Within an arm the weights of the normalised pixels vary by tens
    of per cent; the per-pixel weights gave the same ridge precision (docs/preprocessing.md).
    """
    from scipy import sparse

    n, k = x.shape[0], components.shape[0]
    if k == 0:
        return np.zeros((n, 0), dtype=np.float64)
    half = x.shape[1] // 2
    arm_weight = np.zeros((n, 2), dtype=np.float64)
    for a, arm in enumerate((slice(0, half), slice(half, None))):
        used = np.count_nonzero(weight[:, arm] > 0, axis=1)
        arm_weight[:, a] = np.sum(weight[:, arm], axis=1, dtype=np.float64) / np.maximum(used, 1)
    full = np.stack([components[:, :half] @ components[:, :half].T,
                     components[:, half:] @ components[:, half:].T]).astype(np.float64)  # (2, k, k)
    normal = np.einsum("na,akl->nkl", arm_weight, full)
    rows, columns = np.nonzero(weight <= 0)
    left_out = sparse.csr_matrix((arm_weight[rows, (columns >= half).astype(np.int64)].astype(np.float32),
                                  (rows, columns)), shape=x.shape)
    pairs = (components[:, None, :] * components[None, :, :]).reshape(k * k, -1)
    normal -= np.asarray(left_out @ pairs.T, dtype=np.float64).reshape(n, k, k)
    projected = np.where(weight > 0, x - mean, np.float32(0.0))
    rhs = (arm_weight[:, :1] * (projected[:, :half] @ components[:, :half].T)
           + arm_weight[:, 1:] * (projected[:, half:] @ components[:, half:].T))
    scale = np.maximum(np.trace(normal, axis1=1, axis2=2) / k, 1e-12)
    normal += (_RIDGE * scale)[:, None, None] * np.eye(k)
    return np.linalg.solve(normal, rhs[:, :, None])[:, :, 0]


def _weights(ivar_flat: np.ndarray, model_sigma: np.ndarray) -> np.ndarray:
    """1 / (1/ivar + model_sigma^2), 0 where ivar is 0."""
    with np.errstate(divide="ignore"):
        variance = np.float32(1.0) / ivar_flat + model_sigma * model_sigma  # inf where ivar is 0
    return np.float32(1.0) / variance


def _spread_scale(residual: np.ndarray, weight: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """(n, 2) float32: per arm, max(1, ROBUST_SPREAD x the lower median of |residual| x
    sqrt(weight) over the usable pixels among every _SPREAD_STRIDE-th, NaN counted as the
    largest); 1 for an arm without such pixels. (An infinite scale, from residuals that
    overflowed, keeps every pixel.)"""
    n, p = residual.shape
    with np.errstate(all="ignore"):
        z = np.abs(residual) * np.sqrt(weight)
    z = np.where(usable, np.where(np.isnan(z), np.inf, z), np.inf).reshape(n, 2, p // 2)  # (NaN: beyond any value)
    z = z[:, :, ::_SPREAD_STRIDE]
    count = usable.reshape(n, 2, p // 2)[:, :, ::_SPREAD_STRIDE].sum(axis=2)
    ordered = np.sort(z, axis=2)
    lower = np.take_along_axis(ordered, np.maximum(count - 1, 0)[:, :, None] // 2, axis=2)[:, :, 0]
    with np.errstate(all="ignore"):
        scale = np.where(count > 0, np.float32(ROBUST_SPREAD) * lower, 1.0)
    return np.where(scale > 1.0, scale, 1.0).astype(np.float32)


def reconstruct_reference(flux: np.ndarray, ivar: np.ndarray, basis: FillBasis,
                          iterations: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``reconstruct`` in plain numpy: the reference the compiled kernel is tested against.

    Whole-array passes over (n, 2 x pixels); same parameters and results as ``reconstruct``
    (to float32 rounding: a pixel lying on the rejection threshold may fall either way).

    Parameters
    ----------
    flux, ivar : (n, 2, pixels) float32
        Normalised flux and its inverse variance (0 = masked); non-finite values count
        as masked.
    basis : FillBasis
        The low-rank model, of 2 x pixels pixels.
    iterations : int
        Fits in all when ``basis.outlier_sigma`` > 0 (at least 1); one fit otherwise.

    Returns
    -------
    model : (n, 2, pixels) float32
        The reconstruction.
    good : (n, 2, pixels) bool
        Pixels with ivar > 0 that are not outliers.

    Raises
    ------
    ValueError
        If flux and ivar differ in shape, are not (n, 2, pixels), or have another number
        of pixels than the basis.
    """
    x, ivar_flat = _flat(flux, ivar)
    if x.shape[1] != basis.mean.size:
        raise ValueError(f"spectra have {x.shape[1]} pixels, the fill basis {basis.mean.size}")
    usable = good = ivar_flat > 0
    full_weight = _weights(ivar_flat, basis.model_sigma)
    limit = np.full(x.shape, np.float32(basis.outlier_sigma))
    for round_ in range(max(1, iterations) if basis.outlier_sigma > 0 else 1):
        weight = np.where(good, full_weight, np.float32(0.0))
        model = basis.mean + _coefficients(x, weight, basis.mean, basis.components).astype(np.float32) @ basis.components
        if basis.outlier_sigma <= 0:
            break
        residual = x - model
        if round_ == 1:  # (the second fit's spread: made without the first rejection's pixels)
            limit = np.repeat(np.float32(basis.outlier_sigma) * _spread_scale(residual, full_weight, usable), x.shape[1] // 2, axis=1)
        good = usable & (residual * residual * full_weight <= limit * limit)
    return model.astype(np.float32).reshape(np.shape(flux)), good.reshape(np.shape(flux))


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _gram_add(components, pixels, count, gather, out):  # pragma: no cover
    """out[i, j] += sum over ``pixels[:count]`` of components[i, p] * components[j, p] (i <= j).

    The columns are gathered first so that the sums run over contiguous float32 rows.
    """
    k = components.shape[0]
    if count == 0:
        return
    for i in range(k):
        for t in range(count):
            gather[i, t] = components[i, pixels[t]]
    for i in range(k):
        for j in range(i, k):
            total = np.float32(0.0)
            for t in range(count):
                total += gather[i, t] * gather[j, t]
            out[i, j] += total


@njit(cache=True, nogil=True)
def _lower_median(values, count, histogram, in_bin):  # pragma: no cover
    """The lower median (the element of rank (count - 1) // 2) of ``values[:count]`` >= 0,
    as ``np.sort`` orders them (NaN last).

    A histogram of _MEDIAN_BINS bins, _MEDIAN_BINS_PER_SIGMA to a unit (the last bin takes
    everything above, inf and NaN) finds the bin the median falls in; only that bin's
    values are sorted. Exact.
    """
    histogram[:] = 0
    for t in range(count):
        scaled = values[t] * _MEDIAN_BINS_PER_SIGMA  # (past the histogram, inf and NaN: the last bin)
        histogram[int(scaled) if scaled < _MEDIAN_BINS else _MEDIAN_BINS] += 1
    rank = (count - 1) // 2
    below = 0
    b = 0
    while below + histogram[b] <= rank:
        below += histogram[b]
        b += 1
    m = 0
    for t in range(count):
        scaled = values[t] * _MEDIAN_BINS_PER_SIGMA
        if (int(scaled) if scaled < _MEDIAN_BINS else _MEDIAN_BINS) == b:
            in_bin[m] = values[t]
            m += 1
    return np.sort(in_bin[:m])[rank - below]


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _fill_rows(flux, ivar, mean, components, model_sigma, full, outlier_sigma, iterations, ridge, fill,
               shift_clip, out, out_good, start, stop):  # pragma: no cover
    """Rows start..stop-1: the weighted fit, the outlier rejection and the fill of ``reconstruct``.

    flux, ivar (n, 2, half) float32 (any strides); mean, model_sigma (2 half,) float32;
    components (k, 2 half) float32 C-contiguous; full (2, k, k) float64, each arm's
    components @ components.T. Writes ``out`` (n, 2, half) float32: the flux with
    untrusted pixels replaced by the model (``fill``) or the model itself, or with
    ``shift_clip`` > 0 that value less 1 clipped to [-shift_clip, shift_clip] (NaN: 0),
    the network's input as ``estimator.network_inputs`` makes it; and, when
    ``out_good`` has n rows, the trusted pixels.

    Each arm's normal matrix is its weight times (full arm's C C^T less the sum over its
    left-out pixels), as ``_coefficients``. The sums over the usable pixels (ivar > 0:
    the masked pixels' C C^T, the right-hand side) are computed once per row; each round
    only subtracts those of the pixels it rejects, so a round costs one evaluation of
    the model.
    """
    n, _, half = flux.shape
    p = 2 * half
    k = components.shape[0]
    x = np.empty(p, dtype=np.float32)
    weight = np.empty(p, dtype=np.float32)
    usable = np.empty(p, dtype=np.bool_)
    good = np.empty(p, dtype=np.bool_)
    centred = np.empty(p, dtype=np.float32)
    model = np.empty(p, dtype=np.float32)
    pixels = np.empty(half, dtype=np.int64)
    gather = np.empty((k, half), dtype=np.float32)
    masked_gram = np.zeros((2, k, k), dtype=np.float32)
    gram = np.zeros((k, k), dtype=np.float32)
    usable_weight = np.zeros(2, dtype=np.float64)
    usable_count = np.zeros(2, dtype=np.int64)
    usable_rhs = np.zeros((2, k), dtype=np.float64)
    normal = np.zeros((k, k), dtype=np.float64)
    rhs = np.zeros(k, dtype=np.float64)
    coefficients = np.zeros(k, dtype=np.float64)
    threshold = np.float32(outlier_sigma * outlier_sigma)
    spread = np.empty(half, dtype=np.float32)
    in_bin = np.empty(half, dtype=np.float32)
    histogram = np.empty(_MEDIAN_BINS + 1, dtype=np.int64)
    limit = np.empty(2, dtype=np.float32)
    robust = np.float32(ROBUST_SPREAD)
    clip = np.float32(shift_clip)
    rounds = max(1, iterations) if outlier_sigma > 0 else 1
    for r in range(start, stop):
        for a in range(2):
            for j in range(half):
                q = a * half + j
                f = flux[r, a, j]
                v = ivar[r, a, j]
                ok = math.isfinite(f) and math.isfinite(v) and v > 0
                usable[q] = ok
                good[q] = ok
                x[q] = f if ok else np.float32(0.0)
                sigma = model_sigma[q]
                weight[q] = np.float32(1.0) / (np.float32(1.0) / v + sigma * sigma) if ok else np.float32(0.0)
        for a in range(2):
            low = a * half
            masked_gram[a, :, :] = 0.0
            count = 0
            usable_weight[a] = 0.0
            usable_count[a] = 0
            for j in range(half):
                q = low + j
                if usable[q]:
                    usable_weight[a] += weight[q]
                    usable_count[a] += 1
                    centred[q] = x[q] - mean[q]
                else:
                    centred[q] = 0.0
                    pixels[count] = q
                    count += 1
            _gram_add(components, pixels, count, gather, masked_gram[a])
            for i in range(k):
                dot = np.float32(0.0)
                for j in range(half):
                    dot += centred[low + j] * components[i, low + j]
                usable_rhs[a, i] = dot
        limit[0] = limit[1] = threshold
        for round_ in range(rounds):
            normal[:, :] = 0.0
            rhs[:] = 0.0
            for a in range(2):
                # The usable pixels' sums less those of the pixels rejected so far.
                low = a * half
                total = usable_weight[a]
                used = usable_count[a]
                count = 0
                for j in range(half):
                    q = low + j
                    if usable[q] and not good[q]:
                        total -= weight[q]
                        used -= 1
                        pixels[count] = q
                        count += 1
                arm_weight = total / max(used, 1)
                gram[:, :] = masked_gram[a]
                _gram_add(components, pixels, count, gather, gram)
                for i in range(k):
                    for j in range(i, k):
                        normal[i, j] += arm_weight * (full[a, i, j] - gram[i, j])
                    dot = usable_rhs[a, i]
                    for t in range(count):
                        dot -= centred[pixels[t]] * components[i, pixels[t]]
                    rhs[i] += arm_weight * dot
            for i in range(k):
                for j in range(i):
                    normal[i, j] = normal[j, i]
            for q in range(p):
                model[q] = mean[q]
            if k:
                trace = 0.0
                for i in range(k):
                    trace += normal[i, i]
                solve_small(normal, rhs, ridge * max(trace / k, 1e-12), coefficients)
                for i in range(k):
                    c = np.float32(coefficients[i])
                    for q in range(p):
                        model[q] += c * components[i, q]
            if outlier_sigma <= 0:
                break
            for a in range(2):
                low = a * half
                if round_ == 1:  # the arm's spread: the second fit's, made without the first rejection's pixels
                    count = 0
                    for j in range(0, half, _SPREAD_STRIDE):
                        q = low + j
                        if usable[q]:
                            z = abs(x[q] - model[q]) * math.sqrt(weight[q])
                            spread[count] = z if not math.isnan(z) else np.inf  # (NaN: beyond any value)
                            count += 1
                    if count > 0:
                        scale = robust * _lower_median(spread, count, histogram, in_bin)
                        if scale > 1.0:  # (False for NaN)
                            limit[a] = threshold * scale * scale
                arm_limit = limit[a]
                for j in range(half):
                    q = low + j
                    residual = x[q] - model[q]
                    good[q] = usable[q] and residual * residual * weight[q] <= arm_limit
        for a in range(2):
            for j in range(half):
                q = a * half + j
                value = x[q] if (fill and good[q]) else model[q]
                if shift_clip > 0:
                    value = value - np.float32(1.0)
                    if math.isnan(value):
                        value = np.float32(0.0)
                    elif value > clip:
                        value = clip
                    elif value < -clip:
                        value = -clip
                out[r, a, j] = value
        if out_good.shape[0] == n:
            for a in range(2):
                for j in range(half):
                    out_good[r, a, j] = good[a * half + j]


@njit(cache=True, nogil=True, parallel=True)
def _fill_rows_parallel(flux, ivar, mean, components, model_sigma, full, outlier_sigma, iterations, ridge, fill,
                        shift_clip, out, out_good, chunk):  # pragma: no cover
    """``_fill_rows`` over chunks of rows on numba's threads."""
    n = flux.shape[0]
    for c in prange((n + chunk - 1) // chunk):
        _fill_rows(flux, ivar, mean, components, model_sigma, full, outlier_sigma, iterations, ridge, fill,
                   shift_clip, out, out_good, c * chunk, min(n, (c + 1) * chunk))


def _compiled(flux: np.ndarray, ivar: np.ndarray, basis: FillBasis, iterations: int, fill: bool,
              with_good: bool, parallel: bool | None = None, shift_clip: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    flux = np.asarray(flux, dtype=np.float32)
    ivar = np.asarray(ivar, dtype=np.float32)
    if flux.shape != ivar.shape or flux.ndim != 3 or flux.shape[1] != 2:
        raise ValueError(f"expected flux and ivar of one shape (n, 2, pixels), got {flux.shape} and {ivar.shape}")
    if 2 * flux.shape[2] != basis.mean.size:
        raise ValueError(f"spectra have {2 * flux.shape[2]} pixels, the fill basis {basis.mean.size}")
    half = flux.shape[2]
    components = np.ascontiguousarray(basis.components, dtype=np.float32)
    full = np.stack([components[:, :half] @ components[:, :half].T,
                     components[:, half:] @ components[:, half:].T]).astype(np.float64)
    out = np.empty(flux.shape, dtype=np.float32)
    good = np.empty(flux.shape if with_good else (0, 2, half), dtype=np.bool_)
    arguments = (flux, ivar, np.ascontiguousarray(basis.mean, dtype=np.float32), components,
                 np.ascontiguousarray(basis.model_sigma, dtype=np.float32), full, float(basis.outlier_sigma),
                 int(iterations), _RIDGE, fill, float(shift_clip), out, good)
    if (PARALLEL if parallel is None else parallel) and flux.shape[0] >= 2 * _CHUNK:
        with _PARALLEL_LOCK:  # numba's workqueue layer (where OpenMP and TBB are missing) runs one call at a time
            _fill_rows_parallel(*arguments, _CHUNK)
    else:
        _fill_rows(*arguments, 0, flux.shape[0])
    return out, good


def reconstruct(flux: np.ndarray, ivar: np.ndarray, basis: FillBasis, iterations: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The model's reconstruction of each spectrum, and the pixels it trusts.

    Coefficients are fitted by weighted least squares on the unmasked pixels (weights
    1 / (1/ivar + model_sigma^2), one per arm as in ``_coefficients``); with
    ``basis.outlier_sigma`` > 0, pixels more than that many sigma off the reconstruction
    are dropped and the fit repeated (``iterations`` times in all); from the second
    rejection on, sigma is scaled up per arm where the second fit's residuals spread wider
    than the noise and model error say (``ROBUST_SPREAD``). Compiled (numba, one pass per
    spectrum); ``reconstruct_reference`` is the same in plain numpy.

    Parameters
    ----------
    flux, ivar : (n, 2, pixels) float32
        Normalised flux and its inverse variance (0 = masked); non-finite values count
        as masked.
    basis : FillBasis
    iterations : int

    Returns
    -------
    model : (n, 2, pixels) float32
        The reconstruction.
    good : (n, 2, pixels) bool
        Pixels with ivar > 0 that are not outliers.

    Raises
    ------
    ValueError
        If flux and ivar differ in shape, are not (n, 2, pixels), or have another number
        of pixels than the basis.
    """
    return _compiled(flux, ivar, basis, iterations, fill=False, with_good=True)


def fill_masked(flux: np.ndarray, ivar: np.ndarray, basis: FillBasis, *, parallel: bool | None = None) -> np.ndarray:
    """Flux with masked pixels (ivar 0) and outliers replaced by the model's reconstruction.

    Parameters
    ----------
    flux, ivar : (n, 2, pixels) float32
        Normalised flux and inverse variance, as the preprocessing writes them.
    basis : FillBasis
        From ``fit_fill_basis`` on the training spectra.
    parallel : bool, optional
        Rows on numba's threads (True) or on the calling thread alone (False, for a
        caller that runs the fill beside other work); None: ``PARALLEL``. The result
        is the same bytes either way.

    Returns
    -------
    (n, 2, pixels) float32
        Unmasked, not outlying pixels unchanged; the others the reconstruction.

    Raises
    ------
    ValueError
        As ``reconstruct``.
    """
    return _compiled(flux, ivar, basis, 2, fill=True, with_good=False, parallel=parallel)[0]


def fill_masked_reference(flux: np.ndarray, ivar: np.ndarray, basis: FillBasis) -> np.ndarray:
    """``fill_masked`` in plain numpy (``reconstruct_reference``).

    Parameters
    ----------
    flux, ivar : (n, 2, pixels) float32
        Normalised flux and inverse variance, as the preprocessing writes them.
    basis : FillBasis
        From ``fit_fill_basis`` on the training spectra.

    Returns
    -------
    (n, 2, pixels) float32
        Unmasked, not outlying pixels unchanged; the others the reconstruction.

    Raises
    ------
    ValueError
        As ``reconstruct_reference``.
    """
    model, good = reconstruct_reference(flux, ivar, basis)
    return np.where(good, np.asarray(flux, dtype=np.float32), model).astype(np.float32)


def fill_masked_shifted(flux: np.ndarray, ivar: np.ndarray, basis: FillBasis, clip: float, *,
                        parallel: bool | None = None) -> np.ndarray:
    """``fill_masked`` less 1, clipped to [-clip, clip]: the network's input, in one pass.

    The same values as ``np.clip(fill_masked(flux, ivar, basis) - 1, -clip, clip)`` with
    NaN as 0 (``estimator.network_inputs``), written by the fill's kernel instead of by
    whole-array passes over its output.

    Parameters
    ----------
    flux, ivar : (n, 2, pixels) float32
        Normalised flux and inverse variance, as the preprocessing writes them.
    basis : FillBasis
        From ``fit_fill_basis`` on the training spectra.
    clip : float
        The clip, > 0 (``NetworkConfig.input_clip``).
    parallel : bool, optional
        As ``fill_masked``.

    Returns
    -------
    (n, 2, pixels) float32
        The filled flux less 1, clipped.

    Raises
    ------
    ValueError
        As ``reconstruct``, or if ``clip`` is not > 0.
    """
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    return _compiled(flux, ivar, basis, 2, fill=True, with_good=False, parallel=parallel, shift_clip=clip)[0]


def _leading_components(centred: np.ndarray, k: int, oversample: int = 10, power: int = 3) -> np.ndarray:
    """(k, p) leading right singular vectors of (m, p) ``centred`` by randomised SVD.

    Halko, Martinsson & Tropp (2011), Algorithm 4.4 (subspace iteration): a fixed seed, so
    the same spectra give the same basis; a full SVD of (4000, 8000) took 80 s here.
    """
    centred = centred.astype(np.float32)
    rng = np.random.default_rng(0)
    q = np.linalg.qr(centred @ rng.standard_normal((centred.shape[1], min(k + oversample, centred.shape[0]))).astype(np.float32))[0]
    for _ in range(power):
        q = np.linalg.qr(centred.T @ q)[0]
        q = np.linalg.qr(centred @ q)[0]
    _, _, vt = np.linalg.svd(q.T @ centred, full_matrices=False)
    return vt[:k].astype(np.float32)


def fit_fill_basis(flux: np.ndarray, ivar: np.ndarray, n_components: int, *, outlier_sigma: float = 0.0,
                   iterations: int = 3) -> FillBasis:
    """Learn the low-rank model from training spectra with masked pixels.

    Masked pixels (and, with ``outlier_sigma``, outliers) are first filled with the
    per-pixel mean of the well-measured ones, then ``iterations`` times: principal
    components of the filled spectra (SVD), each spectrum's coefficients by weighted
    least squares on its trusted pixels, its untrusted pixels refilled from the fit.

    Parameters
    ----------
    flux, ivar : (n, 2, pixels) float32
        The training spectra, normalised, ivar 0 where masked.
    n_components : int
        k, the model's rank (0: the per-pixel mean).
    outlier_sigma : float
        Threshold for treating a pixel as an outlier, in units of the noise and model
        error together; 0 = only ivar 0 is masked.
    iterations : int

    Returns
    -------
    FillBasis
    """
    x, ivar_flat = _flat(flux, ivar)
    n, p = x.shape
    if n_components < 0 or n_components >= n:
        raise ValueError(f"n_components must be in [0, {n}), got {n_components}")
    good = ivar_flat > 0
    counts = good.sum(axis=0)
    mean = np.where(counts > 0, np.sum(np.where(good, x, 0.0), axis=0) / np.maximum(counts, 1), 1.0).astype(np.float32)
    components = np.zeros((0, p), dtype=np.float32)
    model_sigma = np.zeros(p, dtype=np.float32)
    filled = np.where(good, x, mean)
    for _ in range(max(1, iterations)):
        if n_components:
            mean = filled.mean(axis=0).astype(np.float32)
            # The components from an evenly spaced subset bound the SVD's cost.
            subset = filled[np.linspace(0, n - 1, min(n, _SVD_SPECTRA)).astype(np.int64)]
            components = _leading_components(subset - mean, n_components)
        basis = FillBasis(mean, components, model_sigma, outlier_sigma)
        model, good_now = reconstruct(flux, ivar, basis)
        model = model.reshape(n, p)
        good = good_now.reshape(n, p)
        # The model's own error: the residual's variance beyond what the ivar explains.
        residual = np.where(good, x - model, 0.0)
        noise = np.where(good, 1.0 / np.where(good, ivar_flat, 1.0), 0.0)
        used = np.maximum(good.sum(axis=0), 1)
        model_sigma = np.sqrt(np.maximum((residual**2 - noise).sum(axis=0) / used, 0.0)).astype(np.float32)
        filled = np.where(good, x, model)
    return FillBasis(mean, components, model_sigma, outlier_sigma)


def fill_interpolate(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Masked pixels filled by linear interpolation between the nearest unmasked ones in each arm.

    The simple alternative measured against ``fill_masked`` (docs/preprocessing.md). An
    arm without any unmasked pixel stays 1.

    Parameters
    ----------
    flux, ivar : (n, 2, pixels) float32

    Returns
    -------
    (n, 2, pixels) float32
    """
    flux = np.asarray(flux, dtype=np.float32)
    good = (np.asarray(ivar) > 0) & np.isfinite(flux)
    n, arms, p = flux.shape
    index = np.arange(p)
    out = np.where(good, flux, 1.0).astype(np.float32)
    for i in range(n):
        for a in range(arms):
            g = good[i, a]
            if g.any() and not g.all():
                out[i, a, ~g] = np.interp(index[~g], index[g], flux[i, a, g])
    return out
