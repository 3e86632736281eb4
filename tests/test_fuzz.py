"""Fuzzing every decoder a stranger reaches (issue 9, item 3).

Each property feeds hostile input to one decoder and checks that it ends in
the decoder's own rejection (a counted Refused frame, ``WireError``,
``DatagramError``, ``SnapshotError``, ``InviteError``/``TokenError``, a JSON
4xx, ``SchemaError``/``PeerError``, ``ConfigError``), never another
exception, and that nothing changed. Some decoders are fuzzed by their own
test modules too (random bytes in tests/test_channel.py, tests/test_datagram.py,
tests/test_snapshot.py, ...); the properties here add the structured, hostile
inputs those do not make: every length prefix and message type, JSON with huge
integers, non-finite numbers, lone surrogates and nesting past the recursion
limit, self-referencing values, YAML that is not a config.

Every bug these found is pinned below as a plain test (``...Found`` classes
and ``KnownBugTests``). ``make fuzz`` runs the coverage-guided harnesses of
``fuzz/`` on the same decoders.
"""

import base64
import io
import json
import os
import urllib.parse

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from tests.documents import json_paths, replaced
from tests.fleetkit import HOSTCRATES, EnvoyKey, decode_frames
from tests.peerkit import StubBolt
from tests.rosterkit import B0, FED, FOUNDER, ITEMS, delivered
from tests.test_api import FacadeServer
from tests.test_datagram import FakeRoster, ident
from vigo.api.responses import ApiError, read_object
from vigo.config import ConfigError, GossipConfig, config_from_mapping, load_config
from vigo.config import schema as config_schema
from vigo.fleet import wire
from vigo.fleet.channel import EnvoyChannelFactory
from vigo.fleet.enrollment import Enrollment
from vigo.fleet.enrollment_tokens import EnrollmentTokens
from vigo.fleet.fleet import Fleet
from vigo.fleet.hostcrates import Hostcrates
from vigo.fleet.ownership import StandaloneOwnership
from vigo.hostnames import HostnameError, normalise_hostname
from vigo.identity import Identity
from vigo.interfaces.errors import PeerError
from vigo.interfaces.schema import (
    Boolean,
    Bytes,
    DictOf,
    Float,
    Integer,
    Json,
    ListOf,
    Optional,
    Record,
    SchemaError,
    String,
    check,
    check_json,
)
from vigo.metrics import FleetCollector, metrics_registry
from vigo.spanner.gossip import datagram
from vigo.spanner.gossip.datagram import DatagramError
from vigo.spanner.gossip.gossiper import Gossiper
from vigo.spanner.invites import Invite, InviteError
from vigo.spanner.peer.actions import load_actions, run_action
from vigo.spanner.roster import parts as roster_parts
from vigo.spanner.roster import snapshot as snapshot_module
from vigo.spanner.roster.crdt import Roster
from vigo.spanner.roster.snapshot import SnapshotError, open_snapshot, sign_snapshot
from vigo.testing.bus import MulticastBus
from vigo.testing.store import ImmediateStore
from vigo.tokens import EnrollmentToken, TokenError

START = 1_700_000_000.0
NOW_MS = int(START * 1000)


#: ``VIGO_FUZZ_SCALE=20`` runs twenty times the examples (a longer hunt).
SCALE = max(1, int(os.environ.get("VIGO_FUZZ_SCALE", "1") or 1))


def fuzz(examples):
    """Hypothesis settings for one property: few examples, no deadline."""
    return settings(max_examples=examples * SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# -- hostile JSON, as text (so that it can say what json.dumps never would) ----

HUGE_INTS = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -1, -(2**63) - 1, 10**400, -(10**400)]
JSON_ODDITIES = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E999", "-0", "0.0", "1" * 4301,
    "9" * 4300, "null", "true", "false", '"\\ud800"', '"\\udfffx\\ud800"', '"\\u0000"', '""',
    '"NaN"', '"1e400"', "[]", "{}",
]
FIELDS = ["envoy_id", "server_id", "ts", "signature", "hostname", "public_key", "token",
          "seq", "v", "sid", "tid", "sec", "exp", "sig", "fid", "mid", "addr", "fp"]

json_leaves = st.one_of(
    st.sampled_from(JSON_ODDITIES),
    st.sampled_from(HUGE_INTS).map(str),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=16).map(json.dumps),
)
json_keys = st.sampled_from(FIELDS) | st.text(max_size=8)


def _array(items):
    return "[" + ",".join(items) + "]"


def _object(pairs):
    return "{" + ",".join(json.dumps(key) + ":" + value for key, value in pairs) + "}"


json_texts = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4).map(_array)
    | st.lists(st.tuples(json_keys, inner), max_size=5).map(_object),
    max_leaves=15,
)
#: JSON nested deeper than the parser recurses (sys.getrecursionlimit() is 1000).
deep_json = st.builds(lambda opener, n: opener * n,
                      st.sampled_from(["[", '{"a":', '[{"ts":', '{"ts":[']),
                      st.integers(900, 3000))

# Python values as a JSON decoder (or PB) hands them over, and worse.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(HUGE_INTS)
    | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=15,
)


def self_referencing(value):
    """``value`` inside a list that contains itself (PB can send one)."""
    outer = [value]
    outer.append(outer)
    return outer


hostile_values = json_values | json_values.map(self_referencing) | st.builds(
    lambda value, n: _nest(value, n), json_values, st.integers(30, 2000))


def _nest(value, depth):
    for _ in range(depth):
        value = [value]
    return value


# -- the envoy channel ---------------------------------------------------------------


class LogFailures:
    """The failures (tracebacks) logged while it is open."""

    def __init__(self):
        self.failures = []

    def __call__(self, event):
        if "log_failure" in event:
            self.failures.append(event["log_failure"])

    def __enter__(self):
        globalLogPublisher.addObserver(self)
        return self.failures

    def __exit__(self, *exc):
        globalLogPublisher.removeObserver(self)


class ChannelKit:
    """A fleet on an ``ImmediateStore`` (every job answers at once) with one
    envoy enrolled and one unused token, and its channel factory."""

    def __init__(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.store = ImmediateStore()
        self.identity = Identity(b"\x07" * 32)
        self.fleet = Fleet(self.store, self.identity, Hostcrates.from_data(HOSTCRATES),
                           self.clock, 15.0, 3)
        self.ownership = StandaloneOwnership(self.identity, lambda: "127.0.0.1:1530")
        self.tokens = EnrollmentTokens(self.store, self.identity, self.clock,
                                       lambda: "127.0.0.1:1530")
        self.enrollment = Enrollment(self.fleet, self.store, self.identity, self.ownership,
                                     self.clock, lambda: "127.0.0.1:1530", self.tokens)
        self.factory = EnvoyChannelFactory(self.fleet, self.enrollment, self.clock)
        self.key = EnvoyKey()
        token = self.done(self.tokens.create(uses=2))
        self.done(self.enrollment.register(*self.key.register_fields(token, NOW_MS)))
        self.record = self.fleet.index.get(self.key.id)
        self.token = self.done(self.tokens.create(uses=1))

    @staticmethod
    def done(d):
        result = []
        d.addBoth(result.append)
        assert result and not hasattr(result[0], "getTraceback"), result
        return result[0]

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def state(self):
        """What no hostile frame may change."""
        fleet = self.fleet
        records = sorted((r.id, r.hostname, r.state, r.last_seq, r.last_seen, r.checkins,
                          r.applied_version, r.pending_push, r.connection, r.online)
                         for r in fleet.index)
        return (records, len(fleet._dirty), fleet.stats.enrollments, fleet.stats.attaches,
                dict(fleet.stats.checkins),
                self.store.query("SELECT id, hostname, state, last_seq FROM envoys ORDER BY id"),
                self.store.query("SELECT id, used FROM enrollment_tokens ORDER BY id"))

    def attach_fields(self, **changes):
        """A well-signed Attach of the enrolled envoy, with ``changes`` made after
        signing (a ``ts`` that is an int is signed as it is)."""
        ts = changes.get("ts", NOW_MS)
        ts = ts if type(ts) is int else NOW_MS
        fields = {"envoy_id": self.key.id, "server_id": self.identity.id, "ts": ts,
                  "signature": wire.b64(self.key.attach_signature(self.identity.id, ts))}
        fields.update(changes)
        return fields

    def register_fields(self, key, minted, **changes):
        """A Register of ``key`` with token ``minted``, signed by ``key``, with ``changes``
        made after signing (a ``ts`` that is an int is signed as it is)."""
        ts = changes.get("ts", NOW_MS)
        ts = ts if type(ts) is int else NOW_MS
        hostname, public_key, token_text, ts, signature = key.register_fields(minted, ts)
        fields = {"hostname": hostname, "public_key": wire.b64(public_key),
                  "token": token_text, "ts": ts, "signature": wire.b64(signature)}
        fields.update(changes)
        return fields


#: The codes of the refusals the channel itself makes (and counts).
CHANNEL_CODES = {"malformed", "not_attached", "busy", "internal"}

frame_bodies = st.builds(
    lambda kind, payload: bytes((kind,)) + payload,
    st.sampled_from([wire.ATTACH, wire.REGISTER, wire.CHECKIN]) | st.integers(0, 255),
    st.one_of(
        json_texts.map(lambda text: text.encode("utf-8")),
        deep_json.map(lambda text: text.encode("ascii")),
        st.binary(max_size=64),
        st.binary(min_size=wire.CHECKIN_BODY.size, max_size=wire.CHECKIN_BODY.size),
        st.sampled_from([b"", b"\xff", b"{}", b'{"ts":1e400}', b'{"ts":NaN}']),
    ),
)


@st.composite
def frame_streams(draw, bodies=frame_bodies):
    """A few frames (with right, wrong and extreme length prefixes), in chunks."""
    data = b""
    for body in draw(st.lists(bodies, min_size=1, max_size=4)):
        length = draw(st.one_of(
            st.just(len(body)),
            st.just(len(body)),
            st.sampled_from([0, 1, len(body) - 1, len(body) + 1, wire.MAX_REQUEST,
                             wire.MAX_REQUEST + 1, 2**31, 2**32 - 1]),
            st.integers(0, 2**32 - 1),
        ))
        data += length.to_bytes(4, "big") + body
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)], strict=True)]


class ChannelFuzzTests(unittest.SynchronousTestCase):
    """Hostile frames end in a counted refusal and change nothing."""

    def setUp(self):
        self.kit = ChannelKit()
        self.addCleanup(self.kit.store.close)

    def feed(self, chunks):
        """Feed ``chunks`` to a new connection; check the channel's promises."""
        kit = self.kit
        before = kit.state()
        counted = sum(kit.fleet.stats.frames_refused.values())
        protocol, transport = kit.connect()
        with LogFailures() as failures:
            for chunk in chunks:
                protocol.dataReceived(chunk)
            answers = decode_frames(transport.value())
            protocol.connectionLost(None)
        self.assertEqual(failures, [])
        refusals = [fields["code"] for kind, fields in answers if kind == wire.REFUSED]
        self.assertEqual([kind for kind, _ in answers], [wire.REFUSED] * len(answers))
        self.assertNotIn("internal", refusals)
        channel_refusals = [code for code in refusals if code in CHANNEL_CODES]
        self.assertEqual(sum(kit.fleet.stats.frames_refused.values()) - counted,
                         len(channel_refusals))
        if channel_refusals:
            self.assertTrue(transport.disconnecting)
        self.assertEqual(kit.fleet.stats.frames_refused["internal"], 0)
        self.assertIsNone(protocol.record)
        self.assertEqual(kit.state(), before)
        return refusals

    @fuzz(250)
    @given(frame_streams())
    def test_hostile_frame_streams(self, chunks):
        self.feed(chunks)

    def field_values(self, kind):
        """The fields of an Attach or a Register, each mostly of the right type
        (the real envoy, server and token among them), sometimes hostile JSON."""
        kit = self.kit
        good = {
            "envoy_id": st.sampled_from([kit.key.id, EnvoyKey().id, ""]),
            "server_id": st.sampled_from([kit.identity.id, "a" * 20]),
            "ts": st.sampled_from([NOW_MS, NOW_MS - 299_000, NOW_MS + 301_000, 0, 2**63 - 1])
            | st.integers(0, 2**63 - 1),
            "signature": st.binary(min_size=64, max_size=64).map(wire.b64)
            | st.binary(max_size=80).map(wire.b64),
            "hostname": st.sampled_from(["web1.dc1.example.com", "web9.dc1.example.com",
                                         "web1\n.dc1.example.com", "x" * 300, "a..b",
                                         "Web9.DC1.example.com."]) | st.text(max_size=30),
            "public_key": st.binary(min_size=32, max_size=32).map(wire.b64)
            | st.just(wire.b64(kit.key.public_key)),
            "token": st.just(kit.token.encode()) | damaged_tokens,
        }
        names = (["envoy_id", "server_id", "ts", "signature"] if kind == wire.ATTACH
                 else ["hostname", "public_key", "token", "ts", "signature"])
        return st.fixed_dictionaries(
            {name: st.one_of(good[name].map(json.dumps), good[name].map(json.dumps), json_texts)
             for name in names},
            optional={"extra": json_texts, "seq": json_texts})

    @fuzz(250)
    @given(st.data())
    def test_attach_and_register_with_hostile_fields(self, data):
        """The right fields, mostly of the right types, with wrong values."""
        kind = data.draw(st.sampled_from([wire.ATTACH, wire.REGISTER]))
        fields = data.draw(self.field_values(kind))
        body = bytes((kind,)) + _object(sorted(fields.items())).encode("utf-8")
        if len(body) <= wire.MAX_REQUEST:
            self.feed([wire.frame(body)])

    @fuzz(100)
    @given(st.sampled_from(["ts", "signature", "envoy_id", "server_id"]),
           st.sampled_from(HUGE_INTS + [1.5, True, None, "1", [], {}, float("1e300")]))
    def test_attach_of_the_real_envoy_with_a_bad_field(self, name, value):
        fields = self.kit.attach_fields(**{name: value})
        self.feed([wire.frame(wire.encode_json(wire.ATTACH, fields))])

    @fuzz(100)
    @given(st.sampled_from(["ts", "signature", "hostname", "public_key", "token"]),
           st.sampled_from(HUGE_INTS + [1.5, True, None, "1", [], {}, "\udc00", "web1\n.x"]))
    def test_signed_register_with_a_bad_field(self, name, value):
        fields = self.kit.register_fields(EnvoyKey(), self.kit.token, **{name: value})
        body = json.dumps(fields, separators=(",", ":")).encode("utf-8", "surrogatepass")
        self.feed([wire.frame(bytes((wire.REGISTER,)) + body)])

    def test_every_message_type(self):
        for kind in range(256):
            for payload in (b"", b"{}", b"\x00" * wire.CHECKIN_BODY.size):
                refusals = self.feed([wire.frame(bytes((kind,)) + payload)])
                self.assertEqual(len(refusals), 1, (kind, payload))

    def test_every_length_prefix(self):
        for length in (0, 1, 2, 3, 4, 100, wire.MAX_REQUEST, wire.MAX_REQUEST + 1, 2**24,
                       2**31 - 1, 2**31, 2**32 - 1):
            refusals = self.feed([length.to_bytes(4, "big") + b"\x02" + b"[" * 200])
            self.assertLessEqual(len(refusals), 1, length)


# -- the envoy wire decoders ---------------------------------------------------------

REQUIRED = [
    {"envoy_id": str, "server_id": str, "ts": int, "signature": str},
    {"hostname": str, "public_key": str, "token": str, "ts": int, "signature": str},
    {"seq": int, "version": str, "document": dict, "signature": str},
    {"envoy_id": str, "interval": (int, float), "last_seq": int},
    {"flag": bool, "any": (int, bool)},
    {},
]


class WireFuzzTests(unittest.SynchronousTestCase):
    """``decode_json``, ``decode_checkin``, ``unb64``: a message or ``WireError``."""

    @fuzz(300)
    @given(st.sampled_from(REQUIRED), st.integers(0, 255),
           json_texts.map(str.encode) | deep_json.map(str.encode) | st.binary(max_size=40))
    def test_decode_json(self, required, kind, payload):
        try:
            fields = wire.decode_json(bytes((kind,)) + payload, required)
        except wire.WireError:
            return
        self.assertIsInstance(fields, dict)
        for name, types in required.items():
            value = fields[name]
            self.assertIsInstance(value, types)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.assertTrue(0 <= value < 2**63 or isinstance(value, float))
                self.assertEqual(value, value)  # not NaN
                self.assertNotIn(abs(value), (float("inf"),))
                value / 1000.0  # noqa: B018 -- never overflows

    @fuzz(200)
    @given(st.binary(min_size=wire.CHECKIN_FRAME_LENGTH - 2,
                     max_size=wire.CHECKIN_FRAME_LENGTH + 2) | st.binary(max_size=200))
    def test_decode_checkin(self, body):
        try:
            seq, ts, fingerprint, signature = wire.decode_checkin(body)
        except wire.WireError:
            return
        self.assertTrue(0 <= seq < 2**62 and 0 <= ts < 2**63)
        self.assertEqual((len(fingerprint), len(signature)), (32, 64))

    @fuzz(200)
    @given(st.one_of(st.text(max_size=100), st.binary(max_size=50).map(wire.b64),
                     st.none(), st.integers(), st.binary(max_size=10)),
           st.sampled_from([None, 0, 32, 64]))
    def test_unb64(self, text, length):
        try:
            data = wire.unb64(text, "field", length)
        except wire.WireError:
            return
        self.assertIsInstance(data, bytes)
        if length is not None:
            self.assertEqual(len(data), length)


# -- gossip datagrams ----------------------------------------------------------------


@st.composite
def laid_out_datagrams(draw):
    """Datagrams with the right layout and hostile fields (ids, lengths, counts)."""
    federation = draw(st.sampled_from([b"fed-test"]) | st.binary(max_size=70))
    bolt = draw(st.sampled_from([ident(2).id.encode(), ident(1).id.encode(), b"x"])
                | st.binary(max_size=70))
    flen = draw(st.just(len(federation)) | st.integers(0, 255))
    blen = draw(st.just(len(bolt)) | st.integers(0, 255))
    head = bytes((draw(st.sampled_from([1, 1, 1, 0, 2, 255])), flen % 256)) + federation
    head += bytes((blen % 256,)) + bolt
    numbers = draw(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)))
    body = head + datagram._U64.pack(*numbers) + draw(st.binary(min_size=32, max_size=32))
    body += datagram._COUNTERS.pack(
        draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)),
        *draw(st.tuples(*[st.integers(0, 2**64 - 1)] * 3)),
        draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 255)))
    entries = draw(st.lists(st.binary(min_size=10, max_size=10), max_size=6))
    count = draw(st.just(len(entries)) | st.integers(0, 255))
    body += bytes((count,)) + b"".join(entries)
    return body + draw(st.binary(min_size=64, max_size=64) | st.binary(max_size=70))


class GossipFuzzTests(unittest.SynchronousTestCase):
    """Datagrams: ``DatagramError`` from ``decode``; dropped and counted by a gossiper."""

    def setUp(self):
        self.clock = Clock()
        self.me, self.peer = ident(1), ident(2)
        self.roster = FakeRoster([self.me, self.peer])
        config = GossipConfig(group="239.192.0.9", port=1532, interface="10.0.0.1",
                              interval=0.5, multicast=True, seeds=())
        bus = MulticastBus(self.clock, delay=0)
        self.gossiper = Gossiper(self.clock, self.me, self.roster, config, dict,
                                 bus.listener(self.me.id, ("10.0.0.1", 1532)), incarnation=1)
        self.gossiper.startService()
        self.addCleanup(self.gossiper.stopService)
        self.clock.advance(0.1)

    @fuzz(300)
    @given(laid_out_datagrams())
    def test_decode(self, data):
        try:
            gossip = datagram.decode(data)
        except DatagramError as e:
            self.assertIn(e.reason, ("oversize", "malformed", "version"))
            return
        self.assertFalse(datagram.verify(gossip, self.peer.public_key))

    @fuzz(200)
    @given(laid_out_datagrams())
    def test_gossiper_drops_and_counts(self, data):
        g = self.gossiper
        before = (g.peer_states(), g.stats())
        g.datagram_received(data, ("10.0.0.2", 1532))
        states, stats = g.peer_states(), g.stats()
        self.assertEqual(states, before[0])
        self.assertEqual(stats["received"], before[1]["received"] + 1)
        self.assertEqual(stats["accepted"], before[1]["accepted"])
        self.assertEqual(sum(stats["dropped"].values()), sum(before[1]["dropped"].values()) + 1)


# -- snapshots -----------------------------------------------------------------------

ROSTER = delivered(ITEMS)
SIGNED = sign_snapshot(ROSTER, B0, 123_456)


def signed_by_b0(roster_data):
    """A snapshot of ``roster_data`` signed by B0 (a member that lies): opened
    only if ``RosterParts`` reads it, so the property reaches ``Roster.merge``."""
    snapshot = dict(SIGNED, roster=roster_data)
    try:
        parts = roster_parts.RosterParts.from_data(roster_data)
    except Exception:
        return snapshot
    digest = roster_parts.parts_digest(parts)
    message = snapshot_module._message(digest, B0.id, 5, parts.federation_id, parts.founder_id)
    return dict(snapshot, digest=wire.b64(digest), at_ms=5,
                signature=wire.b64(B0.sign(message)))


ROSTER_PATHS = list(json_paths(SIGNED["roster"]))


class SnapshotFuzzTests(unittest.SynchronousTestCase):
    """``open_snapshot``: a snapshot or ``SnapshotError``; merging one never crashes."""

    @fuzz(200)
    @given(json_texts | deep_json | st.binary(max_size=200)
           | json_texts.map(lambda text: '{"roster":%s,"digest":"","bolt_id":"","at_ms":0,'
                            '"signature":""}' % (text,)))
    def test_hostile_json(self, text):
        try:
            open_snapshot(text, B0.public_key)
        except SnapshotError:
            pass

    @fuzz(150)
    @given(st.sampled_from(sorted(SIGNED)), hostile_values)
    def test_hostile_python_values(self, field, value):
        try:
            open_snapshot(dict(SIGNED, **{field: value}), B0.public_key, FED)
        except SnapshotError:
            pass

    @fuzz(150)
    @given(st.sampled_from(ROSTER_PATHS), json_values | st.sampled_from(HUGE_INTS))
    def test_signed_lies_are_merged_or_refused(self, path, value):
        snapshot = signed_by_b0(replaced(SIGNED["roster"], path, value))
        try:
            opened = open_snapshot(snapshot, B0.public_key)
        except SnapshotError:
            return
        Roster(FED, FOUNDER.id).merge(opened.parts)


# -- invites and enrollment tokens ---------------------------------------------------

INVITE_FIELDS = {"v": "1", "fid": '"fed"', "tid": '"t"', "sec": '"s"', "mid": '"m"',
                 "addr": '"a:1"', "fp": '"f"', "exp": "5", "sig": json.dumps(wire.b64(b"s" * 64))}
TOKEN_FIELDS = {"v": "1", "sid": '"s"', "addr": '"a:1"', "fp": '"f"', "tid": '"t"', "sec": '"x"'}

#: Payloads shaped like a token's or an invite's, with hostile values; the
#: nesting stays under the parser's recursion limit (the deeper case is pinned
#: in KnownBugTests: vigo/tokens.py and vigo/spanner/invites.py do not catch it).
shallow_texts = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3).map(_array)
    | st.lists(st.tuples(json_keys, inner), max_size=3).map(_object),
    max_leaves=8,
)


def shaped_payloads(fields):
    return st.builds(
        lambda replace, values: _object(sorted(dict(fields, **dict(zip(replace, values,
                                                                       strict=False))).items())),
        st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True),
        st.lists(shallow_texts, min_size=3, max_size=3))


damaged_tokens = st.one_of(
    shaped_payloads(TOKEN_FIELDS), shallow_texts, st.binary(max_size=60).map(bytes.hex),
).map(lambda text: "vgoe_" + b64url(text.encode("utf-8")))
damaged_invites = st.one_of(shaped_payloads(INVITE_FIELDS), shallow_texts).map(
    lambda text: "vgoj_" + b64url(text.encode("utf-8")))


class TokenFuzzTests(unittest.SynchronousTestCase):
    """Well-encoded payloads of hostile JSON: ``TokenError`` and ``InviteError`` only."""

    @fuzz(300)
    @given(damaged_tokens | st.text(max_size=40).map(lambda t: "vgoe_" + t))
    def test_enrollment_token(self, text):
        try:
            token = EnrollmentToken.decode(text)
        except TokenError:
            return
        self.assertTrue(all(isinstance(getattr(token, name), str) for name in (
            "token_id", "secret", "server_id", "address", "fingerprint")))

    @fuzz(300)
    @given(damaged_invites)
    def test_invite(self, text):
        try:
            invite = Invite.decode(text)
        except InviteError:
            return
        self.assertIsInstance(invite.verify(B0.public_key), bool)
        self.assertIsInstance(invite.expired(NOW_MS), bool)


# -- REST bodies ---------------------------------------------------------------------


class FakeRequest:
    """What ``read_object`` reads of a request: a header and the body."""

    def __init__(self, body, length=None):
        self.content = io.BytesIO(body)
        self.length = length

    def getHeader(self, name):
        return self.length if name == b"content-length" else None


rest_bodies = st.one_of(
    json_texts.map(str.encode), deep_json.map(str.encode), st.binary(max_size=80),
    st.sampled_from([b"", b" ", b"\xef\xbb\xbf{}", b'{"a":1}\x00', b"{" * 100_000]),
)


class RestFuzzTests(unittest.SynchronousTestCase):
    """Request bodies: ``read_object`` raises only a 4xx ``ApiError``, and the
    admin API answers JSON 4xx, never 500."""

    @fuzz(300)
    @given(rest_bodies, st.sampled_from([None, ("uses", "expires_in"), ()]),
           st.sampled_from([None, b"5", b"99999999999999999999", b"-1", b"1e3", b"\xd9\xa1"]))
    def test_read_object(self, body, allowed, length):
        try:
            value = read_object(FakeRequest(body, length), allowed)
        except ApiError as e:
            self.assertIn(e.status, (400, 413))
            return
        self.assertIsInstance(value, dict)

    def setUp(self):
        self.server = FacadeServer.started(self)
        self.stub = StubTreq(self.server.api.resource())
        self.headers = {**self.server.admin_headers(),
                        b"content-type": [b"application/json"]}

    def request(self, method, path, data):
        d = self.stub.request(method, "http://vigo.test" + path, data=data,
                              headers=self.headers, allow_redirects=False)
        self.stub.flush()
        response = self.successResultOf(d)
        d = self.stub.content(response)
        self.stub.flush()
        return response, self.successResultOf(d)

    @fuzz(120)
    @given(st.sampled_from([
        ("POST", "/api/v1/tokens"), ("POST", "/api/v1/api-tokens"),
        ("POST", "/api/v1/envoys/web1/push"), ("POST", "/api/v1/envoys/web1/reassign"),
        ("POST", "/api/v1/spanner/init"), ("POST", "/api/v1/spanner/invite"),
        ("POST", "/api/v1/spanner/join"), ("POST", "/api/v1/spanner/bolts/x/push"),
    ]), rest_bodies.filter(lambda body: body.strip() not in (b"", b"{}")))
    def test_whole_requests(self, route, body):
        method, path = route
        before = self.server.store.query("SELECT COUNT(*) FROM enrollment_tokens")
        with LogFailures() as failures:
            response, content = self.request(method, path, body)
        self.assertEqual(failures, [])
        self.assertTrue(400 <= response.code < 500, (response.code, content))
        self.assertEqual(set(json.loads(content)), {"error", "detail"})
        self.assertEqual(self.server.store.query("SELECT COUNT(*) FROM enrollment_tokens"),
                         before)

    @fuzz(100)
    @given(st.text(min_size=1, max_size=30))
    def test_hostile_path_segments(self, segment):
        """A 4xx in JSON (or werkzeug's redirect of ``a//b`` to ``a/b``), never a 500."""
        quoted = urllib.parse.quote(segment, safe="")
        with LogFailures() as failures:
            for method, path in (("GET", "/api/v1/envoys/%s"), ("DELETE", "/api/v1/tokens/%s"),
                                 ("POST", "/api/v1/envoys/%s/push")):
                response, content = self.request(method, path % (quoted,), b"")
                if response.code in (301, 308):
                    continue
                self.assertTrue(400 <= response.code < 500, (path, response.code, content))
                self.assertEqual(set(json.loads(content)), {"error", "detail"})
        self.assertEqual(failures, [])


# -- PB arguments --------------------------------------------------------------------

SCHEMAS = [
    String(16), String(64, min_length=1, pattern=r"[a-z0-9_-]{1,64}"), Bytes(8), Integer(),
    Integer(0, 10), Float(), Float(0, 1), Boolean(), ListOf(Integer(), 3),
    DictOf(String(8), Json(64), 4), Optional(String(4)), Json(256),
    Record({"name": String(8), "to": Optional(String(20)), "n": Optional(Integer(0, 2**63 - 1)),
            "args": Optional(Json(128))}),
]
#: Values with no lone surrogates and no integer over 4,300 digits: those two
#: are pinned in KnownBugTests (vigo/interfaces/schema.py does not refuse them).
pb_values = hostile_values | st.recursive(
    st.binary(max_size=8) | st.floats() | st.integers(),
    lambda inner: st.tuples(inner, inner) | st.dictionaries(
        st.integers() | st.booleans() | st.none() | st.text(max_size=4), inner, max_size=3),
    max_leaves=8)


class PeerArgumentFuzzTests(unittest.SynchronousTestCase):
    """``check``/``check_json``: ``SchemaError`` only; ``run_action``: a Deferred
    that fails with ``PeerError``, never another exception."""

    @fuzz(300)
    @given(st.sampled_from(SCHEMAS), pb_values)
    def test_check(self, schema, value):
        try:
            check(schema, value)
        except SchemaError:
            pass

    @fuzz(300)
    @given(pb_values, st.integers(0, 300))
    def test_check_json(self, value, limit):
        try:
            size = check_json(value, limit)
        except SchemaError:
            return
        self.assertLessEqual(size, limit)

    ACTIONS = load_actions()

    @fuzz(200)
    @given(st.sampled_from(sorted(ACTIONS)) | st.text(max_size=70) | pb_values,
           st.dictionaries(st.sampled_from(["to", "envoy", "hostname", "limit", "fields",
                                            "token", "ts", "signature", "public_key"])
                           | st.text(max_size=6), pb_values, max_size=4) | pb_values)
    def test_run_action(self, name, args):
        with LogFailures() as failures:
            d = run_action(StubBolt(), self.ACTIONS, "c" * 20, name, args)
        self.assertEqual(failures, [])
        if isinstance(name, str) and name in self.ACTIONS and not d.called:
            d.cancel()  # an action that waits: it was run, so its arguments passed
        self.assertTrue(d.called)
        result = []
        d.addBoth(result.append)
        if hasattr(result[0], "trap"):
            result[0].trap(PeerError, defer.CancelledError)


# -- config --------------------------------------------------------------------------

yaml_fragments = st.sampled_from([
    "server:", "spanner:", "checkin:", "dbus:", "hostcrates:", "  data_dir: /x",
    "  hostname: a.b", "  interval: 15s", "  offline_after: 3", "  mode: spanner",
    "  patterns: ['*.example.com']", "  gossip: {seeds: [a:1, 'b:2']}", "  peer_listen: :1",
    "  interval: .inf", "  interval: .nan", "  offline_after: 0x7fffffffffffffffff",
    "  offline_after: " + "9" * 4000, "a: &a [*a]", "b: &b {x: *b}", "- 1", "? [1, 2]\n: 3",
    "!!set {a, b}", "!!omap [a: 1]", "!!pairs [a: 1, a: 2]", "!!binary aGk=", "~", "null",
    "  tls: {cert_file: [1], key_file: {}}", "&x server: *x", "<<: {server: {}}",
    "server: {data_dir: !!binary aGk=}", "  bus: system", "{", "]", "\t", "'", '"\\ud800"',
])
yaml_texts = st.lists(yaml_fragments | st.text(max_size=10), min_size=1, max_size=8).map(
    "\n".join)


class ConfigFuzzTests(unittest.SynchronousTestCase):
    """``config_from_mapping`` and ``load_config``: a Config or ``ConfigError``."""

    def setUp(self):
        self.patch(config_schema.socket, "gethostname", lambda: "bolt9.example.com")

    def parsed(self, text):
        try:
            return True, yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError, ValueError):
            return False, None

    @fuzz(300)
    @given(yaml_texts)
    def test_config_from_yaml(self, text):
        ok, data = self.parsed(text)
        if ok:
            try:
                config_from_mapping(data, source="fuzz.yaml", base_dir="/base")
            except ConfigError as e:
                self.assertNotIn("\n", str(e))

    @fuzz(150)
    @given(yaml_texts.map(lambda text: text.encode("utf-8", "surrogatepass"))
           | st.binary(max_size=80))
    def test_load_config(self, data):
        if _yaml_value_error(data):
            return  # pinned in KnownBugTests
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "server.yaml")
        with open(path, "wb") as f:
            f.write(data)
        try:
            load_config(path, environ={}, cwd=directory)
        except ConfigError as e:
            self.assertNotIn("\n", str(e))


def _yaml_value_error(data):
    """True for YAML that PyYAML's constructors refuse with a ValueError."""
    try:
        yaml.safe_load(data.decode("utf-8"))
    except ValueError as e:
        return not isinstance(e, UnicodeDecodeError)
    except Exception:
        return False
    return False


# -- what the fuzzing found ----------------------------------------------------------


class ChannelBugsFound(unittest.SynchronousTestCase):
    """Frames that crashed the channel (or were taken) before issue 9's fixes."""

    def setUp(self):
        self.kit = ChannelKit()
        self.addCleanup(self.kit.store.close)
        self.protocol, self.transport = self.kit.connect()

    def send(self, body):
        with LogFailures() as failures:
            self.protocol.dataReceived(wire.frame(body))
        self.assertEqual(failures, [])
        answers = decode_frames(self.transport.value())
        self.transport.clear()
        return answers

    def assertMalformed(self, answers):
        self.assertEqual([(kind, fields["code"]) for kind, fields in answers],
                         [(wire.REFUSED, "malformed")])
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.kit.fleet.stats.frames_refused["malformed"], 1)

    def test_attach_ts_10_to_the_400(self):
        """Was OverflowError (``ts / 1000.0``) out of dataReceived, uncounted."""
        body = wire.encode_json(wire.ATTACH, self.kit.attach_fields(ts=10**400))
        self.assertMalformed(self.send(body))

    def test_attach_ts_2_to_the_64(self):
        body = wire.encode_json(wire.ATTACH, self.kit.attach_fields(ts=2**64))
        self.assertMalformed(self.send(body))

    def test_register_ts_10_to_the_400(self):
        """Was OverflowError in ``Enrollment._checked``: an ``internal`` refusal
        and a logged traceback."""
        fields = self.kit.register_fields(EnvoyKey(), self.kit.token, ts=10**400)
        before = self.kit.state()
        self.assertMalformed(self.send(wire.encode_json(wire.REGISTER, fields)))
        self.assertEqual(self.kit.state(), before)

    def test_deeply_nested_json(self):
        """Was RecursionError out of dataReceived, uncounted."""
        for opener in (b"[", b'{"a":'):
            self.setUp()
            self.assertMalformed(self.send(bytes((wire.ATTACH,)) + opener * 3000))

    def test_register_nan_and_infinite_ts(self):
        for payload in (b'{"ts":NaN}', b'{"ts":1e400}'):
            self.setUp()
            self.assertMalformed(self.send(bytes((wire.REGISTER,)) + payload))

    def test_unknown_type_and_oversize_are_counted_by_reason(self):
        self.send(b"\x7f")
        protocol, transport = self.kit.connect()
        protocol.dataReceived((wire.MAX_REQUEST + 1).to_bytes(4, "big"))
        self.assertEqual(dict(self.kit.fleet.stats.frames_refused),
                         {"unknown_type": 1, "oversize": 1})
        scraped = generate_latest(metrics_registry(FleetCollector(self.kit.fleet))).decode()
        self.assertIn('vigo_envoy_frames_refused_total{reason="oversize"} 1.0', scraped)
        self.assertIn('vigo_envoy_frames_refused_total{reason="unknown_type"} 1.0', scraped)

    def test_busy_and_not_attached_are_counted(self):
        from vigo.fleet.enrollment import redeem_and_enroll

        release = self.kit.store.hold(redeem_and_enroll)
        fields = self.kit.register_fields(EnvoyKey("web2.dc1.example.com"), self.kit.token)
        self.assertEqual(self.send(wire.encode_json(wire.REGISTER, fields)), [])
        [(kind, answer)] = self.send(wire.encode_json(wire.ATTACH, self.kit.attach_fields()))
        self.assertEqual((kind, answer["code"]), (wire.REFUSED, "busy"))
        self.assertTrue(self.transport.disconnecting)
        release()
        self.assertEqual(self.transport.value(), b"")  # hung up: the answer is not sent
        protocol, transport = self.kit.connect()
        protocol.dataReceived(wire.frame(self.kit.key.checkin_body(NOW_MS)))
        self.assertEqual(decode_frames(transport.value())[0][1]["code"], "not_attached")
        self.assertEqual(dict(self.kit.fleet.stats.frames_refused),
                         {"busy": 1, "not_attached": 1})

    def test_hostname_label_ending_in_a_newline(self):
        """``$`` matched before a trailing newline: the envoy was enrolled as
        ``web1\\n.dc1.example.com``."""
        key = EnvoyKey("web1\n.dc1.example.com")
        fields = self.kit.register_fields(key, self.kit.token)
        before = self.kit.state()
        [(kind, answer)] = self.send(wire.encode_json(wire.REGISTER, fields))
        self.assertEqual((kind, answer["code"]), (wire.REFUSED, "bad_request"))
        self.assertEqual(self.kit.state(), before)

    def test_token_with_lone_surrogates(self):
        """A token whose JSON escapes decode to lone surrogates: ``register_message``
        (``tid``) and the secret's hash (``sec``) raised UnicodeEncodeError, answered
        ``internal`` with a logged traceback."""
        for field in ("tid", "sec", "sid"):
            payload = {"v": 1, "sid": "s", "addr": "a:1", "fp": "f", "tid": "t", "sec": "x"}
            payload[field] = "\udc00"
            text = json.dumps(payload, separators=(",", ":")).encode("ascii")
            token = EnrollmentToken.decode("vgoe_" + b64url(text))
            fields = self.kit.register_fields(EnvoyKey(), self.kit.token, token=token.encode())
            if field != "tid":  # a valid signature over what the envoy sent
                key = EnvoyKey()
                fields = self.kit.register_fields(key, token)
            before = self.kit.state()
            [(kind, answer)] = self.send(wire.encode_json(wire.REGISTER, fields))
            self.assertEqual((kind, answer["code"]), (wire.REFUSED, "bad_request"), field)
            self.assertEqual(self.kit.state(), before)

    def test_token_nested_too_deeply(self):
        """EnrollmentToken.decode raised RecursionError: ``internal``, logged."""
        token = "vgoe_" + b64url(b"[" * 1500)
        fields = self.kit.register_fields(EnvoyKey(), self.kit.token, token=token)
        [(kind, answer)] = self.send(wire.encode_json(wire.REGISTER, fields))
        self.assertEqual((kind, answer["code"]), (wire.REFUSED, "bad_request"))

    def test_signed_checkin_seq_past_2_to_the_62(self):
        """A CheckIn's u64 seq above SQLite's INTEGER was taken, and every
        write-behind after it failed (OverflowError) for every envoy in its
        batch; a seq up to 2**62 leaves room for its reservation above it."""
        for seq in (2**64 - 1, 2**63, 2**62):
            self.setUp()
            kit = self.kit
            self.send(wire.encode_json(wire.ATTACH, kit.attach_fields()))
            self.assertIs(kit.record.connection, self.protocol)
            with LogFailures() as failures:
                self.protocol.dataReceived(wire.frame(kit.key.checkin_body(NOW_MS, seq=seq)))
            self.assertEqual(failures, [])
            [(kind, answer)] = decode_frames(self.transport.value())
            self.assertEqual((kind, answer["code"]), (wire.REFUSED, "malformed"))
            self.assertEqual(kit.fleet.stats.frames_refused["malformed"], 0)  # right-sized
            self.assertEqual(kit.fleet.stats.checkins["malformed"], 1)
            self.assertLess(kit.record.last_seq, 2**62)
            self.successResultOf(kit.fleet.flush())

    def test_wrong_sized_checkin_of_an_attached_envoy_is_counted(self):
        self.send(wire.encode_json(wire.ATTACH, self.kit.attach_fields()))
        answers = self.send(bytes((wire.CHECKIN,)) + b"\x00" * 10)
        self.assertEqual(answers[0][1]["code"], "malformed")
        self.assertFalse(self.transport.disconnecting)  # as before: the fleet answers it
        self.assertEqual(self.kit.fleet.stats.frames_refused["malformed"], 1)


class DecoderBugsFound(unittest.SynchronousTestCase):
    """Decoder inputs that raised something other than the decoder's error."""

    def test_decode_json_deep_nesting(self):
        for payload in (b"[" * 5000, b'{"a":' * 5000):
            self.assertRaises(wire.WireError, wire.decode_json, b"\x02" + payload, {})

    def test_decode_json_of_an_empty_body(self):
        """Was IndexError (``body[0]``)."""
        self.assertRaises(wire.WireError, wire.decode_json, b"", {})

    def test_decode_json_non_finite_and_out_of_range_numbers(self):
        """``NaN``, ``Infinity`` and ``1e400`` (inf) passed as an (int, float);
        ts=10**400 passed as an int."""
        required = {"interval": (int, float)}
        for text in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1", b"10" + b"0" * 400):
            self.assertRaises(wire.WireError, wire.decode_json,
                              b'\x82{"interval":' + text + b"}", required)
        self.assertRaises(wire.WireError, wire.decode_json, b'\x02{"ts":' + b"9" * 400 + b"}",
                          {"ts": int})
        self.assertEqual(wire.decode_json(b'\x02{"ts":9223372036854775807}', {"ts": int}),
                         {"ts": 2**63 - 1})

    def test_decode_checkin_seq_and_ts_past_2_to_the_63(self):
        for seq, ts in ((2**62, 1), (2**63, 1), (1, 2**63), (2**64 - 1, 2**64 - 1)):
            body = wire.encode_checkin(seq, ts, b"\x00" * 32, lambda m: b"\x00" * 64)[4:]
            self.assertRaises(wire.WireError, wire.decode_checkin, body)

    def test_hostname_with_a_newline_in_a_label(self):
        for name in ("web1\n.example.com", "a\n.b", "web1.a\n.b"):
            self.assertRaises(HostnameError, normalise_hostname, name)
        self.assertEqual(normalise_hostname(" Web1.Example.COM.\n"), "web1.example.com")


class KnownBugTests(unittest.SynchronousTestCase):
    """Found by this module in decoders outside the envoy channel, and fixed:
    deep JSON in tokens and invites, lone surrogates and huge ints in peer
    arguments, values PyYAML cannot build in server.yaml."""

    def test_token_nested_too_deeply(self):
        self.assertRaises(TokenError, EnrollmentToken.decode, "vgoe_" + b64url(b"[" * 1500))

    def test_invite_nested_too_deeply(self):
        self.assertRaises(InviteError, Invite.decode, "vgoj_" + b64url(b"[" * 3000))

    def test_check_json_lone_surrogate(self):
        for value in ("\ud800", {"\udc00": 1}, ["a\udfff"]):
            self.assertRaises(SchemaError, check_json, value, 100)

    def test_schema_integer_over_4300_digits(self):
        self.assertRaises(SchemaError, check, Integer(), 10**5000)
        self.assertRaises(SchemaError, check, Float(0, 1), 10**5000)
        self.assertRaises(SchemaError, check_json, {10**5000: 1}, 100)

    def test_run_action_with_a_lone_surrogate(self):
        for args in ({"a": "\ud800"}, {"\ud800": 1}, {10**5000: 1}):
            d = run_action(StubBolt(), load_actions(), "c" * 20, "ping", args)
            self.failureResultOf(d, PeerError)

    def test_load_config_yaml_value_errors(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "server.yaml")
        for text in ("server: {data_dir: 2001-13-01}", "checkin: {offline_after: %s}"
                     % ("1" * 5000,)):
            with open(path, "w") as f:
                f.write(text)
            self.assertRaises(ConfigError, load_config, path, environ={}, cwd=directory)

