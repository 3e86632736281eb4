"""Tier-2 pulls against real HTTPS peers on loopback, some of them misbehaving.

Every pull has a deadline on its whole exchange and a size limit enforced
while the bytes arrive; a stuck pull is forgotten and never holds up stopping.
The peers here are raw protocols over TLS on 127.0.0.1, so each misbehaves
exactly as asked: a body far over the limit (streamed, so the test knows how
much it got out before the puller hung up), a Content-Length over the limit, a
body dripped a byte at a time, no answer at all (after TLS, and before it).
Deadlines are short, test-only values on the real reactor; the tests wait on
events (a request arriving, a connection closing), with the clock only as a
bound. A well-behaved peer serves a real signed snapshot, whose merge (opened
and applied in slices, verified in threads) must equal the synchronous one.
"""

import json
import time

import attr
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.interfaces import IPullProducer
from twisted.trial import unittest
from zope.interface import implementer

from vigo.identity import Identity
from vigo.spanner.canonical import canonical
from vigo.spanner.gossip.pulls import SnapshotPuller
from vigo.spanner.roster import snapshot as snapshot_module
from vigo.spanner.roster.crdt import Roster
from vigo.spanner.roster.local import LocalRoster
from vigo.spanner.roster.parts import RosterParts, parts_digest
from vigo.spanner.roster.records import Override
from vigo.spanner.roster.rows import AdmissionRow
from vigo.spanner.roster.snapshot import (
    MAX_SNAPSHOT_BYTES,
    SnapshotError,
    open_snapshot,
    opening_snapshot,
    sign_snapshot,
)
from vigo.spanner.roster.steps import run_sliced, run_steps
from vigo.spanner.roster.verify import Verifier
from vigo.testing.store import ImmediateStore
from vigo.tls import identity_server_options

FED = "pullfed"
ME = Identity(b"\x31" * 32)  # the pulling bolt, founder of the federation
PEER = Identity(b"\x32" * 32)  # the bolt pulled from
ADDRESSES = {"envoy": "127.0.0.1:1530", "api": "127.0.0.1:1", "peer": "127.0.0.1:1533"}
LIMIT = 1024 * 1024  # the test pullers' size limit
DEADLINE = 0.5  # the test pullers' deadline (seconds)
BOUND = 5.0  # seconds any test waits for anything at most


def founded():
    return Roster.found(ME, FED, "me", ADDRESSES, ["*.me.example.com"])


def peer_row(port):
    row = AdmissionRow.applicant(PEER, FED, "peer", dict(ADDRESSES, api="127.0.0.1:%d" % port),
                                 ["*.peer.example.com"], "tok-peer", ME.id)
    return row.countersign(ME)


def more_rows(n, admitter=ME):
    """``n`` bolts admitted by ``admitter``, and a record signed by each."""
    rows, records = [], []
    for i in range(n):
        bolt = Identity(i.to_bytes(4, "big") * 8)
        rows.append(AdmissionRow.applicant(bolt, FED, "b%d" % i, ADDRESSES,
                                           ["*.b%d.example.com" % i], "t%d" % i, admitter.id)
                    .countersign(admitter))
        records.append(Override.sign(bolt, FED, "envoy-%d" % i, bolt.id, (1000 + i, 0)))
    return rows, records


# -- peers on loopback ------------------------------------------------------------------


@implementer(IPullProducer)
class _Stream:
    """Writes ``total`` bytes of body as fast as the connection takes them."""

    def __init__(self, connection, total, piece=64 * 1024):
        self.connection, self.left, self.piece = connection, total, piece

    def resumeProducing(self):
        if self.left <= 0:
            self.connection.transport.unregisterProducer()
            self.connection.transport.loseConnection()
            return
        n = min(self.piece, self.left)
        self.left -= n
        self.connection.sent += n
        self.connection.transport.write(b"x" * n)

    def stopProducing(self):
        self.left = 0


class _Connection(protocol.Protocol):
    def connectionMade(self):
        self.buffer, self.sent, self.answered, self.drip = b"", 0, False, None
        self.closed = defer.Deferred()
        self.factory.connections.append(self)

    def dataReceived(self, data):
        self.buffer += data
        while not self.answered and b"\r\n\r\n" in self.buffer:
            request, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.request = request
            self.factory.requests.append(request)
            waiting, self.factory.waiting = self.factory.waiting, []
            for d in waiting:
                d.callback(self)
            self.answered = self.factory.behaviour != "snapshot"  # that one answers again
            getattr(self, "answer_" + self.factory.behaviour)()

    def connectionLost(self, reason):
        if self.drip is not None and self.drip.running:
            self.drip.stop()
        self.closed.callback(self.sent)

    def head(self, code=200, length=None, **headers):
        lines = ["HTTP/1.1 %d X" % code, "Content-Type: application/json"]
        if length is not None:
            lines.append("Content-Length: %d" % length)
        lines += ["%s: %s" % item for item in headers.items()]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))

    def answer_snapshot(self):
        body, etag = self.factory.snapshot
        if ('"%s"' % etag).encode() in self.request:
            self.head(304, 0)
        else:
            self.head(200, len(body), ETag='"%s"' % etag)
            self.transport.write(body)

    def answer_huge(self):
        self.head(200, None, Connection="close")  # no length: read until it ends
        self.transport.registerProducer(_Stream(self, self.factory.total), False)

    def answer_announced(self):
        self.head(200, self.factory.total)  # a length over the limit, then silence

    def answer_drip(self):
        self.head(200, 1000)
        self.drip = task.LoopingCall(self._drop)
        self.drip.start(0.1)

    def _drop(self):
        self.sent += 1
        self.transport.write(b"x")

    def answer_silent(self):
        pass


class Peer(protocol.ServerFactory):
    """A bolt's API on 127.0.0.1 that answers snapshot pulls as ``behaviour`` says."""

    protocol = _Connection

    def __init__(self, behaviour, tls=True, total=64 * 1024 * 1024):
        self.behaviour, self.tls, self.total = behaviour, tls, total
        self.connections, self.requests, self.waiting = [], [], []
        self.snapshot = None

    def listen(self, case):
        if self.tls:
            self.port = reactor.listenSSL(0, self, identity_server_options(PEER),
                                          interface="127.0.0.1")
        else:
            self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        case.addCleanup(self.close)
        return self.port.getHost().port

    def serve(self, roster):
        body = canonical(sign_snapshot(roster, PEER, 1_000_000))
        self.snapshot = (body, roster.digest().hex())

    def request(self):
        """A Deferred of the connection of the next request to arrive."""
        d = defer.Deferred()
        self.waiting.append(d)
        return d.addTimeout(BOUND, reactor)

    @defer.inlineCallbacks
    def close(self):
        yield self.port.stopListening()
        for connection in self.connections:
            if not connection.closed.called:
                connection.transport.abortConnection()
        yield defer.DeferredList([c.closed for c in self.connections])


class Raw(protocol.Protocol):
    """Accepts a TCP connection and says nothing: not even TLS."""

    def connectionMade(self):
        self.closed = defer.Deferred()
        self.factory.connections.append(self)

    def connectionLost(self, reason):
        self.closed.callback(0)


class PullTestCase(unittest.TestCase):
    def bolt(self, port, timeout=DEADLINE, limit=LIMIT, verifier=None):
        """A puller over a roster that has ``PEER`` at ``127.0.0.1:port``."""
        roster = founded()
        roster.add_row(peer_row(port))
        local = LocalRoster(ImmediateStore(), ME, reactor)
        self.successResultOf(local.become(roster))
        puller = SnapshotPuller(reactor, ME.id, local, anti_entropy=3600.0, timeout=timeout,
                                limit=limit, verifier=verifier)
        self.addCleanup(puller.stopService)
        return puller

    @defer.inlineCallbacks
    def timed(self, d):
        """``d``'s result and the seconds it took (at most ``BOUND``)."""
        started = time.monotonic()
        result = yield d.addTimeout(BOUND, reactor)
        return result, time.monotonic() - started

    def outcomes(self, puller):
        return {outcome: n for outcome, n in puller.pulls.items() if n}


class MisbehavingPeerTests(PullTestCase):
    @defer.inlineCallbacks
    def test_a_huge_body_is_cut_off_at_the_limit(self):
        peer = Peer("huge")
        puller = self.bolt(peer.listen(self), timeout=BOUND)
        report, _ = yield self.timed(puller.pull(PEER.id))
        self.assertIsNone(report)
        self.assertEqual(self.outcomes(puller), {"oversize": 1})  # cut off, not timed out
        sent = yield peer.connections[0].closed
        # The peer got out the limit and what the socket buffers held, then the
        # connection was gone: nowhere near the 64 MiB it meant to send.
        self.assertGreater(sent, LIMIT)
        self.assertLess(sent, LIMIT + 16 * 1024 * 1024)
        self.assertEqual(puller._in_flight, {})

    @defer.inlineCallbacks
    def test_at_the_default_limit_too(self):
        peer = Peer("huge", total=MAX_SNAPSHOT_BYTES + 32 * 1024 * 1024)
        puller = self.bolt(peer.listen(self), limit=MAX_SNAPSHOT_BYTES, timeout=60.0)
        self.assertIsNone((yield puller.pull(PEER.id)))
        self.assertEqual(self.outcomes(puller), {"oversize": 1})
        sent = yield peer.connections[0].closed
        self.assertLess(sent, MAX_SNAPSHOT_BYTES + 16 * 1024 * 1024)

    @defer.inlineCallbacks
    def test_a_length_over_the_limit_is_refused_before_reading(self):
        peer = Peer("announced", total=10 * LIMIT)
        puller = self.bolt(peer.listen(self), timeout=BOUND)
        report, _ = yield self.timed(puller.pull(PEER.id))
        self.assertIsNone(report)
        self.assertEqual(self.outcomes(puller), {"oversize": 1})  # at once: no byte comes
        yield peer.connections[0].closed.addTimeout(BOUND, reactor)

    @defer.inlineCallbacks
    def test_a_dripped_body_times_out_and_the_peer_is_pulled_again(self):
        peer = Peer("drip")
        puller = self.bolt(peer.listen(self))
        report, took = yield self.timed(puller.pull(PEER.id))
        self.assertIsNone(report)
        self.assertEqual(self.outcomes(puller), {"timeout": 1})
        self.assertGreaterEqual(took, DEADLINE * 0.9)
        self.assertLess(took, DEADLINE + 1.0)
        self.assertEqual(puller._in_flight, {})  # forgotten: not stuck on that peer
        dripped = yield peer.connections[0].closed.addTimeout(BOUND, reactor)
        self.assertLess(dripped, 20)
        again = peer.request()
        puller.pull(PEER.id)
        yield again
        self.assertEqual(len(peer.requests), 2)

    @defer.inlineCallbacks
    def test_no_answer_after_tls_times_out(self):
        peer = Peer("silent")
        puller = self.bolt(peer.listen(self))
        report, took = yield self.timed(puller.pull(PEER.id))
        self.assertIsNone(report)
        self.assertEqual(self.outcomes(puller), {"timeout": 1})
        self.assertLess(took, DEADLINE + 1.0)
        self.assertEqual(len(peer.requests), 1)
        yield peer.connections[0].closed.addTimeout(BOUND, reactor)
        self.assertEqual(puller._in_flight, {})

    @defer.inlineCallbacks
    def test_no_tls_at_all_times_out(self):
        peer = Peer("silent", tls=False)
        peer.protocol = Raw
        puller = self.bolt(peer.listen(self))
        report, took = yield self.timed(puller.pull(PEER.id))
        self.assertIsNone(report)
        self.assertEqual(self.outcomes(puller), {"timeout": 1})
        self.assertLess(took, DEADLINE + 1.0)
        self.assertEqual(len(peer.connections), 1)
        yield peer.connections[0].closed.addTimeout(BOUND, reactor)

    @defer.inlineCallbacks
    def test_nobody_listening_fails(self):
        peer = Peer("silent")
        port = peer.listen(self)
        yield peer.close()
        puller = self.bolt(port)
        self.assertIsNone((yield self.timed(puller.pull(PEER.id)))[0])
        self.assertEqual(self.outcomes(puller), {"failed": 1})

    @defer.inlineCallbacks
    def test_stopping_while_a_pull_is_stuck_returns_at_once(self):
        peer = Peer("silent")
        puller = self.bolt(peer.listen(self), timeout=60.0)
        asked = peer.request()
        puller.startService()  # anti-entropy pulls the only other bolt now
        connection = yield asked
        pulling = puller._in_flight[PEER.id]
        started = time.monotonic()
        stopped = puller.stopService()
        self.assertEqual(self.successResultOf(pulling), None)  # cancelled, at once
        yield stopped.addTimeout(BOUND, reactor)
        self.assertLess(time.monotonic() - started, 1.0)
        yield connection.closed.addTimeout(BOUND, reactor)  # the connection was dropped
        self.assertEqual(self.outcomes(puller), {})  # stopping is not a failure
        self.assertEqual(puller._in_flight, {})

    def test_a_bolt_without_a_row_is_not_left_in_flight(self):
        puller = self.bolt(1)
        self.assertIsNone(self.successResultOf(puller.pull("a" * 20)))
        self.assertEqual(puller._in_flight, {})


class WellBehavedPeerTests(PullTestCase):
    @defer.inlineCallbacks
    def test_pull_merges_then_same(self):
        peer = Peer("snapshot")
        port = peer.listen(self)
        puller = self.bolt(port)
        served = founded()
        served.add_row(peer_row(port))
        rows, records = more_rows(3)
        served.merge(RosterParts(FED, ME.id, rows, overrides=records))
        peer.serve(served)
        report = yield puller.pull(PEER.id)
        self.assertEqual(report.accepted, {"rows": 3, "overrides": 3})
        self.assertEqual(puller.roster.digest(), served.digest())
        self.assertIsNone((yield puller.pull(PEER.id)))
        self.assertEqual(self.outcomes(puller), {"ok": 1, "same": 1})

    @defer.inlineCallbacks
    def test_a_big_snapshot_merges_as_the_synchronous_merge_does(self):
        # 600 rows and records, some forged, some held back, shuffled: opened and
        # merged in slices, verified in threads (chunks of 64), it must give
        # exactly the synchronous merge's roster and report.
        peer = Peer("snapshot")
        port = peer.listen(self)
        outsider = Identity(b"\x33" * 32)
        rows, records = more_rows(300)
        forged = [attr.evolve(rows[5], name="forged"),
                  attr.evolve(records[7], bolt_id=rows[8].bolt_id)]
        waiting = [more_rows(1, admitter=outsider)[0][0]]  # its admitter is unknown
        early = [Override.sign(outsider, FED, "envoy-x", None, (5, 0))]  # unknown signer
        incoming = [peer_row(port)] + rows[:5] + rows[6:] + forged[:1] + waiting
        served_parts = RosterParts(
            FED, ME.id, [founded().row(ME.id)] + incoming,
            overrides=records[:7] + records[8:] + forged[1:] + early)
        body = self.signed(served_parts)
        peer.snapshot = (body, "no-etag")
        puller = self.bolt(port, verifier=Verifier(reactor, chunk=64, inline=0))
        expected = puller.roster.current.copy()
        expected_report = expected.merge(open_snapshot(body, PEER.public_key, FED).parts)
        report = yield puller.pull(PEER.id)
        self.assertEqual(puller.verifier.chunks, -(-puller.verifier.verified // 64))
        self.assertGreater(puller.verifier.verified, 600)
        self.assertEqual(_fields(report), _fields(expected_report))
        self.assertEqual(report.rejected["bad_signature"], 2)
        # the waiting row, the early override, and the forged row's own override
        self.assertEqual(report.held_back, 3)
        self.assertEqual(puller.roster.current.digest(), expected.digest())
        self.assertEqual(puller.roster.current.to_data(), expected.to_data())
        self.assertEqual(puller.roster.current.pending_count(), 3)

    def signed(self, parts):
        """The bytes ``PEER`` serves for ``parts`` (which need not verify)."""
        digest = parts_digest(parts)
        at_ms = 1_000_000
        return canonical({
            "roster": parts.to_data(), "digest": snapshot_module.b64(digest),
            "bolt_id": PEER.id, "at_ms": at_ms,
            "signature": snapshot_module.b64(PEER.sign(snapshot_module._message(
                digest, PEER.id, at_ms, FED, ME.id)))})


def _fields(report):
    return (dict(report.accepted), dict(report.rejected), report.held_back, report.duplicates,
            report.equivocations)


class LocalMergeTests(unittest.SynchronousTestCase):
    """``LocalRoster.merge`` of a big snapshot: in slices, then adopted or merged in."""

    def setUp(self):
        from vigo.spanner.roster import steps

        self.patch(steps, "SLICE", 0.0)  # one step a turn: nothing finishes by accident
        self.clock = task.Clock()
        self.local = LocalRoster(ImmediateStore(), ME, self.clock)
        self.successResultOf(self.local.become(founded()))
        rows, records = more_rows(150)
        self.parts = RosterParts(FED, ME.id, rows, overrides=records)

    def run_clock(self, d):
        while not d.called:
            self.clock.advance(0)
        return self.successResultOf(d)

    def test_sliced_and_adopted(self):
        held = self.local.current
        merging = self.local.merge(self.parts)
        self.assertNoResult(merging)
        report = self.run_clock(merging)
        expected = founded()
        self.assertEqual(_fields(report), _fields(expected.merge(self.parts)))
        self.assertIs(self.local.current, held)
        self.assertEqual(held.digest(), expected.digest())

    def test_a_change_meanwhile_survives(self):
        merging = self.local.merge(self.parts)
        record = self.successResultOf(self.local.write_override("envoy-z", ME.id))
        self.run_clock(merging)
        roster = self.local.current
        self.assertEqual(roster.override_of("envoy-z"), record)
        self.assertEqual(len(roster.bolt_ids()), 151)
        expected = founded()
        expected.merge(self.parts)
        expected.add_record(record)
        self.assertEqual(roster.digest(), expected.digest())


    def test_only_what_was_taken_in_is_written(self):
        from vigo.spanner.roster import local as local_module
        from vigo.spanner.roster.store import load_roster

        written = []
        real = local_module.save_roster
        self.patch(local_module, "save_roster",
                   lambda cursor, parts: written.append(parts) or real(cursor, parts))
        store = self.local._store

        def stored():
            return self.successResultOf(store.run(load_roster)).digest()

        self.run_clock(self.local.merge(self.parts))
        self.assertEqual((len(written[-1].rows), len(written[-1].overrides)), (150, 150))
        self.assertEqual(stored(), self.local.digest())
        # A snapshot bringing one new record (and all the rest again) writes one record.
        writer = Identity((7).to_bytes(4, "big") * 8)  # the eighth bolt of more_rows
        new = Override.sign(writer, FED, "envoy-new", None, (99_999, 0))
        again = RosterParts(FED, ME.id, self.parts.rows, overrides=self.parts.overrides + (new,))
        self.run_clock(self.local.merge(again))
        self.assertEqual((written[-1].rows, written[-1].overrides), ((), (new,)))
        self.assertEqual(stored(), self.local.digest())
        # Held back (beside a change), then taken in with its signer's row:
        # written then, not before.
        stranger = Identity(b"\x34" * 32)
        early = Override.sign(stranger, FED, "envoy-early", None, (5, 0))
        other = Override.sign(writer, FED, "envoy-other", None, (99_999, 1))
        self.successResultOf(self.local.merge(RosterParts(FED, ME.id, overrides=(early, other))))
        self.assertEqual((written[-1].rows, written[-1].overrides), ((), (other,)))
        self.assertEqual(self.local.current.pending_count(), 1)
        row = AdmissionRow.applicant(stranger, FED, "s", ADDRESSES, ["*.s.example.com"], "t-s",
                                     ME.id).countersign(ME)
        self.successResultOf(self.local.merge(RosterParts(FED, ME.id, [row])))
        self.assertEqual((written[-1].rows, written[-1].overrides), ((row,), (early,)))
        self.assertEqual(stored(), self.local.digest())


class SteppedOpeningTests(unittest.SynchronousTestCase):
    """Opening a snapshot in steps decodes exactly what ``json.loads`` does."""

    @settings(max_examples=300, deadline=None)
    @given(st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
        | st.text(max_size=6),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
        max_leaves=20),
        st.sampled_from([None, 0, 1, 2]), st.sampled_from(["", " ", "\n\t "]))
    def test_json_like_json_loads(self, value, indent, space):
        text = space + json.dumps(value, indent=indent) + space
        self.assertEqual(run_steps(snapshot_module._decoding_json(text)), json.loads(text))
        self.assertEqual(run_steps(snapshot_module._decoding_json(text.encode("utf-16"))),
                         json.loads(text.encode("utf-16")))

    @settings(max_examples=500, deadline=None)
    @given(st.text(alphabet='{}[]",:01 \tx\\ntrue', max_size=24))
    def test_garbage_like_json_loads(self, text):
        try:
            expected = json.loads(text)
        except ValueError:
            self.assertRaises(ValueError, run_steps, snapshot_module._decoding_json(text))
        else:
            self.assertEqual(run_steps(snapshot_module._decoding_json(text)), expected)

    def test_an_overlong_list_is_refused_as_it_is_read(self):
        self.patch(snapshot_module, "_MAX_ELEMENTS", 10)
        body = b'{"roster": {"rows": [' + b"1," * 11 + b'1]}}'
        decoding = snapshot_module._decoding_json(body)
        steps = 0
        with self.assertRaises(ValueError):
            while True:
                next(decoding)
                steps += 1
        self.assertLessEqual(steps, 11)
        refused = self.assertRaises(SnapshotError, open_snapshot, body, PEER.public_key)
        self.assertEqual(refused.reason, "malformed")

    def test_duplicate_names_keep_the_last(self):
        text = '{"a": 1, "b": [1, {"c": 2, "c": 3}], "a": 4}'
        self.assertEqual(run_steps(snapshot_module._decoding_json(text)), json.loads(text))

    def test_opened_in_slices_as_at_once(self):
        roster = founded()
        roster.add_row(peer_row(8443))
        rows, records = more_rows(20)
        roster.merge(RosterParts(FED, ME.id, rows, overrides=records))
        body = canonical(sign_snapshot(roster, PEER, 5))
        clock = task.Clock()
        opening = run_sliced(clock, opening_snapshot(body, PEER.public_key, FED), budget=0.0)
        while not opening.called:
            clock.advance(0)
        self.assertEqual(self.successResultOf(opening),
                         open_snapshot(body, PEER.public_key, FED))
        failing = run_sliced(clock, opening_snapshot(body[:-1], PEER.public_key, FED), budget=0.0)
        while not failing.called:
            clock.advance(0)
        self.assertEqual(self.failureResultOf(failing, SnapshotError).value.reason, "malformed")
