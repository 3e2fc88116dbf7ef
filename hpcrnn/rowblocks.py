"""Hybrid ranks x threads: a rank with C cores runs its batch as C blocks of rows on C threads at once.

Every kernel already works on a batch of rows and releases the GIL, so C threads can each run the whole
forward + BPTT of the stack (input GEMM, per-step recurrent GEMM, gate math, head, loss) on B/C rows with a
workspace of their own, each calling single-threaded BLAS. Compared with C BLAS threads inside each small
per-step GEMM, this parallelises the gate and head work too and synchronises once per batch instead of twice
per time step (measured in docs/throughput.md). Thread 0 is the calling thread; the others come from a pool
that lives as long as the RowThreads object. Results equal one thread's to float summation order: the weight
gradients of the blocks are summed at the end."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MIN_ROWS_PER_BLOCK = 4   # below this a block's GEMMs are too thin for a thread to pay off


def row_blocks(batch, threads, min_rows=MIN_ROWS_PER_BLOCK):
    """[(start, stop)] covering range(batch) in at most `threads` contiguous blocks of >= min_rows rows
    (sizes differing by at most one); one block when the batch is too small to split."""
    count = max(1, min(int(threads), batch // max(1, min_rows)))
    base, extra = divmod(batch, count)
    blocks, start = [], 0
    for index in range(count):
        stop = start + base + (1 if index < extra else 0)
        blocks.append((start, stop))
        start = stop
    return blocks


def slice_state(state, start, stop):
    """Rows [start, stop) of a per-layer state list (arrays [B, H] or (h, c) pairs); None stays None."""
    if state is None:
        return None
    return [tuple(part[start:stop] for part in layer) if isinstance(layer, tuple) else layer[start:stop]
            for layer in state]


def join_states(states):
    """The per-layer states of consecutive row blocks, concatenated along the rows."""
    joined = []
    for layer in zip(*states):
        if isinstance(layer[0], tuple):
            joined.append(tuple(np.concatenate(parts) for parts in zip(*layer)))
        else:
            joined.append(np.concatenate(layer))
    return joined


class RowThreads:
    """C threads (the calling one + a pool of C - 1) that run a function on row blocks of a batch."""

    def __init__(self, threads=1):
        self.threads = int(threads)
        if self.threads < 1:
            raise ValueError(f"threads: must be >= 1, got {threads!r}")
        self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="hpcrnn-rows") \
            if self.threads > 1 else None

    def blocks(self, batch):
        return row_blocks(batch, self.threads)

    def map(self, function, blocks):
        """[function(index, start, stop) for each block], blocks 1.. on the pool while block 0 runs here.
        The first exception (in block order) is raised after every block has finished."""
        if len(blocks) == 1:
            return [function(0, *blocks[0])]
        futures = [self._pool.submit(function, index, start, stop)
                   for index, (start, stop) in enumerate(blocks) if index > 0]
        results, errors = [None] * len(blocks), []
        try:
            results[0] = function(0, *blocks[0])
        except BaseException as error:    # noqa: B902 - re-raised below, after the other blocks finished
            errors.append(error)
        for index, future in enumerate(futures, start=1):
            try:
                results[index] = future.result()
            except BaseException as error:
                errors.append(error)
        if errors:
            raise errors[0]
        return results

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
