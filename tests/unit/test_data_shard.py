"""Pure sharding arithmetic: block distribution, epoch order, range merging and sieving."""
import numpy as np
import pytest

from hpcrnn.data.shard import blockdist, block_bounds, coalesce, epoch_order, merge_ranges, runs_of


@pytest.mark.parametrize("n,size", [(0, 1), (1, 3), (7, 3), (10, 4), (100, 7)])
def test_blockdist_covers_once(n, size):
    parts = [blockdist(n, size, rank) for rank in range(size)]
    assert sum(count for count, _ in parts) == n
    assert [start for _, start in parts] == sorted(start for _, start in parts)
    for (count, start), (_, following) in zip(parts, parts[1:]):
        assert start + count == following
    assert max(c for c, _ in parts) - min(c for c, _ in parts) <= 1


def test_block_bounds_align_to_chunks():
    assert block_bounds((5, 30), 8).tolist() == [5, 8, 16, 24, 30]
    assert block_bounds((8, 8), 8).tolist() == [8]


def test_epoch_order_is_a_permutation_of_the_split():
    order = epoch_order((3, 103), seed=1, epoch=0, block_size=8, window_samples=24)
    assert sorted(order.tolist()) == list(range(3, 103))
    assert order.tolist() != list(range(3, 103))


def test_epoch_order_depends_on_seed_and_epoch_only():
    a = epoch_order((0, 200), 5, 2, 16, 40)
    assert np.array_equal(a, epoch_order((0, 200), 5, 2, 16, 40))
    assert not np.array_equal(a, epoch_order((0, 200), 5, 3, 16, 40))
    assert not np.array_equal(a, epoch_order((0, 200), 6, 2, 16, 40))


def test_epoch_order_keeps_buffer_windows_chunk_local():
    # two 16-sample blocks per window: each run of 32 consecutive positions holds exactly two whole blocks
    order = epoch_order((0, 128), 0, 0, block_size=16, window_samples=32)
    for first in range(0, 128, 32):
        blocks = set((order[first:first + 32] // 16).tolist())
        assert len(blocks) == 2


def test_no_shuffle_is_natural_order():
    assert epoch_order((4, 9), 0, 0, 2, 2, shuffle=False).tolist() == [4, 5, 6, 7, 8]


def test_merge_and_runs():
    starts, stops = merge_ranges([0, 2, 3, 10], [3, 4, 5, 12])
    assert starts.tolist() == [0, 10] and stops.tolist() == [5, 12]
    starts, stops = runs_of([1, 2, 3, 7, 9, 10])
    assert list(zip(starts.tolist(), stops.tolist())) == [(1, 4), (7, 8), (9, 11)]


def test_coalesce_respects_budget_and_gap_limit():
    starts, stops = np.array([0, 3, 10, 30]), np.array([2, 5, 12, 31])     # gaps 1, 5, 18; 7 rows wanted
    assert list(zip(*coalesce(starts, stops, budget=7, max_gap=100))) == [(0, 12), (30, 31)]
    assert list(zip(*coalesce(starts, stops, budget=7, max_gap=2))) == [(0, 5), (10, 12), (30, 31)]
    assert list(zip(*coalesce(starts, stops, budget=0, max_gap=2))) == list(zip(starts, stops))


def test_epoch_order_sorts_each_global_batch_without_changing_its_members():
    plain = epoch_order((0, 100), 4, 1, block_size=8, window_samples=40)
    batched = epoch_order((0, 100), 4, 1, block_size=8, window_samples=40, batch=16)
    for first in range(0, 100, 16):
        members = batched[first:first + 16]
        assert np.all(np.diff(members) > 0)
        assert sorted(members.tolist()) == sorted(plain[first:first + 16].tolist())


def test_epoch_batches_are_the_epoch_order_cut_into_batches_worked_out_lazily():
    """The loader's lazy plan: the batches one by one equal epoch_order(..., batch) cut into batches, and
    asking for the first batch does not work out the whole epoch (a 10^9-sample split starts at once)."""
    from hpcrnn.data.shard import epoch_batches
    for split, batch, shuffle in (((3, 500), 16, True), ((0, 97), 10, True), ((5, 64), 7, False)):
        batches = list(epoch_batches(split, 4, 2, 8, 40, batch, shuffle))
        assert np.array_equal(np.concatenate(batches), epoch_order(split, 4, 2, 8, 40, shuffle, batch))
        assert all(len(b) == batch for b in batches[:-1]) and all(np.all(np.diff(b) > 0) for b in batches)
    huge = epoch_batches((0, 10**9), 0, 0, 2**20, 2**22, 256)
    first = next(huge)
    assert len(first) == 256 and np.all((first >= 0) & (first < 10**9))
