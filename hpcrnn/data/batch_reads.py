"""Readers of one rank's samples of a schema v1 file, in the mode hpcrnn.data.read_mode chose, into buffers the
caller owns: `ahead(indices)` asks the kernel to start reading what `read(indices)` will read (page cache
readahead of the same byte ranges), `read(indices)` fetches a group of samples ahead (HDF5 reads of sieved row
ranges into one of two group buffers the reader reuses, or, for direct reads, maps their pages in),
`take(read, indices, out)` fills a batch of those samples in batch order into `out`, `release(read)` lets go
of a read. WindowsReader: stored
samples; SeriesReader: windows cut from one long series on the fly."""
import mmap
from dataclasses import dataclass

import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.data.mapped import POPULATE, MappedDataset, MappedFile
from hpcrnn.data.pagecache import Readahead
from hpcrnn.data.parallel import chunk_length, open_file, read_ranges, row_bytes, transfer_list
from hpcrnn.data.read_mode import datasets_read
from hpcrnn.data.shard import coalesce, merge_ranges, runs_of
from hpcrnn.errors import DataError

SIEVE_GAP_BYTES = 32 << 10   # a gap cheaper to read through than one more hyperslab (~10 us)


@dataclass(frozen=True)
class Samples:
    """Inputs x [n, T, F], targets y ([n, O], [n, T, O] or int64 labels [n]) and int64 lengths [n] (None
    without /lengths) of n samples."""
    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray | None

    def first(self, count):
        """Views of the first count samples."""
        return Samples(self.x[:count], self.y[:count], None if self.lengths is None else self.lengths[:count])


def range_offsets(counts):
    """Where each of consecutive pieces of `counts` rows begins when they are stored back to back (int64)."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


@dataclass(frozen=True)
class RangesRead:
    """An HDF5 read: row range i of the file, from starts[i] on, lies at offsets[i] of every array of `arrays`
    (one per dataset read, in datasets_read order, in the dtype the batch wants)."""
    starts: np.ndarray
    offsets: np.ndarray
    arrays: tuple

    @classmethod
    def of(cls, starts, stops, arrays):
        """The read of the sorted disjoint row ranges [starts[i], stops[i]) stored back to back in arrays."""
        return cls(starts, range_offsets(stops - starts), arrays)

    def positions(self, rows):
        """Positions in `arrays` of the global rows (each inside one of the ranges read)."""
        which = np.searchsorted(self.starts, rows, side="right") - 1
        return self.offsets[which] + rows - self.starts[which]


@dataclass(frozen=True)
class PagesMapped:
    """A direct read: the pages under the row ranges [starts[i], stops[i]) are mapped in (dropped on release)."""
    starts: np.ndarray
    stops: np.ndarray


def open_reader(info, comm, mode, dtype):
    """The reader of info's form in `mode` (from read_mode); collective opens the file with mpio on a duplicate
    of comm; two-phase wraps an independent reader (hpcrnn.data.two_phase). Batches come in `dtype` (labels and
    lengths int64)."""
    if mode == "two-phase":
        from hpcrnn.data.two_phase import TwoPhaseReader
        return TwoPhaseReader(info, comm, np.dtype(dtype))
    kind = SeriesReader if info.form == "series" else WindowsReader
    return kind(info, comm, mode, np.dtype(dtype))


class _Reader:
    def __init__(self, info, comm, mode, dtype):
        self.info, self.mode, self.dtype = info, mode, dtype
        self.collective = mode == "collective"
        self.file, self.dup = open_file(info.path, comm, "r", collective=self.collective)
        if self.dup is not None:
            mpi.close_at_exit(self)       # an mpio file must close before MPI_Finalize, even if left open
        self.datasets = [self.file[name] for name in datasets_read(info)]
        self.dxpl = transfer_list(self.collective)
        self.groups, self.groups_read = [None, None], 0
        self.mapping, self.mapped, self.dropped = None, None, []
        self.scratch = [None] * len(self.datasets)     # direct reads into another dtype: the file's rows
        self.readahead = None
        if mode == "direct":
            self.map_datasets()
        if not self.collective:                         # collective reads: the aggregators read, not this rank
            layouts = [dataset.layout for dataset in self.mapped] if self.mapped else None
            self.readahead = Readahead(info.path, self.datasets, layouts)

    def map_datasets(self):
        try:
            self.mapping = MappedFile(self.info.path)
            self.mapped = [MappedDataset(self.mapping, dset) for dset in self.datasets]
        except (OSError, ValueError) as error:       # read_mode found it mappable: it changed since
            self.close()
            raise DataError(f"{self.info.path}: cannot be memory-mapped any more ({error})") from None

    # ---- what a read reads ----------------------------------------------------------------------------------
    def read(self, indices):
        """Reads the samples at distinct global indices (any order), for take(): maps their pages in (direct
        reads) or reads their rows into the next group buffer."""
        starts, stops = self.sieved(*self.row_ranges(indices))
        if self.mapped is not None:
            return self.map_ahead(starts, stops)
        return self.read_rows(starts, stops, self.dtypes)

    def ahead(self, indices):
        """Asks the kernel to start reading what read(indices) will read (without waiting for it)."""
        self.ahead_rows(*self.sieved(*self.row_ranges(indices)))

    def ahead_rows(self, starts, stops):
        """Asks the kernel to start reading the row ranges of every dataset read (a hint; none for
        collective reads, which aggregators make)."""
        if self.readahead is not None:
            self.readahead.rows(starts, stops)

    def sieved(self, starts, stops):
        """The sorted disjoint row ranges joined across gaps of less than SIEVE_GAP_BYTES: all of them for
        direct reads (few madvise calls; a gap costs no copy), while the rows added stay at most the rows
        wanted for HDF5 reads (they are copied)."""
        wanted = int(np.sum(stops - starts))
        budget = int(stops[-1] - starts[0]) if self.mapped is not None and len(starts) else wanted
        return coalesce(starts, stops, budget, SIEVE_GAP_BYTES // max(self.row_bytes, 1))

    # ---- HDF5 reads ---------------------------------------------------------------------------------------
    def read_rows(self, starts, stops, dtypes):
        """Reads the sorted disjoint row ranges into the next group buffer, in `dtypes` (one per dataset)."""
        arrays = self.group_buffer(int((stops - starts).sum()), dtypes)
        self.read_into(starts, stops, arrays)
        return RangesRead.of(starts, stops, arrays)

    def read_into(self, starts, stops, arrays):
        """Reads the sorted disjoint row ranges of every dataset into `arrays` (one per dataset, rows back to
        back); collective reads make as many calls on every rank."""
        calls = mpi.max_value(self.dup, len(starts)) if self.collective else len(starts)
        for dset, array in zip(self.datasets, arrays):
            read_ranges(dset, starts, stops, array, self.dxpl, calls)

    def group_buffer(self, rows, dtypes):
        """Views of `rows` rows of the next of two group buffers (one array per dataset): one is filled while
        batches are taken from the other, and a group is read only after the one two before it was released
        (Prefetcher). A buffer grows (by half at least, untouched pages cost no memory), it is never freed."""
        slot, self.groups_read = self.groups_read % 2, self.groups_read + 1
        arrays = self.groups[slot]
        if arrays is None or len(arrays[0]) < rows:
            capacity = max(rows, 0 if arrays is None else len(arrays[0]) * 3 // 2)
            arrays = self.groups[slot] = [np.empty((capacity,) + dset.shape[1:], dtype)
                                          for dset, dtype in zip(self.datasets, dtypes)]
        return tuple(array[:rows] for array in arrays)

    # ---- direct reads ---------------------------------------------------------------------------------------
    def map_ahead(self, starts, stops):
        """Drops the pages of released reads, then maps in the pages under the sorted row ranges."""
        while self.dropped:
            self.advise(self.dropped.pop(), mmap.MADV_DONTNEED)
        pages = PagesMapped(starts, stops)
        self.advise(pages, POPULATE)
        return pages

    def advise(self, pages, advice):
        for dataset in self.mapped:
            dataset.advise(pages.starts, pages.stops, advice)

    def gather(self, which, starts, count, out):
        """Copies rows of dataset `which` from the map into out (see MappedDataset.gather), converting to
        out's dtype through a scratch buffer the reader keeps when the file's dtype differs."""
        dataset = self.mapped[which]
        if out.dtype == dataset.dtype:
            dataset.gather(starts, count, out)
            return
        size = out.size
        if self.scratch[which] is None or self.scratch[which].size < size:
            self.scratch[which] = np.empty(size, dataset.dtype)
        raw = self.scratch[which][:size].reshape(out.shape)
        np.copyto(out, dataset.gather(starts, count, raw), casting="unsafe")

    def release(self, read):
        """Done with what read() returned: direct reads drop its pages from this process at the start of the
        next read(), which the prefetch thread makes (so the consumer does not pay for it)."""
        if isinstance(read, PagesMapped):
            self.dropped.append(read)

    def close(self):
        if self.readahead is not None:
            self.readahead.close()
            self.readahead = None
        if self.mapping is not None:
            self.mapping.close()
        self.mapping, self.mapped, self.dropped = None, None, []
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.dup is not None:
            self.dup.Free()
            self.dup = None


class WindowsReader(_Reader):
    """Samples stored as /inputs [N,T,F] with /targets or /labels (and /lengths)."""

    def __init__(self, info, comm, mode, dtype):
        super().__init__(info, comm, mode, dtype)
        self.block_size = chunk_length(self.datasets[0])
        self.sample_bytes = sum(row_bytes(dset) for dset in self.datasets[:2]) + (8 if info.has_lengths else 0)
        self.row_bytes = self.sample_bytes
        target = np.dtype(np.int64) if info.task == "classification" else dtype
        self.dtypes = (dtype, target, np.dtype(np.int64))[:len(self.datasets)]

    def samples(self, capacity):
        """Batch buffers for up to `capacity` samples, to fill with take() again and again."""
        x, target = self.datasets[:2]
        return Samples(np.empty((capacity,) + x.shape[1:], self.dtype),
                       np.empty((capacity,) + target.shape[1:], self.dtypes[1]),
                       np.empty(capacity, np.int64) if self.info.has_lengths else None)

    def row_ranges(self, indices):
        """The sorted disjoint row ranges under the samples at distinct global indices (any order)."""
        return runs_of(np.sort(np.asarray(indices, dtype=np.int64)))

    def take(self, read, indices, out):
        """The samples at global indices (all among those read), in that order, in out.first(len(indices))."""
        rows = np.asarray(indices, dtype=np.int64)
        batch = out.first(len(rows))
        targets = [array for array in (batch.x, batch.y, batch.lengths) if array is not None]
        if self.mapped is not None:
            for which, target in enumerate(targets):
                self.gather(which, rows, None, target)
            return batch
        positions = read.positions(rows)
        for array, target in zip(read.arrays, targets):
            np.take(array, positions, axis=0, out=target, mode="clip")   # "clip": no buffering of out
        return batch


class SeriesReader(_Reader):
    """Windows cut from /series [S,F]: window i is rows [i*stride, i*stride+lookback) and its target the
    next horizon rows of target_columns, flattened."""

    def __init__(self, info, comm, mode, dtype):
        super().__init__(info, comm, mode, dtype)
        series = self.datasets[0]
        self.block_size = max(1, chunk_length(series) // info.stride)
        self.row_bytes = info.num_features * series.dtype.itemsize
        self.sample_bytes = info.stride * self.row_bytes
        self.dtypes = (dtype,)
        self.span = info.lookback + info.horizon
        self.columns = np.asarray(info.target_columns, dtype=np.int64)
        self.future = None            # direct reads: the horizon rows of a batch, in the file's dtype

    def samples(self, capacity):
        """Batch buffers for up to `capacity` windows, to fill with take() again and again."""
        info = self.info
        return Samples(np.empty((capacity, info.lookback, info.num_features), self.dtype),
                       np.empty((capacity, info.output_size), self.dtype), None)

    def row_ranges(self, indices):
        """The sorted disjoint row ranges under the windows at distinct global indices, any order (lookback and
        horizon included)."""
        row_starts = np.sort(np.asarray(indices, dtype=np.int64)) * self.info.stride
        return merge_ranges(row_starts, row_starts + self.span)

    def take(self, read, indices, out):
        """x [b,lookback,F] and y [b,horizon*len(target_columns)] of the windows at global indices, in
        out.first(len(indices))."""
        info, count = self.info, len(indices)
        batch = out.first(count)
        starts = np.asarray(indices, dtype=np.int64) * info.stride
        y = batch.y.reshape(count, info.horizon, len(self.columns))
        if self.mapped is not None:
            self.gather(0, starts, info.lookback, batch.x)
            future = self.future_rows(count)
            self.mapped[0].gather(starts + info.lookback, info.horizon, future)
            for k, column in enumerate(self.columns.tolist()):
                np.copyto(y[:, :, k], future[:, :, column], casting="unsafe")
            return batch
        rows = read.arrays[0]
        first = read.positions(starts)
        steps = (first[:, None] + np.arange(info.lookback)).ravel()
        np.take(rows, steps, axis=0, out=batch.x.reshape(count * info.lookback, info.num_features), mode="clip")
        ahead = first[:, None, None] + info.lookback + np.arange(info.horizon)[None, :, None]
        np.take(rows.reshape(-1), (ahead * info.num_features + self.columns).ravel(), out=y.reshape(-1), mode="clip")
        return batch

    def future_rows(self, count):
        """A [count, horizon, F] buffer in the file's dtype for the horizon rows of direct reads (kept)."""
        shape = (count, self.info.horizon, self.info.num_features)
        if self.future is None or len(self.future) < count:
            self.future = np.empty(shape, self.mapped[0].dtype)
        return self.future[:count]
