"""Enrollment routing with fakes: the Register taken at one bolt, enrolled at
the owner, the token redeemed at its minter; a refusal stores nothing.

The fake federation runs each bolt's actions in-process, and a refusal crosses
between bolts as the peer wire carries it: as data (``to_wire``/``from_wire``).
"""

import base64
import json
import random
import sqlite3

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.events import rosters_of, until
from tests.fleetkit import EnvoyConnections, EnvoyKey, FleetKit
from tests.peerkit import NoPeers, PeerSet, StubBolt
from vigo.envoy import main as envoy
from vigo.envoy.answers import Refused
from vigo.envoy.state import EnvoyState
from vigo.fleet.ownership import NoOwner, Owner, Redirected, StandaloneOwnership
from vigo.interfaces import IBolt, IBoltEnrollment, IPeerAction, IPeerCaller
from vigo.interfaces.components import IOwnership
from vigo.interfaces.errors import (
    ActionError,
    ActionFailed,
    BadArguments,
    PeerNoAnswer,
    PeerUnreachable,
    Refusal,
    from_wire,
    to_wire,
)
from vigo.plugins.vigo_enrollment import RedeemToken, RouteEnrollment
from vigo.spanner.enrollment_routing import EnrollmentRouter
from vigo.spanner.peer.actions import load_actions, run_action
from vigo.spanner.peer.pool import PeerClients
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


def across_the_wire(failure):
    """A peer's refusal as the caller gets it: sent as data, raised again."""
    failure.trap(Refusal)
    raise from_wire(json.loads(json.dumps(to_wire(failure.value))))


@implementer(IPeerCaller)
class FederationPeers:
    """The other bolts as bolt ``caller_id`` reaches them: a call runs the
    target's action in-process and its refusal crosses as data, unless the
    target is down (unreachable) or mute (it runs, but the answer is lost)."""

    def __init__(self, federation, caller_id):
        self.federation = federation
        self.caller_id = caller_id
        self.calls = []

    def call(self, bolt_id, action_name, args):
        self.calls.append((bolt_id, action_name))
        target = self.federation.bolts.get(bolt_id)
        if target is None or target.name in self.federation.down:
            return defer.fail(PeerUnreachable("bolt %s is down" % (bolt_id,)))
        d = run_action(target, ACTIONS, self.caller_id, action_name, args)
        if target.name in self.federation.mute:
            return d.addBoth(lambda _: defer.fail(PeerNoAnswer("no answer from %s" % bolt_id)))
        return d.addErrback(across_the_wire)


class FakeBolt(StubBolt):
    """A bolt with a real enrollment, whose calls reach the federation's bolts."""

    def __init__(self, federation, kit, name):
        self.kit = kit
        self.id = kit.identity.id
        self.name = name
        self.peers = FederationPeers(federation, self.id)

    def now(self):
        return self.kit.clock.seconds()

    def enrollment(self):
        return self.kit.enrollment

    def call(self, bolt_id, action_name, args):
        return self.peers.call(bolt_id, action_name, args)


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
            kit.enrollment.router = EnrollmentRouter(bolt.peers,
                                                     lambda bolt_id: bolt_id in self.bolts)
        self.now_ms = self.kits["a"].now_ms

    def bolt(self, name):
        return self.bolts[self.kits[name].identity.id]

    def rows(self, name, sql):
        return sqlite3.connect(self.kits[name].store.path).execute(sql).fetchall()

    def envoys(self, name):
        return self.rows(name, "SELECT id, hostname FROM envoys")

    def used(self, name):
        return self.rows(name, "SELECT used FROM enrollment_tokens")


@implementer(IPeerCaller)
class AnsweringPeers:
    """Every call fails with the error a peer's answer envelope held."""

    def __init__(self, error_data):
        self.error_data = error_data

    def call(self, bolt_id, action_name, args):
        return defer.fail(from_wire(self.error_data, "bolt %s" % (bolt_id,)))


class RefusalWireTests(unittest.TestCase):
    """Refusals cross between bolts as data: code, reason and retryable kept."""

    def fields(self, refusal):
        return (refusal.code, refusal.reason, refusal.retryable)

    def test_round_trip(self):
        for refusal, kind in ((Refusal("token_used", "used 1 of 1: twice"), ActionError),
                              (Refusal("minter_unreachable", "bolt x: down", retryable=True),
                               ActionError),
                              (ActionError("bolt c is draining", code="bolt_not_active"),
                               ActionError),
                              (BadArguments("args.token: missing"), BadArguments)):
            data = to_wire(refusal)
            self.assertEqual(data, {"kind": kind.__name__, "code": refusal.code,
                                    "reason": refusal.reason, "retryable": refusal.retryable})
            again = from_wire(json.loads(json.dumps(data)))
            self.assertIs(type(again), kind)
            self.assertEqual(self.fields(again), self.fields(refusal))

    @defer.inlineCallbacks
    def test_an_actions_refusal_arrives_as_it_was_raised(self):
        federation = Federation(self)
        a, b = federation.kits["a"], federation.kits["b"]
        token = yield a.tokens.create(uses=1)
        yield a.tokens.redeem(token.encode())
        # What the minter's own redeem refuses with...
        refusal = yield self.assertFailure(a.tokens.redeem(token.encode()), Refusal)
        self.assertEqual(refusal.code, "token_used")
        # ... reaches another bolt's call to redeem-token there,
        error = yield self.assertFailure(
            federation.bolt("b").call(a.identity.id, "redeem-token", {"token": token.encode()}),
            ActionError)
        self.assertEqual(self.fields(error), self.fields(refusal))
        # and the router hands it on as it came.
        routed = yield self.assertFailure(
            b.enrollment.router.redeem_at(a.identity.id, token.encode()), Refusal)
        self.assertEqual(self.fields(routed), self.fields(refusal))
        self.assertEqual(federation.used("a"), [(1,)])

    def test_a_malformed_error_envelope_becomes_action_failed(self):
        good = {"kind": "ActionError", "code": "token_used", "reason": "used", "retryable": False}
        for data in ("token_used: used 1 of 1", None, {}, dict(good, kind="SpannerRefusal"),
                     dict(good, code=5), dict(good, reason=None), dict(good, retryable="no"),
                     {k: v for k, v in good.items() if k != "retryable"}):
            error = from_wire(data, "bolt x")
            self.assertIs(type(error), ActionFailed, data)
            self.assertEqual(self.fields(error),
                             ("action_failed", "bolt x answered with a malformed error", False))
        # Over-long fields are cut, not trusted.
        error = from_wire(dict(good, code="c" * 100, reason="r" * 10000))
        self.assertEqual((len(error.code), len(error.reason)), (64, 4096))

    def test_the_router_does_not_read_codes_out_of_text(self):
        router = EnrollmentRouter(AnsweringPeers("token_used: used 1 of 1"), lambda bolt_id: True)
        refusal = self.failureResultOf(router.redeem_at("m" * 20, "vgoe_x"), Refusal).value
        self.assertEqual((refusal.code, refusal.retryable), ("routing_failed", True))
        self.assertIn("malformed error", refusal.reason)


class InterfaceTests(unittest.TestCase):
    """The fakes here, and the real classes they stand in for."""

    def test_fakes_and_the_real_classes(self):
        federation = Federation(self)
        kit, bolt = federation.kits["a"], federation.bolt("a")
        verifyObject(IBolt, bolt)
        verifyObject(IPeerCaller, bolt.peers)
        verifyObject(IPeerCaller, AnsweringPeers({}))
        verifyObject(IOwnership, kit.ownership)
        verifyObject(IBoltEnrollment, kit.enrollment)
        real = PeerSet(("a",)).facade("a", ACTIONS)
        verifyObject(IBolt, real)
        verifyObject(IPeerCaller, NoPeers())
        verifyObject(IPeerCaller, PeerClients(Clock(), kit.identity, lambda bolt_id: None))
        verifyObject(IOwnership, StandaloneOwnership(kit.identity, lambda: kit.address))


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
        token = yield self.federation.kits["a"].tokens.create(uses=1)
        result = yield run_action(a, ACTIONS, "caller", "redeem-token", {"token": token.encode()})
        self.assertEqual(result, {"redeemed": True})
        self.assertEqual(self.federation.used("a"), [(1,)])
        error = yield self.assertFailure(
            run_action(a, ACTIONS, "caller", "redeem-token", {"token": token.encode()}),
            ActionError)
        self.assertEqual((error.code, error.retryable), ("token_used", False))
        self.assertEqual(self.federation.used("a"), [(1,)])

    @defer.inlineCallbacks
    def test_redeem_token_refuses_another_bolts_token_and_garbage(self):
        token = yield self.federation.kits["b"].tokens.create()
        a = self.federation.bolt("a")
        error = yield self.assertFailure(
            run_action(a, ACTIONS, "caller", "redeem-token", {"token": token.encode()}),
            ActionError)
        self.assertEqual(error.code, "bad_token")
        self.assertEqual(error.reason, "this server did not mint that enrollment token")
        error = yield self.assertFailure(
            run_action(a, ACTIONS, "caller", "redeem-token", {"token": "vgoe_nonsense"}),
            ActionError)
        self.assertEqual(error.code, "bad_request")
        self.assertEqual(self.federation.used("b"), [(0,)])

    @defer.inlineCallbacks
    def test_route_enrollment_refuses_a_hostname_it_does_not_own(self):
        token = yield self.federation.kits["a"].tokens.create()
        key = EnvoyKey("web1.b.example.com")
        hostname, public_key, text, ts, signature = key.register_fields(token, self.federation.now_ms())
        args = {"hostname": hostname, "public_key": base64.b64encode(public_key).decode(),
                "token": text, "ts": ts, "signature": base64.b64encode(signature).decode()}
        error = yield self.assertFailure(
            run_action(self.federation.bolt("a"), ACTIONS, "caller", "route-enrollment", args),
            ActionError)
        self.assertEqual((error.code, error.retryable), ("not_owner", True))
        self.assertIn("web1.b.example.com belongs to server %s" % (self.federation.bolt("b").id,),
                      error.reason)
        args["public_key"] = "!!"
        error = yield self.assertFailure(
            run_action(self.federation.bolt("b"), ACTIONS, "caller", "route-enrollment", args),
            ActionError)
        self.assertEqual((error.code, error.reason), ("malformed", "public_key is not valid base64"))
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
        token = yield self.kits["a"].tokens.create(uses=2)
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
        token = yield self.kits["c"].tokens.create()
        key = EnvoyKey("web1.b.example.com")
        registered = yield self.register_at("a", key, token)
        self.assertEqual(registered["server_id"], self.kits["b"].identity.id)
        self.assertEqual(self.federation.used("c"), [(1,)])
        self.assertEqual(self.federation.envoys("b"), [(key.id, "web1.b.example.com")])
        self.assertEqual(self.federation.envoys("a") + self.federation.envoys("c"), [])
        self.assertIn((self.kits["c"].identity.id, "redeem-token"),
                      self.federation.bolt("b").peers.calls)

    @defer.inlineCallbacks
    def test_owner_takes_another_bolts_token_directly(self):
        token = yield self.kits["a"].tokens.create()
        key = EnvoyKey("web1.b.example.com")
        registered = yield self.register_at("b", key, token)
        self.assertEqual(registered["server_id"], self.kits["b"].identity.id)
        self.assertEqual(self.federation.used("a"), [(1,)])

    @defer.inlineCallbacks
    def test_owner_down_is_retryable_and_stores_nothing(self):
        token = yield self.kits["a"].tokens.create()
        self.federation.down.add("b")
        refusal = yield self.refused_at("a", EnvoyKey("web1.b.example.com"), token,
                                        "owner_unreachable")
        self.assertTrue(refusal.retryable)
        self.assert_nothing_stored()
        self.assertEqual(self.federation.used("a"), [(0,)])

    @defer.inlineCallbacks
    def test_an_owner_whose_answer_is_lost_does_not_claim_nothing_was_stored(self):
        token = yield self.kits["a"].tokens.create()
        self.federation.mute.add("b")
        refusal = yield self.refused_at("a", EnvoyKey("web1.b.example.com"), token,
                                        "owner_unreachable")
        self.assertTrue(refusal.retryable)
        self.assertNotIn("nothing was stored", refusal.reason)
        self.assertIn("may have enrolled", refusal.reason)
        self.assertEqual(len(self.federation.envoys("b")), 1)  # it did

    @defer.inlineCallbacks
    def test_a_withdrawn_token_is_refused_by_its_minter_wherever_it_is_used(self):
        token = yield self.kits["c"].tokens.create(uses=5)
        yield self.kits["c"].tokens.withdraw(token.token_id)
        refusal = yield self.refused_at("a", EnvoyKey("web1.b.example.com"), token,
                                        "token_withdrawn")
        self.assertFalse(refusal.retryable)
        self.assert_nothing_stored()

    @defer.inlineCallbacks
    def test_minter_down_is_retryable_and_stores_nothing(self):
        token = yield self.kits["c"].tokens.create()
        self.federation.down.add("c")
        refusal = yield self.refused_at("a", EnvoyKey("web1.b.example.com"), token,
                                        "minter_unreachable")
        self.assertTrue(refusal.retryable)
        self.assert_nothing_stored()

    @defer.inlineCallbacks
    def test_used_token_refused_with_its_code(self):
        token = yield self.kits["c"].tokens.create()
        yield self.register_at("a", EnvoyKey("web1.b.example.com"), token)
        refusal = yield self.refused_at("a", EnvoyKey("web2.b.example.com"), token, "token_used")
        self.assertFalse(refusal.retryable)
        self.assertEqual(len(self.federation.envoys("b")), 1)

    @defer.inlineCallbacks
    def test_hostname_taken_costs_the_minter_no_use(self):
        first = yield self.kits["b"].tokens.create()
        yield self.register_at("b", EnvoyKey("web1.b.example.com"), first)
        token = yield self.kits["c"].tokens.create()
        yield self.refused_at("a", EnvoyKey("web1.b.example.com"), token, "hostname_taken")
        self.assertEqual(self.federation.used("c"), [(0,)])

    @defer.inlineCallbacks
    def test_token_from_outside_the_federation(self):
        token = yield self.kits["a"].tokens.create()
        self.federation.bolts.pop(self.kits["a"].identity.id)
        yield self.refused_at("b", EnvoyKey("web1.b.example.com"), token, "foreign_token")
        self.assert_nothing_stored()

    @defer.inlineCallbacks
    def test_without_a_router_a_non_owner_redirects(self):
        self.kits["a"].enrollment.router = None
        token = yield self.kits["a"].tokens.create()
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
        from vigo.server import build_server

        server = build_server(spanner_config(self.mktemp(), name, self.group, self.port), reactor)
        server.startService()
        self.addCleanup(lambda: server.stopService() if server.running else None)
        yield server.ready
        self.servers[name] = server
        if len(self.servers) == 1:  # cleanups run last first: envoys hang up first
            self.addCleanup(self.connections.close_all)
        return server

    def converged(self):
        servers = list(self.servers.values())

        def agree():
            return (len({s.spanner.roster.digest() for s in servers}) == 1
                    and all(len(s.spanner.roster.bolt_ids()) == len(servers) for s in servers))

        return until(agree, *rosters_of(*servers), what="the rosters converge")

    def count(self, name):
        path = self.servers[name].store.path
        return sqlite3.connect(path).execute("SELECT COUNT(*) FROM envoys").fetchone()[0]

    def register(self, hostname, token, at="a"):
        state = EnvoyState.open(self.mktemp(), create=True)
        address = "127.0.0.1:%d" % (self.servers[at].advertised.bound("envoy"),)
        d = envoy.register(reactor, state, hostname, token, address=address,
                           listener=self.connections)
        return d.addCallback(lambda protocol: (state, protocol))

    @defer.inlineCallbacks
    def test_register_anywhere_enrolls_at_the_owner(self):
        a = yield self.start("a")
        b = yield self.start("b")
        c = yield self.start("c")
        yield a.spanner.admin.init()
        for joiner in (b, c):
            invite = yield a.spanner.admin.invite(3600)
            yield joiner.spanner.admin.join(invite["token"])
        yield self.converged()

        # A's token at A, for a hostname B owns: enrolled at B, attached there.
        token = yield a.enrollment_tokens.create(uses=1)
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
        token_c = yield c.enrollment_tokens.create(uses=1)
        token_c = EnrollmentToken(token_c.token_id, token_c.secret, token_c.server_id,
                                  str(a.advertised.envoy()), a.identity.fingerprint)
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
        token = yield a.enrollment_tokens.create(uses=1)
        refused = yield self.assertFailure(self.register("web4.b.example.com", token), Refused)
        self.assertEqual((refused.code, refused.retryable), ("owner_unreachable", True))
        self.assertNotIn(token.secret, refused.reason)
        self.assertEqual((self.count("a"), self.count("b"), self.count("c")), (0, 2, 0))
        used = sqlite3.connect(a.store.path).execute(
            "SELECT used FROM enrollment_tokens WHERE id = ?", (token.token_id,)).fetchone()
        self.assertEqual(used, (0,))
