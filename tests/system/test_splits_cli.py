"""Splits from the command line: a class-sorted file warns with a chronological split and not with a stratified one
(whose val split holds every class), val files of another schema and splits that do not fit the file are one-line
errors, and evaluate finds the val samples of a run with data.val_path; serially and under mpiexec -n 2."""
import json

import h5py
import numpy as np
import pytest

from helpers import run_cli, write_windows
from test_cli import assert_one_line_error

WARNING = "holds only class"
TRAIN = ["--hidden", 4, "--epochs", 1, "--batch-size", 32, "--set", "train.progress=none"]


@pytest.fixture(scope="module")
def class_sorted(tmp_path_factory):
    """A sines file of 3 classes (hpcrnn synth), rewritten with its samples sorted by label."""
    folder = tmp_path_factory.mktemp("sorted")
    raw, path = str(folder / "raw.h5"), str(folder / "sorted.h5")
    result = run_cli(["synth", "--kind", "sines", "--classes", 3, "--sequences", 240, "--length", 12,
                      "--features", 2, "--out", raw])
    assert result.returncode == 0, result.stderr
    with h5py.File(raw, "r") as source, h5py.File(path, "w") as out:
        order = np.argsort(source["labels"][()], kind="stable")
        for key, value in source.attrs.items():
            out.attrs[key] = value
        for name in source:
            out.create_dataset(name, data=source[name][()][order])
    return path


def val_labels(run_dir, data):
    """Labels of the val samples the run used, from its saved config."""
    from hpcrnn.comm import self_comm
    from hpcrnn.config import from_toml_text
    from hpcrnn.data.schema import open_dataset
    from hpcrnn.data.splits import file_splits
    with open(f"{run_dir}/config.toml") as handle:
        config = from_toml_text(handle.read())
    val = file_splits(open_dataset(data, comm=self_comm()), config.data, self_comm())["val"]
    with h5py.File(data, "r") as handle:
        return handle["labels"][()][val.array()]


def test_chronological_split_of_a_class_sorted_file_warns_once_under_mpiexec(class_sorted, tmp_path):
    result = run_cli(["train", "--data", class_sorted, "--run-dir", tmp_path / "chrono", *TRAIN], ranks=2)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(WARNING) == 1 and 'data.split = "stratified"' in result.stdout, result.stdout
    assert len(set(val_labels(tmp_path / "chrono", class_sorted))) == 1


@pytest.mark.parametrize("ranks", [0, 2])
def test_stratified_split_holds_every_class_and_does_not_warn(class_sorted, tmp_path, ranks):
    run_dir = tmp_path / f"strat{ranks}"
    result = run_cli(["train", "--data", class_sorted, "--run-dir", run_dir, "--set", "data.split=stratified",
                      *TRAIN], ranks=ranks)
    assert result.returncode == 0, result.stderr
    assert WARNING not in result.stdout + result.stderr
    labels = val_labels(run_dir, class_sorted)
    assert sorted(set(labels)) == [0, 1, 2] and len(labels) == 24


def test_val_file_with_another_feature_count_is_a_one_line_error(tmp_path):
    data = write_windows(str(tmp_path / "train.h5"), n=30, features=3)
    other = write_windows(str(tmp_path / "val.h5"), n=10, features=5)
    for ranks in (0, 2):
        result = run_cli(["train", "--data", data, "--run-dir", tmp_path / f"r{ranks}", "--set",
                          f"data.val_path={other}", *TRAIN], ranks=ranks)
        assert_one_line_error(result, "data.val_path", other, data, "feature count 5 vs 3")


def test_random_split_of_a_series_file_is_a_one_line_error(tmp_path):
    data = str(tmp_path / "mg.h5")
    assert run_cli(["synth", "--kind", "mackey-glass", "--sequences", 2, "--length", 200, "--features", 1,
                    "--form", "series", "--out", data]).returncode == 0
    result = run_cli(["train", "--data", data, "--run-dir", tmp_path / "r", "--set", "data.split=random", *TRAIN],
                     ranks=2)
    assert_one_line_error(result, "data.split: random", "series form", "overlap")


def test_evaluate_finds_the_val_file_of_a_run(tmp_path):
    data = write_windows(str(tmp_path / "train.h5"), n=40)
    other = write_windows(str(tmp_path / "val.h5"), n=13, seed=4)
    run_dir = tmp_path / "run"
    result = run_cli(["train", "--data", data, "--run-dir", run_dir, "--set", f"data.val_path={other}",
                      "--set", "data.val_fraction=0.5", *TRAIN], ranks=2)
    assert result.returncode == 0, result.stderr
    assert "40 train samples" in result.stdout                     # val_fraction does not cut the train file
    with open(run_dir / "metrics.jsonl") as handle:
        last_eval = [r for r in map(json.loads, handle) if r.get("event") == "eval"][-1]
    evaluated = run_cli(["evaluate", "--checkpoint", run_dir, "--data", other, "--split", "val"], ranks=2)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert metrics["count"] == last_eval["count"] == 13
    assert abs(metrics["loss"] - last_eval["loss"]) <= 1e-6 * abs(last_eval["loss"])
    assert_one_line_error(run_cli(["evaluate", "--checkpoint", run_dir, "--data", data, "--split", "val"]),
                          "is the run's training file", f"--data {other}")
