"""Replay protection that survives a crash (vigo/fleet/replay.py).

A check-in's sequence number must be above the envoy's last; that number is
written behind, so these tests check the reservation that covers the gap:
after a crash (a store closed without the write-behind flush) a check-in
replayed from before it is refused; a sequence above the reservation is
answered only once a new one is durable; the flush extends reservations only
after its commit; a restart starts above every reservation.
"""

import time

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.fleetkit import EnvoyKey, FleetKit, RecordingConnection, decode_frame
from vigo.fleet import replay, wire
from vigo.fleet.fleet import Fleet, write_behind
from vigo.fleet.hostcrates import Hostcrates
from vigo.fleet.index import EnvoyRecord
from vigo.identity import Identity
from vigo.store import Store, StoreError
from vigo.testing.store import ImmediateStore

NOW = 1_790_000_000.0
NOW_US = int(NOW * 1_000_000)
R0 = 2 * replay.RESERVE  # the reservation the test envoy starts with


class CrashTests(unittest.TestCase):
    """A real SQLite file, closed without a flush, then opened again."""

    def setUp(self):
        self.kit = FleetKit(self)

    async def attached(self, fleet, key):
        ts = self.kit.now_ms()
        return fleet.attach(RecordingConnection(), key.id, self.kit.identity.id, ts,
                            key.attach_signature(self.kit.identity.id, ts))

    async def crash_and_reload(self):
        """The store closed with nothing flushed (what a kill -9 leaves on disk),
        then a new fleet loaded from the same file."""
        await self.kit.store.close()
        store = Store.in_directory(self.kit.data_dir, reactor)
        store.open()
        self.addCleanup(store.close)
        fleet = Fleet(store, self.kit.identity, self.kit.hostcrates, self.kit.clock, 15.0, 3)
        await fleet.load()
        return fleet

    @defer.inlineCallbacks
    def test_a_check_in_from_before_the_crash_is_refused_after_it(self):
        key, record = yield defer.ensureDeferred(self.kit.enroll())
        yield defer.ensureDeferred(self.attached(self.kit.fleet, key))
        now_us = self.kit.now_ms() * 1000
        captured = [key.checkin_body(self.kit.now_ms(), seq=now_us + n) for n in range(3)]
        for body in captured:
            answer = self.kit.fleet.checkin(record, body)
            self.assertIsInstance(answer, bytes, "within the reservation: answered at once")
            self.assertIn(decode_frame(answer)[0], (wire.BUNDLE, wire.NO_CHANGE))
        self.assertEqual(self.kit.fleet.stats.reservations, 0)

        fleet = yield defer.ensureDeferred(self.crash_and_reload())
        again = fleet.index.get(key.id)
        self.assertGreaterEqual(again.last_seq, now_us + 2)
        yield defer.ensureDeferred(self.attached(fleet, key))
        for body in captured:
            kind, fields = decode_frame(fleet.checkin(again, body))
            self.assertEqual((kind, fields["code"]), (wire.REFUSED, "replayed"))
        self.assertEqual(fleet.stats.checkins["replayed"], 3)

        # The envoy itself goes on above the last sequence its Attach answer gives.
        kind, _ = decode_frame(fleet.checkin(
            again, key.checkin_body(self.kit.now_ms(), seq=again.last_seq + 1)))
        self.assertIn(kind, (wire.BUNDLE, wire.NO_CHANGE))

    @defer.inlineCallbacks
    def test_enrollment_takes_a_first_reservation(self):
        key, record = yield defer.ensureDeferred(self.kit.enroll())
        expected = int(self.kit.clock.seconds() * 1_000_000) + replay.RESERVE
        self.assertEqual(record.seq_reserved, expected)
        rows = yield self.kit.store.run(
            lambda c: c.execute("SELECT seq_reserved FROM envoys").fetchall())
        self.assertEqual(rows, [(expected,)])


class ReservationTests(unittest.SynchronousTestCase):
    """The fleet on a store whose jobs can be held, to see what waits for what."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = ImmediateStore()
        hostcrates = Hostcrates()
        self.fleet = Fleet(self.store, Identity.generate(), hostcrates, self.clock, 15.0, 3)
        self.key = EnvoyKey()
        self.store.run(lambda c: c.execute(
            "INSERT INTO envoys (id, hostname, public_key, enrolled_at, last_seq, seq_reserved) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (self.key.id, self.key.hostname, self.key.public_key, NOW, 10, R0)))
        self.record = EnvoyRecord(self.key.id, self.key.hostname, self.key.public_key,
                                  hostcrates.bundle_for(self.key.hostname),
                                  last_seq=10, seq_reserved=R0)
        self.fleet.index.add(self.record)

    def checkin(self, seq):
        return self.fleet.checkin(self.record, self.key.checkin_body(int(NOW * 1000), seq=seq))

    def reserved_on_disk(self):
        return self.store.query("SELECT last_seq, seq_reserved FROM envoys")[0]

    def test_within_the_reservation_nothing_is_written(self):
        self.assertIsInstance(self.checkin(R0), bytes)
        self.assertEqual(self.store.jobs[1:], [])
        self.assertEqual(self.fleet.stats.reservations, 0)

    def test_above_the_reservation_the_answer_waits_for_the_write(self):
        release = self.store.hold(replay.reserve)
        d = self.checkin(R0 + 1000)
        self.assertNoResult(d)
        # Meanwhile the sequence is used: played again, it is refused at once.
        kind, fields = decode_frame(self.checkin(R0 + 1000))
        self.assertEqual(fields["code"], "replayed")
        self.assertEqual(self.reserved_on_disk(), (10, R0))
        release()
        kind, _ = decode_frame(self.successResultOf(d))
        self.assertEqual(kind, wire.BUNDLE)
        self.assertEqual(self.reserved_on_disk(), (10, R0 + 1000 + replay.RESERVE))
        self.assertEqual(self.record.seq_reserved, R0 + 1000 + replay.RESERVE)
        self.assertEqual(self.fleet.stats.reservations, 1)
        self.assertIsInstance(self.checkin(R0 + 1001), bytes)

    def test_a_reservation_that_cannot_be_written_is_refused_retryable(self):
        run = self.store.run
        self.store.run = lambda job, *args: (
            defer.fail(StoreError("the disk is full")) if job is replay.reserve
            else run(job, *args))
        kind, fields = decode_frame(self.successResultOf(self.checkin(R0 + 1000)))
        self.assertEqual((kind, fields["code"], fields["retryable"]),
                         (wire.REFUSED, "unavailable", True))
        self.assertEqual(self.record.seq_reserved, R0)
        self.assertTrue(self.flushLoggedErrors())

    def test_flush_extends_a_reservation_running_low_after_its_commit(self):
        self.checkin(R0 - replay.EXTEND_BELOW + 1)
        release = self.store.hold(write_behind)
        d = self.fleet.flush()
        self.assertEqual(self.record.seq_reserved, R0, "not before the commit")
        release()
        self.assertEqual(self.successResultOf(d), 1)
        expected = R0 - replay.EXTEND_BELOW + 1 + replay.RESERVE
        self.assertEqual(self.record.seq_reserved, expected)
        self.assertEqual(self.reserved_on_disk()[1], expected)

    def test_flush_keeps_a_reservation_with_room_left(self):
        self.store.run(lambda c: c.execute("UPDATE envoys SET seq_reserved = ?",
                                           (replay.RESERVE,)))
        self.record.seq_reserved = replay.RESERVE
        self.checkin(100)
        self.successResultOf(self.fleet.flush())
        self.assertEqual(self.reserved_on_disk(), (100, replay.RESERVE))
        self.assertEqual(self.record.seq_reserved, replay.RESERVE)

    def test_a_restart_starts_above_every_reservation(self):
        fleet = Fleet(self.store, Identity.generate(), Hostcrates(), self.clock, 15.0, 3)
        self.assertEqual(self.successResultOf(fleet.load()), 1)
        record = fleet.index.get(self.key.id)
        self.assertEqual((record.last_seq, record.seq_reserved),
                         (R0, R0 + replay.RESERVE))
        self.assertEqual(self.reserved_on_disk(), (R0, R0 + replay.RESERVE))


class ReservationArithmeticTests(unittest.SynchronousTestCase):
    def test_first_reservation_covers_the_envoys_clock(self):
        self.assertEqual(replay.first_reservation(0, NOW), NOW_US + replay.RESERVE)
        later = NOW_US + 10 * replay.RESERVE
        self.assertEqual(replay.first_reservation(later, NOW), later + replay.RESERVE)

    def test_extension(self):
        self.assertEqual(replay.extension(0, replay.RESERVE), replay.RESERVE)
        low = replay.RESERVE - replay.EXTEND_BELOW + 1
        self.assertEqual(replay.extension(low, replay.RESERVE), low + replay.RESERVE)

    def test_the_reservation_is_minutes_of_an_envoys_clock(self):
        # Sequences are µs timestamps (vigo/envoy/cadence.py): ten minutes.
        self.assertEqual(replay.RESERVE, 600 * 1_000_000)
        self.assertLess(time.time() * 1e6 + replay.RESERVE, 2 ** 63)
