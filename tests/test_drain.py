"""Draining a bolt (``vigo.spanner.drain``).

The ``Drainer`` is built directly, as each bolt of a ``UnitFederation`` (real
fleets, moves, rosters, rows and reassigners in one process, on one
``Clock``) wires it, or over a ``GatedReassigner`` that holds each hand-over
until the test lets it go: its states and their transitions, its refusals
(each changes nothing), restarts and ``finished()``. Then ``ask_drain`` (the
asking side), the ``drain`` / ``drain-status`` actions as thin adapters, and
three real bolts on loopback: drained, removed, and a drain resumed after a
restart.
"""

import contextlib
import sqlite3

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.events import rosters_of, until
from tests.fleetkit import EnvoyKey
from tests.test_reassign import ACTIONS, LiveFederation, Steps, UnitFederation
from vigo.api.responses import status_of
from vigo.fleet.index import ACTIVE, MOVED
from vigo.identity import Identity
from vigo.interfaces import IBolt, IPeerAction, IPeerCaller
from vigo.interfaces.components import IDrainer, IReassigner
from vigo.interfaces.errors import ActionError, PeerError, Refusal
from vigo.plugins.vigo_drain import Drain, DrainStatus
from vigo.spanner import drain as drain_module
from vigo.spanner.bolt import Bolt
from vigo.spanner.drain import (
    MOVE_TIMEOUT,
    TRANSITIONS,
    Drainer,
    DrainState,
    ask_drain,
    load_drain,
    save_drain,
)
from vigo.spanner.peer.actions import run_action
from vigo.spanner.peer.asking import CALL_TIMEOUT
from vigo.spanner.roster.local import LocalRoster
from vigo.testing.store import ImmediateStore

#: A owns *.a.example.com; without A, B owns them (a less specific pattern).
#: Only B covers *.b.example.com: drained to their owners, those would have none.
PATTERNS = {"a": ["*.a.example.com"], "b": ["*.b.example.com", "*.example.com"],
            "c": ["*.c.example.com"]}


@implementer(IReassigner)
class GatedReassigner:
    """An ``IReassigner`` that holds each hand-over until the test lets it go
    (``release``), then runs it on the real one."""

    def __init__(self, real):
        self._real = real
        self.asked = []  # (envoy, to), in order
        self._gates = []

    def reassign(self, envoy, to):
        self.asked.append((envoy, to))
        gate = defer.Deferred()
        self._gates.append(gate)
        return gate.addCallback(lambda _: self._real.reassign(envoy, to))

    def accept(self, caller_id, fields):
        return self._real.accept(caller_id, fields)

    def busy(self, envoy_id):
        return self._real.busy(envoy_id)

    @property
    def waiting(self):
        return sum(1 for gate in self._gates if not gate.called)

    def release(self, count=1):
        """Let the ``count`` longest-waiting hand-overs run."""
        for gate in [gate for gate in self._gates if not gate.called][:count]:
            gate.callback(None)

    def release_all(self):
        """Let every hand-over run, those that begin meanwhile too."""
        while self.waiting:
            self.release()


@implementer(IPeerCaller)
class SilentPeers:
    """An ``IPeerCaller`` whose calls are never answered."""

    def __init__(self):
        self.calls = []

    def call(self, bolt_id, action_name, args, timeout=None):
        self.calls.append((bolt_id, action_name, args))
        return defer.Deferred()


def drainer_of(bolt, reassigner=None, concurrency=2):
    """A ``Drainer`` of ``UnitBolt`` ``bolt``, wired as the server wires it (a
    bolt that restarted gets a new one on the same store and roster)."""
    return Drainer(bolt.id, bolt.roster, bolt.store, bolt.own_row, bolt.moves,
                   reassigner or bolt.reassigner, bolt.federation.clock, concurrency)


class DrainTestCase(unittest.SynchronousTestCase):
    def setUp(self):
        self.fed = UnitFederation(patterns=PATTERNS)
        self.a, self.b, self.c = (self.fed[name] for name in "abc")
        self.clock = self.fed.clock
        self.ids = [self.fed.enroll("a", "web%d.a.example.com" % (i,)).id for i in range(5)]
        self.steps = Steps(self, drain_module)

    def refused(self, d, code):
        refusal = self.failureResultOf(d, Refusal).value
        self.assertEqual(refusal.code, code, refusal.reason)
        return refusal

    def held_drain(self, bolt):
        """The drain's destination that ``bolt``'s database holds, or None."""
        return self.successResultOf(bolt.store.run(load_drain))

    def where(self):
        """``{bolt name: state}`` of A's five envoys (all alike), from the databases."""
        states = {tuple(sorted(self.fed.states(envoy_id).items())) for envoy_id in self.ids}
        self.assertEqual(len(states), 1, states)
        return dict(states.pop())


class InterfaceTests(DrainTestCase):
    def test_the_drainer_and_the_fakes_provide_their_interfaces(self):
        verifyObject(IDrainer, self.a.drainer)
        verifyObject(IDrainer, FakeDrainer())
        verifyObject(IReassigner, GatedReassigner(self.a.reassigner))
        verifyObject(IPeerCaller, SilentPeers())
        for name in ("drain", "drain-status"):
            verifyObject(IPeerAction, ACTIONS[name])
        self.assertIsInstance(ACTIONS["drain"], Drain)
        self.assertIsInstance(ACTIONS["drain-status"], DrainStatus)


class StateTests(DrainTestCase):
    """Idle, running, done or failed, only along ``TRANSITIONS``."""

    def test_the_transitions(self):
        self.assertEqual(TRANSITIONS, {
            DrainState.IDLE: {DrainState.RUNNING},
            DrainState.RUNNING: {DrainState.DONE, DrainState.FAILED},
            DrainState.DONE: {DrainState.RUNNING},
            DrainState.FAILED: {DrainState.RUNNING},
        })
        drainer = drainer_of(self.a)
        self.assertIs(drainer.state, DrainState.IDLE)
        self.assertRaises(RuntimeError, drainer._enter, DrainState.DONE)
        self.assertIs(drainer.state, DrainState.IDLE)

    def test_idle_then_running_then_done(self):
        gated = GatedReassigner(self.a.reassigner)
        drainer = drainer_of(self.a, gated, concurrency=2)
        seq = self.a.roster.row(self.a.id).seq
        idle = drainer.status()
        self.assertEqual((idle["state"], idle["status"], idle["remaining"], idle["total"],
                          idle["bolt_id"]), ("idle", "active", 5, 0, self.a.id))
        self.successResultOf(drainer.finished())  # no drain runs

        started = self.successResultOf(drainer.start(self.b.id))
        self.assertEqual((started["state"], started["to"], started["total"], started["status"],
                          started["remaining"]), ("running", self.b.id, 5, "draining", 5))
        self.assertIs(drainer.state, DrainState.RUNNING)
        self.assertEqual(self.steps.take(), ["drain.draining"])
        # Turned draining first: its own row, the next seq; the destination kept.
        self.assertEqual(self.a.roster.row(self.a.id).seq, seq + 1)
        self.assertEqual(self.held_drain(self.a), (self.b.id,))
        finished = drainer.finished()
        self.assertEqual(gated.waiting, 2, "two at a time")
        gated.release()
        self.assertEqual((drainer.status()["moved"], drainer.status()["remaining"]), (1, 4))
        self.assertEqual(gated.waiting, 2, "the next one began")
        self.assertNoResult(finished)
        gated.release_all()
        self.successResultOf(finished)
        done = drainer.status()
        self.assertEqual((done["state"], done["total"], done["moved"], done["failed"],
                          done["remaining"], done["errors"]), ("done", 5, 5, 0, 0, []))
        self.assertIs(drainer.state, DrainState.DONE)
        self.assertEqual(self.steps.take(), ["drain.moved"] * 5)
        self.assertEqual(self.where(), {"a": MOVED, "b": ACTIVE})
        self.assertEqual(sorted(gated.asked), sorted((i, self.b.id) for i in self.ids))

    def test_a_failed_drain_may_be_started_again(self):
        self.fed.down.add("b")
        answer = self.successResultOf(self.a.drainer.start(self.b.id))
        self.assertEqual((answer["state"], answer["failed"]), ("failed", 5))
        self.assertIs(self.a.drainer.state, DrainState.FAILED)
        self.successResultOf(self.a.drainer.finished())
        errors = self.a.drainer.status()["errors"]
        self.assertEqual(len(errors), 5)
        self.assertIn("cannot be reached", errors[0])
        self.assertEqual(self.where(), {"a": ACTIVE})
        self.assertEqual(set(self.fed.pending("a")), set(self.ids), "pending, for the repair")
        # B is back: started again, the drain finishes.
        self.fed.down.clear()
        again = self.successResultOf(self.a.drainer.start(self.b.id))
        self.assertEqual((again["state"], again["moved"], again["failed"], again["errors"]),
                         ("done", 5, 0, []))
        self.assertEqual(self.where(), {"a": MOVED, "b": ACTIVE})
        self.assertEqual(self.fed.pending("a"), {})

    def test_a_done_drain_may_be_started_again(self):
        drainer = self.c.drainer  # C holds no envoys: done at once
        first = self.successResultOf(drainer.start(self.b.id))
        self.assertEqual((first["state"], first["total"], first["remaining"]), ("done", 0, 0))
        self.successResultOf(drainer.finished())
        seq = self.c.roster.row(self.c.id).seq
        for to in (self.b.id, None):  # not "already draining"
            again = self.successResultOf(drainer.start(to))
            self.assertEqual((again["state"], again["to"]), ("done", to))
        self.assertEqual(self.c.roster.row(self.c.id).seq, seq, "turned draining once")
        # Restarted, with nothing left to move, it says done, not idle.
        restarted = drainer_of(self.c)
        self.assertEqual((restarted.status()["state"], restarted.state),
                         ("done", DrainState.IDLE))

    def test_a_move_that_does_not_end_in_time_fails(self):
        gated = GatedReassigner(self.a.reassigner)  # never released
        drainer = drainer_of(self.a, gated, concurrency=2)
        self.successResultOf(drainer.start(self.b.id))
        for _ in range(3):
            self.clock.advance(MOVE_TIMEOUT)
        status = drainer.status()
        self.assertEqual((status["state"], status["moved"], status["failed"]), ("failed", 0, 5))
        self.assertEqual(len(gated.asked), 5)
        self.successResultOf(drainer.finished())

    def test_stop_moves_no_more(self):
        gated = GatedReassigner(self.a.reassigner)
        drainer = drainer_of(self.a, gated, concurrency=1)
        self.successResultOf(drainer.start(self.b.id))
        stopped = drainer.stop()
        self.assertNoResult(stopped)  # the move under way ends first
        gated.release()
        self.successResultOf(stopped)
        status = drainer.status()
        self.assertEqual((status["state"], status["moved"], status["failed"], status["remaining"]),
                         ("failed", 1, 0, 4))
        self.assertEqual(len(gated.asked), 1)

    def test_a_stop_during_a_start_stops_it_before_it_turns_draining(self):
        drainer = drainer_of(self.a)
        release = self.a.store.hold(save_drain)
        seq = self.a.roster.row(self.a.id).seq
        starting = drainer.start(self.b.id)
        stopped = drainer.stop()
        self.assertNoResult(stopped)  # the start under way ends first
        release()
        refused = self.failureResultOf(starting, Refusal).value
        self.assertEqual(refused.code, "stopping")
        self.successResultOf(stopped)
        self.assertEqual(self.a.roster.row(self.a.id).seq, seq, "not published draining")
        self.assertEqual((drainer.state, self.a.roster.status_of(self.a.id)),
                         (DrainState.IDLE, "active"))

    def test_a_stopped_drainer_refuses_until_it_runs_again(self):
        drainer = drainer_of(self.a)
        self.successResultOf(drainer.stop())
        seq = self.a.roster.row(self.a.id).seq
        refused = self.failureResultOf(drainer.start(self.b.id), Refusal).value
        self.assertEqual((refused.code, refused.retryable), ("stopping", True))
        self.assertEqual(self.a.roster.row(self.a.id).seq, seq, "nothing published")
        drainer.startService()  # the bolt runs again: the drain moves every envoy
        status = self.successResultOf(drainer.start(self.b.id))
        self.assertEqual((status["state"], status["moved"]), ("done", 5))

    def test_each_envoy_goes_to_its_owner_without_this_bolt(self):
        # The roster gives one envoy to C; the others have B's *.example.com.
        self.successResultOf(self.c.roster.write_override(self.ids[0], self.c.id))
        self.fed.spread()
        status = self.successResultOf(self.a.drainer.start())
        self.assertEqual((status["state"], status["to"], status["moved"]), ("done", None, 5))
        self.assertEqual(self.fed.states(self.ids[0]), {"a": MOVED, "c": ACTIVE})
        for envoy_id in self.ids[1:]:
            self.assertEqual(self.fed.states(envoy_id), {"a": MOVED, "b": ACTIVE})

    def test_two_starts_at_once_start_one(self):
        gated = GatedReassigner(self.a.reassigner)
        drainer = drainer_of(self.a, gated)
        seq = self.a.roster.row(self.a.id).seq
        release = self.a.store.hold(save_drain)  # the first start is writing
        first, second = drainer.start(self.b.id), drainer.start(self.b.id)
        self.assertNoResult(first)
        self.assertNoResult(second)
        release()
        answers = [self.successResultOf(first), self.successResultOf(second)]
        self.assertEqual([answer["to"] for answer in answers], [self.b.id] * 2)
        self.assertEqual(self.a.roster.row(self.a.id).seq, seq + 1, "published once")
        self.assertEqual(self.steps.take(), ["drain.draining"])
        refusal = self.refused(drainer.start(self.c.id), "conflict")
        self.assertIn(self.b.id, refusal.reason)
        gated.release_all()
        self.assertEqual(drainer.status()["state"], "done")


class RefusalTests(DrainTestCase):
    """A refused drain changes nothing: no row, no destination, no moves."""

    def assertUnchanged(self, bolt, drainer):
        self.assertEqual(bolt.roster.row(bolt.id).seq, 1)
        self.assertEqual(bolt.roster.status_of(bolt.id), "active")
        self.assertIsNone(self.held_drain(bolt))
        self.assertNotIn(save_drain, bolt.store.jobs)
        self.assertEqual((drainer.state, drainer.status()["state"]), (DrainState.IDLE, "idle"))
        self.assertEqual(bolt.peers.calls, [])
        self.assertEqual(self.steps.take(), [])

    def test_not_a_member(self):
        roster = LocalRoster(ImmediateStore(), self.a.identity, self.clock)
        drainer = Drainer(self.a.id, roster, self.a.store, self.a.own_row, self.a.moves,
                          self.a.reassigner, self.clock)
        self.refused(drainer.start(), "not_member")
        self.assertUnchanged(self.a, self.a.drainer)

    def test_to_itself_or_to_a_bolt_that_is_not_active(self):
        self.refused(self.a.drainer.start(self.a.id), "same_bolt")
        self.assertIn("unknown", self.refused(self.a.drainer.start("x" * 20),
                                              "bolt_not_active").reason)
        self.successResultOf(self.c.own_row.publish(status="draining"))
        self.fed.spread()
        self.assertIn("draining", self.refused(self.a.drainer.start(self.c.id),
                                               "bolt_not_active").reason)
        self.assertUnchanged(self.a, self.a.drainer)

    def test_a_removed_bolt_drains_no_more(self):
        removal = self.a.roster.current.copy()
        removal.remove(self.b.identity, self.a.id, self.fed.now_ms())
        self.successResultOf(self.a.roster.commit(removal))
        self.refused(self.a.drainer.start(self.b.id), "removed")
        self.assertIsNone(self.held_drain(self.a))
        self.assertEqual(self.a.peers.calls, [])

    def test_a_drain_that_would_strand_envoys_is_refused_before_anything_changes(self):
        for i in range(4):
            self.fed.enroll("b", "web%d.b.example.com" % (i,))
        refusal = self.refused(self.b.drainer.start(), "no_owner")
        self.assertIn("4 envoy(s)", refusal.reason)
        self.assertIn("web0.b.example.com, web1.b.example.com, web2.b.example.com, ...",
                      refusal.reason)
        self.assertIn("--to BOLT", refusal.reason)
        self.assertUnchanged(self.b, self.b.drainer)
        # To one bolt: fine.
        status = self.successResultOf(self.b.drainer.start(self.c.id))
        self.assertEqual((status["state"], status["moved"]), ("done", 4))


class ResumeTests(DrainTestCase):
    """A bolt restarted while draining goes on (``resume``), as its wiring asks."""

    def turn_draining(self, to):
        self.successResultOf(self.a.store.run(save_drain, to, 0))
        self.successResultOf(self.a.own_row.publish(status="draining"))

    def test_a_restarted_bolt_goes_on_to_the_same_bolt(self):
        self.turn_draining(self.c.id)
        restarted = drainer_of(self.a)
        self.assertIs(restarted.state, DrainState.IDLE)
        self.successResultOf(restarted.resume())
        self.successResultOf(restarted.finished())
        status = restarted.status()
        self.assertEqual((status["state"], status["to"], status["moved"]), ("done", self.c.id, 5))
        self.assertEqual(self.where(), {"a": MOVED, "c": ACTIVE})
        self.assertEqual(self.steps.take(), ["drain.moved"] * 5, "not published again")

    def test_a_destination_gone_meanwhile_means_each_envoys_owner(self):
        self.turn_draining(self.c.id)
        self.successResultOf(self.c.own_row.publish(status="draining"))
        self.fed.spread()
        restarted = drainer_of(self.a)
        self.successResultOf(restarted.resume())
        self.assertEqual((restarted.status()["state"], restarted.status()["to"]), ("done", None))
        self.assertEqual(self.where(), {"a": MOVED, "b": ACTIVE})

    def test_nothing_to_resume(self):
        self.successResultOf(self.a.drainer.resume())  # active
        self.assertIs(self.a.drainer.state, DrainState.IDLE)
        self.successResultOf(self.c.own_row.publish(status="draining"))
        self.successResultOf(self.c.drainer.resume())  # draining, holding no envoys
        self.assertIs(self.c.drainer.state, DrainState.IDLE)
        self.assertNotIn(load_drain, self.a.store.jobs + self.c.store.jobs)


class AskDrainTests(DrainTestCase):
    """``ask_drain``: checked at the asking bolt (C), run at the draining one."""

    def ask(self, bolt, to=None, caller=None):
        c = self.c
        return ask_drain(caller or c.bolt, self.clock, c.roster, self.fed[bolt].id,
                         None if to is None else self.fed[to].id)

    def test_asked_anywhere_it_runs_there(self):
        answer = self.successResultOf(self.ask("a", to="b"))
        self.assertEqual((answer["bolt_id"], answer["name"], answer["to"], answer["state"]),
                         (self.a.id, "a", self.b.id, "done"))
        self.assertEqual(self.c.peers.calls, [(self.a.id, "drain")])
        self.assertEqual(self.where(), {"a": MOVED, "b": ACTIVE})

    def test_refused_at_the_asking_bolt(self):
        self.refused(self.ask("a", to="a"), "same_bolt")
        self.successResultOf(self.b.own_row.publish(status="draining"))
        self.fed.spread()
        self.refused(self.ask("a", to="b"), "bolt_not_active")
        removal = self.c.roster.current.copy()
        removal.remove(self.c.identity, self.a.id, self.fed.now_ms())
        self.successResultOf(self.c.roster.commit(removal))
        self.refused(self.ask("a"), "removed")
        self.assertEqual(self.c.peers.calls, [], "nothing asked")
        self.assertEqual(self.a.roster.status_of(self.a.id), "active")

    def test_the_drainers_refusal_keeps_its_code(self):
        self.fed.enroll("b", "web0.b.example.com")
        refusal = self.refused(self.ask("b"), "no_owner")
        self.assertIn("--to BOLT", refusal.reason)

    def test_a_bolt_that_cannot_be_reached_or_does_not_answer(self):
        self.fed.down.add("a")
        self.refused(self.ask("a"), "unreachable")
        silent = SilentPeers()
        caller = Bolt(self.c.identity, lambda: "c", self.clock, self.c.roster, ACTIONS, silent)
        d = self.ask("a", caller=caller)
        self.clock.advance(CALL_TIMEOUT)
        self.assertIn("in time", self.refused(d, "unreachable").reason)
        self.assertEqual(silent.calls, [(self.a.id, "drain", {})])

    def test_the_status_is_asked_there(self):
        self.fed.enroll("b", "web0.b.example.com")
        status = self.successResultOf(self.c.peers.call(self.b.id, "drain-status", {}))
        self.assertEqual((status["state"], status["remaining"], status["bolt_id"]),
                         ("idle", 1, self.b.id))


# -- the actions: adapters over IBolt ------------------------------------------------------------


@implementer(IDrainer)
class FakeDrainer:
    """Records the drains asked of it; refuses with ``refuse`` when set."""

    def __init__(self):
        self.started = []
        self.refuse = None

    def start(self, to=None):
        if self.refuse is not None:
            return defer.fail(self.refuse)
        self.started.append(to)
        return defer.succeed({"state": "running", "to": to})

    def status(self):
        return {"state": "done", "moved": 3}

    def resume(self):
        return defer.succeed(None)

    def stop(self):
        return defer.succeed(None)


class ActionTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.drainer = FakeDrainer()
        self.bolt = self.bolt_with(drainer=self.drainer)
        verifyObject(IBolt, self.bolt)

    def bolt_with(self, **parts):
        """A real ``Bolt`` over the given parts, and nothing else."""
        identity, clock = Identity.generate(), Clock()
        return Bolt(identity, lambda: "a", clock, LocalRoster(ImmediateStore(), identity, clock),
                    ACTIONS, SilentPeers(), **parts)

    def run_action(self, name, args, bolt=None):
        bolt = bolt or self.bolt
        return run_action(bolt, ACTIONS, "c" * 20, name, args)

    def test_drain_starts_the_drainer(self):
        answer = self.successResultOf(self.run_action("drain", {"to": "c" * 20}))
        self.assertEqual(answer, {"state": "running", "to": "c" * 20})
        self.successResultOf(self.run_action("drain", {}))
        self.assertEqual(self.drainer.started, ["c" * 20, None])
        status = self.successResultOf(self.run_action("drain-status", {}))
        self.assertEqual(status, {"state": "done", "moved": 3})

    def test_a_refusal_keeps_its_code(self):
        self.drainer.refuse = Refusal("bolt_not_active", "bolt c is draining")
        error = self.failureResultOf(self.run_action("drain", {}), ActionError).value
        self.assertEqual((error.code, error.reason), ("bolt_not_active", "bolt c is draining"))

    def test_a_bolt_with_no_drainer_refuses(self):
        bolt = self.bolt_with()
        self.failureResultOf(self.run_action("drain", {}, bolt), ActionError)
        self.failureResultOf(self.run_action("drain-status", {}, bolt), ActionError)


# -- three real bolts -------------------------------------------------------------------------------


class LiveDrainTests(LiveFederation, unittest.TestCase):
    """Three real bolts; envoys enrolled at A are drained to B (or C), then A is removed."""

    patterns = PATTERNS

    @defer.inlineCallbacks
    def enroll(self, server, count, domain="a.example.com"):
        ids = []
        for i in range(count):
            key = EnvoyKey("web%d.%s" % (i, domain))
            token = yield server.enrollment_tokens.create()
            yield server.enrollment.register(
                *key.register_fields(token, int(reactor.seconds() * 1000)))
            ids.append(key.id)
        return ids

    def states(self, servers, envoy_id):
        """``{bolt name: state}`` of one envoy, read from each bolt's database."""
        out = {}
        for name, server in servers.items():
            with contextlib.closing(sqlite3.connect(server.store.path)) as db:
                row = db.execute("SELECT state FROM envoys WHERE id = ?",
                                 (envoy_id,)).fetchone()
            if row is not None:
                out[name] = row[0]
        return out

    @defer.inlineCallbacks
    def test_drain_then_remove(self):
        a, b, c = yield self.federate()
        servers = {"a": a, "b": b, "c": c}
        ids = yield self.enroll(a, 20)
        a.spanner.drainer.concurrency = 4
        idle = yield c.spanner.admin.drain_status("a")
        self.assertEqual((idle["state"], idle["remaining"], idle["status"]),
                         ("idle", 20, "active"))

        # Removing a bolt that holds envoys is refused.
        refused = yield self.assertFailure(c.spanner.admin.remove_bolt("a"), Refusal)
        self.assertEqual((refused.code, status_of(refused)), ("not_drained", 409))
        refused = yield self.assertFailure(c.spanner.admin.remove_bolt("c"), Refusal)
        self.assertEqual(refused.code, "self")
        refused = yield self.assertFailure(c.spanner.admin.drain("a", to="a"), Refusal)
        self.assertEqual(refused.code, "same_bolt")

        # Asked at C: A drains; every envoy goes to B, its owner without A.
        started = yield c.spanner.admin.drain("a")
        self.assertEqual((started["bolt_id"], started["name"]), (a.identity.id, "a"))
        self.assertEqual(a.spanner.roster.status_of(a.identity.id), "draining")
        yield a.spanner.drainer.finished()
        status = yield c.spanner.admin.drain_status("a")
        self.assertEqual((status["state"], status["total"], status["moved"], status["failed"],
                          status["remaining"], status["errors"]),
                         ("done", 20, 20, 0, 0, []))
        for envoy_id in ids:
            self.assertEqual(self.states(servers, envoy_id), {"a": "moved", "b": "active"})
        yield until(lambda: all(s.spanner.roster.status_of(a.identity.id) == "draining"
                                for s in servers.values()),
                    *rosters_of(a, b, c), what="the draining row gossiped to every bolt")
        # New enrollments of A's hostnames go to B now.
        self.assertEqual(c.spanner.admin.owner("web99.a.example.com")["bolt_id"],
                         b.identity.id)

        # A, once it holds its own removal, says so (in its log, once).
        said = []

        def observe(event):
            if "removed from the federation" in str(event.get("hint", "")):
                said.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        # Asked at C: A is removed; every other bolt learns it, and refuses A.
        removed = yield c.spanner.admin.remove_bolt("a")
        self.assertEqual((removed["removed"], removed["changed"], removed["forced"]),
                         (True, True, False))
        self.assertTrue(c.spanner.roster.is_removed(a.identity.id))
        yield until(lambda: b.spanner.roster.is_removed(a.identity.id), *rosters_of(b),
                    what="the removal gossiped to B")
        again = yield b.spanner.admin.remove_bolt(a.identity.id)
        self.assertEqual(again["changed"], False)
        for _ in range(2):  # if A has not pulled it yet, it has now
            yield a.spanner.roster.merge(c.spanner.roster.current.parts())
        self.assertEqual(len(said), 1)
        status = a.spanner.admin.status()
        self.assertEqual(status["state"], "removed")
        self.assertIn("removed from the federation", status["hint"])
        for peer in (b, c):
            failure = yield self.assertFailure(
                a.spanner.bolt.call(peer.identity.id, "drain-status", {}), PeerError)
            self.assertIn(failure.code, ("not_member", "unreachable"), failure.reason)

    @defer.inlineCallbacks
    def test_drain_to_a_bolt_and_resume_after_a_restart(self):
        a, b, c = yield self.federate()
        servers = {"a": a, "b": b, "c": c}
        ids = yield self.enroll(a, 6)
        # A turns draining towards C and stops before it moves anything.
        yield a.store.run(save_drain, c.identity.id, 0)
        yield a.spanner.own_row.publish(status="draining")
        yield a.stopService()
        a = servers["a"] = yield self.start("a", a.directory)
        # Started again, it resumed the drain before it said it was ready.
        yield a.spanner.drainer.finished()
        status = yield a.spanner.admin.drain_status("a")
        self.assertEqual((status["state"], status["to"], status["moved"], status["remaining"]),
                         ("done", c.identity.id, 6, 0), status)
        for envoy_id in ids:
            self.assertEqual(self.states(servers, envoy_id), {"a": "moved", "c": "active"})
