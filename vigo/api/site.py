"""The HTTP site of the API: bodies are capped before they are read, and
secrets never reach the access log.

Twisted reads a whole request body before any resource sees it; a client could
send gigabytes. ``BoundedRequest`` answers 413 (JSON, like every API error) as
soon as the declared length, or the bytes actually received, pass the cap, and
hangs up without storing the rest.

A token belongs in the ``Authorization`` header; one put in the URL (refused:
401) would otherwise be written to the access log in full. ``access_log_line``
writes Twisted's combined log format with every Vigo token (``vgot_`` API,
``vgoe_`` enrollment, ``vgoj_`` join, ``vgos_`` standby invitation) and the value of every query parameter
that names a secret replaced by ``REDACTED``, in the path, the query and the
Referer alike. Access lines are events of the ``vigo.api.access`` logger
namespace (``ApiSite``), not of Twisted's legacy log.
"""

import json
import re

from twisted.logger import Logger
from twisted.web.http import combinedLogFormatter
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
        # A whole request is in: the port's guard counts these, not bytes
        # (vigo/server/limits.py).
        notify = getattr(self.channel.transport, "request_received", None)
        if notify is not None:
            notify()
        Request.requestReceived(self, command, path, version)


_TOKEN = re.compile(rb"vgo[tejs]_[^&;/?#\s\"]*")
_SECRET_PARAMETER = re.compile(
    rb"(?i)([?&;](?:[a-z_-]*token|access_token|api_key|apikey|key|password|secret|auth"
    rb"|authorization)=)[^&;#]*")


def redact(text):
    """``text`` (bytes: a URI or a header) with tokens and secret parameters
    replaced by ``REDACTED``."""
    if text is None:
        return None
    return _SECRET_PARAMETER.sub(rb"\1REDACTED", _TOKEN.sub(b"REDACTED", text))


class _Redacted:
    """The parts of a request ``combinedLogFormatter`` reads, redacted."""

    def __init__(self, request):
        self._request = request
        self.uri = redact(request.uri)

    def __getattr__(self, name):
        return getattr(self._request, name)

    def getHeader(self, name):
        value = self._request.getHeader(name)
        if isinstance(value, str):
            return redact(value.encode("latin-1")).decode("latin-1")
        return redact(value)


def access_log_line(timestamp, request):
    """One combined-log-format line for ``request``, secrets redacted."""
    return combinedLogFormatter(timestamp, _Redacted(request))


#: The logger access lines go to.
access_log = Logger(namespace="vigo.api.access")


class _AccessLog:
    """The access "file" of an ``ApiSite``: each line an event of ``access_log``."""

    def write(self, line):
        access_log.info("{line}", line=line.rstrip("\n"))

    def close(self):
        pass


class ApiSite(Site):
    """A ``Site`` whose access lines go to the ``vigo.api.access`` logger."""

    def __init__(self, *args, **kwargs):
        Site.__init__(self, *args, **kwargs)
        # With a logPath, Twisted opens the access log with _openLogFile (its
        # documented override) and writes each line to what it returns.
        self.logPath = access_log.namespace

    def _openLogFile(self, path):
        return _AccessLog()


def api_site(resource):
    """A quiet ``Site`` for the API resource, with capped request bodies and
    an access log without secrets, in the ``vigo.api.access`` namespace."""
    site = ApiSite(resource, requestFactory=BoundedRequest, logFormatter=access_log_line)
    site.displayTracebacks = False
    site.noisy = False
    return site
