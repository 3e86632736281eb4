"""What every server is made of, whichever its mode: the fleet half, served.

``fleet_parts`` builds the parts a standalone server and a spanner bolt share,
from the config and the reactor alone: the identity, the store, the fleet and
its hand-over half, enrollment tokens, API tokens, and the addresses it
advertises. ``serve`` puts a server's service tree together around them
once its mode's wiring has built the rest (enrollment with its final
ownership, the envoy and federation operations the API answers with, the
metrics): the envoy and API ports, the admin API, the timers, D-Bus.
"""

import attr

from vigo.api.app import AdminAPI
from vigo.api.auth import ApiTokens
from vigo.api.durable import AcknowledgedRequest
from vigo.api.site import api_site
from vigo.fleet.channel import EnvoyChannelFactory
from vigo.fleet.enrollment_tokens import EnrollmentTokens
from vigo.fleet.fleet import Fleet
from vigo.fleet.hostcrates import Hostcrates
from vigo.fleet.moves import EnvoyMoves
from vigo.identity import load_or_create_identity
from vigo.metrics import PortsCollector
from vigo.mutual_tls import peer_server_options
from vigo.private_files import check_data_dir, check_private_file
from vigo.server.peer.channel import MemberFactory
from vigo.server.peer.primary import PrimaryReplication
from vigo.server.ports import Advertised, api_port, envoy_port, tls_port
from vigo.server.service import VigoServer
from vigo.store import Store
from vigo.store.changelog import ChangeLog
from vigo.tls import api_server_options, ensure_api_certificate


@attr.s(auto_attribs=True, frozen=True)
class FleetParts:
    """The parts every server has (see ``fleet_parts``)."""

    identity: object
    hostcrates: Hostcrates
    store: Store
    fleet: Fleet
    advertised: Advertised
    moves: EnvoyMoves
    enrollment_tokens: EnrollmentTokens
    api_tokens: ApiTokens


def fleet_parts(config, reactor):
    """The fleet half of a server: built, nothing opened or listening yet.

    Raises ``PrivateFileError``, ``IdentityError``, ``HostcratesError`` or
    ``OSError`` for a data directory, key or hostcrates file that cannot be used.
    """
    server = config.server
    check_data_dir(server.data_dir)
    if server.tls is not None:
        check_private_file(server.tls.key_file, "the API's TLS key, server.tls.key_file")
    identity = load_or_create_identity(server.data_dir)
    hostcrates = Hostcrates.from_file(config.hostcrates) if config.hostcrates else Hostcrates()
    ha = config.peers.listen is not None
    store = Store.in_directory(server.data_dir, reactor,
                               ChangeLog(config.peers.retain) if ha else None)
    fleet = Fleet(store, identity, hostcrates, reactor, config.checkin.interval,
                  config.checkin.offline_after)
    advertised = Advertised(server.hostname, {"envoy": server.envoy_listen,
                                              "api": server.api_listen,
                                              "peer": config.spanner.peer_listen,
                                              "replication": config.peers.listen})
    return FleetParts(
        identity=identity, hostcrates=hostcrates, store=store, fleet=fleet,
        advertised=advertised, moves=EnvoyMoves(fleet, store, reactor, advertised.envoy),
        enrollment_tokens=EnrollmentTokens(store, identity, reactor, advertised.envoy),
        api_tokens=ApiTokens(store, reactor))


def serve(config, reactor, parts, enrollment, envoys, federation, registry, status,
          spanner_routes=None, loaders=(), after_start=(), exit_on_failure=False, host=None):
    """The ``VigoServer`` of ``parts``: envoy and API ports, the admin API.

    ``enrollment`` is the server's ``Enrollment``; ``envoys`` its
    ``IEnvoyOperations``; ``federation`` its ``IFederationAdmin``; ``registry``
    its metrics; ``status`` its ``ServerStatus``; ``spanner_routes`` the app of
    its ``/api/v1/spanner/`` routes (default: ``federation``'s); ``loaders`` run after the
    fleet index and the API tokens are loaded. The caller adds its own
    children, then ``add_dbus``. With ``host`` (a ``ServerHost``: HA on), the
    server is its replica set's primary (``replicate``).
    """
    data_dir = config.server.data_dir
    replication = None
    if host is not None:
        replication = PrimaryReplication(
            reactor, parts.store, host.node, host.node_identity, data_dir, config.peers,
            host.addresses(parts.advertised), config.hostcrates, on_fenced=host.fenced)
        loaders = [replication.load, *loaders]
        after_start = [replication.publish_addresses, *after_start]
        enrollment.synced = replication.synced
        registry.register(host.collector())
    server = VigoServer(
        reactor, config, parts.identity, parts.store, parts.fleet, parts.advertised, status,
        loaders=[parts.fleet.load, lambda: parts.api_tokens.load(data_dir), *loaders],
        after_start=after_start, exit_on_failure=exit_on_failure)
    server.replication = replication
    server.add_port(envoy_port(
        reactor, config.server.envoy_listen, parts.identity,
        EnvoyChannelFactory(parts.fleet, enrollment, reactor, replicas=None if replication is None
                            else replication.envoy_addresses),
        config.limits.envoy))
    if config.server.tls is not None:
        cert, key = config.server.tls.cert_file, config.server.tls.key_file
    else:
        cert, key = ensure_api_certificate(data_dir, config.server.hostname,
                                           config.server.api_listen.host)
    server.api = AdminAPI(parts.api_tokens, parts.identity.id, status, parts.enrollment_tokens,
                          envoys, federation, registry, reactor, spanner=spanner_routes,
                          replicas=None if host is None else host.replicas)
    site = api_site(server.api.resource())
    if replication is not None:
        # A write's answer waits for peers.sync standbys (vigo.api.durable).
        site.requestFactory = AcknowledgedRequest
        site.durability = replication
    server.add_port(api_port(reactor, config.server.api_listen, site,
                             api_server_options(cert, key), config.limits.api))
    if replication is not None:
        server.add_port(tls_port(reactor, "replication", config.peers.listen,
                                 MemberFactory(replication),
                                 peer_server_options(host.node_identity),
                                 config.limits.replication, hang_up=True))
        replication.setServiceParent(server)
    registry.register(PortsCollector(parts.advertised.ports))
    server.enrollment = enrollment
    server.registry = registry
    server.api_tokens = parts.api_tokens
    server.enrollment_tokens = parts.enrollment_tokens
    return server


def add_dbus(server, config, reactor, status, fleet, enrollment):
    """Offer local control on ``dbus.bus`` (the server's last child), if set."""
    server.dbus = None
    if config.dbus.bus != "none":
        # txdbus only when asked for (the config refused dbus.bus without it).
        from vigo.dbus import DbusControl, server_properties

        properties = server_properties(server.identity.id, config.spanner.mode, fleet.counts,
                                       lambda: server.replication)
        server.dbus = DbusControl(reactor, config.dbus.bus, status, fleet.force_push,
                                  enrollment.listeners, properties)
        server.dbus.setServiceParent(server)
    return server
