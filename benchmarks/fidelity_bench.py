"""Preprocessing fidelity against the ideal arrays of a mock survey (prints figures).

A mock survey (``make_mock_survey``; ``--harsh`` turns on every instrument defect of
``spectra/mock/harsh.py``) writes, beside its FITS files, the ideal arrays of every
spectrum (``spectra/mock/ideal.py``): the noise-free normalised rest-frame flux on the
project's grids, its ivar, the noise drawn for it, and its Cramer-Rao bound. This script
reads the FITS files like the ingest does, runs the project's preprocessing core on them
(``spectra.processing.pipeline.preprocess``, no database), joins each result to its ideal
arrays by (file, kind, lmjm) and prints, coadds and exposures apart:

1. per stage, the difference from the ideal arrays, per arm:
   - RV and rest frame: RV used minus the true RV, and the line-position error (the shift
     that best aligns the preprocessed lines with the ideal ones, by cross-correlation);
   - mask handling: the share of grid pixels the preprocessing masks (written as flux 1),
     and the share of unmasked pixels off by more than 5 sigma (bad pixels no mask marks);
   - continuum: rms of preprocessed / ideal - 1 on 30 A scales (running means over 300
     pixels, masked and >5 sigma pixels left out);
   - resampling and noise: the small-scale residual (preprocessed minus ideal flux, its
     30 A running mean removed) times sqrt(the preprocessing's ivar): its spread, which
     is 1 when the residual is only the noise the ivar describes; the same for the ideal
     arrays (noise * sqrt(ideal ivar)) beside it;
2. the information kept: a ridge regression (``inference.network.linear.fit_ridge``, the
   network's linear part) trained on the spectra of 50% of the stars, its penalty chosen
   on 10%, tested on the other 40%, for Teff, log g and [Fe/H]; its precision (standard
   deviation of prediction - truth) per S/N bin on the ideal arrays (ideal flux + the same
   noise draw: what a preprocessing with the true RV, the true continuum and no defect
   would give), on the preprocessed arrays, their ratio (goal <= 1.15), and on the
   preprocessed arrays with one defect repaired from the ideal ones (masked pixels
   filled, continuum, unmarked bad pixels, all three; and preprocessed with the true RVs),
   which shows which stage costs what; and with masked pixels filled from the preprocessed
   arrays alone (``inference/network/inputs.py``, models fitted on the training spectra:
   interpolation, the per-pixel mean, a 20-component PCA model, the same with pixels more
   than 5 sigma off it filled too, which is what the network does with its inputs);
   the median Cramer-Rao bound beside them. ``--network`` adds SPCANet (slow on few cores).

    .venv/bin/python benchmarks/fidelity_bench.py                  # 400 stars, harsh options on
    .venv/bin/python benchmarks/fidelity_bench.py --no-harsh
    .venv/bin/python benchmarks/fidelity_bench.py --survey /tmp/mock-harsh --stars 2000

Spectra are used at S/N >= --min-snr (blue and red, as the catalog does), RVs from the
survey's input RV catalog (``--rv true`` for the true ones, ``--rv measured`` for the
project's cross-correlation).
"""

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spectra.mock.fidelity import (  # noqa: E402
    continuum_error,
    defect_pixels,
    line_shift,
    repair,
    smooth_residual_spread,
)

LABELS = ("teff", "logg", "fe_h")
UNITS = {"teff": "K", "logg": "dex", "fe_h": "dex"}
SNR_BINS = (10.0, 20.0, 40.0, 80.0, np.inf)
RIDGE_LAMBDAS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
VARIANTS = ("ideal", "preprocessed", "true RV", "masked filled", "continuum repaired", "unmarked repaired", "all repaired")
# Fills computed from the preprocessed arrays alone (``inference/network/inputs.py``), any
# model fitted on the training spectra only: (components, outlier sigma) or "interpolate".
FILLS = {"interp fill": "interpolate", "mean fill": (0, 0.0), "PCA fill": (20, 0.0), "PCA fill+rej": (20, 5.0)}
SHORT = {"ideal": "ideal", "preprocessed": "preproc.", "true RV": "true RV", "masked filled": "mask fill", "continuum repaired": "continuum",
         "unmarked repaired": "unmarked", "all repaired": "all three", "interp fill": "interp", "mean fill": "mean fill",
         "PCA fill": "PCA fill", "PCA fill+rej": "PCA+rej", "SPCANet ideal": "NN ideal", "SPCANet preprocessed": "NN preproc."}


def make_survey(path: Path, stars: int, seed: int, harsh: bool) -> None:
    from spcanet_site.settings.base import ISOCHRONE_PATH, SPECTRUM_MODEL_PATH
    from spectra.mock.harsh import HarshOptions
    from spectra.mock.labels import Isochrones
    from spectra.mock.survey import MockSurveyConfig, make_mock_survey
    from spectra.processing.spectrum_model import CannonSpectrumModel

    config = MockSurveyConfig(n_stars=stars, seed=seed, dr9v1_fraction=0.1,
                              harsh=HarshOptions.harsh() if harsh else HarshOptions())
    start = time.perf_counter()
    summary = make_mock_survey(path, config, CannonSpectrumModel.load(SPECTRUM_MODEL_PATH), Isochrones.from_mist_csv(ISOCHRONE_PATH))
    print(f"survey: {summary.stars} stars, {summary.files} files, {summary.spectra} spectra, harsh={harsh} "
          f"({time.perf_counter() - start:.0f} s) -> {path}")


def load(survey: Path, rv_source: str, config=None):
    """Read the survey's files; preprocess (``config``: a PreprocessConfig); join to truth and ideal arrays."""
    from spectra.io import read_spectrum_file
    from spectra.mock.ideal import load_ideal
    from spectra.processing.pipeline import preprocess

    truth_rows = {(r["file"], r["kind"], int(r["lmjm"] or 0)): r for r in csv.DictReader(open(survey / "truth_spectra.csv"))}
    stars = {int(r["star"]): r for r in csv.DictReader(open(survey / "truth_stars.csv"))}
    catalog = {(int(r["obsid"]), int(r["lmjm"] or 0)): (float(r["rv_blue"]), float(r["rv_red"]))
               for r in csv.DictReader(open(survey / "rv_catalog.csv"))}
    ideal = load_ideal(survey)
    index = ideal.index()
    spectra, rows, true_rv, rv, files = [], [], [], [], []
    for path_index, path in enumerate(sorted((survey / "fits").rglob("*.fits*"))):
        sf = read_spectrum_file(path)
        name = path.relative_to(survey).as_posix()
        for spectrum in sf.spectra:
            key = (name, spectrum.kind, int(spectrum.lmjm or 0))
            truth = truth_rows[key]
            spectra.append(spectrum)
            rows.append(index[key])
            true_rv.append((float(truth["rv_blue"]), float(truth["rv_red"])))
            rv.append(catalog[(sf.obsid, key[2])])
            files.append(path_index)
    rows = np.array(rows)
    true_rv = np.array(true_rv)
    templates = None
    if rv_source == "true":
        supplied = true_rv.copy()
    elif rv_source == "catalog":
        supplied = np.array(rv)
    else:
        from spcanet_site.settings.base import SPECTRUM_MODEL_PATH
        from spectra.processing.spectrum_model import CannonSpectrumModel, template_bank_from_model

        supplied = None
        templates = template_bank_from_model(CannonSpectrumModel.load(SPECTRUM_MODEL_PATH))
    start = time.perf_counter()
    files = np.array(files, dtype=np.int64)
    result = preprocess(spectra, rv_supplied=supplied, templates=templates, config=config, files=files)
    print(f"preprocessed {len(spectra)} spectra in {time.perf_counter() - start:.1f} s (RVs: {rv_source})")
    with_true_rv = result if rv_source == "true" else preprocess(spectra, rv_supplied=true_rv, config=config, files=files)
    labels = np.array([[float(stars[int(s)][label]) for label in LABELS] for s in ideal.star[rows]])
    snr = np.array([[float(truth_rows[(ideal.file[r], ideal.kind[r], int(ideal.lmjm[r]))][f"snr_{arm}"] or 0) for arm in ("blue", "red")]
                    for r in rows])
    return {
        "flux": result.flux, "ivar": result.ivar, "processed": result.processed, "flux_true_rv": with_true_rv.flux, "rv": result.rv, "true_rv": true_rv,
        "ideal_flux": ideal.flux[rows], "ideal_ivar": ideal.ivar[rows], "noise": ideal.noise[rows], "crb": ideal.crb[rows][:, :3],
        "kind": ideal.kind[rows], "star": ideal.star[rows], "labels": labels, "snr": snr, "file": ideal.file[rows],
    }


def stage_figures(data: dict, good: np.ndarray) -> None:
    from spectra.processing.grids import GRIDS, STEP
    from spectra.processing.kernels import C_KMS

    print("\n1. Stages against the ideal arrays (median over spectra; [16th, 84th percentile])")
    ideal_noisy = data["ideal_flux"] + data["noise"]
    for kind in ("coadd", "exposure"):
        rows = good & (data["kind"] == kind)
        print(f"--- {kind}s ({rows.sum()} spectra)")
        rv_error = data["rv"][rows] - data["true_rv"][rows]
        for a, arm in enumerate(("blue", "red")):
            pre, pre_ivar = data["flux"][rows, a], data["ivar"][rows, a]
            ideal, ideal_ivar = data["ideal_flux"][rows, a], data["ideal_ivar"][rows, a]
            noisy = ideal_noisy[rows, a]
            masked = pre_ivar <= 0
            bad = defect_pixels(pre, noisy, ideal_ivar) & ~masked
            shift = line_shift(pre, ideal, ~masked & ~bad) * STEP / np.mean(GRIDS[arm]) * C_KMS
            cont, offset, shape = continuum_error(pre, noisy, ~masked & ~bad)
            spread = smooth_residual_spread(pre, ideal, pre_ivar, ~masked & ~bad)
            ideal_spread = smooth_residual_spread(noisy, ideal, ideal_ivar, ideal_ivar > 0)
            tails = rv_error[:, a][np.isfinite(rv_error[:, a])]
            far = f"{100 * np.mean(np.abs(tails) > 3):.1f}%; 2.5-97.5%: [{np.percentile(tails, 2.5):.2f}, {np.percentile(tails, 97.5):.2f}]" if tails.size else "n/a"
            print(f"  {arm:4s}  RV error {_summary(rv_error[:, a])} km/s, off by > 3 km/s {far}; line shift {_summary(shift)} km/s")
            print(f"        masked pixels {_summary(100 * masked.mean(axis=1), '.1f')}% (ideal {100 * np.median((ideal_ivar <= 0).mean(axis=1)):.2f}%); "
                  f"unmasked >5 sigma off {_summary(100 * bad.mean(axis=1), '.2f')}%")
            print(f"        continuum error on 30 A: rms {_summary(100 * cont, '.2f')}%; level offset {_summary(100 * offset, '.2f')}%, "
                  f"shape rms {_summary(100 * shape, '.2f')}%")
            print(f"        small-scale residual x sqrt(ivar): spread {_summary(spread, '.2f')} (ideal arrays: {_summary(ideal_spread, '.2f')})")


def _summary(values: np.ndarray, fmt: str = ".2f") -> str:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "n/a"
    low, mid, high = np.percentile(values, [16, 50, 84])
    return f"{mid:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def variant_arrays(data: dict, variant: str, rows: np.ndarray) -> np.ndarray:
    """(n, 8000) float32 inputs of one variant for the given rows."""
    ideal_noisy = data["ideal_flux"][rows] + data["noise"][rows]
    if variant == "ideal":
        flux = np.where(data["ideal_ivar"][rows] > 0, ideal_noisy, 1.0)
    elif variant == "preprocessed":
        flux = data["flux"][rows]
    elif variant == "true RV":
        flux = data["flux_true_rv"][rows]
    elif variant in FILLS:
        flux = data["fills"][variant][rows]
    else:
        what = {"masked filled": ("masked",), "continuum repaired": ("continuum",), "unmarked repaired": ("unmarked",),
                "all repaired": ("masked", "continuum", "unmarked")}[variant]
        flux = repair(data["flux"][rows], data["ivar"][rows], ideal_noisy, data["ideal_ivar"][rows], what)
    return flux.reshape(rows.size, -1).astype(np.float32)


def information_figures(data: dict, good: np.ndarray, seed: int, network: bool, quick: bool = False) -> None:
    from inference.network.linear import fit_ridge

    rng = np.random.default_rng(seed)
    stars = np.unique(data["star"])
    part = rng.random(stars.size)
    train_stars, cv_stars = stars[part < 0.5], stars[(part >= 0.5) & (part < 0.6)]
    train = good & np.isin(data["star"], train_stars)
    cv = good & np.isin(data["star"], cv_stars)
    test = good & ~np.isin(data["star"], np.concatenate([train_stars, cv_stars]))
    print(f"\n2. Information kept: ridge trained on {train.sum()} spectra ({train_stars.size} stars), "
          f"penalty chosen on {cv.sum()}, tested on {test.sum()} spectra of other stars")
    sigma: dict[str, dict] = {}
    test_rows = np.flatnonzero(test)
    fills = {"PCA fill+rej": FILLS["PCA fill+rej"]} if quick else FILLS
    data["fills"] = _fills(data, np.flatnonzero(train), fills)
    for variant in (("ideal", "preprocessed", "all repaired") if quick else VARIANTS) + tuple(fills):
        start = time.perf_counter()
        fit = fit_ridge(variant_arrays(data, variant, np.flatnonzero(train)), data["labels"][train],
                        variant_arrays(data, variant, np.flatnonzero(cv)), data["labels"][cv], RIDGE_LAMBDAS)
        predicted = fit.predict(variant_arrays(data, variant, test_rows))
        sigma[variant] = _binned(predicted - data["labels"][test], data, test_rows)
        print(f"  {variant}: fitted in {time.perf_counter() - start:.0f} s (lambda {', '.join(f'{v:g}' for v in fit.lambdas)})")
    if network:
        for variant in ("ideal", "preprocessed"):
            predicted = _network_predictions(data, variant, train, cv, test_rows, seed)
            sigma["SPCANet " + variant] = _binned(predicted - data["labels"][test], data, test_rows)
    crb = _binned(data["crb"][test], data, test_rows, statistic="median")
    columns = list(sigma)
    for k, label in enumerate(LABELS):
        print(f"--- {label} ({UNITS[label]}): precision (std of prediction - truth) per blue S/N bin; CRB: median Cramer-Rao bound; "
              "ratio = preprocessed / ideal (goal <= 1.15)")
        print("    columns: ideal arrays; preprocessed; preprocessed with the true RVs; preprocessed with masked pixels filled "
              "/ continuum repaired / unmarked bad pixels repaired / all three from the ideal arrays; "
              "from the preprocessed arrays alone, masked pixels filled by interpolation / the training mean / "
              "a 20-component PCA model / the same with pixels > 5 sigma off it filled too" + ("; SPCANet" if network else ""))
        header = f"  {'kind':8s} {'S/N':8s} {'N':>5s} {'CRB':>6s} " + " ".join(f"{SHORT[c]:>11s}" for c in columns) + "  ratio  PCA+rej ratio"
        if network:
            header += "  NN ratio"
        print(header)
        for key in sigma["ideal"]:
            n = sigma["ideal"][key][1]
            values = " ".join(f"{_fmt(sigma[c][key][0][k], label):>11s}" for c in columns)
            ratio = sigma["preprocessed"][key][0][k] / sigma["ideal"][key][0][k]
            fill_ratio = sigma["PCA fill+rej"][key][0][k] / sigma["ideal"][key][0][k]
            line = f"  {key[0]:8s} {key[1]:8s} {n:5d} {_fmt(crb[key][0][k], label):>6s} {values}  {ratio:5.2f}  {fill_ratio:13.2f}"
            if network:
                line += f"  {sigma['SPCANet preprocessed'][key][0][k] / sigma['SPCANet ideal'][key][0][k]:8.2f}"
            print(line)


def _fills(data: dict, train_rows: np.ndarray, fills: dict) -> dict[str, np.ndarray]:
    """Every spectrum's flux with its masked pixels filled, each way of ``fills`` (as ``FILLS``)."""
    from inference.network.inputs import fill_interpolate, fill_masked, fit_fill_basis

    out = {}
    for name, how in fills.items():
        start = time.perf_counter()
        if how == "interpolate":
            out[name] = fill_interpolate(data["flux"], data["ivar"])
        else:
            basis = fit_fill_basis(data["flux"][train_rows], data["ivar"][train_rows], how[0], outlier_sigma=how[1])
            out[name] = fill_masked(data["flux"], data["ivar"], basis)
        print(f"  {name}: filled in {time.perf_counter() - start:.0f} s")
    return out


def _fmt(value: float, label: str) -> str:
    return f"{value:.0f}" if label == "teff" else f"{value:.3f}"


def _binned(values: np.ndarray, data: dict, rows: np.ndarray, statistic: str = "std") -> dict:
    """{(kind, S/N bin): (per-label statistic, count)} over the test rows, plus all S/N >= 10."""
    out = {}
    snr = data["snr"][rows, 0]  # bins by the blue arm's S/N, as the catalog's S/N bins
    for kind in ("coadd", "exposure"):
        of_kind = data["kind"][rows] == kind
        edges = list(zip(SNR_BINS[:-1], SNR_BINS[1:], strict=True)) + [(SNR_BINS[0], np.inf)]
        for low, high in edges:
            members = of_kind & (snr >= low) & (snr < high)
            name = f"{low:.0f}-{high:.0f}" if np.isfinite(high) else f">={low:.0f}"
            if (low, high) == (SNR_BINS[0], np.inf):
                name = "all>=10"
            if members.sum() < 5:
                continue
            chosen = values[members]
            stat = np.std(chosen, axis=0) if statistic == "std" else np.median(chosen, axis=0)
            out[(kind, name)] = (stat, int(members.sum()))
    return out


def _network_predictions(data, variant, train, cv, test_rows, seed) -> np.ndarray:
    from inference.network.config import NetworkConfig, TrainingConfig
    from inference.network.estimator import SPCANet

    def arrays(rows):
        flux = variant_arrays(data, variant, rows).reshape(rows.size, 2, -1)
        if variant == "preprocessed":  # with the ivar, as the project's input path: the network fills masked pixels
            return np.stack([flux, data["ivar"][rows]], axis=1)
        return flux

    estimator = SPCANet(NetworkConfig(n_labels=len(LABELS)), TrainingConfig(seed=seed), label_names=list(LABELS))
    start = time.perf_counter()
    estimator.fit(arrays(np.flatnonzero(train)), data["labels"][train], cv_flux=arrays(np.flatnonzero(cv)), cv_labels=data["labels"][cv])
    print(f"  SPCANet {variant}: trained in {time.perf_counter() - start:.0f} s")
    return estimator.predict(arrays(test_rows))


def coadds_from_exposures(data: dict, clip_sigma: float = 5.0) -> int:
    """Replace each coadd's normalised arrays by the combination of its file's exposures.

    Per grid pixel: the clipped, ivar-weighted mean of the exposures' normalised flux
    (``spectra.processing.coadd.exposures_combined``); a pixel is masked only where every
    exposure is. Exposures are normalised apart (their own continuum), so their levels
    agree. Returns the number of coadds replaced (those with an exposure).
    """
    from spectra.processing.coadd import exposures_combined

    flux, ivar = data["flux"], data["ivar"]
    replaced = 0
    exposures_of: dict[str, list[int]] = {}
    for row in np.flatnonzero(data["kind"] != "coadd"):
        exposures_of.setdefault(str(data["file"][row]), []).append(row)
    for row in np.flatnonzero(data["kind"] == "coadd"):
        members = [r for r in exposures_of.get(str(data["file"][row]), []) if data["processed"][r]]
        if not members:
            continue
        combined, total = exposures_combined(flux[members], ivar[members], clip_sigma)
        flux[row], ivar[row] = combined.astype(flux.dtype), total.astype(ivar.dtype)
        replaced += 1
    return replaced


def preprocess_config(args):
    """The PreprocessConfig of the command line's continuum and mask options (others: the defaults)."""
    from dataclasses import replace

    from spectra.processing.pipeline import PreprocessConfig

    config = PreprocessConfig()
    chosen = {"order": args.continuum_order, "reject_below": args.continuum_below,
              "reject_above": args.continuum_above, "max_iterations": args.continuum_passes}
    config = replace(config, continuum=replace(config.continuum, **{k: v for k, v in chosen.items() if v is not None}))
    if args.coadd_ormask is not None:
        config = replace(config, coadd_ormask_excludes=args.coadd_ormask == "exclude")
    if args.coadd_fill is not None:
        config = replace(config, coadd_fill_from_exposures=args.coadd_fill == "exposures")
    if args.coadd_replace_sigma is not None:
        config = replace(config, coadd_replace_sigma=args.coadd_replace_sigma or None)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--survey", type=Path, default=None, help="Mock survey directory (generated there if missing; default: a temporary one).")
    parser.add_argument("--stars", type=int, default=400, help="Stars of a generated survey (~10 spectra each).")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--harsh", action=argparse.BooleanOptionalAction, default=True, help="Generate the survey with every harsh option on.")
    parser.add_argument("--rv", choices=("catalog", "true", "measured"), default="catalog")
    parser.add_argument("--min-snr", type=float, default=10.0)
    parser.add_argument("--network", action="store_true", help="Also train SPCANet on ideal and preprocessed arrays (slow).")
    parser.add_argument("--quick", action="store_true",
                        help="Ridge columns ideal, preprocessed, all three repaired and PCA fill+rej only.")
    continuum = parser.add_argument_group("continuum (spectra/processing/continuum.py; default: the project's ContinuumConfig)")
    continuum.add_argument("--continuum-order", type=int, default=None, help="Polynomial order.")
    continuum.add_argument("--continuum-below", type=float, default=None, help="Rejection below the fit, sigma.")
    continuum.add_argument("--continuum-above", type=float, default=None, help="Rejection above the fit, sigma.")
    continuum.add_argument("--continuum-passes", type=int, default=None, help="Passes of fit and rejection.")
    parser.add_argument("--coadd-ormask", choices=("exclude", "keep"), default=None,
                        help="Coadd pixels with ORMASK bits: masked, or kept where flux and ivar are positive "
                             "(PreprocessConfig.coadd_ormask_excludes; default: the project's).")
    parser.add_argument("--coadd-fill", choices=("exposures", "none"), default=None,
                        help="A coadd's masked pixels: filled from its file's exposures, or left masked "
                             "(PreprocessConfig.coadd_fill_from_exposures; default: the project's).")
    parser.add_argument("--coadd-replace-sigma", type=float, default=None,
                        help="Also replace a coadd pixel more than this many sigma off its exposures' combination "
                             "(PreprocessConfig.coadd_replace_sigma; 0: never; default: the project's).")
    parser.add_argument("--coadds-from-exposures", action="store_true",
                        help="Replace each coadd's arrays by the clipped, ivar-weighted combination of its file's "
                             "normalised exposures (coadds_from_exposures) before the figures.")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "spcanet_site.settings.base")
    with tempfile.TemporaryDirectory(prefix="fidelity-") as scratch:
        survey = args.survey or Path(scratch) / "survey"
        if not (survey / "truth_spectra.csv").exists():
            make_survey(survey, args.stars, args.seed, args.harsh)
        else:
            print(f"survey: {survey} (existing)")
        config = preprocess_config(args)
        print(f"continuum: {config.continuum}; coadd ORMASK excludes: {config.coadd_ormask_excludes}; "
              f"coadd masked pixels filled from the exposures: {config.coadd_fill_from_exposures}; "
              f"coadd pixels replaced beyond: {config.coadd_replace_sigma} sigma")
        data = load(survey, args.rv, config)
        if args.coadds_from_exposures:
            print(f"coadds replaced by the combination of their exposures: {coadds_from_exposures(data)}")
        good = data["processed"] & (data["snr"] >= args.min_snr).all(axis=1)
        print(f"spectra used: {good.sum()} of {good.size} (processed, S/N >= {args.min_snr:g} in both arms)")
        stage_figures(data, good)
        information_figures(data, good, args.seed, args.network, args.quick)
    print("\ncommand: " + " ".join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
