"""What ASHA saves: the same local sweep run twice, with rungs and without, into OUT/asha-RUNGS-fFACTOR and OUT/full; prints
the training time of each (sum of the trainers' own wall time, sum of each trial's launches, the sweep's wall
time) and the winner of each (docs/sweeps.md). The sweep without rungs is kept in OUT for later calls with other
rungs. Run from the repository root:
    .venv/bin/python bench/sweep_asha.py --out /tmp/asha-bench [--rungs "[1, 3]" --reduction-factor 3]"""
import argparse
import json
import os
import subprocess
import sys
import time

SPEC = """
[data]
path = "{data}"
val_fraction = 0.2
[model]
cell = "lstm"
[train]
epochs = {epochs}
batch_size = 64
progress = "none"

[grid]
"optim.lr" = [3e-4, 1e-3, 3e-3, 1e-2]
"model.hidden_size" = [16, 32]

[sweep]
seed = 0
monitor = "val_loss"
{rungs}
"""


def hpcrnn(*args):
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "hpcrnn", *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"hpcrnn {' '.join(map(str, args))} failed:\n{result.stdout}{result.stderr}")
    return result.stdout, time.perf_counter() - started


def run_sweep(out, name, data, args, rungs):
    """Runs (or, when OUT/NAME.json says it ran, reuses) one sweep; returns its row."""
    folder, spec, kept = (os.path.join(out, name + suffix) for suffix in ("", ".toml", ".json"))
    if os.path.exists(kept):
        return json.load(open(kept))
    with open(spec, "w") as handle:
        handle.write(SPEC.format(data=data, epochs=args.epochs, rungs=rungs))
    _, wall = hpcrnn("sweep", "run", "--spec", spec, "--out", folder, "--ranks", args.ranks,
                     "--parallel", args.parallel)
    printed, _ = hpcrnn("sweep", "collect", folder)
    sweep = json.load(open(os.path.join(folder, "trials.json")))
    records = [json.load(open(os.path.join(folder, t["name"], "sweep.json"))) for t in sweep["trials"]]
    best = printed.split("best: ")[1].split()[0] if "best: " in printed else "-"
    steps = sum(r.get("steps") or 0 for r in records)
    row = {"name": name, "train_s": sum(r["train_s"] for r in records), "launch_s": sum(r["wall_s"] for r in records),
           "sweep_s": wall, "steps": steps, "stopped": sum(r["state"] == "stopped" for r in records),
           "best": best, "results": os.path.join(folder, "results.md")}
    with open(kept, "w") as handle:
        json.dump(row, handle)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sequences", type=int, default=6000)
    parser.add_argument("--length", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--rungs", default="[1, 3]")
    parser.add_argument("--reduction-factor", type=float, default=3)
    parser.add_argument("--ranks", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = os.path.join(os.path.abspath(args.out), "mg.h5")
    if not os.path.exists(data):
        hpcrnn("synth", "--kind", "mackey-glass", "--sequences", args.sequences, "--length", args.length,
               "--features", 1, "--out", data)
    name = "asha-" + "-".join(args.rungs.strip("[]").replace(" ", "").split(",")) + f"-f{args.reduction_factor:g}"
    rows = [run_sweep(args.out, "full", data, args, ""),     # kept between runs with other rungs
            run_sweep(args.out, name, data, args, f"rungs = {args.rungs}\nreduction_factor = {args.reduction_factor}")]
    print("| sweep | trials stopped | steps trained | training time (trainers) s | launches s | sweep wall s | best |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['stopped']} | {row['steps']} | {row['train_s']:.1f} | {row['launch_s']:.1f} | "
              f"{row['sweep_s']:.1f} | {row['best']} |")
    full, asha = rows
    print(f"\nASHA saves {100 * (1 - asha['train_s'] / full['train_s']):.0f}% of the training time, "
          f"{100 * (1 - asha['sweep_s'] / full['sweep_s']):.0f}% of the sweep's wall time; same best trial: "
          f"{'yes' if asha['best'] == full['best'] else 'no'} ({full['results']}, {asha['results']})")


if __name__ == "__main__":
    main()
