"""Finishing interrupted hand-overs (``vigo.spanner.handover``): pending moves,
copies the roster gives to another bolt, the rounds' schedule on a ``Clock``,
and the failpoints the crash tests use (``vigo.failpoints``).

The repair is built directly, as each bolt of a ``UnitFederation`` (real
fleets, moves, rosters and reassigners in one process, on one ``Clock``)
wires it; a hand-over is interrupted where a ``kill -9`` would stop it by a
failpoint that raises (``Steps.crash_at``). Then two real bolts on loopback.
"""

import contextlib
import sqlite3

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from tests.fleetkit import EnvoyKey
from tests.test_reassign import Crash, LiveFederation, Steps, UnitFederation
from vigo.failpoints import Failpoints, parse
from vigo.fleet.index import ACTIVE, MOVED, REVOKED
from vigo.fleet.moves import load_moves
from vigo.interfaces.errors import Refusal
from vigo.spanner.handover import MOVE_TIMEOUT, SETTLED, HandoverRepair
from vigo.spanner.roster.local import LocalRoster
from vigo.testing.store import ImmediateStore

NOTHING = {"finished": 0, "dropped": 0, "failed": 0}


class RepairTests(unittest.SynchronousTestCase):
    """Each bolt's ``HandoverRepair`` over its real parts, in one process."""

    def setUp(self):
        self.fed = UnitFederation()
        self.a, self.b, self.c = (self.fed[name] for name in "abc")
        self.clock = self.fed.clock
        self.key = self.fed.enroll("a", "web1.a.example.com")
        self.steps = Steps(self)
        self.warnings = []
        globalLogPublisher.addObserver(self._observe)
        self.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event):
        if event.get("log_namespace", "").startswith("vigo.spanner.handover"):
            self.warnings.append(event)

    def interrupted(self, step, to="b"):
        """A hand-over of the envoy from A to ``to``, stopped at ``step``."""
        self.steps.crash_at(step)
        self.failureResultOf(self.a.reassigner.reassign(self.key.id, self.fed[to].id))
        self.flushLoggedErrors(Crash)
        self.steps.take()

    def round(self, name="a"):
        return self.successResultOf(self.fed[name].repair.round())

    def test_a_move_noted_but_never_asked_is_finished(self):
        self.interrupted("reassign.journaled")
        self.assertEqual(self.fed.pending("a"), {self.key.id: self.b.id})
        self.assertEqual(self.round(), {"finished": 1, "dropped": 0, "failed": 0})
        self.assertEqual(self.steps.take(), ["reassign.journaled", "accept.stored",
                                             "accept.claimed", "reassign.accepted",
                                             "reassign.moved"])
        self.assertEqual(self.fed.states(self.key.id), {"a": MOVED, "b": ACTIVE})
        self.assertEqual(self.fed.pending("a"), {})
        self.assertEqual(self.fed.override("b", self.key.id), self.b.id)
        self.assertEqual((self.a.repair.finished, self.a.repair.pending), (1, {}))

    def test_a_move_accepted_but_not_marked_is_finished(self):
        # reassign.accepted: B stored it and claimed it; A never marked it moved.
        self.interrupted("reassign.accepted")
        self.assertEqual(self.fed.states(self.key.id), {"a": ACTIVE, "b": ACTIVE})
        self.assertEqual(self.round()["finished"], 1)
        self.assertEqual(self.fed.states(self.key.id), {"a": MOVED, "b": ACTIVE})
        self.assertEqual(self.fed.pending("a"), {})

    def test_a_destination_that_is_down_is_asked_again_next_round(self):
        # accept.stored: B stored it, wrote no override, and went down.
        self.interrupted("accept.stored")
        self.assertIsNone(self.fed.override("b", self.key.id))
        self.fed.down.add("b")
        repair = self.a.repair
        repair.startService()
        self.addCleanup(repair.stopService)
        self.assertIsNone(repair.pending)
        self.clock.advance(repair.first_round - 0.1)
        self.assertEqual(repair.rounds, 0, "not before the first round is due")
        self.clock.advance(0.1)
        self.assertEqual(repair.rounds, 1)
        self.assertEqual((repair.pending, repair.pending_at),
                         ({self.key.id: self.b.id}, self.clock.seconds()))
        self.assertEqual(self.fed.states(self.key.id), {"a": ACTIVE, "b": ACTIVE})
        self.fed.down.clear()
        self.clock.advance(repair.interval - 0.1)
        self.assertEqual(repair.rounds, 1, "not before the interval")
        self.clock.advance(0.1)
        self.assertEqual(repair.rounds, 2)
        self.assertEqual(self.fed.states(self.key.id), {"a": MOVED, "b": ACTIVE})
        self.assertEqual(self.fed.override("b", self.key.id), self.b.id)
        self.assertEqual((repair.finished, repair.pending), (1, {}))
        self.successResultOf(repair.stopService())
        self.clock.advance(repair.interval * 3)
        self.assertEqual(repair.rounds, 2, "no rounds once stopped")

    def test_a_move_to_a_bolt_no_longer_active_is_dropped(self):
        self.interrupted("reassign.journaled")
        self.successResultOf(self.b.own_row.publish(status="draining"))
        self.fed.spread()
        self.assertEqual(self.round(), {"finished": 0, "dropped": 1, "failed": 0})
        self.assertEqual(self.fed.states(self.key.id), {"a": ACTIVE})
        self.assertEqual(self.fed.pending("a"), {})
        self.assertEqual(self.a.repair.dropped, 1)
        self.assertTrue([e for e in self.warnings if "dropped" in e["log_format"]])

    def leave_a_copy_at_b(self):
        """B accepted the envoy (stored, claimed); A then moved it to C instead;
        gossip spread the overrides (C's is the newer)."""
        self.successResultOf(self.a.peers.call(self.b.id, "accept-envoy",
                                               self.fed.export("a", self.key.id)))
        self.fed.spread()
        self.successResultOf(self.a.reassigner.reassign(self.key.id, self.c.id))
        self.fed.spread()
        self.assertEqual(self.fed.states(self.key.id), {"a": MOVED, "b": ACTIVE, "c": ACTIVE})
        self.assertEqual(self.fed.override("b", self.key.id), self.c.id)
        self.steps.take()

    def test_a_copy_left_behind_goes_to_the_bolt_the_roster_names(self):
        self.leave_a_copy_at_b()
        # B's round finds its copy claimed by C, which holds it; once that has
        # lasted SETTLED seconds (no accept under way looks like it), B hands it over.
        self.assertEqual(self.round("b"), NOTHING)
        self.assertEqual(self.fed.states(self.key.id), {"a": MOVED, "b": ACTIVE, "c": ACTIVE})
        self.clock.advance(SETTLED - 1)
        self.assertEqual(self.round("b"), NOTHING, "not settled yet")
        self.clock.advance(1)
        self.assertEqual(self.round("b"), {"finished": 1, "dropped": 0, "failed": 0})
        self.assertEqual(self.fed.states(self.key.id), {"a": MOVED, "b": MOVED, "c": ACTIVE})
        self.assertEqual(self.b.fleet.index.get(self.key.id).redirect, self.c.redirect())
        # Nothing left to do anywhere.
        for name in "abc":
            self.assertEqual(self.round(name), NOTHING)

    def test_an_override_whose_bolt_does_not_hold_the_envoy_changes_nothing(self):
        # The roster names B, but B never stored the envoy: A's roster may be
        # the stale one, so A keeps it and warns, once.
        self.successResultOf(self.b.roster.write_override(self.key.id, self.b.id))
        self.fed.spread()
        for _ in range(3):
            self.assertEqual(self.round(), NOTHING)
            self.clock.advance(SETTLED)
        self.assertEqual(self.fed.states(self.key.id), {"a": ACTIVE})
        warned = [e for e in self.warnings if "does not hold it" in e["log_format"]]
        self.assertEqual(len(warned), 1)

    def test_a_copy_being_accepted_or_moved_here_is_left_alone(self):
        self.leave_a_copy_at_b()
        # An accept or a reassign of the envoy runs at B meanwhile.
        holding = defer.Deferred()
        held = self.b.reassigner.locks.run(self.key.id, lambda: holding)
        self.assertTrue(self.b.reassigner.busy(self.key.id))
        for _ in range(2):
            self.assertEqual(self.round("b"), NOTHING)
            self.clock.advance(SETTLED)
        self.assertEqual(self.fed.state("b", self.key.id), ACTIVE, "not while it is busy")
        holding.callback(None)
        self.successResultOf(held)
        self.assertEqual(self.round("b"), NOTHING, "settled afresh")
        self.clock.advance(SETTLED)
        self.assertEqual(self.round("b")["finished"], 1)
        self.assertEqual(self.fed.state("b", self.key.id), MOVED)

    def test_a_move_of_an_envoy_revoked_meanwhile_is_forgotten(self):
        self.interrupted("reassign.journaled")
        self.successResultOf(self.a.fleet.revoke(self.key.id))
        self.assertEqual(self.round(), {"finished": 0, "dropped": 0, "failed": 1})
        self.assertEqual(self.steps.take(), ["reassign.cancelled"])
        self.assertEqual(self.fed.pending("a"), {})
        self.assertEqual(self.fed.states(self.key.id), {"a": REVOKED})
        self.assertEqual(self.round(), NOTHING, "not tried again")

    def test_a_hand_over_that_does_not_answer_in_time_stays_pending(self):
        self.interrupted("reassign.journaled")
        release = self.b.store.hold(load_moves)  # B's accept-envoy waits on its store
        d = self.a.repair.round()
        self.assertNoResult(d)
        self.clock.advance(MOVE_TIMEOUT)  # the round gives up on it
        self.assertEqual(self.successResultOf(d), {"finished": 0, "dropped": 0, "failed": 1})
        self.assertEqual(self.fed.pending("a"), {self.key.id: self.b.id})
        self.assertFalse(self.a.reassigner.busy(self.key.id))
        release()  # B's accept ends after all; the next round finishes the move
        self.assertEqual(self.fed.states(self.key.id), {"a": ACTIVE, "b": ACTIVE})
        self.assertEqual(self.round()["finished"], 1)
        self.assertEqual(self.fed.states(self.key.id), {"a": MOVED, "b": ACTIVE})

    def test_one_round_at_a_time(self):
        self.interrupted("reassign.journaled")
        release = self.a.store.hold(load_moves)  # the round reads the pending moves
        repair = self.a.repair
        first = repair.round()
        self.assertNoResult(first)
        self.assertIsNone(self.successResultOf(repair.round()), "skipped: one is under way")
        self.assertEqual(repair.rounds, 1)
        release()
        self.assertEqual(self.successResultOf(first)["finished"], 1)
        self.assertEqual(self.fed.states(self.key.id), {"a": MOVED, "b": ACTIVE})

    def test_stopping_waits_for_the_round_and_starts_no_more_moves(self):
        self.interrupted("reassign.journaled")
        release = self.a.store.hold(load_moves)
        repair = self.a.repair
        round_ = repair.round()
        stopped = repair.stopService()
        self.assertNoResult(stopped)
        release()
        self.assertEqual(self.successResultOf(round_), {"finished": 0, "dropped": 0,
                                                        "failed": 1})
        self.successResultOf(stopped)
        self.assertEqual(self.fed.states(self.key.id), {"a": ACTIVE})
        self.assertEqual(self.fed.pending("a"), {self.key.id: self.b.id}, "for the next start")

    def test_no_roster_no_round(self):
        store = ImmediateStore()
        roster = LocalRoster(store, self.a.identity, self.clock)
        repair = HandoverRepair(self.a.id, roster, self.a.moves, self.a.reassigner,
                                self.a.peers, self.clock)
        self.assertIsNone(self.successResultOf(repair.round()))
        self.assertEqual((repair.rounds, store.jobs), (0, []))


class ScheduleTests(unittest.SynchronousTestCase):
    def test_soon_runs_a_round_only_once_rounds_are_due(self):
        clock = Clock()
        repair = HandoverRepair("a" * 20, None, None, None, None, clock, interval=30.0,
                                first_round=5.0)
        calls = []
        repair.round = lambda: calls.append(clock.seconds())
        repair.soon()
        self.assertEqual(calls, [], "not before the first round")
        repair.startService()
        clock.advance(4.9)
        self.assertEqual(calls, [])
        clock.advance(0.1)
        self.assertEqual(calls, [5.0])
        repair.soon()
        self.assertEqual(calls, [5.0, 5.0])
        clock.advance(30.0)
        self.assertEqual(calls, [5.0, 5.0, 35.0])
        repair.stopService()
        repair.soon()
        clock.advance(30.0)
        self.assertEqual(len(calls), 3)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopped_before_the_first_round(self):
        clock = Clock()
        repair = HandoverRepair("a" * 20, None, None, None, None, clock)
        repair.startService()
        repair.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])


class FailpointTests(unittest.SynchronousTestCase):
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


class LiveRepairTests(LiveFederation, unittest.TestCase):
    """Two real bolts: a reassign interrupted after the destination said yes
    is finished by the source's repair round, over real peer RPC."""

    def state(self, server, envoy_id):
        with contextlib.closing(sqlite3.connect(server.store.path)) as db:
            row = db.execute("SELECT state FROM envoys WHERE id = ?", (envoy_id,)).fetchone()
        return None if row is None else row[0]

    @defer.inlineCallbacks
    def test_an_interrupted_reassign_is_finished_by_the_repair(self):
        a, b = yield self.federate(("a", "b"))
        key = EnvoyKey("web1.a.example.com")
        token = yield a.enrollment_tokens.create()
        yield a.enrollment.register(*key.register_fields(token, int(reactor.seconds() * 1000)))
        repair = a.spanner.repair
        yield repair.stopService()  # no scheduled round before the interruption is seen
        steps = Steps(self)
        steps.crash_at("reassign.accepted")
        refused = yield self.assertFailure(a.spanner.admin.reassign(key.id, "b"), Refusal)
        self.assertEqual(refused.code, "action_failed")
        self.flushLoggedErrors(Crash)
        self.assertEqual((self.state(a, key.id), self.state(b, key.id)), (ACTIVE, ACTIVE))
        pending = yield a.store.run(load_moves)
        self.assertEqual({k: v[0] for k, v in pending.items()}, {key.id: b.identity.id})
        repair.startService()
        result = yield repair.round()
        self.assertEqual(result, {"finished": 1, "dropped": 0, "failed": 0})
        self.assertEqual((self.state(a, key.id), self.state(b, key.id)), (MOVED, ACTIVE))
        self.assertEqual((yield a.store.run(load_moves)), {})
        status = a.spanner.admin.status()["moves_pending"]
        self.assertEqual((status["count"], status["moves"]), (0, []))
        self.assertEqual(b.spanner.roster.current.override_of(key.id).bolt_id, b.identity.id)
