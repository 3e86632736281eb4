"""The envoy: its protocol, its state directory, its runner and the simulator.

No sockets and no sleeps: protocols talk to an in-memory fake server through
``StringTransport``s, and time is a ``Clock``.
"""

import base64
import hashlib
import io
import json
import os
import random
import sys

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from vigo.envoy import main as envoy_main
from vigo.envoy.answers import (
    Attached,
    BundleRejected,
    EnvoyProtocolError,
    Redirected,
    Refused,
    Registered,
    canonical_document,
)
from vigo.envoy.cadence import next_seq
from vigo.envoy.protocol import NO_VERSION, READY, EnvoyClientProtocol, IEnvoyListener
from vigo.envoy.sim.envoy import SimEnvoy
from vigo.envoy.sim.figures import format_summary
from vigo.envoy.sim.latency import LatencyHistogram
from vigo.envoy.sim.simulator import Simulator
from vigo.envoy.state import EnvoyState, StateError
from vigo.fleet import wire
from vigo.identity import Identity, key_id, verify_signature

NOW = 1_700_000_000.0
DOCUMENT = {"environment": "prod", "roles": ["web"], "vars": {"n": 1}}


def parse_frames(data):
    """Frame bodies in ``data`` and the leftover bytes."""
    bodies = []
    while len(data) >= 4:
        (length,) = wire.LENGTH.unpack_from(data, 0)
        if len(data) < 4 + length:
            break
        bodies.append(data[4:4 + length])
        data = data[4 + length:]
    return bodies, data


def json_frame(kind, fields):
    return wire.frame(wire.encode_json(kind, fields))


class FakeToken:
    """An enrollment token as ``vigo.tokens`` would decode it, built by hand."""

    def __init__(self, server, address="127.0.0.1:1530"):
        self.token_id = "tok1"
        self.server_id = server.identity.id
        self.address = address
        self.fingerprint = server.identity.fingerprint
        payload = {"v": 1, "sid": self.server_id, "addr": address, "fp": self.fingerprint,
                   "tid": self.token_id, "sec": "c2VjcmV0"}
        raw = json.dumps(payload, separators=(",", ":")).encode()
        self.text = "vgoe_" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def __str__(self):
        return self.text


class ServerTransport(StringTransport):
    """The server's end of one in-memory connection: frames go to ``FakeServer``."""

    def __init__(self, server, protocol):
        StringTransport.__init__(self)
        self.server = server
        self.protocol = protocol
        self.envoy_id = None
        self.closed = False
        self._pending = b""

    def write(self, data):
        bodies, self._pending = parse_frames(self._pending + data)
        for body in bodies:
            self.server.handle(self, body)

    def send(self, data, delay=None):
        delay = self.server.latency if delay is None else delay
        self.server.clock.callLater(delay, self._deliver, data)

    def _deliver(self, data):
        if not self.closed:
            self.protocol.dataReceived(data)

    def loseConnection(self):
        if not self.closed:
            self.closed = self.disconnecting = True
            self.server.clock.callLater(0, self.protocol.connectionLost,
                                        Failure(ConnectionDone()))

    abortConnection = loseConnection


class FakeServer:
    """Enough of vigosrv's envoy channel to enroll, attach and answer check-ins."""

    def __init__(self, clock, latency=0.005):
        self.clock = clock
        self.latency = latency
        self.identity = Identity.generate()
        self.keys = {}
        self.last_seq = {}
        self.version = hashlib.sha256(canonical_document(DOCUMENT)).digest()
        self.connections = []
        self.connects = []
        self.checkins = []
        self.pending_push = set()
        self.down = False
        self.refuse_register = None
        self.register_delay = 0.0
        self.registering = self.max_registering = 0

    def connect(self, address, fingerprint, listener, bind_address=None):
        self.connects.append((address, fingerprint, bind_address))
        if self.down:
            return defer.fail(ConnectionRefusedError())
        protocol = EnvoyClientProtocol(self.clock, listener)
        transport = ServerTransport(self, protocol)
        self.connections.append(transport)
        protocol.makeConnection(transport)
        return defer.succeed(protocol)

    def restart(self):
        """Every connection drops; the server refuses connections until ``down`` is False."""
        self.down = True
        for transport in self.connections:
            transport.loseConnection()
        self.connections = []

    def attached(self):
        return [t for t in self.connections if t.envoy_id and not t.closed]

    def handle(self, transport, body):
        kind = body[0]
        if kind == wire.REGISTER:
            self._register(transport, body)
        elif kind == wire.ATTACH:
            fields = wire.decode_json(body, {"envoy_id": str, "server_id": str, "ts": int,
                                             "signature": str})
            message = wire.attach_message(fields["envoy_id"], fields["server_id"], fields["ts"])
            key = self.keys[fields["envoy_id"]]
            assert verify_signature(key, message, wire.unb64(fields["signature"], "s", 64))
            transport.envoy_id = fields["envoy_id"]
            transport.send(json_frame(wire.ATTACHED, {
                "envoy_id": fields["envoy_id"], "interval": 15.0,
                "last_seq": self.last_seq.get(fields["envoy_id"], 0),
                "server_time": self.clock.seconds()}))
        elif kind == wire.CHECKIN:
            self._checkin(transport, body)

    def _register(self, transport, body):
        fields = wire.decode_json(body, {"hostname": str, "public_key": str, "token": str,
                                         "ts": int, "signature": str})
        public_key = wire.unb64(fields["public_key"], "public_key", 32)
        message = wire.register_message(fields["hostname"], public_key, "tok1", fields["ts"])
        assert verify_signature(public_key, message, wire.unb64(fields["signature"], "s", 64))
        if self.refuse_register:
            code, retryable = self.refuse_register
            transport.send(json_frame(wire.REFUSED, {"code": code, "reason": "no",
                                                     "retryable": retryable}))
            return
        envoy_id = key_id(public_key)
        self.keys[envoy_id] = public_key
        self.registering += 1
        self.max_registering = max(self.max_registering, self.registering)

        def answer():
            self.registering -= 1
            transport._deliver(json_frame(wire.REGISTERED, {
                "envoy_id": envoy_id, "server_id": self.identity.id,
                "public_key": wire.b64(self.identity.public_key),
                "fingerprint": self.identity.fingerprint, "address": "bolt1.example.com:1530",
                "interval": 15.0}))

        self.clock.callLater(self.register_delay + self.latency, answer)

    def _checkin(self, transport, body):
        envoy_id = transport.envoy_id
        seq, _, fingerprint, signature = wire.decode_checkin(body)
        signed = wire.checkin_signing_prefix(envoy_id) + body[1:49]
        assert verify_signature(self.keys[envoy_id], signed, signature)
        self.checkins.append((self.clock.seconds(), envoy_id, seq))
        if seq <= self.last_seq.get(envoy_id, 0):
            transport.send(json_frame(wire.REFUSED, {"code": "replayed", "reason": "old",
                                                     "retryable": False, "seq": seq}))
            return
        self.last_seq[envoy_id] = seq
        if fingerprint == self.version and envoy_id not in self.pending_push:
            transport.send(wire.no_change(seq))
            return
        self.pending_push.discard(envoy_id)
        transport.send(self.bundle(envoy_id, seq))

    def bundle(self, envoy_id, seq, identity=None):
        message = wire.bundle_message(envoy_id, seq, self.version, canonical_document(DOCUMENT))
        return json_frame(wire.BUNDLE, {
            "seq": seq, "version": wire.b64(self.version), "document": DOCUMENT,
            "signature": wire.b64((identity or self.identity).sign(message))})

    def push(self, transport):
        self.pending_push.add(transport.envoy_id)
        transport.send(wire.frame(bytes((wire.FORCE_PUSH,))))


def run_until(clock, end):
    """Advance ``clock`` to ``end`` one due call at a time (exact latencies)."""
    while clock.calls and clock.calls[0].getTime() <= end:
        clock.advance(max(0.0, clock.calls[0].getTime() - clock.seconds()))
    clock.advance(max(0.0, end - clock.seconds()))


@implementer(IEnvoyListener)
class RecordingListener:
    """Remembers every event, in order."""

    def __init__(self):
        self.events = []

    def envoy_connected(self, protocol):
        self.events.append(("connected",))

    def envoy_disconnected(self, protocol, reason):
        self.events.append(("disconnected", reason.type))

    def envoy_force_push(self, protocol):
        self.events.append(("force_push",))

    def envoy_redirected(self, protocol, redirect):
        self.events.append(("redirected", redirect.address, redirect.fingerprint))

    def envoy_refused(self, protocol, refusal):
        self.events.append(("refused", refusal.code))

    def envoy_bundle(self, protocol, bundle):
        self.events.append(("bundle", bundle.seq, bundle.version, bundle.document))


class TestCase(unittest.SynchronousTestCase):
    def assertClose(self, first, second, delta):
        """``first`` is within ``delta`` of ``second`` (trial ignores ``delta=``)."""
        if first is None or abs(first - second) > delta:
            self.fail(f"{first!r} is not within {delta} of {second!r}")


class ProtocolTests(TestCase):
    """``EnvoyClientProtocol`` against hand-written server frames."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.server = Identity.generate()
        self.envoy = Identity.generate()
        self.listener = RecordingListener()
        self.protocol = EnvoyClientProtocol(self.clock, self.listener)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def sent(self):
        bodies, rest = parse_frames(self.transport.value())
        self.assertEqual(rest, b"")
        self.transport.clear()
        return bodies

    def attach(self):
        d = self.protocol.attach(self.envoy.id, self.server.id, self.envoy.sign,
                                 self.server.public_key)
        self.sent()
        self.protocol.dataReceived(json_frame(wire.ATTACHED, {
            "envoy_id": self.envoy.id, "interval": 15, "last_seq": 7, "server_time": NOW}))
        return self.successResultOf(d)

    def checkin(self, seq=100, fingerprint=NO_VERSION):
        d = self.protocol.checkin(seq, fingerprint)
        [body] = self.sent()
        return d, body

    def bundle_frame(self, seq, identity=None):
        version = hashlib.sha256(canonical_document(DOCUMENT)).digest()
        message = wire.bundle_message(self.envoy.id, seq, version, canonical_document(DOCUMENT))
        return version, json_frame(wire.BUNDLE, {
            "seq": seq, "version": wire.b64(version), "document": DOCUMENT,
            "signature": wire.b64((identity or self.server).sign(message))})

    def test_listener_interface(self):
        verifyObject(IEnvoyListener, self.listener)
        verifyObject(IEnvoyListener, SimEnvoy(None, 1))
        self.assertEqual(self.listener.events, [("connected",)])

    def test_register(self):
        d = self.protocol.register("web1.dc1.example.com", self.envoy.public_key, "vgoe_x",
                                   "tok1", self.envoy.sign)
        [body] = self.sent()
        self.assertEqual(body[0], wire.REGISTER)
        fields = json.loads(body[1:])
        self.assertEqual(fields["hostname"], "web1.dc1.example.com")
        self.assertEqual(fields["token"], "vgoe_x")
        self.assertEqual(fields["ts"], int(NOW * 1000))
        message = wire.register_message("web1.dc1.example.com", self.envoy.public_key, "tok1",
                                        fields["ts"])
        self.assertTrue(verify_signature(wire.unb64(fields["public_key"], "k", 32), message,
                                         wire.unb64(fields["signature"], "s", 64)))
        self.protocol.dataReceived(json_frame(wire.REGISTERED, {
            "envoy_id": self.envoy.id, "server_id": self.server.id,
            "public_key": wire.b64(self.server.public_key),
            "fingerprint": self.server.fingerprint, "address": "127.0.0.1:1530",
            "interval": 15}))
        self.assertEqual(self.successResultOf(d), Registered(
            self.envoy.id, self.server.id, self.server.public_key, self.server.fingerprint,
            "127.0.0.1:1530", 15.0))

    def test_registered_key_must_match_fingerprint(self):
        d = self.protocol.register("h", self.envoy.public_key, "t", "tok1", self.envoy.sign)
        self.protocol.dataReceived(json_frame(wire.REGISTERED, {
            "envoy_id": "e", "server_id": "s", "public_key": wire.b64(self.server.public_key),
            "fingerprint": self.envoy.fingerprint, "address": "a:1", "interval": 15}))
        self.failureResultOf(d, EnvoyProtocolError)
        self.assertTrue(self.transport.disconnecting)

    def test_register_refused(self):
        d = self.protocol.register("h", self.envoy.public_key, "t", "tok1", self.envoy.sign)
        self.protocol.dataReceived(json_frame(wire.REFUSED, {
            "code": "token_expired", "reason": "expired", "retryable": False}))
        refusal = self.failureResultOf(d, Refused).value
        self.assertEqual((refusal.code, refusal.reason, refusal.retryable),
                         ("token_expired", "expired", False))

    def test_attach(self):
        d = self.protocol.attach(self.envoy.id, self.server.id, self.envoy.sign)
        [body] = self.sent()
        fields = json.loads(body[1:])
        self.assertEqual(body[0], wire.ATTACH)
        message = wire.attach_message(self.envoy.id, self.server.id, fields["ts"])
        self.assertTrue(verify_signature(self.envoy.public_key, message,
                                         wire.unb64(fields["signature"], "s", 64)))
        self.protocol.dataReceived(json_frame(wire.ATTACHED, {
            "envoy_id": self.envoy.id, "interval": 15, "last_seq": 7, "server_time": NOW}))
        self.assertEqual(self.successResultOf(d), Attached(self.envoy.id, 15.0, 7, NOW))
        self.assertEqual(self.protocol.state, READY)

    def test_attach_redirected(self):
        d = self.protocol.attach(self.envoy.id, self.server.id, self.envoy.sign)
        self.protocol.dataReceived(json_frame(wire.REDIRECT, {
            "address": "10.0.0.2:1530", "server_id": "s2", "fingerprint": "fp2",
            "reason": "moved"}))
        redirect = self.failureResultOf(d, Redirected).value
        self.assertEqual((redirect.address, redirect.server_id, redirect.fingerprint),
                         ("10.0.0.2:1530", "s2", "fp2"))
        self.assertTrue(self.transport.disconnecting)

    def test_checkin_no_change(self):
        self.attach()
        d, body = self.checkin(seq=100, fingerprint=b"v" * 32)
        seq, ts, fingerprint, signature = wire.decode_checkin(body)
        self.assertEqual((seq, ts, fingerprint), (100, int(NOW * 1000), b"v" * 32))
        signed = wire.checkin_signing_prefix(self.envoy.id) + body[1:49]
        self.assertTrue(verify_signature(self.envoy.public_key, signed, signature))
        self.clock.advance(0.004)
        self.protocol.dataReceived(wire.no_change(100))
        kind, latency = self.successResultOf(d)
        self.assertEqual(kind, "no_change")
        self.assertAlmostEqual(latency, 0.004, places=6)
        self.assertEqual(self.protocol.state, READY)

    def test_checkin_bundle(self):
        self.attach()
        d, _ = self.checkin(seq=101)
        version, frame = self.bundle_frame(101)
        self.protocol.dataReceived(frame)
        self.assertEqual(self.successResultOf(d)[0], "bundle")
        self.assertEqual(self.listener.events[-1], ("bundle", 101, version, DOCUMENT))

    def test_forged_bundle_rejected(self):
        self.attach()
        d, _ = self.checkin(seq=102)
        _, frame = self.bundle_frame(102, identity=Identity.generate())
        self.protocol.dataReceived(frame)
        self.failureResultOf(d, BundleRejected)
        self.assertNotIn("bundle", [e[0] for e in self.listener.events])
        self.assertEqual(self.protocol.state, READY)

    def test_bundle_for_another_seq_rejected(self):
        self.attach()
        d, _ = self.checkin(seq=103)
        _, frame = self.bundle_frame(99)  # validly signed, but an old answer: a replay
        self.protocol.dataReceived(frame)
        self.failureResultOf(d, EnvoyProtocolError)
        self.assertNotIn("bundle", [e[0] for e in self.listener.events])

    def test_checkin_refused(self):
        self.attach()
        d, _ = self.checkin(seq=104)
        self.protocol.dataReceived(json_frame(wire.REFUSED, {
            "code": "replayed", "reason": "old", "retryable": False, "seq": 104}))
        self.assertEqual(self.failureResultOf(d, Refused).value.seq, 104)
        self.assertEqual(self.protocol.state, READY)

    def test_checkin_before_attach(self):
        self.failureResultOf(self.protocol.checkin(1), EnvoyProtocolError)

    def test_force_push(self):
        self.attach()
        self.protocol.dataReceived(wire.frame(bytes((wire.FORCE_PUSH,))))
        self.protocol.dataReceived(json_frame(wire.FORCE_PUSH, {}))
        self.assertEqual(self.listener.events[-2:], [("force_push",), ("force_push",)])

    def test_unsolicited_redirect(self):
        self.attach()
        self.protocol.dataReceived(json_frame(wire.REDIRECT, {
            "address": "10.0.0.2:1530", "server_id": "s2", "fingerprint": "fp2",
            "reason": "reassigned"}))
        self.assertEqual(self.listener.events[-1], ("redirected", "10.0.0.2:1530", "fp2"))
        self.assertTrue(self.transport.disconnecting)

    def test_partial_frames(self):
        self.attach()
        d, _ = self.checkin(seq=105)
        _, bundle = self.bundle_frame(105)
        data = wire.frame(bytes((wire.FORCE_PUSH,))) + bundle
        for i in range(len(data)):
            self.protocol.dataReceived(data[i:i + 1])
        self.assertEqual(self.successResultOf(d)[0], "bundle")
        self.assertEqual([e[0] for e in self.listener.events[-2:]], ["force_push", "bundle"])

    def test_frames_together(self):
        self.attach()
        d, _ = self.checkin(seq=106)
        self.protocol.dataReceived(wire.no_change(106) + wire.frame(bytes((wire.FORCE_PUSH,))))
        self.assertEqual(self.successResultOf(d)[0], "no_change")
        self.assertEqual(self.listener.events[-1], ("force_push",))

    def test_large_bundle_in_chunks(self):
        self.attach()
        d, _ = self.checkin(seq=107)
        document = {"blob": "x" * (1024 * 1024)}
        version = b"\x01" * 32
        message = wire.bundle_message(self.envoy.id, 107, version, canonical_document(document))
        frame = json_frame(wire.BUNDLE, {"seq": 107, "version": wire.b64(version),
                                         "document": document,
                                         "signature": wire.b64(self.server.sign(message))})
        for i in range(0, len(frame), 16384):
            self.protocol.dataReceived(frame[i:i + 16384])
        self.assertEqual(self.successResultOf(d)[0], "bundle")
        self.assertIsNone(self.protocol._buffer)

    def test_oversize_frame(self):
        self.attach()
        d, _ = self.checkin(seq=108)
        self.protocol.dataReceived(wire.LENGTH.pack(wire.MAX_RESPONSE + 1) + b"\x84")
        self.failureResultOf(d, EnvoyProtocolError)
        self.assertTrue(self.transport.disconnecting)

    def test_empty_frame(self):
        self.protocol.dataReceived(wire.LENGTH.pack(0))
        self.assertTrue(self.transport.disconnecting)

    def test_unexpected_frame(self):
        self.protocol.dataReceived(wire.no_change(1))
        self.assertTrue(self.transport.disconnecting)

    def test_connection_lost_fails_request(self):
        self.attach()
        d, _ = self.checkin(seq=109)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ConnectionDone)
        self.assertEqual(self.listener.events[-1], ("disconnected", ConnectionDone))

    def test_timeout_hangs_up(self):
        self.attach()
        d, _ = self.checkin(seq=110)
        d.addTimeout(30, self.clock)
        self.clock.advance(31)
        self.failureResultOf(d, defer.TimeoutError)
        self.assertTrue(self.transport.disconnecting)


class AttachedAnswerTests(unittest.SynchronousTestCase):
    def test_a_server_time_that_is_no_plausible_time_is_ignored(self):
        from vigo.envoy.answers import decode_attached

        for sent, read in ((1.79e9, 1.79e9), (1790000000, 1.79e9), (10**400, None),
                           (-1, None), (True, None), ("now", None)):
            body = bytes((wire.ATTACHED,)) + json.dumps(
                {"envoy_id": "e", "interval": 15, "last_seq": 7, "server_time": sent}).encode()
            self.assertEqual(decode_attached(body, "e").server_time, read, sent)


class SequenceTests(TestCase):
    def test_time_based(self):
        self.assertEqual(next_seq(0, 1.5), 1_500_000)

    def test_never_back(self):
        self.assertEqual(next_seq(2_000_000, 1.5), 2_000_001)

    def test_monotonic_across_restarts(self):
        path = self.mktemp()
        state = EnvoyState.open(path, create=True)
        seqs = []
        for now in (NOW, NOW, NOW - 60.0):  # the clock steps back
            state = EnvoyState.open(path)
            seq = next_seq(state.last_seq, now)
            state.record_seq(seq)
            seqs.append(seq)
        self.assertEqual(seqs, sorted(set(seqs)))


class StateTests(TestCase):
    def test_round_trip(self):
        path = self.mktemp()
        state = EnvoyState.open(path, create=True)
        self.assertFalse(state.registered)
        self.assertEqual(os.stat(os.path.join(path, "envoy.key")).st_mode & 0o777, 0o600)
        server = Identity.generate()
        state.record_registration("web1", Registered(
            "e1", server.id, server.public_key, server.fingerprint, "bolt1:1530", 15.0),
            "127.0.0.1:1530")
        state.record_seq(42)
        from vigo.envoy.answers import Bundle
        state.apply_bundle(Bundle(42, b"\x02" * 32, DOCUMENT))
        again = EnvoyState.open(path)
        self.assertTrue(again.registered)
        self.assertEqual(again.public_key, state.public_key)
        self.assertEqual((again.envoy_id, again.hostname, again.server_address,
                          again.server_fingerprint, again.server_id, again.server_key,
                          again.advertised_address, again.interval, again.last_seq),
                         ("e1", "web1", "127.0.0.1:1530", server.fingerprint, server.id,
                          server.public_key, "bolt1:1530", 15.0, 42))
        self.assertEqual((again.bundle_version, again.bundle_seq, again.bundle_document),
                         (b"\x02" * 32, 42, DOCUMENT))
        for name in os.listdir(path):
            self.assertEqual(os.stat(os.path.join(path, name)).st_mode & 0o777, 0o600)

    def test_open_key_refused(self):
        path = self.mktemp()
        EnvoyState.open(path, create=True)
        os.chmod(os.path.join(path, "envoy.key"), 0o644)
        self.assertRaises(StateError, EnvoyState.open, path)

    def test_missing(self):
        self.assertRaises(StateError, EnvoyState.open, self.mktemp())

    def test_wrong_server_key(self):
        state = EnvoyState.open(self.mktemp(), create=True)
        self.assertRaises(StateError, state.set_server, "a:1", "fp", "s",
                          Identity.generate().public_key)


class HistogramTests(TestCase):
    def test_percentiles(self):
        histogram = LatencyHistogram()
        self.assertIsNone(histogram.percentile(50))
        for _ in range(98):
            histogram.record(0.002)
        histogram.record(0.050)
        histogram.record(0.100)
        self.assertClose(histogram.percentile(50), 0.002, 0.00002)
        self.assertClose(histogram.percentile(99), 0.050, 0.0005)
        self.assertEqual(histogram.percentile(100), 0.100)
        summary = histogram.summary()
        self.assertEqual(summary["count"], 100)
        self.assertEqual(summary["max_ms"], 100.0)

    def test_extremes(self):
        histogram = LatencyHistogram()
        histogram.record(0.0)
        histogram.record(1e9)
        self.assertEqual(histogram.count, 2)


class SimulatorTests(TestCase):
    """The simulator on a Clock against ``FakeServer``."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.server = FakeServer(self.clock)
        self.token = FakeToken(self.server)

    def simulator(self, count=10, **kwargs):
        kwargs.setdefault("random", random.Random(7))
        return Simulator(self.clock, None, self.token, count, 15.0,
                         connect=self.server.connect, **kwargs)

    def enroll(self, sim):
        d = sim.start()
        run_until(self.clock, self.clock.seconds() + 1)
        self.successResultOf(d)
        return sim

    def test_enroll_and_check_in(self):
        sim = self.enroll(self.simulator())
        self.assertEqual((sim.enrolled, sim.attached), (10, 10))
        self.assertEqual(len(self.server.keys), 10)
        binds = [bind for _, _, bind in self.server.connects]
        self.assertEqual(binds[:5], ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4",
                                     "127.0.0.1"])
        run_until(self.clock, self.clock.seconds() + 60)
        stopped = sim.stop()
        self.clock.advance(0)
        summary = self.successResultOf(stopped)
        self.assertEqual(summary["enrolled"], 10)
        self.assertEqual(summary["bundles"], 10)  # each envoy's first check-in
        self.assertGreaterEqual(summary["checkins"], 38)
        self.assertLessEqual(summary["checkins"], 44)
        self.assertClose(summary["p50_ms"], 5.0, 0.05)
        self.assertClose(summary["p99_ms"], 5.0, 0.05)
        self.assertClose(summary["checkins_per_s"], 10 / 15.0, 0.1)
        self.assertEqual((summary["refusals"], summary["errors"]), ({}, {}))
        self.assertEqual(self.server.attached(), [])
        json.dumps(summary)

    def test_first_checkins_spread_over_an_interval(self):
        self.enroll(self.simulator(count=40))
        run_until(self.clock, self.clock.seconds() + 15)
        first = {}
        for when, envoy_id, _ in self.server.checkins:
            first.setdefault(envoy_id, when)
        self.assertEqual(len(first), 40)
        spread = max(first.values()) - min(first.values())
        self.assertGreater(spread, 10)

    def test_sequences_increase(self):
        self.enroll(self.simulator(count=3))
        run_until(self.clock, self.clock.seconds() + 100)
        by_envoy = {}
        for _, envoy_id, seq in self.server.checkins:
            by_envoy.setdefault(envoy_id, []).append(seq)
        for seqs in by_envoy.values():
            self.assertEqual(seqs, sorted(set(seqs)))

    def test_concurrency_is_bounded(self):
        self.server.register_delay = 1.0
        progress = []

        class Progress:
            def update(self, n):
                progress.append(n)

            def close(self):
                progress.append("closed")

        sim = self.simulator(count=30, concurrency=4, progress=Progress())
        d = sim.start()
        run_until(self.clock, self.clock.seconds() + 20)
        self.successResultOf(d)
        self.assertEqual(self.server.max_registering, 4)
        self.assertEqual(sim.enrolled, 30)
        self.assertEqual(progress, [1] * 30 + ["closed"])
        self.assertClose(sim.summary()["enroll_latency_ms"]["p50_ms"], 1010, 20)

    def test_refusals_counted(self):
        self.server.refuse_register = ("bad_token", False)
        sim = self.enroll(self.simulator(count=5))
        summary = sim.summary()
        self.assertEqual((summary["enrolled"], summary["enroll_failed"]), (0, 5))
        self.assertEqual(summary["refusals"], {"bad_token": 5})

    def test_retryable_refusal_retried(self):
        self.server.refuse_register = ("internal", True)
        sim = self.simulator(count=2)
        d = sim.start()
        self.clock.advance(0.01)
        self.server.refuse_register = None
        run_until(self.clock, self.clock.seconds() + 5)
        self.successResultOf(d)
        self.assertEqual(sim.enrolled, 2)
        self.assertEqual(sim.refusals, {"internal": 2})

    def test_force_push_checks_in_at_once(self):
        sim = self.enroll(self.simulator(count=3))
        run_until(self.clock, self.clock.seconds() + 20)
        transport = self.server.attached()[0]
        before = len(self.server.checkins)
        self.server.push(transport)
        run_until(self.clock, self.clock.seconds() + self.server.latency)
        self.assertEqual(len(self.server.checkins), before + 1)
        when, envoy_id, _ = self.server.checkins[-1]
        self.assertEqual((when, envoy_id), (self.clock.seconds(), transport.envoy_id))
        bundles = sim.bundles
        run_until(self.clock, self.clock.seconds() + self.server.latency)
        self.assertEqual((sim.bundles, sim.force_pushes), (bundles + 1, 1))

    def test_redirect_reconnects_there(self):
        other = Identity.generate()
        sim = self.enroll(self.simulator(count=2))
        transport = self.server.attached()[0]
        transport.send(json_frame(wire.REDIRECT, {
            "address": "127.0.0.9:1531", "server_id": other.id,
            "fingerprint": other.fingerprint, "reason": "reassigned"}))
        run_until(self.clock, self.clock.seconds() + 1)
        self.assertEqual(self.server.connects[-1][:2], ("127.0.0.9:1531", other.fingerprint))
        self.assertEqual((sim.redirects, sim.attached, sim.reconnects), (1, 2, 0))
        self.assertEqual(len(self.server.attached()), 2)

    def test_reconnect_storm(self):
        sim = self.enroll(self.simulator(count=50))
        run_until(self.clock, self.clock.seconds() + 20)
        self.server.restart()
        run_until(self.clock, self.clock.seconds() + 3)
        self.assertEqual(sim.attached, 0)
        self.assertEqual(sim.reconnecting, 50)
        self.server.down = False
        run_until(self.clock, self.clock.seconds() + 60)
        summary = sim.summary()
        self.assertEqual((summary["attached"], summary["reconnects"]), (50, 50))
        [storm] = summary["reconnect_storms"]
        self.assertEqual(storm["envoys"], 50)
        self.assertGreater(storm["seconds"], 3)
        self.assertLess(storm["seconds"], 20)
        self.assertIn("connection_refused", summary["errors"])
        checkins = len(self.server.checkins)
        run_until(self.clock, self.clock.seconds() + 15)
        self.assertGreaterEqual(len(self.server.checkins) - checkins, 45)

    def test_stop_while_enrolling(self):
        self.server.register_delay = 10.0
        sim = self.simulator(count=20, concurrency=5)
        started = sim.start()
        self.clock.advance(1)
        stopped = sim.stop()
        self.clock.advance(0)
        summary = self.successResultOf(stopped)
        self.successResultOf(started)
        self.assertEqual(summary["enrolled"], 0)
        run_until(self.clock, self.clock.seconds() + 30)
        self.assertEqual(sim.attached, 0)
        self.assertEqual(self.server.attached(), [])


class RunnerTests(TestCase):
    """``vigo-envoy register`` and ``run`` on a Clock against ``FakeServer``."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.server = FakeServer(self.clock)
        self.token = FakeToken(self.server)
        self.patch(envoy_main, "connect",
                   lambda reactor, address, fingerprint, listener=None:
                   self.server.connect(address, fingerprint, listener))
        self.path = self.mktemp()

    def register(self):
        state = EnvoyState.open(self.path, create=True)
        d = envoy_main.register(self.clock, state, "web1.dc1.example.com", self.token)
        run_until(self.clock, self.clock.seconds() + 1)
        protocol = self.successResultOf(d)
        d = envoy_main.attach(self.clock, state, protocol)
        run_until(self.clock, self.clock.seconds() + 1)
        self.successResultOf(d)[0].close()
        return state

    def once(self):
        out = io.StringIO()
        runner = envoy_main.EnvoyRunner(self.clock, EnvoyState.open(self.path), out)
        d = runner.once()
        run_until(self.clock, self.clock.seconds() + 1)
        return self.successResultOf(d)

    def test_register_then_once(self):
        state = self.register()
        self.assertEqual(state.envoy_id, key_id(state.public_key))
        self.assertEqual(state.server_address, "127.0.0.1:1530")  # the dialled one
        self.assertEqual(state.server_key, self.server.identity.public_key)
        self.assertTrue(self.once().startswith(f"bundle {self.server.version.hex()} applied"))
        self.assertEqual(EnvoyState.open(self.path).bundle_document, DOCUMENT)
        self.assertTrue(self.once().startswith("no_change"))
        seqs = [seq for _, _, seq in self.server.checkins]
        self.assertEqual(seqs, sorted(set(seqs)))

    def test_run_follows_push_and_reconnects(self):
        self.register()
        out = io.StringIO()
        runner = envoy_main.EnvoyRunner(self.clock, EnvoyState.open(self.path), out,
                                        random.Random(3))
        runner.run()
        run_until(self.clock, self.clock.seconds() + 1)
        self.assertEqual(len(self.server.checkins), 1)  # at once after attaching
        run_until(self.clock, self.clock.seconds() + 40)
        self.assertEqual(len(self.server.checkins), 3)
        self.server.push(self.server.attached()[0])
        run_until(self.clock, self.clock.seconds() + 0.02)
        self.assertEqual(len(self.server.checkins), 4)
        self.server.restart()
        run_until(self.clock, self.clock.seconds() + 2)
        self.server.down = False
        run_until(self.clock, self.clock.seconds() + 60)
        self.assertEqual(len(self.server.attached()), 1)
        self.assertIn("reconnecting in", out.getvalue())
        self.server.restart()
        self.server.down = False
        run_until(self.clock, self.clock.seconds() + 60)
        runner.protocol.close()
        self.server.down = True
        run_until(self.clock, self.clock.seconds() + 1)

    def test_run_once_refused(self):
        self.register()
        self.server.keys.clear()
        original = self.server.handle

        def refuse(transport, body):
            if body[0] == wire.ATTACH:
                transport.send(json_frame(wire.REFUSED, {
                    "code": "revoked", "reason": "envoy is revoked", "retryable": False}))
            else:
                original(transport, body)

        self.server.handle = refuse
        runner = envoy_main.EnvoyRunner(self.clock, EnvoyState.open(self.path), io.StringIO())
        d = runner.once()
        run_until(self.clock, self.clock.seconds() + 1)
        self.assertEqual(self.failureResultOf(d, Refused).value.code, "revoked")

    def test_parser(self):
        parser = envoy_main.build_parser()
        args = parser.parse_args(["sim", "--token", "t", "--count", "5", "--interval", "500ms",
                                  "--duration", "1m", "--server", "127.0.0.1:1530"])
        self.assertEqual((args.count, args.interval, args.duration, args.concurrency,
                          args.source_addresses), (5, 0.5, 60.0, 200, 4))
        self.assertRaises(SystemExit, parser.parse_args,
                          ["sim", "--token", "t", "--count", "5", "--interval", "soon"])
        self.assertRaises(SystemExit, parser.parse_args,
                          ["sim", "--token", "t", "--count", "5", "--hostname-template", "x"])
        args = parser.parse_args(["run", "--state-dir", "d", "--once"])
        self.assertTrue(args.once)

    def test_the_token_from_a_file_the_environment_or_the_command_line(self):
        parser = envoy_main.build_parser()
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(" vgoe_file\n")

        def source(argv, environ=None, stdin=""):
            args = parser.parse_args(["register", "--state-dir", "d", *argv])
            return envoy_main._token_text(parser, args, environ or {}, io.StringIO(stdin))

        env = {"VIGO_ENROLL_TOKEN": "vgoe_env\n"}
        self.assertEqual(source(["--token-file", path], env), ("--token-file", "vgoe_file"))
        self.assertEqual(source(["--token-file", "-"], env, "vgoe_stdin\n"),
                         ("--token-file", "vgoe_stdin"))
        self.assertEqual(source([], env), ("$VIGO_ENROLL_TOKEN", "vgoe_env"))
        self.assertEqual(source(["--token", "vgoe_arg"], env), ("--token", "vgoe_arg"))
        stderr = self.patch_stderr()
        for argv, env in ((["--token-file", path + "-nope"], {}), ([], {}),
                          ([], {"VIGO_ENROLL_TOKEN": "  "})):
            self.assertRaises(SystemExit, source, argv, env)
        self.assertIn("cannot read", stderr.getvalue())
        self.assertIn("give --token-file FILE (or - for standard input), set "
                      "$VIGO_ENROLL_TOKEN, or give --token TOKEN", stderr.getvalue())
        self.assertRaises(SystemExit, parser.parse_args,
                          ["register", "--state-dir", "d", "--token", "a", "--token-file", "b"])

    def patch_stderr(self):
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        return stderr

    def test_a_bad_token_names_where_it_came_from(self):
        stderr = self.patch_stderr()
        with self.assertRaises(SystemExit) as caught:
            envoy_main.main(["register", "--state-dir", "d"],
                            environ={"VIGO_ENROLL_TOKEN": "garbage"})
        self.assertEqual(caught.exception.code, 2)
        self.assertIn("$VIGO_ENROLL_TOKEN: not an enrollment token", stderr.getvalue())

    def test_listener(self):
        runner = envoy_main.EnvoyRunner(self.clock, None, io.StringIO())
        verifyObject(IEnvoyListener, runner)

    def test_exit_codes(self):
        self.patch(envoy_main.sys, "stderr", io.StringIO())
        for error, code in ((Refused("revoked", "envoy is revoked"), 1),
                            (StateError("damaged"), 1), (envoy_main.Fatal("usage", 2), 2),
                            (ValueError("boom"), 1)):
            with self.assertRaises(SystemExit) as caught:
                envoy_main._exit(Failure(error))
            self.assertEqual(caught.exception.code, code)

    def test_format_summary(self):
        sim = Simulator(self.clock, None, self.token, 0, 15.0, connect=self.server.connect)
        sim.start()
        text = format_summary(self.successResultOf(sim.stop()))
        self.assertIn("enrolled     0/0", text)
