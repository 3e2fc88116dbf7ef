"""Issue 15 point 1: early stopping after exactly `patience` evaluations without improvement, best.h5 holding the
best monitored step (and surviving retention), summary.json's best/stopped_early, resume keeping the early
stopping state, bitwise. In-process runs on COMM_SELF with tiny data (a few seconds)."""
import io
import json
import os

import numpy as np
import pytest

from helpers import run_cli, write_windows

from hpcrnn import checkpoint as ckpt
from hpcrnn.comm import self_comm
from hpcrnn.config import load_config
from hpcrnn.run import train

STEPS_PER_EPOCH = 4          # 40 samples, val_fraction 0.25 -> 30 train samples, batch 8


def config(data, run_dir, **values):
    base = {"data.path": data, "run_dir": run_dir, "model.cell": "rnn", "model.hidden_size": 4,
            "train.batch_size": 8, "train.epochs": 10, "train.progress": "none", "data.val_fraction": 0.25,
            "optim.lr": 0.02, "checkpoint.keep": 100, "model.dtype": "float64"}
    return load_config(None, [], {**base, **values})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_windows(str(tmp_path_factory.mktemp("es") / "d.h5"), n=40)


def evals(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [r for r in map(json.loads, handle) if r.get("event") == "eval"]


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as handle:
        return json.load(handle)


def params(path):
    return {k: v for k, v in ckpt.load(path)[0].items() if k.startswith("params/")}


@pytest.fixture
def scripted(monkeypatch):
    """Val losses by step: evaluate_split returns table[step] instead of evaluating."""
    import hpcrnn.train as train_module
    table, current = {}, {}
    original = train_module.Trainer.log_eval

    def log_eval(self):
        current["step"] = self.step
        return original(self)
    monkeypatch.setattr(train_module.Trainer, "log_eval", log_eval)
    monkeypatch.setattr(train_module, "evaluate_split",
                        lambda *a, **k: {"loss": table[current["step"]], "count": 10, "rmse": 0.0, "mae": 0.0})
    return table


def test_stops_after_exactly_patience_evaluations_and_keeps_the_best(data, tmp_path, scripted):
    scripted.update({4: 3.0, 8: 1.0, 12: 2.0, 16: 1.0, 20: 1.5, 24: 0.1, 28: 0.1})
    run_dir = str(tmp_path / "run")
    out = io.StringIO()
    result = train(config(data, run_dir, **{"train.early_stopping_patience": 3, "checkpoint.keep": 1}),
                   self_comm(), stream=out)
    assert result["steps"] == 20 and result["stopped_early"] is True
    assert result["best"] == {"step": 8, "epoch": 2, "metric": "val_loss", "value": 1.0}
    assert summary(run_dir)["best"] == result["best"] and summary(run_dir)["stopped_early"] is True
    assert [r["step"] for r in evals(run_dir)] == [4, 8, 12, 16, 20]
    assert "early stopping at step 20: val_loss has not improved by more than 0 in 3 evaluations" in out.getvalue()
    folder = os.path.join(run_dir, "checkpoints")
    assert sorted(os.listdir(folder)) == ["best.h5", "step-000000020.h5"]     # keep = 1 never removes best.h5
    best_meta = ckpt.load(os.path.join(folder, "best.h5"))[1]
    assert best_meta["step"] == 8 and best_meta["early_stopping"]["best_step"] == 8
    assert best_meta["early_stopping"]["bad_evals"] == 0
    last = ckpt.load(os.path.join(folder, "step-000000020.h5"))[1]["early_stopping"]
    assert (last["bad_evals"], last["stopped"]) == (3, True)


def test_no_early_stop_without_patience_and_last_epoch_is_not_early(data, tmp_path, scripted):
    scripted.update({4 * e: float(e) for e in range(1, 11)})         # only the first evaluation is the best
    no_patience = train(config(data, str(tmp_path / "a"), **{"train.epochs": 5}), self_comm())
    assert no_patience["steps"] == 20 and no_patience["stopped_early"] is False
    assert no_patience["best"]["step"] == 4
    at_the_end = train(config(data, str(tmp_path / "b"), **{"train.epochs": 4, "train.early_stopping_patience": 3}),
                       self_comm())
    assert at_the_end["steps"] == 16 and at_the_end["stopped_early"] is False
    off = train(config(data, str(tmp_path / "c"), **{"train.epochs": 2, "checkpoint.keep_best": False}), self_comm())
    assert off["best"]["step"] == 4 and not os.path.exists(str(tmp_path / "c" / "checkpoints" / "best.h5"))


@pytest.mark.parametrize("labels, monitor", [(0, "val_loss"), (0, "val_mae"), (2, "val_accuracy")])
def test_best_h5_is_the_best_evaluation_in_metrics_jsonl(tmp_path, labels, monitor):
    data = write_windows(str(tmp_path / "d.h5"), n=40, labels=labels)
    run_dir = str(tmp_path / "run")
    result = train(config(data, run_dir, **{"train.monitor": monitor, "train.epochs": 6, "optim.lr": 0.2}),
                   self_comm())
    key = monitor[len("val_"):]
    values = [(r[key], r["step"]) for r in evals(run_dir)]
    value, step = max(values, key=lambda v: (v[0], -v[1])) if key == "accuracy" else min(values)
    assert result["best"] == {"step": step, "epoch": step // STEPS_PER_EPOCH, "metric": monitor, "value": value}
    folder = os.path.join(run_dir, "checkpoints")
    assert ckpt.load(os.path.join(folder, "best.h5"))[1]["step"] == step
    for key, array in params(os.path.join(folder, f"step-{step:09d}.h5")).items():
        assert np.array_equal(params(os.path.join(folder, "best.h5"))[key], array), key


def never_improving(data, run_dir, **extra):
    """Patience 3 with a min_delta no loss can beat: the first evaluation is the best, and training stops
    after the 4th (step 16), whatever the losses are."""
    return config(data, run_dir, **{"train.early_stopping_patience": 3, "train.early_stopping_min_delta": 1e9,
                                    "checkpoint.every_steps": 3, **extra})


def test_resume_keeps_the_early_stopping_state_bitwise(data, tmp_path):
    straight_dir = str(tmp_path / "straight")
    straight = train(never_improving(data, straight_dir), self_comm())
    assert straight["steps"] == 16 and straight["stopped_early"] and straight["best"]["step"] == 4
    final = params(os.path.join(straight_dir, "checkpoints", "step-000000016.h5"))
    # Interrupted at an epoch end (max_steps), then resumed: without the state it would stop at step 24.
    parted_dir = str(tmp_path / "parted")
    assert train(never_improving(data, parted_dir, **{"train.max_steps": 8}), self_comm())["steps"] == 8
    resumed = train(never_improving(data, parted_dir, **{"checkpoint.resume": "auto"}), self_comm())
    # Resumed into a new directory from a mid-epoch checkpoint of the straight run (step 9: one bad evaluation).
    mid = train(never_improving(data, str(tmp_path / "mid"), **{
        "checkpoint.resume": os.path.join(straight_dir, "checkpoints", "step-000000009.h5")}), self_comm())
    for run, run_dir in ((resumed, parted_dir), (mid, str(tmp_path / "mid"))):
        assert (run["steps"], run["stopped_early"], run["best"]) == (16, True, straight["best"])
        again = params(os.path.join(run_dir, "checkpoints", "step-000000016.h5"))
        for key, array in final.items():
            assert np.array_equal(again[key], array), key          # bitwise
    assert [r["loss"] for r in evals(parted_dir)] == [r["loss"] for r in evals(straight_dir)]
    # A finished, stopped run resumed again does not train on.
    assert train(never_improving(data, parted_dir, **{"checkpoint.resume": "auto"}), self_comm())["steps"] == 16


def test_monitor_the_file_cannot_give_and_patience_without_val_exit_2(data, tmp_path):
    result = run_cli(["train", "--data", data, "--run-dir", tmp_path / "r", "--set", "train.monitor=val_accuracy"])
    assert result.returncode == 2 and "train.monitor: val_accuracy needs labels" in result.stderr, result.stderr
    result = run_cli(["train", "--data", data, "--run-dir", tmp_path / "s", "--set", "data.val_fraction=0",
                      "--set", "train.early_stopping_patience=2"])
    assert result.returncode == 2 and "needs a validation split" in result.stderr, result.stderr
