"""Envoy reassignment (``vigo.spanner.reassign``).

Unit tests first, with no server: bolts built in one process from their real
parts (``UnitFederation``: fleets, ``EnvoyMoves``, ``LocalRoster``s and
``Reassigner``s on ``ImmediateStore``s and one ``Clock``, peer calls routed
in-process through the real actions), every fake checked against its
interface. They cover the saga's steps at both ends, the per-envoy locks, the
asking side (``reassign_anywhere``) and the ``reassign`` / ``accept-envoy``
actions as thin adapters. Then three real bolts on loopback with a real envoy.

``UnitFederation`` and ``LiveFederation`` are shared with tests/test_drain.py
and tests/test_handover.py.
"""

import contextlib
import json
import random
import sqlite3

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests import test_spanner_membership as membership
from tests.events import rosters_of, until
from tests.fleetkit import HOSTCRATES, EnvoyConnections, EnvoyKey, RecordingConnection
from tests.peerkit import StubBolt
from vigo.api.responses import status_of
from vigo.config import Address, config_from_mapping
from vigo.fleet.enrollment import Enrollment
from vigo.fleet.enrollment_tokens import EnrollmentTokens
from vigo.fleet.fleet import Fleet
from vigo.fleet.hostcrates import Hostcrates
from vigo.fleet.index import ACTIVE, MOVED, REVOKED
from vigo.fleet.moves import EnvoyMoves, accept_envoy, set_moved
from vigo.fleet.ownership import Redirected, StandaloneOwnership
from vigo.fleet.view import BoltFleet
from vigo.identity import Identity
from vigo.interfaces import IBolt, IBoltFleet, IPeerAction, IPeerCaller
from vigo.interfaces.components import (
    IEnvoyMoves,
    ILocalRoster,
    IReassigner,
    IRowPublisher,
    IStore,
)
from vigo.interfaces.errors import (
    ActionError,
    ActionFailed,
    BadArguments,
    PeerError,
    PeerNoAnswer,
    PeerUnreachable,
    Refusal,
    from_wire,
    to_wire,
)
from vigo.plugins.vigo_reassign import AcceptEnvoy, Reassign
from vigo.server import build_server
from vigo.spanner import reassign as reassign_module
from vigo.spanner.bolt import Bolt
from vigo.spanner.drain import Drainer
from vigo.spanner.handover import HandoverRepair
from vigo.spanner.own_row import OwnRow
from vigo.spanner.peer.actions import load_actions, run_action
from vigo.spanner.peer.asking import refusal_of
from vigo.spanner.peer.pool import PeerClients
from vigo.spanner.reads import FleetReads
from vigo.spanner.reassign import (
    ACCEPT_FIELDS,
    DESTINATION_STEPS,
    REFUSED_BEFORE_STORING,
    SOURCE_STEPS,
    EnvoyLocks,
    Reassigner,
    Saga,
    Step,
    reassign_anywhere,
)
from vigo.spanner.roster.crdt import Roster, new_federation_id
from vigo.spanner.roster.local import LocalRoster
from vigo.spanner.roster.rows import AdmissionRow
from vigo.spanner.roster.store import save_roster
from vigo.testing.store import ImmediateStore

#: Every peer action, as a bolt loads them.
ACTIONS = load_actions()
#: When the unit federations' clock starts (any time: every timestamp comes from it).
EPOCH = 1_700_000_000.0

# -- a federation in one process ---------------------------------------------------------


def done(d):
    """The result of ``d``, which has fired: everything a ``UnitFederation``
    does runs at once. Its failure is raised."""
    outcome = []
    d.addBoth(outcome.append)
    if not outcome:
        raise AssertionError("%r has not fired" % (d,))
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


class Crash(Exception):
    """What a failpoint raises in these tests: the work stops right there, as
    a ``kill -9`` would stop it; what was written before it stays."""


class Steps:
    """The failpoints a hand-over (or a drain) reaches, in order.

    ``vigo.spanner.reassign`` passes failpoint ``<side>.<step>`` at each step
    of its saga (``vigo.spanner.drain`` at its own), so this is the step
    history of every hand-over a test runs. ``crash_at(name)`` makes the next
    hit of ``name`` raise ``Crash``.
    """

    def __init__(self, testcase, *modules):
        self.reached = []
        self._crashes = set()
        for module in modules or (reassign_module,):
            testcase.patch(module, "failpoint", self)

    def crash_at(self, name):
        self._crashes.add(name)

    def __call__(self, name):
        self.reached.append(name)
        if name in self._crashes:
            self._crashes.discard(name)
            raise Crash(name)

    def take(self):
        """The steps reached since the last ``take``."""
        reached, self.reached = self.reached, []
        return reached


#: A hand-over that goes through, step by step at both ends.
NORMAL_MOVE = ["reassign.journaled", "accept.stored", "accept.claimed", "reassign.accepted",
               "reassign.moved"]


@implementer(IPeerCaller)
class InProcessPeers:
    """The ``IPeerCaller`` of one bolt of a ``UnitFederation``.

    A call runs the real action at the named bolt, in-process, through
    ``run_action`` (its name and argument checks), with arguments and answers
    crossing as JSON and errors as the answer envelope carries them
    (``to_wire`` / ``from_wire``), as ``PeerClient.call`` raises them; a
    caller that stops waiting does not stop the action. A bolt
    named in ``federation.down`` is unreachable (the action does not run); one
    in ``federation.mute`` runs it, but its answer is lost (``PeerNoAnswer``).
    """

    def __init__(self, federation, caller_id):
        self._federation = federation
        self._caller_id = caller_id
        self.calls = []  # (bolt_id, action_name)

    def call(self, bolt_id, action_name, args, timeout=None):
        self.calls.append((bolt_id, action_name))
        federation = self._federation
        target = federation.by_id.get(bolt_id)
        if target is None or target.name in federation.down:
            return defer.fail(PeerUnreachable("bolt %s is not connected" % (bolt_id,)))
        d = run_action(target.bolt, ACTIONS, self._caller_id, action_name,
                       json.loads(json.dumps(args)))

        def answered(result):
            if target.name in federation.mute:
                raise PeerNoAnswer("bolt %s did not answer %s" % (bolt_id, action_name))
            return json.loads(json.dumps(result))

        def refused(failure):
            if target.name in federation.mute:
                raise PeerNoAnswer("bolt %s did not answer %s" % (bolt_id, action_name))
            failure.trap(PeerError)
            raise from_wire(to_wire(failure.value), "bolt %s" % (bolt_id,))

        # A caller's cancel (its timeout) stops its wait, as over the wire:
        # the action runs on at the called bolt.
        outer = defer.Deferred()

        def relay(result):
            if not outer.called:
                outer.callback(result)

        d.addCallbacks(answered, refused).addBoth(relay)
        return outer


class UnitBolt:
    """One bolt's parts, wired as ``vigo.server.spanner`` wires them, with no
    server: no ports, no threads, no gossip. Its store is an ``ImmediateStore``
    (every write has happened when the call returns); its peers are the other
    bolts of the same ``UnitFederation``."""

    def __init__(self, federation, identity, name, number, patterns):
        clock = federation.clock
        self.federation = federation
        self.identity = identity
        self.id = identity.id
        self.name = name
        self.patterns = list(patterns)
        self.address = Address("127.0.0.%d" % (number,), 1530)
        self.addresses = {"envoy": "127.0.0.%d:1530" % (number,),
                          "api": "127.0.0.%d:8443" % (number,),
                          "peer": "127.0.0.%d:1533" % (number,)}
        self.store = ImmediateStore()
        self.roster = LocalRoster(self.store, identity, clock)
        self.fleet = Fleet(self.store, identity, Hostcrates.from_data(HOSTCRATES), clock, 15.0, 3)
        self.moves = EnvoyMoves(self.fleet, self.store, clock, lambda: self.address)
        self.tokens = EnrollmentTokens(self.store, identity, clock, lambda: self.address)
        self.enrollment = Enrollment(
            self.fleet, self.store, identity, StandaloneOwnership(identity, lambda: self.address),
            clock, lambda: self.address, self.tokens)
        self.peers = InProcessPeers(federation, self.id)
        self.own_row = OwnRow(identity, self.roster, self.peers, clock, lambda: self.addresses,
                              name, patterns)
        self.reassigner = Reassigner(self.id, lambda: name, self.moves, self.roster, self.peers)
        self.drainer = Drainer(self.id, self.roster, self.store, self.own_row, self.moves,
                               self.reassigner, clock, concurrency=4)
        self.repair = HandoverRepair(self.id, self.roster, self.moves, self.reassigner,
                                     self.peers, clock)
        self.bolt = Bolt(identity, lambda: name, clock, self.roster, ACTIONS, self.peers,
                         fleet=BoltFleet(self.fleet, clock, self.moves.endpoint),
                         enrollment=self.enrollment, reassigner=self.reassigner,
                         drainer=self.drainer, rows=self.own_row)

    def redirect(self):
        """The redirect an envoy moved here is given."""
        return {"address": str(self.address), "server_id": self.id,
                "fingerprint": self.identity.fingerprint}


class UnitFederation:
    """Bolts ``names`` (the first founded it, and admitted the others) in one
    process, on one ``Clock``; each holds the same roster to begin with.

    There is no gossip: a bolt's roster changes only by what it does itself
    (an override it writes, its own row) until ``spread()`` merges every
    bolt's roster into every other's.
    """

    def __init__(self, names=("a", "b", "c"), patterns=None):
        self.clock = Clock()
        self.clock.advance(EPOCH)
        self.down = set()
        self.mute = set()
        self.names = tuple(names)
        patterns = patterns or {name: ["*.%s.example.com" % (name,)] for name in names}
        self.bolts, self.by_id = {}, {}
        for number, name in enumerate(names, 1):
            bolt = UnitBolt(self, Identity.generate(), name, number, patterns[name])
            self.bolts[name] = self.by_id[bolt.id] = bolt
        founder = self.bolts[names[0]]
        federation_id = new_federation_id()
        roster = Roster.found(founder.identity, federation_id, founder.name, founder.addresses,
                              founder.patterns)
        for name in names[1:]:
            bolt = self.bolts[name]
            roster.add_row(AdmissionRow.applicant(
                bolt.identity, federation_id, name, bolt.addresses, bolt.patterns,
                "invite-" + name, founder.id).countersign(founder.identity))
        for bolt in self.bolts.values():
            done(bolt.roster.become(roster.copy()))

    def __getitem__(self, name):
        return self.bolts[name]

    def now_ms(self):
        return int(self.clock.seconds() * 1000)

    def enroll(self, name, hostname):
        """Enroll a new envoy at bolt ``name``; its ``EnvoyKey``."""
        bolt, key = self.bolts[name], EnvoyKey(hostname)
        token = done(bolt.tokens.create())
        done(bolt.enrollment.register(*key.register_fields(token, self.now_ms())))
        return key

    def state(self, name, envoy_id):
        """The envoy's state in bolt ``name``'s database, or None."""
        rows = self.bolts[name].store.query("SELECT state FROM envoys WHERE id = ?", envoy_id)
        return rows[0][0] if rows else None

    def states(self, envoy_id):
        """``{bolt name: state}`` of the envoy, from each bolt's database."""
        states = {name: self.state(name, envoy_id) for name in self.names}
        return {name: state for name, state in states.items() if state is not None}

    def row(self, name, envoy_id):
        rows = self.bolts[name].store.query(
            "SELECT state, redirect, hostname, last_seq, token_id FROM envoys WHERE id = ?",
            envoy_id)
        return rows[0] if rows else None

    def pending(self, name):
        """``{envoy_id: to}`` of bolt ``name``'s pending moves, from its database."""
        return {envoy_id: to for envoy_id, (to, _) in
                done(self.bolts[name].moves.pending_moves()).items()}

    def override(self, name, envoy_id):
        """The bolt id bolt ``name``'s roster gives the envoy to, or None."""
        record = self.bolts[name].roster.current.override_of(envoy_id)
        return None if record is None else record.bolt_id

    def spread(self):
        """What gossip does, at once: every bolt merges every other's roster."""
        for source in self.bolts.values():
            for bolt in self.bolts.values():
                if bolt is not source:
                    done(bolt.roster.merge(source.roster.current.parts()))

    def export(self, name, envoy_id):
        """The ``accept-envoy`` arguments for the envoy, as bolt ``name`` holds it."""
        fields = done(self.bolts[name].moves.export(envoy_id))
        return {field: fields[field] for field in ACCEPT_FIELDS}


# -- real bolts on loopback -------------------------------------------------------------------


def live_config(directory, name, group, port, patterns):
    return config_from_mapping({
        "server": {"data_dir": directory, "hostname": "localhost",
                   "envoy_listen": "127.0.0.1:0", "api_listen": "127.0.0.1:0"},
        "spanner": {"mode": "spanner", "bolt_name": name, "patterns": patterns,
                    "peer_listen": "127.0.0.1:0",
                    "gossip": {"group": group, "port": port, "interface": "127.0.0.1"}},
    })


class LiveFederation:
    """Real bolts (``build_server``) in this process on loopback, sharing one
    gossip group: a mixin for ``unittest.TestCase``. ``patterns`` maps a bolt
    name to its patterns (default ``*.<name>.example.com``)."""

    patterns = {}
    timeout = 60

    def setUp(self):
        self.group = "239.192.%d.%d" % (random.randrange(1, 255), random.randrange(1, 255))
        self.port = random.randrange(20000, 60000)

    @defer.inlineCallbacks
    def start(self, name, directory=None):
        """Start bolt ``name`` (on ``directory``, to restart one); once ready."""
        directory = directory or self.mktemp()
        patterns = self.patterns.get(name, ["*.%s.example.com" % (name,)])
        server = build_server(live_config(directory, name, self.group, self.port, patterns),
                              reactor)
        server.directory = directory
        server.startService()
        self.addCleanup(lambda: server.stopService() if server.running else None)
        yield server.ready
        return server

    bolt = start  # what tests/test_spanner_membership.federate starts bolts with

    def federate(self, names=("a", "b", "c")):
        """Start bolts ``names``, found a federation at the first, join the
        others through it, and wait until every roster holds them all."""
        return membership.federate(self, names)


# -- the parts, and the fakes, against their interfaces ------------------------------------


class InterfaceTests(unittest.SynchronousTestCase):
    def test_the_real_parts_and_the_fakes_provide_their_interfaces(self):
        fed = UnitFederation(("a", "b"))
        a = fed["a"]
        verifyObject(IReassigner, a.reassigner)
        verifyObject(IEnvoyMoves, a.moves)
        verifyObject(ILocalRoster, a.roster)
        verifyObject(IRowPublisher, a.own_row)
        verifyObject(IStore, a.store)
        verifyObject(IPeerCaller, a.peers)
        verifyObject(IPeerCaller, AnsweringPeers({}))
        verifyObject(IPeerCaller, PeerClients(fed.clock, a.identity, a.roster.locate))
        verifyObject(IBolt, a.bolt)
        verifyObject(IBoltFleet, a.bolt.fleet())
        verifyObject(IBolt, RecordingBolt())

    def test_the_actions_are_discovered_and_take_what_the_saga_sends(self):
        self.assertIsInstance(ACTIONS["reassign"], Reassign)
        self.assertIsInstance(ACTIONS["accept-envoy"], AcceptEnvoy)
        for name in ("reassign", "accept-envoy"):
            verifyObject(IPeerAction, ACTIONS[name])
        self.assertEqual(set(AcceptEnvoy.argument_schema), set(ACCEPT_FIELDS))


# -- the saga's steps and the locks -------------------------------------------------------------


class SagaTests(unittest.SynchronousTestCase):
    def test_a_step_out_of_order_is_refused(self):
        saga = Saga("reassign", SOURCE_STEPS)
        self.assertRaises(RuntimeError, saga.advance, Step.MOVED)
        self.assertRaises(RuntimeError, saga.advance, Step.ACCEPTED)
        self.assertRaises(RuntimeError, saga.advance, Step.PENDING)
        self.assertEqual((saga.step, saga.history), (Step.STARTED, [Step.STARTED]))
        accept = Saga("accept", DESTINATION_STEPS)
        self.assertRaises(RuntimeError, accept.advance, Step.CLAIMED)

    def test_the_steps_of_a_move_and_its_ends(self):
        steps = Steps(self)
        saga = Saga("reassign", SOURCE_STEPS)
        for step in (Step.JOURNALED, Step.ACCEPTED, Step.MOVED):
            saga.advance(step)
        self.assertEqual(saga.history, [Step.STARTED, Step.JOURNALED, Step.ACCEPTED, Step.MOVED])
        self.assertEqual(steps.take(), ["reassign.journaled", "reassign.accepted",
                                        "reassign.moved"])
        # Moved, done before, cancelled and pending are ends: nothing follows.
        for end in (Step.MOVED, Step.DONE_BEFORE, Step.CANCELLED, Step.PENDING):
            self.assertNotIn(end, SOURCE_STEPS)
        cancelled = Saga("reassign", SOURCE_STEPS)
        cancelled.advance(Step.JOURNALED)
        cancelled.advance(Step.CANCELLED)
        self.assertRaises(RuntimeError, cancelled.advance, Step.ACCEPTED)
        accept = Saga("accept", DESTINATION_STEPS)
        accept.advance(Step.STORED)
        accept.advance(Step.CLAIMED)
        self.assertEqual(steps.take(), ["reassign.journaled", "reassign.cancelled",
                                        "accept.stored", "accept.claimed"])

    def test_only_refusals_given_before_storing_cancel(self):
        # What accept-envoy refuses before it stores anything (EnvoyMoves.accept,
        # the crossing check); every other failure may come after it stored.
        self.assertEqual(REFUSED_BEFORE_STORING, {"malformed", "key_mismatch", "revoked",
                                                  "hostname_taken", "moving"})


class EnvoyLocksTests(unittest.SynchronousTestCase):
    def test_one_envoy_at_a_time_others_meanwhile(self):
        locks, ran = EnvoyLocks(), []
        first, second = defer.Deferred(), defer.Deferred()

        def work(name, d):
            def run():
                ran.append(name)
                return d
            return run

        one = locks.run("e1", work("first", first))
        two = locks.run("e1", work("second", second))
        other = locks.run("e2", work("other", defer.succeed("x")))
        self.assertEqual(ran, ["first", "other"])
        self.assertEqual(self.successResultOf(other), "x")
        self.assertTrue(locks.busy("e1"))
        self.assertFalse(locks.busy("e2"), "a lock no one holds is forgotten")
        first.errback(Crash("first"))  # a failure ends the turn too
        self.failureResultOf(one, Crash)
        self.assertEqual(ran, ["first", "other", "second"])
        self.assertTrue(locks.busy("e1"))
        second.callback("done")
        self.assertEqual(self.successResultOf(two), "done")
        self.assertFalse(locks.busy("e1"))


class ReassignTests(unittest.SynchronousTestCase):
    """Both ends of a hand-over, on three bolts in one process."""

    def setUp(self):
        self.fed = UnitFederation()
        self.a, self.b, self.c = (self.fed[name] for name in "abc")
        self.key = self.fed.enroll("a", "web1.dc1.example.com")
        self.record = self.a.fleet.index.get(self.key.id)
        self.record.last_seq = 7
        self.steps = Steps(self)

    def reassign(self, to="b", at="a", envoy=None):
        return self.fed[at].reassigner.reassign(envoy or self.key.id, self.fed[to].id)

    def refused(self, d, code):
        """The ``Refusal`` ``d`` failed with; its code is ``code``."""
        refusal = self.failureResultOf(d, Refusal).value
        self.assertEqual(refusal.code, code, refusal.reason)
        return refusal

    def test_a_move_takes_every_step_and_redirects_the_envoy_now(self):
        connection = RecordingConnection()
        self.record.connection = connection
        answer = self.successResultOf(self.reassign(envoy="web1.dc1.example.com"))
        self.assertEqual(self.steps.take(), NORMAL_MOVE)
        self.assertEqual(answer, {"envoy_id": self.key.id, "hostname": "web1.dc1.example.com",
                                  "from": self.a.id, "to": self.b.id, "changed": True,
                                  "delivered": "now"})
        # A: moved, with the redirect B gave, the note ended in the same write.
        state, redirect, _, _, token_id = self.fed.row("a", self.key.id)
        self.assertEqual((state, json.loads(redirect)), (MOVED, self.b.redirect()))
        self.assertEqual(self.fed.pending("a"), {})
        # B: active, with what A held (hostname, sequence, token), and claimed.
        self.assertEqual(self.fed.row("b", self.key.id),
                         (ACTIVE, None, "web1.dc1.example.com", 7, token_id))
        self.assertEqual(self.fed.override("b", self.key.id), self.b.id)
        self.assertIsNone(self.fed.override("a", self.key.id), "only the destination claims")
        # The connected envoy was sent to B at once.
        dropped = connection.dropped
        self.assertIsInstance(dropped, Redirected)
        self.assertEqual((dropped.address, dropped.server_id, dropped.fingerprint),
                         (str(self.b.address), self.b.id, self.b.identity.fingerprint))
        self.assertIsNone(self.record.connection)
        self.assertIsNone(self.a.fleet.index.by_name("web1.dc1.example.com"))
        self.assertEqual(self.b.fleet.index.by_name("web1.dc1.example.com").id, self.key.id)
        self.assertFalse(self.a.reassigner.busy(self.key.id))

    def test_the_envoy_attaches_and_checks_in_at_the_destination(self):
        answer = self.successResultOf(self.reassign())
        self.assertEqual(answer["delivered"], "next_attach")
        now = self.fed.now_ms()
        redirected = self.assertRaises(
            Redirected, self.a.fleet.attach, RecordingConnection(), self.key.id, self.a.id,
            now, self.key.attach_signature(self.a.id, now))
        self.assertEqual(redirected.server_id, self.b.id)
        record = self.b.fleet.attach(RecordingConnection(), self.key.id, self.b.id, now,
                                     self.key.attach_signature(self.b.id, now))
        self.assertEqual(record.state, ACTIVE)
        self.key.seq = 7  # what the envoy used at A
        self.b.fleet.checkin(record, self.key.checkin_body(now))
        self.assertEqual(record.last_seq, 8)

    def test_the_move_survives_a_restart_of_the_source(self):
        self.successResultOf(self.reassign())
        fleet = Fleet(self.a.store, self.a.identity, self.a.fleet.hostcrates, self.fed.clock,
                      15.0, 3)
        self.successResultOf(fleet.load())
        record = fleet.index.get(self.key.id)
        self.assertEqual((record.state, record.redirect), (MOVED, self.b.redirect()))
        now = self.fed.now_ms()
        self.assertRaises(Redirected, fleet.attach, RecordingConnection(), self.key.id,
                          self.a.id, now, self.key.attach_signature(self.a.id, now))

    def test_again_is_a_no_op(self):
        self.successResultOf(self.reassign())
        claimed = self.b.roster.current.override_of(self.key.id)
        self.steps.take()
        again = self.successResultOf(self.reassign())
        self.assertEqual(self.steps.take(), ["reassign.done_before"])
        self.assertEqual((again["changed"], again["to"], again["delivered"]),
                         (False, self.b.id, "next_attach"))
        self.assertIs(self.b.roster.current.override_of(self.key.id), claimed)
        self.assertEqual(self.fed.states(self.key.id), {"a": MOVED, "b": ACTIVE})

    def test_accept_envoy_is_idempotent_and_claims_once(self):
        fields = self.fed.export("a", self.key.id)
        saves = self.b.store.jobs.count(save_roster)  # the roster's own, and others'
        first = self.successResultOf(self.a.peers.call(self.b.id, "accept-envoy", fields))
        second = self.successResultOf(self.a.peers.call(self.b.id, "accept-envoy", fields))
        self.assertEqual(first, second)
        self.assertEqual(first, dict(self.b.redirect(), envoy_id=self.key.id, name="b"))
        self.assertEqual(len(self.b.fleet.index), 1)
        self.assertEqual(self.fed.override("b", self.key.id), self.b.id)
        self.assertEqual(self.b.store.jobs.count(save_roster) - saves, 1,
                         "the override written once")
        self.assertEqual(self.steps.take(), ["accept.stored", "accept.claimed"] * 2)

    def test_a_crash_at_any_step_is_finished_by_running_it_again(self):
        # Where each crash leaves the hand-over: a crash at B fails A's call
        # (accept-envoy broke there), and A leaves the move pending.
        crashes = {
            "reassign.journaled": NORMAL_MOVE[:1],
            "accept.stored": NORMAL_MOVE[:2] + ["reassign.pending"],
            "accept.claimed": NORMAL_MOVE[:3] + ["reassign.pending"],
            "reassign.accepted": NORMAL_MOVE[:4],
        }
        for step, reached in crashes.items():
            fed = UnitFederation()
            key = fed.enroll("a", "web1.dc1.example.com")
            self.steps.crash_at(step)
            self.failureResultOf(fed["a"].reassigner.reassign(key.id, fed["b"].id),
                                 Crash, ActionFailed)
            self.flushLoggedErrors(Crash)  # accept-envoy at B logs what broke it
            self.assertEqual(self.steps.take(), reached)
            self.assertEqual(fed.states(key.id)["a"], ACTIVE, step)
            self.assertEqual(fed.pending("a"), {key.id: fed["b"].id}, step)
            answer = self.successResultOf(fed["a"].reassigner.reassign(key.id, fed["b"].id))
            self.assertTrue(answer["changed"], step)
            self.assertEqual(fed.states(key.id), {"a": MOVED, "b": ACTIVE}, step)
            self.assertEqual(fed.pending("a"), {}, step)
            self.assertEqual(fed.override("b", key.id), fed["b"].id, step)
            self.steps.take()

    def test_and_back_again(self):
        self.successResultOf(self.reassign())
        answer = self.successResultOf(self.reassign(to="a", at="b"))
        self.assertTrue(answer["changed"])
        self.assertEqual((self.fed.row("a", self.key.id)[:2], self.fed.state("b", self.key.id)),
                         ((ACTIVE, None), MOVED))
        self.assertEqual(self.a.fleet.index.by_name("web1.dc1.example.com").id, self.key.id)
        self.assertEqual(self.fed.override("a", self.key.id), self.a.id)

    def test_refusals_at_the_source_change_nothing(self):
        self.refused(self.reassign(to="a"), "same_bolt")
        self.refused(self.reassign(envoy="nope"), "not_found")
        self.assertEqual(self.steps.take(), [])
        self.successResultOf(self.a.fleet.revoke(self.key.id))
        refusal = self.refused(self.reassign(), "not_active")
        self.assertIn("revoked", refusal.reason)
        self.assertEqual(self.steps.take(), ["reassign.cancelled"])
        self.assertEqual(self.fed.states(self.key.id), {"a": REVOKED})
        self.assertEqual(self.fed.pending("a"), {})
        self.assertEqual(self.a.peers.calls, [])

    def test_a_refusal_before_storing_cancels_the_note(self):
        # B has another envoy with that hostname: refused there, kept here.
        self.fed.enroll("b", "web1.dc1.example.com")
        refusal = self.refused(self.reassign(), "hostname_taken")
        self.assertIsInstance(refusal, ActionError)  # B's refusal, as it crossed
        # It says whose refusal it is: "here" in B's reason is B, not A.
        self.assertTrue(refusal.reason.startswith(
            "bolt %s refused envoy %s from bolt %s: " % (
                self.fed["b"].id, self.key.id, self.fed["a"].id)), refusal.reason)
        self.assertEqual(self.steps.take(), ["reassign.journaled", "reassign.cancelled"])
        self.assertEqual(self.fed.row("a", self.key.id)[:2], (ACTIVE, None))
        self.assertIsNone(self.fed.state("b", self.key.id))
        self.assertEqual(self.fed.pending("a"), {})

    def test_an_unreachable_destination_leaves_the_move_pending(self):
        self.fed.down.add("b")
        refusal = self.refused(self.reassign(), "unreachable")
        self.assertIn("the move is pending", refusal.reason)
        self.assertEqual(self.steps.take(), ["reassign.journaled", "reassign.pending"])
        self.assertEqual(self.fed.pending("a"), {self.key.id: self.b.id})
        self.assertEqual(self.fed.states(self.key.id), {"a": ACTIVE})
        # B is back: running it again finishes it.
        self.fed.down.clear()
        self.successResultOf(self.reassign())
        self.assertEqual(self.fed.states(self.key.id), {"a": MOVED, "b": ACTIVE})
        self.assertEqual(self.fed.pending("a"), {})

    def test_a_lost_answer_leaves_the_move_pending(self):
        # B stored and claimed the envoy, but its answer never came back.
        self.fed.mute.add("b")
        refusal = self.refused(self.reassign(), "unreachable")
        self.assertIn("did not answer", refusal.reason)
        self.assertEqual(self.steps.take(), ["reassign.journaled", "accept.stored",
                                             "accept.claimed", "reassign.pending"])
        self.assertEqual(self.fed.states(self.key.id), {"a": ACTIVE, "b": ACTIVE})
        self.assertEqual(self.fed.pending("a"), {self.key.id: self.b.id})

    def test_a_wrong_answer_leaves_the_move_pending(self):
        wrong = dict(self.c.redirect(), envoy_id=self.key.id)  # C answers for B
        reassigner = Reassigner(self.a.id, lambda: "a", self.a.moves, self.a.roster,
                                AnsweringPeers(wrong))
        refusal = self.refused(reassigner.reassign(self.key.id, self.b.id), "bad_answer")
        self.assertIn(self.c.id, refusal.reason)
        self.assertEqual(self.steps.take(), ["reassign.journaled", "reassign.accepted",
                                             "reassign.pending"])
        self.assertEqual(self.fed.states(self.key.id), {"a": ACTIVE})
        self.assertEqual(self.fed.pending("a"), {self.key.id: self.b.id})

    def test_a_crossing_move_is_refused(self):
        # A is handing the envoy to B (a note, and B has a copy); B, whose
        # roster is behind, hands it back to A: A refuses before storing
        # anything, so B's move ends and A's stays.
        self.successResultOf(self.a.moves.begin_move(self.key.id, self.b.id))
        self.successResultOf(self.b.moves.accept(self.fed.export("a", self.key.id)))
        refusal = self.refused(self.reassign(to="a", at="b"), "moving")
        self.assertEqual(self.steps.take(), ["reassign.journaled", "reassign.cancelled"])
        self.assertIn(self.b.id, refusal.reason)
        self.assertEqual((self.fed.pending("a"), self.fed.pending("b")),
                         ({self.key.id: self.b.id}, {}))
        self.assertEqual(self.fed.states(self.key.id), {"a": ACTIVE, "b": ACTIVE})
        # From a third bolt it is an ordinary, idempotent accept.
        answer = self.successResultOf(self.c.peers.call(self.a.id, "accept-envoy",
                                                        self.fed.export("a", self.key.id)))
        self.assertEqual(answer["envoy_id"], self.key.id)

    def test_two_reassigns_of_one_envoy_run_one_after_the_other(self):
        release = self.b.store.hold(accept_envoy)  # B's accept is under way
        to_b = self.reassign(to="b")
        to_c = self.reassign(to="c")
        self.assertNoResult(to_b)
        self.assertNoResult(to_c)
        self.assertTrue(self.a.reassigner.busy(self.key.id))
        self.assertTrue(self.b.reassigner.busy(self.key.id))
        self.assertEqual(self.steps.take(), ["reassign.journaled"])
        self.assertEqual(self.a.peers.calls, [(self.b.id, "accept-envoy")], "C not asked yet")
        self.assertEqual(self.fed.pending("a"), {self.key.id: self.b.id})
        release()
        self.assertTrue(self.successResultOf(to_b)["changed"])
        # The second saw what the first left: moved to B, nothing to hand to C.
        refusal = self.refused(to_c, "not_active")
        self.assertIn("(to bolt %s)" % (self.b.id,), refusal.reason)
        self.assertEqual(self.steps.take(), NORMAL_MOVE[1:] + ["reassign.cancelled"])
        self.assertEqual(self.fed.states(self.key.id), {"a": MOVED, "b": ACTIVE})
        self.assertEqual(self.fed.pending("a"), {})
        self.assertFalse(self.a.reassigner.busy(self.key.id))

    def test_a_revoke_during_the_move_is_not_undone(self):
        forward = self.a.peers.call

        def call(bolt_id, action, args, timeout=None):
            d = forward(bolt_id, action, args)
            if action == "accept-envoy":  # the operator revokes it at A meanwhile
                d.addCallback(lambda answer: self.a.fleet.revoke(self.key.id).addCallback(
                    lambda _: answer))
            return d

        self.patch(self.a.peers, "call", call)
        self.refused(self.reassign(), "not_active")
        self.assertEqual(self.fed.states(self.key.id), {"a": REVOKED, "b": ACTIVE})
        self.assertEqual(self.a.fleet.index.get(self.key.id).state, REVOKED)
        self.assertEqual(self.fed.pending("a"), {self.key.id: self.b.id}, "for the repair")

    def test_a_cancelled_move_still_brings_memory_in_line(self):
        release = self.a.store.hold(set_moved)
        d = self.a.moves.move(self.key.id, self.b.redirect())
        d.cancel()  # a caller's timeout
        self.failureResultOf(d, defer.CancelledError)
        release()  # the write commits after all
        self.assertEqual((self.fed.state("a", self.key.id), self.record.state), (MOVED, MOVED))

    def test_accept_refuses_a_key_that_is_not_the_envoys(self):
        fields = dict(self.fed.export("a", self.key.id), public_key="A" * 43 + "=")
        refusal = self.refused(self.a.peers.call(self.b.id, "accept-envoy", fields),
                               "malformed")
        self.assertIsInstance(refusal, ActionError)
        self.assertIsNone(self.fed.state("b", self.key.id))
        self.assertEqual(self.steps.take(), [])

    def test_accept_refuses_an_envoy_revoked_there(self):
        self.successResultOf(self.reassign())
        self.successResultOf(self.b.fleet.revoke(self.key.id))
        self.refused(self.a.peers.call(self.b.id, "accept-envoy",
                                       self.fed.export("a", self.key.id)), "revoked")
        self.assertEqual(self.fed.state("b", self.key.id), REVOKED)


@implementer(IPeerCaller)
class AnsweringPeers:
    """An ``IPeerCaller`` that answers every call with ``answer``."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def call(self, bolt_id, action_name, args, timeout=None):
        self.calls.append((bolt_id, action_name, args))
        return defer.succeed(dict(self.answer))


# -- the asking side --------------------------------------------------------------------------


class ReassignAnywhereTests(unittest.SynchronousTestCase):
    """``reassign_anywhere``, asked at C through C's real ``FleetReads``."""

    def setUp(self):
        self.fed = UnitFederation()
        self.key = self.fed.enroll("a", "web1.a.example.com")

    def anywhere(self, key, to="b", at="c"):
        asker = self.fed[at]
        reads = FleetReads(asker.bolt, self.fed.clock,
                           lambda: [(bolt.id, bolt.name) for bolt in self.fed.bolts.values()])
        return reassign_anywhere(reads, asker.bolt, self.fed.clock, asker.roster, key,
                                 self.fed[to].id)

    def refused(self, d, code):
        refusal = self.failureResultOf(d, Refusal).value
        self.assertEqual(refusal.code, code, refusal.reason)
        return refusal

    def test_the_bolt_holding_the_envoy_hands_it_over(self):
        answer = self.successResultOf(self.anywhere("web1.a.example.com"))
        self.assertEqual(answer, {"envoy_id": self.key.id, "hostname": "web1.a.example.com",
                                  "from": self.fed["a"].id, "from_name": "a",
                                  "to": self.fed["b"].id, "to_name": "b", "changed": True,
                                  "delivered": "next_attach"})
        self.assertEqual(self.fed.states(self.key.id), {"a": MOVED, "b": ACTIVE})
        again = self.successResultOf(self.anywhere(self.key.id))
        self.assertEqual((again["changed"], again["from"], again["to_name"]), (False, None, "b"))

    def test_only_an_active_bolt_takes_envoys(self):
        self.successResultOf(self.fed["b"].own_row.publish(status="draining"))
        self.fed.spread()
        refusal = self.refused(self.anywhere(self.key.id), "bolt_not_active")
        self.assertIn("draining", refusal.reason)
        self.assertEqual(self.fed["c"].peers.calls, [], "nothing asked")

    def test_an_envoy_active_on_two_bolts_is_a_conflict(self):
        self.successResultOf(self.fed["c"].moves.accept(self.fed.export("a", self.key.id)))
        self.refused(self.anywhere(self.key.id), "conflict")
        self.assertEqual(self.fed.states(self.key.id), {"a": ACTIVE, "c": ACTIVE})

    def test_a_holder_that_does_not_answer_may_hold_it(self):
        self.fed.down.add("a")
        refusal = self.refused(self.anywhere(self.key.id), "unreachable")
        self.assertIn(self.fed["a"].id, refusal.reason)

    def test_an_envoy_active_nowhere_or_unknown(self):
        self.successResultOf(self.fed["a"].fleet.revoke(self.key.id))
        self.assertIn("revoked", self.refused(self.anywhere(self.key.id), "not_active").reason)
        self.refused(self.anywhere("web9.a.example.com"), "not_found")

    def test_the_sources_refusal_keeps_its_code(self):
        self.fed.enroll("b", "web1.a.example.com")
        self.refused(self.anywhere(self.key.id), "hostname_taken")
        self.assertEqual(self.fed.pending("a"), {})


class RefusalOfTests(unittest.SynchronousTestCase):
    """A refusal relayed from the bolt that gave it keeps its code, names that bolt once."""

    def refused(self, code, reason, bolt_id="src"):
        error = self.assertRaises(Refusal, refusal_of,
                                  Failure(ActionError(reason, code=code)), bolt_id, "reassign")
        return error.code, status_of(error), error.reason

    def test_names_the_bolt_once(self):
        self.assertEqual(self.refused("not_active", "envoy e1 is revoked on bolt src"),
                         ("not_active", 409, "envoy e1 is revoked on bolt src"))
        self.assertEqual(self.refused("hostname_taken", "web1 is already enrolled here"),
                         ("hostname_taken", 409, "web1 is already enrolled here (on bolt src)"))
        self.assertEqual(self.refused("not_found", "no envoy 'x' on bolt src")[:2],
                         ("not_found", 404))

    def test_a_refusal_without_a_code_is_the_actions_failure(self):
        code, status, reason = self.refused(None, "no hand-overs here")
        self.assertEqual((code, status), ("action_failed", 502))
        self.assertIn("no hand-overs here", reason)


# -- the actions: adapters over IBolt -------------------------------------------------------------


class RecordingBolt(StubBolt):
    """An ``IBolt`` whose hand-overs record their calls and answer ``answer``,
    or fail with ``refusal``."""

    def __init__(self):
        self.calls = []
        self.refusal = None

    def _answer(self, *call):
        self.calls.append(call)
        if self.refusal is not None:
            return defer.fail(self.refusal)
        return defer.succeed({"ok": True})

    def reassign(self, envoy, to):
        return self._answer("reassign", envoy, to)

    def accept_envoy(self, caller_id, fields):
        return self._answer("accept_envoy", caller_id, fields)


class ActionTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.bolt = RecordingBolt()
        fed = UnitFederation(("a",))
        fed.enroll("a", "web1.a.example.com")
        self.fields = fed.export("a", fed["a"].moves.active_envoys()[0][0])

    def run_action(self, name, args, caller="c" * 20):
        return run_action(self.bolt, ACTIONS, caller, name, args)

    def test_reassign_asks_the_bolt(self):
        answer = self.successResultOf(self.run_action("reassign", {"envoy": "web1",
                                                                   "to": "b" * 20}))
        self.assertEqual(answer, {"ok": True})
        self.assertEqual(self.bolt.calls, [("reassign", "web1", "b" * 20)])

    def test_accept_envoy_passes_the_caller_and_the_fields(self):
        self.successResultOf(self.run_action("accept-envoy", self.fields))
        self.assertEqual(self.bolt.calls, [("accept_envoy", "c" * 20, self.fields)])

    def test_a_refusal_keeps_its_code(self):
        self.bolt.refusal = Refusal("not_active", "envoy e1 is revoked")
        error = self.failureResultOf(self.run_action("reassign", {"envoy": "e1",
                                                                  "to": "b" * 20}),
                                     ActionError).value
        self.assertEqual((error.code, error.reason), ("not_active", "envoy e1 is revoked"))

    def test_bad_arguments_reach_nothing(self):
        self.failureResultOf(self.run_action("accept-envoy", dict(self.fields,
                                                                  applied_version="zz")),
                             BadArguments)
        self.failureResultOf(self.run_action("reassign", {"envoy": "e1"}), BadArguments)
        self.assertEqual(self.bolt.calls, [])


# -- three real bolts --------------------------------------------------------------------------


class RedirectWatch(EnvoyConnections):
    """``EnvoyConnections`` that also says when a redirect arrives."""

    def __init__(self):
        EnvoyConnections.__init__(self)
        self._waiting = []

    def envoy_redirected(self, protocol, redirect):
        EnvoyConnections.envoy_redirected(self, protocol, redirect)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(redirect)

    def redirected(self, deadline=30.0):
        """A Deferred of the first redirect (at once if one came already)."""
        if self.redirects:
            return defer.succeed(self.redirects[0])
        d = defer.Deferred()
        self._waiting.append(d)
        return d.addTimeout(deadline, reactor)


class LiveReassignTests(LiveFederation, unittest.TestCase):
    """Three real bolts in spanner mode on loopback; a real envoy over TLS."""

    def _row(self, server, envoy_id):
        """The envoy's ``(state, redirect)`` in the server's database, or None."""
        with contextlib.closing(sqlite3.connect(server.store.path)) as db:
            return db.execute("SELECT state, redirect FROM envoys WHERE id = ?",
                              (envoy_id,)).fetchone()

    @defer.inlineCallbacks
    def test_reassign_from_a_third_bolt(self):
        from vigo.envoy import main as envoy
        from vigo.envoy.state import EnvoyState

        connections = RedirectWatch()
        a, b, c = yield self.federate()
        self.addCleanup(connections.close_all)  # cleanups run last first: before the bolts stop

        # An envoy enrolls and attaches at A, and checks in there.
        token = yield a.enrollment_tokens.create(uses=1)
        state = EnvoyState.open(self.mktemp(), create=True)
        address = "127.0.0.1:%d" % (a.advertised.bound("envoy"),)
        protocol = yield envoy.register(reactor, state, "web1.a.example.com", token,
                                        address=address, listener=connections)
        protocol, _ = yield envoy.attach(reactor, state, protocol=protocol,
                                         listener=connections)
        envoy_id = state.envoy_id
        seq = state.last_seq + 1
        answer, _ = yield protocol.checkin(seq, state.bundle_version)
        self.assertIn(answer, ("bundle", "no_change"))

        # Asked at C, by hostname, to go to B (by name).
        moved = yield c.spanner.admin.reassign("web1.a.example.com", "b")
        self.assertEqual((moved["envoy_id"], moved["from"], moved["to"], moved["changed"],
                          moved["delivered"], moved["from_name"], moved["to_name"]),
                         (envoy_id, a.identity.id, b.identity.id, True, "now", "a", "b"))
        self.assertEqual(self._row(a, envoy_id)[0], "moved")
        self.assertEqual(json.loads(self._row(a, envoy_id)[1])["server_id"], b.identity.id)
        self.assertEqual(self._row(b, envoy_id), ("active", None))
        self.assertIsNone(self._row(c, envoy_id))
        self.assertEqual(b.spanner.roster.current.override_of(envoy_id).bolt_id, b.identity.id)
        servers = (a, b, c)
        yield until(lambda: all(s.spanner.roster.current.override_of(envoy_id) is not None
                                for s in servers),
                    *rosters_of(*servers), what="the override gossiped to every bolt")
        owner = c.spanner.admin.owner("web1.a.example.com", envoy_id)
        self.assertEqual((owner["bolt_id"], owner["by"]), (b.identity.id, "override"))

        # The envoy's connection to A was sent a Redirect to B.
        redirect = yield connections.redirected()
        self.assertEqual(redirect.server_id, b.identity.id)

        # It attaches (following A's redirect at Attach) and checks in at B, same id.
        protocol, attached = yield envoy.attach(reactor, state, listener=connections)
        self.assertEqual((attached.envoy_id, state.envoy_id, state.server_id),
                         (envoy_id, envoy_id, b.identity.id))
        answer, _ = yield protocol.checkin(seq + 1, state.bundle_version)
        self.assertIn(answer, ("bundle", "no_change"))
        self.assertEqual(b.fleet.index.get(envoy_id).last_seq, seq + 1)

        # Again: nothing to do. To a bolt that does not exist: refused.
        again = yield c.spanner.admin.reassign(envoy_id, b.identity.id)
        self.assertEqual((again["changed"], again["to"]), (False, b.identity.id))
        self.assertEqual(self._row(b, envoy_id), ("active", None))
        refused = yield self.assertFailure(c.spanner.admin.reassign(envoy_id, "nowhere"),
                                           Refusal)
        self.assertEqual((refused.code, status_of(refused)), ("not_found", 404))
        self.assertIn("no bolt 'nowhere'", refused.reason)

        # A removed bolt takes no envoys.
        removal = a.spanner.roster.current.copy()
        removal.remove(a.identity, c.identity.id, int(reactor.seconds() * 1000))
        yield a.spanner.roster.commit(removal)
        refused = yield self.assertFailure(a.spanner.admin.reassign(envoy_id, "c"), Refusal)
        self.assertEqual((refused.code, status_of(refused)), ("bolt_not_active", 409))
        self.assertIn("removed", refused.reason)
