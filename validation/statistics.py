"""Bias and scatter of our labels against another survey's (paper Table 1, Figs. 13-14).

Pure numpy, vectorised over all compared spectra of a label; no Django.
"""

import numpy as np

SNR_EDGES: tuple[float, ...] = (10.0, 20.0, 30.0, 50.0, 100.0, float("inf"))
VALUE_EDGES: dict[str, np.ndarray] = {
    "teff": np.arange(3500.0, 8000.1, 500.0),
    "logg": np.arange(0.0, 5.01, 0.5),
}
ABUNDANCE_EDGES = np.arange(-2.5, 1.01, 0.25)
PLOT_SAMPLE = 5000


def _robust_std(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _binned(differences: np.ndarray, key: np.ndarray, edges) -> dict:
    index = np.digitize(key, edges) - 1
    inside = (index >= 0) & (index < len(edges) - 1)
    counts = np.bincount(index[inside], minlength=len(edges) - 1)
    sums = np.bincount(index[inside], weights=differences[inside], minlength=len(edges) - 1)
    squares = np.bincount(index[inside], weights=differences[inside] ** 2, minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
        std = np.sqrt(np.maximum(squares / counts - mean**2, 0.0))
    finite_edges = [float(e) if np.isfinite(e) else None for e in edges]
    return {
        "edges": finite_edges,
        "n": counts.tolist(),
        "bias": [float(v) if c else None for v, c in zip(mean, counts, strict=True)],
        "scatter": [float(v) if c > 1 else None for v, c in zip(std, counts, strict=True)],
    }


def compare_label(
    ours: np.ndarray,
    theirs: np.ndarray,
    star_ids: np.ndarray,
    snr: np.ndarray,
    value_edges,
    *,
    seed: int = 0,
) -> dict | None:
    """Statistics of ours - theirs for one label over the compared spectra.

    Parameters
    ----------
    ours, theirs : array_like, shape (n,), float64
        Our value and the other survey's, in the label's unit (K for Teff, dex otherwise);
        NaN where a value is missing (the pair is left out).
    star_ids : array_like, shape (n,), int64
        Our star of each spectrum (several spectra per star).
    snr : array_like, shape (n,), float64
        The weaker arm's S/N.
    value_edges : sequence of float
        Bin edges of our label value, in the label's unit (e.g. ``VALUE_EDGES``).
    seed : int, optional
        Seed of the random sample of pairs kept for plots.

    Returns
    -------
    dict or None
        None when nothing is compared; otherwise n_spectra, n_stars, bias, scatter,
        median_offset, robust_scatter (1.4826 MAD), bias_error (scatter / sqrt(n_stars):
        spectra of one star are not independent), star_bias and star_scatter (over per-star
        mean differences), the regression line (slope, intercept; None below three pairs or
        with no spread in our value) of the difference on our value, ``by_value`` and
        ``by_snr`` bins (edges, n, bias, scatter; None where a bin is too small), and a
        sample of at most ``PLOT_SAMPLE`` (ours, difference) pairs for plots. Plain Python
        floats and lists, in the label's unit.

    Notes
    -----
    Bias and sigma of ours - theirs as in the SPCANet paper's Table 1 and Figs. 13-14
    (Wang et al. 2020, ApJ 891, 23, sect. 4.2.1).
    """
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    valid = np.isfinite(ours) & np.isfinite(theirs)
    if not valid.any():
        return None
    x, difference = ours[valid], ours[valid] - theirs[valid]
    stars = np.asarray(star_ids, dtype=np.int64)[valid]
    unique_stars, star_index = np.unique(stars, return_inverse=True)
    star_mean = np.bincount(star_index, weights=difference) / np.bincount(star_index)
    n = difference.size
    scatter = float(np.std(difference))
    slope, intercept = (np.polyfit(x, difference, 1) if n >= 3 and np.ptp(x) > 0 else (np.nan, np.nan))
    sample = np.random.default_rng(seed).permutation(n)[:PLOT_SAMPLE]
    return {
        "n_spectra": int(n),
        "n_stars": int(unique_stars.size),
        "bias": float(np.mean(difference)),
        "scatter": scatter,
        "median_offset": float(np.median(difference)),
        "robust_scatter": _robust_std(difference),
        "bias_error": scatter / np.sqrt(unique_stars.size),
        "star_bias": float(np.mean(star_mean)),
        "star_scatter": float(np.std(star_mean)),
        "slope": float(slope) if np.isfinite(slope) else None,
        "intercept": float(intercept) if np.isfinite(intercept) else None,
        "by_value": _binned(difference, x, value_edges),
        "by_snr": _binned(difference, np.asarray(snr, dtype=np.float64)[valid], SNR_EDGES),
        "sample": {"ours": np.round(x[sample], 4).tolist(), "difference": np.round(difference[sample], 4).tolist()},
    }
