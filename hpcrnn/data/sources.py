"""Readers of one rank's samples from a schema v1 file: `read(sorted indices)` fetches the rows under them as
hyperslab unions (collective or independent, lightly sieved) and `take(indices)` cuts a batch from what was
read. One class per form: windows (stored samples) and series (windows cut on the fly)."""
import atexit

import numpy as np

from hpcrnn.data.parallel import calls_needed, chunk_length, open_file, read_ranges, transfer_list
from hpcrnn.data.shard import coalesce, merge_ranges, runs_of

SIEVE_GAP_BYTES = 32 << 10   # a gap cheaper to read through than one more hyperslab (~10 us)


def open_source(info, comm, collective, dtype):
    """The reader for info's form; collective=True opens the file with mpio on a duplicate of comm."""
    kind = SeriesSource if info.form == "series" else WindowsSource
    return kind(info, comm, collective, np.dtype(dtype))


class _Source:
    def __init__(self, info, comm, collective, dtype):
        self.info, self.dtype = info, dtype
        self.collective = bool(collective)
        self.file, self.dup = open_file(info.path, comm, "r", collective=self.collective)
        self.dxpl = transfer_list(self.collective)
        if self.dup is not None:          # an mpio file must close before MPI_Finalize, even if left open
            atexit.register(self.close)

    def ranges(self, starts, stops, row_bytes):
        """Sieved ranges to read for the wanted ranges (at most as many extra rows as wanted rows), their
        offsets in the read buffer, and the number of read calls agreed with the other ranks."""
        wanted = int(np.sum(stops - starts))
        starts, stops = coalesce(starts, stops, wanted, SIEVE_GAP_BYTES // max(row_bytes, 1))
        offsets = np.concatenate([[0], np.cumsum(stops - starts)[:-1]]).astype(np.int64)
        calls = calls_needed(len(starts), self.dup if self.collective else None)
        return starts, stops, offsets, calls

    @staticmethod
    def positions(arrays, rows):
        """Buffer positions of the global rows (each inside one of the ranges read)."""
        which = np.searchsorted(arrays["starts"], rows, side="right") - 1
        return arrays["offsets"][which] + rows - arrays["starts"][which]

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.dup is not None:
            self.dup.Free()
            self.dup = None


class WindowsSource(_Source):
    """Samples stored as /inputs [N,T,F] with /targets or /labels (and /lengths)."""

    def __init__(self, info, comm, collective, dtype):
        super().__init__(info, comm, collective, dtype)
        self.inputs = self.file["inputs"]
        self.target = self.file[info.target_name]
        self.lengths = self.file["lengths"] if info.has_lengths else None
        self.block_size = chunk_length(self.inputs)
        row = lambda dset: dset.dtype.itemsize * int(np.prod(dset.shape[1:], dtype=np.int64))
        self.sample_bytes = row(self.inputs) + row(self.target) + (8 if self.lengths is not None else 0)

    def read(self, indices):
        """Reads the samples at sorted, distinct global indices; returns the arrays for take()."""
        starts, stops, offsets, calls = self.ranges(*runs_of(indices), self.sample_bytes)
        target_dtype = np.int64 if self.info.task == "classification" else self.dtype
        arrays = {"starts": starts, "offsets": offsets,
                  "x": read_ranges(self.inputs, starts, stops, self.dxpl, self.dtype, calls),
                  "y": read_ranges(self.target, starts, stops, self.dxpl, target_dtype, calls)}
        if self.lengths is not None:
            arrays["lengths"] = read_ranges(self.lengths, starts, stops, self.dxpl, np.int64, calls)
        return arrays

    def take(self, arrays, indices):
        """(x, y, lengths) of the samples at global indices (all among those read), in that order."""
        positions = self.positions(arrays, np.asarray(indices, dtype=np.int64))
        if len(positions) and positions[-1] - positions[0] == len(positions) - 1 and np.all(np.diff(positions) == 1):
            positions = slice(int(positions[0]), int(positions[-1]) + 1)       # in order: views, no copy
        lengths = arrays["lengths"][positions] if "lengths" in arrays else None
        return arrays["x"][positions], arrays["y"][positions], lengths


class SeriesSource(_Source):
    """Windows cut from /series [S,F]: window i is rows [i*stride, i*stride+lookback) and its target the
    next horizon rows of target_columns, flattened."""

    def __init__(self, info, comm, collective, dtype):
        super().__init__(info, comm, collective, dtype)
        self.series = self.file["series"]
        self.block_size = max(1, chunk_length(self.series) // info.stride)
        self.row_bytes = info.num_features * self.series.dtype.itemsize
        self.sample_bytes = info.stride * self.row_bytes
        self.span = info.lookback + info.horizon

    def read(self, indices):
        """Reads the rows under the windows at sorted global indices (lookback and horizon included)."""
        row_starts = np.asarray(indices, dtype=np.int64) * self.info.stride
        wanted = merge_ranges(row_starts, row_starts + self.span)
        starts, stops, offsets, calls = self.ranges(*wanted, self.row_bytes)
        rows = read_ranges(self.series, starts, stops, self.dxpl, self.dtype, calls)
        return {"rows": rows, "starts": starts, "offsets": offsets}

    def take(self, arrays, indices):
        """(x [b,lookback,F], y [b,horizon*len(target_columns)], None) of the windows at global indices."""
        info = self.info
        positions = self.positions(arrays, np.asarray(indices, dtype=np.int64) * info.stride)
        rows = arrays["rows"]
        x = rows[positions[:, None] + np.arange(info.lookback)]
        future = rows[positions[:, None] + info.lookback + np.arange(info.horizon)]
        y = future[:, :, list(info.target_columns)].reshape(len(positions), info.output_size)
        return x, y, None
