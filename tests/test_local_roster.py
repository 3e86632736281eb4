"""``LocalRoster``: this bolt's copy of the roster, every change persisted first."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from vigo.identity import Identity
from vigo.interfaces.components import ILocalRoster
from vigo.interfaces.errors import Refusal
from vigo.spanner.roster.crdt import Roster
from vigo.spanner.roster.local import NO_DIGEST, LocalRoster
from vigo.spanner.roster.store import load_roster, save_roster
from vigo.testing.store import ImmediateStore

ADDRESSES = {"envoy": "127.0.0.1:1530", "api": "127.0.0.1:8443", "peer": "127.0.0.1:1533"}
ENVOY = "e" * 20


class LocalRosterTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.identity = Identity(b"\x07" * 32)
        self.store = ImmediateStore()
        self.roster = LocalRoster(self.store, self.identity, self.clock)
        self.changes, self.members = [], []
        self.roster.on_change(lambda: self.changes.append(self.roster.digest()))
        self.roster.on_member(self.members.append)

    def found(self):
        roster = Roster.found(self.identity, "fed", "a", ADDRESSES, ["*.a.example.com"])
        return self.successResultOf(self.roster.become(roster))

    def stored(self):
        return self.successResultOf(self.store.run(load_roster))

    def test_provides_its_interface(self):
        verifyObject(ILocalRoster, self.roster)

    def test_before_a_federation_it_reads_as_none(self):
        self.assertIsNone(self.roster.current)
        self.assertEqual((self.roster.digest(), self.roster.bolt_ids(), self.roster.federation_id),
                         (NO_DIGEST, (), None))
        self.assertIsNone(self.roster.locate(self.identity.id))
        refused = self.assertRaises(Refusal, self.roster.require_member)
        self.assertEqual(refused.code, "not_member")
        self.assertIsNone(self.successResultOf(self.roster.load()))

    def test_become_persists_then_holds_and_tells(self):
        release = self.store.hold(save_roster)
        roster = Roster.found(self.identity, "fed", "a", ADDRESSES, ["*.a.example.com"])
        becoming = self.roster.become(roster)
        self.assertIsNone(self.roster.current, "not held before it is on disk")
        self.assertEqual(self.members, [])
        release()
        self.assertIs(self.successResultOf(becoming), roster)
        self.assertEqual(self.members, [roster])
        self.assertEqual(self.stored().digest(), roster.digest())
        self.assertEqual(self.changes, [roster.digest()])
        self.assertEqual(self.roster.locate(self.identity.id),
                         ("127.0.0.1:1533", self.identity.fingerprint))
        # A second founding or joining is refused, and changes nothing.
        other = Roster.found(self.identity, "fed2", "a", ADDRESSES, [])
        refused = self.failureResultOf(self.roster.become(other), Refusal).value
        self.assertEqual(refused.code, "already_member")
        self.assertIs(self.roster.current, roster)

    def test_a_late_member_listener_hears_at_once(self):
        roster = self.found()
        heard = []
        self.roster.on_member(heard.append)
        self.assertEqual(heard, [roster])

    def test_an_override_is_persisted_then_taken_in(self):
        self.found()
        release = self.store.hold(save_roster)
        writing = self.roster.write_override(ENVOY, self.identity.id)
        self.assertIsNone(self.roster.current.override_of(ENVOY))
        release()
        record = self.successResultOf(writing)
        self.assertEqual(self.roster.current.override_of(ENVOY), record)
        self.assertEqual(self.stored().override_of(ENVOY), record)
        # Again: nothing to write.
        jobs = len(self.store.jobs)
        self.assertIs(self.successResultOf(self.roster.write_override(ENVOY, self.identity.id)),
                      record)
        self.assertEqual(len(self.store.jobs), jobs)

    def test_a_caller_that_stops_waiting_does_not_leave_memory_behind(self):
        """A timeout cancels the caller's Deferred; the write still commits, and
        memory follows it (else the database would hold an override this bolt
        does not act on, nor gossip)."""
        self.found()
        release = self.store.hold(save_roster)
        writing = self.roster.write_override(ENVOY, self.identity.id)
        writing.cancel()
        self.failureResultOf(writing, defer.CancelledError)
        changes = len(self.changes)
        release()
        self.assertIsNotNone(self.roster.current.override_of(ENVOY))
        self.assertEqual(self.stored().override_of(ENVOY), self.roster.current.override_of(ENVOY))
        self.assertEqual(len(self.changes), changes + 1)

    def test_a_merge_that_changes_nothing_writes_nothing(self):
        roster = self.found()
        jobs = len(self.store.jobs)
        report = self.successResultOf(self.roster.merge(roster.parts()))
        self.assertFalse(report.changed)
        self.assertEqual(len(self.store.jobs), jobs)
