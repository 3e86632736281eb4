"""What admin reads show of a bolt and its federation, and what it tells of itself.

Built from the roster and the observability cache (gossip) only: no peer is
called, so a read answers even when bolts are down, and says how old each
figure is. ``OwnFigures`` are this bolt's own counters: what its gossip
datagrams carry, and what it says of itself in a read.
"""

from vigo.spanner.gossip.observability import CheckinRate
from vigo.spanner.roster.local import REMOVED_HINT


class OwnFigures:
    """This bolt's envoy counters from its ``fleet``; every ``counters()``
    (each gossip tick) also measures its own check-in rate on ``clock``."""

    def __init__(self, fleet, clock):
        self._fleet = fleet
        self._clock = clock
        self.checkins = CheckinRate()

    @property
    def rate(self):
        """Check-ins per second over the last few seconds, or None."""
        return self.checkins.rate

    def current(self):
        """This bolt's counters now."""
        counts = self._fleet.counts()
        stats = self._fleet.stats
        return {
            "envoys_owned": counts["active"], "envoys_online": counts["online"],
            "checkins": sum(stats.checkins.values()), "enrollments": stats.enrollments,
            "pushes": stats.pushes, "load_permille": 0, "status": "active",
        }

    def counters(self):
        """What this bolt tells the federation about itself, each gossip tick
        (which also measures its check-in rate)."""
        counters = self.current()
        self.checkins.observe(counters["checkins"], self._clock.seconds())
        return counters


#: Liveness states whose figures are current (a bolt suspected or down has
#: only the figures it last sent: they are shown as such, aged).
CURRENT = ("self", "alive")


def envoy_summary(counters, counters_age, rate, last_heard_age, liveness="alive"):
    """A bolt's envoys at a glance, from the observability cache (no peer call).

    ``owned`` and ``online`` are the bolt's gossiped counters, ``as_of`` their
    age in seconds; ``checkin_rate`` (per second) is measured over a few
    seconds of datagrams and left out until there are enough; ``last_heard_age``
    is when the bolt was last heard from at all. None when nothing was heard.
    A bolt not heard as alive (``liveness``) has ``stale`` figures: the last it
    sent, ``as_of`` seconds old, and no check-in rate (it has none now).
    """
    if not counters:
        return None
    stale = liveness not in CURRENT
    summary = {"owned": counters.get("envoys_owned"), "online": counters.get("envoys_online"),
               "as_of": counters_age, "last_heard_age": last_heard_age, "stale": stale}
    if rate is not None and not stale:
        summary["checkin_rate"] = round(rate, 2)
    return summary


#: Pending moves a status names (the count says how many there are).
MOVES_SHOWN = 20




class FederationStatus:
    """This bolt's view of its federation, for ``/api/v1/spanner/...`` reads.

    ``bolt_id`` is this bolt's id, ``name()`` its name now (its row's, else the
    configured one);
    ``roster`` its ``ILocalRoster``; ``peer_states()`` the gossip liveness
    view; ``own`` its ``OwnFigures``; ``repair`` its ``HandoverRepair`` (the
    moves pending at its last round); ``clock`` an ``IReactorTime``.
    """

    def __init__(self, bolt_id, name, roster, peer_states, own, repair, clock):
        self.bolt_id = bolt_id
        self.name = name
        self._roster = roster
        self._peer_states = peer_states
        self._own = own
        self._repair = repair
        self._clock = clock

    def describe(self, row, states=None):
        """One roster row with its liveness and envoy figures."""
        states = self._peer_states() if states is None else states
        me = row.bolt_id == self.bolt_id
        heard = states.get(row.bolt_id, {})
        if me:
            liveness = {"state": "self", "last_heard_age": 0.0, "evidence_age": 0.0}
            counters, counters_age = self._own.current(), 0.0
            rate = self._own.rate
        else:
            liveness = {"state": heard.get("state", "unknown"),
                        "last_heard_age": heard.get("last_heard"),
                        "evidence_age": heard.get("evidence_age")}
            counters, counters_age = heard.get("counters"), heard.get("counters_age")
            rate = heard.get("checkin_rate")
        return {
            "bolt_id": row.bolt_id, "name": row.name,
            "status": self._roster.status_of(row.bolt_id), "patterns": list(row.patterns),
            "addresses": row.addresses.to_data(), "seq": row.seq,
            "admitted_by": row.admitted_by, "self": me, "liveness": liveness,
            "counters": counters, "counters_age": counters_age,
            "envoys": envoy_summary(counters, counters_age, rate, liveness["last_heard_age"],
                                    liveness["state"]),
        }

    def bolts(self):
        """Every row of the roster, described, by name."""
        roster = self._roster.require_member()
        states = self._peer_states()
        rows = [roster.row(bolt_id) for bolt_id in roster.bolt_ids()]
        return [self.describe(row, states)
                for row in sorted((r for r in rows if r is not None),
                                  key=lambda r: (r.name, r.bolt_id))]

    def reachable_bolts(self):
        """``(bolt_id, name)`` of every bolt that owns envoys: the members that are
        not removed, or this bolt alone before it is in a federation."""
        roster = self._roster.current
        if roster is None:
            return [(self.bolt_id, self.name())]
        return [(bolt_id, roster.row(bolt_id).name) for bolt_id in sorted(roster.bolt_ids())
                if roster.row(bolt_id) is not None and not roster.is_removed(bolt_id)]

    def status(self):
        """``GET /api/v1/spanner/status``: this bolt and its federation at a glance."""
        base = {"mode": "spanner", "bolt_id": self.bolt_id, "name": self.name()}
        roster = self._roster.current
        if roster is None:
            base.update(state="unfederated", federation_id=None, founder_id=None, digest=None,
                        bolts={"total": 0, "active": 0, "draining": 0, "removed": 0},
                        peers={"alive": 0, "suspect": 0, "down": 0, "unknown": 0},
                        hint="not in a federation yet: 'vigocli spanner init' founds one, "
                             "'vigocli spanner bolt join TOKEN' joins one")
            return base
        counts = {"total": 0, "active": 0, "draining": 0, "removed": 0}
        for bolt_id in roster.bolt_ids():
            counts["total"] += 1
            status = roster.status_of(bolt_id)
            counts[status] = counts.get(status, 0) + 1
        peers = {"alive": 0, "suspect": 0, "down": 0, "unknown": 0}
        for state in self._peer_states().values():
            peers[state.get("state", "unknown")] = peers.get(state.get("state", "unknown"), 0) + 1
        removed = roster.is_removed(self.bolt_id)
        pending = self._repair.pending
        base.update(state="removed" if removed else "member", federation_id=roster.federation_id,
                    founder_id=roster.founder_id, digest=roster.digest().hex(),
                    bolts=counts, peers=peers,
                    hint=REMOVED_HINT if removed else None,
                    moves_pending=None if pending is None else {
                        "count": len(pending),
                        "as_of_age": max(0.0, self._clock.seconds() - self._repair.pending_at),
                        "moves": [{"envoy_id": envoy_id, "to": to}
                                  for envoy_id, to in sorted(pending.items())[:MOVES_SHOWN]]})
        return base
