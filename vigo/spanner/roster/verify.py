"""Verifying a pulled roster's signatures off the reactor thread.

Merging a snapshot is mostly Ed25519 verifies: a new row needs two (its
bolt's own signature and its admission), a new record one. 10,000 new rows
are 20,000 verifies, over a second of one core: on the reactor thread that
second is a second without check-ins. libsodium releases the GIL while it
verifies, so the verifies run here in a small pool of threads instead, in
chunks, on both cores, and the merge itself (cheap once the signatures are
known) is applied on the reactor thread in slices.

The split keeps ``Roster.merge``'s semantics by construction:

1. ``Roster.checks_for(parts)`` lists the ``(key, message, signature)``
   checks merging ``parts`` will make: the merge's own decisions made ahead
   (an admission is checked with the admitter's key, which the roster pins or
   a row of the same parts brings; a record with its signer's key). It reads
   the roster, so it runs on the reactor thread, in slices; full chunks go
   to the threads while it goes on.
2. The threads verify the chunks: pure functions of bytes.
3. ``Roster.merge(VerifiedParts)`` makes exactly the decisions it always
   makes, in the same order, and where it would verify it looks the result
   up instead. A check it does not find (the roster changed between 1 and 3)
   it makes itself. So the result, report and digest are those of the
   synchronous merge, and no signature is verified twice.

Only the verifies are threaded: everything else holds the GIL, and a thread
holding it makes the reactor wait for it. The threads also lower their own
scheduling priority (Linux: nice +10, for these threads only): verification
is background work, and when the cores are busy the reactor comes first.
With a busy process beside them, a 1 ms timer on the reactor ran late by
2.1 ms at p99 at nice +10, 6-10 ms at nice 0, for 15 % longer verification.
"""

import collections
import os
import sys
import threading

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from vigo.spanner.roster.parts import VerifiedParts
from vigo.spanner.roster.records import verify
from vigo.spanner.roster.steps import run_sliced

#: Threads verifying (the machines bolts run on have two cores or more).
THREADS = 2
#: Signatures a thread verifies in one go (about 30 ms of one core).
CHUNK = 500
#: At most this many checks (under a millisecond of verifies) are made on the
#: reactor thread, within one slice: a hand-off to a thread and back costs
#: 30-100 us, as much as one or two verifies.
INLINE = 16
#: How much nicer than the reactor the verifying threads run (Linux only).
NICENESS = 10

_thread = threading.local()


def check_chunk(checks):
    """Verify ``(key, message, signature)`` checks; a list of booleans, in order.
    Runs in a verifying thread (pure: bytes in, booleans out)."""
    if not getattr(_thread, "lowered", False):
        _thread.lowered = True
        _lower_priority()
    return [verify(key, message, signature) for key, message, signature in checks]


def _lower_priority():
    # On Linux a thread has its own nice value, set through its thread id;
    # elsewhere the same call would renice the whole process, so leave it.
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
        except (OSError, AttributeError):
            pass


class Verifier:
    """Verifies the checks of merges in a pool of ``threads`` threads, in
    chunks of ``chunk``, on ``reactor`` (an ``IReactorTime`` and
    ``IReactorFromThreads``). The pool starts on first use and stops with
    ``stop`` (or at reactor shutdown)."""

    def __init__(self, reactor, threads=THREADS, chunk=CHUNK, inline=INLINE):
        self.reactor = reactor
        self.threads = threads
        self.chunk = chunk
        self.inline = inline
        self._pool = None
        self.verified = 0  # checks made in threads, ever
        self.chunks = 0

    def checking(self, roster):
        """A ``Checking``: the checks of one merge into ``roster`` (a ``Roster``)."""
        return Checking(self, roster)

    def verify_parts(self, roster, parts):
        """``parts`` (untrusted ``RosterParts``) as ``VerifiedParts``: every check
        that merging them into ``roster`` will make, made. A Deferred."""
        return self.checking(roster).verified(parts)

    def _run(self, chunk):
        if self._pool is None:
            self._pool = ThreadPool(0, self.threads, "vigo-roster-verify")
            self._pool.start()
            trigger = getattr(self.reactor, "addSystemEventTrigger", None)
            if trigger is not None:
                trigger("during", "shutdown", self.stop)
        self.chunks += 1
        self.verified += len(chunk)
        return threads.deferToThreadPool(self.reactor, self._pool, check_chunk, chunk)

    def stop(self):
        """Stop the threads (waits for a chunk under way: at most one chunk's time)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()


class Checking:
    """The checks of one merge into ``roster``: collected on the reactor
    thread, verified in chunks in the verifier's threads (at most ``threads``
    chunks at a time), as they come.

    ``verified(parts)`` plans every check of the merge (``Roster.checks_for``)
    in slices, sends them as chunks fill up, and gives the ``VerifiedParts``
    once all are made. Cancelling it (or ``cancel``) drops the rest.
    """

    def __init__(self, verifier, roster):
        self._verifier = verifier
        self._roster = roster
        self._planned = set()
        self._chunk = []
        self._queue = collections.deque()
        self._running = 0
        self._dispatched = False
        self._done = None
        self._cancelled = False
        self._failure = None
        self.results = {}

    def verified(self, parts):
        """A Deferred of ``parts`` as ``VerifiedParts`` (see the class docstring)."""
        d = run_sliced(self._verifier.reactor, self._planning(self._roster.checks_for(parts)))
        d.addCallback(lambda _: self._finish())
        d.addCallback(lambda checks: VerifiedParts.of(parts, checks))
        return d

    def cancel(self):
        """Send nothing more (a chunk under way in a thread finishes there, unread)."""
        self._cancelled = True
        self._queue.clear()
        self._chunk = []

    def _planning(self, checks):
        for check in checks:
            self._add(check)
            yield

    def _add(self, check):
        if check is None or check in self._planned or self._cancelled:
            return
        self._planned.add(check)
        self._chunk.append(check)
        if len(self._chunk) >= self._verifier.chunk:
            self._queue.append(self._chunk)
            self._chunk = []
            self._pump()

    def _finish(self):
        if self._chunk:
            if not self._dispatched and len(self._chunk) <= self._verifier.inline:
                self.results.update(zip(self._chunk, check_chunk_here(self._chunk), strict=True))
            else:
                self._queue.append(self._chunk)
            self._chunk = []
        self._done = defer.Deferred(lambda _: self.cancel())
        self._pump()
        self._maybe_done()
        return self._done

    def _pump(self):
        while self._queue and self._running < self._verifier.threads and not self._cancelled:
            chunk = self._queue.popleft()
            self._running += 1
            self._dispatched = True
            self._verifier._run(chunk).addCallbacks(
                self._verified, self._failed, callbackArgs=(chunk,))

    def _verified(self, results, chunk):
        self._running -= 1
        if self._cancelled:
            return
        self.results.update(zip(chunk, results, strict=True))
        self._pump()
        self._maybe_done()

    def _failed(self, failure):
        self._running -= 1
        if self._failure is None:
            self._failure = failure
        self._queue.clear()
        self._maybe_done()

    def _maybe_done(self):
        d = self._done
        if d is None or d.called or self._running or self._queue:
            return
        if self._failure is not None:
            d.errback(self._failure)
        else:
            d.callback(self.results)


def check_chunk_here(checks):
    """Verify a few checks on this thread (no priority change)."""
    return [verify(key, message, signature) for key, message, signature in checks]
