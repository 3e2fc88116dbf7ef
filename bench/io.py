"""Loader throughput against a plain h5py read of the same bytes (median MB/s of repeats, side by side), and the
data stall of real training steps, with the file's pages in the page cache (warm) or dropped from it (cold).

Throughput (default): two baselines: "raw h5py" reads each rank's contiguous block in large slices (the target:
loader >= 80% of it); "raw h5py, shuffled" reads the loader's own shuffled batches with h5py fancy indexing, as a
user would. Every loader case hands out each batch in the loader's reused batch buffers, as training gets them
("hdf5 reads": the independent HDF5 read path that files without direct reads, e.g. compressed ones, use).
--cold drops the file's pages (posix_fadvise DONTNEED) before every case of every repeat; --memory-budget-mb M
makes the file larger than M MiB (or refuses a --file that is not), so it cannot all stay cached either way;
--max-batches limits every case to that many global batches (and the raw read to as many bytes).

Training (--train): `hpcrnn train` (LSTM H=64, global batch --batch, --steps steps, otherwise the default
config, val_fraction 0) on --file, once per read mode (--modes) cold and warm, interleaved, --repeats times.
It prints per case the data stall = sum over steps of the longest t_io of any rank / sum of t_step (rank 0's
step includes its wait for the slowest rank), the first step's t_step, p50/p95 t_step, and the peak resident
memory of each rank during the run (VmHWM, reset before each run).

Run serially (`python bench/io.py`) or under `mpiexec.mpich -n 2 .venv/bin/python bench/io.py`; rates are
aggregate over ranks (bytes of every rank / slowest rank's time). The file is written once by rank 0.
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are dropped before numpy loads; the core type OpenBLAS picks is printed."""
import os

from machine import drop_blas_pins   # bench/machine.py: what the benches share

drop_blas_pins()                     # before numpy loads: let OpenBLAS detect the core, as users get it
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from hpcrnn import comm as mpi  # noqa: E402
from hpcrnn.data.loader import BatchLoader  # noqa: E402
from hpcrnn.data.pagecache import cached_fraction, drop  # noqa: E402
from hpcrnn.data.parallel import chunk_rows  # noqa: E402
from hpcrnn.data.schema import open_dataset  # noqa: E402
from hpcrnn.data.shard import blockdist  # noqa: E402
from machine import describe as describe_machine  # noqa: E402


def make_file(path, samples, length, features, slab_mb=64):
    """A windows file chunked as `hpcrnn synth` chunks, for I/O benchmarks: standard normal values drawn for
    one slab of about slab_mb and written again and again, shifted by 0.01 per slab (a 28.6 GiB file takes a
    few minutes where synth takes many on a busy machine); targets follow in one piece."""
    with h5py.File(path, "w") as handle:
        handle.attrs["hpcrnn_schema"] = np.int64(1)
        rows = chunk_rows(length * features * 4, samples)
        inputs = handle.create_dataset("inputs", (samples, length, features), "f4", chunks=(rows, length, features))
        targets = handle.create_dataset("targets", (samples, 1), "f4", chunks=(chunk_rows(4, samples), 1))
        rng = np.random.default_rng(0)
        step = max(1, int(slab_mb * 2**20) // (length * features * 4) // rows) * rows
        slab = rng.standard_normal((min(step, samples), length, features), dtype=np.float32)
        for number, first in enumerate(range(0, samples, step)):
            count = min(step, samples - first)
            inputs[first:first + count] = slab[:count] + np.float32(0.01 * number)
        targets[...] = rng.standard_normal((samples, 1), dtype=np.float32)


def drop_cache(path, comm):
    """Every rank waits until the file's pages are out of the page cache (rank 0 drops them)."""
    comm.Barrier()
    if comm.rank == 0:
        drop(path)
    comm.Barrier()


def raw_read(path, comm, buffer_mb, max_bytes=0):
    """Seconds and bytes for this rank reading its contiguous block of every dataset in buffer-sized slices
    (with max_bytes: the first max_bytes / P of the block)."""
    size, rank = comm.size, comm.rank
    start_time, total = time.perf_counter(), 0
    with h5py.File(path, "r") as handle:
        for name in ("inputs", "targets"):
            dset = handle[name]
            count, start = blockdist(dset.shape[0], size, rank)
            row = dset.dtype.itemsize * int(np.prod(dset.shape[1:]))
            if max_bytes:
                count = min(count, max(1, max_bytes // size // (row + 4)))
            step = max(1, int(buffer_mb * 2**20 / 2) // row)
            for first in range(start, start + count, step):
                total += dset[first:min(first + step, start + count)].nbytes
    return time.perf_counter() - start_time, total


def raw_shuffled_read(path, comm, buffer_mb, batch, epoch, max_batches=0):
    """What a user would write with plain h5py for the same shuffled batches: per global batch, this rank's
    samples (the loader's order and shares) read with h5py fancy indexing (sorted indices)."""
    from hpcrnn.data.loader import rank_positions
    info = open_dataset(path, mpi.self_comm(), check_finite=False)
    loader = BatchLoader(info, (0, info.num_samples), batch, comm=comm, seed=0, buffer_mb=buffer_mb, prefetch=False)
    order = loader.order(epoch)
    loader.close()
    if max_batches:
        order = order[:max_batches * batch]
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


def loader_read(path, comm, buffer_mb, batch, shuffle, epoch, reads="auto", prefetch=True, max_batches=0):
    """The training loader over the whole file; reads="auto" is what training uses (here: direct reads). With
    max_batches, batches 2..max_batches only: the clock starts at the first batch, so that the epoch's setup
    (its order, ~1 s for 7.5 M samples) does not swamp a short read."""
    info = open_dataset(path, comm=comm, check_finite=False)
    loader = BatchLoader(info, (0, info.num_samples), batch, comm=comm, seed=0, shuffle=shuffle, buffer_mb=buffer_mb,
                         reads=reads, prefetch=prefetch)
    MODES[reads] = loader.reads
    start_time, total = time.perf_counter(), 0
    for step, item in enumerate(loader.epoch(epoch)):
        if max_batches and step == 0:
            start_time = time.perf_counter()
            continue
        total += item.x.nbytes + item.y.nbytes
        if max_batches and step + 1 >= max_batches:
            break
    seconds = time.perf_counter() - start_time
    loader.close()
    return seconds, total


MODES = {}


def aggregate(comm, seconds, nbytes):
    seconds = mpi.max_value(comm, seconds)
    nbytes = comm.allreduce(nbytes) if comm.size > 1 else nbytes       # a sum
    return nbytes / seconds / 1e6


# ---- training steps ------------------------------------------------------------------------------------------
IO_WAITS = []        # this rank's t_io of every batch handed to training in the current run


def recording(epoch_method):
    """BatchLoader.epoch, recording each batch's t_io on this rank (metrics.jsonl holds rank 0's only)."""
    def epoch(self, *args, **kwargs):
        batches = epoch_method(self, *args, **kwargs)
        try:
            for batch in batches:
                IO_WAITS.append(batch.t_io)
                yield batch
        finally:
            batches.close()
    return epoch


def peak_reset():
    """Resets this process's peak resident memory (VmHWM) where the kernel allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_mib():
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def train_case(path, comm, reads, cold, args, work):
    """One training run; returns rank 0's figures (None elsewhere)."""
    from hpcrnn.config import load_config
    from hpcrnn.run import train
    run_dir = os.path.join(work, f"run-{reads}-{'cold' if cold else 'warm'}")
    overrides = [f"data.path={path}", "data.val_fraction=0", "data.check_finite=false", f"data.reads={reads}",
                 f"data.buffer_mb={args.buffer_mb}", "model.cell=lstm", "model.hidden_size=64",
                 f"train.batch_size={args.batch}", f"train.max_steps={args.steps}", "train.progress=none",
                 "train.epochs=1", "checkpoint.keep_best=false", f"run_dir={run_dir}"]
    config = load_config(overrides=overrides)
    if cold:
        drop_cache(path, comm)
    cached = cached_fraction(path) if comm.rank == 0 and args.check_cache else float("nan")
    del IO_WAITS[:]
    peak_reset()
    comm.Barrier()
    train(config, comm, stream=open(os.devnull, "w"))
    waits = mpi.allgather_object(comm, list(IO_WAITS))
    peaks = mpi.allgather_object(comm, peak_mib())
    if comm.rank != 0:
        return None
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        steps = [r["t_step"] for r in map(json.loads, handle) if "event" not in r]
    shutil.rmtree(run_dir, ignore_errors=True)
    longest = np.max(np.array(waits), axis=0)
    return {"stall": float(longest.sum()) / sum(steps), "first": steps[0], "first_io": float(longest[0]),
            "p50": float(np.percentile(steps, 50)), "p95": float(np.percentile(steps, 95)),
            "total": sum(steps), "peaks": peaks, "cached": cached}


def train_mode(path, comm, args):
    from hpcrnn.data.loader import BatchLoader as Loader
    Loader.epoch = recording(Loader.epoch)
    work = mpi.bcast_object(comm, tempfile.mkdtemp(prefix="hpcrnn-io-train-") if comm.rank == 0 else None)
    modes = args.modes.split(",")
    results = {(m, c): [] for m in modes for c in (True, False)}
    steps, args.steps = args.steps, 3
    train_case(path, comm, "independent", False, args, work)     # compiles or loads the kernels: not timed
    args.steps = steps
    for repeat in range(args.repeats):
        for mode in modes:
            for cold in (True, False):           # warm right after cold: the same steps' pages are cached
                result = train_case(path, comm, mode, cold, args, work)
                if comm.rank == 0:
                    results[(mode, cold)].append(result)
                    print(f"  [{repeat}] {mode:11s} {'cold' if cold else 'warm'}: stall {result['stall']:.1%}, "
                          f"first step {result['first']:.3f} s, p95 {result['p95'] * 1e3:.1f} ms, "
                          f"peak {'/'.join(f'{p:.0f}' for p in result['peaks'])} MiB", flush=True)
    if comm.rank == 0:
        shutil.rmtree(work, ignore_errors=True)
        print(f"training on {path} ({os.path.getsize(path) / 2**30:.1f} GiB): LSTM H=64, global batch {args.batch}, "
              f"{args.steps} steps, buffer {args.buffer_mb:g} MiB, {comm.size} rank(s); median of {args.repeats}")
        print(f"  {'mode':11s} {'cache':5s} {'stall':>7s} {'first s':>8s} {'first io':>8s} {'p50 ms':>7s} "
              f"{'p95 ms':>7s} {'total s':>8s}  peak MiB per rank")
        for (mode, cold), runs in results.items():
            med = {key: statistics.median(r[key] for r in runs)
                   for key in ("stall", "first", "first_io", "p50", "p95", "total")}
            peaks = [max(r["peaks"][rank] for r in runs) for rank in range(comm.size)]
            print(f"  {mode:11s} {'cold' if cold else 'warm':5s} {med['stall']:7.1%} {med['first']:8.3f} "
                  f"{med['first_io']:8.3f} {med['p50'] * 1e3:7.1f} {med['p95'] * 1e3:7.1f} {med['total']:8.1f}  "
                  + " ".join(f"{p:.0f}" for p in peaks))


# ---- throughput ------------------------------------------------------------------------------------------------
def throughput_mode(path, comm, args):
    rank, limit = comm.rank, args.max_batches
    limit_bytes = limit * args.batch * (args.length * args.features * 4 + 4) if limit else 0
    cases = {"raw h5py": lambda r: raw_read(path, comm, args.buffer_mb, limit_bytes),
             "loader shuffled": lambda r: loader_read(path, comm, args.buffer_mb, args.batch, True, r,
                                                      max_batches=limit),
             "loader in order": lambda r: loader_read(path, comm, args.buffer_mb, args.batch, False, r,
                                                      max_batches=limit)}
    cases["shuffled, no prefetch"] = lambda r: loader_read(path, comm, args.buffer_mb, args.batch, True, r,
                                                           prefetch=False, max_batches=limit)
    for mode in args.modes.split(","):
        cases[f"shuffled, {mode}"] = lambda r, mode=mode: loader_read(path, comm, args.buffer_mb, args.batch, True,
                                                                      r, mode, max_batches=limit)
    cases["in order, independent"] = lambda r: loader_read(path, comm, args.buffer_mb, args.batch, False, r,
                                                           "independent", max_batches=limit)
    # last: its many small h5py reads slow the cases run right after it
    if not args.skip_slow:
        cases["raw h5py, shuffled"] = lambda r: raw_shuffled_read(path, comm, args.buffer_mb, args.batch, r, limit)
    rates = {name: [] for name in cases}
    for repeat in range(args.repeats + (0 if args.cold else 1)):     # warm: the first round fills the cache
        for name, case in cases.items():
            if args.cold:
                drop_cache(path, comm)
            rate = aggregate(comm, *case(repeat))
            if repeat or args.cold:
                rates[name].append(rate)
    if rank == 0:
        size_mb = os.path.getsize(path) / 2**20
        with h5py.File(path, "r") as handle:
            shape = handle["inputs"].shape
        print(f"file {size_mb:.0f} MiB, {shape[0]} x {shape[1]} x {shape[2]} float32, batch {args.batch}, "
              f"buffer {args.buffer_mb:g} MiB, {comm.size} rank(s), {'cold' if args.cold else 'warm'} page cache"
              f"{f', first {limit} batches' if limit else ''}, median of {args.repeats}")
        print("  read modes used: " + ", ".join(f"{asked} -> {used}" for asked, used in MODES.items()))
        raw = statistics.median(rates["raw h5py"])
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"  {name:24s} {median:9.1f} MB/s   ratio to raw {median / raw:5.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40000)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--buffer-mb", type=float, default=64.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--file", default="", help="schema v1 windows file to use; written there (and kept) when "
                                                   "missing; default: a temporary one")
    parser.add_argument("--skip-slow", action="store_true", help="leave out the plain-h5py shuffled baseline")
    parser.add_argument("--cold", action="store_true", help="drop the file's pages before every case")
    parser.add_argument("--memory-budget-mb", type=float, default=0.0,
                        help="make the file larger than this (a --file must already be)")
    parser.add_argument("--max-batches", type=int, default=0, help="global batches per case (0 = the whole file)")
    parser.add_argument("--modes", default="direct,independent,collective,two-phase",
                        help="read modes compared (data.reads values)")
    parser.add_argument("--train", action="store_true", help="training stall mode (see above)")
    parser.add_argument("--steps", type=int, default=400, help="--train: steps per run")
    parser.add_argument("--check-cache", action="store_true", help="--train: print the cached share before runs")
    args = parser.parse_args()
    comm = mpi.world()
    rank = comm.rank
    if not (comm.size > 1 and h5py.get_config().mpi):
        args.modes = ",".join(m for m in args.modes.split(",") if m not in ("collective", "two-phase"))
    if args.memory_budget_mb:
        sample_bytes = args.length * args.features * 4 + 4
        args.samples = max(args.samples, int(args.memory_budget_mb * 2**20 * 1.05) // sample_bytes)
    folder = tempfile.mkdtemp(prefix="hpcrnn-bench-") if rank == 0 and not args.file else None
    path = args.file or os.path.join(folder, "bench.h5") if rank == 0 else None
    if rank == 0 and not os.path.exists(path):
        make_file(path, args.samples, args.length, args.features)
    path = mpi.bcast_object(comm, path)
    if args.memory_budget_mb and os.path.getsize(path) <= args.memory_budget_mb * 2**20:
        if rank == 0:
            print(f"{path}: {os.path.getsize(path) / 2**20:.0f} MiB is not larger than the memory budget of "
                  f"{args.memory_budget_mb:g} MiB", file=sys.stderr)
        sys.exit(2)
    if rank == 0:
        print(describe_machine())
    try:
        (train_mode if args.train else throughput_mode)(path, comm, args)
    finally:
        if rank == 0 and folder:
            os.remove(path)
            os.rmdir(folder)


if __name__ == "__main__":
    main()
