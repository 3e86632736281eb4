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

    def __init__(self, clock, rng, callback, candidates, jitter, spacing, repeat):
        self._clock = clock
        self._rng = rng
        self._callback = callback
        self._candidates = candidates
        self.jitter = jitter
        self.spacing = spacing
        self.repeat = repeat
        self._call = None
        self._last = -math.inf
        self._asked = {}
        self.requests = 0

    def mismatch(self, now):
        """A datagram with another digest arrived: schedule a request if none is."""
        if self._callback is None or self._call is not None:
            return
        at = max(now + self._rng.uniform(0, self.jitter), self._last + self.spacing)
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
            self._callback(bolt_id)
        except Exception:
            self.log.failure("on_digest_mismatch({bolt_id}) failed", bolt_id=bolt_id)

    def stop(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
