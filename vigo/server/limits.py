"""Every listening port bounded: connection caps and deadlines, counted.

A ``PortGuard`` holds one port's ``PortLimits`` (``limits.<port>`` in
server.yaml) and enforces them in two layers around the port's TLS:

* **outside TLS** (``PortGuard.caps``): a connection over the port's global
  cap (``connections``) or over the cap of one source address (``per_source``)
  is closed as it is accepted, before any TLS work; one let in must finish its
  TLS handshake within ``handshake`` seconds of the accept. Its TLS session is
  made only when its first whole TLS record (the ClientHello) is in, so one
  that sends nothing, or dribbles, costs little; one that does not start with
  a TLS handshake record is cut at once;
* **inside TLS** (``PortGuard.deadlines``): the first whole request must
  arrive within ``first_request`` seconds of the handshake, and a connection
  that brings no whole request for ``idle`` seconds is closed.

A connection past a deadline is *aborted* (not closed cleanly: before its
handshake a clean close would wait forever for the TLS layer to flush what the
server wrote).

"Whole request" is the application's word, not bytes: a client that sends a
byte now and then (a slowloris) resets no deadline. Each application protocol
tells the guard when one is in, through its transport's ``request_received``
(duck-typed, so the protocols import nothing from here): the envoy channel per
frame, the API's ``BoundedRequest`` per HTTP request, the peer port's broker
per PB message.

Every refusal is counted by port and reason (``vigo_connections_refused_total``)
and the open connections by port (``vigo_connections``), handshakes included.
Idle connections are found by a sweep every ``idle / 4`` seconds, so the hot
path pays one clock read per request, not a timer reset.
"""

import collections
import random

from twisted.internet import task
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvides, implementer, providedBy

REASONS = ("connections", "per_source", "handshake", "first_request", "idle")
#: How much later than ``handshake`` a connection may be cut, at most (a fraction).
HANDSHAKE_SPREAD = 0.1
#: Seconds between two log lines for one port and reason (the counter counts all).
LOG_EVERY = 60.0

_EXPLAINED = {
    "connections": "the port holds limits.{port}.connections ({limit}) connections",
    "per_source": "a source holds limits.{port}.per_source ({limit}) connections",
    "handshake": "no TLS handshake within limits.{port}.handshake ({limit:g} s)",
    "first_request": "no whole request within limits.{port}.first_request ({limit:g} s)",
    "idle": "no whole request for limits.{port}.idle ({limit:g} s)",
}


class _Capped(ProtocolWrapper):
    """A connection the caps let in: it gives its place back when it ends, and
    is cut unless its TLS handshake is done within ``handshake`` seconds of
    the accept. Its TLS layer is made only once the client's first whole TLS
    record (its ClientHello) is in, so a connection that sends nothing, or a
    byte now and then, costs the server a socket and this object, not an
    OpenSSL session (some 45 KB) and its work; one whose first bytes are not
    a TLS handshake record is cut at once."""

    def __init__(self, factory, source):
        ProtocolWrapper.__init__(self, factory, None)
        self.source = source
        self._deadline = None
        self._head = b""

    def makeConnection(self, transport):
        # Not ProtocolWrapper's: the wrapped (TLS) protocol does not exist yet.
        Protocol.makeConnection(self, transport)
        guard = self.factory.guard
        self._deadline = guard.clock.callLater(guard.handshake_deadline(), self._expired)

    def dataReceived(self, data):
        if self.wrappedProtocol is None:
            data = self._head + data
            if len(data) < _RECORD_HEADER:
                self._head = data
                return
            if data[0] != _HANDSHAKE_RECORD or data[1] != 3:
                self._cut_now()  # not TLS: nothing to wait for
                return
            length = int.from_bytes(data[3:5], "big")
            if length > _MAX_RECORD:
                self._cut_now()
                return
            if len(data) < _RECORD_HEADER + length:
                self._head = data
                return
            self._head = b""
            directlyProvides(self, providedBy(self.transport))
            self.wrappedProtocol = self.factory.wrappedFactory.buildProtocol(
                self.transport.getPeer())
            self.wrappedProtocol.makeConnection(self)
        self.wrappedProtocol.dataReceived(data)

    def _cut_now(self):
        self.handshake_done()
        self.factory.guard.refuse("handshake")
        self.transport.abortConnection()

    def handshake_done(self):
        """The TLS handshake is done (``_Watched`` says so): no more deadline here."""
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self):
        self._deadline = None
        self.factory.guard.refuse("handshake")
        self.transport.abortConnection()

    def readConnectionLost(self):
        if self.wrappedProtocol is not None:
            ProtocolWrapper.readConnectionLost(self)

    def writeConnectionLost(self):
        if self.wrappedProtocol is not None:
            ProtocolWrapper.writeConnectionLost(self)

    def connectionLost(self, reason):
        self.handshake_done()
        self.factory.guard.released(self.source)
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.connectionLost(reason)
            self.wrappedProtocol = None  # no reference cycle left behind


#: A TLS record: a 5-byte header (type, version, length), then up to 16 KiB
#: and what compression and padding may add (RFC 8446, 5.1).
_RECORD_HEADER = 5
_HANDSHAKE_RECORD = 0x16
_MAX_RECORD = 16384 + 2048


class _CapsFactory(WrappingFactory):
    protocol = _Capped
    noisy = False  # the port's own line says where it listens

    def __init__(self, guard, wrapped):
        WrappingFactory.__init__(self, wrapped)
        self.guard = guard

    def buildProtocol(self, addr):
        source = getattr(addr, "host", None)
        if not self.guard.admit(source):
            return None  # the port closes the socket at once
        return self.protocol(self, source)

    def registerProtocol(self, protocol):
        """Connections are counted by the guard, not kept here."""

    def unregisterProtocol(self, protocol):
        """See ``registerProtocol``."""


@implementer(IHandshakeListener)
class _Watched(ProtocolWrapper):
    """A connection inside TLS, watched for its handshake, first request and
    silence; the application protocol's transport."""

    def __init__(self, factory, wrapped):
        ProtocolWrapper.__init__(self, factory, wrapped)
        self._clock = factory.guard.clock
        self.last_request = self._clock.seconds()
        self.requested = False
        self.cut = False
        self._deadline = None

    def handshakeCompleted(self):
        # The handshake deadline runs outside TLS, from the accept (_Capped).
        capped = getattr(self.transport, "transport", None)
        done = getattr(capped, "handshake_done", None)
        if done is not None:
            done()
        self._cancel()
        if not self.requested:
            self._deadline = self._clock.callLater(self.factory.guard.limits.first_request,
                                                   self._expired, "first_request")
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def request_received(self):
        """The application took in one whole request (the deadlines count these)."""
        self.last_request = self._clock.seconds()
        if not self.requested:
            self.requested = True
            self._cancel()

    def connectionLost(self, reason):
        self._cancel()
        ProtocolWrapper.connectionLost(self, reason)

    def _cancel(self):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self, reason):
        self._deadline = None
        self._cut(reason)

    def _cut(self, reason):
        self.cut = True
        self.factory.guard.refuse(reason)
        self.transport.abortConnection()

    def idle(self, now, limit):
        """Abort if no whole request came for ``limit`` seconds; True if it did."""
        if self.requested and not self.cut and now - self.last_request >= limit:
            self._cut("idle")
            return True
        return False


class _DeadlinesFactory(WrappingFactory):
    protocol = _Watched
    noisy = False

    def __init__(self, guard, wrapped):
        WrappingFactory.__init__(self, wrapped)
        self.guard = guard


class PortGuard:
    """The limits of one port (named ``name``): ``limits`` is its
    ``PortLimits``, ``clock`` an ``IReactorTime``."""

    log = Logger()

    def __init__(self, name, limits, clock, rng=None):
        self.name = name
        self.limits = limits
        self.clock = clock
        self._rng = rng or random.Random()
        self.refused = collections.Counter()
        self.open = 0
        self._by_source = collections.Counter()
        self._watched = None
        self._sweep = None
        self._logged = {}

    def handshake_deadline(self):
        """Seconds a new connection has for its handshake: ``handshake``, and
        up to ``HANDSHAKE_SPREAD`` of it more, so that connections a flood
        opened together are not all cut in the same reactor turn."""
        return self.limits.handshake * (1.0 + HANDSHAKE_SPREAD * self._rng.random())

    # -- the two layers ----------------------------------------------------------------

    def caps(self, factory):
        """``factory`` (the port's TLS factory) with the connection caps before it."""
        return _CapsFactory(self, factory)

    def deadlines(self, factory):
        """``factory`` (the application's, inside TLS) with the deadlines around it."""
        self._watched = _DeadlinesFactory(self, factory)
        return self._watched

    # -- caps --------------------------------------------------------------------------

    def admit(self, source):
        """Take a place for a new connection from ``source``; False (counted)
        when the port or that source is full."""
        if self.open >= self.limits.connections:
            self.refuse("connections")
            return False
        if self._by_source[source] >= self.limits.per_source:
            self.refuse("per_source")
            return False
        self.open += 1
        self._by_source[source] += 1
        return True

    def released(self, source):
        self.open -= 1
        self._by_source[source] -= 1
        if self._by_source[source] <= 0:
            del self._by_source[source]

    def refuse(self, reason):
        """Count a connection refused or cut for ``reason``; log it unless this
        port logged that reason less than ``LOG_EVERY`` seconds ago."""
        self.refused[reason] += 1
        now = self.clock.seconds()
        last = self._logged.get(reason)
        if last is None or now - last >= LOG_EVERY:
            self._logged[reason] = now
            self.log.warn("{port} port: connection refused or cut: {why} ({total} so far; "
                          "vigo_connections_refused_total)", port=self.name,
                          why=_EXPLAINED[reason].format(
                              port=self.name, limit=getattr(self.limits, reason)),
                          total=self.refused[reason])

    # -- idle sweep --------------------------------------------------------------------

    def start(self):
        """Look for idle connections every ``idle / 4`` seconds from now."""
        if self._sweep is None:
            self._sweep = task.LoopingCall(self.sweep)
            self._sweep.clock = self.clock
            self._sweep.start(max(self.limits.idle / 4.0, 0.01), now=False)

    def stop(self):
        if self._sweep is not None and self._sweep.running:
            self._sweep.stop()
        self._sweep = None

    def sweep(self):
        """Abort the connections silent for ``idle`` seconds; how many."""
        if self._watched is None:
            return 0
        now, limit = self.clock.seconds(), self.limits.idle
        return sum(1 for protocol in list(self._watched.protocols)
                   if protocol.idle(now, limit))

    def hang_up(self):
        """Close every connection this port accepted (the server is stopping)."""
        if self._watched is not None:
            for protocol in list(self._watched.protocols):
                protocol.transport.loseConnection()

    def stats(self):
        """``{"open": n, "refused": {reason: n}}`` for metrics."""
        return {"open": self.open, "refused": {reason: self.refused[reason]
                                               for reason in REASONS}}
