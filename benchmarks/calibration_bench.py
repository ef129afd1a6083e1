"""Uncertainty calibration per subgroup: z spread and share within 1 sigma per cell of
S/N bin x kind (coadd, exposure) x masked-fraction bin, on held-out spectra with known truth.

On a mock survey with truth (``make_mock_survey``; e.g. the harsh one of
``fidelity_bench.py``), read and preprocessed in memory (no database), split by star
as the training is (``split_two_models``, 6:2:1), SPCANet is trained on the formal
training set (Teff, log g, [Fe/H]; labels are the true ones), its noise model fitted on
the CV spectra twice, S/N only (``SnrNoiseModel``, artifacts before the context model) and
with the context (``ContextNoiseModel``: S/N, masked fraction, kind), and both are scored
on the test spectra; and a third time as ``train_models`` does, on the CV and test spectra
together, each test spectrum scored by the model fitted without its star (5 folds of the
test stars, ``cross_fitted_sigma``). Goal: z spread 0.9-1.1 and 60-76% within 1 sigma in
every cell.

The test set is scored against the goals of the catalog: per S/N bin (blue arm, as
``fidelity_bench.py``) and kind, the formal model's scatter against the truth beside the
median Cramer-Rao bound of those spectra (goal: at most 1.5x), and coadds against
exposures of the same bin (goal: coadds no worse). Unless ``--no-alternate``, the
alternate model is trained too, on its own split and with the next seed (as
``train_models`` does), and on the same spectra the same table is printed for the mean of
the two models' labels, and the share of Flag = 1 by the catalog rules (``inference.catalog_rules.catalog_flags``,
the default ``CatalogRules``; the two models' agreement and the S/N rule, the truth's S/N
per arm standing in for the header's) among spectra with S/N >= 20 in both arms (goal: at
least 90%).

With ``--labels reference`` both models learn from, and are calibrated against, the
survey's reference catalog (``reference_labels.csv``: an APOGEE-like subset of the stars,
good rows only, with that catalog's errors), as ``train_models`` does; the test spectra,
of every star, are still scored against the truth. The noise models then subtract the
catalog's stated errors (``*_ERR``) from the CV residuals, as ``train_models`` does; the
context model fitted without them is scored beside, the CV set's scatter against the
truth is printed beside what the subtraction recovers, and the test set's z spreads are
split into the stars the reference covers and the others.

With ``--cannon``, The Cannon (quadratic in all 15 labels; ``benchmarks/cannon_env.sh``)
is trained on the ideal arrays of the formal training set's coadds (the noise-free
spectrum plus the noise drawn for it, with its ideal ivar: what a perfect preprocessing
would give) with the same labels, and labels the test spectra's ideal arrays; per S/N bin
and kind its scatter is printed beside SPCANet's from the raw files (goal: SPCANet no
worse). Its labels are kept in SURVEY-cannon under the digest of its inputs.

    .venv/bin/python benchmarks/calibration_bench.py --survey /tmp/fid/harsh400
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

LABELS = ("teff", "logg", "fe_h")
from core.labels import LABEL_FIELDS as ALL_LABELS  # noqa: E402  (pure Python, no Django)


def _cell_table(title: str, cells: list[dict]) -> tuple[int, int]:
    """Print one row per cell, each z spread with its 95% interval over the cell's stars;
    returns (cells meeting the goal for every label, cells)."""
    print(f"\n{title}")
    print("| S/N | kind | masked | n (stars) | " + " | ".join(f"{name} z spread [95%] | {name} <1 sigma" for name in LABELS)
          + " | goal |")
    print("|---|---|---|---|" + "---|---|" * len(LABELS) + "---|")
    met = beyond = 0
    for cell in cells:
        figures, verdicts = [], []
        for name in LABELS:
            label = cell["labels"][name]
            low, high = label["z_std_interval"] or (float("nan"), float("nan"))
            figures += [f"{label['z_std']:.2f} [{low:.2f}, {high:.2f}]", f"{100 * label['within_1sigma']:.0f}%"]
            verdicts.append(label["verdict"])
        ok = all(v == "met" for v in verdicts)
        met += ok
        beyond += "missed beyond noise" in verdicts
        verdict = "yes" if ok else ("no, beyond noise: " + ", ".join(
            name for name, v in zip(LABELS, verdicts, strict=True) if v == "missed beyond noise")
            if "missed beyond noise" in verdicts else "no, within noise")
        print(f"| {cell['snr_bin']} | {cell['kind']} | {cell['masked_bin']} | {cell['n']} ({cell['stars']}) | "
              + " | ".join(figures) + f" | {verdict} |")
    print(f"cells meeting the goal for all three labels: {met} of {len(cells)}; missing it beyond their sampling "
          f"noise (a 95% interval over the cell's stars wholly outside the goal) for some label: {beyond}")
    return met, len(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--survey", type=Path, required=True,
                        help="Mock survey directory with truth_spectra.csv (a harsh one of --stars is generated there "
                             "when missing, as fidelity_bench.py does).")
    parser.add_argument("--stars", type=int, default=400, help="Stars of a generated survey (~10 spectra each).")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-snr", type=float, default=10.0)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--lr-reduce-factor", type=float, default=1.0,
                        help="Learning rate times this on a plateau of the CV loss (1 = constant).")
    parser.add_argument("--lr-reduce-patience", type=int, default=3)
    parser.add_argument("--arrays", choices=("preprocessed", "ideal"), default="preprocessed",
                        help="Train and test on the preprocessed arrays of the raw files (default) or on the ideal "
                             "arrays (noise-free spectrum plus the noise drawn for it, ideal ivar): the network's own "
                             "floor, without what the preprocessing loses.")
    parser.add_argument("--train-min-snr", type=float, default=None,
                        help="The formal model learns from the training spectra with at least this S/N only.")
    parser.add_argument("--train-star-fraction", type=float, default=1.0,
                        help="The formal model learns from this share of its training stars (chosen at random).")
    parser.add_argument("--network", action="append", default=[], metavar="NAME=VALUE",
                        help="A NetworkConfig setting other than its default, e.g. dropout=0.1 or filters=[16,16] "
                             "(JSON values; repeatable).")
    parser.add_argument("--min-count", type=int, default=10, help="Cells with fewer test spectra are not shown.")
    parser.add_argument("--labels", choices=("truth", "reference"), default="truth",
                        help="Train and calibrate on the true labels, or on the survey's reference catalog "
                             "(reference_labels.csv: its stars only, with its errors); scored against the truth.")
    parser.add_argument("--alternate", action=argparse.BooleanOptionalAction, default=True,
                        help="Also train the alternate model and print the catalog goals (Flag = 1 share, sigma / CRB).")
    parser.add_argument("--cannon", action="store_true",
                        help="Also train The Cannon (quadratic in all 15 labels) on the ideal arrays of the formal "
                             "training set's coadds and score it on the test spectra's ideal arrays, beside SPCANet "
                             "from the raw files (needs .venv-cannon: bash benchmarks/cannon_env.sh).")
    parser.add_argument("--cannon-cache", type=Path, default=None,
                        help="Where The Cannon's labels are kept between runs (default SURVEY-cannon).")
    parser.add_argument("--save", type=Path, default=None,
                        help="Also write the CV and test predictions with their labels, errors and context (.npz), "
                             "to fit noise models on them without training again; with the alternate model, its "
                             "test-set labels too.")
    args = parser.parse_args()
    if not 0 < args.train_star_fraction <= 1:
        parser.error("--train-star-fraction must be in (0, 1]")
    if args.save is not None and args.save.suffix != ".npz":
        args.save = args.save.with_name(args.save.name + ".npz")  # as np.savez names it, so it can be read back
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "spcanet_site.settings.base")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import fidelity_bench

    from inference.network.config import NetworkConfig, TrainingConfig
    from inference.network.estimator import SPCANet
    from inference.network.splits import TRAIN, split_two_models
    from inference.network.uncertainty import (
        CALIBRATION_FOLDS,
        ContextNoiseModel,
        SnrNoiseModel,
        calibration_cells,
        cross_fitted_sigma,
        masked_fraction,
    )

    if not (args.survey / "truth_spectra.csv").exists():
        fidelity_bench.make_survey(args.survey, args.stars, args.seed, harsh=True)
    data = fidelity_bench.load(args.survey, "catalog")
    snr = data["snr"].min(axis=1)
    good = data["processed"] & (snr >= args.min_snr)
    bright = snr >= 20
    print(f"spectra with S/N >= 20 in both arms: {bright.sum()}, of which {(bright & ~data['processed']).sum()} not "
          "preprocessed (Flag = 0 in a release; the goals below count the preprocessed ones)")
    if args.arrays == "ideal":  # what a perfect preprocessing would give: the noise-free spectrum plus its noise
        flux, ivar = (data["ideal_flux"] + data["noise"])[good].astype(np.float32), data["ideal_ivar"][good]
    else:
        flux, ivar = data["flux"][good], data["ivar"][good]
    arrays = np.stack([flux, ivar], axis=1)  # [flux, ivar] as the shards hold them: the network fills masked pixels
    labels, snr, star = data["labels"][good], snr[good], data["star"][good]
    coadd = data["kind"][good] == "coadd"
    masked = masked_fraction(ivar)
    training = TrainingConfig(seed=args.seed, max_epochs=args.max_epochs, patience=args.patience,
                              lr_reduce_factor=args.lr_reduce_factor, lr_reduce_patience=args.lr_reduce_patience)
    split = split_two_models(star.astype(np.int64), training.split_fractions, args.seed)
    train, test = split.formal == TRAIN, split.test
    cv = ~test & ~train
    if args.train_min_snr:  # an experiment: the formal model learns from the brighter spectra only
        train &= snr >= args.train_min_snr
    if args.train_star_fraction < 1:  # a learning curve: the formal model learns from a share of its stars
        stars = np.unique(star[train])
        kept = np.random.default_rng(args.seed).choice(stars, round(args.train_star_fraction * stars.size), replace=False)
        train &= np.isin(star, kept)
    # What the models learn from and are calibrated against: the truth, or the survey's
    # reference catalog (its stars only, with its errors); the test set is scored against the truth.
    learned, known, errors = labels, np.ones(len(labels), dtype=bool), None
    if args.labels == "reference":
        learned, known, errors = _reference_labels(args.survey, star)
        train, cv = train & known, cv & known
        print(f"labels learned from the survey's reference catalog: {np.unique(star[known]).size} of "
              f"{np.unique(star).size} stars; its stated errors "
              + ("(median " + ", ".join(f"{name} {np.nanmedian(errors[known, k]):.3g}" for k, name in enumerate(LABELS))
                 + ") are subtracted by the noise models" if np.isfinite(errors[known]).any()
                 else "are not in the catalog (reference_labels.csv has no *_ERR columns)"))
        if not np.isfinite(errors[known]).any():
            errors = None
    print(f"spectra: {good.sum()} (S/N >= {args.min_snr:g}); train {train.sum()}, CV {cv.sum()}, test {test.sum()}; "
          f"masked fraction median: coadds {np.median(masked[coadd]):.3f}, exposures {np.median(masked[~coadd]):.3f}")
    network = _network_config(NetworkConfig, args.network)
    estimator = SPCANet(network, training, label_names=list(LABELS))
    started = time.perf_counter()
    estimator.fit(arrays[train], learned[train], cv_flux=arrays[cv], cv_labels=learned[cv])
    history = estimator.history
    print(f"SPCANet trained in {time.perf_counter() - started:.0f} s ({history['epochs']} epochs, best "
          f"{history['best_epoch']}, learning rate {history['learning_rate'][0]:.2g} -> {history['learning_rate'][-1]:.2g})"
          + (f"; network settings {', '.join(args.network)}" if args.network else ""))
    cv_residuals = estimator.predict(arrays[cv]) - learned[cv]
    predicted = estimator.predict(arrays[test])
    cv_errors = None if errors is None else errors[cv]
    if args.save:
        held = cv | test
        np.savez(args.save, predicted=estimator.predict(arrays[held]), learned=learned[held], truth=labels[held],
                 errors=np.full_like(learned[held], np.nan) if errors is None else errors[held], snr=snr[held],
                 masked=masked[held], coadd=coadd[held], star=star[held], cv=cv[held], test=test[held],
                 known=known[held], label_names=np.array(LABELS))
    if cv_errors is not None:
        # What the noise models see on the CV spectra, per label: the scatter against the truth
        # (unknown to them), against the reference, and the latter less the stated errors.
        against_truth = np.std(estimator.predict(arrays[cv]) - labels[cv], axis=0)
        stated = np.sqrt(np.nanmean(cv_errors**2, axis=0))
        print(f"CV ({cv.sum()} spectra of {np.unique(star[cv]).size} stars): " + ", ".join(
            f"{name} against the truth {against_truth[k]:.3g}, against the reference {np.std(cv_residuals[:, k]):.3g}, "
            f"less the stated errors (rms {stated[k]:.3g}) "
            f"{np.sqrt(max(np.var(cv_residuals[:, k]) - stated[k] ** 2, 0.0)):.3g}" for k, name in enumerate(LABELS)))
    models = {"S/N only (SnrNoiseModel)": SnrNoiseModel.fit(cv_residuals, snr[cv], cv_errors, star[cv]),
              "context (ContextNoiseModel: S/N, masked fraction, kind)":
                  ContextNoiseModel.fit(cv_residuals, snr[cv], masked[cv], coadd[cv], reference_errors=cv_errors,
                                        groups=star[cv])}
    if cv_errors is not None:  # what the same residuals give with the reference's errors left in
        models["context, the reference's errors not subtracted"] = ContextNoiseModel.fit(
            cv_residuals, snr[cv], masked[cv], coadd[cv])
    # As train_models does: the noise model fitted on the CV set and the test set together
    # (against the labels learned from; NaN, so left out, where the reference has none), each
    # test spectrum's uncertainty from the model fitted without its star (5 folds).
    held = cv | test
    held_residuals = np.full((held.sum(), len(LABELS)), np.nan)
    held_residuals[cv[held]] = cv_residuals
    held_residuals[test[held]] = predicted - learned[test]
    models["context, fitted on the CV and test sets, cross-fitted (train_models)"] = cross_fitted_sigma(
        held_residuals, snr[held], masked[held], coadd[held], None if errors is None else errors[held], star[held],
        test[held], folds=CALIBRATION_FOLDS, seed=args.seed)
    for title, model in models.items():
        if isinstance(model, np.ndarray):
            sigma = model
        else:
            sigma = (model.sigma(snr[test], masked[test], coadd[test]) if isinstance(model, ContextNoiseModel)
                     else model.sigma(snr[test]))
        cells = calibration_cells(predicted, labels[test], sigma, snr[test], masked[test], coadd[test], list(LABELS),
                                  min_count=args.min_count, groups=star[test], seed=args.seed)
        _cell_table(f"{title}, test set", cells)
        z = (predicted - labels[test]) / sigma
        print("all test spectra: " + ", ".join(
            f"{name} z spread {np.std(z[:, k]):.2f}, {100 * np.mean(np.abs(z[:, k]) < 1):.0f}% < 1 sigma"
            for k, name in enumerate(LABELS)))
        if args.labels == "reference":  # the stars the calibration set is like: those the reference covers
            inside = known[test]
            low, high = np.nanmin(learned[train], axis=0), np.nanmax(learned[train], axis=0)
            in_range = np.all((labels[test] >= low) & (labels[test] <= high), axis=1)
            groups = {"stars in the reference catalog": inside,
                      "other stars within the training labels' range (truth)": ~inside & in_range,
                      "other stars outside it": ~inside & ~in_range}
            print("test spectra of " + "; ".join(
                f"{title} ({members.sum()}): " + ", ".join(f"{name} z spread {np.std(z[members, k]):.2f}"
                                                             for k, name in enumerate(LABELS))
                for title, members in groups.items() if members.sum() > 1))
        if isinstance(model, ContextNoiseModel):
            print("coefficients (log factor per unit masked fraction, coadd vs exposure): " + ", ".join(
                f"{name} {c[1]:+.2f} / {c[2]:+.2f}" for name, c in zip(LABELS, model.coefficients, strict=True)))
    # As the catalog publishes them: predictions outside the training labels' range carry
    # OUTSIDE_TRAINING_RANGE (the network extrapolates there); the cells of the others.
    flagged = np.any((predicted < estimator.label_ranges[0]) | (predicted > estimator.label_ranges[1]), axis=1)
    if flagged.any():
        crossfitted = models["context, fitted on the CV and test sets, cross-fitted (train_models)"]
        kept = ~flagged
        cells = calibration_cells(predicted[kept], labels[test][kept], crossfitted[kept], snr[test][kept],
                                  masked[test][kept], coadd[test][kept], list(LABELS), min_count=args.min_count,
                                  groups=star[test][kept], seed=args.seed)
        _cell_table(f"cross-fitted (train_models), the {kept.sum()} test spectra without OUTSIDE_TRAINING_RANGE "
                    f"({flagged.sum()} predicted outside the training labels' range left out)", cells)
        z = (predicted[kept] - labels[test][kept]) / crossfitted[kept]
        print("those test spectra: " + ", ".join(f"{name} z spread {np.std(z[:, k]):.2f}" for k, name in enumerate(LABELS)))
    if args.alternate:
        alternate_training = TrainingConfig.from_mapping({**training.as_dict(), "seed": training.seed + 1})
        alternate = SPCANet(network, alternate_training, label_names=list(LABELS))
        alternate_train = (split.alternate == TRAIN) & known
        alternate_cv = ~test & (split.alternate != TRAIN) & known
        started = time.perf_counter()
        alternate.fit(arrays[alternate_train], learned[alternate_train], cv_flux=arrays[alternate_cv],
                      cv_labels=learned[alternate_cv])
        print(f"\nalternate SPCANet trained in {time.perf_counter() - started:.0f} s ({alternate.history['epochs']} epochs)")
        alternate_predicted = alternate.predict(arrays[test])
        _goals(predicted, alternate_predicted, labels[test], data["crb"][good][test],
               data["snr"][good][test], coadd[test])
        if args.save:  # the test spectra's alternate labels beside what was saved above
            with np.load(args.save) as saved:
                contents = dict(saved)
            contents["alternate_test"] = alternate_predicted
            contents["crb_test"] = data["crb"][good][test]
            contents["snr_arms_test"] = data["snr"][good][test]
            np.savez(args.save, **contents)
    else:
        _goals(predicted, None, labels[test], data["crb"][good][test], data["snr"][good][test], coadd[test])
    if args.cannon:
        from network_bench import run_cannon

        # The peer: The Cannon trained on ideal normalised coadds (the noise-free spectrum
        # plus the noise drawn for it, with its ideal ivar: what a perfect preprocessing would give),
        # on every label, from the same stars and labels as the formal model.
        every = _all_labels(args.survey, star, args.labels)
        ideal_flux = data["ideal_flux"][good] + data["noise"][good]
        ideal_ivar = data["ideal_ivar"][good]
        peer_train = train & coadd & np.isfinite(every).all(axis=1)
        print(f"\nThe Cannon: trained on the ideal arrays of {peer_train.sum()} coadds "
              f"({np.unique(star[peer_train]).size} stars), labelling {test.sum()} test spectra's ideal arrays")
        started = time.perf_counter()
        peer = run_cannon(ideal_flux[peer_train], ideal_ivar[peer_train], every[peer_train], ideal_flux[test],
                          ideal_ivar[test], ALL_LABELS, args.cannon_cache or args.survey.parent / f"{args.survey.name}-cannon")
        print(f"The Cannon: {time.perf_counter() - started:.0f} s")
        _against_peer(predicted, peer[:, :len(LABELS)], labels[test], data["snr"][good][test][:, 0], coadd[test])
    print("\ncommand: " + " ".join([Path(sys.executable).name, *sys.argv]))


def _reference_labels(survey: Path, star: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 3) float64 labels of the survey's reference catalog for each row's star (matched by
    Gaia id, as ``reference_catalog_import`` does for these mocks), (n,) bool: has them, and
    (n, 3) float64 their stated errors (``*_ERR``; NaN where the catalog has none)."""
    import csv

    def number(text: str | None) -> float:
        return float(text) if text else np.nan

    gaia_of = {int(r["star"]): int(r["gaia_source_id"]) for r in csv.DictReader(open(survey / "truth_stars.csv"))}
    reference = {int(r["GAIA_SOURCE_ID"]): [number(r.get(name.upper() + suffix)) for suffix in ("", "_ERR")
                                            for name in LABELS]
                 for r in csv.DictReader(open(survey / "reference_labels.csv")) if r["quality_flag"] == "good"}
    values = np.full((star.size, 2 * len(LABELS)), np.nan)
    for i, s in enumerate(star):
        values[i] = reference.get(gaia_of[int(s)], values[i])
    labels, errors = values[:, :len(LABELS)], values[:, len(LABELS):]
    known = np.isfinite(labels).all(axis=1)
    return labels, known, errors


def _all_labels(survey: Path, star: np.ndarray, source: str) -> np.ndarray:
    """(n, 15) float64: every label (``core.labels``) of each row's star, true or from the
    reference catalog's good rows (NaN where it has none)."""
    import csv

    if source == "truth":
        rows = {int(r["star"]): [float(r[name]) for name in ALL_LABELS] for r in csv.DictReader(open(survey / "truth_stars.csv"))}
        return np.array([rows[int(s)] for s in star], dtype=np.float64)
    gaia_of = {int(r["star"]): int(r["gaia_source_id"]) for r in csv.DictReader(open(survey / "truth_stars.csv"))}
    reference = {int(r["GAIA_SOURCE_ID"]): [float(r[name.upper()]) if r[name.upper()] else np.nan for name in ALL_LABELS]
                 for r in csv.DictReader(open(survey / "reference_labels.csv")) if r["quality_flag"] == "good"}
    missing = [np.nan] * len(ALL_LABELS)
    return np.array([reference.get(gaia_of[int(s)], missing) for s in star], dtype=np.float64)


def _against_peer(formal: np.ndarray, peer: np.ndarray, truth: np.ndarray, blue: np.ndarray, coadd: np.ndarray) -> None:
    """Print, per S/N bin (blue arm) and kind, the formal model's scatter against the truth (from
    the raw files) beside The Cannon's on the ideal arrays of the same spectra; goal: ratio <= 1."""
    from fidelity_bench import SNR_BINS

    print("SPCANet (raw files) against The Cannon (ideal arrays), scatter against the truth; goal: ratio <= 1")
    print("| S/N | kind | n | " + " | ".join(f"{name} SPCANet | Cannon | ratio" for name in LABELS) + " |")
    print("|---|---|---|" + "---|---|---|" * len(LABELS))
    for low, high in zip(SNR_BINS[:-1], SNR_BINS[1:], strict=True):
        for kind, of_kind in (("coadd", coadd), ("exposure", ~coadd)):
            members = of_kind & (blue >= low) & (blue < high)
            if members.sum() < 5:
                continue
            ours, theirs = np.std(formal[members] - truth[members], axis=0), np.std(peer[members] - truth[members], axis=0)
            print(f"| {_bin_name(low, high)} | {kind} | {members.sum()} | " + " | ".join(
                f"{ours[k]:.3g} | {theirs[k]:.3g} | {ours[k] / theirs[k]:.2f}" for k in range(len(LABELS))) + " |")


def _network_config(config_class, settings: list[str]):
    """The network of the three labels, with ``NAME=VALUE`` settings (JSON values) applied."""
    values = {"n_labels": len(LABELS)}
    for setting in settings:
        name, _, text = setting.partition("=")
        try:
            values[name] = json.loads(text)
        except json.JSONDecodeError:
            values[name] = text
    return config_class.from_mapping(values)


def _bin_name(low: float, high: float) -> str:
    return f"{low:.0f}-{high:.0f}" if np.isfinite(high) else f">={low:.0f}"


def _goals(formal: np.ndarray, alternate: np.ndarray | None, truth: np.ndarray, crb: np.ndarray, snr_arms: np.ndarray,
           coadd: np.ndarray) -> None:
    """Print the catalog's goals on the test set: sigma / median CRB per S/N bin and kind,
    coadds against exposures, and, with the alternate model's labels, the same for the mean
    of the two models and the Flag = 1 share at S/N >= 20 (both arms)."""
    from fidelity_bench import SNR_BINS

    from core.flags import CATALOG_FLAGS
    from core.rules import CatalogRules
    from inference.catalog_rules import catalog_flags

    blue = snr_arms[:, 0]
    edges = list(zip(SNR_BINS[:-1], SNR_BINS[1:], strict=True))
    tables = [("formal model", formal)]
    if alternate is not None:
        tables.append(("mean of the formal and alternate models (not what the catalog publishes)",
                       (formal + alternate) / 2))
    for title, values in tables:
        residual = values - truth
        print(f"\n{title} against the truth: scatter (std) / median Cramer-Rao bound per S/N bin (blue arm); "
              "goal <= 1.5")
        print("| S/N | kind | n | " + " | ".join(f"{name} sigma | CRB | ratio" for name in LABELS) + " |")
        print("|---|---|---|" + "---|---|---|" * len(LABELS))
        sigma_of = {}
        for low, high in edges:
            for kind, of_kind in (("coadd", coadd), ("exposure", ~coadd)):
                members = of_kind & (blue >= low) & (blue < high)
                if members.sum() < 5:
                    continue
                sigma = np.std(residual[members], axis=0)
                bound = np.median(crb[members], axis=0)
                sigma_of[(low, kind)] = sigma
                print(f"| {_bin_name(low, high)} | {kind} | {members.sum()} | " + " | ".join(
                    f"{sigma[k]:.3g} | {bound[k]:.3g} | {sigma[k] / bound[k]:.2f}" for k in range(len(LABELS))) + " |")
        pairs = [(low, sigma_of[(low, "coadd")] / sigma_of[(low, "exposure")]) for low, _ in edges
                 if (low, "coadd") in sigma_of and (low, "exposure") in sigma_of]
        print("coadds / exposures of the same S/N bin (goal <= 1): " + ("; ".join(
            f"S/N {low:.0f}+: " + " / ".join(f"{r:.2f}" for r in ratio) for low, ratio in pairs) or "no bin holds both"))
    if alternate is None:
        return
    flags = catalog_flags(formal, alternate, snr_arms[:, 0].astype(np.float64), snr_arms[:, 1].astype(np.float64),
                          np.zeros(len(formal), dtype=np.int64), CatalogRules())
    bright = snr_arms.min(axis=1) >= 20
    print("Flag = 1 (catalog rules, default thresholds), goal >= 90% at S/N >= 20: " + "; ".join(
        f"{kind} {100 * flags.flag[of_kind & bright].mean():.1f}% of {int((of_kind & bright).sum())}"
        for kind, of_kind in (("all", np.ones_like(coadd)), ("coadds", coadd), ("exposures", ~coadd))
        if (of_kind & bright).any()))
    print("Flag = 1 by S/N bin (weaker arm): " + "; ".join(
        f"{_bin_name(low, high)}: {100 * flags.flag[m].mean():.0f}% of {int(m.sum())}" for low, high in edges
        if (m := (snr_arms.min(axis=1) >= low) & (snr_arms.min(axis=1) < high)).any()))
    reasons = [f"{bit.name} {100 * np.mean((flags.bits[bright] & bit.mask) != 0):.1f}%" for bit in CATALOG_FLAGS
               if np.any((flags.bits[bright] & bit.mask) != 0)]
    print("  reasons at S/N >= 20 (share of those spectra): " + (", ".join(reasons) or "none"))
    for k, name in enumerate(LABELS):
        difference = np.abs(formal[:, k] - alternate[:, k])[bright]
        if difference.size:
            print(f"  |formal - alternate| {name} at S/N >= 20: median {np.median(difference):.3g}, "
                  f"90th percentile {np.percentile(difference, 90):.3g}")


if __name__ == "__main__":
    main()
