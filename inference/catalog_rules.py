"""The paper's catalog rules: combine the formal and alternate models per spectrum.

Pure numpy, vectorised over a batch of spectra; no Django imports. The thresholds are
``core.rules.CatalogRules`` (settings may override them), recorded by each release.
"""

from dataclasses import dataclass

import numpy as np

from core.flags import CATALOG_FLAGS, SPECTRUM_FLAGS
from core.labels import LABELS
from core.rules import CatalogRules

_TEFF = 0
_LOGG = 1
_FEH = 2
_ABUNDANCE_COLUMNS = np.array([i for i, label in enumerate(LABELS) if label.is_abundance])


@dataclass(frozen=True)
class CombinedLabels:
    """The published labels of a batch of spectra, their Flag and the reasons for it.

    Parameters
    ----------
    values : ndarray, shape (n, 15), float64
        The published labels, in ``core.labels.LABELS`` order (Teff in K, the rest in dex);
        NaN where there is no value.
    errors : ndarray, shape (n, 15), float64
        Their 1-sigma uncertainties, same units; NaN where there is no value.
    flag : ndarray, shape (n,), uint8
        Catalog Flag, 1 good / 0 bad.
    bits : ndarray, shape (n,), int64
        Catalog flag bits (``core.flags.CATALOG_FLAGS``).
    """

    values: np.ndarray  # (n, 15) float64, the published labels
    errors: np.ndarray  # (n, 15) float64
    flag: np.ndarray  # (n,) uint8, 1 good / 0 bad
    bits: np.ndarray  # (n,) int64, catalog flag bits


# Columns withheld (published as NULL) where a row carries HOT_STAR_NO_ABUNDANCES: the 13
# abundances and their uncertainties (paper sect. 4.1).
WITHHELD_WHEN_HOT = tuple(field for label in LABELS if label.is_abundance for field in (label.field, label.error_field))
# How many leading columns of the label arrays the Flag depends on: Teff, log g, [Fe/H].
AGREEMENT_COLUMNS = 3


@dataclass(frozen=True)
class CatalogFlags:
    """The Flag of a batch of spectra and the reasons for it.

    Parameters
    ----------
    flag : ndarray, shape (n,), uint8
        Catalog Flag, 1 good / 0 bad.
    bits : ndarray, shape (n,), int64
        Catalog flag bits (``core.flags.CATALOG_FLAGS``).
    """

    flag: np.ndarray  # (n,) uint8, 1 good / 0 bad
    bits: np.ndarray  # (n,) int64, catalog flag bits


def catalog_flags(
    formal: np.ndarray,
    alternate: np.ndarray,
    snr_blue: np.ndarray,
    snr_red: np.ndarray,
    spectrum_flags: np.ndarray,
    rules: CatalogRules,
) -> CatalogFlags:
    """The catalog rules' Flag and reason bits of a batch.

    Parameters
    ----------
    formal, alternate : (n, k) float64, k >= 3
        Labels of the formal and alternate models in ``core.labels.LABELS`` order; only
        the first three columns (Teff in K, log g and [Fe/H] in dex) are read, so the
        whole (n, 15) arrays or just those three columns may be given. NaN means the
        model gave no value, which counts as a disagreement.
    snr_blue, snr_red : (n,) float64
        Catalog S/N per arm (NaN when unknown, which fails the S/N rule).
    spectrum_flags : (n,) int64
        Spectrum flag words; any REJECT bit rejects the row.
    rules : CatalogRules
        The thresholds (``core.rules.CatalogRules``; K, dex and S/N).

    Returns
    -------
    CatalogFlags
        Flag and bits. HOT_STAR_NO_ABUNDANCES marks the rows whose ``WITHHELD_WHEN_HOT``
        labels are not published.

    Raises
    ------
    ValueError
        If ``formal`` or ``alternate`` is not (n, k) with k >= 3, or their shapes differ.

    Notes
    -----
    The rules are the SPCANet paper's (Wang et al. 2020, ApJ 891, 23, sect. 4.1; summarised
    in SCIENCE.md "Two models, and the catalog rules"): the two models must agree in Teff,
    log g and [Fe/H]; Teff outside the trusted range is rejected; above the abundance limit
    the 13 abundances are not given; hot metal-poor stars are flagged as a warning; both
    arms need S/N above the minimum.
    """
    formal = np.asarray(formal, dtype=np.float64)
    alternate = np.asarray(alternate, dtype=np.float64)
    if formal.ndim != 2 or formal.shape[1] < AGREEMENT_COLUMNS or alternate.shape != formal.shape:
        raise ValueError(f"expected (n, k >= {AGREEMENT_COLUMNS}) label arrays, got {formal.shape}, {alternate.shape}")
    n = formal.shape[0]
    bits = np.zeros(n, dtype=np.int64)

    def mark(condition: np.ndarray, name: str) -> None:
        bits[condition] |= np.int64(CATALOG_FLAGS[name].mask)

    delta = np.abs(formal[:, :AGREEMENT_COLUMNS] - alternate[:, :AGREEMENT_COLUMNS])
    with np.errstate(invalid="ignore"):
        mark(~(delta[:, _TEFF] < rules.max_delta_teff), "MODELS_DISAGREE_TEFF")
        mark(~(delta[:, _LOGG] < rules.max_delta_logg), "MODELS_DISAGREE_LOGG")
        mark(~(delta[:, _FEH] < rules.max_delta_feh), "MODELS_DISAGREE_FEH")
        teff = formal[:, _TEFF]
        mark(~((teff >= rules.teff_min) & (teff <= rules.teff_max)), "TEFF_OUT_OF_RANGE")
        mark(teff > rules.abundance_teff_max, "HOT_STAR_NO_ABUNDANCES")
        mark((teff > rules.hot_metal_poor_teff) & (formal[:, _FEH] < rules.hot_metal_poor_feh), "HOT_METAL_POOR")
        snr_ok = (np.asarray(snr_blue, dtype=np.float64) > rules.min_snr) & (
            np.asarray(snr_red, dtype=np.float64) > rules.min_snr
        )
    mark(~snr_ok, "LOW_SNR")
    spectrum_flags = np.asarray(spectrum_flags, dtype=np.int64)
    mark((spectrum_flags & np.int64(SPECTRUM_FLAGS.reject_mask())) != 0, "SPECTRUM_FLAGGED")
    mark((spectrum_flags & np.int64(SPECTRUM_FLAGS["CURATOR_FLAGGED"].mask)) != 0, "CURATOR_FLAGGED")
    return CatalogFlags(flag=catalog_flag_of(bits), bits=bits)


def catalog_flag_of(bits: np.ndarray) -> np.ndarray:
    """The catalog Flag that reason bits give.

    Parameters
    ----------
    bits : (n,) int64
        Catalog flag bits (``core.flags.CATALOG_FLAGS``).

    Returns
    -------
    ndarray, shape (n,), uint8
        1 where no rejecting bit is set (warnings such as HOT_METAL_POOR keep Flag = 1), else 0.
    """
    return ((np.asarray(bits, dtype=np.int64) & np.int64(CATALOG_FLAGS.reject_mask())) == 0).astype(np.uint8)


def combine_models(
    formal: np.ndarray,
    alternate: np.ndarray,
    formal_errors: np.ndarray,
    snr_blue: np.ndarray,
    snr_red: np.ndarray,
    spectrum_flags: np.ndarray,
    rules: CatalogRules,
) -> CombinedLabels:
    """Apply the catalog rules to a batch: the published labels, Flag and reasons.

    Parameters
    ----------
    formal, alternate : (n, 15) float64
        Labels of the formal and alternate models, in ``core.labels.LABELS`` order.
        NaN means the model gave no value; a missing Teff, log g or [Fe/H] counts as a
        disagreement.
    formal_errors : (n, 15) float64
        Uncertainties of the formal model's labels; published with them.
    snr_blue, snr_red : (n,) float64
        Catalog S/N per arm (NaN when unknown, which fails the S/N rule).
    spectrum_flags : (n,) int64
        Spectrum flag words; any REJECT bit rejects the row.
    rules : CatalogRules
        The thresholds (``core.rules.CatalogRules``; K, dex and S/N).

    Returns
    -------
    CombinedLabels
        The formal model's values, Flag and the reason bits (:func:`catalog_flags`).
        Above ``abundance_teff_max`` the 13 abundances and their uncertainties are NaN
        (no value: stored as NULL, never a sentinel) and the row carries
        HOT_STAR_NO_ABUNDANCES.

    Raises
    ------
    ValueError
        If ``formal``, ``alternate`` or ``formal_errors`` is not (n, 15).

    Notes
    -----
    The rules are the SPCANet paper's (Wang et al. 2020, ApJ 891, 23, sect. 4.1); see
    :func:`catalog_flags`.
    """
    formal = np.asarray(formal, dtype=np.float64)
    alternate = np.asarray(alternate, dtype=np.float64)
    errors = np.array(formal_errors, dtype=np.float64, copy=True)
    n = formal.shape[0]
    if formal.shape != (n, len(LABELS)) or alternate.shape != formal.shape or errors.shape != formal.shape:
        raise ValueError(f"expected (n, {len(LABELS)}) label arrays, got {formal.shape}, {alternate.shape}")
    flags = catalog_flags(formal, alternate, snr_blue, snr_red, spectrum_flags, rules)
    values = formal.copy()
    hot_rows = np.flatnonzero(flags.bits & np.int64(CATALOG_FLAGS["HOT_STAR_NO_ABUNDANCES"].mask))
    values[np.ix_(hot_rows, _ABUNDANCE_COLUMNS)] = np.nan
    errors[np.ix_(hot_rows, _ABUNDANCE_COLUMNS)] = np.nan
    return CombinedLabels(values=values, errors=errors, flag=flags.flag, bits=flags.bits)
