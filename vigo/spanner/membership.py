"""Membership: found a federation, join one, admit a joiner, remove a bolt.

One-shot really means one decider: an invite (``vigo.spanner.invites``) is
redeemed only at the bolt that minted it, in one transaction of its database
that also stores the admitted row and the consumed token; only then is the
joiner answered (with a signed snapshot). The ``consumed_tokens`` G-Set then
tells every other bolt to refuse the token too. If the minter is unreachable,
the join fails with a clear error and nothing is admitted anywhere.

A bolt is removed, by any other bolt, once it is drained (or, with ``force``,
when it cannot be reached): a removal record, signed by the bolt asked, is
persisted, then gossiped, and from then on every bolt that holds it refuses
the removed bolt's gossip and peer logins. Removal is final for that identity.
"""

from twisted.internet import defer
from twisted.logger import Logger

from vigo.hostnames import HostnameError
from vigo.identity import key_id
from vigo.interfaces.errors import JoinRefused, PeerError, PeerNoAnswer, PeerUnreachable, Refusal
from vigo.spanner.canonical import SpannerError
from vigo.spanner.invites import Invite, InviteError, redeem_invite, redeemed_by
from vigo.spanner.peer.asking import ask
from vigo.spanner.roster.crdt import Roster, new_federation_id
from vigo.spanner.roster.rows import AdmissionRow
from vigo.spanner.roster.snapshot import SnapshotError, open_snapshot, sign_snapshot
from vigo.spanner.roster.store import save_roster

#: Seconds a join may take to reach the minter, and for the minter to answer.
JOIN_TIMEOUT = 15.0


def _admit_job(cursor, invite, bolt_id, now_ms, parts):
    redeem_invite(cursor, invite, bolt_id, now_ms)
    save_roster(cursor, parts)


class Membership:
    """The membership operations of one bolt.

    * ``identity``: the bolt's; ``roster``: its ``ILocalRoster``;
    * ``clock``: an ``IReactorTime`` (wall time);
    * ``addresses()``: the bolt's advertised ``{"envoy", "api", "peer"}``;
    * ``name``, ``patterns``: the bolt's configured name and partition;
    * ``peers``: an ``IPeerCaller`` reaching other bolts (a removal asks the
      bolt whether it is drained);
    * ``dial(address, fingerprint, bolt_id)``: a new, unstarted client to a
      minter's peer port (``vigo.spanner.peer.client.PeerClient``);
    * ``store``: its ``IStore`` (a repeated join is checked against the
      minter's record of the invite).
    """

    log = Logger()

    def __init__(self, identity, roster, clock, addresses, name, patterns, peers, dial, store,
                 join_timeout=JOIN_TIMEOUT):
        self._identity = identity
        self._store = store
        self._roster = roster
        self._clock = clock
        self._addresses = addresses
        self._name = name
        self._patterns = patterns
        self._peers = peers
        self._dial = dial
        self._join_timeout = join_timeout
        # Founding and joining one at a time: a second would only find the
        # bolt a member already (and a join must not be admitted at a minter
        # while a founding here is about to win).
        self._becoming = defer.DeferredLock()

    def _now_ms(self):
        return int(self._clock.seconds() * 1000)

    def _not_yet_member(self):
        if self._roster.current is not None:
            raise Refusal("already_member", "this bolt is already a member of federation %s"
                          % (self._roster.current.federation_id,))

    def _self_row(self, name, patterns):
        name = name or self._name
        if patterns is None:
            patterns = self._patterns
        if isinstance(patterns, str):
            raise Refusal("bad_request", "patterns is a list of hostname globs, not one "
                          "string: %r" % (patterns,))
        return name, self._addresses(), tuple(p.strip().lower() for p in patterns)

    # -- init -----------------------------------------------------------------

    def init(self, name=None, patterns=None):
        """Found a new federation with this bolt as its founder; its roster."""
        return self._becoming.run(self._init, name, patterns)

    @defer.inlineCallbacks
    def _init(self, name, patterns):
        self._not_yet_member()
        try:
            roster = Roster.found(self._identity, new_federation_id(),
                                  *self._self_row(name, patterns))
        except (SpannerError, HostnameError, ValueError) as e:
            raise Refusal("bad_request", str(e)) from None
        yield self._roster.become(roster)
        self.log.info("founded federation {fid} as bolt {id}", fid=roster.federation_id,
                      id=self._identity.id)
        return roster

    # -- join (on the joining server) --------------------------------------------

    def join(self, token_text):
        """Join the federation named in ``token_text`` through its minter; the roster."""
        return self._becoming.run(self._join, token_text)

    @defer.inlineCallbacks
    def _join(self, token_text):
        self._not_yet_member()
        try:
            invite = Invite.decode(token_text)
        except InviteError as e:
            raise Refusal("bad_request", str(e)) from None
        if invite.expired(self._now_ms()):
            raise Refusal("join_refused", "the invite has expired; ask for a new one")
        name, addresses, patterns = self._self_row(None, None)
        try:
            row = AdmissionRow.applicant(self._identity, invite.federation_id, name,
                                         addresses, patterns, invite.token_id, invite.minter_id)
        except SpannerError as e:
            raise Refusal("bad_request", str(e)) from None
        answer, minter_key = yield self._ask_minter(invite, token_text, row)
        try:
            snapshot = open_snapshot(answer, minter_key, invite.federation_id)
        except SnapshotError as e:
            raise Refusal("join_refused", "the minter's snapshot is unusable: %s" % (e,)) from None
        roster = Roster(snapshot.parts.federation_id, snapshot.parts.founder_id)
        roster.merge(snapshot.parts)
        mine = roster.row(self._identity.id)
        if mine is None or mine.public_key != self._identity.public_key:
            raise Refusal("join_refused", "the minter's roster does not admit this bolt "
                          "(its admission chain did not verify)")
        yield self._roster.become(roster)
        self.log.info("joined federation {fid} through {minter}", fid=roster.federation_id,
                      minter=invite.minter_id)
        return roster

    @defer.inlineCallbacks
    def _ask_minter(self, invite, token_text, row):
        """``(signed snapshot, minter's key)``: the minter's answer to our join."""
        client = self._dial(invite.address, invite.fingerprint, invite.minter_id)
        client.start()
        try:
            try:
                yield client.when_connected(fail_after_failures=2).addTimeout(
                    self._join_timeout, self._clock)
            except Exception as e:
                why = client.last_error or (
                    "no connection within %g s" % (self._join_timeout,)
                    if isinstance(e, defer.TimeoutError) else e)
                raise Refusal("unreachable", "cannot reach the minter %s at %s (%s); is it "
                              "running? try again" % (invite.minter_id, invite.address, why),
                              retryable=True) from None
            # The handshake pinned the invite's fingerprint: this is the minter's key.
            minter_key = client.peer_key()
            try:
                answer = yield client.join(token_text, row.to_data(), self._join_timeout)
            except PeerNoAnswer:
                raise Refusal("unreachable", "the minter %s did not answer within %d s; it "
                              "may have admitted this bolt: join again with the same token, "
                              "and it answers again" % (invite.minter_id, self._join_timeout),
                              retryable=True) from None
            except PeerUnreachable as e:
                raise Refusal("unreachable", "the minter %s went away: %s"
                              % (invite.minter_id, e), retryable=True) from None
            except PeerError as e:
                raise Refusal("join_refused", "the minter refused: %s" % (e,)) from None
        finally:
            yield client.stop()
        return answer, minter_key

    # -- admit (on the minter; PB applicant perspective) ------------------------------

    @defer.inlineCallbacks
    def admit(self, peer_key, token_text, row_data):
        """Redeem an invite for the applicant holding ``peer_key``; its snapshot."""
        roster = self._roster.current
        if roster is None:
            raise JoinRefused("this server is not a member of any federation")
        try:
            invite = Invite.decode(token_text)
            row = AdmissionRow.from_data(row_data)
        except (InviteError, SpannerError) as e:
            raise JoinRefused(str(e)) from None
        me = self._identity.id
        if invite.federation_id != roster.federation_id:
            raise JoinRefused("the invite is for federation %s, this is %s"
                              % (invite.federation_id, roster.federation_id))
        if invite.minter_id != me:
            raise JoinRefused("only the minter %s redeems this invite" % (invite.minter_id,))
        if not invite.verify(self._identity.public_key):
            raise JoinRefused("the invite's signature does not verify")
        bolt_id = key_id(peer_key)
        if row.public_key != peer_key or row.bolt_id != bolt_id:
            raise JoinRefused("the row is not signed by the connecting bolt's key")
        if (row.federation_id, row.token_id, row.admitted_by) != (
                roster.federation_id, invite.token_id, me):
            raise JoinRefused("the row does not name this invite and minter")
        if roster.is_removed(bolt_id):
            raise JoinRefused("bolt %s was removed; a removed bolt rejoins only with a "
                              "new identity" % (bolt_id,))
        held = roster.row(bolt_id)
        if held is not None:
            again = yield self._admitted_before(held, peer_key, invite, bolt_id)
            if again:  # the joiner did not hear our answer: the same answer again
                return sign_snapshot(roster, self._identity, self._now_ms())
            raise JoinRefused("bolt %s is already a member" % (bolt_id,))
        if roster.is_consumed(invite.token_id):
            raise JoinRefused("the invite was already used")
        now_ms = self._now_ms()
        if invite.expired(now_ms):
            raise JoinRefused("the invite has expired")
        admitted = roster.copy()
        try:
            admitted.add_row(row.countersign(self._identity))
            admitted.consume(self._identity, invite.token_id)
        except SpannerError as e:
            raise JoinRefused("the row does not verify: %s" % (e,)) from None
        if admitted.row(bolt_id) is None:
            raise JoinRefused("the row does not verify")
        parts = admitted.parts()
        try:
            yield self._roster.commit(
                admitted, job=lambda cursor: _admit_job(cursor, invite, bolt_id, now_ms, parts))
        except InviteError as e:
            raise JoinRefused(str(e)) from None
        self.log.info("admitted bolt {id} ({name})", id=bolt_id, name=row.name)
        return sign_snapshot(admitted, self._identity, now_ms)

    def _admitted_before(self, row, peer_key, invite, bolt_id):
        """A Deferred of True when ``row`` is the one this bolt admitted with
        ``invite`` for the applicant holding ``peer_key``: a repeat of a join
        whose answer was lost, to be answered again (and nothing else)."""
        if (row.public_key, row.admitted_by, row.token_id) != (
                peer_key, self._identity.id, invite.token_id):
            return defer.succeed(False)
        return self._store.run(redeemed_by, invite).addCallback(lambda by: by == bolt_id)

    # -- remove -------------------------------------------------------------------------

    @defer.inlineCallbacks
    def remove(self, bolt_id, force=False):
        """Record the removal of drained bolt ``bolt_id`` (or, with ``force``, of
        one that cannot be reached)."""
        roster = self._roster.require_member()
        row = roster.row(bolt_id)
        if row is None:
            raise Refusal("not_found", "no bolt %r in the roster" % (bolt_id,))
        name = row.name
        if roster.is_removed(bolt_id):
            return {"bolt_id": bolt_id, "name": name, "removed": True, "changed": False}
        if bolt_id == self._identity.id:
            raise Refusal("self", "bolt %s cannot remove itself: ask another bolt" % (bolt_id,))
        try:
            drained = yield ask(self._peers, self._clock, bolt_id, "drain-status", {})
        except Refusal as e:
            if e.code != "unreachable" or not force:
                hint = ("; --force removes it anyway, and the envoys it holds stay "
                        "unreached" if e.code == "unreachable" else "")
                raise Refusal(e.code, "%s%s" % (e.reason, hint), e.retryable) from None
            drained = None
        if drained is not None and (drained.get("state") != "done"
                                    or drained.get("remaining")):
            raise Refusal("not_drained", "bolt %s (%s) is not drained (drain %s, %s active "
                          "envoys): drain it first with 'vigocli spanner bolt drain %s'" % (
                              bolt_id, name, drained.get("state"), drained.get("remaining"),
                              name))
        candidate = self._roster.current.copy()
        candidate.remove(self._identity, bolt_id, self._now_ms())
        yield self._roster.commit(candidate)
        self.log.info("bolt {id} ({name}) removed from the federation", id=bolt_id, name=name)
        return {"bolt_id": bolt_id, "name": name, "removed": True, "changed": True,
                "forced": drained is None}
