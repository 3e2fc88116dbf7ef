"""hpcrnn against PyTorch DistributedDataParallel, as a user would run both on one node: P ranks, the same data
(Mackey-Glass windows), model (1 layer, head last, MSE), global batch, Adam and clipping, interleaved repeats.

    .venv/bin/python bench/ddp.py [--ranks 2] [--cells lstm,gru] [--steps 60] [--warmup 10] [--repeats 2]

hpcrnn runs as `mpiexec -bind-to core -n P hpcrnn train`; DDP as P processes (gloo on 127.0.0.1, CPU, one
thread each, each pinned to its own core like hpcrnn's ranks), started from the same initial parameters
(hpcrnn's state_dict loads into the torch module unchanged). samples/s = global batch x measured steps / the
time of those steps on rank 0 (after --warmup steps; batch fetch, forward, backward, reduction, update). The
final loss is the mean of the last 5 steps' global batch losses. Best of the repeats is reported.

BLAS as a user gets it: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are dropped from this process's environment
(and so from every run it starts) before numpy loads; the core type OpenBLAS then picks is printed.
torch stays a bench/test extra: this script is the only place outside tests that imports it.
"""
import os

from machine import drop_blas_pins, launcher   # bench/machine.py: what the benches share

drop_blas_pins()                     # before numpy loads: let OpenBLAS detect the core, as users get it
for _name in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from machine import describe as describe_machine  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 2.5          # issue 14: hpcrnn >= 2.5x DDP's samples/s at P = 2
LAST = 5              # steps averaged into the "final loss"


# ---- the DDP worker (one process per rank) ---------------------------------------------------------------
def ddp_worker(args):
    import h5py
    import numpy as np
    import torch
    import torch.distributed as dist
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if args.bind == "core":
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[rank % len(cores)]})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    with h5py.File(args.data, "r") as handle:
        inputs, targets = torch.from_numpy(handle["inputs"][()]), torch.from_numpy(handle["targets"][()])
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[args.cell]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn(inputs.shape[2], args.hidden, 1, batch_first=True)
            self.head = torch.nn.Linear(args.hidden, targets.shape[1])

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])
    net = Net()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(args.init).items()})
    model = torch.nn.parallel.DistributedDataParallel(net)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(0))
    local = args.batch // size
    losses, times = [], []
    for step in range(args.steps):
        t0 = time.perf_counter()
        start = (step * args.batch) % (len(inputs) - args.batch + 1)
        index = order[start + rank * local:start + (rank + 1) * local]
        x, y = inputs[index], targets[index]
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()                                      # DDP averages the gradients over the ranks
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        times.append(time.perf_counter() - t0)
        reduced = loss.detach().clone()
        dist.all_reduce(reduced)                             # for the record only, outside the timed step
        losses.append(float(reduced) / size)
    if rank == 0:
        with open(args.out, "w") as handle:
            json.dump({"times": times, "losses": losses}, handle)
    dist.destroy_process_group()


# ---- the two runs ----------------------------------------------------------------------------------------
def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ddp(args, cell, data, init, work):
    out = os.path.join(work, f"ddp-{cell}.json")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "WORLD_SIZE": str(args.ranks)}
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--cell", cell, "--data", data,
               "--init", init, "--out", out, "--steps", str(args.steps), "--batch", str(args.batch),
               "--hidden", str(args.hidden), "--lr", str(args.lr), "--bind", args.bind]
    procs = [subprocess.Popen(command, env={**env, "RANK": str(r)}) for r in range(args.ranks)]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"the DDP {cell} run failed")
    with open(out) as handle:
        result = json.load(handle)
    return measure(result["times"], result["losses"], args)


def run_hpcrnn(args, cell, data, work):
    run_dir = os.path.join(work, f"hpcrnn-{cell}")
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [*launcher(bind=args.bind == "core"), "-n", str(args.ranks), sys.executable, "-m", "hpcrnn", "train",
               "--data", data, "--cell", cell, "--hidden", str(args.hidden), "--layers", "1",
               "--batch-size", str(args.batch), "--optimizer", "adam", "--lr", str(args.lr), "--run-dir", run_dir,
               "--set", "optim.clip_norm=1.0", "--set", "schedule.name=constant", "--set", "data.val_fraction=0",
               "--set", f"train.max_steps={args.steps}", "--set", "train.epochs=1000", "--set", "train.progress=none",
               "--set", "checkpoint.every_epochs=0", "--set", "train.seed=0"]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        records = [json.loads(line) for line in handle if "event" not in line]
    result = measure([r["t_step"] for r in records], [r["loss"] for r in records], args)
    kept = records[args.warmup:]
    for key in ("t_compute", "t_comm", "t_io", "t_compute_max"):
        result[key] = sum(r[key] for r in kept) / len(kept)
    return result


def measure(times, losses, args):
    kept = times[args.warmup:]
    return {"samples_per_s": args.batch * len(kept) / sum(kept), "final_loss": sum(losses[-LAST:]) / LAST}


# ---- set-up and report -----------------------------------------------------------------------------------
def make_data(args, work):
    path = os.path.join(work, "mackey_glass.h5")
    subprocess.run([sys.executable, "-m", "hpcrnn", "synth", "--kind", "mackey-glass", "--sequences",
                    str(args.batch * args.steps), "--length", str(args.seq_len), "--features", "1", "--out", path],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return path


def initial_state(cell, hidden, work):
    """hpcrnn's initial parameters (seed 0, as `hpcrnn train` starts), for the torch module to load."""
    import numpy as np
    import hpcrnn
    model = hpcrnn.Model(cell=cell, input_size=1, hidden_size=hidden, num_layers=1, output_size=1,
                         dtype=np.float32, seed=0)
    path = os.path.join(work, f"init-{cell}.npz")
    np.savez(path, **model.state_dict())
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256, help="global batch")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--bind", default="core", choices=("core", "none"),
                        help="core: each rank of both on a core of its own (default); none: leave them unbound")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--init", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return ddp_worker(args)
    print(describe_machine(), flush=True)
    cells = args.cells.split(",")
    best = {}
    with tempfile.TemporaryDirectory(prefix="hpcrnn-ddp-") as work:
        data = make_data(args, work)
        inits = {cell: initial_state(cell, args.hidden, work) for cell in cells}
        for repeat in range(args.repeats):
            for cell in cells:
                pair = [("hpcrnn", lambda: run_hpcrnn(args, cell, data, work)),
                        ("ddp", lambda: run_ddp(args, cell, data, inits[cell], work))]
                for name, run in pair if repeat % 2 == 0 else pair[::-1]:     # interleaved, alternating order
                    result = run()
                    print(f"repeat {repeat} {cell} {name}: {result['samples_per_s']:.0f} samples/s, "
                          f"final loss {result['final_loss']:.5f}", flush=True)
                    kept = best.get((cell, name))
                    if kept is None or result["samples_per_s"] > kept["samples_per_s"]:
                        best[(cell, name)] = result
    print(f"\nP = {args.ranks}, global batch {args.batch}, T = {args.seq_len}, F = 1, H = {args.hidden}, 1 layer, "
          f"Adam lr {args.lr:g}, clip 1.0, {args.steps} steps ({args.warmup} warm-up), best of {args.repeats}, "
          f"ranks bound: {args.bind}; hpcrnn's phase times are rank 0's means per step")
    print("| cell | hpcrnn samples/s | DDP samples/s | ratio | target | hpcrnn final loss | DDP final loss "
          "| hpcrnn compute ms | slowest rank's compute ms | comm ms | I/O ms |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for cell in cells:
        h, d = best[(cell, "hpcrnn")], best[(cell, "ddp")]
        ratio = h["samples_per_s"] / d["samples_per_s"]
        print(f"| {cell} | {h['samples_per_s']:.0f} | {d['samples_per_s']:.0f} | {ratio:.2f} | "
              f"{'met' if ratio >= TARGET else 'missed'} ({TARGET}x) | {h['final_loss']:.5f} | {d['final_loss']:.5f} | "
              f"{h['t_compute'] * 1e3:.1f} | {h['t_compute_max'] * 1e3:.1f} | {h['t_comm'] * 1e3:.1f} | "
              f"{h['t_io'] * 1e3:.1f} |")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
