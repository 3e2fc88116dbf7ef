"""The scaling report's PNG figures (matplotlib, Agg backend): time and throughput, speedup and efficiency,
the phase breakdown, and the projection. Each function writes one file and returns its name."""
import os

COLOURS = {"t_compute": "#4C72B0", "t_comm": "#DD8452", "t_io": "#55A868"}
LABELS = {"t_compute": "compute", "t_comm": "communication (Allreduce)", "t_io": "I/O (batch wait)"}


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(figure, folder, name):
    figure.tight_layout()
    figure.savefig(os.path.join(folder, name), dpi=110)
    pyplot().close(figure)
    return name


def rank_axis(axis, ranks):
    axis.set_xscale("log", base=2)
    axis.set_xticks(ranks)
    axis.set_xticklabels([str(r) for r in ranks])
    axis.set_xlabel("MPI ranks")
    axis.grid(True, alpha=0.3)


def mark_oversubscribed(axis, rows, key, scale=1.0):
    over = [r for r in rows if r["oversubscribed"]]
    if over:
        axis.scatter([r["ranks"] for r in over], [r[key] * scale for r in over], s=140, facecolors="none",
                     edgecolors="red", zorder=5, label="oversubscribed")


def time_and_throughput(rows, mode, folder):
    plt = pyplot()
    ranks = [r["ranks"] for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    low = [(r["t_step"] - r["t_step_q25"]) * 1e3 for r in rows]
    high = [(r["t_step_q75"] - r["t_step"]) * 1e3 for r in rows]
    left.errorbar(ranks, [r["t_step"] * 1e3 for r in rows], yerr=[low, high], marker="o", capsize=4,
                  label="median (bars: quartiles)")
    mark_oversubscribed(left, rows, "t_step", 1e3)
    left.set_ylabel("time per step (ms)")
    left.set_title(f"{mode} scaling: time per step")
    right.plot(ranks, [r["throughput"] for r in rows], marker="o", label="measured")
    right.plot(ranks, [rows[0]["throughput"] * r["ideal_speedup"] for r in rows], "k--", label="ideal")
    mark_oversubscribed(right, rows, "throughput")
    right.set_ylabel("throughput (samples/s)")
    right.set_title(f"{mode} scaling: throughput")
    for axis in (left, right):
        rank_axis(axis, ranks)
        axis.legend()
    return save(figure, folder, f"{mode}_time_throughput.png")


def speedup_and_efficiency(rows, mode, folder):
    plt = pyplot()
    ranks = [r["ranks"] for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(ranks, [r["speedup"] for r in rows], marker="o", label="measured")
    left.plot(ranks, [r["ideal_speedup"] for r in rows], "k--", label="ideal")
    mark_oversubscribed(left, rows, "speedup")
    left.set_ylabel("speedup (throughput ratio)")
    left.set_title(f"{mode} scaling: speedup vs ideal")
    right.bar([str(r) for r in ranks], [r["efficiency"] * 100 for r in rows],
              color=["#C44E52" if r["oversubscribed"] else "#4C72B0" for r in rows])
    right.axhline(100, color="k", linestyle="--", linewidth=1)
    right.set_ylabel("parallel efficiency (%)")
    right.set_xlabel("MPI ranks (red: oversubscribed)")
    right.set_title(f"{mode} scaling: parallel efficiency")
    right.grid(True, axis="y", alpha=0.3)
    rank_axis(left, ranks)
    left.legend()
    return save(figure, folder, f"{mode}_speedup_efficiency.png")


def phase_breakdown(rows, mode, folder):
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4))
    labels = [f"{r['ranks']}" + ("*" if r["oversubscribed"] else "") for r in rows]
    bottom = [0.0] * len(rows)
    for phase in ("t_compute", "t_comm", "t_io"):
        heights = [r[phase] * 1e3 for r in rows]
        axis.bar(labels, heights, bottom=bottom, color=COLOURS[phase], label=LABELS[phase])
        bottom = [b + h for b, h in zip(bottom, heights)]
    axis.set_xlabel("MPI ranks (* oversubscribed)")
    axis.set_ylabel("median time per step (ms)")
    axis.set_title(f"{mode} scaling: where a step's time goes")
    axis.legend()
    axis.grid(True, axis="y", alpha=0.3)
    return save(figure, folder, f"{mode}_phases.png")


def projection(rows, measured, mode, folder):
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter
    ranks = [r["ranks"] for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(ranks, [r["t_step"] * 1e3 for r in rows], "k-", label="step (model)")
    left.plot(ranks, [r["t_compute"] * 1e3 for r in rows], "--", color=COLOURS["t_compute"], label="compute + I/O")
    left.plot(ranks[1:], [r["t_comm"] * 1e3 for r in rows[1:]], "--", color=COLOURS["t_comm"], label="Allreduce")
    left.plot([m["ranks"] for m in measured], [m["t_step"] * 1e3 for m in measured], "ko", label="measured")
    left.set_yscale("log")
    left.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    left.set_ylabel("time per step (ms)")
    left.set_title(f"{mode} scaling: modelled time per step")
    right.plot(ranks, [r["efficiency"] * 100 for r in rows], marker="o", label="model")
    right.plot([m["ranks"] for m in measured], [m["efficiency"] * 100 for m in measured], "ko", label="measured")
    right.set_ylabel("parallel efficiency (%)")
    right.set_ylim(0, 105)
    right.set_title(f"{mode} scaling: projected efficiency")
    ticks = [r for r in (1, 4, 16, 64, 256, 1024, 4096) if r <= max(ranks)]
    for axis in (left, right):
        rank_axis(axis, ticks)
        axis.legend()
    return save(figure, folder, f"{mode}_projection.png")
