"""This bolt's own roster row: publishing a new seq of it, and telling the others.

Only a bolt signs its own row, so only it can change its status (draining) or
its addresses. ``publish`` signs the next seq, persists it and takes it in
(gossip then spreads the new digest, and tier-2 pulls the row).

A bolt that starts listening elsewhere (a port or an address changed in its
config) publishes its row with the new addresses, but the others would pull
that row from the old address, which no longer answers. So it also hands the
row to each of them over peer RPC (the ``announce-row`` action, through its
own connections), and again to any bolt gossip hears come back. Another
bolt's announcement is merged like any row (``take``): both signatures
verified, and a bolt may announce only its own row.

Its name and patterns change when its config file changes them and the
server is sent SIGHUP (``vigo.server.reload``): ``change`` signs the next
seq with them and announces it the same way.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from vigo.interfaces.components import IRowPublisher
from vigo.interfaces.errors import ActionError, Refusal
from vigo.spanner.canonical import SpannerError
from vigo.spanner.roster.parts import RosterParts
from vigo.spanner.roster.rows import REMOVED, Addresses, AdmissionRow

#: ``announce-row`` to a bolt that did not answer: again after this many
#: seconds, this many times in all.
ANNOUNCE_RETRY = 5.0
ANNOUNCE_TRIES = 12


@implementer(IRowPublisher)
class OwnRow(service.Service):
    """The row of the bolt whose ``identity`` this is; as a service, stopping
    it announces nothing more.

    ``roster`` is its ``ILocalRoster``; ``peers`` an ``IPeerCaller`` reaching
    the other bolts; ``clock`` an ``IReactorTime`` (retries);
    ``addresses()`` the bolt's advertised ``{"envoy", "api", "peer"}`` now;
    ``name`` and ``patterns`` what its config says (to warn at start-up when
    they differ from the row's: the row's stand until ``change``).
    """

    name = "own-row"
    log = Logger()

    def __init__(self, identity, roster, peers, clock, addresses, name, patterns):
        self._identity = identity
        self._roster = roster
        self._peers = peers
        self._clock = clock
        self._addresses = addresses
        self._name = name
        self._patterns = tuple(p.strip().lower() for p in patterns)
        self._announcing = False  # this bolt checked its row at start-up
        self._retries = {}  # bolt id -> the DelayedCall of the next announce-row
        # One new seq at a time: two signed at once would both be seq N+1, and
        # the roster would keep one of them (an equivocation), losing a change.
        self._publishing = defer.DeferredLock()

    def publish(self, **changes):
        """The next seq of this bolt's row with ``changes`` (``status``,
        ``addresses``, ...), signed by itself: persisted, then gossiped."""
        return self._publishing.run(self._publish, changes)

    def _publish(self, changes):
        roster = self._roster.require_member()
        candidate = roster.copy()
        candidate.add_row(roster.row(self._identity.id).successor(self._identity, **changes))
        return self._roster.commit(candidate)

    @defer.inlineCallbacks
    def republish_addresses(self):
        """After a restart: if this bolt now listens elsewhere than its row says,
        publish its row with the new addresses and announce it. True if it did.

        Every peer that gossip hears gets this bolt's row once from then on (an
        idempotent merge): a crash after a republish, before any peer heard of
        it, is then no different from a republish."""
        me = self._identity.id
        roster = self._roster.current
        row = None if roster is None else roster.row(me)
        if row is None or roster.is_removed(me) or row.status == "removed":
            return False
        self._announcing = True
        if self._name != row.name or (self._patterns and
                                      set(self._patterns) != set(row.patterns)):
            self.log.warn(
                "bolt {id}: the config's name {name!r} and patterns {patterns} differ from "
                "its roster row's ({row_name!r}, {row_patterns}): the row's stand; send the "
                "server SIGHUP to publish the spanner.bolt_name and spanner.patterns its "
                "config file sets", id=me,
                name=self._name, patterns=list(self._patterns), row_name=row.name,
                row_patterns=list(row.patterns))
        now = Addresses.of(self._addresses())
        if now.to_data() == row.addresses.to_data():
            return False
        self.log.info("bolt {id} listens at {now}, not at {was} as its row says: "
                      "publishing its row with the new addresses", id=me,
                      now=now.to_data(), was=row.addresses.to_data())
        yield self.publish(addresses=now)
        for bolt_id in roster.bolt_ids():
            if bolt_id != me and not roster.is_removed(bolt_id):
                self.announce_to(bolt_id)
        return True

    def changes_for(self, name=None, patterns=None):
        """What publishing ``name`` and ``patterns`` (None: keep it) would
        change in this bolt's row: ``{"name": ..., "patterns": (...)}`` with
        only what differs, checked as the roster will check the row. Raises
        ``Refusal`` if the row cannot take them (not a member, removed, a name
        another bolt has, a pattern the roster refuses)."""
        roster = self._roster.require_member()
        me = self._identity.id
        row = roster.row(me)
        changes = {}
        if name is not None and name != row.name:
            for bolt_id in roster.bolt_ids():
                other = roster.row(bolt_id)
                if bolt_id != me and (bolt_id == name or (other is not None
                                                         and other.name == name)):
                    raise Refusal("bad_request", "bolt %s is named %r already: a bolt's name "
                                  "must name it alone" % (bolt_id, name))
            changes["name"] = name
        if patterns is not None:
            patterns = tuple(sorted({p.strip().lower() for p in patterns}))
            if set(patterns) != set(row.patterns):
                changes["patterns"] = patterns
        if changes:
            if roster.is_removed(me) or row.status == REMOVED:
                raise Refusal("removed", "bolt %s is removed: its row is final" % (me,))
            try:
                row.successor(self._identity, **changes)
            except (SpannerError, ValueError, TypeError) as e:
                raise Refusal("bad_request", "the roster refuses it: %s" % (e,)) from None
        return changes

    @defer.inlineCallbacks
    def change(self, name=None, patterns=None):
        """Publish this bolt's row with a new ``name`` and/or ``patterns``
        (None: keep it) and announce it to every other bolt, as a restart on
        new addresses does; the new row, or None if the row has them already.
        Raises ``Refusal`` as ``changes_for`` does."""
        changes = self.changes_for(name, patterns)
        if not changes:
            return None
        me = self._identity.id
        was = self._roster.row(me)
        yield self.publish(**changes)
        row = self._roster.row(me)
        self._name = row.name
        self._patterns = tuple(row.patterns)
        self.log.info("bolt {id}: published seq {seq} of its row with {what} (was {was}), "
                      "and announcing it", id=me, seq=row.seq,
                      what=_described(changes), was=_described(
                          {key: getattr(was, key) for key in changes}))
        self._announcing = True
        roster = self._roster.current
        for bolt_id in roster.bolt_ids():
            if bolt_id != me and not roster.is_removed(bolt_id):
                self.announce_to(bolt_id)
        return row

    def announce_to(self, bolt_id, attempt=1):
        """Give bolt ``bolt_id`` this bolt's own row (``announce-row``), once
        this bolt has checked its row at start-up. A failure is logged and
        tried again ``ANNOUNCE_RETRY`` s later, ``ANNOUNCE_TRIES`` times in all
        (and whenever gossip hears the bolt come back)."""
        row = self._roster.row(self._identity.id)
        if not self._announcing or row is None:
            return None
        d = self._peers.call(bolt_id, "announce-row", {"row": row.to_data()})

        def failed(failure):
            self.log.info("could not give bolt {bolt} this bolt's new row yet: {why}",
                          bolt=bolt_id, why=failure.getErrorMessage())
            if attempt < ANNOUNCE_TRIES and self._announcing and bolt_id not in self._retries:
                self._retries[bolt_id] = self._clock.callLater(
                    ANNOUNCE_RETRY, self._announce_again, bolt_id, attempt + 1)

        return d.addErrback(failed)

    def _announce_again(self, bolt_id, attempt):
        del self._retries[bolt_id]
        self.announce_to(bolt_id, attempt)

    def stopService(self):
        service.Service.stopService(self)
        self.stop()

    def stop(self):
        """Announce nothing more (the bolt is stopping)."""
        self._announcing = False
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()

    @defer.inlineCallbacks
    def take(self, bolt_id, data):
        """Merge the row bolt ``bolt_id`` announces of itself; ``{"seq", "rejected"}``."""
        roster = self._roster.require_member()
        try:
            row = AdmissionRow.from_data(data)
        except (SpannerError, ValueError, TypeError, KeyError) as e:
            raise ActionError("the row is not an admission row: %s" % (e,),
                              code="malformed") from None
        if row.bolt_id != bolt_id:
            raise ActionError("bolt %s may announce only its own row, not %s's"
                              % (bolt_id, row.bolt_id), code="refused")
        report = yield self._roster.merge(RosterParts(roster.federation_id, roster.founder_id,
                                                      rows=(row,)))
        held = self._roster.row(bolt_id)
        return {"seq": None if held is None else held.seq, "rejected": sorted(report.rejected)}


def _described(changes):
    """``name 'a', patterns *.a.test, *.b.test`` for a log line."""
    shown = []
    for key, value in sorted(changes.items()):
        shown.append("%s %s" % (key, ", ".join(value) if key == "patterns" else repr(value)))
    return ", ".join(shown)
