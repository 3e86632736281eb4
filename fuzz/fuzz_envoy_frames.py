"""Envoy frames: any bytes on an unattached envoy connection.

Fed to an ``EnvoyChannelProtocol`` over a ``StringTransport``, on a fleet (an
``ImmediateStore``) with one envoy enrolled and one unused token. Promises:
nothing raises, no traceback is logged, every refusal the channel makes is
counted in ``frames_refused`` and hangs up, and no envoy is enrolled or
attached and no token used.
"""

import json
import sys

import harness

with harness.instrumented():
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from vigo.fleet import wire
    from vigo.fleet.channel import EnvoyChannelFactory
    from vigo.fleet.enrollment import Enrollment
    from vigo.fleet.enrollment_tokens import EnrollmentTokens
    from vigo.fleet.fleet import Fleet
    from vigo.fleet.hostcrates import Hostcrates
    from vigo.fleet.ownership import StandaloneOwnership
    from vigo.identity import Identity, key_id
    from vigo.testing.store import ImmediateStore

import nacl.signing  # noqa: E402

NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)
ADDRESS = "127.0.0.1:1530"
CHANNEL_CODES = {"malformed", "not_attached", "busy", "internal"}


def fired(d):
    result = []
    d.addBoth(result.append)
    if not result or hasattr(result[0], "raiseException"):
        raise RuntimeError("setting up the fleet failed: %r" % (result,))
    return result[0]


clock = Clock()
clock.advance(NOW)
store = ImmediateStore()
identity = Identity(b"\x07" * 32)
fleet = Fleet(store, identity, Hostcrates.from_data([{"match": "*", "environment": "prod"}]),
              clock, 15.0, 3)
tokens = EnrollmentTokens(store, identity, clock, lambda: ADDRESS)
enrollment = Enrollment(fleet, store, identity, StandaloneOwnership(identity, lambda: ADDRESS),
                        clock, lambda: ADDRESS, tokens)
factory = EnvoyChannelFactory(fleet, enrollment, clock)

envoy_key = nacl.signing.SigningKey(b"\x09" * 32)
envoy_public = bytes(envoy_key.verify_key)
ENVOY_ID = key_id(envoy_public)
_token = fired(tokens.create())
fired(enrollment.register(
    "web1.example.com", envoy_public, _token.encode(), NOW_MS,
    envoy_key.sign(wire.register_message("web1.example.com", envoy_public, _token.token_id,
                                         NOW_MS)).signature))
TOKEN = fired(tokens.create())
record = fleet.index.get(ENVOY_ID)
failures = harness.LoggedFailures()


def state():
    return (len(fleet.index), fleet.stats.enrollments, fleet.stats.attaches, len(fleet._dirty),
            record.connection, record.last_seq, record.state,
            store.query("SELECT SUM(used), COUNT(*) FROM enrollment_tokens"),
            store.query("SELECT COUNT(*) FROM envoys"))


BEFORE = state()


def answers(data):
    out = []
    while data:
        length = int.from_bytes(data[:4], "big")
        body, data = data[4:4 + length], data[4 + length:]
        out.append((body[0], json.loads(body[1:]) if len(body) > 1 else None))
    return out


def test_one_input(data):
    counted = sum(fleet.stats.frames_refused.values())
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    if len(data) > 2 and data[0] & 1:  # also in two reads, cut where the first byte says
        cut = data[1] % len(data)
        protocol.dataReceived(data[2:cut])
        protocol.dataReceived(data[max(cut, 2):])
    else:
        protocol.dataReceived(data)
    refusals = [fields["code"] for kind, fields in answers(transport.value())
                if kind == wire.REFUSED]
    protocol.connectionLost(None)
    failures.check()
    ours = [code for code in refusals if code in CHANNEL_CODES]
    if "internal" in refusals or sum(fleet.stats.frames_refused.values()) - counted != len(ours):
        raise AssertionError("refusals %r, counted %r" % (refusals, fleet.stats.frames_refused))
    if ours and not transport.disconnecting:
        raise AssertionError("refused %r but kept the connection" % (ours,))
    if state() != BEFORE:
        raise AssertionError("the fleet changed: %r != %r" % (state(), BEFORE))


def _frame(kind, fields):
    return wire.frame(wire.encode_json(kind, fields))


SEEDS = [
    _frame(wire.ATTACH, {"envoy_id": ENVOY_ID, "server_id": identity.id, "ts": NOW_MS,
                         "signature": wire.b64(b"\x00" * 64)}),
    _frame(wire.REGISTER, {"hostname": "web2.example.com", "public_key": wire.b64(b"\x01" * 32),
                           "token": TOKEN.encode(), "ts": NOW_MS,
                           "signature": wire.b64(b"\x00" * 64)}),
    wire.encode_checkin(1, NOW_MS, b"\x00" * 32, lambda signed: b"\x00" * 64),
    wire.frame(b"\x02" + b"[" * 64),
    wire.frame(b"\x7f"),
]

if __name__ == "__main__":
    harness.run(test_one_input, SEEDS, max_len=2 * wire.MAX_REQUEST)
    sys.exit(0)
