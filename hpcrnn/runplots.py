"""The run report's PNG figures (matplotlib, Agg backend) from one run's metrics.jsonl records: train loss
raw and smoothed, each val metric, learning rate, samples/s, and the compute / comm / I/O time per step,
each with the best step marked. Each function writes one file and returns its name."""
import math

from hpcrnn.scaling.plots import COLOURS, LABELS, pyplot, save

PHASES = ("t_compute", "t_comm", "t_io")
EVAL_SKIP = ("event", "split", "step", "epoch", "count")


def smooth(values, window=None):
    """Debiased exponential moving average over about `window` points (default: 1/20 of the series, at
    least 2); NaN points are skipped (they keep the previous average)."""
    window = window or max(2.0, len(values) / 20)
    weight = 1.0 - 1.0 / window
    out, average, norm = [], 0.0, 0.0
    for value in values:
        if value is not None and math.isfinite(value):
            average, norm = weight * average + (1 - weight) * value, weight * norm + (1 - weight)
        out.append(average / norm if norm else float("nan"))
    return out


def split_records(records):
    """(step records, eval records) of metrics.jsonl, each in file order."""
    return [r for r in records if "event" not in r], [r for r in records if r.get("event") == "eval"]


def mark_best(axis, best_step):
    if best_step is not None:
        axis.axvline(best_step, color="red", linestyle="--", linewidth=1, label=f"best (step {best_step})")


def finish(axis, ylabel, best_step, log=False):
    mark_best(axis, best_step)
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
    if log:
        axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)


def smooth_log(values, window=None):
    """smooth() of the logarithms (a geometric moving average): on a log axis a loss falling by decades is
    followed, where an arithmetic average stays near the older, larger values."""
    logs = [math.log(v) if v is not None and math.isfinite(v) and v > 0 else None for v in values]
    return [math.exp(v) if math.isfinite(v) else v for v in smooth(logs, window)]


def positive(values):
    return all(v is not None and v > 0 for v in values if v is not None and math.isfinite(v))


def loss_plot(steps, evals, best_step, folder):
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 4))
    x, loss = [r["step"] for r in steps], [r["loss"] for r in steps]
    axis.plot(x, loss, color="#4C72B0", alpha=0.3, linewidth=0.8, label="train loss")
    axis.plot(x, smooth_log(loss) if positive(loss) else smooth(loss), color="#4C72B0", linewidth=1.8,
              label="train loss (smoothed)")
    if evals:
        axis.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", color="#DD8452", label="val loss")
    axis.set_title("loss")
    finish(axis, "loss", best_step, log=positive(loss))
    return save(figure, folder, "loss.png")


def val_metrics_plot(evals, best_step, folder, references=None):
    """One panel per val metric (loss, rmse, mae or accuracy), log scale when it spans more than 10x;
    references: {metric: {baseline name: value}} drawn as horizontal lines. None without evaluations."""
    names = [k for k in evals[0] if k not in EVAL_SKIP] if evals else []
    if not names:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6), squeeze=False)
    for axis, name in zip(axes[0], names):
        values = [r.get(name) for r in evals]
        axis.plot([r["step"] for r in evals], values, "o-", markersize=3, label=f"val {name}")
        for (baseline, value), style in zip((references or {}).get(name, {}).items(), (":", "-.", "--")):
            axis.axhline(value, color="grey", linestyle=style, linewidth=1.2, label=baseline)
        finite = [v for v in values if v is not None and math.isfinite(v)]
        spread = positive(values) and finite and max(finite) > 10 * min(finite)
        axis.set_title(f"val {name}")
        finish(axis, name, best_step, log=bool(spread))
    return save(figure, folder, "val_metrics.png")


def learning_rate_plot(steps, best_step, folder):
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 3))
    axis.plot([r["step"] for r in steps], [r["lr"] for r in steps], label="learning rate")
    axis.set_title("learning rate")
    finish(axis, "lr", best_step)
    return save(figure, folder, "learning_rate.png")


def throughput_plot(steps, best_step, folder):
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 3))
    x, rate = [r["step"] for r in steps], [r["samples_per_s"] for r in steps]
    axis.plot(x, rate, alpha=0.3, linewidth=0.8, color="#55A868", label="samples/s")
    axis.plot(x, smooth(rate), linewidth=1.8, color="#55A868", label="samples/s (smoothed)")
    axis.set_title("throughput (global samples per second)")
    finish(axis, "samples/s", best_step)
    return save(figure, folder, "throughput.png")


def binned(x, values, bins=100):
    """(bin centres, bin means) of values over consecutive groups of about len/bins points."""
    size = max(1, math.ceil(len(x) / bins))
    groups = range(0, len(x), size)
    return ([sum(x[i:i + size]) / len(x[i:i + size]) for i in groups],
            [sum(values[i:i + size]) / len(values[i:i + size]) for i in groups])


def phases_plot(steps, best_step, folder):
    """Time per step in compute, communication and I/O (rank 0's clocks; means over ~100 groups of steps),
    stacked; the y axis stops above the 95th percentile, so the first steps (file opening, warm-up) do not
    flatten the rest."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 3.6))
    x = [r["step"] for r in steps]
    series = [binned(x, [1e3 * (r.get(p) or 0.0) for r in steps]) for p in PHASES]
    centres, stacks = series[0][0], [values for _, values in series]
    axis.stackplot(centres, *stacks, labels=[LABELS[p] for p in PHASES], colors=[COLOURS[p] for p in PHASES],
                   alpha=0.8)
    totals = sorted(sum(parts) for parts in zip(*stacks))
    axis.set_ylim(0, 1.3 * totals[int(0.95 * (len(totals) - 1))] or 1.0)
    axis.set_title("time per step by phase (means over groups of steps)")
    finish(axis, "ms per step", best_step)
    return save(figure, folder, "phases.png")


def all_plots(records, best_step, folder, references=None):
    """Writes every figure into folder; returns {title: file name} in report order. references: baseline
    values of val metrics ({metric: {name: value}}), drawn on their panels."""
    steps, evals = split_records(records)
    made = {}
    if steps:
        made["Train loss"] = loss_plot(steps, evals, best_step, folder)
    if evals:
        made["Validation metrics"] = val_metrics_plot(evals, best_step, folder, references)
    if steps:
        made["Learning rate"] = learning_rate_plot(steps, best_step, folder)
        made["Throughput"] = throughput_plot(steps, best_step, folder)
        made["Compute / communication / I/O"] = phases_plot(steps, best_step, folder)
    return {title: name for title, name in made.items() if name}
