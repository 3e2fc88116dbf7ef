"""Hybrid ranks x threads on one node: which split of C cores between MPI ranks and threads trains fastest.

    .venv/bin/python bench/hybrid.py [--cores 2] [--hidden 128,32] [--steps 40] [--warmup 8] [--repeats 2]

With C cores it runs, interleaved, the same training (Mackey-Glass windows T = 64, F = 1, LSTM, 1 layer, global
batch 256, Adam, clip 1.0) as
  ranks  : C ranks x 1 thread        (mpiexec -bind-to core -n C)
  rows   : 1 rank x C row threads    (train.numba_threads = C: C row blocks on C threads, 1 BLAS thread each)
  blas   : 1 rank x C BLAS threads   (OPENBLAS_NUM_THREADS = C: only the GEMMs in parallel)
  single : 1 rank x 1 thread         (the baseline the speedups are against)
and prints samples/s (global batch / median step time on rank 0, after the warm-up steps), the speedup over
`single` and the final loss. BLAS as a user gets it: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are dropped (bench/ddp.py).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from ddp import make_data   # also drops the OpenBLAS pins and sets 1 thread per process
from machine import describe as describe_machine, launcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def layouts(cores):
    """name -> (ranks, row threads, BLAS threads)."""
    return {"ranks": (cores, 1, 1), "rows": (1, cores, 1), "blas": (1, 1, cores), "single": (1, 1, 1)}


def run(layout, hidden, args, data, work):
    ranks, rows, blas = layout
    run_dir = os.path.join(work, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [*launcher(max(rows, blas)), "-n", str(ranks), sys.executable, "-m", "hpcrnn", "train", "--data", data,
               "--cell", "lstm", "--hidden", str(hidden), "--layers", "1", "--batch-size", str(args.batch),
               "--optimizer", "adam", "--lr", "0.001", "--run-dir", run_dir,
               "--set", "optim.clip_norm=1.0", "--set", "schedule.name=constant", "--set", "data.val_fraction=0",
               "--set", f"train.max_steps={args.steps}", "--set", "train.epochs=1000",
               "--set", "train.progress=none", "--set", "checkpoint.every_epochs=0",
               "--set", f"train.numba_threads={rows}"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(blas), "OMP_NUM_THREADS": str(blas),
           "NUMBA_NUM_THREADS": str(max(rows, 1))}
    subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        records = [json.loads(line) for line in handle if "event" not in line]
    step = statistics.median(r["t_step"] for r in records[args.warmup:])
    return {"samples_per_s": args.batch / step, "final_loss": records[-1]["loss"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--hidden", default="128,32")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=64)
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    hiddens = [int(h) for h in args.hidden.split(",")]
    found = {}
    with tempfile.TemporaryDirectory(prefix="hpcrnn-hybrid-") as work:
        data = make_data(args, work)
        for repeat in range(args.repeats):
            for hidden in hiddens:
                names = list(layouts(args.cores))
                for name in names if repeat % 2 == 0 else names[::-1]:     # interleaved, alternating order
                    result = run(layouts(args.cores)[name], hidden, args, data, work)
                    found.setdefault((hidden, name), []).append(result)
                    print(f"repeat {repeat} H={hidden} {name}: {result['samples_per_s']:.0f} samples/s", flush=True)
    print(f"\n{args.cores} cores, LSTM 1 layer, global batch {args.batch}, T = {args.seq_len}, F = 1, "
          f"{args.steps} steps ({args.warmup} warm-up), median step; best of {args.repeats} repeats")
    print("| H | layout | ranks x row threads x BLAS threads | samples/s | speedup vs 1 thread | final loss |\n"
          "|---|---|---|---|---|---|")
    for hidden in hiddens:
        base = max(r["samples_per_s"] for r in found[(hidden, "single")])
        for name, (ranks, rows, blas) in layouts(args.cores).items():
            best = max(found[(hidden, name)], key=lambda r: r["samples_per_s"])
            print(f"| {hidden} | {name} | {ranks} x {rows} x {blas} | {best['samples_per_s']:.0f} | "
                  f"{best['samples_per_s'] / base:.2f} | {best['final_loss']:.5f} |")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
