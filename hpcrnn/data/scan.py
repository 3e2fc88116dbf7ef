"""Parallel content scan of a data file: each rank checks its block of samples piece by piece (NaN/Inf,
label and length ranges), then one reduction gives every rank the first offending index of each kind."""
import h5py
import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.data.parallel import attempt, chunk_length
from hpcrnn.data.shard import blockdist
from hpcrnn.errors import DataError

NONE = np.iinfo(np.int64).max
PIECE_BYTES = 8 << 20
KEYS = ("inputs", "targets", "lengths", "labels", "label_max")


def scan_file(info, comm, check_finite):
    """Returns {key: value} reduced over ranks: first bad sample (or row) index per key (NONE when clean)
    and label_max. Read errors are agreed on first, so every rank raises the same DataError."""
    local, message = attempt(info.path, _scan_local, info, comm, check_finite)
    mpi.agree(comm, message, DataError)
    reduced = mpi.allreduce_min(comm, local)
    findings = dict(zip(KEYS, reduced.tolist()))
    findings["label_max"] = -findings["label_max"]
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


def _pieces(dset, start, stop):
    """Yields (offset, array) pieces of rows [start, stop) of dset of about PIECE_BYTES, chunk-aligned."""
    row_bytes = dset.dtype.itemsize * int(np.prod(dset.shape[1:], dtype=np.int64))
    chunk = chunk_length(dset)
    rows = max(chunk, (PIECE_BYTES // max(row_bytes, 1)) // chunk * chunk)
    position = start
    while position < stop:
        end = min(stop, (position // rows + 1) * rows)
        yield position, dset[position:end]
        position = end


def _first_nonfinite(dset, start, stop):
    for offset, piece in _pieces(dset, start, stop):
        good = np.isfinite(piece.reshape(len(piece), -1)).all(axis=1)
        if not good.all():
            return offset + int(np.argmin(good))
    return NONE


def _first_where(dset, start, stop, is_bad):
    for offset, piece in _pieces(dset, start, stop):
        bad = is_bad(piece)
        if bad.any():
            return offset + int(np.argmax(bad))
    return NONE


def _label_max(dset, start, stop):
    best = -1
    for _, piece in _pieces(dset, start, stop):
        if len(piece):
            best = max(best, int(piece.max()))
    return best


def _scan_local(info, comm, check_finite):
    """This rank's findings as an int64 array ordered like KEYS (label_max stored negated, for MIN)."""
    found = np.array([NONE, NONE, NONE, NONE, 1], dtype=np.int64)
    total = info.num_rows if info.form == "series" else info.num_samples
    count, start = blockdist(total, comm.size, comm.rank)
    stop = start + count
    with h5py.File(info.path, "r") as handle:
        if info.form == "series":
            if check_finite:
                found[0] = _first_nonfinite(handle["series"], start, stop)
            return found
        if check_finite:
            found[0] = _first_nonfinite(handle["inputs"], start, stop)
            if info.task == "regression":
                found[1] = _first_nonfinite(handle["targets"], start, stop)
        if info.has_lengths:
            found[2] = _first_where(handle["lengths"], start, stop,
                                    lambda piece: (piece < 1) | (piece > info.seq_len))
        if info.task == "classification":
            found[3] = _first_where(handle["labels"], start, stop, lambda piece: piece < 0)
            found[4] = -_label_max(handle["labels"], start, stop)
    return found
