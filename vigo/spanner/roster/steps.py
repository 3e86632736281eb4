"""Work done in steps: all at once, or in slices on the reactor thread.

A big roster job (decoding a snapshot, hashing it, merging it) is written once,
as a generator that yields None between items and returns its result. Run to
its end (``run_steps``) it is the ordinary synchronous call; run by
``run_sliced`` it takes turns with the reactor's other work, a couple of
milliseconds at a time, so a 10,000-row snapshot never stalls check-ins.
Both run the same code, so both give the same result.
"""

import heapq
import time

from twisted.internet import defer

#: Seconds of work ``run_sliced`` does before letting the reactor run again.
SLICE = 0.002
#: Items ``sorting`` sorts in one step.
SORT_CHUNK = 2048


def run_steps(steps):
    """Run the generator ``steps`` to its end; its return value."""
    try:
        while True:
            next(steps)
    except StopIteration as done:
        return done.value


def run_sliced(clock, steps, budget=None, timer=time.perf_counter):
    """Run the generator ``steps`` on the reactor thread in slices of about
    ``budget`` seconds (``SLICE``), other events running between them
    (``clock`` is an ``IReactorTime``); a Deferred of its return value, or of
    its exception.

    The first slice runs now, so work that fits in one is done when this
    returns. Cancelling the Deferred stops the work (the generator is closed).
    """
    return _Sliced(clock, steps, SLICE if budget is None else budget, timer).done


class _Sliced:
    def __init__(self, clock, steps, budget, timer):
        self._clock, self._steps, self._budget, self._timer = clock, steps, budget, timer
        self._call = None
        self.done = defer.Deferred(self._cancel)
        self._slice()

    def _slice(self):
        self._call = None
        timer, steps = self._timer, self._steps
        deadline = timer() + self._budget
        try:
            next(steps)
            while timer() < deadline:
                next(steps)
        except StopIteration as finished:
            self.done.callback(finished.value)
            return
        except BaseException:
            self.done.errback()
            return
        self._call = self._clock.callLater(0, self._slice)

    def _cancel(self, _):
        if self._call is not None:
            self._call.cancel()
            self._call = None
        self._steps.close()


def sorting(items, key=None):
    """``sorted(items, key=key)`` in steps: a generator that yields None while
    it sorts chunks of ``SORT_CHUNK`` and returns an iterator of the items in
    order (a lazy merge of the chunks: iterate it one step per item). Ties
    keep their input order, as ``sorted`` does."""
    items = list(items)
    chunks = []
    for start in range(0, len(items), SORT_CHUNK):
        chunks.append(sorted(items[start:start + SORT_CHUNK], key=key))
        yield
    if len(chunks) <= 1:
        return iter(chunks[0] if chunks else ())
    return heapq.merge(*chunks, key=key)
