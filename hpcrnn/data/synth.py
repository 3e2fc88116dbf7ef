"""`hpcrnn synth`: writes a synthetic schema v1 file of any size, in slabs of bounded memory, in parallel with
collective mpio writes under MPI; the dataset contents are identical for a seed whatever the number of ranks."""
import os
from dataclasses import dataclass

import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.data import generators
from hpcrnn.data.parallel import attempt, chunk_rows, mpio_available, open_file, transfer_list, write_rows
from hpcrnn.data.shard import blockdist
from hpcrnn.errors import ConfigError, DataError

KINDS = ("mackey-glass", "lorenz96", "sines")
SLAB_BYTES = 32 << 20


@dataclass(frozen=True)
class SynthSpec:
    kind: str
    sequences: int
    length: int
    features: int
    out: str
    seed: int = 0
    horizon: int = 1
    classes: int = 0
    form: str = "windows"
    lookback: int = 0        # series form: 0 = min(32, length // 2)

    def validate(self):
        _require(self.kind in KINDS, f"--kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        _require(self.form in ("windows", "series"), f"--form must be windows or series, got {self.form!r}")
        _require(self.sequences >= 1 and self.length >= 1 and self.features >= 1,
                 "--sequences, --length and --features must be >= 1")
        _require(self.horizon >= 1, "--horizon must be >= 1")
        _require(self.classes == 0 or (self.kind == "sines" and self.classes >= 2 and self.form == "windows"),
                 "--classes C (>= 2) applies to --kind sines in windows form only")
        _require(self.kind != "lorenz96" or self.features >= 4, "lorenz96 needs --features >= 4")
        if self.form == "series":
            _require(self.series_lookback() + self.horizon <= self.sequences * self.length,
                     "series form: lookback + horizon exceeds sequences * length rows")

    def series_lookback(self):
        return self.lookback or max(1, min(32, self.length // 2))


def _require(condition, message):
    if not condition:
        raise ConfigError(message)


def generate(spec, indices, steps):
    """(values float32 [count, steps, F], labels or None) of the sequences at `indices`."""
    if spec.kind == "mackey-glass":
        values, labels = generators.mackey_glass(indices, steps, spec.features, spec.seed), None
    elif spec.kind == "lorenz96":
        values, labels = generators.lorenz96(indices, steps, spec.features, spec.seed), None
    else:
        values, labels = generators.sines(indices, steps, spec.features, spec.seed, spec.classes,
                                          continuous=spec.form == "series")
    return values.astype(np.float32), labels


def _create(handle, spec):
    """Creates the datasets and attributes (collectively, identical arguments on every rank)."""
    handle.attrs["hpcrnn_schema"] = np.int64(1)
    handle.attrs["synth"] = f"{spec.kind} seed={spec.seed} sequences={spec.sequences} length={spec.length}"
    n, t, f = spec.sequences, spec.length, spec.features
    if spec.form == "series":
        series = handle.create_dataset("series", (n * t, f), dtype="f4", chunks=(chunk_rows(f * 4, n * t), f))
        for name, value in (("lookback", spec.series_lookback()), ("horizon", spec.horizon), ("stride", 1)):
            series.attrs[name] = np.int64(value)
        series.attrs["target_columns"] = np.array([0], dtype=np.int64)
        return [series]
    inputs = handle.create_dataset("inputs", (n, t, f), dtype="f4", chunks=(chunk_rows(t * f * 4, n), t, f))
    if spec.classes:
        target = handle.create_dataset("labels", (n,), dtype="i8", chunks=(chunk_rows(8, n),))
    else:
        target = handle.create_dataset("targets", (n, spec.horizon), dtype="f4",
                                       chunks=(chunk_rows(spec.horizon * 4, n), spec.horizon))
    return [inputs, target]


def slab_sequences(spec):
    steps = spec.length + (spec.horizon if spec.form == "windows" else 0)
    return max(1, SLAB_BYTES // generators.work_bytes(spec.kind, steps, spec.features))


def _write_slab(spec, datasets, indices, dxpl):
    if spec.form == "series":
        values, _ = generate(spec, indices, spec.length)
        first = int(indices[0]) * spec.length if len(indices) else 0
        write_rows(datasets[0], first, values.reshape(-1, spec.features), dxpl)
        return
    values, labels = generate(spec, indices, spec.length + spec.horizon)
    first = int(indices[0]) if len(indices) else 0
    write_rows(datasets[0], first, values[:, :spec.length], dxpl)
    write_rows(datasets[1], first, labels if spec.classes else values[:, spec.length:, 0], dxpl)


def write(spec, comm):
    """Writes spec.out; every rank generates and writes its block of sequences slab by slab."""
    spec.validate()
    size, rank = comm.size, comm.rank
    if size > 1 and not mpio_available(comm):    # h5py without MPI: rank 0 writes everything
        message = attempt(spec.out, write, spec, mpi.self_comm())[1] if rank == 0 else None
        mpi.agree(comm, message, DataError)
        return os.path.abspath(spec.out)
    count, start = blockdist(spec.sequences, size, rank)
    most, _ = blockdist(spec.sequences, size, 0)
    per_slab = slab_sequences(spec)
    message = None
    try:
        handle, dup = open_file(spec.out, comm, "w")
    except OSError as error:
        handle, message = None, f"{spec.out}: cannot be created ({error})"
    mpi.agree(comm, message, DataError)
    dxpl = transfer_list(dup is not None)
    try:
        datasets = _create(handle, spec)
        for first in range(0, most, per_slab):
            indices = np.arange(start + min(first, count), start + min(first + per_slab, count))
            _write_slab(spec, datasets, indices, dxpl)
    finally:
        handle.close()
        if dup is not None:
            dup.Free()
    return os.path.abspath(spec.out)
