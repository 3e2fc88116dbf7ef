"""`prepare`: CSV/.npy/.npz to schema v1, chronological splits with a gap, train-only statistics."""
import argparse

import h5py
import numpy as np
import pytest

from hpcrnn import comm as mpi
from hpcrnn.data import commands
from hpcrnn.data.splits import split_ranges
from hpcrnn.data.prepare import PrepareSpec, prepare
from hpcrnn.data.schema import open_dataset
from hpcrnn.errors import DataError

SELF = mpi.self_comm()


def run(argv):
    parser = commands.add_prepare_args(argparse.ArgumentParser())
    return commands.run_prepare(parser.parse_args(argv), SELF)


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "data.csv"
    rows = np.arange(300)
    path.write_text("when,a,b\n" + "".join(f"t{i},{np.sin(i / 7):.6f},{i * 0.5}\n" for i in rows))
    return str(path)


def test_csv_series_splits_gap_and_train_statistics(tmp_path, csv_file):
    out = str(tmp_path / "s.h5")
    run(["--input", csv_file, "--out", out, "--columns", "a,b", "--target-columns", "b", "--lookback", "10",
         "--horizon", "2", "--val-fraction", "0.2", "--test-fraction", "0.1"])
    info = open_dataset(out, SELF)
    windows = 300 - 12 + 1
    assert info.form == "series" and info.num_samples == windows and info.target_columns == (1,)
    train, val, test = info.splits["train"], info.splits["val"], info.splits["test"]
    assert val[0] - train[1] == 11 and test[0] - val[1] == 11 and test[1] == windows    # gap L+H-1 windows
    assert (train[1] - 1) + 12 <= val[0]                         # the last train window ends before val starts
    train_rows = (train[1] - 1) + 12
    raw_b = np.arange(300) * 0.5
    with h5py.File(out, "r") as handle:
        mean, std = handle["stats/mean"][()], handle["stats/std"][()]
        assert np.isclose(mean[1], raw_b[:train_rows].mean()) and np.isclose(std[1], raw_b[:train_rows].std(), rtol=1e-4)
        assert np.allclose(handle["series"][:, 1] * std[1] + mean[1], raw_b, atol=1e-3)
    assert split_ranges(info, 0.5) == {"train": train, "val": val, "test": test}


def test_npz_windows_and_npy_series(tmp_path):
    inputs = np.random.default_rng(0).normal(3.0, 2.0, (40, 5, 2)).astype(np.float32)
    np.savez(tmp_path / "w.npz", inputs=inputs, labels=np.arange(40) % 4, lengths=np.full(40, 5))
    run(["--input", str(tmp_path / "w.npz"), "--out", str(tmp_path / "w.h5"), "--val-fraction", "0.25"])
    info = open_dataset(str(tmp_path / "w.h5"), SELF)
    assert info.task == "classification" and info.num_classes == 4 and info.splits["train"] == (0, 30)
    with h5py.File(tmp_path / "w.h5", "r") as handle:
        normalised = handle["inputs"][:30]
        assert np.allclose(normalised.mean(axis=(0, 1)), 0, atol=1e-5) and np.allclose(normalised.std(axis=(0, 1)), 1, atol=1e-4)
    np.save(tmp_path / "s.npy", np.random.default_rng(1).random((100, 3)))
    run(["--input", str(tmp_path / "s.npy"), "--out", str(tmp_path / "s.h5"), "--lookback", "8", "--no-normalize"])
    series = open_dataset(str(tmp_path / "s.h5"), SELF)
    assert series.num_samples == 92 and not series.has_stats


@pytest.mark.parametrize("argv,text", [
    (["--target-columns", "zz"], "'zz' is not a column"),
    (["--lookback", "400"], "fewer than lookback"),
    (["--val-fraction", "0.9"], "too few"),
])
def test_bad_requests_name_the_input(tmp_path, csv_file, argv, text):
    with pytest.raises(DataError, match=text):
        run(["--input", csv_file, "--out", str(tmp_path / "x.h5"), "--columns", "a,b"] + argv)


def test_unparsable_csv_and_missing_input(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(DataError, match="bad.csv: unparsable value"):
        prepare(PrepareSpec(input=str(bad), out=str(tmp_path / "x.h5"), lookback=1), SELF)
    with pytest.raises(DataError, match="no such file"):
        prepare(PrepareSpec(input=str(tmp_path / "none.npz"), out=str(tmp_path / "x.h5")), SELF)


def write_csv(path, rows=60, bad=()):
    """when,a,b with a blank line after data row 2; bad: (data row, column, text) cells to replace."""
    lines = ["when,a,b\n"]
    for i in range(rows):
        cells = [f"t{i}", f"{np.sin(i / 7):.6f}", f"{i * 0.5}"]
        for row, column, text in bad:
            cells[column] = text if row == i else cells[column]
        lines.append(",".join(cells) + "\n")
        if i == 2:
            lines.append("\n")
    path.write_text("".join(lines))
    return str(path)


@pytest.mark.parametrize("text, what", [("nan", "non-finite value nan"), ("-inf", "non-finite value -inf"),
                                        ("NaN", "non-finite value nan"), ("1e300", "1e+300 overflows float32"),
                                        ("-3.5e38", "-3.5e+38 overflows float32")])
def test_nonfinite_csv_value_is_refused_naming_file_line_and_column(tmp_path, text, what):
    path = write_csv(tmp_path / "data.csv", bad=[(9, 2, text)])     # data row 9: line 1 + 9 + 1 + 1 blank = 12
    with pytest.raises(DataError) as caught:
        run(["--input", path, "--out", str(tmp_path / "x.h5"), "--columns", "a,b", "--lookback", "4"])
    message = str(caught.value)
    assert message.startswith(f"{path}: line 12, column 'b': {what}") and "--drop-nonfinite" in message
    assert "\n" not in message


def test_nonfinite_value_in_a_column_left_out_is_ignored(tmp_path):
    path = write_csv(tmp_path / "data.csv", bad=[(9, 2, "nan")])
    run(["--input", path, "--out", str(tmp_path / "x.h5"), "--columns", "a", "--lookback", "4"])
    assert open_dataset(str(tmp_path / "x.h5"), SELF).num_samples == 60 - 4


def test_drop_nonfinite_leaves_out_rows_and_says_how_many(tmp_path):
    path = write_csv(tmp_path / "data.csv", bad=[(9, 2, "nan"), (20, 1, "inf")])
    out = str(tmp_path / "x.h5")
    summary = run(["--input", path, "--out", out, "--columns", "a,b", "--lookback", "4", "--no-normalize",
                   "--drop-nonfinite"])
    assert summary.endswith("; dropped 2 rows holding NaN/Inf") and "series form, 54 samples" in summary
    with h5py.File(out, "r") as handle:
        series = handle["series"][()]
        assert handle.attrs["dropped_nonfinite"] == 2
    expected = np.array([i * 0.5 for i in range(60) if i not in (9, 20)], dtype=np.float32)
    assert series.shape == (58, 2) and np.array_equal(series[:, 1], expected) and np.isfinite(series).all()
    assert open_dataset(out, SELF).num_samples == 58 - 4


def test_nonfinite_npy_series_names_row_and_column(tmp_path):
    series = np.random.default_rng(0).random((50, 3))
    series[17, 2] = 1e39                                      # finite in float64, Inf in float32
    np.save(tmp_path / "s.npy", series)
    with pytest.raises(DataError, match=r"s\.npy: row 17, column 2: 1e\+39 overflows float32"):
        run(["--input", str(tmp_path / "s.npy"), "--out", str(tmp_path / "s.h5"), "--lookback", "4"])
    summary = run(["--input", str(tmp_path / "s.npy"), "--out", str(tmp_path / "s.h5"), "--lookback", "4",
                   "--drop-nonfinite"])
    assert "dropped 1 row holding NaN/Inf" in summary and open_dataset(str(tmp_path / "s.h5"), SELF).num_samples == 45


def windows_npz(path, bad_inputs=(), bad_targets=()):
    inputs = np.arange(20, dtype=np.float32)[:, None, None] + np.zeros((20, 4, 2), dtype=np.float32)
    targets = np.arange(20, dtype=np.float64)[:, None] * np.ones((1, 2))
    for index in bad_inputs:
        inputs[index] = np.nan
    for index in bad_targets:
        targets[index] = np.inf
    np.savez(path, inputs=inputs, targets=targets, lengths=1 + np.arange(20) % 4)
    return str(path)


def test_nonfinite_npz_windows_name_array_sample_and_index(tmp_path):
    path = windows_npz(tmp_path / "w.npz", bad_inputs=[(7, 2, 1)])
    with pytest.raises(DataError, match=r"w\.npz: array 'inputs', sample 7, step 2, feature 1: non-finite value nan"):
        run(["--input", path, "--out", str(tmp_path / "w.h5")])
    path = windows_npz(tmp_path / "t.npz", bad_targets=[(11, 1)])
    with pytest.raises(DataError, match=r"t\.npz: array 'targets', sample 11, column 1: non-finite value inf"):
        run(["--input", path, "--out", str(tmp_path / "w.h5")])


def test_drop_nonfinite_windows_keeps_the_arrays_aligned(tmp_path):
    path = windows_npz(tmp_path / "w.npz", bad_inputs=[(3, 0, 0)], bad_targets=[(11, 1), (12, 0)])
    out = str(tmp_path / "w.h5")
    summary = run(["--input", path, "--out", out, "--no-normalize", "--val-fraction", "0.25", "--drop-nonfinite"])
    assert "dropped 3 samples holding NaN/Inf" in summary
    kept = [i for i in range(20) if i not in (3, 11, 12)]
    with h5py.File(out, "r") as handle:
        assert np.array_equal(handle["inputs"][:, 0, 0], kept) and np.array_equal(handle["targets"][:, 0], kept)
        assert np.array_equal(handle["lengths"][()], 1 + np.array(kept) % 4)
    info = open_dataset(out, SELF)
    assert info.num_samples == 17 and info.splits["train"] == (0, 13) and info.splits["val"] == (13, 17)
