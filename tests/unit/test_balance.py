"""The slowest rank: the per-rank compute slots of the fused exchange's tail (a SUM of one-hot slots gives
every rank's time), the imbalance statistics of a sweep run, the report's imbalance table and train's
imbalance warning."""
import io

import numpy as np
import pytest

from hpcrnn import comm as mpi
from hpcrnn.scaling.report import imbalance_table
from hpcrnn.scaling.results import imbalance_statistics, slow_share_threshold


def summed_tails(times, scalars):
    """The tail every rank would see after Allreduce(SUM): rank r wrote times[r] into slot r, zeros elsewhere."""
    tails = []
    for rank, t in enumerate(times):
        tail = np.zeros(mpi.FusedExchange.tail_size(len(times)))
        tail[:mpi.FusedExchange.TAIL] = scalars[rank]
        tail[mpi.FusedExchange.TAIL + rank] = t
        tails.append(tail)
    return np.sum(tails, axis=0)


def test_tail_sum_gives_every_rank_time_the_max_and_its_rank():
    times = [0.010, 0.031, 0.012, 0.020]
    totals = mpi.Totals(summed_tails(times, [(1.5, 8, 0, 0, 0)] * 4))
    np.testing.assert_allclose(totals.compute, times)
    assert totals.compute_max == pytest.approx(0.031) and totals.slowest_rank == 1
    assert totals.compute_median == pytest.approx(0.016)
    assert totals.loss_sum == pytest.approx(6.0) and totals.count == 32 and not totals.stop and not totals.bad


def test_ties_go_to_the_lowest_rank():
    assert mpi.compute_statistics([0.2, 0.5, 0.5]) == (0.5, 1, 0.5)


def test_serial_exchange_reports_its_own_time():
    exchange = mpi.FusedExchange(mpi.self_comm(), 10, np.float32, [(0, 10)], 0.0, overlap=False)
    assert exchange.buffer.size == 10 + mpi.FusedExchange.TAIL + 1
    exchange.start()
    totals = exchange.finish(2.0, 4, False, 0.125)
    assert totals.compute_max == 0.125 and totals.slowest_rank == 0 and totals.compute.tolist() == [0.125]


def steps_with(slowest, ratio=1.5, count=20):
    return [{"step": i + 1, "t_compute_max": ratio * 0.01, "t_compute_median": 0.01, "t_step": 0.02 * ratio,
             "slowest_rank": slowest(i)} for i in range(count)]


def test_imbalance_statistics_name_the_persistently_slow_rank():
    stats = imbalance_statistics(steps_with(lambda i: 3 if i % 5 else 0), warmup=0, ranks=4)
    assert stats["imbalance"] == pytest.approx(1.5)
    assert stats["slowest_share"] == [0.2, 0.0, 0.0, 0.8] and stats["slow_ranks"] == [3]
    assert stats["imbalance_cost_s"] == pytest.approx(0.005) and stats["imbalance_cost_share"] == pytest.approx(1 / 6)
    alternating = imbalance_statistics(steps_with(lambda i: i % 2, ratio=1.0), warmup=2, ranks=2)
    assert alternating["slow_ranks"] == [] and alternating["imbalance"] == 1.0
    assert imbalance_statistics([{"step": 1, "t_compute": 0.1}], warmup=0, ranks=2) == {}


def test_slow_threshold_is_three_fair_shares_at_most_three_quarters():
    assert [slow_share_threshold(p) for p in (2, 4, 8, 16)] == [0.75, 0.75, 0.375, 0.1875]


def test_report_table_lists_imbalance_and_slow_ranks():
    rows = [{"ranks": 1, "imbalance": 1.0}, {"ranks": 4, **imbalance_statistics(
        steps_with(lambda i: 3 if i % 5 else 0), warmup=0, ranks=4)}]
    table = imbalance_table(rows).splitlines()
    assert len(table) == 3 and table[2] == "| 4 | 1.500 | 1.500 | 3 (80%) | 3 (80%) | 5.000 ms (16.7% of a step) |"
    assert imbalance_table([{"ranks": 2, "t_step": 1.0}]) is None


class FakeComm:
    size, rank = 3, 0


@pytest.mark.parametrize("times, warned", [([1.0, 1.0, 1.25], True), ([1.0, 1.0, 1.15], False)])
def test_train_warns_when_a_rank_is_over_20_percent_slower_than_the_median(times, warned):
    from hpcrnn.log import Writer
    from hpcrnn.train import Trainer
    stream = io.StringIO()
    trainer = Trainer.__new__(Trainer)          # only what warn_imbalance reads
    trainer.comm, trainer.epoch, trainer.writer = FakeComm(), 4, Writer(None, stream=stream, progress="none")
    trainer.epoch_compute = np.array(times)
    trainer.warn_imbalance()
    assert ("warning: rank 2 computed 25% longer than the median rank in epoch 4" in stream.getvalue()) == warned
    assert trainer.epoch_compute.tolist() == [0, 0, 0]
