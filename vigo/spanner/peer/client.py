"""The client side of peer RPC: long-lived, logged-in connections to peers.

``PeerClient`` holds one connection to one peer's ``peer_listen`` port, kept up
by a ``ClientService`` with jittered exponential backoff. A connection counts
as made only once TLS (pinning the peer's key, presenting ours) and the PB
login are done, so a peer that refuses us backs off like one that is down.
``call`` never waits for a connection: when there is none, or no answer comes
in time, it fails at once with ``PeerUnreachable``, so a fan-out over many
bolts is as slow as its timeout, not as its slowest peer's reconnect.

``vigo.spanner.peer.pool.PeerClients`` keeps one client per bolt, and calls
bolts by id through them.
"""

import ipaddress
from time import perf_counter

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, endpoints, error, protocol
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import implementer

from vigo.config.values import parse_address
from vigo.interfaces.errors import (
    ActionFailed,
    BadArguments,
    PeerNoAnswer,
    PeerUnreachable,
    from_wire,
)
from vigo.mutual_tls import PeerClientCreator, peer_key
from vigo.spanner.peer.actions import check_call
from vigo.spanner.peer.broker import BoundedBroker

#: Seconds a call waits for its answer before failing with PeerUnreachable.
DEFAULT_TIMEOUT = 10.0
#: Seconds a new connection may take for TLS and login before it is dropped.
LOGIN_TIMEOUT = 10.0


#: Connection attempts failed in a row after which calls fail at once
#: (``PeerClients.call``) and a bolt heard again is redialled.
FAIL_FAST_AFTER = 3


def default_retry_policy():
    """Reconnect after 0.5 s, doubling to at most 30 s, plus up to 1 s of
    jitter so that bolts restarted together do not reconnect in lockstep."""
    return backoffPolicy(initialDelay=0.5, maxDelay=30.0, factor=2.0)


class _PeerBroker(BoundedBroker):
    """A client broker (messages bounded) that says when it is ready for
    calls, or lost."""

    def __init__(self):
        super().__init__(isClient=True)
        self.ready = defer.Deferred()
        self.on_lost = []

    def connectionReady(self):
        super().connectionReady()
        self.ready.callback(self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if not self.ready.called:
            self.ready.errback(reason)
        for notify in self.on_lost:
            notify(reason)


class _BrokerFactory(protocol.Factory):
    protocol = _PeerBroker
    noisy = False

    def clientConnectionMade(self, broker):
        """PB's hook; ``_PeerBroker.ready`` says the same thing."""


@implementer(IStreamClientEndpoint)
class _LoggedInEndpoint:
    """An endpoint whose connections are already logged in.

    ``ClientService`` (Twisted 26) fails with ``NoTransition`` when a
    connection drops while its ``prepareConnection`` hook is still running, so
    TLS and login happen here instead, before the service sees a connection.
    """

    def __init__(self, client):
        self._client = client

    def connect(self, factory):
        return self._client._connect(factory)


def _endpoint(reactor, address):
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:
        return endpoints.HostnameEndpoint(reactor, address.host, address.port)
    if ip.version == 6:
        return endpoints.TCP6ClientEndpoint(reactor, address.host, address.port)
    return endpoints.TCP4ClientEndpoint(reactor, address.host, address.port)


class PeerClient:
    """One long-lived, logged-in connection to a peer bolt's peer port.

    ``address`` is an ``Address`` or ``"host:port"``; ``fingerprint`` is the
    pin of the peer's identity key. ``retry_policy`` maps the number of failed
    attempts in a row to the seconds to wait (tests make it tiny).
    ``durations``, a ``vigo.metrics.DurationsBy``, times each action call
    (from sending it to its answer or failure) by action name.
    """

    log = Logger()

    def __init__(self, reactor, identity, address, fingerprint, bolt_id=None,
                 retry_policy=None, timeout=DEFAULT_TIMEOUT, login_timeout=LOGIN_TIMEOUT,
                 durations=None):
        self.reactor = reactor
        self.durations = durations
        self.address = parse_address(address) if isinstance(address, str) else address
        self.fingerprint = fingerprint
        self.bolt_id = bolt_id
        self.timeout = timeout
        self.login_timeout = login_timeout
        self.last_error = None
        self.failures = 0  # connection attempts failed in a row
        self._tls = endpoints.wrapClientTLS(
            PeerClientCreator(identity, fingerprint), _endpoint(reactor, self.address)
        )
        self._broker = None
        self._perspective = None
        self._stopping = False
        self._service = ClientService(
            _LoggedInEndpoint(self), protocol.Factory.forProtocol(protocol.Protocol),
            retryPolicy=retry_policy or default_retry_policy(), clock=reactor,
        )

    def __repr__(self):
        return "<PeerClient %s>" % (self._label(),)

    def _label(self):
        if self.bolt_id is None:
            return "peer at %s" % (self.address,)
        return "bolt %s at %s" % (self.bolt_id, self.address)

    @property
    def connected(self):
        """True while a logged-in connection is up."""
        return self._perspective is not None

    @property
    def perspective(self):
        """The peer's ``RemoteReference`` perspective while connected, else None
        (for tools and tests that speak PB directly)."""
        return self._perspective

    def start(self):
        """Start connecting, and reconnecting whenever the connection drops."""
        self._stopping = False
        self._service.startService()

    def stop(self):
        """Hang up and stop reconnecting; a Deferred that fires once closed."""
        self._stopping = True
        return self._service.stopService()

    def when_connected(self, fail_after_failures=None):
        """A Deferred that fires with this client once it is logged in (or fails
        after that many failed attempts in a row)."""
        # ClientService fires these from inside its state machine, which
        # refuses to be stopped from there; hand over on the next turn so a
        # caller may do anything, stop included.
        result = defer.Deferred()
        d = self._service.whenConnected(failAfterFailures=fail_after_failures)
        d.addBoth(lambda outcome: self.reactor.callLater(0, _hand_over, result, outcome, self))
        return result

    def _connect(self, session_factory):
        brokers = []

        def ready(broker):
            brokers.append(broker)
            return broker.ready

        def login(broker):
            return broker.remoteForName("root").callRemote("login")

        def logged_in(perspective):
            broker = brokers[0]
            session = session_factory.buildProtocol(broker.transport.getPeer())
            session.makeConnection(broker.transport)
            self._broker, self._perspective = broker, perspective
            self.last_error = None
            self.failures = 0
            broker.on_lost.append(lambda reason: self._lost(broker, session, reason))
            self.log.info("logged in to {peer}", peer=self._label())
            return session

        def failed(failure):
            if brokers and brokers[0].transport is not None and not brokers[0].disconnected:
                brokers[0].transport.abortConnection()
            if not self._stopping:
                self.failures += 1
                self._note_error(_describe(failure, self.fingerprint))
            return failure

        d = self._tls.connect(_BrokerFactory())
        d.addCallback(ready)
        d.addCallback(login)
        d.addTimeout(self.login_timeout, self.reactor)
        d.addCallback(logged_in)
        d.addErrback(failed)
        return d

    def _note_error(self, message):
        if message != self.last_error:
            self.log.warn("cannot reach {peer}: {error}", peer=self._label(), error=message)
        self.last_error = message

    def _lost(self, broker, session, reason):
        if self._broker is broker:
            self._broker = self._perspective = None
            if not self._stopping:
                self._note_error("connection lost: %s" % (reason.getErrorMessage(),))
        session.connectionLost(reason)

    def call(self, action_name, args=None, timeout=None):
        """Run ``action_name`` with ``args`` on the peer; a Deferred of its result.

        Fails with ``PeerUnreachable`` when not connected or after ``timeout``
        seconds, with ``BadArguments`` before sending anything the peer would
        refuse anyway, or with the peer's refusal (``vigo.interfaces.errors``), raised
        again from the data it crossed as.
        """
        args = {} if args is None else args
        try:
            check_call(action_name, args)
        except BadArguments:
            return defer.fail()
        started, sent = perf_counter(), self._perspective is not None
        d = self._remote("act", (action_name, args), timeout, "action %r" % (action_name,))
        if sent and self.durations is not None:
            d.addBoth(self._timed, action_name, started)
        return d

    def _timed(self, result, action_name, started):
        self.durations.observe(action_name, perf_counter() - started)
        return result

    def ping(self, timeout=None):
        """The peer's ``{"bolt_id", "digest"}``, straight from its perspective."""
        return self._remote("ping", (), timeout, "ping")

    def join(self, token_text, row_data, timeout=None):
        """Present a join token and this server's signed admission row (as an
        applicant: a server not in the peer's roster); a Deferred of the signed
        roster snapshot the peer admits it with, or of its ``JoinRefused``."""
        return self._remote("join", (token_text, row_data), timeout, "join")

    def peer_key(self):
        """The raw Ed25519 key the connected peer proved it holds (the
        handshake pinned its fingerprint), or None when not connected."""
        broker = self._broker
        return None if broker is None else peer_key(broker.transport)

    def _remote(self, method, args, timeout, what):
        perspective = self._perspective
        if perspective is None:
            reason = "; last error: %s" % (self.last_error,) if self.last_error else ""
            return defer.fail(PeerUnreachable("%s is not connected%s" % (self._label(), reason)))
        timeout = self.timeout if timeout is None else timeout
        d = defer.maybeDeferred(perspective.callRemote, method, *args)
        d.addTimeout(timeout, self.reactor)
        d.addCallbacks(self._unwrap, self._translate, callbackArgs=(what,),
                       errbackArgs=(what, timeout))
        return d

    def _unwrap(self, envelope, what):
        """The result in a peer's answer envelope, or its refusal raised."""
        if type(envelope) is dict and len(envelope) == 1:
            if "ok" in envelope:
                return envelope["ok"]
            if "error" in envelope:
                raise from_wire(envelope["error"], self._label())
        raise ActionFailed("%s answered %s with something that is not an answer envelope"
                           % (self._label(), what))

    def _translate(self, failure, what, timeout):
        if failure.check(defer.TimeoutError):
            raise PeerNoAnswer("no answer to %s from %s within %g s" % (what, self._label(), timeout))
        if failure.check(pb.PBConnectionLost, error.ConnectionLost):
            raise PeerNoAnswer("%s hung up during %s" % (self._label(), what))
        if failure.check(pb.DeadReferenceError):  # gone before the call was sent
            raise PeerUnreachable("%s hung up before %s" % (self._label(), what))
        if isinstance(failure, pb.CopiedFailure):  # a bug on the peer: no envelope
            raise ActionFailed("%s failed on %s: %s: %s"
                               % (what, self._label(), _text(failure.type), _text(failure.value)))
        return failure


def _hand_over(result, outcome, client):
    if isinstance(outcome, Failure):
        result.errback(outcome)
    else:
        result.callback(client)


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _describe(failure, fingerprint):
    """A one-line reason a connection attempt failed, for logs and errors."""
    if failure.check(defer.TimeoutError):
        return "no TLS handshake and login within the login timeout"
    if failure.check(defer.CancelledError):
        return "connection attempt cancelled"
    if isinstance(failure, pb.CopiedFailure):
        return "login refused: %s" % (_text(failure.value),)
    message = failure.getErrorMessage()
    if "SSL" in failure.type.__name__ or "certificate verify failed" in message:
        return ("TLS handshake failed (%s); does the peer hold the key with fingerprint %s?"
                % (message, fingerprint))
    return message
