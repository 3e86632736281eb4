"""The wiring of a spanner bolt: the fleet half, and the federation around it.

Every component is built here from plain values and the few collaborators it
uses, in an order with no cycle:

* the roster (``LocalRoster``) and the peer clients that reach other bolts
  through it;
* this bolt's own row, the reassigner and the drain, over the fleet's
  hand-over half;
* ownership from the roster's routing and enrollment with its router, final
  before anything listens;
* tier-2 pulls, the hand-over repair and tier-1 gossip (whose liveness
  changes redial a bolt, run the repair and announce this bolt's row);
* the ``IBolt`` facade peer actions run on, membership, invites, the peer
  portal, status, reads and the admin operations the API answers with.

The service tree then gets the peer port, the peer clients, the row and the
drain (stopped before the clients they call through), and the member
services (gossip, pulls, repair), which start once the bolt holds a roster.
"""

import attr

from vigo.fleet.enrollment import Enrollment
from vigo.fleet.ownership import StandaloneOwnership
from vigo.fleet.view import BoltFleet
from vigo.metrics import (
    PEER_CALL_BUCKETS,
    DurationsBy,
    FleetCollector,
    SpannerCollector,
    metrics_registry,
)
from vigo.mutual_tls import peer_server_options
from vigo.server.ports import PortService, tls_port
from vigo.server.status import ServerStatus
from vigo.server.wiring import add_dbus, fleet_parts, serve
from vigo.spanner.admin import BoltAdmin, FederatedEnvoys
from vigo.spanner.bolt import Bolt
from vigo.spanner.drain import Drainer
from vigo.spanner.enrollment_routing import EnrollmentRouter
from vigo.spanner.gossip.gossiper import Gossiper, gossip_addresses, listener_for
from vigo.spanner.gossip.port import GossipPort
from vigo.spanner.gossip.pulls import SnapshotPuller
from vigo.spanner.handover import HandoverRepair
from vigo.spanner.invites import Invites
from vigo.spanner.member import MemberServices
from vigo.spanner.membership import Membership
from vigo.spanner.own_row import OwnRow
from vigo.spanner.peer.actions import load_actions
from vigo.spanner.peer.client import PeerClient
from vigo.spanner.peer.pool import PeerClients
from vigo.spanner.peer.server import PeerPortal, peer_server_factory
from vigo.spanner.reads import FleetReads
from vigo.spanner.reassign import Reassigner
from vigo.spanner.roster.local import LocalRoster
from vigo.spanner.routing import SpannerOwnership
from vigo.spanner.status import FederationStatus, OwnFigures


@attr.s(auto_attribs=True, frozen=True)
class SpannerParts:
    """A bolt's federation components, for tools and tests to reach."""

    roster: LocalRoster
    actions: dict
    clients: PeerClients
    bolt: Bolt
    own_row: OwnRow
    reassigner: Reassigner
    drainer: Drainer
    membership: Membership
    invites: Invites
    portal: PeerPortal
    puller: SnapshotPuller
    repair: HandoverRepair
    gossiper: Gossiper
    member: MemberServices
    status: FederationStatus
    reads: FleetReads
    admin: BoltAdmin


def build(config, reactor, exit_on_failure=False, host=None):
    """The ``VigoServer`` of a spanner bolt."""
    parts = fleet_parts(config, reactor)
    identity, store, fleet, advertised = parts.identity, parts.store, parts.fleet, \
        parts.advertised
    spanner = config.spanner
    me = identity.id

    roster = LocalRoster(store, identity, reactor)
    peer_calls = DurationsBy(PEER_CALL_BUCKETS)  # every action call to another bolt, timed
    clients = PeerClients(reactor, identity, roster.locate, durations=peer_calls)

    def name():
        row = roster.row(me)
        return spanner.bolt_name if row is None else row.name

    own_row = OwnRow(identity, roster, clients, reactor, advertised.row, spanner.bolt_name,
                     spanner.patterns)
    reassigner = Reassigner(me, name, parts.moves, roster, clients)
    drainer = Drainer(me, roster, store, own_row, parts.moves, reassigner, reactor)

    ownership = SpannerOwnership(roster, StandaloneOwnership(identity, advertised.envoy))
    router = EnrollmentRouter(clients, lambda bolt_id: roster.key_of(bolt_id) is not None)
    enrollment = Enrollment(fleet, store, identity, ownership, reactor, advertised.envoy,
                            parts.enrollment_tokens, router)

    puller = SnapshotPuller(reactor, me, roster, spanner.snapshot.anti_entropy)
    repair = HandoverRepair(me, roster, parts.moves, reassigner, clients, reactor)

    def peer_changed(bolt_id, old, new):
        if new == "alive":
            # Calls to it should not wait out a reconnect backoff; a hand-over
            # to it may have waited for it; it may not know where we listen.
            clients.redial(bolt_id)
            repair.soon()
            own_row.announce_to(bolt_id)

    own = OwnFigures(fleet, reactor)
    gossip_port = GossipPort(listener_for(reactor, spanner.gossip))
    gossiper = Gossiper(
        reactor, identity, roster, spanner.gossip, own.counters,
        gossip_port.lend, on_digest_mismatch=puller.pull,
        on_state_change=peer_changed,
        peer_addresses=lambda: gossip_addresses(roster, me, spanner.gossip.port))
    roster.on_change(gossiper.send_now)

    actions = load_actions()
    bolt = Bolt(identity, name, reactor, roster, actions, clients,
                peer_states=gossiper.peer_states,
                fleet=BoltFleet(fleet, reactor, parts.moves.endpoint), enrollment=enrollment,
                reassigner=reassigner, drainer=drainer, rows=own_row)
    membership = Membership(
        identity, roster, reactor, advertised.row, spanner.bolt_name, spanner.patterns, clients,
        dial=lambda address, fingerprint, bolt_id: PeerClient(
            reactor, identity, address, fingerprint, bolt_id=bolt_id, durations=peer_calls),
        store=store)
    invites = Invites(identity, roster, store, reactor, lambda: advertised.row()["peer"])
    portal = PeerPortal(roster, bolt, actions, membership.admit)
    status = FederationStatus(me, name, roster, gossiper.peer_states, own, repair, reactor)
    reads = FleetReads(bolt, reactor, status.reachable_bolts)
    admin = BoltAdmin(identity, roster, status, membership, invites, reads, bolt, reactor)

    def resume_drain():  # the drain itself runs in the background; a failure is logged
        return drainer.resume().addErrback(
            lambda failure: drainer.log.failure("resuming the drain failed", failure))

    member = MemberServices(roster, restarted=[own_row.republish_addresses, resume_drain])
    for child in (gossiper, puller, repair):
        child.setServiceParent(member)

    server_status = ServerStatus(identity, config, reactor, fleet, advertised.envoy,
                                 federation=admin.status)
    registry = metrics_registry(FleetCollector(fleet, enrollment),
                                SpannerCollector(roster, gossiper, puller, portal, peer_calls),
                                mode=config.spanner.mode)
    server = serve(config, reactor, parts, enrollment, FederatedEnvoys(admin, reads, fleet),
                   admin, registry, server_status, loaders=[roster.load],
                   after_start=[lambda: member.restarted], exit_on_failure=exit_on_failure,
                   host=host)
    if server.replication is not None:
        portal.acknowledge_after(server.replication)
    server.add_port(tls_port(reactor, "peer", spanner.peer_listen, peer_server_factory(portal),
                             peer_server_options(identity), config.limits.peer, hang_up=True))
    # Bound now, though only a member gossips: a clash stops the start, not a join.
    server.add_port(PortService("gossip", gossip_port.bind))
    for child in (clients, own_row, drainer, member):
        child.setServiceParent(server)
    server.spanner = SpannerParts(
        roster=roster, actions=actions, clients=clients, bolt=bolt, own_row=own_row,
        reassigner=reassigner, drainer=drainer, membership=membership, invites=invites,
        portal=portal, puller=puller, repair=repair, gossiper=gossiper, member=member,
        status=status, reads=reads, admin=admin)
    return add_dbus(server, config, reactor, server_status, fleet, enrollment)
