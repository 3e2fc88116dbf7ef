"""`hpcrnn prepare`: converts CSV/.npy/.npz into a schema v1 file (series or windows form) with chronological
train/val/test splits, a gap between them, and inputs normalised by statistics of the training split only
(stored in /stats). A NaN/Inf (after conversion to float32) is refused, or its row left out when asked.
Works block by block, so memory stays bounded; rank 0 does the work under MPI."""
import math
import os
from dataclasses import dataclass

import h5py
import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.data import checksum, scan, stamp, tabular
from hpcrnn.data.parallel import attempt, chunk_rows
from hpcrnn.data.schema import check_classes, describe
from hpcrnn.errors import ConfigError, DataError


@dataclass(frozen=True)
class PrepareSpec:
    input: str
    out: str
    lookback: int = 32
    horizon: int = 1
    stride: int = 1
    target_columns: tuple = ()     # names or indices (series form); () = the first column
    columns: tuple = ()            # CSV: names or indices of the columns to keep; () = all
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    gap: int = -1                  # samples left out before val and before test; -1 = automatic
    normalize: bool = True
    drop_nonfinite: bool = False   # leave out rows (series) or samples (windows) holding NaN/Inf; else refuse

    def validate(self):
        if min(self.lookback, self.horizon, self.stride) < 1:
            raise ConfigError("--lookback, --horizon and --stride must be >= 1")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise ConfigError("--val-fraction and --test-fraction must be in [0, 1) with a sum below 1")


def prepare(spec, comm):
    """Writes spec.out from spec.input; rank 0 converts, every rank raises the same error on failure."""
    spec.validate()
    message = attempt(spec.input, _prepare, spec)[1] if comm.rank == 0 else None
    mpi.agree(comm, message, DataError)
    return os.path.abspath(spec.out)


def _resolve(wanted, names, what, path):
    """Column indices from names or integers (as strings) against the header names."""
    indices = []
    for item in wanted:
        item = str(item).strip()
        if item in names:
            indices.append(names.index(item))
        elif item.lstrip("-").isdigit() and 0 <= int(item) < len(names):
            indices.append(int(item))
        else:
            raise DataError(f"{path}: {what} {item!r} is not a column (columns: {', '.join(names)})")
    return indices


def _prepare(spec):
    if not os.path.isfile(spec.input):
        raise DataError(f"{spec.input}: no such file")
    columns = None
    if spec.input.lower().endswith(".csv"):
        names, _ = tabular.csv_header(spec.input)
        columns = _resolve(spec.columns, names, "--columns entry", spec.input) if spec.columns else None
    elif spec.columns:
        raise ConfigError("--columns applies to CSV input only")
    sources, names = tabular.open_input(spec.input, columns)
    if names and columns is not None:
        names = [names[i] for i in columns]
    if "series" in sources:
        block_rows, hashers = _write_series(spec, sources["series"], names)
    elif "inputs" in sources and ("targets" in sources or "labels" in sources):
        block_rows, hashers = _write_windows(spec, sources)
    else:
        raise DataError(f"{spec.input}: expected a 2-D series, or 'inputs' with 'targets' or 'labels' "
                        f"(found {', '.join(sorted(sources)) or 'nothing'})")
    _stamp(describe(spec.out), block_rows, hashers)


def _stamp(info, block_rows, hashers):
    """Checks the labels and lengths written (the floats were checked on the way in) and stamps the file."""
    names = [name for name in ("labels", "lengths") if name in hashers]
    label_max = -1
    if names:
        findings = scan.scan_file(info, mpi.self_comm(), check_finite=False, names=names)
        message = scan.verdict(info, findings)
        if message:
            raise DataError(message)
        if info.task == "classification":
            label_max = int(findings["label_max"])
            check_classes(info, label_max + 1)
    with h5py.File(info.path, "r") as handle:
        layout, checks = stamp.layout_of(handle), stamp.checks_for(handle)
    digests = {name: hasher.checksum() for name, hasher in hashers.items()}
    stamp.write(info.path, stamp.Stamp(checks, layout, label_max, block_rows, digests, stamp.made_by("prepare")))


def chronological_splits(count, val_fraction, test_fraction, gap, path):
    """{'train', 'val', 'test'} (start, stop) in sample order: train, gap, val, gap, test."""
    test = int(math.floor(count * test_fraction))
    val = int(math.floor(count * val_fraction))
    train = count - test - val - (gap if test else 0) - (gap if val else 0)
    if train < 1:
        raise DataError(f"{path}: {count} samples are too few for val {val_fraction}, test {test_fraction} "
                        f"and a gap of {gap}")
    val_start = train + (gap if val else 0)
    return {"train": (0, train), "val": (val_start, val_start + val), "test": (count - test, count)}


def _checked_blocks(source, drop, keep=None):
    """The source's blocks as float32; a row with NaN/Inf raises a DataError naming where it is, or is left out
    when drop. keep: a mask of the rows to copy at all (windows form, --drop-nonfinite)."""
    first = 0
    for block in source.blocks():
        values = tabular.to_float32(block)
        bad = tabular.nonfinite_rows(values)
        if bad.any() and not drop:
            raise DataError(tabular.nonfinite_message(source, block, values, first, int(np.argmax(bad))))
        chosen = ~bad if keep is None else keep[first:first + len(block)] & ~bad
        first += len(block)
        yield values if chosen.all() else values[chosen]


def _kept_blocks(source, keep=None):
    """The source's blocks as they are, only the rows where keep is True (all rows without keep)."""
    first = 0
    for block in source.blocks():
        chosen = np.ones(len(block), dtype=bool) if keep is None else keep[first:first + len(block)]
        first += len(block)
        yield block if chosen.all() else block[chosen]


def _copy(blocks, dset, hasher):
    """Writes the blocks into dset from row 0 (hashing them as stored, unless hasher is None: normalised data
    sets are hashed as rewritten), then shrinks dset to the rows written; returns their number."""
    position = 0
    for block in blocks:
        block = np.asarray(block, dtype=dset.dtype)
        dset[position:position + len(block)] = block
        if hasher is not None:
            hasher.add(block)
        position += len(block)
    dset.resize(position, axis=0)
    return position


def _finite_samples(sources, count):
    """Mask of the samples whose /inputs and /targets hold no NaN/Inf (after conversion to float32)."""
    keep = np.ones(count, dtype=bool)
    for name in ("inputs", "targets"):
        first = 0
        for block in sources[name].blocks() if name in sources else ():
            keep[first:first + len(block)] &= ~tabular.nonfinite_rows(tabular.to_float32(block))
            first += len(block)
    return keep


def _create_output(path):
    try:
        handle = h5py.File(path, "w")
    except OSError as error:
        raise DataError(f"{path}: cannot be created ({error})") from None
    handle.attrs["hpcrnn_schema"] = np.int64(1)
    return handle


def _moments(dset, stop, lengths=None):
    """Per-feature mean and std over rows [0, stop) of dset (last axis = features), block by block."""
    features = dset.shape[-1]
    total, sums, squares = 0.0, np.zeros(features), np.zeros(features)
    step = tabular.rows_per_block(dset.shape, np.float64)
    shift = np.asarray(dset[0], dtype=np.float64).reshape(-1, features)[0]   # for a stable variance
    for first in range(0, stop, step):
        block = np.asarray(dset[first:min(stop, first + step)], dtype=np.float64) - shift
        if lengths is not None:
            mask = np.arange(block.shape[1])[None, :] < lengths[first:first + len(block), None]
            block = block[mask]
        block = block.reshape(-1, features)
        total += len(block)
        sums += block.sum(axis=0)
        squares += (block * block).sum(axis=0)
    mean = sums / max(total, 1.0)
    std = np.sqrt(np.maximum(squares / max(total, 1.0) - mean * mean, 0.0))
    return mean + shift, np.where(std > 0, std, 1.0)


def _normalise(handle, dset, mean, std, hasher):
    """dset = (dset - mean) / std in place, block by block (hashing the values stored); stores /stats/mean and
    /stats/std. A value that overflows float32 once normalised is refused, naming its row."""
    step = tabular.rows_per_block(dset.shape, np.float64)
    for first in range(0, dset.shape[0], step):
        block = ((dset[first:first + step].astype(np.float64) - mean) / std).astype(dset.dtype)
        bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
        if bad.any():
            raise DataError(f"{dset.file.filename}: /{dset.name.lstrip('/')} row {first + int(np.argmax(bad))} "
                            f"overflows float32 once normalised by /stats (use --no-normalize)")
        dset[first:first + step] = block
        hasher.add(block)
    handle.create_dataset("stats/mean", data=mean.astype(np.float32))
    handle.create_dataset("stats/std", data=std.astype(np.float32))
    handle["stats"].attrs["note"] = "inputs are stored normalised: x = (raw - mean) / std, train split only"


def _write_series(spec, source, names):
    rows, features = source.shape
    targets = (_resolve(spec.target_columns, names or [str(i) for i in range(features)], "--target-columns",
                        spec.input) if spec.target_columns else [0])
    _series_splits(spec, rows)        # too few rows: refused before anything is written
    block_rows = checksum.default_block_rows(features * 4)
    hashers = {"series": checksum.RowHasher(block_rows)}
    with _create_output(spec.out) as handle:
        series = handle.create_dataset("series", (rows, features), dtype="f4", maxshape=(None, features),
                                       chunks=(chunk_rows(features * 4, rows), features))
        kept = _copy(_checked_blocks(source, spec.drop_nonfinite), series,
                     None if spec.normalize else hashers["series"])
        _note_dropped(handle, spec, rows - kept)
        splits = _series_splits(spec, kept)
        for name, value in (("lookback", spec.lookback), ("horizon", spec.horizon), ("stride", spec.stride)):
            series.attrs[name] = np.int64(value)
        series.attrs["target_columns"] = np.asarray(targets, dtype=np.int64)
        if names:
            series.attrs["column_names"] = np.array(names, dtype=h5py.string_dtype())
        _write_splits(handle, splits)
        if spec.normalize:
            train_rows = (splits["train"][1] - 1) * spec.stride + spec.lookback + spec.horizon
            _normalise(handle, series, *_moments(series, train_rows), hashers["series"])
    return block_rows, hashers


def _series_splits(spec, rows):
    if spec.lookback + spec.horizon > rows:
        raise DataError(f"{spec.input}: {rows} rows, fewer than lookback + horizon = {spec.lookback + spec.horizon}")
    windows = (rows - spec.lookback - spec.horizon) // spec.stride + 1
    gap = spec.gap if spec.gap >= 0 else max(0, math.ceil((spec.lookback + spec.horizon) / spec.stride) - 1)
    return chronological_splits(windows, spec.val_fraction, spec.test_fraction, gap, spec.input)


def _note_dropped(handle, spec, dropped):
    """With --drop-nonfinite, the root attribute dropped_nonfinite records how many rows/samples were left out."""
    if spec.drop_nonfinite:
        handle.attrs["dropped_nonfinite"] = np.int64(dropped)


def _write_splits(handle, splits):
    for name, (start, stop) in splits.items():
        handle.attrs[f"split_{name}"] = np.array([start, stop], dtype=np.int64)


def _write_windows(spec, sources):
    inputs = sources["inputs"]
    if len(inputs.shape) != 3:
        raise DataError(f"{spec.input}: 'inputs' must be 3-D [N,T,F], found shape {inputs.shape}")
    count = inputs.shape[0]
    for name in ("targets", "labels", "lengths"):
        if name in sources and sources[name].shape[0] != count:
            raise DataError(f"{spec.input}: '{name}' has {sources[name].shape[0]} samples but 'inputs' has {count}")
    chronological_splits(count, spec.val_fraction, spec.test_fraction, max(spec.gap, 0), spec.input)
    keep = _finite_samples(sources, count) if spec.drop_nonfinite else None
    block_rows = checksum.default_block_rows(4 * int(np.prod(inputs.shape[1:], dtype=np.int64)))
    hashers = {name: checksum.RowHasher(block_rows) for name in ("inputs", "targets", "labels", "lengths")
               if name in sources}
    with _create_output(spec.out) as handle:
        for name in ("inputs", "targets", "labels", "lengths"):
            if name not in sources:
                continue
            source = sources[name]
            dtype = "i8" if name in ("labels", "lengths") else "f4"
            row_bytes = 4 * int(np.prod(source.shape[1:], dtype=np.int64)) or 8
            dset = handle.create_dataset(name, source.shape, dtype=dtype, maxshape=(None,) + tuple(source.shape[1:]),
                                         chunks=(chunk_rows(row_bytes, count),) + tuple(source.shape[1:]))
            blocks = _checked_blocks(source, spec.drop_nonfinite, keep) if dtype == "f4" else _kept_blocks(source, keep)
            kept = _copy(blocks, dset, None if name == "inputs" and spec.normalize else hashers[name])
        _note_dropped(handle, spec, count - kept)
        splits = chronological_splits(kept, spec.val_fraction, spec.test_fraction, max(spec.gap, 0), spec.input)
        _write_splits(handle, splits)
        if spec.normalize:
            lengths = handle["lengths"][:] if "lengths" in handle else None
            _normalise(handle, handle["inputs"], *_moments(handle["inputs"], splits["train"][1], lengths),
                       hashers["inputs"])
    return block_rows, hashers
