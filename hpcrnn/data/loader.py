"""The streaming reader of the training engine: each rank reads only its own samples of each global batch,
buffer window by buffer window, prefetched in a background thread, into batch buffers it reuses; plus in-order
iteration for evaluation. A split is a (start, stop) range or a hpcrnn.data.splits.Split (an index set). The
epoch order depends on (seed, epoch, split, buffer), never on the ranks."""
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from hpcrnn.data.batch_check import first_problem
from hpcrnn.data.batch_reads import open_reader
from hpcrnn.data.prefetch import Depth, Prefetcher
from hpcrnn.data.read_mode import MATCHED, prefetch_allowed, read_mode
from hpcrnn.data.shard import blockdist, epoch_batches, epoch_order, rank_positions
from hpcrnn.data.splits import as_split
from hpcrnn.errors import DataError

FIRST_GROUP_SHARE = 0.125     # of a read group: the size of an epoch's first one


@dataclass(frozen=True)
class Batch:
    """One rank's part of a global batch. x, y and lengths are views of buffers the loader refills: they are
    valid until the next batch is requested (copy them to keep them)."""
    x: np.ndarray              # [b_local, T, F]
    y: np.ndarray              # [b_local, O], [b_local, T, O], or int64 labels [b_local]
    lengths: np.ndarray        # int64 [b_local] or None
    global_count: int          # samples in the global batch (same on every rank)
    indices: np.ndarray        # global sample indices this rank got, in batch order
    t_io: float                # seconds the consumer spent waiting for, cutting or checking this batch
    problem: str = None        # batch_check.first_problem: the first bad value's message, or None


class BatchLoader:
    """Yields this rank's share of every global batch of split ((start, stop) or a Split), epoch after epoch.

    Global batch b of an epoch is order[b*B:(b+1)*B] of epoch_order(); rank r takes positions
    blockdist(len(batch), P, r) of it and reads only the rows under them. Memory: about 2 * buffer_mb / P
    of read buffers plus one batch, all allocated once and reused (direct reads: two groups of mapped pages).
    reads: the mode asked for (READS); self.reads is the mode used (read_mode)."""

    def __init__(self, info, split, global_batch, comm, seed=0, shuffle=True, buffer_mb=64.0,
                 prefetch=True, dtype=np.float32, reads="auto"):
        if global_batch < 1:
            raise DataError(f"{info.path}: global batch size must be >= 1, got {global_batch}")
        self.info, self.comm = info, comm
        self.split = as_split(split)
        self.num_samples = len(self.split)
        self.global_batch, self.seed, self.shuffle = int(global_batch), int(seed), bool(shuffle)
        self.reads = read_mode(comm, reads, info)
        self.prefetch = prefetch_allowed(self.reads, prefetch)
        self.reader = open_reader(info, comm, self.reads, dtype)
        largest_share, _ = blockdist(min(self.global_batch, self.num_samples), comm.size, 0)
        self.buffers = self.reader.samples(largest_share)
        self.window_samples = max(1, int(buffer_mb * (1 << 20)) // self.reader.sample_bytes)
        # One buffer window of batches per read group; two groups are resident (double buffering).
        self.group_batches = max(1, self.window_samples // self.global_batch)
        self.steps_per_epoch = math.ceil(self.num_samples / self.global_batch)
        self.prefetcher, self.depth = None, Depth()      # the readahead depth carries over epochs

    def order(self, epoch):
        """Global sample indices of `epoch` in consumption order (the same on every rank)."""
        return epoch_order(self.split, self.seed, epoch, self.reader.block_size, self.window_samples,
                           self.shuffle, self.global_batch)

    def group_sizes(self, start_step):
        """Batches per read group from start_step on: about one buffer window of samples each, but the first
        about FIRST_GROUP_SHARE of one (the first step waits for a small read)."""
        sizes, first, count = [], start_step, max(1, int(self.group_batches * FIRST_GROUP_SHARE))
        while first < self.steps_per_epoch:
            sizes.append(min(count, self.steps_per_epoch - first))
            first, count = first + sizes[-1], self.group_batches
        return sizes

    def epoch(self, epoch, start_step=0):
        """Yields steps_per_epoch - start_step Batch objects on every rank (each valid until the next one is
        asked for). Starting an epoch stops the reads of one left suspended. The epoch's read groups are
        worked out as they are needed (EpochPlan), so starting costs the same for any size of data."""
        plan = EpochPlan(self, epoch, int(start_step))
        if self.prefetcher is not None:
            self.prefetcher.close()
        prefetcher = self.prefetcher = Prefetcher(self.reader.read, plan.selections, threaded=self.prefetch,
                                                  matched=self.reads in MATCHED, ahead=self.reader.ahead,
                                                  depth=self.depth)
        try:
            for index in range(len(plan)):
                group = plan.batches(index)
                t0 = time.perf_counter()
                read = prefetcher.next()
                t_wait = time.perf_counter() - t0
                for mine, count in group:
                    t1 = time.perf_counter()
                    samples = self.reader.take(read, mine, self.buffers)
                    problem = first_problem(self.info, samples.x, samples.y, samples.lengths, mine)
                    t_io = t_wait + time.perf_counter() - t1
                    t_wait = 0.0
                    yield Batch(samples.x, samples.y, samples.lengths, count, mine, t_io, problem)
                self.reader.release(read)
                del read
                prefetcher.release()
                plan.forget(index)
        finally:
            prefetcher.close()

    def close(self):
        if self.prefetcher is not None:   # an epoch left suspended: stop its thread before the file goes
            self.prefetcher.close()
        self.reader.close()


class EpochPlan:
    """The read groups of one epoch of a BatchLoader from start_step on, each worked out the first time it is
    asked for, from the epoch's batches in order (shard.epoch_batches): per group, this rank's indices and the
    global count of each of its batches, and what the reader reads for it (this rank's indices of the whole
    group, or the group's samples for two-phase reads). Thread-safe: the prefetch thread and the consumer
    both ask; a group is forgotten once consumed."""

    def __init__(self, loader, epoch, start_step):
        self.loader, self.sizes = loader, loader.group_sizes(start_step)
        self.stream = epoch_batches(loader.split, loader.seed, epoch, loader.reader.block_size,
                                    loader.window_samples, loader.global_batch, loader.shuffle)
        for _ in range(start_step):            # a resumed epoch: the batches done before
            next(self.stream)
        self.groups, self.lock = {}, threading.Lock()
        self.made = 0
        self.selections = _Selections(self)

    def __len__(self):
        return len(self.sizes)

    def _group(self, index):
        with self.lock:
            while self.made <= index:
                self.groups[self.made] = self._make(self.sizes[self.made])
                self.made += 1
            return self.groups[index]

    def _make(self, count):
        loader = self.loader
        size, rank = loader.comm.size, loader.comm.rank
        full = [next(self.stream) for _ in range(count)]
        batches = []
        for batch in full:
            a, z = rank_positions(len(batch), size, rank)
            batches.append((batch[a:z], len(batch)))
        if loader.reads == "two-phase":         # every rank's share: the group's samples, in batches
            from hpcrnn.data.two_phase import Group
            return batches, Group(np.concatenate(full), loader.global_batch)
        return batches, np.concatenate([mine for mine, _ in batches])

    def batches(self, index):
        """[(this rank's indices, global count)] of each batch of group `index`."""
        return self._group(index)[0]

    def forget(self, index):
        with self.lock:
            self.groups.pop(index, None)


class _Selections:
    """EpochPlan's reads as the sequence the Prefetcher walks through."""

    def __init__(self, plan):
        self.plan = plan

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, index):
        return self.plan._group(index)[1]


def rank_block(split, comm):
    """(count, first) of this rank's contiguous block of positions of split for in-order iteration."""
    return blockdist(len(as_split(split)), comm.size, comm.rank)


def iterate_in_order(info, split, batch_size, comm, dtype=np.float32, reads="auto"):
    """Yields Batch objects covering this rank's contiguous block of split's samples in natural order, each valid
    until the next one is asked for; every rank yields the same number of batches (possibly empty).
    For a (start, stop) split, batch.indices - start are the output rows."""
    split = as_split(split)
    reader = open_reader(info, comm, read_mode(comm, reads, info), dtype)
    count, first_position = rank_block(split, comm)
    largest, _ = blockdist(len(split), comm.size, 0)
    buffers = reader.samples(min(batch_size, largest))
    try:
        for first in range(0, largest, batch_size):
            t0 = time.perf_counter()
            positions = np.arange(min(first, count), min(first + batch_size, count), dtype=np.int64)
            indices = split.take(first_position + positions)
            read = reader.read(indices)
            samples = reader.take(read, indices, buffers)
            reader.release(read)
            problem = first_problem(info, samples.x, samples.y, samples.lengths, indices)
            yield Batch(samples.x, samples.y, samples.lengths, -1, indices, time.perf_counter() - t0, problem)
    finally:
        reader.close()
