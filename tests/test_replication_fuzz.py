"""Hostile input at the replication port: AMP byte streams and boxes.

The port's TLS admits only pinned node keys, so a stranger never reaches a
command; these properties go further and feed what a *member* could send,
garbage included, to a standby's ``Follower`` on a real (in-memory) database:
nothing raises out of ``dataReceived``, no traceback is logged, every bad
command is answered with an AMP error, and nothing in the database changes
unless a well-formed next entry arrives. ``make fuzz`` runs
``fuzz/fuzz_replication.py`` on the same code.
"""

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.protocols import amp
from twisted.trial import unittest

from vigo.config import config_from_mapping
from vigo.identity import Identity
from vigo.server.peer import members as records
from vigo.server.peer.channel import MemberProtocol
from vigo.server.peer.node import NodeState
from vigo.server.peer.protocol import MAX_BOX, pack_entries
from vigo.server.peer.standby import Follower
from vigo.store.changelog import ChangeLogError, decode_entry, encode_entry
from vigo.testing.store import ImmediateStore

PRIMARY = Identity(b"\x01" * 32)
STANDBY = Identity(b"\x02" * 32)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class Kit:
    """A standby's follower on an in-memory database, its primary a member, and
    one connection from that primary (no TLS: the caller's key is set)."""

    def __init__(self, testcase):
        self.clock = Clock()
        self.store = ImmediateStore()
        self.store.run(lambda cursor: records.add_member(
            cursor, PRIMARY.public_key, "127.0.0.1:1530", "https://127.0.0.1:8443",
            "127.0.0.1:1534", 0.0))
        node = NodeState()
        node.follow(0, PRIMARY.id, "127.0.0.1:1534", PRIMARY.fingerprint)
        peers = config_from_mapping({"peers": {"listen": "127.0.0.1:0"}}).peers
        self.follower = Follower(self.clock, self.store, node, STANDBY, testcase.mktemp(),
                                 peers, lambda: {}, lambda node: None, lambda: None)
        self.follower.load()
        self.failures = []
        globalLogPublisher.addObserver(self._observe)
        testcase.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event):
        if "log_failure" in event:
            self.failures.append(event["log_failure"])

    def connect(self):
        protocol = MemberProtocol(self.follower)
        protocol.node_key = PRIMARY.public_key
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.follower.connection = protocol
        return protocol, transport

    def state(self):
        return (self.store.query("SELECT lsn, epoch FROM replication_state"),
                self.store.query("SELECT COUNT(*) FROM envoys"),
                self.store.query("SELECT COUNT(*) FROM replication_log"))


def box(command, **values):
    fields = {b"_command": command, b"_ask": b"1"}
    fields.update({k.encode(): v for k, v in values.items()})
    return amp.AmpBox(fields).serialize()


ENVOY_ROW = ("INSERT INTO envoys (id, hostname, public_key, enrolled_at) VALUES (?, ?, ?, ?)",
             ["e1", "web1.example.com", b"\x00" * 32, 1.0], False)


class ReplicationPortFuzzTests(unittest.TestCase):

    @SETTINGS
    @given(st.lists(st.binary(max_size=300), max_size=6))
    def test_hostile_byte_streams(self, chunks):
        kit = Kit(self)
        protocol, transport = kit.connect()
        before = kit.state()
        for chunk in chunks:
            protocol.dataReceived(chunk)
        self.assertEqual(kit.failures, [])
        self.assertEqual(kit.state(), before)

    @SETTINGS
    @given(st.sampled_from([b"Entries", b"CopyBegin", b"CopyChunk", b"CopyEnd", b"Follow",
                            b"Hello", b"Join", b"Who", b"Nothing"]),
           st.dictionaries(st.sampled_from(["epoch", "head", "entries", "lsn", "size", "data",
                                            "sha256", "primary_id", "address", "x"]),
                           st.binary(max_size=200), max_size=5))
    def test_hostile_boxes_are_refused_and_change_nothing(self, command, values):
        kit = Kit(self)
        protocol, transport = kit.connect()
        before = kit.state()
        protocol.dataReceived(box(command, **values))
        self.assertEqual(kit.failures, [])
        self.assertEqual(kit.state(), before)
        answer = transport.value()
        if command != b"Who":
            self.assertIn(b"_error", answer)

    @SETTINGS
    @given(st.integers(min_value=0, max_value=2 ** 63), st.binary(max_size=300))
    def test_hostile_entries_apply_only_the_next_well_formed_one(self, lsn, data):
        kit = Kit(self)
        protocol, transport = kit.connect()
        before = kit.state()
        protocol.dataReceived(box(b"Entries", epoch=b"0", head=b"1",
                                  entries=pack_entries([(lsn, data)])))
        self.assertEqual(kit.failures, [])
        try:
            decode_entry(data)
            well_formed = True
        except ChangeLogError:
            well_formed = False
        if lsn == 1 and well_formed:  # the next entry: applied
            self.assertEqual(kit.state()[0], [(1, 0)])
            return
        self.assertEqual(kit.state(), before)  # a repeat (lsn 0), a gap, or garbage
        if lsn != 0:
            self.assertIn(b"_error", transport.value())
        # ... and the well-formed next entry still applies afterwards.
        protocol.dataReceived(box(b"Entries", epoch=b"0", head=b"1",
                                  entries=pack_entries([(1, encode_entry([ENVOY_ROW]))])))
        self.assertEqual(kit.store.query("SELECT lsn FROM replication_state"), [(1,)])
        self.assertEqual(kit.store.query("SELECT id FROM envoys"), [("e1",)])

    def test_a_box_over_the_cap_cuts_the_connection(self):
        kit = Kit(self)
        protocol, transport = kit.connect()
        value = b"x" * 60000
        pair = b"%s%s" % (struct.pack(">H", 2) + b"k1", struct.pack(">H", len(value)) + value)
        for _ in range(MAX_BOX // len(pair) + 2):  # one box, never ended
            protocol.dataReceived(pair)
        self.assertTrue(transport.disconnecting or transport.disconnected)
        self.assertEqual(kit.failures, [])
        self.assertEqual(kit.state()[1], [(0,)])


class FoundByFuzzingTests(unittest.TestCase):
    """Boxes ``make fuzz`` (fuzz/fuzz_replication.py) found raising out of
    ``dataReceived`` or logging a traceback: each now cuts the connection or
    is refused in one line, and changes nothing."""

    def feed(self, data):
        kit = Kit(self)
        protocol, transport = kit.connect()
        before = kit.state()
        protocol.dataReceived(data)
        self.assertEqual(kit.failures, [])
        self.assertEqual(kit.state(), before)
        return transport

    def test_a_box_that_is_no_command_or_answer(self):
        transport = self.feed(amp.AmpBox({b"_comman$": b"Entries", b"_ask": b"1"}).serialize())
        self.assertTrue(transport.disconnecting)

    def test_an_answer_to_nothing_asked(self):
        transport = self.feed(amp.AmpBox({b"_answer": b"77", b"lsn": b"1"}).serialize())
        self.assertTrue(transport.disconnecting)

    def test_a_command_name_that_is_not_ascii(self):
        transport = self.feed(amp.AmpBox({b"_command": b"Entr\xa9es", b"_ask": b"1"}).serialize())
        self.assertTrue(transport.disconnecting)

    def test_a_malformed_command_without_an_answer_tag(self):
        transport = self.feed(amp.AmpBox({b"_command": b"Entries", b"head": b"x"}).serialize())
        self.assertEqual(transport.value(), b"")
