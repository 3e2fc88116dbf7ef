"""`hpcrnn predict`: a checkpoint's predictions on a dataset, each rank writing its own rows of one HDF5 file,
written under a temporary name and renamed into place only when complete."""
import os

import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.errors import DataError


def same_file(a, b):
    """True when paths a and b name the same existing file (same device and inode: links and symlinks too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out_path, protected):
    """A one-line message when out_path cannot be written without harm, else None. protected: {what: path}."""
    for what, path in protected.items():
        if same_file(out_path, path):
            return f"{out_path}: --out is the same file as the {what} ({path}); choose another output path"
    if os.path.isdir(out_path):
        return f"{out_path}: --out is a directory"
    kind = hpcrnn_file_kind(out_path)
    if kind:
        return f"{out_path}: --out would overwrite an hpcrnn {kind}; choose another output path"
    if not os.path.isdir(os.path.dirname(os.path.abspath(out_path))):
        return f"{out_path}: directory does not exist"
    return None


def hpcrnn_file_kind(path):
    """"checkpoint" or "data set" for an existing hpcrnn file other than a predictions file, else None."""
    import h5py
    try:
        with h5py.File(path, "r") as handle:
            if "hpcrnn_checkpoint" in handle.attrs:
                return "checkpoint"
            if "hpcrnn_schema" in handle.attrs and handle.attrs.get("kind") != "predictions":
                return "data set"
    except (OSError, ValueError):
        pass
    return None


def _open_output(path, comm):
    import h5py
    if comm.size > 1 and h5py.get_config().mpi:
        return h5py.File(path, "w", driver="mpio", comm=comm)
    if comm.size > 1:
        raise DataError(f"{path}: writing predictions from {comm.size} ranks needs h5py built with MPI")
    return h5py.File(path, "w")


def run_predict(checkpoint_path, data_path, out_path, comm, batch_size=256, which=None):
    """Writes /predictions ([N,O], [N,T,O] or logits [N,C]) for every sample of `data_path`; returns N.
    A run directory's best.h5 is used when it has one (which = "best", the default), else its newest."""
    from hpcrnn.data.schema import open_dataset
    from hpcrnn.evaluate import check_batch_size, check_compatible, load_model_everywhere
    check_batch_size(batch_size)
    model, meta, checkpoint_path = load_model_everywhere(checkpoint_path, comm, which)
    info = open_dataset(data_path, comm=comm)
    check_compatible(model, info)
    error = None
    if comm.rank == 0:
        error = check_output(out_path, {"input data (--data)": data_path, "checkpoint": checkpoint_path})
    mpi.agree(comm, error, DataError)
    tmp = mpi.bcast_object(comm, f"{out_path}.tmp-{os.getpid()}")
    try:
        write_predictions(model, meta, info, tmp, comm, batch_size, checkpoint_path)
    except BaseException:
        if comm.rank == 0 and os.path.exists(tmp):
            os.remove(tmp)
        raise
    error = None
    if comm.rank == 0:
        try:
            os.replace(tmp, out_path)
        except OSError as exc:
            os.remove(tmp)
            error = f"{out_path}: cannot be written ({exc.strerror or exc})"
    mpi.agree(comm, error, DataError)
    return info.num_samples


def write_predictions(model, meta, info, path, comm, batch_size, checkpoint_path):
    """Creates `path` collectively and fills it; rank r writes the rows of its contiguous block."""
    from hpcrnn.data.loader import iterate_in_order
    n = info.num_samples
    shape = (n, info.seq_len, model.output_size) if model.head == "sequence" else (n, model.output_size)
    with _open_output(path, comm) as out:
        out.attrs["hpcrnn_schema"] = 1
        out.attrs["kind"] = "predictions"
        out.attrs["checkpoint"] = os.path.abspath(checkpoint_path)
        out.attrs["data"] = os.path.abspath(info.path)
        out.attrs["loss"] = meta["model"]["loss"]
        rows = max(1, min(n, (1 << 20) // max(1, int(np.prod(shape[1:])) * 4)))
        dset = out.create_dataset("predictions", shape=shape, dtype="f4", chunks=(rows,) + shape[1:])
        problem = None                  # the first bad batch's message; later batches are read, not predicted
        for batch in iterate_in_order(info, (0, n), batch_size, comm, dtype=model.dtype):
            problem = problem or batch.problem
            if len(batch.indices):
                first = int(batch.indices[0])
                if problem is None:
                    dset[first:first + len(batch.indices)] = model.predict(batch.x, lengths=batch.lengths)
        mpi.agree(comm, problem, DataError)
