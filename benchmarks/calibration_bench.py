"""Uncertainty calibration per subgroup: z spread and share within 1 sigma per cell of
S/N bin x kind (coadd, exposure) x masked-fraction bin, on held-out spectra with known truth.

On a mock survey with truth (``make_mock_survey``; e.g. the harsh one of
``fidelity_bench.py``), read and preprocessed in memory (no database), split by star
as the training is (``split_two_models``, 6:2:1), SPCANet is trained on the formal
training set (Teff, log g, [Fe/H]; labels are the true ones), its noise model fitted on
the CV spectra twice, S/N only (``SnrNoiseModel``, artifacts before the context model) and
with the context (``ContextNoiseModel``: S/N, masked fraction, kind), and both are scored
on the test spectra. Goal: z spread 0.9-1.1 and 60-76% within 1 sigma
in every cell.

    .venv/bin/python benchmarks/calibration_bench.py --survey /tmp/fid/harsh400
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

LABELS = ("teff", "logg", "fe_h")


def _cell_table(title: str, cells: list[dict]) -> tuple[int, int]:
    """Print one row per cell; returns (cells meeting the goal for every label, cells)."""
    print(f"\n{title}")
    print("| S/N | kind | masked | n | " + " | ".join(f"{name} z spread | {name} <1 sigma" for name in LABELS) + " | goal |")
    print("|---|---|---|---|" + "---|---|" * len(LABELS) + "---|")
    met = 0
    for cell in cells:
        figures, ok = [], True
        for name in LABELS:
            z_std = cell["labels"][name]["z_std"]
            within = cell["labels"][name]["within_1sigma"]
            figures += [f"{z_std:.2f}", f"{100 * within:.0f}%"]
            ok &= 0.9 <= z_std <= 1.1 and 0.60 <= within <= 0.76
        met += ok
        print(f"| {cell['snr_bin']} | {cell['kind']} | {cell['masked_bin']} | {cell['n']} | " + " | ".join(figures)
              + f" | {'yes' if ok else 'no'} |")
    print(f"cells meeting the goal for all three labels: {met} of {len(cells)}")
    return met, len(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--survey", type=Path, required=True, help="Mock survey directory with truth_spectra.csv.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-snr", type=float, default=10.0)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--min-count", type=int, default=10, help="Cells with fewer test spectra are not shown.")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "spcanet_site.settings.base")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import fidelity_bench

    from inference.network.config import NetworkConfig, TrainingConfig
    from inference.network.estimator import SPCANet
    from inference.network.splits import TRAIN, split_two_models
    from inference.network.uncertainty import ContextNoiseModel, SnrNoiseModel, calibration_cells, masked_fraction

    data = fidelity_bench.load(args.survey, "catalog")
    snr = data["snr"].min(axis=1)
    good = data["processed"] & (snr >= args.min_snr)
    flux, ivar = data["flux"][good], data["ivar"][good]
    arrays = np.stack([flux, ivar], axis=1)  # [flux, ivar] as the shards hold them: the network fills masked pixels
    labels, snr, star = data["labels"][good], snr[good], data["star"][good]
    coadd = data["kind"][good] == "coadd"
    masked = masked_fraction(ivar)
    training = TrainingConfig(seed=args.seed, max_epochs=args.max_epochs, patience=args.patience)
    split = split_two_models(star.astype(np.int64), training.split_fractions, args.seed)
    train, test = split.formal == TRAIN, split.test
    cv = ~test & ~train
    print(f"spectra: {good.sum()} (S/N >= {args.min_snr:g}); train {train.sum()}, CV {cv.sum()}, test {test.sum()}; "
          f"masked fraction median: coadds {np.median(masked[coadd]):.3f}, exposures {np.median(masked[~coadd]):.3f}")
    estimator = SPCANet(NetworkConfig(n_labels=len(LABELS)), training, label_names=list(LABELS))
    started = time.perf_counter()
    estimator.fit(arrays[train], labels[train], cv_flux=arrays[cv], cv_labels=labels[cv])
    print(f"SPCANet trained in {time.perf_counter() - started:.0f} s ({estimator.history['epochs']} epochs)")
    cv_residuals = estimator.predict(arrays[cv]) - labels[cv]
    predicted = estimator.predict(arrays[test])
    models = {"S/N only (SnrNoiseModel)": SnrNoiseModel.fit(cv_residuals, snr[cv]),
              "context (ContextNoiseModel: S/N, masked fraction, kind)":
                  ContextNoiseModel.fit(cv_residuals, snr[cv], masked[cv], coadd[cv])}
    for title, model in models.items():
        sigma = (model.sigma(snr[test], masked[test], coadd[test]) if isinstance(model, ContextNoiseModel)
                 else model.sigma(snr[test]))
        cells = calibration_cells(predicted, labels[test], sigma, snr[test], masked[test], coadd[test], list(LABELS),
                                  min_count=args.min_count)
        _cell_table(f"{title}, test set", cells)
        z = (predicted - labels[test]) / sigma
        print("all test spectra: " + ", ".join(
            f"{name} z spread {np.std(z[:, k]):.2f}, {100 * np.mean(np.abs(z[:, k]) < 1):.0f}% < 1 sigma"
            for k, name in enumerate(LABELS)))
        if isinstance(model, ContextNoiseModel):
            print("coefficients (log factor per unit masked fraction, coadd vs exposure): " + ", ".join(
                f"{name} {c[1]:+.2f} / {c[2]:+.2f}" for name, c in zip(LABELS, model.coefficients, strict=True)))
    print("\ncommand: " + " ".join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
