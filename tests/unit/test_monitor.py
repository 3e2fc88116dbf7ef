"""The monitored val metric: improvement with min_delta, the stop after exactly `patience` evaluations without
improvement, higher-is-better for accuracy, state kept through a checkpoint, and metrics that a file cannot
give refused."""
from types import SimpleNamespace

import pytest

from hpcrnn.config import load_config
from hpcrnn.errors import ConfigError
from hpcrnn.monitor import Monitor, check_monitor


def feed(monitor, values):
    """Updates with values at steps 10, 20, ...; returns the 1-based evaluation at which stop turned on."""
    for n, value in enumerate(values, 1):
        monitor.update(value, 10 * n, n)
        if monitor.stop:
            return n
    return None


def test_stops_after_exactly_patience_evaluations_without_improvement():
    monitor = Monitor("val_loss", patience=3)
    assert feed(monitor, [1.0, 0.5, 0.6, 0.5, 0.7, 0.1]) == 5        # 0.5 again is no improvement
    assert monitor.best() == {"step": 20, "epoch": 2, "metric": "val_loss", "value": 0.5}
    assert monitor.bad_evals == 3


def test_an_improvement_resets_the_count():
    monitor = Monitor("val_loss", patience=2)
    assert feed(monitor, [1.0, 1.1, 0.9, 1.0, 0.8, 0.85, 0.86, 0.1]) == 7
    assert monitor.best()["step"] == 50


def test_min_delta_and_patience_zero():
    monitor = Monitor("val_rmse", patience=2, min_delta=0.1)
    assert feed(monitor, [1.0, 0.95, 0.85, 0.91, 0.76]) == 5     # 0.95, 0.91, 0.76: within min_delta of the best
    assert monitor.best()["value"] == 0.85
    never = Monitor("val_loss", patience=0)
    assert feed(never, [1.0] + [2.0] * 50) is None and never.bad_evals == 50


def test_accuracy_is_higher_is_better_and_nan_never_improves():
    monitor = Monitor("val_accuracy", patience=2)
    assert feed(monitor, [0.5, 0.7, 0.6, float("nan")]) == 4
    assert monitor.best()["value"] == 0.7
    assert Monitor("val_loss").value_of({"loss": 0.25, "rmse": 0.5}) == 0.25
    assert Monitor("val_mae").value_of({"loss": 0.25, "mae": 0.125}) == 0.125


def test_state_round_trip_other_metric_ignored_and_patience_reapplied():
    monitor = Monitor("val_loss", patience=2)
    feed(monitor, [1.0, 0.5, 0.6, 0.7])
    state = monitor.state()
    assert state["stopped"] and state["bad_evals"] == 2
    again = Monitor("val_loss", patience=2)
    assert again.load_state(state) and again.stop and again.best() == monitor.best()
    longer = Monitor("val_loss", patience=5)
    assert longer.load_state(state) and not longer.stop and longer.bad_evals == 2
    other = Monitor("val_rmse", patience=2)
    assert not other.load_state(state) and other.best() is None
    assert not Monitor("val_loss").load_state(None)


def info(task):
    return SimpleNamespace(task=task, path="d.h5")


def test_metrics_the_file_cannot_give_are_refused():
    with pytest.raises(ConfigError, match="train.monitor: val_accuracy needs labels"):
        check_monitor("val_accuracy", 0, info("regression"), True)
    with pytest.raises(ConfigError, match="train.monitor: val_rmse needs regression targets"):
        check_monitor("val_rmse", 0, info("classification"), True)
    with pytest.raises(ConfigError, match="early_stopping_patience: needs a validation split"):
        check_monitor("val_loss", 3, info("regression"), False)
    check_monitor("val_loss", 0, info("classification"), False)
    check_monitor("val_mae", 2, info("regression"), True)


@pytest.mark.parametrize("override, fragment", [
    ("train.monitor=val_f1", "train.monitor: unknown metric 'val_f1'"),
    ("train.early_stopping_patience=-1", "train.early_stopping_patience: must be >= 0"),
    ("train.early_stopping_min_delta=-0.5", "train.early_stopping_min_delta: must be >= 0"),
    ("checkpoint.keep_best=maybe", "checkpoint.keep_best: expected true or false"),
])
def test_config_keys_are_validated(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, [override])


def test_config_defaults():
    c = load_config(None, [])
    assert (c.train.monitor, c.train.early_stopping_patience, c.train.early_stopping_min_delta,
            c.checkpoint.keep_best) == ("val_loss", 0, 0.0, True)
