"""Checkpoints: the file layout (parameters, optimizer state, position, config, checksum) in both directions,
atomic writes, the newest valid one, retention, sharing a loaded one with every rank, and what a preemption
ends with (Preempted, PREEMPTED_EXIT; the signal handler is process.StopSignal)."""
import glob
import hashlib
import json
import os
import re
import stat

import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.errors import HpcrnnError

FORMAT = 1
PREEMPTED_EXIT = 75          # the exit code after a preemption signal and its checkpoint: requeue me
BEST_NAME = "best.h5"        # the best monitored checkpoint; not a step-*.h5 name, so retention never sees it
_NAME = re.compile(r"step-(\d{9})\.h5$")
_PARAMS, _OPTIMIZER = "params/", "optimizer/"


class CheckpointError(HpcrnnError):
    """A checkpoint that is missing, truncated or fails its checksum."""


class Preempted(Exception):
    """Training stopped at a step boundary after a preemption signal; a checkpoint was written."""

    def __init__(self, step, path):
        super().__init__(f"preempted at step {step}; checkpoint {path}")
        self.step, self.path = step, path


def pack(params, optimizer_state):
    """The arrays of a training checkpoint from {name: parameter} and {name: optimizer array}."""
    return {**{_PARAMS + k: v for k, v in params.items()}, **{_OPTIMIZER + k: v for k, v in optimizer_state.items()}}


def unpack(arrays):
    """Inverse of pack: ({name: parameter}, {name: optimizer array})."""
    params = {k[len(_PARAMS):]: v for k, v in arrays.items() if k.startswith(_PARAMS)}
    optimizer_state = {k[len(_OPTIMIZER):]: v for k, v in arrays.items() if k.startswith(_OPTIMIZER)}
    return params, optimizer_state


def _digest(arrays, meta):
    h = hashlib.sha256()
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str(value.dtype).encode() + str(value.shape).encode())
        h.update(value.tobytes())
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def save(path, arrays, meta):
    """Writes `arrays` (name -> ndarray, '/'-separated names allowed) and `meta` (JSON-able) atomically:
    the HDF5 image is built in memory, written to a temporary file, fsynced and renamed. Any failure
    (a full disk, say) raises OSError and leaves an earlier file at `path` untouched."""
    image = _image(arrays, meta)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as handle:
            handle.write(image)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
        _VERIFIED[_version(path)] = True      # written whole and checksummed here: prune need not read it back
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _image(arrays, meta):
    import io
    import h5py
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        f.attrs["hpcrnn_checkpoint"] = FORMAT
        f.attrs["meta"] = json.dumps(meta, sort_keys=True)
        f.attrs["sha256"] = _digest(arrays, meta)
    return buffer.getvalue()


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path):
    """Returns (arrays, meta) after verifying the checksum; raises CheckpointError naming the file."""
    import h5py
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("hpcrnn_checkpoint") != FORMAT:
                raise CheckpointError(f"{path}: not an hpcrnn checkpoint (attribute hpcrnn_checkpoint missing)")
            arrays = {}
            f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
            meta = json.loads(f.attrs["meta"])
            expected = f.attrs["sha256"]
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if _digest(arrays, meta) != expected:
        raise CheckpointError(f"{path}: checksum mismatch (damaged checkpoint)")
    return arrays, meta


def path_for(directory, step):
    return os.path.join(directory, f"step-{step:09d}.h5")


def best_path(directory):
    return os.path.join(directory, BEST_NAME)


def list_checkpoints(directory):
    """Step checkpoint paths in `directory` (step-NNNNNNNNN.h5; never best.h5), newest (highest step) first."""
    found = [p for p in glob.glob(os.path.join(directory, "step-*.h5")) if _NAME.search(p)]
    return sorted(found, key=lambda p: int(_NAME.search(p).group(1)), reverse=True)


_VERIFIED = {}   # (path, mtime_ns, size) -> whether that version of the file verified


def _version(path, info=None):
    """The key of one version of a file: (absolute path, mtime in ns, size)."""
    info = info or os.stat(path)
    return os.path.abspath(path), info.st_mtime_ns, info.st_size


def verifies(path):
    """True when `path` is a regular file holding a complete hpcrnn checkpoint whose checksum matches
    (remembered per version of the file, so each is read once)."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode):
        return False
    key = _version(path, info)
    if key not in _VERIFIED:
        try:
            load(path)
            _VERIFIED[key] = True
        except CheckpointError:
            _VERIFIED[key] = False
    return _VERIFIED[key]


def prune(directory, keep):
    """Deletes the checkpoints beyond the newest `keep` ones that verify. A file named like a checkpoint that
    does not verify (damaged, or not written by hpcrnn) is never deleted and never counts as one."""
    valid = [path for path in list_checkpoints(directory) if verifies(path)]
    for old in valid[max(keep, 1):]:
        os.remove(old)


def load_latest(directory, warn=print):
    """Newest valid checkpoint in `directory` as (path, arrays, meta), falling back past damaged ones
    with a warning; None when there is none."""
    for path in list_checkpoints(directory):
        try:
            arrays, meta = load(path)
            return path, arrays, meta
        except CheckpointError as exc:
            warn(f"warning: skipping damaged checkpoint: {exc}")
    return None


def load_shared(comm, find):
    """Runs `find()` -> (path, arrays, meta) or None on rank 0 and gives every rank the result: metadata by
    a small object broadcast, arrays by buffer broadcasts (no 2 GiB pickle limit for large models). A
    CheckpointError on rank 0 is raised on every rank."""
    found, error = None, None
    if comm.rank == 0:
        try:
            found = find()
        except CheckpointError as exc:
            error = str(exc)
    mpi.agree(comm, error, CheckpointError)
    head = mpi.bcast_object(comm, None if found is None else (found[0], found[2]))
    if head is None:
        return None
    arrays = mpi.bcast_arrays(comm, found[1] if comm.rank == 0 else None)
    return head[0], arrays, head[1]
