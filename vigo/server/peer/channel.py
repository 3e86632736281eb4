"""One replication connection, whichever end dialled: ``MemberProtocol``.

Each command is answered by the node's current role (a ``Role``: the
primary's ``PrimaryReplication``, a standby's ``Follower``), which also
hears when a connection ends. The caller of every command is known by the
node key it proved in the TLS handshake (``peer_key``); a role that does
not take a command refuses it with ``Refused``, naming the role.
"""

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from vigo.config import parse_address
from vigo.identity import key_id
from vigo.interfaces.errors import Refusal
from vigo.mutual_tls import PeerClientCreator, PeerKeyError, peer_key
from vigo.server.peer import protocol
from vigo.server.peer.protocol import NotMember, Refused

CONNECT_TIMEOUT = 5.0


class Role:
    """What a node in some role answers; by default, a refusal of everything."""

    name = "node"

    def _not_here(self, what):
        raise Refused("this %s does not take %s" % (self.name, what))

    def who(self, connection):
        self._not_here("Who")

    def join(self, connection, **kwargs):
        self._not_here("Join")

    def hello(self, connection, **kwargs):
        self._not_here("Hello")

    def entries(self, connection, epoch, head, entries):
        self._not_here("Entries")

    def copy_begin(self, connection, size, lsn, epoch):
        self._not_here("a base copy")

    def copy_chunk(self, connection, data):
        self._not_here("a base copy")

    def copy_end(self, connection, sha256):
        self._not_here("a base copy")

    def follow(self, connection, epoch, primary_id, address):
        self._not_here("Follow")

    def lost(self, connection):
        pass


def _answer(call, *args, **kwargs):
    """``call``'s answer; a ``Refusal`` becomes ``Refused`` (its reason goes
    over the wire), a bug is logged and answered as one."""
    def refused(failure):
        if failure.check(Refused, NotMember):
            return failure
        if failure.check(Refusal):
            raise Refused(failure.value.reason)
        MemberProtocol.log.failure("a replication command failed", failure)
        raise Refused("the command failed on this node (%s); its log has the traceback"
                      % (failure.type.__name__,))

    return defer.maybeDeferred(call, *args, **kwargs).addErrback(refused)


class MemberProtocol(protocol.ReplicationAMP):
    """One connection between members (see the module docstring)."""

    log = Logger()

    def __init__(self, role):
        super().__init__()
        self.role = role
        self.node_key = None
        self.ended = defer.Deferred()

    @property
    def node_id(self):
        return None if self.node_key is None else key_id(self.node_key)

    def caller(self):
        """The caller's node key (read off TLS once); ``NotMember`` without one."""
        if self.node_key is None:
            try:
                self.node_key = peer_key(self.transport)
            except PeerKeyError as e:
                raise NotMember(str(e)) from None
        return self.node_key

    def connectionMade(self):
        super().connectionMade()
        # An answer (an acknowledgement of entries, after their commit) must
        # not wait behind Nagle's algorithm for the peer's delayed ACK.
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            try:
                no_delay(True)
            except (AttributeError, OSError):
                pass

    def connectionLost(self, reason):
        super().connectionLost(reason)
        try:
            self.role.lost(self)
        finally:
            self.ended.callback(None)

    @protocol.Who.responder
    def _who(self):
        self.caller()
        return _answer(self.role.who, self)

    @protocol.Join.responder
    def _join(self, invite_id, secret, envoy_address, api_url, replication_address):
        self.caller()
        return _answer(self.role.join, self, invite_id=invite_id, secret=secret,
                              envoy_address=envoy_address, api_url=api_url,
                              replication_address=replication_address)

    @protocol.Hello.responder
    def _hello(self, epoch, lsn, base_copy, envoy_address, api_url, replication_address):
        self.caller()
        return _answer(self.role.hello, self, epoch=epoch, lsn=lsn, base_copy=base_copy,
                       addresses={"envoy": envoy_address, "api": api_url,
                                  "replication": replication_address})

    @protocol.Entries.responder
    def _entries(self, epoch, head, entries):
        self.caller()
        try:
            batch = protocol.unpack_entries(entries)
        except protocol.ProtocolError as e:
            raise Refused(str(e)) from None
        return _answer(self.role.entries, self, epoch, head, batch)

    @protocol.CopyBegin.responder
    def _copy_begin(self, size, lsn, epoch):
        self.caller()
        return _answer(self.role.copy_begin, self, size, lsn, epoch)

    @protocol.CopyChunk.responder
    def _copy_chunk(self, data):
        return _answer(self.role.copy_chunk, self, data)

    @protocol.CopyEnd.responder
    def _copy_end(self, sha256):
        return _answer(self.role.copy_end, self, sha256)

    @protocol.Follow.responder
    def _follow(self, epoch, primary_id, address):
        self.caller()
        return _answer(self.role.follow, self, epoch, primary_id, address)


class MemberFactory(Factory):
    """The replication port's factory: each connection answered by ``role``."""

    def __init__(self, role):
        self.role = role

    def buildProtocol(self, addr):
        return MemberProtocol(self.role)


class Dials:
    """The dials a service has under way, cancelled when it stops (so a
    stopped node leaves no connection attempt behind)."""

    def __init__(self):
        self._pending = set()

    def __call__(self, *args, **kwargs):
        """``dial(*args, **kwargs)``, tracked until it connects or fails."""
        d = dial(*args, **kwargs)
        self._pending.add(d)

        def done(result):
            self._pending.discard(d)
            return result

        return d.addBoth(done)

    def cancel_all(self):
        for d in list(self._pending):
            d.cancel()


def dial(reactor, address, fingerprint, node_identity, role, timeout=CONNECT_TIMEOUT):
    """A Deferred ``MemberProtocol`` connected to the member at ``address``
    ("host:port"), pinned to ``fingerprint``, presenting ``node_identity``;
    its commands answered by ``role``."""
    where = parse_address(address) if isinstance(address, str) else address
    endpoint = wrapClientTLS(PeerClientCreator(node_identity, fingerprint),
                             HostnameEndpoint(reactor, where.host, where.port, timeout))
    factory = Factory.forProtocol(lambda: MemberProtocol(role))
    factory.noisy = False  # no "Starting factory" line per dial (probes every 2 s)
    return endpoint.connect(factory)
