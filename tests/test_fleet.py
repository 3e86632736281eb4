"""The fleet core: attach, check-in, force-push, revoke, offline, write-behind."""

import sqlite3

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from tests.fleetkit import EnvoyKey, FleetKit, RecordingConnection, decode_frame
from vigo.fleet import wire
from vigo.fleet.fleet import Fleet
from vigo.fleet.index import REVOKED
from vigo.identity import verify_signature
from vigo.interfaces.components import IEnvoyConnection
from vigo.interfaces.errors import Refusal


class FleetTests(unittest.TestCase):
    def setUp(self):
        self.kit = FleetKit(self)
        self.fleet = self.kit.fleet

    async def attached(self, key=None):
        key, record = await self.kit.enroll(key)
        connection = RecordingConnection()
        ts = self.kit.now_ms()
        self.fleet.attach(connection, key.id, self.kit.identity.id, ts,
                          key.attach_signature(self.kit.identity.id, ts))
        return key, record, connection

    def test_recording_connection_is_a_connection(self):
        verifyObject(IEnvoyConnection, RecordingConnection())

    @defer.inlineCallbacks
    def test_first_checkin_gets_bundle_then_no_change(self):
        key, record, _ = yield defer.ensureDeferred(self.attached())
        kind, fields = decode_frame(self.fleet.checkin(record, key.checkin_body(self.kit.now_ms())))
        self.assertEqual(kind, wire.BUNDLE)
        self.assertEqual(fields["document"]["roles"], ["web"])
        version = wire.unb64(fields["version"], "version", 32)
        self.assertTrue(verify_signature(
            self.kit.identity.public_key,
            wire.bundle_message(key.id, fields["seq"], version,
                                self.kit.hostcrates.bundle_for(key.hostname).encoded),
            wire.unb64(fields["signature"], "signature", 64)))
        kind, seq = decode_frame(self.fleet.checkin(record, key.checkin_body(self.kit.now_ms(), version)))
        self.assertEqual((kind, seq), (wire.NO_CHANGE, 2))
        self.assertEqual(self.fleet.stats.checkins["no_change"], 1)
        self.assertEqual(record.checkins, 2)

    @defer.inlineCallbacks
    def test_refused_checkins_change_nothing(self):
        key, record, _ = yield defer.ensureDeferred(self.attached())
        good = key.checkin_body(self.kit.now_ms())
        self.fleet.checkin(record, good)
        before = (record.last_seq, record.checkins, record.last_seen)
        cases = {
            "replayed": good,
            "stale": key.checkin_body(self.kit.now_ms() - 301_000),
            "malformed": good[:-1],
            "bad_signature": good[:20] + bytes([good[20] ^ 1]) + good[21:],
        }
        forged = bytearray(key.checkin_body(self.kit.now_ms(), seq=99))
        forged[-1] ^= 0xFF
        cases["bad_signature"] = bytes(forged)
        for code, body in cases.items():
            kind, fields = decode_frame(self.fleet.checkin(record, body))
            self.assertEqual((kind, fields["code"]), (wire.REFUSED, code))
            self.assertEqual((record.last_seq, record.checkins, record.last_seen), before)

    @defer.inlineCallbacks
    def test_another_envoys_signature_refused(self):
        key, record, _ = yield defer.ensureDeferred(self.attached())
        other = EnvoyKey("web2.dc1.example.com")
        other.id = key.id  # signs the right prefix, with the wrong key
        kind, fields = decode_frame(self.fleet.checkin(record, other.checkin_body(self.kit.now_ms())))
        self.assertEqual(fields["code"], "bad_signature")

    @defer.inlineCallbacks
    def test_attach_refusals(self):
        key, record = yield defer.ensureDeferred(self.kit.enroll())
        ts = self.kit.now_ms()
        sid = self.kit.identity.id
        conn = RecordingConnection()
        for code, args in [
            ("unknown_envoy", ("nobody", sid, ts, key.attach_signature(sid, ts))),
            ("wrong_server", (key.id, "other", ts, key.attach_signature("other", ts))),
            ("stale", (key.id, sid, ts - 400_000, key.attach_signature(sid, ts - 400_000))),
            ("bad_signature", (key.id, sid, ts, key.attach_signature(sid, ts + 1))),
        ]:
            error = self.assertRaises(Refusal, self.fleet.attach, conn, *args)
            self.assertEqual(error.code, code)
        self.assertIsNone(record.connection)

    @defer.inlineCallbacks
    def test_newer_connection_replaces_older(self):
        key, record, first = yield defer.ensureDeferred(self.attached())
        second = RecordingConnection()
        ts = self.kit.now_ms()
        self.fleet.attach(second, key.id, self.kit.identity.id, ts,
                          key.attach_signature(self.kit.identity.id, ts))
        self.assertIs(record.connection, second)
        self.assertEqual(first.dropped.code, "replaced")

    @defer.inlineCallbacks
    def test_force_push_connected_and_offline(self):
        key, record, connection = yield defer.ensureDeferred(self.attached())
        self.assertEqual((yield self.fleet.force_push(key.hostname)), "now")
        self.assertEqual(decode_frame(connection.sent[-1]), (wire.FORCE_PUSH, None))
        version = record.bundle.version
        kind, _ = decode_frame(self.fleet.checkin(record, key.checkin_body(self.kit.now_ms(), version)))
        self.assertEqual(kind, wire.BUNDLE)  # pushed despite being up to date
        self.assertFalse(record.pending_push)
        self.fleet.detach(record, connection)
        self.assertEqual((yield self.fleet.force_push(key.id)), "next_attach")
        rows = yield self.kit.store.run(
            lambda c: c.execute("SELECT pending_push FROM envoys WHERE id=?", (key.id,)).fetchall())
        self.assertEqual(rows, [(1,)])

    @defer.inlineCallbacks
    def test_revoke_drops_and_refuses(self):
        key, record, connection = yield defer.ensureDeferred(self.attached())
        yield self.fleet.revoke(key.id)
        self.assertEqual(connection.dropped.code, "revoked")
        self.assertEqual(record.state, REVOKED)
        ts = self.kit.now_ms()
        error = self.assertRaises(Refusal, self.fleet.attach, RecordingConnection(), key.id,
                                  self.kit.identity.id, ts, key.attach_signature(self.kit.identity.id, ts))
        self.assertEqual(error.code, "revoked")
        self.assertEqual(self.fleet.counts()["active"], 0)

    def test_find_unknown(self):
        self.assertEqual(self.assertRaises(Refusal, self.fleet.find, "nope").code, "not_found")

    @defer.inlineCallbacks
    def test_find_by_hostname_as_an_operator_writes_it(self):
        key, record, _ = yield defer.ensureDeferred(self.attached())
        for written in (record.hostname, record.hostname.upper(), record.hostname + ".",
                        " %s " % (record.hostname.title(),)):
            self.assertIs(self.fleet.find(written), record, written)
        self.assertEqual(self.assertRaises(Refusal, self.fleet.find, "WEB9.example.com").code,
                         "not_found")

    @defer.inlineCallbacks
    def test_sweep_marks_offline_after_intervals(self):
        key, record, _ = yield defer.ensureDeferred(self.attached())
        self.fleet.checkin(record, key.checkin_body(self.kit.now_ms()))
        self.kit.clock.advance(15 * 3 - 1)
        self.assertEqual(self.fleet.sweep(), 0)
        self.kit.clock.advance(2)
        self.assertEqual(self.fleet.sweep(), 1)
        self.assertFalse(record.online)
        self.assertEqual(self.fleet.stats.transitions["online_to_offline"], 1)
        self.fleet.checkin(record, key.checkin_body(self.kit.now_ms()))
        self.assertTrue(record.online)
        self.assertEqual(self.fleet.stats.transitions["offline_to_online"], 2)

    @defer.inlineCallbacks
    def test_write_behind_then_reload(self):
        key, record, _ = yield defer.ensureDeferred(self.attached())
        for _ in range(3):
            self.fleet.checkin(record, key.checkin_body(self.kit.now_ms()))
        self.assertEqual((yield self.fleet.flush()), 1)
        self.assertEqual((yield self.fleet.flush()), 0)
        reloaded = Fleet(self.kit.store, self.kit.identity, self.kit.hostcrates,
                         self.kit.clock, 15.0, 3)
        self.assertEqual((yield reloaded.load()), 1)
        again = reloaded.index.get(key.id)
        self.assertEqual((again.checkins, again.hostname), (3, "web1.dc1.example.com"))
        # Sequences up to the reservation may have been used: the restart
        # starts there (vigo/fleet/replay.py).
        self.assertEqual(again.last_seq, record.seq_reserved)
        self.assertEqual(again.applied_version, record.applied_version)
        self.assertEqual(again.public_key, key.public_key)

    @defer.inlineCallbacks
    def test_write_behind_never_lowers_seq(self):
        key, record, _ = yield defer.ensureDeferred(self.attached())
        self.fleet.checkin(record, key.checkin_body(self.kit.now_ms(), seq=10))
        yield self.fleet.flush()
        record.last_seq = 5
        self.fleet._mark_dirty(record)
        yield self.fleet.flush()
        rows = yield self.kit.store.run(
            lambda c: c.execute("SELECT last_seq FROM envoys").fetchall())
        self.assertEqual(rows, [(10,)])

    @defer.inlineCallbacks
    def test_database_is_the_truth_after_enroll(self):
        key, _ = yield defer.ensureDeferred(self.kit.enroll())
        db = sqlite3.connect(self.kit.store.path)
        self.assertEqual(db.execute("SELECT id, hostname, state FROM envoys").fetchall(),
                         [(key.id, key.hostname, "active")])
