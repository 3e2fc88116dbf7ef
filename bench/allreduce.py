"""Gradient exchange benchmark: hpcrnn's fused exchange (one buffer of gradients + loss/count/flags and the
stall-inspector's polled non-blocking Allreduce; the divide by the global count is folded into the
optimizer update) against a raw blocking
`Allreduce` of the same number of bytes; then weak-scaling efficiency of real training steps, P ranks vs 1.

Run:  mpiexec -n 2 .venv/bin/python bench/allreduce.py [--params 1000000] [--repeats 200]
Prints medians and ratios measured in this one run (rank 0)."""
import argparse
import json
import os
import statistics
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
from mpi4py import MPI

from hpcrnn import comm as mpi


def time_raw(comm, buf, repeats):
    times = []
    for _ in range(repeats):
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        times.append(time.perf_counter() - t0)
    return times


def time_fused(comm, num_params, repeats, timeout_s):
    fused = mpi.FusedExchange(comm, num_params, np.float32, [], timeout_s, overlap=False)
    times = []
    for _ in range(repeats):
        comm.Barrier()
        t0 = time.perf_counter()
        fused.finish(1.0, 8.0, False)
        times.append(time.perf_counter() - t0)
    return times


def exchange(comm, num_params, repeats):
    raw_buf = np.zeros(num_params + mpi.FusedExchange.tail_size(comm.size), dtype=np.float32)
    rows = []
    for _ in range(3):   # interleave to share the machine's noise
        rows.append((time_raw(comm, raw_buf, repeats), time_fused(comm, num_params, repeats, 600.0),
                     time_fused(comm, num_params, repeats, 0.0)))
    raw = statistics.median(t for r in rows for t in r[0])
    polled = statistics.median(t for r in rows for t in r[1])
    blocking = statistics.median(t for r in rows for t in r[2])
    return raw, polled, blocking


def step_time(comm, batch_per_rank, steps):
    """Median seconds of a real training step (lstm, H=128) with `batch_per_rank` samples on each rank."""
    from hpcrnn.model import Model
    model = Model(cell="lstm", input_size=16, hidden_size=128, num_layers=1, output_size=1, head="last",
                  dtype=np.float32, seed=0)
    rng = np.random.default_rng(comm.rank)
    x = rng.standard_normal((batch_per_rank, 50, 16)).astype(np.float32)
    y = rng.standard_normal((batch_per_rank, 1)).astype(np.float32)
    fused = mpi.FusedExchange(comm, model.num_params, np.float32, [], 600.0, overlap=False)
    times = []
    for _ in range(steps):
        comm.Barrier()
        t0 = time.perf_counter()
        fused.start()
        totals = fused.finish(model.forward_backward(x, y, fused.grad), len(x), False)
        model.params -= (1e-3 / totals.count) * fused.grad
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def train_median_step(world, data, run_dir, overlap, steps):
    """Median t_step (ms) of a real `hpcrnn train` run (lstm, 3 layers of 256) with train.overlap on/off."""
    from hpcrnn.cli import main as cli
    cli(["train", "--data", data, "--run-dir", run_dir, "--cell", "lstm", "--hidden", "256", "--layers", "3",
         "--batch-size", str(16 * world.size), "--max-steps", str(steps), "--set", "train.progress=none",
         "--set", "data.val_fraction=0", "--set", f"train.overlap={str(overlap).lower()}",
         "--set", "checkpoint.every_epochs=0"])
    if world.rank != 0:
        return 0.0
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        records = [json.loads(line) for line in handle][3:]
    return statistics.median(r["t_step"] for r in records) * 1e3


def overlap_comparison(world, steps, rounds=3):
    import tempfile
    from hpcrnn.cli import main as cli
    work = world.bcast(tempfile.mkdtemp(prefix="hpcrnn-overlap-") if world.rank == 0 else None)
    data = os.path.join(work, "d.h5")
    cli(["synth", "--kind", "lorenz96", "--sequences", "2048", "--length", "50", "--features", "16", "--out", data])
    results = {False: [], True: []}
    for round_index in range(rounds):
        for overlap in (False, True):
            run_dir = os.path.join(work, f"run-{overlap}-{round_index}")
            results[overlap].append(train_median_step(world, data, run_dir, overlap, steps))
    return statistics.median(results[False]), statistics.median(results[True])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--batch-per-rank", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--overlap-steps", type=int, default=25, help="0 skips the overlap comparison")
    args = parser.parse_args()
    world = MPI.COMM_WORLD
    raw, polled, blocking = exchange(world, args.params, args.repeats)
    t_one = step_time(MPI.COMM_SELF, args.batch_per_rank, args.steps) if world.rank == 0 else 0.0
    world.Barrier()
    t_all = step_time(world, args.batch_per_rank, args.steps)
    t_one = world.bcast(t_one)
    if world.rank == 0:
        extras = mpi.FusedExchange.tail_size(world.size)
        mb = (args.params + extras) * 4 / 2**20
        print(f"ranks {world.size}; {args.params} float32 gradients + {extras} extras ({mb:.2f} MiB); "
              f"{args.repeats}x3 interleaved repeats; medians")
        print("| exchange | ms | ratio to raw Allreduce |\n|---|---|---|")
        print(f"| raw MPI Allreduce (blocking) | {raw * 1e3:.3f} | 1.00 |")
        print(f"| hpcrnn fused, stall inspector on (polled Iallreduce) | {polled * 1e3:.3f} | {polled / raw:.2f} |")
        print(f"| hpcrnn fused, stall inspector off (blocking) | {blocking * 1e3:.3f} | {blocking / raw:.2f} |")
        print(f"\nweak scaling, lstm H=128 T=50 F=16, {args.batch_per_rank} samples per rank per step:")
        print(f"| ranks | ms/step | efficiency |\n|---|---|---|\n| 1 | {t_one * 1e3:.2f} | 1.00 |")
        print(f"| {world.size} | {t_all * 1e3:.2f} | {t_one / t_all:.3f} |")
    if args.overlap_steps:
        fused, overlapped = overlap_comparison(world, args.overlap_steps)
        if world.rank == 0:
            print("\ntrain.overlap (lstm 3x256, T=50, 16 samples/rank; medians of 3 interleaved runs):")
            print(f"| exchange | ms/step | ratio |\n|---|---|---|\n| one fused Allreduce (default) | {fused:.2f} | 1.00 |")
            print(f"| per-layer Iallreduce during BPTT | {overlapped:.2f} | {overlapped / fused:.2f} |")


if __name__ == "__main__":
    main()
