"""Generate a mock MRS survey: files in the real layouts, reference catalogs, the truth.

Layout of the output directory:

    fits/<plan>/med-<lmjd>-<plan>_sp<SS>-<FFF>.fits.gz   the spectra (DR7 layout; DR9 v1 for a share)
    reference_labels.csv     training labels like APOGEE-Payne (a share of the stars, quality_flag)
    apogee_like.fits, galah_like.fits, rave_like.csv   validation catalogs, own columns and flags,
                             each with a known bias and scatter per label (manifest.json)
    rv_catalog.csv           an input catalog of RVs (obsid, lmjm, rv_blue, rv_red), 1.4 km/s noise
    truth_stars.csv, truth_spectra.csv   the true labels and RVs, for scoring only
    truth_crb.csv            the Cramer-Rao bound per spectrum for all 15 labels (crb_<label>)
    ideal/stars-<first>-<last>.npz   per spectrum on the rest-frame grids: the noise-free
                             normalised flux, its ivar and the noise drawn (``ideal.py``)
    manifest.json            seed, sizes, injected biases and scatters, model and line data used

Reproducible from the seed: the same seed gives the same files. ``harsh`` options
(``harsh.py``, all off by default) add instrument defects from a random stream of their
own, so the rest of a harsh survey equals the plain survey of the same seed.
"""

import csv
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

from core.labels import LABELS

from ..identifiers import designations_from_radec
from ..io.lamost_writer import write_lamost_mrs
from ..io.types import Arm, RawSpectrum, SpectrumFile
from ..processing.grids import GRIDS, STEP, WINDOWS
from ..processing.kernels import resample_rows
from ..processing.rv import air_to_vacuum
from ..processing.spectrum_model import CannonSpectrumModel, smooth_to_resolution
from .harsh import (
    HarshOptions,
    add_cosmic_rays,
    add_edge_junk,
    dilate_mask,
    response_structure,
    sky_residual_counts,
    zero_flux_blocks,
)
from .ideal import IDEAL_DIR, cramer_rao_bound, finite_difference_jacobian, save_npz_deterministic
from .instrument import (
    COADD_GRIDS,
    EXPOSURE_GRIDS,
    READ_NOISE,
    instrument_response,
    observe,
    planck_shape,
    sample_on_grid,
)
from .labels import ELEMENTS, Isochrones, sample_labels
from .lines import LINES, element_optical_depth, line_profiles

ARMS = ("blue", "red")
MODEL_RANGES_AIR = {"blue": (4870.0, 5420.0), "red": (6260.0, 6900.0)}
LABEL_NAMES = [label.column for label in LABELS]
# Central-difference half-steps of the Cramer-Rao Jacobian: Teff (K), log g, then [X/H] (dex).
CRB_STEPS = np.array([20.0, 0.04] + [0.02] * (len(LABELS) - 2))
CRB_BLOCK_STARS = 64  # stars per Jacobian block (bounds its memory to ~60 MB)


@dataclass(frozen=True)
class SurveyInjection:
    """A reference survey's known offsets from the truth: label field -> (bias, scatter)."""

    bias: dict[str, float]
    scatter: dict[str, float]


# Reference surveys: the labels each really reports, with an injected bias and scatter
# (reference minus truth). Validation must recover these.
SURVEYS: dict[str, SurveyInjection] = {
    "apogee": SurveyInjection(
        bias={"teff": 60.0, "logg": -0.06, "fe_h": 0.05, "c_h": 0.1, "n_h": 0.08, "o_h": 0.05, "mg_h": 0.03,
              "al_h": 0.03, "si_h": 0.0, "s_h": 0.03, "ca_h": 0.07, "ti_h": 0.04, "cr_h": 0.02, "ni_h": 0.05},
        scatter={"teff": 50.0, "logg": 0.1, "fe_h": 0.04, "c_h": 0.08, "n_h": 0.1, "o_h": 0.08, "mg_h": 0.04,
                 "al_h": 0.08, "si_h": 0.04, "s_h": 0.08, "ca_h": 0.05, "ti_h": 0.1, "cr_h": 0.1, "ni_h": 0.03},
    ),
    "galah": SurveyInjection(
        bias={"teff": 40.0, "logg": 0.0, "fe_h": 0.04, "c_h": 0.02, "o_h": 0.05, "mg_h": 0.07, "al_h": 0.03,
              "si_h": 0.03, "ca_h": 0.08, "ti_h": 0.09, "cr_h": 0.02, "ni_h": 0.15, "cu_h": 0.1},
        scatter={"teff": 90.0, "logg": 0.2, "fe_h": 0.05, "c_h": 0.15, "o_h": 0.18, "mg_h": 0.14, "al_h": 0.08,
                 "si_h": 0.1, "ca_h": 0.11, "ti_h": 0.1, "cr_h": 0.13, "ni_h": 0.13, "cu_h": 0.2},
    ),
    "rave": SurveyInjection(
        bias={"teff": 0.0, "logg": -0.15, "fe_h": 0.0, "mg_h": 0.02, "al_h": 0.02, "si_h": 0.1, "ti_h": 0.1, "ni_h": 0.08},
        scatter={"teff": 240.0, "logg": 0.4, "fe_h": 0.18, "mg_h": 0.2, "al_h": 0.18, "si_h": 0.17, "ti_h": 0.22, "ni_h": 0.28},
    ),
}


@dataclass
class MockSurveyConfig:
    n_stars: int = 500
    seed: int = 0
    exposures: tuple[int, int] = (2, 9)  # per file, inclusive
    extra_nights_mean: float = 0.6  # nights per star = 1 + Poisson(mean), at most 3
    snr_median: float = 32.0  # blue-arm S/N of a coadd (lognormal)
    snr_log_sigma: float = 0.6
    red_to_blue_snr: float = 1.7
    resolution: float = 7500.0
    binary_fraction: float = 0.1
    bad_fibre_fraction: float = 0.01
    dr9v1_fraction: float = 0.0
    reference_fraction: float = 0.6  # stars with training labels
    survey_fractions: dict[str, float] = field(default_factory=lambda: {"apogee": 0.3, "galah": 0.08, "rave": 0.12})
    stars_per_field: int = 2000
    chunk_stars: int = 256
    ideal: bool = True  # write ideal/ and truth_crb.csv
    noise_scale: float = 1.0  # 0 writes noise-free spectra (tests); IVAR keeps the full noise model
    harsh: HarshOptions = field(default_factory=HarshOptions)


@dataclass
class MockSurveySummary:
    out_dir: Path
    stars: int
    files: int
    spectra: int


def make_mock_survey(
    out_dir: str | Path,
    config: MockSurveyConfig,
    model: CannonSpectrumModel,
    isochrones: Isochrones,
    progress: Callable[[int], None] | None = None,
) -> MockSurveySummary:
    """Write a mock survey into ``out_dir`` (layout in the module docstring).

    Parameters
    ----------
    out_dir : str or Path
        Output directory; created as needed.
    config : MockSurveyConfig
        Sizes, seed, S/N distribution, resolution, shares and ``harsh`` defect options.
    model : CannonSpectrumModel
        The spectrum model (Teff, log g, [Fe/H]); element lines are added (``lines.py``).
    isochrones : Isochrones
        MIST isochrones the true labels are drawn along (``labels.py``).
    progress : callable, optional
        Called with the number of stars of each chunk once the chunk is written.

    Returns
    -------
    MockSurveySummary
        The directory and the numbers of stars, files and spectra written.

    Notes
    -----
    The same seed gives the same files. The true labels follow the SPCANet paper's
    reference set (SCIENCE.md "Reference labels"); the spectra are at R = ``config.resolution``
    (LAMOST MRS: R ~ 7500, SCIENCE.md "Input").
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    harsh_rng = np.random.default_rng([config.seed, 14])  # defects only: the plain survey never draws from it
    n = config.n_stars
    labels = sample_labels(rng, n, isochrones)
    stars = _stars(rng, n, config)
    files = _observations(rng, stars, config)
    arms = {arm: _ArmModel(model, arm, config.resolution) for arm in ARMS}
    truth_rows = []
    crb_rows: list[np.ndarray] = []
    written = 0
    for start in range(0, n, config.chunk_stars):
        chunk = np.arange(start, min(start + config.chunk_stars, n))
        rest = {arm: arms[arm].spectra(labels[chunk]) for arm in ARMS}  # (c, P) vacuum rest frame
        chunk_files = [f for f in files if chunk[0] <= f["star"] <= chunk[-1]]
        rows, ideal = _write_files(rng, harsh_rng, out_dir, chunk_files, chunk[0], rest, arms, labels, stars, config)
        if config.ideal and rows:
            crb_rows.append(_write_ideal(out_dir, chunk, rows, ideal, arms, labels))
        truth_rows += rows
        written += len(chunk_files)
        if progress:
            progress(len(chunk))
    _write_catalogs(rng, out_dir, labels, stars, files, truth_rows, config)
    if config.ideal:
        _write_crb(out_dir, truth_rows, np.concatenate(crb_rows))
    return MockSurveySummary(out_dir=out_dir, stars=n, files=len(files), spectra=len(truth_rows))


class _ArmModel:
    """The spectrum model on one arm: Cannon flux x element responses, broadened to R."""

    def __init__(self, model: CannonSpectrumModel, arm: str, resolution: float):
        self.arm_name = arm
        low, high = MODEL_RANGES_AIR[arm]
        self.model = model.restrict(low, high)
        self.wavelength_vacuum = air_to_vacuum(self.model.wavelength_air)
        self.keys, self.profiles = line_profiles(self.model.wavelength_air)
        self.resolution = resolution

    def spectra(self, labels: np.ndarray) -> np.ndarray:
        flux = self.model.flux(labels[:, :3])
        x_fe = {element: labels[:, 3 + i] - labels[:, 2] for i, element in enumerate(ELEMENTS)}
        tau = element_optical_depth(self.keys, self.profiles, labels[:, 0], labels[:, 1], x_fe)
        flux = np.clip(flux * np.exp(-tau), 0.0, 1.0)
        return smooth_to_resolution(self.model.wavelength_air, flux, self.resolution)

    def on_grid(self, rest: np.ndarray) -> np.ndarray:
        """Rest-frame model spectra (n, P) linearly interpolated onto the arm's grid: (n, 4000) float64."""
        return _resample(self.wavelength_vacuum, rest, GRIDS[self.arm_name], np.zeros(rest.shape[0]))[0]


def _stars(rng: np.random.Generator, n: int, config: MockSurveyConfig) -> dict[str, np.ndarray]:
    n_fields = max(1, int(np.ceil(n / config.stars_per_field)))
    field_ra = rng.uniform(0.0, 360.0, n_fields)
    field_dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-5.0)), np.sin(np.radians(65.0)), n_fields)))
    star_field = rng.integers(0, n_fields, n)
    radius = 2.5 * np.sqrt(rng.random(n))
    angle = rng.uniform(0.0, 2 * np.pi, n)
    dec = np.clip(field_dec[star_field] + radius * np.sin(angle), -89.9, 89.9)
    ra = np.mod(field_ra[star_field] + radius * np.cos(angle) / np.cos(np.radians(dec)), 360.0)
    gaia = 10**18 + rng.permutation(n).astype(np.int64) * 7919 + rng.integers(0, 7919, n)
    has_gaia_name = rng.random(n) < 0.65
    other_names = [f"{rng.integers(1000, 9999)}-{rng.integers(10**7, 10**8)}" for _ in range(n)]
    objname = np.where(has_gaia_name, gaia.astype(str), np.array(other_names))
    systemic = rng.normal(-5.0, 35.0, n)
    binary = rng.random(n) < config.binary_fraction
    return {
        "ra": ra, "dec": dec, "field": star_field, "field_ra": field_ra, "field_dec": field_dec,
        "designation": np.array(designations_from_radec(ra, dec)), "gaia": gaia, "objname": objname,
        "rv": systemic, "binary": binary,
    }


def _plan_name(ra: float, dec: float, index: int) -> str:
    h, rem = divmod(ra / 15.0 * 3600.0, 3600.0)
    m, s = divmod(rem, 60.0)
    d, rem = divmod(abs(dec) * 3600.0, 3600.0)
    dm, ds = divmod(rem, 60.0)
    return f"MK{int(h):02d}{int(m):02d}{int(s):02d}{'N' if dec >= 0 else 'S'}{int(d):02d}{int(dm):02d}{int(ds):02d}M{index:02d}"


def _observations(rng: np.random.Generator, stars: dict, config: MockSurveyConfig) -> list[dict]:
    """One file per (star, night): plan, spectrograph, fibre, night, exposures, S/N, RVs."""
    n = stars["ra"].size
    nights = 1 + np.minimum(rng.poisson(config.extra_nights_mean, n), 2)
    files = []
    field_nights: dict[tuple[int, int], dict] = {}
    obsid = 700_000_000
    for star in range(n):
        for night in range(nights[star]):
            key = (int(stars["field"][star]), night)
            if key not in field_nights:
                lmjd = 58000 + int(rng.integers(0, 1200))
                field_nights[key] = {
                    "plan": _plan_name(stars["field_ra"][key[0]], stars["field_dec"][key[0]], night + 1),
                    "lmjd": lmjd, "next_fibre": 0, "bad_offset": rng.normal(0.0, 1.0, 2),
                }
            plan = field_nights[key]
            slot = plan["next_fibre"]
            plan["next_fibre"] += 1
            n_exp = int(rng.integers(config.exposures[0], config.exposures[1] + 1))
            exptime = float(rng.choice([600.0, 900.0, 1200.0]))
            start_minute = plan["lmjd"] * 1440 + 20 * 60 + int(rng.integers(0, 120))
            lmjms = [start_minute + i * int(exptime // 60 + 3) for i in range(n_exp)]
            night_rv = stars["rv"][star] + (rng.normal(0.0, 30.0) if stars["binary"][star] else 0.0)
            snr_blue = float(np.exp(rng.normal(np.log(config.snr_median), config.snr_log_sigma)))
            obsid += 1
            files.append({
                "star": star, "plan": plan["plan"], "lmjd": plan["lmjd"], "spectrograph": slot // 250 % 16 + 1,
                "fiber": slot % 250 + 1, "lmjms": lmjms, "exptime": exptime, "obsid": obsid,
                "rv": night_rv + rng.normal(0.0, 0.3, n_exp),  # per exposure
                "arm_offset": {"blue": -1.0 + 0.5 * plan["bad_offset"][0], "red": 1.0 + 0.5 * plan["bad_offset"][1]},
                "snr": {"blue": snr_blue, "red": snr_blue * config.red_to_blue_snr},
                "exposure_snr_scatter": rng.normal(1.0, 0.12, n_exp).clip(0.5, 1.5),
                "bad_fibre": bool(rng.random() < config.bad_fibre_fraction),
                "layout": "dr9v1" if rng.random() < config.dr9v1_fraction else "dr7",
            })
    return files


def _counts_for_snr(snr: np.ndarray) -> np.ndarray:
    """Counts per pixel giving S/N = C / sqrt(C + RN^2)."""
    snr2 = snr**2
    return (snr2 + np.sqrt(snr2**2 + 4 * snr2 * READ_NOISE**2)) / 2.0


def _write_files(rng, harsh_rng, out_dir, files, first_star, rest, arms, labels, stars, config) -> tuple[list[dict], dict]:
    if not files:
        return [], {}
    harsh: HarshOptions = config.harsh
    exposure_file = np.concatenate([np.full(len(f["lmjms"]), i) for i, f in enumerate(files)])
    exposure_star = np.array([files[i]["star"] - first_star for i in exposure_file])
    teff = labels[first_star + exposure_star, 0]
    n_exp = np.array([len(f["lmjms"]) for f in files])
    observed: dict[str, dict[str, np.ndarray]] = {}
    coadds: dict[str, dict[str, np.ndarray]] = {}
    ideal: dict[str, dict[str, np.ndarray]] = {}
    for arm in ARMS:
        grid = EXPOSURE_GRIDS[arm]
        rv = np.concatenate([f["rv"] + f["arm_offset"][arm] for f in files])
        normalised = sample_on_grid(arms[arm].wavelength_vacuum, rest[arm][exposure_star], grid, rv)
        # A fibre's response is the same for every exposure of the night.
        response = instrument_response(rng, grid.wavelength, len(files))[exposure_file]
        if harsh.response_order > 4:
            response = response * response_structure(
                harsh_rng, grid.wavelength.size, len(files), harsh.response_order, harsh.response_amplitude
            )[exposure_file]
        shape = planck_shape(grid.wavelength, teff) * response
        per_file = np.array([f["snr"][arm] for f in files])
        snr = per_file[exposure_file] / np.sqrt(n_exp[exposure_file]) * np.concatenate([f["exposure_snr_scatter"] for f in files])
        bad = np.array([f["bad_fibre"] for f in files])[exposure_file]
        level = _counts_for_snr(snr) * np.where(bad, 0.002, 1.0)
        counts = normalised * shape * level[:, None] / np.median(shape, axis=1, keepdims=True)
        dead = np.sort(rng.choice(grid.wavelength.size - 10, 6, replace=False))
        flux, ivar, mask, noise = observe(rng, counts, cosmic_rays_per_arm=4.0, dead_pixels=dead, return_noise=True,
                                         noise_scale=config.noise_scale)
        rejected = _harsh_exposures(harsh_rng, harsh, flux, mask, counts, grid.wavelength, dead, n_exp[exposure_file])
        observed[arm] = {"flux": flux, "ivar": ivar, "mask": mask}
        coadds[arm] = _coadd(flux, ivar, mask, grid.wavelength, COADD_GRIDS[arm].wavelength, exposure_file, len(files), rng,
                             rejected=rejected, dilate=harsh.coadd_mask_dilate)
        coadds[arm]["andmask"] = None
        if harsh.andmask_zero_flux > 0:
            coadds[arm]["andmask"] = zero_flux_blocks(
                harsh_rng, coadds[arm]["flux"], coadds[arm]["mask"], COADD_GRIDS[arm].wavelength, WINDOWS[arm],
                harsh.andmask_zero_flux,
            )
        if config.ideal:
            continuum = shape * level[:, None] / np.median(shape, axis=1, keepdims=True)  # counts per unit normalised flux
            file_rv = np.array([np.mean(f["rv"]) + f["arm_offset"][arm] for f in files])
            ideal[arm] = _ideal_noise(noise, continuum, ivar, grid.wavelength, COADD_GRIDS[arm].wavelength, GRIDS[arm],
                                      exposure_file, rv, file_rv)
    truth = []
    row = 0
    order = []  # ideal rows in truth order: ("coadd", file) or ("exposure", exposure row)
    for i, f in enumerate(files):
        star = f["star"]
        spectra = []
        coadd_arms = {
            arm: _arm(COADD_GRIDS[arm].wavelength, coadds[arm]["flux"][i], coadds[arm]["ivar"][i], coadds[arm]["mask"][i])
            for arm in ARMS
        }
        spectra.append(RawSpectrum("coadd", None, None, coadd_arms["blue"], coadd_arms["red"]))
        for e, lmjm in enumerate(f["lmjms"]):
            exposure_arms = {
                arm: _arm(EXPOSURE_GRIDS[arm].wavelength, observed[arm]["flux"][row + e], observed[arm]["ivar"][row + e], observed[arm]["mask"][row + e])
                for arm in ARMS
            }
            spectra.append(RawSpectrum("exposure", lmjm, f["exptime"], exposure_arms["blue"], exposure_arms["red"]))
        sf = SpectrumFile(
            path="", format="", layout_version=f["layout"], data_release="LAMOST DR7", obsid=f["obsid"],
            designation=str(stars["designation"][star]), ra=round(float(stars["ra"][star]), 6),
            dec=round(float(stars["dec"][star]), 6), objname=str(stars["objname"][star]), plan_id=f["plan"],
            lmjd=f["lmjd"], mjd=f["lmjd"] - 1, spectrograph=f["spectrograph"], fiber=f["fiber"], vacuum=True,
            spectra=spectra, header={"TSOURCE": "MOCK", "MAG1": round(float(15.0 - np.log10(f["snr"]["blue"]) * 2.5), 2)},
        )
        name = f"med-{f['lmjd']}-{f['plan']}_sp{f['spectrograph']:02d}-{f['fiber']:03d}.fits.gz"
        andmask = {arm: coadds[arm]["andmask"][i] for arm in ARMS if coadds[arm]["andmask"] is not None}
        path = write_lamost_mrs(sf, out_dir / "fits" / f["plan"] / name, layout=f["layout"], compresslevel=1,
                                coadd_andmask=andmask or None)
        order += [("coadd", i)] + [("exposure", row + e) for e in range(len(f["lmjms"]))]
        rv_mean = float(np.mean(f["rv"]))
        for spectrum, rv_true in zip(spectra, [rv_mean, *f["rv"]], strict=True):
            truth.append({
                "file": str(path.relative_to(out_dir)), "obsid": f["obsid"], "lmjm": spectrum.lmjm or "",
                "star": star, "kind": spectrum.kind,
                "rv_blue": round(rv_true + f["arm_offset"]["blue"], 3), "rv_red": round(rv_true + f["arm_offset"]["red"], 3),
                "snr_blue": spectrum.blue.header_snr, "snr_red": spectrum.red.header_snr, "bad_fibre": int(f["bad_fibre"]),
            })
        row += len(f["lmjms"])
    if not config.ideal:
        return truth, {}
    arrays = {}
    for key in ("ivar", "noise", "information"):
        coadd = np.stack([ideal[arm]["coadd_" + key] for arm in ARMS], axis=1)  # (files, 2, 4000)
        exposure = np.stack([ideal[arm]["exposure_" + key] for arm in ARMS], axis=1)
        arrays[key] = np.stack([coadd[i] if kind == "coadd" else exposure[i] for kind, i in order])
    arrays["star"] = np.array([files[i]["star"] if kind == "coadd" else files[exposure_file[i]]["star"] for kind, i in order])
    return truth, arrays


def _harsh_exposures(rng, harsh: HarshOptions, flux, mask, counts, wavelength, dead, file_exposures) -> np.ndarray | None:
    """Apply the harsh options' exposure defects in place (``harsh.py``).

    Returns the pixels a coadd rejects (unflagged cosmic rays in files of 3 or more
    exposures), or None when there are none.
    """
    if not harsh.enabled:
        return None
    sigma = np.sqrt(np.clip(counts, 0.0, None) + READ_NOISE**2)
    rejected = None
    if harsh.cosmic_rays > 0:
        add_cosmic_rays(rng, flux, sigma, mask, harsh.cosmic_rays, flagged=0.8)
    if harsh.unflagged_cosmics > 0:
        rows, columns = add_cosmic_rays(rng, flux, sigma, mask, harsh.unflagged_cosmics, flagged=0.0)
        clipped = file_exposures[rows] >= 3  # a coadd of 2 exposures cannot tell which one is hit
        rejected = np.zeros(flux.shape, dtype=bool)
        rejected[rows[clipped], columns[clipped]] = True
        rejected[rows[clipped], columns[clipped] + 1] = True
    if harsh.edge_junk > 0:
        add_edge_junk(rng, flux, sigma, mask, harsh.edge_junk, harsh.edge_junk_flagged)
    if harsh.sky_residuals > 0:
        flux += sky_residual_counts(rng, wavelength, flux.shape[0], harsh.sky_residuals).astype(np.float32)
    flux[:, dead] = 0.0
    return rejected


def _resample(wavelength, values, grid, rv, ivar=None, usable=None) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of rows (n, L) on one native grid onto ``grid`` at ``rv`` (km/s),
    with the preprocessing's own kernel: (n, M) float64 values and propagated ivar."""
    n = values.shape[0]
    out = np.empty((n, grid.size), dtype=np.float64)
    out_ivar = np.empty_like(out)
    resample_rows(
        np.ascontiguousarray(np.broadcast_to(wavelength, values.shape)), np.ascontiguousarray(values, dtype=np.float64),
        np.ones(values.shape) if ivar is None else np.ascontiguousarray(ivar, dtype=np.float64),
        np.ones(values.shape, dtype=np.bool_) if usable is None else np.ascontiguousarray(usable),
        np.full(n, wavelength.size, dtype=np.int64), np.asarray(grid, dtype=np.float64),
        np.asarray(rv, dtype=np.float64), out, out_ivar,
    )
    return out, out_ivar


def _ideal_noise(noise, continuum, ivar, exposure_wave, coadd_wave, grid, exposure_file, rv, file_rv) -> dict[str, np.ndarray]:
    """The normalised noise, its ivar and the information ivar of every exposure and coadd
    of one arm on the rest-frame grid (see ``ideal.py``): no defects, dead pixels excluded.

    A coadd's information is the sum of its exposures' (each on the grid at its own RV):
    the coadd's own ivar, on pixels interpolated from the exposures', would overstate it
    by the variance that interpolation averages away (about 1.5x, measured: a linear
    estimate on the coadds scattered 1.1-1.5x the bound computed from it, 1.0x on the
    exposures)."""
    usable = ivar > 0
    coadd_noise, coadd_ivar = _coadd_ideal(noise, continuum, ivar, usable, exposure_wave, coadd_wave, exposure_file)
    result = {}
    for kind, wave, values, weight, velocity in (
        ("exposure", exposure_wave, noise / continuum, ivar * continuum**2, rv),
        ("coadd", coadd_wave, coadd_noise, coadd_ivar, file_rv),
    ):
        good = weight > 0
        resampled, resampled_ivar = _resample(wave, values, grid, velocity, weight, good)
        result[kind + "_noise"] = resampled
        result[kind + "_ivar"] = resampled_ivar
    density, _ = _resample(exposure_wave, ivar * continuum**2 / np.gradient(exposure_wave), grid, rv, ivar, usable)  # per Angstrom
    result["exposure_information"] = np.where(result["exposure_ivar"] > 0, density * STEP, 0.0)
    starts = np.flatnonzero(np.r_[True, exposure_file[1:] != exposure_file[:-1]])
    result["coadd_information"] = np.add.reduceat(result["exposure_information"], starts, axis=0)
    return result


def _coadd_ideal(noise, continuum, ivar, usable, exposure_wave, coadd_wave, exposure_file) -> tuple[np.ndarray, np.ndarray]:
    """The coadd of the exposures' noise alone, normalised by the coadd of their continua
    (same weights as ``_coadd``, no defect rejected): noise (files, C) and its ivar."""
    starts = np.flatnonzero(np.r_[True, exposure_file[1:] != exposure_file[:-1]])
    zero_rv = np.zeros(noise.shape[0])
    resampled_noise, weight = _resample(exposure_wave, noise, coadd_wave, zero_rv, ivar, usable)
    resampled_continuum, _ = _resample(exposure_wave, continuum, coadd_wave, zero_rv, ivar, usable)
    weight_sum = np.add.reduceat(weight, starts, axis=0)
    good = weight_sum > 0
    safe = np.where(good, weight_sum, 1.0)
    coadd_noise = np.add.reduceat(weight * resampled_noise, starts, axis=0) / safe
    coadd_continuum = np.where(good, np.add.reduceat(weight * resampled_continuum, starts, axis=0) / safe, 1.0)
    return np.where(good, coadd_noise / coadd_continuum, 0.0), np.where(good, weight_sum * coadd_continuum**2, 0.0)


def _write_ideal(out_dir: Path, chunk: np.ndarray, truth: list[dict], arrays: dict, arms: dict, labels: np.ndarray) -> np.ndarray:
    """Ideal arrays and Cramer-Rao bounds of one chunk of stars (``ideal.py``); returns the bounds (n, 15)."""

    def model_on_grids(values: np.ndarray) -> np.ndarray:
        return np.concatenate([arms[arm].on_grid(arms[arm].spectra(values)) for arm in ARMS], axis=1)

    spectrum_star = arrays["star"]
    information = arrays["information"].reshape(len(truth), -1)
    flux = np.empty((chunk.size, len(ARMS), GRIDS["blue"].size), dtype=np.float32)
    crb = np.full((len(truth), len(LABELS)), np.nan)
    for start in range(0, chunk.size, CRB_BLOCK_STARS):
        block = chunk[start : start + CRB_BLOCK_STARS]
        flux[start : start + block.size] = model_on_grids(labels[block]).reshape(block.size, len(ARMS), -1)
        jacobian = finite_difference_jacobian(model_on_grids, labels[block], CRB_STEPS)  # (b, 8000, 15)
        members = np.flatnonzero((spectrum_star >= block[0]) & (spectrum_star <= block[-1]))
        if members.size:
            crb[members] = cramer_rao_bound(jacobian, information[members], rows=spectrum_star[members] - block[0])
    save_npz_deterministic(
        out_dir / IDEAL_DIR / f"stars-{chunk[0]:06d}-{chunk[-1]:06d}.npz",
        star=chunk.astype(np.int64), flux=flux, spectrum_star=spectrum_star.astype(np.int64),
        file=np.array([row["file"] for row in truth]), kind=np.array([row["kind"] for row in truth]),
        lmjm=np.array([row["lmjm"] or 0 for row in truth], dtype=np.int64),
        ivar=arrays["ivar"].astype(np.float32), noise=arrays["noise"].astype(np.float16), crb=crb.astype(np.float32),
    )
    return crb


def _write_crb(out_dir: Path, truth_rows: list[dict], crb: np.ndarray) -> None:
    with open(out_dir / "truth_crb.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "obsid", "lmjm", "kind", *(f"crb_{label.field}" for label in LABELS)])
        for row, bound in zip(truth_rows, crb, strict=True):
            writer.writerow([row["file"], row["obsid"], row["lmjm"], row["kind"], *(f"{v:.5g}" for v in bound)])


def _arm(wavelength, flux, ivar, mask) -> Arm:
    good = ivar > 0
    snr = float(np.median(flux[good] * np.sqrt(ivar[good]))) if good.any() else 0.0
    return Arm(wavelength=wavelength, flux=flux, ivar=ivar, mask=mask.astype(np.int32), header_snr=round(snr, 2))


def _coadd(
    flux, ivar, mask, exposure_wave, coadd_wave, exposure_file, n_files, rng, *, rejected=None, dilate=0
) -> dict[str, np.ndarray]:
    """Inverse-variance mean of each file's exposures on the coadd grid; ORMASK-like mask;
    zero-flux, zero-ivar tails where no exposure reaches, as in the real coadds.

    ``rejected`` (exposure pixels the coadding rejects without a mask bit, e.g. clipped
    cosmic rays) are left out like masked ones; ``dilate`` widens ORMASK by that many
    pixels each side (harsh options)."""
    n = flux.shape[0]
    usable = (ivar > 0) & (mask == 0)
    if rejected is not None:
        usable &= ~rejected
    resampled_flux = np.empty((n, coadd_wave.size), dtype=np.float32)
    resampled_ivar = np.empty_like(resampled_flux)
    resample_rows(
        np.ascontiguousarray(np.broadcast_to(exposure_wave, flux.shape)), flux, ivar, usable,
        np.full(n, exposure_wave.size, dtype=np.int64), coadd_wave, np.zeros(n), resampled_flux, resampled_ivar,
    )
    starts = np.flatnonzero(np.r_[True, exposure_file[1:] != exposure_file[:-1]])
    weight_sum = np.add.reduceat(resampled_ivar, starts, axis=0)
    weighted = np.add.reduceat(resampled_ivar * resampled_flux, starts, axis=0)
    covered = (coadd_wave >= exposure_wave[0]) & (coadd_wave <= exposure_wave[-1])
    any_masked = np.maximum.reduceat((resampled_ivar <= 0) & covered[None, :], starts, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        coadd_flux = np.where(weight_sum > 0, weighted / weight_sum, 0.0).astype(np.float32)
    coadd_mask = np.where(any_masked & (weight_sum > 0), 1, 0).astype(np.int16)
    if dilate > 0:
        coadd_mask = np.where(weight_sum > 0, dilate_mask(coadd_mask, dilate), 0).astype(np.int16)
    return {"flux": coadd_flux, "ivar": weight_sum.astype(np.float32), "mask": coadd_mask}


def _write_catalogs(rng, out_dir: Path, labels, stars, files, truth_rows, config: MockSurveyConfig) -> None:
    n = labels.shape[0]
    fields = [label.field for label in LABELS]
    # Truth, kept apart for scoring.
    with open(out_dir / "truth_stars.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["star", "designation", "gaia_source_id", "ra", "dec", "binary", *fields])
        for i in range(n):
            writer.writerow([i, stars["designation"][i], stars["gaia"][i], f"{stars['ra'][i]:.6f}", f"{stars['dec'][i]:.6f}",
                             int(stars["binary"][i]), *(f"{v:.4f}" for v in labels[i])])
    with open(out_dir / "truth_spectra.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(truth_rows[0]))
        writer.writeheader()
        writer.writerows(truth_rows)
    # An input catalog of RVs, as LAMOST's own (precision ~1.4 km/s).
    with open(out_dir / "rv_catalog.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["obsid", "lmjm", "rv_blue", "rv_red"])
        for row in truth_rows:
            writer.writerow([row["obsid"], row["lmjm"], f"{row['rv_blue'] + rng.normal(0, 1.4):.2f}", f"{row['rv_red'] + rng.normal(0, 1.4):.2f}"])
    # Training labels like APOGEE-Payne: a share of the stars, within its label range,
    # dwarfs below 4000 K excluded, small measurement noise, some flagged bad.
    chosen = rng.random(n) < config.reference_fraction
    teff, logg, feh = labels[:, 0], labels[:, 1], labels[:, 2]
    in_range = (teff > 3050) & (teff < 7950) & (logg > 0) & (logg < 5) & (feh > -1.45) & (feh < 0.45) & ~((teff < 4000) & (logg > 4))
    rows = np.flatnonzero(chosen & in_range)
    # Each star's errors differ (0.5-1.5x the typical 30 K, 0.05, 0.03 dex, from a generator
    # of their own so the rest of the survey keeps its draws); the catalog states them.
    # A "bad" row's scatter is 5x what it states, as a failed fit's is.
    noise = np.array([30.0, 0.05] + [0.03] * 13) * np.random.default_rng([config.seed, 7]).uniform(
        0.5, 1.5, (rows.size, len(LABELS)))
    bad = rng.random(rows.size) < 0.05
    measured = labels[rows] + rng.standard_normal((rows.size, len(LABELS))) * noise * np.where(bad, 5.0, 1.0)[:, None]
    missing = rng.random((rows.size, len(LABELS))) < 0.01  # the occasional label the pipeline did not give
    missing[:, :3] = False
    with open(out_dir / "reference_labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        names = ["TEFF", "LOGG", "FE_H", *(f"{e.upper()}_H" for e in ELEMENTS)]
        writer.writerow(["APOGEE_ID", "RA", "DEC", "GAIA_SOURCE_ID", *names, *(f"{n}_ERR" for n in names), "quality_flag"])
        for j, i in enumerate(rows):
            values = ["" if missing[j, k] else f"{measured[j, k]:.4f}" for k in range(len(LABELS))]
            errors = ["" if missing[j, k] else f"{noise[j, k]:.4f}" for k in range(len(LABELS))]
            writer.writerow([_apogee_id(stars, i), f"{stars['ra'][i]:.6f}", f"{stars['dec'][i]:.6f}", stars["gaia"][i],
                             *values, *errors, "bad" if bad[j] else "good"])
    injections = {}
    for survey, fraction in config.survey_fractions.items():
        injection = SURVEYS[survey]
        members = np.flatnonzero(rng.random(n) < fraction)
        values = {}
        for name in injection.bias:
            k = fields.index(name)
            values[name] = labels[members, k] + injection.bias[name] + rng.normal(0.0, injection.scatter[name], members.size)
        flagged = rng.random(members.size) < 0.1
        values = {name: np.where(flagged, v + rng.normal(0.0, 3 * injection.scatter[name], members.size), v) for name, v in values.items()}
        _write_survey(survey, out_dir, stars, members, values, flagged, rng)
        injections[survey] = {"stars": int(members.size), "flagged": int(flagged.sum()), **asdict(injection)}
    settings = asdict(config)
    # Options at their defaults stay out of the manifest, so a default survey's bytes do not change.
    settings.pop("ideal")
    settings.pop("harsh")
    if config.noise_scale == 1.0:
        settings.pop("noise_scale")
    manifest = {
        "seed": config.seed, "config": settings, "stars": int(n), "files": len(files), "spectra": len(truth_rows),
        "reference_labels": int(rows.size), "injected": injections,
        "spectrum_model": "The Cannon model in thedoppler 1.1.32 (cannongrid_3000_18000_coolstars_norm_cubic_model.pkl)",
        "line_data": {element: [round(w, 2) for w, _, _ in lines] for element, lines in LINES.items() if element != "N"},
        "cn_forest_lines": len(LINES["N"]),
    }
    if config.harsh.enabled:
        manifest["harsh"] = config.harsh.changed()
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=float))


def _apogee_id(stars, i) -> str:
    return "2M" + stars["designation"][i].replace("LAMOST J", "").replace(".", "")[:16]


def _write_survey(survey: str, out_dir: Path, stars, members, values, flagged, rng) -> None:
    """Each survey in its own public format: column names, [X/Fe] or [X/H], flags, ids."""
    ra, dec, gaia = stars["ra"][members], stars["dec"][members], stars["gaia"][members]
    if survey == "apogee":  # allStar-like FITS: [X/Fe], ASPCAPFLAG/STARFLAG bitmasks
        table = Table({"APOGEE_ID": [_apogee_id(stars, i) for i in members], "RA": ra, "DEC": dec, "GAIA_SOURCE_ID": gaia})
        table["TEFF"], table["LOGG"], table["FE_H"] = values["teff"], values["logg"], values["fe_h"]
        for name, v in values.items():
            if name.endswith("_h") and name != "fe_h":
                table[name[:-2].upper() + "_FE"] = v - values["fe_h"]
        table["ASPCAPFLAG"] = np.where(flagged, np.int64(1) << 23, 0)  # STAR_BAD
        table["STARFLAG"] = np.where(flagged & (rng.random(members.size) < 0.5), 1 << 3, 0)
        table.write(out_dir / "apogee_like.fits", overwrite=True)
    elif survey == "galah":  # GALAH DR2-like FITS: lower-case, [X/Fe], flag_cannon
        table = Table({"sobject_id": 131216001101000 + np.arange(members.size), "ra": ra, "dec": dec, "source_id": gaia})
        table["teff"], table["logg"], table["fe_h"] = values["teff"], values["logg"], values["fe_h"]
        for name, v in values.items():
            if name.endswith("_h") and name != "fe_h":
                table[name[:-2] + "_fe"] = v - values["fe_h"]
        table["flag_cannon"] = np.where(flagged, 1, 0)
        table.write(out_dir / "galah_like.fits", overwrite=True)
    else:  # RAVE DR5-like CSV: no Gaia ids (position match), [X/H]-style abundances, Algo_Conv_K
        with open(out_dir / "rave_like.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            elements = [name for name in values if name.endswith("_h") and name != "fe_h"]
            writer.writerow(["RAVE_OBS_ID", "RAdeg", "DEdeg", "Teff_K", "logg_K", "Met_K", *(f"{e[:-2].capitalize()}" for e in elements), "Algo_Conv_K"])
            for j in range(members.size):
                writer.writerow([f"20{rng.integers(10, 13)}0{rng.integers(1, 9)}{j:06d}", f"{ra[j]:.6f}", f"{dec[j]:.6f}",
                                 f"{values['teff'][j]:.0f}", f"{values['logg'][j]:.2f}", f"{values['fe_h'][j]:.2f}",
                                 *(f"{values[e][j]:.2f}" for e in elements), 1 if flagged[j] else 0])
