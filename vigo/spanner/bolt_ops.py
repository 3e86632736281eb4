"""Draining and removing bolts, asked at any bolt (``SpannerService``'s half).

``drain(key, to)`` calls the ``drain`` action on the bolt to drain (it runs
there, in the background: ``vigo.spanner.drain``), ``drain_status(key)`` its
``drain-status``. ``remove(key, force)`` records, signed by the bolt asked,
that a drained bolt is removed for good: persisted, then gossiped. From then
on every bolt that holds the removal refuses the removed bolt's gossip
datagrams and peer logins. See docs/spanner.md ("Draining and removing a bolt").
"""

from vigo.spanner.errors import SpannerRefusal
from vigo.spanner.roster_store import save_roster

#: Seconds a bolt has to answer ``drain`` or ``drain-status``.
CALL_TIMEOUT = 30.0


class BoltOps:
    """``service`` is the asking bolt's ``SpannerService``."""

    def __init__(self, service):
        self.service = service

    def _call(self, bolt_id, action, args):
        from vigo.spanner.service import refusal_of

        service = self.service
        d = service.facade.call(bolt_id, action, args)
        d.addTimeout(CALL_TIMEOUT, service.reactor)
        return d.addErrback(refusal_of, bolt_id, action)

    async def publish_status(self, status):
        """The next seq of this bolt's own row with ``status``: persisted, gossiped."""
        service = self.service
        roster = service.require_member()
        candidate = roster.copy()
        candidate.add_row(roster.row(service.identity.id).successor(service.identity,
                                                                    status=status))
        await service.store.run(save_roster, candidate.copy())
        service.replace_roster(candidate)

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
