"""`hpcrnn check` and the check of each batch, end to end under mpiexec -n 2: a clean file, a NaN, --stamp,
values altered after the stamp, and training on a file with a NaN in the middle, which every rank leaves
promptly with one line naming the file and the sample."""
import json
import os
import time

import h5py
import numpy as np

from helpers import run_cli, write_windows


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_check_clean_nan_stamp_and_altered_values(tmp_path):
    path = write_windows(str(tmp_path / "w.h5"), n=300, labels=3)
    clean = run_cli(["check", path], ranks=2, timeout=120)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.count("clean: 300 samples checked (finite, labels) on 2 rank(s)") == 1
    stamped = run_cli(["check", path, "--stamp"], ranks=2, timeout=120)
    assert stamped.returncode == 0 and stamped.stdout.strip().endswith("; stamped"), stamped.stderr
    with h5py.File(path, "r") as handle:
        assert handle.attrs["hpcrnn_checked"] == 1 and handle.attrs["hpcrnn_label_max"] == handle["labels"][:].max() == 1
        digest = handle.attrs["hpcrnn_checksum_inputs"]
    assert digest in stamped.stdout
    with h5py.File(path, "a") as handle:
        handle["inputs"][211, 3, 1] += 1.0
    assert_one_line_error(run_cli(["check", path], ranks=2, timeout=120),
                          f"{path}: /inputs checksum", f"does not match the stamp's {digest}")
    with h5py.File(path, "a") as handle:
        handle["inputs"][150, 0, 0] = np.nan
    nan = run_cli(["check", path, "--stamp", "--force"], ranks=2, timeout=120)
    assert_one_line_error(nan, f"hpcrnn: error: {path}: /inputs contains NaN or Inf at sample 150")
    with h5py.File(path, "r") as handle:
        assert handle.attrs["hpcrnn_checksum_inputs"] == digest        # a failed check never stamps


def test_train_on_a_nan_in_the_middle_exits_promptly_on_every_rank(tmp_path):
    path = write_windows(str(tmp_path / "w.h5"), n=400)
    with h5py.File(path, "a") as handle:
        handle["inputs"][203, 5, 2] = np.inf
    run_dir = str(tmp_path / "run")
    started = time.monotonic()
    result = run_cli(["train", "--data", path, "--hidden", "8", "--epochs", "3", "--batch-size", "16",
                      "--run-dir", run_dir, "--set", "train.progress=none"], ranks=2, timeout=180)
    elapsed = time.monotonic() - started
    assert_one_line_error(result, f"hpcrnn: error: {path}: /inputs contains NaN or Inf at sample 203")
    assert elapsed < 120, elapsed                                    # no rank left waiting in a collective
    with open(os.path.join(run_dir, "summary.json")) as handle:
        summary = json.load(handle)
    assert summary["state"] == "failed" and "sample 203" in summary["error"] and summary["steps"] < 25
