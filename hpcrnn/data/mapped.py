"""Direct reads of uncompressed HDF5 datasets through a read-only memory map of the file.

HDF5 gives the byte address of every chunk (H5Dget_chunk_info_by_coord); a chunk of a dataset chunked along
its first axis only holds whole rows in C order, so a row is a plain byte range of the file. Rows are then
copied straight from the page cache into the batch in the order the batch wants them: one copy, where an
HDF5 read of a shuffled batch is a read into a buffer plus a gather. Reading a group ahead is
madvise(MADV_POPULATE_READ) on the blocks it needs (reads what is not cached and maps it in, so the copies
take no page faults; run in the prefetch thread, the GIL released); after a group is consumed its pages
are dropped from this process (MADV_DONTNEED), so resident memory stays bounded by the buffer. The map is
MADV_RANDOM (no fault readahead around rows no batch wants), so on a cold page cache POPULATE alone reads
one 4 KiB page at a time: the reader first asks for the same byte ranges with posix_fadvise(WILLNEED)
(hpcrnn.data.pagecache.Readahead), large reads the kernel queues at once, and POPULATE only waits for them.

Used for independent reads of files that allow it (see `why_not_mapped`); HDF5 reads are used otherwise."""
import ctypes
import errno
import mmap
import os

import h5py
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from hpcrnn.data.pagecache import RowBytes, chunk_layout, page_ranges
from hpcrnn.data.parallel import row_bytes as dataset_row_bytes

POPULATE = 22                   # MADV_POPULATE_READ (Linux >= 5.14)
_POPULATE_WORKS = True
_madvise = ctypes.CDLL(None, use_errno=True).madvise
_madvise.argtypes = [ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
_madvise.restype = ctypes.c_int


@intrinsic
def _memcpy(typingctx, destination, source, nbytes):
    """memcpy(destination, source, nbytes) on integer addresses."""
    signature = types.void(types.intp, types.intp, types.intp)

    def codegen(context, builder, sig, args):
        destination, source, nbytes = args
        void_pointer = cgutils.voidptr_t
        cgutils.raw_memcpy(builder, builder.inttoptr(destination, void_pointer),
                           builder.inttoptr(source, void_pointer), nbytes, 1)
    return signature, codegen


@njit(nogil=True, cache=True)
def copy_rows(base, chunk_address, chunk_rows, row_bytes, starts, count, destination):
    """Copies rows [starts[i], starts[i]+count) of a dataset mapped at `base` (chunk k of chunk_rows rows at
    byte base+chunk_address[k]) to destination + i*count*row_bytes, splitting runs at chunk boundaries."""
    out = destination
    for i in range(starts.shape[0]):
        row = starts[i]
        end = row + count
        while row < end:
            chunk = row // chunk_rows
            stop = min(end, (chunk + 1) * chunk_rows)
            nbytes = (stop - row) * row_bytes
            _memcpy(out, base + chunk_address[chunk] + (row - chunk * chunk_rows) * row_bytes, nbytes)
            out += nbytes
            row = stop


def why_not_mappable(dset):
    """None when dset's rows can be read as byte ranges of its file, else the reason (a short phrase)."""
    if dset.dtype.byteorder not in ("<", "=", "|") or dset.dtype.kind not in "fiub":
        return f"dtype {dset.dtype.str} is not a native number"
    if dset.ndim < 1 or dset.shape[0] == 0:
        return "empty dataset"
    plist = dset.id.get_create_plist()
    if plist.get_nfilters() > 0:
        return "filtered (compressed) chunks"
    if dset.chunks is not None and tuple(dset.chunks[1:]) != tuple(dset.shape[1:]):
        return "chunked along more than the first axis"
    if dset.external:
        return "external storage"
    return None


def why_not_in_file(addresses, sizes, file_size):
    """None when every chunk (chunk_layout) is allocated and inside the first file_size bytes of the file,
    else the reason: reading a missing chunk through the map would crash the process."""
    if any(address is None for address in addresses):
        return "unallocated chunks"
    if addresses and max(a + z for a, z in zip(addresses, sizes)) > file_size:
        return "chunks beyond the end of the file (truncated)"
    return None


def why_not_mapped(path, names):
    """None when the datasets `names` of the file at path can all be read through a memory map of it, else
    the reason, naming the dataset (its layout does not allow it, or the file is cut short)."""
    file_size = os.path.getsize(path)
    with h5py.File(path, "r") as handle:
        for name in names:
            dset = handle[name]
            reason = why_not_mappable(dset) or why_not_in_file(*chunk_layout(dset)[1:], file_size)
            if reason:
                return f"/{name}: {reason}"
    return None


class MappedFile:
    """A read-only memory map of a whole file; `base` is its address. Close it only when no array gathered
    from it is in use by the kernels (gathered arrays are copies, so that is any time after a copy)."""

    def __init__(self, path):
        self.path = path
        descriptor = os.open(path, os.O_RDONLY)
        try:
            self.size = os.fstat(descriptor).st_size
            self.map = mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(descriptor)
        self.map.madvise(mmap.MADV_RANDOM)       # no fault readahead: advise() says what to read
        self.view = np.frombuffer(self.map, dtype=np.uint8)
        self.base = self.view.ctypes.data

    def advise(self, begin, end, advice):
        """madvise over the byte ranges [begin[i], end[i]) of the file, widened to whole pages and merged.
        advice POPULATE maps the pages in (reading them if need be), on kernels older than Linux 5.14 it
        becomes MADV_WILLNEED (asynchronous readahead). The GIL is released during each call."""
        if len(begin) == 0 or self.map is None:      # never advise an address range that is no longer ours
            return
        first, last = page_ranges(begin, end, self.size)
        global _POPULATE_WORKS
        for a, z in zip(first.tolist(), last.tolist()):
            if z <= a:
                continue
            if advice == POPULATE and not _POPULATE_WORKS:
                advice = mmap.MADV_WILLNEED
            if _madvise(self.base + a, z - a, advice) != 0:
                number = ctypes.get_errno()
                if advice == POPULATE and number == errno.EINVAL:
                    _POPULATE_WORKS, advice = False, mmap.MADV_WILLNEED
                    _madvise(self.base + a, z - a, advice)
                elif advice == POPULATE:        # EFAULT or EIO: the file shrank under the map or cannot be read
                    raise OSError(number, f"{self.path}: cannot read ahead ({os.strerror(number)})")

    def close(self):
        if self.map is not None:
            mapping, self.map = self.map, None
            del self.view
            try:
                mapping.close()
            except BufferError:                 # an array still exports it: unmapped when that is freed
                pass


class MappedDataset:
    """Row access to one dataset of a MappedFile. Raises ValueError when a chunk is unallocated or lies
    beyond the end of the file (a truncated file): reading it through the map would crash the process."""

    def __init__(self, mapped, dset):
        self.file = mapped
        self.shape, self.dtype = tuple(dset.shape), dset.dtype
        self.rows = self.shape[0]
        self.row_bytes = dataset_row_bytes(dset)
        self.chunk_rows, addresses, sizes = chunk_layout(dset)
        reason = why_not_in_file(addresses, sizes, mapped.size)
        if reason:
            raise ValueError(f"{dset.name}: {reason}")
        self.layout = RowBytes(dset, (self.chunk_rows, addresses, sizes))
        self.address = self.layout.address

    def gather(self, starts, count=None, out=None):
        """The rows at `starts` ([len(starts), *shape[1:]]), or with count the runs of `count` rows beginning
        at each of starts ([len(starts), count, *shape[1:]]), copied from the file in the order given, into
        `out` when given (C-contiguous, of that shape and the dataset's dtype), else into a new array."""
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        lead = (len(starts),) if count is None else (len(starts), int(count))
        count = 1 if count is None else int(count)
        if out is None:
            out = np.empty(lead + self.shape[1:], dtype=self.dtype)
        elif out.shape != lead + self.shape[1:] or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous {self.dtype} {lead + self.shape[1:]}, got "
                             f"{out.dtype} {out.shape}")
        if len(starts):
            if int(starts.min()) < 0 or int(starts.max()) + count > self.rows:
                raise IndexError(f"rows {int(starts.min())}..{int(starts.max()) + count} outside 0..{self.rows}")
            copy_rows(self.file.base, self.address, self.chunk_rows, self.row_bytes, starts, count,
                      out.ctypes.data)
        return out

    def byte_ranges(self, starts, stops):
        """File byte ranges (begin, end) under the row ranges [starts[i], stops[i]), split at chunks."""
        return self.layout.byte_ranges(starts, stops)

    def advise(self, starts, stops, advice):
        """madvise (mmap.MADV_WILLNEED or MADV_DONTNEED) the pages under row ranges [starts, stops)."""
        self.file.advise(*self.byte_ranges(starts, stops), advice)
