"""Cost of index-set splits: one loader epoch over a random train split (an index set, 1 - val_fraction of the
file) against the chronological train split of the same size (a range), interleaved, median MB/s of repeats and
their ratio; plus the time to select a random and a stratified split and to order an epoch of each kind.

Run serially (`python bench/splits.py`) or under `mpiexec.mpich -n 2 .venv/bin/python bench/splits.py`."""
import os

from machine import drop_blas_pins   # bench/machine.py: what the benches share

drop_blas_pins()       # BLAS as a user gets it (before numpy loads)

import argparse   # noqa: E402
import statistics   # noqa: E402
import tempfile   # noqa: E402
import time   # noqa: E402

import h5py   # noqa: E402
import numpy as np   # noqa: E402

from hpcrnn import comm as mpi   # noqa: E402
from hpcrnn.data.loader import BatchLoader   # noqa: E402
from hpcrnn.data.parallel import chunk_rows   # noqa: E402
from hpcrnn.data.schema import open_dataset   # noqa: E402
from hpcrnn.data.shard import epoch_order   # noqa: E402
from hpcrnn.data.splits import Split, random_split, stratified_split   # noqa: E402


def make_file(path, samples, length, features):
    """A windows file of random float32 inputs and one target, chunked as hpcrnn writes files."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as handle:
        handle.attrs["hpcrnn_schema"] = np.int64(1)
        rows = chunk_rows(length * features * 4, samples)
        inputs = handle.create_dataset("inputs", (samples, length, features), "f4", chunks=(rows, length, features))
        handle.create_dataset("targets", data=rng.standard_normal((samples, 1), dtype=np.float32))
        for first in range(0, samples, rows):
            count = min(rows, samples - first)
            inputs[first:first + count] = rng.standard_normal((count, length, features), dtype=np.float32)


def aggregate(comm, seconds, nbytes):
    """MB/s of every rank's bytes over the slowest rank's time."""
    nbytes = comm.allreduce(nbytes) if comm.size > 1 else nbytes
    return nbytes / mpi.max_value(comm, seconds) / 1e6


def epoch_rate(info, split, comm, args, epoch, reads):
    loader = BatchLoader(info, split, args.batch, comm=comm, seed=0, buffer_mb=args.buffer_mb, reads=reads)
    start, total = time.perf_counter(), 0
    for item in loader.epoch(epoch):
        total += item.x.nbytes + item.y.nbytes
    seconds = time.perf_counter() - start
    loader.close()
    return aggregate(comm, seconds, total)


def selection_times(n, repeats):
    """Median seconds of random_split, stratified_split (10 classes) and one epoch_order of each split kind."""
    labels = np.random.default_rng(0).integers(0, 10, n)
    chosen = random_split(n, 0.1, 0)["train"]
    cases = {"random_split": lambda: random_split(n, 0.1, 0),
             "stratified_split": lambda: stratified_split(labels, 0.1, 0),
             "epoch_order, range": lambda: epoch_order(Split(0, len(chosen)), 0, 0, 4096, 1 << 16, batch=256),
             "epoch_order, index set": lambda: epoch_order(chosen, 0, 0, 4096, 1 << 16, batch=256)}
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, case in cases.items():
            start = time.perf_counter()
            case()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=40000)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--buffer-mb", type=float, default=64.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--select-samples", type=int, default=10_000_000)
    args = parser.parse_args()
    comm = mpi.world()
    folder = tempfile.mkdtemp(prefix="hpcrnn-bench-") if comm.rank == 0 else None
    path = os.path.join(folder, "bench.h5") if comm.rank == 0 else None
    if comm.rank == 0:
        make_file(path, args.samples, args.length, args.features)
    path = mpi.bcast_object(comm, path)
    info = open_dataset(path, comm=comm, check_finite=False)
    chosen = random_split(info.num_samples, 0.1, 0)["train"]
    cases = {f"{kind}, {reads}": (split, reads) for reads in ("auto", "independent")
             for kind, split in (("range", Split(0, len(chosen))), ("random index set", chosen))}
    rates = {name: [] for name in cases}
    for repeat in range(args.repeats + 1):                     # the first round warms the page cache
        for name, (split, reads) in cases.items():
            rate = epoch_rate(info, split, comm, args, repeat, reads)
            if repeat:
                rates[name].append(rate)
    if comm.rank == 0:
        print(f"{args.samples} x {args.length} x {args.features} float32, train {len(chosen)} samples, batch "
              f"{args.batch}, buffer {args.buffer_mb} MiB, {comm.size} rank(s), medians of {args.repeats}")
        for reads in ("auto", "independent"):
            base = statistics.median(rates[f"range, {reads}"])
            other = statistics.median(rates[f"random index set, {reads}"])
            print(f"reads={reads:12s} range {base:8.1f} MB/s   random index set {other:8.1f} MB/s   "
                  f"ratio {other / base:.2f}")
        for name, seconds in selection_times(args.select_samples, args.repeats).items():
            print(f"{name:24s} n={args.select_samples}: {seconds * 1e3:8.1f} ms")
        os.remove(path)
        os.rmdir(folder)


if __name__ == "__main__":
    main()
