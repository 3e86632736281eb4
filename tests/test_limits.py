"""Every listening port bounded: caps before TLS, deadlines inside it, counted.

The guard's two layers are driven in memory on a ``Clock``; then a real envoy
port on loopback shows what an attacker saw: connections that never finish
the TLS handshake are cut (they were held forever), and connections over a
cap are closed as they are accepted.
"""

import socket

from twisted.internet import defer, protocol, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.trial import unittest
from zope.interface import implementer

from vigo.config import Address, PortLimits, config_from_mapping
from vigo.metrics import PortsCollector
from vigo.server.limits import PortGuard
from vigo.server.ports import envoy_port

LIMITS = PortLimits(handshake=5.0, first_request=3.0, idle=60.0, per_source=2, connections=3)


@implementer(IHandshakeListener)
class Recorder(protocol.Protocol):
    def __init__(self):
        self.received, self.handshakes, self.lost = [], 0, None

    def handshakeCompleted(self):
        self.handshakes += 1

    def dataReceived(self, data):
        # A toy protocol: a request is whole once its "." has come.
        self.received.append(data)
        if data.endswith(b"."):
            self.transport.request_received()

    def connectionLost(self, reason):
        self.lost = reason


def address(host="10.0.0.1", port=40000):
    return IPv4Address("TCP", host, port)


class Connection:
    """One accepted connection through the deadlines layer (``inner``, the
    port's one factory), on a StringTransport."""

    def __init__(self, inner, host="10.0.0.1"):
        self.watched = inner.buildProtocol(address(host))
        self.app = self.watched.wrappedProtocol
        self.transport = StringTransport(peerAddress=address(host))
        self.watched.makeConnection(self.transport)

    @property
    def aborted(self):
        return self.transport.disconnecting


class CapsTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.guard = PortGuard("envoy", LIMITS, Clock())
        self.caps = self.guard.caps(protocol.Factory.forProtocol(protocol.Protocol))

    def test_per_source_then_global(self):
        first = self.caps.buildProtocol(address("10.0.0.1"))
        second = self.caps.buildProtocol(address("10.0.0.1"))
        self.assertIsNotNone(first)
        self.assertIsNotNone(second)
        self.assertIsNone(self.caps.buildProtocol(address("10.0.0.1")), "third from one source")
        self.assertIsNotNone(self.caps.buildProtocol(address("10.0.0.2")))
        self.assertIsNone(self.caps.buildProtocol(address("10.0.0.3")), "over the global cap")
        self.assertEqual(self.guard.stats(), {"open": 3, "refused": {
            "connections": 1, "per_source": 1, "handshake": 0, "first_request": 0,
            "idle": 0}})
        # A connection that ends gives its place back.
        first.makeConnection(StringTransport())
        first.connectionLost(None)
        self.assertEqual(self.guard.open, 2)
        self.assertIsNotNone(self.caps.buildProtocol(address("10.0.0.1")))

    def test_refusals_are_logged_once_a_minute_per_reason(self):
        events = []
        self.guard.log = Logger(observer=events.append)
        for _ in range(5):
            self.guard.refuse("per_source")
        self.guard.refuse("connections")
        self.assertEqual([e["why"] for e in events], [
            "a source holds limits.envoy.per_source (2) connections",
            "the port holds limits.envoy.connections (3) connections"])
        self.guard.clock.advance(60)
        self.guard.refuse("per_source")
        self.assertEqual(events[-1]["total"], 6)
        self.assertEqual(len(events), 3)


class FakeTLS(ProtocolWrapper):
    """Stands for TLSMemoryBIOProtocol: its handshake is done with the byte b"!"."""

    def dataReceived(self, data):
        if b"!" in data:
            self.wrappedProtocol.handshakeCompleted()


class FakeTLSFactory(WrappingFactory):
    protocol = FakeTLS

    def __init__(self, wrapped):
        WrappingFactory.__init__(self, wrapped)
        self.built = 0

    def buildProtocol(self, addr):
        self.built += 1
        return WrappingFactory.buildProtocol(self, addr)


def record(payload):
    """``payload`` as one TLS handshake record."""
    return b"\x16\x03\x01" + len(payload).to_bytes(2, "big") + payload


class FixedRandom:
    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


class HandshakeTests(unittest.SynchronousTestCase):
    """The handshake deadline runs outside TLS, from the accept; TLS is made lazily."""

    def setUp(self):
        self.clock = Clock()
        self.guard = PortGuard("envoy", LIMITS, self.clock, rng=FixedRandom(0.0))
        self.tls = FakeTLSFactory(self.guard.deadlines(protocol.Factory.forProtocol(Recorder)))
        self.caps = self.guard.caps(self.tls)

    def accepted(self):
        capped = self.caps.buildProtocol(address())
        transport = StringTransport(peerAddress=address())
        capped.makeConnection(transport)
        return capped, transport

    def test_a_silent_connection_gets_no_tls_and_is_cut_at_the_deadline(self):
        capped, transport = self.accepted()
        self.assertIsNone(capped.wrappedProtocol)
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected, "aborted")
        self.assertEqual((self.tls.built, self.guard.refused["handshake"]), (0, 1))
        capped.connectionLost(None)
        self.assertEqual(self.guard.open, 0)

    def test_deadlines_are_spread_over_a_tenth_of_the_handshake(self):
        self.assertEqual(PortGuard("envoy", LIMITS, self.clock, rng=FixedRandom(0.999))
                         .handshake_deadline(), 5.0 * 1.0999)
        deadlines = [PortGuard("envoy", LIMITS, self.clock).handshake_deadline()
                     for _ in range(50)]
        self.assertTrue(all(5.0 <= d < 5.5 for d in deadlines), deadlines)
        self.assertGreater(len(set(deadlines)), 1)

    def test_a_record_dribbled_gets_no_tls_and_is_cut_too(self):
        capped, transport = self.accepted()
        hello = record(b"x" * 300)
        for byte in hello[:5]:
            capped.dataReceived(bytes((byte,)))
            self.clock.advance(1.0)
        self.assertEqual(self.tls.built, 0, "no whole record: no TLS")
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.guard.refused["handshake"], 1)

    def test_bytes_that_are_not_tls_are_cut_at_once(self):
        for first in (b"GET / HTTP/1.1\r\n", b"\x17\x03\x03\x00\x10", b"\x16\x02\x00\x00\x01",
                      b"\x16\x03\x01\xff\xff"):
            capped, transport = self.accepted()
            capped.dataReceived(first)
            self.assertTrue(transport.disconnected, first)
            capped.connectionLost(None)
        self.assertEqual((self.tls.built, self.guard.refused["handshake"], self.guard.open),
                         (0, 4, 0))

    def test_a_handshake_in_time_ends_the_deadline_and_starts_the_next(self):
        capped, transport = self.accepted()
        self.clock.advance(4.0)
        hello = record(b"hello!")
        capped.dataReceived(hello[:3])
        self.assertEqual(self.tls.built, 0)
        capped.dataReceived(hello[3:])
        self.assertEqual(self.tls.built, 1)
        self.clock.advance(2.0)
        self.assertFalse(transport.disconnecting, "handshake done at 4 s")
        watched = capped.wrappedProtocol.wrappedProtocol
        self.assertEqual(watched.wrappedProtocol.handshakes, 1, "passed on to the application")
        self.clock.advance(1.0)  # first_request: 3 s after the handshake
        self.assertTrue(transport.disconnected)
        self.assertEqual(dict(self.guard.refused), {"first_request": 1})


class DeadlineTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.guard = PortGuard("envoy", LIMITS, self.clock)
        self.inner = self.guard.deadlines(protocol.Factory.forProtocol(Recorder))

    def connection(self, host="10.0.0.1"):
        return Connection(self.inner, host)

    def test_no_first_request_after_the_handshake_is_aborted(self):
        connection = self.connection()
        self.clock.advance(4.0)
        connection.watched.handshakeCompleted()
        self.assertEqual(connection.app.handshakes, 1, "passed on to the application")
        self.clock.advance(10.0)  # past the handshake deadline: cancelled
        self.assertTrue(connection.aborted)
        self.assertEqual(dict(self.guard.refused), {"first_request": 1})

    def test_a_request_in_time_is_let_through(self):
        connection = self.connection()
        connection.watched.handshakeCompleted()
        self.clock.advance(2.0)
        connection.watched.dataReceived(b"hel")
        self.clock.advance(0.9)
        connection.watched.dataReceived(b"lo.")
        self.clock.advance(30.0)
        self.assertFalse(connection.aborted)
        self.assertEqual(connection.app.received, [b"hel", b"lo."])
        self.assertEqual(sum(self.guard.refused.values()), 0)

    def test_bytes_that_never_make_a_request_do_not_hold_a_connection(self):
        # A slowloris: a byte a second, never a whole request.
        self.guard.start()
        self.addCleanup(self.guard.stop)
        first, later = self.connection(), self.connection("10.0.0.2")
        first.watched.handshakeCompleted()
        later.watched.handshakeCompleted()
        later.watched.dataReceived(b"one request.")
        for _ in range(3):
            self.clock.advance(1.0)
            first.watched.dataReceived(b"x")
        self.assertTrue(first.aborted, "no whole first request within 3 s")
        for _ in range(60):
            self.clock.advance(1.0)
            if not later.aborted:
                later.watched.dataReceived(b"x")
        self.assertTrue(later.aborted, "no whole request within idle (60 s)")
        self.assertEqual(dict(self.guard.refused), {"first_request": 1, "idle": 1})

    def test_silence_past_idle_is_cut_by_the_sweep(self):
        self.guard.start()
        self.addCleanup(self.guard.stop)
        busy, quiet = self.connection(), self.connection("10.0.0.2")
        for connection in (busy, quiet):
            connection.watched.handshakeCompleted()
            connection.watched.dataReceived(b"first.")
        for _ in range(8):  # 120 s: busy speaks every 15 s, quiet never again
            self.clock.advance(15.0)
            busy.watched.dataReceived(b"checkin.")
        self.assertTrue(quiet.aborted)
        self.assertFalse(busy.aborted)
        self.assertEqual(dict(self.guard.refused), {"idle": 1})

    def test_hang_up_closes_every_connection(self):
        connections = [self.connection("10.0.0.%d" % (n,)) for n in (1, 2)]
        self.guard.hang_up()
        self.assertTrue(all(c.transport.disconnecting for c in connections))


class EnvoyPortTests(unittest.TestCase):
    """A real envoy port on loopback, with short deadlines."""

    def setUp(self):
        from tests.fleetkit import FleetKit
        from vigo.fleet.channel import EnvoyChannelFactory

        self.kit = FleetKit(self)
        limits = PortLimits(handshake=0.3, first_request=0.3, idle=60.0, per_source=50,
                            connections=60)
        self.port = envoy_port(reactor, Address("127.0.0.1", 0), self.kit.identity,
                               EnvoyChannelFactory(self.kit.fleet, self.kit.enrollment,
                                                   reactor), limits)
        self.port.startService()
        self.addCleanup(self.port.stopService)

    def connect(self):
        """A raw TCP connection that will never start TLS; a Deferred that fires
        once the server has closed it."""
        closed = defer.Deferred()

        class Silent(protocol.Protocol):
            def connectionLost(self, reason):
                closed.callback(None)

        connected = protocol.ClientCreator(reactor, Silent).connectTCP(
            "127.0.0.1", self.port.bound())
        connected.addCallback(lambda p: self.addCleanup(p.transport.abortConnection))
        return connected.addCallback(lambda _: closed)

    @defer.inlineCallbacks
    def test_connections_that_never_handshake_are_cut(self):
        yield defer.gatherResults([self.connect() for _ in range(40)])  # each closed by it
        self.assertEqual(self.port.guard.refused["handshake"], 40)
        self.assertEqual(self.port.guard.open, 0)

    @defer.inlineCallbacks
    def test_over_the_cap_is_closed_at_once(self):
        sockets = []
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", self.port.bound()))
            self.addCleanup(s.close)
            sockets.append(s)
        yield self.connect()  # the 51st from 127.0.0.1: closed by the server
        self.assertEqual(self.port.guard.refused["per_source"], 1)
        metrics = list(PortsCollector({"envoy": self.port}).collect())
        refused = {tuple(sample.labels.values()): sample.value for sample in metrics[1].samples}
        self.assertEqual(refused[("envoy", "per_source")], 1)


class ConfigTests(unittest.SynchronousTestCase):
    def test_every_port_has_its_limits(self):
        limits = config_from_mapping({"limits": {"peer": {"per_source": 4}}}).limits
        self.assertEqual((limits.peer.per_source, limits.api.per_source), (4, 128))


class PeerPortTests(unittest.TestCase):
    """The peer port as a bolt wires it (``tls_port``, PB over mutual TLS): it had
    no deadline at all, before or after login."""

    def setUp(self):
        from tests.peerkit import PeerSet, make_actions
        from vigo.mutual_tls import peer_server_options
        from vigo.server.ports import tls_port
        from vigo.spanner.peer.server import PeerPortal, peer_server_factory

        self.peers = PeerSet(("alpha", "beta"), clock=reactor)
        actions = make_actions()
        alpha = self.peers.facade("alpha", actions)
        portal = PeerPortal(self.peers.roster, alpha, actions, lambda *a: {})
        limits = PortLimits(handshake=0.3, first_request=0.3, idle=0.8, per_source=50,
                            connections=60)
        self.port = tls_port(reactor, "peer", Address("127.0.0.1", 0),
                             peer_server_factory(portal),
                             peer_server_options(self.peers.identities["alpha"]), limits,
                             hang_up=True)
        self.port.startService()
        self.addCleanup(self.port.stopService)

    @defer.inlineCallbacks
    def test_silent_then_idle_connections_are_cut(self):
        from vigo.spanner.peer.client import PeerClient

        closed = defer.Deferred()

        class Silent(protocol.Protocol):
            def connectionLost(self, reason):
                closed.callback(None)

        silent = yield protocol.ClientCreator(reactor, Silent).connectTCP(
            "127.0.0.1", self.port.bound())
        self.addCleanup(silent.transport.abortConnection)
        yield closed
        self.assertEqual(self.port.guard.refused["handshake"], 1)

        client = PeerClient(reactor, self.peers.identities["beta"],
                            "127.0.0.1:%d" % (self.port.bound(),),
                            self.peers.identities["alpha"].fingerprint,
                            retry_policy=lambda attempt: 3600.0)
        client.start()
        self.addCleanup(client.stop)
        yield client.when_connected()
        self.assertIn("bolt_id", (yield client.ping()))  # logged in: calls work
        cut = defer.Deferred()
        client._broker.on_lost.append(lambda reason: cut.callback(None))
        yield cut  # then silent for longer than idle (0.8 s): cut by the server
        self.assertEqual(self.port.guard.refused["idle"], 1)
        self.assertFalse(client.connected)
