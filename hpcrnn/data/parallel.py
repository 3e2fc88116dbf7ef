"""HDF5 access shared by the data package: opening (serial or mpio), reads of row ranges into buffers the caller
owns and writes of rows (collective or independent, with empty selections that never hang), chunk sizing.
`comm` is always a communicator (COMM_SELF when serial); agreement on errors is hpcrnn.comm.agree."""
import h5py
import numpy as np

from hpcrnn.errors import DataError

CHUNK_TARGET_BYTES = 2 << 20


def mpio_available(comm):
    """True when reads/writes through comm can use the mpio driver (more than one rank, h5py with MPI)."""
    return comm.size > 1 and h5py.get_config().mpi


def attempt(path, function, *args, **kwargs):
    """Calls function; returns (value, None), or (None, one-line message naming path) if it raised DataError
    or a read error (OSError and the like), so that the caller can agree on it with the other ranks
    (hpcrnn.comm.agree)."""
    try:
        return function(*args, **kwargs), None
    except DataError as error:
        return None, str(error)
    except (OSError, KeyError, ValueError, TypeError) as error:
        text = " ".join(str(error).split())
        return None, f"{path}: cannot be read, truncated or corrupt ({type(error).__name__}: {text})"


def open_file(path, comm, mode="r", collective=True):
    """Opens path with the mpio driver on a duplicate of comm (when available and collective), else with the
    default driver. Returns (file, dup_comm or None); the caller frees dup_comm after closing the file."""
    if collective and mpio_available(comm):
        dup = comm.Dup()
        return h5py.File(path, mode, driver="mpio", comm=dup), dup
    return h5py.File(path, mode), None


def transfer_list(collective):
    """A dataset transfer property list: collective MPI-IO when asked, else the default."""
    dxpl = h5py.h5p.create(h5py.h5p.DATASET_XFER)
    if collective:
        dxpl.set_dxpl_mpio(h5py.h5fd.MPIO_COLLECTIVE)
    return dxpl


def _file_space(dset, starts, stops):
    """File dataspace selecting the union of row ranges (all of the other axes)."""
    space = dset.id.get_space()
    space.select_none()
    rest = dset.shape[1:]
    for start, stop in zip(starts, stops):
        space.select_hyperslab((int(start),) + (0,) * len(rest), (int(stop - start),) + tuple(rest),
                               op=h5py.h5s.SELECT_OR)
    return space


def _read_none(dset, dxpl, dtype):
    """Takes part in a (collective) read with an empty selection."""
    rest = tuple(dset.shape[1:])
    file_space = dset.id.get_space()
    file_space.select_none()
    memory_space = h5py.h5s.create_simple((1,) + rest)
    memory_space.select_none()
    dset.id.read(memory_space, file_space, np.empty((1,) + rest, dtype=dtype), dxpl=dxpl)


def read_ranges(dset, starts, stops, out, dxpl, calls=0):
    """Reads the sorted, disjoint row ranges [starts[i], stops[i]) of dset into the first sum(stops - starts)
    rows of `out` (C-contiguous, writable, of the dtype wanted: HDF5 converts), one read call per range: a
    single regular hyperslab keeps HDF5 on its fast path, where a union of many is slow to build and to read
    (HDF5 1.10 iterates it in pieces of one innermost row). `calls` beyond the ranges take part with an empty
    selection, so collective reads stay matched across ranks (an empty h5py selection would skip the call
    and hang the others). Returns the rows filled (a view of out)."""
    rest = tuple(dset.shape[1:])
    counts = np.asarray(stops, dtype=np.int64) - np.asarray(starts, dtype=np.int64)
    filled = out[:int(counts.sum())]
    file_space = dset.id.get_space()
    position = 0
    for start, count in zip(np.asarray(starts).tolist(), counts.tolist()):
        target = filled[position:position + count]
        file_space.select_hyperslab((start,) + (0,) * len(rest), (count,) + rest)
        dset.id.read(h5py.h5s.create_simple(target.shape), file_space, target, dxpl=dxpl)
        position += count
    for _ in range(len(counts), calls):
        _read_none(dset, dxpl, out.dtype)
    return filled


def write_rows(dset, start, array, dxpl):
    """Writes array into rows [start, start+len(array)) of dset; with zero rows it takes part in a
    collective write with a none-selection."""
    array = np.ascontiguousarray(array, dtype=dset.dtype)
    rest = tuple(dset.shape[1:])
    if len(array) == 0:
        file_space = dset.id.get_space()
        file_space.select_none()
        memory_space = h5py.h5s.create_simple((1,) + rest)
        memory_space.select_none()
        dset.id.write(memory_space, file_space, np.zeros((1,) + rest, dtype=dset.dtype), dxpl=dxpl)
        return
    memory_space = h5py.h5s.create_simple(array.shape)
    dset.id.write(memory_space, _file_space(dset, [start], [start + len(array)]), array, dxpl=dxpl)


def chunk_rows(row_bytes, rows, target_bytes=CHUNK_TARGET_BYTES):
    """Rows per chunk for a dataset chunked along its first axis in pieces of about target_bytes."""
    return int(max(1, min(max(rows, 1), target_bytes // max(int(row_bytes), 1))))


def row_bytes(dset):
    """Bytes of one row (one index along the first axis) of a dataset or array."""
    return dset.dtype.itemsize * int(np.prod(dset.shape[1:], dtype=np.int64))


def chunk_length(dset, default_bytes=CHUNK_TARGET_BYTES):
    """Rows per chunk of dset along axis 0 (for a contiguous dataset: rows of about default_bytes)."""
    if dset.chunks is not None:
        return int(dset.chunks[0])
    return chunk_rows(row_bytes(dset), dset.shape[0], default_bytes)
