"""The roster through a real store: saved, reopened, verified again."""

import json

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.rosterkit import B0, B0_2, B1, B2, FED, FOUNDER, ITEMS, delivered
from vigo.spanner.roster.crdt import Roster
from vigo.spanner.roster.store import RosterStoreError, load_roster, save_roster
from vigo.store import Store


def count(cursor, table):
    return cursor.execute("SELECT COUNT(*) FROM %s" % (table,)).fetchone()[0]


def tamper_row(cursor, bolt_id):
    (text,) = cursor.execute("SELECT record FROM roster_rows WHERE bolt_id = ?",
                             (bolt_id,)).fetchone()
    data = json.loads(text)
    data["name"] = "tampered"
    cursor.execute("UPDATE roster_rows SET record = ? WHERE bolt_id = ?",
                   (json.dumps(data), bolt_id))


class RosterStoreTests(unittest.TestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.store = Store(self.path, reactor)
        self.store.open()
        self.addCleanup(lambda: self.store.close())

    @defer.inlineCallbacks
    def reopen(self):
        yield self.store.close()
        self.store = Store(self.path, reactor)
        self.store.open()

    @defer.inlineCallbacks
    def test_nothing_saved(self):
        self.assertIsNone((yield self.store.run(load_roster)))

    @defer.inlineCallbacks
    def test_round_trip(self):
        roster = delivered(ITEMS)
        yield self.store.run(save_roster, roster.parts())
        yield self.reopen()
        loaded = yield self.store.run(load_roster)
        self.assertEqual(loaded.digest(), roster.digest())
        self.assertEqual((loaded.federation_id, loaded.founder_id), (FED, FOUNDER.id))

    @defer.inlineCallbacks
    def test_save_is_idempotent_and_follows_changes(self):
        roster = delivered(ITEMS[:5])
        yield self.store.run(save_roster, roster)
        yield self.store.run(save_roster, roster)
        self.assertEqual((yield self.store.run(count, "roster_rows")), len(roster.bolt_ids()))
        roster.merge(delivered(ITEMS))
        yield self.store.run(save_roster, roster.parts())
        loaded = yield self.store.run(load_roster)
        self.assertEqual(loaded.digest(), roster.digest())
        self.assertEqual(loaded.row(B0.id), B0_2)

    @defer.inlineCallbacks
    def test_an_older_save_does_not_undo_a_newer_row(self):
        newer = delivered(ITEMS)
        yield self.store.run(save_roster, newer.parts())
        yield self.store.run(save_roster, delivered(ITEMS[:4]).parts())
        loaded = yield self.store.run(load_roster)
        self.assertEqual(loaded.row(B0.id), B0_2)

    @defer.inlineCallbacks
    def test_another_federation_is_refused(self):
        yield self.store.run(save_roster, delivered(ITEMS[:2]))
        d = self.store.run(save_roster, Roster("otherfed", FOUNDER.id))
        yield self.assertFailure(d, RosterStoreError)

    @defer.inlineCallbacks
    def test_tampered_records_are_dropped_on_load(self):
        roster = delivered(ITEMS)
        yield self.store.run(save_roster, roster.parts())
        yield self.store.run(tamper_row, B1.id)
        loaded = yield self.store.run(load_roster)
        self.assertIsNone(loaded.row(B1.id))
        self.assertIsNone(loaded.row(B2.id))  # B1 admitted B2: no chain without it
        self.assertEqual(loaded.rejections["bad_signature"], 1)
        self.assertEqual(loaded.rejections["no_chain"], 1)
        self.assertNotEqual(loaded.digest(), roster.digest())
        # A good copy from a peer heals it.
        loaded.merge(roster)
        self.assertEqual(loaded.digest(), roster.digest())
        self.assertEqual(loaded.row(B1.id), roster.row(B1.id))
