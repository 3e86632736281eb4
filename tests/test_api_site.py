"""Request bodies over the cap are refused before they are read."""

import json

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest
from twisted.web.resource import Resource

from vigo.api.site import MAX_BODY, api_site


class Echo(Resource):
    isLeaf = True

    def render_POST(self, request):
        return b"%d" % (len(request.content.read()),)


class Client(protocol.Protocol):
    def __init__(self, request):
        self.request = request
        self.data = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(self.data)


class BoundedRequestTests(unittest.TestCase):
    def setUp(self):
        self.port = reactor.listenTCP(0, api_site(Echo()), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    @defer.inlineCallbacks
    def exchange(self, request):
        client = Client(request)
        yield protocol.ClientCreator(reactor, lambda: client).connectTCP(
            "127.0.0.1", self.port.getHost().port)
        response = yield client.done
        return response

    @defer.inlineCallbacks
    def test_declared_length_over_cap_refused_at_once(self):
        # Claims 100 MB but sends a few bytes: the answer must not wait for the rest.
        response = yield self.exchange(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nabc")
        head, body = response.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 413"))
        self.assertEqual(json.loads(body)["error"], "body_too_large")

    @defer.inlineCallbacks
    def test_chunked_body_over_cap_refused(self):
        chunk = b"x" * 4096
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // 4096 + 2))
        response = yield self.exchange(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n")
        self.assertTrue(response.startswith(b"HTTP/1.1 413"))

    @defer.inlineCallbacks
    def test_body_under_cap_served(self):
        payload = b"y" * MAX_BODY
        response = yield self.exchange(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (len(payload), payload))
        self.assertTrue(response.startswith(b"HTTP/1.1 200"))
        self.assertTrue(response.endswith(b"%d" % (MAX_BODY,)))
