"""`hpcrnn synth`: writes a synthetic schema v1 file of any size, in slabs of bounded memory, in parallel with
collective mpio writes under MPI; the dataset contents are identical for a seed whatever the number of ranks."""
import os
from dataclasses import dataclass

import h5py
import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.data import checksum, generators, stamp
from hpcrnn.data.parallel import attempt, chunk_rows, mpio_available, open_file, transfer_list, write_rows
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


def block_sequences(spec):
    """Sequences per checksum block: whole sequences of about checksum.BLOCK_BYTES of the first data set."""
    if spec.form == "series":
        return max(1, checksum.default_block_rows(spec.features * 4) // spec.length)
    return checksum.default_block_rows(spec.length * spec.features * 4)


class Written:
    """What a rank learns of the values it writes: block digests per data set, all finite, largest label."""

    def __init__(self, names, block_rows):
        self.digests, self.block_rows = {name: [] for name in names}, block_rows
        self.finite, self.label_max = True, -1

    def add(self, name, rows):
        if rows.dtype.kind == "f" and len(rows):
            self.finite = self.finite and bool(np.isfinite(rows.min()) and np.isfinite(rows.max()))
        elif name == "labels" and len(rows):
            self.label_max = max(self.label_max, int(rows.max()))
        self.digests[name] += checksum.block_digests(rows, self.block_rows)


def _write_slab(spec, datasets, indices, dxpl, written):
    first = int(indices[0]) if len(indices) else 0
    if spec.form == "series":
        values, _ = generate(spec, indices, spec.length)
        rows = values.reshape(-1, spec.features)
        write_rows(datasets[0], first * spec.length, rows, dxpl)
        written.add("series", rows)
        return
    values, labels = generate(spec, indices, spec.length + spec.horizon)
    inputs = np.ascontiguousarray(values[:, :spec.length])
    target = labels.astype(np.int64) if spec.classes else np.ascontiguousarray(values[:, spec.length:, 0])
    write_rows(datasets[0], first, inputs, dxpl)
    write_rows(datasets[1], first, target, dxpl)
    written.add("inputs", inputs)
    written.add(datasets[1].name.lstrip("/"), target)


def write(spec, comm):
    """Writes spec.out; every rank generates and writes its run of whole checksum blocks, slab by slab, and
    hashes what it writes; then rank 0 stamps the file (values checked, checksums)."""
    spec.validate()
    size, rank = comm.size, comm.rank
    if size > 1 and not mpio_available(comm):    # h5py without MPI: rank 0 writes everything
        message = attempt(spec.out, write, spec, mpi.self_comm())[1] if rank == 0 else None
        mpi.agree(comm, message, DataError)
        return os.path.abspath(spec.out)
    unit = block_sequences(spec)
    start, stop = checksum.rank_rows(spec.sequences, unit, size, rank)
    most = checksum.rank_rows(spec.sequences, unit, size, 0)[1]       # rank 0 has the most: as many slabs
    per_slab = max(unit, slab_sequences(spec) // unit * unit)
    message = None
    try:
        handle, dup = open_file(spec.out, comm, "w")
    except OSError as error:
        handle, message = None, f"{spec.out}: cannot be created ({error})"
    mpi.agree(comm, message, DataError)
    dxpl = transfer_list(dup is not None)
    try:
        datasets = _create(handle, spec)
        written = Written([d.name.lstrip("/") for d in datasets], unit * (spec.length if spec.form == "series" else 1))
        for first in range(0, most, per_slab):
            indices = np.arange(min(start + first, stop), min(start + first + per_slab, stop))
            _write_slab(spec, datasets, indices, dxpl, written)
    finally:
        handle.close()
        if dup is not None:
            dup.Free()
    _stamp(spec, comm, written)
    return os.path.abspath(spec.out)


def _stamp(spec, comm, written):
    """Rank 0 stamps the closed file with what every rank wrote (no stamp if a value was not finite)."""
    parts = mpi.allgather_object(comm, (written.digests, written.finite, written.label_max))
    if not all(finite for _, finite, _ in parts):
        return
    digests = checksum.merged([part[0] for part in parts])
    message = None
    if comm.rank == 0:
        try:
            with h5py.File(spec.out, "r") as handle:
                layout, checks = stamp.layout_of(handle), stamp.checks_for(handle)
            stamp.write(spec.out, stamp.Stamp(checks, layout, max(part[2] for part in parts), written.block_rows,
                                              digests, stamp.made_by("synth")))
        except OSError as error:
            message = f"{spec.out}: cannot be stamped ({error})"
    mpi.agree(comm, message, DataError)
