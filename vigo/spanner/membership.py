"""Membership: found a federation, mint invites, join one, admit a joiner.

One-shot really means one decider: an invite is redeemed only at the bolt
that minted it, in one transaction of its database that also stores the
admitted row and the consumed token; only then is the joiner answered (with
a signed snapshot). The ``consumed_tokens`` G-Set then tells every other bolt
to refuse the token too. If the minter is unreachable, the join fails with a
clear error and nothing is admitted anywhere.
"""

from twisted.internet import defer
from twisted.logger import Logger

from vigo.hostnames import HostnameError
from vigo.identity import key_id
from vigo.interfaces.errors import JoinRefused, PeerError
from vigo.spanner.canonical import SpannerError
from vigo.spanner.errors import SpannerRefusal
from vigo.spanner.invites import DEFAULT_LIFETIME, Invite, InviteError, insert_invite, redeem_invite
from vigo.spanner.peer.client import PeerClient
from vigo.spanner.peer.tls import peer_key
from vigo.spanner.roster.crdt import Roster, new_federation_id
from vigo.spanner.roster.rows import AdmissionRow
from vigo.spanner.roster.snapshot import SnapshotError, open_snapshot, sign_snapshot
from vigo.spanner.roster.store import save_roster

JOIN_TIMEOUT = 15.0


def _admit_job(cursor, invite, bolt_id, now_ms, roster):
    redeem_invite(cursor, invite, bolt_id, now_ms)
    save_roster(cursor, roster)


class Membership:
    """The membership operations of one bolt (``service`` is its SpannerService)."""

    log = Logger()

    def __init__(self, service):
        self.service = service

    @property
    def _now_ms(self):
        return int(self.service.reactor.seconds() * 1000)

    # -- init -----------------------------------------------------------------

    async def init(self, name=None, patterns=None):
        """Found a new federation with this bolt as its founder."""
        service = self.service
        if service.roster is not None:
            raise SpannerRefusal("already_member", "this bolt is already a member of "
                                 "federation %s" % (service.roster.federation_id,))
        try:
            roster = Roster.found(service.identity, new_federation_id(), *self._self_row(
                name, patterns))
        except (SpannerError, HostnameError, ValueError) as e:
            raise SpannerRefusal("bad_request", str(e), 400) from None
        await service.store.run(save_roster, roster)
        service.became_member(roster)
        self.log.info("founded federation {fid} as bolt {id}", fid=roster.federation_id,
                      id=service.identity.id)
        return service.status()

    def _self_row(self, name, patterns):
        service = self.service
        name = name or service.config.spanner.bolt_name
        if patterns is None:
            patterns = service.config.spanner.patterns
        return name, service.addresses(), tuple(p.strip().lower() for p in patterns)

    # -- invite -----------------------------------------------------------------

    async def invite(self, lifetime=DEFAULT_LIFETIME):
        """Mint a one-shot invite, durable before it is shown."""
        service = self.service
        roster = service.require_member()
        try:
            invite = Invite.mint(service.identity, roster.federation_id,
                                 service.addresses()["peer"], self._now_ms, lifetime)
        except InviteError as e:
            raise SpannerRefusal("bad_request", str(e), 400) from None
        await service.store.run(insert_invite, invite, self._now_ms)
        return invite

    # -- join (on the joining server) ------------------------------------------------

    async def join(self, token_text):
        """Join the federation named in ``token_text`` through its minter."""
        service = self.service
        if service.roster is not None:
            raise SpannerRefusal("already_member", "this bolt is already a member of "
                                 "federation %s" % (service.roster.federation_id,))
        try:
            invite = Invite.decode(token_text)
        except InviteError as e:
            raise SpannerRefusal("bad_request", str(e), 400) from None
        if invite.expired(self._now_ms):
            raise SpannerRefusal("join_refused", "the invite has expired; ask for a new one")
        name, addresses, patterns = self._self_row(None, None)
        try:
            row = AdmissionRow.applicant(service.identity, invite.federation_id, name,
                                         addresses, patterns, invite.token_id, invite.minter_id)
        except SpannerError as e:
            raise SpannerRefusal("bad_request", str(e), 400) from None
        client = PeerClient(service.reactor, service.identity, invite.address,
                            invite.fingerprint, bolt_id=invite.minter_id)
        client.start()
        try:
            try:
                await client.when_connected(fail_after_failures=2).addTimeout(
                    JOIN_TIMEOUT, service.reactor)
            except Exception as e:
                raise SpannerRefusal("unreachable", "cannot reach the minter %s at %s (%s); "
                                     "is it running? try again" % (
                                         invite.minter_id, invite.address,
                                         client.last_error or e), 503) from None
            perspective = client.perspective
            # The handshake pinned the invite's fingerprint: this is the minter's key.
            minter_key = peer_key(perspective.broker.transport)
            try:
                answer = await perspective.callRemote(
                    "join", token_text, row.to_data()).addTimeout(JOIN_TIMEOUT, service.reactor)
            except defer.TimeoutError:
                raise SpannerRefusal("unreachable", "the minter %s did not answer within %d s"
                                     % (invite.minter_id, JOIN_TIMEOUT), 503) from None
            except Exception as e:  # a refusal, copied over PB
                raise SpannerRefusal("join_refused", "the minter refused: %s"
                                     % (getattr(e, "value", None) or e,)) from None
        finally:
            await client.stop()
        try:
            snapshot = open_snapshot(answer, minter_key, invite.federation_id)
        except SnapshotError as e:
            raise SpannerRefusal("join_refused", "the minter's snapshot is unusable: %s"
                                 % (e,)) from None
        roster = Roster(snapshot.parts.federation_id, snapshot.parts.founder_id)
        roster.merge(snapshot.parts)
        mine = roster.row(service.identity.id)
        if mine is None or mine.public_key != service.identity.public_key:
            raise SpannerRefusal("join_refused", "the minter's roster does not admit this bolt "
                                 "(its admission chain did not verify)")
        await service.store.run(save_roster, roster)
        service.became_member(roster)
        self.log.info("joined federation {fid} through {minter}", fid=roster.federation_id,
                      minter=invite.minter_id)
        return service.status()

    # -- admit (on the minter; PB applicant perspective) ------------------------------

    async def admit(self, peer_key, token_text, row_data):
        """Redeem an invite for the applicant holding ``peer_key``; its snapshot."""
        service = self.service
        roster = service.roster
        if roster is None:
            raise JoinRefused("this server is not a member of any federation")
        try:
            invite = Invite.decode(token_text)
            row = AdmissionRow.from_data(row_data)
        except (InviteError, SpannerError) as e:
            raise JoinRefused(str(e)) from None
        if invite.federation_id != roster.federation_id:
            raise JoinRefused("the invite is for federation %s, this is %s"
                              % (invite.federation_id, roster.federation_id))
        if invite.minter_id != service.identity.id:
            raise JoinRefused("only the minter %s redeems this invite" % (invite.minter_id,))
        if not invite.verify(service.identity.public_key):
            raise JoinRefused("the invite's signature does not verify")
        bolt_id = key_id(peer_key)
        if row.public_key != peer_key or row.bolt_id != bolt_id:
            raise JoinRefused("the row is not signed by the connecting bolt's key")
        if (row.federation_id, row.token_id, row.admitted_by) != (
                roster.federation_id, invite.token_id, service.identity.id):
            raise JoinRefused("the row does not name this invite and minter")
        if roster.is_removed(bolt_id):
            raise JoinRefused("bolt %s was removed; a removed bolt rejoins only with a "
                              "new identity" % (bolt_id,))
        if roster.row(bolt_id) is not None:
            raise JoinRefused("bolt %s is already a member" % (bolt_id,))
        if roster.is_consumed(invite.token_id):
            raise JoinRefused("the invite was already used")
        now_ms = self._now_ms
        if invite.expired(now_ms):
            raise JoinRefused("the invite has expired")
        admitted = roster.copy()
        try:
            admitted.add_row(row.countersign(service.identity))
            admitted.consume(service.identity, invite.token_id)
        except SpannerError as e:
            raise JoinRefused("the row does not verify: %s" % (e,)) from None
        if admitted.row(bolt_id) is None:
            raise JoinRefused("the row does not verify")
        try:
            await service.store.run(_admit_job, invite, bolt_id, now_ms, admitted)
        except InviteError as e:
            raise JoinRefused(str(e)) from None
        service.replace_roster(admitted)
        self.log.info("admitted bolt {id} ({name})", id=bolt_id, name=row.name)
        return sign_snapshot(admitted, service.identity, now_ms)


__all__ = ["Membership", "PeerError"]
