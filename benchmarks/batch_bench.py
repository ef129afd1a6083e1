"""Prediction throughput by way of feeding the network and batch size, one process alone
and several side by side (prints figures).

The network (default architecture, with its masked-pixel fill, trained for one epoch on
random spectra: the throughput does not depend on the weights) predicts a chunk of
``--spectra`` random [flux, ivar] arrays, as a prediction chunk does, two ways:

- ``batch``: ``SPCANet.predict``, each batch's inputs filled just before its forward pass
  (``predict_on_batch``);
- ``chunk``: the whole chunk's inputs filled first, then Keras ``Model.predict`` over them
  (how ``SPCANet.predict`` worked before; kept here as the reference).

For each way and batch size, first one process alone, then ``--processes`` processes
started together (each waits for a common start time after its warm-up pass), each
predicting for ``--seconds``; every process has ``--threads`` TensorFlow threads (0: the
library's default, every core). Prints spectra/s per process, their sum, and the sum over
the one process alone.

    .venv/bin/python benchmarks/batch_bench.py                                   # 1 thread, 2 processes
    .venv/bin/python benchmarks/batch_bench.py --threads 0 --processes 1 --sizes 128,1024
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ways", default="batch,chunk", help="Ways of feeding the network: batch, chunk.")
    parser.add_argument("--sizes", default="128,1024", help="Batch sizes, spectra per forward pass.")
    parser.add_argument("--processes", type=int, default=2, help="Processes side by side.")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads per process; 0: the default.")
    parser.add_argument("--spectra", type=int, default=4096, help="Spectra per predict call (a chunk).")
    parser.add_argument("--seconds", type=float, default=25.0, help="Predicting time per process and size.")
    parser.add_argument("--model", type=Path, default=Path(tempfile.gettempdir()) / "spcanet-batch-bench",
                        help="Directory of the trained network's artifact (trained here when missing).")
    parser.add_argument("--worker", nargs=3, metavar=("WAY", "SIZE", "START"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args, args.worker[0], int(args.worker[1]), float(args.worker[2]))
        return
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if args.threads:
        env.update({variable: str(args.threads) for variable in THREAD_VARIABLES})
    if not (args.model / "model.json").exists():
        subprocess.run([sys.executable, __file__, "--model", str(args.model), "--worker", "train", "0", "0"], env=env,
                       check=True)
    print(f"{os.cpu_count()} CPUs; {args.threads or 'default'} TensorFlow thread(s) per process; chunks of "
          f"{args.spectra} spectra; {args.seconds:.0f} s per process and size; load average {os.getloadavg()[0]:.2f}")
    print(f"{'way':<6}{'batch':>6}{'1 process':>12}{f'{args.processes} processes, each':>34}{'sum':>9}{'sum / 1':>9}")
    for way in args.ways.split(","):
        for size in [int(s) for s in args.sizes.split(",")]:
            alone = sum(run_together(args, env, way, size, 1))
            together = run_together(args, env, way, size, args.processes) if args.processes > 1 else [alone]
            each = ", ".join(f"{rate:,.0f}" for rate in together)
            print(f"{way:<6}{size:>6}{alone:>12,.0f}{each:>34}{sum(together):>9,.0f}{sum(together) / alone:>9.2f}",
                  flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")


def run_together(args, env: dict, way: str, size: int, processes: int) -> list[float]:
    """spectra/s of each of ``processes`` processes predicting side by side, fed ``way`` in batches of ``size``."""
    start = time.time() + 20  # after every process has imported TensorFlow and warmed up
    children = [subprocess.Popen([sys.executable, __file__, "--model", str(args.model), "--spectra", str(args.spectra),
                                  "--seconds", str(args.seconds), "--worker", way, str(size), str(start)],
                                 env=env, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    rates = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode:
            raise RuntimeError(f"a benchmark process failed with {child.returncode}")
        rates.append(float(out.strip().splitlines()[-1]))
    return rates


def worker(args, way: str, size: int, start: float) -> None:
    """In a child process: train and save the network (``train``), or time its predictions."""
    sys.path.insert(0, str(ROOT))
    import json

    import numpy as np

    from core.labels import LABEL_FIELDS
    from inference.network.artifact import artifact_read, artifact_write
    from inference.network.config import NetworkConfig, TrainingConfig
    from inference.network.estimator import SPCANet

    rng = np.random.default_rng(0)
    if way == "train":
        arrays = np.ones((96, 2, 2, 4000), dtype=np.float32)
        arrays[:, 0] += rng.normal(0, 0.02, size=(96, 2, 4000)).astype(np.float32)
        arrays[:, 1] = 400.0
        labels = np.column_stack([rng.normal(5000, 400, 96), rng.normal(3, 1, 96), rng.normal(-0.2, 0.2, (96, 13))])
        net = SPCANet(NetworkConfig(), TrainingConfig(max_epochs=1, seed=0), LABEL_FIELDS)
        net.fit(arrays[:64], labels[:64], cv_flux=arrays[64:], cv_labels=labels[64:])
        (args.model / "model.json").parent.mkdir(parents=True, exist_ok=True)
        relative, sha256 = artifact_write(args.model, net.to_artifact(preprocessing_version="bench"))
        (args.model / "model.json").write_text(json.dumps([relative, sha256]))
        print(f"trained the network (default architecture, one epoch on random spectra): {args.model}", flush=True)
        return
    relative, sha256 = json.loads((args.model / "model.json").read_text())
    net = SPCANet.from_artifact(artifact_read(args.model / relative, expected_sha256=sha256,
                                              preprocessing_version="bench"))
    arrays = np.ones((args.spectra, 2, 2, 4000), dtype=np.float32)
    arrays[:, 0] += rng.normal(0, 0.02, size=(args.spectra, 2, 4000)).astype(np.float32)
    arrays[:, 1] = 400.0
    if way == "batch":
        def predict(chunk):
            return net.predict(chunk, batch_size=size)
    elif way == "chunk":
        model = net._require_model()

        def predict(chunk):
            return model.predict(net._inputs(chunk), batch_size=size, verbose=0)
    else:
        raise SystemExit(f"unknown way {way!r}: batch or chunk")
    predict(arrays[: size + 1])  # traces the full and the partial batch
    while time.time() < start:
        time.sleep(0.01)
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < args.seconds:
        predict(arrays)
        done += args.spectra
    print(done / (time.perf_counter() - started))


if __name__ == "__main__":
    main()
