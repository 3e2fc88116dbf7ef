"""Evaluation beyond the loss: per-horizon errors of the model and of the baselines on the same windows
(targets), or the confusion matrix and the majority-class baseline (labels). Each rank adds its batches
into one flat float64 vector of sums and counts; the caller reduces it over ranks (one reduction); then
`results` turns the global sums into metrics. No MPI here."""
import math

import numpy as np

from hpcrnn.baselines import FORECASTS, shortest_window, target_layout

BASELINES = ("persistence", "two_point_linear")      # always tried; seasonal_naive when a season is given


def make_scores(info, num_outputs, season=0):
    """The accumulator for the file `info` describes (num_outputs: the model's output size)."""
    if info.task == "classification":
        return ClassificationScores(num_outputs)
    return RegressionScores(target_layout(info), num_outputs, season)


class RegressionScores:
    """Sums per horizon step h (over samples and target columns) for the model and each baseline: squared
    and absolute errors, the number of values, and per baseline the windows too short for it.
    Layout of `sums`: [sq[H], abs[H]] per forecaster (model first), count[H], short[baselines]."""

    def __init__(self, layout, num_outputs, season=0):
        self.layout, self.season = layout, int(season)
        self.horizon = layout.horizon
        self.columns = num_outputs // self.horizon if self.horizon else 0
        self.baselines = BASELINES + (("seasonal_naive",) if season else ())
        self.computed = () if layout.reason else self.baselines
        self.forecasters = ("model",) + self.computed
        self.sums = np.zeros(2 * self.horizon * len(self.forecasters) + self.horizon + len(self.computed))

    def add(self, x, y, lengths, y_hat):
        """Adds one batch: inputs x [b,T,F], targets y [b, H*C], the model's y_hat [b, H*C]."""
        if not self.horizon or not len(y):
            return
        b, H = len(y), self.horizon
        truth = np.asarray(y, dtype=np.float64).reshape(b, H, self.columns)
        for i, name in enumerate(self.forecasters):
            if name == "model":
                forecast = np.asarray(y_hat, dtype=np.float64).reshape(b, H, self.columns)
            else:
                forecast = FORECASTS[name](x, lengths, self.layout, self.season)
            error = forecast - truth
            self.sums[2 * i * H:(2 * i + 1) * H] += (error * error).sum(axis=(0, 2))
            self.sums[(2 * i + 1) * H:(2 * i + 2) * H] += np.abs(error).sum(axis=(0, 2))
        base = 2 * H * len(self.forecasters)
        self.sums[base:base + H] += b * self.columns
        observed = np.full(b, x.shape[1]) if lengths is None else np.asarray(lengths)
        for j, name in enumerate(self.computed):
            self.sums[base + H + j] += np.count_nonzero(observed < shortest_window(name, self.season))

    def errors(self, sums, i):
        """(rmse, mae, per-horizon rmse) of forecaster i from the global sums."""
        H = self.horizon
        count = np.maximum(sums[2 * H * len(self.forecasters):][:H], 1.0)
        sq, ab = sums[2 * i * H:(2 * i + 1) * H], sums[(2 * i + 1) * H:(2 * i + 2) * H]
        total = count.sum()
        return math.sqrt(sq.sum() / total), float(ab.sum() / total), [math.sqrt(v) for v in sq / count]

    def results(self, sums, metrics):
        """{"per_horizon_rmse", "baselines": {name: {rmse, mae, per_horizon_rmse} | {"unavailable": why}},
        "skill"}; skill = 1 - RMSE_model / RMSE_persistence (metrics: the model's rmse from evaluate_split)."""
        out = {"per_horizon_rmse": self.errors(sums, 0)[2] if self.horizon else None, "baselines": {}}
        short = sums[2 * self.horizon * len(self.forecasters) + self.horizon:]
        for name in self.baselines:
            if name not in self.computed:
                out["baselines"][name] = {"unavailable": self.layout.reason}
                continue
            j = self.computed.index(name)
            if short[j] > 0:
                need = shortest_window(name, self.season)
                out["baselines"][name] = {"unavailable": f"{int(short[j])} windows have fewer than {need} "
                                                         f"observed steps"}
                continue
            rmse, mae, per_horizon = self.errors(sums, j + 1)
            out["baselines"][name] = {"rmse": rmse, "mae": mae, "per_horizon_rmse": per_horizon}
        reference = out["baselines"]["persistence"].get("rmse")
        out["skill"] = 1.0 - metrics["rmse"] / reference if reference else None
        return out


class ClassificationScores:
    """The confusion matrix (rows: true class, columns: predicted class) as C*C counts in `sums`."""

    def __init__(self, num_classes):
        self.classes = int(num_classes)
        self.sums = np.zeros(self.classes * self.classes)

    def add(self, x, y, lengths, logits):
        if len(y):
            predicted = np.argmax(logits, axis=1)
            pairs = np.asarray(y, dtype=np.int64) * self.classes + predicted
            self.sums += np.bincount(pairs, minlength=self.classes * self.classes)

    def results(self, sums, metrics):
        """Macro-F1, recall per class, the confusion matrix, and the majority-class baseline (the most
        frequent true class of the data evaluated, always predicted); skill = 1 - error_model / error_majority
        (error = 1 - accuracy)."""
        confusion = np.rint(sums).astype(np.int64).reshape(self.classes, self.classes)
        truth = confusion.sum(axis=1)
        majority = int(np.argmax(truth))
        always = np.zeros_like(confusion)
        always[:, majority] = truth
        majority_accuracy = float(truth[majority] / max(truth.sum(), 1))
        recall = [float(confusion[c, c] / truth[c]) if truth[c] else None for c in range(self.classes)]
        skill = 1.0 - (1.0 - metrics["accuracy"]) / (1.0 - majority_accuracy) if majority_accuracy < 1 else None
        return {"macro_f1": macro_f1(confusion), "per_class_recall": recall, "confusion_matrix": confusion.tolist(),
                "baselines": {"majority_class": {"class": majority, "accuracy": majority_accuracy,
                                                 "macro_f1": macro_f1(always)}},
                "skill": skill}


def macro_f1(confusion):
    """Mean F1 over the classes that occur as truth or as prediction (F1 = 2TP / (2TP + FP + FN))."""
    tp = np.diag(confusion).astype(np.float64)
    fp, fn = confusion.sum(axis=0) - tp, confusion.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    if not present.any():
        return 0.0
    return float(np.mean(2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])))
