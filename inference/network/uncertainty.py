"""Per-label uncertainties: a noise model in S/N, calibrated on held-out spectra.

Method: the residual scatter of a trained network on spectra it did not learn from grows
as the S/N falls. Per label we model its variance as ``floor**2 + (slope / snr)**2``
(a systematic floor plus photon noise scaling as 1/S/N), with ``snr`` the weaker arm's
S/N. The two coefficients are fitted on spectra the network did not learn from (its
cross-validation and test sets; the test set's check is cross-fitted, ``cross_fitted_sigma``),
from the variances of the residuals in S/N bins, by non-negative least squares, each bin
weighted by its precision, sqrt(n) / variance for n spectra. Plain variances, not robust
ones: the residuals have heavier tails than a Gaussian (a few stars are fitted badly),
and the uncertainty is meant to give (prediction - truth) / uncertainty a spread of 1,
which a MAD-based width does not (on the benchmark survey it left z spreads up to 1.9;
plain variances, 0.85-1.27). The test set then checks the calibration: the spread of
(prediction - truth) / uncertainty should be close to 1.

The residuals are taken against the reference catalog's labels, which carry errors of
their own: their variance is the network's plus the reference's. Where the catalog gives
its errors, the fits subtract them (in quadrature, per spectrum), so that the uncertainty
describes the error against the truth; without them it also holds the reference's error
(on the harsh mock, trained on reference labels with 30 K / 0.05 / 0.03 dex errors, the
z spreads against the truth were 0.77 / 0.90 / 0.85 for Teff, log g, [Fe/H]).

Why not Monte Carlo dropout: it costs tens of forward passes per spectrum, which the
survey throughput cannot afford, and the spread of its samples reflects the dropout of
the dense layers, not the network's error on stars it has not seen. The S/N model costs nothing at prediction time and is
checked on unseen spectra.
"""

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls
from scipy.stats import chi2

CALIBRATION_SNR_EDGES = np.array([10.0, 15.0, 20.0, 30.0, 45.0, 70.0, 100.0, 200.0, np.inf])
_MIN_PER_BIN = 8
# Folds of the test stars for the cross-fitted calibration check (``cross_fitted_sigma``):
# each check model then sees 80% of the test stars besides the CV set, near the final one.
CALIBRATION_FOLDS = 5
# The reference's errors are subtracted from a bin's residual variance down to a share of
# it at most (``network_share``): at least 10%, as stated errors larger than the scatter
# itself are overstated and the network's own uncertainty is never set to zero; and at
# least sqrt(2 / n) for a bin of n stars, the relative standard error of its variance,
# below which the network's part cannot be told from zero. Each stated error counts for at
# most the bin's variance, and in the context model's likelihood for at most
# (1 - share) / share times the network's own variance of that spectrum.
_MIN_NETWORK_SHARE = 0.1


def network_share(n_independent: int | np.ndarray) -> np.ndarray:
    """The smallest share of a residual variance left to the network when the reference's
    errors are subtracted: ``max(0.1, sqrt(2 / n))``, 1 for n <= 2.

    Parameters
    ----------
    n_independent : int or array_like of int
        Independent residuals behind the variance: stars (a star's spectra share its
        reference error and the network's error for it), else spectra.

    Returns
    -------
    ndarray of float64, same shape (0-dimensional for an int)
        The share, 0.1-1.
    """
    n = np.asarray(n_independent, dtype=np.float64)
    return np.asarray(np.clip(np.sqrt(2.0 / np.maximum(n, 1.0)), _MIN_NETWORK_SHARE, 1.0))


def _groups(groups: np.ndarray | None, n: int) -> np.ndarray:
    """(n,) int64 group codes (0..k-1) from any (n,) sortable ids; one group per spectrum for None.

    Raises
    ------
    ValueError
        If ``groups`` is not (n,) or its ids cannot be compared.
    """
    if groups is None:
        return np.arange(n, dtype=np.int64)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must be shaped ({n},) like the residuals, got {groups.shape}")
    try:
        return np.unique(groups, return_inverse=True)[1].astype(np.int64)
    except TypeError as error:
        raise ValueError(f"groups must be ids of one comparable type ({error})") from error


def _known_variance(reference_errors: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """(n, n_labels) float64 squared reference errors, 0 where unknown (None, NaN, not > 0)."""
    if reference_errors is None:
        return np.zeros(shape)
    errors = np.asarray(reference_errors, dtype=np.float64)
    if errors.shape != shape:
        raise ValueError(f"reference errors must be shaped like the residuals {shape}, got {errors.shape}")
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(errors) & (errors > 0), errors, 0.0) ** 2


def robust_std(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """1.4826 x the median absolute deviation, ignoring NaN.

    Parameters
    ----------
    values : array_like
        Any shape; NaN is ignored.
    axis : int, optional
        Axis along which the spread is taken.

    Returns
    -------
    ndarray or float64
        ``values``' shape without ``axis``, in the unit of ``values``; NaN where a slice
        has no finite value. 1.4826 MAD equals the standard deviation for a Gaussian.
    """
    median = np.nanmedian(values, axis=axis, keepdims=True)
    return 1.4826 * np.nanmedian(np.abs(values - median), axis=axis)


@dataclass(frozen=True)
class SnrNoiseModel:
    """Per-label uncertainty ``sqrt(floor**2 + (slope / snr)**2)``; see the module docstring.

    Parameters
    ----------
    floor : ndarray, shape (n_labels,), float64
        Systematic floor, label units (Teff K, the rest dex); NaN for a label with too few
        calibration residuals.
    slope : ndarray, shape (n_labels,), float64
        Photon-noise term, label units x S/N.
    """

    floor: np.ndarray  # (n_labels,) float64, label units
    slope: np.ndarray  # (n_labels,) float64, label units x S/N

    @classmethod
    def fit(cls, residuals: np.ndarray, snr: np.ndarray, reference_errors: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> "SnrNoiseModel":
        """Fit per label on residuals = prediction - reference.

        Parameters
        ----------
        residuals : array_like, shape (n, n_labels), float64
            Prediction - reference on the calibration spectra, label units, NaN where unknown.
        snr : array_like, shape (n,), float64
            The weaker arm's S/N.
        reference_errors : array_like, shape (n, n_labels), float64, optional
            The reference labels' own 1-sigma errors, label units; NaN (or None for all)
            where unknown, read as 0. The residuals' variance is the network's plus the
            reference's, so the mean squared reference error of each bin is subtracted from
            the bin's variance (down to ``network_share`` of it): the model then describes
            the error against the truth.
        groups : array_like, shape (n,), optional
            The star of each spectrum: a bin's number of independent residuals for
            ``network_share`` (None: every spectrum counts as one).

        Returns
        -------
        SnrNoiseModel
            Fitted by weighted non-negative least squares on the residual variances in the
            ``CALIBRATION_SNR_EDGES`` bins with at least 8 spectra; a label with no such
            bin gets its overall standard deviation (less the reference's, in quadrature)
            as floor and slope 0.

        Raises
        ------
        ValueError
            If ``reference_errors`` is not shaped like ``residuals``, or ``groups`` is not
            (n,) comparable ids.
        """
        residuals = np.asarray(residuals, dtype=np.float64)
        snr = np.asarray(snr, dtype=np.float64)
        known = _known_variance(reference_errors, residuals.shape)
        groups = _groups(groups, residuals.shape[0])
        n_labels = residuals.shape[1]
        floor = np.zeros(n_labels)
        slope = np.zeros(n_labels)
        bin_index = np.digitize(snr, CALIBRATION_SNR_EDGES) - 1
        for k in range(n_labels):
            rows, targets, weights = [], [], []
            for b in range(CALIBRATION_SNR_EDGES.size - 1):
                chosen = (bin_index == b) & np.isfinite(residuals[:, k])
                if chosen.sum() < _MIN_PER_BIN:
                    continue
                variance = np.var(residuals[chosen, k], ddof=1)
                inverse_snr2 = np.mean(1.0 / snr[chosen] ** 2)
                rows.append([1.0, inverse_snr2])
                # No one stated error counts for more than the bin's whole variance: one
                # overstated (or placeholder) error cannot pull the bin down.
                stated = np.mean(np.minimum(known[chosen, k], variance))
                share = network_share(np.unique(groups[chosen]).size) if stated > 0 else 0.0
                targets.append(max(variance - stated, share * variance))
                # Relative error of a variance estimate ~ sqrt(2 / n): weight by
                # sqrt(n) / variance so that bins count by their precision. n counts the
                # spectra: weighting by the stars instead (a star's spectra share part of
                # its error) calibrated no better on the harsh mock (docs/network.md).
                weights.append(np.sqrt(chosen.sum()) / max(variance, 1e-12))
            if not rows:
                finite = np.isfinite(residuals[:, k])
                if finite.sum() > 1:
                    variance = np.var(residuals[finite, k], ddof=1)
                    stated = np.mean(np.minimum(known[finite, k], variance))
                    share = network_share(np.unique(groups[finite]).size) if stated > 0 else 0.0
                    floor[k] = np.sqrt(max(variance - stated, share * variance))
                else:
                    floor[k] = np.nan
                continue
            design = np.asarray(rows) * np.asarray(weights)[:, None]
            solution, _ = nnls(design, np.asarray(targets) * np.asarray(weights))
            floor[k], slope[k] = np.sqrt(solution)
        return cls(floor=floor, slope=slope)

    def sigma(self, snr: np.ndarray) -> np.ndarray:
        """Uncertainties for spectra of the given S/N.

        Parameters
        ----------
        snr : array_like, shape (n,), float64
            The weaker arm's S/N.

        Returns
        -------
        ndarray, shape (n, n_labels), float64
            1-sigma uncertainties, label units; NaN where ``snr`` <= 0.
        """
        snr = np.asarray(snr, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = np.where(snr > 0, 1.0 / snr, np.nan)
        return np.sqrt(self.floor**2 + (self.slope * inverse[:, None]) ** 2)

    def as_dict(self) -> dict:
        """The model as JSON-serialisable values, for the artifact's manifest.

        Returns
        -------
        dict
            ``{"method": "snr-noise-model", "floor": [...], "slope": [...]}``.
        """
        return {"method": "snr-noise-model", "floor": self.floor.tolist(), "slope": self.slope.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> "SnrNoiseModel":
        """The model ``as_dict`` wrote.

        Parameters
        ----------
        values : dict
            With ``floor`` and ``slope`` lists.

        Returns
        -------
        SnrNoiseModel
        """
        return cls(floor=np.asarray(values["floor"], dtype=np.float64), slope=np.asarray(values["slope"], dtype=np.float64))


def calibration_summary(predicted: np.ndarray, truth: np.ndarray, sigma: np.ndarray, names: list[str]) -> dict:
    """Per label: spread of (prediction - truth) / sigma, and the share inside 1 sigma.

    A calibrated uncertainty has ``z_std`` and ``z_robust_std`` near 1 and ``within_1sigma``
    near 0.683.

    Parameters
    ----------
    predicted, truth, sigma : array_like, shape (n, n_labels), float64
        Predictions, reference labels (NaN where missing) and 1-sigma uncertainties, label units.
    names : list of str
        Label names, in column order.

    Returns
    -------
    dict
        ``{name: {"n", "z_std", "z_robust_std", "within_1sigma"}}``; None where no finite z.
    """
    z = (np.asarray(predicted, dtype=np.float64) - truth) / sigma
    summary = {}
    for k, name in enumerate(names):
        finite = z[np.isfinite(z[:, k]), k]
        summary[name] = {
            "n": int(finite.size),
            "z_std": float(np.std(finite)) if finite.size else None,
            "z_robust_std": float(robust_std(finite)) if finite.size else None,
            "within_1sigma": float(np.mean(np.abs(finite) < 1.0)) if finite.size else None,
        }
    return summary


def masked_fraction(ivar: np.ndarray) -> np.ndarray:
    """Share of pixels with ``ivar == 0`` (or not finite) over both arms.

    Parameters
    ----------
    ivar : array_like, shape (n, 2, pixels)
        Inverse variances [blue, red] of the normalised arrays: the masked pixels,
        whatever the preprocessing writes into their flux.

    Returns
    -------
    ndarray, shape (n,), float64
        Masked fraction, 0-1.

    Raises
    ------
    ValueError
        If ``ivar`` is not three-dimensional.
    """
    ivar = np.asarray(ivar)
    if ivar.ndim != 3:
        raise ValueError(f"expected (n, arms, pixels) inverse variances, got shape {ivar.shape}")
    masked = ~(np.isfinite(ivar) & (ivar > 0))
    return masked.reshape(ivar.shape[0], -1).mean(axis=1, dtype=np.float64)


# Features of the context model, in the order of its coefficients' columns.
CONTEXT_FEATURES = ("intercept", "masked_fraction", "coadd")
# Ridge penalty on the masked-fraction and coadd coefficients, in units of one spectrum's
# log-likelihood: a feature needs the evidence of a few spectra to move sigma at all, and a
# feature that never varies (no coadds among the calibration spectra) keeps coefficient 0.
CONTEXT_RIDGE = 4.0
_CONTEXT_ROUNDS = 4


def _context_design(n: int, masked: np.ndarray | None, coadd: np.ndarray | None) -> np.ndarray:
    """(n, 3) float64 [1, masked fraction, coadd indicator]; missing context reads as 0."""
    design = np.zeros((n, len(CONTEXT_FEATURES)))
    design[:, 0] = 1.0
    if masked is not None:
        design[:, 1] = np.nan_to_num(np.asarray(masked, dtype=np.float64), nan=0.0)
    if coadd is not None:
        design[:, 2] = np.asarray(coadd, dtype=bool)
    return design


def _log_linear_scale(residuals: np.ndarray, offset: np.ndarray, design: np.ndarray, ridge: float,
                      known: np.ndarray | None = None, share: np.ndarray | float = _MIN_NETWORK_SHARE) -> np.ndarray:
    """Maximum-likelihood ``c`` of ``r ~ N(0, exp(offset + design @ c)**2 + known)`` for one label.

    Penalised by ``ridge * |c[1:]|**2 / 2`` (not the intercept). Newton's method on the
    negative log-likelihood ``sum(log(t) / 2 + r**2 / t / 2)`` with t = s**2 + k,
    s = exp(eta), eta = offset + design @ c, and k = min(known, a s**2), a = (1 - share) /
    share: the known part never exceeds 1 - share of a residual's variance
    (``network_share``), or stated errors larger than the residuals would drive s to 0.
    With w = d log(t) / d(2 eta) (s**2 / t, or 1 where the cap holds) and z**2 = r**2 / t,
    the gradient is
    ``design.T @ (w (1 - z**2))``; the step uses ``2 design.T @ (h design)`` with
    h = w**2 z**2 + w (1 - w) max(1 - z**2, 0), the Hessian where it is positive (exactly
    the Hessian, ``2 z**2``, when ``known`` is 0, the convex case).

    Parameters
    ----------
    residuals, offset : (m,) float64
        Finite residuals (label units) and the log of the base sigma for them.
    design : (m, p) float64
    ridge : float
    known : (m,) float64, optional
        Variance already known to be in each residual (the reference's squared error), >= 0.
    share : (m,) float64 or float, optional
        The smallest share of each residual's variance left to s**2, in (0, 1].

    Returns
    -------
    (p,) float64 coefficients.
    """
    p = design.shape[1]
    penalty = np.full(p, ridge)
    penalty[0] = 0.0
    coefficients = np.zeros(p)
    squared = residuals**2
    known = np.zeros_like(squared) if known is None else known
    cap = (1.0 - np.asarray(share, dtype=np.float64)) / np.asarray(share, dtype=np.float64)
    for _ in range(50):
        eta = offset + design @ coefficients
        model = np.exp(2.0 * eta)
        capped = known > cap * model
        total = np.where(capped, (1.0 + cap) * model, model + known)
        w = np.where(capped, 1.0, model / total)
        z2 = squared / total
        gradient = design.T @ (w * (1.0 - z2)) + penalty * coefficients
        curvature = w * w * z2 + w * (1.0 - w) * np.maximum(1.0 - z2, 0.0)
        hessian = 2.0 * (design.T * curvature) @ design + np.diag(penalty) + 1e-9 * np.eye(p)
        step = np.linalg.solve(hessian, gradient)
        # Damped: a full step from far off can overshoot (the log-likelihood is convex
        # without known variance, not always with it).
        step *= min(1.0, 1.0 / max(np.max(np.abs(step)), 1e-12))
        coefficients -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return coefficients


@dataclass(frozen=True)
class ContextNoiseModel:
    """The S/N noise model times a factor for what else predicts the error.

    ``sigma = base.sigma(snr) * exp(c0 + c1 * masked_fraction + c2 * coadd)`` per label:
    the S/N shape of ``SnrNoiseModel`` (floor and photon term), scaled by a log-linear
    factor in the input's masked fraction (pixels with ivar = 0) and its kind (nightly
    coadd or single exposure). On an independent emulated survey, z spreads of 0.73
    (exposures) and 1.4 (coadds, ~20% masked pixels) with an S/N-only model showed that
    kind and masking predict the error beyond the S/N.

    Fitted on the calibration spectra by maximum likelihood with a ridge penalty
    (``CONTEXT_RIDGE``) on the masked and coadd coefficients, alternating with a refit of
    the S/N model to the residuals divided by the factor. Three coefficients per label on
    top of the two of the S/N model, so it cannot follow noise in the calibration set.

    The disagreement between the formal and alternate models is not a feature: each model
    is calibrated on its own CV spectra (with the shared test set), a share of which the
    other model trained on (their splits differ, ``split_two_models``), so the disagreement
    there would be too small; and a model's uncertainties must not change with the model
    it is released beside. The catalog's agreement test (Flag) uses the disagreement
    instead.

    Parameters
    ----------
    base : SnrNoiseModel
        The S/N shape.
    coefficients : ndarray, shape (n_labels, 3), float64
        Log-linear factor coefficients, columns as ``CONTEXT_FEATURES``.
    """

    base: SnrNoiseModel
    coefficients: np.ndarray  # (n_labels, 3) float64, columns as CONTEXT_FEATURES

    @property
    def floor(self) -> np.ndarray:
        """(n_labels,) the smallest sigma of a clean exposure at high S/N: base floor x exp(c0 + min(0, c2))."""
        return self.base.floor * np.exp(self.coefficients[:, 0] + np.minimum(self.coefficients[:, 2], 0.0))

    @classmethod
    def fit(cls, residuals: np.ndarray, snr: np.ndarray, masked: np.ndarray, coadd: np.ndarray,
            ridge: float = CONTEXT_RIDGE, reference_errors: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> "ContextNoiseModel":
        """Fit per label on the calibration spectra.

        Parameters
        ----------
        residuals : (n, n_labels) float64
            Prediction - reference on the calibration spectra, label units, NaN where unknown.
        snr : (n,) float64
            The weaker arm's S/N.
        masked : (n,) float64
            Masked fraction of each input (``masked_fraction``), 0-1.
        coadd : (n,) bool
            True for nightly coadds, False for single exposures.
        ridge : float
            Penalty on the masked and coadd coefficients.
        reference_errors : (n, n_labels) float64, optional
            The reference labels' own 1-sigma errors (NaN or None: unknown, read as 0).
            Each residual's variance is modelled as sigma**2 + error**2, so the model
            describes the error against the truth (see ``SnrNoiseModel.fit``).
        groups : (n,), optional
            The star of each spectrum, for ``network_share`` per S/N bin (None: every
            spectrum counts as one).

        Returns
        -------
        ContextNoiseModel
            A label with fewer than 24 usable residuals keeps coefficients 0 (the S/N model).

        Raises
        ------
        ValueError
            If ``snr``, ``masked`` and ``coadd`` are not all (n,), ``reference_errors``
            is not shaped like ``residuals``, or ``groups`` is not (n,) comparable ids.
        """
        residuals = np.asarray(residuals, dtype=np.float64)
        snr = np.asarray(snr, dtype=np.float64)
        n, n_labels = residuals.shape
        if not (snr.shape == (n,) and np.shape(masked) == (n,) and np.shape(coadd) == (n,)):
            raise ValueError("residuals, snr, masked and coadd must describe the same spectra")
        known = _known_variance(reference_errors, residuals.shape)
        design = _context_design(n, masked, coadd)
        coefficients = np.zeros((n_labels, design.shape[1]))
        groups = _groups(groups, n)
        # The first and last calibration bins take the S/N beyond them (below 10, infinite).
        bin_index = np.clip(np.digitize(snr, CALIBRATION_SNR_EDGES) - 1, 0, CALIBRATION_SNR_EDGES.size - 2)
        base = SnrNoiseModel.fit(residuals, snr, np.sqrt(known), groups)
        for _ in range(_CONTEXT_ROUNDS):
            with np.errstate(divide="ignore", invalid="ignore"):
                log_base = np.log(base.sigma(snr))
            for k in range(n_labels):
                usable = np.isfinite(residuals[:, k]) & np.isfinite(log_base[:, k])
                if usable.sum() < design.shape[1] * _MIN_PER_BIN:
                    continue
                share = np.ones(n)  # each spectrum's share: that of its S/N bin's stars
                for b in np.unique(bin_index[usable]):
                    members = usable & (bin_index == b)
                    share[members] = network_share(np.unique(groups[members]).size)
                coefficients[k] = _log_linear_scale(residuals[usable, k], log_base[usable, k], design[usable], ridge,
                                                    known[usable, k], share[usable])
            factor = np.exp(design @ coefficients.T)
            base = SnrNoiseModel.fit(residuals / factor, snr, np.sqrt(known) / factor, groups)
        return cls(base=base, coefficients=coefficients)

    def sigma(self, snr: np.ndarray, masked: np.ndarray | None = None, coadd: np.ndarray | None = None) -> np.ndarray:
        """Uncertainties from the S/N and the context; unknown context reads as an unmasked exposure.

        Parameters
        ----------
        snr : array_like, shape (n,), float64
            The weaker arm's S/N.
        masked : array_like, shape (n,), float64, optional
            Masked fraction of each input, 0-1; NaN or None reads as 0.
        coadd : array_like, shape (n,), bool, optional
            True for nightly coadds; None reads as single exposures.

        Returns
        -------
        ndarray, shape (n, n_labels), float64
            1-sigma uncertainties, label units.
        """
        snr = np.asarray(snr, dtype=np.float64)
        design = _context_design(snr.shape[0], masked, coadd)
        return self.base.sigma(snr) * np.exp(design @ self.coefficients.T)

    def as_dict(self) -> dict:
        """The model as JSON-serialisable values, for the artifact's manifest.

        Returns
        -------
        dict
            ``{"method": "context-noise-model", "base": {...}, "features": [...],
            "coefficients": [[...]]}``.
        """
        return {"method": "context-noise-model", "base": self.base.as_dict(), "features": list(CONTEXT_FEATURES),
                "coefficients": self.coefficients.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> "ContextNoiseModel":
        """The model ``as_dict`` wrote.

        Parameters
        ----------
        values : dict
            With ``base``, ``features`` and ``coefficients``.

        Returns
        -------
        ContextNoiseModel

        Raises
        ------
        ValueError
            If the features are not ``CONTEXT_FEATURES``.
        """
        if list(values.get("features", ())) != list(CONTEXT_FEATURES):
            raise ValueError(f"unknown noise-model features {values.get('features')}")
        return cls(base=SnrNoiseModel.from_dict(values["base"]),
                   coefficients=np.asarray(values["coefficients"], dtype=np.float64))


def noise_model_from_dict(values: dict) -> "SnrNoiseModel | ContextNoiseModel":
    """The noise model an artifact's manifest describes.

    Artifacts before the context model hold an ``snr-noise-model`` (S/N only), which keeps
    its old behaviour.

    Parameters
    ----------
    values : dict
        The manifest's ``uncertainty`` entry; ``method`` defaults to ``snr-noise-model``.

    Returns
    -------
    SnrNoiseModel or ContextNoiseModel
        The model the ``method`` names.

    Raises
    ------
    ValueError
        If the method or the context features are unknown.
    """
    method = values.get("method", "snr-noise-model")
    if method == "context-noise-model":
        return ContextNoiseModel.from_dict(values)
    if method == "snr-noise-model":
        return SnrNoiseModel.from_dict(values)
    raise ValueError(f"unknown noise model {method!r}")


def noise_sigma(model: "SnrNoiseModel | ContextNoiseModel", snr: np.ndarray, masked: np.ndarray | None = None,
                coadd: np.ndarray | None = None) -> np.ndarray:
    """Uncertainties from either model; the S/N-only model ignores the context.

    Parameters
    ----------
    model : SnrNoiseModel or ContextNoiseModel
        The calibrated noise model.
    snr : array_like, shape (n,), float64
        The weaker arm's S/N.
    masked : array_like, shape (n,), float64, optional
        Masked fraction of each input, 0-1.
    coadd : array_like, shape (n,), bool, optional
        True for nightly coadds.

    Returns
    -------
    ndarray, shape (n, n_labels), float64
        1-sigma uncertainties, label units.
    """
    if isinstance(model, ContextNoiseModel):
        return model.sigma(snr, masked, coadd)
    return model.sigma(snr)


def fit_noise_model(residuals: np.ndarray, snr: np.ndarray, masked: np.ndarray | None = None,
                    coadd: np.ndarray | None = None, reference_errors: np.ndarray | None = None,
                    groups: np.ndarray | None = None) -> "SnrNoiseModel | ContextNoiseModel":
    """The context model when ``masked`` and ``coadd`` are given, else the S/N-only model.

    Parameters
    ----------
    residuals : array_like, shape (n, n_labels), float64
        Prediction - reference on the calibration spectra, label units, NaN where unknown.
    snr : array_like, shape (n,), float64
        The weaker arm's S/N.
    masked : array_like, shape (n,), float64, optional
        Masked fraction of each input, 0-1.
    coadd : array_like, shape (n,), bool, optional
        True for nightly coadds.
    reference_errors : array_like, shape (n, n_labels), float64, optional
        The reference labels' own 1-sigma errors, NaN where unknown (see
        ``SnrNoiseModel.fit``).
    groups : array_like, shape (n,), optional
        The star of each spectrum.

    Returns
    -------
    ContextNoiseModel or SnrNoiseModel
        Fitted as ``ContextNoiseModel.fit`` or ``SnrNoiseModel.fit``.

    Raises
    ------
    ValueError
        As those fits do, for inputs that do not describe the same spectra.
    """
    if masked is None or coadd is None:
        return SnrNoiseModel.fit(residuals, snr, reference_errors, groups)
    return ContextNoiseModel.fit(residuals, snr, masked, coadd, reference_errors=reference_errors, groups=groups)


def cross_fitted_sigma(residuals: np.ndarray, snr: np.ndarray, masked: np.ndarray | None, coadd: np.ndarray | None,
                       reference_errors: np.ndarray | None, groups: np.ndarray, scored: np.ndarray,
                       folds: int = CALIBRATION_FOLDS, seed: int = 0) -> np.ndarray:
    """Uncertainties of the scored spectra, each from a noise model fitted without its star.

    The scored spectra's stars are dealt into ``folds`` folds (every spectrum of a star in
    one); each fold's uncertainties come from a model (``fit_noise_model``) fitted on every
    spectrum of the other stars: the unscored stars and the other folds (a scored star's
    unscored spectra, e.g. its CV spectra under a split by spectrum, leave its fold's fit
    with the rest of it). So spectra can both calibrate the final model (fitted on all of
    them) and check the calibration, as k-fold cross-validation does; the check describes
    a model fitted on (folds - 1) / folds of the scored stars besides the unscored ones.

    Parameters
    ----------
    residuals : array_like, shape (n, n_labels), float64
        Prediction - reference, label units; NaN where unknown (left out of the fits; such a
        spectrum can still be scored).
    snr, masked, coadd, reference_errors
        As ``fit_noise_model``, for the same n spectra.
    groups : array_like, shape (n,)
        The star of each spectrum.
    scored : array_like, shape (n,), bool
        The spectra to give cross-fitted uncertainties.
    folds : int
        Number of folds, at least 2.
    seed : int
        Seed of the deal of stars into folds.

    Returns
    -------
    ndarray, shape (scored.sum(), n_labels), float64
        1-sigma uncertainties of the scored spectra, in their order.

    Raises
    ------
    ValueError
        If ``residuals`` is not two-dimensional, ``folds`` is not an integer >= 2,
        ``scored`` is not (n,) bool, or as ``fit_noise_model``.
    """
    residuals = np.asarray(residuals, dtype=np.float64)
    if residuals.ndim != 2:
        raise ValueError(f"residuals must be (n, n_labels), got shape {residuals.shape}")
    n = residuals.shape[0]
    scored = np.asarray(scored)
    if scored.shape != (n,) or scored.dtype != bool:
        raise ValueError(f"scored must be a ({n},) bool mask")
    if not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"cross-fitting needs a whole number of folds, at least 2, got {folds!r}")
    codes = _groups(groups, n)
    scored_stars = np.unique(codes[scored])
    fold_of = np.full(codes.max() + 1 if n else 0, -1, dtype=np.int64)
    fold_of[np.random.default_rng(seed).permutation(scored_stars)] = np.arange(scored_stars.size) % folds
    star_fold = fold_of[codes]  # every spectrum of a scored star, scored or not

    def rows(values, chosen):
        return None if values is None else np.asarray(values)[chosen]

    sigma = np.full((n, residuals.shape[1]), np.nan)
    for f in range(folds):
        fit = star_fold != f  # none of the fold's stars' spectra calibrate its model
        held = scored & ~fit
        if not held.any():
            continue
        model = fit_noise_model(residuals[fit], np.asarray(snr)[fit], rows(masked, fit), rows(coadd, fit),
                                rows(reference_errors, fit), codes[fit])
        sigma[held] = noise_sigma(model, np.asarray(snr)[held], rows(masked, held), rows(coadd, held))
    return sigma[scored]


CALIBRATION_MASKED_EDGES = np.array([0.0, 0.02, 0.08, 0.2, 1.0 + 1e-9])
# The catalog's calibration goal for a cell (docs/network.md, "Uncertainties"): z spread
# 0.9-1.1 and 60-76% of |z| < 1 for every label.
CALIBRATION_GOAL_Z_STD = (0.9, 1.1)
CALIBRATION_GOAL_WITHIN = (0.60, 0.76)
# Resamples of a cell's stars for the 95% intervals of its z spread and share within 1 sigma.
CALIBRATION_RESAMPLES = 1000


def _bootstrap_intervals(z: np.ndarray, groups: np.ndarray, resamples: int,
                         rng: np.random.Generator) -> tuple[list[float] | None, list[float] | None]:
    """95% intervals of std(z) and of the share |z| < 1 in one cell, for one label.

    ``z`` (m,) finite float64 and ``groups`` (m,) int64 codes. The variance of each figure
    comes from resampling the groups (stars) with replacement, all the spectra of each: a
    star's spectra share the network's error for it, so they are not independent. The
    interval's shape is then that of a variance with ``2 s**4 / var`` degrees of freedom
    (chi-square), and the share's that of ``p (1 - p) / var`` independent draws (Wilson).
    The plain percentile bootstrap is too narrow in small cells: on calibrated Gaussian z
    it held 1.0 in 76% of cells of 12 spectra and 87% of 40, and this in 94-97%; with
    10-50 stars of 10-20 correlated spectra each, 85-91%. A cell of one star has no
    spread across stars to measure: (None, None), as for figures that are not finite.
    """
    codes, inverse = np.unique(groups, return_inverse=True)
    m = codes.size
    variance, share = float(np.var(z)), float(np.mean(np.abs(z) < 1.0))
    if m < 2 or not np.isfinite(variance):
        return None, None
    count = np.bincount(inverse, minlength=m).astype(np.float64)
    total = np.bincount(inverse, weights=z, minlength=m)
    square = np.bincount(inverse, weights=z * z, minlength=m)
    inside = np.bincount(inverse, weights=(np.abs(z) < 1.0).astype(np.float64), minlength=m)
    variances, shares = [], []
    for start in range(0, resamples, 100):  # (100 resamples at a time: memory of 100 x m)
        # How often each group is drawn in each resample.
        weights = rng.multinomial(m, np.full(m, 1.0 / m), size=min(100, resamples - start)).astype(np.float64)
        n = weights @ count
        mean = (weights @ total) / n
        variances.append(np.maximum((weights @ square) / n - mean**2, 0.0))
        shares.append((weights @ inside) / n)
    correction = m / (m - 1.0)  # the bootstrap's variance is short by (m - 1) / m
    spread_variance = float(np.var(np.concatenate(variances))) * correction
    dof = float(np.clip(2.0 * variance**2 / spread_variance, 1.0, z.size - 1.0)) if spread_variance > 0 else z.size - 1.0
    z_interval = [float(np.sqrt(variance * dof / chi2.ppf(0.975, dof))),
                  float(np.sqrt(variance * dof / chi2.ppf(0.025, dof)))]
    share_variance = float(np.var(np.concatenate(shares))) * correction
    draws = float(np.clip(share * (1.0 - share) / share_variance, 1.0, z.size)) if share_variance > 0 else float(z.size)
    k = 1.959964  # the normal's 97.5% point
    centre = (share + k * k / (2 * draws)) / (1 + k * k / draws)
    half = k * np.sqrt(share * (1 - share) / draws + k * k / (4 * draws * draws)) / (1 + k * k / draws)
    share_interval = [float(max(centre - half, 0.0)), float(min(centre + half, 1.0))]
    if not np.all(np.isfinite(z_interval)):
        return None, share_interval
    return z_interval, share_interval


def calibration_verdict(label: dict) -> str:
    """Where one label of one cell (a ``calibration_cells`` entry) stands against the goal.

    Parameters
    ----------
    label : dict
        ``{"z_std", "within_1sigma", "z_std_interval", "within_1sigma_interval"}`` as
        ``calibration_cells`` gives them.

    Returns
    -------
    str
        ``"met"``: z spread 0.9-1.1 and 60-76% within 1 sigma (``CALIBRATION_GOAL_*``);
        ``"missed"``: not met, but a calibrated cell of the same stars could give these
        figures (each figure's 95% interval reaches its goal range);
        ``"missed beyond noise"``: an interval lies wholly outside its goal range, a
        miscalibration the cell's sampling cannot explain; ``"unknown"``: no figures.
    """
    z_std, within = label.get("z_std"), label.get("within_1sigma")
    if z_std is None or within is None:
        return "unknown"
    (z_low, z_high), (w_low, w_high) = CALIBRATION_GOAL_Z_STD, CALIBRATION_GOAL_WITHIN
    if z_low <= z_std <= z_high and w_low <= within <= w_high:
        return "met"
    z_interval, w_interval = label.get("z_std_interval"), label.get("within_1sigma_interval")
    if z_interval is not None and (z_interval[1] < z_low or z_interval[0] > z_high):
        return "missed beyond noise"
    if w_interval is not None and (w_interval[1] < w_low or w_interval[0] > w_high):
        return "missed beyond noise"
    return "missed"


def calibration_cells(predicted: np.ndarray, truth: np.ndarray, sigma: np.ndarray, snr: np.ndarray,
                      masked: np.ndarray, coadd: np.ndarray, names: list[str], min_count: int = 5,
                      groups: np.ndarray | None = None, resamples: int = CALIBRATION_RESAMPLES,
                      seed: int = 0) -> list[dict]:
    """z spread and share within 1 sigma per cell of S/N bin x kind x masked-fraction bin.

    With 95% intervals from resampling the cell's stars, so that a miss can be told from
    the sampling noise of a cell of few stars (``calibration_verdict``).

    Parameters
    ----------
    predicted, truth, sigma : array_like, shape (n, n_labels), float64
        Predictions, reference labels (NaN where missing) and 1-sigma uncertainties, label units.
    snr, masked : array_like, shape (n,), float64
        The weaker arm's S/N and the masked fraction (0-1) of each input.
    coadd : array_like, shape (n,), bool
        True for nightly coadds.
    names : list of str
        Label names, n_labels of them.
    min_count : int, optional
        Cells with fewer spectra are left out.
    groups : array_like, shape (n,), optional
        The star of each spectrum: the unit the intervals resample (None: each spectrum).
    resamples : int, optional
        Bootstrap resamples per cell and label (0: no intervals).
    seed : int, optional
        Seed of the resampling.

    Returns
    -------
    list of dict
        One dict per cell with at least ``min_count`` spectra: ``snr_bin``, ``kind``,
        ``masked_bin`` (edges as strings), ``n``, ``stars``, and per label ``{name:
        {"z_std", "within_1sigma", "z_std_interval", "within_1sigma_interval",
        "verdict"}}`` under ``labels`` (intervals [2.5%, 97.5%], None without resamples
        or with fewer than 2 values or stars; None for a figure that is not finite). A
        calibrated cell has z_std 0.9-1.1 and 60-76% within 1 sigma.

    Raises
    ------
    ValueError
        If ``groups`` is not (n,) comparable ids.
    """
    z = (np.asarray(predicted, dtype=np.float64) - truth) / sigma
    codes = _groups(groups, z.shape[0])
    rng = np.random.default_rng(seed)
    snr_bin = np.digitize(snr, CALIBRATION_SNR_EDGES) - 1
    masked_bin = np.digitize(masked, CALIBRATION_MASKED_EDGES) - 1
    coadd = np.asarray(coadd, dtype=bool)
    cells = []
    for s in range(CALIBRATION_SNR_EDGES.size - 1):
        for kind_value, kind in ((False, "exposure"), (True, "coadd")):
            for m in range(CALIBRATION_MASKED_EDGES.size - 1):
                chosen = (snr_bin == s) & (coadd == kind_value) & (masked_bin == m)
                if chosen.sum() < min_count:
                    continue
                labels = {}
                for k, name in enumerate(names):
                    finite = np.isfinite(z[chosen, k])
                    values = z[chosen, k][finite]
                    spread = float(np.std(values)) if values.size > 1 else None
                    label = {"z_std": spread if spread is not None and np.isfinite(spread) else None,
                             "within_1sigma": float(np.mean(np.abs(values) < 1.0)) if values.size else None,
                             "z_std_interval": None, "within_1sigma_interval": None}
                    if resamples > 0 and values.size > 1:
                        label["z_std_interval"], label["within_1sigma_interval"] = _bootstrap_intervals(
                            values, codes[chosen][finite], resamples, rng)
                    label["verdict"] = calibration_verdict(label)
                    labels[name] = label
                cells.append({"snr_bin": f"{CALIBRATION_SNR_EDGES[s]:g}-{CALIBRATION_SNR_EDGES[s + 1]:g}",
                              "kind": kind,
                              "masked_bin": f"{CALIBRATION_MASKED_EDGES[m]:.2f}-{min(CALIBRATION_MASKED_EDGES[m + 1], 1):.2f}",
                              "n": int(chosen.sum()), "stars": int(np.unique(codes[chosen]).size),
                              "labels": labels})
    return cells


def noise_share(model: "SnrNoiseModel | ContextNoiseModel", snr: np.ndarray) -> np.ndarray:
    """Share of sigma that the S/N (photon) term makes, 0-1.

    ``(slope / snr) / sqrt(floor**2 + (slope / snr)**2)`` of the S/N model (the context
    model's factor scales both terms alike). Repeat spectra of one star measure only this
    part: the floor, the model's own error for that star, is common to its repeats.

    Parameters
    ----------
    model : SnrNoiseModel or ContextNoiseModel
        The calibrated noise model.
    snr : array_like, shape (n,), float64
        The weaker arm's S/N.

    Returns
    -------
    ndarray, shape (n, n_labels), float64
        The share; NaN where ``snr`` <= 0.
    """
    base = model.base if isinstance(model, ContextNoiseModel) else model
    snr = np.asarray(snr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(snr[:, None] > 0, (base.slope / snr[:, None]) / base.sigma(snr), np.nan)
