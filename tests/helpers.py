"""Test helpers: small schema-v1 files written directly with h5py, the MPI launcher, CLI runs."""
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_windows(path, n=40, seq_len=12, features=3, outputs=2, labels=0, lengths=False, sequence=False, seed=0):
    """A windows-form file with a learnable target (a smooth function of the inputs)."""
    import h5py
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, seq_len, features)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.attrs["hpcrnn_schema"] = 1
        f.create_dataset("inputs", data=x, chunks=(max(1, min(n, 16)), seq_len, features))
        if labels:
            f.create_dataset("labels", data=(x[:, -3:, 0].sum(axis=1) > 0).astype(np.int64) % labels)
        elif sequence:
            f.create_dataset("targets", data=np.tanh(np.cumsum(x[:, :, :outputs], axis=1) * 0.3))
        else:
            f.create_dataset("targets", data=np.tanh(x[:, -4:, :outputs].sum(axis=1) * 0.5))
        if lengths:
            f.create_dataset("lengths", data=rng.integers(seq_len // 2, seq_len + 1, size=n).astype(np.int64))
    return path


def mpiexec():
    """The MPI launcher that jobs/setup.sh recorded (MPICH's hydra here)."""
    recorded = os.path.join(ROOT, ".venv", ".mpiexec")
    if os.path.exists(recorded):
        return open(recorded).read().strip()
    return os.environ.get("HPCRNN_MPIEXEC", "mpiexec")


def run_cli(args, ranks=0, timeout=300, cwd=None, env=None):
    """Runs `python -m hpcrnn ARGS` (under mpiexec -n RANKS when ranks > 0); returns CompletedProcess."""
    command = [sys.executable, "-m", "hpcrnn", *map(str, args)]
    if ranks:
        command = [mpiexec(), "-n", str(ranks), *command]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT, env=full_env)


def digest(path):
    """SHA-256 of a file's datasets (names and contents), independent of how HDF5 laid out the bytes."""
    import hashlib
    import h5py
    sha = hashlib.sha256()
    with h5py.File(path, "r") as handle:
        for name in sorted(handle):
            sha.update(name.encode() + handle[name][()].tobytes())
    return sha.hexdigest()


def on_rank_zero(comm, function, *args, **kwargs):
    """Runs function on rank 0 only (e.g. writing a fixture file) while the others wait; returns its result on
    rank 0, None elsewhere."""
    result = function(*args, **kwargs) if comm.rank == 0 else None
    comm.Barrier()
    return result


def shared_temp_folder(comm, prefix):
    """A pytest fixture body: a temporary folder made by rank 0 and known to every rank, removed at the end."""
    import shutil
    import tempfile
    path = comm.bcast(tempfile.mkdtemp(prefix=prefix) if comm.rank == 0 else None)
    yield path
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)
