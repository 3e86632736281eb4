"""Envoy reassignment: the ``reassign`` and ``accept-envoy`` actions with real
fleets and fake bolts, then three real bolts on loopback with a real envoy."""

import json
import random
import sqlite3

from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from tests.fleetkit import EnvoyConnections, EnvoyKey, FleetKit, RecordingConnection
from tests.peerkit import StubBolt
from vigo.fleet.fleet import Fleet
from vigo.fleet.index import ACTIVE, MOVED
from vigo.fleet.refusal import Redirected
from vigo.fleet.view import BoltFleet
from vigo.interfaces import IBolt, IBoltFleet, IPeerAction
from vigo.interfaces.errors import ActionError, PeerUnreachable
from vigo.plugins.vigo_reassign import AcceptEnvoy, Reassign
from vigo.spanner.peer.actions import load_actions, run_action

ACTIONS = {"reassign": Reassign(), "accept-envoy": AcceptEnvoy()}


class FakeBolt(StubBolt):
    """A bolt over a real fleet whose calls run the target's actions in-process."""

    def __init__(self, federation, kit, name):
        self.federation = federation
        self.kit = kit
        self.id = kit.identity.id
        self.name = name
        self.overrides = []
        self.bolt_fleet = BoltFleet(kit.fleet, kit.clock, lambda: kit.address)

    def now(self):
        return self.kit.clock.seconds()

    def fleet(self):
        return self.bolt_fleet

    def enrollment(self):
        return self.kit.enrollment

    def write_override(self, envoy_id, bolt_id):
        self.overrides.append((envoy_id, bolt_id))
        return defer.succeed(None)

    def call(self, bolt_id, action_name, args):
        target = self.federation.bolts.get(bolt_id)
        if target is None or target.name in self.federation.down:
            return defer.fail(PeerUnreachable("bolt %s is down" % (bolt_id,)))
        return run_action(target, ACTIONS, self.id, action_name, args)


class Federation:
    def __init__(self, testcase, names=("a", "b", "c")):
        self.kits = {name: FleetKit(testcase) for name in names}
        self.bolts = {}
        self.down = set()
        for name, kit in self.kits.items():
            self.bolts[kit.identity.id] = FakeBolt(self, kit, name)

    def bolt(self, name):
        return self.bolts[self.kits[name].identity.id]

    def row(self, name, envoy_id):
        return sqlite3.connect(self.kits[name].store.path).execute(
            "SELECT state, redirect, hostname, last_seq, token_id FROM envoys WHERE id = ?",
            (envoy_id,)).fetchone()


class ActionTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.fed = Federation(self)
        self.a, self.b = self.fed.kits["a"], self.fed.kits["b"]
        self.key, _ = yield defer.ensureDeferred(self.a.enroll(EnvoyKey("web1.dc1.example.com")))
        self.record = self.a.fleet.index.get(self.key.id)
        self.record.last_seq = 7

    def reassign(self, to="b", at="a", envoy=None):
        bolt = self.fed.bolt(at)
        return run_action(bolt, ACTIONS, bolt.id, "reassign",
                          {"envoy": envoy or self.key.id, "to": self.fed.kits[to].identity.id})

    def test_interfaces_and_discovery(self):
        for action in ACTIONS.values():
            verifyObject(IPeerAction, action)
        verifyObject(IBolt, self.fed.bolt("a"))
        verifyObject(IBoltFleet, self.fed.bolt("a").fleet())
        loaded = load_actions()
        self.assertIsInstance(loaded["reassign"], Reassign)
        self.assertIsInstance(loaded["accept-envoy"], AcceptEnvoy)

    @defer.inlineCallbacks
    def test_reassign_moves_the_envoy_and_redirects_it_now(self):
        connection = RecordingConnection()
        self.record.connection = connection
        answer = yield self.reassign(envoy="web1.dc1.example.com")
        b_id = self.b.identity.id
        self.assertEqual(answer, {"envoy_id": self.key.id, "hostname": "web1.dc1.example.com",
                                  "from": self.a.identity.id, "to": b_id, "changed": True,
                                  "delivered": "now"})
        redirect = {"address": str(self.b.address), "server_id": b_id,
                    "fingerprint": self.b.identity.fingerprint}
        state, stored_redirect, hostname, _, token_id = self.fed.row("a", self.key.id)
        self.assertEqual((state, json.loads(stored_redirect)), (MOVED, redirect))
        self.assertEqual(self.fed.row("b", self.key.id)[::2],
                         (ACTIVE, "web1.dc1.example.com", token_id))
        self.assertEqual(self.fed.row("b", self.key.id)[3], 7)
        self.assertEqual(self.fed.bolt("b").overrides, [(self.key.id, b_id)])
        self.assertEqual(self.fed.bolt("a").overrides, [])
        dropped = connection.dropped
        self.assertIsInstance(dropped, Redirected)
        self.assertEqual((dropped.address, dropped.server_id, dropped.fingerprint),
                         (redirect["address"], b_id, redirect["fingerprint"]))
        self.assertIsNone(self.record.connection)
        self.assertIsNone(self.a.fleet.index.by_name("web1.dc1.example.com"))
        self.assertEqual(self.b.fleet.index.by_name("web1.dc1.example.com").id, self.key.id)

    @defer.inlineCallbacks
    def test_the_envoy_attaches_and_checks_in_at_the_destination(self):
        answer = yield self.reassign()
        self.assertEqual(answer["delivered"], "next_attach")
        now = self.a.now_ms()
        redirected = self.assertRaises(
            Redirected, self.a.fleet.attach, RecordingConnection(), self.key.id,
            self.a.identity.id, now, self.key.attach_signature(self.a.identity.id, now))
        self.assertEqual(redirected.server_id, self.b.identity.id)
        now = self.b.now_ms()
        record = self.b.fleet.attach(RecordingConnection(), self.key.id, self.b.identity.id,
                                     now, self.key.attach_signature(self.b.identity.id, now))
        self.assertEqual(record.state, ACTIVE)
        self.key.seq = 7  # what the envoy used at A
        frame = self.b.fleet.checkin(record, self.key.checkin_body(self.b.now_ms()))
        self.assertEqual(record.last_seq, 8)
        self.assertNotIn(b"replayed", frame)

    @defer.inlineCallbacks
    def test_the_move_survives_a_restart_of_the_source(self):
        yield self.reassign()
        fleet = Fleet(self.a.store, self.a.identity, self.a.hostcrates, self.a.clock, 15.0, 3)
        yield fleet.load()
        record = fleet.index.get(self.key.id)
        self.assertEqual((record.state, record.redirect["server_id"]),
                         (MOVED, self.b.identity.id))
        now = self.a.now_ms()
        self.assertRaises(Redirected, fleet.attach, RecordingConnection(), self.key.id,
                          self.a.identity.id, now,
                          self.key.attach_signature(self.a.identity.id, now))

    @defer.inlineCallbacks
    def test_again_is_a_no_op(self):
        yield self.reassign()
        again = yield self.reassign()
        self.assertEqual((again["changed"], again["to"]), (False, self.b.identity.id))
        self.assertEqual(self.fed.bolt("b").overrides, [(self.key.id, self.b.identity.id)])
        self.assertEqual(self.fed.row("b", self.key.id)[0], ACTIVE)

    @defer.inlineCallbacks
    def test_accept_envoy_is_idempotent(self):
        fields = yield self.fed.bolt("a").fleet().export(self.key.id)
        args = {name: fields[name] for name in ("id", "hostname", "public_key", "enrolled_at",
                                                "last_seq", "applied_version", "token_id")}
        b = self.fed.bolt("b")
        first = yield run_action(b, ACTIONS, self.a.identity.id, "accept-envoy", args)
        second = yield run_action(b, ACTIONS, self.a.identity.id, "accept-envoy", args)
        self.assertEqual(first, second)
        self.assertEqual(first["server_id"], self.b.identity.id)
        self.assertEqual(len(self.b.fleet.index), 1)
        # The override is written each time it is asked for (the service skips
        # it when the roster already has it).
        self.assertEqual(b.overrides, [(self.key.id, b.id)] * 2)

    @defer.inlineCallbacks
    def test_a_crash_after_accept_is_finished_by_running_it_again(self):
        fields = yield self.a.fleet.export(self.key.id)
        yield self.b.fleet.accept(fields)  # the source died before marking it moved
        self.assertEqual(self.fed.row("a", self.key.id)[0], ACTIVE)
        answer = yield self.reassign()
        self.assertTrue(answer["changed"])
        self.assertEqual((self.fed.row("a", self.key.id)[0], self.fed.row("b", self.key.id)[0]),
                         (MOVED, ACTIVE))

    @defer.inlineCallbacks
    def test_and_back_again(self):
        yield self.reassign()
        answer = yield self.reassign(to="a", at="b")
        self.assertTrue(answer["changed"])
        self.assertEqual((self.fed.row("a", self.key.id)[:2], self.fed.row("b", self.key.id)[0]),
                         ((ACTIVE, None), MOVED))
        self.assertEqual(self.a.fleet.index.by_name("web1.dc1.example.com").id, self.key.id)

    @defer.inlineCallbacks
    def test_refusals_change_nothing(self):
        self.fed.down.add("b")
        error = yield self.assertFailure(self.reassign(), ActionError)
        self.assertTrue(str(error).startswith("unreachable: bolt "), str(error))
        self.fed.down.clear()
        error = yield self.assertFailure(self.reassign(to="a"), ActionError)
        self.assertTrue(str(error).startswith("same_bolt: "), str(error))
        error = yield self.assertFailure(self.reassign(envoy="nope"), ActionError)
        self.assertTrue(str(error).startswith("not_found: "), str(error))
        # B has another envoy with that hostname: refused there, kept here.
        yield defer.ensureDeferred(self.b.enroll(EnvoyKey("web1.dc1.example.com")))
        error = yield self.assertFailure(self.reassign(), ActionError)
        self.assertTrue(str(error).startswith("hostname_taken: "), str(error))
        self.assertEqual(self.fed.row("a", self.key.id)[:2], (ACTIVE, None))
        self.assertIsNone(self.fed.row("b", self.key.id))
        yield self.a.fleet.revoke(self.key.id)
        error = yield self.assertFailure(self.reassign(), ActionError)
        self.assertTrue(str(error).startswith("not_active: "), str(error))

    @defer.inlineCallbacks
    def test_accept_refuses_a_key_that_is_not_the_envoys(self):
        fields = yield self.fed.bolt("a").fleet().export(self.key.id)
        other = yield self.fed.bolt("a").fleet().export(self.key.id)
        other["public_key"] = "A" * 43 + "="
        args = {name: other[name] for name in ("id", "hostname", "public_key", "enrolled_at",
                                               "last_seq", "applied_version", "token_id")}
        error = yield self.assertFailure(
            run_action(self.fed.bolt("b"), ACTIONS, self.a.identity.id, "accept-envoy", args),
            ActionError)
        self.assertTrue(str(error).startswith("malformed: "), str(error))
        self.assertIsNone(self.fed.row("b", fields["id"]))


class LiveReassignTests(unittest.TestCase):
    """Three real servers in spanner mode on loopback; a real envoy over TLS."""

    timeout = 120

    def setUp(self):
        self.group = "239.192.%d.%d" % (random.randrange(1, 255), random.randrange(1, 255))
        self.port = random.randrange(20000, 60000)
        self.servers = {}
        self.connections = EnvoyConnections()

    @defer.inlineCallbacks
    def start(self, name):
        from tests.test_spanner_membership import spanner_config
        from vigo.server import VigoServer

        server = VigoServer(spanner_config(self.mktemp(), name, self.group, self.port), reactor)
        server.startService()
        self.addCleanup(lambda: server.stopService() if server.running else None)
        yield server.ready
        self.servers[name] = server
        if len(self.servers) == 1:  # cleanups run last first: envoys hang up first
            self.addCleanup(self.connections.close_all)
        return server

    @defer.inlineCallbacks
    def wait_for(self, condition, what):
        for _ in range(150):
            if condition():
                return
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.fail(what)

    def row(self, name, envoy_id):
        path = self.servers[name].store.path
        return sqlite3.connect(path).execute(
            "SELECT state, redirect FROM envoys WHERE id = ?", (envoy_id,)).fetchone()

    @defer.inlineCallbacks
    def test_reassign_from_a_third_bolt(self):
        from vigo.envoy import main as envoy
        from vigo.envoy.state import EnvoyState
        from vigo.spanner.errors import SpannerRefusal
        from vigo.spanner.routing import owner_of

        a = yield self.start("a")
        b = yield self.start("b")
        c = yield self.start("c")
        yield a.spanner.init()
        for joiner in (b, c):
            invite = yield a.spanner.invite(3600)
            yield joiner.spanner.join(invite["token"])
        servers = (a, b, c)
        yield self.wait_for(lambda: len({s.spanner.digest() for s in servers}) == 1
                            and len(a.spanner.roster.bolt_ids()) == 3,
                            "the rosters did not converge")

        # An envoy enrolls and attaches at A, and checks in there.
        token = yield a.enrollment.create_token(uses=1)
        state = EnvoyState.open(self.mktemp(), create=True)
        address = "127.0.0.1:%d" % (a.ports["envoy"],)
        protocol = yield envoy.register(reactor, state, "web1.a.example.com", token,
                                        address=address, listener=self.connections)
        protocol, _ = yield envoy.attach(reactor, state, protocol=protocol,
                                         listener=self.connections)
        envoy_id = state.envoy_id
        seq = state.last_seq + 1
        answer, _ = yield protocol.checkin(seq, state.bundle_version)
        self.assertIn(answer, ("bundle", "no_change"))

        # Asked at C, by hostname, to go to B (by name).
        moved = yield c.spanner.reassign("web1.a.example.com", "b")
        self.assertEqual((moved["envoy_id"], moved["from"], moved["to"], moved["changed"],
                          moved["delivered"], moved["from_name"], moved["to_name"]),
                         (envoy_id, a.identity.id, b.identity.id, True, "now", "a", "b"))
        self.assertEqual(self.row("a", envoy_id)[0], "moved")
        self.assertEqual(json.loads(self.row("a", envoy_id)[1])["server_id"], b.identity.id)
        self.assertEqual(self.row("b", envoy_id), ("active", None))
        self.assertIsNone(self.row("c", envoy_id))
        self.assertEqual(b.spanner.roster.override_of(envoy_id).bolt_id, b.identity.id)
        yield self.wait_for(lambda: all(
            s.spanner.roster.override_of(envoy_id) is not None for s in servers),
            "the override was not gossiped")
        self.assertEqual(owner_of(c.spanner.roster, "web1.a.example.com", envoy_id).bolt_id,
                         b.identity.id)

        # The envoy's connection to A was sent a Redirect to B.
        yield self.wait_for(lambda: self.connections.redirects, "no Redirect arrived")
        self.assertEqual(self.connections.redirects[0].server_id, b.identity.id)

        # It attaches (following A's redirect at Attach) and checks in at B, same id.
        protocol, attached = yield envoy.attach(reactor, state, listener=self.connections)
        self.assertEqual((attached.envoy_id, state.envoy_id, state.server_id),
                         (envoy_id, envoy_id, b.identity.id))
        answer, _ = yield protocol.checkin(seq + 1, state.bundle_version)
        self.assertIn(answer, ("bundle", "no_change"))
        self.assertEqual(b.fleet.index.get(envoy_id).last_seq, seq + 1)

        # Again: nothing to do. To a bolt that does not exist: refused.
        again = yield c.spanner.reassign(envoy_id, b.identity.id)
        self.assertEqual((again["changed"], again["to"]), (False, b.identity.id))
        self.assertEqual(self.row("b", envoy_id), ("active", None))
        refused = yield self.assertFailure(c.spanner.reassign(envoy_id, "nowhere"),
                                           SpannerRefusal)
        self.assertEqual((refused.code, refused.status), ("not_found", 404))
        self.assertIn("no bolt 'nowhere'", str(refused))

        # A removed bolt takes no envoys.
        a.spanner.roster.remove(a.identity, c.identity.id, int(reactor.seconds() * 1000))
        refused = yield self.assertFailure(a.spanner.reassign(envoy_id, "c"), SpannerRefusal)
        self.assertEqual((refused.code, refused.status), ("bolt_not_active", 409))
        self.assertIn("removed", str(refused))


class RefusalOfTests(unittest.SynchronousTestCase):
    """A refusal relayed from the bolt that gave it names that bolt once."""

    def refused(self, text, bolt_id="src"):
        from twisted.python.failure import Failure

        from vigo.spanner.bolt_ops import refusal_of
        from vigo.spanner.errors import SpannerRefusal

        error = self.assertRaises(SpannerRefusal, refusal_of, Failure(ActionError(text)),
                                  bolt_id, "reassign")
        return error.code, error.status, str(error)

    def test_names_the_bolt_once(self):
        self.assertEqual(self.refused("not_active: envoy e1 is revoked on bolt src"),
                         ("not_active", 409, "envoy e1 is revoked on bolt src"))
        self.assertEqual(self.refused("hostname_taken: web1 is already enrolled here"),
                         ("hostname_taken", 409, "web1 is already enrolled here (on bolt src)"))
        self.assertEqual(self.refused("not_found: no envoy 'x' on bolt src")[:2],
                         ("not_found", 404))
