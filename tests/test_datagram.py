"""The tier-1 datagram codec, and how a gossiper drops what it must not trust.

Every drop reason is exercised against a live ``Gossiper`` and checked to be
counted and to change nothing else; decode is fuzzed with random and mutated
bytes, which may only ever raise ``DatagramError``.
"""

import random

import attr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from vigo.config import GossipConfig
from vigo.identity import Identity
from vigo.interfaces.components import IRosterView
from vigo.spanner.gossip import datagram
from vigo.spanner.gossip.datagram import Counters, DatagramError, decode, encode, verify
from vigo.spanner.gossip.gossiper import DROP_REASONS, Gossiper
from vigo.testing.bus import MulticastBus

FED = "fed-test"
DIGEST = bytes(range(32))


def ident(n):
    return Identity(bytes([n]) * 32)


@implementer(IRosterView)
class FakeRoster:
    """The smallest roster view: a dict of keys and a set of removals."""

    def __init__(self, identities, removed=(), federation_id=FED):
        self.federation_id = federation_id
        self.keys = {i.id: i.public_key for i in identities}
        self.removed = {i.id for i in removed}

    def key_of(self, bolt_id):
        return self.keys.get(bolt_id)

    def is_removed(self, bolt_id):
        return bolt_id in self.removed

    def digest(self):
        return DIGEST

    def bolt_ids(self):
        return list(self.keys)


@attr.s
class Impostor:
    """Claims ``id`` but signs with another key."""
    id = attr.ib()
    key = attr.ib()

    def sign(self, message):
        return self.key.sign(message)


COUNTERS = {"envoys_owned": 5, "envoys_online": 4, "checkins": 99, "enrollments": 2,
            "pushes": 1, "load_permille": 420, "status": "draining"}


def make(identity, seq=1, incarnation=1000, federation_id=FED, peers=(), digest=DIGEST):
    return encode(identity, federation_id, incarnation, seq, digest, COUNTERS, peers)


class CodecTests(unittest.TestCase):
    def test_round_trip(self):
        me = ident(1)
        peers = [(datagram.peer_tag("a"), 0), (datagram.peer_tag("b"), 1234)]
        data = make(me, seq=7, incarnation=2**63, peers=peers)
        g = decode(data)
        self.assertEqual((g.federation_id, g.bolt_id, g.incarnation, g.seq, g.digest),
                         (FED, me.id, 2**63, 7, DIGEST))
        self.assertEqual(g.counters, Counters.from_mapping(COUNTERS))
        self.assertEqual(g.counters.status, "draining")
        self.assertEqual(list(g.peers), peers)
        self.assertTrue(verify(g, me.public_key))
        self.assertFalse(verify(g, ident(2).public_key))
        self.assertFalse(verify(g, b"short"))

    def test_counters_are_clamped_and_unknown_status_survives(self):
        c = Counters.from_mapping({"envoys_owned": -5, "checkins": 2**70, "load_permille": 10**6,
                                   "status": "exploding"})
        self.assertEqual((c.envoys_owned, c.checkins, c.load_permille, c.status),
                         (0, 2**64 - 1, 0xFFFF, "unknown"))
        g = decode(make(ident(1)))
        data = bytearray(g.message)
        data[-2] = 200  # no peers: the status byte is just before the peer count
        self.assertEqual(decode(bytes(data) + g.signature).counters.status, "unknown")

    def test_ages_are_clamped(self):
        g = decode(make(ident(1), peers=[(b"x" * 8, 10**9), (b"y" * 8, -3)]))
        self.assertEqual([age for _, age in g.peers], [datagram.AGE_MAX_MS, 0])

    def test_size_is_capped(self):
        longest = "f" * 64
        me = Impostor("b" * 64, ident(1))
        room = datagram.max_peers(longest, me.id)
        self.assertGreaterEqual(room, 100)
        peers = [(datagram.peer_tag(str(i)), i) for i in range(room)]
        data = encode(me, longest, 1, 1, DIGEST, COUNTERS, peers)
        self.assertLessEqual(len(data), datagram.MAX_DATAGRAM)
        self.assertGreater(len(data), datagram.MAX_DATAGRAM - 10)
        peers.append((b"z" * 8, 1))
        self.assertRaises(ValueError, encode, me, longest, 1, 1, DIGEST, COUNTERS, peers)

    def test_encode_refuses_bad_fields(self):
        me = ident(1)
        self.assertRaises(ValueError, encode, me, "", 1, 1, DIGEST, {})
        self.assertRaises(ValueError, encode, me, "has space", 1, 1, DIGEST, {})
        self.assertRaises(ValueError, encode, me, FED, 1, 1, b"short", {})
        self.assertRaises(ValueError, encode, me, FED, -1, 1, DIGEST, {})
        self.assertRaises(ValueError, encode, me, FED, 1, 2**64, DIGEST, {})

    def assertReason(self, data, reason):
        with self.assertRaises(DatagramError) as caught:
            decode(data)
        self.assertEqual(caught.exception.reason, reason)

    def test_decode_reasons(self):
        data = make(ident(1), peers=[(b"t" * 8, 5)])
        self.assertReason(b"\x01" * (datagram.MAX_DATAGRAM + 1), "oversize")
        self.assertReason(b"", "malformed")
        self.assertReason(data[:-1], "malformed")
        self.assertReason(data + b"\0", "malformed")
        self.assertReason(b"\x02" + data[1:], "version")
        self.assertReason(data[:2] + b"\x00" + data[3:], "malformed")  # id bytes
        self.assertReason(bytearray(data), "malformed")
        self.assertReason(None, "malformed")

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=1600))
    def test_fuzz_random_bytes(self, data):
        try:
            decode(data)
        except DatagramError:
            pass

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255),
                              st.sampled_from(["flip", "cut", "insert", "drop"])),
                    min_size=1, max_size=6))
    def test_fuzz_mutated_datagrams(self, edits):
        data = bytearray(make(ident(1), peers=[(b"t" * 8, 5), (b"u" * 8, 6)]))
        for at, value, kind in edits:
            at = at % (len(data) + 1)
            if kind == "flip" and at < len(data):
                data[at] ^= value or 1
            elif kind == "cut":
                del data[at:]
            elif kind == "insert":
                data[at:at] = bytes([value])
            elif kind == "drop" and at < len(data):
                del data[at]
        try:
            g = decode(bytes(data))
        except DatagramError:
            return
        verify(g, ident(1).public_key)  # never raises either


class DropTests(unittest.TestCase):
    """Every drop reason is counted and leaves the gossiper's state unchanged."""

    def setUp(self):
        self.clock = Clock()
        self.me, self.peer, self.removed, self.stranger = ident(1), ident(2), ident(3), ident(4)
        self.roster = FakeRoster([self.me, self.peer, self.removed], removed=[self.removed])
        config = GossipConfig(group="239.192.0.9", port=1532, interface="10.0.0.1",
                              interval=0.5, multicast=True, seeds=())
        self.bus = MulticastBus(self.clock, delay=0)
        self.gossiper = Gossiper(self.clock, self.me, self.roster, config, dict,
                                 self.bus.listener(self.me.id, ("10.0.0.1", 1532)),
                                 rng=random.Random(1), incarnation=1)
        self.gossiper.startService()
        self.addCleanup(self.gossiper.stopService)
        self.clock.advance(0.1)

    def test_fake_roster_is_a_roster_view(self):
        verifyObject(IRosterView, self.roster)

    def state(self):
        g = self.gossiper
        stats = g.stats()
        del stats["dropped"]
        return (g.peer_states(), stats)

    def assertDropped(self, data, reason):
        before = self.state()
        counted = self.gossiper.stats()["dropped"][reason]
        self.gossiper.datagram_received(data, ("10.0.0.2", 1532))
        after = self.state()
        before[1]["received"] += 1
        self.assertEqual(after, before)
        self.assertEqual(self.gossiper.stats()["dropped"][reason], counted + 1)

    def test_every_reason(self):
        good = make(self.peer, seq=5)
        self.gossiper.datagram_received(good, ("10.0.0.2", 1532))
        self.assertEqual(self.gossiper.peer_states()[self.peer.id]["state"], "alive")
        self.assertEqual(self.gossiper.peer_states()[self.peer.id]["counters"]["checkins"], 99)
        bad_sig = bytearray(make(self.peer, seq=6))
        bad_sig[-1] ^= 1
        cases = [
            (b"\x01" * 1401, "oversize"),
            (good[:-3], "malformed"),
            (b"\x07" + good[1:], "version"),
            (make(self.peer, seq=6, federation_id="other-fed"), "foreign"),
            (make(self.me, seq=6), "own"),
            (make(self.removed, seq=6), "removed"),
            (make(self.stranger, seq=6), "unknown"),
            (good, "replayed"),
            (make(self.peer, seq=4), "replayed"),
            (make(self.peer, seq=9, incarnation=999), "replayed"),
            (bytes(bad_sig), "bad_signature"),
            (make(Impostor(self.peer.id, self.stranger), seq=7), "bad_signature"),
        ]
        for data, reason in cases:
            self.assertDropped(data, reason)
        self.assertEqual(set(DROP_REASONS), {reason for _, reason in cases})
        # a newer seq, then a new incarnation, are accepted
        self.gossiper.datagram_received(make(self.peer, seq=6), ("10.0.0.2", 1532))
        self.gossiper.datagram_received(make(self.peer, seq=1, incarnation=2000), ("10.0.0.2", 1))
        info = self.gossiper.peer_states()[self.peer.id]
        self.assertEqual((info["incarnation"], info["seq"]), (2000, 1))
        self.assertEqual(self.gossiper.stats()["accepted"], 3)

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(max_size=1500))
    def test_fuzz_changes_nothing(self, data):
        before = self.state()
        self.gossiper.datagram_received(data, ("10.0.0.2", 1532))
        after = self.state()
        before[1]["received"] += 1
        self.assertEqual(after, before)
