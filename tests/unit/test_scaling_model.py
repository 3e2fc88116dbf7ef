"""The cost model: known alpha/beta and compute constants are recovered from synthetic timings, and the
projection and result statistics compute what they state."""
import math

import pytest

from hpcrnn.scaling import model_fit
from hpcrnn.scaling.results import phase_statistics

ALPHA, BETA = 3e-6, 4e-10     # 3 us latency, 2.5 GB/s


def timings(ranks_list, sizes, alpha=ALPHA, beta=BETA, noise=0.0):
    rows = []
    for index, (ranks, nbytes) in enumerate((r, n) for r in ranks_list for n in sizes):
        exact = 2 * math.log2(ranks) * alpha + 2 * (ranks - 1) / ranks * nbytes * beta
        rows.append({"ranks": ranks, "bytes": nbytes, "seconds": exact * (1 + noise * (-1) ** index)})
    return rows


def test_allreduce_fit_recovers_alpha_and_beta():
    fit = model_fit.fit_allreduce(timings([2, 4, 8], [4096, 65536, 1 << 20, 1 << 24]))
    assert fit["alpha"] == pytest.approx(ALPHA, rel=1e-6)
    assert fit["beta"] == pytest.approx(BETA, rel=1e-6)
    assert fit["bandwidth_bytes_per_s"] == pytest.approx(2.5e9, rel=1e-6)


def test_allreduce_fit_is_relative_so_small_messages_still_fix_alpha():
    fit = model_fit.fit_allreduce(timings([2], [1024, 16384, 1 << 20, 1 << 24], noise=0.02))
    assert fit["alpha"] == pytest.approx(ALPHA, rel=0.1)
    assert fit["beta"] == pytest.approx(BETA, rel=0.05)


def test_allreduce_fit_leaves_out_oversubscribed_rank_counts():
    rows = timings([2], [4096, 1 << 20]) + timings([4], [4096, 1 << 20], alpha=1e-3, beta=1e-8)
    fit = model_fit.fit_allreduce(rows, cores=2)
    assert fit["ranks_used"] == [2] and fit["alpha"] == pytest.approx(ALPHA, rel=1e-6)
    with pytest.raises(ValueError, match="two message sizes"):
        model_fit.fit_allreduce(timings([2], [4096]))


def test_nonnegative_fit_clamps_a_negative_intercept():
    per_sample, fixed = model_fit.nonnegative_lstsq([[1, 2, 3], [1, 1, 1]], [1.0, 3.0, 5.0])  # exact: 2x - 1
    assert fixed == 0.0 and per_sample == pytest.approx(22 / 14)


def test_compute_fit_recovers_per_sample_and_fixed_time():
    results = [{"local_batch": 64 / p, "t_compute": 2e-5 * 64 / p + 1e-4 - 1e-6, "t_io": 1e-6} for p in (1, 2, 4)]
    fit = model_fit.fit_compute(results)
    assert fit["per_sample"] == pytest.approx(2e-5, rel=1e-9) and fit["fixed"] == pytest.approx(1e-4, rel=1e-9)
    weak = model_fit.fit_compute([{"local_batch": 32, "t_compute": 3.2e-3, "t_io": 0.0}] * 2)
    assert weak == {"per_sample": pytest.approx(1e-4), "fixed": 0.0, "points": 2}


def test_projection_strong_and_weak():
    compute, comm = {"per_sample": 1e-5, "fixed": 1e-4}, {"alpha": ALPHA, "beta": BETA}
    nbytes = 1 << 20
    strong = model_fit.project("strong", 256, compute, comm, nbytes, [1, 64, 512])
    expected_64 = 1e-5 * 4 + 1e-4 + 12 * ALPHA + 2 * 63 / 64 * nbytes * BETA
    assert strong[1]["t_step"] == pytest.approx(expected_64)
    assert strong[0]["efficiency"] == pytest.approx(1.0)
    assert strong[1]["efficiency"] == pytest.approx((256e-5 + 1e-4) / (64 * expected_64))
    assert strong[1]["feasible"] and not strong[2]["feasible"]          # 512 ranks > 256 samples
    weak = model_fit.project("weak", 32, compute, comm, nbytes, [1, 4096])
    assert weak[1]["efficiency"] == pytest.approx((32e-5 + 1e-4) / weak[1]["t_step"])
    assert weak[1]["throughput"] == pytest.approx(32 * 4096 / weak[1]["t_step"])


def test_phase_statistics_skip_warmup():
    steps = [{"step": s, "t_step": 100.0 if s <= 2 else float(s), "t_compute": 1.0, "t_comm": 0.5, "t_io": 0.0}
             for s in range(1, 8)]
    stats = phase_statistics(steps, warmup=2)
    assert stats["t_step"] == 5.0 and stats["steps_measured"] == 5        # median of 3..7
    assert stats["t_step_q25"] == 4.0 and stats["t_step_q75"] == 6.0
    with pytest.raises(ValueError):
        phase_statistics(steps, warmup=7)
