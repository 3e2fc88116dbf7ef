"""Which samples of which file each split (train, val, test) holds: the `Split` index set, the selection rules
(the file's split attributes, chronological, random, stratified) and val/test files of the same schema.

Every selection is a pure function of (seed, n, fractions, labels): the same on every rank, for any rank count.
"""
import math
from dataclasses import dataclass

import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.data.shard import block_bounds
from hpcrnn.errors import ConfigError, DataError

SPLITS = ("chronological", "random", "stratified")    # data.split
SELECT_STREAM = 0x73706C6974    # "split": keeps the selection's random stream apart from the epoch orders'


@dataclass(frozen=True, eq=False)
class Split:
    """The samples of one split of a file: every sample of [start, stop) when indices is None (the contiguous
    fast path), else the sorted distinct int64 `indices` (then start, stop bound them)."""
    start: int
    stop: int
    indices: np.ndarray | None = None

    def __len__(self):
        return max(0, self.stop - self.start) if self.indices is None else len(self.indices)

    def array(self):
        """Every sample index, ascending (int64)."""
        return np.arange(self.start, self.stop, dtype=np.int64) if self.indices is None else self.indices

    def take(self, positions):
        """The sample indices at `positions` (0 .. len-1) of this split."""
        positions = np.asarray(positions, dtype=np.int64)
        return positions + self.start if self.indices is None else self.indices[positions]

    def block_bounds(self, block_size):
        """Positions [0, p1, ..., len] where the samples cross a multiple of block_size (the file's chunks)."""
        if len(self) == 0:
            return np.zeros(1, dtype=np.int64)
        if self.indices is None:
            return block_bounds((self.start, self.stop), block_size) - self.start
        inner = np.flatnonzero(np.diff(self.indices // block_size)) + 1
        return np.concatenate([[0], inner, [len(self)]]).astype(np.int64)

    def __eq__(self, other):
        other = as_split(other) if isinstance(other, (tuple, list, Split)) else None
        return other is not None and len(self) == len(other) and np.array_equal(self.array(), other.array())

    def __repr__(self):
        if self.indices is None:
            return f"Split({self.start}, {self.stop})"
        return f"Split({len(self)} samples in [{self.start}, {self.stop}))"


def as_split(value):
    """A Split from a Split or a (start, stop) pair."""
    if isinstance(value, Split):
        return value
    return Split(int(value[0]), max(int(value[0]), int(value[1])))


def from_indices(indices):
    """The Split of distinct sample indices (any order); a range when they are contiguous."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) > 1 and not np.all(indices[1:] > indices[:-1]):
        indices = np.sort(indices)
        if np.any(indices[1:] == indices[:-1]):
            raise ValueError("sample indices of a split must be distinct")
    if len(indices) == 0:
        return Split(0, 0)
    start, stop = int(indices[0]), int(indices[-1]) + 1
    return Split(start, stop) if stop - start == len(indices) else Split(start, stop, indices)


# ---- selection rules (pure) ------------------------------------------------------------------------------------
def default_gap(info):
    """Samples left out between train and val so that no val window shares a row with a train window."""
    if info.form != "series":
        return 0
    return max(0, math.ceil((info.lookback + info.horizon) / info.stride) - 1)


def split_ranges(info, val_fraction, gap=None):
    """{'train': (a, b), 'val': (c, d)[, 'test': ...]}: the file's split attributes when it has them, else
    chronological: the last val_fraction of the samples is val, `gap` samples before it are left out."""
    if "train" in info.splits:
        end = info.splits["train"][1]
        return {"val": (end, end), **info.splits}
    n = info.num_samples
    gap = default_gap(info) if gap is None else int(gap)
    val_count = int(math.floor(n * float(val_fraction))) if val_fraction > 0 else 0
    if val_count == 0:
        return {"train": (0, n), "val": (n, n)}
    train_stop = n - val_count - gap
    if train_stop < 1:
        raise DataError(f"{info.path}: {n} samples are too few for val_fraction {val_fraction} "
                        f"and a gap of {gap} samples")
    return {"train": (0, train_stop), "val": (n - val_count, n)}


def _rng(seed):
    return np.random.default_rng([SELECT_STREAM, int(seed)])


def _check_fraction(val_fraction):
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")


def random_split(n, val_fraction, seed):
    """{'train', 'val'}: floor(n * val_fraction) samples drawn without replacement (seeded) are val."""
    _check_fraction(val_fraction)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    val_count = int(math.floor(n * float(val_fraction)))         # < n: train keeps a sample
    return _parts(n, _rng(seed).permutation(n)[:val_count])


def stratified_counts(class_sizes, val_fraction):
    """Val samples per class: round(size * val_fraction), at least 1 and at most size - 1 for every class of
    >= 2 samples (when val_fraction > 0); a class of one sample stays in train."""
    sizes = np.asarray(class_sizes, dtype=np.int64)
    if val_fraction <= 0:
        return np.zeros_like(sizes)
    counts = np.floor(sizes * float(val_fraction) + 0.5).astype(np.int64)
    return np.where(sizes >= 2, np.clip(counts, 1, np.maximum(sizes - 1, 1)), 0)


def stratified_split(labels, val_fraction, seed):
    """{'train', 'val'}: per class (ascending label), stratified_counts of its samples drawn without
    replacement (seeded) are val, so every class of >= 2 samples is in both splits."""
    _check_fraction(val_fraction)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-d integer array, got {labels.dtype} {labels.shape}")
    small = len(labels) and labels.min() >= 0 and labels.max() < (1 << 16)
    order = np.argsort(labels.astype(np.uint16) if small else labels, kind="stable")   # radix sort when small
    classes, firsts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
    rng, picked = _rng(seed), []
    for first, size, count in zip(firsts, sizes, stratified_counts(sizes, val_fraction)):
        if count:
            picked.append(order[first:first + size][rng.permutation(int(size))[:count]])
    return _parts(len(labels), np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64))


def _parts(n, val):
    """{'train', 'val'} of n samples, val holding the distinct indices `val` (any order)."""
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    return {"train": from_indices(np.flatnonzero(~is_val)), "val": from_indices(np.flatnonzero(is_val))}


# ---- the splits a config asks for (labels read by rank 0, broadcast) -----------------------------------------
def read_labels(info, comm, start=0, stop=None):
    """int64 /labels[start:stop] of a classification file on every rank: rank 0 reads, the others get them by
    broadcast; a read error is raised on every rank."""
    import h5py

    from hpcrnn.data.parallel import attempt

    def read():
        with h5py.File(info.path, "r") as handle:
            return {"labels": np.asarray(handle["labels"][start:stop], dtype=np.int64)}
    arrays, error = attempt(info.path, read) if comm.rank == 0 else ({}, None)
    mpi.agree(comm, error, DataError)
    return mpi.bcast_arrays(comm, arrays)["labels"]


def check_split_fits(info, split):
    """ConfigError when data.split cannot be used on the file `info` describes (the same verdict everywhere)."""
    if split == "random" and info.form == "series":
        raise ConfigError(f"data.split: random does not fit {info.path} (series form): neighbouring windows share "
                          "rows, so random val windows would overlap train windows; use chronological (with its gap)")
    if split == "stratified" and info.task != "classification":
        raise ConfigError(f"data.split: stratified needs class labels (/labels), {info.path} has regression "
                          "targets; use random or chronological")


def file_splits(info, data, comm):
    """{name: Split} of the training file per the DataConfig `data`: the file's split attributes when it has
    them, else data.split; with data.val_path the whole file (or its split_train) is train."""
    if data.val_path:
        out = {name: as_split(span) for name, span in info.splits.items() if name != "val"}
        return {"train": out.pop("train", Split(0, info.num_samples)), "val": Split(0, 0), **out}
    if "train" in info.splits or data.split == "chronological":
        spans = split_ranges(info, data.val_fraction, None if data.gap < 0 else data.gap)
        return {name: as_split(span) for name, span in spans.items()}
    check_split_fits(info, data.split)
    if data.split == "random":
        return random_split(info.num_samples, data.val_fraction, data.seed)
    return stratified_split(read_labels(info, comm), data.val_fraction, data.seed)


def other_file(data, split):
    """data.val_path for "val", data.test_path for "test" ("" when unset or for another split)."""
    return {"val": data.val_path, "test": data.test_path}.get(split, "")


def check_same_schema(key, other, info):
    """DataError naming both files and the field when the file of data.<key> does not fit the training file."""
    fields = [("form", "form"), ("task", "task"), ("head", "head"), ("num_features", "feature count")]
    fields += [("seq_len", "sequence length")] if info.form == "windows" else \
        [("lookback", "lookback"), ("horizon", "horizon"), ("target_columns", "target_columns")]
    fields += [("output_size", "target size")] if info.task == "regression" else []
    for name, label in fields:
        if getattr(other, name) != getattr(info, name):
            raise DataError(f"data.{key}: {other.path} does not match data.path {info.path}: {label} "
                            f"{getattr(other, name)} vs {getattr(info, name)}")
    if info.task == "classification" and other.num_classes > info.num_classes:
        raise DataError(f"data.{key}: {other.path} does not match data.path {info.path}: labels up to "
                        f"{other.num_classes - 1}, the training file has {info.num_classes} classes")


def choose_splits(data, info, comm, check_finite=True):
    """({name: Split}, {name: DatasetInfo of the file the split indexes}) for a training run: val and test
    come from data.val_path / data.test_path (the whole file, schema checked) when set."""
    from hpcrnn.data.schema import open_dataset
    splits = file_splits(info, data, comm)
    infos = dict.fromkeys(splits, info)
    for name, path in (("val", data.val_path), ("test", data.test_path)):
        if path:
            other = open_dataset(path, comm=comm, check_finite=check_finite)
            check_same_schema(f"{name}_path", other, info)
            splits[name], infos[name] = Split(0, other.num_samples), other
    return splits, infos


def single_class_warning(split, info, comm):
    """A one-line warning (every rank) when `split` of a classification file holds a single class, else None."""
    if info.task != "classification" or len(split) == 0:
        return None
    labels = read_labels(info, comm, split.start, split.stop)
    if split.indices is not None:
        labels = labels[split.indices - split.start]
    if labels.min() != labels.max():
        return None
    return (f"warning: the val split of {info.path} holds only class {int(labels[0])} ({len(labels)} samples; "
            "a file sorted by class?): its accuracy says nothing of the others; set data.split = \"stratified\"")

