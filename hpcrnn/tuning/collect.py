"""Reads a sweep folder back: each trial's state for `sweep status`, and for `sweep collect` the results table
(results.csv, results.md, best first), a PNG of the monitored metric against each swept key, and best.toml,
the winning trial's config ready for `hpcrnn train --config`."""
import csv
import dataclasses
import math
import os
import socket

from hpcrnn.log import markdown_lines
from hpcrnn.rundir import RunDir
from hpcrnn.tuning.record import (best_eval, evals_of, last_step, load_sweep, read_metrics, read_record,
                                  trial_dir)
from hpcrnn.tuning.trials import format_value

STATE_ORDER = ("pending", "running", "done", "stopped", "failed")
COLOURS = {"done": "#4C72B0", "stopped": "#DD8452", "failed": "#C44E52", "running": "#55A868", "pending": "#999999"}


def shown_state(record):
    """pending / running / done / failed / stopped: a preempted trial waits to resume (pending), and so does one
    whose supervisor on this host is gone."""
    state = record["state"]
    if state == "preempted":
        return "pending"
    if state == "running" and record.get("host") == socket.gethostname() and not alive(record.get("pid")):
        return "pending"
    return state


def alive(pid):
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def note_of(record):
    stops = [d for d in record["decisions"] if d["decision"] == "stop"]
    if stops:
        return stops[-1]["reason"]
    return record.get("reason") or ""


def trial_rows(out, sweep):
    """One row per trial: name, state, swept values, best monitored value with its step and epoch, steps
    trained, wall time, training time, note."""
    rows = []
    for trial in sweep["trials"]:
        folder = trial_dir(out, trial["index"])
        record, metrics = read_record(folder), read_metrics(folder)
        best = best_eval(evals_of(metrics), sweep["metric"], sweep["maximize"])
        rows.append({"trial": trial["name"], "state": shown_state(record), "params": trial["params"],
                     "value": best[0] if best else math.nan, "step": best[1] if best else None,
                     "epoch": best[2] if best else None, "steps": last_step(metrics),
                     "wall_s": record["wall_s"], "train_s": record["train_s"], "note": note_of(record)})
    return rows


def ranked(rows, maximize):
    """Best first; trials without a value last, in trial order."""
    def key(row):
        value = row["value"]
        return (0, -value if maximize else value) if math.isfinite(value) else (1, 0.0)
    return sorted(rows, key=key)


def counts_line(rows):
    counts = {state: sum(1 for r in rows if r["state"] == state) for state in STATE_ORDER}
    return f"{len(rows)} trials: " + ", ".join(f"{n} {state}" for state, n in counts.items())


def format_status(out, sweep):
    rows = trial_rows(out, sweep)
    header = ["trial", "state", "steps", sweep["monitor"], *sweep["keys"], "note"]
    table = [[r["trial"], r["state"], str(r["steps"]), cell(r["value"]),
              *[format_value(r["params"].get(k, "")) for k in sweep["keys"]], r["note"][:100]] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in table)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    return "\n".join(lines + [counts_line(rows)])


def cell(value):
    return f"{value:.5g}" if isinstance(value, float) and math.isfinite(value) else ("" if value is None or (
        isinstance(value, float) and math.isnan(value)) else str(value))


def columns(sweep):
    return ["rank", "trial", "state", *sweep["keys"], sweep["monitor"], "step", "epoch", "steps", "wall_s",
            "train_s", "note"]


def table_values(row, position, sweep):
    return [position, row["trial"], row["state"], *[row["params"].get(k, "") for k in sweep["keys"]],
            row["value"] if math.isfinite(row["value"]) else "", row["step"], row["epoch"], row["steps"],
            round(row["wall_s"], 2), round(row["train_s"], 2), row["note"]]


def collect(out):
    """Writes results.csv, results.md, results.png (when matplotlib is there) and best.toml into `out`;
    returns (paths written, the winning row or None)."""
    sweep = load_sweep(out)
    rows = ranked(trial_rows(out, sweep), sweep["maximize"])
    csv_path = os.path.join(out, "results.csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns(sweep))
        writer.writerows(table_values(row, i, sweep) for i, row in enumerate(rows, 1))
    winner = next((r for r in rows if r["state"] == "done" and math.isfinite(r["value"])), None) \
        or next((r for r in rows if math.isfinite(r["value"])), None)
    written = [csv_path]
    if winner:
        written.append(write_best(out, sweep, winner))
    plot = plot_metric(out, sweep, rows, winner)
    written += [plot] if plot else []
    written.insert(1, write_markdown(out, sweep, rows, winner, plot))
    return written, winner


def write_best(out, sweep, winner):
    """best.toml: the winner's resolved config, with a fresh run directory (DIR/best) and resume never."""
    from hpcrnn.config import load_config, to_toml
    config = load_config(RunDir(trial_dir(out, int(winner["trial"].split("-")[1]))).config)
    config = dataclasses.replace(config, run_dir=os.path.join(os.path.abspath(out), "best"),
                                 checkpoint=dataclasses.replace(config.checkpoint, resume="never"))
    path = os.path.join(out, "best.toml")
    with open(path, "w") as handle:
        handle.write(f"# best trial of the sweep in {os.path.abspath(out)}: {winner['trial']}, "
                     f"{sweep['monitor']} {winner['value']:.6g} at step {winner['step']}\n"
                     f"# train it again with: hpcrnn train --config {path}\n")
        handle.write(to_toml(config))
    return path


def write_markdown(out, sweep, rows, winner, plot):
    path = os.path.join(out, "results.md")
    header = columns(sweep)
    lines = [f"# Sweep results: {os.path.abspath(out)}", "",
             f"Spec `{sweep['spec']}`; monitored: `{sweep['monitor']}` "
             f"({'larger' if sweep['maximize'] else 'smaller'} is better), best value over each trial's epochs.",
             "Early termination: " + (f"rungs at epochs {sweep['rungs']}, reduction factor "
                                       f"{sweep['reduction_factor']:g}" if sweep["rungs"] else "off") + ".",
             f"{counts_line(rows)}; training time {sum(r['train_s'] for r in rows):.1f} s in all "
             f"(wall time of the launches {sum(r['wall_s'] for r in rows):.1f} s).", ""]
    if winner:
        lines += [f"Best: **{winner['trial']}** ({sweep['monitor']} {winner['value']:.6g} at step {winner['step']}); "
                  f"its config: `best.toml`.", ""]
    lines += markdown_lines(header, [[cell(v) if not isinstance(v, str) else v.replace("|", "/")
                                      for v in table_values(row, position, sweep)]
                                     for position, row in enumerate(rows, 1)])
    if plot:
        lines += ["", f"![{sweep['monitor']} against each swept key]({os.path.basename(plot)})"]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def plot_metric(out, sweep, rows, winner):
    """results.png: the best monitored value of each trial against each swept key (one panel per key); None
    without matplotlib or values."""
    points = [r for r in rows if math.isfinite(r["value"])]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not points or not sweep["keys"]:
        return None
    keys = sweep["keys"]
    figure, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for axis, key in zip(axes[0], keys):
        draw_panel(axis, key, points, winner, sweep["monitor"])
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    path = os.path.join(out, "results.png")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def draw_panel(axis, key, points, winner, monitor):
    values = [p["params"].get(key) for p in points]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    labels = sorted({str(v) for v in values})
    position = (lambda v: v) if numeric else (lambda v: labels.index(str(v)))
    for state in ("done", "stopped", "running", "pending", "failed"):
        chosen = [p for p in points if p["state"] == state]
        if chosen:
            axis.scatter([position(p["params"].get(key)) for p in chosen], [p["value"] for p in chosen],
                         color=COLOURS[state], label=state, s=30, alpha=0.85)
    if winner:
        axis.scatter([position(winner["params"].get(key))], [winner["value"]], marker="*", s=220,
                     facecolors="none", edgecolors="black", label="best")
    if numeric and min(values) > 0 and max(values) / min(values) >= 20:
        axis.set_xscale("log")
    ticks = sorted(set(values), key=lambda v: (str(type(v)), v)) if numeric else labels
    if len(ticks) <= 8:
        axis.set_xticks(ticks if numeric else range(len(labels)))
        axis.set_xticklabels([format_value(v) for v in ticks])
        axis.minorticks_off()
    scores = [p["value"] for p in points]
    if min(scores) > 0 and max(scores) / min(scores) >= 20:
        axis.set_yscale("log")
    axis.set_xlabel(key)
    axis.set_ylabel(monitor)
    axis.grid(True, alpha=0.3)
