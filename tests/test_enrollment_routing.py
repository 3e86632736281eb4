"""Enrollment routing with fakes: the Register taken at one bolt, enrolled at
the owner, the token redeemed at its minter; a refusal stores nothing."""

import base64
import random
import sqlite3

from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.fleetkit import EnvoyConnections, EnvoyKey, FleetKit
from tests.peerkit import StubBolt
from vigo.envoy import main as envoy
from vigo.envoy.answers import Refused
from vigo.envoy.state import EnvoyState
from vigo.fleet.ownership import NoOwner, Owner
from vigo.fleet.refusal import Redirected, Refusal, refusal_from_text, refusal_text
from vigo.interfaces import IBolt, IBoltEnrollment, IOwnership, IPeerAction
from vigo.interfaces.errors import ActionError, PeerNoAnswer, PeerUnreachable
from vigo.plugins.vigo_enrollment import RedeemToken, RouteEnrollment
from vigo.spanner.enrollment_routing import EnrollmentRouter
from vigo.spanner.peer.actions import load_actions, run_action
from vigo.tokens import EnrollmentToken

ACTIONS = {"route-enrollment": RouteEnrollment(), "redeem-token": RedeemToken()}


@implementer(IOwnership)
class SuffixOwnership:
    """``*.NAME.example.com`` belongs to the bolt NAME."""

    def __init__(self, federation, local_id):
        self.federation = federation
        self.local_id = local_id

    def owner_of(self, hostname):
        for name, kit in self.federation.kits.items():
            if hostname.endswith(".%s.example.com" % (name,)):
                return Owner(kit.identity.id, kit.address, kit.identity.fingerprint,
                             kit.identity.id == self.local_id)
        raise NoOwner("no bolt takes %s" % (hostname,))


class FakeBolt(StubBolt):
    """A bolt whose calls run the target bolt's actions in-process, unless it is down."""

    def __init__(self, federation, kit, name):
        self.federation = federation
        self.kit = kit
        self.id = kit.identity.id
        self.name = name
        self.calls = []

    def now(self):
        return self.kit.clock.seconds()

    def enrollment(self):
        return self.kit.enrollment

    def call(self, bolt_id, action_name, args):
        self.calls.append((bolt_id, action_name))
        target = self.federation.bolts.get(bolt_id)
        if target is None or target.name in self.federation.down:
            return defer.fail(PeerUnreachable("bolt %s is down" % (bolt_id,)))
        if target.name in self.federation.mute:  # runs it, but the answer is lost
            d = run_action(target, ACTIONS, self.id, action_name, args)
            return d.addBoth(lambda _: defer.fail(PeerNoAnswer("no answer from %s" % bolt_id)))
        return run_action(target, ACTIONS, self.id, action_name, args)


class Federation:
    """Bolts a, b, c: each a real fleet and store, owning ``*.NAME.example.com``."""

    def __init__(self, testcase, names=("a", "b", "c")):
        self.kits = {name: FleetKit(testcase) for name in names}
        self.bolts = {}
        self.down = set()
        self.mute = set()
        for name, kit in self.kits.items():
            bolt = FakeBolt(self, kit, name)
            self.bolts[kit.identity.id] = bolt
            kit.ownership = SuffixOwnership(self, kit.identity.id)
            kit.enrollment.ownership = kit.ownership
            kit.enrollment.router = EnrollmentRouter(bolt, lambda bolt_id: bolt_id in self.bolts)
        self.now_ms = self.kits["a"].now_ms

    def bolt(self, name):
        return self.bolts[self.kits[name].identity.id]

    def rows(self, name, sql):
        return sqlite3.connect(self.kits[name].store.path).execute(sql).fetchall()

    def envoys(self, name):
        return self.rows(name, "SELECT id, hostname FROM envoys")

    def used(self, name):
        return self.rows(name, "SELECT used FROM enrollment_tokens")


class RefusalTextTests(unittest.TestCase):
    def test_round_trip(self):
        for refusal in (Refusal("token_used", "used 1 of 1: twice"),
                        Refusal("minter_unreachable", "bolt x: down", retryable=True)):
            again = refusal_from_text(refusal_text(refusal), "routing_failed")
            self.assertEqual(again.as_dict(), refusal.as_dict())

    def test_other_text_is_retryable_with_the_default_code(self):
        refusal = refusal_from_text("Something Broke: here", "routing_failed")
        self.assertEqual((refusal.code, refusal.retryable), ("routing_failed", True))


class ActionTests(unittest.TestCase):
    def setUp(self):
        self.federation = Federation(self)

    def test_interfaces_and_discovery(self):
        for action in ACTIONS.values():
            verifyObject(IPeerAction, action)
        verifyObject(IBolt, self.federation.bolt("a"))
        verifyObject(IBoltEnrollment, self.federation.kits["a"].enrollment)
        loaded = load_actions()
        self.assertIsInstance(loaded["route-enrollment"], RouteEnrollment)
        self.assertIsInstance(loaded["redeem-token"], RedeemToken)

    @defer.inlineCallbacks
    def test_redeem_token_counts_one_use_then_refuses(self):
        a = self.federation.bolt("a")
        token = yield self.federation.kits["a"].enrollment.create_token(uses=1)
        result = yield run_action(a, ACTIONS, "caller", "redeem-token", {"token": token.encode()})
        self.assertEqual(result, {"redeemed": True})
        self.assertEqual(self.federation.used("a"), [(1,)])
        error = yield self.assertFailure(
            run_action(a, ACTIONS, "caller", "redeem-token", {"token": token.encode()}),
            ActionError)
        self.assertTrue(str(error).startswith("token_used: "), str(error))
        self.assertEqual(self.federation.used("a"), [(1,)])

    @defer.inlineCallbacks
    def test_redeem_token_refuses_another_bolts_token_and_garbage(self):
        token = yield self.federation.kits["b"].enrollment.create_token()
        a = self.federation.bolt("a")
        error = yield self.assertFailure(
            run_action(a, ACTIONS, "caller", "redeem-token", {"token": token.encode()}),
            ActionError)
        self.assertTrue(str(error).startswith("bad_token: "), str(error))
        error = yield self.assertFailure(
            run_action(a, ACTIONS, "caller", "redeem-token", {"token": "vgoe_nonsense"}),
            ActionError)
        self.assertTrue(str(error).startswith("bad_request: "), str(error))
        self.assertEqual(self.federation.used("b"), [(0,)])

    @defer.inlineCallbacks
    def test_route_enrollment_refuses_a_hostname_it_does_not_own(self):
        token = yield self.federation.kits["a"].enrollment.create_token()
        key = EnvoyKey("web1.b.example.com")
        hostname, public_key, text, ts, signature = key.register_fields(token, self.federation.now_ms())
        args = {"hostname": hostname, "public_key": base64.b64encode(public_key).decode(),
                "token": text, "ts": ts, "signature": base64.b64encode(signature).decode()}
        error = yield self.assertFailure(
            run_action(self.federation.bolt("a"), ACTIONS, "caller", "route-enrollment", args),
            ActionError)
        refusal = refusal_from_text(str(error), "x")
        self.assertEqual((refusal.code, refusal.retryable), ("not_owner", True))
        args["public_key"] = "!!"
        error = yield self.assertFailure(
            run_action(self.federation.bolt("b"), ACTIONS, "caller", "route-enrollment", args),
            ActionError)
        self.assertTrue(str(error).startswith("malformed: "), str(error))
        self.assertEqual(self.federation.used("a"), [(0,)])


class RoutingTests(unittest.TestCase):
    def setUp(self):
        self.federation = Federation(self)
        self.kits = self.federation.kits

    def register_at(self, name, key, token):
        return defer.maybeDeferred(self.kits[name].enrollment.register,
                                   *key.register_fields(token, self.federation.now_ms()))

    @defer.inlineCallbacks
    def refused_at(self, name, key, token, code):
        refusal = yield self.assertFailure(self.register_at(name, key, token), Refusal)
        self.assertEqual(refusal.code, code, refusal.reason)
        self.assertNotIn(token.secret, refusal.reason)
        return refusal

    def assert_nothing_stored(self):
        for name in self.kits:
            self.assertEqual(self.federation.envoys(name), [], name)

    @defer.inlineCallbacks
    def test_owner_enrolls_with_the_dialled_bolts_token(self):
        token = yield self.kits["a"].enrollment.create_token(uses=2)
        key = EnvoyKey("web1.b.example.com")
        registered = yield self.register_at("a", key, token)
        b = self.kits["b"]
        self.assertEqual((registered["envoy_id"], registered["hostname"]),
                         (key.id, "web1.b.example.com"))
        self.assertEqual((registered["server_id"], registered["fingerprint"], registered["address"]),
                         (b.identity.id, b.identity.fingerprint, str(b.address)))
        self.assertEqual(self.federation.envoys("b"), [(key.id, "web1.b.example.com")])
        self.assertIsNotNone(b.fleet.index.get(key.id))
        self.assertEqual(self.federation.envoys("a"), [])
        self.assertIsNone(self.kits["a"].fleet.index.get(key.id))
        self.assertEqual(self.federation.used("a"), [(1,)])
        # A retry (the answer was lost): the same answer, no second use.
        again = yield self.register_at("a", key, token)
        self.assertEqual(again, registered)
        self.assertEqual(self.federation.used("a"), [(1,)])

    @defer.inlineCallbacks
    def test_token_is_redeemed_at_its_minter(self):
        token = yield self.kits["c"].enrollment.create_token()
        key = EnvoyKey("web1.b.example.com")
        registered = yield self.register_at("a", key, token)
        self.assertEqual(registered["server_id"], self.kits["b"].identity.id)
        self.assertEqual(self.federation.used("c"), [(1,)])
        self.assertEqual(self.federation.envoys("b"), [(key.id, "web1.b.example.com")])
        self.assertEqual(self.federation.envoys("a") + self.federation.envoys("c"), [])
        self.assertIn((self.kits["c"].identity.id, "redeem-token"),
                      self.federation.bolt("b").calls)

    @defer.inlineCallbacks
    def test_owner_takes_another_bolts_token_directly(self):
        token = yield self.kits["a"].enrollment.create_token()
        key = EnvoyKey("web1.b.example.com")
        registered = yield self.register_at("b", key, token)
        self.assertEqual(registered["server_id"], self.kits["b"].identity.id)
        self.assertEqual(self.federation.used("a"), [(1,)])

    @defer.inlineCallbacks
    def test_owner_down_is_retryable_and_stores_nothing(self):
        token = yield self.kits["a"].enrollment.create_token()
        self.federation.down.add("b")
        refusal = yield self.refused_at("a", EnvoyKey("web1.b.example.com"), token,
                                        "owner_unreachable")
        self.assertTrue(refusal.retryable)
        self.assert_nothing_stored()
        self.assertEqual(self.federation.used("a"), [(0,)])

    @defer.inlineCallbacks
    def test_an_owner_whose_answer_is_lost_does_not_claim_nothing_was_stored(self):
        token = yield self.kits["a"].enrollment.create_token()
        self.federation.mute.add("b")
        refusal = yield self.refused_at("a", EnvoyKey("web1.b.example.com"), token,
                                        "owner_unreachable")
        self.assertTrue(refusal.retryable)
        self.assertNotIn("nothing was stored", refusal.reason)
        self.assertIn("may have enrolled", refusal.reason)
        self.assertEqual(len(self.federation.envoys("b")), 1)  # it did

    @defer.inlineCallbacks
    def test_a_withdrawn_token_is_refused_by_its_minter_wherever_it_is_used(self):
        token = yield self.kits["c"].enrollment.create_token(uses=5)
        yield self.kits["c"].enrollment.withdraw_token(token.token_id)
        refusal = yield self.refused_at("a", EnvoyKey("web1.b.example.com"), token,
                                        "token_withdrawn")
        self.assertFalse(refusal.retryable)
        self.assert_nothing_stored()

    @defer.inlineCallbacks
    def test_minter_down_is_retryable_and_stores_nothing(self):
        token = yield self.kits["c"].enrollment.create_token()
        self.federation.down.add("c")
        refusal = yield self.refused_at("a", EnvoyKey("web1.b.example.com"), token,
                                        "minter_unreachable")
        self.assertTrue(refusal.retryable)
        self.assert_nothing_stored()

    @defer.inlineCallbacks
    def test_used_token_refused_with_its_code(self):
        token = yield self.kits["c"].enrollment.create_token()
        yield self.register_at("a", EnvoyKey("web1.b.example.com"), token)
        refusal = yield self.refused_at("a", EnvoyKey("web2.b.example.com"), token, "token_used")
        self.assertFalse(refusal.retryable)
        self.assertEqual(len(self.federation.envoys("b")), 1)

    @defer.inlineCallbacks
    def test_hostname_taken_costs_the_minter_no_use(self):
        first = yield self.kits["b"].enrollment.create_token()
        yield self.register_at("b", EnvoyKey("web1.b.example.com"), first)
        token = yield self.kits["c"].enrollment.create_token()
        yield self.refused_at("a", EnvoyKey("web1.b.example.com"), token, "hostname_taken")
        self.assertEqual(self.federation.used("c"), [(0,)])

    @defer.inlineCallbacks
    def test_token_from_outside_the_federation(self):
        token = yield self.kits["a"].enrollment.create_token()
        self.federation.bolts.pop(self.kits["a"].identity.id)
        yield self.refused_at("b", EnvoyKey("web1.b.example.com"), token, "foreign_token")
        self.assert_nothing_stored()

    @defer.inlineCallbacks
    def test_without_a_router_a_non_owner_redirects(self):
        self.kits["a"].enrollment.router = None
        token = yield self.kits["a"].enrollment.create_token()
        redirect = yield self.assertFailure(
            self.register_at("a", EnvoyKey("web1.b.example.com"), token), Redirected)
        self.assertEqual(redirect.server_id, self.kits["b"].identity.id)


class LiveRoutingTests(unittest.TestCase):
    """Three real servers in spanner mode on loopback; real envoys over TLS."""

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
    def converged(self):
        for _ in range(150):
            digests = {s.spanner.digest() for s in self.servers.values()}
            if len(digests) == 1:
                return
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.fail("the rosters did not converge")

    def count(self, name):
        path = self.servers[name].store.path
        return sqlite3.connect(path).execute("SELECT COUNT(*) FROM envoys").fetchone()[0]

    def register(self, hostname, token, at="a"):
        state = EnvoyState.open(self.mktemp(), create=True)
        address = "127.0.0.1:%d" % (self.servers[at].ports["envoy"],)
        d = envoy.register(reactor, state, hostname, token, address=address,
                           listener=self.connections)
        return d.addCallback(lambda protocol: (state, protocol))

    @defer.inlineCallbacks
    def test_register_anywhere_enrolls_at_the_owner(self):
        a = yield self.start("a")
        b = yield self.start("b")
        c = yield self.start("c")
        yield a.spanner.init()
        for joiner in (b, c):
            invite = yield a.spanner.invite(3600)
            yield joiner.spanner.join(invite["token"])
        yield self.converged()

        # A's token at A, for a hostname B owns: enrolled at B, attached there.
        token = yield a.enrollment.create_token(uses=1)
        state, protocol = yield self.register("web1.b.example.com", token)
        self.assertIsNone(protocol)  # told to attach elsewhere
        self.assertEqual((state.server_id, state.server_fingerprint),
                         (b.identity.id, b.identity.fingerprint))
        self.assertIsNotNone(b.fleet.index.get(state.envoy_id))
        self.assertIsNone(a.fleet.index.get(state.envoy_id))
        self.assertEqual((self.count("a"), self.count("b"), self.count("c")), (0, 1, 0))
        protocol, attached = yield envoy.attach(reactor, state, listener=self.connections)
        self.assertEqual(attached.envoy_id, state.envoy_id)
        answer, _ = yield protocol.checkin(state.last_seq + 1, state.bundle_version)
        self.assertIn(answer, ("bundle", "no_change"))

        # C's token at A, for B's hostname: redeemed at C.
        # (An envoy pins the fingerprint in its token; this one is given A's, as if
        # told to dial A, so that A, B and C each play their part.)
        token_c = yield c.enrollment.create_token(uses=1)
        token_c = EnrollmentToken(token_c.token_id, token_c.secret, token_c.server_id,
                                  str(a.envoy_address), a.identity.fingerprint)
        state, _ = yield self.register("web2.b.example.com", token_c)
        self.assertEqual(state.server_id, b.identity.id)
        used = sqlite3.connect(c.store.path).execute(
            "SELECT used FROM enrollment_tokens WHERE id = ?", (token_c.token_id,)).fetchone()
        self.assertEqual(used, (1,))
        self.assertEqual((self.count("a"), self.count("b"), self.count("c")), (0, 2, 0))

        # The same one-time token again: refused, with the minter's code.
        refused = yield self.assertFailure(self.register("web3.b.example.com", token_c), Refused)
        self.assertEqual((refused.code, refused.retryable), ("token_used", False))

        # B stopped: a clear, retryable refusal, and nothing stored anywhere.
        yield b.stopService()
        token = yield a.enrollment.create_token(uses=1)
        refused = yield self.assertFailure(self.register("web4.b.example.com", token), Refused)
        self.assertEqual((refused.code, refused.retryable), ("owner_unreachable", True))
        self.assertNotIn(token.secret, refused.reason)
        self.assertEqual((self.count("a"), self.count("b"), self.count("c")), (0, 2, 0))
        used = sqlite3.connect(a.store.path).execute(
            "SELECT used FROM enrollment_tokens WHERE id = ?", (token.token_id,)).fetchone()
        self.assertEqual(used, (0,))
