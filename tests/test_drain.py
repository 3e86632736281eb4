"""Draining and removing a bolt: the ``drain`` and ``drain-status`` actions with a
fake bolt, then three real bolts in spanner mode on loopback."""

import sqlite3

from twisted.internet import defer, reactor, task
from twisted.logger import Logger
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from tests import test_spanner_membership as membership
from tests.fleetkit import EnvoyKey
from vigo.config import config_from_mapping
from vigo.interfaces import IPeerAction
from vigo.interfaces.errors import ActionError, NotAMember, PeerUnreachable
from vigo.plugins.vigo_drain import Drain, DrainStatus
from vigo.spanner.drain import DrainRefused, load_drain, save_drain
from vigo.spanner.errors import SpannerRefusal
from vigo.spanner.peer.actions import load_actions, run_action
from vigo.spanner.routing import owner_of

ACTIONS = {"drain": Drain(), "drain-status": DrainStatus()}


class FakeDrainer:
    def __init__(self):
        self.started = []
        self.refuse = None

    async def start(self, to=None):
        if self.refuse is not None:
            raise DrainRefused(*self.refuse)
        self.started.append(to)
        return {"state": "running", "to": to}

    def status(self):
        return {"state": "done", "moved": 3}


class FakeBolt:
    id = "b" * 20
    log = Logger()

    def __init__(self):
        self.the_drainer = FakeDrainer()

    def drainer(self):
        return self.the_drainer


class ActionTests(unittest.TestCase):
    def test_discovered(self):
        actions = load_actions()
        for name in ("drain", "drain-status"):
            self.assertIn(name, actions)
            verifyObject(IPeerAction, actions[name])

    @defer.inlineCallbacks
    def test_drain_starts_the_drainer(self):
        bolt = FakeBolt()
        answer = yield run_action(bolt, ACTIONS, bolt.id, "drain", {"to": "c" * 20})
        self.assertEqual(answer, {"state": "running", "to": "c" * 20})
        yield run_action(bolt, ACTIONS, bolt.id, "drain", {})
        self.assertEqual(bolt.the_drainer.started, ["c" * 20, None])
        status = yield run_action(bolt, ACTIONS, bolt.id, "drain-status", {})
        self.assertEqual(status, {"state": "done", "moved": 3})

    @defer.inlineCallbacks
    def test_a_refusal_keeps_its_code(self):
        bolt = FakeBolt()
        bolt.the_drainer.refuse = ("bolt_not_active", "bolt c is draining")
        failure = yield self.assertFailure(run_action(bolt, ACTIONS, bolt.id, "drain", {}),
                                           ActionError)
        self.assertEqual(str(failure), "bolt_not_active: bolt c is draining")


def config(directory, name, group, port, patterns):
    return config_from_mapping({
        "server": {"data_dir": directory, "hostname": "localhost",
                   "envoy_listen": "127.0.0.1:0", "api_listen": "127.0.0.1:0"},
        "spanner": {"mode": "spanner", "bolt_name": name, "patterns": patterns,
                    "peer_listen": "127.0.0.1:0",
                    "gossip": {"group": group, "port": port, "interface": "127.0.0.1"}},
    })


#: A owns *.a.example.com; without A, B owns them (a less specific pattern).
PATTERNS = {"a": ["*.a.example.com"], "b": ["*.b.example.com", "*.example.com"],
            "c": ["*.c.example.com"]}


class LiveDrainTests(unittest.TestCase):
    """Three real bolts; envoys enrolled at A are drained to B (or C), then A is removed."""

    timeout = 120
    setUp = membership.MembershipTests.setUp

    @defer.inlineCallbacks
    def bolt(self, name, directory=None):
        from vigo.server import VigoServer

        directory = directory or self.mktemp()
        server = VigoServer(config(directory, name, self.group, self.port, PATTERNS[name]),
                            reactor)
        server.directory = directory
        server.startService()
        self.addCleanup(lambda: server.stopService() if server.running else None)
        yield server.ready
        return server

    @defer.inlineCallbacks
    def wait_for(self, condition, what, tries=300):
        for _ in range(tries):
            if condition():
                return
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.fail(what)

    def federation(self):
        return membership.federate(self)

    @defer.inlineCallbacks
    def enroll(self, server, count, domain="a.example.com"):
        ids = []
        for i in range(count):
            key = EnvoyKey("web%d.%s" % (i, domain))
            token = yield server.enrollment.create_token()
            yield server.enrollment.register(
                *key.register_fields(token, int(server.clock.seconds() * 1000)))
            ids.append(server.fleet.index.by_name(key.hostname).id)
        return ids

    def states(self, servers, envoy_id):
        """``{bolt name: state}`` of one envoy, read from each bolt's database."""
        out = {}
        for name, server in servers.items():
            row = sqlite3.connect(server.store.path).execute(
                "SELECT state FROM envoys WHERE id = ?", (envoy_id,)).fetchone()
            if row is not None:
                out[name] = row[0]
        return out

    @defer.inlineCallbacks
    def drained(self, asker, bolt):
        status = None
        for _ in range(300):
            status = yield asker.spanner.drain_status(bolt)
            if status["state"] in ("done", "failed"):
                return status
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.fail("the drain did not finish: %r" % (status,))

    @defer.inlineCallbacks
    def test_drain_then_remove(self):
        a, b, c = yield self.federation()
        servers = {"a": a, "b": b, "c": c}
        ids = yield self.enroll(a, 20)
        a.spanner.drainer.concurrency = 4
        idle = yield c.spanner.drain_status("a")
        self.assertEqual((idle["state"], idle["remaining"], idle["status"]),
                         ("idle", 20, "active"))

        # Removing a bolt that holds envoys is refused.
        refused = yield self.assertFailure(c.spanner.remove_bolt("a"), SpannerRefusal)
        self.assertEqual((refused.code, refused.status), ("not_drained", 409))
        refused = yield self.assertFailure(c.spanner.remove_bolt("c"), SpannerRefusal)
        self.assertEqual(refused.code, "self")
        refused = yield self.assertFailure(c.spanner.drain("a", to="a"), SpannerRefusal)
        self.assertEqual(refused.code, "same_bolt")

        # Asked at C: A drains; every envoy goes to B, its owner without A.
        started = yield c.spanner.drain("a")
        self.assertEqual((started["bolt_id"], started["name"]), (a.identity.id, "a"))
        self.assertEqual(a.spanner.roster.status_of(a.identity.id), "draining")
        status = yield self.drained(c, "a")
        self.assertEqual((status["state"], status["total"], status["moved"], status["failed"],
                          status["remaining"], status["errors"]),
                         ("done", 20, 20, 0, 0, []))
        for envoy_id in ids:
            self.assertEqual(self.states(servers, envoy_id), {"a": "moved", "b": "active"})
        yield self.wait_for(lambda: all(s.spanner.roster.status_of(a.identity.id) == "draining"
                                        for s in servers.values()),
                            "the draining row was not gossiped")
        # New enrollments of A's hostnames go to B now.
        self.assertEqual(owner_of(c.spanner.roster, "web99.a.example.com").bolt_id,
                         b.identity.id)

        # Asked at C: A is removed; every other bolt learns it, and refuses A.
        removed = yield c.spanner.remove_bolt("a")
        self.assertEqual((removed["removed"], removed["changed"], removed["forced"]),
                         (True, True, False))
        self.assertTrue(c.spanner.roster.is_removed(a.identity.id))
        yield self.wait_for(lambda: b.spanner.roster.is_removed(a.identity.id),
                            "the removal was not gossiped")
        again = yield b.spanner.remove_bolt(a.identity.id)
        self.assertEqual(again["changed"], False)
        # A, once it holds its own removal, says so (in its log, once).
        from twisted.logger import globalLogPublisher

        said = []

        def observe(event):
            if "removed from the federation" in str(event.get("hint", "")):
                said.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        a.spanner._removed_said = False  # it may have pulled the removal already
        for _ in range(2):
            a.spanner.replace_roster(c.spanner.roster.copy())
        self.assertEqual(len(said), 1)
        status = a.spanner.status()
        self.assertEqual(status["state"], "removed")
        self.assertIn("removed from the federation", status["hint"])
        for peer in (b, c):
            failure = yield self.assertFailure(
                a.spanner.facade.call(peer.identity.id, "drain-status", {}),
                NotAMember, PeerUnreachable)
            self.assertIn("member", str(failure))

    @defer.inlineCallbacks
    def test_drain_to_a_bolt_and_resume_after_a_restart(self):
        a, b, c = yield self.federation()
        servers = {"a": a, "b": b, "c": c}
        ids = yield self.enroll(a, 6)
        # A turns draining towards C and stops before it moves anything.
        yield a.store.run(save_drain, c.identity.id, 0)
        yield a.spanner.publish_status("draining")
        yield a.stopService()
        a = servers["a"] = yield self.bolt("a", a.directory)
        yield self.wait_for(lambda: not any(
            r.state == "active" for r in a.fleet.index), "the drain did not resume")
        status = yield self.drained(a, "a")
        self.assertEqual((status["state"], status["to"], status["moved"]),
                         ("done", c.identity.id, 6), status)
        for envoy_id in ids:
            self.assertEqual(self.states(servers, envoy_id), {"a": "moved", "c": "active"})

    @defer.inlineCallbacks
    def test_a_drain_that_would_strand_envoys_is_refused_before_anything_changes(self):
        a, b, c = yield self.federation()
        # Only B's own patterns cover *.b.example.com: drained to their owners,
        # these would have none.
        yield self.enroll(b, 4, domain="b.example.com")
        refused = yield self.assertFailure(c.spanner.drain("b"), SpannerRefusal)
        self.assertEqual(refused.code, "no_owner")
        self.assertIn("4 envoy(s)", str(refused))
        self.assertIn("web0.b.example.com", str(refused))
        self.assertIn("--to BOLT", str(refused))
        self.assertEqual(b.spanner.roster.status_of(b.identity.id), "active")
        self.assertIsNone((yield b.store.run(load_drain)))
        # To one bolt: fine.
        yield c.spanner.drain("b", to=c.identity.id)
        status = yield self.drained(c, "b")
        self.assertEqual((status["state"], status["moved"]), ("done", 4))
        # Nothing pending at b after a repair round, and its status says so.
        self.assertIsNone(b.spanner.status()["moves_pending"])
        yield b.spanner.handover.round()
        pending = b.spanner.status()["moves_pending"]
        self.assertEqual((pending["count"], pending["moves"]), (0, []))
        self.assertGreaterEqual(pending["as_of_age"], 0.0)

    @defer.inlineCallbacks
    def test_two_drains_asked_at_once_start_one(self):
        a, b, c = yield self.federation()
        yield self.enroll(a, 3)
        seq = a.spanner.roster.row(a.identity.id).seq
        first, second = a.spanner.drainer.start(b.identity.id), \
            a.spanner.drainer.start(b.identity.id)
        answers = yield defer.gatherResults([first, second])
        self.assertEqual([x["to"] for x in answers], [b.identity.id] * 2)
        self.assertEqual(a.spanner.roster.row(a.identity.id).seq, seq + 1, "published once")
        refused = yield self.assertFailure(a.spanner.drainer.start(c.identity.id),
                                           DrainRefused)
        self.assertEqual(refused.code, "conflict")
        status = yield self.drained(a, "a")
        self.assertEqual((status["state"], status["moved"]), ("done", 3))

    @defer.inlineCallbacks
    def test_an_empty_bolt_drains_at_once_and_may_be_asked_again(self):
        a, b, c = yield self.federation()
        first = yield a.spanner.drain("c", to=b.identity.id)
        self.assertEqual(first["total"], 0)
        status = yield self.drained(a, "c")
        self.assertEqual((status["state"], status["remaining"]), ("done", 0))
        again = yield a.spanner.drain("c", to=b.identity.id)  # not "already draining"
        self.assertEqual(again["remaining"], 0)
        elsewhere = yield a.spanner.drain("c")
        self.assertEqual(elsewhere["remaining"], 0)
        removed = yield a.spanner.remove_bolt("c")
        self.assertTrue(removed["removed"])
