"""The admin REST API and its tokens, driven in memory with StubTreq (no sockets)."""

import json
import os
import sqlite3
import stat

import nacl.signing
from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from tests.fleetkit import RecordingConnection
from vigo.api.app import AdminAPI
from vigo.api.auth import ADMIN_TOKEN_FILE, ApiTokens
from vigo.api.envoys import LocalEnvoys
from vigo.api.site import MAX_BODY
from vigo.api.spanner import NoFederation, StandaloneSpannerAPI
from vigo.config import config_from_mapping
from vigo.fleet import wire
from vigo.fleet.enrollment import Enrollment
from vigo.fleet.enrollment_tokens import MAX_TOKEN_USES, EnrollmentTokens
from vigo.fleet.fleet import Fleet
from vigo.fleet.hostcrates import Hostcrates
from vigo.fleet.ownership import StandaloneOwnership
from vigo.identity import load_or_create_identity
from vigo.interfaces.components import (
    IEnvoyConnection,
    IEnvoyOperations,
    IFederationAdmin,
    IOwnership,
    IStore,
)
from vigo.interfaces.errors import Refusal
from vigo.metrics import FleetCollector, metrics_registry
from vigo.server.ports import Advertised
from vigo.server.status import ServerStatus
from vigo.store import Store
from vigo.testing.store import ImmediateStore
from vigo.tokens import API_PREFIX, hash_secret

START = 1_700_000_000.0


class FacadeServer:
    """The parts of a standalone server, wired as ``vigo.server.standalone``
    wires them (``vigo.server.wiring.fleet_parts``), real but not listening.

    ``api`` is the ``AdminAPI`` built from them; ``admin_api(**parts)`` builds
    another with some of its parts replaced (a ``federation`` and ``envoys``
    of a fake bolt, a broken ``status``). ``store`` is a real ``Store`` on
    ``data_dir`` unless one is given (an ``ImmediateStore`` answers at once).
    """

    def __init__(self, data_dir, clock, store=None):
        os.makedirs(data_dir, exist_ok=True)
        self.data_dir = data_dir
        self.clock = clock
        self.config = config_from_mapping(
            {"server": {"data_dir": data_dir, "hostname": "vigo.test"}}
        )
        server = self.config.server
        self.identity = load_or_create_identity(data_dir)
        self.store = store if store is not None else Store.in_directory(data_dir, reactor)
        self.fleet = Fleet(self.store, self.identity, Hostcrates(), clock,
                           self.config.checkin.interval, self.config.checkin.offline_after)
        self.advertised = Advertised(server.hostname, {
            "envoy": server.envoy_listen, "api": server.api_listen,
            "peer": self.config.spanner.peer_listen})
        envoy_address = self.advertised.envoy
        self.enrollment_tokens = EnrollmentTokens(self.store, self.identity, clock,
                                                  envoy_address)
        self.api_tokens = ApiTokens(self.store, clock)
        self.ownership = StandaloneOwnership(self.identity, envoy_address)
        self.enrollment = Enrollment(self.fleet, self.store, self.identity, self.ownership,
                                     clock, envoy_address, self.enrollment_tokens)
        self.status = ServerStatus(self.identity, self.config, clock, self.fleet,
                                   envoy_address)
        self.envoys = LocalEnvoys(self.fleet, clock, self.identity.id)
        self.federation = NoFederation(self.identity.id)
        self.registry = metrics_registry(FleetCollector(self.fleet))
        self.api = self.admin_api()
        self.keys = {}

    def admin_api(self, **parts):
        """An ``AdminAPI`` of this server's parts, those named in ``parts`` replaced."""
        wired = {"tokens": self.api_tokens, "server_id": self.identity.id,
                 "status": self.status, "enrollment_tokens": self.enrollment_tokens,
                 "envoys": self.envoys, "federation": self.federation,
                 "registry": self.registry, "clock": self.clock, "spanner": None}
        unknown = set(parts) - set(wired)
        if unknown:
            raise TypeError("AdminAPI has no part %s" % (", ".join(sorted(unknown)),))
        wired.update(parts)
        if "federation" not in parts:  # this server's own: standalone, as the wiring has it
            wired["spanner"] = StandaloneSpannerAPI(self.federation, self.api_tokens)
        return AdminAPI(**wired)

    @classmethod
    def started(cls, testcase):
        """A server on an ``ImmediateStore``, started, closed at ``testcase``'s cleanup."""
        server = cls(testcase.mktemp(), new_clock(), ImmediateStore())
        testcase.addCleanup(server.store.close)
        testcase.successResultOf(defer.ensureDeferred(server.start()))
        return server

    def admin_headers(self):
        """Request headers carrying the local admin token."""
        return {b"authorization": [b"Bearer " + self.admin_token().encode()]}

    async def start(self):
        """Load as ``VigoServer`` does before it listens (the store, the fleet
        index, the API tokens); uptime counts from now."""
        self.store.open()
        await self.fleet.load()
        await self.api_tokens.load(self.data_dir)
        self.status.started()
        return self

    def admin_token(self):
        with open(os.path.join(self.data_dir, ADMIN_TOKEN_FILE)) as f:
            return f.read().strip()

    async def enroll(self, hostname):
        """Enroll an envoy with a real token and key; its id."""
        token = await self.enrollment_tokens.create(1)
        key = nacl.signing.SigningKey.generate()
        public = bytes(key.verify_key)
        now_ms = int(self.clock.seconds() * 1000)
        signature = key.sign(
            wire.register_message(hostname, public, token.token_id, now_ms)
        ).signature
        registered = await self.enrollment.register(
            hostname, public, str(token), now_ms, signature)
        self.keys[registered["envoy_id"]] = key
        return registered["envoy_id"]

    def attach(self, envoy_id):
        """Attach the envoy on a recording connection, as its channel would."""
        connection = RecordingConnection()
        now_ms = int(self.clock.seconds() * 1000)
        message = wire.attach_message(envoy_id, self.identity.id, now_ms)
        signature = self.keys[envoy_id].sign(message).signature
        record = self.fleet.attach(connection, envoy_id, self.identity.id, now_ms, signature)
        return record, connection

    def checkin(self, record, seq, applied=b"\x00" * 32):
        key = self.keys[record.id]
        now_ms = int(self.clock.seconds() * 1000)
        framed = wire.encode_checkin(
            seq, now_ms, applied,
            lambda signed: key.sign(record.signing_prefix + signed).signature,
        )
        return self.fleet.checkin(record, framed[4:])

    def count(self, table, where="1"):
        return self.store.run(
            lambda cursor: cursor.execute(
                f"SELECT COUNT(*) FROM {table} WHERE {where}"
            ).fetchone()[0]
        )


def new_clock():
    clock = task.Clock()
    clock.advance(START)
    return clock


class ApiClient:
    """StubTreq around an ``AdminAPI`` whose parts answer at once (an
    ``ImmediateStore``, fakes): every answer is complete once the in-memory
    connection is flushed, with no waiting on the reactor."""

    def __init__(self, api, token):
        self.stub = StubTreq(api.resource())
        self.token = token

    def settled(self, d):
        """``d`` once the connection is flushed; it must have fired by then."""
        self.stub.flush()
        if not d.called:
            raise AssertionError("the API did not answer in memory: something it called "
                                 "waits on the reactor")
        return d

    async def request(self, method, path, body=None, token=True, data=None, headers=None):
        """``(response, parsed JSON or raw bytes)``."""
        headers = dict(headers or {})
        if token is True:
            token = self.token
        if token:
            headers[b"authorization"] = [b"Bearer " + token.encode("ascii")]
        if body is not None:
            data = json.dumps(body).encode("utf-8")
        kwargs = {"headers": headers}
        if data is not None:
            kwargs["data"] = data
        response = await self.settled(
            self.stub.request(method, "http://vigo.test" + path, **kwargs)
        )
        content = await self.settled(self.stub.content(response))
        if response.headers.getRawHeaders(b"content-type", [b""])[0] == b"application/json":
            return response, json.loads(content)
        return response, content


class ApiTokensTests(unittest.TestCase):
    """The admin token file and the token set."""

    def setUp(self):
        self.data_dir = self.mktemp()
        os.makedirs(self.data_dir)
        self.clock = new_clock()
        self.store = Store.in_directory(self.data_dir, reactor)
        self.store.open()
        self.addCleanup(self.store.close)
        self.path = os.path.join(self.data_dir, ADMIN_TOKEN_FILE)

    def read_token(self):
        with open(self.path) as f:
            return f.read().strip()

    def stored(self):
        return self.store.run(
            lambda cursor: cursor.execute("SELECT secret_hash, name FROM api_tokens").fetchall()
        )

    @defer.inlineCallbacks
    def test_load_writes_private_admin_token(self):
        tokens = ApiTokens(self.store, self.clock)
        path = yield tokens.load(self.data_dir)
        self.assertEqual(path, self.path)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        token = self.read_token()
        self.assertTrue(token.startswith(API_PREFIX))
        self.assertEqual((yield self.stored()), [(hash_secret(token), "local-admin")])
        self.assertTrue(tokens.check(b"Bearer " + token.encode()))

    @defer.inlineCallbacks
    def test_load_keeps_a_stored_token(self):
        yield ApiTokens(self.store, self.clock).load(self.data_dir)
        first = self.read_token()
        again = ApiTokens(self.store, self.clock)
        yield again.load(self.data_dir)
        self.assertEqual(self.read_token(), first)
        self.assertEqual(len((yield self.stored())), 1)
        self.assertTrue(again.check(b"Bearer " + first.encode()))

    @defer.inlineCallbacks
    def test_lost_file_mints_a_new_token_and_retires_the_old(self):
        yield ApiTokens(self.store, self.clock).load(self.data_dir)
        old = self.read_token()
        os.unlink(self.path)
        tokens = ApiTokens(self.store, self.clock)
        yield tokens.load(self.data_dir)
        new = self.read_token()
        self.assertNotEqual(new, old)
        self.assertFalse(tokens.check(b"Bearer " + old.encode()))
        self.assertTrue(tokens.check(b"Bearer " + new.encode()))
        self.assertEqual((yield self.stored()), [(hash_secret(new), "local-admin")])

    @defer.inlineCallbacks
    def test_unknown_token_in_file_is_replaced(self):
        with open(self.path, "w") as f:
            f.write(API_PREFIX + "not-a-token-we-know\n")
        tokens = ApiTokens(self.store, self.clock)
        yield tokens.load(self.data_dir)
        self.assertNotEqual(self.read_token(), API_PREFIX + "not-a-token-we-know")
        self.assertFalse(tokens.check(b"Bearer " + API_PREFIX.encode() + b"not-a-token-we-know"))

    @defer.inlineCallbacks
    def test_check_reads_only_bearer_headers(self):
        tokens = ApiTokens(self.store, self.clock)
        yield tokens.load(self.data_dir)
        token = self.read_token().encode()
        self.assertTrue(tokens.check(b"bearer  " + token + b" "))
        for header in (None, b"", b"Bearer", b"Bearer ", token, b"Basic " + token,
                       b"Bearer " + token + b"x", b"Bearer " + b"x" * 5000):
            self.assertFalse(tokens.check(header), header)

    @defer.inlineCallbacks
    def test_create_is_durable_before_it_fires(self):
        tokens = ApiTokens(self.store, self.clock)
        yield tokens.load(self.data_dir)
        text = yield tokens.create("ci")
        self.assertTrue(text.startswith(API_PREFIX))
        self.assertTrue(tokens.check(b"Bearer " + text.encode()))
        # Durable: another connection sees it, and a restart accepts it.
        other = sqlite3.connect(self.store.path)
        rows = other.execute("SELECT name FROM api_tokens WHERE secret_hash = ?",
                             (hash_secret(text),)).fetchall()
        self.assertEqual(rows, [("ci",)])
        restarted = ApiTokens(self.store, self.clock)
        yield restarted.load(self.data_dir)
        self.assertTrue(restarted.check(b"Bearer " + text.encode()))

    def test_create_refuses_a_bad_name(self):
        tokens = ApiTokens(self.store, self.clock)
        for name in ("", None, "x" * 101):
            self.assertRaises(ValueError, tokens.create, name)


class ApiTestCase(unittest.TestCase):
    """A started facade server on an ``ImmediateStore``, its API, and a client
    holding the admin token."""

    @defer.inlineCallbacks
    def setUp(self):
        self.clock = new_clock()
        self.server = FacadeServer(self.mktemp(), self.clock, ImmediateStore())
        self.addCleanup(self.server.store.close)
        yield defer.ensureDeferred(self.server.start())
        self.serve(self.server.api)

    def serve(self, api):
        """Send the requests from now on to ``api`` (an ``AdminAPI``)."""
        self.api = api
        self.client = ApiClient(api, self.server.admin_token())

    def call(self, method, path, **kwargs):
        return defer.ensureDeferred(self.client.request(method, path, **kwargs))

    def enroll(self, hostname):
        return defer.ensureDeferred(self.server.enroll(hostname))

    def assertJSONError(self, response, body, code, error=None):
        self.assertEqual(response.code, code, body)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"application/json"]
        )
        self.assertEqual(set(body), {"error", "detail"})
        if error is not None:
            self.assertEqual(body["error"], error)


class OpenRouteTests(ApiTestCase):
    """``/healthz`` and ``/metrics`` need no token."""

    @defer.inlineCallbacks
    def test_healthz(self):
        response, body = yield self.call("GET", "/healthz", token=None)
        self.assertEqual(response.code, 200)
        self.assertEqual(body, {"ok": True, "server_id": self.server.identity.id})

    @defer.inlineCallbacks
    def test_metrics(self):
        envoy = yield self.enroll("web1.dc1.example.com")
        record, _ = self.server.attach(envoy)
        self.clock.advance(15)
        self.server.checkin(record, 1)
        self.clock.advance(15)
        self.server.checkin(record, 2, applied=record.bundle.version)
        response, text = yield self.call("GET", "/metrics", token=None)
        self.assertEqual(response.code, 200)
        # The text format generate_latest writes (not CONTENT_TYPE_LATEST's 1.0.0).
        self.assertEqual(response.headers.getRawHeaders(b"content-type")[0],
                         b"text/plain; version=0.0.4; charset=utf-8")
        text = text.decode("utf-8")
        self.assertIn('vigo_envoys{state="active"} 1.0', text)
        self.assertIn('vigo_checkins_total{status="bundle"} 1.0', text)
        self.assertIn('vigo_checkins_total{status="no_change"} 1.0', text)
        self.assertIn('vigo_checkin_age_seconds_bucket{le="15.0"} 2.0', text)
        self.assertIn('vigo_envoy_state_transitions_total{transition="offline_to_online"} 1.0',
                      text)

    @defer.inlineCallbacks
    def test_unknown_routes_are_json_404(self):
        for path in ("/api/v1/nope", "/api/v2/status", "/api", "/nope", "/api/v1/envoys/a/b"):
            response, body = yield self.call("GET", path)
            self.assertJSONError(response, body, 404, "not_found")

    @defer.inlineCallbacks
    def test_wrong_method_is_json_405(self):
        for method, path in (("PUT", "/api/v1/tokens"), ("DELETE", "/api/v1/status"),
                             ("POST", "/healthz"), ("GET", "/api/v1/envoys/x/push"),
                             ("PUT", "/api/v1/envoys/x")):
            response, body = yield self.call(method, path)
            self.assertJSONError(response, body, 405, "method_not_allowed")
            self.assertTrue(response.headers.getRawHeaders(b"allow"))

    @defer.inlineCallbacks
    def test_an_exception_is_logged_and_answered_json_500(self):
        def broken():
            raise ZeroDivisionError("bug")
        self.serve(self.server.admin_api(status=broken))
        response, body = yield self.call("GET", "/api/v1/status")
        self.assertJSONError(response, body, 500, "internal_error")
        self.assertNotIn("ZeroDivisionError", json.dumps(body))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class AuthTests(ApiTestCase):
    """Every ``/api/v1`` route wants a valid bearer token and changes nothing without one."""

    ROUTES = (
        ("GET", "/api/v1/status"),
        ("POST", "/api/v1/tokens"),
        ("GET", "/api/v1/envoys"),
        ("GET", "/api/v1/envoys/web1.dc1.example.com"),
        ("POST", "/api/v1/envoys/web1.dc1.example.com/push"),
        ("DELETE", "/api/v1/envoys/web1.dc1.example.com"),
    )

    @defer.inlineCallbacks
    def test_every_route_refuses_without_a_valid_token(self):
        yield self.enroll("web1.dc1.example.com")
        tokens = yield self.server.count("enrollment_tokens")
        wrong = API_PREFIX + "A" * 43
        for method, path in self.ROUTES:
            for token, headers in ((None, None), (wrong, None),
                                   (None, {b"authorization": [b"Basic dmlnbzp2aWdv"]})):
                response, body = yield self.call(method, path, token=token, headers=headers,
                                                 body={})
                self.assertJSONError(response, body, 401, "unauthorized")
                self.assertEqual(response.headers.getRawHeaders(b"www-authenticate"),
                                 [b'Bearer realm="vigo"'])
        self.assertEqual((yield self.server.count("enrollment_tokens")), tokens)
        self.assertEqual((yield self.server.count("envoys", "state = 'active'")), 1)
        self.assertEqual((yield self.server.count("envoys", "pending_push = 1")), 0)

    @defer.inlineCallbacks
    def test_a_created_api_token_is_accepted(self):
        text = yield self.server.api_tokens.create("ops")
        response, _body = yield self.call("GET", "/api/v1/status", token=text)
        self.assertEqual(response.code, 200)

    @defer.inlineCallbacks
    def test_api_tokens_minted_listed_and_withdrawn(self):
        response, minted = yield self.call("POST", "/api/v1/api-tokens", body={"name": " ci "})
        self.assertEqual(response.code, 201, minted)
        self.assertEqual(set(minted), {"token", "token_id", "name", "created_at"})
        self.assertEqual(minted["name"], "ci")
        self.assertTrue(minted["token"].startswith("vgot_"))
        response, _ = yield self.call("GET", "/api/v1/status", token=minted["token"])
        self.assertEqual(response.code, 200)
        response, listed = yield self.call("GET", "/api/v1/api-tokens", token=minted["token"])
        self.assertEqual(sorted(t["name"] for t in listed["tokens"]), ["ci", "local-admin"])
        self.assertNotIn(minted["token"], json.dumps(listed))
        local = next(t for t in listed["tokens"] if t["name"] == "local-admin")
        # The local admin token stays: the CLI's --data-dir depends on it.
        response, body = yield self.call("DELETE", "/api/v1/api-tokens/" + local["token_id"])
        self.assertJSONError(response, body, 409, "local_admin")
        response, body = yield self.call("DELETE", "/api/v1/api-tokens/" + minted["token_id"])
        self.assertEqual((response.code, body),
                         (200, {"token_id": minted["token_id"], "withdrawn": True}))
        response, body = yield self.call("GET", "/api/v1/status", token=minted["token"])
        self.assertJSONError(response, body, 401, "unauthorized")
        response, body = yield self.call("DELETE", "/api/v1/api-tokens/" + minted["token_id"])
        self.assertJSONError(response, body, 404, "not_found")
        for bad in ({}, {"name": ""}, {"name": "x" * 101}, {"name": "a\nb"}, {"name": 3},
                    {"name": " Local-Admin "}):
            response, body = yield self.call("POST", "/api/v1/api-tokens", body=bad)
            self.assertJSONError(response, body, 400, "bad_request")
        self.assertEqual((yield self.server.count("api_tokens")), 1)


class StatusTests(ApiTestCase):
    @defer.inlineCallbacks
    def test_status(self):
        yield self.enroll("web1.dc1.example.com")
        self.clock.advance(60)
        response, body = yield self.call("GET", "/api/v1/status")
        self.assertEqual(response.code, 200)
        self.assertEqual(body["server_id"], self.server.identity.id)
        self.assertEqual(body["mode"], "standalone")
        self.assertEqual((body["hostname"], body["envoy_address"]), ("vigo.test",
                                                                     "127.0.0.1:1530"))
        self.assertIsNone(body["spanner"])  # no federation to show
        self.assertEqual(body["uptime"], 60.0)
        self.assertEqual(body["envoys"], {"total": 1, "active": 1, "online": 0, "connected": 0})
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-store"])


class TokenTests(ApiTestCase):
    """``POST /api/v1/tokens``."""

    @defer.inlineCallbacks
    def test_defaults_to_one_use_and_no_expiry(self):
        response, body = yield self.call("POST", "/api/v1/tokens", body={})
        self.assertEqual(response.code, 201)
        self.assertEqual(set(body), {"token", "token_id", "uses", "expires_at"})
        self.assertTrue(body["token"].startswith("vgoe_"))
        self.assertEqual((body["uses"], body["expires_at"]), (1, None))
        self.assertEqual((yield self.server.count("enrollment_tokens")), 1)

    @defer.inlineCallbacks
    def test_empty_body_means_defaults(self):
        response, body = yield self.call("POST", "/api/v1/tokens")
        self.assertEqual((response.code, body["uses"]), (201, 1))

    @defer.inlineCallbacks
    def test_uses_and_expiry(self):
        for expires_in, seconds in (("1h", 3600.0), (90, 90.0), ("1h30m", 5400.0)):
            response, body = yield self.call("POST", "/api/v1/tokens",
                                             body={"uses": 5, "expires_in": expires_in})
            self.assertEqual(response.code, 201, body)
            self.assertEqual(body["uses"], 5)
            self.assertEqual(body["expires_at"], START + seconds)
        rows = yield self.server.store.run(
            lambda c: c.execute("SELECT uses, expires_at FROM enrollment_tokens").fetchall()
        )
        self.assertEqual(sorted(rows), [(5, START + 90), (5, START + 3600), (5, START + 5400)])

    @defer.inlineCallbacks
    def test_minted_token_enrolls_an_envoy(self):
        _, body = yield self.call("POST", "/api/v1/tokens", body={"uses": 1})
        key = nacl.signing.SigningKey.generate()
        public = bytes(key.verify_key)
        now_ms = int(self.clock.seconds() * 1000)
        signature = key.sign(wire.register_message(
            "db1.example.com", public, body["token_id"], now_ms)).signature
        registered = yield self.server.enrollment.register(
            "db1.example.com", public, body["token"], now_ms, signature)
        self.assertEqual(registered["hostname"], "db1.example.com")

    def register_with(self, token, hostname):
        key = nacl.signing.SigningKey.generate()
        public = bytes(key.verify_key)
        now_ms = int(self.clock.seconds() * 1000)
        signature = key.sign(wire.register_message(
            hostname, public, token["token_id"], now_ms)).signature
        return defer.maybeDeferred(self.server.enrollment.register, hostname, public,
                                   token["token"], now_ms, signature)

    @defer.inlineCallbacks
    def test_list_and_withdraw(self):
        _, once = yield self.call("POST", "/api/v1/tokens", body={"uses": 1})
        _, later = yield self.call("POST", "/api/v1/tokens", body={"uses": 3, "expires_in": 60})
        _, leaked = yield self.call("POST", "/api/v1/tokens", body={"uses": 5})
        yield self.register_with(once, "db1.example.com")
        response, body = yield self.call("DELETE", "/api/v1/tokens/" + leaked["token_id"])
        self.assertEqual((response.code, body),
                         (200, {"token_id": leaked["token_id"], "withdrawn": True,
                                "changed": True}))
        self.clock.advance(61)
        response, body = yield self.call("GET", "/api/v1/tokens")
        self.assertEqual(response.code, 200)
        states = {t["token_id"]: (t["state"], t["used"], t["uses"]) for t in body["tokens"]}
        self.assertEqual(states, {once["token_id"]: ("used", 1, 1),
                                  later["token_id"]: ("expired", 0, 3),
                                  leaked["token_id"]: ("withdrawn", 0, 5)})
        self.assertEqual(body["count"], 3)
        listed = json.dumps(body)
        for token in (once, later, leaked):  # ids only, never a secret
            self.assertNotIn(token["token"], listed)
        # A withdrawn token enrolls nobody, and changes nothing.
        failure = yield self.assertFailure(self.register_with(leaked, "db2.example.com"),
                                           Refusal)
        self.assertEqual(failure.code, "token_withdrawn")
        self.assertEqual((yield self.server.count("envoys")), 1)
        response, body = yield self.call("DELETE", "/api/v1/tokens/" + leaked["token_id"])
        self.assertEqual((response.code, body["changed"]), (200, False))
        response, body = yield self.call("DELETE", "/api/v1/tokens/nosuch")
        self.assertJSONError(response, body, 404, "not_found")
        response, body = yield self.call("GET", "/api/v1/tokens", token=None)
        self.assertEqual(response.code, 401)

    BAD_BODIES = (
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"uses": NaN}', "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"uses"', "JSON object"),
        (b"null", "JSON object"),
        (b"3", "JSON object"),
        (b"[" * 30_000 + b"]" * 30_000, "not JSON"),
        (b'{"uses": "3"}', "uses"),
        (b'{"uses": true}', "uses"),
        (b'{"uses": 1.5}', "uses"),
        (b'{"uses": 0}', "uses"),
        (b'{"uses": -1}', "uses"),
        (b'{"uses": %d}' % (MAX_TOKEN_USES + 1,), "uses"),
        (b'{"uses": [1]}', "uses"),
        (b'{"expires_in": "soon"}', "expires_in"),
        (b'{"expires_in": "-1h"}', "expires_in"),
        (b'{"expires_in": -5}', "expires_in"),
        (b'{"expires_in": 0}', "expires_in"),
        (b'{"expires_in": "400d"}', "expires_in"),
        (b'{"expires_in": 1e400}', "expires_in"),
        (b'{"expires_in": true}', "expires_in"),
        (b'{"expires_in": {}}', "expires_in"),
        (b'{"usess": 2}', "usess"),
    )

    @defer.inlineCallbacks
    def test_bad_bodies_are_400_and_change_nothing(self):
        for data, named in self.BAD_BODIES:
            response, body = yield self.call("POST", "/api/v1/tokens", data=data)
            self.assertJSONError(response, body, 400, "bad_request")
            if len(data) < MAX_BODY:
                self.assertIn(named, body["detail"], data[:40])
        self.assertEqual((yield self.server.count("enrollment_tokens")), 0)

    @defer.inlineCallbacks
    def test_too_large_body_is_413_and_changes_nothing(self):
        data = b'{"uses": 2, "pad": "' + b"x" * MAX_BODY + b'"}'
        response, body = yield self.call("POST", "/api/v1/tokens", data=data)
        self.assertJSONError(response, body, 413, "body_too_large")
        self.assertEqual((yield self.server.count("enrollment_tokens")), 0)

    @defer.inlineCallbacks
    def test_body_of_exactly_the_limit_is_read(self):
        data = b'{"uses": 2}'.ljust(MAX_BODY, b" ")
        response, body = yield self.call("POST", "/api/v1/tokens", data=data)
        self.assertEqual(response.code, 201, body)


class EnvoyTests(ApiTestCase):
    """Listing, showing, pushing and revoking envoys."""

    @defer.inlineCallbacks
    def setUp(self):
        yield ApiTestCase.setUp(self)
        self.ids = {}
        for name in ("web2.dc1.example.com", "db1.dc1.example.com", "web1.dc1.example.com"):
            self.ids[name] = yield self.enroll(name)

    @defer.inlineCallbacks
    def test_list_is_sorted_by_hostname(self):
        self.clock.advance(30)
        response, body = yield self.call("GET", "/api/v1/envoys")
        self.assertEqual(response.code, 200)
        self.assertEqual(body["count"], 3)
        self.assertEqual([e["hostname"] for e in body["envoys"]],
                         ["db1.dc1.example.com", "web1.dc1.example.com", "web2.dc1.example.com"])
        first = body["envoys"][0]
        self.assertEqual(first["id"], self.ids["db1.dc1.example.com"])
        self.assertEqual((first["state"], first["online"], first["last_seen_age"]),
                         ("active", False, 30.0))

    @defer.inlineCallbacks
    def test_list_empty(self):
        self.server.fleet.index.by_id.clear()
        _response, body = yield self.call("GET", "/api/v1/envoys")
        self.assertEqual(body, {"envoys": [], "count": 0})

    @defer.inlineCallbacks
    def test_offline_keeps_active_envoys_not_online(self):
        self.server.attach(self.ids["web1.dc1.example.com"])
        yield self.server.fleet.revoke("db1.dc1.example.com")
        for flag in ("1", "true"):
            response, body = yield self.call("GET", "/api/v1/envoys?offline=" + flag)
            self.assertEqual([e["hostname"] for e in body["envoys"]], ["web2.dc1.example.com"])
            self.assertEqual(body["count"], 1)
        response, body = yield self.call("GET", "/api/v1/envoys?offline=0")
        self.assertEqual(body["count"], 3)
        response, body = yield self.call("GET", "/api/v1/envoys?offline=maybe")
        self.assertJSONError(response, body, 400, "bad_request")

    @defer.inlineCallbacks
    def test_bolt_filter_in_standalone(self):
        response, body = yield self.call(
            "GET", "/api/v1/envoys?bolt=" + self.server.identity.id)
        self.assertEqual(body["count"], 3)
        response, body = yield self.call("GET", "/api/v1/envoys?bolt=elsewhere")
        self.assertJSONError(response, body, 404, "bolt_not_found")
        self.assertIn("elsewhere", body["detail"])

    @defer.inlineCallbacks
    def test_show_by_id_or_hostname(self):
        envoy = self.ids["web1.dc1.example.com"]
        for key in (envoy, "web1.dc1.example.com"):
            response, body = yield self.call("GET", "/api/v1/envoys/" + key)
            self.assertEqual(response.code, 200)
            self.assertEqual(body, self.server.fleet.index.get(envoy).describe(START))

    @defer.inlineCallbacks
    def test_show_unknown_is_404(self):
        response, body = yield self.call("GET", "/api/v1/envoys/nosuch.example.com")
        self.assertJSONError(response, body, 404, "not_found")
        self.assertIn("nosuch.example.com", body["detail"])

    @defer.inlineCallbacks
    def test_push_to_a_disconnected_envoy_waits_for_attach(self):
        envoy = self.ids["web2.dc1.example.com"]
        response, body = yield self.call("POST", "/api/v1/envoys/web2.dc1.example.com/push")
        self.assertEqual(response.code, 202)
        self.assertEqual(body, {"envoy_id": envoy, "delivered": "next_attach"})
        self.assertEqual((yield self.server.count("envoys", "pending_push = 1")), 1)

    @defer.inlineCallbacks
    def test_push_to_a_connected_envoy_is_sent_now(self):
        envoy = self.ids["web1.dc1.example.com"]
        _, connection = self.server.attach(envoy)
        response, body = yield self.call("POST", f"/api/v1/envoys/{envoy}/push", body={})
        self.assertEqual((response.code, body["delivered"]), (202, "now"))
        self.assertEqual(connection.sent, [wire.frame(bytes((wire.FORCE_PUSH,)))])

    @defer.inlineCallbacks
    def test_push_refusals(self):
        response, body = yield self.call("POST", "/api/v1/envoys/nosuch/push")
        self.assertJSONError(response, body, 404, "not_found")
        envoy = self.ids["web1.dc1.example.com"]
        yield self.server.fleet.revoke(envoy)
        response, body = yield self.call("POST", f"/api/v1/envoys/{envoy}/push")
        self.assertJSONError(response, body, 409, "not_active")
        response, body = yield self.call("POST", f"/api/v1/envoys/{envoy}/push",
                                         body={"now": True})
        self.assertJSONError(response, body, 400, "bad_request")
        self.assertEqual((yield self.server.count("envoys", "pending_push = 1")), 0)

    @defer.inlineCallbacks
    def test_revoke(self):
        envoy = self.ids["web1.dc1.example.com"]
        _, connection = self.server.attach(envoy)
        response, body = yield self.call("DELETE", "/api/v1/envoys/web1.dc1.example.com")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, {"envoy_id": envoy, "state": "revoked"})
        self.assertEqual(connection.dropped.code, "revoked")
        self.assertEqual((yield self.server.count("envoys", "state = 'revoked'")), 1)
        response, body = yield self.call("GET", "/api/v1/envoys/web1.dc1.example.com")
        self.assertJSONError(response, body, 404, "not_found")
        response, body = yield self.call("GET", "/api/v1/envoys/" + envoy)
        self.assertEqual(body["state"], "revoked")
        response, body = yield self.call("DELETE", "/api/v1/envoys/nosuch")
        self.assertJSONError(response, body, 404, "not_found")



class InterfaceTests(unittest.SynchronousTestCase):
    """The standalone parts the API is built from, and the test doubles, provide
    the interfaces they are wired through."""

    def test_standalone_parts(self):
        server = FacadeServer(self.mktemp(), new_clock(), ImmediateStore())
        self.addCleanup(server.store.close)
        verifyObject(IEnvoyOperations, server.envoys)
        verifyObject(IFederationAdmin, server.federation)
        verifyObject(IOwnership, server.ownership)
        verifyObject(IStore, server.store)

    def test_doubles(self):
        verifyObject(IEnvoyConnection, RecordingConnection())
        store = ImmediateStore()
        self.addCleanup(store.close)
        verifyObject(IStore, store)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
token_fields = st.fixed_dictionaries(
    {},
    optional={
        "uses": st.integers(min_value=-2, max_value=MAX_TOKEN_USES + 2) | json_values,
        "expires_in": st.sampled_from(["1h", "15s", "0s", "500ms", "1d", "366d", "", "1x"])
        | st.floats(min_value=-10, max_value=4e7) | json_values,
    },
)


class TokenFuzzTests(unittest.SynchronousTestCase):
    """Any JSON in a token request is a 201 or a 400, and a 400 stores nothing."""

    def setUp(self):
        self.server = FacadeServer.started(self)
        self.stub = StubTreq(self.server.api.resource())
        self.headers = self.server.admin_headers()

    def post(self, data):
        d = self.stub.post("http://vigo.test/api/v1/tokens", data=data, headers=self.headers)
        self.stub.flush()
        response = self.successResultOf(d)
        d = self.stub.content(response)
        self.stub.flush()
        return response, json.loads(self.successResultOf(d))

    def stored(self):
        return self.successResultOf(self.server.count("enrollment_tokens"))

    @settings(max_examples=300, deadline=None)
    @given(body=json_values | token_fields)
    def test_any_json_is_201_or_400(self, body):
        before = self.stored()
        response, answer = self.post(json.dumps(body).encode("utf-8"))
        self.assertIn(response.code, (201, 400), (body, answer))
        if response.code == 400:
            self.assertEqual(set(answer), {"error", "detail"})
            self.assertEqual(self.stored(), before)
        else:
            self.assertEqual(self.stored(), before + 1)
