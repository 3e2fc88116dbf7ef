"""Loader throughput against a plain h5py read of the same bytes: median MB/s of repeats, side by side.
Two baselines: "raw h5py" reads each rank's contiguous block in large slices (the target: loader >= 80% of
it); "raw h5py, shuffled" reads the loader's own shuffled batches with h5py fancy indexing, as a user would.
Every loader case hands out each batch in the loader's reused batch buffers, as training gets them ("hdf5
reads": the independent HDF5 read path that files without direct reads, e.g. compressed ones, use).

Run serially (`python bench/io.py`) or under `mpiexec.mpich -n 2 .venv/bin/python bench/io.py`; rates are
aggregate over ranks (bytes of every rank / slowest rank's time). The file is written once by rank 0."""
import argparse
import os
import statistics
import tempfile
import time

import h5py
import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.data.loader import BatchLoader
from hpcrnn.data.parallel import chunk_rows
from hpcrnn.data.schema import open_dataset
from hpcrnn.data.shard import blockdist


def make_file(path, samples, length, features):
    with h5py.File(path, "w") as handle:
        handle.attrs["hpcrnn_schema"] = np.int64(1)
        rows = chunk_rows(length * features * 4, samples)
        inputs = handle.create_dataset("inputs", (samples, length, features), "f4", chunks=(rows, length, features))
        targets = handle.create_dataset("targets", (samples, 1), "f4", chunks=(chunk_rows(4, samples), 1))
        rng = np.random.default_rng(0)
        for first in range(0, samples, rows):
            count = min(rows, samples - first)
            inputs[first:first + count] = rng.standard_normal((count, length, features), dtype=np.float32)
            targets[first:first + count] = rng.standard_normal((count, 1), dtype=np.float32)


def raw_read(path, comm, buffer_mb):
    """Seconds and bytes for this rank reading its contiguous block of every dataset in buffer-sized slices."""
    size, rank = comm.size, comm.rank
    start_time, total = time.perf_counter(), 0
    with h5py.File(path, "r") as handle:
        for name in ("inputs", "targets"):
            dset = handle[name]
            count, start = blockdist(dset.shape[0], size, rank)
            row = dset.dtype.itemsize * int(np.prod(dset.shape[1:]))
            step = max(1, int(buffer_mb * 2**20 / 2) // row)
            for first in range(start, start + count, step):
                total += dset[first:min(first + step, start + count)].nbytes
    return time.perf_counter() - start_time, total


def raw_shuffled_read(path, comm, buffer_mb, batch, epoch):
    """What a user would write with plain h5py for the same shuffled batches: per global batch, this rank's
    samples (the loader's order and shares) read with h5py fancy indexing (sorted indices)."""
    from hpcrnn.data.loader import rank_positions
    info = open_dataset(path, mpi.self_comm(), check_finite=False)
    loader = BatchLoader(info, (0, info.num_samples), batch, comm=comm, seed=0, buffer_mb=buffer_mb, prefetch=False)
    order = loader.order(epoch)
    loader.close()
    size, rank = comm.size, comm.rank
    start_time, total = time.perf_counter(), 0
    with h5py.File(path, "r") as handle:
        inputs, targets = handle["inputs"], handle["targets"]
        for first in range(0, len(order), batch):
            members = order[first:first + batch]
            a, z = rank_positions(len(members), size, rank)
            mine = np.sort(members[a:z])
            if len(mine):
                total += inputs[mine].nbytes + targets[mine].nbytes
    return time.perf_counter() - start_time, total


def loader_read(path, comm, buffer_mb, batch, shuffle, epoch, reads="auto", prefetch=True):
    """The training loader over the whole file; reads="auto" is what training uses (here: direct reads)."""
    info = open_dataset(path, comm=comm, check_finite=False)
    loader = BatchLoader(info, (0, info.num_samples), batch, comm=comm, seed=0, shuffle=shuffle, buffer_mb=buffer_mb,
                         reads=reads, prefetch=prefetch)
    MODES[reads] = loader.reads
    start_time, total = time.perf_counter(), 0
    for item in loader.epoch(epoch):
        total += item.x.nbytes + item.y.nbytes
    seconds = time.perf_counter() - start_time
    loader.close()
    return seconds, total


MODES = {}


def aggregate(comm, seconds, nbytes):
    seconds = mpi.max_value(comm, seconds)
    nbytes = comm.allreduce(nbytes) if comm.size > 1 else nbytes       # a sum
    return nbytes / seconds / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=40000)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--buffer-mb", type=float, default=64.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--file", default="", help="schema v1 windows file to use; written there (and kept) when "
                                                   "missing; default: a temporary one")
    parser.add_argument("--skip-slow", action="store_true", help="leave out the plain-h5py shuffled baseline")
    args = parser.parse_args()
    comm = mpi.world()
    rank = comm.rank
    folder = tempfile.mkdtemp(prefix="hpcrnn-bench-") if rank == 0 and not args.file else None
    path = args.file or os.path.join(folder, "bench.h5") if rank == 0 else None
    if rank == 0 and not os.path.exists(path):
        make_file(path, args.samples, args.length, args.features)
    path = mpi.bcast_object(comm, path)
    cases = {"raw h5py": lambda r: raw_read(path, comm, args.buffer_mb),
             "loader shuffled": lambda r: loader_read(path, comm, args.buffer_mb, args.batch, True, r),
             "loader in order": lambda r: loader_read(path, comm, args.buffer_mb, args.batch, False, r)}
    cases["shuffled, no prefetch"] = lambda r: loader_read(path, comm, args.buffer_mb, args.batch, True, r,
                                                           prefetch=False)
    cases["shuffled, hdf5 reads"] = lambda r: loader_read(path, comm, args.buffer_mb, args.batch, True, r,
                                                          "independent")
    cases["in order, hdf5 reads"] = lambda r: loader_read(path, comm, args.buffer_mb, args.batch, False, r,
                                                          "independent")
    if comm.size > 1 and h5py.get_config().mpi:
        cases["shuffled, collective"] = lambda r: loader_read(path, comm, args.buffer_mb, args.batch, True, r,
                                                              "collective")
    # last: its many small h5py reads slow the cases run right after it
    if not args.skip_slow:
        cases["raw h5py, shuffled"] = lambda r: raw_shuffled_read(path, comm, args.buffer_mb, args.batch, r)
    rates = {name: [] for name in cases}
    for repeat in range(args.repeats + 1):                     # the first round warms the page cache
        for name, case in cases.items():
            rate = aggregate(comm, *case(repeat))
            if repeat:
                rates[name].append(rate)
    if rank == 0:
        size_mb = os.path.getsize(path) / 2**20
        with h5py.File(path, "r") as handle:
            shape = handle["inputs"].shape
        print(f"file {size_mb:.0f} MiB, {shape[0]} x {shape[1]} x {shape[2]} float32, batch {args.batch}, "
              f"buffer {args.buffer_mb:g} MiB, {comm.size} rank(s), median of {args.repeats}")
        print("  read modes used: " + ", ".join(f"{asked} -> {used}" for asked, used in MODES.items()))
        raw = statistics.median(rates["raw h5py"])
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"  {name:22s} {median:9.1f} MB/s   ratio to raw {median / raw:5.2f}")
        if folder:
            os.remove(path)
            os.rmdir(folder)


if __name__ == "__main__":
    main()
