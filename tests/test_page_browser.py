"""Every web page in a real browser: headless Chromium (Debian's ``chromium``).

The pages (``vigo.api.page``) are served on a loopback port by a facade
server (tests.test_api) with a ``FakeSpanner`` bolt, or standalone; Chromium
loads each one (``--dump-dom``), and the test checks what it rendered and
that it logged nothing to its console (the pages have no script: any console
line is an error) and that every request it made was answered without an error
(a failed load of a sub-resource, which Chromium logs to the DevTools console
only, shows there). Skipped, with the reason, where there is
no ``chromium``.

``make screenshots`` runs this test with ``VIGO_SCREENSHOTS`` set to a
directory (docs/screenshots): each page is also drawn there, 1000 px wide, as
``<name>.png``.
"""

import base64
import os
import re
import shutil

from twisted.internet import defer, reactor, utils
from twisted.trial import unittest
from twisted.web import resource, server

from tests.spannerkit import PEER_ID, SELF_ID, FakeSpanner, envoy_row
from tests.test_api import FacadeServer, new_clock
from vigo.spanner.status import envoy_summary
from vigo.testing.store import ImmediateStore

CHROMIUM = next(filter(None, (shutil.which(name) for name in (
    "chromium", "chromium-browser", "google-chrome"))), None)
SCREENSHOTS = os.environ.get("VIGO_SCREENSHOTS")
WIDTH, HEIGHT = 1000, 700
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\] (.*)")


class Authorized(resource.Resource):
    """``wrapped``, with the API token sent as a browser sends it (HTTP Basic)."""

    isLeaf = True

    def __init__(self, wrapped, token):
        super().__init__()
        self.wrapped = wrapped
        self.credentials = b"Basic " + base64.b64encode(
            b"admin:" + token.encode("ascii"))

    def render(self, request):
        request.requestHeaders.setRawHeaders(b"authorization", [self.credentials])
        return self.wrapped.render(request)


class RecordingSite(server.Site):
    """A ``Site`` that keeps ``(uri, code)`` of every request it answered."""

    noisy = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.answered = []

    def log(self, request):
        self.answered.append((request.uri.decode("ascii", "replace"), request.code))


def chromium(*args):
    """A Deferred of Chromium's ``(stdout, stderr, exit code)`` for ``args``."""
    return utils.getProcessOutputAndValue(CHROMIUM, (
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-extensions", "--disable-background-networking", "--disable-sync",
        "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
        "--user-data-dir=" + os.path.abspath("chromium-profile"),
        "--window-size=%d,%d" % (WIDTH, HEIGHT)) + args, env={
            "HOME": os.path.abspath("."), "PATH": os.environ.get("PATH", "")})


class BrowserTestCase(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        if CHROMIUM is None and SCREENSHOTS:
            self.fail("make screenshots needs chromium: apt-get install chromium")
        if CHROMIUM is None:
            raise unittest.SkipTest("no chromium: apt-get install chromium (Debian's) to "
                                    "render the pages in a headless browser")
        self.clock = new_clock()
        self.server = FacadeServer(self.mktemp(), self.clock, ImmediateStore())
        self.addCleanup(self.server.store.close)
        yield defer.ensureDeferred(self.server.start())
        api = self.api()
        site = self.site = RecordingSite(Authorized(api.resource(), self.server.admin_token()))
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = "http://127.0.0.1:%d" % (port.getHost().port,)

    def api(self):
        return self.server.api

    @defer.inlineCallbacks
    def load(self, path, name, status=200):
        """The DOM Chromium rendered for ``path`` (answered ``status``), with no
        console line and no other request refused; drawn as ``name``.png when
        screenshots are asked for."""
        del self.site.answered[:]
        out, err, code = yield chromium("--dump-dom", self.base + path)
        err = err.decode("utf-8", "replace")
        self.assertEqual(code, 0, err[-2000:])
        self.assertEqual(CONSOLE.findall(err), [], "console output on %s" % (path,))
        answered = list(self.site.answered)
        self.assertTrue(answered, "chromium asked nothing of the server")
        self.assertEqual(answered[-1][1], status, answered)
        self.assertEqual([a for a in answered[:-1] if a[1] >= 400], [], answered)
        if SCREENSHOTS:
            os.makedirs(SCREENSHOTS, exist_ok=True)
            target = os.path.join(SCREENSHOTS, name + ".png")
            _, err, code = yield chromium("--screenshot=" + target, self.base + path)
            self.assertEqual(code, 0, err[-2000:])
        return out.decode("utf-8")


class ConsoleCheckTests(BrowserTestCase):
    """The console check is not vacuous: a page that logs is caught."""

    @defer.inlineCallbacks
    def test_a_console_error_is_seen(self):
        page = os.path.abspath("noisy.html")
        with open(page, "w") as f:
            f.write('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head>'
                    '<body><script>console.error("boom"); nosuch();</script></body></html>')
        _, err, code = yield chromium("--dump-dom", "file://" + page)
        found = CONSOLE.findall(err.decode("utf-8", "replace"))
        self.assertEqual(len(found), 2, found)
        self.assertIn('"boom"', found[0])
        self.assertIn("nosuch is not defined", found[1])


class FederationBrowserTests(BrowserTestCase):
    """A bolt's pages: the federation, a bolt, a draining bolt, an envoy."""

    def api(self):
        spanner = self.spanner = FakeSpanner().found()
        dead = spanner.rows[2]
        dead["envoys"] = envoy_summary({"envoys_owned": 50, "envoys_online": 48}, 28.0, 3.3,
                                       28.0, liveness="down")
        spanner.rows[1]["status"] = "draining"
        spanner.envoy_rows[SELF_ID] = [
            envoy_row("%020x" % (i * 7919,), "web%02d.dc1.example.com" % (i,), online=i % 5 != 0)
            for i in range(1, 61)]
        return self.server.admin_api(federation=spanner, envoys=spanner.envoy_operations())

    @defer.inlineCallbacks
    def test_the_pages(self):
        dom = yield self.load("/", "federation")  # redirected to /spanner
        self.assertIn("<h1>Vigo spanner: bolt dc1</h1>", dom)
        self.assertIn("bolts 3 total, 1 active, 2 draining, 0 removed", dom)
        self.assertIn("50 (28s ago)", dom)
        dom = yield self.load("/spanner/bolts/dc1?page=2", "bolt")
        self.assertIn("<h1>Bolt dc1</h1>", dom)
        self.assertIn("page 2 of 2", dom)
        self.assertIn("web60.dc1.example.com", dom)
        dom = yield self.load("/spanner/bolts/dc1?q=web1", "bolt-search")
        self.assertIn("10 envoys matching 'web1'", dom)
        dom = yield self.load("/spanner/bolts/%s" % (PEER_ID,), "bolt-draining")
        self.assertIn("2 of 2 moved", dom)
        self.assertIn("<progress", dom)
        dom = yield self.load("/spanner/envoys/web07.dc1.example.com", "envoy")
        self.assertIn("<h1>Envoy web07.dc1.example.com</h1>", dom)
        dom = yield self.load("/spanner/envoys/nothing.example.com", "envoy-missing", 503)
        self.assertIn("No envoy nothing.example.com", dom)


class StandaloneBrowserTests(BrowserTestCase):
    """A standalone server's pages: the server, its envoys, an envoy."""

    @defer.inlineCallbacks
    def test_the_pages(self):
        for i in range(3):
            yield defer.ensureDeferred(self.server.enroll("web%d.example.com" % (i,)))
        server_id = self.server.identity.id
        dom = yield self.load("/", "standalone")
        self.assertIn("<h1>Vigo server: %s</h1>" % (server_id,), dom)
        self.assertIn("envoys 3 total", dom)
        dom = yield self.load("/spanner/bolts/%s" % (server_id,), "standalone-envoys")
        self.assertIn("web2.example.com", dom)
        dom = yield self.load("/spanner/envoys/web1.example.com", "standalone-envoy")
        self.assertIn("<h1>Envoy web1.example.com</h1>", dom)
