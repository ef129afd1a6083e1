"""Repeat spectra of one star as a judge of the labels and their uncertainties.

Pure numpy (no Django): the spectra of a star, exposures and nightly coadds over one or
more nights, with each one's labels and stated 1-sigma uncertainties. Three checks:

1. Repeat scatter / stated uncertainty per star and label, for the exposures within a night
   (pooled over nights) and for the coadds across nights. The stated uncertainty is the
   whole error against the truth, the model's own error included, which repeats of one
   star share; so the ratio is also given against the S/N part of the uncertainty alone
   (``noise_share``), which is what repeats do measure.
2. Each coadd against the inverse-variance weighted mean of its own night's exposures, in
   units of ``sqrt(sigma_coadd**2 + sigma_mean**2)``. The coadd and its exposures share
   their photons, so this is a lenient bound: a value above 1 is already a discrepancy.
3. Night-to-night offsets: each night's value (its coadd, else the weighted mean of its
   exposures) against the weighted mean of the star's other nights, in units of the
   combined uncertainty; ``flagged`` when above ``OFFSET_FLAG_SIGMA``.
"""

import numpy as np

OFFSET_FLAG_SIGMA = 3.0


def _weighted_mean(values: np.ndarray, sigma: np.ndarray) -> tuple[float, float]:
    """Inverse-variance weighted mean and its 1-sigma uncertainty; NaN when nothing is usable."""
    usable = np.isfinite(values) & np.isfinite(sigma) & (sigma > 0)
    if not usable.any():
        return np.nan, np.nan
    weights = 1.0 / sigma[usable] ** 2
    return float(np.sum(weights * values[usable]) / np.sum(weights)), float(1.0 / np.sqrt(np.sum(weights)))


def _pooled_scatter(values: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    """Standard deviation about each group's own mean, pooled over groups; and its degrees of freedom."""
    squares, dof = 0.0, 0
    for group in np.unique(groups):
        members = values[(groups == group) & np.isfinite(values)]
        if members.size > 1:
            squares += float(np.sum((members - members.mean()) ** 2))
            dof += members.size - 1
    return (float(np.sqrt(squares / dof)) if dof else np.nan), dof


def _median(values: np.ndarray) -> float:
    """Median of the finite values; NaN (without a warning) when there are none."""
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else np.nan


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if np.isfinite(numerator) and np.isfinite(denominator) and denominator > 0 else np.nan


def repeat_statistics(star: np.ndarray, night: np.ndarray, coadd: np.ndarray, values: np.ndarray,
                      errors: np.ndarray, names: list[str], noise_share: np.ndarray | None = None) -> list[dict]:
    """The three repeat checks, per star with at least two spectra.

    Parameters
    ----------
    star, night : (n,) int64
        Star id and night (LMJD) of each spectrum.
    coadd : (n,) bool
        True for nightly coadds, False for single exposures.
    values, errors : (n, n_labels) float64
        Labels and their stated 1-sigma uncertainties (label units); NaN where missing.
    names : list of str, length n_labels
        Label names, the keys of the result's ``labels``.
    noise_share : (n, n_labels) float64, optional
        Share of each stated uncertainty that the S/N term makes (0-1), from the noise model
        (``inference.network.uncertainty.noise_share``); the ``exposure_noise_*`` entries
        are NaN without it.

    Returns
    -------
    list of dict
        One dict per star with two or more spectra, in increasing star id: ``star``,
        ``n_exposures``, ``n_coadds``, ``nights``; ``labels``
        ``{name: {exposure_scatter, exposure_dof, exposure_sigma, exposure_ratio,
        exposure_noise_sigma, exposure_noise_ratio, coadd_scatter, coadd_dof, coadd_sigma,
        coadd_ratio}}`` (NaN where too few repeats); and ``per_night``, a list of
        ``{night, n_exposures, labels: {name: {coadd_minus_exposures, coadd_z, offset,
        offset_z, flagged}}}``. Scatters and offsets in label units, ``*_z`` and ratios
        dimensionless; ``flagged`` when ``|offset_z| > OFFSET_FLAG_SIGMA``.

    Raises
    ------
    ValueError
        If ``values`` and ``errors`` are not both (n, len(names)).
    """
    star = np.asarray(star, dtype=np.int64)
    night = np.asarray(night, dtype=np.int64)
    coadd = np.asarray(coadd, dtype=bool)
    values = np.asarray(values, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    if values.shape != errors.shape or values.shape != (star.size, len(names)):
        raise ValueError(f"values and errors must be ({star.size}, {len(names)}), got {values.shape} and {errors.shape}")
    noise = errors * noise_share if noise_share is not None else np.full_like(errors, np.nan)
    results = []
    for star_id in np.unique(star):
        mine = star == star_id
        if mine.sum() < 2:
            continue
        exposures, coadds = mine & ~coadd, mine & coadd
        nights = np.unique(night[mine])
        labels = {}
        for k, name in enumerate(names):
            exposure_scatter, exposure_dof = _pooled_scatter(values[exposures, k], night[exposures])
            coadd_values = values[coadds, k]
            coadd_scatter = float(np.std(coadd_values[np.isfinite(coadd_values)], ddof=1)) \
                if np.isfinite(coadd_values).sum() > 1 else np.nan
            exposure_sigma = _median(errors[exposures, k])
            exposure_noise = _median(noise[exposures, k])
            coadd_sigma = _median(errors[coadds, k])
            labels[name] = {
                "exposure_scatter": exposure_scatter, "exposure_dof": exposure_dof, "exposure_sigma": exposure_sigma,
                "exposure_ratio": _ratio(exposure_scatter, exposure_sigma),
                "exposure_noise_sigma": exposure_noise, "exposure_noise_ratio": _ratio(exposure_scatter, exposure_noise),
                "coadd_scatter": coadd_scatter, "coadd_dof": int(max(np.isfinite(coadd_values).sum() - 1, 0)),
                "coadd_sigma": coadd_sigma, "coadd_ratio": _ratio(coadd_scatter, coadd_sigma),
            }
        # Each night's value and uncertainty per label: the coadd, else the exposures' weighted mean.
        night_value = np.full((nights.size, len(names)), np.nan)
        night_sigma = np.full((nights.size, len(names)), np.nan)
        per_night = []
        for i, n in enumerate(nights):
            its_exposures, its_coadd = exposures & (night == n), coadds & (night == n)
            entry = {"night": int(n), "n_exposures": int(its_exposures.sum()), "labels": {}}
            for k, name in enumerate(names):
                mean, mean_sigma = _weighted_mean(values[its_exposures, k], errors[its_exposures, k])
                if its_coadd.any():
                    c_value, c_sigma = values[its_coadd, k][0], errors[its_coadd, k][0]
                    difference = c_value - mean
                    entry["labels"][name] = {"coadd_minus_exposures": float(difference),
                                             "coadd_z": _ratio(abs(difference), np.hypot(c_sigma, mean_sigma))
                                             * np.sign(difference)}
                    night_value[i, k], night_sigma[i, k] = c_value, c_sigma
                else:
                    entry["labels"][name] = {"coadd_minus_exposures": np.nan, "coadd_z": np.nan}
                    night_value[i, k], night_sigma[i, k] = mean, mean_sigma
            per_night.append(entry)
        for i, entry in enumerate(per_night):
            others = np.arange(nights.size) != i
            for k, name in enumerate(names):
                rest, rest_sigma = _weighted_mean(night_value[others, k], night_sigma[others, k])
                offset = night_value[i, k] - rest
                z = _ratio(abs(offset), np.hypot(night_sigma[i, k], rest_sigma)) * np.sign(offset)
                entry["labels"][name].update({"offset": float(offset), "offset_z": z,
                                              "flagged": bool(np.isfinite(z) and abs(z) > OFFSET_FLAG_SIGMA)})
        results.append({"star": int(star_id), "n_exposures": int(exposures.sum()), "n_coadds": int(coadds.sum()),
                        "nights": [int(n) for n in nights], "labels": labels, "per_night": per_night})
    return results
