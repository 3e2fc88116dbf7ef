"""The check of each batch as it is read (the values are in memory already): NaN/Inf in x and y when
info.check_finite (files without a stamp), lengths in [1, T] and labels in [0, classes) always. Returns a
one-line message naming the file and the global sample index (series: the row) of the first problem."""
import numpy as np


def first_problem(info, x, y, lengths, indices):
    """The message for the first bad sample of a batch (x [b,T,F], y, lengths [b] or None, global indices
    [b]), or None when the batch is clean."""
    if len(indices) == 0:
        return None
    if info.check_finite:
        problem = _nonfinite(info, x, y, indices)
        if problem:
            return problem
    if lengths is not None:
        bad = (lengths < 1) | (lengths > info.seq_len)
        if bad.any():
            return f"{info.path}: /lengths at sample {int(indices[np.argmax(bad)])} is outside [1, {info.seq_len}]"
    if info.task == "classification":
        bad = (y < 0) | (y >= info.num_classes)
        if bad.any():
            k = int(np.argmax(bad))
            return (f"{info.path}: /labels at sample {int(indices[k])} is {int(y[k])}, outside [0, "
                    f"{info.num_classes}) (the classes found when the file was opened)")
    return None


def _first_bad_row(array):
    """Position of the first row of array holding NaN or Inf, or -1. Clean arrays cost a min and a max."""
    if not len(array) or (np.isfinite(array.min()) and np.isfinite(array.max())):
        return -1
    return int(np.argmin(np.isfinite(array.reshape(len(array), -1)).all(axis=1)))


def _nonfinite(info, x, y, indices):
    k = _first_bad_row(x)
    if k >= 0:
        if info.form == "series":
            step = int(np.argmin(np.isfinite(x[k]).all(axis=1)))
            row = int(indices[k]) * info.stride + step
            return f"{info.path}: /series contains NaN or Inf at row {row} (window of sample {int(indices[k])})"
        return f"{info.path}: /inputs contains NaN or Inf at sample {int(indices[k])}"
    if info.task != "regression":
        return None
    k = _first_bad_row(y)
    if k < 0:
        return None
    if info.form == "series":
        ahead = int(np.argmin(np.isfinite(y[k].reshape(info.horizon, -1)).all(axis=1)))
        row = int(indices[k]) * info.stride + info.lookback + ahead
        return f"{info.path}: /series contains NaN or Inf at row {row} (target of sample {int(indices[k])})"
    return f"{info.path}: /targets contains NaN or Inf at sample {int(indices[k])}"
