"""Envoy reads and force-push at any bolt, between real in-process bolts on loopback.

Envoys enrolled at bolt b are listed, shown and force-pushed from bolt a; a
stopped bolt c is listed as not answering, never silently left out.
"""

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests import test_spanner_membership as membership
from tests.fleetkit import EnvoyKey
from vigo.spanner.errors import SpannerRefusal


class FleetReadsAcrossBolts(unittest.TestCase):
    setUp = membership.MembershipTests.setUp
    bolt = membership.MembershipTests.bolt

    @defer.inlineCallbacks
    def enroll_at(self, server, hostname):
        key = EnvoyKey(hostname)
        token = yield server.enrollment.create_token()
        yield server.enrollment.register(
            *key.register_fields(token, int(server.clock.seconds() * 1000)))
        return key

    def federation(self):
        return membership.federate(self)

    @defer.inlineCallbacks
    def test_list_show_push_from_another_bolt(self):
        a, b, c = yield self.federation()
        one = yield self.enroll_at(b, "web1.b.example.com")
        yield self.enroll_at(b, "web2.b.example.com")
        a.spanner.fleet_reads.timeout = 3.0

        listing = yield a.spanner.envoys()
        self.assertEqual(listing["bolts"], {a.identity.id: "ok", b.identity.id: "ok",
                                            c.identity.id: "ok"})
        self.assertEqual([(e["hostname"], e["bolt_id"], e["bolt_name"])
                          for e in listing["envoys"]],
                         [("web1.b.example.com", b.identity.id, "b"),
                          ("web2.b.example.com", b.identity.id, "b")])
        only_a = yield a.spanner.envoys(bolt="a")
        self.assertEqual((only_a["envoys"], list(only_a["bolts"])), ([], [a.identity.id]))

        shown = yield a.spanner.envoy("web1.b.example.com")
        self.assertEqual((shown["id"], shown["bolt_id"]), (one.id, b.identity.id))
        error = yield self.assertFailure(a.spanner.envoy("nosuch.b.example.com"), SpannerRefusal)
        self.assertEqual((error.code, error.status), ("not_found", 404))

        self.assertFalse(b.fleet.index.get(one.id).pending_push)
        pushed = yield a.spanner.push_envoy(one.id)
        self.assertEqual((pushed["envoy_id"], pushed["delivered"], pushed["bolt_id"]),
                         (one.id, "next_attach", b.identity.id))
        self.assertTrue(b.fleet.index.get(one.id).pending_push)

        of_b = yield a.spanner.bolt_envoys("b")
        self.assertEqual(of_b["count"], 2)
        pushed_all = yield a.spanner.push_bolt("b")
        self.assertEqual((pushed_all["envoys"], pushed_all["next_attach"]), (2, 2))
        self.assertTrue(all(r.pending_push for r in b.fleet.index))

        # Counts from the observability cache: b's gossip says it owns two.
        for _ in range(50):
            summary = a.spanner.bolt("b")["envoys"]
            if summary and summary["owned"] == 2:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual((summary["owned"], summary["online"]), (2, 0))
        self.assertIsNotNone(summary["last_heard_age"])

        # c stops: it is listed as not answering; b's envoys are still there.
        yield c.stopService()
        # In one process, c's accepted peer connections outlive its service (a
        # stopped process would close them), so a hangs up on its side.
        yield a.spanner.clients.drop(c.identity.id)
        listing = yield a.spanner.envoys()
        self.assertEqual(listing["count"], 2)
        self.assertEqual(listing["bolts"][b.identity.id], "ok")
        self.assertNotEqual(listing["bolts"][c.identity.id], "ok")
        self.assertEqual(listing["bolt_names"][c.identity.id], "c")
        error = yield self.assertFailure(a.spanner.envoy("nosuch.b.example.com"), SpannerRefusal)
        self.assertEqual((error.code, error.status), ("unreachable", 503))
        self.assertIn(c.identity.id, error.message)
        shown = yield a.spanner.envoy("web2.b.example.com")
        self.assertEqual(shown["bolt_id"], b.identity.id)
