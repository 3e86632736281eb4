"""Turning roster-digest mismatches seen in gossip into tier-2 pull requests.

Every datagram carries its sender's roster digest; one that differs from ours
means one of us lacks something, and a snapshot pull (someone else's code,
reached through a callback) fixes it. A change reaches every bolt within a
tick, so without care N-1 bolts would all pull at once, and a peer whose
roster stays different (say it has not pulled *ours* yet) would be asked again
on every datagram. Hence: a random delay (up to half an interval) before
asking, at most one request per ``spacing``, one random live peer per request,
and never the same (peer, digest) twice within ``repeat``: merging one
snapshot twice cannot help.

The spacing is short (half an interval) because changes written at many bolts
at once spread by pulls of merged rosters, about log2(N) rounds of them: at one
pull a second, ten concurrent writes took 6 s to reach 64 bolts; at 0.25 s,
1.4 s (``bench/scale.py``). What bounds the cost instead is the pulls' own
time: when the callback returns a Deferred (a real pull), the next request
waits at least ``1 / busy_share`` times as long as the last pull took, so
pulling big snapshots takes at most about ``busy_share`` of the bolt's time.
"""

import math

from twisted.logger import Logger


class PullRequests:
    """Rate-limited, jittered ``callback(bolt_id)`` on digest mismatch.

    ``candidates()`` returns {bolt id: digest} of live peers whose digest
    differs from ours, read when the request fires (not when the mismatch was
    seen: by then a pull may already have fixed it).
    """

    log = Logger()

    def __init__(self, clock, rng, callback, candidates, jitter, spacing, repeat,
                 busy_share=0.1):
        self._clock = clock
        self._rng = rng
        self._callback = callback
        self._candidates = candidates
        self.jitter = jitter
        self.spacing = spacing
        self.repeat = repeat
        self.busy_share = busy_share
        self.last_cost = 0.0  # seconds the last pull took
        self._call = None
        self._last = -math.inf
        self._asked = {}
        self.requests = 0

    def mismatch(self, now):
        """A datagram with another digest arrived: schedule a request if none is."""
        if self._callback is None or self._call is not None:
            return
        gap = max(self.spacing, self.last_cost / self.busy_share)
        at = max(now + self._rng.uniform(0, self.jitter), self._last + gap)
        self._call = self._clock.callLater(at - now, self._fire)

    def _fire(self):
        self._call = None
        now = self._clock.seconds()
        self._asked = {k: t for k, t in self._asked.items() if now - t < self.repeat}
        candidates = sorted(
            (bolt_id, digest) for bolt_id, digest in self._candidates().items()
            if (bolt_id, digest) not in self._asked)
        if not candidates:
            return
        bolt_id, digest = self._rng.choice(candidates)
        self._asked[(bolt_id, digest)] = now
        self._last = now
        self.requests += 1
        try:
            pulling = self._callback(bolt_id)
        except Exception:
            self.log.failure("on_digest_mismatch({bolt_id}) failed", bolt_id=bolt_id)
            return
        if hasattr(pulling, "addBoth"):
            pulling.addBoth(self._pulled, now)

    def _pulled(self, result, started):
        # A pull that merged something costs what it took; one that failed or
        # timed out (None) says nothing about snapshot sizes.
        self.last_cost = max(0.0, self._clock.seconds() - started) if result is not None else 0.0
        return result

    def stop(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
