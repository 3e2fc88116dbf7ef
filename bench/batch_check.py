"""Cost of the check of each batch (hpcrnn/data/batch_check.py, files without a stamp) against the training
step's forward+backward on the same batch: medians of interleaved repeats and their ratio.

Run:  .venv/bin/python bench/batch_check.py [--batch 128 --length 64 --features 16 --hidden 64 --cell gated]
(--batch is one rank's share: 128 = the default global batch 256 on 2 ranks)."""
import argparse
import os

from machine import drop_blas_pins   # bench/machine.py: what the benches share
import statistics
import time

drop_blas_pins()
for _name in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np

from hpcrnn.data.batch_check import first_problem
from hpcrnn.data.schema import DatasetInfo
from hpcrnn.model import Model


def median_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--cell", default="gated")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.length, args.features), dtype=np.float32)
    y = rng.standard_normal((args.batch, 1), dtype=np.float32)
    indices = np.arange(args.batch, dtype=np.int64)
    info = DatasetInfo(path="bench.h5", form="windows", num_samples=args.batch, seq_len=args.length,
                       num_features=args.features, output_size=1, task="regression", head="last")
    model = Model(cell=args.cell, input_size=args.features, hidden_size=args.hidden, num_layers=1, output_size=1)
    grad = np.zeros(model.num_params, dtype=np.float32)
    check = lambda: first_problem(info, x, y, None, indices)
    step = lambda: model.forward_backward(x, y, grad)
    assert check() is None
    step()                                                    # compile
    checks, steps = [], []
    for _ in range(args.rounds):                              # interleaved
        checks.append(median_seconds(check, 50))
        steps.append(median_seconds(step, 5))
    c, s = statistics.median(checks), statistics.median(steps)
    print(f"batch [{args.batch},{args.length},{args.features}] float32, {args.cell} hidden {args.hidden}: "
          f"check {c * 1e6:.0f} us, forward+backward {s * 1e3:.2f} ms, check / step = {100 * c / s:.2f}% "
          f"(medians of {args.rounds} interleaved rounds)")


if __name__ == "__main__":
    main()
