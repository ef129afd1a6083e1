"""Preprocessing of a batch of two-arm spectra, identical for training and prediction.

1. S/N per arm as the catalog reports it (the table's SNR header value, or the median of
   flux * sqrt(ivar) where a file has none).
2. RV per arm: a supplied value (from an input catalog) where given, otherwise measured
   by cross-correlation against a template bank (``rv.measure_rv``), otherwise unknown
   (the spectrum is flagged and not preprocessed further).
3. Shift to the rest frame and resample onto the 0.1 A grids (``resample``).
4. Continuum-normalise each arm (``continuum``).
5. Fill a coadd's masked pixels from the exposures of its own file (``coadd``).

Everything is vectorised over the batch; the same input gives the same bytes out.
"""

from dataclasses import dataclass, field

import numpy as np

from core.flags import SPECTRUM_FLAGS
from core.rules import SpectrumRules

from .batch import pack_arms
from .coadd import coadd_masked_fill
from .continuum import ContinuumConfig, fit_continuum
from .grids import ARMS, GRIDS, PIXELS_PER_ARM
from .resample import resample_to_grid
from .rv import RVResult, TemplateBank, measure_rv
from .snr import reported_snr

# Bumped whenever a change alters the stored arrays or RVs: a model reads only spectra
# of its own version, and a re-ingest preprocesses again the spectra of older ones
# (``ingest_spectra --stale``). 1.1: RVs by masked normalised cross-correlation, refused
# on the window's edge (docs/preprocessing.md, "Radial velocities of masked arms"). 1.2:
# pixels of flux exactly 0 with a positive ivar are masked (docs/preprocessing.md, "Reading").
# 1.3: a coadd's masked pixels are filled from the exposures of its file
# (docs/preprocessing.md, "Which coadd pixels are masked").
PREPROCESSING_VERSION = "1.3"


def preprocessing_version_key(version: str) -> tuple[int, ...] | None:
    """Order of preprocessing versions: ``"1.10"`` after ``"1.9"``.

    Parameters
    ----------
    version : str
        A version as stored with a spectrum or a model (dot-separated integers).

    Returns
    -------
    tuple of int or None
        Its parts as integers; None for a version that is not one (blank, or a label such
        as the synthetic demo catalog's ``"synthetic"``): neither older nor newer than any.
    """
    try:
        return tuple(int(part) for part in version.split("."))
    except (AttributeError, ValueError):
        return None


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of ``preprocess``: the spectrum flags' thresholds and the continuum fit.

    The threshold fields take their defaults from ``core.rules.SpectrumRules``, where they
    are defined and their sources given; they set flag bits, they never drop a spectrum.

    Parameters
    ----------
    min_snr : float
        An arm whose S/N does not exceed this (or is unknown) sets LOW_SNR_BLUE or
        LOW_SNR_RED; a flag, not a silent drop.
    max_masked_fraction : float
        An arm with more than this fraction of its grid pixels masked (ivar 0 after
        resampling) sets MANY_MASKED_PIXELS.
    max_rv_error : float
        km/s; an RV uncertainty above this in either arm sets RV_UNRELIABLE.
    max_rv_arm_difference : float
        km/s; blue and red RVs differing by more than this set RV_UNRELIABLE.
    min_rv_peak : float
        Normalised cross-correlation peak below which a measured RV sets RV_UNRELIABLE.
    continuum : ContinuumConfig
        The continuum fit's settings (its ``min_kept_fraction`` sets CONTINUUM_FIT_POOR).
    coadd_ormask_excludes : bool
        True: a coadd pixel with any ORMASK bit is masked (LAMOST's convention for coadds,
        ../shared/data/README.md). False: a coadd pixel with ORMASK bits stays usable when
        its flux and ivar are positive (ORMASK is set where any one exposure was masked,
        and the coadd's flux there comes from the others); junk the mask marked is then
        left to the continuum fit's rejection and the outlier rejection at the network's
        input. Exposures' PIXMASK always masks. Chosen by measurement: docs/preprocessing.md,
        "Which coadd pixels are masked".
    coadd_fill_from_exposures : bool
        True: where a coadd's grid pixel is masked, it is filled from the exposures of
        its own file (``coadd.coadd_masked_fill``: their clipped, ivar-weighted mean,
        scaled to the coadd's level), when ``preprocess`` is told which file each spectrum
        came from. Exposures with a reject flag other than a low S/N, or an unreliable
        RV, take no part. Sets COADD_MASK_FILLED. Chosen by measurement: docs/preprocessing.md,
        "Which coadd pixels are masked".
    coadd_replace_sigma : float, optional
        With ``coadd_fill_from_exposures``, a coadd pixel that is not masked but lies more
        than this many sigma off its exposures' scaled combination (at least two values)
        is replaced by it as well (``coadd.coadd_masked_fill``'s ``replace_sigma``); None:
        LAMOST's pixels are kept wherever the coadd has them. Measured, not the default:
        docs/preprocessing.md, "Which coadd pixels are masked".
    """

    # The flags' thresholds (core.rules.SpectrumRules, where they are defined and described).
    min_snr: float = SpectrumRules.min_snr  # flags LOW_SNR_*; not a silent drop
    max_masked_fraction: float = SpectrumRules.max_masked_fraction
    max_rv_error: float = SpectrumRules.max_rv_error
    max_rv_arm_difference: float = SpectrumRules.max_rv_arm_difference
    min_rv_peak: float = SpectrumRules.min_rv_peak
    continuum: ContinuumConfig = field(default_factory=ContinuumConfig)
    coadd_ormask_excludes: bool = True
    coadd_fill_from_exposures: bool = True
    coadd_replace_sigma: float | None = None


@dataclass
class PreprocessedBatch:
    """Results for N spectra. Arrays are (N, 2 arms, 4000) float32, arm order blue, red.

    Parameters
    ----------
    flux : (N, 2, 4000) float32
        Normalised flux on the rest-frame grids; 1 on masked pixels and on every pixel of
        a spectrum not processed.
    ivar : (N, 2, 4000) float32
        Inverse variance of the normalised flux; 0 on masked pixels and on every pixel of
        a spectrum not processed.
    continuum : (N, 2, 4000) or (0, 2, 4000) float32
        Fitted continuum in the input's flux units; empty (0 rows) unless asked for.
    snr : (N, 2) float64
        S/N per arm as the catalog reports it (``snr.reported_snr``).
    rv : (N, 2) float64
        Radial velocity per arm, km/s; NaN when unknown.
    rv_err : (N, 2) float64
        Its uncertainty, km/s; NaN when the RV was supplied (no error given) or is unknown.
    rv_measured : (N,) bool
        The RV of at least one arm came from cross-correlation.
    flags : (N,) int64
        Spectrum flag bits (``core.flags.SPECTRUM_FLAGS``).
    processed : (N,) bool
        The arrays are meaningful: both arms present, with an RV, resampled and fitted.
    """

    flux: np.ndarray  # normalised flux; 1 on masked pixels
    ivar: np.ndarray  # inverse variance of the normalised flux; 0 on masked pixels
    continuum: np.ndarray  # fitted continuum in the input's flux units (empty unless asked for)
    snr: np.ndarray  # (N, 2) float64
    rv: np.ndarray  # (N, 2) float64 km/s, NaN when unknown
    rv_err: np.ndarray  # (N, 2) float64 km/s, NaN when supplied without error or unknown
    rv_measured: np.ndarray  # (N,) bool: RV came from cross-correlation
    flags: np.ndarray  # (N,) int64 spectrum flag bits
    processed: np.ndarray  # (N,) bool: arrays are meaningful (both arms resampled and fitted)


# Spectra preprocessed together: bounds the working memory and keeps it in cache.
CHUNK_SPECTRA = 512


def preprocess(
    spectra: list,
    *,
    rv_supplied: np.ndarray | None = None,
    templates: TemplateBank | None = None,
    config: PreprocessConfig | None = None,
    with_continuum: bool = False,
    files: np.ndarray | None = None,
) -> PreprocessedBatch:
    """Preprocess ``spectra`` (``spectra.io.RawSpectrum`` objects).

    ``rv_supplied`` is (N, 2) km/s with NaN where no catalog value exists; those arms are
    measured against ``templates`` when given. The fitted continuum is returned only when
    ``with_continuum`` is set (plots need it; training and prediction do not).

    Parameters
    ----------
    spectra : list of spectra.io.RawSpectrum
        The N two-arm spectra, each arm on its native (vacuum) wavelengths.
    rv_supplied : (N, 2) float64, optional
        Catalog radial velocities per arm [blue, red], km/s, NaN where none; None: all NaN.
    templates : rv.TemplateBank, optional
        Templates for measuring the RVs not supplied; None: those RVs stay unknown (NaN)
        and the spectrum is flagged RV_UNRELIABLE and not processed.
    config : PreprocessConfig, optional
        Flag thresholds and continuum settings; ``PreprocessConfig()`` when None.
    with_continuum : bool
        Also return the fitted continuum (``PreprocessedBatch.continuum``).
    files : (N,) int64, optional
        The file each spectrum was read from (any integer per file). With it, and
        ``config.coadd_fill_from_exposures``, a coadd's masked pixels are filled from the
        exposures of its own file; None: they stay masked.

    Returns
    -------
    PreprocessedBatch
        Arrays for the N spectra in input order, worked through in chunks of
        ``CHUNK_SPECTRA``.
    """
    config = config or PreprocessConfig()
    n = len(spectra)
    supplied = np.full((n, 2), np.nan) if rv_supplied is None else np.asarray(rv_supplied, dtype=np.float64)
    result = PreprocessedBatch(
        flux=np.empty((n, 2, PIXELS_PER_ARM), dtype=np.float32),
        ivar=np.empty((n, 2, PIXELS_PER_ARM), dtype=np.float32),
        continuum=np.empty((n, 2, PIXELS_PER_ARM) if with_continuum else (0, 2, PIXELS_PER_ARM), dtype=np.float32),
        snr=np.empty((n, 2)), rv=np.empty((n, 2)), rv_err=np.empty((n, 2)),
        rv_measured=np.empty(n, dtype=bool), flags=np.empty(n, dtype=np.int64), processed=np.empty(n, dtype=bool),
    )
    for start in range(0, n, CHUNK_SPECTRA):
        part = slice(start, min(start + CHUNK_SPECTRA, n))
        _preprocess_chunk(spectra[part], supplied[part], templates, config, result, part, with_continuum)
    if files is not None and config.coadd_fill_from_exposures:
        # After every chunk (a file's spectra may straddle two). Exposures whose arrays are
        # not to be trusted (an unreliable RV, no signal, ...) take no part; a low S/N
        # only weighs less.
        is_coadd = np.array([s.kind == "coadd" for s in spectra], dtype=bool)
        untrusted = (SPECTRUM_FLAGS.reject_mask() | SPECTRUM_FLAGS["RV_UNRELIABLE"].mask) & ~(
            SPECTRUM_FLAGS["LOW_SNR_BLUE"].mask | SPECTRUM_FLAGS["LOW_SNR_RED"].mask)
        usable = result.processed & (is_coadd | ((result.flags & np.int64(untrusted)) == 0))
        filled = coadd_masked_fill(result.flux, result.ivar, is_coadd, np.asarray(files, dtype=np.int64), usable,
                                   replace_sigma=config.coadd_replace_sigma)
        result.flags[filled] |= np.int64(SPECTRUM_FLAGS["COADD_MASK_FILLED"].mask)
    return result


def _preprocess_chunk(spectra, supplied, templates, config, out: PreprocessedBatch, part: slice, with_continuum):
    n = len(spectra)
    flags = np.zeros(n, dtype=np.int64)

    def mark(condition, name: str) -> None:
        flags[np.asarray(condition, dtype=bool)] |= np.int64(SPECTRUM_FLAGS[name].mask)

    snr = np.full((n, 2), np.nan)
    rv = supplied.copy()
    rv_err = np.full((n, 2), np.nan)
    rv_measured = np.zeros(n, dtype=bool)
    processed = np.ones(n, dtype=bool)
    mask_kept = None if config.coadd_ormask_excludes else np.array([s.kind == "coadd" for s in spectra], dtype=bool)
    for a, arm_name in enumerate(ARMS):
        arms = [spectrum.arm(arm_name) for spectrum in spectra]
        problems = [spectrum.problems[arm_name] for spectrum in spectra]
        packed = pack_arms(arms, mask_kept)
        missing = ~packed.present
        mark(missing, "MISSING_BLUE_ARM" if arm_name == "blue" else "MISSING_RED_ARM")
        mark([any(p == "nonfinite" for p in arm_problems) for arm_problems in problems], "NONFINITE_VALUES")
        mark([any(p == "zero_flux" for p in arm_problems) for arm_problems in problems], "ZERO_FLUX_MASKED")
        mark([any(p == "wavelength_range" for p in arm_problems) for arm_problems in problems], "WAVELENGTH_COVERAGE")
        snr[:, a] = reported_snr(arms, packed)
        with np.errstate(invalid="ignore"):
            mark(~(snr[:, a] > config.min_snr), "LOW_SNR_BLUE" if arm_name == "blue" else "LOW_SNR_RED")
        # Median flux <= 0 (no signal) <=> at most half the usable pixels are positive.
        positive = (packed.usable & (packed.flux > 0)).sum(axis=1)
        mark((2 * positive <= packed.usable.sum(axis=1)) & ~missing, "BAD_FLUX")
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
        continuum, out.flux[part, a], out.ivar[part, a], kept = fit_continuum(
            resampled_flux, resampled_ivar, config.continuum
        )
        if with_continuum:
            out.continuum[part, a] = continuum
        masked_fraction = (resampled_ivar <= 0).mean(axis=1)
        mark((masked_fraction > config.max_masked_fraction) & ~missing, "MANY_MASKED_PIXELS")
        mark((kept < config.continuum.min_kept_fraction) & ~missing, "CONTINUUM_FIT_POOR")
        processed &= ~missing & ~np.isnan(rv[:, a])
    mark(rv_measured, "RV_MEASURED")
    with np.errstate(invalid="ignore"):
        unreliable = (rv_err > config.max_rv_error).any(axis=1) | (
            np.abs(rv[:, 0] - rv[:, 1]) > config.max_rv_arm_difference
        )
    mark(unreliable | np.isnan(rv).any(axis=1), "RV_UNRELIABLE")
    flux, ivar = out.flux[part], out.ivar[part]
    flux[~processed] = 1.0
    ivar[~processed] = 0.0
    out.snr[part], out.rv[part], out.rv_err[part] = snr, rv, rv_err
    out.rv_measured[part], out.flags[part], out.processed[part] = rv_measured, flags, processed
