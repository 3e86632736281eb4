"""Envoy reads and force-push at any bolt, between real in-process bolts on loopback.

Envoys enrolled at bolt b are listed, shown and force-pushed from bolt a; a
stopped bolt c is listed as not answering, never silently left out.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests import test_spanner_membership as membership
from tests.events import gossip_of, until
from tests.fleetkit import EnvoyKey
from vigo.api.responses import status_of
from vigo.interfaces.errors import Refusal


class FleetReadsAcrossBolts(unittest.TestCase):
    setUp = membership.MembershipTests.setUp
    build = membership.MembershipTests.build
    bolt = membership.MembershipTests.bolt

    @defer.inlineCallbacks
    def enroll_at(self, server, hostname):
        key = EnvoyKey(hostname)
        token = yield server.enrollment_tokens.create()
        yield server.enrollment.register(
            *key.register_fields(token, int(server.reactor.seconds() * 1000)))
        return key

    def federation(self):
        return membership.federate(self)

    @defer.inlineCallbacks
    def test_list_show_push_from_another_bolt(self):
        a, b, c = yield self.federation()
        one = yield self.enroll_at(b, "web1.b.example.com")
        yield self.enroll_at(b, "web2.b.example.com")
        a.spanner.reads.timeout = 3.0
        envoys = a.api.envoys

        listing = yield envoys.list()
        self.assertEqual(listing["bolts"], {a.identity.id: "ok", b.identity.id: "ok",
                                            c.identity.id: "ok"})
        self.assertEqual([(e["hostname"], e["bolt_id"], e["bolt_name"])
                          for e in listing["envoys"]],
                         [("web1.b.example.com", b.identity.id, "b"),
                          ("web2.b.example.com", b.identity.id, "b")])
        only_a = yield envoys.list(bolt="a")
        self.assertEqual((only_a["envoys"], list(only_a["bolts"])), ([], [a.identity.id]))

        shown = yield envoys.show("web1.b.example.com")
        self.assertEqual((shown["id"], shown["bolt_id"]), (one.id, b.identity.id))
        error = yield self.assertFailure(envoys.show("nosuch.b.example.com"), Refusal)
        self.assertEqual((error.code, status_of(error)), ("not_found", 404))

        self.assertFalse(b.fleet.index.get(one.id).pending_push)
        pushed = yield envoys.push(one.id)
        self.assertEqual((pushed["envoy_id"], pushed["delivered"], pushed["bolt_id"]),
                         (one.id, "next_attach", b.identity.id))
        self.assertTrue(b.fleet.index.get(one.id).pending_push)

        of_b = yield a.spanner.admin.bolt_envoys("b")
        self.assertEqual(of_b["count"], 2)
        pushed_all = yield a.spanner.admin.push_bolt("b")
        self.assertEqual((pushed_all["envoys"], pushed_all["next_attach"]), (2, 2))
        self.assertTrue(all(r.pending_push for r in b.fleet.index))

        # Counts from the observability cache: b's gossip says it owns two.
        def b_owns_two():
            summary = a.spanner.admin.bolt("b")["envoys"]
            return summary is not None and summary["owned"] == 2

        yield until(b_owns_two, *gossip_of(a), what="a's cache has b's count of two envoys")
        summary = a.spanner.admin.bolt("b")["envoys"]
        self.assertEqual((summary["owned"], summary["online"]), (2, 0))
        self.assertIsNotNone(summary["last_heard_age"])

        # c stops: it is listed as not answering; b's envoys are still there.
        yield c.stopService()
        # In one process, c's accepted peer connections outlive its service (a
        # stopped process would close them), so a hangs up on its side.
        yield a.spanner.clients.drop(c.identity.id)
        listing = yield envoys.list()
        self.assertEqual(listing["count"], 2)
        self.assertEqual(listing["bolts"][b.identity.id], "ok")
        self.assertNotEqual(listing["bolts"][c.identity.id], "ok")
        self.assertEqual(listing["bolt_names"][c.identity.id], "c")
        error = yield self.assertFailure(envoys.show("nosuch.b.example.com"), Refusal)
        self.assertEqual((error.code, status_of(error)), ("unreachable", 503))
        self.assertIn(c.identity.id, error.reason)
        shown = yield envoys.show("web2.b.example.com")
        self.assertEqual(shown["bolt_id"], b.identity.id)
