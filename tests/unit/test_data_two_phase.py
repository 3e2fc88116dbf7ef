"""Two-phase reads without MPI: the plan's arithmetic (who needs which rows, who reads which piece) and, at one
rank, the batches of direct reads. tests/mpi/test_two_phase_mpi.py checks 2 and 3 ranks."""
import numpy as np

import data_fixtures as fixtures
from hpcrnn import comm as mpi
from hpcrnn.data.loader import BatchLoader
from hpcrnn.data.schema import open_dataset
from hpcrnn.data.shard import rank_positions
from hpcrnn.data.two_phase import Group, expand


def test_expand_lists_the_rows_of_ranges():
    assert expand(np.array([2, 10, 11]), np.array([5, 11, 13])).tolist() == [2, 3, 4, 10, 11, 12]
    assert expand(np.array([], np.int64), np.array([], np.int64)).tolist() == []


def test_group_needs_are_each_ranks_batch_positions():
    samples = np.random.default_rng(4).permutation(100)[:47]       # 4 batches of 12 and a partial one of 11
    group = Group(samples, 12)
    for size in (1, 2, 3, 5):
        expected = [np.concatenate([samples[b:b + 12][slice(*rank_positions(len(samples[b:b + 12]), size, rank))]
                                    for b in range(0, 47, 12)]) for rank in range(size)]
        got = [group.needs(size, rank) for rank in range(size)]
        assert all(np.array_equal(g, e) for g, e in zip(got, expected))
        assert sorted(np.concatenate(got).tolist()) == sorted(samples.tolist())


def test_one_rank_gets_the_batches_of_direct_reads(tmp_path):
    info = open_dataset(fixtures.write_windows(str(tmp_path / "w.h5"), count=150, chunk=8, output="labels",
                                               lengths=True), mpi.self_comm())

    def epoch(reads):
        loader = BatchLoader(info, (3, 149), 16, comm=mpi.self_comm(), seed=2, buffer_mb=0.001, reads=reads)
        try:
            assert loader.reads == reads
            return fixtures.kept(loader.epoch(1))
        finally:
            loader.close()
    two_phase, direct = epoch("two-phase"), epoch("direct")
    assert len(two_phase) == len(direct) == 10
    for a, b in zip(two_phase, direct):
        assert np.array_equal(a.indices, b.indices) and np.array_equal(a.x, b.x)
        assert np.array_equal(a.y, b.y) and np.array_equal(a.lengths, b.lengths)
