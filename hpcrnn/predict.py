"""`hpcrnn predict`: a checkpoint's predictions on a dataset, each rank writing its own rows of one HDF5 file."""
import os

import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.errors import DataError


def _open_output(path, comm):
    import h5py
    if comm.size > 1 and h5py.get_config().mpi:
        return h5py.File(path, "w", driver="mpio", comm=comm)
    if comm.size > 1:
        raise DataError(f"{path}: writing predictions from {comm.size} ranks needs h5py built with MPI")
    return h5py.File(path, "w")


def run_predict(checkpoint_path, data_path, out_path, comm, batch_size=256):
    """Writes /predictions ([N,O], [N,T,O] or logits [N,C]) for every sample of `data_path`; returns N."""
    from hpcrnn.data.loader import iterate_in_order
    from hpcrnn.data.schema import open_dataset
    from hpcrnn.evaluate import check_compatible, load_model_everywhere
    model, meta, checkpoint_path = load_model_everywhere(checkpoint_path, comm)
    info = open_dataset(data_path, comm=comm)
    check_compatible(model, info)
    if os.path.abspath(out_path) == os.path.abspath(data_path):
        raise DataError(f"{out_path}: --out must differ from --data")
    error = None
    if comm.rank == 0 and not os.path.isdir(os.path.dirname(os.path.abspath(out_path))):
        error = f"{out_path}: directory does not exist"
    error = mpi.agree_error(comm, error)
    if error:
        raise DataError(error)
    n = info.num_samples
    shape = (n, info.seq_len, model.output_size) if model.head == "sequence" else (n, model.output_size)
    with _open_output(out_path, comm) as out:
        out.attrs["hpcrnn_schema"] = 1
        out.attrs["kind"] = "predictions"
        out.attrs["checkpoint"] = os.path.abspath(checkpoint_path)
        out.attrs["data"] = os.path.abspath(data_path)
        out.attrs["loss"] = meta["model"]["loss"]
        rows = max(1, min(n, (1 << 20) // max(1, int(np.prod(shape[1:])) * 4)))
        dset = out.create_dataset("predictions", shape=shape, dtype="f4", chunks=(rows,) + shape[1:])
        for batch in iterate_in_order(info, (0, n), batch_size, comm, dtype=model.dtype):
            if len(batch.indices):
                first = int(batch.indices[0])
                dset[first:first + len(batch.indices)] = model.predict(batch.x, lengths=batch.lengths)
    return n
