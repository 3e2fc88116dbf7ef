"""The streaming reader of the training engine: each rank reads only its own samples of each global batch,
buffer window by buffer window, prefetched in a background thread, into batch buffers it reuses; plus in-order
iteration for evaluation. A split is a (start, stop) range or a hpcrnn.data.splits.Split (an index set). The
epoch order depends on (seed, epoch, split, buffer), never on the ranks."""
import math
import time
from dataclasses import dataclass

import numpy as np

from hpcrnn.data.batch_check import first_problem
from hpcrnn.data.batch_reads import open_reader
from hpcrnn.data.prefetch import Depth, Prefetcher
from hpcrnn.data.read_mode import MATCHED, prefetch_allowed, read_mode
from hpcrnn.data.shard import blockdist, epoch_order, rank_positions
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
        """Read groups as (first batch, plan of its consecutive batches), each about one buffer window of
        samples, but the first about FIRST_GROUP_SHARE of one: the first step waits for a small read."""
        first, count = start_step, max(1, int(self.group_batches * FIRST_GROUP_SHARE))
        while first < self.steps_per_epoch:
            last = min(first + count, self.steps_per_epoch)
            yield first, self._plan(order, first, last)
            first, count = last, self.group_batches

    def epoch(self, epoch, start_step=0):
        """Yields steps_per_epoch - start_step Batch objects on every rank (each valid until the next one is
        asked for). Starting an epoch stops the reads of one left suspended."""
        order, batch = self.order(epoch), self.global_batch
        groups = list(self._groups(order, int(start_step)))
        if self.reads == "two-phase":             # every rank's share: the group's samples, in batches
            from hpcrnn.data.two_phase import Group
            selections = [Group(order[first * batch:(first + len(group)) * batch], batch) for first, group in groups]
        else:
            selections = [np.concatenate([mine for mine, _ in group]) for _, group in groups]
        if self.prefetcher is not None:
            self.prefetcher.close()
        prefetcher = self.prefetcher = Prefetcher(self.reader.read, selections, threaded=self.prefetch,
                                                  matched=self.reads in MATCHED, ahead=self.reader.ahead,
                                                  depth=self.depth)
        try:
            for _, group in groups:
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
        finally:
            prefetcher.close()

    def close(self):
        if self.prefetcher is not None:   # an epoch left suspended: stop its thread before the file goes
            self.prefetcher.close()
        self.reader.close()


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
