"""When a write may be acknowledged: ``peers.sync`` standbys hold it.

``Acknowledgements`` is the primary's: ``synced()`` is a Deferred that fires
once every entry committed so far (``head()`` when asked) is held by
``peers.sync`` standbys (``acked()``: the LSN each connected standby has
answered for), and fails with a retryable ``Refusal`` past
``peers.sync_timeout``. Nothing is acknowledged before the primary has
``confirmed`` it is still the primary (its first fencing probe round,
``vigo.server.peer.fencing``), and nothing at all once it is fenced. It also
keeps the newest commit-to-acknowledgement times, for the status.
"""

import collections

from twisted.internet import defer

from vigo.interfaces.errors import Refusal

ACK_SAMPLES = 10000


class Acknowledgements:
    """See the module docstring; ``peers`` has ``sync`` and ``sync_timeout``."""

    def __init__(self, clock, peers, head, acked):
        self.clock = clock
        self.peers = peers
        self.head = head
        self.acked = acked
        self.confirmed = False
        self.refusal = None
        self.waiters = collections.deque()
        #: Seconds from a commit to a standby's acknowledgement of it.
        self.samples = collections.deque(maxlen=ACK_SAMPLES)

    def synced_lsn(self):
        """The LSN ``peers.sync`` standbys all hold (-1 when fewer are connected)."""
        need = self.peers.sync
        if need == 0:
            return self.head()
        acked = sorted(self.acked(), reverse=True)
        return acked[need - 1] if len(acked) >= need else -1

    def synced(self):
        """A Deferred that fires when the writes committed so far may be
        acknowledged; a retryable ``Refusal`` when they may not."""
        if self.refusal is not None:
            return defer.fail(self.refusal)
        target = self.head()
        if self.confirmed and self.synced_lsn() >= target:
            return defer.succeed(None)
        d = defer.Deferred()
        timer = self.clock.callLater(self.peers.sync_timeout, self._timed_out, d)
        self.waiters.append((target, d, timer))
        return d

    def confirm(self):
        """The primary is still the primary: acknowledge what may be."""
        self.confirmed = True
        self.release()

    def release(self):
        """Fire the waiters a standby's answer (or a confirmation) satisfied."""
        if not self.confirmed:
            return
        synced = self.synced_lsn()
        while self.waiters and self.waiters[0][0] <= synced:
            _, d, timer = self.waiters.popleft()
            if timer.active():
                timer.cancel()
            if not d.called:
                d.callback(None)

    def _timed_out(self, d):
        if d.called:
            return
        self.waiters = collections.deque(w for w in self.waiters if w[1] is not d)
        connected = len(self.acked())
        if not self.confirmed:
            why = ("this primary has not yet confirmed with its replica set that it is still "
                   "the primary")
        elif connected < self.peers.sync:
            why = ("peers.sync is %d but %d standby(s) are connected"
                   % (self.peers.sync, connected))
        else:
            why = ("peers.sync is %d and %d standby(s) are connected, but fewer held it within "
                   "peers.sync_timeout (%g s)" % (self.peers.sync, connected,
                                                  self.peers.sync_timeout))
        d.errback(Refusal("replication_timeout", "not acknowledged: %s; nothing is promised, "
                          "try again" % (why,), retryable=True))

    def fail_all(self, refusal):
        """Every waiter fails with ``refusal`` (the primary stops)."""
        waiters, self.waiters = self.waiters, collections.deque()
        for _, d, timer in waiters:
            if timer.active():
                timer.cancel()
            if not d.called:
                d.errback(refusal)

    def fence(self, refusal):
        """Acknowledge nothing from now on: every wait fails with ``refusal``."""
        self.refusal = refusal
        self.fail_all(refusal)

    def sample(self, seconds):
        self.samples.append(seconds)

    def quantiles(self):
        """``{"p50", "p99", "samples"}`` of the samples (None when there are none)."""
        samples = sorted(self.samples)
        if not samples:
            return None

        def at(q):
            return round(samples[min(int(q * len(samples)), len(samples) - 1)], 6)

        return {"p50": at(0.50), "p99": at(0.99), "samples": len(samples)}
