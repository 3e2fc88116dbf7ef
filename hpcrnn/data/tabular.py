"""The tabular inputs of `hpcrnn prepare` (CSV with a header, .npy, .npz), read in pieces of rows so that an
input far larger than memory is converted with bounded memory. (Training reads HDF5 through loader.py.)"""
import bisect
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
    place: object = None     # callable(row, index in the row) -> where that value is in the file, for messages

    def where(self, row, index):
        """Where value `index` of row `row` is, in the user's terms (CSV line and column, or array indices)."""
        if self.place is not None:
            return self.place(row, index)
        axes = ("row", "column") if self.name == "series" else ("sample", "column") if len(index) == 1 else \
            ("sample", "step", "feature")
        prefix = f"array '{self.name}', " if self.path.lower().endswith(".npz") else ""
        return prefix + ", ".join(f"{axis} {value}" for axis, value in zip(axes, (row, *map(int, index))))


def to_float32(block):
    """The block as stored (float32); a value beyond float32's range becomes Inf here."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(block, dtype=np.float32)


def nonfinite_rows(values):
    """Mask of the rows of values [rows, ...] that hold a NaN or an Inf."""
    return ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)


def nonfinite_message(source, block, values, first, row):
    """The one-line error for row `row` of a block (rows first.. of the source): the file, where, and the value."""
    position = int(np.argmax(~np.isfinite(values[row].reshape(-1))))
    index = np.unravel_index(position, values.shape[1:])
    raw = float(np.asarray(block[row], dtype=np.float64).reshape(-1)[position])
    what = f"{raw:g} overflows float32" if np.isfinite(raw) else f"non-finite value {raw:g}"
    return (f"{source.path}: {source.where(first + row, index)}: {what} (fix the input, or give "
            "--drop-nonfinite to leave such rows out)")


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


def _parse_rows(numbered, path, columns):
    """Values [rows, columns] of (line number, line) pairs."""
    try:
        return np.loadtxt(io.StringIO("".join(line for _, line in numbered)), delimiter=",", dtype=np.float64,
                          ndmin=2, usecols=columns)
    except ValueError as error:
        raise DataError(f"{path}: unparsable value between lines {numbered[0][0]} and "
                        f"{numbered[-1][0]} ({error})") from None


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
    first_line = 2 if has_header else 1
    blank, total = [], 0              # line numbers of the blank lines after the header (skipped), all lines
    with open(path) as handle:
        for total, line in enumerate(handle, 1):
            if total >= first_line and not line.strip():
                blank.append(total)
    rows = total - first_line + 1 - len(blank)
    if rows < 1:
        raise DataError(f"{path}: no data rows")
    shape = (rows, len(picked))

    def blocks():
        step = rows_per_block(shape, np.float64)
        with open(path) as handle:
            if has_header:
                handle.readline()
            lines = ((number, line) for number, line in enumerate(handle, first_line) if line.strip())
            while chunk := list(islice(lines, step)):
                yield _parse_rows(chunk, path, picked)

    def place(row, index):
        """Line number (1-based, the header is line 1) and column name of value `index` of data row `row`."""
        skipped = 0                   # blank lines before it
        while skipped != (before := bisect.bisect_right(blank, first_line + row + skipped)):
            skipped = before
        return f"line {first_line + row + skipped}, column {names[picked[int(index[0])]]!r}"
    return {"series": ArraySource(path, "series", shape, np.dtype(np.float64), blocks, place)}, names


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
