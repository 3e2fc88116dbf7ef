"""Data stall during training: share of step time spent waiting on the loader (t_io / t_step), for the
default config on a synthesized data set, read from the run's own metrics.jsonl.

Run:  mpiexec -n 2 .venv/bin/python bench/stall.py [--sequences 20000] [--epochs 1] [--reads auto]"""
import argparse
import json
import os
import statistics
import tempfile

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from mpi4py import MPI

from hpcrnn.cli import main as cli


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=20000)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--reads", default="auto", help="data.reads (auto = the default config)")
    args = parser.parse_args()
    world = MPI.COMM_WORLD
    work = world.bcast(tempfile.mkdtemp(prefix="hpcrnn-stall-") if world.rank == 0 else None)
    data, run_dir = os.path.join(work, "data.h5"), os.path.join(work, "run")
    cli(["synth", "--kind", "lorenz96", "--sequences", str(args.sequences), "--length", str(args.length),
         "--features", str(args.features), "--out", data])
    cli(["train", "--data", data, "--run-dir", run_dir, "--epochs", str(args.epochs),
         "--set", "train.progress=none", "--set", f"data.reads={args.reads}"])
    if world.rank == 0:
        with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
            steps = [r for r in map(json.loads, handle) if "event" not in r][3:]   # skip compile/warm-up
        io, total = sum(r["t_io"] for r in steps), sum(r["t_step"] for r in steps)
        print(f"ranks {world.size}; default config (gated, H=64, batch 64), data.reads={args.reads}; "
              f"{args.sequences} x {args.length} x {args.features} Lorenz-96 windows; {len(steps)} steps after warm-up")
        print(f"median t_step {statistics.median(r['t_step'] for r in steps) * 1e3:.3f} ms, median t_io "
              f"{statistics.median(r['t_io'] for r in steps) * 1e3:.4f} ms; data stall = {io / total:.2%} of step time")


if __name__ == "__main__":
    main()
