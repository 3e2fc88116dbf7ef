"""Issue 15 points 1, 3 and 5 from the command line: evaluate/predict take a run directory's best.h5 (or its
last checkpoint with --which last); evaluate reports baselines on the same windows (checked against numpy
on the file) and the skill, per-horizon RMSE and, for labels, the confusion matrix; `hpcrnn report` writes
report.md with its plots."""
import json
import math
import os

import h5py
import numpy as np
import pytest

from helpers import run_cli, write_windows

from hpcrnn.comm import self_comm
from hpcrnn.data.synth import SynthSpec, write

VAL = 0.25


def last_json(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def exit_2(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def train_args(data, run_dir, *extra):
    return ["train", "--data", data, "--run-dir", run_dir, "--cell", "rnn", "--hidden", 6, "--batch-size", 8,
            "--epochs", 6, "--lr", 0.02, "--set", "train.progress=none", "--set", f"data.val_fraction={VAL}",
            "--set", "checkpoint.keep=10", *extra]


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    """A Mackey-Glass file of 47 windows (12 steps, horizon 3) from `hpcrnn synth`, and a run on it that
    stops early: min_delta 1e9 makes the first evaluation the best, so best.h5 (step 5) is not the last."""
    folder = tmp_path_factory.mktemp("evaluate")
    data = str(folder / "mg.h5")
    write(SynthSpec(kind="mackey-glass", sequences=47, length=12, features=2, horizon=3, out=data, seed=3), self_comm())
    run_dir = str(folder / "run")
    result = run_cli(train_args(data, run_dir, "--set", "train.early_stopping_patience=2",
                                "--set", "train.early_stopping_min_delta=1e9"))
    assert result.returncode == 0, result.stderr
    assert "early stopping at step 15" in result.stdout
    return data, run_dir


@pytest.mark.slow        # 7 command runs: ~10 s here when the machine is idle
def test_evaluate_and_predict_use_best_unless_asked_for_last(synth_run, tmp_path):
    data, run_dir = synth_run
    folder = os.path.join(run_dir, "checkpoints")
    with open(os.path.join(run_dir, "summary.json")) as handle:
        summary = json.load(handle)
    assert summary["stopped_early"] is True and summary["best"]["step"] == 5 and summary["steps"] == 15
    best = last_json(run_cli(["evaluate", "--checkpoint", run_dir, "--data", data, "--split", "val"]))
    assert best["checkpoint"] == os.path.join(folder, "best.h5") and best["step"] == 5
    assert math.isclose(best["loss"], summary["best"]["value"], rel_tol=1e-6)
    last = last_json(run_cli(["evaluate", "--checkpoint", run_dir, "--data", data, "--which", "last"]))
    assert last["checkpoint"] == os.path.join(folder, "step-000000015.h5") and last["step"] == 15
    exit_2(run_cli(["evaluate", "--checkpoint", os.path.join(folder, "best.h5"), "--data", data, "--which", "best"]),
           "--which best: applies to a run directory")
    out = tmp_path / "p.h5"
    for which, step in (("best", 5), ("last", 15)):
        result = run_cli(["predict", "--checkpoint", run_dir, "--data", data, "--out", out, "--which", which])
        assert result.returncode == 0, result.stderr
        with h5py.File(out, "r") as handle:
            assert handle.attrs["checkpoint"].endswith("best.h5" if which == "best" else f"step-{step:09d}.h5")
        os.remove(out)
    before = open(os.path.join(folder, "best.h5"), "rb").read()
    refused = run_cli(["predict", "--checkpoint", run_dir, "--data", data, "--out", os.path.join(folder, "best.h5")])
    exit_2(refused, "same file as the checkpoint")
    refused = run_cli(["predict", "--checkpoint", run_dir, "--which", "last", "--data", data,
                       "--out", os.path.join(folder, "best.h5")])
    exit_2(refused, "would overwrite an hpcrnn checkpoint")
    assert open(os.path.join(folder, "best.h5"), "rb").read() == before


@pytest.mark.parametrize("ranks", [0, 2])
def test_baselines_equal_numpy_on_the_same_windows(synth_run, tmp_path, ranks):
    data, run_dir = synth_run
    result = run_cli(["evaluate", "--checkpoint", run_dir, "--data", data, "--split", "val", "--season", 5],
                     ranks=ranks)
    metrics = last_json(result)
    with h5py.File(data, "r") as handle:
        first = 47 - int(47 * VAL)
        x, y = handle["inputs"][first:].astype(np.float64), handle["targets"][first:].astype(np.float64)
    assert metrics["count"] == 47 - first
    last, previous = x[:, -1, :1], x[:, -2, :1]
    expected = {"persistence": y - last,
                "two_point_linear": y - (last + np.arange(1, 4) * (last - previous)),
                "seasonal_naive": y - x[:, [-5, -4, -3], 0]}        # season 5: h = 1, 2, 3 look 5 steps back
    for name, error in expected.items():
        scores = metrics["baselines"][name]
        assert math.isclose(scores["rmse"], np.sqrt(np.mean(error ** 2)), rel_tol=1e-12), name
        assert math.isclose(scores["mae"], np.mean(np.abs(error)), rel_tol=1e-12), name
        np.testing.assert_allclose(scores["per_horizon_rmse"], np.sqrt(np.mean(error ** 2, axis=0)), rtol=1e-12)
    persistence = metrics["baselines"]["persistence"]["rmse"]
    assert math.isclose(metrics["skill"], 1 - metrics["rmse"] / persistence, rel_tol=1e-12)
    predictions = tmp_path / "p.h5"
    assert run_cli(["predict", "--checkpoint", run_dir, "--data", data, "--out", predictions]).returncode == 0
    with h5py.File(predictions, "r") as handle:
        model_error = handle["predictions"][first:].astype(np.float64) - y
    np.testing.assert_allclose(metrics["per_horizon_rmse"], np.sqrt(np.mean(model_error ** 2, axis=0)), rtol=1e-9)
    assert math.isclose(metrics["rmse"], np.sqrt(np.mean(model_error ** 2)), rel_tol=1e-5)
    table = result.stdout.splitlines()
    assert any(line.split()[:1] == ["persistence"] for line in table)
    assert f"skill = 1 - RMSE_model / RMSE_persistence = {metrics['skill']:.3f}" in result.stdout


def test_unrecorded_target_column_is_unavailable_with_the_reason(tmp_path):
    data = write_windows(str(tmp_path / "w.h5"), n=30)
    run_dir = tmp_path / "run"
    assert run_cli(train_args(data, run_dir, "--epochs", 1)).returncode == 0
    result = run_cli(["evaluate", "--checkpoint", run_dir, "--data", data, "--season", 2])
    metrics = last_json(result)
    assert set(metrics["baselines"]) == {"persistence", "two_point_linear", "seasonal_naive"}
    for scores in metrics["baselines"].values():
        assert "does not record which input column /targets continues" in scores["unavailable"]
    assert metrics["skill"] is None and len(metrics["per_horizon_rmse"]) == 2
    assert "persistence: unavailable (" in result.stdout
    exit_2(run_cli(["evaluate", "--checkpoint", run_dir, "--data", data, "--season", 0]), "--season: must be")
    other = write_windows(str(tmp_path / "o.h5"), n=10, outputs=1)
    exit_2(run_cli(["evaluate", "--checkpoint", run_dir, "--data", other]), "has 1 target values a sample",
           "predicts 2")
    os.remove(run_dir / "checkpoints" / "best.h5")
    result = run_cli(["evaluate", "--checkpoint", run_dir, "--data", data, "--which", "best"])
    assert last_json(result)["checkpoint"].endswith("step-000000003.h5")        # 23 train samples, batch 8
    assert "has no best.h5 (checkpoint.keep_best off, or no validation split): using the newest" in result.stdout


def test_labels_confusion_matrix_and_majority_class(tmp_path):
    data = write_windows(str(tmp_path / "l.h5"), n=60, labels=3)
    run_dir = tmp_path / "run"
    assert run_cli(train_args(data, run_dir, "--epochs", 2, "--set", "train.monitor=val_accuracy")).returncode == 0
    result = run_cli(["evaluate", "--checkpoint", run_dir, "--data", data], ranks=2)
    metrics = last_json(result)
    predictions = tmp_path / "p.h5"
    assert run_cli(["predict", "--checkpoint", run_dir, "--data", data, "--out", predictions]).returncode == 0
    with h5py.File(predictions, "r") as handle:
        predicted = np.argmax(handle["predictions"][()], axis=1)
    with h5py.File(data, "r") as handle:
        labels = handle["labels"][()]
    classes = len(metrics["confusion_matrix"])
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    assert metrics["confusion_matrix"] == confusion.tolist()
    assert math.isclose(metrics["accuracy"], np.mean(predicted == labels), rel_tol=1e-12)
    counts = np.bincount(labels, minlength=classes)
    majority = metrics["baselines"]["majority_class"]
    assert majority["class"] == int(np.argmax(counts)) and math.isclose(majority["accuracy"], counts.max() / 60)
    assert metrics["per_class_recall"] == [confusion[c, c] / counts[c] if counts[c] else None for c in range(classes)]
    assert "confusion matrix (rows: true class, columns: predicted class):" in result.stdout


@pytest.mark.slow
def test_report_writes_markdown_and_plots(synth_run, tmp_path):
    data, run_dir = synth_run
    result = run_cli(["report", run_dir], ranks=2)
    assert result.returncode == 0, result.stderr
    report = os.path.join(run_dir, "report.md")
    assert f"report: {report}" in result.stdout
    text = open(report).read()
    assert "| best | val_loss " in text and "at step 5 (epoch 1)" in text and "stopped early: yes" in text
    assert "## Evaluation of best.h5 (step 5) on the val split" in text
    assert "| persistence |" in text and "skill = 1 - RMSE_model / RMSE_persistence" in text
    assert "```toml" in text and "early_stopping_patience = 2" in text
    names = ["loss.png", "val_metrics.png", "learning_rate.png", "throughput.png", "phases.png"]
    for name in names:
        assert f"](report/{name})" in text
        with open(os.path.join(run_dir, "report", name), "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n", name
    moved = run_cli(["report", run_dir, "--data", tmp_path / "gone.h5"])
    assert moved.returncode == 0, moved.stderr
    assert "Not available: " in open(report).read() and "gone.h5" in open(report).read()
    exit_2(run_cli(["report", tmp_path]), "no metrics.jsonl")
