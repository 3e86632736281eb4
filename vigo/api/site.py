"""The HTTP site of the API: bodies are capped before they are read.

Twisted reads a whole request body before any resource sees it; a client could
send gigabytes. ``BoundedRequest`` answers 413 (JSON, like every API error) as
soon as the declared length, or the bytes actually received, pass the cap, and
hangs up without storing the rest.
"""

import json

from twisted.web.server import Request, Site

MAX_BODY = 64 * 1024


class BoundedRequest(Request):
    """A request that refuses bodies over ``max_body`` bytes early."""

    max_body = MAX_BODY
    too_large = False
    _received = 0

    def gotLength(self, length):
        Request.gotLength(self, length)
        if length is not None and length > self.max_body:
            self._refuse("the body is %d bytes; at most %d are allowed" % (length, self.max_body))

    def handleContentChunk(self, data):
        if self.too_large:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._refuse("the body is over %d bytes" % (self.max_body,))
            return
        Request.handleContentChunk(self, data)

    def _refuse(self, detail):
        self.too_large = True
        body = json.dumps({"error": "body_too_large", "detail": detail}).encode()
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()

    def requestReceived(self, command, path, version):
        if self.too_large:
            return
        Request.requestReceived(self, command, path, version)


def api_site(resource):
    """A quiet ``Site`` for the API resource, with capped request bodies."""
    site = Site(resource, requestFactory=BoundedRequest)
    site.displayTracebacks = False
    site.noisy = False
    return site
