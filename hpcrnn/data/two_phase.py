"""Two-phase reads (data.reads = "two-phase"): for each read group, every rank reads a contiguous 1/P of the rows
the group needs, in file order, with a few large independent reads; one Alltoallv per dataset then moves each
row to the ranks whose batch positions need it. The batches are those of the other modes, bit for bit."""
from dataclasses import dataclass

import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.data.batch_reads import RangesRead, open_reader, range_offsets
from hpcrnn.data.shard import blockdist, rank_positions, runs_of
from hpcrnn.errors import DataError


@dataclass(frozen=True)
class Group:
    """A read group: consecutive global batches of `batch_size` samples, `samples` (global indices, the
    epoch order's slice; every rank holds the same)."""
    samples: np.ndarray
    batch_size: int

    def needs(self, size, rank):
        """The samples rank takes from the group's batches (rank_positions of each batch), in batch order."""
        pieces = []
        for first in range(0, len(self.samples), self.batch_size):
            batch = self.samples[first:first + self.batch_size]
            a, z = rank_positions(len(batch), size, rank)
            pieces.append(batch[a:z])
        return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)


def expand(starts, stops):
    """The rows of the disjoint row ranges [starts[i], stops[i]), in order (int64)."""
    counts = np.asarray(stops, dtype=np.int64) - np.asarray(starts, dtype=np.int64)
    if counts.sum() == 0:
        return np.zeros(0, np.int64)
    first = np.repeat(np.asarray(starts, dtype=np.int64) - range_offsets(counts), counts)
    return first + np.arange(int(counts.sum()), dtype=np.int64)


@dataclass(frozen=True)
class Plan:
    """Who reads and who gets which rows of a group: rows[d] the sorted rows rank d needs, ranges[d] the same
    as ranges (for take), piece = (first row, last row + 1) this rank reads, bounds[p] the rows of piece p."""
    rows: list
    ranges: list
    piece_rows: np.ndarray
    bounds: np.ndarray


def pieces(reader, group, size):
    """(every rank's rows of `group` together, sorted, each once; (count, start) of piece p of them)."""
    union = expand(*reader.row_ranges(group.samples))
    return union, [blockdist(len(union), size, p) for p in range(size)]


def plan(reader, group, size, rank):
    """The exchange plan of `group` (reader.row_ranges gives the rows under samples)."""
    ranges = [reader.row_ranges(group.needs(size, d)) for d in range(size)]
    rows = [expand(*r) for r in ranges]
    union, cuts = pieces(reader, group, size)
    # piece p holds the union's rows [start_p, start_p + count_p); bounds: its first row and the next piece's
    bounds = np.array([union[start] if start < len(union) else np.iinfo(np.int64).max for _, start in cuts]
                      + [np.iinfo(np.int64).max], dtype=np.int64)
    count, start = cuts[rank]
    return Plan(rows, ranges, union[start:start + count], bounds)


class TwoPhaseReader:
    """Reads groups of samples by two-phase I/O (see the module). `read` takes a Group and returns a RangesRead
    of this rank's rows, for `take`; every rank must read the same groups in the same order (an Alltoallv per
    dataset, on a duplicate of comm), and a rank whose read fails makes every rank raise the same DataError
    before any exchange."""

    def __init__(self, info, comm, dtype):
        self.reader = open_reader(info, comm, "independent", dtype)
        self.comm = comm.Dup()
        mpi.close_at_exit(self)
        self.info = info
        self.block_size, self.sample_bytes = self.reader.block_size, self.reader.sample_bytes
        self.staging = self.sending = None

    def samples(self, capacity):
        return self.reader.samples(capacity)

    def take(self, read, indices, out):
        return self.reader.take(read, indices, out)

    def release(self, read):
        self.reader.release(read)

    def ahead(self, group):
        """Starts the kernel reading this rank's piece of the group."""
        if not isinstance(group, Group):
            return self.reader.ahead(group)
        union, cuts = pieces(self.reader, group, self.comm.size)
        count, start = cuts[self.comm.rank]
        self.reader.ahead_rows(*self.piece_ranges(union[start:start + count]))

    def read(self, group):
        """A Group by two-phase I/O; plain indices (in-order evaluation: contiguous blocks) as independent
        reads."""
        if not isinstance(group, Group):
            return self.reader.read(group)
        size, rank = self.comm.size, self.comm.rank
        exchange = plan(self.reader, group, size, rank)
        staged, message = None, None
        try:
            staged = self.read_piece(exchange.piece_rows)
        except (OSError, ValueError, KeyError) as error:
            message = f"{self.info.path}: cannot be read ({type(error).__name__}: {' '.join(str(error).split())})"
        mpi.agree(self.comm, message, DataError)
        mine = exchange.rows[rank]
        # rows sent to d: d's rows inside this rank's piece; rows got from p: this rank's rows inside piece p
        sent = [rows[(rows >= exchange.bounds[rank]) & (rows < exchange.bounds[rank + 1])] for rows in exchange.rows]
        got = np.diff(np.searchsorted(mine, exchange.bounds))
        send_counts = np.array([len(rows) for rows in sent], dtype=np.int64)
        positions = staged.positions(np.concatenate(sent)) if len(exchange.piece_rows) else np.zeros(0, np.int64)
        arrays = self.reader.group_buffer(len(mine), self.reader.dtypes)
        for staging, target in zip(staged.arrays, arrays):
            outgoing = self.send_buffer(staging, len(positions))
            np.take(staging, positions, axis=0, out=outgoing, mode="clip")
            mpi.alltoallv_rows(self.comm, outgoing, send_counts, target, got)
        starts, stops = exchange.ranges[rank]
        return RangesRead.of(starts, stops, arrays)

    def piece_ranges(self, rows):
        """The row ranges read for a piece (sorted rows): its runs, joined across small gaps."""
        return self.reader.sieved(*runs_of(rows))

    def read_piece(self, rows):
        """This rank's piece (sorted rows) read with independent reads into the staging buffers."""
        starts, stops = self.piece_ranges(rows)
        counts = stops - starts
        total = int(counts.sum())
        if self.staging is None or len(self.staging[0]) < total:
            capacity = max(total, 0 if self.staging is None else len(self.staging[0]) * 3 // 2)
            self.staging = [np.empty((capacity,) + dset.shape[1:], dtype)
                            for dset, dtype in zip(self.reader.datasets, self.reader.dtypes)]
        arrays = tuple(array[:total] for array in self.staging)
        self.reader.read_into(starts, stops, arrays)
        return RangesRead.of(starts, stops, arrays)

    def send_buffer(self, like, rows):
        """Rows of a send buffer shaped like `like`'s rows (one per dataset, reused, grown when needed)."""
        key = (like.dtype.str, like.shape[1:])
        self.sending = self.sending or {}
        buffer = self.sending.get(key)
        if buffer is None or len(buffer) < rows:
            buffer = self.sending[key] = np.empty((max(rows, 1),) + like.shape[1:], like.dtype)
        return buffer[:rows]

    def close(self):
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.comm is not None:
            self.comm.Free()
            self.comm = None
