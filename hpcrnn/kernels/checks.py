"""Validation at the edge of the kernels: model configuration, batches (x, y, lengths) and carried states.
Every failure is a ValueError whose message starts with the offending argument's name."""
import numpy as np

from hpcrnn.kernels import CELLS, HEADS, LOSSES


def _one_of(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


def check_config(cell, input_size, hidden_size, num_layers, output_size, head, dtype, dropout=0.0,
                 bidirectional=False):
    """Checks a Model's constructor arguments; returns the numpy dtype (float32 or float64)."""
    _one_of("cell", cell, tuple(CELLS))
    _one_of("head", head, HEADS)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.integer, np.floating)) \
            or not 0 <= dropout < 1:
        raise ValueError(f"dropout: expected a number in [0, 1), got {dropout!r}")
    if not isinstance(bidirectional, (bool, np.bool_)):
        raise ValueError(f"bidirectional: expected True or False, got {bidirectional!r}")
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("num_layers", num_layers), ("output_size", output_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dtype.name}")
    return dtype.type


def _float_array(name, value, dtype):
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise ValueError(f"{name}: expected a floating-point array, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=dtype)


def _check_finite(name, array):
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or infinite values")


def check_batch(model, x, y, lengths, check_finite, loss):
    """Returns (x, y, lengths): x [B, T, F] in the model dtype; y converted (None stays None); lengths int64 [B]."""
    if loss is not None:
        _one_of("loss", loss, LOSSES)
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x: expected 3 dims [batch, time, features], got {x.ndim}")
    x = _float_array("x", x, model.dtype)
    B, T, F = x.shape
    if F != model.input_size:
        raise ValueError(f"x: expected {model.input_size} features (input_size), got {F}")
    if T < 1:
        raise ValueError("x: expected at least 1 time step, got 0")
    if check_finite:
        _check_finite("x", x)
    lengths = _check_lengths(lengths, B, T)
    if y is not None:
        y = _check_targets(model, y, B, T, loss, check_finite)
    elif loss is not None:
        raise ValueError("y: targets are required to compute a loss")
    return x, y, lengths


def _check_lengths(lengths, B, T):
    if lengths is None:
        return np.full(B, T, np.int64)
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu":
        raise ValueError(f"lengths: expected an integer array, got dtype {lengths.dtype}")
    if lengths.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},) [batch], got {lengths.shape}")
    if B and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(f"lengths: expected values in [1, {T}] (time steps), got {lengths.min()}..{lengths.max()}")
    return np.ascontiguousarray(lengths, dtype=np.int64)


def _check_targets(model, y, B, T, loss, check_finite):
    y = np.asarray(y)
    classify = loss == "cross_entropy" or (loss is None and y.dtype.kind in "iu")
    if classify:
        if model.head != "last":
            raise ValueError(f"loss: cross_entropy needs head 'last', the model has head {model.head!r}")
        if y.dtype.kind not in "iu":
            raise ValueError(f"y: expected integer class labels for cross_entropy, got dtype {y.dtype}")
        if y.shape != (B,):
            raise ValueError(f"y: expected shape ({B},) [batch] of class labels, got {y.shape}")
        if B and (y.min() < 0 or y.max() >= model.output_size):
            raise ValueError(f"y: expected labels in [0, {model.output_size}), got {y.min()}..{y.max()}")
        return np.ascontiguousarray(y, dtype=np.int64)
    shape = (B, model.output_size) if model.head == "last" else (B, T, model.output_size)
    legend = "[batch, outputs]" if model.head == "last" else "[batch, time, outputs]"
    if y.shape != shape:
        raise ValueError(f"y: expected shape {shape} {legend}, got {y.shape}")
    y = _float_array("y", y, model.dtype)
    if check_finite:
        _check_finite("y", y)
    return y


def check_indices(sample_indices, batch, step):
    """Checks a training step's dropout key: step an integer >= 0, sample_indices None (0..B-1) or int [B]
    >= 0. Returns the indices as int64 [B]."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step: expected an integer >= 0, got {step!r}")
    if sample_indices is None:
        return np.arange(batch, dtype=np.int64)
    indices = np.asarray(sample_indices)
    if indices.dtype.kind not in "iu" or indices.shape != (batch,):
        raise ValueError(f"sample_indices: expected integers of shape ({batch},) [batch], got {indices.dtype} "
                         f"{indices.shape}")
    if batch and indices.min() < 0:
        raise ValueError(f"sample_indices: expected values >= 0, got {indices.min()}")
    return np.ascontiguousarray(indices, dtype=np.int64)


def check_state(model, h0, batch, return_state=False):
    """Checks a carried state: None, or one entry per layer, h [B, H] (lstm: a pair (h, c)). Returns it
    converted to the model dtype. Bidirectional models carry no state (neither h0 nor return_state)."""
    if model.bidirectional and (h0 is not None or return_state):
        raise ValueError(f"{'h0' if h0 is not None else 'return_state'}: carried states need a unidirectional "
                         "model (bidirectional layers see the whole window)")
    if h0 is None:
        return None
    if len(h0) != model.num_layers:
        raise ValueError(f"h0: expected one state per layer ({model.num_layers}), got {len(h0)}")
    pair = CELLS[model.cell].carries_c
    converted = []
    for layer, state in enumerate(h0):
        parts = tuple(state) if pair else (state,)
        if len(parts) != (2 if pair else 1):
            raise ValueError(f"h0: layer {layer}: expected an (h, c) pair for lstm")
        arrays = [_float_array(f"h0[{layer}]", part, model.dtype) for part in parts]
        for array in arrays:
            if array.shape != (batch, model.hidden_size):
                raise ValueError(f"h0[{layer}]: expected shape {(batch, model.hidden_size)} [batch, hidden], "
                                 f"got {array.shape}")
        converted.append(tuple(arrays) if pair else arrays[0])
    return converted
