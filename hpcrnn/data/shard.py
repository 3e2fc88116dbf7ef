"""Pure index arithmetic of sharding: block distribution, the epoch order of samples, and range merging.

Nothing here reads files or knows MPI; every function is a deterministic function of its arguments."""
import numpy as np


def blockdist(n, size, rank):
    """Returns (count, start) of rank's contiguous block when n items are split over size ranks.

    The first n % size ranks get one item more; counts differ by at most one."""
    base, extra = divmod(int(n), int(size))
    count = base + (1 if rank < extra else 0)
    start = rank * base + min(rank, extra)
    return count, start


def block_bounds(split, block_size):
    """Boundaries of the blocks of samples of split=(start, stop), aligned to multiples of block_size
    (the file's chunks): returns an int64 array [b0=start, b1, ..., stop]."""
    start, stop = int(split[0]), int(split[1])
    if stop <= start:
        return np.array([start], dtype=np.int64)
    first = (start // block_size + 1) * block_size
    inner = np.arange(first, stop, block_size, dtype=np.int64)
    return np.concatenate([[start], inner, [stop]]).astype(np.int64)


def epoch_order(split, seed, epoch, block_size, window_samples, shuffle=True, batch=0):
    """Global sample indices of one epoch, in the order they are consumed (int64 array, one per sample of split:
    a (start, stop) pair or a hpcrnn.data.splits.Split).

    Chunk-aligned blocks of samples are permuted, consecutive permuted blocks are grouped into windows of
    about window_samples (the read buffer), and the samples inside each window are shuffled, all with
    np.random.default_rng([seed, epoch]). With batch > 0, each consecutive global batch of that many
    samples is then put in ascending order: which samples form a batch is unchanged (their order inside
    it does not matter to a summed loss), and rank r's block of every batch (rank_positions) becomes the
    r-th part of it by position in the file, so each rank touches about 1/P of a window's pages and
    chunks. The order depends only on (split, seed, epoch, block_size, window_samples, batch), never on
    the number of ranks. shuffle=False gives the natural order. The shuffle works on positions in the split
    (mapped to sample indices at the end), so a range and the same samples as an index set give one order."""
    from hpcrnn.data.splits import as_split
    split = as_split(split)
    if not shuffle or len(split) == 0:
        return split.array().copy()
    if batch > 0:
        return np.concatenate(list(epoch_batches(split, seed, epoch, block_size, window_samples, batch)))
    return split.take(np.concatenate(list(_windows(split, seed, epoch, block_size, window_samples))))


def _windows(split, seed, epoch, block_size, window_samples):
    """The shuffled windows of positions of epoch_order, one at a time (one random stream, in order)."""
    rng = np.random.default_rng([int(seed), int(epoch)])
    bounds = split.block_bounds(block_size)
    permuted = rng.permutation(len(bounds) - 1)
    blocks_per_window = max(1, int(window_samples) // int(block_size))
    for first in range(0, len(permuted), blocks_per_window):
        window = np.concatenate([np.arange(bounds[b], bounds[b + 1], dtype=np.int64)
                                 for b in permuted[first:first + blocks_per_window]])
        rng.shuffle(window)
        yield window


def epoch_batches(split, seed, epoch, block_size, window_samples, batch, shuffle=True):
    """Yields the global batches of epoch_order(..., batch=batch) one by one (sample indices, ascending within
    each batch), worked out a window at a time: starting an epoch costs the same for any size of split
    (the whole order of a 7.5 M-sample split took 0.14 s, of a 1 TiB one it would take seconds)."""
    from hpcrnn.data.splits import as_split
    split, batch = as_split(split), int(batch)
    if len(split) == 0:
        return
    if not shuffle:
        for first in range(0, len(split), batch):
            yield split.take(np.arange(first, min(first + batch, len(split)), dtype=np.int64))
        return
    pending = np.zeros(0, dtype=np.int64)
    for window in _windows(split, seed, epoch, block_size, window_samples):
        pending = np.concatenate([pending, window])
        full = len(pending) // batch * batch
        for first in range(0, full, batch):
            yield split.take(np.sort(pending[first:first + batch]))
        pending = pending[full:]
    if len(pending):
        yield split.take(np.sort(pending))


def rank_positions(batch_len, size, rank):
    """Positions [a, b) inside a global batch of batch_len samples that rank takes."""
    count, start = blockdist(batch_len, size, rank)
    return start, start + count


def merge_ranges(starts, stops):
    """Merges the sorted half-open ranges [starts[i], stops[i]) into disjoint ones.

    starts must be sorted ascending; overlapping or touching ranges are joined. Returns (starts, stops)."""
    starts = np.asarray(starts, dtype=np.int64)
    stops = np.asarray(stops, dtype=np.int64)
    if len(starts) == 0:
        return starts, stops
    reach = np.maximum.accumulate(stops)
    new = np.ones(len(starts), dtype=bool)
    new[1:] = starts[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(starts)) - 1
    return starts[first], reach[last]


def runs_of(sorted_indices):
    """Contiguous runs of a sorted array of distinct integers: returns (starts, stops)."""
    indices = np.asarray(sorted_indices, dtype=np.int64)
    return merge_ranges(indices, indices + 1)


def coalesce(starts, stops, budget, max_gap):
    """Data sieving: joins sorted disjoint ranges across their smallest gaps (each <= max_gap) while the
    rows added stay <= budget, trading a bounded over-read for fewer ranges. Returns (starts, stops)."""
    starts = np.asarray(starts, dtype=np.int64)
    stops = np.asarray(stops, dtype=np.int64)
    if len(starts) < 2 or budget <= 0 or max_gap <= 0:
        return starts, stops
    gaps = starts[1:] - stops[:-1]
    by_size = np.argsort(gaps, kind="stable")
    sizes = gaps[by_size]
    allowed = min(int(np.searchsorted(np.cumsum(sizes), budget, side="right")),
                  int(np.searchsorted(sizes, max_gap, side="right")))
    joined = np.zeros(len(gaps), dtype=bool)
    joined[by_size[:allowed]] = True
    keep_start = np.concatenate([[True], ~joined])
    keep_stop = np.concatenate([~joined, [True]])
    return starts[keep_start], stops[keep_stop]
