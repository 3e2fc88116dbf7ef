"""The only importer of mpi4py: the world, the fused Allreduce, broadcast, agreement and abort-on-error."""
import sys
import time

import numpy as np


def world():
    """Returns MPI.COMM_WORLD (a singleton of size 1 when started without a launcher)."""
    from mpi4py import MPI
    return MPI.COMM_WORLD


def library_version():
    from mpi4py import MPI
    return " ".join(MPI.Get_library_version().strip().splitlines()[0].split())


def allreduce_sum(comm, buf, timeout_s=0.0):
    """Sums `buf` (C-contiguous, writable) over all ranks in place; returns seconds spent.

    With timeout_s > 0 the reduction is non-blocking and polled, so a rank that never arrives
    (dead, stuck) makes the others report it and abort instead of hanging forever."""
    from mpi4py import MPI
    t0 = time.perf_counter()
    if comm.size == 1:
        return 0.0
    if timeout_s <= 0:
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return time.perf_counter() - t0
    request = comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    deadline = t0 + timeout_s
    sleep = 0.0
    while not request.Test():
        if time.perf_counter() > deadline:
            stall_abort(comm, f"allreduce did not complete within {timeout_s:g} s")
        time.sleep(sleep)
        sleep = min(1e-3, sleep + 1e-5)
    return time.perf_counter() - t0


def stall_abort(comm, what):
    """Prints which rank is stalled and aborts the whole job."""
    sys.stderr.write(f"hpcrnn: rank {comm.rank}/{comm.size}: {what}; "
                     "some rank is missing (dead or stuck); aborting the job\n")
    sys.stderr.flush()
    comm.Abort(3)


def bcast_array(comm, array, root=0):
    """Broadcasts `array` in place from root (buffer call)."""
    if comm.size > 1:
        comm.Bcast(array, root=root)
    return array


def any_rank(comm, flag):
    """True on every rank when `flag` is true on at least one rank."""
    if comm.size == 1:
        return bool(flag)
    from mpi4py import MPI
    return bool(comm.allreduce(int(bool(flag)), op=MPI.MAX))


def max_value(comm, value):
    if comm.size == 1:
        return value
    from mpi4py import MPI
    return comm.allreduce(value, op=MPI.MAX)


def abort(comm, message, code=1):
    """Ends the whole job from one rank: prints `message` and calls MPI_Abort (size > 1) or exits."""
    sys.stderr.write(message.rstrip() + "\n")
    sys.stderr.flush()
    if comm is not None and comm.size > 1:
        comm.Abort(code)
    sys.exit(code)


def agree_error(comm, message):
    """Collective: returns the first rank's error message if any rank has one (None otherwise).

    Lets every rank raise the same error together instead of one rank raising while others wait."""
    if comm is None or comm.size == 1:
        return message
    messages = comm.allgather(message)
    return next((m for m in messages if m), None)


def fused_buffer(num_params, extras, dtype):
    """One flat buffer: [gradients | extras]; the gradient part is a view, so one Allreduce moves all."""
    buf = np.zeros(num_params + extras, dtype=np.float64 if dtype == np.float64 else dtype)
    return buf, buf[:num_params], buf[num_params:]
