"""The scaling cost model: fits of the Allreduce cost (alpha, beta) and of the per-sample compute time, and the
projection of time per step and parallel efficiency to many ranks.

    t_step(P) = c * b(P) + s + t_allreduce(P, n)
    t_allreduce(P, n) = 2 * log2(P) * alpha + 2 * (P - 1) / P * n * beta
with b(P) = B / P (strong scaling, global batch B) or b (weak scaling, per-rank batch), n = gradient bytes,
c = compute + I/O seconds per local sample, s = fixed seconds per step (optimizer update, loop overhead)."""
import math

import numpy as np

PROJECTION_RANKS = (64, 128, 256, 512, 1024, 2048, 4096)


def allreduce_features(ranks, nbytes):
    """The two columns (latency, bandwidth) of the Allreduce model for P ranks and n bytes."""
    return 2.0 * math.log2(ranks), 2.0 * (ranks - 1) / ranks * nbytes


def allreduce_seconds(ranks, nbytes, alpha, beta):
    if ranks <= 1:
        return 0.0
    latency, bandwidth = allreduce_features(ranks, nbytes)
    return latency * alpha + bandwidth * beta


def nonnegative_lstsq(columns, targets, relative=False):
    """Least squares with every coefficient >= 0 (a negative one is dropped and the rest refitted).

    relative=True minimises relative instead of absolute residuals, so small and large values count alike."""
    matrix = np.column_stack(columns).astype(float)
    targets = np.asarray(targets, dtype=float)
    if relative:
        matrix, targets = matrix / targets[:, None], np.ones_like(targets)
    coefficients = np.linalg.lstsq(matrix, targets, rcond=None)[0]
    if np.all(coefficients >= 0):
        return [float(c) for c in coefficients]
    keep = int(np.argmax(coefficients))
    alone = float(np.linalg.lstsq(matrix[:, [keep]], targets, rcond=None)[0][0])
    coefficients = [0.0] * matrix.shape[1]
    coefficients[keep] = max(alone, 0.0)
    return coefficients


def fit_allreduce(measurements, cores=None):
    """alpha (s) and beta (s/byte) from [{"ranks", "bytes", "seconds"}] rows, minimising relative residuals
    (timings span orders of magnitude); rank counts above `cores` (oversubscribed) are left out when any
    other row with ranks > 1 exists."""
    rows = [r for r in measurements if r["ranks"] > 1]
    if cores:
        fitting = [r for r in rows if r["ranks"] <= cores]
        rows = fitting or rows
    if len({r["bytes"] for r in rows}) < 2:
        raise ValueError("the Allreduce fit needs at least two message sizes at more than one rank")
    features = [allreduce_features(r["ranks"], r["bytes"]) for r in rows]
    alpha, beta = nonnegative_lstsq([[f[0] for f in features], [f[1] for f in features]], [r["seconds"] for r in rows],
                                    relative=True)
    return {"alpha": alpha, "beta": beta, "ranks_used": sorted({r["ranks"] for r in rows}),
            "bandwidth_bytes_per_s": 1.0 / beta if beta > 0 else float("inf")}


def fit_compute(results):
    """c (s per local sample) and s (s per step) from the runs' t_compute + t_io against the local batch.

    With a single local batch size (weak scaling) the two cannot be told apart: s = 0 and c is the mean."""
    points = [(r["local_batch"], r["t_compute"] + r["t_io"]) for r in results]
    if not points:
        raise ValueError("no results to fit")
    batches = [p[0] for p in points]
    if len(set(batches)) >= 2:
        per_sample, fixed = nonnegative_lstsq([batches, [1.0] * len(points)], [p[1] for p in points])
    else:
        per_sample, fixed = float(np.mean([t / b for b, t in points])), 0.0
    return {"per_sample": per_sample, "fixed": fixed, "points": len(points)}


def step_seconds(mode, ranks, batch, compute, comm_fit, nbytes):
    """Modelled (compute part, communication part) of one step at `ranks` ranks."""
    local = batch / ranks if mode == "strong" else batch
    compute_part = compute["per_sample"] * local + compute["fixed"]
    return compute_part, allreduce_seconds(ranks, nbytes, comm_fit["alpha"], comm_fit["beta"])


def project(mode, batch, compute, comm_fit, nbytes, ranks_list=PROJECTION_RANKS):
    """Rows {ranks, t_step, t_compute, t_comm, throughput, efficiency, feasible} of the model; the efficiency is
    against the modelled 1-rank step. `batch` is the global batch (strong) or the per-rank batch (weak)."""
    base = sum(step_seconds(mode, 1, batch, compute, comm_fit, nbytes))
    rows = []
    for ranks in ranks_list:
        compute_part, comm_part = step_seconds(mode, ranks, batch, compute, comm_fit, nbytes)
        t_step = compute_part + comm_part
        global_batch = batch if mode == "strong" else batch * ranks
        efficiency = base / (ranks * t_step) if mode == "strong" else base / t_step
        rows.append({"ranks": ranks, "t_step": t_step, "t_compute": compute_part, "t_comm": comm_part,
                     "throughput": global_batch / t_step, "efficiency": efficiency,
                     "feasible": mode != "strong" or batch >= ranks})
    return rows
