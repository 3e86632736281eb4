"""The wiring of a standby: it follows its primary, and serves reads and redirects.

A standby's tree is small: the store (the change log applied, never
recorded), the ``Follower``, the replication port (other members ask it
where it stands; a promoted primary tells it to follow), an envoy port that
sends every envoy to the primary (``Redirect``, same identity, so the pin
holds), and the read-only API (``vigo.api.standby``). It runs no timers, no
write-behind and no spanner member services: nothing on a standby writes
but the follower. (A base copy received is installed by the host before
it builds the next standby tree: ``vigo.server.host``.)
"""

import os

from twisted.application import service
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from vigo.api.site import api_site
from vigo.api.standby import StandbyAPI, StandbyTokens
from vigo.fleet import wire
from vigo.fleet.hostcrates import Hostcrates
from vigo.identity import load_or_create_identity
from vigo.metrics import PortsCollector, metrics_registry
from vigo.mutual_tls import peer_server_options
from vigo.private_files import check_data_dir
from vigo.server.peer.base_copy import HOSTCRATES_FILE
from vigo.server.peer.channel import MemberFactory
from vigo.server.peer.standby import Follower
from vigo.server.ports import Advertised, api_port, envoy_port, tls_port
from vigo.server.service import write_run_file
from vigo.store import Store, StoreClosed
from vigo.store.changelog import ChangeLog
from vigo.tls import api_server_options, ensure_api_certificate


class RedirectToPrimary(Protocol):
    """An envoy connection to a standby: whatever it sends first is answered
    with a Redirect to the primary (or a retryable refusal while no primary
    is known), and the connection is closed."""

    def __init__(self, redirect):
        self._redirect = redirect
        self._done = False

    def dataReceived(self, data):
        if self._done:
            return
        self._done = True
        fields = self._redirect()
        if fields is None:
            frame = wire.encode_json(wire.REFUSED, {
                "code": "standby", "retryable": True,
                "reason": "this server is a standby and knows no primary yet; try again"})
        else:
            frame = wire.encode_json(wire.REDIRECT, fields)
        self.transport.write(wire.frame(frame))
        self.transport.loseConnection()


class StandbyServer(service.MultiService):
    """A standby's root service (see the module docstring)."""

    log = Logger()

    def __init__(self, reactor, config, identity, store, follower, advertised, tokens):
        service.MultiService.__init__(self)
        self.reactor = reactor
        self.config = config
        self.identity = identity
        self.store = store
        self.follower = follower
        self.advertised = advertised
        self.tokens = tokens
        self.ready = defer.Deferred()
        self.ports = service.MultiService()
        self.ports.setName("ports")
        self.ports.setServiceParent(self)

    def add_port(self, port):
        self.advertised.add(port).setServiceParent(self.ports)
        return port

    def startService(self):
        service.Service.startService(self)
        d = defer.ensureDeferred(self._start())
        d.addCallbacks(self.ready.callback, self._failed)

    async def _start(self):
        self.store.open()
        try:
            await self.follower.load()
            await self.tokens.load()
        except StoreClosed:
            if not self.running:  # stopped while loading: listen on nothing
                return self
            raise
        if not self.running:
            return self
        for child in list(self):
            child.startService()
        self._write_run_file()
        self.log.info("vigo standby {node} ready: following {primary} at {address}, from LSN "
                      "{lsn}", node=self.follower.node_id, primary=self.follower.node.primary_id,
                      address=self.follower.node.primary_address, lsn=self.follower.lsn)
        return self

    def _failed(self, reason):
        self.log.failure("the standby failed to start", reason)
        self.ready.errback(reason)
        self.ready.addErrback(lambda _: None)

    def _write_run_file(self):
        write_run_file(self.config, self.identity, self.advertised, role="standby",
                       replication_port=self.advertised.bound("replication"))

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        if self.ports.running:
            yield self.ports.stopService()
        try:
            for child in reversed(list(self)):
                if child.running:
                    yield defer.maybeDeferred(child.stopService)
        finally:
            yield self.store.close()


def build(config, reactor, host):
    """The ``StandbyServer`` of ``host``'s node (a ``ServerHost``)."""
    server_config = config.server
    data_dir = server_config.data_dir
    check_data_dir(data_dir)
    identity = load_or_create_identity(data_dir)
    hostcrates_path = config.hostcrates or (
        os.path.join(data_dir, HOSTCRATES_FILE)
        if os.path.exists(os.path.join(data_dir, HOSTCRATES_FILE)) else None)
    hostcrates = Hostcrates.from_file(hostcrates_path) if hostcrates_path else Hostcrates()
    # The primary's commit is on its disk before it sends the entry; the
    # standby's is written to its operating system before it answers (not
    # waited for on disk): it survives the primary's death and its own
    # process's, which is what peers.sync promises (docs/ha.md, section 3).
    store = Store.in_directory(data_dir, reactor, ChangeLog(config.peers.retain, recording=False),
                               synchronous="NORMAL")
    advertised = Advertised(server_config.hostname, {
        "envoy": server_config.envoy_listen, "api": server_config.api_listen,
        "replication": config.peers.listen})
    follower = Follower(reactor, store, host.node, host.node_identity, data_dir, config.peers,
                        host.addresses(advertised), host.save_node, host.base_copy_received,
                        host.applied)
    tokens = StandbyTokens(store)
    server = StandbyServer(reactor, config, identity, store, follower, advertised, tokens)
    follower.setServiceParent(server)

    def primary_member():
        return follower.members.get(host.node.primary_id)

    def redirect():
        member = primary_member()
        if member is None:
            return None
        return {"address": member.envoy_address, "server_id": identity.id,
                "fingerprint": identity.fingerprint,
                "reason": "this server is a standby; %s is the primary" % (member.node_id,)}

    channel = Factory.forProtocol(lambda: RedirectToPrimary(redirect))
    server.add_port(envoy_port(reactor, server_config.envoy_listen, identity, channel,
                               config.limits.envoy))
    if server_config.tls is not None:
        cert, key = server_config.tls.cert_file, server_config.tls.key_file
    else:
        cert, key = ensure_api_certificate(data_dir, server_config.hostname,
                                           server_config.api_listen.host)
    registry = metrics_registry(host.collector(), mode=config.spanner.mode)
    registry.register(PortsCollector(advertised.ports))

    def status():
        return {"server_id": identity.id, "fingerprint": identity.fingerprint,
                "hostname": server_config.hostname, "mode": config.spanner.mode,
                "role": "standby", "envoy_address": str(advertised.envoy()),
                "replica": host.replicas.status()}

    def primary_api():
        member = primary_member()
        return None if member is None else member.api_url

    server.api = StandbyAPI(store, tokens, host.replicas, status, registry, reactor,
                            primary_api, hostcrates)
    server.add_port(api_port(reactor, server_config.api_listen, api_site(server.api.resource()),
                             api_server_options(cert, key), config.limits.api))
    server.add_port(tls_port(reactor, "replication", config.peers.listen,
                             MemberFactory(follower), peer_server_options(host.node_identity),
                             config.limits.replication, hang_up=True))
    server.registry = registry
    return server
