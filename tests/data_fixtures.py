"""Small schema v1 files for the data tests: valid ones of every form and catalogues of broken ones (bad
layouts, bad values), each paired with the text its error message must contain. Sample i's inputs start with the value i."""
import dataclasses

import numpy as np
import h5py


def kept(batches):
    """Copies of loader batches, to keep them: the loader refills one set of arrays batch after batch."""
    return [dataclasses.replace(b, x=b.x.copy(), y=b.y.copy(), lengths=None if b.lengths is None else b.lengths.copy())
            for b in batches]


def write_windows(path, count=50, seq_len=4, features=3, output="targets", lengths=False, chunk=8,
                  splits=None):
    """inputs[i, t, f] = i + t/100 + f/1000; output 'targets' [N,2], 'sequence' [N,T,2] or 'labels' (i % 3)."""
    inputs = (np.arange(count)[:, None, None] + np.arange(seq_len)[None, :, None] / 100
              + np.arange(features)[None, None, :] / 1000).astype(np.float32)
    with h5py.File(path, "w") as handle:
        handle.attrs["hpcrnn_schema"] = np.int64(1)
        handle.create_dataset("inputs", data=inputs, chunks=(min(chunk, count), seq_len, features))
        if output == "labels":
            handle.create_dataset("labels", data=np.arange(count, dtype=np.int64) % 3, chunks=(min(chunk, count),))
        elif output == "sequence":
            handle.create_dataset("targets", data=inputs[:, :, :2] * 2, chunks=(min(chunk, count), seq_len, 2))
        else:
            handle.create_dataset("targets", data=inputs[:, -1, :2] * 2, chunks=(min(chunk, count), 2))
        if lengths:
            handle.create_dataset("lengths", data=1 + np.arange(count, dtype=np.int64) % seq_len)
        for name, value in (splits or {}).items():
            handle.attrs[f"split_{name}"] = np.array(value, dtype=np.int64)
    return path


def write_series(path, rows=200, features=2, lookback=5, horizon=2, stride=1, target_columns=(1,), chunk=16):
    """series[r, f] = r + f/1000."""
    series = (np.arange(rows)[:, None] + np.arange(features)[None, :] / 1000).astype(np.float32)
    with h5py.File(path, "w") as handle:
        handle.attrs["hpcrnn_schema"] = np.int64(1)
        dset = handle.create_dataset("series", data=series, chunks=(min(chunk, rows), features))
        for name, value in (("lookback", lookback), ("horizon", horizon), ("stride", stride)):
            dset.attrs[name] = np.int64(value)
        dset.attrs["target_columns"] = np.asarray(target_columns, dtype=np.int64)
    return path


def _edit(path, function):
    with h5py.File(path, "a") as handle:
        function(handle)


def _set_value(name, index, value):
    def edit(handle):
        data = handle[name][()]
        data[index] = value
        handle[name][...] = data
    return edit


def _truncate(path):
    write_windows(path, count=400, seq_len=10, features=8)
    with open(path, "r+b") as handle:
        handle.truncate(4000)


BAD_FILES = {
    # name: (function writing the bad file at path, text the error must contain)
    "not_hdf5": (lambda p: open(p, "w").write("hello, not HDF5\n"), "not an HDF5 file"),
    "truncated": (_truncate, "truncated or corrupt"),
    "no_schema": (lambda p: _edit(write_windows(p), lambda h: h.attrs.__delitem__("hpcrnn_schema")),
                  "hpcrnn_schema"),
    "no_inputs": (lambda p: _edit(write_windows(p), lambda h: h.__delitem__("inputs")), "/inputs"),
    "no_targets": (lambda p: _edit(write_windows(p), lambda h: h.__delitem__("targets")), "/targets"),
    "inputs_rank": (lambda p: _edit(write_windows(p), lambda h: (h.__delitem__("inputs"),
                                                               h.create_dataset("inputs", data=np.zeros((50, 3))))),
                    "/inputs must have 3 dimensions"),
    "labels_dtype": (lambda p: _edit(write_windows(p, output="labels"), lambda h: (
        h.__delitem__("labels"), h.create_dataset("labels", data=np.zeros(50, np.float32)))), "/labels must be integer"),
    "length_mismatch": (lambda p: _edit(write_windows(p), lambda h: (
        h.__delitem__("targets"), h.create_dataset("targets", data=np.zeros((49, 2), np.float32)))),
        "/targets has 49 samples"),
    "negative_label": (lambda p: _edit(write_windows(p, output="labels"), _set_value("labels", 23, -1)),
                       "/labels at sample 23 is negative"),
    "lookback_too_long": (lambda p: write_series(p, rows=20, lookback=19, horizon=2), "fewer than lookback"),
    "series_attribute": (lambda p: _edit(write_series(p), lambda h: h["series"].attrs.__delitem__("stride")),
                         "attribute 'stride' is missing"),
    "bad_split": (lambda p: write_windows(p, splits={"train": (0, 80)}), "split_train"),
}


BAD_VALUES = {
    # bad values in a well-formed file: found by `hpcrnn check` and by the check of each batch as it is read
    # (opening such a file succeeds). name: (function writing it at path, text the error must contain)
    "nan_inputs": (lambda p: _edit(write_windows(p), _set_value("inputs", (37, 1, 2), np.nan)),
                   "/inputs contains NaN or Inf at sample 37"),
    "inf_targets": (lambda p: _edit(write_windows(p), _set_value("targets", (44, 0), np.inf)),
                    "/targets contains NaN or Inf at sample 44"),
    "bad_lengths": (lambda p: _edit(write_windows(p, lengths=True), _set_value("lengths", 41, 9)),
                    "/lengths at sample 41 is outside [1, 4]"),
    "nan_series": (lambda p: _edit(write_series(p), _set_value("series", (150, 0), np.nan)),
                   "/series contains NaN or Inf at row 150"),
}
