"""Accuracy and precision per label in S/N bins (the paper's Fig. 7)."""

import numpy as np

from .uncertainty import robust_std

# Bins of the weaker arm's S/N; the paper's catalog starts at S/N 10.
EVALUATION_SNR_EDGES: tuple[float, ...] = (10.0, 20.0, 30.0, 40.0, 50.0, 70.0, 100.0, float("inf"))


def _stats(differences: np.ndarray) -> dict:
    finite = differences[np.isfinite(differences)]
    if finite.size == 0:
        return {"n": 0, "bias": None, "std": None, "robust_std": None}
    return {
        "n": int(finite.size),
        "bias": float(np.mean(finite)),
        "std": float(np.std(finite)),
        "robust_std": float(robust_std(finite)),
    }


def accuracy_precision(
    predicted: np.ndarray,
    truth: np.ndarray,
    snr: np.ndarray,
    names: list[str],
    edges: tuple[float, ...] = EVALUATION_SNR_EDGES,
) -> dict:
    """Mean offset (accuracy) and standard deviation (precision) of prediction - truth.

    Parameters
    ----------
    predicted, truth : array_like, shape (n, n_labels), float64
        Labels in physical units (Teff K, the rest dex); NaN in ``truth`` is a missing
        reference label and is left out of that label's figures.
    snr : array_like, shape (n,), float64
        The weaker arm's S/N.
    names : list of str
        Label names, in column order.
    edges : tuple of float, optional
        S/N bin edges, increasing (the last may be inf).

    Returns
    -------
    dict
        ``{"snr_edges": [...], "overall": {name: stats}, "by_snr": {name: [stats per bin]}}``,
        ``overall`` over S/N > the first edge; stats are ``{n, bias, std, robust_std}``
        (None where a bin is empty), in the label's unit; inf edges as None.

    Notes
    -----
    Accuracy and precision per S/N bin as in the SPCANet paper's Fig. 7 (Wang et al. 2020,
    ApJ 891, 23, sect. 3.2).
    """
    differences = np.asarray(predicted, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    snr = np.asarray(snr, dtype=np.float64)
    selected = snr > edges[0]
    bins = np.digitize(snr, edges) - 1
    result = {"snr_edges": [float(e) if np.isfinite(e) else None for e in edges], "overall": {}, "by_snr": {}}
    for k, name in enumerate(names):
        result["overall"][name] = _stats(differences[selected, k])
        result["by_snr"][name] = [_stats(differences[bins == b, k]) for b in range(len(edges) - 1)]
    return result
