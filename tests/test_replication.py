"""Replication's parts, one at a time, without a network or a thread.

The AMP language of the replication port (``Chunked`` values, packed
entries, the cap on a box), the primary's ``Ring`` and per-standby
``Stream`` (flow control against a fake connection whose answers the test
fires), the replica set's records (divergence, invitations), standby
invitations as text, base copies (received, made and installed on temp
directories), and ``PrimaryReplication.synced`` (``peers.sync``) on a
``Clock`` with fake streams.
"""

import hashlib
import os
import sqlite3
import tarfile
import types

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial import unittest

from tests.test_changelog import TABLES, dump, open_sync_store, put_token
from vigo.config import PeersConfig
from vigo.interfaces.errors import Refusal
from vigo.server.peer import base_copy, channel, stream
from vigo.server.peer import members as records
from vigo.server.peer.base_copy import (
    ARCHIVE,
    BaseCopyError,
    BaseCopyReceiver,
    install_base_copy,
    make_base_copy,
    pending_base_copy,
)
from vigo.server.peer.fencing import PROBE_INTERVAL
from vigo.server.peer.members import InviteError, Member
from vigo.server.peer.pairing import INVITE_PREFIX, StandbyInvite
from vigo.server.peer.primary import COPY_CHUNK, PrimaryReplication
from vigo.server.peer.protocol import (
    MAX_BOX,
    Chunked,
    Entries,
    ProtocolError,
    Refused,
    ReplicationAMP,
    Who,
    pack_entries,
    unpack_entries,
)
from vigo.server.peer.stream import WINDOW, Ring, Stream
from vigo.store.database import connect
from vigo.store.migrations import migrate
from vigo.store.online_copy import copy_database
from vigo.tokens import TokenError, _b64url, encode_payload

# -- the AMP language ----------------------------------------------------------------------


class Echo(amp.Command):
    arguments = [(b"data", Chunked()), (b"tag", amp.Unicode())]
    response = [(b"data", Chunked()), (b"size", amp.Integer())]


class EchoServer(ReplicationAMP):
    @Echo.responder
    def echo(self, data, tag):
        return {"data": data, "size": len(data)}


def connected(server_factory):
    client, server, pump = iosim.connectedServerAndClient(server_factory, ReplicationAMP)
    return client, server, pump


class ChunkedTests(unittest.SynchronousTestCase):

    def test_round_trip_over_amp(self):
        client, server, pump = connected(EchoServer)
        for size in (0, 1, 65535, 65536, 131070, 300000):
            data = os.urandom(size)
            d = client.callRemote(Echo, data=data, tag="x")
            pump.flush()
            answer = self.successResultOf(d)
            self.assertEqual(answer["size"], size)
            self.assertEqual(answer["data"], data, size)

    def test_values_are_at_most_64_kib(self):
        for size, keys in ((0, [b"data"]), (1, [b"data"]), (65535, [b"data"]),
                           (65536, [b"data", b"data.2"]),
                           (300000, [b"data"] + [b"data.%d" % i for i in range(2, 6)])):
            box = Echo.makeArguments({"data": b"z" * size, "tag": "t"}, None)
            chunks = [k for k in box if k.startswith(b"data")]
            self.assertEqual(sorted(chunks), sorted(keys), size)
            self.assertTrue(all(len(box[k]) <= 0xFFFF for k in chunks))
            self.assertEqual(Echo.parseArguments(amp.AmpBox(box), None)["data"], b"z" * size)


class PackedEntriesTests(unittest.SynchronousTestCase):

    def test_round_trip(self):
        for entries in ([], [(1, b"")], [(7, b"x" * 70000), (8, b""), (9, b"\x00\xff")],
                        [(2 ** 40 + i, os.urandom(i)) for i in range(20)]):
            self.assertEqual(unpack_entries(pack_entries(entries)), entries)

    def test_refusals(self):
        good = pack_entries([(5, b"abc"), (6, b"defg")])
        for name, value in {
            "header cut short": good[:5],
            "second header cut short": good[:12 + 3 + 4],
            "entry cut short": good[:-1],
            "first entry cut short": good[:13],
            "out of order": pack_entries([(5, b"a")]) + pack_entries([(7, b"b")]),
            "backwards": pack_entries([(5, b"a")]) + pack_entries([(4, b"b")]),
            "repeated": pack_entries([(5, b"a")]) + pack_entries([(5, b"a")]),
            "length past the end": b"\x00" * 7 + b"\x01\xff\xff\xff\xff",
        }.items():
            with self.subTest(name):
                self.assertRaises(ProtocolError, unpack_entries, value)


def _over_cap_box():
    box = amp.AmpBox()
    for i in range(MAX_BOX // 0xFFFF + 2):
        box[b"k%d" % (i,)] = b"x" * 0xFFFF
    return box.serialize()


class RecordingAMP(ReplicationAMP):
    def __init__(self):
        super().__init__()
        self.boxes = []

    def ampBoxReceived(self, box):
        self.boxes.append(box)


class BoxCapTests(unittest.SynchronousTestCase):

    def connect(self):
        protocol = RecordingAMP()
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_a_box_past_the_cap_aborts_the_connection(self):
        protocol, transport = self.connect()
        data = _over_cap_box()
        # Fed in pieces, as TCP would: cut off before the box is whole.
        for start in range(0, len(data), 1 << 16):
            protocol.dataReceived(data[start:start + (1 << 16)])
            if transport.disconnecting:
                break
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.disconnected)  # abortConnection, not a polite close
        self.assertLess(start, len(data) - (1 << 16))
        self.assertEqual(protocol.boxes, [])

    def test_a_box_under_the_cap_is_taken(self):
        protocol, transport = self.connect()
        box = amp.AmpBox()
        for i in range(MAX_BOX // 0xFFFF - 1):
            box[b"k%d" % (i,)] = b"x" * 0xFFFF
        protocol.dataReceived(box.serialize())
        protocol.dataReceived(box.serialize())  # the count starts again for each box
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(protocol.boxes), 2)
        self.assertEqual(len(protocol.boxes[0]), len(box))

    def test_nothing_is_taken_from_a_connection_cut_off(self):
        protocol, transport = self.connect()
        after = amp.AmpBox(_command=b"Who", _ask=b"1").serialize()
        protocol.dataReceived(_over_cap_box() + after)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(protocol.boxes, [])



class RecordingRole(channel.Role):
    name = "test role"

    def __init__(self):
        self.batches = []

    def entries(self, connection, epoch, head, entries):
        self.batches.append((epoch, head, entries))
        if head < 0:
            raise Refusal("bad", "a refusal's reason")
        if head == 0:
            raise ZeroDivisionError("a bug")
        return {"lsn": entries[-1][0]}


class MemberProtocolTests(unittest.SynchronousTestCase):

    def connect(self):
        role = RecordingRole()

        def server():
            protocol = channel.MemberProtocol(role)
            protocol.node_key = b"k" * 32  # as proved by TLS
            return protocol

        client, server_protocol, pump = connected(server)

        def call(command, **kwargs):
            # Its outcome, taken before the answer arrives (AMP drops the
            # connection over a failure nobody was listening for).
            outcome = []
            client.callRemote(command, **kwargs).addBoth(outcome.append)
            pump.flush()
            [result] = outcome
            return result

        return role, call

    def test_entries_are_unpacked_for_the_role(self):
        role, call = self.connect()
        batch = [(3, b"a" * 100000), (4, b"")]
        self.assertEqual(call(Entries, epoch=2, head=9, entries=pack_entries(batch)),
                         {"lsn": 4})
        self.assertEqual(role.batches, [(2, 9, batch)])

    def test_a_damaged_batch_is_refused_unapplied(self):
        role, call = self.connect()
        failure = call(Entries, epoch=2, head=9, entries=pack_entries([(3, b"a"), (5, b"b")]))
        failure.trap(Refused)
        self.assertIn("does not follow", failure.getErrorMessage())
        self.assertEqual(role.batches, [])

    def test_refusals_and_bugs_are_answered_as_refused(self):
        role, call = self.connect()
        failure = call(Entries, epoch=1, head=-1, entries=pack_entries([(1, b"")]))
        failure.trap(Refused)
        self.assertEqual(failure.getErrorMessage(), "a refusal's reason")
        failure = call(Entries, epoch=1, head=0, entries=pack_entries([(1, b"")]))
        failure.trap(Refused)
        self.assertIn("ZeroDivisionError", failure.getErrorMessage())
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_a_role_refuses_what_it_does_not_take(self):
        role, call = self.connect()
        failure = call(Who)
        failure.trap(Refused)
        self.assertIn("this test role does not take Who", failure.getErrorMessage())


# -- the ring and the stream ---------------------------------------------------------------


def filled_ring(first, last, size=10, max_bytes=stream.RING_BYTES):
    ring = Ring(max_bytes)
    for lsn in range(first, last + 1):
        ring.add(lsn, b"%d:" % (lsn,) + b"." * (size - len(b"%d:" % (lsn,))), float(lsn))
    return ring


class RingTests(unittest.SynchronousTestCase):

    def test_bounded_by_bytes(self):
        ring = filled_ring(1, 20, size=10, max_bytes=100)
        self.assertIsNone(ring.after(9))
        self.assertEqual([lsn for lsn, _ in ring.after(10)], list(range(11, 21)))
        # One entry bigger than the ring is kept alone.
        ring.add(21, b"x" * 150, 21.0)
        self.assertIsNone(ring.after(19))
        self.assertEqual(ring.after(20), [(21, b"x" * 150)])
        ring.add(22, b"y" * 10, 22.0)
        self.assertEqual(ring.after(21), [(22, b"y" * 10)])
        self.assertIsNone(ring.after(20))

    def test_after(self):
        # An empty ring holds nothing to send: the database has it.
        self.assertIsNone(Ring().after(0))
        self.assertIsNone(Ring().after(99))
        ring = filled_ring(5, 9)
        self.assertIsNone(ring.after(0))
        self.assertIsNone(ring.after(3))
        self.assertEqual([lsn for lsn, _ in ring.after(4)], [5, 6, 7, 8, 9])
        self.assertEqual([lsn for lsn, _ in ring.after(7)], [8, 9])
        # Past the newest held: not held (a stream asks only while behind
        # the head, so the database has what the ring does not).
        self.assertIsNone(ring.after(9))
        self.assertIsNone(ring.after(12))
        self.assertEqual([lsn for lsn, _ in ring.after(4, max_entries=2)], [5, 6])
        self.assertEqual([lsn for lsn, _ in ring.after(4, max_bytes=25)], [5, 6])
        # Past max_bytes, still the first.
        self.assertEqual([lsn for lsn, _ in ring.after(4, max_bytes=1)], [5])

    def test_a_gap_starts_afresh(self):
        ring = filled_ring(1, 5)
        ring.add(9, b"n", 9.0)
        self.assertIsNone(ring.after(5))
        self.assertEqual(ring.after(8), [(9, b"n")])

    def test_committed_at(self):
        self.assertIsNone(Ring().committed_at(1))
        ring = filled_ring(5, 9)
        self.assertEqual(ring.committed_at(7), 7.0)
        self.assertEqual(ring.committed_at(1), 5.0)  # older: the oldest held
        self.assertEqual(ring.committed_at(50), 9.0)


class OneAtATime(Ring):
    """A ring whose batches hold one entry, to see the window at work."""

    def after(self, lsn, max_entries=1, max_bytes=stream.BATCH_BYTES):
        return Ring.after(self, lsn, max_entries=1, max_bytes=max_bytes)


class FakeConnection:
    """``callRemote`` returns a Deferred the test fires."""

    def __init__(self):
        self.calls = []
        self.transport = StringTransport()

    def callRemote(self, command, **kwargs):
        d = defer.Deferred()
        self.calls.append((command, kwargs, d))
        return d

    def sent(self):
        return [[lsn for lsn, _ in unpack_entries(kwargs["entries"])]
                for _, kwargs, _ in self.calls]

    def pending(self):
        return [d for _, _, d in self.calls if not d.called]

    def answer(self, index, lsn):
        self.calls[index][2].callback({"lsn": lsn})


class FakeSource:
    """What a ``Stream`` asks of its primary."""

    epoch = 4

    def __init__(self, ring, head):
        self.ring = ring
        self.lsn = head
        self.reads = []
        self.acks = []
        self.failures = []

    def head(self):
        return self.lsn

    def commit(self, lsn):
        self.ring.add(lsn, b"entry %d" % (lsn,), float(lsn))
        self.lsn = lsn

    def read(self, after):
        d = defer.Deferred()
        self.reads.append((after, d))
        return d

    def acked(self, s):
        self.acks.append(s.acked)

    def stream_failed(self, s, reason):
        self.failures.append(reason)


class StreamTests(unittest.SynchronousTestCase):

    def make(self, ring, head, acked=0):
        source = FakeSource(ring, head)
        connection = FakeConnection()
        return source, connection, Stream(connection, "standby1", acked, source)

    def test_the_window(self):
        source, connection, s = self.make(OneAtATime(), 0)
        for lsn in range(1, 11):
            source.commit(lsn)
        s.wake()
        self.assertEqual(connection.sent(), [[1], [2], [3], [4]])
        self.assertEqual(s.in_flight, WINDOW)
        s.wake()
        self.assertEqual(len(connection.calls), WINDOW)
        _, kwargs, _ = connection.calls[0]
        self.assertEqual((kwargs["epoch"], kwargs["head"]), (4, 10))
        for index in range(10):
            connection.answer(index, index + 1)
            self.assertLessEqual(len(connection.pending()), WINDOW)
            self.assertEqual(len(connection.pending()), s.in_flight)
            self.assertEqual(s.acked, index + 1)
        self.assertEqual(connection.sent(), [[lsn] for lsn in range(1, 11)])
        self.assertEqual(source.acks, list(range(1, 11)))
        self.assertEqual((s.sent, s.acked, s.in_flight), (10, 10, 0))
        # New entries: a wake sends them.
        source.commit(11)
        s.wake()
        self.assertEqual(connection.sent()[-1], [11])

    def test_batches_from_the_ring(self):
        source, connection, s = self.make(filled_ring(1, 10), 10)
        s.wake()
        self.assertEqual(connection.sent(), [list(range(1, 11))])
        self.assertEqual(s.in_flight, 1)
        source.commit(11)
        source.commit(12)
        s.wake()
        self.assertEqual(connection.sent()[1], [11, 12])

    def test_acked_advances_whatever_the_order_of_answers(self):
        source, connection, s = self.make(OneAtATime(), 0)
        for lsn in range(1, 4):
            source.commit(lsn)
        s.wake()
        connection.answer(2, 3)
        self.assertEqual(s.acked, 3)
        connection.answer(0, 1)
        self.assertEqual(s.acked, 3)
        connection.answer(1, 2)
        self.assertEqual(s.acked, 3)
        self.assertEqual(source.acks, [3, 3, 3])

    def test_an_answer_wakes_the_stream(self):
        source, connection, s = self.make(OneAtATime(), 0)
        for lsn in range(1, 7):
            source.commit(lsn)
        s.wake()
        self.assertEqual(len(connection.calls), WINDOW)
        connection.answer(0, 1)
        self.assertEqual(connection.sent()[-1], [5])
        connection.answer(1, 2)
        self.assertEqual(connection.sent()[-1], [6])
        self.assertEqual(len(connection.calls), 6)

    def test_falls_back_to_the_log_when_the_ring_lost_entries(self):
        source, connection, s = self.make(filled_ring(6, 10), 10, acked=2)
        s.wake()
        self.assertEqual(connection.calls, [])
        [(after, d)] = source.reads
        self.assertEqual(after, 2)
        s.wake()  # one read at a time
        self.assertEqual(len(source.reads), 1)
        d.callback([(3, b"three"), (4, b"four"), (5, b"five")])
        self.assertEqual(connection.sent(), [[3, 4, 5], [6, 7, 8, 9, 10]])
        self.assertEqual(unpack_entries(connection.calls[0][1]["entries"])[0], (3, b"three"))
        self.assertFalse(s.reading)
        connection.answer(0, 5)
        connection.answer(1, 10)
        self.assertEqual(s.acked, 10)

    def test_a_stream_to_a_standby_behind_an_empty_ring_reads_the_log(self):
        # A primary just started (or whose ring was cleared) holds nothing in
        # memory; a standby behind it must be fed from the database.
        source, connection, s = self.make(Ring(), 5, acked=2)
        s.wake()
        self.assertEqual([after for after, _ in source.reads], [2])


    def test_an_empty_read_stops_the_stream(self):
        source, connection, s = self.make(filled_ring(6, 10), 10, acked=2)
        s.wake()
        source.reads[0][1].callback([])
        self.assertTrue(s.stopped)
        [reason] = source.failures
        self.assertIn("not in the log any more", str(reason))
        self.assertEqual(connection.calls, [])
        s.wake()
        self.assertEqual(connection.calls, [])

    def test_a_failed_read_stops_the_stream(self):
        source, connection, s = self.make(filled_ring(6, 10), 10, acked=2)
        s.wake()
        source.reads[0][1].errback(RuntimeError("disk"))
        self.assertTrue(s.stopped)
        self.assertEqual(len(source.failures), 1)

    def test_stops_on_failure(self):
        source, connection, s = self.make(OneAtATime(), 0)
        for lsn in range(1, 9):
            source.commit(lsn)
        s.wake()
        connection.calls[1][2].errback(Refused("applying entries failed"))
        self.assertTrue(s.stopped)
        self.assertEqual(len(source.failures), 1)
        # Later answers change nothing and send nothing.
        connection.answer(0, 1)
        connection.calls[2][2].errback(Refused("again"))
        self.assertEqual(s.acked, 0)
        self.assertEqual(len(connection.calls), WINDOW)
        self.assertEqual(len(source.failures), 1)
        self.assertEqual(source.acks, [])

    def test_a_stopped_stream_sends_nothing(self):
        source, connection, s = self.make(OneAtATime(), 0)
        for lsn in range(1, 9):
            source.commit(lsn)
        s.wake()
        s.stop()
        connection.answer(0, 1)
        s.wake()
        self.assertEqual(len(connection.calls), WINDOW)
        self.assertEqual(source.acks, [])

    def test_a_stream_stopped_while_reading_sends_nothing(self):
        source, connection, s = self.make(filled_ring(6, 10), 10, acked=2)
        s.wake()
        s.stop()
        source.reads[0][1].callback([(3, b"3"), (4, b"4"), (5, b"5")])
        self.assertEqual(connection.calls, [])


    def test_lag(self):
        source, connection, s = self.make(filled_ring(1, 10), 10, acked=10)
        self.assertEqual(s.lag(100.0), 0.0)
        s.acked = 4
        self.assertEqual(s.lag(100.0), 95.0)  # entry 5 was committed at 5.0
        self.assertEqual(s.lag(1.0), 0.0)


# -- the replica set's records -------------------------------------------------------------


class DivergedTests(unittest.SynchronousTestCase):

    def test_table(self):
        starts = {1: 10, 2: 20, 3: 25}
        cases = [
            # (member epoch, member lsn, primary epoch, diverged)
            (0, 0, 0, False),
            (0, 100, 0, False),   # same epoch: a prefix or ahead, never diverged
            (3, 100, 3, False),
            (4, 1, 3, False),     # newer than the primary: not this test's business
            (0, 9, 1, False),     # stopped before epoch 1 began
            (0, 10, 1, True),     # holds an epoch-0 entry 10, where epoch 1 began
            (0, 15, 1, True),
            (0, 9, 3, False),
            (0, 10, 3, True),
            (1, 19, 2, False),
            (1, 20, 2, True),
            (1, 19, 3, False),
            (1, 24, 3, True),     # epoch 2 began at 20
            (2, 24, 3, False),    # epoch 2's own entries, before epoch 3 began at 25
            (2, 25, 3, True),
            (2, 30, 3, True),
            (0, 9, 2, False),
        ]
        for epoch, lsn, primary_epoch, expected in cases:
            self.assertEqual(records.diverged(starts, epoch, lsn, primary_epoch), expected,
                             (epoch, lsn, primary_epoch))

    def test_no_promotion_on_record(self):
        self.assertFalse(records.diverged({}, 0, 100, 2))
        # Only the epochs between the member's and the primary's count.
        self.assertFalse(records.diverged({5: 3}, 0, 100, 2))
        self.assertFalse(records.diverged({1: 50}, 1, 100, 2))


class InviteTests(unittest.SynchronousTestCase):

    def setUp(self):
        self.connection = connect(":memory:")
        migrate(self.connection)
        self.cursor = self.connection.cursor()
        records.create_invite(self.cursor, "inv1", "the secret", 100.0, 200.0)

    def used(self):
        return self.cursor.execute("SELECT used_by, used_at FROM replica_invites").fetchall()

    def test_redeemed_once(self):
        records.redeem_invite(self.cursor, "inv1", "the secret", "node2", 150.0)
        self.assertEqual(self.used(), [("node2", 150.0)])
        error = self.assertRaises(InviteError, records.redeem_invite, self.cursor, "inv1",
                                  "the secret", "node3", 151.0)
        self.assertIn("used already (by node2)", str(error))
        self.assertEqual(self.used(), [("node2", 150.0)])

    def test_unknown_or_wrong_secret(self):
        for invite_id, secret in (("inv2", "the secret"), ("inv1", "the secreT"),
                                  ("inv1", ""), ("", "the secret")):
            error = self.assertRaises(InviteError, records.redeem_invite, self.cursor,
                                      invite_id, secret, "node2", 150.0)
            self.assertIn("no such standby invitation", str(error))
        self.assertEqual(self.used(), [(None, None)])

    def test_expired(self):
        for now in (200.0, 1e9):
            error = self.assertRaises(InviteError, records.redeem_invite, self.cursor, "inv1",
                                      "the secret", "node2", now)
            self.assertIn("expired", str(error))
        self.assertEqual(self.used(), [(None, None)])
        records.redeem_invite(self.cursor, "inv1", "the secret", "node2", 199.5)

    def test_the_secret_is_stored_hashed(self):
        [(stored,)] = self.cursor.execute("SELECT secret_hash FROM replica_invites").fetchall()
        self.assertEqual(bytes(stored), hashlib.sha256(b"the secret").digest())


class StandbyInviteTests(unittest.SynchronousTestCase):

    def test_round_trip(self):
        invite = StandbyInvite.mint("primaryid", "10.0.0.1:7445", "fingerprint")
        text = invite.encode()
        self.assertTrue(text.startswith(INVITE_PREFIX))
        self.assertEqual(str(invite), text)
        self.assertEqual(StandbyInvite.decode(text), invite)
        self.assertEqual(StandbyInvite.decode("  %s\n" % (text,)), invite)
        self.assertNotIn(invite.secret, repr(invite))
        self.assertNotEqual(StandbyInvite.mint("p", "a:1", "f").secret,
                            StandbyInvite.mint("p", "a:1", "f").secret)

    def test_damaged(self):
        text = StandbyInvite.mint("primaryid", "10.0.0.1:7445", "fingerprint").encode()
        fields = {"pid": "p", "addr": "a:1", "fp": "f", "iid": "i", "sec": "s"}
        for name, bad in {
            "cut": text[:-3],
            "cut more": text[:len(INVITE_PREFIX) + 10],
            "prefix only": INVITE_PREFIX,
            "enrollment prefix": "vgoe_" + text[len(INVITE_PREFIX):],
            "no prefix": text[len(INVITE_PREFIX):],
            "not base64": INVITE_PREFIX + "!!!*",
            "not json": INVITE_PREFIX + _b64url(b"{nope"),
            "a list": INVITE_PREFIX + _b64url(b'["pid"]'),
            "too long": text + "A" * 3000,
            "no secret": encode_payload(INVITE_PREFIX, {k: v for k, v in fields.items()
                                                        if k != "sec"}),
            "empty field": encode_payload(INVITE_PREFIX, dict(fields, pid="")),
            "field not text": encode_payload(INVITE_PREFIX, dict(fields, fp=7)),
            "version 2": INVITE_PREFIX + _b64url(b'{"v":2,"pid":"p"}'),
        }.items():
            with self.subTest(name):
                self.assertRaises(TokenError, StandbyInvite.decode, bad)
        self.assertRaises(TokenError, StandbyInvite.decode, None)
        self.assertRaises(TokenError, StandbyInvite.decode, text.encode())


# -- base copies ---------------------------------------------------------------------------


class BaseCopyReceiverTests(unittest.SynchronousTestCase):

    def setUp(self):
        self.data_dir = self.mktemp()
        os.makedirs(self.data_dir)

    def files(self):
        return sorted(os.listdir(self.data_dir))

    def test_size_out_of_range(self):
        for size in (0, -1, base_copy.MAX_SIZE + 1):
            self.assertRaises(BaseCopyError, BaseCopyReceiver, self.data_dir, size, 1, 0)
        self.assertEqual(self.files(), [])
        receiver = BaseCopyReceiver(self.data_dir, base_copy.MAX_SIZE, 1, 0)
        receiver.abandon()
        self.assertEqual(self.files(), [])

    def test_longer_than_announced(self):
        receiver = BaseCopyReceiver(self.data_dir, 10, 1, 0)
        receiver.chunk(b"0123456789")
        self.assertRaises(BaseCopyError, receiver.chunk, b"x")
        self.assertEqual(self.files(), [])

    def test_shorter_than_announced(self):
        data = b"012345678"
        receiver = BaseCopyReceiver(self.data_dir, 10, 1, 0)
        receiver.chunk(data)
        error = self.assertRaises(BaseCopyError, receiver.end, hashlib.sha256(data).hexdigest())
        self.assertIn("9 of 10", str(error))
        self.assertEqual(self.files(), [])
        self.assertIsNone(pending_base_copy(self.data_dir))

    def test_wrong_checksum(self):
        receiver = BaseCopyReceiver(self.data_dir, 10, 1, 0)
        receiver.chunk(b"01234")
        receiver.chunk(b"56789")
        error = self.assertRaises(BaseCopyError, receiver.end,
                                  hashlib.sha256(b"0123456788").hexdigest())
        self.assertIn("differs", str(error))
        self.assertEqual(self.files(), [])

    def test_whole(self):
        data = os.urandom(5000)
        receiver = BaseCopyReceiver(self.data_dir, len(data), 7, 2)
        self.assertEqual(os.stat(receiver._partial).st_mode & 0o777, 0o600)
        for start in range(0, len(data), 999):
            receiver.chunk(data[start:start + 999])
        path = receiver.end(hashlib.sha256(data).hexdigest())
        self.assertEqual(path, os.path.join(self.data_dir, ARCHIVE))
        self.assertEqual(pending_base_copy(self.data_dir), path)
        self.assertEqual(self.files(), [ARCHIVE])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual((receiver.lsn, receiver.epoch), (7, 2))


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


class BaseCopyTests(unittest.SynchronousTestCase):

    def setUp(self):
        base = self.mktemp()
        self.primary_dir = os.path.join(base, "primary")
        self.standby_dir = os.path.join(base, "standby")
        self.scratch = os.path.join(base, "scratch")
        for d in (self.primary_dir, self.standby_dir, self.scratch):
            os.makedirs(d)
        # The primary: a live database (WAL, open), its secrets, hostcrates.
        self.primary = open_sync_store(self, os.path.join(self.primary_dir, base_copy.DB_FILE))
        for i in range(5):
            for d in self.primary.batch((put_token, "token%d" % (i,))):
                self.successResultOf(d)
        for d in self.primary.batch((records.record_promotion, 2, "p", 5.0)):
            self.successResultOf(d)
        _write(os.path.join(self.primary_dir, "identity.key"), b"server identity")
        _write(os.path.join(self.primary_dir, "admin-token"), b"admin token")
        _write(os.path.join(self.primary_dir, "node.key"), b"the PRIMARY's node key")
        self.hostcrates = os.path.join(base, "hostcrates.yaml")
        _write(self.hostcrates, b"hostcrates: {}\n")
        # The standby: a database of its own, its own node key and role.
        standby = connect(os.path.join(self.standby_dir, base_copy.DB_FILE))
        migrate(standby)
        standby.execute("INSERT INTO api_tokens VALUES ('mine', x'00', 'x', 1)")
        standby.close()
        _write(os.path.join(self.standby_dir, "node.key"), b"the standby's node key")
        _write(os.path.join(self.standby_dir, "replica.json"), b'{"role": "standby"}')

    def send(self, path, size, digest, lsn, epoch, chunk=COPY_CHUNK):
        receiver = BaseCopyReceiver(self.standby_dir, size, lsn, epoch)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                receiver.chunk(block)
        return receiver.end(digest)

    def test_made_sent_and_installed(self):
        path, size, digest, lsn, epoch = make_base_copy(self.primary_dir, self.scratch,
                                                        self.hostcrates)
        self.assertEqual((lsn, epoch), (6, 2))
        self.assertEqual(size, os.path.getsize(path))
        self.assertEqual(digest, hashlib.sha256(_read(path)).hexdigest())
        self.assertEqual(os.listdir(self.scratch), [os.path.basename(path)])
        with tarfile.open(path) as archive:
            self.assertEqual(sorted(archive.getnames()),
                             sorted([base_copy.DB_FILE, "identity.key", "admin-token",
                                     base_copy.HOSTCRATES_FILE]))
        self.send(path, size, digest, lsn, epoch, chunk=4096)
        os.unlink(path)
        self.assertEqual(install_base_copy(self.standby_dir), (6, 2))
        installed = sqlite3.connect(os.path.join(self.standby_dir, base_copy.DB_FILE))
        self.addCleanup(installed.close)
        self.assertEqual(dump(installed, TABLES + ("replication_log",)),
                         dump(self.primary.connection, TABLES + ("replication_log",)))
        # Its own key and role are untouched; the server's secrets are the primary's.
        self.assertEqual(_read(os.path.join(self.standby_dir, "node.key")),
                         b"the standby's node key")
        self.assertEqual(_read(os.path.join(self.standby_dir, "replica.json")),
                         b'{"role": "standby"}')
        self.assertEqual(_read(os.path.join(self.standby_dir, "identity.key")),
                         b"server identity")
        self.assertEqual(_read(os.path.join(self.standby_dir, "admin-token")), b"admin token")
        self.assertEqual(_read(os.path.join(self.standby_dir, base_copy.HOSTCRATES_FILE)),
                         b"hostcrates: {}\n")
        for name in ("identity.key", "admin-token", base_copy.DB_FILE):
            self.assertEqual(os.stat(os.path.join(self.standby_dir, name)).st_mode & 0o077, 0)
        self.assertIsNone(pending_base_copy(self.standby_dir))
        self.assertEqual(sorted(n for n in os.listdir(self.standby_dir) if n.startswith(".")),
                         [])
        # The installed database opens as a store and goes on from the copy's LSN.
        store = open_sync_store(self, os.path.join(self.standby_dir, base_copy.DB_FILE),
                                recording=False)
        self.assertEqual(store.lsn, 6)

    def test_without_optional_files(self):
        os.unlink(os.path.join(self.primary_dir, "admin-token"))
        path, size, digest, lsn, epoch = make_base_copy(self.primary_dir, self.scratch)
        with tarfile.open(path) as archive:
            self.assertEqual(sorted(archive.getnames()), sorted([base_copy.DB_FILE,
                                                                 "identity.key"]))
        os.unlink(path)

    def test_no_database_to_copy(self):
        empty = self.mktemp()
        os.makedirs(empty)
        self.assertRaises(BaseCopyError, make_base_copy, empty, self.scratch)
        self.assertEqual(os.listdir(self.scratch), [])

    def archive(self, members):
        path = os.path.join(self.standby_dir, ARCHIVE)
        with tarfile.open(path, "w:gz") as archive:
            for name, data in members.items():
                source = os.path.join(self.scratch, "member")
                _write(source, data)
                archive.add(source, name)
        return path

    def assertNothingInstalled(self):
        standby = sqlite3.connect(os.path.join(self.standby_dir, base_copy.DB_FILE))
        self.addCleanup(standby.close)
        self.assertEqual(standby.execute("SELECT id FROM api_tokens").fetchall(), [("mine",)])
        self.assertEqual(_read(os.path.join(self.standby_dir, "node.key")),
                         b"the standby's node key")
        self.assertEqual(sorted(n for n in os.listdir(self.standby_dir) if n.startswith(".")),
                         [])

    def test_install_refuses_foreign_files(self):
        copy = os.path.join(self.scratch, "copy.db")
        copy_database(self.primary.path, copy)
        database = _read(copy)
        for name in ("node.key", "replica.json", "../vigo.sqlite3", "sub/identity.key",
                     "/etc/passwd"):
            with self.subTest(name):
                self.archive({base_copy.DB_FILE: database, name: b"evil"})
                self.assertRaises(BaseCopyError, install_base_copy, self.standby_dir)
                self.assertNothingInstalled()

    def test_install_refuses_damaged_copies(self):
        for name, writer in {
            "no database": lambda: self.archive({"identity.key": b"k"}),
            "not a database": lambda: self.archive({base_copy.DB_FILE: b"not sqlite" * 100}),
            "not gzip": lambda: _write(os.path.join(self.standby_dir, ARCHIVE), b"garbage"),
        }.items():
            with self.subTest(name):
                writer()
                self.assertRaises(BaseCopyError, install_base_copy, self.standby_dir)
                self.assertNothingInstalled()


# -- peers.sync ----------------------------------------------------------------------------


class StubStore:
    def __init__(self):
        self.lsn = 0
        self.on_entry = None


def peers(sync, sync_timeout=2.0):
    return PeersConfig(listen=None, sync=sync, sync_timeout=sync_timeout, retain=100)


class SyncedTests(unittest.SynchronousTestCase):

    def make(self, sync, confirmed=True, head=5):
        self.clock = Clock()
        self.store = StubStore()
        self.store.lsn = head
        self.fenced_calls = []
        identity = types.SimpleNamespace(id="primary0000", public_key=b"p" * 32,
                                         fingerprint="fp")
        primary = PrimaryReplication(
            self.clock, self.store, types.SimpleNamespace(epoch=3), identity, self.mktemp(),
            peers(sync), lambda: {"envoy": "e:1", "api": "https://a", "replication": "r:2"},
            on_fenced=lambda *args: self.fenced_calls.append(args))
        primary.acks.confirmed = confirmed
        return primary

    def streams(self, primary, *acked):
        for index, lsn in enumerate(acked):
            primary.streams["s%d" % (index,)] = types.SimpleNamespace(
                acked=lsn, node_id="s%d" % (index,))
        return list(primary.streams.values())

    def test_sync_0_fires_at_once_once_confirmed(self):
        primary = self.make(0)
        self.successResultOf(primary.synced())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sync_1_waits_for_an_ack_of_the_lsn_at_call_time(self):
        primary = self.make(1)
        [s] = self.streams(primary, 4)
        d = primary.synced()
        self.assertNoResult(d)
        self.store.lsn = 8  # more commits after the call
        later = primary.synced()
        s.acked = 5
        primary.acked(s)
        self.successResultOf(d)
        self.assertNoResult(later)
        s.acked = 8
        primary.acked(s)
        self.successResultOf(later)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # the timers are cancelled
        self.successResultOf(primary.synced())  # held already: at once

    def test_sync_counts_distinct_standbys(self):
        primary = self.make(2)
        a, b = self.streams(primary, 5, 3)
        d = primary.synced()
        self.assertEqual(primary.synced_lsn(), 3)
        primary.acked(a)
        self.assertNoResult(d)
        b.acked = 5
        primary.acked(b)
        self.successResultOf(d)

    def test_too_few_standbys(self):
        primary = self.make(2)
        self.streams(primary, 9)
        self.assertEqual(primary.synced_lsn(), -1)
        self.assertNoResult(primary.synced())

    def test_times_out_as_retryable(self):
        primary = self.make(1)
        self.streams(primary, 4)
        d = primary.synced()
        self.clock.advance(1.99)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        refusal = self.failureResultOf(d, Refusal).value
        self.assertEqual(refusal.code, "replication_timeout")
        self.assertTrue(refusal.retryable)
        self.assertIn("peers.sync is 1", refusal.reason)
        self.assertEqual(list(primary.acks.waiters), [])
        # An ack after the timeout changes nothing for it.
        s = primary.streams["s0"]
        s.acked = 5
        primary.acked(s)

    def test_fenced_refuses(self):
        primary = self.make(1)
        waiting = primary.synced()
        primary.fence(4, "newprimary", "n:1")
        refusal = self.failureResultOf(waiting, Refusal).value
        self.assertEqual((refusal.code, refusal.retryable), ("not_primary", True))
        refusal = self.failureResultOf(primary.synced(), Refusal).value
        self.assertEqual(refusal.code, "not_primary")
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 0)
        self.clock.advance(0)
        self.assertEqual(self.fenced_calls, [(4, "newprimary", "n:1", "")])
        # sync 0 too.
        primary = self.make(0)
        primary.fence(4, "newprimary", "n:1")
        self.assertEqual(self.failureResultOf(primary.synced(), Refusal).value.code,
                         "not_primary")

    def test_fencing_stops_streams(self):
        primary = self.make(1)
        stopped = []
        primary.streams["s"] = types.SimpleNamespace(acked=0, stop=lambda: stopped.append(1))
        primary.fence(4, "n", "n:1")
        primary.fence(5, "m", "m:1")  # once
        self.assertEqual(stopped, [1])
        self.clock.advance(0)
        self.assertEqual(len(self.fenced_calls), 1)

    def test_waiters_before_confirmed_wait_for_the_first_probe_round(self):
        for sync in (0, 1):
            primary = self.make(sync, confirmed=False)
            self.streams(primary, 5)  # holds it already
            asked = []
            member = Member("other0000", b"o" * 32, "e:2", "https://b", "r:3", 1.0)
            primary.members = {member.node_id: member}

            def ask(m, asked=asked):
                d = defer.Deferred()
                asked.append(d)
                return d

            primary.prober.ask = ask
            d = primary.synced()
            primary.acked(primary.streams["s0"])
            self.assertNoResult(d)
            primary.probe()
            self.assertNoResult(d)
            primary.probe()  # one round at a time
            self.assertEqual(len(asked), 1)
            asked[0].callback(None)
            self.assertTrue(primary.confirmed)
            self.successResultOf(d)

    def test_unconfirmed_times_out(self):
        primary = self.make(0, confirmed=False)
        d = primary.synced()
        self.clock.advance(2.0)
        refusal = self.failureResultOf(d, Refusal).value
        self.assertEqual(refusal.code, "replication_timeout")
        self.assertIn("not yet confirmed", refusal.reason)

    def test_a_probe_that_finds_a_newer_primary_fences(self):
        primary = self.make(0, confirmed=False)
        member = Member("other0000", b"o" * 32, "e:2", "https://b", "r:3", 1.0)
        primary.members = {member.node_id: member}
        primary.prober.ask = lambda m: defer.maybeDeferred(primary.fence, 9, m.node_id, "r:3")
        d = primary.synced()
        primary.probe()
        self.assertFalse(primary.confirmed)
        self.assertEqual(self.failureResultOf(d, Refusal).value.code, "not_primary")
        self.clock.advance(0)
        self.assertEqual(self.fenced_calls, [(9, "other0000", "r:3", member.fingerprint)])

    def test_probing_runs_every_interval_and_stop_fails_waiters(self):
        primary = self.make(1, confirmed=False)
        asked = []
        member = Member("other0000", b"o" * 32, "e:2", "https://b", "r:3", 1.0)
        primary.members = {member.node_id: member}
        primary.prober.ask = lambda m: asked.append(m) or defer.succeed(None)
        primary.startService()
        self.assertTrue(primary.confirmed)
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(len(asked), 2)
        # A member streaming from the primary is not asked.
        primary.streams[member.node_id] = types.SimpleNamespace(acked=0, stop=lambda: None)
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(len(asked), 2)
        d = primary.synced()
        primary.stopService()
        refusal = self.failureResultOf(d, Refusal).value
        self.assertEqual((refusal.code, refusal.retryable), ("stopping", True))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_entries_reach_a_real_stream_and_its_ack_releases(self):
        primary = self.make(1, head=0)
        connection = FakeConnection()
        s = Stream(connection, "s", 0, primary)
        primary.streams["s"] = s
        self.store.lsn = 1
        primary.on_entry(1, b"one")
        self.store.lsn = 2
        d = primary.synced()
        primary.on_entry(2, b"two")
        self.assertEqual(connection.sent(), [[1], [2]])
        self.assertEqual(connection.calls[1][1]["epoch"], 3)
        connection.answer(0, 1)
        self.assertNoResult(d)
        connection.answer(1, 2)
        self.successResultOf(d)
        self.assertEqual(primary.standbys(), [])  # "s" is not a member record
