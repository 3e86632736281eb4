"""The tier-1 failure detector: alive -> suspect -> down, on shared evidence.

Why not plain per-sender timeouts: at 50 % datagram loss six losses in a row
(3 s at 500 ms gossip) happen every few minutes per pair, so a timeout short
enough to catch a dead bolt in ~3 s would call live bolts down. Instead every
datagram also carries, for the peers it has room for, how long ago its sender
last had evidence that each of them was alive. An observer's evidence for bolt
X is the freshest of

* its own last datagram from X (age 0 at receipt), and
* every report "X was alive ``a`` ms ago" received ``t`` seconds ago (a + t),

so a live bolt's liveness reaches each observer by N-1 independent relays, and
one lost datagram hardly matters; a dead bolt's evidence ages everywhere at the
same pace, from its last datagram, so it is down everywhere ``down_after``
after it stopped. Evidence is a lower bound on "alive since": ages are rounded
up and each relay hop adds ``HOP_PENALTY``, so stale news can never make a
dead bolt look fresher than it is by more than transit time.

States: ``unknown`` (in the roster, never heard: down once ``down_after`` has
passed since tracking began), ``alive``, ``suspect`` (evidence older than
``suspect_after``), ``down`` (older than ``down_after``). Suspect becomes alive
on any fresh evidence; down becomes alive only on evidence newer than the down
verdict itself, which a dead bolt cannot produce.

Thresholds derive from the gossip interval: suspect after 3, down after 6
intervals (1.5 s and 3 s at 500 ms). With +-20 % send jitter the longest gap
between two datagrams of a live bolt is 1.2 intervals, so a bolt frozen for up
to 4.8 intervals (2.4 s at 500 ms) is never called down.
"""

from collections import Counter

UNKNOWN, ALIVE, SUSPECT, DOWN = "unknown", "alive", "suspect", "down"
SUSPECT_INTERVALS = 3.0
DOWN_INTERVALS = 6.0
HOP_PENALTY = 0.001


def thresholds(interval, suspect_after=None, down_after=None):
    """(suspect_after, down_after) in seconds for a gossip ``interval``."""
    suspect = suspect_after if suspect_after is not None else SUSPECT_INTERVALS * interval
    down = down_after if down_after is not None else DOWN_INTERVALS * interval
    if not 0 < suspect < down:
        raise ValueError("need 0 < suspect_after < down_after")
    return suspect, down


class Liveness:
    """What the detector knows about one peer. Times are clock seconds."""

    __slots__ = ("state", "since", "evidence", "direct", "transitions")

    def __init__(self, now):
        self.state = UNKNOWN
        self.since = now
        self.evidence = None  # freshest time the peer is known to have been alive
        self.direct = None  # receipt time of its last accepted datagram
        self.transitions = 0


class FailureDetector:
    """Per-peer liveness from direct and relayed evidence, on an injected clock.

    A single timer is kept at the earliest moment any peer could cross a
    threshold; evidence only ever gets fresher, so that moment only moves later
    and the timer is re-armed when it fires (or earlier, when a peer revives).
    ``on_change(bolt_id, old, new)`` is called on every transition.
    """

    def __init__(self, clock, suspect_after, down_after, on_change=None):
        self._clock = clock
        self.suspect_after = suspect_after
        self.down_after = down_after
        self._on_change = on_change
        self._peers = {}
        self._timer = None
        self.transitions = Counter()

    def __contains__(self, bolt_id):
        return bolt_id in self._peers

    def __iter__(self):
        return iter(self._peers)

    def get(self, bolt_id):
        return self._peers.get(bolt_id)

    def state(self, bolt_id):
        peer = self._peers.get(bolt_id)
        return peer.state if peer is not None else None

    def track(self, bolt_id):
        """Start watching ``bolt_id`` (no-op when already watched)."""
        peer = self._peers.get(bolt_id)
        if peer is None:
            now = self._clock.seconds()
            peer = self._peers[bolt_id] = Liveness(now)
            self._arm(now + self.down_after)
        return peer

    def track_many(self, bolt_ids):
        """``track`` each of ``bolt_ids`` (a roster's worth at once: one clock
        read and one timer for all)."""
        now = self._clock.seconds()
        peers = self._peers
        added = False
        for bolt_id in bolt_ids:
            if bolt_id not in peers:
                peers[bolt_id] = Liveness(now)
                added = True
        if added:
            self._arm(now + self.down_after)

    def forget(self, bolt_id):
        self._peers.pop(bolt_id, None)

    def heard(self, bolt_id, now):
        """An accepted datagram from ``bolt_id`` arrived at ``now``."""
        peer = self._peers.get(bolt_id) or self.track(bolt_id)
        peer.direct = now
        self._fresher(bolt_id, peer, now, now)

    def relayed(self, bolt_id, evidence, now):
        """Some peer reported ``bolt_id`` alive at clock time ``evidence``."""
        peer = self._peers.get(bolt_id) or self.track(bolt_id)
        if peer.evidence is None or evidence > peer.evidence:
            self._fresher(bolt_id, peer, evidence, now)

    def _fresher(self, bolt_id, peer, evidence, now):
        peer.evidence = evidence
        state = peer.state
        if state == ALIVE:
            return
        if now - evidence >= self.suspect_after:
            return
        if state == DOWN and evidence <= peer.since:
            return  # news from before the verdict: the peer may still be dead
        self._transition(bolt_id, peer, ALIVE, now)
        self._arm(evidence + self.suspect_after)

    def evidence_age(self, bolt_id, now=None):
        peer = self._peers.get(bolt_id)
        if peer is None or peer.evidence is None:
            return None
        return (self._clock.seconds() if now is None else now) - peer.evidence

    def evaluate(self):
        """Apply every timeout due now and re-arm the timer for the next one."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        now = self._clock.seconds()
        suspect_after, down_after = self.suspect_after, self.down_after
        upcoming = None
        for bolt_id, peer in list(self._peers.items()):
            state = peer.state
            if state == DOWN:
                continue
            base = peer.since if peer.evidence is None else peer.evidence
            age = now - base
            if age >= down_after:
                self._transition(bolt_id, peer, DOWN, now)
                continue
            if state == ALIVE and age >= suspect_after:
                self._transition(bolt_id, peer, SUSPECT, now)
                state = SUSPECT
            due = base + (suspect_after if state == ALIVE else down_after)
            if upcoming is None or due < upcoming:
                upcoming = due
        if upcoming is not None:
            self._arm(upcoming)

    def _arm(self, due):
        now = self._clock.seconds()
        delay = max(0.0, due - now)
        timer = self._timer
        if timer is None or not timer.active():
            self._timer = self._clock.callLater(delay, self.evaluate)
        elif timer.getTime() > due:
            timer.reset(delay)

    def _transition(self, bolt_id, peer, new, now):
        old = peer.state
        peer.state = new
        peer.since = now
        peer.transitions += 1
        self.transitions["%s->%s" % (old, new)] += 1
        if self._on_change is not None:
            self._on_change(bolt_id, old, new)

    def stop(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
