"""One sweep run's result.json: medians of the per-step phase times after warm-up, throughput, gradient bytes,
oversubscription and the machine; plus loading every result of a sweep folder."""
import glob
import json
import os

import numpy as np

from hpcrnn.log import write_json
from hpcrnn.comm import FusedExchange   # the fused Allreduce: gradients + its tail of scalars
from hpcrnn.rundir import RunDir

RESULT_NAME = "result.json"
PHASES = ("t_step", "t_compute", "t_comm", "t_io")


def cores_available():
    """Cores this sweep may use: the Slurm allocation's task slots inside a job, else the CPU affinity set."""
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("SLURM_NTASKS"):
        return int(os.environ["SLURM_NTASKS"]) * int(os.environ.get("SLURM_CPUS_PER_TASK", "1") or 1)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def read_steps(metrics_path):
    """The per-step records of metrics.jsonl (eval events left out), in step order."""
    with open(metrics_path) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return sorted((r for r in records if "event" not in r), key=lambda r: r["step"])


def phase_statistics(steps, warmup):
    """Median (and quartiles of t_step) of each phase over the steps after `warmup`."""
    kept = [r for r in steps if r["step"] > warmup]
    if not kept:
        raise ValueError(f"no steps after the {warmup} warm-up steps")
    stats = {phase: float(np.median([r[phase] for r in kept])) for phase in PHASES}
    stats["t_step_q25"], stats["t_step_q75"] = (float(q) for q in np.percentile([r["t_step"] for r in kept], [25, 75]))
    stats["steps_measured"] = len(kept)
    return stats


def slow_share_threshold(ranks):
    """A rank is persistently slow when it is the slowest in at least this share of the measured steps
    (three times its fair share 1/P, at most 75%: at 2 ranks one rank is slowest half the time by chance)."""
    return min(0.75, 3.0 / ranks)


def imbalance_statistics(steps, warmup, ranks):
    """Load imbalance after `warmup`: the median and 75th percentile over steps of max ÷ median compute across
    the ranks, each rank's share of the steps in which it was the slowest, the persistently slow ranks, and the
    cost: the median over steps of max - median compute (what the median rank waits for the slowest at the
    Allreduce), in seconds and as a share of the median step. Empty for runs recorded before metrics carried
    t_compute_max."""
    kept = [r for r in steps if r["step"] > warmup and "t_compute_max" in r]
    if not kept:
        return {}
    ratios = [r["t_compute_max"] / r["t_compute_median"] for r in kept if r["t_compute_median"] > 0] or [1.0]
    share = np.bincount([r["slowest_rank"] for r in kept], minlength=ranks)[:ranks] / len(kept)
    slow = [int(rank) for rank in np.flatnonzero(share >= slow_share_threshold(ranks))] if ranks > 1 else []
    cost = float(np.median([r["t_compute_max"] - r["t_compute_median"] for r in kept]))
    t_step = float(np.median([r.get("t_step", 0.0) for r in kept]))
    return {"imbalance": float(np.median(ratios)), "imbalance_q75": float(np.percentile(ratios, 75)),
            "slowest_share": [float(v) for v in share], "slow_ranks": slow,
            "imbalance_cost_s": cost, "imbalance_cost_share": cost / t_step if t_step > 0 else 0.0}


def gradient_bytes(config_path, data_path, ranks=1):
    """Bytes moved by the fused Allreduce each step at `ranks` ranks: (parameters + tail) x the parameter
    dtype's size (the tail: 4 scalars + one compute-time slot per rank)."""
    from hpcrnn.config import from_toml_text
    from hpcrnn.data.schema import describe
    from hpcrnn.model import parameter_layout
    with open(config_path) as handle:
        config = from_toml_text(handle.read())
    info = describe(data_path)
    outputs = info.num_classes if info.task == "classification" and info.num_classes else info.output_size
    layout = parameter_layout(config.model.cell, info.num_features, config.model.hidden_size,
                              config.model.num_layers, outputs)
    num_params = sum(int(np.prod(shape)) for _, shape in layout)
    return num_params, (num_params + FusedExchange.tail_size(ranks)) * np.dtype(config.model.dtype).itemsize


def summarize_run(run_dir, mode, ranks, global_batch, warmup, threads, data_path, extra=None):
    """Builds (and writes) run_dir/result.json from the run's metrics.jsonl and summary.json."""
    from hpcrnn.runinfo import report
    steps = read_steps(RunDir(run_dir).metrics)
    stats = {**phase_statistics(steps, warmup), **imbalance_statistics(steps, warmup, ranks)}
    with open(RunDir(run_dir).summary) as handle:
        summary = json.load(handle)
    num_params, nbytes = gradient_bytes(RunDir(run_dir).config, data_path, ranks)
    cores = cores_available()
    result = {"mode": mode, "ranks": ranks, "threads_per_rank": threads, "global_batch": global_batch,
              "local_batch": global_batch / ranks, "warmup_steps": warmup, **stats,
              "throughput": global_batch / stats["t_step"], "num_params": num_params, "gradient_bytes": nbytes,
              "cores_available": cores, "oversubscribed": ranks * threads > cores,
              "final_loss": summary.get("final_loss"), "summary_ranks": summary.get("ranks"),
              "wall_s": summary.get("wall_s"), "per_rank": summary.get("per_rank"), "run_dir": os.path.abspath(run_dir), "data": data_path,
              "info": report(), **(extra or {})}
    write_json(os.path.join(run_dir, RESULT_NAME), result)
    return result


def load_results(folder):
    """Every result.json below `folder`, sorted by (mode, ranks)."""
    results = []
    for path in glob.glob(os.path.join(folder, "**", RESULT_NAME), recursive=True):
        with open(path) as handle:
            results.append(json.load(handle))
    return sorted(results, key=lambda r: (r["mode"], r["ranks"]))
