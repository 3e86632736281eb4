"""The ``query`` and ``force-push`` peer actions, and the fan-out over them.

The actions run through ``run_action`` (the checks every call gets) on a fake
bolt whose fleet is a real ``BoltFleet`` over a real fleet on a Clock; the
fan-out (``FleetReads``) runs over a fake bolt whose calls the test answers.
Each fake is checked against the interface it stands in for, and so is the real
class it replaces.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from tests.fleetkit import EnvoyKey, FleetKit, RecordingConnection
from tests.peerkit import NoPeers, PeerSet, StubBolt
from vigo.api.responses import status_of
from vigo.fleet.moves import EnvoyMoves
from vigo.fleet.view import BoltFleet
from vigo.interfaces import IBolt, IBoltFleet, IPeerAction, IPeerCaller, Refusal
from vigo.interfaces.errors import ActionError, BadArguments, PeerUnreachable
from vigo.plugins import vigo_fleet
from vigo.plugins.vigo_fleet import ForcePush, Query
from vigo.spanner.bolt import Bolt
from vigo.spanner.gossip.observability import CheckinRate
from vigo.spanner.peer.actions import load_actions, run_action
from vigo.spanner.reads import FleetReads
from vigo.spanner.status import envoy_summary

CALLER = "c" * 20


class FakeBolt(StubBolt):
    """A bolt with a fleet and nothing else."""

    def __init__(self, fleet):
        self._fleet = fleet

    def fleet(self):
        return self._fleet


class ActionTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.kit = FleetKit(self)
        moves = EnvoyMoves(self.kit.fleet, self.kit.store, self.kit.clock, lambda: self.kit.address)
        self.bolt = FakeBolt(BoltFleet(self.kit.fleet, self.kit.clock, moves.endpoint))
        self.actions = {"query": Query(), "force-push": ForcePush()}
        self.keys = []
        for hostname in ("web2.dc1.example.com", "web1.dc1.example.com", "db1.dc1.example.com"):
            key, _ = yield defer.ensureDeferred(self.kit.enroll(EnvoyKey(hostname)))
            self.keys.append(key)

    def call(self, name, args):
        return run_action(self.bolt, self.actions, CALLER, name, args)

    def test_interfaces(self):
        verifyObject(IPeerAction, self.actions["query"])
        verifyObject(IPeerAction, self.actions["force-push"])
        verifyObject(IBolt, self.bolt)
        verifyObject(IBoltFleet, self.bolt.fleet())
        # The real bolt, with the same fleet, is what the fake stands in for.
        real = Bolt(self.kit.identity, lambda: "dc1", self.kit.clock, PeerSet().roster,
                    self.actions, NoPeers(), fleet=self.bolt.fleet())
        verifyObject(IBolt, real)
        self.assertIs(real.fleet(), self.bolt.fleet())

    def test_endpoint(self):
        self.assertEqual(self.bolt.fleet().endpoint(),
                         {"address": str(self.kit.address), "server_id": self.kit.identity.id,
                          "fingerprint": self.kit.identity.fingerprint})

    def test_discovered_as_dropins(self):
        actions = load_actions()
        self.assertIsInstance(actions["query"], Query)
        self.assertIsInstance(actions["force-push"], ForcePush)

    @defer.inlineCallbacks
    def test_list_is_compact_and_sorted(self):
        page = yield self.call("query", {"kind": "list"})
        self.assertEqual([e["hostname"] for e in page["envoys"]],
                         ["db1.dc1.example.com", "web1.dc1.example.com", "web2.dc1.example.com"])
        self.assertEqual(set(page["envoys"][0]), set(vigo_fleet.LIST_FIELDS))
        self.assertEqual((page["bolt_id"], page["count"], page["truncated"], page["next"]),
                         (self.bolt.id, 3, False, None))

    @defer.inlineCallbacks
    def test_list_pages_with_a_cursor(self):
        first = yield self.call("query", {"kind": "list", "limit": 2})
        self.assertEqual((first["count"], first["truncated"]), (2, True))
        self.assertEqual(first["next"].split(" ")[0], "web1.dc1.example.com")
        rest = yield self.call("query", {"kind": "list", "limit": 2, "after": first["next"]})
        self.assertEqual([e["hostname"] for e in rest["envoys"]], ["web2.dc1.example.com"])
        self.assertFalse(rest["truncated"])

    @defer.inlineCallbacks
    def test_list_stops_at_the_byte_budget(self):
        self.patch(vigo_fleet, "PAGE_BYTES", 400)
        page = yield self.call("query", {"kind": "list"})
        self.assertTrue(page["truncated"])
        self.assertLess(page["count"], 3)

    @defer.inlineCallbacks
    def test_list_offline(self):
        record = self.kit.fleet.index.get(self.keys[0].id)
        record.online = True
        page = yield self.call("query", {"kind": "list", "offline": True})
        self.assertNotIn(record.id, [e["id"] for e in page["envoys"]])
        self.assertEqual(page["count"], 2)

    @defer.inlineCallbacks
    def test_show(self):
        answer = yield self.call("query", {"kind": "show", "envoy": "web1.dc1.example.com"})
        self.assertEqual(answer["envoy"]["id"], self.keys[1].id)
        self.assertIn("bundle_version", answer["envoy"])
        answer = yield self.call("query", {"kind": "show", "envoy": "nosuch"})
        self.assertIsNone(answer["envoy"])
        yield self.assertFailure(self.call("query", {"kind": "show"}), ActionError)

    @defer.inlineCallbacks
    def test_bad_arguments_are_refused(self):
        for args in ({"kind": "all"}, {}, {"kind": "list", "limit": 0},
                     {"kind": "list", "limit": vigo_fleet.MAX_LIMIT + 1},
                     {"kind": "list", "offline": 1}):
            yield self.assertFailure(self.call("query", args), BadArguments)

    @defer.inlineCallbacks
    def test_push_one(self):
        connection = RecordingConnection()
        self.kit.fleet.index.get(self.keys[0].id).connection = connection
        answer = yield self.call("force-push", {"envoy": "web2.dc1.example.com"})
        self.assertEqual(answer, {"envoy_id": self.keys[0].id, "delivered": "now",
                                  "bolt_id": self.bolt.id, "name": "dc1"})
        self.assertEqual(len(connection.sent), 1)
        answer = yield self.call("force-push", {"envoy": self.keys[1].id})
        self.assertEqual(answer["delivered"], "next_attach")
        self.assertTrue(self.kit.fleet.index.get(self.keys[1].id).pending_push)

    @defer.inlineCallbacks
    def test_push_refusals_are_answers(self):
        answer = yield self.call("force-push", {"envoy": "nosuch"})
        self.assertEqual((answer["envoy_id"], answer["refused"]), (None, "not_found"))
        yield self.kit.fleet.revoke(self.keys[2].id)
        answer = yield self.call("force-push", {"envoy": self.keys[2].id})
        self.assertEqual(answer["refused"], "not_active")

    @defer.inlineCallbacks
    def test_push_all_is_durable(self):
        yield self.kit.fleet.revoke(self.keys[2].id)
        self.kit.fleet.index.get(self.keys[0].id).connection = RecordingConnection()
        answer = yield self.call("force-push", {"all": True})
        self.assertEqual((answer["envoys"], answer["now"], answer["next_attach"]), (2, 1, 1))
        rows = yield self.kit.store.run(lambda cursor: cursor.execute(
            "SELECT id, pending_push FROM envoys").fetchall())
        self.assertEqual(dict(rows), {self.keys[0].id: 1, self.keys[1].id: 1,
                                      self.keys[2].id: 0})

    @defer.inlineCallbacks
    def test_push_needs_one_of_envoy_or_all(self):
        for args in ({}, {"all": False}, {"all": True, "envoy": "x"}):
            error = yield self.assertFailure(self.call("force-push", args), ActionError)
            self.assertEqual(error.code, "refused")
            self.assertIn("either envoy", error.reason)


class ScriptedBolt(StubBolt):
    """An ``IBolt`` whose ``call`` the test answers: ``answers[(bolt_id, kind)]``
    is a value, an exception, or ``None`` (never answers)."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def call(self, bolt_id, action_name, args):
        self.calls.append((bolt_id, action_name, args))
        answer = self.answers[(bolt_id, args.get("kind") or action_name)]
        if callable(answer):
            answer = answer(args)
        if answer is None:
            return defer.Deferred()
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(answer)


def row(envoy_id, hostname):
    return {"id": envoy_id, "hostname": hostname, "state": "active", "online": True}


A, B, C = "a" * 20, "b" * 20, "c" * 20
BOLTS = [(A, "dc1"), (B, "dc2"), (C, "dc3")]


class FleetReadsTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.answers = {
            (A, "list"): {"envoys": [row("e2", "web2.dc1")], "truncated": False},
            (B, "list"): {"envoys": [row("e1", "web1.dc2")], "truncated": False},
            (C, "list"): None,
            (A, "show"): {"envoy": None},
            (B, "show"): lambda args: {"envoy": row("e1", "web1.dc2")
                                       if args["envoy"] in ("e1", "web1.dc2") else None},
            (C, "show"): PeerUnreachable("bolt c is not connected"),
            (B, "force-push"): lambda args: {"envoy_id": "e1", "delivered": "now"},
        }
        self.bolt = ScriptedBolt(self.answers)
        self.reads = FleetReads(self.bolt, self.clock, lambda: BOLTS, timeout=5.0)

    def test_the_fake_is_an_ibolt(self):
        verifyObject(IBolt, self.bolt)
        verifyObject(IPeerCaller, self.bolt)
        verifyObject(IBolt, PeerSet().facade("alpha", {}))

    def test_list_merges_and_names_the_silent(self):
        d = self.reads.list_all()
        self.assertNoResult(d)
        self.clock.advance(5.0)
        answer = self.successResultOf(d)
        self.assertEqual([(e["hostname"], e["bolt_name"]) for e in answer["envoys"]],
                         [("web1.dc2", "dc2"), ("web2.dc1", "dc1")])
        self.assertEqual(answer["bolts"], {A: "ok", B: "ok", C: "timeout"})
        self.assertEqual(answer["count"], 2)

    def test_a_moved_envoy_is_listed_once_where_it_is_now(self):
        # After a drain, A keeps its copy of e1 (state moved); B holds it.
        self.answers[(A, "list")] = {"envoys": [row("e2", "web2.dc1"),
                                                dict(row("e1", "web1.dc2"), state="moved")],
                                     "truncated": False}
        self.answers[(C, "list")] = {"envoys": [], "truncated": False}
        answer = self.successResultOf(self.reads.list_all())
        self.assertEqual([(e["id"], e["bolt_name"], e["state"]) for e in answer["envoys"]],
                         [("e1", "dc2", "active"), ("e2", "dc1", "active")])
        self.assertEqual(answer["count"], 2)
        # moved=True (vigocli envoys list --all) shows the copies too.
        answer = self.successResultOf(self.reads.list_all(moved=True))
        self.assertEqual(sorted((e["id"], e["state"]) for e in answer["envoys"]),
                         [("e1", "active"), ("e1", "moved"), ("e2", "active")])

    def test_list_one_bolt(self):
        answer = self.successResultOf(self.reads.list_all(offline=True, only=B))
        self.assertEqual(answer["bolts"], {B: "ok"})
        self.assertEqual(self.bolt.calls, [(B, "query", {"kind": "list", "offline": True,
                                                          "limit": 5000})])

    def test_list_follows_pages_up_to_the_cap(self):
        self.reads.max_per_bolt = 3
        pages = iter([{"envoys": [row("e1", "h1"), row("e2", "h2")], "truncated": True,
                       "next": "h2 e2"},
                      {"envoys": [row("e3", "h3")], "truncated": True, "next": "h3 e3"}])
        self.answers[(A, "list")] = lambda args: next(pages)
        rows, truncated = self.successResultOf(self.reads.list_one(A))
        self.assertEqual(([r["id"] for r in rows], truncated), (["e1", "e2", "e3"], True))
        self.assertEqual([c[2].get("after") for c in self.bolt.calls], [None, "h2 e2"])
        self.assertEqual(self.bolt.calls[1][2]["limit"], 1)

    def test_a_bad_answer_is_a_failed_bolt(self):
        self.answers[(A, "list")] = {"envoys": "nope"}
        self.answers[(C, "list")] = PeerUnreachable("gone")
        answer = self.successResultOf(self.reads.list_all())
        self.assertTrue(answer["bolts"][A].startswith("failed: BadAnswer"))
        self.assertEqual(answer["bolts"][C], "unreachable: gone")

    def test_show_first_found_wins_without_waiting(self):
        self.answers[(C, "show")] = None
        answer = self.successResultOf(self.reads.show("web1.dc2"))
        self.assertEqual((answer["id"], answer["bolt_id"], answer["bolt_name"]), ("e1", B, "dc2"))

    def test_show_prefers_the_active_holder_to_a_moved_copy(self):
        # A answers first with the copy it kept after moving e1 to B.
        self.answers[(A, "show")] = {"envoy": dict(row("e1", "web1.dc2"), state="moved")}
        self.answers[(C, "show")] = {"envoy": None}
        answer = self.successResultOf(self.reads.show("e1"))
        self.assertEqual((answer["bolt_id"], answer["state"]), (B, "active"))
        pushed = self.successResultOf(self.reads.push("e1"))
        self.assertEqual(pushed["bolt_id"], B)
        # With no active holder, the moved copy is shown once every bolt answered.
        self.answers[(B, "show")] = {"envoy": None}
        d = self.reads.show("e1")
        answer = self.successResultOf(d)
        self.assertEqual((answer["bolt_id"], answer["state"]), (A, "moved"))

    def test_show_not_found_and_unreachable(self):
        failure = self.failureResultOf(self.reads.show("nosuch"), Refusal)
        self.assertEqual((failure.value.code, status_of(failure.value)), ("unreachable", 503))
        self.assertIn(C + " (dc3): unreachable: bolt c is not connected", failure.value.reason)
        self.answers[(C, "show")] = {"envoy": None}
        failure = self.failureResultOf(self.reads.show("nosuch"), Refusal)
        self.assertEqual((failure.value.code, status_of(failure.value)), ("not_found", 404))

    def test_push_finds_the_owner(self):
        answer = self.successResultOf(self.reads.push("web1.dc2"))
        self.assertEqual(answer, {"envoy_id": "e1", "delivered": "now", "bolt_id": B,
                                  "bolt_name": "dc2"})
        self.assertEqual(self.bolt.calls[-1], (B, "force-push", {"envoy": "e1"}))

    def test_push_refused_by_the_owner(self):
        self.answers[(B, "force-push")] = {"envoy_id": "e1", "refused": "not_active",
                                           "detail": "envoy e1 is revoked"}
        failure = self.failureResultOf(self.reads.push("e1"), Refusal)
        self.assertEqual((failure.value.code, status_of(failure.value)), ("not_active", 409))
        self.assertEqual(failure.value.reason, "envoy e1 is revoked (on bolt %s)" % (B,))

    def test_bolt_envoys_and_push_of_a_silent_bolt(self):
        d = self.reads.bolt_envoys(C, "dc3")
        self.clock.advance(5.0)
        failure = self.failureResultOf(d, Refusal)
        self.assertEqual((failure.value.code, status_of(failure.value)), ("unreachable", 503))
        self.answers[(C, "force-push")] = PeerUnreachable("gone")
        failure = self.failureResultOf(self.reads.push_bolt(C), Refusal)
        self.assertEqual((failure.value.code, status_of(failure.value)), ("unreachable", 503))
        answer = self.successResultOf(self.reads.bolt_envoys(B, "dc2"))
        self.assertEqual((answer["count"], answer["envoys"][0]["bolt_id"]), (1, B))


class CheckinRateTests(unittest.SynchronousTestCase):
    def test_rate_over_a_window(self):
        rate = CheckinRate(window=5.0)
        rate.observe(100, 0.0)
        rate.observe(110, 2.0)
        self.assertIsNone(rate.rate)
        rate.observe(150, 5.0)
        self.assertEqual(rate.rate, 10.0)
        rate.observe(160, 7.0)
        self.assertEqual(rate.rate, 10.0)
        rate.observe(3, 8.0)  # restarted: start over
        self.assertIsNone(rate.rate)


class EnvoySummaryTests(unittest.TestCase):
    """The envoy figures of a bolt, as ``bolt list`` and the page show them."""

    def test_a_live_bolts_figures_are_current(self):
        summary = envoy_summary({"envoys_owned": 5, "envoys_online": 4}, 0.5, 2.0, 0.5)
        self.assertEqual((summary["stale"], summary["checkin_rate"]), (False, 2.0))

    def test_a_bolt_not_heard_as_alive_has_stale_figures_and_no_rate(self):
        for liveness in ("suspect", "down", "unknown"):
            summary = envoy_summary({"envoys_owned": 5, "envoys_online": 4}, 28.0, 2.0, 28.0,
                                    liveness=liveness)
            self.assertTrue(summary["stale"])
            self.assertNotIn("checkin_rate", summary)
            self.assertEqual((summary["owned"], summary["as_of"]), (5, 28.0))
