"""One envoy port flooded by bad clients while real envoys keep checking in.

A real envoy port on loopback (``envoy_port``, the server's own wiring, with
short deadlines and a small per-source cap) is hit at once by:

* connections that never send a byte (no TLS handshake),
* "dribblers" sending a TLS ClientHello a byte every 100 ms, never finishing,
* connections that finish TLS and then send nothing,
* "slow senders" that finish TLS and send a first frame a byte every 100 ms,
  never finishing it (a slowloris: bytes are not a request),
* connections that finish TLS and send a garbage frame,
* connections over the per-source cap (the real envoys' address is full),

while real envoys, attached over TLS, check in every 200 ms. Every check-in
must be answered; every bad connection must be closed by the server (each
client waits for its ``connectionLost``) within its deadline plus a slack that
only catches "never closed"; the guard's counters and the channel's refused
frames must account for each category exactly (one caveat, at the assertion:
an oversize frame's connection may also run out of ``first_request``); and the open connections must
come back to the real envoys alone. Bad clients come from many 127.0.0.x
addresses, a per-source cap's worth each. Nothing here sleeps: each wait is on
events (connections lost, the guard's counters changing) with a deadline.
"""

import resource

from OpenSSL import SSL
from twisted.internet import defer, endpoints, protocol, reactor
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from twisted.trial import unittest
from zope.interface import implementer

from tests.events import until
from tests.fleetkit import EnvoyKey, FleetKit
from vigo.config import Address, PortLimits
from vigo.envoy.dial import connect, pinned_creator
from vigo.fleet import wire
from vigo.fleet.channel import EnvoyChannelFactory
from vigo.metrics import PortsCollector
from vigo.server.ports import envoy_port

LEGIT = 20  # real envoys, all from 127.0.0.1: they fill its per-source cap
SILENT = 2000  # never send a byte
DRIBBLERS = 100  # a ClientHello, a byte every DRIBBLE seconds
MUTE = 100  # finish TLS, then say nothing
GARBAGE = 100  # finish TLS, then a garbage frame (a quarter of each kind below)
OVER_CAP = 100  # from 127.0.0.1, over its per-source cap
SLOW = 100  # finish TLS, then a first frame a byte every DRIBBLE seconds

LIMITS = PortLimits(handshake=3.0, first_request=0.5, idle=5.0, per_source=LEGIT,
                    connections=4000)
DRIBBLE = 0.1  # seconds between two bytes of a dribbler or a slow sender
CHECKIN_EVERY = 0.2  # seconds between two check-ins of one real envoy
# Seconds past its deadline a bad connection may live: only "never closed" fails. The
# deadline runs from the server's accept, the lifetime from the client's connect: on
# a loaded machine thousands of connections wait seconds in the listen queue.
SLACK = 5.0
WAIT = 15.0  # seconds any one wait may take before the test fails, naming it
LEGIT_SOURCE = "127.0.0.1"
FILES = 8192  # open files the test needs: both ends of every connection, and then some

# Garbage frames, each answered Refused and hung up on, and the reason it is counted under.
GARBAGE_FRAMES = {
    "oversize": b"\xff\xff\xff\xf0" + b"x" * 16,  # a length past MAX_REQUEST
    "unknown_type": wire.frame(b"\x7fgarbage"),
    "malformed": wire.frame(bytes((wire.ATTACH,)) + b"{not json"),
    "not_attached": wire.frame(bytes((wire.CHECKIN,)) + bytes(wire.CHECKIN_BODY.size)),
}


class Sources:
    """Client addresses 127.0.0.2 on, each given to ``per_source`` connections
    (a full per-source cap) and never again."""

    def __init__(self, per_source=LEGIT):
        self.per_source = per_source
        self.next = 2

    def take(self, count):
        """The source address of each of ``count`` more connections."""
        first, self.next = self.next, self.next + -(-count // self.per_source)
        assert self.next <= 255, "out of 127.0.0.x addresses"
        return ["127.0.0.%d" % (first + n // self.per_source,) for n in range(count)]


def client_hello():
    """The bytes of a TLS ClientHello, as a dribbler sends them."""
    connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


def raise_file_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise unittest.SkipTest("needs %d open files; the hard limit is %d" % (needed, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class GuardWatch:
    """Calls its listeners after each place the guard gives back and each
    refusal it counts: a source of changes for ``until``."""

    def __init__(self, guard):
        self._listeners = []
        for name in ("released", "refuse"):
            setattr(guard, name, self._wrap(getattr(guard, name)))

    def _wrap(self, method):
        def wrapped(*args):
            result = method(*args)
            for listener in list(self._listeners):
                listener()
            return result
        return wrapped

    def on_change(self, listener):
        self._listeners.append(listener)


@implementer(IHandshakeListener)
class BadClient(protocol.Protocol):
    """One bad connection of ``kind``: it sends ``payload`` (all at once after
    TLS for "garbage", else a byte every ``every`` seconds, never the last).

    ``closed`` fires with the client once the connection is gone (or fails if
    it could not connect); ``lifetime`` is from the connect to the close,
    ``deadline`` the server's bound on it (from its accept)."""

    def __init__(self, kind, deadline, payload=b"", every=None, label=None):
        self.kind = kind
        self.label = label  # which garbage frame
        self.deadline = deadline
        self.payload = payload
        self.every = every
        self.started = reactor.seconds()
        self.lifetime = None
        self.handshook = None  # seconds from the connect to the end of the TLS handshake
        self.closed = defer.Deferred()
        self._sent = 0
        self._timer = None

    # what it sends
    def connectionMade(self):
        if self.kind == "dribbler":
            self._dribble()

    def handshakeCompleted(self):
        self.handshook = reactor.seconds() - self.started
        if self.kind == "garbage":
            self.transport.write(self.payload)
        elif self.kind == "slow":
            self._dribble()

    def _dribble(self):
        """The next byte of ``payload`` now, and the one after it in ``every`` seconds;
        never the last one."""
        self._timer = None
        if self._sent < len(self.payload) - 1:
            self.transport.write(self.payload[self._sent:self._sent + 1])
            self._sent += 1
            self._timer = reactor.callLater(self.every, self._dribble)

    def connectionLost(self, reason):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.lifetime = reactor.seconds() - self.started
        self.closed.callback(self)

    def failed(self, failure):
        if not self.closed.called:
            self.closed.errback(failure)

    def abort(self):
        if self.transport is not None and not self.closed.called:
            self.transport.abortConnection()


class OneClient(protocol.ClientFactory):
    """The factory of one ``BadClient``."""

    noisy = False

    def __init__(self, client):
        self.client = client

    def buildProtocol(self, addr):
        return self.client

    def clientConnectionFailed(self, connector, reason):
        self.client.failed(reason)


class Envoy:
    """A real envoy attached over TLS, checking in every ``CHECKIN_EVERY`` s
    until ``stop()``: every answer and failure kept with its time."""

    def __init__(self, key, protocol, last_seq):
        self.key = key
        self.protocol = protocol
        self.seq = last_seq
        self.version = bytes(32)
        self.answers = []  # (answered at, kind, latency)
        self.failures = []
        self._stopping = False
        self._timer = None
        self._idle = defer.succeed(None)

    # IEnvoyListener, the bits that matter here
    def envoy_bundle(self, protocol, bundle):
        self.version = bundle.version

    def __getattr__(self, name):
        if name.startswith("envoy_"):
            return lambda *args: None
        raise AttributeError(name)

    def start(self):
        self._check_in()

    def _check_in(self):
        self._timer = None
        self.seq += 1
        d = self.protocol.checkin(self.seq, self.version).addTimeout(WAIT, reactor)
        d.addCallbacks(self._answered, self.failures.append)
        d.addBoth(self._next)
        self._idle = d

    def _answered(self, answer):
        kind, latency = answer
        self.answers.append((reactor.seconds(), kind, latency))

    def _next(self, _):
        if not self._stopping:
            self._timer = reactor.callLater(CHECKIN_EVERY, self._check_in)

    def stop(self):
        """No more check-ins; a Deferred that fires once the one in flight is answered."""
        self._stopping = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        return self._idle


class FloodTests(unittest.TestCase):
    timeout = 60
    log = Logger()

    def setUp(self):
        raise_file_limit(FILES)
        self.kit = FleetKit(self)
        self.port = envoy_port(reactor, Address("127.0.0.1", 0), self.kit.identity,
                               EnvoyChannelFactory(self.kit.fleet, self.kit.enrollment, reactor),
                               LIMITS)
        self.port.startService()
        self.addCleanup(self.port.stopService)
        self.guard = self.port.guard
        self.watch = GuardWatch(self.guard)
        self.clients = []
        self.addCleanup(self._abort_clients)
        self.envoys = []

    def _abort_clients(self):
        """Hang up whatever is still open (a failed test), and wait until the
        server has seen every connection go."""
        for client in self.clients:
            client.abort()
        for envoy in self.envoys:
            envoy.stop()
            envoy.protocol.abort()
        return until(lambda: self.guard.open == 0, self.watch, deadline=WAIT,
                     what="the server to see every connection go")

    # -- real envoys --------------------------------------------------------------

    @defer.inlineCallbacks
    def attach_envoys(self, count):
        """``count`` envoys enrolled through the kit, attached over TLS from
        ``LEGIT_SOURCE``; the ``Envoy``s, not checking in yet."""
        server = "127.0.0.1:%d" % (self.port.bound(),)
        for n in range(count):
            key, _ = yield defer.ensureDeferred(
                self.kit.enroll(EnvoyKey("web%d.dc1.example.com" % (n + 1,))))
            envoy = Envoy(key, None, 0)
            envoy.protocol = yield connect(reactor, server, self.kit.identity.fingerprint,
                                           envoy, bind_address=LEGIT_SOURCE)
            attached = yield envoy.protocol.attach(
                key.id, self.kit.identity.id, lambda m, k=key: k.signing.sign(m).signature)
            envoy.seq = attached.last_seq
            self.envoys.append(envoy)
        return self.envoys

    # -- bad clients --------------------------------------------------------------

    def tcp(self, kind, source, deadline, payload=b"", every=None):
        """A raw TCP client from ``source``."""
        client = BadClient(kind, deadline, payload, every)
        self.clients.append(client)
        reactor.connectTCP("127.0.0.1", self.port.bound(), OneClient(client), WAIT,
                           (source, 0))
        return client

    def tls(self, kind, source, deadline, payload=b"", every=None, label=None):
        """A client from ``source`` that finishes TLS, pinned to the server's key."""
        client = BadClient(kind, deadline, payload, every, label)
        self.clients.append(client)
        endpoint = endpoints.wrapClientTLS(
            pinned_creator(self.kit.identity.fingerprint),
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.bound(), WAIT,
                                         (source, 0)))
        endpoint.connect(OneClient(client)).addErrback(client.failed)
        return client

    def closed(self, clients, what):
        """A Deferred that fires once every one of ``clients`` is closed; fails
        naming how many are still open after ``WAIT`` seconds."""
        result = defer.Deferred()

        def late():
            still = [c for c in clients if not c.closed.called]
            kinds = sorted({c.kind for c in still})
            result.errback(self.failureException(
                "%d of %d %s still open after %g s (%s)"
                % (len(still), len(clients), what, WAIT, ", ".join(kinds))))

        timer = reactor.callLater(WAIT, late)

        def settled(outcome):
            if timer.active():
                timer.cancel()
                result.callback(outcome)

        defer.gatherResults([c.closed for c in clients], consumeErrors=True).addBoth(settled)
        return result

    def assert_lifetimes(self, clients):
        """Every client closed within its deadline plus ``SLACK``."""
        late = [(c.kind, round(c.lifetime, 2), c.deadline) for c in clients
                if c.lifetime > c.deadline + SLACK]
        self.assertFalse(late, "%d closed later than their deadline + %g s, e.g. (kind, "
                         "lifetime, deadline) %s" % (len(late), SLACK, late[:5]))

    def report(self, clients, envoys, took):
        """Log (to the test log) how long each kind lived and what check-ins took."""
        kinds = {}
        for c in clients:
            kinds.setdefault(c.kind, []).append(c.lifetime)
        latencies = sorted(latency for e in envoys for _, _, latency in e.answers)
        handshakes = [c.handshook for c in clients if c.handshook is not None]
        self.log.info("flood over in {took:.2f} s; longest life by kind: {kinds}; longest "
                      "handshake {handshake:.3f} s; {n} check-ins, slowest {slowest:.3f} s",
                      took=took, n=len(latencies), slowest=latencies[-1] if latencies else 0,
                      handshake=max(handshakes, default=0),
                      kinds={k: round(max(v), 3) for k, v in sorted(kinds.items())})

    def assert_answered(self, envoys):
        """Every check-in of every envoy answered with a bundle or no_change."""
        failures = [f for e in envoys for f in e.failures]
        self.assertEqual(failures, [], "check-ins not answered")
        kinds = {kind for e in envoys for _, kind, _ in e.answers}
        self.assertLessEqual(kinds, {"bundle", "no_change"})
        self.assertTrue(all(e.answers for e in envoys))

    # -- the flood ----------------------------------------------------------------

    @defer.inlineCallbacks
    def test_flood(self):
        envoys = yield self.attach_envoys(LEGIT)
        for envoy in envoys:
            envoy.start()
        handshake = LIMITS.handshake
        after_tls = LIMITS.handshake + LIMITS.first_request
        hello = client_hello()
        garbage = [kind for kind in GARBAGE_FRAMES for _ in range(GARBAGE // len(GARBAGE_FRAMES))]
        partial = wire.frame(bytes((wire.ATTACH,)) + b'{"envoy_id": "' + b"x" * 200)
        spread = Sources().take

        flood_started = reactor.seconds()
        bad = []
        # Over the cap first: the real envoys' address is full (they hold it).
        bad += [self.tcp("over_cap", LEGIT_SOURCE, 0.0) for _ in range(OVER_CAP)]
        # Then those that finish TLS, so that their handshakes are not stuck
        # behind thousands of accepts (counting them exactly needs them in time).
        bad += [self.tls("mute", s, after_tls) for s in spread(MUTE)]
        bad += [self.tls("slow", s, after_tls, partial, DRIBBLE) for s in spread(SLOW)]
        bad += [self.tls("garbage", s, handshake, GARBAGE_FRAMES[kind], label=kind)
                for s, kind in zip(spread(GARBAGE), garbage, strict=True)]
        bad += [self.tcp("dribbler", s, handshake, hello, DRIBBLE) for s in spread(DRIBBLERS)]
        bad += [self.tcp("silent", s, handshake) for s in spread(SILENT)]
        yield self.closed(bad, "bad connections")
        flood_ended = reactor.seconds()
        yield until(lambda: self.guard.open == LEGIT, self.watch, deadline=WAIT,
                    what="the port's open connections back to the real envoys alone")
        yield defer.gatherResults([envoy.stop() for envoy in envoys])

        self.report(bad, envoys, flood_ended - flood_started)
        self.assert_lifetimes(bad)
        # An oversize frame is refused before it is a request: the server answers
        # Refused and closes TLS cleanly, which waits for the client's close_notify
        # while the first_request deadline still runs. A client slower than that
        # to close (a loaded machine) is cut by it as well, and counted there too.
        refused = dict(self.guard.refused)
        closing = [c for c in bad if c.label == "oversize"
                   and c.lifetime - c.handshook > LIMITS.first_request]
        self.assertTrue(MUTE + SLOW <= refused.get("first_request", 0)
                        <= MUTE + SLOW + len(closing), refused)
        refused["first_request"] = MUTE + SLOW
        self.assertEqual(refused, {
            "handshake": SILENT + DRIBBLERS, "first_request": MUTE + SLOW,
            "per_source": OVER_CAP})
        self.assertEqual(dict(self.kit.fleet.stats.frames_refused),
                         {kind: garbage.count(kind) for kind in GARBAGE_FRAMES})
        self.assertFalse([c for c in bad if c.kind in ("silent", "dribbler", "over_cap")
                          and c.handshook is not None])
        self.assertFalse([c for c in bad if c.kind in ("mute", "slow", "garbage")
                          and c.handshook is None])
        self.assertEqual(self.guard.open, LEGIT)
        metrics = {(m.name, tuple(s.labels.values())): s.value
                   for m in PortsCollector({"envoy": self.port}).collect() for s in m.samples}
        self.assertEqual(metrics[("vigo_connections", ("envoy",))], LEGIT)
        self.assertEqual(metrics[("vigo_connections_refused", ("envoy", "per_source"))],
                         OVER_CAP)
        self.assert_answered(envoys)
        self.assertTrue(all(any(flood_started <= at <= flood_ended for at, _, _ in e.answers)
                            for e in envoys), "every envoy answered while the flood was on")
