"""Schema v1 of hpcrnn data files: describes a file as a DatasetInfo and rejects any other layout with a
one-line DataError naming the file and dataset; under MPI every rank reaches the same verdict."""
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.data import scan, stamp
from hpcrnn.data.parallel import attempt
from hpcrnn.errors import DataError

SCHEMA_VERSION = 1
SPLIT_NAMES = ("train", "val", "test")
MAX_CLASSES = 100_000       # labels: at most this many classes, and no more than max(N, FEW_CLASSES)
FEW_CLASSES = 1000


@dataclass(frozen=True)
class DatasetInfo:
    """What the loader and the trainer need to know about a schema v1 file (identical on every rank)."""
    path: str
    form: str                 # "windows" | "series"
    num_samples: int          # N (windows) or number of windows cut from the series
    seq_len: int              # T (windows) or lookback (series)
    num_features: int         # F
    output_size: int          # O (regression) or num_classes (classification)
    task: str                 # "regression" | "classification"
    head: str                 # "last" | "sequence"
    num_classes: int = 0      # labels: max label + 1 over the whole file
    has_lengths: bool = False
    splits: dict = field(default_factory=dict)   # name -> (start, stop) from the file's split_* attributes
    has_stats: bool = False
    num_rows: int = 0         # series: S rows
    lookback: int = 0
    horizon: int = 0
    stride: int = 0
    target_columns: tuple = ()
    target_name: str = ""     # "/targets", "/labels" or "" (series)
    checked: bool = False     # a valid stamp says the values were checked (hpcrnn/data/stamp.py)
    label_max: int = -1       # the stamp's largest label (classification), else -1
    stamp_note: str = ""      # why a stamp found in the file is not used ("" when none)
    check_finite: bool = True # batches are checked for NaN/Inf as they are read (not checked, and asked)


def open_dataset(path, comm, check_finite=True):
    """Validates path against schema v1 and returns its DatasetInfo; raises DataError on every rank.

    No scan of the values: a stamped file (`hpcrnn check --stamp`, synth, prepare) is trusted, and the
    batches of any other file are checked as they are read (data/batch_check.py; NaN/Inf only when
    check_finite). A classification file without a stamp has its /labels scanned (all ranks, each its block)
    for the number of classes."""
    path = os.fspath(path)
    info, message = attempt(path, describe, path)
    mpi.agree(comm, message, DataError)
    if info.task == "classification":
        label_max = info.label_max
        if not info.checked:
            findings = scan.scan_file(info, comm, check_finite=False, names=("labels",))
            mpi.agree(comm, scan.verdict(info, findings), DataError)
            label_max = int(findings["label_max"])
        num_classes = label_max + 1
        mpi.agree(comm, attempt(path, check_classes, info, num_classes)[1], DataError)
        info = _replace(info, num_classes=num_classes, output_size=num_classes)
    return _replace(info, check_finite=bool(check_finite) and not info.checked)


def check_classes(info, num_classes):
    """A label that makes more classes than max(N, FEW_CLASSES) or MAX_CLASSES is refused, naming its sample."""
    limit = min(MAX_CLASSES, max(info.num_samples, FEW_CLASSES))
    if num_classes <= limit:
        return
    with h5py.File(info.path, "r") as handle:
        labels = handle["labels"]
        step = 1 << 20
        for first in range(0, labels.shape[0], step):
            too_big = np.flatnonzero(labels[first:first + step] >= limit)
            if len(too_big):
                sample = first + int(too_big[0])
                value = int(labels[sample])
                raise DataError(f"{info.path}: /labels at sample {sample} is {value}: {value + 1} classes, more "
                                f"than the limit of {limit} (max(N = {info.num_samples}, {FEW_CLASSES}), "
                                f"at most {MAX_CLASSES})")


def _replace(info, **changes):
    from dataclasses import replace
    return replace(info, **changes)


def describe(path):
    """Reads the layout and attributes of path (no data scan); raises DataError on any violation."""
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not an HDF5 file")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path}: cannot be opened as HDF5, truncated or corrupt ({error})") from None
    with handle:
        version = handle.attrs.get("hpcrnn_schema")
        if version is None:
            raise DataError(f"{path}: root attribute 'hpcrnn_schema' is missing (not an hpcrnn data file)")
        value = np.asarray(version)
        if value.dtype.kind not in "iu" or value.size != 1 or int(value.reshape(-1)[0]) != SCHEMA_VERSION:
            raise DataError(f"{path}: root attribute hpcrnn_schema = {value.tolist()!r} is not supported "
                            f"(expected the integer {SCHEMA_VERSION})")
        if "inputs" in handle:
            info = _describe_windows(path, handle)
        elif "series" in handle:
            info = _describe_series(path, handle)
        else:
            raise DataError(f"{path}: neither /inputs (windows form) nor /series (series form) is present")
        splits = _read_splits(path, handle, info.num_samples)
        has_stats = _check_stats(path, handle, info.num_features)
        found, note = stamp.read(handle)
    if found is not None and info.task == "classification" and found.label_max < 0:
        found, note = None, "its stamp records no largest label"
    return _replace(info, splits=splits, has_stats=has_stats, checked=found is not None,
                    label_max=found.label_max if found is not None else -1, stamp_note=note)


def _dataset(path, handle, name, ndim, kind):
    """handle[name] checked to be a dataset of ndim dimensions and dtype kind 'f' (float) or 'i' (integer)."""
    if name not in handle or not isinstance(handle[name], h5py.Dataset):
        raise DataError(f"{path}: dataset /{name} is missing")
    dset = handle[name]
    if len(dset.shape) != ndim:
        raise DataError(f"{path}: /{name} must have {ndim} dimensions, found shape {dset.shape}")
    if dset.dtype.kind not in (("f",) if kind == "f" else ("i", "u")):
        wanted = "floating point" if kind == "f" else "integer"
        raise DataError(f"{path}: /{name} must be {wanted}, found dtype {dset.dtype}")
    return dset


def _describe_windows(path, handle):
    inputs = _dataset(path, handle, "inputs", 3, "f")
    count, seq_len, features = inputs.shape
    if count == 0 or seq_len == 0 or features == 0:
        raise DataError(f"{path}: /inputs is empty, shape {inputs.shape}")
    has_targets, has_labels = "targets" in handle, "labels" in handle
    if has_targets == has_labels:
        raise DataError(f"{path}: /inputs needs exactly one of /targets (regression) or /labels (classification)")
    if has_labels:
        target = _dataset(path, handle, "labels", 1, "i")
        task, head, output_size = "classification", "last", 0
    else:
        target = handle["targets"]
        if not isinstance(target, h5py.Dataset) or len(target.shape) not in (2, 3):
            raise DataError(f"{path}: /targets must be [N,O] or [N,T,O], found {getattr(target, 'shape', 'a group')}")
        target = _dataset(path, handle, "targets", len(target.shape), "f")
        task, head, output_size = "regression", ("last" if target.ndim == 2 else "sequence"), target.shape[-1]
        if target.ndim == 3 and target.shape[1] != seq_len:
            raise DataError(f"{path}: /targets has {target.shape[1]} time steps but /inputs has {seq_len}")
    if target.shape[0] != count:
        raise DataError(f"{path}: {target.name} has {target.shape[0]} samples but /inputs has {count}")
    has_lengths = "lengths" in handle
    if has_lengths and _dataset(path, handle, "lengths", 1, "i").shape[0] != count:
        raise DataError(f"{path}: /lengths has {handle['lengths'].shape[0]} entries but /inputs has {count} samples")
    return DatasetInfo(path=path, form="windows", num_samples=int(count), seq_len=int(seq_len),
                       num_features=int(features), output_size=int(output_size), task=task, head=head,
                       has_lengths=has_lengths, target_name=target.name)


def _series_attribute(path, dset, name):
    if name not in dset.attrs:
        raise DataError(f"{path}: /series attribute '{name}' is missing")
    value = np.asarray(dset.attrs[name])
    if value.dtype.kind not in "iu":
        raise DataError(f"{path}: /series attribute '{name}' must be integer, found {value.dtype}")
    return value.reshape(-1) if name == "target_columns" else int(value.reshape(-1)[0])


def _describe_series(path, handle):
    series = _dataset(path, handle, "series", 2, "f")
    rows, features = series.shape
    lookback, horizon, stride = (_series_attribute(path, series, name) for name in ("lookback", "horizon", "stride"))
    columns = _series_attribute(path, series, "target_columns")
    if lookback < 1 or horizon < 1 or stride < 1:
        raise DataError(f"{path}: /series needs lookback, horizon, stride >= 1 (got {lookback}, {horizon}, {stride})")
    if len(columns) == 0 or columns.min() < 0 or columns.max() >= features:
        raise DataError(f"{path}: /series target_columns {columns.tolist()} must be non-empty and in [0, {features})")
    if lookback + horizon > rows:
        raise DataError(f"{path}: /series has {rows} rows, fewer than lookback + horizon = {lookback + horizon}")
    windows = (rows - lookback - horizon) // stride + 1
    return DatasetInfo(path=path, form="series", num_samples=int(windows), seq_len=lookback,
                       num_features=int(features), output_size=int(horizon * len(columns)),
                       task="regression", head="last", num_rows=int(rows), lookback=lookback, horizon=horizon,
                       stride=stride, target_columns=tuple(int(c) for c in columns))


def _read_splits(path, handle, num_samples):
    splits = {}
    for name in SPLIT_NAMES:
        key = f"split_{name}"
        if key not in handle.attrs:
            continue
        value = np.asarray(handle.attrs[key]).reshape(-1)
        if value.dtype.kind not in "iu" or len(value) != 2 or not 0 <= value[0] <= value[1] <= num_samples:
            raise DataError(f"{path}: root attribute {key} = {value.tolist()} must be [start, stop) "
                            f"with 0 <= start <= stop <= {num_samples}")
        splits[name] = (int(value[0]), int(value[1]))
    if "train" in splits and splits["train"][0] == splits["train"][1]:
        raise DataError(f"{path}: root attribute split_train = {list(splits['train'])} is empty (no training samples)")
    used = sorted((start, stop, name) for name, (start, stop) in splits.items() if stop > start)
    for (_, stop, name), (start, _, other) in zip(used, used[1:]):
        if start < stop:
            raise DataError(f"{path}: root attributes split_{name} = {list(splits[name])} and split_{other} = "
                            f"{list(splits[other])} overlap")
    return splits


def _check_stats(path, handle, features):
    if "stats" not in handle:
        return False
    for name in ("mean", "std"):
        key = f"stats/{name}"
        if key not in handle:
            raise DataError(f"{path}: /stats is present but dataset /{key} is missing")
        if handle[key].shape != (features,):
            raise DataError(f"{path}: /{key} must have shape ({features},), found {handle[key].shape}")
    return True
