"""The monitored validation metric: its best value so far, the evaluations since it last improved, and the
early-stopping decision; the state goes into checkpoint meta and comes back on resume. No I/O, no MPI."""
import math

from hpcrnn.errors import ConfigError

HIGHER_IS_BETTER = {"val_loss": False, "val_accuracy": True, "val_rmse": False, "val_mae": False}   # the monitors
TASK_OF = {"val_accuracy": "classification", "val_rmse": "regression", "val_mae": "regression"}


def check_monitor(metric, patience, info, has_val):
    """ConfigError when `metric` cannot be computed on the file `info` describes, or early stopping is asked
    for without a validation split (the same verdict on every rank: info is identical everywhere)."""
    task = TASK_OF.get(metric)
    if task and task != info.task:
        what = "labels (/labels)" if task == "classification" else "regression targets"
        raise ConfigError(f"train.monitor: {metric} needs {what}, {info.path} holds the other kind; "
                          f"use val_loss or {'val_accuracy' if info.task == 'classification' else 'val_rmse'}")
    if patience and not has_val:
        raise ConfigError("train.early_stopping_patience: needs a validation split (data.val_fraction > 0, "
                          "data.val_path, or a split_val in the file)")


class Monitor:
    """update(metrics) after each evaluation returns True when the monitored value improved on the best by
    more than min_delta (the first evaluation always does); `stop` turns True after `patience` evaluations
    in a row without improvement (patience 0: never)."""

    def __init__(self, metric="val_loss", patience=0, min_delta=0.0):
        self.metric, self.patience, self.min_delta = metric, int(patience), float(min_delta)
        self.higher = HIGHER_IS_BETTER[metric]
        self.best_value, self.best_step, self.best_epoch = None, None, None
        self.bad_evals, self.stop = 0, False

    def value_of(self, metrics):
        """The monitored value in a metrics dict of evaluate_split (keys loss, rmse, mae, accuracy)."""
        return float(metrics[self.metric[len("val_"):]])

    def improves(self, value):
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        if self.higher:
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def update(self, value, step, epoch):
        improved = self.improves(value)
        if improved:
            self.best_value, self.best_step, self.best_epoch, self.bad_evals = value, step, epoch, 0
        else:
            self.bad_evals += 1
        self.stop = self.stop or (self.patience > 0 and self.bad_evals >= self.patience)
        return improved

    def best(self):
        """summary.json's "best": {"step", "epoch", "metric", "value"}, or None before any evaluation."""
        if self.best_value is None:
            return None
        return {"step": self.best_step, "epoch": self.best_epoch, "metric": self.metric, "value": self.best_value}

    def state(self):
        return {"metric": self.metric, "best_value": self.best_value, "best_step": self.best_step,
                "best_epoch": self.best_epoch, "bad_evals": self.bad_evals, "stopped": self.stop}

    def load_state(self, state):
        """Takes back state() from a checkpoint; a state kept for another metric (the config changed on
        resume) is ignored: the best is then sought afresh. The stop decision is made again with this
        monitor's patience (a stopped run resumed with a larger patience goes on). Returns whether it was taken."""
        if not state or state.get("metric") != self.metric:
            return False
        self.best_value, self.best_step = state["best_value"], state["best_step"]
        self.best_epoch, self.bad_evals = state["best_epoch"], state["bad_evals"]
        self.stop = self.patience > 0 and self.bad_evals >= self.patience
        return True
