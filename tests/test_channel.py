"""The envoy channel protocol over an in-memory transport."""


from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from tests.fleetkit import EnvoyKey, FleetKit, decode_frames
from vigo.fleet import wire
from vigo.fleet.channel import ATTACH_TIMEOUT, HANG_UP_GRACE, EnvoyChannelFactory
from vigo.identity import Identity


class ChannelTests(unittest.TestCase):
    def setUp(self):
        self.kit = FleetKit(self)
        self.factory = EnvoyChannelFactory(self.kit.fleet, self.kit.enrollment, self.kit.clock)
        self.protocol, self.transport = self.connect()

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.addCleanup(lambda: protocol.connectionLost(None) if not transport.disconnecting else None)
        return protocol, transport

    def received(self, transport=None):
        transport = transport or self.transport
        data = transport.value()
        transport.clear()
        return decode_frames(data)

    def send_json(self, kind, fields, protocol=None):
        (protocol or self.protocol).dataReceived(wire.frame(wire.encode_json(kind, fields)))

    def attach_fields(self, key):
        ts = self.kit.now_ms()
        return {"envoy_id": key.id, "server_id": self.kit.identity.id, "ts": ts,
                "signature": wire.b64(key.attach_signature(self.kit.identity.id, ts))}

    def test_the_port_guard_is_told_of_each_whole_frame(self):
        told = []
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        transport.request_received = lambda: told.append(len(told))
        protocol.makeConnection(transport)
        self.addCleanup(protocol.connectionLost, None)
        frame = wire.frame(wire.encode_json(wire.ATTACH, {"envoy_id": "x"}))
        for byte in frame[:-1]:
            protocol.dataReceived(bytes((byte,)))
        self.assertEqual(told, [], "a frame not yet whole is no request")
        protocol.dataReceived(frame[-1:])
        self.assertEqual(told, [0])

    @defer.inlineCallbacks
    def test_register_attach_checkin(self):
        key = EnvoyKey()
        token = yield self.kit.tokens.create()
        hostname, public_key, token_text, ts, signature = key.register_fields(token, self.kit.now_ms())
        self.send_json(wire.REGISTER, {"hostname": hostname, "public_key": wire.b64(public_key),
                                       "token": token_text, "ts": ts, "signature": wire.b64(signature)})
        yield self.kit.store.run(lambda c: None)  # let the enrollment commit
        [(kind, fields)] = self.received()
        self.assertEqual((kind, fields["envoy_id"]), (wire.REGISTERED, key.id))
        self.send_json(wire.ATTACH, self.attach_fields(key))
        [(kind, fields)] = self.received()
        self.assertEqual(kind, wire.ATTACHED)
        version = self.kit.hostcrates.bundle_for(key.hostname).version
        # Two check-ins in one write, the second split across two reads.
        first = wire.frame(key.checkin_body(self.kit.now_ms(), version))
        second = wire.frame(key.checkin_body(self.kit.now_ms(), version))
        self.protocol.dataReceived(first + second[:7])
        self.protocol.dataReceived(second[7:])
        self.assertEqual(self.received(), [(wire.NO_CHANGE, 1), (wire.NO_CHANGE, 2)])

    @defer.inlineCallbacks
    def test_pending_push_delivered_at_attach(self):
        key, record = yield defer.ensureDeferred(self.kit.enroll())
        yield self.kit.fleet.force_push(key.id)
        self.send_json(wire.ATTACH, self.attach_fields(key))
        self.assertEqual([kind for kind, _ in self.received()], [wire.ATTACHED, wire.FORCE_PUSH])

    def test_checkin_before_attach_refused(self):
        key = EnvoyKey()
        self.protocol.dataReceived(wire.frame(key.checkin_body(self.kit.now_ms())))
        [(kind, fields)] = self.received()
        self.assertEqual((kind, fields["code"]), (wire.REFUSED, "not_attached"))
        self.assertTrue(self.transport.disconnecting)

    def test_unknown_envoy_refused_but_connection_kept(self):
        self.send_json(wire.ATTACH, self.attach_fields(EnvoyKey()))
        [(kind, fields)] = self.received()
        self.assertEqual(fields["code"], "unknown_envoy")
        self.assertFalse(fields["retryable"])
        self.assertFalse(self.transport.disconnecting)

    def test_oversize_and_empty_frames_hang_up(self):
        for length in (wire.MAX_REQUEST + 1, 0):
            protocol, transport = self.connect()
            protocol.dataReceived(length.to_bytes(4, "big") + b"\x02")
            [(kind, fields)] = self.received(transport)
            self.assertEqual(fields["code"], "malformed")
            self.assertTrue(transport.disconnecting)

    def test_malformed_json_and_types(self):
        for body in [b"\x02not json", b"\x02[1]", b'\x02{"envoy_id": 1}', b"\x7f"]:
            protocol, transport = self.connect()
            protocol.dataReceived(wire.frame(body))
            [(kind, fields)] = self.received(transport)
            self.assertEqual((kind, fields["code"]), (wire.REFUSED, "malformed"))

    def test_unattached_connection_times_out(self):
        self.kit.clock.advance(ATTACH_TIMEOUT + 1)
        [(kind, fields)] = self.received()
        self.assertEqual(fields["code"], "timeout")
        self.assertTrue(self.transport.disconnecting)

    @defer.inlineCallbacks
    def test_a_hung_up_client_is_cut_after_the_grace_and_heard_no_more(self):
        key, _ = yield defer.ensureDeferred(self.kit.enroll())
        self.protocol.dataReceived(wire.frame(b"\x7f"))  # refused: hung up on
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected)
        self.received()
        refused = dict(self.kit.fleet.stats.frames_refused)
        # It ignores the close and goes on sending: nothing is read, nothing answered.
        self.send_json(wire.ATTACH, self.attach_fields(key))
        self.protocol.dataReceived(wire.frame(b"\x7f"))
        self.assertEqual(self.received(), [])
        self.assertEqual(dict(self.kit.fleet.stats.frames_refused), refused)
        self.assertIsNone(self.kit.fleet.index.get(key.id).connection)
        self.kit.clock.advance(HANG_UP_GRACE)
        self.assertTrue(self.transport.disconnected, "aborted")

    @defer.inlineCallbacks
    def test_connection_lost_detaches(self):
        key, record = yield defer.ensureDeferred(self.kit.enroll())
        self.send_json(wire.ATTACH, self.attach_fields(key))
        self.assertIs(record.connection, self.protocol)
        self.protocol.connectionLost(None)
        self.assertIsNone(record.connection)

    @given(st.binary(max_size=400))
    @settings(max_examples=300, deadline=None)
    def test_fuzz_never_crashes_or_changes_state(self, data):
        protocol, transport = self.connect()
        protocol.dataReceived(data)
        self.assertEqual(len(self.kit.fleet.index), 0)
        self.assertIsNone(protocol.record)


class ReplicasTests(unittest.TestCase):
    """Attached and Registered name the replica set's envoy addresses when the
    factory is given them, and only then."""

    def setUp(self):
        self.kit = FleetKit(self)
        self.replicas = ["10.0.0.1:1530", "10.0.0.2:1530"]
        self.envoys = 0

    def key(self):
        self.envoys += 1
        return EnvoyKey("web%d.dc1.example.com" % (self.envoys,))

    def exchange(self, kind, fields, replicas=True, enrollment=None):
        """Send one frame on a new connection; the frames answered."""
        factory = EnvoyChannelFactory(self.kit.fleet, enrollment or self.kit.enrollment,
                                      self.kit.clock,
                                      replicas=(lambda: self.replicas) if replicas else None)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.addCleanup(protocol.connectionLost, None)
        protocol.dataReceived(wire.frame(wire.encode_json(kind, fields)))
        return protocol, transport

    def answers(self, transport):
        return decode_frames(transport.value())

    @defer.inlineCallbacks
    def attach(self, replicas=True):
        key, _ = yield defer.ensureDeferred(self.kit.enroll(self.key()))
        ts = self.kit.now_ms()
        _, transport = self.exchange(wire.ATTACH, {
            "envoy_id": key.id, "server_id": self.kit.identity.id, "ts": ts,
            "signature": wire.b64(key.attach_signature(self.kit.identity.id, ts))}, replicas)
        [(kind, fields)] = self.answers(transport)
        self.assertEqual(kind, wire.ATTACHED)
        return fields

    @defer.inlineCallbacks
    def register(self, replicas=True, enrollment=None):
        key = self.key()
        token = yield self.kit.tokens.create()
        hostname, public_key, text, ts, signature = key.register_fields(token, self.kit.now_ms())
        _, transport = self.exchange(wire.REGISTER, {
            "hostname": hostname, "public_key": wire.b64(public_key), "token": text,
            "ts": ts, "signature": wire.b64(signature)}, replicas, enrollment)
        yield self.kit.store.run(lambda c: None)  # let the enrollment commit
        [(kind, fields)] = self.answers(transport)
        self.assertEqual(kind, wire.REGISTERED)
        return fields

    @defer.inlineCallbacks
    def test_attached_names_the_replicas_as_they_are_now(self):
        fields = yield self.attach()
        self.assertEqual(fields["replicas"], ["10.0.0.1:1530", "10.0.0.2:1530"])
        self.replicas = ["10.0.0.2:1530", "10.0.0.1:1530"]  # a standby was promoted
        fields = yield self.attach()
        self.assertEqual(fields["replicas"], ["10.0.0.2:1530", "10.0.0.1:1530"])

    @defer.inlineCallbacks
    def test_registered_names_the_replicas(self):
        fields = yield self.register()
        self.assertEqual(fields["replicas"], ["10.0.0.1:1530", "10.0.0.2:1530"])
        self.assertEqual(fields["server_id"], self.kit.identity.id)

    @defer.inlineCallbacks
    def test_without_replicas_the_answers_name_none(self):
        self.assertNotIn("replicas", (yield self.attach(replicas=False)))
        self.assertNotIn("replicas", (yield self.register(replicas=False)))

    @defer.inlineCallbacks
    def test_a_registered_naming_another_server_names_not_these_replicas(self):
        other = Identity.generate()

        class Forwarded:
            """Enrollment as a bolt that forwarded the envoy to its owner answers."""

            def register(self, *args):
                return {"envoy_id": "e1", "hostname": "web1.dc1.example.com",
                        "server_id": other.id, "public_key": wire.b64(other.public_key),
                        "fingerprint": other.fingerprint, "address": "10.9.9.9:1530",
                        "interval": 15.0}

        fields = yield self.register(enrollment=Forwarded())
        self.assertEqual(fields["server_id"], other.id)
        self.assertNotIn("replicas", fields)
