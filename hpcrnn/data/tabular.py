"""The tabular inputs of `hpcrnn prepare` (CSV with a header, .npy, .npz), read in pieces of rows so that an
input far larger than memory is converted with bounded memory. (Training reads HDF5 through loader.py.)"""
import io
import os
import zipfile
from dataclasses import dataclass
from itertools import islice

import numpy as np

from hpcrnn.errors import DataError

BLOCK_BYTES = 16 << 20


@dataclass
class ArraySource:
    """An array known by shape and dtype whose rows come out block by block from blocks()."""
    path: str
    name: str
    shape: tuple
    dtype: np.dtype
    blocks: object           # callable() -> iterator of arrays [rows, *shape[1:]]


def rows_per_block(shape, dtype):
    row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    return max(1, BLOCK_BYTES // max(row, 1))


def _memory_blocks(array):
    step = rows_per_block(array.shape, array.dtype)
    return lambda: (np.asarray(array[i:i + step]) for i in range(0, len(array), step))


def open_npy(path):
    """{'series' or 'inputs': ArraySource} of a .npy file, memory-mapped."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable .npy file ({error})") from None
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    name = "series" if array.ndim == 2 else "inputs"
    return {name: ArraySource(path, name, array.shape, array.dtype, _memory_blocks(array))}


def _npz_header(handle, path, key):
    version = np.lib.format.read_magic(handle)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = reader(handle)
    if fortran_order or dtype.hasobject:
        raise DataError(f"{path}: array '{key}' must be a C-ordered numeric array")
    return shape, dtype


def _npz_blocks(path, member, shape, dtype):
    def blocks():
        step = rows_per_block(shape, dtype)
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        with zipfile.ZipFile(path) as archive, archive.open(member) as handle:
            _npz_header(handle, path, member)
            for first in range(0, shape[0] if shape else 1, step):
                rows = min(step, shape[0] - first)
                data = handle.read(rows * row_bytes)
                yield np.frombuffer(data, dtype=dtype).reshape((rows,) + tuple(shape[1:]))
    return blocks


def open_npz(path):
    """{key: ArraySource} of every array of a .npz file, each streamed from the archive."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None
    sources = {}
    with archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            key = member[:-4]
            with archive.open(member) as handle:
                shape, dtype = _npz_header(handle, path, key)
            if len(shape) == 1 and key == "series":
                shape = (shape[0], 1)
            sources[key] = ArraySource(path, key, shape, dtype, _npz_blocks(path, member, shape, dtype))
    return sources


def _parse_rows(lines, path, first_line, columns):
    try:
        return np.loadtxt(io.StringIO("".join(lines)), delimiter=",", dtype=np.float64, ndmin=2, usecols=columns)
    except ValueError as error:
        raise DataError(f"{path}: unparsable value between lines {first_line} and "
                        f"{first_line + len(lines) - 1} ({error})") from None


def csv_header(path):
    """Column names of a CSV file's header line (or col0, col1, ... when the first line is numeric)."""
    with open(path) as handle:
        first = handle.readline()
    fields = [field.strip() for field in first.strip().split(",")]
    if not first.strip():
        raise DataError(f"{path}: empty CSV file")
    try:
        [float(field) for field in fields]
        return [f"col{i}" for i in range(len(fields))], False
    except ValueError:
        return fields, True


def open_csv(path, columns=None):
    """({'series': ArraySource}, header names) of a CSV file with a header line; `columns` (indices) picks
    the columns to read (the others, e.g. time stamps, may hold anything)."""
    names, has_header = csv_header(path)
    picked = list(range(len(names))) if columns is None else list(columns)
    rows = sum(1 for line in open(path) if line.strip()) - (1 if has_header else 0)
    if rows < 1:
        raise DataError(f"{path}: no data rows")
    shape = (rows, len(picked))

    def blocks():
        step = rows_per_block(shape, np.float64)
        with open(path) as handle:
            if has_header:
                handle.readline()
            line_number = 2 if has_header else 1
            lines = (line for line in handle if line.strip())
            while True:
                chunk = list(islice(lines, step))
                if not chunk:
                    return
                values = _parse_rows(chunk, path, line_number, picked)
                line_number += len(chunk)
                yield values
    return {"series": ArraySource(path, "series", shape, np.dtype(np.float64), blocks)}, names


def open_input(path, columns=None):
    """(sources, column names or None) of an input file, by extension: .csv, .npy or .npz."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    extension = os.path.splitext(path)[1].lower()
    if extension == ".csv":
        return open_csv(path, columns)
    if extension == ".npy":
        return open_npy(path), None
    if extension == ".npz":
        return open_npz(path), None
    raise DataError(f"{path}: unknown input type {extension!r} (expected .csv, .npy or .npz)")
