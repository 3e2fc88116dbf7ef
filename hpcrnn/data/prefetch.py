"""Double buffering: a background thread reads item k+1 while the consumer works on item k, never holding
more than two items; with threaded=False the same interface reads on demand in the caller's thread."""
import queue
import threading

POLL_S = 0.05


class Prefetcher:
    """Calls read(argument) for each argument in order. next() returns the next result, release() says the
    consumer is done with the previous one, close() stops the thread after its current read.

    Every rank sees the same arguments and stops at the same point. With matched=True (collective reads)
    close() still lets the thread make every read it was allowed to start (two plus one per release), so
    every rank makes the same reads whatever the thread's timing; otherwise it stops at once."""

    def __init__(self, read, arguments, threaded=True, matched=False):
        self.read, self.arguments, self.matched = read, list(arguments), matched
        self.position = 0
        self.threaded = threaded and len(self.arguments) > 1
        if self.threaded:
            self.slots = threading.Semaphore(2)
            self.results = queue.Queue()
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._run, name="hpcrnn-prefetch", daemon=True)
            self.thread.start()

    def _permitted(self):
        """Waits for a slot; False once stopped. Slots are released only before close(), so when matched a
        slot released before it is still taken: the reads made depend on the releases, not on timing."""
        while not self.slots.acquire(timeout=POLL_S):
            if self.stop.is_set():
                return self.matched and self.slots.acquire(blocking=False)
        return self.matched or not self.stop.is_set()

    def _run(self):
        for argument in self.arguments:
            if not self._permitted():
                return
            try:
                self.results.put((self.read(argument), None))
            except BaseException as error:  # handed to the consumer, which re-raises it
                self.results.put((None, error))
                return

    def next(self):
        if not self.threaded:
            argument = self.arguments[self.position]
            self.position += 1
            return self.read(argument)
        value, error = self.results.get()
        self.position += 1
        if error is not None:
            raise error
        return value

    def release(self):
        if self.threaded:
            self.slots.release()

    def close(self):
        if self.threaded:
            self.stop.set()
            self.thread.join()
            self.threaded = False
