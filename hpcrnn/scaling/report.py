"""`hpcrnn scaling report`: reads a sweep folder's result.json files and allreduce.json and writes a Markdown
report with tables, PNG plots, the machine/software table and a projection from the fitted cost model."""
import json
import os
import time

from hpcrnn.errors import ConfigError
from hpcrnn.log import markdown_table
from hpcrnn.scaling import model_fit, plots
from hpcrnn.scaling.results import load_results

INFO_KEYS = ("cpu", "cores", "cores_available", "hostname", "platform", "python", "hpcrnn", "numpy", "numba",
             "mpi4py", "mpi_library", "h5py", "hdf5", "hdf5_mpi_io", "numba_threading_layer",
             "blas_threads_env")


def scaling_rows(results):
    """The runs of one mode with speedup and efficiency against the baseline: the smallest rank count that is
    not oversubscribed (else the smallest). Speedup S = X(P)/X(P0) on throughput X; ideal P/P0; E = S/(P/P0)."""
    rows = sorted(results, key=lambda r: r["ranks"])
    base = next((r for r in rows if not r["oversubscribed"]), rows[0])
    out = []
    for row in rows:
        speedup = row["throughput"] / base["throughput"]
        ideal = row["ranks"] / base["ranks"]
        out.append({**row, "speedup": speedup, "ideal_speedup": ideal, "efficiency": speedup / ideal,
                    "baseline_ranks": base["ranks"]})
    return out


def measured_table(rows):
    header = ["ranks", "global batch", "local batch", "t_step ms (median)", "compute ms", "comm ms", "I/O ms",
              "samples/s", "speedup", "ideal", "efficiency", "other CPU", "note"]
    body = [[r["ranks"], r["global_batch"], f"{r['local_batch']:g}", f"{r['t_step'] * 1e3:.3f}",
             f"{r['t_compute'] * 1e3:.3f}", f"{r['t_comm'] * 1e3:.3f}", f"{r['t_io'] * 1e3:.3f}",
             f"{r['throughput']:.1f}", f"{r['speedup']:.3f}", f"{r['ideal_speedup']:g}", f"{r['efficiency'] * 100:.1f}%",
             f"{r['other_cpu_cores']:.2f}" if "other_cpu_cores" in r else "",
             f"oversubscribed ({r['cores_available']} cores)" if r["oversubscribed"] else ""] for r in rows]
    return markdown_table(header, body)


def imbalance_table(rows):
    """Per rank count: max ÷ median compute per step (median and 75th percentile over steps), the rank most
    often slowest, the persistently slow ranks with their share of the steps, and what waiting for the slowest
    costs per step; None without the fields."""
    rows = [r for r in rows if "imbalance" in r and r["ranks"] > 1]
    if not rows:
        return None
    body = []
    for r in rows:
        share = r["slowest_share"]
        top = max(range(len(share)), key=share.__getitem__)
        slow = ", ".join(f"{rank} ({share[rank] * 100:.0f}%)" for rank in r["slow_ranks"]) or "none"
        cost = (f"{r['imbalance_cost_s'] * 1e3:.3f} ms ({r['imbalance_cost_share'] * 100:.1f}% of a step)"
                if "imbalance_cost_s" in r else "")
        body.append([r["ranks"], f"{r['imbalance']:.3f}", f"{r['imbalance_q75']:.3f}",
                     f"{top} ({share[top] * 100:.0f}%)", slow, cost])
    return markdown_table(["ranks", "imbalance (median)", "imbalance (q75)", "most often slowest",
                           "persistently slow ranks", "cost: max - median compute"], body)


def imbalance_section(rows):
    table = imbalance_table(rows)
    if table is None:
        return []
    return ["### Load imbalance", "",
            "Imbalance = max ÷ median of the ranks' compute times in a step (1.0 = balanced); each metrics line "
            "carries every rank's compute time in the fused Allreduce's tail. A rank is persistently slow when it "
            "is the slowest in at least min(75%, 3/P) of the measured steps: look at its core (shared? "
            "another job? unbound?) in summary.json's per_rank. Cost = median over steps of max - median compute: "
            "the time a step would save if the slowest rank computed like the median one (at 2 ranks the median is "
            "the mean of the two, so half the gap between them).", "", table, ""]


def machine_section(info):
    rows = [[key, f"`{info[key]}`"] for key in INFO_KEYS if key in info]
    return "## Machine and software (`hpcrnn info`)\n\n" + markdown_table(["item", "value"], rows)


def load_comm_fit(folder, alpha, beta):
    """The fitted (alpha, beta) of allreduce.json, with --alpha/--beta overrides; None when neither exists."""
    path = os.path.join(folder, "allreduce.json")
    fit = None
    if os.path.exists(path):
        with open(path) as handle:
            fit = json.load(handle)
        fit["source"] = f"fitted to {len(fit['measurements'])} Allreduce timings at ranks {fit['ranks_used']}"
    if alpha is not None or beta is not None:
        if fit is None and (alpha is None or beta is None):
            raise ConfigError("no allreduce.json in the sweep folder: give both --alpha and --beta")
        fit = {**(fit or {}), "alpha": fit["alpha"] if alpha is None else alpha,
               "beta": fit["beta"] if beta is None else beta, "source": "given with --alpha/--beta"}
    return fit


def mode_section(mode, rows, folder):
    first = rows[0]
    settings = first.get("settings", {})
    batch_text = (f"fixed global batch {first['global_batch']}" if mode == "strong"
                  else f"per-rank batch {first['global_batch'] / first['ranks']:g} (global batch grows with ranks)")
    figures = [plots.time_and_throughput(rows, mode, folder), plots.speedup_and_efficiency(rows, mode, folder),
               plots.phase_breakdown(rows, mode, folder)]
    lines = [f"## {mode.capitalize()} scaling", "",
             f"{batch_text}; model {settings.get('cell', '?')} hidden {settings.get('hidden', '?')} layers "
             f"{settings.get('layers', '?')} ({first['num_params']} parameters, {first['gradient_bytes']} bytes per "
             f"Allreduce); {first['steps_measured']} steps measured after {first['warmup_steps']} warm-up steps; "
             f"{first['threads_per_rank']} thread(s) per rank. Times are medians over steps.", "",
             measured_table(rows), "",
             f"Speedup S(P) = throughput(P) / throughput(P0) with baseline P0 = {first['baseline_ranks']} rank(s); "
             "ideal = P/P0; parallel efficiency E = S / (P/P0)"
             + (" (= t(P0)·P0 / (t(P)·P) at a fixed global batch)." if mode == "strong"
                else " (= t(P0) / t(P) at a fixed per-rank batch).")
             + ' "other CPU": cores kept busy by processes outside the run while it ran (mpiexec runs); '
             "such work on the same cores skews the timings.", ""]
    lines += imbalance_section(rows)
    lines += [f"![{name}]({name})" for name in figures]
    return "\n".join(lines)


def projection_section(mode, rows, comm_fit, folder):
    fitting = [r for r in rows if not r["oversubscribed"]] or rows
    compute = model_fit.fit_compute(fitting)
    batch = rows[0]["global_batch"] if mode == "strong" else rows[0]["global_batch"] / rows[0]["ranks"]
    nbytes = rows[0]["gradient_bytes"]
    ranks = sorted({r["ranks"] for r in rows} | set(model_fit.PROJECTION_RANKS))
    projected = model_fit.project(mode, batch, compute, comm_fit, nbytes, ranks)
    figure = plots.projection(projected, rows, mode, folder)
    table = [[p["ranks"], f"{p['t_step'] * 1e3:.3f}", f"{p['t_compute'] * 1e3:.3f}", f"{p['t_comm'] * 1e3:.3f}",
              f"{p['throughput']:.0f}", f"{p['efficiency'] * 100:.1f}%", "" if p["feasible"] else
              "fewer than one sample per rank"] for p in projected if p["ranks"] in model_fit.PROJECTION_RANKS]
    local = "B/P" if mode == "strong" else "b"
    return "\n".join([
        f"### Projection, {mode} scaling", "",
        f"t_step(P) = c·{local} + s + 2·log2(P)·α + 2·(P−1)/P·n·β with c = {compute['per_sample'] * 1e6:.3f} µs "
        f"per local sample, s = {compute['fixed'] * 1e3:.3f} ms per step (fitted to {compute['points']} "
        f"non-oversubscribed run(s)), n = {nbytes} bytes, "
        f"{'B' if mode == 'strong' else 'b'} = {batch:g}.", "",
        markdown_table(["ranks", "t_step ms", "compute ms", "Allreduce ms", "samples/s", "efficiency", "note"], table),
        "", f"![{figure}]({figure})"])


ASSUMPTIONS = """## Cost model and its assumptions

Each step is compute (forward + BPTT + optimizer update, plus the wait for the next batch) followed by one
fused Allreduce of the gradients; nothing overlaps. The model is

    t_step(P) = c · b(P) + s + t_allreduce(P),   t_allreduce(P) = 2·log2(P)·α + 2·(P−1)/P·n·β

with b(P) = B/P for strong scaling (global batch B) and b(P) = b for weak scaling; c is the compute + I/O time
per local sample and s the per-step time that does not shrink with the local batch (the optimizer update, which
every rank repeats on all parameters, and loop overhead). The Allreduce term is the reduce-scatter + allgather
(Rabenseifner) algorithm MPICH uses for large messages: 2·log2(P) latency steps and 2·(P−1)/P of the message
through each rank's link; its reduction arithmetic is folded into β. α and β are fitted by least squares
(non-negative) to Allreduce timings of several message sizes on this machine's rank counts ({source}):
α = {alpha_us:.3f} µs, β = {beta_ns:.5f} ns/byte ({bandwidth:.2f} GB/s).

Assumptions — read the projection as an upper bound on efficiency, not a prediction:
- α and β come from the rank counts measured here; on one node that is shared memory. Across nodes the
  latency is usually higher and the ranks of a node share its network link, so the bandwidth per rank is
  lower: rerun the report with `--alpha`/`--beta` for a given network, or measure across nodes
  (`hpcrnn scaling run --launcher slurm`).
- No contention, no stragglers: the Allreduce time in the measurements includes waiting for the slowest rank,
  the model does not. Oversubscribed runs (more ranks × threads than cores) are shown but not fitted.
- c and s stay constant: no cache effects as the local batch shrinks, one rank per core, the same CPU.
- Strong scaling stops being meaningful when B/P < 1 (marked); weak scaling keeps the per-rank batch, so the
  global batch (and the optimisation problem) changes with P.
"""


def write_report(folder, out, alpha=None, beta=None):
    """Writes the report `out` (Markdown) and its PNGs beside it; returns `out`."""
    results = load_results(folder)
    if not results:
        raise ConfigError(f"no result.json below {folder}: run `hpcrnn scaling run --out {folder}` first")
    comm_fit = load_comm_fit(folder, alpha, beta)
    target = os.path.dirname(os.path.abspath(out))
    os.makedirs(target, exist_ok=True)
    parts = ["# hpcrnn scaling report", "",
             f"Sweep folder `{os.path.basename(os.path.abspath(folder))}`, report written "
             f"{time.strftime('%Y-%m-%d %H:%M')}.", "", machine_section(results[0]["info"])]
    for mode in ("strong", "weak"):
        selected = [r for r in results if r["mode"] == mode]
        if selected:
            parts += ["", mode_section(mode, scaling_rows(selected), target)]
    if comm_fit:
        parts += ["", ASSUMPTIONS.format(source=comm_fit["source"], alpha_us=comm_fit["alpha"] * 1e6,
                                         beta_ns=comm_fit["beta"] * 1e9,
                                         bandwidth=1 / comm_fit["beta"] / 1e9 if comm_fit["beta"] > 0 else float("inf"))]
        for mode in ("strong", "weak"):
            selected = [r for r in results if r["mode"] == mode]
            if selected:
                parts += ["", projection_section(mode, scaling_rows(selected), comm_fit, target)]
    else:
        parts += ["", "No allreduce.json (no run with more than one rank): no projection."]
    with open(out, "w") as handle:
        handle.write("\n".join(parts) + "\n")
    return out
