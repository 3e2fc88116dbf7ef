"""BatchLoader and in-order iteration without MPI: P ranks are simulated with direct (memory-mapped) and
independent HDF5 reads; every loader test runs with both."""
import os
import subprocess
import sys

import numpy as np
import pytest

import data_fixtures as fixtures
from hpcrnn import comm as mpi
from hpcrnn.data.loader import BatchLoader, iterate_in_order
from hpcrnn.data.splits import split_ranges
from hpcrnn.data.schema import open_dataset

SELF = mpi.self_comm()


class FakeComm:
    """Rank `rank` of `size` for code that only asks for the size and rank (direct and independent reads)."""

    def __init__(self, size, rank):
        self.size, self.rank = size, rank


def dataset(path):
    return open_dataset(path, SELF)


def epoch_batches(info, split, batch, size, rank, epoch=0, **options):
    options.setdefault("buffer_mb", 0.002)
    start_step = options.pop("start_step", 0)
    loader = BatchLoader(info, split, batch, comm=FakeComm(size, rank) if size > 1 else SELF, seed=7, **options)
    try:
        assert loader.reads == options.get("reads", "direct")        # these files allow direct reads
        return loader.steps_per_epoch, fixtures.kept(loader.epoch(epoch, start_step))
    finally:
        loader.close()


@pytest.fixture(params=["direct", "independent"])
def reads(request):
    return request.param


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    return dataset(fixtures.write_windows(str(tmp_path_factory.mktemp("d") / "w.h5"), count=97, chunk=8))


@pytest.mark.parametrize("size", [1, 2, 3])
def test_every_sample_once_per_epoch_and_order_independent_of_ranks(windows, size, reads):
    split = (5, 90)
    steps, serial = epoch_batches(windows, split, 16, 1, 0, reads=reads)
    assert steps == 6
    per_rank = [epoch_batches(windows, split, 16, size, rank, reads=reads)[1] for rank in range(size)]
    for step in range(steps):
        joined = np.concatenate([per_rank[rank][step].indices for rank in range(size)])
        assert np.array_equal(joined, serial[step].indices)             # same global batch, split in rank order
        assert all(per_rank[rank][step].global_count == len(joined) for rank in range(size))
    everything = np.concatenate([b.indices for b in serial])
    assert sorted(everything.tolist()) == list(range(5, 90))


def test_batches_hold_the_right_samples(windows, reads):
    for batch in epoch_batches(windows, (0, 97), 10, 3, 1, reads=reads)[1]:
        assert batch.x.dtype == np.float32 and batch.x.shape[1:] == (4, 3)
        assert np.array_equal(batch.x[:, 0, 0], batch.indices.astype(np.float32))
        assert np.allclose(batch.y, 2 * batch.x[:, -1, :2])
        assert batch.lengths is None and batch.t_io >= 0


def test_epochs_differ_and_prefetch_does_not_change_anything(windows, reads):
    _, first = epoch_batches(windows, (0, 97), 8, 2, 0, epoch=0, prefetch=True, reads=reads)
    _, again = epoch_batches(windows, (0, 97), 8, 2, 0, epoch=0, prefetch=False, reads=reads)
    _, second = epoch_batches(windows, (0, 97), 8, 2, 0, epoch=1, reads=reads)
    assert all(np.array_equal(a.indices, b.indices) and np.array_equal(a.x, b.x) for a, b in zip(first, again))
    assert not all(np.array_equal(a.indices, b.indices) for a, b in zip(first, second))


def test_start_step_resumes_mid_epoch(windows, reads):
    _, full = epoch_batches(windows, (0, 97), 8, 1, 0, reads=reads)
    _, resumed = epoch_batches(windows, (0, 97), 8, 1, 0, start_step=5, reads=reads)
    assert len(resumed) == len(full) - 5
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(full[5:], resumed))


def test_no_shuffle_is_natural_order(windows, reads):
    _, batches = epoch_batches(windows, (0, 97), 10, 1, 0, shuffle=False, reads=reads)
    assert np.concatenate([b.indices for b in batches]).tolist() == list(range(97))


def test_tiny_split_fewer_samples_than_ranks(windows, tmp_path, reads):
    series = dataset(fixtures.write_series(str(tmp_path / "s.h5"), rows=200, lookback=5, horizon=2, stride=3))
    for info, shape in ((windows, (4, 3)), (series, (5, 2))):
        for rank in range(3):
            steps, batches = epoch_batches(info, (10, 12), 16, 3, rank, reads=reads)
            assert steps == 1 and len(batches) == 1 and batches[0].global_count == 2
            assert len(batches[0].x) == (1 if rank < 2 else 0) and batches[0].x.shape[1:] == shape
            assert batches[0].y.shape == (len(batches[0].x), info.output_size)


def test_labels_lengths_and_sequence_targets(tmp_path, reads):
    labels = dataset(fixtures.write_windows(str(tmp_path / "l.h5"), output="labels", lengths=True))
    assert labels.task == "classification" and labels.num_classes == 3 and labels.has_lengths
    for batch in epoch_batches(labels, (0, 50), 7, 2, 1, reads=reads)[1]:
        assert batch.y.dtype == np.int64 and np.array_equal(batch.y, batch.indices % 3)
        assert np.array_equal(batch.lengths, 1 + batch.indices % 4)
    sequence = dataset(fixtures.write_windows(str(tmp_path / "s.h5"), output="sequence"))
    assert sequence.head == "sequence" and sequence.output_size == 2
    batch = epoch_batches(sequence, (0, 50), 7, 1, 0, reads=reads)[1][0]
    assert batch.y.shape == (len(batch.x), 4, 2) and np.allclose(batch.y, 2 * batch.x[:, :, :2])


def test_series_windows_are_cut_on_the_fly(tmp_path, reads):
    info = dataset(fixtures.write_series(str(tmp_path / "s.h5"), rows=200, lookback=5, horizon=2, stride=3))
    assert info.num_samples == (200 - 5 - 2) // 3 + 1 and info.output_size == 2 and info.seq_len == 5
    steps, batches = epoch_batches(info, (0, info.num_samples), 9, 2, 1, reads=reads)
    for batch in batches:
        starts = batch.indices * 3
        assert np.array_equal(batch.x[:, :, 0], starts[:, None] + np.arange(5))
        assert np.allclose(batch.y, starts[:, None] + 5 + np.arange(2) + 0.001)   # column 1, flattened


def test_batches_are_read_into_the_same_buffers_step_after_step(windows, reads):
    loader = BatchLoader(windows, (0, 97), 10, FakeComm(2, 1), seed=0, buffer_mb=0.002, reads=reads)
    try:
        first, *rest = [(b.x, b.y, b.x[:, 0, 0].copy(), b.indices) for b in loader.epoch(0)]
    finally:
        loader.close()
    assert len(rest) == 9
    assert all(np.shares_memory(x, first[0]) and np.shares_memory(y, first[1]) for x, y, _, _ in rest)
    assert all(np.array_equal(column, indices.astype(np.float32)) for _, _, column, indices in [first] + rest)
    in_order = [b.x for b in iterate_in_order(windows, (0, 97), 16, SELF, reads=reads)]
    assert len(in_order) == 7 and all(np.shares_memory(x, in_order[0]) for x in in_order)


def test_in_order_iteration_gives_each_rank_a_block(windows, reads):
    counts = []
    for rank in range(3):
        batches = fixtures.kept(iterate_in_order(windows, (3, 40), 5, comm=FakeComm(3, rank), reads=reads))
        counts.append(len(batches))
        indices = np.concatenate([b.indices for b in batches])
        assert np.array_equal(indices, np.arange(3 + [0, 13, 25][rank], 3 + [13, 25, 37][rank]))
    assert len(set(counts)) == 1


def test_split_ranges_default_gap(tmp_path, windows):
    assert split_ranges(windows, 0.2) == {"train": (0, 78), "val": (78, 97)}
    series = dataset(fixtures.write_series(str(tmp_path / "s.h5"), rows=110, lookback=5, horizon=2))
    assert split_ranges(series, 0.1) == {"train": (0, 104 - 10 - 6), "val": (94, 104)}  # gap = L+H-1 windows
    marked = dataset(fixtures.write_windows(str(tmp_path / "m.h5"), splits={"train": (0, 30), "val": (35, 50)}))
    assert split_ranges(marked, 0.5) == {"train": (0, 30), "val": (35, 50)}


STREAM = """
import sys, numpy as np
from hpcrnn.comm import self_comm
from hpcrnn.data.schema import open_dataset
from hpcrnn.data.loader import BatchLoader
def rss(key):
    return int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith(key))) / 1024
info = open_dataset(sys.argv[1], self_comm(), check_finite=False)
loader = BatchLoader(info, (0, info.num_samples), 64, self_comm(), seed=0, buffer_mb=float(sys.argv[2]),
                     reads=sys.argv[3])
warm = BatchLoader(info, (0, 64), 64, self_comm(), seed=0, buffer_mb=0.1, reads=sys.argv[3])
list(warm.epoch(0))                     # loads the one-off state first (numba kernels, LLVM, HDF5 caches)
warm.close()
open('/proc/self/clear_refs', 'w').write('5')         # resets VmHWM
before = rss('VmRSS:')
seen = sum(len(b.x) for b in loader.epoch(0))
print(loader.reads, seen, rss('VmHWM:') - before)
"""


def test_streaming_ten_buffers_keeps_memory_bounded(tmp_path, reads):
    path = fixtures.write_windows(str(tmp_path / "big.h5"), count=14000, seq_len=50, features=16, chunk=256)
    buffer_mb = 4.0                                   # the file holds ~45 MiB of inputs: > 10x the buffer
    file_mb = os.path.getsize(path) / 2**20
    assert file_mb > 10 * buffer_mb
    result = subprocess.run([sys.executable, "-c", STREAM, path, str(buffer_mb), reads], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    used, seen, growth_mb = result.stdout.split()
    assert used == reads and int(seen) == 14000
    # two read groups of one buffer window each (direct: the mapped pages under them), one batch, and a few
    # MiB of one-off HDF5/h5py/thread state (measured; it does not grow with the file)
    assert float(growth_mb) < min(2 * buffer_mb + 12, 0.5 * file_mb), f"resident memory grew by {growth_mb} MiB"


def test_closing_with_an_epoch_left_suspended_stops_its_thread(windows, reads):
    loader = BatchLoader(windows, (0, 97), 8, SELF, seed=0, buffer_mb=0.001, reads=reads)
    epoch = loader.epoch(0)
    next(epoch)
    assert loader.prefetcher.thread.is_alive()
    loader.close()
    assert not loader.prefetcher.thread.is_alive()
    epoch.close()
