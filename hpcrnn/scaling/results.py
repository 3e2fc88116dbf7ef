"""One sweep run's result.json: medians of the per-step phase times after warm-up, throughput, gradient bytes,
oversubscription and the machine; plus loading every result of a sweep folder."""
import glob
import json
import os

import numpy as np

from hpcrnn.log import write_json
from hpcrnn.comm import FusedExchange   # the fused Allreduce: gradients + its tail of scalars

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


def gradient_bytes(config_path, data_path):
    """Bytes moved by the fused Allreduce each step: (parameters + extras) x the parameter dtype's size."""
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
    return num_params, (num_params + FusedExchange.TAIL) * np.dtype(config.model.dtype).itemsize


def summarize_run(run_dir, mode, ranks, global_batch, warmup, threads, data_path, extra=None):
    """Builds (and writes) run_dir/result.json from the run's metrics.jsonl and summary.json."""
    from hpcrnn.runinfo import report
    stats = phase_statistics(read_steps(os.path.join(run_dir, "metrics.jsonl")), warmup)
    with open(os.path.join(run_dir, "summary.json")) as handle:
        summary = json.load(handle)
    num_params, nbytes = gradient_bytes(os.path.join(run_dir, "config.toml"), data_path)
    cores = cores_available()
    result = {"mode": mode, "ranks": ranks, "threads_per_rank": threads, "global_batch": global_batch,
              "local_batch": global_batch / ranks, "warmup_steps": warmup, **stats,
              "throughput": global_batch / stats["t_step"], "num_params": num_params, "gradient_bytes": nbytes,
              "cores_available": cores, "oversubscribed": ranks * threads > cores,
              "final_loss": summary.get("final_loss"), "summary_ranks": summary.get("ranks"),
              "wall_s": summary.get("wall_s"), "run_dir": os.path.abspath(run_dir), "data": data_path,
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
