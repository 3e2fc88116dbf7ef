"""`prepare`: CSV/.npy/.npz to schema v1, chronological splits with a gap, train-only statistics."""
import argparse

import h5py
import numpy as np
import pytest

from hpcrnn import comm as mpi
from hpcrnn.data import commands
from hpcrnn.data.loader import split_ranges
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
