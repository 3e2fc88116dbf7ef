"""Startup to first step of `hpcrnn train` under mpiexec: seconds from launching the job to the first line
of the run's metrics.jsonl (written when step 1 is done), per code tree (--side NAME=PATH, put first on
PYTHONPATH), data file, stamp state and page cache state, interleaved and repeated; medians. With
--measure open: the seconds of open_dataset alone (where main scans the values).

"unstamped" runs remove the file's hpcrnn_checked attribute (the flag written last, so the rest of the stamp
is ignored) and put it back afterwards; "cold" runs first evict the file's pages from the page cache
(fsync + posix_fadvise DONTNEED on that file only). Run serially, e.g.
  .venv/bin/python bench/startup.py --side main=/work/main --side branch=. --data tmp-big/w1.h5 tmp-big/w4.h5"""
import argparse
import os

from machine import drop_blas_pins, launcher as mpi_launcher   # bench/machine.py: what the benches share
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

drop_blas_pins()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def set_stamped(path, stamped, saved):
    """Removes (saving it) or puts back the stamp's hpcrnn_checked flag; returns the saved value."""
    import h5py
    with h5py.File(path, "r") as handle:
        if ("hpcrnn_checked" in handle.attrs) == stamped or (stamped and saved is None):
            return saved                                  # nothing to change: the file is not opened to write
    with h5py.File(path, "a") as handle:
        if stamped and saved is not None and "hpcrnn_checked" not in handle.attrs:
            handle.attrs["hpcrnn_checked"] = saved
        elif not stamped and "hpcrnn_checked" in handle.attrs:
            saved = handle.attrs["hpcrnn_checked"]
            del handle.attrs["hpcrnn_checked"]
    return saved


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def first_step_seconds(tree, data, ranks, launcher, extra):
    """Seconds from launch to the first metrics line, and the job's exit status."""
    run_dir = tempfile.mkdtemp(prefix="hpcrnn-startup-")
    metrics = os.path.join(run_dir, "metrics.jsonl")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}       # and cwd: `-m` puts the cwd first on sys.path
    command = [*launcher, "-n", str(ranks), sys.executable, "-m", "hpcrnn", "train", "--data", data,
               "--run-dir", run_dir, "--max-steps", "2", "--set", "train.progress=none",
               "--set", "data.val_fraction=0", *extra]
    started = time.perf_counter()
    job = subprocess.Popen(command, env=env, cwd=os.path.abspath(tree), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    first = None
    while job.poll() is None:
        if first is None and os.path.exists(metrics) and os.path.getsize(metrics) > 0:
            first = time.perf_counter() - started
        time.sleep(0.005)
    stderr = job.stderr.read()
    if first is None and os.path.exists(metrics) and os.path.getsize(metrics) > 0:
        first = time.perf_counter() - started
    shutil.rmtree(run_dir, ignore_errors=True)
    if job.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({job.returncode}): {stderr.strip()[-500:]}")
    return first


OPEN = ("import sys, time; t = time.perf_counter(); from hpcrnn import comm; from hpcrnn.data.schema import "
        "open_dataset; w = comm.world(); open_dataset(sys.argv[1], w); "
        "s = comm.max_value(w, time.perf_counter() - t); print(f'<{s}>') if w.rank == 0 else None")


def open_seconds(tree, data, ranks, launcher, extra):
    """Seconds of open_dataset alone (imports of hpcrnn.data included; slowest rank): what opening costs."""
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    result = subprocess.run([*launcher, "-n", str(ranks), sys.executable, "-c", OPEN, data], env=env,
                            cwd=os.path.abspath(tree), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"open_dataset of {data} failed: {result.stderr.strip()[-500:]}")
    return float(result.stdout.split("<")[1].split(">")[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", action="append", required=True, help="NAME=PATH of a code tree")
    parser.add_argument("--data", nargs="+", required=True, help="data files (stamped by synth or check)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", nargs="+", default=["warm", "cold"], choices=("warm", "cold"))
    parser.add_argument("--states", nargs="+", default=["stamped", "unstamped"], choices=("stamped", "unstamped"))
    parser.add_argument("--set", action="append", default=[], help="more train --set overrides")
    parser.add_argument("--measure", choices=("first-step", "open"), default="first-step",
                        help="first-step: launch to the first metrics line; open: open_dataset alone")
    args = parser.parse_args()
    words = mpi_launcher(bind=False)
    sides = dict(side.split("=", 1) for side in args.side)
    args.data = [os.path.abspath(data) for data in args.data]     # the jobs run in each side's tree
    for name, tree in sides.items():                                # prove which code each side runs
        found = subprocess.run([sys.executable, "-c", "import hpcrnn; print(hpcrnn.__file__)"], cwd=tree,
                               env={**os.environ, "PYTHONPATH": os.path.abspath(tree)}, capture_output=True,
                               text=True).stdout.strip()
        print(f"{name}: {found}", flush=True)
    extra = [item for value in args.set for item in ("--set", value)]
    times, saved = {}, {}
    try:
        for repeat in range(args.repeats):
            for data in args.data:
                for state in args.states:
                    saved[data] = set_stamped(data, state == "stamped", saved.get(data))
                    for cache in args.cache:
                        for name, tree in sides.items():
                            if cache == "cold":
                                evict(data)
                            measure = first_step_seconds if args.measure == "first-step" else open_seconds
                            seconds = measure(tree, data, args.ranks, words, extra)
                            times.setdefault((name, data, state, cache), []).append(seconds)
                            print(f"repeat {repeat} {name} {os.path.basename(data)} {state} {cache}: "
                                  f"{seconds:.2f} s", flush=True)
    finally:
        for data, value in saved.items():
            set_stamped(data, True, value)
    print(f"\n{'startup to first step' if args.measure == 'first-step' else 'open_dataset'}, median of {args.repeats}, mpiexec -n {args.ranks} "
          f"(file size GiB: {', '.join(f'{os.path.basename(d)} {os.path.getsize(d) / 2**30:.2f}' for d in args.data)})")
    for (name, data, state, cache), values in times.items():
        print(f"{name:>8} {os.path.basename(data):>10} {state:>10} {cache:>5}: {statistics.median(values):6.2f} s  "
              f"(runs {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
