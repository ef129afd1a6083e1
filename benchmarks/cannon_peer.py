"""The Cannon (quadratic model) on saved arrays: train, then label the test spectra.

Runs inside .venv-cannon (numpy < 2; see cannon_env.sh), so it imports nothing from the
project. Input: an .npz with train_flux, train_ivar, train_labels, test_flux, test_ivar,
label_names. Output: an .npz with test_labels and timings.
    .venv-cannon/bin/python benchmarks/cannon_peer.py IN.npz OUT.npz [--threads N]
"""

import argparse
import time

import numpy as np
import thecannon as tc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("inputs")
    parser.add_argument("outputs")
    parser.add_argument("--threads", type=int, default=2, help="Processes for training.")
    args = parser.parse_args()
    data = np.load(args.inputs)
    names = [str(name) for name in data["label_names"]]
    vectorizer = tc.vectorizer.PolynomialVectorizer(names, 2)
    model = tc.CannonModel(data["train_labels"], data["train_flux"], data["train_ivar"], vectorizer)
    started = time.perf_counter()
    model.train(threads=args.threads)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    # One process for the test step: annieslasso 0.2.96 cannot unpickle its vectorizer in
    # pool workers under Python 3.11 (UnboundLocalError in BaseVectorizer.__setstate__).
    labels, _, _ = model.test(data["test_flux"], data["test_ivar"], threads=1)
    test_seconds = time.perf_counter() - started
    np.savez(args.outputs, test_labels=np.asarray(labels, dtype=np.float64),
             train_seconds=train_seconds, test_seconds=test_seconds)
    print(f"The Cannon: trained on {data['train_flux'].shape[0]} spectra in {train_seconds:.0f} s, "
          f"labelled {data['test_flux'].shape[0]} in {test_seconds:.0f} s")


if __name__ == "__main__":
    main()
