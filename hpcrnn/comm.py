"""The only importer of mpi4py: communicators, the fused Allreduce, broadcasts, reductions, agreement on
errors and abort-on-error. Every function takes a real communicator (`self_comm()` when serial), never None."""
import sys
import time

import numpy as np

from hpcrnn.errors import HpcrnnError


ABORT_GRACE_S = 1.0   # lets the launcher forward a rank's last message before MPI_Abort kills the job


def world():
    """Returns MPI.COMM_WORLD (a singleton of size 1 when started without a launcher)."""
    from mpi4py import MPI
    return MPI.COMM_WORLD


def self_comm():
    """MPI.COMM_SELF: the communicator of serial work (a size-1 group)."""
    from mpi4py import MPI
    return MPI.COMM_SELF


def thread_multiple():
    """True when MPI was initialised with MPI_THREAD_MULTIPLE."""
    from mpi4py import MPI
    return MPI.Query_thread() == MPI.THREAD_MULTIPLE


def mpi4py_version():
    import mpi4py
    return mpi4py.__version__


def library_version():
    from mpi4py import MPI
    return " ".join(MPI.Get_library_version().strip().splitlines()[0].split())


def allreduce_sum(comm, buf, timeout_s=0.0):
    """Sums `buf` (C-contiguous, writable) over all ranks in place; returns seconds spent.

    With timeout_s > 0 the reduction is non-blocking and polled (the stall inspector): if it has not
    completed in time, the waiting ranks find out which ranks never arrived, print them, and abort."""
    from mpi4py import MPI
    t0 = time.perf_counter()
    if comm.size == 1:
        return 0.0
    if timeout_s <= 0:
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return time.perf_counter() - t0
    wait(comm, [comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)], timeout_s, "allreduce")
    return time.perf_counter() - t0


def start_allreduce(comm, view):
    """Starts a non-blocking in-place sum of `view` (a contiguous slice) over all ranks; returns the request."""
    from mpi4py import MPI
    return comm.Iallreduce(MPI.IN_PLACE, view, op=MPI.SUM)


def wait(comm, requests, timeout_s, what):
    """Polls `requests` until all are done; with timeout_s > 0, after that long reports the missing ranks
    and aborts the job. Busy-polls (as MPICH's blocking calls do), reading the clock every 64 tests."""
    from mpi4py import MPI
    if timeout_s <= 0:
        MPI.Request.Waitall(requests)
        return
    deadline = time.perf_counter() + timeout_s
    polls = 0
    while not MPI.Request.Testall(requests):
        polls += 1
        if polls % 64 == 0 and time.perf_counter() > deadline:
            stall_abort(comm, what, timeout_s)


_ROLL_CALL_TAG = 7177


def missing_ranks(comm, grace_s=3.0):
    """Ranks that do not answer a roll call within grace_s: each stalled rank tells every other rank it is
    waiting, then listens. Ranks that are alive but elsewhere (dead, stuck in compute) stay silent."""
    from mpi4py import MPI
    here = np.array([comm.rank], dtype=np.int64)
    requests = [comm.Isend(here, dest=r, tag=_ROLL_CALL_TAG) for r in range(comm.size) if r != comm.rank]
    heard, incoming = {comm.rank}, np.empty(1, dtype=np.int64)
    deadline = time.perf_counter() + grace_s
    while time.perf_counter() < deadline and len(heard) < comm.size:
        status = MPI.Status()
        if comm.Iprobe(source=MPI.ANY_SOURCE, tag=_ROLL_CALL_TAG, status=status):
            comm.Recv(incoming, source=status.Get_source(), tag=_ROLL_CALL_TAG)
            heard.add(int(incoming[0]))
        else:
            time.sleep(0.01)
    del requests  # never waited on: the job is about to be aborted
    return sorted(set(range(comm.size)) - heard)


def stall_abort(comm, what, timeout_s):
    """Prints which ranks are missing from a stalled collective and aborts the whole job."""
    missing = missing_ranks(comm)
    sys.stderr.write(f"hpcrnn: stall inspector on rank {comm.rank}: {what} not complete after {timeout_s:g} s; "
                     f"missing rank(s): {missing or 'unknown'}; aborting the job\n")
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_S)
    comm.Abort(3)


def bcast_array(comm, array, root=0):
    """Broadcasts `array` in place from root (buffer call)."""
    if comm.size > 1:
        comm.Bcast(array, root=root)
    return array


def max_value(comm, value):
    """The largest of each rank's `value` (a Python number), on every rank."""
    if comm.size == 1:
        return value
    from mpi4py import MPI
    return comm.allreduce(value, op=MPI.MAX)


def allreduce_min(comm, array):
    """Element-wise minimum of `array` (a numpy array) over all ranks, as a new array on every rank."""
    out = np.array(array, copy=True)
    if comm.size > 1:
        from mpi4py import MPI
        comm.Allreduce(np.ascontiguousarray(array), out, op=MPI.MIN)
    return out


def allgather_array(comm, array):
    """Every rank's 1-D float64 `array` (same length everywhere) stacked as [P, n], on every rank."""
    mine = np.ascontiguousarray(array, dtype=np.float64)
    if comm.size == 1:
        return mine[None, :].copy()
    out = np.empty((comm.size, mine.size), dtype=np.float64)
    comm.Allgather(mine, out)
    return out


def alltoallv_rows(comm, send, send_counts, receive, receive_counts):
    """Alltoallv of rows: the first send_counts[0] rows of `send` go to rank 0, the next send_counts[1] to
    rank 1, ...; `receive` gets receive_counts[p] rows from rank p, in rank order. send and receive are
    C-contiguous arrays of one dtype and row shape (rows = first axis); counts are in rows."""
    from mpi4py import MPI
    row_bytes = send.dtype.itemsize * int(np.prod(send.shape[1:], dtype=np.int64))
    counts = [np.asarray(c, dtype=np.int64) * row_bytes for c in (send_counts, receive_counts)]
    if max(int(c.sum()) for c in counts) >= 2**31:
        raise ValueError("alltoallv_rows: more than 2 GiB to one rank (int counts); use smaller read groups")
    messages = []
    for array, count in zip((send, receive), counts):
        shown = array.reshape(-1).view(np.uint8)
        displacements = np.concatenate([[0], np.cumsum(count)[:-1]])
        messages.append([shown, (count.astype(np.int32), displacements.astype(np.int32)), MPI.BYTE])
    comm.Alltoallv(*messages)


def allgather_object(comm, value):
    """Every rank's small picklable `value`, as a list in rank order."""
    return [value] if comm.size == 1 else comm.allgather(value)


def bcast_object(comm, value, root=0):
    """Broadcasts a small picklable object from root."""
    return value if comm.size == 1 else comm.bcast(value, root=root)


def bcast_arrays(comm, arrays, root=0):
    """Gives every rank root's {name: ndarray}: the layout by a small object broadcast, the contents by buffer
    broadcasts (no 2 GiB pickle limit). Other ranks pass anything (ignored); returns the dict on every rank."""
    if comm.size == 1:
        return arrays
    layout = comm.bcast({k: (v.shape, v.dtype.str) for k, v in arrays.items()} if comm.rank == root else None,
                        root=root)
    if comm.rank != root:
        arrays = {k: np.empty(shape, dtype) for k, (shape, dtype) in layout.items()}
    for key in sorted(layout):
        comm.Bcast(arrays[key], root=root)
    return arrays


def abort(comm, message, code=1):
    """Ends the whole job from one rank: prints `message` and calls MPI_Abort (size > 1) or exits."""
    sys.stderr.write(message.rstrip() + "\n")
    sys.stderr.flush()
    if comm.size > 1:
        time.sleep(ABORT_GRACE_S)
        comm.Abort(code)
    sys.exit(code)


def agree_error(comm, message):
    """Collective: returns the first rank's error message if any rank has one (None otherwise).

    Lets every rank raise the same error together instead of one rank raising while others wait."""
    if comm.size == 1:
        return message
    messages = comm.allgather(message)
    return next((m for m in messages if m), None)


def agree(comm, message, error=HpcrnnError):
    """Collective: every rank raises error(first message found, lowest rank first) when any rank has one.

    Call it at the same point on every rank; `message` is None where that rank found nothing wrong."""
    message = agree_error(comm, message)
    if message:
        raise error(message)


def compute_statistics(slots):
    """(max, rank of the max, median) of the per-rank compute times `slots` (one value per rank, summed
    into the exchange's tail: rank r writes slot r, zeros elsewhere). Ties go to the lowest rank."""
    times = np.asarray(slots, dtype=np.float64)
    slowest = int(np.argmax(times))
    return float(times[slowest]), slowest, float(np.median(times))


class Totals:
    """The reduced tail of the fused buffer: summed loss and sample count, whether any rank saw a non-finite
    loss, whether any rank was asked to stop, whether any rank read a bad batch (`bad`: then every rank
    agrees on the message), and every rank's compute time of the step (`compute`, [P])."""

    def __init__(self, tail):
        self.loss_sum, self.count = float(tail[0]), float(tail[1])
        self.nonfinite, self.stop, self.bad = bool(tail[2] > 0), bool(tail[3] > 0), bool(tail[4] > 0)
        self.compute = np.array(tail[FusedExchange.TAIL:], dtype=np.float64)
        self.compute_max, self.slowest_rank, self.compute_median = compute_statistics(self.compute)


class FusedExchange:
    """One flat buffer [gradients | loss sum | sample count | non-finite flag | stop flag | bad-batch flag |
    compute time of rank 0 .. rank P-1] summed over the ranks in one Allreduce (or, with overlap, one non-blocking reduction
    per layer as BPTT finishes it, top layer first, then the head and the tail). `grad` is the gradient part,
    for the model to add into.

    The last P slots give every rank each rank's compute time with no second collective: rank r writes its
    time into slot r and zeros elsewhere, so the SUM is the vector of times (a SUM cannot give a MAX, but it
    can give all P values, and P floats are nothing beside the gradients).

    Every rank makes the same calls in the same order, also a rank with an empty batch."""

    TAIL = 5      # scalars before the P per-rank slots

    @staticmethod
    def tail_size(ranks):
        """Floats after the gradients at `ranks` ranks."""
        return FusedExchange.TAIL + ranks

    def __init__(self, comm, num_params, dtype, layer_spans, timeout_s, overlap):
        self.comm, self.timeout_s, self.layer_spans = comm, timeout_s, list(layer_spans)
        self.overlap = overlap and comm.size > 1
        self.buffer = np.zeros(num_params + self.tail_size(comm.size),
                               dtype=np.float64 if dtype == np.float64 else dtype)
        self.grad, self.tail = self.buffer[:num_params], self.buffer[num_params:]
        self.posted = []

    def start(self):
        """Zeroes the buffer for a new step."""
        self.buffer[:] = 0
        self.posted = []

    def layer_done(self, layer):
        """BPTT finished `layer`'s gradient: with overlap, start reducing its slice."""
        if self.overlap:
            start, stop = self.layer_spans[layer]
            self.posted.append(start_allreduce(self.comm, self.buffer[start:stop]))

    def finish(self, loss_sum, count, stop_requested, t_compute=0.0, bad_batch=False):
        """Fills the tail (this rank's compute time in its own slot) and completes the reduction (the stall
        inspector watches it); returns Totals."""
        self.tail[:self.TAIL] = (loss_sum, count, 0.0 if np.isfinite(loss_sum) else 1.0,
                                 1.0 if stop_requested else 0.0, 1.0 if bad_batch else 0.0)
        self.tail[self.TAIL + self.comm.rank] = t_compute
        if not self.overlap:
            allreduce_sum(self.comm, self.buffer, self.timeout_s)
            return Totals(self.tail)
        for layer in range(len(self.layer_spans) - 1 - len(self.posted), -1, -1):
            self.layer_done(layer)          # layers BPTT never reported (an empty batch), in the same order
        self.posted.append(start_allreduce(self.comm, self.buffer[self.layer_spans[-1][1]:]))
        wait(self.comm, self.posted, self.timeout_s, "gradient allreduce")
        return Totals(self.tail)


_CLOSE_AT_EXIT = None      # weakref.WeakSet of objects to close before MPI_Finalize; made on first use


def close_at_exit(resource):
    """Calls resource.close() (idempotent) at interpreter exit if the resource is still alive then. Python's
    atexit hooks run before MPI_Finalize (mpi4py finalizes from Py_AtExit), and an mpio file must be closed
    while MPI is up. The resource is held weakly (never kept alive), and one hook serves the whole process."""
    global _CLOSE_AT_EXIT
    if _CLOSE_AT_EXIT is None:
        import atexit
        import weakref
        _CLOSE_AT_EXIT = weakref.WeakSet()
        atexit.register(_close_all)
    _CLOSE_AT_EXIT.add(resource)


def _close_all():
    for resource in list(_CLOSE_AT_EXIT):
        resource.close()
