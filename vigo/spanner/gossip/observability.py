"""The observability cache: each peer's newest self-reported figures.

Admin reads and the dashboard answer counts from here rather than asking every
bolt, so they are instant and work while peers are unreachable; every figure is
served with its age so a reader can tell fresh numbers from stale ones. The
cache also holds the replay guard ((incarnation, seq) of the last accepted
datagram per bolt) and the source address each peer last spoke from, which is
how unicast mode learns whom to gossip to.
"""


#: Seconds of datagrams a check-in rate is measured over: long enough that
#: the jitter of a 500 ms gossip tick does not show, short enough to follow load.
RATE_WINDOW = 5.0


class CheckinRate:
    """Check-ins per second, from a cumulative counter sampled now and then.

    The rate is measured between the oldest sample of the current window and
    the newest, once they are ``window`` seconds apart; it is None until then.
    A counter that went down (the bolt restarted) starts over.
    """

    __slots__ = ("window", "rate", "_base", "_base_at")

    def __init__(self, window=RATE_WINDOW):
        self.window = window
        self.rate = None
        self._base = self._base_at = None

    def observe(self, checkins, now):
        if self._base is None or checkins < self._base or now < self._base_at:
            self._base, self._base_at, self.rate = checkins, now, None
            return
        if now - self._base_at >= self.window:
            self.rate = (checkins - self._base) / (now - self._base_at)
            self._base, self._base_at = checkins, now


class PeerRecord:
    """The last accepted datagram of one bolt, as far as readers care."""

    __slots__ = ("counters", "digest", "incarnation", "seq", "received_at", "address",
                 "checkins")

    def __init__(self, gossip, now, address):
        self.checkins = CheckinRate()
        self.update(gossip, now, address)

    @property
    def checkin_rate(self):
        """Check-ins per second over the last few seconds of datagrams, or None."""
        return self.checkins.rate

    def update(self, gossip, now, address):
        self.checkins.observe(gossip.counters.checkins, now)
        self.counters = gossip.counters
        self.digest = gossip.digest
        self.incarnation = gossip.incarnation
        self.seq = gossip.seq
        self.received_at = now
        self.address = address


class ObservabilityCache:
    """Per-bolt ``PeerRecord`` plus the replay check that guards it."""

    def __init__(self):
        self._records = {}

    def __contains__(self, bolt_id):
        return bolt_id in self._records

    def __iter__(self):
        return iter(self._records)

    def get(self, bolt_id):
        return self._records.get(bolt_id)

    def items(self):
        return self._records.items()

    def is_replay(self, gossip):
        """True when ``gossip`` is not newer than the last accepted datagram of
        its bolt: a new incarnation always wins, then a higher seq."""
        record = self._records.get(gossip.bolt_id)
        if record is None:
            return False
        return (gossip.incarnation, gossip.seq) <= (record.incarnation, record.seq)

    def accept(self, gossip, now, address):
        record = self._records.get(gossip.bolt_id)
        if record is None:
            self._records[gossip.bolt_id] = PeerRecord(gossip, now, address)
        else:
            record.update(gossip, now, address)

    def forget(self, bolt_id):
        self._records.pop(bolt_id, None)

    def addresses(self):
        """{bolt id: the address its last accepted datagram came from}."""
        return {bolt_id: r.address for bolt_id, r in self._records.items() if r.address}
