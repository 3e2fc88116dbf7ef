"""Readers of one rank's samples from a schema v1 file: `read(indices)` fetches the rows under them (HDF5
reads of lightly sieved row ranges, collective or independent) or, for direct reads, maps their pages in;
`take(indices)` cuts a batch from what was read (direct: copies the rows straight from the memory-mapped
file in batch order); `release` lets go of a read. One class per form: windows (stored samples) and series
(windows cut on the fly)."""
import mmap

import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.data.mapped import POPULATE, MappedDataset, MappedFile, why_not_mappable
from hpcrnn.data.parallel import chunk_length, open_file, read_ranges, transfer_list
from hpcrnn.data.shard import coalesce, merge_ranges, runs_of

SIEVE_GAP_BYTES = 32 << 10   # a gap cheaper to read through than one more hyperslab (~10 us)


def open_source(info, comm, reads, dtype):
    """The reader for info's form. reads: "collective" opens the file with mpio on a duplicate of comm,
    "direct" maps it (falling back to "independent" HDF5 reads where the file does not allow it)."""
    kind = SeriesSource if info.form == "series" else WindowsSource
    return kind(info, comm, reads, np.dtype(dtype))


class _Source:
    def __init__(self, info, comm, reads, dtype):
        self.info, self.dtype, self.reads = info, dtype, reads
        self.collective = reads == "collective"
        self.file, self.dup = open_file(info.path, comm, "r", collective=self.collective)
        self.dxpl = transfer_list(self.collective)
        self.mapping, self.mapped, self.dropped = None, None, []
        if self.dup is not None:          # an mpio file must close before MPI_Finalize, even if left open
            mpi.close_at_exit(self)

    def map_datasets(self, *dsets):
        """Sets self.mapped to MappedDatasets of dsets when direct reads were asked for and every one of
        them allows it; otherwise reads become "independent" HDF5 reads."""
        if self.reads != "direct":
            return
        if not any(why_not_mappable(dset) for dset in dsets):
            try:
                self.mapping = MappedFile(self.info.path)
                self.mapped = [MappedDataset(self.mapping, dset) for dset in dsets]
                return
            except (OSError, ValueError):      # e.g. truncated: HDF5 reads then report it properly
                self.close_mapping()
        self.reads = "independent"

    def advise(self, starts, stops, advice):
        for dataset in self.mapped:
            dataset.advise(starts, stops, advice)

    def release(self, arrays):
        """Done with what read() returned: direct reads drop its pages from this process at the start of
        the next read(), which the prefetch thread makes (so the consumer does not pay for it)."""
        if self.mapped is not None and "advised" in arrays:
            self.dropped.append(arrays["advised"])

    def map_ahead(self, starts, stops):
        """Direct reads: drops the pages of released reads, then maps in the pages under the row ranges."""
        while self.dropped:
            self.advise(*self.dropped.pop(), mmap.MADV_DONTNEED)
        self.advise(starts, stops, POPULATE)
        return {"advised": (starts, stops)}

    @staticmethod
    def wanted(starts, stops, row_bytes):
        """Row ranges to advise for direct reads of the row ranges [starts, stops) (any order): those ranges
        merged and joined across every gap of less than SIEVE_GAP_BYTES (few madvise calls)."""
        starts, stops = np.asarray(starts, dtype=np.int64), np.asarray(stops, dtype=np.int64)
        order = np.argsort(starts, kind="stable")
        starts, stops = merge_ranges(starts[order], stops[order])
        span = int(stops[-1] - starts[0]) if len(starts) else 0
        return coalesce(starts, stops, span, SIEVE_GAP_BYTES // max(row_bytes, 1))

    def close_mapping(self):
        if self.mapping is not None:
            self.mapping.close()
        self.mapping, self.mapped, self.dropped = None, None, []

    def ranges(self, starts, stops, row_bytes):
        """Sieved ranges to read for the wanted ranges (at most as many extra rows as wanted rows), their
        offsets in the read buffer, and the number of read calls agreed with the other ranks."""
        wanted = int(np.sum(stops - starts))
        starts, stops = coalesce(starts, stops, wanted, SIEVE_GAP_BYTES // max(row_bytes, 1))
        offsets = np.concatenate([[0], np.cumsum(stops - starts)[:-1]]).astype(np.int64)
        calls = mpi.max_value(self.dup, len(starts)) if self.collective else len(starts)
        return starts, stops, offsets, calls

    @staticmethod
    def positions(arrays, rows):
        """Buffer positions of the global rows (each inside one of the ranges read)."""
        which = np.searchsorted(arrays["starts"], rows, side="right") - 1
        return arrays["offsets"][which] + rows - arrays["starts"][which]

    def close(self):
        self.close_mapping()
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.dup is not None:
            self.dup.Free()
            self.dup = None


class WindowsSource(_Source):
    """Samples stored as /inputs [N,T,F] with /targets or /labels (and /lengths)."""

    def __init__(self, info, comm, reads, dtype):
        super().__init__(info, comm, reads, dtype)
        self.inputs = self.file["inputs"]
        self.target = self.file[info.target_name]
        self.lengths = self.file["lengths"] if info.has_lengths else None
        self.block_size = chunk_length(self.inputs)
        row = lambda dset: dset.dtype.itemsize * int(np.prod(dset.shape[1:], dtype=np.int64))
        self.sample_bytes = row(self.inputs) + row(self.target) + (8 if self.lengths is not None else 0)
        self.target_dtype = np.int64 if self.info.task == "classification" else self.dtype
        self.map_datasets(*[d for d in (self.inputs, self.target, self.lengths) if d is not None])

    def read(self, indices):
        """Reads the samples at distinct global indices (any order); returns the arrays for take()."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.mapped is not None:
            advised = self.wanted(indices, indices + 1, self.sample_bytes)
            return self.map_ahead(*advised)
        starts, stops, offsets, calls = self.ranges(*runs_of(np.sort(indices)), self.sample_bytes)
        arrays = {"starts": starts, "offsets": offsets,
                  "x": read_ranges(self.inputs, starts, stops, self.dxpl, self.dtype, calls),
                  "y": read_ranges(self.target, starts, stops, self.dxpl, self.target_dtype, calls)}
        if self.lengths is not None:
            arrays["lengths"] = read_ranges(self.lengths, starts, stops, self.dxpl, np.int64, calls)
        return arrays

    def take(self, arrays, indices):
        """(x, y, lengths) of the samples at global indices (all among those read), in that order."""
        if self.mapped is not None:
            rows = np.asarray(indices, dtype=np.int64)
            x = self.mapped[0].gather(rows).astype(self.dtype, copy=False)
            y = self.mapped[1].gather(rows).astype(self.target_dtype, copy=False)
            lengths = self.mapped[2].gather(rows).astype(np.int64, copy=False) if len(self.mapped) > 2 else None
            return x, y, lengths
        positions = self.positions(arrays, np.asarray(indices, dtype=np.int64))
        if len(positions) and positions[-1] - positions[0] == len(positions) - 1 and np.all(np.diff(positions) == 1):
            positions = slice(int(positions[0]), int(positions[-1]) + 1)       # in order: views, no copy
        lengths = arrays["lengths"][positions] if "lengths" in arrays else None
        return arrays["x"][positions], arrays["y"][positions], lengths


class SeriesSource(_Source):
    """Windows cut from /series [S,F]: window i is rows [i*stride, i*stride+lookback) and its target the
    next horizon rows of target_columns, flattened."""

    def __init__(self, info, comm, reads, dtype):
        super().__init__(info, comm, reads, dtype)
        self.series = self.file["series"]
        self.block_size = max(1, chunk_length(self.series) // info.stride)
        self.row_bytes = info.num_features * self.series.dtype.itemsize
        self.sample_bytes = info.stride * self.row_bytes
        self.span = info.lookback + info.horizon
        self.map_datasets(self.series)

    def read(self, indices):
        """Reads the rows under the windows at distinct global indices, any order (lookback and horizon
        included)."""
        row_starts = np.asarray(indices, dtype=np.int64) * self.info.stride
        if self.mapped is not None:
            advised = self.wanted(row_starts, row_starts + self.span, self.row_bytes)
            return self.map_ahead(*advised)
        row_starts = np.sort(row_starts)
        wanted = merge_ranges(row_starts, row_starts + self.span)
        starts, stops, offsets, calls = self.ranges(*wanted, self.row_bytes)
        rows = read_ranges(self.series, starts, stops, self.dxpl, self.dtype, calls)
        return {"rows": rows, "starts": starts, "offsets": offsets}

    def take(self, arrays, indices):
        """(x [b,lookback,F], y [b,horizon*len(target_columns)], None) of the windows at global indices."""
        info = self.info
        if self.mapped is not None:
            starts = np.asarray(indices, dtype=np.int64) * info.stride
            x = self.mapped[0].gather(starts, info.lookback).astype(self.dtype, copy=False)
            future = self.mapped[0].gather(starts + info.lookback, info.horizon).astype(self.dtype, copy=False)
        else:
            positions = self.positions(arrays, np.asarray(indices, dtype=np.int64) * info.stride)
            rows = arrays["rows"]
            x = rows[positions[:, None] + np.arange(info.lookback)]
            future = rows[positions[:, None] + info.lookback + np.arange(info.horizon)]
        y = future[:, :, list(info.target_columns)].reshape(len(x), info.output_size)
        return x, y, None
