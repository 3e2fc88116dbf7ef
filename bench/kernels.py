"""Training-step speed of hpcrnn's kernels against PyTorch, side by side in one process, one thread each.

    .venv/bin/python bench/kernels.py [--quick] [--cells lstm,gru,rnn,gated] [--repeats N]

A step is forward + backward + SGD update (float32, head last, mse, O = 1). lstm/gru/rnn are compared with
nn.LSTM / nn.GRU / nn.RNN; `gated` with the same cell written as a PyTorch autograd loop over time. Repeats
alternate between the two, and the table reports medians, GFLOP/s by the model 3*2*B*T*(F+H)*G*H, that as a
share of the run's single-thread sgemm ceiling and of the core's FMA peak (bench/ceilings.py), and the
speed-up torch_ms / hpcrnn_ms. It measures the machine, not a pin: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are
removed from this process's environment before numpy loads (only here, never in tests or CI), and the header
names the core type OpenBLAS then ran.
"""
import os

from machine import drop_blas_pins   # bench/machine.py: what the benches share

drop_blas_pins()  # measure the machine, not a pin: OpenBLAS picks its own kernels (this process only)
for _name in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"  # before numpy, numba, scipy or torch load a threaded library

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from ceilings import fma_peak_gflops, sgemm_gflops  # noqa: E402  (bench/ceilings.py)

SHAPES = [(64, 100, 8, 64), (64, 100, 32, 256), (32, 200, 64, 512), (128, 50, 16, 128), (16, 1000, 4, 32)]
GATES = {"lstm": 4, "gru": 3, "rnn": 1, "gated": 4}
TARGETS = {"lstm": 1.25, "gru": 2.0, "gated": 2.5}     # issue 11: speed-up over the PyTorch baseline
SGEMM_TARGET = 0.75    # issue 11: share of the run's sgemm ceiling at H >= 256
LEARNING_RATE = 1e-3


def hpcrnn_step(cell, batch, steps, features, hidden, seed=0):
    """A closure running one training step of hpcrnn on fixed random data."""
    import hpcrnn
    model = hpcrnn.Model(cell=cell, input_size=features, hidden_size=hidden, num_layers=1, output_size=1,
                         dtype=np.float32, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, features), dtype=np.float32)
    y = rng.standard_normal((batch, 1), dtype=np.float32)
    grad = model.flat_grad_buffer()

    def step():
        grad.fill(0)
        model.forward_backward(x, y, grad, loss="mse", scale=1.0 / batch)
        model.params -= LEARNING_RATE * grad
    return step


def torch_gated_module(torch, features, hidden):
    """The gated cell as a careful PyTorch user writes it: one input GEMM, then an autograd loop over time."""
    nn = torch.nn

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            bound = hidden ** -0.5
            self.weight_ih = nn.Parameter(torch.empty(4 * hidden, features).uniform_(-bound, bound))
            self.weight_hh = nn.Parameter(torch.empty(4 * hidden, hidden).uniform_(-bound, bound))
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden).uniform_(-bound, bound))

        def forward(self, x):
            projected = torch.nn.functional.linear(x, self.weight_ih, self.bias_ih)
            w_ifo, w_c = self.weight_hh[: 3 * hidden], self.weight_hh[3 * hidden:]
            h = x.new_zeros(x.shape[0], hidden)
            for gates in projected.unbind(dim=1):  # not projected[:, t]: its backward zero-fills all of it per step
                i, f, o = torch.sigmoid(gates[:, : 3 * hidden] + h @ w_ifo.T).chunk(3, dim=1)
                candidate = torch.tanh(gates[:, 3 * hidden:] + (f * h) @ w_c.T)
                h = o * torch.tanh(h) + i * candidate
            return h
    return Gated()


def torch_step(cell, batch, steps, features, hidden, seed=0):
    """A closure running one training step of the PyTorch equivalent on fixed random data."""
    import torch
    torch.manual_seed(seed)
    if cell == "gated":
        rnn = torch_gated_module(torch, features, hidden)
    else:
        rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](
            features, hidden, 1, batch_first=True)
    head = torch.nn.Linear(hidden, 1)
    params = list(rnn.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=LEARNING_RATE)
    x = torch.randn(batch, steps, features)
    y = torch.randn(batch, 1)

    def step():
        optimizer.zero_grad(set_to_none=False)
        out = rnn(x) if cell == "gated" else rnn(x)[0][:, -1]
        loss = torch.nn.functional.mse_loss(head(out), y)
        loss.backward()
        optimizer.step()
    return step


def timed(step, clock):
    start = clock()
    step()
    return (clock() - start) * 1e3


def measure(cell, shape, repeats, clock, warmup=2):
    """Median ms per step of (hpcrnn, torch), repeats interleaved."""
    ours, theirs = hpcrnn_step(cell, *shape), torch_step(cell, *shape)
    for _ in range(warmup):
        ours()
        theirs()
    ours_ms, theirs_ms = [], []
    for _ in range(repeats):
        ours_ms.append(timed(ours, clock))
        theirs_ms.append(timed(theirs, clock))
    return statistics.median(ours_ms), statistics.median(theirs_ms)


def gflops(cell, shape, ms):
    batch, steps, features, hidden = shape
    return 3 * 2 * batch * steps * (features + hidden) * GATES[cell] * hidden / (ms * 1e-3) / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, two of the five shapes")
    parser.add_argument("--cells", default="lstm,gru,rnn,gated", help="comma-separated cells")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per side (default 7, quick 3)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time; cpu: the process's CPU time (steadier on a shared machine)")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    repeats = args.repeats or (3 if args.quick else 7)
    shapes = [SHAPES[0], SHAPES[3]] if args.quick else SHAPES
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    baseline = {"lstm": "nn.LSTM", "gru": "nn.GRU", "rnn": "nn.RNN", "gated": "torch loop"}
    from hpcrnn.kernels.blas_core import blas_core
    print_header(torch, repeats, args.clock)
    ceiling, blas = sgemm_gflops(clock=clock)
    peak = fma_peak_gflops(blas_core()[0]["cpu_isa"], clock=clock)
    print(f"# sgemm ceiling ({blas}, the kernels' BLAS, 1 thread, 2048^3): {ceiling:.1f} GFLOP/s; FMA peak "
          f"(register-bound vector FMA loop, 1 thread): {peak:.1f} GFLOP/s. targets: speed-up {TARGETS}, "
          f">= {SGEMM_TARGET:.0%} of sgemm at H >= 256")
    print("| cell | B,T,F,H | hpcrnn ms | GFLOP/s | % of sgemm | % of peak | torch ms | GFLOP/s | torch/hpcrnn "
          "| target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cell in args.cells.split(","):
        if cell not in GATES:
            parser.error(f"--cells: unknown cell {cell!r}")
        for shape in shapes:
            ours, theirs = measure(cell, shape, repeats, clock)
            rate = gflops(cell, shape, ours)
            print(f"| {cell} vs {baseline[cell]} | {','.join(map(str, shape))} | {ours:.1f} | {rate:.1f} | "
                  f"{rate / ceiling:.0%} | {rate / peak:.0%} | {theirs:.1f} | {gflops(cell, shape, theirs):.1f} | "
                  f"{theirs / ours:.2f}x | {verdict(cell, shape, theirs / ours, rate / ceiling)} |", flush=True)


def verdict(cell, shape, speedup, share):
    """'met'/'missed' for each target of issue 11 this row has (speed-up; share of sgemm at H >= 256)."""
    parts = []
    if cell in TARGETS:
        parts.append(f"{TARGETS[cell]}x {'met' if speedup >= TARGETS[cell] else 'missed'}")
    if shape[3] >= 256:
        parts.append(f"{SGEMM_TARGET:.0%} {'met' if share >= SGEMM_TARGET else 'missed'}")
    return ", ".join(parts) or "-"


def print_header(torch, repeats, clock):
    from hpcrnn.kernels.blas_core import blas_core
    from hpcrnn.runinfo import cpu_id, cpu_model
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    core = blas_core()[0]
    print(f"# {cpu_model()} ({cpu_id()}, {core['cpu_isa']}), {os.cpu_count()} cores, load average {load} at start; "
          f"OpenBLAS core type {core['kernel_blas_core']}; torch {torch.__version__}, numpy {np.__version__}; "
          f"1 thread each, float32, {clock} clock, median of {repeats} interleaved repeats")


if __name__ == "__main__":
    main()
