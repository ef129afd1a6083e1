"""A coadd's masked pixels filled from the exposures of its own file.

A LAMOST MRS coadd's ORMASK is set where any one exposure was masked, and the project
masks every ORMASK bit (``PreprocessConfig.coadd_ormask_excludes``: those pixels of real
coadds are mostly junk). Where a coadd masks a pixel the other exposures of the same file
usually have it: those pixels are filled from the exposures' normalised arrays, so the
coadd keeps the information LAMOST combined into it without the junk. LAMOST's own
coadd pixels are kept wherever it has them. docs/preprocessing.md, "Which coadd pixels
are masked", gives the figures.
"""

import numpy as np

from .kernels import coadd_fill_rows


def coadd_masked_fill(
    flux: np.ndarray,
    ivar: np.ndarray,
    is_coadd: np.ndarray,
    files: np.ndarray,
    usable: np.ndarray,
    *,
    clip_sigma: float = 5.0,
    min_overlap: int = 100,
    replace_sigma: float | None = None,
) -> np.ndarray:
    """Fill each coadd's masked pixels from the exposures of its file, in place.

    Per file, the exposures are combined pixel by pixel: the ivar-weighted mean of their
    normalised flux where their ivar > 0, with ivar the sum of theirs. Where 3 or more
    exposures have the pixel, a value more than ``clip_sigma`` sigma off their median is
    left out; where 2 have it and they differ by more than ``clip_sigma`` combined sigma,
    the higher one is (a cosmic ray). Each arm of the combination is scaled to the coadd's level (the coadd
    and the exposures are normalised by continua of their own, whose level depends on the
    S/N): by the median ratio of the coadd to the exposures' weighted mean over the
    pixels both have, at least ``min_overlap`` of them, or the arm is left alone. A coadd
    pixel with ivar 0 where the combination has data takes the scaled combination and
    its ivar (sum / scale^2). With ``replace_sigma``, so does a pixel the coadd has that
    lies more than ``replace_sigma`` sigma off the scaled combination, the two variances
    added, where at least two exposures' values are left after the clipping (junk in the
    coadd that no mask bit marks: a cosmic ray its exposures' clipped combination leaves
    out, FLUX 0 with IVAR kept); a single exposure's value, or the lower of two that
    disagree, is no judge of the coadd's.

    Parameters
    ----------
    flux, ivar : (N, 2, M) float32
        Normalised flux and its inverse variance (0: masked) of N spectra, both arms;
        changed in place.
    is_coadd : (N,) bool
        Which spectra are coadds (the others are single exposures).
    files : (N,) int64
        The file each spectrum was read from: a coadd is filled from the exposures of
        its own file only.
    usable : (N,) bool
        Spectra whose arrays are meaningful (``PreprocessedBatch.processed``): others are
        neither filled nor used.
    clip_sigma : float
        Outlier threshold of the combination, sigma.
    min_overlap : int
        Fewest pixels an arm of the coadd and the combination must share to match levels.
    replace_sigma : float, optional
        Threshold, in sigma of the coadd and the combination together, beyond which a
        pixel the coadd has is replaced too; None (or 0): only masked pixels are filled.

    Returns
    -------
    (N,) bool
        The coadds that had at least one pixel filled or replaced.

    Raises
    ------
    ValueError
        If the shapes do not match, or ``replace_sigma`` is negative or not finite.
    """
    _check_replace_sigma(replace_sigma)
    n = flux.shape[0]
    if flux.ndim != 3 or ivar.shape != flux.shape or not (is_coadd.shape == files.shape == usable.shape == (n,)):
        raise ValueError(f"flux {flux.shape}, ivar {ivar.shape}, is_coadd {is_coadd.shape}, files {files.shape} "
                         f"and usable {usable.shape} do not match (N, 2, M) and (N,)")
    filled = np.zeros(n, dtype=bool)
    coadds, starts, ends, members = _groups(is_coadd, files, usable)
    if coadds.size:
        coadd_fill_rows(flux, ivar, coadds, starts, ends, members, float(clip_sigma), int(min_overlap),
                        float(replace_sigma or 0.0), filled)
    return filled


def _check_replace_sigma(replace_sigma: float | None) -> None:
    if replace_sigma is not None and not (np.isfinite(replace_sigma) and replace_sigma >= 0):
        raise ValueError(f"replace_sigma must be None or a finite number >= 0, not {replace_sigma!r}")


def _groups(is_coadd, files, usable):
    """Usable coadds, and the rows of each one's usable exposures: (coadds, starts, ends, members)."""
    coadds = np.flatnonzero(is_coadd & usable)
    exposures = np.flatnonzero(~is_coadd & usable)
    members = exposures[np.argsort(files[exposures], kind="stable")]
    starts = np.searchsorted(files[members], files[coadds], side="left")
    ends = np.searchsorted(files[members], files[coadds], side="right")
    return coadds, starts.astype(np.int64), ends.astype(np.int64), members.astype(np.int64)


def coadd_masked_fill_reference(
    flux: np.ndarray,
    ivar: np.ndarray,
    is_coadd: np.ndarray,
    files: np.ndarray,
    usable: np.ndarray,
    *,
    clip_sigma: float = 5.0,
    min_overlap: int = 100,
    replace_sigma: float | None = None,
) -> np.ndarray:
    """``coadd_masked_fill`` in plain numpy (the reference the compiled kernel is tested
    against; same parameters and result)."""
    _check_replace_sigma(replace_sigma)
    filled = np.zeros(flux.shape[0], dtype=bool)
    coadds, starts, ends, order = _groups(is_coadd, files, usable)
    for coadd, start, end in zip(coadds.tolist(), starts.tolist(), ends.tolist(), strict=True):
        if end == start or ((ivar[coadd] > 0).all() and not replace_sigma):
            continue
        members = order[start:end]
        f = flux[members]
        w = np.where(np.isfinite(ivar[members]) & (ivar[members] > 0), ivar[members], np.float32(0.0))
        has = (w > 0).any(axis=0)
        for arm in range(flux.shape[1]):
            have = ivar[coadd, arm] > 0
            hole = ~have & has[arm]
            both = have & has[arm]
            if (not hole.any() and not replace_sigma) or both.sum() < min_overlap:
                continue
            # The level from the plain weighted mean (the median ratio ignores the odd
            # outlier); the clipped combination only where it is needed, in the hole.
            wb = w[:, arm, both]
            mean = (wb * f[:, arm, both]).sum(axis=0) / wb.sum(axis=0)
            nonzero = mean != 0  # (a mean of exactly 0 gives no ratio)
            if nonzero.sum() < min_overlap:
                continue
            level = float(np.median(flux[coadd, arm, both][nonzero] / mean[nonzero]))
            if not np.isfinite(level) or level <= 0:
                continue
            if replace_sigma:
                combined, total, count = exposures_combined(f[:, arm, has[arm]], w[:, arm, has[arm]], clip_sigma,
                                                            with_count=True)
                value = combined * level
                with np.errstate(divide="ignore", invalid="ignore"):
                    c_ivar = ivar[coadd, arm, has[arm]].astype(np.float64)
                    off = np.abs(flux[coadd, arm, has[arm]] - value) > replace_sigma * np.sqrt(
                        1.0 / c_ivar + level**2 / total)
                redo = (~(c_ivar > 0) | (off & (count >= 2))) & (total > 0)
                index = np.flatnonzero(has[arm])[redo]
                combined, total = combined[redo], total[redo]
                kept = np.ones(index.size, dtype=bool)
            else:
                combined, total = exposures_combined(f[:, arm, hole], w[:, arm, hole], clip_sigma)
                kept = total > 0  # (every exposure clipped away: the pixel stays masked)
                index = np.flatnonzero(hole)[kept]
            flux[coadd, arm, index] = (combined[kept] * level).astype(flux.dtype)
            ivar[coadd, arm, index] = (total[kept] / level**2).astype(ivar.dtype)
            filled[coadd] |= bool(kept.any())
    return filled


def exposures_combined(f: np.ndarray, w: np.ndarray, clip_sigma: float = 5.0, *, with_count: bool = False) -> tuple:
    """The clipped, ivar-weighted mean of k normalised exposures of one star.

    Parameters
    ----------
    f, w : (k, ...) float
        Normalised flux and its inverse variance (0 or non-finite: no data), k >= 1.
    clip_sigma : float
        Per pixel: where 3 or more exposures have data, values more than this many sigma
        off their median are left out; where 2 have, and they differ by more than this
        many combined sigma, the higher one is (a cosmic ray).

    Returns
    -------
    combined : (...) float64
        The weighted mean; 1 where no exposure has data.
    total : (...) float64
        Its inverse variance, the sum of the values kept; 0 where none.
    count : (...) int64
        How many values were kept; returned only ``with_count``.
    """
    f = f.astype(np.float64)
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0).astype(np.float64)
    if f.shape[0] >= 2:
        # Per pixel, the values with data sorted (the others last, +inf): the median of
        # the first `count`, and with exactly two, the lower and the higher.
        count = (w > 0).sum(axis=0)
        order = np.argsort(np.where(w > 0, f, np.inf), axis=0, kind="stable")
        ordered = np.take_along_axis(np.where(w > 0, f, np.inf), order, axis=0)
        low = np.take_along_axis(ordered, np.maximum(count - 1, 0)[None] // 2, axis=0)[0]
        high = np.take_along_axis(ordered, (count // 2)[None], axis=0)[0]
        median = np.where(count > 0, 0.5 * (low + high), 0.0)
        lower_w = np.take_along_axis(w, order[:1], axis=0)[0]
        higher_w = np.take_along_axis(w, order[1:2], axis=0)[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            off = (count >= 3) & (np.abs(f - median) * np.sqrt(w) > clip_sigma)
            apart = (count == 2) & (
                np.abs(ordered[1] - ordered[0]) / np.sqrt(1.0 / lower_w + 1.0 / higher_w) > clip_sigma)
        w = np.where(off, 0.0, w)
        drop = np.zeros(w.shape, dtype=bool)
        np.put_along_axis(drop, order[1:2], apart[None], axis=0)  # (the higher of two that disagree)
        w = np.where(drop, 0.0, w)
    total = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        combined = np.where(total > 0, (w * np.where(w > 0, f, 0.0)).sum(axis=0) / total, 1.0)
    if with_count:
        return combined, total, (w > 0).sum(axis=0).astype(np.int64)
    return combined, total
