"""The web pages: ``GET /spanner`` (the federation, or a standalone server, at
a glance), ``/spanner/bolts/{bolt}``, ``/spanner/envoys/{envoy}``, and ``/``.

The pages are ``FederationPage`` (``vigo.api.page``) over the server's
``IFederationAdmin`` and ``IEnvoyOperations``; ``AdminAPI`` routes them.
Driven through AdminAPI over StubTreq (a ``FakeSpanner`` bolt, a standalone
server), and once on their own.
"""

import base64

from twisted.internet import defer
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from tests.spannerkit import DOWN_ID, PEER_ID, SELF_ID, FakeSpanner, envoy_row
from tests.test_api import ApiTestCase
from tests.test_api_spanner import SpannerApiTestCase
from vigo.api.page import FederationPage
from vigo.api.page.bolt import PAGE_SIZE
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


class BoltViewTests(SpannerApiTestCase):
    """``/spanner/bolts/{bolt}``: a bolt's row, patterns, envoys and drain."""

    def page(self, path, **kwargs):
        return self.call("GET", path, **kwargs)

    @defer.inlineCallbacks
    def test_a_bolt_and_its_envoys(self):
        del self.spanner.calls[:]
        response, body = yield self.page("/spanner/bolts/dc2")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"text/html; charset=utf-8"])
        html = body.decode("utf-8")
        self.assertIn("<title>Bolt dc2</title>", html)
        self.assertIn('name="viewport"', html)
        self.assertNotIn('http-equiv="refresh"', html)  # not draining: a form would reset
        self.assertIn(PEER_ID, html)
        self.assertIn("<code>*.dc2.example.com</code>", html)
        self.assertIn("dc2.test:1533", html)
        self.assertIn('href="/spanner/envoys/%s">web2.dc2.example.com<' % ("e2" * 10,), html)
        self.assertIn("1 envoy<", html)
        self.assertIn('href="/spanner"', html)  # back to the federation
        self.assertNotIn("Drain", html)  # active: no drain asked
        self.assertIn(("bolt_envoys", PEER_ID, False), self.spanner.calls)
        self.assertNotIn("drain_status", [c[0] for c in self.spanner.calls])

    @defer.inlineCallbacks
    def test_the_federation_links_each_bolt(self):
        response, body = yield self.call("GET", "/spanner")
        for bolt_id in (SELF_ID, PEER_ID, DOWN_ID):
            self.assertIn('href="/spanner/bolts/%s"' % (bolt_id,), body.decode("utf-8"))

    @defer.inlineCallbacks
    def test_search_and_paging(self):
        rows = [envoy_row("%020d" % (i,), "web%03d.dc1.example.com" % (i,), online=i % 2 == 0)
                for i in range(PAGE_SIZE + 20)]
        rows.append(envoy_row("x" * 20, "db1.dc1.example.com"))
        self.spanner.envoy_rows[SELF_ID] = rows
        response, body = yield self.page("/spanner/bolts/dc1")
        html = body.decode("utf-8")
        self.assertIn("%d envoys, showing 1 to %d" % (len(rows), PAGE_SIZE), html)
        self.assertIn("page 1 of 2", html)
        self.assertIn('href="/spanner/bolts/%s?page=2" rel="next"' % (SELF_ID,), html)
        self.assertNotIn("web060", html)

        response, body = yield self.page("/spanner/bolts/dc1?page=2")
        html = body.decode("utf-8")
        self.assertIn("page 2 of 2", html)
        self.assertIn("web060.dc1.example.com", html)
        self.assertNotIn("web000.", html)
        self.assertIn('rel="prev"', html)

        response, body = yield self.page("/spanner/bolts/dc1?q=WEB00")
        html = body.decode("utf-8")
        self.assertIn("10 envoys matching 'WEB00'", html)
        self.assertIn('value="WEB00"', html)
        self.assertIn("web009.", html)
        self.assertNotIn("web010.", html)
        self.assertNotIn("page 1 of", html)

        response, body = yield self.page("/spanner/bolts/dc1?q=xxxx")  # by id
        self.assertIn(b"db1.dc1.example.com", body)
        self.assertIn(b"1 envoy matching", body)

        response, body = yield self.page("/spanner/bolts/dc1?q=web&offline=1&page=9")
        html = body.decode("utf-8")
        self.assertIn(("bolt_envoys", SELF_ID, True), self.spanner.calls)
        self.assertIn("35 envoys matching 'web' offline<", html)
        self.assertIn('checked="checked"', html)
        self.assertNotIn("web000.", html)  # online
        self.assertIn("web001.", html)

        response, body = yield self.page("/spanner/bolts/dc1?q=web&page=3")
        self.assertIn(b"page 2 of 2", body)  # a page past the end: the last one

        response, body = yield self.page("/spanner/bolts/dc1?q=web&page=x")
        self.assertIn(b"page 1 of 2", body)
        self.assertIn(b'href="/spanner/bolts/%s?q=web&amp;page=2"' % (SELF_ID.encode(),),
                      body)

    @defer.inlineCallbacks
    def test_drain_progress(self):
        self.spanner.rows[1]["status"] = "draining"
        response, body = yield self.page("/spanner/bolts/%s" % (PEER_ID,))
        html = body.decode("utf-8")
        self.assertIn("<h2>Drain</h2>", html)
        self.assertIn('class="done">done<', html)
        self.assertIn("2 of 2 moved, 0 failed, 0 remaining", html)
        self.assertIn('<progress value="2" max="2">', html)
        self.assertIn(("drain_status", PEER_ID), self.spanner.calls)

    @defer.inlineCallbacks
    def test_a_bolt_that_does_not_answer(self):
        # dc3 is down and draining: its row and why its envoys are unknown.
        response, body = yield self.page("/spanner/bolts/dc3")
        self.assertEqual(response.code, 200)
        html = body.decode("utf-8")
        self.assertIn("<title>Bolt dc3</title>", html)
        self.assertIn('class="down">down<', html)
        self.assertIn("this bolt's envoys are unknown: bolt %s did not answer" % (DOWN_ID,), html)

    @defer.inlineCallbacks
    def test_no_such_bolt(self):
        response, body = yield self.page("/spanner/bolts/nowhere")
        self.assertEqual(response.code, 404)
        self.assertIn(b"<title>No bolt nowhere</title>", body)
        self.assertIn(b"no bolt 'nowhere' in the roster", body)

    @defer.inlineCallbacks
    def test_hostnames_and_searches_are_escaped(self):
        self.spanner.envoy_rows[SELF_ID] = [envoy_row("e9" * 10, "<img src=x onerror=alert(1)>")]
        response, body = yield self.page('/spanner/bolts/dc1?q="><script>x</script>')
        html = body.decode("utf-8")
        self.assertNotIn("<script>", html)
        self.assertIn("&lt;script&gt;", html)
        response, body = yield self.page("/spanner/bolts/dc1?q=img")
        html = body.decode("utf-8")
        self.assertNotIn("<img", html)
        self.assertIn("&lt;img src=x onerror=alert(1)&gt;", html)

    @defer.inlineCallbacks
    def test_needs_the_token(self):
        del self.spanner.calls[:]
        for path in ("/spanner/bolts/dc1", "/spanner/envoys/web1.dc1.example.com"):
            response, body = yield self.page(path, token=None)
            self.assertEqual(response.code, 401)
            response, body = yield self.page(path, token=None, headers={
                b"authorization": basic(self.server.admin_token())})
            self.assertEqual(response.code, 200)
        self.assertNotIn(("envoy", "x"), self.spanner.calls)


    @defer.inlineCallbacks
    def test_hostile_path_segments(self):
        for segment in ("%00", "..", "%2F", "a%20b", "%3Cb%3E", "x" * 300):
            for path in ("/spanner/bolts/", "/spanner/envoys/"):
                response, body = yield self.page(path + segment)
                self.assertTrue(400 <= response.code < 500 or response.code == 503,
                                (path + segment, response.code, body))
                self.assertNotIn(b"<b>", body)


class EnvoyViewTests(SpannerApiTestCase):
    """``/spanner/envoys/{envoy}``: one envoy, from whichever bolt holds it."""

    @defer.inlineCallbacks
    def test_an_envoy(self):
        response, body = yield self.call("GET", "/spanner/envoys/web2.dc2.example.com")
        self.assertEqual(response.code, 200)
        html = body.decode("utf-8")
        self.assertIn("<title>Envoy web2.dc2.example.com</title>", html)
        self.assertIn("e2" * 10, html)
        self.assertIn('href="/spanner/bolts/%s">dc2<' % (PEER_ID,), html)
        self.assertIn("2023-11-14 21:58:20 UTC (15m ago)", html)  # last seen
        self.assertIn("<dt>online</dt><dd>no</dd>", html)
        self.assertIn(("envoy", "web2.dc2.example.com"), self.spanner.calls)

    @defer.inlineCallbacks
    def test_no_such_envoy(self):
        self.spanner.rows[2]["status"] = "removed"  # so every bolt answers
        response, body = yield self.call("GET", "/spanner/envoys/nothing.example.com")
        self.assertEqual(response.code, 404)
        self.assertIn(b"No envoy nothing.example.com", body)

    @defer.inlineCallbacks
    def test_an_envoy_on_a_bolt_that_does_not_answer(self):
        response, body = yield self.call("GET", "/spanner/envoys/nothing.example.com")
        self.assertEqual(response.code, 503)
        self.assertIn(b"timeout", body)


class RootTests(SpannerApiTestCase):
    @defer.inlineCallbacks
    def test_the_root_redirects_to_the_page(self):
        response = yield self.client.settled(self.client.stub.request(
            "GET", "http://vigo.test/", allow_redirects=False))
        self.assertEqual(response.code, 302)
        self.assertEqual(response.headers.getRawHeaders(b"location"), [b"/spanner"])


class StandalonePageTests(ApiTestCase):
    """A standalone server has the same pages: the server, its envoys, each envoy."""

    @defer.inlineCallbacks
    def setUp(self):
        yield ApiTestCase.setUp(self)
        for i in range(3):
            yield self.enroll("web%d.example.com" % (i,))
        self.server_id = self.server.identity.id

    @defer.inlineCallbacks
    def test_the_server_at_a_glance(self):
        response, body = yield self.call("GET", "/spanner")
        self.assertEqual(response.code, 200)
        html = body.decode("utf-8")
        self.assertIn("<title>Vigo server: %s</title>" % (self.server_id,), html)
        self.assertIn("envoys 3 total, 3 active, 0 online", html)
        self.assertIn('href="/spanner/bolts/%s"' % (self.server_id,), html)
        self.assertIn('name="viewport"', html)

    @defer.inlineCallbacks
    def test_its_envoys(self):
        response, body = yield self.call("GET", "/spanner/bolts/%s?q=web1" % (self.server_id,))
        self.assertEqual(response.code, 200)
        html = body.decode("utf-8")
        self.assertIn("1 envoy matching 'web1'", html)
        self.assertIn(">web1.example.com</a>", html)
        self.assertNotIn("web2.example.com", html)

    @defer.inlineCallbacks
    def test_an_envoy(self):
        response, body = yield self.call("GET", "/spanner/envoys/web2.example.com")
        self.assertEqual(response.code, 200)
        html = body.decode("utf-8")
        self.assertIn("<title>Envoy web2.example.com</title>", html)
        self.assertIn('href="/spanner/bolts/%s">server<' % (self.server_id,), html)

    @defer.inlineCallbacks
    def test_no_other_bolt(self):
        response, body = yield self.call("GET", "/spanner/bolts/dc2")
        self.assertEqual(response.code, 404)
        self.assertIn(b"--mode=spanner", body)

    @defer.inlineCallbacks
    def test_the_root_redirects_to_the_page(self):
        response = yield self.client.settled(self.client.stub.request(
            "GET", "http://vigo.test/", allow_redirects=False))
        self.assertEqual(response.code, 302)
        self.assertEqual(response.headers.getRawHeaders(b"location"), [b"/spanner"])


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
