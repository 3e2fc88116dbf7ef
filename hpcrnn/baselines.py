"""Reference forecasts a model has to beat, made from the same input windows: persistence, the seasonal naive
forecast and the straight line through the last two values; and which input columns a file's targets
continue (what they need to know). Plain numpy, no I/O beyond a file's attributes, no MPI.

Targets of `horizon` steps of C columns are [b, horizon * C], horizon-major (as the series reader cuts them)."""
from dataclasses import dataclass

import numpy as np

SYNTH_TARGET_COLUMN = 0     # `hpcrnn synth`, windows form: /targets are the next O values of input feature 0
SYNTH_KINDS = ("mackey-glass", "lorenz96", "sines")


@dataclass(frozen=True)
class Layout:
    """Targets continue input `columns` for `horizon` steps; `reason` says why the baselines cannot be
    made ("" when they can). Without known columns, horizon is the number of outputs (one column each)."""
    columns: tuple
    horizon: int
    reason: str = ""


def synth_kind(path):
    """The generator named by the file's root attribute `synth` (written by `hpcrnn synth`), or ""."""
    import h5py
    try:
        with h5py.File(path, "r") as handle:
            text = handle.attrs.get("synth", "")
    except OSError:
        return ""
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    kind = text.split(" ", 1)[0]
    return kind if kind in SYNTH_KINDS else ""


def target_layout(info):
    """The Layout of a regression file (DatasetInfo): series files record target_columns and horizon;
    windows files written by `hpcrnn synth` continue input feature 0 (their `synth` attribute says so);
    other windows files do not say which input column the targets continue."""
    if info.head == "sequence":
        return Layout((), 0, "targets are per time step (head 'sequence'); the baselines forecast the steps "
                             "after the window")
    if info.form == "series":
        return Layout(tuple(info.target_columns), info.horizon)
    if synth_kind(info.path):
        return Layout((SYNTH_TARGET_COLUMN,), info.output_size)
    return Layout((), info.output_size, f"{info.path} does not record which input column /targets continues "
                                        "(series-form files and files written by `hpcrnn synth` do)")


def shortest_window(name, season=0):
    """How many observed steps a window needs for baseline `name`."""
    return {"persistence": 1, "two_point_linear": 2, "seasonal_naive": season}[name]


def observed(x, lengths, columns, back):
    """Values of `columns` `back` steps before each window's last observed step: float64 [b, C]. A window
    too short for it reads its first step (the caller counts such windows and drops the baseline)."""
    last = np.full(len(x), x.shape[1] - 1) if lengths is None else np.asarray(lengths, dtype=np.int64) - 1
    steps = np.maximum(last - back, 0)
    return x[np.arange(len(x))[:, None], steps[:, None], np.asarray(columns)[None, :]].astype(np.float64)


def persistence(x, lengths, layout, season=0):
    """Every target step repeats the last observed value of its column: [b, horizon, C]."""
    last = observed(x, lengths, layout.columns, 0)
    return np.repeat(last[:, None, :], layout.horizon, axis=1)


def two_point_linear(x, lengths, layout, season=0):
    """The straight line through the last two observed values: last + h * (last - previous), h = 1..H."""
    last, previous = observed(x, lengths, layout.columns, 0), observed(x, lengths, layout.columns, 1)
    h = np.arange(1, layout.horizon + 1, dtype=np.float64)[None, :, None]
    return last[:, None, :] + h * (last - previous)[:, None, :]


def seasonal_naive(x, lengths, layout, season):
    """Step h repeats the value one season before it, y[t+h] = y[t+h-S*(floor((h-1)/S)+1)] (S = 1 is
    persistence); needs windows of at least S observed steps."""
    steps = [observed(x, lengths, layout.columns, season * ((h - 1) // season + 1) - h)
             for h in range(1, layout.horizon + 1)]
    return np.stack(steps, axis=1)


FORECASTS = {"persistence": persistence, "two_point_linear": two_point_linear, "seasonal_naive": seasonal_naive}
