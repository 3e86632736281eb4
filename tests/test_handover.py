"""Finishing interrupted hand-overs: pending moves, copies the roster gives to
another bolt (``vigo.spanner.handover``), and the failpoints the crash tests
use (``vigo.failpoints``). Real fleets and stores, fake bolts, a fake clock."""

import sqlite3

from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from tests.test_reassign import ACTIONS, Federation
from vigo.failpoints import Failpoints, parse
from vigo.fleet.index import ACTIVE, MOVED
from vigo.interfaces.errors import ActionError
from vigo.plugins.vigo_fleet import Query
from vigo.plugins.vigo_reassign import ACCEPT_FIELDS
from vigo.spanner.handover import SETTLED, HandoverRepair
from vigo.spanner.peer.actions import run_action

ACTIONS.setdefault("query", Query())


class FakeRoster:
    """Bolt statuses and envoy overrides, as ``Roster`` answers them."""

    def __init__(self, bolt_ids):
        self.statuses = {bolt_id: "active" for bolt_id in bolt_ids}
        self.overrides = {}

    def status_of(self, bolt_id):
        return self.statuses.get(bolt_id)

    def overridden(self):
        return sorted(self.overrides.items())


class RepairTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        from tests.fleetkit import EnvoyKey

        self.fed = Federation(self)
        self.a, self.b, self.c = (self.fed.kits[n] for n in "abc")
        self.roster = FakeRoster(self.fed.bolts)
        for name in "abc":  # the fake bolts' overrides land in the one roster
            bolt = self.fed.bolt(name)
            bolt.write_override = self._override_writer(bolt)
        self.key, _ = yield defer.ensureDeferred(self.a.enroll(EnvoyKey("web1.a.example.com")))
        self.clock = self.a.clock
        self.warnings = []
        observer = self._observe
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def _observe(self, event):
        if event.get("log_namespace", "").startswith("vigo.spanner.handover"):
            self.warnings.append(event)

    def _override_writer(self, bolt):
        def write(envoy_id, bolt_id):
            bolt.overrides.append((envoy_id, bolt_id))
            self.roster.overrides[envoy_id] = bolt_id
            return defer.succeed(None)
        return write

    def repair(self, name="a"):
        return HandoverRepair(self.fed.bolt(name), lambda: self.roster, self.clock)

    def bolt_id(self, name):
        return self.fed.kits[name].identity.id

    def state(self, name):
        row = sqlite3.connect(self.fed.kits[name].store.path).execute(
            "SELECT state FROM envoys WHERE id = ?", (self.key.id,)).fetchone()
        return None if row is None else row[0]

    def pending(self, name="a"):
        return self.fed.bolt(name).fleet().pending_moves()

    def reassign(self, to="b", at="a"):
        bolt = self.fed.bolt(at)
        return run_action(bolt, ACTIONS, bolt.id, "reassign",
                          {"envoy": self.key.id, "to": self.bolt_id(to)})

    @defer.inlineCallbacks
    def accept_at(self, name, override=True):
        """What the destination does for accept-envoy, without the source's half."""
        fields = yield self.fed.bolt("a").fleet().export(self.key.id)
        yield self.fed.bolt(name).fleet().accept({k: fields[k] for k in ACCEPT_FIELDS})
        if override:
            self.roster.overrides[self.key.id] = self.bolt_id(name)

    @defer.inlineCallbacks
    def test_a_move_noted_but_never_asked_is_finished(self):
        # The source crashed right after noting the move (reassign.journaled).
        yield self.fed.bolt("a").fleet().begin_move(self.key.id, self.bolt_id("b"))
        result = yield self.repair().round()
        self.assertEqual(result, {"finished": 1, "dropped": 0, "failed": 0})
        self.assertEqual((self.state("a"), self.state("b")), (MOVED, ACTIVE))
        self.assertEqual((yield self.pending()), {})
        self.assertEqual(self.roster.overrides[self.key.id], self.bolt_id("b"))

    @defer.inlineCallbacks
    def test_a_move_accepted_but_not_marked_is_finished(self):
        # reassign.accepted: B stored it and claimed it; A never marked it moved.
        yield self.fed.bolt("a").fleet().begin_move(self.key.id, self.bolt_id("b"))
        yield self.accept_at("b")
        self.assertEqual((self.state("a"), self.state("b")), (ACTIVE, ACTIVE))
        yield self.repair().round()
        self.assertEqual((self.state("a"), self.state("b")), (MOVED, ACTIVE))
        self.assertEqual((yield self.pending()), {})

    @defer.inlineCallbacks
    def test_a_destination_that_is_down_is_asked_again_next_round(self):
        # accept.stored: B stored it, wrote no override, and went down.
        yield self.fed.bolt("a").fleet().begin_move(self.key.id, self.bolt_id("b"))
        yield self.accept_at("b", override=False)
        self.fed.down.add("b")
        repair = self.repair()
        repair.start()
        self.assertIsNone(repair.pending)
        self.clock.advance(repair.first_round)
        yield repair.idle()
        self.assertEqual(repair.rounds, 1)
        self.assertEqual(repair.pending, {self.key.id: self.bolt_id("b")})
        self.assertEqual((self.state("a"), self.state("b")), (ACTIVE, ACTIVE))
        self.assertEqual(list((yield self.pending())), [self.key.id])
        self.fed.down.clear()
        self.clock.advance(repair.interval - 0.1)
        self.assertEqual(repair.rounds, 1, "not before the interval")
        self.clock.advance(0.1)
        yield repair.idle()
        self.assertEqual(repair.rounds, 2)
        self.assertEqual((self.state("a"), self.state("b")), (MOVED, ACTIVE))
        self.assertEqual(self.roster.overrides[self.key.id], self.bolt_id("b"))
        self.assertEqual((repair.finished, repair.pending), (1, {}))
        yield repair.stop()
        self.clock.advance(repair.interval * 3)
        self.assertEqual(repair.rounds, 2, "no rounds after stop()")

    @defer.inlineCallbacks
    def test_a_move_to_a_bolt_no_longer_active_is_dropped(self):
        yield self.fed.bolt("a").fleet().begin_move(self.key.id, self.bolt_id("b"))
        self.roster.statuses[self.bolt_id("b")] = "draining"
        result = yield self.repair().round()
        self.assertEqual(result, {"finished": 0, "dropped": 1, "failed": 0})
        self.assertEqual((self.state("a"), self.state("b")), (ACTIVE, None))
        self.assertEqual((yield self.pending()), {})
        self.assertTrue([e for e in self.warnings if "dropped" in e["log_format"]])

    @defer.inlineCallbacks
    def test_a_copy_left_behind_goes_to_the_bolt_the_roster_names(self):
        # B accepted a move A then abandoned; A moved the envoy to C instead.
        yield self.accept_at("b")
        yield self.reassign(to="c")
        self.assertEqual([self.state(n) for n in "abc"], [MOVED, ACTIVE, ACTIVE])
        self.assertEqual(self.roster.overrides[self.key.id], self.bolt_id("c"))
        # B's round finds its copy claimed by C, which holds it; once that has
        # lasted SETTLED seconds (no accept under way looks like it), B hands it over.
        repair = self.repair("b")
        first = yield repair.round()
        self.assertEqual(first, {"finished": 0, "dropped": 0, "failed": 0})
        self.assertEqual([self.state(n) for n in "abc"], [MOVED, ACTIVE, ACTIVE])
        self.clock.advance(SETTLED)
        yield repair.round()
        self.assertEqual([self.state(n) for n in "abc"], [MOVED, MOVED, ACTIVE])
        self.assertEqual(self.fed.kits["b"].fleet.index.get(self.key.id).redirect["server_id"],
                         self.bolt_id("c"))
        # Nothing left to do anywhere.
        for name in "abc":
            result = yield self.repair(name).round()
            self.assertEqual(result, {"finished": 0, "dropped": 0, "failed": 0})

    @defer.inlineCallbacks
    def test_an_override_whose_bolt_does_not_hold_the_envoy_changes_nothing(self):
        # The roster names B, but B never stored the envoy: A's roster may be
        # the stale one, so A keeps it and warns, once.
        self.roster.overrides[self.key.id] = self.bolt_id("b")
        repair = self.repair()
        for _ in range(3):
            result = yield repair.round()
            self.assertEqual(result, {"finished": 0, "dropped": 0, "failed": 0})
            self.clock.advance(SETTLED)
        self.assertEqual((self.state("a"), self.state("b")), (ACTIVE, None))
        warned = [e for e in self.warnings if "does not hold it" in e["log_format"]]
        self.assertEqual(len(warned), 1)

    @defer.inlineCallbacks
    def test_a_copy_being_accepted_or_moved_here_is_left_alone(self):
        from vigo.plugins.vigo_reassign import _locked

        yield self.accept_at("b")
        yield self.reassign(to="c")
        # An accept or a reassign of the envoy runs at B meanwhile.
        holding = defer.Deferred()
        held = _locked(self.bolt_id("b"), self.key.id, lambda: holding)
        held = defer.ensureDeferred(held)
        repair = self.repair("b")
        for _ in range(2):
            yield repair.round()
            self.clock.advance(SETTLED)
        self.assertEqual(self.state("b"), ACTIVE, "not while it is busy")
        holding.callback(None)
        yield held
        yield repair.round()
        self.clock.advance(SETTLED)
        yield repair.round()
        self.assertEqual(self.state("b"), MOVED)

    @defer.inlineCallbacks
    def test_a_move_of_an_envoy_revoked_meanwhile_is_forgotten(self):
        yield self.fed.bolt("a").fleet().begin_move(self.key.id, self.bolt_id("b"))
        yield self.a.fleet.revoke(self.key.id)
        result = yield self.repair().round()
        self.assertEqual(result, {"finished": 0, "dropped": 0, "failed": 1})
        self.assertEqual((yield self.pending()), {})
        self.assertEqual((yield self.repair().round())["failed"], 0, "not tried again")

    @defer.inlineCallbacks
    def test_no_roster_no_round(self):
        repair = HandoverRepair(self.fed.bolt("a"), lambda: None, self.clock)
        self.assertIsNone((yield repair.round()))
        self.assertEqual(repair.rounds, 0)


class PendingMoveTests(unittest.TestCase):
    """What ``reassign`` notes, and when it forgets the note."""

    @defer.inlineCallbacks
    def setUp(self):
        from tests.fleetkit import EnvoyKey

        self.fed = Federation(self)
        self.key, _ = yield defer.ensureDeferred(
            self.fed.kits["a"].enroll(EnvoyKey("web1.a.example.com")))

    def reassign(self):
        bolt = self.fed.bolt("a")
        return run_action(bolt, ACTIONS, bolt.id, "reassign",
                          {"envoy": self.key.id, "to": self.fed.kits["b"].identity.id})

    def pending(self):
        return self.fed.bolt("a").fleet().pending_moves()

    @defer.inlineCallbacks
    def test_unreachable_leaves_the_move_pending_and_says_so(self):
        self.fed.down.add("b")
        error = yield self.assertFailure(self.reassign(), ActionError)
        self.assertIn("the move is pending", str(error))
        self.assertEqual({k: v[0] for k, v in (yield self.pending()).items()},
                         {self.key.id: self.fed.kits["b"].identity.id})

    @defer.inlineCallbacks
    def test_a_refusal_before_storing_forgets_it(self):
        from tests.fleetkit import EnvoyKey

        yield defer.ensureDeferred(self.fed.kits["b"].enroll(EnvoyKey("web1.a.example.com")))
        error = yield self.assertFailure(self.reassign(), ActionError)
        self.assertTrue(str(error).startswith("hostname_taken: "), str(error))
        self.assertEqual((yield self.pending()), {})

    @defer.inlineCallbacks
    def test_a_crossing_move_is_refused(self):
        # A is handing the envoy to B; B (whose roster is behind) asks A to take
        # it from B: A refuses, before storing anything, so B's move ends.
        a, b = self.fed.bolt("a"), self.fed.bolt("b")
        yield a.fleet().begin_move(self.key.id, b.id)
        fields = yield a.fleet().export(self.key.id)
        args = {name: fields[name] for name in ACCEPT_FIELDS}
        error = yield self.assertFailure(run_action(a, ACTIONS, b.id, "accept-envoy", args),
                                         ActionError)
        self.assertTrue(str(error).startswith("moving: "), str(error))
        # From a third bolt it is an ordinary, idempotent accept.
        answer = yield run_action(a, ACTIONS, self.fed.bolt("c").id, "accept-envoy", args)
        self.assertEqual(answer["envoy_id"], self.key.id)

    @defer.inlineCallbacks
    def test_a_revoke_during_the_move_is_not_undone(self):
        a = self.fed.bolt("a")
        forward = a.call

        def call(bolt_id, action, args):
            d = forward(bolt_id, action, args)
            if action == "accept-envoy":  # the operator revokes it at A meanwhile
                d.addCallback(lambda answer: self.fed.kits["a"].fleet.revoke(
                    self.key.id).addCallback(lambda _: answer))
            return d

        a.call = call
        error = yield self.assertFailure(self.reassign(), ActionError)
        self.assertTrue(str(error).startswith("not_active: "), str(error))
        states = [sqlite3.connect(self.fed.kits[n].store.path).execute(
            "SELECT state FROM envoys WHERE id = ?", (self.key.id,)).fetchone() for n in "ab"]
        self.assertEqual(states, [("revoked",), ("active",)])
        self.assertEqual(self.fed.kits["a"].fleet.index.get(self.key.id).state, "revoked")

    @defer.inlineCallbacks
    def test_a_cancelled_move_still_brings_memory_in_line(self):
        fleet = self.fed.kits["a"].fleet
        redirect = {"address": "127.0.0.1:1", "server_id": "x" * 20, "fingerprint": "f"}
        d = fleet.move(self.key.id, redirect)
        d.cancel()  # a caller's timeout
        self.failureResultOf(d, defer.CancelledError)
        yield fleet.store.run(lambda cursor: None)  # the move's job has answered
        row = sqlite3.connect(fleet.store.path).execute(
            "SELECT state FROM envoys WHERE id = ?", (self.key.id,)).fetchone()
        self.assertEqual((row[0], fleet.index.get(self.key.id).state), (MOVED, MOVED))

    @defer.inlineCallbacks
    def test_a_finished_move_forgets_it_in_the_same_write(self):
        yield self.reassign()
        self.assertEqual((yield self.pending()), {})


class FailpointTests(unittest.TestCase):
    def test_parse(self):
        self.assertEqual(parse(None), {})
        self.assertEqual(parse(""), {})
        self.assertEqual(parse("accept.stored, drain.moved@50"),
                         {"accept.stored": 1, "drain.moved": 50})
        for bad in ("x@", "x@0", "x@two", "@3"):
            self.assertRaises(ValueError, parse, bad)

    def test_kills_at_the_nth_hit_only(self):
        kills = []
        points = Failpoints({"drain.moved": 3}, kill=lambda: kills.append(1))
        points("accept.stored")
        for _ in range(5):
            points("drain.moved")
        self.assertEqual(kills, [1])
        self.assertEqual(points.reached, {"drain.moved": 5})


class ScheduleTests(unittest.TestCase):
    def test_soon_runs_a_round_only_once_rounds_are_due(self):
        from twisted.internet.task import Clock

        clock = Clock()
        repair = HandoverRepair(None, lambda: None, clock)
        calls = []
        repair.round = lambda: calls.append(clock.seconds())
        repair.soon()
        self.assertEqual(calls, [], "not before the first round")
        repair.start()
        clock.advance(repair.first_round)
        self.assertEqual(calls, [repair.first_round])
        repair.soon()
        self.assertEqual(calls, [repair.first_round] * 2)
        clock.advance(repair.interval)
        self.assertEqual(len(calls), 3)
        repair.stop()
        repair.soon()
        clock.advance(repair.interval)
        self.assertEqual(len(calls), 3)
