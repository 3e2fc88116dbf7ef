"""The prefetch thread: on close, matched (collective) reads are exactly those the releases allowed."""
import time

import pytest

from hpcrnn.data.prefetch import Depth, Prefetcher


@pytest.mark.parametrize("matched,reads", [(True, [0, 1, 2]), (False, [0, 1])])
def test_close_after_a_release_makes_the_reads_it_allowed_when_matched(matched, reads):
    made = []

    def read(item):
        made.append(item)
        if item == 1:
            time.sleep(0.2)            # close() comes while this read is under way
        return item

    prefetcher = Prefetcher(read, range(6), threaded=True, matched=matched)
    assert prefetcher.next() == 0
    prefetcher.release()               # allows a third read: every rank makes it, whenever its thread gets there
    prefetcher.close()
    assert made == reads and not prefetcher.thread.is_alive()


def test_depth_grows_to_cover_the_latency_of_a_stalled_read_and_is_bounded():
    depth = Depth(least=1, most=6)
    assert depth.items == 1
    assert depth.stalled(latency_s=0.35, interval_s=0.1) == 4          # ceil(3.5): four items in flight
    assert depth.stalled(latency_s=0.05, interval_s=0.1) == 4          # never shrinks
    assert depth.stalled(latency_s=5.0, interval_s=0.1) == 6           # the memory bound
    assert Depth(least=1, most=6).stalled(0.2, 0.0) == 2               # no interval known yet: one more


class SlowDisk:
    """A simulated cold disk: ahead(item) starts its read, which lands `latency` seconds later; read(item)
    waits for it to land (as a read of pages under readahead waits), or for a whole read if never asked ahead.
    Records, at each read, the items already asked ahead."""

    def __init__(self, latency):
        self.latency, self.landing, self.asked_at_read = latency, {}, []

    def ahead(self, item):
        assert item not in self.landing                  # each item asked ahead once
        self.landing[item] = time.perf_counter() + self.latency

    def read(self, item):
        self.asked_at_read.append(max(self.landing))
        time.sleep(max(0.0, self.landing[item] - time.perf_counter()))
        return item


@pytest.mark.parametrize("threaded", [True, False])
def test_slow_reads_deepen_the_readahead_until_it_covers_them(threaded):
    disk = SlowDisk(latency=0.3)
    depth = Depth(least=1, most=4)
    prefetcher = Prefetcher(disk.read, range(14), threaded=threaded, ahead=disk.ahead, depth=depth)
    got = []
    for _ in range(14):
        got.append(prefetcher.next())
        time.sleep(0.03)                                 # the consumer's work on an item
        prefetcher.release()
    prefetcher.close()
    assert got == list(range(14))
    assert depth.items == 4                              # latency / interval = 10: up to the bound
    # each read came after its own readahead and, past the first, that of the items up to `depth` after the
    # previous one, never beyond the bound
    assert disk.asked_at_read[0] == 0
    assert all(item <= asked <= item + 4 for item, asked in enumerate(disk.asked_at_read))
    assert disk.asked_at_read[-3] == 13                  # by then everything was asked ahead
