"""Request bodies over the cap are refused before they are read.

The API's ``Site`` (``api_site``) is driven in memory: bytes go into one HTTP
channel over a ``StringTransport``, and what it writes back is read there,
so a test sees exactly when the answer was written and the connection closed.
"""

import json

from twisted.internet import address, error, task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource

from vigo.api.site import MAX_BODY, api_site


class Echo(Resource):
    isLeaf = True

    def render_POST(self, request):
        return b"%d" % (len(request.content.read()),)


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
