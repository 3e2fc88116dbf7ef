"""The run report's curve helpers: the smoothed loss ignores NaN (skipped steps), step means per group."""
import math

from hpcrnn.runplots import binned, smooth, smooth_log


def test_smooth_is_a_debiased_moving_average_that_skips_nan():
    assert smooth([2.0, 2.0, 2.0]) == [2.0, 2.0, 2.0]                  # debiased: no pull towards 0
    out = smooth([1.0, float("nan"), 3.0], window=2)
    assert out[0] == 1.0 and out[1] == 1.0
    assert math.isclose(out[2], (0.5 * 0.5 * 1.0 + 0.5 * 3.0) / (0.5 * 0.5 + 0.5))
    assert math.isnan(smooth([float("nan"), 1.0])[0])


def test_smooth_log_is_a_geometric_average_that_follows_a_falling_loss():
    assert smooth_log([0.5, 0.5]) == [0.5, 0.5]
    assert math.isclose(smooth_log([1.0, 100.0], window=2)[1], 100.0 ** (2 / 3))
    loss = [10.0 ** (-k / 100) for k in range(1000)]           # four decades, as a training loss falls
    geometric, arithmetic = smooth_log(loss), smooth(loss)
    assert max(g / v for g, v in zip(geometric, loss)) < 4.0    # a lag of ~window (50) points: 10**0.49
    assert arithmetic[-1] / loss[-1] > 10 * geometric[-1] / loss[-1]


def test_binned_means():
    centres, means = binned(list(range(1, 11)), [1.0] * 5 + [3.0] * 5, bins=2)
    assert centres == [3.0, 8.0] and means == [1.0, 3.0]
    assert binned([1, 2, 3], [4.0, 5.0, 6.0], bins=100) == ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
