"""``GET /spanner``: the federation at a glance, as HTML.

The page is ``FederationPage.render(request)`` over the server's
``IFederationAdmin``; ``AdminAPI`` hands it ``GET /spanner``. Driven through
AdminAPI over StubTreq (a ``FakeSpanner`` bolt, a standalone server), and
once on its own.
"""

import base64

from twisted.internet import defer
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from tests.spannerkit import FakeSpanner
from tests.test_api import ApiTestCase
from tests.test_api_spanner import SpannerApiTestCase
from vigo.api.page import FederationPage
from vigo.spanner.status import envoy_summary


def basic(password, user="admin"):
    return [b"Basic " + base64.b64encode(("%s:%s" % (user, password)).encode())]


class PageTests(SpannerApiTestCase):
    def page(self, **kwargs):
        return self.call("GET", "/spanner", **kwargs)

    @defer.inlineCallbacks
    def test_the_federation_at_a_glance(self):
        del self.spanner.calls[:]
        response, body = yield self.page()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"text/html; charset=utf-8"])
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-store"])
        html = body.decode("utf-8")
        self.assertTrue(html.startswith("<!DOCTYPE html>"))
        self.assertIn('<meta http-equiv="refresh" content="5"', html)
        self.assertIn("Vigo spanner: bolt dc1", html)
        self.assertIn("bolts 3 total, 2 active, 1 draining, 0 removed", html)
        for row in self.spanner.rows:
            self.assertIn(row["bolt_id"], html)
            self.assertIn(">%s<" % (row["name"],), html)
        self.assertIn('class="draining">draining<', html)
        self.assertIn('class="down">down<', html)
        self.assertIn("*.dc2.example.com", html)
        self.assertIn('class="num">12<', html)  # dc1's envoys, from its counters
        # Built from the status and the roster alone: no peer is asked.
        self.assertEqual(self.spanner.calls, [("status",), ("bolts",)])

    @defer.inlineCallbacks
    def test_a_dead_bolts_figures_are_greyed_and_aged(self):
        # dc3 was killed 28 s ago: its last figures are shown as such, and it
        # has no check-in rate any more.
        dead = self.spanner.rows[2]
        dead["envoys"] = envoy_summary({"envoys_owned": 50, "envoys_online": 48}, 28.0, 3.3,
                                       28.0, liveness="down")
        response, body = yield self.page()
        html = body.decode("utf-8")
        self.assertIn('class="num stale"', html)
        self.assertIn(">50 (28s ago)<", html)
        self.assertIn(">48 (28s ago)<", html)
        self.assertNotIn("3.3", html)

    @defer.inlineCallbacks
    def test_a_browser_gives_the_token_as_a_basic_password(self):
        token = self.server.admin_token()
        response, _ = yield self.page(token=None, headers={b"authorization": basic(token)})
        self.assertEqual(response.code, 200)
        del self.spanner.calls[:]
        for headers in ({}, {b"authorization": basic("vgot_wrong")},
                        {b"authorization": [b"Basic !!notbase64"]},
                        {b"authorization": basic("", user=token)}):
            response, body = yield self.page(token=None, headers=headers)
            self.assertEqual(response.code, 401, headers)
            self.assertEqual(response.headers.getRawHeaders(b"www-authenticate"),
                             [b'Basic realm="vigo", charset="UTF-8"'])
            self.assertIn(b"needs an API token", body)
        self.assertEqual(self.spanner.calls, [])

    @defer.inlineCallbacks
    def test_names_and_patterns_are_escaped(self):
        self.spanner.rows[1]["name"] = "<script>alert(1)</script>"
        self.spanner.rows[1]["patterns"] = ['*.x"><b>']
        response, body = yield self.page()
        html = body.decode("utf-8")
        self.assertNotIn("<script>", html)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", html)
        self.assertNotIn('"><b>', html)

    @defer.inlineCallbacks
    def test_unfederated(self):
        self.use(FakeSpanner())
        response, body = yield self.page()
        self.assertEqual(response.code, 200)
        html = body.decode("utf-8")
        self.assertIn("unfederated", html)
        self.assertIn("vigocli spanner init", html)
        self.assertNotIn("<table", html)
        self.assertNotIn(("bolts",), self.spanner.calls)  # it would refuse: not a member


class StandalonePageTests(ApiTestCase):
    @defer.inlineCallbacks
    def test_a_standalone_server_has_no_page(self):
        response, body = yield self.call("GET", "/spanner")
        self.assertEqual(response.code, 404)
        self.assertIn(b"--mode=spanner", body)


class Tokens:
    """``ApiTokens`` that accept one password, for the page on its own."""

    def __init__(self, token):
        self.token = token

    def check_browser(self, authorization):
        return authorization == b"Bearer " + self.token


class RenderTests(unittest.SynchronousTestCase):
    """``FederationPage.render`` on its own, on a bare request."""

    def render(self, spanner, authorization=b"Bearer t0ken"):
        request = DummyRequest([b"spanner"])
        if authorization is not None:
            request.requestHeaders.setRawHeaders(b"authorization", [authorization])
        page = FederationPage(spanner, Tokens(b"t0ken"))
        body = self.successResultOf(defer.ensureDeferred(page.render(request)))
        return request, body

    def test_renders_the_federation(self):
        request, body = self.render(FakeSpanner().found())
        self.assertIn(request.responseCode, (None, 200))  # None: the default, 200
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"),
                         [b"text/html; charset=utf-8"])
        self.assertIn(b"Vigo spanner: bolt dc1", body)

    def test_refuses_without_the_token(self):
        spanner = FakeSpanner().found()
        for authorization in (None, b"Bearer wrong"):
            request, body = self.render(spanner, authorization)
            self.assertEqual(request.responseCode, 401)
            self.assertIn(b"needs an API token", body)
        self.assertEqual(spanner.calls, [])
