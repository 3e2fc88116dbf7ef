"""Times the in-place Allreduce(SUM) of a few message sizes on the ranks it runs on (the sweep launches it at
each rank count); rank 0 writes the medians to a JSON file for the latency-bandwidth fit."""
import numpy as np

from hpcrnn import comm as mpi

DEFAULT_SIZES = (4 * 1024, 64 * 1024, 1024 * 1024, 4 * 1024 * 1024, 16 * 1024 * 1024)


def time_size(comm, nbytes, repeats, warmup=3):
    """Median seconds of one Allreduce of `nbytes` (float32), the slowest rank's median."""
    buffer = np.ones(max(1, nbytes // 4), dtype=np.float32)
    for _ in range(warmup):
        mpi.allreduce_sum(comm, buffer)
    times = []
    for _ in range(repeats):
        comm.Barrier()
        times.append(mpi.allreduce_sum(comm, buffer))
    return float(mpi.max_value(comm, float(np.median(times))))


def repeats_for(nbytes, budget_bytes=256 * 1024 * 1024, most=50, least=5):
    """Fewer repeats for large messages so one size costs about the same."""
    return int(min(most, max(least, budget_bytes // max(nbytes, 1))))


def measure(comm, sizes=DEFAULT_SIZES):
    """[{"ranks", "bytes", "seconds", "repeats"}] for each size (empty on one rank: nothing to reduce)."""
    if comm.size == 1:
        return []
    rows = []
    for nbytes in sizes:
        repeats = repeats_for(nbytes)
        rows.append({"ranks": comm.size, "bytes": int(nbytes // 4 * 4), "seconds": time_size(comm, nbytes, repeats),
                     "repeats": repeats})
    return rows


def run_allreduce(args, comm):
    """`hpcrnn scaling allreduce --out FILE [--sizes B,B,...]` (under mpiexec/srun)."""
    from hpcrnn.log import write_json
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else DEFAULT_SIZES
    rows = measure(comm, sizes)
    if comm.rank == 0:
        write_json(args.out, {"ranks": comm.size, "measurements": rows})
        for row in rows:
            print(f"allreduce {row['ranks']} ranks {row['bytes']:>10d} B  {row['seconds'] * 1e3:9.4f} ms", flush=True)
    return 0
