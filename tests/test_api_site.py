"""Request bodies over the cap are refused before they are read; tokens in
URLs never reach the access log.

The API's ``Site`` (``api_site``) is driven in memory: bytes go into one HTTP
channel over a ``StringTransport``, and what it writes back is read there,
so a test sees exactly when the answer was written and the connection closed.
"""

import io
import json

from twisted.internet import address, error, task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource

from vigo.api.site import MAX_BODY, api_site, redact


class Echo(Resource):
    isLeaf = True

    def render_POST(self, request):
        return b"%d" % (len(request.content.read()),)

    def render_GET(self, request):
        request.setResponseCode(401)
        return b"{}"


class BoundedRequestTests(unittest.SynchronousTestCase):
    def setUp(self):
        site = api_site(Echo())
        site.reactor = task.Clock()  # the channel's idle timeout runs on it
        self.channel = site.buildProtocol(address.IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)
        self.addCleanup(self.channel.connectionLost, Failure(error.ConnectionDone()))

    def send(self, data, chunk=65536):
        """Feed ``data`` to the channel, ``chunk`` bytes at a time, as long as it
        keeps the connection open; what it wrote back."""
        for i in range(0, len(data), chunk):
            if self.transport.disconnecting:
                break
            self.channel.dataReceived(data[i:i + chunk])
        return self.transport.value()

    def test_declared_length_over_cap_refused_at_once(self):
        # Claims 100 MB but sends a few bytes: the answer must not wait for the rest.
        response = self.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nabc")
        head, body = response.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 413"))
        self.assertEqual(json.loads(body)["error"], "body_too_large")
        self.assertTrue(self.transport.disconnecting)

    def test_chunked_body_over_cap_refused(self):
        chunk = b"x" * 4096
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // 4096 + 2))
        response = self.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
            + b"0\r\n\r\n", chunk=4096)
        self.assertTrue(response.startswith(b"HTTP/1.1 413"))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(response.count(b"HTTP/1.1"), 1)  # the resource never answered

    def test_body_under_cap_served(self):
        payload = b"y" * MAX_BODY
        response = self.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (len(payload), payload))
        self.assertTrue(response.startswith(b"HTTP/1.1 200"))
        self.assertTrue(response.endswith(b"%d" % (MAX_BODY,)))


class AccessLogTests(unittest.SynchronousTestCase):
    """The access log line of a request that put its token in the URL."""

    def setUp(self):
        self.site = api_site(Echo())
        self.site.reactor = task.Clock()
        self.site._logDateTime = "05/Dec/2026:01:00:00 +0000"
        self.site._logFile = io.StringIO()
        channel = self.site.buildProtocol(address.IPv4Address("TCP", "127.0.0.1", 40000))
        channel.makeConnection(StringTransport())
        self.channel = channel
        self.addCleanup(channel.connectionLost, Failure(error.ConnectionDone()))

    def logged(self, request):
        self.channel.dataReceived(request)
        return self.site._logFile.getvalue()

    def test_a_token_in_the_query_is_redacted(self):
        line = self.logged(
            b"GET /api/v1/status?verbose=1&token=vgot_S3CRET-abc HTTP/1.1\r\nHost: x\r\n"
            b"Referer: https://vigo/ui?access_token=hunter2&x=vgoe_eyJTOKEN\r\n"
            b"User-Agent: curl/8\r\n\r\n")
        self.assertNotIn("S3CRET", line)
        self.assertNotIn("hunter2", line)
        self.assertNotIn("eyJTOKEN", line)
        self.assertIn('"GET /api/v1/status?verbose=1&token=REDACTED HTTP/1.1" 401', line)
        self.assertIn('"https://vigo/ui?access_token=REDACTED&x=REDACTED" "curl/8"', line)

    def test_anything_else_is_logged_as_it_came(self):
        line = self.logged(b"GET /api/v1/envoys?limit=5&after=web1 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn('"GET /api/v1/envoys?limit=5&after=web1 HTTP/1.1" 401', line)

    def test_redact(self):
        for raw, clean in [
            (b"/x?token=vgot_abc", b"/x?token=REDACTED"),
            (b"/x?a=1&API_KEY=zz&b=2", b"/x?a=1&API_KEY=REDACTED&b=2"),
            (b"/tokens/vgoj_abc/use", b"/tokens/REDACTED/use"),
            (b"/x?password=p#frag", b"/x?password=REDACTED#frag"),
            (b"/x?monkey=1", b"/x?monkey=1"),
            (None, None),
        ]:
            self.assertEqual(redact(raw), clean, raw)


class GuardedTransport(StringTransport):
    """A transport that counts what the port's guard is told (vigo/server/limits.py)."""

    requests = 0

    def request_received(self):
        self.requests += 1


class WholeRequestTests(unittest.SynchronousTestCase):
    def test_the_guard_is_told_of_whole_requests_only(self):
        site = api_site(Echo())
        site.reactor = task.Clock()
        channel = site.buildProtocol(address.IPv4Address("TCP", "127.0.0.1", 40000))
        transport = GuardedTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, Failure(error.ConnectionDone()))
        for byte in b"GET /a HTTP/1.1\r\nHost: x\r\n":
            channel.dataReceived(bytes((byte,)))
        self.assertEqual(transport.requests, 0, "headers not finished")
        channel.dataReceived(b"\r\n")
        self.assertEqual(transport.requests, 1)
        channel.dataReceived(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        self.assertEqual(transport.requests, 1, "body not finished")
        channel.dataReceived(b"cd")
        self.assertEqual(transport.requests, 2)
