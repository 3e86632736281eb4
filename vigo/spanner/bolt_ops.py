"""Reassigning envoys, draining and removing bolts, asked at any bolt
(``SpannerService``'s half).

``reassign(key, to)`` finds the one bolt holding envoy ``key`` active and runs
the ``reassign`` action there (``vigo.plugins.vigo_reassign``).
``drain(key, to)`` calls the ``drain`` action on the bolt to drain (it runs
there, in the background: ``vigo.spanner.drain``), ``drain_status(key)`` its
``drain-status``. ``remove(key, force)`` records, signed by the bolt asked,
that a drained bolt is removed for good: persisted, then gossiped. From then
on every bolt that holds the removal refuses the removed bolt's gossip
datagrams and peer logins. See docs/operations.md.
"""

from vigo.spanner.errors import SpannerRefusal
from vigo.spanner.reads import action_refusal
from vigo.spanner.roster.store import save_roster

#: Seconds a bolt has to answer ``reassign``, ``drain`` or ``drain-status``
#: (a reassign: two peer calls, three writes).
CALL_TIMEOUT = 30.0
#: ``announce-row`` to a bolt that did not answer: again after this many
#: seconds, this many times in all.
ANNOUNCE_RETRY = 5.0
ANNOUNCE_TRIES = 12
#: HTTP status of an action's refusal, by its code (others: 409).
REFUSAL_STATUS = {"not_found": 404, "malformed": 400, "bad_answer": 502,
                  "unreachable": 503}


def refusal_of(failure, bolt_id, action):
    """A failed reassign as a ``SpannerRefusal`` that keeps the refusal's code."""
    from vigo.fleet.refusal import refusal_from_text
    from vigo.interfaces.errors import ActionError

    if failure.check(ActionError):
        refusal = refusal_from_text(failure.getErrorMessage(), "action_failed")
        if refusal.code == "action_failed":
            raise SpannerRefusal("action_failed", "%s on bolt %s: %s"
                                 % (action, bolt_id, refusal.reason), 502)
        reason = refusal.reason
        if bolt_id not in reason:  # most reasons name the bolt already
            reason = "%s (on bolt %s)" % (reason, bolt_id)
        raise SpannerRefusal(refusal.code, reason, REFUSAL_STATUS.get(refusal.code, 409))
    return action_refusal(failure, bolt_id, action)


class BoltOps:
    """``service`` is the asking bolt's ``SpannerService``."""

    def __init__(self, service):
        self.service = service
        self._announcing = False  # this bolt checked its row at start-up
        self._retries = {}  # bolt id -> the DelayedCall of the next announce-row

    def _call(self, bolt_id, action, args):
        service = self.service
        d = service.facade.call(bolt_id, action, args)
        d.addTimeout(CALL_TIMEOUT, service.reactor)
        return d.addErrback(refusal_of, bolt_id, action)

    async def reassign(self, key, to):
        """Move envoy ``key`` (id or hostname) to bolt ``to`` (id or name): find
        the one bolt holding it active and run ``reassign`` there."""
        service = self.service
        roster = service.require_member()
        target = service.resolve(to)
        status = roster.status_of(target)
        if status != "active":
            raise SpannerRefusal("bolt_not_active", "bolt %s (%s) is %s: only an active bolt "
                                 "takes envoys" % (target, roster.row(target).name, status), 409)
        holders, silent = await service.fleet_reads.holders(key)
        active = [h for h in holders if h[2].get("state") == "active"]
        sources = [h for h in active if h[0] != target]
        names = dict(service.reachable_bolts())
        if len(sources) > 1:
            raise SpannerRefusal("conflict", "envoy %r is active on %d bolts (%s); revoke it "
                                 "on all but one first" % (key, len(sources), ", ".join(
                                     h[0] for h in sources)), 409)
        if not sources:
            if active:  # on the destination alone: done already
                envoy = active[0][2]
                return {"envoy_id": envoy["id"], "hostname": envoy["hostname"], "from": None,
                        "from_name": None, "to": target, "to_name": names.get(target),
                        "changed": False, "delivered": None}
            if silent:
                raise SpannerRefusal("unreachable", "envoy %r is active on none of the bolts "
                                     "that answered; it may be on one that did not: %s"
                                     % (key, "; ".join(silent)), 503)
            if holders:
                raise SpannerRefusal("not_active", "envoy %r is active on no bolt (%s)" % (
                    key, ", ".join("%s on %s" % (h[2].get("state"), h[0]) for h in holders)),
                    409)
            raise SpannerRefusal("not_found", "no envoy %r on any of the %d bolts"
                                 % (key, len(names)), 404)
        source, source_name, envoy = sources[0]
        answer = await self._call(source, "reassign", {"envoy": envoy["id"], "to": target})
        return dict(answer, from_name=source_name, to_name=names.get(target))

    async def publish_status(self, status):
        """The next seq of this bolt's own row with ``status``: persisted, gossiped."""
        await self.publish_row(status=status)

    async def publish_row(self, **changes):
        """The next seq of this bolt's own row with ``changes`` (``status``,
        ``addresses``, ...), signed by itself: persisted, then gossiped."""
        service = self.service
        roster = service.require_member()
        candidate = roster.copy()
        candidate.add_row(roster.row(service.identity.id).successor(service.identity,
                                                                    **changes))
        await service.store.run(save_roster, candidate.copy())
        service.replace_roster(candidate)

    async def republish_addresses(self):
        """After a restart: if this bolt now listens elsewhere than its row says
        (a port or address changed in its config), publish its row with the new
        addresses, so that peers, pulls and redirected envoys reach it. True if
        it did."""
        from vigo.spanner.roster.rows import Addresses

        service = self.service
        roster, me = service.roster, service.identity.id
        row = None if roster is None else roster.row(me)
        if row is None or roster.is_removed(me) or row.status == "removed":
            return False
        # Every peer that gossip hears gets this bolt's row once (an idempotent
        # merge): a crash after a republish, before any peer heard of it, is
        # then no different from a republish.
        self._announcing = True
        spanner = service.config.spanner
        patterns = tuple(p.strip().lower() for p in spanner.patterns)
        if spanner.bolt_name != row.name or (patterns and set(patterns) != set(row.patterns)):
            service.log.warn(
                "bolt {id}: the config's name {name!r} and patterns {patterns} differ from "
                "its roster row's ({row_name!r}, {row_patterns}); a bolt's name and patterns "
                "are fixed once it founded or joined: the row's stand", id=me,
                name=spanner.bolt_name, patterns=list(patterns), row_name=row.name,
                row_patterns=list(row.patterns))
        now = Addresses.of(service.addresses())
        if now.to_data() == row.addresses.to_data():
            return False
        service.log.info("bolt {id} listens at {now}, not at {was} as its row says: "
                         "publishing its row with the new addresses", id=me,
                         now=now.to_data(), was=row.addresses.to_data())
        await self.publish_row(addresses=now)
        # The others would pull the new row from our old address: tell them.
        for bolt_id in roster.bolt_ids():
            if bolt_id != me and not roster.is_removed(bolt_id):
                self.announce_row_to(bolt_id)
        return True

    def announce_row_to(self, bolt_id, attempt=1):
        """Give bolt ``bolt_id`` this bolt's own row (``announce-row``), once
        this bolt has checked its row at start-up. A failure is logged
        and tried again ``ANNOUNCE_RETRY`` s later, ``ANNOUNCE_TRIES`` times in
        all (and whenever gossip hears the bolt come back)."""
        service = self.service
        if not self._announcing or service.roster is None:
            return None
        row = service.roster.row(service.identity.id)
        d = service.facade.call(bolt_id, "announce-row", {"row": row.to_data()})

        def failed(failure):
            service.log.info("could not give bolt {bolt} this bolt's new addresses yet: {why}",
                             bolt=bolt_id, why=failure.getErrorMessage())
            if attempt < ANNOUNCE_TRIES and service.running and bolt_id not in self._retries:
                self._retries[bolt_id] = service.reactor.callLater(
                    ANNOUNCE_RETRY, self._announce_again, bolt_id, attempt + 1)

        return d.addErrback(failed)

    def _announce_again(self, bolt_id, attempt):
        del self._retries[bolt_id]
        self.announce_row_to(bolt_id, attempt)

    def stop(self):
        """Announce nothing more (the bolt is stopping)."""
        self._announcing = False
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()

    async def take_row(self, bolt_id, data):
        """Merge the row bolt ``bolt_id`` announces of itself; the seq now held."""
        from vigo.interfaces.errors import ActionError
        from vigo.spanner.canonical import SpannerError
        from vigo.spanner.roster.parts import RosterParts
        from vigo.spanner.roster.rows import AdmissionRow

        service = self.service
        roster = service.require_member()
        try:
            row = AdmissionRow.from_data(data)
        except (SpannerError, ValueError, TypeError, KeyError) as e:
            raise ActionError("malformed: the row is not an admission row: %s" % (e,)) from None
        if row.bolt_id != bolt_id:
            raise ActionError("refused: bolt %s may announce only its own row, not %s's"
                              % (bolt_id, row.bolt_id))
        report = await service.merge(RosterParts(roster.federation_id, roster.founder_id,
                                                 rows=(row,)))
        held = service.roster.row(bolt_id)
        return {"seq": None if held is None else held.seq,
                "rejected": sorted(report.rejected)}

    async def drain(self, key, to=None):
        service = self.service
        roster = service.require_member()
        bolt_id = service.resolve(key)
        if roster.is_removed(bolt_id):
            raise SpannerRefusal("removed", "bolt %s was removed; it has nothing to drain"
                                 % (bolt_id,), 409)
        args = {}
        if to is not None:
            args["to"] = service.resolve(to)
            if args["to"] == bolt_id:
                raise SpannerRefusal("same_bolt", "bolt %s cannot drain to itself"
                                     % (bolt_id,), 409)
            status = roster.status_of(args["to"])
            if status != "active":
                raise SpannerRefusal("bolt_not_active", "bolt %s is %s: only an active bolt "
                                     "takes envoys" % (args["to"], status), 409)
        answer = await self._call(bolt_id, "drain", args)
        return dict(answer, name=roster.row(bolt_id).name)

    async def drain_status(self, key):
        service = self.service
        roster = service.require_member()
        bolt_id = service.resolve(key)
        answer = await self._call(bolt_id, "drain-status", {})
        return dict(answer, name=roster.row(bolt_id).name)

    async def remove(self, key, force=False):
        """Record the removal of a drained bolt (or, with ``force``, of one that
        cannot be reached)."""
        service = self.service
        roster = service.require_member()
        bolt_id = service.resolve(key)
        name = roster.row(bolt_id).name
        if roster.is_removed(bolt_id):
            return {"bolt_id": bolt_id, "name": name, "removed": True, "changed": False}
        if bolt_id == service.identity.id:
            raise SpannerRefusal("self", "bolt %s cannot remove itself: ask another bolt"
                                 % (bolt_id,), 409)
        try:
            drained = await self._call(bolt_id, "drain-status", {})
        except SpannerRefusal as e:
            if e.code != "unreachable" or not force:
                hint = ("; --force removes it anyway, and the envoys it holds stay "
                        "unreached" if e.code == "unreachable" else "")
                raise SpannerRefusal(e.code, "%s%s" % (e, hint), e.status) from None
            drained = None
        if drained is not None and (drained.get("state") != "done"
                                    or drained.get("remaining")):
            raise SpannerRefusal("not_drained", "bolt %s (%s) is not drained (drain %s, %s "
                                 "active envoys): drain it first with 'vigocli spanner bolt "
                                 "drain %s'" % (bolt_id, name, drained.get("state"),
                                                drained.get("remaining"), name), 409)
        candidate = roster.copy()
        candidate.remove(service.identity, bolt_id, int(service.reactor.seconds() * 1000))
        await service.store.run(save_roster, candidate.copy())
        service.replace_roster(candidate)
        service.log.info("bolt {id} ({name}) removed from the federation", id=bolt_id,
                         name=name)
        return {"bolt_id": bolt_id, "name": name, "removed": True, "changed": True,
                "forced": drained is None}
