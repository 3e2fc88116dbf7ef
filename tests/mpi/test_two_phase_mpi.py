"""Two-phase reads (data.reads = "two-phase") under mpiexec -n 2 and -n 3: every rank's batches are those of
direct reads, bit for bit, over epochs with shuffling, uneven shares, labels and lengths, and the series form;
a failed read on one rank makes every rank raise the same error instead of hanging in the exchange."""
import os

import numpy as np
import pytest
from mpi4py import MPI

import data_fixtures as fixtures
from hpcrnn.data.loader import BatchLoader
from hpcrnn.data.schema import open_dataset
from hpcrnn.data.two_phase import Group, TwoPhaseReader, plan
from hpcrnn.errors import DataError
from helpers import on_rank_zero, shared_temp_folder

COMM = MPI.COMM_WORLD


@pytest.fixture(scope="module")
def folder():
    yield from shared_temp_folder(COMM, "hpcrnn-two-phase-")


@pytest.fixture(scope="module")
def windows(folder):
    path = os.path.join(folder, "w.h5")
    on_rank_zero(COMM, fixtures.write_windows, path, count=203, chunk=8, output="labels", lengths=True)
    return open_dataset(path, comm=COMM)


def epochs(info, split, batch, reads, epochs=(0, 1), **options):
    loader = BatchLoader(info, split, batch, comm=COMM, seed=11, buffer_mb=0.002, reads=reads, **options)
    try:
        assert loader.reads == reads
        return [fixtures.kept(loader.epoch(epoch)) for epoch in epochs]
    finally:
        loader.close()


def assert_same(got, expected):
    assert [len(e) for e in got] == [len(e) for e in expected]
    for epoch_got, epoch_expected in zip(got, expected):
        for a, b in zip(epoch_got, epoch_expected):
            assert np.array_equal(a.indices, b.indices) and a.global_count == b.global_count
            assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
            assert (a.lengths is None and b.lengths is None) or np.array_equal(a.lengths, b.lengths)


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("split,batch", [((3, 197), 10), ((0, 203), 7), ((50, 61), 16)])
def test_batches_are_those_of_direct_reads(windows, split, batch, prefetch):
    two_phase = epochs(windows, split, batch, "two-phase", prefetch=prefetch)
    assert_same(two_phase, epochs(windows, split, batch, "direct"))
    for batch_read in two_phase[1]:
        assert np.array_equal(batch_read.x[:, 0, 0], batch_read.indices.astype(np.float32))
        assert np.array_equal(batch_read.y, batch_read.indices % 3)
    seen = np.concatenate(COMM.allgather(np.concatenate([b.indices for b in two_phase[0]])))
    assert sorted(seen.tolist()) == list(range(*split))


def test_series_windows_are_those_of_direct_reads(folder):
    path = os.path.join(folder, "s.h5")
    on_rank_zero(COMM, fixtures.write_series, path, rows=300, lookback=6, horizon=3, stride=2, chunk=16)
    info = open_dataset(path, comm=COMM)
    split = (1, info.num_samples - 2)
    assert_same(epochs(info, split, 9, "two-phase"), epochs(info, split, 9, "direct"))


def test_each_rank_reads_a_contiguous_share_of_the_group(windows):
    samples = np.random.default_rng(2).permutation(np.arange(10, 190))[:120]
    group = Group(samples, 25)
    reader = TwoPhaseReader(windows, COMM, np.float32)
    try:
        pieces = COMM.allgather(plan(reader.reader, group, COMM.size, COMM.rank).piece_rows)
    finally:
        reader.close()
    joined = np.concatenate(pieces)
    assert np.array_equal(joined, np.sort(samples))                   # disjoint, in file order, all of it
    assert max(map(len, pieces)) - min(map(len, pieces)) <= 1


def test_a_read_failing_on_one_rank_raises_on_every_rank(windows, monkeypatch):
    if COMM.rank == COMM.size - 1:
        def failing(self, rows):
            raise OSError("simulated disk error")
        monkeypatch.setattr(TwoPhaseReader, "read_piece", failing)
    loader = BatchLoader(windows, (0, 203), 12, comm=COMM, seed=1, buffer_mb=0.002, reads="two-phase")
    try:
        with pytest.raises(DataError) as caught:
            for _ in loader.epoch(0):
                pass
    finally:
        loader.close()
    messages = COMM.allgather(str(caught.value))
    assert len(set(messages)) == 1 and "simulated disk error" in messages[0]
