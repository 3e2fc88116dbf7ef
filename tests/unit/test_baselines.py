"""Baselines and evaluation sums, checked against independent numpy on the same windows: persistence, the
two-point line and the seasonal naive forecast (series with two target columns, variable lengths), per-horizon
RMSE, unavailable baselines with their reason, the confusion matrix, macro-F1 and the majority class."""
import math

import h5py
import numpy as np
import pytest

from hpcrnn.comm import self_comm
from hpcrnn.baselines import Layout, persistence, seasonal_naive, target_layout, two_point_linear
from hpcrnn.data.schema import describe
from hpcrnn.data.synth import SynthSpec, write
from hpcrnn.scores import ClassificationScores, RegressionScores, macro_f1
from hpcrnn.scoretable import markdown_table, text_table


def write_random_series(path, rows=60, features=3, lookback=7, horizon=3, stride=2, target_columns=(2, 0)):
    series = np.random.default_rng(1).standard_normal((rows, features)).astype(np.float32)
    with h5py.File(path, "w") as handle:
        handle.attrs["hpcrnn_schema"] = np.int64(1)
        dset = handle.create_dataset("series", data=series)
        for name, value in (("lookback", lookback), ("horizon", horizon), ("stride", stride)):
            dset.attrs[name] = np.int64(value)
        dset.attrs["target_columns"] = np.asarray(target_columns, dtype=np.int64)
    return series


def windows_of(series, lookback, horizon, stride, columns):
    """x [N, lookback, F] and y [N, horizon*C] (horizon-major), cut independently of hpcrnn's reader."""
    count = (len(series) - lookback - horizon) // stride + 1
    x = np.stack([series[i * stride:i * stride + lookback] for i in range(count)])
    y = np.stack([series[i * stride + lookback:i * stride + lookback + horizon][:, list(columns)].reshape(-1)
                  for i in range(count)])
    return x, y


def test_forecasts_match_a_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 9, 4)).astype(np.float32)
    lengths = np.array([9, 3, 5, 9, 6])
    layout = Layout((3, 1), 4)
    last = np.array([x[i, lengths[i] - 1, [3, 1]] for i in range(5)], dtype=np.float64)
    before = np.array([x[i, lengths[i] - 2, [3, 1]] for i in range(5)], dtype=np.float64)
    np.testing.assert_array_equal(persistence(x, lengths, layout), np.repeat(last[:, None], 4, axis=1))
    line = two_point_linear(x, lengths, layout)
    for h in range(4):
        np.testing.assert_allclose(line[:, h], last + (h + 1) * (last - before), rtol=1e-12)
    seasonal = seasonal_naive(x, lengths, layout, 3)       # h = 1, 2, 3 -> 3 steps back; h = 4 -> back 2 more
    for h, back in zip(range(4), (2, 1, 0, 2)):
        expected = np.array([x[i, lengths[i] - 1 - back, [3, 1]] for i in range(5)])
        np.testing.assert_array_equal(seasonal[:, h], expected)
    np.testing.assert_array_equal(seasonal_naive(x, None, layout, 1), persistence(x, None, layout))


def test_series_per_horizon_rmse_equals_numpy(tmp_path):
    path = str(tmp_path / "s.h5")
    series = write_random_series(path)
    info = describe(path)
    layout = target_layout(info)
    assert layout == Layout((2, 0), 3)
    x, y = windows_of(series, 7, 3, 2, (2, 0))
    y_hat = y + np.random.default_rng(2).standard_normal(y.shape).astype(np.float32) * 0.1
    scores = RegressionScores(layout, y.shape[1], season=2)
    for part in np.array_split(np.arange(len(x)), 3):                # three batches, sums added
        scores.add(x[part], y[part], None, y_hat[part])
    model_rmse = float(np.sqrt(np.mean((y_hat.astype(np.float64) - y) ** 2)))
    out = scores.results(scores.sums, {"rmse": model_rmse})
    truth = y.astype(np.float64).reshape(len(y), 3, 2)
    np.testing.assert_allclose(out["per_horizon_rmse"],
                               np.sqrt(((y_hat.reshape(len(y), 3, 2) - truth) ** 2).mean(axis=(0, 2))), rtol=1e-12)
    starts = np.arange(len(x)) * 2
    last = series[starts + 6][:, [2, 0]].astype(np.float64)          # row before the first target row
    errors = np.stack([series[starts + 7 + h][:, [2, 0]] - last for h in range(3)], axis=1)
    p = out["baselines"]["persistence"]
    assert math.isclose(p["rmse"], np.sqrt(np.mean(errors ** 2)), rel_tol=1e-12)
    assert math.isclose(p["mae"], np.mean(np.abs(errors)), rel_tol=1e-12)
    np.testing.assert_allclose(p["per_horizon_rmse"], np.sqrt((errors ** 2).mean(axis=(0, 2))), rtol=1e-12)
    assert math.isclose(out["skill"], 1 - model_rmse / p["rmse"], rel_tol=1e-12)
    assert set(out["baselines"]) == {"persistence", "two_point_linear", "seasonal_naive"}


def test_synth_windows_continue_feature_0(tmp_path):
    path = str(tmp_path / "mg.h5")
    write(SynthSpec(kind="mackey-glass", sequences=6, length=10, features=2, horizon=3, out=path), self_comm())
    info = describe(path)
    assert target_layout(info) == Layout((0,), 3)
    with h5py.File(path, "r") as handle:
        x, y = handle["inputs"][()], handle["targets"][()]
    scores = RegressionScores(target_layout(info), 3)
    scores.add(x, y, None, y)
    out = scores.results(scores.sums, {"rmse": 0.0})
    expected = np.sqrt(np.mean((y.astype(np.float64) - x[:, -1, :1]) ** 2))
    assert math.isclose(out["baselines"]["persistence"]["rmse"], expected, rel_tol=1e-12)
    assert out["skill"] == 1.0 and out["per_horizon_rmse"] == [0.0, 0.0, 0.0]


def test_unavailable_baselines_say_why(tmp_path):
    from helpers import write_windows
    plain = write_windows(str(tmp_path / "w.h5"), n=8, seq_len=5, outputs=2)
    layout = target_layout(describe(plain))
    assert layout.columns == () and "does not record which input column" in layout.reason
    scores = RegressionScores(layout, 2, season=3)
    x = np.zeros((8, 5, 3), np.float32)
    scores.add(x, np.ones((8, 2), np.float32), None, np.zeros((8, 2), np.float32))
    out = scores.results(scores.sums, {"rmse": 1.0})
    assert out["per_horizon_rmse"] == [1.0, 1.0] and out["skill"] is None
    assert all("does not record" in b["unavailable"] for b in out["baselines"].values())
    sequence = target_layout(describe(write_windows(str(tmp_path / "q.h5"), n=8, sequence=True)))
    assert "head 'sequence'" in sequence.reason
    short = RegressionScores(Layout((0,), 2), 2, season=4)       # windows of 3 observed steps: season 4 too long
    short.add(np.ones((4, 3, 1), np.float32), np.ones((4, 2), np.float32), np.array([3, 1, 3, 2]),
              np.ones((4, 2), np.float32))
    out = short.results(short.sums, {"rmse": 0.0})
    assert out["baselines"]["seasonal_naive"] == {"unavailable": "4 windows have fewer than 4 observed steps"}
    assert out["baselines"]["two_point_linear"] == {"unavailable": "1 windows have fewer than 2 observed steps"}
    assert out["baselines"]["persistence"]["rmse"] == 0.0


def test_confusion_macro_f1_and_majority_class():
    scores = ClassificationScores(3)
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 1, 2, 1, 0, 2, 2, 0])
    logits = np.eye(3)[predicted] * 5.0
    scores.add(None, labels[:4], None, logits[:4])
    scores.add(None, labels[4:], None, logits[4:])
    out = scores.results(scores.sums, {"accuracy": 5 / 9})
    assert out["confusion_matrix"] == [[2, 1, 1], [1, 1, 0], [1, 0, 2]]
    f1 = [2 * 2 / (2 * 2 + 2 + 2), 2 * 1 / (2 + 1 + 1), 2 * 2 / (4 + 1 + 1)]
    assert math.isclose(out["macro_f1"], np.mean(f1), rel_tol=1e-12)
    assert out["per_class_recall"] == [0.5, 0.5, 2 / 3]
    majority = out["baselines"]["majority_class"]
    assert majority["class"] == 0 and math.isclose(majority["accuracy"], 4 / 9)
    assert math.isclose(majority["macro_f1"], (8 / 13) / 3, rel_tol=1e-12)   # F1 of class 0 is 8/13; 1, 2: 0
    assert math.isclose(out["skill"], 1 - (4 / 9) / (5 / 9), rel_tol=1e-12)
    assert macro_f1(np.zeros((2, 2), np.int64)) == 0.0
    text = text_table({**out, "accuracy": 5 / 9})
    assert "majority_class (0)" in text and "confusion matrix" in text and "0.5556" in text


def test_tables_show_the_model_the_baselines_and_the_skill():
    metrics = {"rmse": 0.02, "mae": 0.01, "per_horizon_rmse": [0.01, 0.03],
               "baselines": {"persistence": {"rmse": 0.08, "mae": 0.06, "per_horizon_rmse": [0.05, 0.1]},
                             "seasonal_naive": {"unavailable": "no season"}}, "skill": 0.75}
    text = text_table(metrics)
    assert text.splitlines()[1].split() == ["model", "0.02", "0.01", "0.01", "0.03"]
    assert "persistence" in text and "seasonal_naive: unavailable (no season)" in text
    assert "skill = 1 - RMSE_model / RMSE_persistence = 0.750" in text
    assert "| persistence | 0.08 | 0.06 | 0.05 | 0.1 |" in markdown_table(metrics)
    losing = text_table({**metrics, "skill": -0.5})
    assert "does not beat persistence" in losing


@pytest.mark.parametrize("horizons", [1, 9])
def test_per_horizon_columns_are_capped(horizons):
    metrics = {"rmse": 1.0, "mae": 1.0, "per_horizon_rmse": [1.0] * horizons, "baselines": {}, "skill": None}
    header = text_table(metrics).splitlines()[0]
    assert header.count("RMSE h=") == min(horizons, 6) and ("..." in header) == (horizons > 6)
