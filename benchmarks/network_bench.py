"""SPCANet benchmark: precision per label in S/N bins against The Cannon and the paper,
training time, prediction throughput, uncertainty calibration.

On a mock survey (``make_mock_survey``, at least 20,000 spectra) ingested into its own
PostgreSQL database (default ``postgres:///spcanet_bench_network``):

1. ingest the survey and import its APOGEE-Payne-like reference labels (skipped when done);
2. train the formal and alternate models (``--prefix``; reused when they exist);
3. The Cannon (annieslasso 0.2.96, quadratic in the 15 labels) on the formal model's
   training spectra and the same test spectra, same normalised arrays, in its own
   environment (``benchmarks/cannon_env.sh``) as a subprocess; its labels are kept in
   VAR_DIR/cannon under the digest of its input arrays, and reused while those are unchanged;
4. precision (standard deviation of prediction - reference) per label in S/N bins on the
   test set: SPCANet formal, alternate, The Cannon, and the paper's overall figures;
5. prediction throughput of both models together: in memory, and end to end (arrays from
   the shards, LabelSets written to PostgreSQL);
6. the uncertainty calibration: spread of (prediction - reference) / uncertainty.

    bash benchmarks/cannon_env.sh
    .venv/bin/python benchmarks/network_bench.py --survey /tmp/mock20k --stars 2000
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# Paper Sec. 5 / SCIENCE.md: test-set precision at S/N > 10.
PAPER_PRECISION = {
    "teff": 118.7, "logg": 0.1657, "fe_h": 0.0624, "c_h": 0.0885, "n_h": 0.1239, "o_h": 0.1174, "mg_h": 0.0669,
    "al_h": 0.0888, "si_h": 0.0686, "s_h": 0.1060, "ca_h": 0.0687, "ti_h": 0.1250, "cr_h": 0.1141, "ni_h": 0.0828,
    "cu_h": 0.1910,
}


def run_cannon(train_flux: np.ndarray, train_ivar: np.ndarray, train_labels: np.ndarray, test_flux: np.ndarray,
               test_ivar: np.ndarray, label_names, cache: Path) -> np.ndarray:
    """The Cannon (annieslasso, quadratic in ``label_names``) trained on (n, 2, 4000) normalised
    arrays with their labels (every label finite), then the test step on the test arrays.

    Runs ``cannon_peer.py`` in ``.venv-cannon`` (``benchmarks/cannon_env.sh``; numpy < 2). The
    Cannon is deterministic and takes minutes to tens of minutes: its labels are kept in ``cache``
    under the digest of its inputs and of its driver, so a rerun on byte-identical arrays
    reuses them. Returns (n_test, n_labels) float64.
    """
    cannon = ROOT / ".venv-cannon" / "bin" / "python"
    if not cannon.exists():
        raise SystemExit("The Cannon's environment is missing: run bash benchmarks/cannon_env.sh")
    pixels = int(np.prod(train_flux.shape[1:]))
    with tempfile.TemporaryDirectory() as scratch:
        inputs, outputs = Path(scratch) / "in.npz", Path(scratch) / "out.npz"
        np.savez(inputs, train_flux=train_flux.reshape(-1, pixels).astype(np.float64),
                 train_ivar=train_ivar.reshape(-1, pixels).astype(np.float64),
                 train_labels=np.asarray(train_labels, dtype=np.float64),
                 test_flux=test_flux.reshape(-1, pixels).astype(np.float64),
                 test_ivar=test_ivar.reshape(-1, pixels).astype(np.float64), label_names=np.array(list(label_names)))
        digest = hashlib.sha256((ROOT / "benchmarks" / "cannon_peer.py").read_bytes())
        with np.load(inputs) as saved:  # the arrays, not the file: a zip member carries its time of writing
            for key in sorted(saved.files):
                digest.update(key.encode() + np.ascontiguousarray(saved[key]).tobytes())
        kept = cache / f"{digest.hexdigest()[:32]}.npz"
        if kept.exists():
            print(f"The Cannon: labels reused from {kept} (same inputs)")
        else:
            subprocess.run([str(cannon), str(ROOT / "benchmarks" / "cannon_peer.py"), str(inputs), str(outputs)],
                           check=True)
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(outputs, kept)
    return np.load(kept)["test_labels"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--survey", type=Path, required=True, help="Mock survey directory (generated if missing).")
    parser.add_argument("--stars", type=int, default=2000, help="Stars of a generated survey (~10 spectra each).")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--database", default="postgres:///spcanet_bench_network")
    parser.add_argument("--var-dir", type=Path, default=None, help="Arrays and models (default SURVEY/../var).")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--reference", default="mock-reference", help="Name of the imported reference catalog.")
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--skip-cannon", action="store_true")
    parser.add_argument("--throughput-spectra", type=int, default=10_000)
    args = parser.parse_args()

    var_dir = args.var_dir or args.survey.parent / f"{args.survey.name}-var"
    os.environ["SPCANET_VAR_DIR"] = str(var_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from catalog_bench import ensure_database, setup_django

    ensure_database(args.database)
    setup_django(args.database)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from inference.models import ModelVersion, ReferenceCatalog
    from spectra.models import Spectrum

    if not (args.survey / "manifest.json").exists():
        started = time.perf_counter()
        call_command("make_mock_survey", str(args.survey), stars=args.stars, seed=args.seed)
        print(f"mock survey generated in {time.perf_counter() - started:.0f} s")
    if not Spectrum.objects.exists():
        started = time.perf_counter()
        call_command("ingest_spectra", str(args.survey / "fits"), rv_catalog=str(args.survey / "rv_catalog.csv"),
                     no_rv_measurement=True)
        print(f"ingested in {time.perf_counter() - started:.0f} s")
    if not ReferenceCatalog.objects.filter(name=args.reference).exists():
        call_command("import_reference_labels", str(args.survey / "reference_labels.csv"), name=args.reference)
    total = Spectrum.objects.count()
    print(f"survey: {total} spectra, {Spectrum.objects.filter(status='preprocessed').count()} preprocessed")

    names = (f"{args.prefix}-formal", f"{args.prefix}-alternate")
    if not ModelVersion.objects.filter(name__in=names).count() == 2:
        call_command("train_models", reference=args.reference, prefix=args.prefix, max_epochs=args.max_epochs,
                     patience=args.patience)
    formal, alternate = (ModelVersion.objects.get(name=name) for name in names)
    report(args, formal, alternate, var_dir)


def report(args, formal, alternate, var_dir: Path) -> None:
    from django.conf import settings

    from core.labels import LABEL_FIELDS, LABELS
    from inference.models import LabelSet, ReferenceCatalog
    from inference.network.config import TrainingConfig
    from inference.network.evaluation import accuracy_precision
    from inference.network.splits import TRAIN, split_two_models
    from inference.selectors import training_set_select
    from inference.services.prediction import labelsets_predict, model_load
    from spectra.array_store import ArrayStore

    training = TrainingConfig.from_mapping(formal.config["training"])
    data = training_set_select(catalog=ReferenceCatalog.objects.get(name=args.reference))
    groups = data.star_ids if training.split_by == "star" else np.arange(len(data), dtype=np.int64)
    split = split_two_models(groups, training.split_fractions, training.seed)
    arrays = ArrayStore(settings.SPECTRA_ARRAY_ROOT).read_many(data.shards, data.rows)
    flux, ivar = arrays[:, 0], arrays[:, 1]
    test = split.test
    print(f"\ntraining set {len(data)} spectra; test set {int(test.sum())} spectra "
          f"of {np.unique(data.star_ids[test]).size} stars (split by {training.split_by})")

    results = {}
    for version in (formal, alternate):
        network = model_load(version)
        results[version.name] = network.predict(arrays[test])  # [flux, ivar]: the model fills masked pixels
        epochs = version.metrics["training"]
        print(f"{version.name}: {epochs['epochs']} epochs (best {epochs['best_epoch']}), "
              f"training {epochs['seconds']:.0f} s on {epochs['n_train']} spectra")

    if not args.skip_cannon:
        train = (split.formal == TRAIN) & np.all(np.isfinite(data.labels), axis=1)  # The Cannon needs every label
        results["The Cannon"] = run_cannon(flux[train], ivar[train], data.labels[train], flux[test], ivar[test],
                                           LABEL_FIELDS, var_dir / "cannon")

    snr = data.snr[test]
    truth = data.labels[test]
    edges = (10.0, 20.0, 30.0, 50.0, float("inf"))
    evaluated = {name: accuracy_precision(values, truth, snr, LABEL_FIELDS, edges) for name, values in results.items()}
    bins = ["10-20", "20-30", "30-50", ">50", "all"]
    counts = [evaluated[formal.name]["by_snr"]["teff"][b]["n"] for b in range(4)] + [int(np.sum(snr > 10))]
    print("\nPrecision (standard deviation of prediction - reference) on the test set, by S/N of the weaker arm")
    print("spectra per bin: " + ", ".join(f"{b} {n}" for b, n in zip(bins, counts, strict=True)))
    header = f"{'label':<7}{'model':<18}" + "".join(f"{b:>9}" for b in bins) + f"{'paper':>9}"
    print(header)
    for label in LABELS:
        for name, result in evaluated.items():
            row = [result["by_snr"][label.field][b]["std"] for b in range(4)] + [result["overall"][label.field]["std"]]
            cells = "".join(f"{v:>9.4g}" if v is not None else f"{'-':>9}" for v in row)
            paper = f"{PAPER_PRECISION[label.field]:>9.4g}" if name == formal.name else ""
            print(f"{label.column:<7}{name:<18}{cells}{paper}")
    print("\nAccuracy (mean of prediction - reference) at S/N 10-30, formal model:")
    low = (snr > 10) & (snr <= 30)
    bias = np.nanmean(results[formal.name][low] - truth[low], axis=0)
    print("  " + ", ".join(f"{label.column} {b:+.4g}" for label, b in zip(LABELS, bias, strict=True)))

    print("\nUncertainty calibration on the test set (z = (prediction - reference) / uncertainty):")
    for version in (formal, alternate):
        calibration = version.metrics["calibration"]
        print(f"  {version.name}: " + ", ".join(
            f"{label.column} {calibration[label.field]['z_std']:.2f}/{calibration[label.field]['within_1sigma']:.2f}"
            for label in LABELS) + "   (z spread / share within 1 sigma; ideal 1.00/0.68)")

    # Throughput: both models, in memory (tiled test spectra), then end to end.
    n = args.throughput_spectra
    tiled = np.resize(arrays[test], (n, 2, 2, 4000))
    tiled_snr = np.resize(snr, n)
    networks = [model_load(formal), model_load(alternate)]
    for network in networks:
        network.predict_with_uncertainty(tiled[:1024], tiled_snr[:1024])  # compile
    started = time.perf_counter()
    for network in networks:
        network.predict_with_uncertainty(tiled, tiled_snr)
    seconds = time.perf_counter() - started
    print(f"\nprediction, both models, in memory: {n / seconds:,.0f} spectra/s ({n} spectra, "
          f"{os.cpu_count()} CPU cores visible)")
    LabelSet.objects.filter(model_version__in=[formal, alternate]).delete()
    started = time.perf_counter()
    done = labelsets_predict(model_versions=[formal, alternate])
    seconds = time.perf_counter() - started
    print(f"prediction, both models, end to end (shards -> LabelSets in PostgreSQL): {done / seconds:,.0f} spectra/s "
          f"({done} spectra)")


if __name__ == "__main__":
    main()
