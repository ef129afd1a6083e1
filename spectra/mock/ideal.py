"""What preprocessing should recover from a mock spectrum, and the best any method can do.

For every mock spectrum the survey writes, beside its FITS file, the *ideal arrays*: on the
project's rest-frame grids (``spectra.processing.grids``, vacuum Angstrom, 0.1 A) the
noise-free continuum-normalised flux of the mock's own spectrum model, the inverse
variance that the mock's noise model implies for that normalised flux, and the normalised
noise realisation that was drawn for it (without cosmic rays, junk or any other defect).
``flux + noise`` is therefore what a preprocessing with the true RV, the true continuum and
no defect would give for the very same noise draw, so the ridge or network precision on
it against the precision on the project's arrays measures the information preprocessing
loses. And the Cramer-Rao bound of each spectrum for all 15 labels at once.

Layout of ``<survey>/ideal/`` (one shard per chunk of stars, ``stars-<first>-<last>.npz``):

    star            (s,) int64             the stars of the shard (truth_stars.csv ``star``)
    flux            (s, 2, 4000) float32   noise-free normalised rest-frame flux, arms blue, red
    spectrum_star   (n,) int64             each spectrum's star
    file            (n,) str               its FITS file, relative to the survey directory
    kind            (n,) str               "coadd" or "exposure"
    lmjm            (n,) int64             the exposure's LMJM; 0 for a coadd
    ivar            (n, 2, 4000) float32   inverse variance of the normalised flux (1/flux^2
                                           units), 0 where the mock has no data (dead pixels,
                                           outside the arm's coverage)
    noise           (n, 2, 4000) float16   the normalised noise realisation
    crb             (n, 15) float32        Cramer-Rao bound per label (labels' units)

Spectra are in truth_spectra.csv order; (file, kind, lmjm) joins them to read or ingested
spectra. ``ivar`` and ``noise`` went through the same linear-interpolation resampling as
the preprocessing (``kernels.resample_rows``, at the true RV), so ``noise * sqrt(ivar)`` has
unit spread per pixel, like the preprocessing's own ivar. Such resampling correlates
neighbouring pixels, so the bound does not use that ivar: it uses the information per
Angstrom of the native pixels (their normalised ivar divided by their width) times the
0.1 A grid step, which conserves the spectrum's Fisher information; a coadd's is the sum
of its exposures' (each at its own RV), the information of the data it was made from.

Everything here is numpy only (no Django).
"""

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IDEAL_DIR = "ideal"


def finite_difference_jacobian(
    func: Callable[[np.ndarray], np.ndarray], labels: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """Jacobian of a batched spectrum model by central differences.

    Parameters
    ----------
    func : callable
        Maps labels (n, L) float64 to spectra (n, P) (any float dtype).
    labels : (n, L) float64
        Where to take the derivatives.
    steps : (L,) float64
        Half-step per label, in the labels' units (e.g. 10 K, 0.02 dex).

    Returns
    -------
    (n, P, L) float64
        d spectrum / d label, per label unit.

    Raises
    ------
    ValueError
        If ``steps`` is not L positive numbers.
    """
    labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    steps = np.asarray(steps, dtype=np.float64)
    if steps.shape != (labels.shape[1],) or np.any(steps <= 0):
        raise ValueError(f"steps must be {labels.shape[1]} positive numbers, got {steps!r}")
    columns = []
    for k, step in enumerate(steps):
        up, down = labels.copy(), labels.copy()
        up[:, k] += step
        down[:, k] -= step
        columns.append((np.asarray(func(up), dtype=np.float64) - np.asarray(func(down), dtype=np.float64)) / (2 * step))
    return np.stack(columns, axis=-1)


def cramer_rao_bound(jacobian: np.ndarray, ivar: np.ndarray, rows: np.ndarray | None = None, block: int = 64) -> np.ndarray:
    """Cramer-Rao bound of every label, all labels free, for spectra with Gaussian noise.

    F = J^T diag(ivar) J (the Fisher matrix of a model spectrum J-linearised around the
    truth, pixels independent with variance 1/ivar); sigma_k = sqrt((F^-1)_kk).

    Parameters
    ----------
    jacobian : (m, P, L) float
        d flux / d label of m model spectra (per label unit).
    ivar : (n, P) float
        Inverse variance per pixel of n spectra (1/flux^2 units); 0 = no information.
    rows : (n,) int, optional
        Which Jacobian each spectrum uses (default: spectrum i uses Jacobian i, n == m).
    block : int
        Spectra per vectorised step (bounds memory to block * P * L float64).

    Returns
    -------
    (n, L) float64
        sigma_CRB per label in the labels' units; inf for a label the spectrum does not
        constrain at all (a zero column of its Fisher matrix, or a combination of labels
        with no effect on the spectrum).

    Raises
    ------
    ValueError
        If the shapes do not agree, or ``ivar`` has a negative or non-finite value.
    """
    jacobian = np.asarray(jacobian, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    n = ivar.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    if jacobian.ndim != 3 or ivar.shape[1] != jacobian.shape[1] or rows.shape != (n,):
        raise ValueError(f"shapes do not agree: jacobian {jacobian.shape}, ivar {ivar.shape}, rows {rows.shape}")
    if np.any(ivar < 0) or not np.all(np.isfinite(ivar)):
        raise ValueError("ivar must be finite and non-negative")
    labels = jacobian.shape[2]
    sigma = np.empty((n, labels), dtype=np.float64)
    for start in range(0, n, block):
        part = slice(start, min(start + block, n))
        j = jacobian[rows[part]]  # (b, P, L)
        fisher = np.matmul(j.transpose(0, 2, 1), j * ivar[part, :, None])  # (b, L, L)
        sigma[part] = _inverse_diagonal_sqrt(fisher)
    return sigma


def _inverse_diagonal_sqrt(fisher: np.ndarray) -> np.ndarray:
    """sqrt(diag(F^-1)) of a batch of symmetric positive semi-definite (b, L, L) matrices."""
    scale = np.sqrt(np.einsum("bkk->bk", fisher))
    constrained = scale > 0
    safe = np.where(constrained, scale, 1.0)
    normalised = fisher / (safe[:, :, None] * safe[:, None, :])  # unit diagonal: well conditioned
    normalised = np.where(constrained[:, :, None] & constrained[:, None, :], normalised, np.eye(fisher.shape[1]))
    values, vectors = np.linalg.eigh(normalised)
    singular = values <= 1e-12 * values[:, -1:]
    with np.errstate(divide="ignore"):
        inverse_values = np.where(singular, 0.0, 1.0 / np.where(singular, 1.0, values))
    variance = np.einsum("bkj,bj,bkj->bk", vectors, inverse_values, vectors)
    # A label that loads on a direction the spectrum cannot see has no bound.
    blind = np.einsum("bkj,bj->bk", vectors**2, singular.astype(np.float64)) > 1e-6
    sigma = np.sqrt(variance) / safe
    return np.where(constrained & ~blind, sigma, np.inf)


@dataclass
class IdealArrays:
    """The ideal arrays of a whole mock survey, per spectrum (see the module docstring)."""

    file: np.ndarray  # (n,) str
    kind: np.ndarray  # (n,) str
    lmjm: np.ndarray  # (n,) int64, 0 for coadds
    star: np.ndarray  # (n,) int64
    flux: np.ndarray  # (n, 2, 4000) float32, noise-free
    ivar: np.ndarray  # (n, 2, 4000) float32
    noise: np.ndarray  # (n, 2, 4000) float32
    crb: np.ndarray  # (n, 15) float32

    def index(self) -> dict[tuple[str, str, int], int]:
        """(file, kind, lmjm) -> row."""
        return {(str(f), str(k), int(m)): i for i, (f, k, m) in enumerate(zip(self.file, self.kind, self.lmjm, strict=True))}


def load_ideal(survey_dir: str | Path, stars: set[int] | None = None) -> IdealArrays:
    """Read ``<survey_dir>/ideal/*.npz`` into per-spectrum arrays (optionally only some stars).

    Parameters
    ----------
    survey_dir : str or Path
        The mock survey's directory.
    stars : set of int, optional
        Star ids to keep; all when None.

    Returns
    -------
    IdealArrays
        n spectra in shard order: flux (n, 2, 4000) float32 (each spectrum's star's
        noise-free flux), ivar (n, 2, 4000) float32, noise (n, 2, 4000) float32 (stored as
        float16), crb (n, 15) float32 in the labels' units.

    Raises
    ------
    FileNotFoundError
        If the survey has no ideal arrays.
    """
    shards = sorted((Path(survey_dir) / IDEAL_DIR).glob("stars-*.npz"))
    if not shards:
        raise FileNotFoundError(f"{survey_dir}: no ideal arrays (ideal/stars-*.npz); make the survey with them")
    parts: dict[str, list[np.ndarray]] = {key: [] for key in ("file", "kind", "lmjm", "star", "flux", "ivar", "noise", "crb")}
    for shard in shards:
        with np.load(shard) as data:
            keep = np.ones(data["spectrum_star"].size, dtype=bool)
            if stars is not None:
                keep = np.isin(data["spectrum_star"], np.fromiter(stars, dtype=np.int64))
            position = np.searchsorted(data["star"], data["spectrum_star"][keep])
            parts["file"].append(data["file"][keep])
            parts["kind"].append(data["kind"][keep])
            parts["lmjm"].append(data["lmjm"][keep])
            parts["star"].append(data["spectrum_star"][keep])
            parts["flux"].append(data["flux"][position])
            parts["ivar"].append(data["ivar"][keep])
            parts["noise"].append(data["noise"][keep].astype(np.float32))
            parts["crb"].append(data["crb"][keep])
    return IdealArrays(**{key: np.concatenate(values) for key, values in parts.items()})


def save_npz_deterministic(path: str | Path, **arrays: np.ndarray) -> Path:
    """Like ``np.savez`` (uncompressed, readable by ``np.load``) but byte-identical for identical arrays.

    Members get fixed timestamps (``np.savez`` stamps the current time); the file is
    written under ``<name>.partial`` and renamed into place.

    Parameters
    ----------
    path : str or Path
        The .npz file; its directory is created as needed.
    **arrays : ndarray
        Member name to array (no object arrays: pickling is refused).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    partial.replace(path)
    return path
