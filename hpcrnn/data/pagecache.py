"""The page cache of a data file: asynchronous readahead of the bytes under row ranges about to be read
(posix_fadvise WILLNEED: large reads the kernel queues at once, where a fault or a read call waits for each),
and dropping or inspecting a file's cached pages (cold-cache benchmarks and tests)."""
import ctypes
import mmap
import os

import numpy as np

from hpcrnn.data.parallel import row_bytes as dataset_row_bytes
from hpcrnn.data.shard import merge_ranges

PAGE = mmap.PAGESIZE
_mincore = ctypes.CDLL(None, use_errno=True).mincore
_mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_mincore.restype = ctypes.c_int


_LAYOUTS = {}          # (file, its size and mtime, dataset) -> chunk_layout: one HDF5 lookup per chunk is slow
_LAYOUTS_KEPT = 16


def chunk_layout(dset):
    """(rows per chunk, byte address of each chunk or None where unallocated, byte size of each) of a dataset
    chunked along its first axis only; a contiguous one is one chunk. Remembered per file version (size and
    modification time): HDF5 1.10 finds each chunk separately (~0.1-0.3 ms each, seconds for a 30 GB file),
    and the read mode check, the map and the readahead all ask."""
    status = os.stat(dset.file.filename)
    key = (os.path.realpath(dset.file.filename), status.st_size, status.st_mtime_ns, dset.name)
    if key not in _LAYOUTS:
        if len(_LAYOUTS) >= _LAYOUTS_KEPT:
            _LAYOUTS.pop(next(iter(_LAYOUTS)))
        _LAYOUTS[key] = _find_chunks(dset)
    return _LAYOUTS[key]


def _find_chunks(dset):
    rows = dset.shape[0]
    if dset.chunks is None:
        row_bytes = dataset_row_bytes(dset)
        return rows, [dset.id.get_offset()], [rows * row_bytes]
    chunk_rows = int(dset.chunks[0])
    corner = (0,) * (dset.ndim - 1)
    infos = [dset.id.get_chunk_info_by_coord((first,) + corner) for first in range(0, rows, chunk_rows)]
    return chunk_rows, [info.byte_offset for info in infos], [info.size for info in infos]


class RowBytes:
    """Where the rows of one dataset chunked along its first axis (or contiguous) lie in its file: the byte
    range under each row range, split at chunks. For filtered (compressed) chunks, whose rows are no byte
    ranges, the whole chunks under the rows.

    With a layout (chunk_layout) every chunk is known; without one, chunks are looked up the first time a
    row range touches them (`dset` must stay open), so building one costs nothing for any file size (HDF5
    1.10's lookup of chunk i takes time growing with i: a whole table is ~n^2 in the chunk count)."""

    def __init__(self, dset, layout=None):
        self.row_bytes = dataset_row_bytes(dset)
        self.whole_chunks = dset.id.get_create_plist().get_nfilters() > 0
        if layout is None and dset.chunks is None:
            layout = _find_chunks(dset)               # contiguous: one lookup
        if layout is not None:
            self.chunk_rows, addresses, sizes = layout
            self.allocated = np.array([a is not None for a in addresses], dtype=bool)
            self.address = np.array([a or 0 for a in addresses], dtype=np.int64)
            self.size = np.asarray(sizes, dtype=np.int64)
            self.known, self.dset = None, None
            return
        self.chunk_rows = int(dset.chunks[0])
        count = -(-dset.shape[0] // self.chunk_rows)
        self.allocated = np.zeros(count, dtype=bool)
        self.address = np.zeros(count, dtype=np.int64)
        self.size = np.zeros(count, dtype=np.int64)
        self.known, self.dset = np.zeros(count, dtype=bool), dset

    def _look_up(self, chunks):
        """Fills in the chunks (indices) not known yet."""
        unknown = chunks[~self.known[chunks]]
        if len(unknown) == 0:
            return
        corner = (0,) * (self.dset.ndim - 1)
        for chunk in np.unique(unknown).tolist():
            info = self.dset.id.get_chunk_info_by_coord((chunk * self.chunk_rows,) + corner)
            self.allocated[chunk] = info.byte_offset is not None
            self.address[chunk], self.size[chunk] = info.byte_offset or 0, info.size
            self.known[chunk] = True

    def byte_ranges(self, starts, stops):
        """File byte ranges (begin, end) under the row ranges [starts[i], stops[i]), split at chunks;
        unallocated chunks are left out."""
        starts = np.asarray(starts, dtype=np.int64)
        stops = np.asarray(stops, dtype=np.int64)
        if len(starts) == 0:
            return starts, stops
        first_chunk, last_chunk = starts // self.chunk_rows, (stops - 1) // self.chunk_rows
        pieces = last_chunk - first_chunk + 1
        owner = np.repeat(np.arange(len(starts)), pieces)
        chunk = first_chunk[owner] + (np.arange(len(owner)) - np.repeat(np.cumsum(pieces) - pieces, pieces))
        if self.known is not None:
            self._look_up(chunk)
        if self.whole_chunks:
            begin = self.address[chunk]
            end = begin + self.size[chunk]
        else:
            low = np.maximum(starts[owner], chunk * self.chunk_rows)
            high = np.minimum(stops[owner], (chunk + 1) * self.chunk_rows)
            begin = self.address[chunk] + (low - chunk * self.chunk_rows) * self.row_bytes
            end = begin + (high - low) * self.row_bytes
        keep = self.allocated[chunk]
        return begin[keep], end[keep]


class Readahead:
    """Asks the kernel to read the bytes under row ranges of some datasets of one file into the page cache,
    without waiting for them (posix_fadvise WILLNEED; the GIL is released). Reads that follow find the
    pages there, or wait only for what is still on its way. A hint: where it cannot be given, nothing is."""

    def __init__(self, path, datasets, layouts=None):
        self.layouts = layouts or [RowBytes(dset) for dset in datasets]
        self.descriptor = os.open(path, os.O_RDONLY)

    def rows(self, starts, stops, which=None):
        """Reads ahead the row ranges [starts[i], stops[i]) (sorted or not) of the datasets `which` (indices,
        default all); returns the bytes asked for."""
        if self.descriptor is None or len(starts) == 0:
            return 0
        begins, ends = [], []
        for index in range(len(self.layouts)) if which is None else which:
            begin, end = self.layouts[index].byte_ranges(starts, stops)
            begins.append(begin)
            ends.append(end)
        return advise(self.descriptor, np.concatenate(begins), np.concatenate(ends), os.POSIX_FADV_WILLNEED)

    def close(self):
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None


def page_ranges(begins, ends, limit=None):
    """The byte ranges [begins[i], ends[i]) (any order) widened to whole pages, ends capped at `limit` when
    given, sorted and merged: (firsts, lasts)."""
    first = (np.asarray(begins, dtype=np.int64) // PAGE) * PAGE
    last = -(-np.asarray(ends, dtype=np.int64) // PAGE) * PAGE
    if limit is not None:
        last = np.minimum(last, limit)
    order = np.argsort(first, kind="stable")
    return merge_ranges(first[order], last[order])


def advise(descriptor, begins, ends, advice):
    """posix_fadvise over the byte ranges [begins[i], ends[i]), widened to pages and merged; returns the bytes
    advised. Errors are ignored: advice is a hint."""
    if len(begins) == 0:
        return 0
    first, last = page_ranges(begins, ends)
    total = 0
    for a, z in zip(first.tolist(), last.tolist()):
        try:
            os.posix_fadvise(descriptor, a, z - a, advice)
            total += z - a
        except OSError:
            pass
    return total


def drop(path):
    """Drops the file's pages from the page cache (written back first; pages a process has mapped stay), as
    after a reboot: the next reads go to the disk. For cold-cache benchmarks and tests; needs no privileges."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)                 # dirty pages cannot be dropped
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def cached_fraction(path, begin=0, end=None):
    """Share of the pages of the file's bytes [begin, end) that are in the page cache (mincore)."""
    size = os.path.getsize(path)
    end = size if end is None else min(int(end), size)
    begin = (int(begin) // PAGE) * PAGE
    if end <= begin:
        return 0.0
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), end - begin, access=mmap.ACCESS_READ, offset=begin)
    try:
        pages = -(-(end - begin) // PAGE)
        flags = np.zeros(pages, dtype=np.uint8)
        view = np.frombuffer(mapping, dtype=np.uint8)
        address = view.ctypes.data
        if _mincore(address, end - begin, flags.ctypes.data) != 0:
            raise OSError(ctypes.get_errno(), f"{path}: mincore failed")
        del view
        return float(np.count_nonzero(flags & 1)) / pages
    finally:
        mapping.close()
