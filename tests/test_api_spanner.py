"""The admin API's spanner routes and a bolt's envoy routes, over StubTreq.

``AdminAPI`` is driven with ``FakeSpanner`` as its ``federation`` and the
fake's ``FakeEnvoys`` as its ``envoys``; ``RealBoltTests`` drive it with a
real one-bolt ``BoltAdmin`` and ``FederatedEnvoys`` instead, and
``StandaloneTests`` with a standalone server's ``NoFederation`` and
``LocalEnvoys``.
"""

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyClass, verifyObject

from tests.spannerkit import (
    DOWN_ID,
    GOOD_TOKEN,
    PEER_ID,
    SELF_ID,
    UNREACHABLE_TOKEN,
    FakeEnvoys,
    FakeSpanner,
    bolt_row,
)
from tests.test_api import ApiTestCase, FacadeServer, new_clock
from vigo.api import spanner as spanner_api
from vigo.api.envoys import LocalEnvoys
from vigo.api.responses import REFUSAL_STATUS, status_of
from vigo.api.spanner import NOT_SPANNER, NoFederation
from vigo.fleet.moves import EnvoyMoves
from vigo.fleet.view import BoltFleet
from vigo.interfaces.components import IEnvoyOperations, IFederationAdmin
from vigo.interfaces.errors import Refusal
from vigo.spanner.admin import BoltAdmin, FederatedEnvoys
from vigo.spanner.bolt import Bolt
from vigo.spanner.invites import Invites
from vigo.spanner.membership import Membership
from vigo.spanner.peer.actions import load_actions
from vigo.spanner.reads import FleetReads
from vigo.spanner.roster.local import LocalRoster
from vigo.spanner.status import FederationStatus, OwnFigures
from vigo.testing.store import ImmediateStore
from vigo.tokens import API_PREFIX

#: Every spanner route with a body that would be accepted, but the roster.
AUTHORIZED_ROUTES = (
    ("GET", "/api/v1/spanner/status", None),
    ("POST", "/api/v1/spanner/init", {"name": "dc9"}),
    ("POST", "/api/v1/spanner/invite", {}),
    ("POST", "/api/v1/spanner/join", {"token": GOOD_TOKEN}),
    ("GET", "/api/v1/spanner/bolts", None),
    ("GET", "/api/v1/spanner/bolts/dc2", None),
    ("GET", "/api/v1/spanner/owner?hostname=web1.dc2.example.com", None),
    ("POST", "/api/v1/spanner/bolts/dc2/actions/echo", {"x": 1}),
    ("GET", "/api/v1/spanner/bolts/dc2/actions", None),
    ("GET", "/api/v1/spanner/bolts/dc2/envoys", None),
    ("POST", "/api/v1/spanner/bolts/dc2/push", {}),
)
DRAIN_ROUTES = (
    ("POST", "/api/v1/spanner/bolts/dc2/drain"),
    ("GET", "/api/v1/spanner/bolts/dc2/drain"),
    ("DELETE", "/api/v1/spanner/bolts/dc2"),
)
REASSIGN = ("POST", "/api/v1/envoys/web1.dc1.example.com/reassign")
#: The envoy routes, which a bolt answers through its ``IEnvoyOperations``.
ENVOY_ROUTES = (
    ("GET", "/api/v1/envoys"),
    ("GET", "/api/v1/envoys/web1.dc1.example.com"),
    ("POST", "/api/v1/envoys/web1.dc1.example.com/push"),
    ("DELETE", "/api/v1/envoys/web1.dc1.example.com"),
)


class SpannerApiTestCase(ApiTestCase):
    """A facade server's API with a ``FakeSpanner`` bolt as its federation and
    envoy operations."""

    member = True

    @defer.inlineCallbacks
    def setUp(self):
        yield ApiTestCase.setUp(self)
        spanner = FakeSpanner()
        if self.member:
            spanner.found()
        self.use(spanner)

    def use(self, spanner):
        """Serve ``spanner`` (a ``FakeSpanner``) and its envoys from now on."""
        self.spanner = spanner
        self.envoys = spanner.envoy_operations()
        self.serve(self.server.admin_api(federation=spanner, envoys=self.envoys))
        return spanner

    def assertNothingChanged(self, before):
        self.assertEqual(self.spanner.mutations(), [])
        self.assertEqual(self.spanner.status(), before)


class StandaloneTests(ApiTestCase):
    """A standalone server's spanner routes answer through ``NoFederation``:
    ``status`` says standalone, everything else is 404 ``not_spanner``."""

    @defer.inlineCallbacks
    def test_spanner_routes_answer_through_no_federation(self):
        self.assertIsInstance(self.server.federation, NoFederation)
        response, body = yield self.call("GET", "/api/v1/spanner/status")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, self.server.federation.status())
        self.assertEqual((body["mode"], body["state"], body["bolt_id"]),
                         ("standalone", "standalone", self.server.identity.id))
        self.assertIn("--mode=spanner", body["hint"])
        routes = [(m, p, b) for m, p, b in AUTHORIZED_ROUTES if not p.endswith("/status")]
        routes += [(m, p, None) for m, p in DRAIN_ROUTES]
        routes += [(*REASSIGN, {"to": "dc2"})]
        for method, path, data in routes:
            response, body = yield self.call(method, path, body=data)
            self.assertJSONError(response, body, 404, "not_spanner")
            self.assertEqual(body["detail"], NOT_SPANNER, path)
        self.assertEqual(NOT_SPANNER, "this server runs standalone; start it with --mode=spanner")
        response, body = yield self.call("GET", "/api/v1/spanner/roster", token=None)
        self.assertJSONError(response, body, 404, "not_spanner")

    @defer.inlineCallbacks
    def test_standalone_says_so_before_it_reads_the_body(self):
        # Whatever the request holds, a standalone server has no federation.
        for method, path, data in (("POST", "/api/v1/spanner/join", {}),
                                   ("POST", "/api/v1/spanner/init", {"name": 5}),
                                   ("POST", "/api/v1/spanner/invite", {"expires_in": "x"}),
                                   ("POST", "/api/v1/spanner/bolts/b/drain", {"to": 5}),
                                   ("GET", "/api/v1/spanner/nonsense", None)):
            response, body = yield self.call(method, path, body=data)
            self.assertJSONError(response, body, 404, "not_spanner")

    @defer.inlineCallbacks
    def test_standalone_still_wants_a_token(self):
        response, body = yield self.call("GET", "/api/v1/spanner/status", token=None)
        self.assertJSONError(response, body, 401, "unauthorized")
        response, body = yield self.call("POST", "/api/v1/spanner/init", token=None)
        self.assertJSONError(response, body, 401, "unauthorized")
        response, body = yield self.call(*REASSIGN, token=None, body={"to": "dc2"})
        self.assertJSONError(response, body, 401, "unauthorized")


class AuthTests(SpannerApiTestCase):
    """Every spanner route wants the bearer token, but the roster snapshot."""

    @defer.inlineCallbacks
    def test_every_route_but_the_roster_refuses_without_a_valid_token(self):
        before = self.spanner.status()
        del self.spanner.calls[:]
        wrong = API_PREFIX + "A" * 43
        routes = list(AUTHORIZED_ROUTES) + [(m, p, None) for m, p in
                                            DRAIN_ROUTES + (REASSIGN,) + ENVOY_ROUTES]
        for method, path, data in routes:
            for token, headers in ((None, None), (wrong, None),
                                   (None, {b"authorization": [b"Basic dmlnbzp2aWdv"]})):
                response, body = yield self.call(method, path, token=token, headers=headers,
                                                 body=data)
                self.assertJSONError(response, body, 401, "unauthorized")
                self.assertEqual(response.headers.getRawHeaders(b"www-authenticate"),
                                 [b'Bearer realm="vigo"'])
        self.assertEqual(self.spanner.calls, [])
        self.assertEqual(self.spanner.status(), before)

    @defer.inlineCallbacks
    def test_the_roster_needs_no_token(self):
        response, body = yield self.call("GET", "/api/v1/spanner/roster", token=None)
        self.assertEqual(response.code, 200)
        self.assertEqual(body, json.loads(self.spanner.snapshot_body()))

    @defer.inlineCallbacks
    def test_routing_comes_before_authentication(self):
        response, body = yield self.call("GET", "/api/v1/spanner/nope", token=None)
        self.assertJSONError(response, body, 404, "not_found")
        response, body = yield self.call("GET", "/api/v1/spanner/init", token=None)
        self.assertJSONError(response, body, 405, "method_not_allowed")
        self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"POST"])
        response, body = yield self.call("PUT", "/api/v1/spanner/roster", token=None)
        self.assertJSONError(response, body, 405, "method_not_allowed")


class StatusTests(SpannerApiTestCase):
    member = False

    @defer.inlineCallbacks
    def test_unfederated_then_member(self):
        response, body = yield self.call("GET", "/api/v1/spanner/status")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-store"])
        self.assertEqual(body, self.spanner.status())
        self.assertEqual((body["mode"], body["state"]), ("spanner", "unfederated"))
        self.assertIn("vigocli spanner init", body["hint"])
        self.spanner.found()
        response, body = yield self.call("GET", "/api/v1/spanner/status")
        self.assertEqual((body["state"], body["federation_id"], body["hint"]),
                         ("member", self.spanner.federation_id, None))
        self.assertEqual(body["bolts"], {"total": 3, "active": 2, "draining": 1, "removed": 0})

    @defer.inlineCallbacks
    def test_a_coroutine_or_deferred_answer_is_waited_for(self):
        status = self.spanner.status()

        async def later():
            return status

        for answer in (later, lambda: defer.succeed(status)):
            self.spanner.status = answer
            response, body = yield self.call("GET", "/api/v1/spanner/status")
            self.assertEqual((response.code, body), (200, status))


class InitTests(SpannerApiTestCase):
    member = False

    @defer.inlineCallbacks
    def test_init_with_name_and_patterns(self):
        response, body = yield self.call("POST", "/api/v1/spanner/init",
                                         body={"name": "dc9", "patterns": ["*.dc9.test"]})
        self.assertEqual(response.code, 201)
        self.assertEqual(self.spanner.mutations(), [("init", "dc9", ["*.dc9.test"])])
        self.assertEqual((body["state"], body["name"]), ("member", "dc9"))

    @defer.inlineCallbacks
    def test_empty_body_and_nulls_mean_defaults(self):
        for data in (b"", b"{}", b'{"name": null, "patterns": null}'):
            self.use(FakeSpanner())
            response, body = yield self.call("POST", "/api/v1/spanner/init", data=data)
            self.assertEqual(response.code, 201, body)
            self.assertEqual(self.spanner.mutations(), [("init", None, None)])

    @defer.inlineCallbacks
    def test_bad_bodies_are_400_and_change_nothing(self):
        before = self.spanner.status()
        for data in (b"[]", b"nope", b'"dc1"', b'{"name": 5}', b'{"name": ""}',
                     b'{"name": ["dc1"]}', b'{"patterns": "*.a"}', b'{"patterns": [1]}',
                     b'{"patterns": [""]}', b'{"patterns": {"a": 1}}', b'{"nmae": "x"}',
                     b'{"name": "dc1", "bolt": "x"}'):
            response, body = yield self.call("POST", "/api/v1/spanner/init", data=data)
            self.assertJSONError(response, body, 400, "bad_request")
        self.assertNothingChanged(before)
        response, body = yield self.call("POST", "/api/v1/spanner/init", body={"nmae": "x"})
        self.assertEqual(body["detail"], "unknown field 'nmae'; allowed: name, patterns")

    @defer.inlineCallbacks
    def test_already_a_member_is_409(self):
        self.spanner.found()
        response, body = yield self.call("POST", "/api/v1/spanner/init", body={})
        self.assertJSONError(response, body, 409, "already_member")
        self.assertIn(self.spanner.federation_id, body["detail"])


class InviteTests(SpannerApiTestCase):

    @defer.inlineCallbacks
    def test_default_is_one_hour(self):
        response, body = yield self.call("POST", "/api/v1/spanner/invite")
        self.assertEqual(response.code, 201)
        self.assertEqual(set(body), {"token", "token_id", "expires_at", "minter_id"})
        self.assertEqual(self.spanner.mutations(), [("invite", 3600.0)])

    @defer.inlineCallbacks
    def test_durations(self):
        for given_, seconds in (("30m", 1800.0), ("24h", 86400.0), ("1d", 86400.0),
                                (90, 90.0), ("500ms", 0.5), (None, 3600.0)):
            del self.spanner.calls[:]
            response, body = yield self.call("POST", "/api/v1/spanner/invite",
                                             body={"expires_in": given_})
            self.assertEqual(response.code, 201, (given_, body))
            self.assertEqual(self.spanner.mutations(), [("invite", seconds)])

    @defer.inlineCallbacks
    def test_bad_bodies_are_400_and_change_nothing(self):
        before = self.spanner.status()
        del self.spanner.calls[:]
        for data in ({"expires_in": "0s"}, {"expires_in": 0}, {"expires_in": "25h"},
                     {"expires_in": 86401}, {"expires_in": "soon"}, {"expires_in": True},
                     {"expires_in": -5}, {"expires_in": ["1h"]}, {"uses": 2}, [], "1h"):
            response, body = yield self.call("POST", "/api/v1/spanner/invite", body=data)
            self.assertJSONError(response, body, 400, "bad_request")
        self.assertNothingChanged(before)
        response, body = yield self.call("POST", "/api/v1/spanner/invite",
                                         body={"expires_in": "2d"})
        self.assertIn("at most 24h", body["detail"])

    @defer.inlineCallbacks
    def test_not_a_member_is_409(self):
        self.use(FakeSpanner())
        response, body = yield self.call("POST", "/api/v1/spanner/invite", body={})
        self.assertJSONError(response, body, 409, "not_member")


class JoinTests(SpannerApiTestCase):
    member = False

    @defer.inlineCallbacks
    def test_join(self):
        response, body = yield self.call("POST", "/api/v1/spanner/join",
                                         body={"token": " " + GOOD_TOKEN + "\n"})
        self.assertEqual(response.code, 200)
        self.assertEqual(body["state"], "member")
        self.assertEqual(self.spanner.mutations(), [("join", GOOD_TOKEN)])

    @defer.inlineCallbacks
    def test_bad_bodies_are_400_and_change_nothing(self):
        before = self.spanner.status()
        for data in ({}, {"token": None}, {"token": ""}, {"token": "  "}, {"token": 5},
                     {"token": [GOOD_TOKEN]}, {"token": GOOD_TOKEN, "name": "x"}, [GOOD_TOKEN]):
            response, body = yield self.call("POST", "/api/v1/spanner/join", body=data)
            self.assertJSONError(response, body, 400, "bad_request")
        self.assertNothingChanged(before)

    @defer.inlineCallbacks
    def test_refusals(self):
        for token, code, error in (("vgoi_other", 409, "join_refused"),
                                   (UNREACHABLE_TOKEN, 503, "unreachable")):
            response, body = yield self.call("POST", "/api/v1/spanner/join",
                                             body={"token": token})
            self.assertJSONError(response, body, code, error)
        self.spanner.found()
        response, body = yield self.call("POST", "/api/v1/spanner/join",
                                         body={"token": GOOD_TOKEN})
        self.assertJSONError(response, body, 409, "already_member")


class RosterTests(SpannerApiTestCase):
    """``GET /api/v1/spanner/roster``: the snapshot bytes, ETag and 304."""

    def get(self, **headers):
        headers = {k.replace("_", "-").encode(): v for k, v in headers.items()}
        return self.call("GET", "/api/v1/spanner/roster", token=None, headers=headers)

    @defer.inlineCallbacks
    def test_snapshot_with_its_digest_as_etag(self):
        response, body = yield self.get()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        digest = self.spanner.digest()
        self.assertEqual(response.headers.getRawHeaders(b"etag"), [b'"%s"' % digest.encode()])
        self.assertEqual(body, json.loads(self.spanner.snapshot_body()))

    @defer.inlineCallbacks
    def test_the_body_is_the_federations_bytes_exactly(self):
        self.spanner.snapshot = lambda: ('"abc"', b'{"b": 1,  "a": 2}')
        response, _ = yield self.call("GET", "/api/v1/spanner/roster", token=None)
        self.assertEqual(response.headers.getRawHeaders(b"etag"), [b'"abc"'])
        content = yield self.client.settled(self.client.stub.content(response))
        self.assertEqual(content, b'{"b": 1,  "a": 2}')

    @defer.inlineCallbacks
    def test_a_matching_if_none_match_is_304_without_a_body(self):
        digest = self.spanner.digest()
        for value in (f'"{digest}"', digest, f'"0000", "{digest}"', f"W/\"{digest}\"",
                      f"0000,{digest}", "*"):
            response, body = yield self.get(if_none_match=[value.encode()])
            self.assertEqual((response.code, body), (304, b""), value)
            self.assertEqual(response.headers.getRawHeaders(b"etag"),
                             [b'"%s"' % digest.encode()])
        response, body = yield self.get(if_none_match=[b'"0000"', f'"{digest}"'.encode()])
        self.assertEqual(response.code, 304)

    @defer.inlineCallbacks
    def test_a_stale_if_none_match_gets_the_snapshot(self):
        for value in (b'"0000"', b"", b'""', self.spanner.digest()[:10].encode()):
            response, body = yield self.get(if_none_match=[value])
            self.assertEqual(response.code, 200, value)
            self.assertEqual(body, json.loads(self.spanner.snapshot_body()))

    @defer.inlineCallbacks
    def test_an_unfederated_bolt_has_no_roster(self):
        self.use(FakeSpanner())
        response, body = yield self.get()
        self.assertJSONError(response, body, 409, "not_member")


class BoltTests(SpannerApiTestCase):

    @defer.inlineCallbacks
    def test_list(self):
        response, body = yield self.call("GET", "/api/v1/spanner/bolts")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, {"bolts": self.spanner.rows, "count": 3})

    @defer.inlineCallbacks
    def test_show_by_id_or_name(self):
        for key in (PEER_ID, "dc2"):
            response, body = yield self.call("GET", "/api/v1/spanner/bolts/" + key)
            self.assertEqual(response.code, 200)
            self.assertEqual(body["bolt_id"], PEER_ID)
        response, body = yield self.call("GET", "/api/v1/spanner/bolts/nosuch")
        self.assertJSONError(response, body, 404, "not_found")
        self.assertIn("nosuch", body["detail"])

    @defer.inlineCallbacks
    def test_unfederated(self):
        self.use(FakeSpanner())
        for path in ("/api/v1/spanner/bolts", "/api/v1/spanner/bolts/dc1"):
            response, body = yield self.call("GET", path)
            self.assertJSONError(response, body, 409, "not_member")


class ActionTests(SpannerApiTestCase):

    @defer.inlineCallbacks
    def test_act_by_name_answers_with_the_bolt_id(self):
        args = {"n": 1, "names": ["a", "b"], "deep": {"x": None}}
        response, body = yield self.call("POST", "/api/v1/spanner/bolts/dc2/actions/echo",
                                         body=args)
        self.assertEqual(response.code, 200)
        self.assertEqual(body, {"bolt_id": PEER_ID, "action": "echo", "result": {"args": args}})
        self.assertEqual(self.spanner.mutations(), [("act", PEER_ID, "echo", args)])

    @defer.inlineCallbacks
    def test_no_body_is_no_arguments(self):
        response, body = yield self.call("POST", f"/api/v1/spanner/bolts/{SELF_ID}/actions/echo")
        self.assertEqual((response.code, body["result"]), (200, {"args": {}}))

    @defer.inlineCallbacks
    def test_bad_bodies_are_400_and_change_nothing(self):
        before = self.spanner.status()
        for data in (b"[1]", b"1", b"nope", b'{"x": NaN}', b'"x"'):
            response, body = yield self.call(
                "POST", "/api/v1/spanner/bolts/dc2/actions/echo", data=data)
            self.assertJSONError(response, body, 400, "bad_request")
        self.assertNothingChanged(before)

    @defer.inlineCallbacks
    def test_refusals_map_to_their_statuses(self):
        for path, code, error in (
            ("/api/v1/spanner/bolts/nosuch/actions/echo", 404, "not_found"),
            ("/api/v1/spanner/bolts/dc2/actions/nosuch", 404, "unknown_action"),
            ("/api/v1/spanner/bolts/dc2/actions/boom", 502, "action_failed"),
            ("/api/v1/spanner/bolts/dc3/actions/echo", 503, "unreachable"),
        ):
            response, body = yield self.call("POST", path, body={})
            self.assertJSONError(response, body, code, error)

    @defer.inlineCallbacks
    def test_a_refusal_raised_at_once(self):
        def refuse(*args):
            raise Refusal("bad_request", "argument 'n' must be a number")

        self.spanner.act = refuse
        response, body = yield self.call("POST", "/api/v1/spanner/bolts/dc2/actions/echo",
                                         body={"n": "x"})
        self.assertJSONError(response, body, 400, "bad_request")
        self.assertEqual(body["detail"], "argument 'n' must be a number")


class DrainAndRemoveTests(SpannerApiTestCase):
    """Draining a bolt (``POST``/``GET .../drain``) and removing it (``DELETE``)."""

    @defer.inlineCallbacks
    def test_drain_starts_and_reports(self):
        response, body = yield self.call("POST", "/api/v1/spanner/bolts/dc2/drain",
                                         body={"to": " dc1 "})
        self.assertEqual(response.code, 202)
        self.assertEqual((body["state"], body["to"]), ("running", "dc1"))
        response, body = yield self.call("POST", "/api/v1/spanner/bolts/dc2/drain", body={})
        self.assertEqual((response.code, body["to"]), (202, None))
        response, body = yield self.call("GET", "/api/v1/spanner/bolts/dc2/drain")
        self.assertEqual((response.code, body["state"], body["moved"]), (200, "done", 2))
        self.assertEqual(self.spanner.mutations(), [("drain", "dc2", "dc1"),
                                                    ("drain", "dc2", None)])

    @defer.inlineCallbacks
    def test_drain_refuses_a_bad_body(self):
        for data in ({"to": 3}, {"to": " "}, {"to": "dc1", "x": 1}):
            response, body = yield self.call("POST", "/api/v1/spanner/bolts/dc2/drain",
                                             body=data)
            self.assertJSONError(response, body, 400, "bad_request")
        response, body = yield self.call("POST", "/api/v1/spanner/bolts/nowhere/drain",
                                         body={})
        self.assertJSONError(response, body, 404, "not_found")

    @defer.inlineCallbacks
    def test_remove(self):
        response, body = yield self.call("DELETE", "/api/v1/spanner/bolts/dc2")
        self.assertEqual((response.code, body["removed"], body["forced"]), (200, True, False))
        response, body = yield self.call("DELETE", "/api/v1/spanner/bolts/dc2?force=1")
        self.assertEqual((response.code, body["forced"]), (200, True))
        self.assertEqual(self.spanner.mutations(), [("remove_bolt", "dc2", False),
                                                    ("remove_bolt", "dc2", True)])


class EnvoysAtAnyBoltTests(SpannerApiTestCase):
    """``/api/v1/envoys...`` and a bolt's envoys and push, asked of every bolt."""

    @defer.inlineCallbacks
    def test_list_names_the_bolts_that_did_not_answer(self):
        response, body = yield self.call("GET", "/api/v1/envoys")
        self.assertEqual(response.code, 200, body)
        self.assertEqual([(e["hostname"], e["bolt_id"]) for e in body["envoys"]],
                         [("web1.dc1.example.com", SELF_ID), ("web2.dc2.example.com", PEER_ID)])
        self.assertEqual(body["count"], 2)
        self.assertEqual(body["bolts"], {SELF_ID: "ok", PEER_ID: "ok", DOWN_ID: "timeout"})
        self.assertEqual(self.spanner.calls[-1], ("envoys", None, False))

    @defer.inlineCallbacks
    def test_list_one_bolt_offline(self):
        response, body = yield self.call("GET", "/api/v1/envoys?bolt=dc2&offline=1")
        self.assertEqual(response.code, 200, body)
        self.assertEqual([e["id"] for e in body["envoys"]], ["e2" * 10])
        self.assertEqual(body["bolts"], {PEER_ID: "ok"})
        self.assertIn(("envoys", "dc2", True), self.spanner.calls)

    @defer.inlineCallbacks
    def test_list_an_unknown_bolt(self):
        response, body = yield self.call("GET", "/api/v1/envoys?bolt=nope")
        self.assertJSONError(response, body, 404, "not_found")

    @defer.inlineCallbacks
    def test_show_and_its_refusals(self):
        response, body = yield self.call("GET", "/api/v1/envoys/web2.dc2.example.com")
        self.assertEqual(response.code, 200, body)
        self.assertEqual((body["id"], body["bolt_id"]), ("e2" * 10, PEER_ID))
        response, body = yield self.call("GET", "/api/v1/envoys/web9.dc1.example.com")
        self.assertJSONError(response, body, 503, "unreachable")
        self.assertIn(DOWN_ID, body["detail"])
        self.spanner.rows = self.spanner.rows[:2]  # every bolt answers now
        response, body = yield self.call("GET", "/api/v1/envoys/web9.dc1.example.com")
        self.assertJSONError(response, body, 404, "not_found")

    @defer.inlineCallbacks
    def test_push_one_envoy(self):
        response, body = yield self.call("POST", "/api/v1/envoys/web2.dc2.example.com/push")
        self.assertEqual(response.code, 202, body)
        self.assertEqual(body, {"envoy_id": "e2" * 10, "delivered": "now", "bolt_id": PEER_ID,
                                "bolt_name": "dc2"})
        self.assertEqual(self.spanner.pushed, ["e2" * 10])

    @defer.inlineCallbacks
    def test_push_refuses_a_body(self):
        response, body = yield self.call("POST", "/api/v1/envoys/web2.dc2.example.com/push",
                                         body={"x": 1})
        self.assertJSONError(response, body, 400, "bad_request")
        self.assertEqual(self.spanner.pushed, [])

    @defer.inlineCallbacks
    def test_bolt_envoys(self):
        response, body = yield self.call("GET", "/api/v1/spanner/bolts/dc2/envoys")
        self.assertEqual(response.code, 200, body)
        self.assertEqual((body["bolt_id"], body["count"], body["truncated"]), (PEER_ID, 1, False))
        response, body = yield self.call("GET", "/api/v1/spanner/bolts/dc1/envoys?offline=1")
        self.assertEqual(body["envoys"], [])
        response, body = yield self.call("GET", "/api/v1/spanner/bolts/dc3/envoys")
        self.assertJSONError(response, body, 503, "unreachable")
        response, body = yield self.call("GET", "/api/v1/spanner/bolts/dc9/envoys")
        self.assertJSONError(response, body, 404, "not_found")

    @defer.inlineCallbacks
    def test_bolt_push(self):
        response, body = yield self.call("POST", "/api/v1/spanner/bolts/dc2/push")
        self.assertEqual(response.code, 202, body)
        self.assertEqual(body, {"bolt_id": PEER_ID, "name": "dc2", "envoys": 1, "now": 1,
                                "next_attach": 0})
        response, body = yield self.call("POST", "/api/v1/spanner/bolts/dc3/push")
        self.assertJSONError(response, body, 503, "unreachable")
        self.assertEqual(self.spanner.pushed, [PEER_ID])

    @defer.inlineCallbacks
    def test_reads_and_pushes_want_a_token(self):
        for method, path in (("GET", "/api/v1/envoys"), ("GET", "/api/v1/envoys/x"),
                             ("POST", "/api/v1/envoys/x/push"),
                             ("GET", "/api/v1/spanner/bolts/dc2/envoys"),
                             ("POST", "/api/v1/spanner/bolts/dc2/push")):
            response, body = yield self.call(method, path, token=None)
            self.assertJSONError(response, body, 401, "unauthorized")
        self.assertEqual(self.spanner.calls, [])


class ErrorTests(SpannerApiTestCase):

    @defer.inlineCallbacks
    def test_a_service_bug_is_a_json_500(self):
        def broken():
            raise ZeroDivisionError("bug")

        self.spanner.bolts = broken
        response, body = yield self.call("GET", "/api/v1/spanner/bolts")
        self.assertJSONError(response, body, 500, "internal_error")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_etag_matching(self):
        match = spanner_api.etag_matches
        self.assertTrue(match([b'"ab"'], "ab"))
        self.assertTrue(match([b"x, ab"], "ab"))
        self.assertTrue(match([b"x", b"W/\"ab\""], "ab"))
        self.assertFalse(match([], "ab"))
        self.assertFalse(match([b'"a"', b"abc"], "ab"))
        self.assertFalse(match([b" , "], "ab"))


class OwnerTests(SpannerApiTestCase):
    """``GET /api/v1/spanner/owner``: which bolt owns a hostname, and why."""

    @defer.inlineCallbacks
    def test_by_pattern_and_by_override(self):
        response, body = yield self.call(
            "GET", "/api/v1/spanner/owner?hostname=Web1.DC2.example.com.")
        self.assertEqual(response.code, 200, body)
        self.assertEqual(body, {"hostname": "web1.dc2.example.com", "bolt_id": PEER_ID,
                                "name": "dc2", "by": "pattern", "pattern": "*.dc2.example.com",
                                "candidates": [{"bolt_id": PEER_ID, "name": "dc2",
                                                "pattern": "*.dc2.example.com"}]})
        self.spanner.overrides["e9" * 10] = SELF_ID
        response, body = yield self.call(
            "GET", "/api/v1/spanner/owner?hostname=web1.dc2.example.com&envoy=" + "e9" * 10)
        self.assertEqual((body["bolt_id"], body["by"], body["pattern"]),
                         (SELF_ID, "override", None))
        self.assertIn(("owner", "web1.dc2.example.com", "e9" * 10), self.spanner.calls)

    @defer.inlineCallbacks
    def test_refusals(self):
        response, body = yield self.call("GET", "/api/v1/spanner/owner")
        self.assertJSONError(response, body, 400, "bad_request")
        self.assertIn("?hostname=", body["detail"])
        response, body = yield self.call("GET", "/api/v1/spanner/owner?hostname=a..b")
        self.assertJSONError(response, body, 400, "bad_request")
        response, body = yield self.call("GET", "/api/v1/spanner/owner?hostname=db.elsewhere")
        self.assertJSONError(response, body, 404, "no_owner")
        self.assertIn("db.elsewhere", body["detail"])
        self.use(FakeSpanner())
        response, body = yield self.call("GET", "/api/v1/spanner/owner?hostname=a.example")
        self.assertJSONError(response, body, 409, "not_member")


class RevokeTests(SpannerApiTestCase):
    """``DELETE /api/v1/envoys/{id}`` at a bolt revokes an envoy of its own only."""

    @defer.inlineCallbacks
    def test_revoke_an_envoy_of_this_bolt(self):
        response, body = yield self.call("DELETE", "/api/v1/envoys/web1.dc1.example.com")
        self.assertEqual((response.code, body), (200, {"envoy_id": "e1" * 10,
                                                       "state": "revoked"}))
        # Its revoked copy is shown once every bolt answered: dc3 may hold it active.
        response, body = yield self.call("GET", "/api/v1/envoys/" + "e1" * 10)
        self.assertJSONError(response, body, 503, "unreachable")
        self.assertIn("no active envoy", body["detail"])
        self.spanner.rows = self.spanner.rows[:2]
        response, body = yield self.call("GET", "/api/v1/envoys/" + "e1" * 10)
        self.assertEqual((response.code, body["state"]), (200, "revoked"))
        response, body = yield self.call("POST", "/api/v1/envoys/%s/push" % ("e1" * 10,))
        self.assertJSONError(response, body, 409, "not_active")
        self.assertEqual(self.spanner.pushed, [])

    @defer.inlineCallbacks
    def test_another_bolts_envoy_is_not_found_here(self):
        response, body = yield self.call("DELETE", "/api/v1/envoys/web2.dc2.example.com")
        self.assertJSONError(response, body, 404, "not_found")
        self.assertEqual(self.spanner.envoy_rows[PEER_ID][0]["state"], "active")


class UnfederatedEnvoysTests(SpannerApiTestCase):
    """Before a bolt founds or joins a federation, it lists its own envoys."""

    member = False

    @defer.inlineCallbacks
    def test_only_this_bolt(self):
        for query in ("", "?bolt=dc1", "?bolt=" + SELF_ID):
            response, body = yield self.call("GET", "/api/v1/envoys" + query)
            self.assertEqual(response.code, 200, body)
            self.assertEqual(body["bolts"], {SELF_ID: "ok"})
            self.assertEqual([e["id"] for e in body["envoys"]], ["e1" * 10])
        response, body = yield self.call("GET", "/api/v1/envoys?bolt=dc2")
        self.assertJSONError(response, body, 409, "not_member")


class ReassignTests(SpannerApiTestCase):
    """``POST /api/v1/envoys/{id}/reassign``, asked of the bolt's envoy operations."""

    @defer.inlineCallbacks
    def test_the_api_hands_key_and_destination_over(self):
        asked = []
        answer = {"envoy_id": "e1" * 10, "hostname": "web1.dc1.example.com", "from": SELF_ID,
                  "from_name": "dc1", "to": PEER_ID, "to_name": "dc2", "changed": True,
                  "delivered": "now"}

        def reassign(key, to):
            asked.append((key, to))
            return defer.succeed(answer)

        self.envoys.reassign = reassign
        response, body = yield self.call(*REASSIGN, body={"to": " dc2 "})
        self.assertEqual((response.code, body), (200, answer))
        self.assertEqual(asked, [("web1.dc1.example.com", "dc2")])

    @defer.inlineCallbacks
    def test_reassign_moves_the_envoy(self):
        response, body = yield self.call(*REASSIGN, body={"to": "dc2"})
        self.assertEqual((response.code, body), (200, {
            "envoy_id": "e1" * 10, "hostname": "web1.dc1.example.com", "from": SELF_ID,
            "from_name": "dc1", "to": PEER_ID, "to_name": "dc2", "changed": True,
            "delivered": "now"}))
        response, body = yield self.call("GET", "/api/v1/envoys/web1.dc1.example.com")
        self.assertEqual((body["bolt_id"], body["state"]), (PEER_ID, "active"))
        response, body = yield self.call(*REASSIGN, body={"to": PEER_ID})
        self.assertEqual((response.code, body["changed"], body["from"]), (200, False, None))
        self.assertEqual(self.spanner.mutations(), [
            ("reassign", "web1.dc1.example.com", "dc2"),
            ("reassign", "web1.dc1.example.com", PEER_ID)])

    @defer.inlineCallbacks
    def test_reassign_refusals(self):
        for data in ({}, {"to": ""}, {"to": 5}, {"to": "dc2", "x": 1}):
            response, body = yield self.call(*REASSIGN, body=data)
            self.assertJSONError(response, body, 400, "bad_request")
        self.assertEqual(self.spanner.mutations(), [])
        for path, to, code, error in (
            (REASSIGN[1], "nowhere", 404, "not_found"),
            (REASSIGN[1], "dc3", 409, "bolt_not_active"),
            ("/api/v1/envoys/web9.dc1.example.com/reassign", "dc2", 503, "unreachable"),
        ):
            response, body = yield self.call("POST", path, body={"to": to})
            self.assertJSONError(response, body, code, error)
        self.assertEqual(body["detail"].count(DOWN_ID), 1)
        self.spanner.rows = self.spanner.rows[:2]  # every bolt answers now
        response, body = yield self.call("POST", "/api/v1/envoys/web9.dc1.example.com/reassign",
                                         body={"to": "dc2"})
        self.assertJSONError(response, body, 404, "not_found")
        self.assertEqual(self.spanner.envoy_rows[SELF_ID][0]["state"], "active")
        self.use(FakeSpanner())
        response, body = yield self.call(*REASSIGN, body={"to": "dc2"})
        self.assertJSONError(response, body, 409, "not_member")


#: The status of each refusal code, as ``vigo.api.responses`` documents it.
DOCUMENTED_STATUS = {
    "not_found": 404, "unknown_action": 404, "not_spanner": 404, "ha_off": 404,
    "replication_timeout": 503, "not_primary": 503, "standby": 503,
    "bolt_not_found": 404,
    "bad_request": 400, "malformed": 400,
    "action_failed": 502, "bad_answer": 502,
    "unreachable": 503, "stopping": 503,
}


class Refusing:
    """A federation and envoy operations in one, whose every call refuses with
    ``refusal``: raised at once, or (``later``) as a failed Deferred."""

    def __init__(self, refusal, later):
        self.refusal = refusal
        self.later = later

    def __getattr__(self, name):
        def refuse(*args, **kwargs):
            if self.later:
                return defer.fail(self.refusal)
            raise self.refusal

        return refuse


class RefusalStatusTests(ApiTestCase):
    """A refusal from below is answered with the status its code calls for."""

    def test_the_table_is_the_documented_one(self):
        self.assertEqual(REFUSAL_STATUS, DOCUMENTED_STATUS)

    @defer.inlineCallbacks
    def test_each_code_through_the_spanner_and_envoy_routes(self):
        codes = sorted(DOCUMENTED_STATUS) + ["already_member", "conflict", "not_member",
                                             "no_owner"]  # a drain that would strand envoys
        for code in codes:
            expected = DOCUMENTED_STATUS.get(code, 409)
            for later in (False, True):
                refusal = Refusal(code, "refused with %s" % (code,))
                self.assertEqual(status_of(refusal), expected)
                below = Refusing(refusal, later)
                self.serve(self.server.admin_api(federation=below, envoys=below))
                for method, path in (("GET", "/api/v1/spanner/bolts"),
                                     ("GET", "/api/v1/spanner/roster"),
                                     ("GET", "/api/v1/envoys/web1.dc1.example.com"),
                                     ("POST", "/api/v1/envoys/web1.dc1.example.com/push")):
                    response, body = yield self.call(method, path)
                    self.assertJSONError(response, body, expected, code)
                    self.assertEqual(body["detail"], refusal.reason, (code, later, path))


# -- a real bolt --------------------------------------------------------------------


class NoRepair:
    """A ``HandoverRepair`` that has run no round yet."""

    pending = None
    pending_at = None


class RealBolt:
    """The federation half of a spanner bolt around a ``FacadeServer``'s fleet,
    wired as ``vigo.server.spanner`` wires it, with no peer to call: a real
    ``LocalRoster``, ``Membership``, ``Invites``, ``FederationStatus``,
    ``Bolt`` (with the loaded peer actions), ``FleetReads``, ``BoltAdmin`` and
    ``FederatedEnvoys``, all answering at once over the server's store."""

    def __init__(self, server, name="dc1", patterns=("*.dc1.example.com",)):
        identity, clock, fleet = server.identity, server.clock, server.fleet
        self.roster = LocalRoster(server.store, identity, clock)
        moves = EnvoyMoves(fleet, server.store, clock, server.advertised.envoy)
        bolt = Bolt(identity, lambda: name, clock, self.roster, load_actions(), None,
                    fleet=BoltFleet(fleet, clock, moves.endpoint))
        membership = Membership(identity, self.roster, clock, server.advertised.row, name,
                                list(patterns), None, None, server.store)
        invites = Invites(identity, self.roster, server.store, clock,
                          lambda: server.advertised.row()["peer"])
        def name_now():  # as the wiring has it: the row's name, else the configured one
            row = self.roster.row(identity.id)
            return name if row is None else row.name

        status = FederationStatus(identity.id, name_now, self.roster, dict,
                                  OwnFigures(fleet, clock), NoRepair(), clock)
        reads = FleetReads(bolt, clock, status.reachable_bolts)
        self.admin = BoltAdmin(identity, self.roster, status, membership, invites, reads, bolt,
                               clock)
        self.envoys = FederatedEnvoys(self.admin, reads, fleet)


class InterfaceTests(unittest.SynchronousTestCase):
    """The fakes and the real parts provide the interfaces the API is wired with."""

    def test_federations(self):
        verifyObject(IFederationAdmin, FakeSpanner())
        verifyObject(IFederationAdmin, FakeSpanner().found())
        verifyObject(IFederationAdmin, NoFederation("a" * 20))
        verifyClass(IFederationAdmin, BoltAdmin)
        verifyClass(IFederationAdmin, FakeSpanner)

    def test_envoy_operations(self):
        verifyObject(IEnvoyOperations, FakeSpanner().envoy_operations())
        verifyClass(IEnvoyOperations, FakeEnvoys)
        verifyClass(IEnvoyOperations, LocalEnvoys)
        verifyClass(IEnvoyOperations, FederatedEnvoys)

    def test_a_real_bolt(self):
        server = FacadeServer(self.mktemp(), new_clock(), ImmediateStore())
        self.addCleanup(server.store.close)
        bolt = RealBolt(server)
        verifyObject(IFederationAdmin, bolt.admin)
        verifyObject(IEnvoyOperations, bolt.envoys)
        verifyObject(IEnvoyOperations, server.envoys)


class RealBoltTests(ApiTestCase):
    """``AdminAPI`` over a real one-bolt ``BoltAdmin`` and ``FederatedEnvoys``:
    the routes work with them, and their answers have the shape of the fake's."""

    @defer.inlineCallbacks
    def setUp(self):
        yield ApiTestCase.setUp(self)
        self.bolt = RealBolt(self.server)
        self.serve(self.server.admin_api(federation=self.bolt.admin, envoys=self.bolt.envoys))
        self.me = self.server.identity.id

    @defer.inlineCallbacks
    def test_found_then_read(self):
        response, body = yield self.call("GET", "/api/v1/spanner/status")
        self.assertEqual((response.code, body["state"]), (200, "unfederated"))
        self.assertEqual(set(body), set(FakeSpanner().status()))
        for path in ("/api/v1/spanner/bolts", "/api/v1/spanner/roster",
                     "/api/v1/spanner/owner?hostname=web1.dc1.example.com"):
            response, body = yield self.call("GET", path)
            self.assertJSONError(response, body, 409, "not_member")
        response, body = yield self.call("POST", "/api/v1/spanner/init", body={"name": "dc1"})
        self.assertEqual((response.code, body["state"], body["founder_id"]),
                         (201, "member", self.me))
        self.assertEqual(set(body), set(FakeSpanner().found().status()))
        response, body = yield self.call("POST", "/api/v1/spanner/init", body={})
        self.assertJSONError(response, body, 409, "already_member")

        response, body = yield self.call("GET", "/api/v1/spanner/bolts")
        self.assertEqual((response.code, body["count"]), (200, 1))
        self.assertEqual(set(body["bolts"][0]), set(bolt_row(SELF_ID, "dc1", me=True)))
        self.assertEqual((body["bolts"][0]["bolt_id"], body["bolts"][0]["self"]), (self.me, True))
        for key in (self.me, "dc1"):
            response, body = yield self.call("GET", "/api/v1/spanner/bolts/" + key)
            self.assertEqual((response.code, body["bolt_id"]), (200, self.me))
        response, body = yield self.call("GET", "/api/v1/spanner/bolts/dc9")
        self.assertJSONError(response, body, 404, "not_found")

        response, body = yield self.call(
            "GET", "/api/v1/spanner/owner?hostname=web1.dc1.example.com")
        self.assertEqual((response.code, body["bolt_id"], body["by"]), (200, self.me, "pattern"))
        self.assertEqual(set(body), set(FakeSpanner().found().owner("web1.dc1.example.com")))
        response, body = yield self.call("GET", "/api/v1/spanner/owner?hostname=db.elsewhere")
        self.assertJSONError(response, body, 404, "no_owner")

        response, body = yield self.call("POST", "/api/v1/spanner/invite", body={})
        self.assertEqual(response.code, 201, body)
        self.assertEqual(set(body), {"token", "token_id", "expires_at", "minter_id"})
        self.assertEqual(body["minter_id"], self.me)

        response, _ = yield self.call("GET", "/api/v1/spanner/roster", token=None)
        self.assertEqual(response.code, 200)
        digest = self.bolt.roster.digest().hex()
        self.assertEqual(response.headers.getRawHeaders(b"etag"), [b'"%s"' % digest.encode()])

        response, body = yield self.call("GET", "/spanner")
        self.assertEqual(response.code, 200)
        self.assertIn(b"Vigo spanner: bolt dc1", body)

    @defer.inlineCallbacks
    def test_envoys_at_a_bolt(self):
        yield self.call("POST", "/api/v1/spanner/init", body={})
        envoy = yield self.enroll("web1.dc1.example.com")
        response, body = yield self.call("GET", "/api/v1/envoys")
        self.assertEqual(response.code, 200, body)
        fake = yield FakeSpanner().found().envoy_operations().list()
        self.assertEqual(set(body), set(fake))
        self.assertEqual(body["bolts"], {self.me: "ok"})
        self.assertEqual([(e["id"], e["bolt_id"]) for e in body["envoys"]], [(envoy, self.me)])
        self.assertEqual(set(body["envoys"][0]), set(fake["envoys"][0]))
        response, body = yield self.call("GET", "/api/v1/envoys?bolt=dc9")
        self.assertJSONError(response, body, 404, "not_found")

        response, body = yield self.call("GET", "/api/v1/envoys/web1.dc1.example.com")
        self.assertEqual((response.code, body["id"], body["bolt_name"]), (200, envoy, "dc1"))
        fake = yield FakeSpanner().found().envoy_operations().show("web1.dc1.example.com")
        self.assertEqual(set(body), set(fake))
        response, body = yield self.call("GET", "/api/v1/envoys/web9.dc1.example.com")
        self.assertJSONError(response, body, 404, "not_found")
        response, body = yield self.call("POST", "/api/v1/envoys/web1.dc1.example.com/push")
        self.assertEqual((response.code, body), (202, {
            "envoy_id": envoy, "delivered": "next_attach", "bolt_id": self.me,
            "bolt_name": "dc1"}))
        response, body = yield self.call("GET", "/api/v1/spanner/bolts/dc1/envoys")
        self.assertEqual((response.code, body["count"], body["name"]), (200, 1, "dc1"))

        response, body = yield self.call(*REASSIGN, body={"to": "dc1"})
        self.assertEqual((response.code, body["changed"]), (200, False))
        response, body = yield self.call(*REASSIGN, body={"to": "dc9"})
        self.assertJSONError(response, body, 404, "not_found")

        response, body = yield self.call("DELETE", "/api/v1/envoys/web1.dc1.example.com")
        self.assertEqual((response.code, body), (200, {"envoy_id": envoy, "state": "revoked"}))
        response, body = yield self.call("POST", f"/api/v1/envoys/{envoy}/push")
        self.assertJSONError(response, body, 409, "not_active")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
bodies = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["dc1", "", " "]) | json_values,
    "patterns": st.lists(st.sampled_from(["*.a", "", "b"]), max_size=3) | json_values,
    "expires_in": st.sampled_from(["1h", "24h", "25h", "0s", "x"]) | json_values,
    "token": st.sampled_from([GOOD_TOKEN, "", "vgoi_no"]) | json_values,
})


class BodyFuzzTests(unittest.SynchronousTestCase):
    """Any JSON to init, invite or join is answered, and a 400 reaches nothing."""

    def setUp(self):
        self.server = FacadeServer.started(self)
        self.headers = self.server.admin_headers()

    def post(self, spanner, path, body):
        api = self.server.admin_api(federation=spanner, envoys=spanner.envoy_operations())
        stub = StubTreq(api.resource())
        d = stub.post("http://vigo.test" + path, data=json.dumps(body).encode(),
                      headers=self.headers)
        stub.flush()
        response = self.successResultOf(d)
        d = stub.content(response)
        stub.flush()
        return response, json.loads(self.successResultOf(d))

    @settings(max_examples=200, deadline=None)
    @given(route=st.sampled_from(["init", "invite", "join"]), member=st.booleans(),
           body=json_values | bodies)
    def test_any_json_is_answered_and_a_400_reaches_nothing(self, route, member, body):
        spanner = FakeSpanner()
        if member:
            spanner.found()
        response, answer = self.post(spanner, "/api/v1/spanner/" + route, body)
        self.assertIn(response.code, (200, 201, 400, 409, 503), (body, answer))
        if response.code == 400:
            self.assertEqual(set(answer), {"error", "detail"})
            self.assertEqual(spanner.mutations(), [])
        elif response.code < 300:
            self.assertEqual(len(spanner.mutations()), 1)


