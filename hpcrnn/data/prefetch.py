"""Prefetching: a background thread reads item k+1 while the consumer works on item k, never holding more than
two items, and asks for items further ahead to be read ahead (a hint, e.g. into the page cache) as many items
ahead as the measured read latency needs (`Depth`); with threaded=False the same interface reads on demand in
the caller's thread, still reading ahead."""
import math
import queue
import threading
import time

POLL_S = 0.05
MOST_AHEAD = 8             # items read ahead at most (the bound on the memory readahead holds)
WAIT_SHARE = 0.02          # a wait of more than this share of an item's consumption is a stall


class Depth:
    """How many items after the one being read are read ahead: starts at `least`; when the consumer had to
    wait for an item, it grows to cover that item's read latency (from its readahead to its arrival) with
    the consumer's time per item: ceil(latency / interval) items, at most `most`. It never shrinks: items
    read ahead and not yet consumed hold memory only up to `most`."""

    def __init__(self, least=1, most=MOST_AHEAD):
        self.least, self.most = max(0, int(least)), max(0, int(most))
        self.items = min(self.least, self.most)

    def stalled(self, latency_s, interval_s):
        """The consumer waited for an item that took latency_s from its readahead to its arrival, while it
        spends interval_s per item; returns the new depth."""
        if interval_s > 0 and latency_s > 0:
            wanted = math.ceil(latency_s / interval_s)
        else:
            wanted = self.items + 1
        self.items = min(self.most, max(self.items, wanted))
        return self.items


class Prefetcher:
    """Calls read(argument) for each argument in order. next() returns the next result, release() says the
    consumer is done with the previous one, close() stops the thread after its current read. ahead(argument),
    when given, is called once per argument, before read(argument): right after the read `depth.items`
    arguments earlier (a hint that must not block for long: the read itself waits for the data).

    Every rank sees the same arguments and stops at the same point. With matched=True (collective reads)
    close() still lets the thread make every read it was allowed to start (two plus one per release), so
    every rank makes the same reads whatever the thread's timing; otherwise it stops at once. Readahead
    hints are never matched (each rank's depth follows its own latency)."""

    def __init__(self, read, arguments, threaded=True, matched=False, ahead=None, depth=None):
        # a list, or a sequence that works its items out when first asked for (len() and [i] with i rising)
        self.arguments = arguments if hasattr(arguments, "__getitem__") else list(arguments)
        self.read, self.matched = read, matched
        self.ahead, self.depth = ahead, depth or Depth()
        self.position, self.asked_ahead = 0, 0
        self.issued = {}                       # item -> when its readahead was asked for
        self.arrived = {}                      # item -> when its read finished
        self.last_next, self.interval = None, 0.0
        self.threaded = threaded and len(self.arguments) > 1
        if self.threaded:
            self.slots = threading.Semaphore(2)
            self.results = queue.Queue()
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._run, name="hpcrnn-prefetch", daemon=True)
            self.thread.start()

    def _read(self, item):
        """Reads item (asked ahead first if it was not yet) and records when it arrived. The items after it
        are asked ahead only after it is handed over (_ask_ahead): the read under way never queues behind
        their readahead, and handing it over never waits for that readahead to be queued (which blocks
        while the disk's queue is full)."""
        self._ask_ahead(item)
        value = self.read(self.arguments[item])
        self.arrived[item] = time.perf_counter()
        return value

    def _ask_ahead(self, last):
        """Calls ahead() once for each item up to `last` not asked yet, recording when."""
        last = min(len(self.arguments) - 1, last)
        while self.asked_ahead <= last:
            self.issued[self.asked_ahead] = time.perf_counter()
            if self.ahead is not None:
                self.ahead(self.arguments[self.asked_ahead])
            self.asked_ahead += 1

    def _permitted(self):
        """Waits for a slot; False once stopped. Slots are released only before close(), so when matched a
        slot released before it is still taken: the reads made depend on the releases, not on timing."""
        while not self.slots.acquire(timeout=POLL_S):
            if self.stop.is_set():
                return self.matched and self.slots.acquire(blocking=False)
        return self.matched or not self.stop.is_set()

    def _run(self):
        for item in range(len(self.arguments)):
            if not self._permitted():
                return
            try:
                self.results.put((self._read(item), None))
                self._ask_ahead(item + self.depth.items)
            except BaseException as error:  # handed to the consumer, which re-raises it
                self.results.put((None, error))
                return

    def next(self):
        item, start = self.position, time.perf_counter()
        if self.last_next is not None:        # the consumer's time on the previous item
            spent = start - self.last_next
            self.interval = spent if self.interval == 0 else 0.75 * self.interval + 0.25 * spent
        if self.threaded:
            value, error = self.results.get()
        else:
            value, error = self._read(item), None
            self._ask_ahead(item + self.depth.items)
        self.position += 1
        if error is not None:
            raise error
        now = time.perf_counter()
        waited = now - start
        if item > 0 and waited > max(1e-3, WAIT_SHARE * self.interval):
            self.depth.stalled(self.arrived.get(item, now) - self.issued.get(item, start), self.interval)
        self.last_next = now
        self.issued.pop(item, None)
        self.arrived.pop(item, None)
        return value

    def release(self):
        if self.threaded:
            self.slots.release()

    def close(self):
        if self.threaded:
            self.stop.set()
            self.thread.join()
            self.threaded = False
