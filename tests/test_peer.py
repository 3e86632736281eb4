"""Peer RPC: the portal, realm and perspectives over an in-memory PB wire, then
the whole thing over mutual TLS on loopback sockets."""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import crypto
from twisted.internet import defer, endpoints, reactor
from twisted.internet.task import Clock
from twisted.spread import pb
from twisted.test import iosim
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from tests.peerkit import FakeRoster, NoPeers, PeerSet, StubBolt, make_actions
from vigo.identity import Identity
from vigo.interfaces import IBolt, IPeerCaller
from vigo.interfaces.components import IPeerRoster
from vigo.interfaces.errors import (
    ActionError,
    ActionFailed,
    BadArguments,
    JoinRefused,
    NotAMember,
    PeerError,
    PeerNoAnswer,
    PeerUnreachable,
    UnknownAction,
)
from vigo.mutual_tls import PeerKeyError, peer_key
from vigo.spanner.peer.client import PeerClient, _BrokerFactory
from vigo.spanner.peer.server import (
    LoginRefused,
    PeerPerspective,
    PeerPortal,
    listen_peers,
    peer_server_factory,
)
from vigo.spanner.roster.local import LocalRoster
from vigo.testing.store import ImmediateStore
from vigo.tls import PinnedKeyClientCreator, identity_certificate


class CertifiedTransport(iosim.FakeTransport):
    """A fake server transport whose TLS peer presented ``certificate``."""

    certificate = None
    requests = 0

    def getPeerCertificate(self):
        return self.certificate

    def request_received(self):
        """What the peer port's guard (vigo/server/limits.py) is told."""
        self.requests += 1


class InMemoryWire:
    """A PB client logged in to a peer portal over an ``iosim`` pump."""

    def __init__(self, testcase, portal, identity):
        self.testcase = testcase
        client_factory = pb.PBClientFactory()
        client = client_factory.buildProtocol(None)
        server = peer_server_factory(portal).buildProtocol(None)
        server_transport = self.server_transport = CertifiedTransport(server, isServer=True)
        if identity is not None:
            server_transport.certificate = crypto.X509.from_cryptography(
                identity_certificate(identity))
        self.pump = iosim.connect(server, server_transport, client,
                                  iosim.FakeTransport(client, isServer=False))
        self.root = self.done(client_factory.getRootObject())

    def fire(self, d):
        self.pump.flush()
        return d

    def done(self, d):
        return self.testcase.successResultOf(self.fire(d))

    def failed(self, d, *types):
        return self.testcase.failureResultOf(self.fire(d), *types)

    def login(self):
        return self.done(self.root.callRemote("login"))


def refusal_in(testcase, answer, error_type, text):
    """The error of a peer answer envelope, checked: ``error_type``'s kind and
    code, not retryable, and ``text`` in its reason."""
    testcase.assertEqual(list(answer), ["error"], answer)
    error = answer["error"]
    testcase.assertEqual(sorted(error), ["code", "kind", "reason", "retryable"])
    testcase.assertEqual((error["kind"], error["code"], error["retryable"]),
                         (error_type.__name__, error_type.code, False), error)
    testcase.assertIn(text, error["reason"])
    return error


class BoundedBrokerTests(unittest.SynchronousTestCase):
    """One PB message is bounded: a peer cannot make the other side buffer more."""

    def broker(self):
        from twisted.internet.testing import StringTransport

        from vigo.spanner.peer.broker import BoundedBroker

        class Factory:
            def clientConnectionMade(self, broker):
                pass

        broker = BoundedBroker(isClient=False)
        broker.factory = Factory()
        broker.max_message = 1000
        transport = StringTransport()
        told = []
        transport.request_received = lambda: told.append(1)
        broker.makeConnection(transport)
        return broker, transport, told

    def test_a_message_past_the_bound_hangs_up(self):
        from twisted.spread import banana

        broker, transport, told = self.broker()
        broker.dataReceived(banana.encode(b"pb"))  # the dialect: one whole message
        self.assertEqual(told, [1])
        broker.expressionReceived = lambda message: None
        item = banana.encode([b"message", 1, b"root", b"x" * 600])
        broker.dataReceived(item[:-10])
        self.assertFalse(transport.disconnecting)
        broker.dataReceived(b"\x80" * 500)  # still no whole message: over 1,000 bytes
        self.assertTrue(transport.disconnecting)

    def test_whole_messages_reset_the_count(self):
        from twisted.spread import banana

        broker, transport, told = self.broker()
        broker.dataReceived(banana.encode(b"pb"))
        broker.expressionReceived = lambda message: None  # what PB makes of them is not at stake
        for _ in range(5):
            broker.dataReceived(banana.encode([b"decref", 12345]) * 20)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(told), 101)


class PortalTests(unittest.TestCase):
    """The portal, checker, realm and perspectives, with no sockets."""

    def setUp(self):
        self.peers = PeerSet(("alpha", "beta"))
        self.actions = make_actions()
        self.joins = []
        self.alpha = self.peers.facade("alpha", self.actions)
        self.portal = PeerPortal(self.peers.roster, self.alpha, self.actions, self.join)

    def join(self, key, token_text, row_data):
        self.joins.append((key, token_text, row_data))
        return defer.succeed({"admitted": True})

    def wire(self, identity):
        return InMemoryWire(self, self.portal, identity)

    def member(self):
        wire = self.wire(self.peers.identities["beta"])
        return wire, wire.login()

    def refused(self, wire, d, error_type, text):
        """A call answered with an error envelope (the refusal as data)."""
        return refusal_in(self, wire.done(d), error_type, text)

    def login_refused(self, wire, d, text):
        """A login refused before there is a perspective to answer with: a PB error."""
        failure = wire.failed(d, LoginRefused)
        self.assertIn(text, failure.getErrorMessage())
        return failure

    def test_facade_provides_ibolt(self):
        verifyObject(IBolt, self.alpha)

    def test_the_port_guard_is_told_of_each_whole_message(self):
        wire, _ = self.member()
        before = wire.server_transport.requests
        self.assertGreaterEqual(before, 2, "the dialect and the login")
        wire.done(wire.root.callRemote("login"))
        self.assertGreater(wire.server_transport.requests, before)

    def test_fakes_and_real_parts_provide_their_interfaces(self):
        verifyObject(IBolt, StubBolt())
        verifyObject(IPeerCaller, NoPeers())
        verifyObject(IPeerCaller, self.alpha)
        verifyObject(IPeerCaller, self.peers.clients("alpha", self.peers.clock))
        verifyObject(IPeerRoster, FakeRoster())
        store = ImmediateStore(self.mktemp())
        self.addCleanup(store.close)
        verifyObject(IPeerRoster, LocalRoster(store, self.peers.identities["alpha"], Clock()))

    def test_member_calls_ping(self):
        self.peers.clock.advance(1234.5)
        wire, beta = self.member()
        answer = wire.done(beta.callRemote("act", "ping", {}))
        self.assertEqual(answer, {"ok": {"bolt_id": self.alpha.id, "name": "alpha",
                                         "digest": "5a" * 32, "time": 1234.5}})
        self.assertEqual(wire.done(beta.callRemote("ping")),
                         {"ok": {"bolt_id": self.alpha.id, "digest": "5a" * 32}})

    def test_action_sees_authenticated_caller(self):
        wire, beta = self.member()
        answer = wire.done(beta.callRemote("act", "record", {"text": "hi", "count": 2}))
        self.assertEqual(answer, {"ok": {"echo": {"text": "hi", "count": 2},
                                         "by": self.alpha.id}})
        self.assertEqual(self.actions["record"].calls,
                         [(self.peers.identities["beta"].id, {"text": "hi", "count": 2})])

    def test_login_twice_is_one_perspective(self):
        avatars = []
        request = self.portal.realm.requestAvatar
        self.patch(self.portal.realm, "requestAvatar", lambda *a: avatars.append(a) or request(*a))
        wire, beta = self.member()
        again = wire.login()
        self.assertEqual(wire.done(again.callRemote("act", "ping", {}))["ok"]["name"], "alpha")
        self.assertEqual(len(avatars), 1)

    def test_bad_arguments_never_run(self):
        wire, beta = self.member()
        cases = [
            ({"text": 5}, "args.text: expected str, got int"),
            ({"text": "x" * 101}, "args.text: expected 0 to 100 characters, got 101"),
            ({"text": "hi", "count": 9}, "args.count"),
            ({"text": "hi", "extra": 1}, "args['extra']: unexpected"),
            ({}, "args.text: missing"),
            ({"text": "x" * (70 * 1024)}, "args: larger than 65536 bytes"),
            (["text"], "args: expected a dict, got list"),
        ]
        for args, text in cases:
            self.refused(wire, beta.callRemote("act", "record", args), BadArguments, text)
        self.refused(wire, beta.callRemote("act", "Record!", {}), BadArguments, "action_name")
        self.refused(wire, beta.callRemote("act", "record"), BadArguments,
                     "act takes 2 arguments (action_name, args), got 1")
        self.refused(wire, beta.callRemote("act", "record", {}, 3), BadArguments, "got 3")
        self.refused(wire, beta.callRemote("act", "record", args={}), BadArguments,
                     "got 1 and keywords args")
        self.assertEqual(self.actions["record"].calls, [])
        self.assertEqual(self.portal.refusals["BadArguments"], len(cases) + 4)

    def test_undecodable_arguments(self):
        wire, beta = self.member()
        self.refused(wire, beta.callRemote("act", "record", Sneaky()), BadArguments,
                     "could not be decoded")

    def test_unknown_action_and_method(self):
        wire, beta = self.member()
        self.refused(wire, beta.callRemote("act", "reboot", {}), UnknownAction,
                     "has no action 'reboot'; it has: bad-result, broken")
        self.refused(wire, beta.callRemote("shutdown"), UnknownAction, "no remote method")

    def test_action_failures(self):
        wire, beta = self.member()
        self.refused(wire, beta.callRemote("act", "refuse", {}), ActionError, "no such envoy: web9")
        # A refusal with a code of its own keeps it, and its retryable, as data.
        self.assertEqual(wire.done(beta.callRemote("act", "refuse-coded", {})),
                         {"error": {"kind": "ActionError", "code": "not_found",
                                    "reason": "no envoy web9 on this bolt", "retryable": True}})
        self.refused(wire, beta.callRemote("act", "broken", {}), ActionFailed,
                     "ValueError: the widget is missing")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.refused(wire, beta.callRemote("act", "bad-result", {}), ActionFailed, "got set")
        self.refused(wire, beta.callRemote("act", "huge-result", {}), ActionFailed, "larger than")
        self.assertEqual(wire.done(beta.callRemote("act", "later", {})), {"ok": ["done"]})

    def test_unknown_key_is_an_applicant(self):
        stranger = Identity.generate()
        wire = self.wire(stranger)
        applicant = wire.login()
        self.refused(wire, applicant.callRemote("act", "ping", {}), NotAMember,
                     "key %s is not a member" % (stranger.fingerprint,))
        self.refused(wire, applicant.callRemote("ping"), NotAMember, "can only join")
        row = {"bolt_id": stranger.id, "addresses": {"peer": "10.0.0.9:1533"}}
        self.assertEqual(wire.done(applicant.callRemote("join", "vigo-join-abc", row)),
                         {"ok": {"admitted": True}})
        self.assertEqual(self.joins, [(stranger.public_key, "vigo-join-abc", row)])

    def test_join_arguments_checked(self):
        wire = self.wire(Identity.generate())
        applicant = wire.login()
        self.refused(wire, applicant.callRemote("join", b"token", {}), BadArguments, "token_text")
        self.refused(wire, applicant.callRemote("join", "t", {"x": "y" * 20000}), BadArguments,
                     "row_data: larger than")
        self.refused(wire, applicant.callRemote("join", "t", ["row"]), BadArguments, "row_data")
        self.assertEqual(self.joins, [])

    def test_joins_refused_without_a_handler(self):
        self.portal = PeerPortal(self.peers.roster, self.alpha, self.actions)
        wire = self.wire(Identity.generate())
        self.refused(wire, wire.login().callRemote("join", "t", {}), JoinRefused,
                     "no join handler is configured")

    def test_removed_bolt_refused_at_login(self):
        self.peers.roster.set_status(self.peers.identities["beta"], "removed")
        wire = self.wire(self.peers.identities["beta"])
        self.login_refused(wire, wire.root.callRemote("login"), "is removed in the roster")

    def test_removal_applies_to_open_connections(self):
        wire, beta = self.member()
        self.peers.roster.set_status(self.peers.identities["beta"], "removed")
        self.refused(wire, beta.callRemote("act", "ping", {}), NotAMember, "is removed")

    def test_draining_bolt_still_calls(self):
        self.peers.roster.set_status(self.peers.identities["beta"], "draining")
        wire, beta = self.member()
        self.assertEqual(wire.done(beta.callRemote("act", "ping", {}))["ok"]["name"], "alpha")

    def test_no_certificate_no_login(self):
        wire = self.wire(None)
        self.login_refused(wire, wire.root.callRemote("login"), "presented no TLS certificate")
        self.login_refused(wire, wire.root.callRemote("login", "admin"),
                           "login takes 0 arguments (), got 1")
        self.login_refused(wire, wire.root.callRemote("loginAnonymous"), "only offers login")

    def test_local_call_through_the_facade(self):
        self.assertEqual(self.successResultOf(self.alpha.call(self.alpha.id, "record", {"text": "a"})),
                         {"echo": {"text": "a"}, "by": self.alpha.id})
        self.failureResultOf(self.alpha.call(self.alpha.id, "record", {"text": 1}), BadArguments)
        self.failureResultOf(self.alpha.call("nobody", "ping", {}), PeerUnreachable)

    @settings(max_examples=200, deadline=None)
    @given(st.one_of(st.text(max_size=70), st.binary(max_size=5), st.integers(), st.none(),
                     st.sampled_from(["ping", "record", "refuse", "bad-result", "later"])),
           st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                        | st.text(max_size=9) | st.binary(max_size=3),
                        lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=4),
                        max_leaves=20))
    def test_fuzzed_calls_answer_or_refuse(self, name, args):
        beta = self.peers.identities["beta"]
        _, perspective, _ = self.portal.realm.requestAvatar(beta.id, _Mind(beta), pb.IPerspective)
        try:
            d = perspective.perspective_act(name, args)
        except PeerError:
            return
        self.successResultOf(d.addErrback(lambda f: f.trap(PeerError)))

    def test_peer_key_needs_ed25519_tls(self):
        self.assertRaises(PeerKeyError, peer_key, object())
        transport = CertifiedTransport(None, isServer=True)
        transport.certificate = crypto.X509.from_cryptography(ecdsa_certificate())
        self.assertRaises(PeerKeyError, peer_key, transport)


def ecdsa_certificate():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-a-bolt")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))


class _Mind:
    def __init__(self, identity):
        self.public_key = identity.public_key


class Sneaky(pb.Copyable):
    """A class PB will send but the peer port must not build."""


class MutualTLSTests(unittest.TestCase):
    """Two bolts on loopback sockets, mutual TLS, real reactor, tiny backoff."""

    def setUp(self):
        self.peers = PeerSet(("alpha", "beta"), clock=reactor)
        self.actions = make_actions()
        self.joins = []
        self.alpha = self.peers.facade("alpha", self.actions)
        self.portal = PeerPortal(self.peers.roster, self.alpha, self.actions, self.join)
        self.server_lost = []
        self.server_brokers = []
        self.port = None
        self.addCleanup(self.stop_server)
        return self.listen()

    def join(self, key, token_text, row_data):
        self.joins.append(key)
        return {"roster": "snapshot"}

    @defer.inlineCallbacks
    def listen(self, port_number=0):
        address = "127.0.0.1:%d" % (port_number,)
        self.port = yield listen_peers(reactor, self.peers.identities["alpha"], address, self.portal)
        self.address = "127.0.0.1:%d" % (self.port.getHost().port,)
        self.peers.addresses["alpha"] = self.address
        factory = self.port.factory.wrappedFactory
        build = factory.buildProtocol

        def spy(addr):
            broker = build(addr)
            lost = defer.Deferred()
            broker.notifyOnDisconnect(lambda: lost.callback(None))
            self.server_lost.append(lost)
            self.server_brokers.append(broker)
            return broker
        factory.buildProtocol = spy

    @defer.inlineCallbacks
    def stop_server(self):
        if self.port is not None:
            port, self.port = self.port, None
            yield port.stopListening()
        for broker in self.server_brokers:
            if not broker.disconnected:
                broker.transport.loseConnection()
        yield defer.gatherResults(self.server_lost)

    def client(self, name_or_identity="beta", fingerprint=None, **options):
        identity = self.peers.identities.get(name_or_identity, name_or_identity)
        options.setdefault("retry_policy", lambda attempt: 0.01)
        client = PeerClient(reactor, identity, self.address,
                            fingerprint or self.peers.identities["alpha"].fingerprint, **options)
        client.start()
        self.addCleanup(client.stop)
        return client

    @defer.inlineCallbacks
    def test_member_pings_another_bolt(self):
        client = yield self.client().when_connected()
        answer = yield client.call("ping", {})
        self.assertEqual((answer["bolt_id"], answer["name"], answer["digest"]),
                         (self.alpha.id, "alpha", "5a" * 32))
        self.assertEqual((yield client.ping())["bolt_id"], self.alpha.id)
        self.assertEqual(client.peer_key(), self.peers.identities["alpha"].public_key)

    @defer.inlineCallbacks
    def test_facade_calls_any_bolt_by_id(self):
        clients = self.peers.clients("beta", reactor, retry_policy=lambda n: 0.01)
        self.addCleanup(clients.stopService)
        beta = self.peers.facade("beta", self.actions, clients)
        # The first call to a bolt waits for the connection instead of failing.
        self.assertEqual((yield beta.call(self.alpha.id, "ping", {}))["name"], "alpha")
        self.assertTrue(clients.get(self.alpha.id).connected)
        self.assertEqual((yield beta.call(self.alpha.id, "ping", {}))["name"], "alpha")
        self.assertIs(clients.client_for(self.alpha.id, self.address,
                                          self.peers.identities["alpha"].fingerprint),
                      clients.get(self.alpha.id))

    @defer.inlineCallbacks
    def test_redial_skips_the_backoff_of_a_bolt_that_is_back(self):
        port_number = self.port.getHost().port
        yield self.stop_server()
        backoffs = []
        clients = self.peers.clients("beta", reactor,
                                     retry_policy=lambda n: backoffs.append(n) or (
                                         0.01 if n < 3 else 3600.0))
        self.addCleanup(clients.stopService)
        fingerprint = self.peers.identities["alpha"].fingerprint
        waiting = clients.client_for(self.alpha.id, self.address, fingerprint)
        failed = waiting.when_connected(fail_after_failures=3)
        yield self.assertFailure(failed, Exception)  # refused 3 times: an hour's backoff
        self.assertEqual((backoffs, waiting.failures), ([1, 2, 3], 3))
        # A call meanwhile fails at once, with the reason, instead of waiting.
        beta = self.peers.facade("beta", self.actions, clients)
        error = self.failureResultOf(beta.call(self.alpha.id, "ping", {}), PeerUnreachable)
        self.assertIn("cannot be reached", str(error.value))
        self.assertIn(waiting.last_error, str(error.value))
        yield self.listen(port_number)  # the bolt is back on its address
        yield clients.redial(self.alpha.id)
        fresh = clients.get(self.alpha.id)
        self.assertIsNot(fresh, waiting)
        yield fresh.when_connected()
        self.assertEqual((yield fresh.call("ping", {}))["name"], "alpha")
        yield clients.redial(self.alpha.id)  # connected: left alone
        self.assertIs(clients.get(self.alpha.id), fresh)

    @defer.inlineCallbacks
    def test_unknown_key_only_joins(self):
        stranger = Identity.generate()
        client = yield self.client(stranger).when_connected()
        error = yield self.assertFailure(client.call("ping", {}), NotAMember)
        self.assertEqual(error.code, "not_member")
        self.assertIn(stranger.fingerprint, error.reason)
        answer = yield client.perspective.callRemote("join", "vigo-join-x", {"bolt_id": stranger.id})
        self.assertEqual((answer, self.joins),
                         ({"ok": {"roster": "snapshot"}}, [stranger.public_key]))
        # PeerClient.join unwraps the same envelope.
        answer = yield client.join("vigo-join-y", {"bolt_id": stranger.id})
        self.assertEqual((answer, self.joins),
                         ({"roster": "snapshot"}, [stranger.public_key] * 2))

    @defer.inlineCallbacks
    def test_wrong_pin_fails_the_handshake(self):
        attempts = []
        client = self.client(fingerprint=Identity.generate().fingerprint,
                             retry_policy=lambda attempt: attempts.append(attempt) or 0.01)
        yield self.assertFailure(client.when_connected(fail_after_failures=3), Exception)
        self.assertEqual(attempts[:2], [1, 2])  # refused attempts back off like failed ones
        self.assertIn("TLS handshake failed", client.last_error)
        error = yield self.assertFailure(client.call("ping", {}), PeerUnreachable)
        self.assertEqual((error.code, error.retryable), ("unreachable", True))
        self.assertIn("is not connected; last error: TLS handshake failed", error.reason)
        self.assertEqual(self.actions["record"].calls, [])

    @defer.inlineCallbacks
    def test_client_without_certificate_is_refused(self):
        tls = endpoints.wrapClientTLS(PinnedKeyClientCreator(self.peers.identities["alpha"].fingerprint),
                                      endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port))
        broker = yield tls.connect(_BrokerFactory())
        yield self.assertFailure(broker.ready, Exception)

    @defer.inlineCallbacks
    def test_bad_arguments_refused_action_not_run(self):
        client = yield self.client().when_connected()
        answer = yield client.perspective.callRemote("act", "record", {"text": "x" * 70000})
        refusal_in(self, answer, BadArguments, "args: larger than 65536 bytes")
        answer = yield client.perspective.callRemote("act", "record", {"text": 7})
        refusal_in(self, answer, BadArguments, "args.text: expected str, got int")
        error = yield self.assertFailure(client.call("record", {"text": 7}), BadArguments)
        self.assertEqual((error.code, error.reason, error.retryable),
                         ("bad_arguments", "args.text: expected str, got int", False))
        self.assertEqual(self.actions["record"].calls, [])
        # The client refuses what no action could take before sending; the
        # action's own schema is the callee's to check.
        yield self.assertFailure(client.call("record", {"text": {1, 2}}), BadArguments)
        self.assertEqual(self.portal.refusals["BadArguments"], 3)
        self.assertEqual((yield client.call("record", {"text": "ok"}))["echo"], {"text": "ok"})

    @defer.inlineCallbacks
    def test_unknown_action(self):
        client = yield self.client().when_connected()
        error = yield self.assertFailure(client.call("reboot", {}), UnknownAction)
        self.assertEqual(error.code, "unknown_action")
        self.assertIn("has no action 'reboot'", error.reason)

    @defer.inlineCallbacks
    def test_an_actions_refusal_arrives_as_it_was_raised(self):
        client = yield self.client().when_connected()
        error = yield self.assertFailure(client.call("refuse-coded", {}), ActionError)
        self.assertEqual((error.code, error.reason, error.retryable),
                         ("not_found", "no envoy web9 on this bolt", True))
        error = yield self.assertFailure(client.call("refuse", {}), ActionError)
        self.assertEqual((error.code, error.reason, error.retryable),
                         ("refused", "no such envoy: web9", False))
        error = yield self.assertFailure(client.call("broken", {}), ActionFailed)
        self.assertEqual(error.code, "action_failed")
        self.assertIn("ValueError: the widget is missing", error.reason)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    @defer.inlineCallbacks
    def test_an_answer_that_is_not_an_envelope_is_action_failed(self):
        client = yield self.client().when_connected()
        # An error as text (as peers sent them before): not data the client trusts.
        self.patch(PeerPerspective, "_refused",
                   lambda avatar, failure: {"error": "not_found: " + failure.getErrorMessage()})
        error = yield self.assertFailure(client.call("refuse-coded", {}), ActionFailed)
        self.assertEqual(error.code, "action_failed")
        self.assertIn("answered with a malformed error", error.reason)
        # A bare result, with no envelope around it.
        self.patch(PeerPerspective, "_ok", lambda avatar, result: result)
        error = yield self.assertFailure(client.call("later", {}), ActionFailed)
        self.assertIn("not an answer envelope", error.reason)

    @defer.inlineCallbacks
    def test_removed_caller_refused(self):
        self.peers.roster.set_status(self.peers.identities["beta"], "removed")
        client = self.client()
        yield self.assertFailure(client.when_connected(fail_after_failures=1), LoginRefused)
        self.assertIn("login refused: bolt %s (beta) is removed" % (self.peers.identities["beta"].id,),
                      client.last_error)

    @defer.inlineCallbacks
    def test_no_answer_in_time(self):
        client = yield self.client().when_connected()
        error = yield self.assertFailure(client.call("never", {}, timeout=0.05), PeerNoAnswer)
        self.assertEqual((error.code, error.retryable), ("no_answer", True))
        self.assertIn("no answer to action 'never'", error.reason)

    @defer.inlineCallbacks
    def test_reconnects_after_server_restart(self):
        client = yield self.client().when_connected()
        self.assertEqual((yield client.call("ping"))["name"], "alpha")
        port_number = self.port.getHost().port
        yield self.stop_server()
        yield self.assertFailure(client.call("ping"), PeerUnreachable)
        yield self.listen(port_number)
        yield client.when_connected()
        self.assertEqual((yield client.call("ping"))["name"], "alpha")
