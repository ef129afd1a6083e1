"""Preprocessing of a batch of two-arm spectra, identical for training and prediction.

1. S/N per arm as the catalog reports it (the table's SNR header value, or the median of
   flux * sqrt(ivar) where a file has none).
2. RV per arm: a supplied value (from an input catalog) where given, otherwise measured
   by cross-correlation against a template bank (``rv.measure_rv``), otherwise unknown
   (the spectrum is flagged and not preprocessed further).
3. Shift to the rest frame and resample onto the 0.1 A grids (``resample``).
4. Continuum-normalise each arm (``continuum``).

Everything is vectorised over the batch; the same input gives the same bytes out.
"""

from dataclasses import dataclass, field

import numpy as np

from ..flags import SPECTRUM_FLAGS
from .batch import pack_arms
from .continuum import ContinuumConfig, fit_continuum, normalise
from .grids import ARMS, GRIDS, PIXELS_PER_ARM
from .resample import resample_to_grid
from .rv import RVResult, TemplateBank, measure_rv
from .snr import arm_snr, masked_median, reported_snr

# Bumped whenever a change alters the arrays: models refuse other versions.
PREPROCESSING_VERSION = "1.0"


@dataclass(frozen=True)
class PreprocessConfig:
    min_snr: float = 10.0  # both arms must exceed this (flags LOW_SNR_*; not a silent drop)
    max_masked_fraction: float = 0.2  # above this MANY_MASKED_PIXELS
    max_rv_error: float = 5.0  # km/s; above this, or arms disagreeing by more, RV_UNRELIABLE
    max_rv_arm_difference: float = 15.0  # km/s
    min_rv_peak: float = 0.3  # normalised correlation peak below which a measured RV is unreliable
    continuum: ContinuumConfig = field(default_factory=ContinuumConfig)


@dataclass
class PreprocessedBatch:
    """Results for N spectra. Arrays are (N, 2 arms, 4000) float32, arm order blue, red."""

    flux: np.ndarray  # normalised flux; 1 on masked pixels
    ivar: np.ndarray  # inverse variance of the normalised flux; 0 on masked pixels
    continuum: np.ndarray  # fitted continuum in the input's flux units
    snr: np.ndarray  # (N, 2) float64
    rv: np.ndarray  # (N, 2) float64 km/s, NaN when unknown
    rv_err: np.ndarray  # (N, 2) float64 km/s, NaN when supplied without error or unknown
    rv_measured: np.ndarray  # (N,) bool: RV came from cross-correlation
    flags: np.ndarray  # (N,) int64 spectrum flag bits
    processed: np.ndarray  # (N,) bool: arrays are meaningful (both arms resampled and fitted)


def preprocess(
    spectra: list,
    *,
    rv_supplied: np.ndarray | None = None,
    templates: TemplateBank | None = None,
    config: PreprocessConfig | None = None,
) -> PreprocessedBatch:
    """Preprocess ``spectra`` (``spectra.io.RawSpectrum`` objects).

    ``rv_supplied`` is (N, 2) km/s with NaN where no catalog value exists; those arms are
    measured against ``templates`` when given.
    """
    config = config or PreprocessConfig()
    n = len(spectra)
    flags = np.zeros(n, dtype=np.int64)

    def mark(condition, name: str) -> None:
        flags[np.asarray(condition, dtype=bool)] |= np.int64(SPECTRUM_FLAGS[name].mask)

    supplied = np.full((n, 2), np.nan) if rv_supplied is None else np.asarray(rv_supplied, dtype=np.float64)
    out_flux = np.ones((n, 2, PIXELS_PER_ARM), dtype=np.float32)
    out_ivar = np.zeros((n, 2, PIXELS_PER_ARM), dtype=np.float32)
    out_continuum = np.zeros((n, 2, PIXELS_PER_ARM), dtype=np.float32)
    snr = np.full((n, 2), np.nan)
    rv = supplied.copy()
    rv_err = np.full((n, 2), np.nan)
    rv_measured = np.zeros(n, dtype=bool)
    processed = np.ones(n, dtype=bool)
    for a, arm_name in enumerate(ARMS):
        arms = [spectrum.arm(arm_name) for spectrum in spectra]
        problems = [spectrum.problems[arm_name] for spectrum in spectra]
        packed = pack_arms(arms)
        missing = ~packed.present
        mark(missing, "MISSING_BLUE_ARM" if arm_name == "blue" else "MISSING_RED_ARM")
        mark([any(p == "nonfinite" for p in arm_problems) for arm_problems in problems], "NONFINITE_VALUES")
        mark([any(p == "wavelength_range" for p in arm_problems) for arm_problems in problems], "WAVELENGTH_COVERAGE")
        snr[:, a] = reported_snr(arms, arm_snr(packed))
        with np.errstate(invalid="ignore"):
            mark(~(snr[:, a] > config.min_snr), "LOW_SNR_BLUE" if arm_name == "blue" else "LOW_SNR_RED")
            median_flux = masked_median(packed.flux, packed.usable)
        mark(~(median_flux > 0) & ~missing, "BAD_FLUX")
        need = np.isnan(rv[:, a]) & ~missing
        if templates is not None and need.any():
            result: RVResult = measure_rv(packed, templates, arm_name, rows=np.flatnonzero(need))
            rv[need, a] = result.rv
            rv_err[need, a] = result.rv_err
            rv_measured |= need
            weak = np.zeros(n, dtype=bool)
            weak[need] = ~(result.peak >= config.min_rv_peak)
            mark(weak, "RV_UNRELIABLE")
        resampled_flux, resampled_ivar = resample_to_grid(packed, GRIDS[arm_name], rv[:, a])
        continuum, kept = fit_continuum(resampled_flux, resampled_ivar, config.continuum)
        normalised, normalised_ivar = normalise(resampled_flux, resampled_ivar, continuum)
        masked_fraction = (resampled_ivar <= 0).mean(axis=1)
        mark((masked_fraction > config.max_masked_fraction) & ~missing, "MANY_MASKED_PIXELS")
        mark((kept < config.continuum.min_kept_fraction) & ~missing, "CONTINUUM_FIT_POOR")
        out_flux[:, a], out_ivar[:, a], out_continuum[:, a] = normalised, normalised_ivar, continuum
        processed &= ~missing & ~np.isnan(rv[:, a])
    mark(rv_measured, "RV_MEASURED")
    with np.errstate(invalid="ignore"):
        unreliable = (rv_err > config.max_rv_error).any(axis=1) | (
            np.abs(rv[:, 0] - rv[:, 1]) > config.max_rv_arm_difference
        )
    mark(unreliable | np.isnan(rv).any(axis=1), "RV_UNRELIABLE")
    unprocessed = ~processed
    out_flux[unprocessed] = 1.0
    out_ivar[unprocessed] = 0.0
    return PreprocessedBatch(out_flux, out_ivar, out_continuum, snr, rv, rv_err, rv_measured, flags, processed)
