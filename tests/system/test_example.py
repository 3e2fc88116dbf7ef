"""Issue 15 point 7: the real-data example's fetch script and settings (docs/examples/sunspots), offline: a
wheel-shaped zip stands in for the statsmodels wheel pip would download, so no test needs the network."""
import os
import subprocess
import sys
import zipfile

import h5py
import numpy as np

from helpers import ROOT, run_cli

from hpcrnn.config import load_config

EXAMPLE = os.path.join(ROOT, "docs", "examples", "sunspots")


def fake_wheel(cache, values, first_year=1700):
    os.makedirs(cache)
    rows = "\n".join(f"{first_year + i},{v}" for i, v in enumerate(values))
    with zipfile.ZipFile(os.path.join(cache, "statsmodels-0.15.0-cp311-none-any.whl"), "w") as archive:
        archive.writestr("statsmodels/datasets/sunspots/sunspots.csv", '"YEAR","SUNACTIVITY"\n' + rows + "\n")


def fetch(out, cache):
    return subprocess.run([sys.executable, os.path.join(EXAMPLE, "fetch.py"), out, "--cache", cache],
                          capture_output=True, text=True, timeout=60)


def test_fetch_reads_the_wheel_and_prepare_makes_the_configured_file(tmp_path):
    values = 50 + 40 * np.sin(np.arange(309) * 2 * np.pi / 11)
    fake_wheel(str(tmp_path / "cache"), np.round(values, 1))
    csv = str(tmp_path / "sunspots.csv")
    done = fetch(csv, str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    assert "309 years 1700..2008" in done.stdout
    column = np.loadtxt(csv, delimiter=",", skiprows=1)
    np.testing.assert_allclose(column, np.round(values, 1))
    out = str(tmp_path / "sunspots.h5")
    prepared = run_cli(["prepare", "--input", csv, "--out", out, "--lookback", "24", "--horizon", "3",
                        "--val-fraction", "0.15", "--test-fraction", "0.15"])
    assert prepared.returncode == 0, prepared.stderr
    assert "train 0:147, val 173:215, test 241:283" in prepared.stdout   # the splits the README quotes
    with h5py.File(out, "r") as handle:
        assert handle["series"].shape == (309, 1)
    config = load_config(os.path.join(EXAMPLE, "sunspots.toml"))
    assert config.data.path == "runs/sunspots/sunspots.h5" and config.train.monitor == "val_rmse"
    assert config.checkpoint.keep_best and config.train.early_stopping_patience > 0


def test_fetch_refuses_a_series_with_a_missing_year(tmp_path):
    cache = str(tmp_path / "cache")
    os.makedirs(cache)
    with zipfile.ZipFile(os.path.join(cache, "statsmodels-0.15.0-cp311-none-any.whl"), "w") as archive:
        archive.writestr("statsmodels/datasets/sunspots/sunspots.csv", '"YEAR","SUNACTIVITY"\n1700,5\n1702,7\n')
    done = fetch(str(tmp_path / "out.csv"), cache)
    assert done.returncode != 0 and "not one row per year" in done.stderr
    assert not os.path.exists(tmp_path / "out.csv")
