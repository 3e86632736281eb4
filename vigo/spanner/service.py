"""A server as a spanner bolt: the roster, gossip, snapshots and peer RPC wired.

``SpannerService`` is a child of the ``VigoServer``. It holds this bolt's copy
of the roster (``None`` until the bolt founds or joins a federation), serves
the peer port (applicants may only present an invite until then), and once a
member runs tier-1 gossip and the tier-2 snapshot puller. It is also the
roster *view* the gossip, the peer portal and the puller read: they always see
the current roster, even across a join.
"""

import random

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from vigo.fleet.view import BoltFleet
from vigo.identity import key_fingerprint
from vigo.interfaces.components import IRosterView
from vigo.spanner.bolt import BoltFacade
from vigo.spanner.bolt_ops import BoltOps
from vigo.spanner.drain import Drainer
from vigo.spanner.errors import SpannerRefusal
from vigo.spanner.gossip.gossiper import Gossiper, listener_for
from vigo.spanner.gossip.observability import CheckinRate
from vigo.spanner.gossip.puller import SnapshotPuller
from vigo.spanner.handover import HandoverRepair
from vigo.spanner.membership import Membership
from vigo.spanner.peer.actions import load_actions
from vigo.spanner.peer.client import PeerClients
from vigo.spanner.peer.server import PeerPortal, listen_peers
from vigo.spanner.reads import FleetReads, action_refusal
from vigo.spanner.roster.hlc import HLC
from vigo.spanner.roster.parts import RosterParts
from vigo.spanner.roster.records import Override
from vigo.spanner.roster.snapshot import encode_snapshot, sign_snapshot
from vigo.spanner.roster.store import load_roster, save_roster
from vigo.spanner.status import REMOVED_HINT, describe_bolt, federation_status

NO_DIGEST = b"\x00" * 32
@implementer(IRosterView)
class SpannerService(service.MultiService):
    """The spanner half of one server (``server`` is its ``VigoServer``)."""

    log = Logger()

    def __init__(self, server):
        service.MultiService.__init__(self)
        self.server = server
        self.identity = server.identity
        self.store = server.store
        self.reactor = server.reactor
        self.config = server.config
        self.roster = None
        self.gossiper = None
        self.hlc = HLC(self.reactor)
        self.random = random.Random()
        self.actions = load_actions()
        self.clients = PeerClients(self.reactor, self.identity)
        self.clients.setServiceParent(self)
        self.membership = Membership(self)
        self.drainer = Drainer(self)
        self.bolt_ops = BoltOps(self)
        # Not ``self.bolt``: that is the admin read ``bolt(key)`` below.
        self.facade = BoltFacade(self.identity, self.config.spanner.bolt_name, self, self.actions,
                                 self.clients, self.locate, self.reactor,
                                 peer_states=self.peer_states,
                                 fleet=BoltFleet(server.fleet, self.reactor,
                                                 lambda: server.envoy_address),
                                 enrollment=server.enrollment,
                                 overrides=self.write_override, drainer=self.drainer,
                                 rows=self.take_row)
        self.portal = PeerPortal(self, self.facade, self.actions, self.membership.admit)
        self.puller = SnapshotPuller(self.reactor, self, self.config.spanner.snapshot.anti_entropy)
        self.peer_port = None
        self.own_checkins = CheckinRate()
        self.fleet_reads = FleetReads(self.facade, self.reactor, self.reachable_bolts)
        self.handover = HandoverRepair(self.facade, lambda: self.roster, self.reactor)
        self._removed_said = False

    # -- life --------------------------------------------------------------------

    async def start(self):
        """Load the roster, listen for peers; called by the server once it listens."""
        roster = await self.store.run(load_roster)
        listen = self.config.spanner.peer_listen
        self.peer_port = await listen_peers(self.reactor, self.identity, listen, self.portal)
        if roster is not None:
            self.became_member(roster)
            await self.bolt_ops.republish_addresses()
            d = defer.ensureDeferred(self.drainer.resume())
            d.addErrback(lambda f: self.log.failure("resuming the drain failed", f))
        else:
            self.log.info("spanner bolt {id} is not in a federation yet: found one with "
                          "'vigocli spanner init' or join with 'vigocli spanner bolt join TOKEN'",
                          id=self.identity.id)

    @defer.inlineCallbacks
    def stopService(self):
        if self.peer_port is not None:
            yield self.peer_port.stopListening()
        yield self.drainer.stop()
        yield self.handover.stop()
        self.bolt_ops.stop()
        yield service.MultiService.stopService(self)
        yield self.puller.stop()

    def became_member(self, roster):
        """Take ``roster`` as ours and start talking to the federation."""
        self.roster = roster
        self.handover.start()
        self._check_removed()
        mine = roster.row(self.identity.id)
        if mine is not None:
            self.facade.name = mine.name
        if self.gossiper is None:
            gossip = self.config.spanner.gossip
            self.gossiper = Gossiper(
                self.reactor, self.identity, self, gossip, self._own_counters,
                listener_for(self.reactor, gossip), on_digest_mismatch=self.puller.pull,
                on_state_change=self._peer_changed, peer_addresses=self.gossip_addresses)
            self.gossiper.setServiceParent(self)
        self.puller.start()

    def _peer_changed(self, bolt_id, old, new):
        if new == "alive":
            # Calls to it should not wait out a reconnect backoff; a hand-over
            # to it may have waited for it; it may not know where we listen.
            self.clients.redial(bolt_id)
            self.handover.soon()
            self.bolt_ops.announce_row_to(bolt_id)

    def take_row(self, bolt_id, data):
        """A bolt's own row, announced by it (``announce-row``); see ``BoltOps``."""
        return defer.ensureDeferred(self.bolt_ops.take_row(bolt_id, data))

    def replace_roster(self, roster):
        """A roster built on a copy of ours has been persisted: take it in.

        Merged, not swapped: two changes built on copies of the same roster
        (two admissions, a pull and an admission) both survive. Each was
        persisted by an upsert, so the database holds their union too.
        """
        self.roster.merge(roster)
        self._check_removed()
        if self.gossiper is not None:
            self.gossiper.send_now()

    def _check_removed(self):
        if not self._removed_said and self.roster.is_removed(self.identity.id):
            self._removed_said = True
            self.log.warn("bolt {id}: {hint}", id=self.identity.id, hint=REMOVED_HINT)

    async def merge(self, parts):
        """Merge verified snapshot parts; persist when anything changed."""
        candidate = self.roster.copy()
        report = candidate.merge(parts)
        if candidate.digest() != self.roster.digest():
            await self.store.run(save_roster, candidate.copy())
            self.replace_roster(candidate)
        return report

    async def _write_override(self, envoy_id, bolt_id):
        roster = self.require_member()
        held = roster.override_of(envoy_id)
        if held is not None and held.bolt_id == bolt_id:
            return held
        if held is not None:
            self.hlc.observe(held.hlc)
        record = Override.sign(self.identity, roster.federation_id, envoy_id, bolt_id,
                               self.hlc.now())
        # Persist just this record (a drain writes thousands: saving the whole
        # roster each time made a drain quadratic), then merge and gossip it.
        await self.store.run(save_roster, RosterParts(
            roster.federation_id, roster.founder_id, overrides=(record,)))
        self.roster.add_record(record)
        if self.gossiper is not None:
            self.gossiper.send_now()
        return record

    def write_override(self, envoy_id, bolt_id):
        """Give ``envoy_id`` to ``bolt_id`` in the roster: signed by this bolt,
        persisted, then gossiped; nothing when the roster already says so."""
        return defer.ensureDeferred(self._write_override(envoy_id, bolt_id))

    def require_member(self):
        if self.roster is None:
            raise SpannerRefusal("not_member", "this bolt is not in a federation yet: "
                                 "'vigocli spanner init' founds one, 'vigocli spanner bolt "
                                 "join TOKEN' joins one")
        return self.roster

    # -- the roster view (gossip, portal, puller, facade) --------------------------

    @property
    def federation_id(self):
        return None if self.roster is None else self.roster.federation_id

    def key_of(self, bolt_id):
        return None if self.roster is None else self.roster.key_of(bolt_id)

    def is_removed(self, bolt_id):
        return self.roster is not None and self.roster.is_removed(bolt_id)

    def digest(self):
        return NO_DIGEST if self.roster is None else self.roster.digest()

    def bolt_ids(self):
        return () if self.roster is None else self.roster.bolt_ids()

    def bolt_for_key(self, public_key):
        return None if self.roster is None else self.roster.bolt_for_key(public_key)

    def locate(self, bolt_id):
        row = None if self.roster is None else self.roster.row(bolt_id)
        if row is None:
            return None
        return row.addresses.peer, key_fingerprint(row.public_key)

    def gossip_addresses(self):
        """Where each known bolt listens for unicast gossip: its peer host, our port."""
        port = self.config.spanner.gossip.port
        out = {}
        for bolt_id in self.bolt_ids():
            row = self.roster.row(bolt_id)
            if row is not None and bolt_id != self.identity.id:
                out[bolt_id] = (row.addresses.peer.rsplit(":", 1)[0].strip("[]"), port)
        return out

    def peer_states(self):
        return {} if self.gossiper is None else self.gossiper.peer_states()

    def _own_counters(self):
        """This bolt's gossiped counters; each tick also measures its own check-in rate."""
        counters = self.server.gossip_counters()
        self.own_checkins.observe(counters["checkins"], self.reactor.seconds())
        return counters

    def addresses(self):
        """This bolt's advertised addresses, for its roster row."""
        return self.server.advertised_addresses(self.peer_port)

    # -- operations (the admin API's spanner routes) -----------------------------------

    def init(self, name=None, patterns=None):
        return defer.ensureDeferred(self.membership.init(name, patterns))

    def invite(self, expires_in):
        d = defer.ensureDeferred(self.membership.invite(expires_in))
        return d.addCallback(lambda invite: {
            "token": invite.encode(), "token_id": invite.token_id,
            "expires_at": invite.expires_at_ms / 1000.0, "minter_id": invite.minter_id})

    def join(self, token_text):
        return defer.ensureDeferred(self.membership.join(token_text))

    def snapshot(self):
        roster = self.require_member()
        signed = sign_snapshot(roster, self.identity, int(self.reactor.seconds() * 1000))
        return roster.digest().hex(), encode_snapshot(signed)

    def resolve(self, key):
        roster = self.require_member()
        if roster.row(key) is not None:
            return key
        named = [bolt_id for bolt_id in roster.bolt_ids()
                 if roster.row(bolt_id) is not None and roster.row(bolt_id).name == key]
        if len(named) == 1:
            return named[0]
        if named:
            raise SpannerRefusal("not_found", "%d bolts are named %r: use a bolt id"
                                 % (len(named), key), 404)
        raise SpannerRefusal("not_found", "no bolt %r in the roster" % (key,), 404)

    def bolts(self):
        roster = self.require_member()
        states = self.peer_states()
        return [self._describe(roster.row(bolt_id), states)
                for bolt_id in sorted(roster.bolt_ids(), key=lambda b: (roster.row(b).name, b))
                if roster.row(bolt_id) is not None]

    def owner(self, hostname, envoy_id=None):
        """Which bolt owns ``hostname`` by this bolt's roster, and why
        (``vigo.spanner.routing.explain_owner``); refusals as the API words them."""
        from vigo.hostnames import HostnameError
        from vigo.spanner.routing import NoOwner, explain_owner

        roster = self.require_member()
        try:
            return explain_owner(roster, hostname, envoy_id)
        except HostnameError as e:
            raise SpannerRefusal("bad_request", str(e), 400) from None
        except NoOwner as e:
            raise SpannerRefusal("no_owner", str(e), 404) from None

    def bolt(self, key):
        bolt_id = self.resolve(key)
        return self._describe(self.roster.row(bolt_id), self.peer_states())

    def _describe(self, row, states):
        return describe_bolt(self, row, states)

    def act(self, bolt_key, action, args):
        """Run a peer action on any bolt (this one included); refusals as the API words them."""
        bolt_id = self.resolve(bolt_key)
        return self.facade.call(bolt_id, action, args).addErrback(action_refusal, bolt_id, action)

    # -- envoys at any bolt (vigo.spanner.reads) ------------------------------

    def reachable_bolts(self):
        """``(bolt_id, name)`` of every bolt that owns envoys: the members that are
        not removed, or this bolt alone before it is in a federation."""
        if self.roster is None:
            return [(self.identity.id, self.facade.name)]
        roster = self.roster
        return [(bolt_id, roster.row(bolt_id).name) for bolt_id in sorted(roster.bolt_ids())
                if roster.row(bolt_id) is not None and not roster.is_removed(bolt_id)]

    def envoys(self, bolt=None, offline=False):
        """Every bolt's envoys (or those of ``bolt``, an id or name), merged; bolts
        that did not answer are named in ``bolts``."""
        only = None if bolt is None else self._resolve_owner(bolt)
        return self.fleet_reads.list_all(offline=offline, only=only)

    def envoy(self, key):
        """One envoy by id or hostname, from whichever bolt has it."""
        return self.fleet_reads.show(key)

    def push_envoy(self, key):
        """Force-push one envoy, asked of whichever bolt has it."""
        return self.fleet_reads.push(key)

    def bolt_envoys(self, key, offline=False):
        """One bolt's envoys, live; refused ``unreachable`` when it does not answer."""
        bolt_id = self._resolve_owner(key)
        return self.fleet_reads.bolt_envoys(bolt_id, dict(self.reachable_bolts())[bolt_id],
                                            offline)

    def push_bolt(self, key):
        """Force-push every active envoy of one bolt."""
        return self.fleet_reads.push_bolt(self._resolve_owner(key))

    def reassign(self, key, to):
        """Move envoy ``key`` (id or hostname) to bolt ``to`` (id or name); see
        ``vigo.spanner.bolt_ops`` and docs/operations.md."""
        return defer.ensureDeferred(self.bolt_ops.reassign(key, to))

    # -- draining and removing bolts (vigo.spanner.bolt_ops, vigo.spanner.drain) ----

    def publish_status(self, status):
        """Publish this bolt's own row with ``status`` (e.g. draining)."""
        return defer.ensureDeferred(self.bolt_ops.publish_status(status))

    def drain(self, key, to=None):
        """Start draining bolt ``key`` (to bolt ``to``, or each envoy's owner)."""
        return defer.ensureDeferred(self.bolt_ops.drain(key, to))

    def drain_status(self, key):
        """The progress of bolt ``key``'s drain, asked of it."""
        return defer.ensureDeferred(self.bolt_ops.drain_status(key))

    def remove_bolt(self, key, force=False):
        """Record that drained bolt ``key`` is removed for good."""
        return defer.ensureDeferred(self.bolt_ops.remove(key, force))

    def _resolve_owner(self, key):
        if self.roster is None and key in (self.identity.id, self.facade.name):
            return self.identity.id
        bolt_id = self.resolve(key)
        if self.roster.is_removed(bolt_id):
            raise SpannerRefusal("not_found", "bolt %s was removed from the federation; it "
                                 "owns no envoys" % (bolt_id,), 404)
        return bolt_id

    def status(self):
        """This bolt and its federation at a glance (``GET /api/v1/spanner/status``)."""
        return federation_status(self)
