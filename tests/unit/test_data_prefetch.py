"""The prefetch thread: on close, matched (collective) reads are exactly those the releases allowed."""
import time

import pytest

from hpcrnn.data.prefetch import Prefetcher


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
