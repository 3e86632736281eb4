"""A real fleet (store, index, enrollment) on a fake clock, and envoy keys."""

import json
import time

import nacl.signing
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from zope.interface import implementer

from vigo.config import Address
from vigo.envoy.protocol import IEnvoyListener
from vigo.fleet import wire
from vigo.fleet.enrollment import Enrollment
from vigo.fleet.enrollment_tokens import EnrollmentTokens
from vigo.fleet.fleet import Fleet
from vigo.fleet.hostcrates import Hostcrates
from vigo.fleet.ownership import StandaloneOwnership
from vigo.identity import Identity, key_id
from vigo.interfaces.components import IEnvoyConnection
from vigo.store import Store

HOSTCRATES = [
    {"match": "web*.dc1.example.com", "environment": "prod", "roles": ["web"]},
    {"match": "*.dc1.example.com", "environment": "prod"},
]


class EnvoyKey:
    """An envoy's key pair and the signatures it makes."""

    def __init__(self, hostname="web1.dc1.example.com"):
        self.hostname = hostname
        self.signing = nacl.signing.SigningKey.generate()
        self.public_key = bytes(self.signing.verify_key)
        self.id = key_id(self.public_key)
        self.seq = 0

    def register_fields(self, token, ts_ms):
        message = wire.register_message(self.hostname, self.public_key, token.token_id, ts_ms)
        return (self.hostname, self.public_key, token.encode(), ts_ms,
                self.signing.sign(message).signature)

    def attach_signature(self, server_id, ts_ms):
        return self.signing.sign(wire.attach_message(self.id, server_id, ts_ms)).signature

    def checkin_body(self, ts_ms, fingerprint=b"\x00" * 32, seq=None):
        if seq is None:
            self.seq += 1
            seq = self.seq
        prefix = wire.checkin_signing_prefix(self.id)
        framed = wire.encode_checkin(
            seq, ts_ms, fingerprint, lambda signed: self.signing.sign(prefix + signed).signature
        )
        return framed[4:]


class FleetKit:
    """Everything a fleet needs, wired as the server wires it, on a Clock."""

    def __init__(self, testcase, hostcrates=HOSTCRATES, now=None):
        self.clock = Clock()
        self.clock.advance(now if now is not None else time.time())
        self.data_dir = testcase.mktemp()
        self.identity = Identity.generate()
        self.store = Store.in_directory(self.data_dir, reactor)
        self.store.open()
        testcase.addCleanup(lambda: self.store.close())
        self.hostcrates = Hostcrates.from_data(hostcrates)
        self.address = Address("127.0.0.1", 1530)
        self.fleet = Fleet(self.store, self.identity, self.hostcrates, self.clock, 15.0, 3)
        self.ownership = StandaloneOwnership(self.identity, lambda: self.address)
        self.tokens = EnrollmentTokens(self.store, self.identity, self.clock,
                                       lambda: self.address)
        self.enrollment = Enrollment(self.fleet, self.store, self.identity, self.ownership,
                                     self.clock, lambda: self.address, self.tokens)

    def now_ms(self):
        return int(self.clock.seconds() * 1000)

    async def enroll(self, key=None, **token_args):
        key = key or EnvoyKey()
        token = await self.tokens.create(**token_args)
        await self.enrollment.register(*key.register_fields(token, self.now_ms()))
        return key, self.fleet.index.get(key.id)


@implementer(IEnvoyConnection)
class RecordingConnection:
    """An IEnvoyConnection that remembers what was sent and why it was dropped."""

    def __init__(self):
        self.sent = []
        self.dropped = None

    def send(self, data):
        self.sent.append(data)

    def drop(self, refusal):
        self.dropped = refusal

    def hang_up(self):
        self.dropped = "hung up"


def decode_frames(data):
    """Every (kind, fields-or-body) in a byte stream of framed messages."""
    out = []
    while data:
        length = int.from_bytes(data[:4], "big")
        out.append(decode_frame(data[:4 + length]))
        data = data[4 + length:]
    return out


def decode_frame(data):
    """(kind, fields-or-body) of one framed message."""
    body = data[4:]
    assert int.from_bytes(data[:4], "big") == len(body)
    kind = body[0]
    if kind == wire.NO_CHANGE:
        return kind, wire.decode_no_change(body)
    if len(body) == 1:
        return kind, None
    return kind, json.loads(body[1:])


@implementer(IEnvoyListener)
class EnvoyConnections:
    """Every envoy connection the test opens, and the redirects they were sent."""

    def __init__(self):
        self.open = {}
        self.redirects = []

    def envoy_connected(self, protocol):
        self.open[protocol] = defer.Deferred()

    def envoy_disconnected(self, protocol, reason):
        done = self.open.pop(protocol, None)
        if done is not None:
            done.callback(None)

    def envoy_force_push(self, protocol):
        pass

    def envoy_redirected(self, protocol, redirect):
        self.redirects.append(redirect)

    def envoy_refused(self, protocol, refusal):
        pass

    def envoy_bundle(self, protocol, bundle):
        pass

    def close_all(self):
        waits = list(self.open.values())
        for protocol in list(self.open):
            protocol.transport.abortConnection()
        return defer.gatherResults(waits)
