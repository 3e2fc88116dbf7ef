"""The read modes of the batch loader (`READS`, the values of `data.reads`) and the one place that decides which
mode a file is read with, before its reader is opened. Kept light (no h5py at import): config.py imports READS."""
import os

from hpcrnn import comm as mpi
from hpcrnn.errors import DataError

# HDF5 1.10 finds chunk i of a dataset in time growing with i, so the chunk table that direct reads need costs
# ~n^2 in the chunk count n: measured 0.24 s for 4096 chunks and 1.65 s for 14 649 (a 28.6 GiB file of 2 MiB
# chunks) on an AMD EPYC Zen 5; a 1 TiB file would take half an hour. `auto` reads files with more chunks
# independently (no table; as fast on a cold cache, and far above what training consumes when warm).
DIRECT_MAX_CHUNKS = 4096
READS = ("auto", "direct", "independent", "collective", "two-phase")
MATCHED = ("collective", "two-phase")    # every rank makes the same reads (collectives): the Prefetcher matches them
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


def datasets_read(info):
    """Names of the datasets a reader of info's file reads, in the order its reads hold them."""
    if info.form == "series":
        return ("series",)
    return ("inputs", info.target_name.lstrip("/")) + (("lengths",) if info.has_lengths else ())


def read_mode(comm, reads, info):
    """The mode info's file is read with on this rank: "direct", "independent" or "collective" (the loader
    reports it; readers never change it).

    direct: rows copied from a memory map of the file (hpcrnn.data.mapped); a file that does not allow it
    (compressed, cut short, ...) is read with independent HDF5 reads. independent: plain h5py reads on each
    rank. collective: mpio collective reads on a duplicate of comm (h5py with MPI and several ranks, else
    independent). auto: collective on a parallel file system (Lustre, GPFS, BeeGFS, ...) when h5py has MPI,
    where the aggregation of collective MPI-IO keeps P ranks from each pulling whole chunks; direct elsewhere
    (node-local disks, the page cache), where it measured 1.1-1.3x a raw h5py read and collective reads
    0.03x (docs/data-format.md), for files of up to DIRECT_MAX_CHUNKS chunks; independent for larger ones,
    whose chunk table would take long to build (startup stays independent of the file's size). two-phase: each rank reads a contiguous 1/P of every read group's rows with
    independent reads and an Alltoallv hands the rows to the ranks that need them (hpcrnn.data.two_phase)."""
    from hpcrnn.data.mapped import why_not_mapped
    from hpcrnn.data.parallel import mpio_available
    if reads not in READS:
        raise DataError(f"{info.path}: data.reads must be one of {', '.join(READS)}, got {reads!r}")
    if reads == "auto":
        parallel = file_system(info.path) in PARALLEL_FILE_SYSTEMS
        if parallel and mpio_available(comm):
            reads = "collective"
        else:
            reads = "direct" if chunk_count(info.path, datasets_read(info)) <= DIRECT_MAX_CHUNKS else "independent"
    if reads == "collective" and not mpio_available(comm):
        return "independent"
    if reads == "direct" and why_not_mapped(info.path, datasets_read(info)):
        return "independent"
    return reads


def chunk_count(path, names):
    """Chunks of the datasets `names` of the file at path, from their shapes (no chunk is looked up); 0 when
    the file cannot be read (the reader then names the problem)."""
    import h5py
    try:
        with h5py.File(path, "r") as handle:
            total = 0
            for name in names:
                dset = handle[name]
                rows = dset.shape[0] if dset.ndim else 1
                total += -(-rows // dset.chunks[0]) if dset.chunks else 1
            return total
    except (OSError, KeyError, ValueError):
        return 0


def prefetch_allowed(mode, prefetch):
    """Whether a prefetch thread may read in `mode`: collective reads and two-phase exchanges from a second
    thread (on their own duplicate of the communicator) need MPI_THREAD_MULTIPLE."""
    return bool(prefetch) and (mode not in MATCHED or mpi.thread_multiple())
