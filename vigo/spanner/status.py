"""What admin reads show of a bolt and its federation.

Built from the roster and the observability cache (gossip) only: no peer is
called, so a read answers even when bolts are down, and says how old each
figure is.
"""


def envoy_summary(counters, counters_age, rate, last_heard_age):
    """A bolt's envoys at a glance, from the observability cache (no peer call).

    ``owned`` and ``online`` are the bolt's gossiped counters, ``as_of`` their
    age in seconds; ``checkin_rate`` (per second) is measured over a few
    seconds of datagrams and left out until there are enough; ``last_heard_age``
    is when the bolt was last heard from at all. None when nothing was heard.
    """
    if not counters:
        return None
    summary = {"owned": counters.get("envoys_owned"), "online": counters.get("envoys_online"),
               "as_of": counters_age, "last_heard_age": last_heard_age}
    if rate is not None:
        summary["checkin_rate"] = round(rate, 2)
    return summary


def describe_bolt(spanner, row, states):
    """One roster row with its liveness and envoy figures, for admin reads."""
    me = row.bolt_id == spanner.identity.id
    heard = states.get(row.bolt_id, {})
    if me:
        liveness = {"state": "self", "last_heard_age": 0.0, "evidence_age": 0.0}
        counters, counters_age = spanner.server.gossip_counters(), 0.0
        rate = spanner.own_checkins.rate
    else:
        liveness = {"state": heard.get("state", "unknown"),
                    "last_heard_age": heard.get("last_heard"),
                    "evidence_age": heard.get("evidence_age")}
        counters, counters_age = heard.get("counters"), heard.get("counters_age")
        rate = heard.get("checkin_rate")
    return {
        "bolt_id": row.bolt_id, "name": row.name,
        "status": spanner.roster.status_of(row.bolt_id), "patterns": list(row.patterns),
        "addresses": row.addresses.to_data(), "seq": row.seq,
        "admitted_by": row.admitted_by, "self": me, "liveness": liveness,
        "counters": counters, "counters_age": counters_age,
        "envoys": envoy_summary(counters, counters_age, rate, liveness["last_heard_age"]),
    }


#: Pending moves a status names (the count says how many there are).
MOVES_SHOWN = 20

REMOVED_HINT = ("this bolt was removed from the federation: the other bolts refuse its "
                "gossip and peer calls, and its identity cannot join again; stop it")


def federation_status(spanner):
    """``GET /api/v1/spanner/status`` of the bolt whose ``SpannerService`` is ``spanner``."""
    base = {"mode": "spanner", "bolt_id": spanner.identity.id,
            "name": spanner.config.spanner.bolt_name}
    if spanner.roster is None:
        base.update(state="unfederated", federation_id=None, founder_id=None, digest=None,
                    bolts={"total": 0, "active": 0, "draining": 0, "removed": 0},
                    peers={"alive": 0, "suspect": 0, "down": 0, "unknown": 0},
                    hint="not in a federation yet: 'vigocli spanner init' founds one, "
                         "'vigocli spanner bolt join TOKEN' joins one")
        return base
    roster = spanner.roster
    me = roster.row(spanner.identity.id)
    counts = {"total": 0, "active": 0, "draining": 0, "removed": 0}
    for bolt_id in roster.bolt_ids():
        counts["total"] += 1
        status = roster.status_of(bolt_id)
        counts[status] = counts.get(status, 0) + 1
    peers = {"alive": 0, "suspect": 0, "down": 0, "unknown": 0}
    for state in spanner.peer_states().values():
        peers[state.get("state", "unknown")] = peers.get(state.get("state", "unknown"), 0) + 1
    removed = roster.is_removed(spanner.identity.id)
    pending = spanner.handover.pending
    base.update(state="removed" if removed else "member", federation_id=roster.federation_id,
                founder_id=roster.founder_id, digest=roster.digest().hex(),
                name=me.name if me is not None else base["name"],
                bolts=counts, peers=peers, hint=REMOVED_HINT if removed else None,
                moves_pending=None if pending is None else {
                    "count": len(pending),
                    "as_of_age": max(0.0, spanner.reactor.seconds() - spanner.handover.pending_at),
                    "moves": [{"envoy_id": envoy_id, "to": to}
                              for envoy_id, to in sorted(pending.items())[:MOVES_SHOWN]]})
    return base
