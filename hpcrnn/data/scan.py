"""Parallel content scan of a data file: each rank checks its run of blocks of samples (NaN/Inf, label and
length ranges, optionally a checksum per data set), then one reduction gives every rank the first offending
index of each kind. `hpcrnn check` scans everything; opening an unstamped classification file scans /labels."""
import h5py
import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.data import checksum
from hpcrnn.data.parallel import attempt, row_bytes as dataset_row_bytes
from hpcrnn.data.read_mode import datasets_read
from hpcrnn.errors import DataError

NONE = np.iinfo(np.int64).max
KEYS = ("inputs", "targets", "lengths", "labels", "label_max")


def scan_file(info, comm, check_finite=True, names=None, block_rows=0):
    """Returns {key: value} reduced over ranks: first bad sample (or row) index per key (NONE when clean),
    label_max, and "digests" {name: checksum} of the data sets scanned when block_rows > 0 (blocks of that
    many rows). names: the data sets to scan (default all). Read errors are agreed on first, so every rank
    raises the same DataError."""
    names = tuple(names or datasets_read(info))
    rows = block_rows or checksum.default_block_rows(row_bytes(info, names[0]))
    result, message = attempt(info.path, _scan_local, info, comm, check_finite, names, rows, block_rows > 0)
    mpi.agree(comm, message, DataError)
    local, digests = result
    reduced = mpi.allreduce_min(comm, local)
    findings = dict(zip(KEYS, reduced.tolist()))
    findings["label_max"] = -findings["label_max"]
    findings["digests"] = checksum.gathered(comm, digests) if block_rows > 0 else {}
    return findings


def verdict(info, findings):
    """The one-line message for the first problem found, or None."""
    path = info.path
    if info.form == "series":
        if findings["inputs"] != NONE:
            return f"{path}: /series contains NaN or Inf at row {findings['inputs']}"
        return None
    if findings["inputs"] != NONE:
        return f"{path}: /inputs contains NaN or Inf at sample {findings['inputs']}"
    if findings["targets"] != NONE:
        return f"{path}: /targets contains NaN or Inf at sample {findings['targets']}"
    if findings["lengths"] != NONE:
        return f"{path}: /lengths at sample {findings['lengths']} is outside [1, {info.seq_len}]"
    if findings["labels"] != NONE:
        return f"{path}: /labels at sample {findings['labels']} is negative"
    if info.task == "classification" and findings["label_max"] < 0:
        return f"{path}: /labels holds no class"
    return None


def row_bytes(info, name):
    """Bytes of one row of data set `name` of the file."""
    with h5py.File(info.path, "r") as handle:
        return dataset_row_bytes(handle[name])


def _first(bad, offset):
    return offset + int(np.argmax(bad)) if bad.any() else NONE


def _check_piece(info, name, piece, offset, found, check_finite):
    """Updates found (ordered like KEYS, label_max negated) with what piece (rows from offset) shows."""
    if name in ("inputs", "series", "targets") and check_finite and len(piece):
        low, high = piece.min(), piece.max()            # NaN or Inf shows here; no temporary array
        if not (np.isfinite(low) and np.isfinite(high)):
            slot = 1 if name == "targets" else 0
            good = np.isfinite(piece.reshape(len(piece), -1)).all(axis=1)
            found[slot] = min(found[slot], _first(~good, offset))
    elif name == "lengths":
        found[2] = min(found[2], _first((piece < 1) | (piece > info.seq_len), offset))
    elif name == "labels" and len(piece):
        found[3] = min(found[3], _first(piece < 0, offset))
        found[4] = min(found[4], -int(piece.max()))


def _scan_local(info, comm, check_finite, names, block_rows, hashed):
    """This rank's findings as an int64 array ordered like KEYS (label_max negated, for MIN) and
    {name: [block digests]} of its rows (empty lists when not hashed)."""
    found = np.array([NONE, NONE, NONE, NONE, 1], dtype=np.int64)
    digests = {name: [] for name in names}
    with h5py.File(info.path, "r") as handle:
        total = handle[names[0]].shape[0]
        start, stop = checksum.rank_rows(total, block_rows, comm.size, comm.rank)
        for name in names:
            dset = handle[name]
            for offset in range(start, stop, block_rows):
                piece = dset[offset:min(stop, offset + block_rows)]
                _check_piece(info, name, piece, offset, found, check_finite)
                if hashed:
                    digests[name].append(checksum.block_digest(piece))
    return found, digests
