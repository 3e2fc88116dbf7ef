"""The streaming reader of the training engine: each rank reads only its own samples of each global batch,
buffer window by buffer window, prefetched in a background thread; plus in-order iteration for evaluation
and the train/val split rule. The epoch order depends on (seed, epoch, split, buffer), never on the ranks."""
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.config import READS
from hpcrnn.data.parallel import mpio_available
from hpcrnn.data.prefetch import Prefetcher
from hpcrnn.data.shard import blockdist, epoch_order, rank_positions
from hpcrnn.data.sources import open_source
from hpcrnn.errors import DataError


@dataclass
class Batch:
    """One rank's part of a global batch."""
    x: np.ndarray              # [b_local, T, F]
    y: np.ndarray              # [b_local, O], [b_local, T, O], or int64 labels [b_local]
    lengths: np.ndarray        # int64 [b_local] or None
    global_count: int          # samples in the global batch (same on every rank)
    indices: np.ndarray        # global sample indices this rank got, in batch order
    t_io: float                # seconds the consumer spent waiting for or cutting this batch


PARALLEL_FILE_SYSTEMS = ("lustre", "gpfs", "beegfs", "panfs", "pvfs2", "orangefs", "wekafs", "ceph", "fuse.dfuse")


def file_system(path):
    """Type of the file system holding path, from /proc/self/mounts ("" where unknown)."""
    try:
        with open("/proc/self/mounts") as handle:
            mounts = [line.split()[1:3] for line in handle if len(line.split()) > 2]
    except OSError:
        return ""
    real = os.path.realpath(path)
    best, kind = "", ""
    for point, fs_type in mounts:
        point = point.replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fs_type
    return kind


def choose_reads(comm, prefetch, reads, path):
    """(reads, prefetch) actually used, reads being "direct", "independent" or "collective".

    direct: rows copied from a memory map of the file (hpcrnn.data.mapped), the next group mapped in ahead;
    a file that does not allow it (compressed, ...) is read with independent HDF5 reads. independent: plain
    h5py reads on each rank. collective: mpio collective reads on a duplicate of comm (h5py with MPI and
    several ranks, else independent); the prefetch thread then needs MPI_THREAD_MULTIPLE, else it is off.
    auto: collective on a parallel file system (Lustre, GPFS, BeeGFS, ...) when h5py has MPI, where the
    aggregation of collective MPI-IO keeps P ranks from each pulling whole chunks; direct elsewhere
    (node-local disks, the page cache), where it measured 1.1-1.3x a raw h5py read and collective reads
    0.03x (docs/data-format.md)."""
    if reads not in READS:
        raise DataError(f"{path}: data.reads must be one of {', '.join(READS)}, got {reads!r}")
    if reads == "auto":
        parallel = file_system(path) in PARALLEL_FILE_SYSTEMS
        reads = "collective" if parallel and mpio_available(comm) else "direct"
    if reads == "collective" and not mpio_available(comm):
        reads = "independent"
    if reads == "collective" and prefetch and not mpi.thread_multiple():
        prefetch = False
    return reads, prefetch


def limit_heap_growth(threshold=4 << 20, keep=32 << 20):
    """Fixes glibc's mmap threshold, so freed read buffers (> 4 MiB) go back to the system at once, and lets
    the heap keep up to 32 MiB of freed memory for reuse.

    glibc raises the mmap threshold after each large free, after which buffers of a streaming reader pile up
    in the heap and resident memory creeps to several times the buffer. Fixing it also pins the trim
    threshold at 128 KiB, so every freed batch went back to the system and the next one page-faulted its
    memory in again (measured: 2x the time of an epoch of direct reads). Linux/glibc only; no-op elsewhere."""
    global _HEAP_LIMITED
    if _HEAP_LIMITED:
        return
    _HEAP_LIMITED = True
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, int(threshold))     # M_MMAP_THRESHOLD
        libc.mallopt(-1, int(keep))          # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


_HEAP_LIMITED = False


class BatchLoader:
    """Yields this rank's share of every global batch of split=(start, stop), epoch after epoch.

    Global batch b of an epoch is order[b*B:(b+1)*B] of epoch_order(); rank r takes positions
    blockdist(len(batch), P, r) of it and reads only the rows under them. Memory: about 2 * buffer_mb / P
    of read buffers plus one batch (direct reads: two groups of mapped pages). reads: see choose_reads."""

    def __init__(self, info, split, global_batch, comm, seed=0, shuffle=True, buffer_mb=64.0,
                 prefetch=True, dtype=np.float32, reads="auto"):
        if global_batch < 1:
            raise DataError(f"{info.path}: global batch size must be >= 1, got {global_batch}")
        self.info, self.comm = info, comm
        self.split = (int(split[0]), int(split[1]))
        self.num_samples = max(0, self.split[1] - self.split[0])
        self.global_batch, self.seed, self.shuffle = int(global_batch), int(seed), bool(shuffle)
        self.reads, self.prefetch = choose_reads(comm, prefetch, reads, info.path)
        limit_heap_growth()
        self.source = open_source(info, comm, self.reads, dtype)
        self.reads = self.source.reads
        self.window_samples = max(1, int(buffer_mb * (1 << 20)) // self.source.sample_bytes)
        # One buffer window of batches per read group; two groups are resident (double buffering).
        self.group_batches = max(1, self.window_samples // self.global_batch)
        self.steps_per_epoch = math.ceil(self.num_samples / self.global_batch)
        self.reader = None

    def order(self, epoch):
        """Global sample indices of `epoch` in consumption order (the same on every rank)."""
        return epoch_order(self.split, self.seed, epoch, self.source.block_size, self.window_samples,
                           self.shuffle, self.global_batch)

    def _plan(self, order, first_batch, last_batch):
        """Per batch of [first_batch, last_batch): this rank's indices (batch order) and the global count."""
        size, rank = self.comm.size, self.comm.rank
        plan = []
        for b in range(first_batch, last_batch):
            batch = order[b * self.global_batch:(b + 1) * self.global_batch]
            a, z = rank_positions(len(batch), size, rank)
            plan.append((batch[a:z], len(batch)))
        return plan

    def _groups(self, order, start_step):
        """Read groups: lists of consecutive batches holding about one buffer window of samples."""
        for first in range(start_step, self.steps_per_epoch, self.group_batches):
            yield self._plan(order, first, min(first + self.group_batches, self.steps_per_epoch))

    def epoch(self, epoch, start_step=0):
        """Yields steps_per_epoch - start_step Batch objects on every rank."""
        groups = list(self._groups(self.order(epoch), int(start_step)))
        selections = [np.concatenate([mine for mine, _ in group]) for group in groups]
        reader = self.reader = Prefetcher(self.source.read, selections, threaded=self.prefetch)
        try:
            for group in groups:
                t0 = time.perf_counter()
                arrays = reader.next()
                t_wait = time.perf_counter() - t0
                for mine, count in group:
                    t1 = time.perf_counter()
                    x, y, lengths = self.source.take(arrays, mine)
                    t_io = t_wait + time.perf_counter() - t1
                    t_wait = 0.0
                    yield Batch(x, y, lengths, count, mine, t_io)
                self.source.release(arrays)
                del arrays
                reader.release()
        finally:
            reader.close()

    def close(self):
        if self.reader is not None:       # an epoch left suspended: stop its thread before the file goes
            self.reader.close()
        self.source.close()


def rank_block(split, comm):
    """(count, start) of this rank's contiguous block of split for in-order iteration."""
    count, offset = blockdist(max(0, split[1] - split[0]), comm.size, comm.rank)
    return count, split[0] + offset


def iterate_in_order(info, split, batch_size, comm, dtype=np.float32, reads="auto"):
    """Yields Batch objects covering this rank's contiguous block of split in natural order; every rank
    yields the same number of batches (possibly empty). batch.indices - split[0] are the output rows."""
    reads, _ = choose_reads(comm, False, reads, info.path)
    source = open_source(info, comm, reads, dtype)
    count, start = rank_block(split, comm)
    largest, _ = blockdist(max(0, split[1] - split[0]), comm.size, 0)
    try:
        for first in range(0, largest, batch_size):
            t0 = time.perf_counter()
            indices = np.arange(start + min(first, count), start + min(first + batch_size, count), dtype=np.int64)
            arrays = source.read(indices)
            x, y, lengths = source.take(arrays, indices)
            source.release(arrays)
            yield Batch(x, y, lengths, -1, indices, time.perf_counter() - t0)
    finally:
        source.close()


def default_gap(info):
    """Samples left out between train and val so that no val window shares a row with a train window."""
    if info.form != "series":
        return 0
    return max(0, math.ceil((info.lookback + info.horizon) / info.stride) - 1)


def split_ranges(info, val_fraction, gap=None):
    """{'train': (a, b), 'val': (c, d)[, 'test': ...]}: the file's split attributes when it has them, else
    chronological: the last val_fraction of the samples is val, `gap` samples before it are left out."""
    if "train" in info.splits:
        end = info.splits["train"][1]
        return {"val": (end, end), **info.splits}
    n = info.num_samples
    gap = default_gap(info) if gap is None else int(gap)
    val_count = int(math.floor(n * float(val_fraction))) if val_fraction > 0 else 0
    if val_count == 0:
        return {"train": (0, n), "val": (n, n)}
    train_stop = n - val_count - gap
    if train_stop < 1:
        raise DataError(f"{info.path}: {n} samples are too few for val_fraction {val_fraction} "
                        f"and a gap of {gap} samples")
    return {"train": (0, train_stop), "val": (n - val_count, n)}
