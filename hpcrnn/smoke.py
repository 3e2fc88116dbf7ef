"""2-rank smoke test of the stack: Allreduce, then a collective MPI-IO write and read with h5py."""
import os
import sys
import tempfile

import numpy as np


def main():
    import h5py
    from hpcrnn.comm import allreduce_sum, library_version, world
    comm = world()
    rank, size = comm.rank, comm.size
    if size < 2:
        sys.exit(f"smoke: expected at least 2 ranks, got {size} (the launcher does not match mpi4py's MPI)")
    buf = np.full(1000, rank + 1.0)
    allreduce_sum(comm, buf)
    assert buf[0] == size * (size + 1) / 2, "Allreduce gave a wrong sum"
    if not h5py.get_config().mpi:
        sys.exit("smoke: h5py is built without MPI")
    path = comm.bcast(os.path.join(tempfile.mkdtemp(), "smoke.h5") if rank == 0 else None)
    with h5py.File(path, "w", driver="mpio", comm=comm) as f:
        d = f.create_dataset("x", (size, 100), dtype="f4")
        with d.collective:
            d[rank] = np.arange(100, dtype="f4") + rank
    with h5py.File(path, "r", driver="mpio", comm=comm) as f:
        d = f["x"]
        with d.collective:
            row = d[(rank + 1) % size]
    assert row[0] == (rank + 1) % size, "collective mpio read gave wrong data"
    comm.Barrier()
    if rank == 0:
        os.remove(path)
        os.rmdir(os.path.dirname(path))
        print(f"[setup] smoke test passed: {size} ranks, {library_version()}, "
              f"h5py {h5py.__version__} HDF5 {h5py.version.hdf5_version} mpio")


if __name__ == "__main__":
    main()
