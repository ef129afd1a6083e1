"""Cost of the network's masked-pixel fill and outlier rejection (prints figures).

The network fills masked pixels and pixels more than 5 sigma off a 20-component PCA model
of the training spectra before it reads them (``inference/network/inputs.py``). This
script measures what that costs in prediction throughput, on the preprocessed arrays of
a harsh mock survey (``make_mock_survey --harsh``; default ``/tmp/fid/harsh400``, the
fidelity benchmark's), tiled to ``--spectra`` rows of (n, 2, 2, 4000) [flux, ivar]:

1. the fill alone: ``fill_masked`` (compiled; on one thread and on numba's threads) and
   ``fill_masked_reference`` (plain numpy, what the network used before the kernel),
   spectra/s, the largest difference and the pixels that differ by more than float32
   rounding (a pixel on the rejection threshold);
2. ``SPCANet.predict`` (default network, trained for one epoch on 512 of the spectra: the
   throughput does not depend on the weights) with its fill basis and without it (the
   same arrays; without a basis the ivar is ignored and masked pixels stay flux 1),
   alternating with / without / without / with in each round, spectra/s per round and the
   per-round ratio, its median the figure to quote; beside it the ratio of CPU seconds
   (less sensitive to other processes on a shared machine).

The preprocessed arrays and the trained model are kept in ``--cache`` and reused.
``--only with|without`` runs one side alone (``--rounds`` predictions), for timing whole
processes against each other.

    .venv/bin/python benchmarks/fill_bench.py                      # harsh 400-star mock, 4096 spectra
    .venv/bin/python benchmarks/fill_bench.py --survey /tmp/mock-harsh --spectra 8192 --rounds 7
"""

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LABELS = ("teff", "logg", "fe_h", "c_h", "n_h", "o_h", "mg_h", "al_h", "si_h", "s_h", "ca_h", "ti_h", "cr_h", "ni_h", "cu_h")


def load_arrays(survey: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2, 2, 4000) float32 preprocessed [flux, ivar] of the survey's spectra and (n, 15) true labels,
    preprocessed as the ingest does (a coadd with its file's exposures); cached per preprocessing version."""
    from spectra.processing.pipeline import PREPROCESSING_VERSION

    target = cache / f"arrays-{PREPROCESSING_VERSION}.npz"
    if target.exists():
        saved = np.load(target)
        return saved["arrays"], saved["labels"]
    from spectra.io import read_spectrum_file
    from spectra.processing.pipeline import preprocess

    stars = {int(r["star"]): r for r in csv.DictReader(open(survey / "truth_stars.csv"))}
    truth = {(r["file"], r["kind"], int(r["lmjm"] or 0)): int(r["star"]) for r in csv.DictReader(open(survey / "truth_spectra.csv"))}
    catalog = {(int(r["obsid"]), int(r["lmjm"] or 0)): (float(r["rv_blue"]), float(r["rv_red"]))
               for r in csv.DictReader(open(survey / "rv_catalog.csv"))}
    spectra, rv, labels, files = [], [], [], []
    for index, path in enumerate(sorted((survey / "fits").rglob("*.fits*"))):
        sf = read_spectrum_file(path)
        name = path.relative_to(survey).as_posix()
        for spectrum in sf.spectra:
            spectra.append(spectrum)
            rv.append(catalog[(sf.obsid, int(spectrum.lmjm or 0))])
            star = stars[truth[(name, spectrum.kind, int(spectrum.lmjm or 0))]]
            labels.append([float(star[label]) for label in LABELS])
            files.append(index)
    result = preprocess(spectra, rv_supplied=np.array(rv), files=np.array(files, dtype=np.int64))
    keep = result.processed
    arrays = np.stack([result.flux[keep], result.ivar[keep]], axis=1)
    labels = np.array(labels)[keep]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(target, arrays=arrays, labels=labels)
    return arrays, labels


def load_model(arrays: np.ndarray, labels: np.ndarray, cache: Path):
    from inference.network.artifact import artifact_read, artifact_write
    from inference.network.config import NetworkConfig, TrainingConfig
    from inference.network.estimator import SPCANet
    from spectra.processing.pipeline import PREPROCESSING_VERSION

    pointer = cache / "model.txt"
    if pointer.exists():
        relative, sha256 = pointer.read_text().split()
        return SPCANet.from_artifact(artifact_read(cache / relative, expected_sha256=sha256,
                                                   preprocessing_version=PREPROCESSING_VERSION))
    rng = np.random.default_rng(3)
    rows = rng.permutation(arrays.shape[0])
    train, cv = rows[:512], rows[512:640]
    net = SPCANet(NetworkConfig(), TrainingConfig(max_epochs=1, seed=3), list(LABELS))
    started = time.perf_counter()
    net.fit(arrays[train], labels[train], cv_flux=arrays[cv], cv_labels=labels[cv])
    print(f"model: trained 1 epoch on {train.size} spectra in {time.perf_counter() - started:.0f} s "
          f"(fill basis {net.history['fill']['seconds']:.1f} s)")
    relative, sha256 = artifact_write(cache, net.to_artifact(preprocessing_version=PREPROCESSING_VERSION))
    pointer.write_text(f"{relative} {sha256}\n")
    return net


def load_average() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def fill_alone(arrays: np.ndarray, basis, rounds: int) -> None:
    import inference.network.inputs as inputs

    flux, ivar = arrays[:, 0], arrays[:, 1]
    n = arrays.shape[0]
    default = inputs.PARALLEL
    seconds: dict[str, list[float]] = {"compiled, one thread": [], "compiled, numba threads": [], "plain numpy": []}
    for parallel in (False, True):  # compiled (or read from numba's cache) before timing
        inputs.PARALLEL = parallel
        inputs.fill_masked(flux[:256], ivar[:256], basis)
    for r in range(rounds):
        names = list(seconds) if r % 2 == 0 else list(seconds)[::-1]
        for name in names:
            inputs.PARALLEL = name == "compiled, numba threads"
            started = time.perf_counter()
            if name == "plain numpy":
                slow = inputs.fill_masked_reference(flux, ivar, basis)
            else:
                fast = inputs.fill_masked(flux, ivar, basis)
            seconds[name].append(time.perf_counter() - started)
    inputs.PARALLEL = default
    figures = "; ".join(f"{name} {n / np.median(values):.0f} spectra/s ({np.median(values):.2f} s)" for name, values in seconds.items())
    difference = np.abs(fast - slow)
    print(f"fill alone, {n} spectra, median of {rounds}: {figures}; largest difference from plain numpy "
          f"{np.max(difference):.1e}, pixels off by more than 1e-4 {np.count_nonzero(difference > 1e-4)} "
          f"of {difference.size} ({load_average()})")


def predict_ab(net, arrays: np.ndarray, rounds: int) -> None:
    basis = net.fill_basis
    n = arrays.shape[0]

    def timed(with_fill: bool) -> tuple[float, float]:
        net.fill_basis = basis if with_fill else None
        started, cpu = time.perf_counter(), time.process_time()
        net.predict(arrays)
        return time.perf_counter() - started, time.process_time() - cpu

    timed(True), timed(False)  # warm-up: graph tracing, numba
    ratios, cpu_ratios, with_rates, without_rates = [], [], [], []
    for r in range(rounds):
        order = (True, False, False, True) if r % 2 == 0 else (False, True, True, False)
        wall, cpu = {True: 0.0, False: 0.0}, {True: 0.0, False: 0.0}
        for with_fill in order:
            seconds, cpu_seconds = timed(with_fill)
            wall[with_fill] += seconds / 2
            cpu[with_fill] += cpu_seconds / 2
        with_rates.append(n / wall[True])
        without_rates.append(n / wall[False])
        ratios.append(with_rates[-1] / without_rates[-1])
        cpu_ratios.append(cpu[False] / cpu[True])
        print(f"  round {r + 1}: with the fill {with_rates[-1]:.0f} spectra/s, without {without_rates[-1]:.0f}; "
              f"ratio {ratios[-1]:.3f}; CPU seconds without / with {cpu_ratios[-1]:.3f} ({load_average()})")
    net.fill_basis = basis
    print(f"SPCANet.predict, {n} spectra, median of {rounds} rounds: with the fill {np.median(with_rates):.0f} spectra/s, "
          f"without {np.median(without_rates):.0f}; throughput ratio {np.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}; goal >= 0.90); CPU seconds without / with "
          f"{np.median(cpu_ratios):.3f} ({load_average()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--survey", type=Path, default=Path("/tmp/fid/harsh400"), help="Harsh mock survey directory.")
    parser.add_argument("--cache", type=Path, default=None, help="Arrays and model (default SURVEY/../<name>-fill-bench).")
    parser.add_argument("--spectra", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=("with", "without"), default=None,
                        help="Only predict, with or without the fill, --rounds times (no A/B, no fill-alone figures).")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cache = args.cache or args.survey.parent / f"{args.survey.name}-fill-bench"
    arrays, labels = load_arrays(args.survey, cache)
    net = load_model(arrays, labels, cache)
    tiled = np.ascontiguousarray(arrays[np.arange(args.spectra) % arrays.shape[0]])
    masked = np.mean(tiled[:, 1] <= 0)
    if args.only:
        if args.only == "without":
            net.fill_basis = None
        for _ in range(args.rounds):
            net.predict(tiled)
        return
    print(f"arrays: {tiled.shape} from {arrays.shape[0]} preprocessed spectra of {args.survey}; "
          f"masked pixels {100 * masked:.1f}%; basis {net.fill_basis.n_components} components, "
          f"{net.fill_basis.outlier_sigma:g} sigma")
    fill_alone(tiled, net.fill_basis, args.rounds)
    predict_ab(net, tiled, args.rounds)
    print("\ncommand: " + " ".join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
