"""Issue 15 point 6: the `make run` demo (data/demo.toml at 2 ranks, run here without `make`, whose setup
step would reinstall) beats persistence and the straight line through the last two values by a clear
margin on the val windows, prints the skill, and ends with a report."""
import json

import pytest

from helpers import ROOT, run_cli

from hpcrnn.config import load_config


def test_demo_config_keeps_the_best_and_stops_early():
    config = load_config(f"{ROOT}/data/demo.toml")
    assert config.checkpoint.keep_best and config.train.early_stopping_patience > 0
    assert config.train.monitor == "val_loss"


@pytest.mark.slow          # about 15 s of training on an idle 2-core machine, several times that when shared
def test_make_run_demo_beats_both_baselines(tmp_path):
    run_dir = tmp_path / "demo"
    train = run_cli(["train", "--config", "data/demo.toml", "--run-dir", run_dir, "--set", "train.progress=none"],
                    ranks=2, timeout=900)
    assert train.returncode == 0, train.stderr
    evaluation = run_cli(["evaluate", "--checkpoint", run_dir, "--data", "data/mackey_glass.h5", "--split", "val"],
                         ranks=2)
    assert evaluation.returncode == 0, evaluation.stderr
    metrics = json.loads(evaluation.stdout.strip().splitlines()[-1])
    persistence = metrics["baselines"]["persistence"]["rmse"]
    line = metrics["baselines"]["two_point_linear"]["rmse"]
    assert persistence == pytest.approx(0.0853, abs=5e-5) and line == pytest.approx(0.0430, abs=5e-5)
    assert metrics["rmse"] < line / 3 and metrics["skill"] > 0.8, metrics       # measured: 0.0048, skill 0.944
    assert all(m < l for m, l in zip(metrics["per_horizon_rmse"],
                                     metrics["baselines"]["two_point_linear"]["per_horizon_rmse"]))
    assert metrics["checkpoint"].endswith("best.h5") and "skill = 1 - RMSE_model / RMSE_persistence" in evaluation.stdout
    report = run_cli(["report", run_dir], ranks=2)
    assert report.returncode == 0 and f"report: {run_dir}/report.md" in report.stdout, report.stderr
